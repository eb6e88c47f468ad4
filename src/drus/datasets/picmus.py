"""PICMUS datasets as DRUS uses them, and the paper's Table I evaluation on them.

The shared reference data (``$DRUS_REFERENCE_DATA`` or ``../shared/data``) holds, for the four
PICMUS sets, the DRUS observations ``By`` (``picmus/by_drus``), the DENO inputs (``by_deno``), DAS
references with 1/3/11/75 plane waves and the official phantom descriptions. Numbers below, and their
sources (the authors' code, the reference data): docs/method.md §3.

:func:`evaluate_picmus` reproduces Table I of the DRUSvar paper (DAS 75 PW, DAS 1 PW, DENOmean,
DRUSmean, DRUSvar on EC = expe_cont, ER = expe_reso, and the simulated SC = simu_cont,
SR = simu_reso); :func:`channel_data_to_by` turns raw 0° channel data into a DRUS observation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from drus.physics.beamform import MatchedFilterBeamformer, envelope
from drus.sampling.config import SamplerConfig
from drus.physics.geometry import ImageGrid, array_pitch
from drus.physics.phantoms import Disk, PicmusPhantom

__all__ = [
    "PicmusSet",
    "PICMUS_SETS",
    "SHORT_NAMES",
    "PAPER_TABLE_I",
    "METHODS",
    "reference_data_dir",
    "depth_gain",
    "simulate_by",
    "compare_by",
    "infer_dataset",
    "PicmusInputs",
    "load_picmus_inputs",
    "picmus_operator",
    "channel_data_to_by",
    "method_envelope",
    "points_in_view",
    "score_image",
    "MethodResult",
    "DatasetResult",
    "PicmusEvaluation",
    "evaluate_picmus",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PicmusSet:
    """One PICMUS dataset: file numbers, DRUS/DENO noise levels, the ``By`` amplitude factor.

    ``extra_cysts`` are contrast ROIs that the official phantom file does not describe (e.g. the
    hyperechoic 8-mm target of the CIRS 040GSE phantom visible in expe_reso, used for the ER gCNR
    of Table I); they are added to :meth:`PicmusPhantom.cyst_disks` by :meth:`cysts`.
    """

    name: str
    number: int  # das_reference/<n>.hdf5, phantoms/picmus_phantom_<n>.hdf5
    sigma0_drus: float  # noise std in By units (docs/method.md §3)
    sigma0_deno: float  # noise std of the max-normalised DENO input
    by_factor: float  # y normalised to max 1 then multiplied by this (30 contrast, 10 resolution)
    kind: str  # "contrast" or "resolution"
    extra_cysts: tuple = ()  # Disk(x, z, radius) in m, beyond the phantom file's occlusions

    @property
    def short(self) -> str:
        """The paper's abbreviation (EC, ER) or ours for the simulated sets (SC, SR)."""
        return SHORT_NAMES[self.name]

    def cysts(self, phantom: PicmusPhantom) -> tuple[Disk, ...]:
        """Contrast ROIs: the phantom's occlusions followed by :attr:`extra_cysts`."""
        return tuple(phantom.cyst_disks()) + tuple(self.extra_cysts)

    def files(self, root=None) -> dict[str, Path]:
        root = reference_data_dir(root) / "picmus"
        return {
            "by_drus": root / "by_drus" / f"{self.name}.mat",
            "by_deno": root / "by_deno" / f"{self.name}.mat",
            "das": root / "das_reference" / f"{self.number}.hdf5",
            "phantom": root / "phantoms" / f"picmus_phantom_{self.number}.hdf5",
        }


PICMUS_SETS = {
    s.name: s
    for s in (
        PicmusSet("simu_reso", 1, 30.0, 0.11, 10.0, "resolution"),
        PicmusSet("simu_cont", 2, 65.0, 0.12, 30.0, "contrast"),
        # The hyperechoic target of expe_reso: centre and radius fitted (edge contrast, 0.1 mm steps) to the
        # 75-PW DAS reference das_reference/3.hdf5; 4.0 mm matches the 8-mm grey-scale targets of the
        # CIRS 040GSE. Not in the PICMUS phantom file; the paper's ER gCNR ROI is not published.
        PicmusSet("expe_reso", 3, 90.0, 0.16, 10.0, "resolution", extra_cysts=(Disk(-10.5e-3, 28.1e-3, 4.0e-3),)),
        PicmusSet("expe_cont", 4, 55.0, 0.025, 30.0, "contrast"),
    )
}


#: Table I abbreviations (EC, ER from the paper; SC, SR ours for the simulated sets), in table order.
SHORT_NAMES = {"expe_cont": "EC", "expe_reso": "ER", "simu_cont": "SC", "simu_reso": "SR"}

#: Methods of Table I, in the paper's column order.
METHODS = ("DAS 75 PW", "DAS 1 PW", "DENOmean", "DRUSmean", "DRUSvar", "DRUSvar pooled")

#: Paper Table I (docs/method.md §7): ``{(dataset, metric): {method: value}}``; FWHM in mm.
PAPER_TABLE_I = {
    ("expe_cont", "gcnr"): dict(zip(METHODS, (0.95, 0.87, 0.95, 0.97, 0.98))),
    ("expe_cont", "snr"): dict(zip(METHODS, (1.92, 1.97, 1.93, 1.87, 3.03))),
    ("expe_reso", "gcnr"): dict(zip(METHODS, (0.77, 0.69, 0.95, 0.95, 1.00))),
    ("expe_reso", "fwhm_axial_mm"): dict(zip(METHODS, (0.54, 0.56, 0.31, 0.24, 0.34))),
    ("expe_reso", "fwhm_lateral_mm"): dict(zip(METHODS, (0.56, 0.87, 0.64, 0.54, 0.32))),
}


def reference_data_dir(root=None) -> Path:
    """``root``, else ``$DRUS_REFERENCE_DATA``, else ``../shared/data`` beside the working directory's repo."""
    if root is not None:
        return Path(root)
    env = os.environ.get("DRUS_REFERENCE_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    raise FileNotFoundError("reference data not found: set DRUS_REFERENCE_DATA to the folder holding picmus/, gammex/ …")


def depth_gain(n_samples: int) -> np.ndarray:
    """``exp(4·t/t_max)`` over the samples of a recording (the DRUS ``By`` preprocessing), ``[n_samples]``."""
    t = np.arange(n_samples, dtype=np.float64)
    return np.exp(4.0 * t / max(t[-1], 1.0))


def simulate_by(phantom: PicmusPhantom, beamformer: MatchedFilterBeamformer, *, factor: float = 30.0) -> np.ndarray:
    """``B y`` of a PICMUS scatterer phantom through drus's ``H``, with the DRUS preprocessing.

    Scatterers are rasterised to the nearest pixel of the grid (those outside are dropped), the
    channel data ``y = H o`` gets the depth gain, is normalised to max 1 and multiplied by ``factor``,
    then beamformed: ``[n_z, n_x]``.
    """
    grid = beamformer.grid
    o = phantom.reflectivity(grid)
    y = beamformer.model.simulate(o) * depth_gain(beamformer.model.n_samples)[:, None]
    y = y / np.abs(y).max() * factor
    return beamformer.beamform(y)


def compare_by(ours: np.ndarray, reference: np.ndarray, grid: ImageGrid, phantom: PicmusPhantom, *, pad: float = 0.5e-3) -> dict:
    """Orientation and amplitude checks between two ``By`` images of a contrast phantom.

    Returns the mean envelope inside each cyst relative to its ring (dB, per image), the same with
    the images transposed/flipped (a wrong orientation loses the contrast), the correlation of the
    two log-envelopes, and the amplitude ranges.
    """
    from drus.evaluation.metrics import cyst_masks

    def contrast(img):
        env = envelope(img)
        vals = []
        for d in phantom.cyst_disks():
            inside, outside = cyst_masks(grid, d, pad=pad)
            vals.append(20 * np.log10(env[inside].mean() / env[outside].mean()))
        return float(np.mean(vals))

    le_o, le_r = np.log(envelope(ours) + 1e-12), np.log(envelope(reference) + 1e-12)
    return {
        "cyst_contrast_db": {"ours": contrast(ours), "reference": contrast(reference),
                             "reference_transposed": contrast(reference.T), "reference_depth_flipped": contrast(reference[::-1])},
        "log_envelope_correlation": float(np.corrcoef(le_o.ravel(), le_r.ravel())[0, 1]),
        "depth_profile_correlation": float(np.corrcoef(le_o.mean(axis=1), le_r.mean(axis=1))[0, 1]),
        "amplitude": {"ours": [float(ours.min()), float(ours.max()), float(ours.std())],
                      "reference": [float(reference.min()), float(reference.max()), float(reference.std())]},
    }


# --- observations --------------------------------------------------------------------------------------
def _resolve_set(dataset) -> PicmusSet:
    if isinstance(dataset, PicmusSet):
        return dataset
    if dataset not in PICMUS_SETS:
        raise ValueError(f"unknown PICMUS dataset {dataset!r}; choose one of {', '.join(PICMUS_SETS)}")
    return PICMUS_SETS[dataset]


def infer_dataset(path) -> PicmusSet | None:
    """The PICMUS set a file name refers to, or ``None``.

    Matches the drus names (``expe_cont.mat``, ``…/simu_reso.hdf5``) and the PICMUS channel-data
    names (``contrast_speckle_expe_dataset_rf.hdf5``, ``resolution_distorsion_simu_dataset_rf.hdf5``).
    """
    stem = Path(path).name.lower()
    for name, ds in PICMUS_SETS.items():
        if name in stem:
            return ds
    source = "expe" if "expe" in stem else "simu" if "simu" in stem else None
    kind = "cont" if "contrast" in stem else "reso" if "resolution" in stem else None
    return PICMUS_SETS[f"{source}_{kind}"] if source and kind else None


def channel_data_to_by(
    channel_data, beamformer: MatchedFilterBeamformer, *, by_factor: float, angle: float = 0.0
) -> np.ndarray:
    """``B y`` from raw plane-wave channel data, with the DRUS preprocessing of the ``By`` files.

    Steps: take the ``angle`` (0°) transmit; apply the depth gain :func:`depth_gain` over the
    file's samples; normalise to max 1 and multiply by ``by_factor`` (30 for the contrast sets, 10
    for the resolution sets, :class:`PicmusSet`); resample each channel linearly onto the time axis
    of ``beamformer``'s model (sample ``k`` at ``t0 + k/fs``; zero outside the file's record), so
    that the same ``B`` — and the same cached decomposition of ``BH`` — serve every file; then
    ``B y``. The DRUS authors' exact recording window and alignment are not published: noise levels
    (σ0) given for the ``By`` files apply to the result only approximately.

    Parameters
    ----------
    channel_data : drus.datasets.io.ChannelData
        RF channel data (:func:`drus.datasets.io.read_channel_data`); IQ data are refused.
    beamformer : MatchedFilterBeamformer
        Its probe must have the file's number of elements and pitch.
    by_factor : float
        Amplitude after normalisation.
    angle : float
        Steering angle (rad) of the transmit to use.

    Returns
    -------
    numpy.ndarray
        ``[n_z, n_x]`` float32 on ``beamformer.grid``.
    """
    cd = channel_data
    if cd.is_iq:
        raise ValueError(
            f"{cd.source or 'channel_data'}: IQ data (modulation frequency {cd.modulation_frequency:g} Hz); "
            "DRUS needs RF channel data — use the RF version of the dataset"
        )
    probe, wave = beamformer.model.probe, beamformer.model.wave
    if cd.n_elements != probe.n_elements:
        raise ValueError(
            f"{cd.source or 'channel_data'} has {cd.n_elements} elements, the beamformer's probe {probe.n_elements}"
        )
    pitch = array_pitch(cd.element_positions[:, 0])
    if not math.isclose(pitch, probe.pitch, rel_tol=0.01):
        raise ValueError(f"element pitch {pitch * 1e3:.4g} mm of the data differs from the probe's {probe.pitch * 1e3:.4g} mm")
    if not math.isclose(cd.sound_speed, wave.sound_speed, rel_tol=1e-3):
        log.warning("sound speed %.1f m/s of the data differs from the model's %.1f m/s", cd.sound_speed, wave.sound_speed)
    if not (math.isfinite(by_factor) and by_factor > 0):
        raise ValueError(f"by_factor must be a positive number, got {by_factor!r}")
    index = cd.index_of_angle(angle)
    frame = cd.frame(index).astype(np.float64)  # [n_samples_file, n_elements]
    frame = frame * depth_gain(frame.shape[0])[:, None]
    peak = np.abs(frame).max()
    if peak == 0:
        raise ValueError(f"{cd.source or 'channel_data'}: the {angle:g} rad transmit is zero everywhere")
    frame = frame / peak * by_factor
    # resample onto the model's time axis: file sample j is at initial_time + j / fs_file
    n = beamformer.model.n_samples
    t = wave.t0 + np.arange(n) / wave.sampling_frequency
    pos = (t - cd.initial_time[index]) * cd.sampling_frequency
    i0 = np.floor(pos).astype(np.int64)
    w = (pos - i0)[:, None]
    ok = ((i0 >= 0) & (i0 + 1 < frame.shape[0]))[:, None]
    i0 = np.clip(i0, 0, frame.shape[0] - 2)
    y = np.where(ok, (1 - w) * frame[i0] + w * frame[i0 + 1], 0.0)
    return beamformer.beamform(y).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class PicmusInputs:
    """What :func:`evaluate_picmus` reads for one dataset (images ``[n_z, n_x]``, C order).

    Attributes
    ----------
    dataset : PicmusSet
    by : DRUS observation ``By`` on the measurement grid (``by_drus/<name>.mat``).
    deno : DENO input, ``By`` normalised to max 1 (``by_deno/<name>.mat``).
    das : :class:`drus.datasets.io.DasReference`, DAS envelopes with 1/3/11/75 plane waves on their own grid.
    phantom : :class:`drus.physics.phantoms.PicmusPhantom`, the ROIs.
    """

    dataset: PicmusSet
    by: np.ndarray = dataclasses.field(repr=False)
    deno: np.ndarray = dataclasses.field(repr=False)
    das: object = dataclasses.field(repr=False)
    phantom: PicmusPhantom = dataclasses.field(repr=False)


def load_picmus_inputs(dataset, *, data_root=None, shape: tuple[int, int] = (256, 256)) -> PicmusInputs:
    """Read the ``By``, DENO, DAS and phantom files of one PICMUS set (:meth:`PicmusSet.files`).

    ``shape`` is the measurement grid's ``(n_z, n_x)`` (256 × 256 for the shared files).
    """
    from drus.datasets.io import read_das_reference, read_deno_by, read_drus_by

    ds = _resolve_set(dataset)
    files = ds.files(data_root)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"PICMUS files of {ds.name} not found: {', '.join(missing)} (set --data or DRUS_REFERENCE_DATA)")
    return PicmusInputs(
        dataset=ds,
        by=read_drus_by(files["by_drus"], shape=shape),
        deno=read_deno_by(files["by_deno"], shape=shape),
        das=read_das_reference(files["das"]),
        phantom=PicmusPhantom.from_file(files["phantom"]),
    )


def picmus_operator(
    unknown_size: int = 128,
    *,
    geometry=None,
    threshold: float = 1e-3,
    compute_dtype: str = "float64",
    cache_dir=None,
    device="cpu",
    progress: bool = True,
    cache: bool = True,
):
    """``(beamformer, decomposed)``: ``BH`` from ``unknown_size²`` unknowns to the ``By`` grid, decomposed.

    ``geometry`` is ``(probe, wave, grid)``, by default :func:`drus.physics.geometry.picmus` (256 × 256,
    the grid of the ``By`` files). The unknowns live on the same field of view at ``unknown_size ×
    unknown_size`` pixels (:func:`drus.physics.geometry.paper_grid`); when that is the measurement grid
    itself the operator is square. The decomposition is :func:`drus.physics.decompose.decompose_bh`
    (cached on disk; computed once, minutes on a CPU for 128² unknowns). ``compute_dtype="float32"``
    is the practical choice for 256² unknowns on a CPU (docs/decomposition.md). ``cache=False``
    decomposes in memory only (nothing read from or written to ``cache_dir``).
    """
    from drus.physics.decompose import decompose_bh
    from drus.physics.geometry import paper_grid, picmus

    n = int(unknown_size)
    if n != unknown_size or n < 2:
        raise ValueError(f"unknown_size must be an integer ≥ 2 (pixels per side), got {unknown_size!r}")
    probe, wave, grid = geometry if geometry is not None else picmus(256)
    if (n, n) == grid.shape:
        unknown = None
    else:
        unknown = paper_grid(n) if geometry is None else grid.resized(n, n)
    bf = MatchedFilterBeamformer(probe, wave, grid, unknown_grid=unknown)
    op = decompose_bh(bf, threshold=threshold, compute_dtype=compute_dtype, cache_dir=cache_dir, device=device,
                      progress=progress, cache=cache)
    return bf, op


# --- scoring -----------------------------------------------------------------------------------------
def method_envelope(method: str, image: np.ndarray) -> np.ndarray:
    """The amplitude image that metrics and B-modes use for ``method`` (:data:`METHODS`).

    - DAS references are envelope images already: ``|frame|``;
    - DENOmean and DRUSmean are signed RF-like images: envelope by the Hilbert transform along depth
      (:func:`drus.physics.beamform.envelope`);
    - DRUSvar is the sample-variance map ``p̂`` itself: with β = 0.5 it estimates the echogenicity
      ``p``, an amplitude-like quantity (``|o| ∝ p``), so no envelope is taken.
    """
    image = np.asarray(image)
    if method.startswith("DAS"):
        return np.abs(image)
    if method in ("DENOmean", "DRUSmean"):
        return envelope(image, axis=0)
    if method in ("DRUSvar", "DRUSvar pooled"):
        return np.abs(image)
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def points_in_view(points: np.ndarray, grid: ImageGrid, *, margin: float = 0.5e-3) -> np.ndarray:
    """Point targets ``[k, 2]`` (x, z in m) at least ``margin`` inside ``grid``'s field of view.

    A target on the edge (simu_reso has one at z = 10 mm, the first row) has half its main lobe cut
    off; 0.5 mm ≈ the DAS −6 dB width keeps the measured lobes whole.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, z = grid.x_axis, grid.z_axis
    keep = ((pts[:, 0] >= x[0] + margin) & (pts[:, 0] <= x[-1] - margin)
            & (pts[:, 1] >= z[0] + margin) & (pts[:, 1] <= z[-1] - margin))
    return pts[keep]


def score_image(amplitude: np.ndarray, grid: ImageGrid, *, cysts=(), speckle_rois=None, points=None) -> dict:
    """Table I metrics of one amplitude image: ``{metric: [one value per ROI]}``.

    - ``cysts`` given: ``gcnr`` and ``cnr`` per cyst (dB image with the −60 dB floor, 256 bins;
      :func:`drus.evaluation.metrics.contrast_metrics`) and ``snr`` (μ/σ of the amplitude) per speckle ROI —
      ``speckle_rois`` (e.g. :meth:`PicmusPhantom.speckle_boxes`) or, when ``None`` or empty, each
      cyst's outside ring;
    - ``points`` given (non-empty): ``fwhm_axial_mm``, ``fwhm_lateral_mm`` (−6 dB, mm).
    """
    from drus.evaluation.metrics import contrast_metrics, resolution_metrics

    out: dict = {}
    if len(cysts):
        c = contrast_metrics(amplitude, grid, cysts, speckle_rois=list(speckle_rois) if speckle_rois else None)
        out.update(gcnr=[float(v) for v in c.gcnr], cnr=[float(v) for v in c.cnr], snr=[float(v) for v in c.snr])
    if points is not None and len(points):
        r = resolution_metrics(amplitude, grid, points)
        out.update(fwhm_axial_mm=[v * 1e3 for v in r.axial], fwhm_lateral_mm=[v * 1e3 for v in r.lateral])
    return out


# --- the evaluation ------------------------------------------------------------------------------------
_METRIC_LABELS = {"gcnr": "gCNR ↑", "snr": "SNR ↑", "fwhm_axial_mm": "FWHM A [mm] ↓", "fwhm_lateral_mm": "FWHM L [mm] ↓"}


@dataclasses.dataclass(eq=False)
class MethodResult:
    """One method on one dataset.

    Attributes
    ----------
    image : the method's output ``[n_z, n_x]`` (DAS envelope, signed DENOmean/DRUSmean, DRUSvar ``p̂``).
    amplitude : what metrics and B-modes use (:func:`method_envelope`).
    grid : the image's grid (DAS: the reference file's axes; DENO: the ``By`` grid; DRUS: the unknown grid).
    metrics : ``{metric: [values per ROI]}`` (:func:`score_image`).
    seconds : wall time of the reconstruction (0 for DAS).
    """

    image: np.ndarray = dataclasses.field(repr=False)
    amplitude: np.ndarray = dataclasses.field(repr=False)
    grid: ImageGrid
    metrics: dict
    seconds: float = 0.0


@dataclasses.dataclass(eq=False)
class DatasetResult:
    """All methods on one dataset, plus the arrays worth keeping (samples, observations)."""

    dataset: PicmusSet
    methods: dict
    by: np.ndarray = dataclasses.field(repr=False)
    by_grid: ImageGrid = dataclasses.field(repr=False)
    drus_samples: np.ndarray = dataclasses.field(repr=False)
    deno_samples: np.ndarray = dataclasses.field(repr=False)
    cysts: tuple = ()
    attrs: dict = dataclasses.field(default_factory=dict)

    def save(self, path) -> Path:
        """HDF5 (:func:`drus.datasets.io.save_images_hdf5`) of the samples and every image.

        ``samples``/``mean``/``var`` (DRUS) are on ``x_axis``/``z_axis`` (the unknown grid, what
        :func:`drus.datasets.io.load_images_hdf5` returns as ``grid``); ``by``, ``deno_input``,
        ``deno_samples``, ``deno_mean`` on ``x_axis_image``/``z_axis_image``; ``das_1pw``,
        ``das_75pw`` (envelopes) on ``x_axis_das``/``z_axis_das``.
        """
        from drus.datasets.io import save_images_hdf5

        m = self.methods
        g_u, g_das = m["DRUSmean"].grid, m["DAS 1 PW"].grid
        return save_images_hdf5(
            path, attrs={**self.attrs, "dataset": self.dataset.name},
            samples=self.drus_samples, mean=m["DRUSmean"].image, var=m["DRUSvar"].image,
            **({"var_pooled": m["DRUSvar pooled"].image} if "DRUSvar pooled" in m else {}),
            x_axis=g_u.x_axis, z_axis=g_u.z_axis,
            by=self.by, deno_samples=self.deno_samples, deno_mean=m["DENOmean"].image,
            x_axis_image=self.by_grid.x_axis, z_axis_image=self.by_grid.z_axis,
            das_1pw=m["DAS 1 PW"].image, das_75pw=m["DAS 75 PW"].image,
            x_axis_das=g_das.x_axis, z_axis_das=g_das.z_axis,
        )


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (math.nan, math.nan)
    return float(v.mean()), float(v.std())


@dataclasses.dataclass(eq=False)
class PicmusEvaluation:
    """Result of :func:`evaluate_picmus`: ``datasets`` (name → :class:`DatasetResult`), ``settings``."""

    datasets: dict
    settings: dict

    def summary(self) -> dict:
        """``{dataset: {method: {metric: (mean, std)}}}`` over the ROIs (std: population, ddof 0)."""
        return {
            name: {meth: {k: _mean_std(v) for k, v in r.metrics.items()} for meth, r in d.methods.items()}
            for name, d in self.datasets.items()
        }

    def table(self) -> str:
        """Markdown in the layout of the paper's Table I: ours as mean ± std over ROIs, the paper's in
        parentheses where it has a value (EC, ER); rows for every metric of every evaluated set."""
        summary = self.summary()
        head = "| set | metric | " + " | ".join(METHODS) + " |"
        lines = [head, "|---|---|" + "---|" * len(METHODS)]
        order = [n for n in SHORT_NAMES if n in self.datasets]
        for name in order:
            per = summary[name]
            metrics = [k for k in _METRIC_LABELS if any(k in per[m] for m in per)]
            for k in metrics:
                paper = PAPER_TABLE_I.get((name, k), {})
                cells = []
                for meth in METHODS:
                    mean, std = per.get(meth, {}).get(k, (math.nan, math.nan))
                    cell = "—" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"
                    if meth in paper:
                        cell += f" ({paper[meth]:.2f})"
                    cells.append(cell)
                lines.append(f"| {SHORT_NAMES[name]} | {_METRIC_LABELS[k]} | " + " | ".join(cells) + " |")
        s = self.settings
        notes = [
            "",
            f"Ours: mean ± std over ROIs (cysts for gCNR, speckle ROIs for SNR, point targets for FWHM); "
            f"(paper Table I). C = {s['n_samples']} samples, {s['n_steps']} steps, By on "
            f"{s['measurement_grid'][0]}×{s['measurement_grid'][1]}, DRUS unknowns on "
            f"{s['unknown_grid'][0]}×{s['unknown_grid'][1]}, threshold {s['threshold']:g}·s1, seed {s['seed']}.",
            "EC = expe_cont, ER = expe_reso (paper); SC = simu_cont, SR = simu_reso (not in the paper).",
        ]
        for name in order:
            for c in self.datasets[name].dataset.extra_cysts:
                notes.append(f"{SHORT_NAMES[name]} gCNR/SNR ROI: target at ({c.x * 1e3:.1f}, {c.z * 1e3:.1f}) mm, "
                             f"r = {c.radius * 1e3:.1f} mm, fitted to the 75-PW DAS (not in the PICMUS phantom file); "
                             "SNR in its ring.")
        return "\n".join(lines + notes)

    def to_dict(self) -> dict:
        out = {"settings": self.settings, "datasets": {}}
        summary = self.summary()
        for name, d in self.datasets.items():
            out["datasets"][name] = {
                "short": SHORT_NAMES[name],
                "sigma0_drus": d.dataset.sigma0_drus, "sigma0_deno": d.dataset.sigma0_deno,
                "cysts_m": [[c.x, c.z, c.radius] for c in d.cysts],
                "run": d.attrs,
                "methods": {
                    meth: {
                        "seconds": r.seconds,
                        "grid": list(r.grid.shape),
                        "metrics": {k: {"values": v, "mean": summary[name][meth][k][0], "std": summary[name][meth][k][1],
                                        "paper": PAPER_TABLE_I.get((name, k), {}).get(meth)}
                                    for k, v in r.metrics.items()},
                    }
                    for meth, r in d.methods.items()
                },
            }
        return out

    def to_json(self) -> str:
        def clean(o):
            if isinstance(o, float) and not math.isfinite(o):
                return None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [clean(v) for v in o]
            return o

        return json.dumps(clean(self.to_dict()), indent=1)

    def save_figure(self, path, *, dynamic_range: float = 60.0) -> Path:
        """B-mode panels in [−60, 0] dB: one row per dataset, one column per method, cysts outlined."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        from drus.evaluation.metrics import to_db

        names = [n for n in SHORT_NAMES if n in self.datasets]
        fig, axes = plt.subplots(len(names), len(METHODS), figsize=(2.9 * len(METHODS), 3.0 * len(names) + 0.5),
                                 squeeze=False, constrained_layout=True)
        im = None
        for row, name in zip(axes, names):
            d = self.datasets[name]
            for ax, meth in zip(row, METHODS):
                r = d.methods[meth]
                im = ax.imshow(to_db(r.amplitude, floor_db=-dynamic_range), cmap="gray", vmin=-dynamic_range, vmax=0,
                               extent=r.grid.extent_mm, aspect="equal")
                for c in d.cysts:
                    ax.add_patch(plt.Circle((c.x * 1e3, c.z * 1e3), c.radius * 1e3, fill=False, color="tab:red", lw=0.5))
                ax.set_title(f"{SHORT_NAMES[name]}: {meth}", fontsize=8)
                ax.tick_params(labelsize=6)
                ax.set_xlabel("x [mm]", fontsize=7)
                ax.set_ylabel("z [mm]", fontsize=7)
        if im is not None:
            fig.colorbar(im, ax=axes, shrink=0.6, label="dB")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def save(self, out_dir) -> list[Path]:
        """Write ``<dataset>.hdf5`` per dataset, ``table.md``, ``results.json`` and ``picmus.png``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = [d.save(out / f"{name}.hdf5") for name, d in self.datasets.items()]
        (out / "table.md").write_text(self.table() + "\n")
        (out / "results.json").write_text(self.to_json())
        files += [out / "table.md", out / "results.json", self.save_figure(out / "picmus.png")]
        return files


def evaluate_picmus(
    model,
    *,
    sets=("simu_reso", "simu_cont", "expe_reso", "expe_cont"),
    unknown_size: int = 128,
    sampler: SamplerConfig = SamplerConfig(),
    threshold: float = 1e-3,
    compute_dtype: str = "float64",
    device="cpu",
    data_root=None,
    cache_dir=None,
    progress: bool = True,
    out_dir=None,
    geometry=None,
    decomposed=None,
    sigma0_from_data: bool = False,
) -> PicmusEvaluation:
    """Table I of the DRUSvar paper on the PICMUS sets: DAS 75/1 PW, DENOmean, DRUSmean, DRUSvar.

    Methods (per dataset):

    - ``DAS 1 PW``, ``DAS 75 PW``: frames of ``das_reference/<n>.hdf5`` (envelope images, ``|·|``,
      on the file's own grid);
    - ``DENOmean``: :func:`drus.sampling.reconstruct.deno` (DDRM with ``A = I``) on the ``by_deno`` image
      (signed, max-normalised) with ``σ0 = sigma0_deno``, on the ``By`` grid;
    - ``DRUSmean``, ``DRUSvar``: :func:`drus.sampling.reconstruct.reconstruct` with the decomposed ``BH``
      (``By`` on 256², unknowns on ``unknown_size²`` over the same field of view — rectangular
      unless ``unknown_size == 256``; :func:`picmus_operator`, one decomposition shared by every set)
      on ``By`` (``by_drus``) with ``σ0 = sigma0_drus``; mean and variance (β = 0.5) of the samples.

    Amplitudes for the metrics and B-modes (:func:`method_envelope`): DAS → ``|frame|``; DENOmean
    and DRUSmean, signed RF-like images → Hilbert envelope along depth; DRUSvar → the variance map
    itself (with β = 0.5 an estimate of the echogenicity, amplitude-like).

    Prior units: each observation is scaled by :func:`drus.sampling.scaling.prior_scale` (the unknown at RMS 0.25, with a
    noise-inclusive fallback where σ0 exceeds the signal — the resolution sets; recorded per dataset
    as ``scale_source_*``).

    Metrics (:func:`score_image`), mean ± std over ROIs: sets with cysts (the phantom's occlusions
    and :attr:`PicmusSet.extra_cysts`) → gCNR per cyst (dB images, −60 dB floor, 256 bins) and SNR
    of the amplitude in the PICMUS speckle boxes (else each cyst's ring); sets with point targets →
    axial/lateral −6 dB FWHM (mm) of the targets inside the field of view (:func:`points_in_view`).

    Parameters
    ----------
    model : torch.nn.Module
        The prior (:func:`drus.models.prior.load_prior`); used for DENO and DRUS.
    sets : sequence of str
        PICMUS set names (:data:`PICMUS_SETS`).
    unknown_size : int
        Side of the DRUS unknown grid (128: minutes of CPU decomposition; 256: the paper's square
        operator, hours on a CPU).
    sampler : SamplerConfig
        C (≥ 2 for DRUSvar), steps, η, η_B, β, seed (each dataset and method starts from it) and the
        DRUS prior/data split (default: the paper's configuration; DENO always runs with
        ``prior_fraction = 0``).
    threshold : float
        Decomposition threshold relative to ``s_1`` (:func:`drus.physics.decompose.decompose_bh`).
    compute_dtype : {"float64", "float32"}
        dtype of the decomposition (:func:`picmus_operator`).
    device : str or torch.device
        Where DDRM (and the decomposition) run.
    data_root, cache_dir : path, optional
        Reference data folder (:func:`reference_data_dir`) and decomposition cache.
    progress : bool
        Progress bars.
    out_dir : path, optional
        If given, each dataset's HDF5 is written as soon as it is done, and everything
        (:meth:`PicmusEvaluation.save`) at the end.
    geometry : (probe, wave, grid), optional
        Measurement geometry (default :func:`drus.physics.geometry.picmus` ``(256)``); the files are read on
        ``grid.shape``. For tests on small grids.
    decomposed : DecomposedBH, optional
        A ready operator (its ``out_shape`` must be the measurement grid's shape); skips
        :func:`picmus_operator`.
    sigma0_from_data : bool
        DRUS: the noise level from :func:`drus.sampling.noise.estimate_sigma0` instead of the paper's σ0.

    ``DRUSvar pooled`` (:func:`drus.sampling.estimators.drus_var_pooled`, one DAS resolution cell) is scored
    from the same samples, beside the paper's DRUSvar.

    Returns
    -------
    PicmusEvaluation
    """
    import torch

    from drus.sampling.estimators import pool_window
    from drus.physics.geometry import picmus
    from drus.sampling.reconstruct import deno, reconstruct

    names = [sets] if isinstance(sets, str) else list(sets)
    if not names:
        raise ValueError(f"sets is empty; choose among {', '.join(PICMUS_SETS)}")
    chosen = [_resolve_set(n) for n in names]
    if sampler.n_samples < 2:
        raise ValueError(f"n_samples must be ≥ 2 (DRUSvar is a sample variance), got {sampler.n_samples!r}")
    device = torch.device(device)
    geometry = geometry if geometry is not None else picmus(256)
    grid = geometry[2]
    t0 = time.perf_counter()
    if decomposed is None:
        _, decomposed = picmus_operator(unknown_size, geometry=geometry, threshold=threshold,
                                        compute_dtype=compute_dtype, cache_dir=cache_dir, device=device,
                                        progress=progress)
    if tuple(decomposed.out_shape) != grid.shape:
        raise ValueError(f"decomposed maps to {tuple(decomposed.out_shape)} images, the measurement grid is {grid.shape}")
    unknown_grid = decomposed.beamformer.unknown_grid
    seconds_decomposition = time.perf_counter() - t0
    settings = {
        "sets": [d.name for d in chosen], **sampler.to_dict(),
        "threshold": float(threshold), "compute_dtype": decomposed.metadata.get("compute_dtype", compute_dtype),
        "device": str(device),
        "measurement_grid": list(grid.shape), "unknown_grid": list(unknown_grid.shape),
        "decomposition": {"seconds": seconds_decomposition, "n_kept": int(decomposed.n_kept), "s1": float(decomposed.s1),
                          "key": decomposed.metadata.get("key")},
        "sigma0_drus": "estimated from the data (drus.sampling.noise)" if sigma0_from_data else "the paper's",
        "pool_window_px": pool_window(unknown_grid),
    }
    common = dict(model=model, sampler=sampler, device=device, progress=progress)
    results = {}
    for ds in chosen:
        log.info("PICMUS %s (%s)", ds.name, ds.short)
        inp = load_picmus_inputs(ds, data_root=data_root, shape=grid.shape)
        cysts = ds.cysts(inp.phantom)
        rois = inp.phantom.speckle_boxes() or None
        methods = {}

        def add(meth, image, g, seconds=0.0):
            amp = method_envelope(meth, image)
            pts = points_in_view(inp.phantom.points(), g)
            methods[meth] = MethodResult(image=image, amplitude=amp, grid=g, seconds=seconds,
                                         metrics=score_image(amp, g, cysts=cysts, speckle_rois=rois, points=pts))

        das_grid = inp.das.grid
        add("DAS 75 PW", np.abs(inp.das.frame_for(75)).astype(np.float32), das_grid)
        add("DAS 1 PW", np.abs(inp.das.frame_for(1)).astype(np.float32), das_grid)
        t = time.perf_counter()
        den = deno(inp.deno, sigma0=ds.sigma0_deno, **common)
        add("DENOmean", den.mean, grid, time.perf_counter() - t)
        t = time.perf_counter()
        sigma0, sigma0_source = ds.sigma0_drus, "paper"
        if sigma0_from_data:
            from drus.sampling.noise import estimate_sigma0

            sigma0, sigma0_source = estimate_sigma0(decomposed, inp.by)
        rec = reconstruct(decomposed, inp.by, sigma0=sigma0, **common)
        sec = time.perf_counter() - t
        add("DRUSmean", rec.mean, unknown_grid, sec)
        add("DRUSvar", rec.var, unknown_grid, sec)
        add("DRUSvar pooled", rec.var_pooled(pool_window(unknown_grid)), unknown_grid, sec)
        results[ds.name] = DatasetResult(
            dataset=ds, methods=methods, by=inp.by, by_grid=grid, drus_samples=rec.samples, deno_samples=den.samples,
            cysts=cysts,
            attrs={"sigma0_drus": sigma0, "sigma0_drus_source": sigma0_source, "sigma0_sampler_drus": rec.sigma0_sampler,
                   **sampler.to_attrs(), "sigma0_deno": ds.sigma0_deno, "threshold": float(threshold),
                   "scale_drus": rec.scale, "scale_deno": den.scale, "scale_source_drus": rec.scale_source,
                   "scale_source_deno": den.scale_source,
                   # the sampler's own split: total, network and everything else (operator, noise), seconds
                   **{f"drus_{k}": float(v) for k, v in rec.timings.items()},
                   **{f"deno_{k}": float(v) for k, v in den.timings.items()}},
        )
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            results[ds.name].save(Path(out_dir) / f"{ds.name}.hdf5")
    evaluation = PicmusEvaluation(results, settings)
    if out_dir is not None:
        evaluation.save(out_dir)
    return evaluation
