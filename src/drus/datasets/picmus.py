"""PICMUS datasets as DRUS uses them: the registry with the paper's numbers, the observations, the operator.

The shared reference data (``$DRUS_REFERENCE_DATA`` or ``../shared/data``) holds, for the four
PICMUS sets, the DRUS observations ``By`` (``picmus/by_drus``), the DENO inputs (``by_deno``), DAS
references with 1/3/11/75 plane waves and the official phantom descriptions. Numbers below, and their
sources (the authors' code, the reference data): docs/method.md §3.

EC = expe_cont, ER = expe_reso (the paper's real sets), SC = simu_cont, SR = simu_reso (simulated);
:func:`channel_data_to_by` turns raw 0° channel data into a DRUS observation; the paper's Table I
on these sets is :func:`drus.pipelines.picmus.evaluate_picmus`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np

from drus.physics.beamform import MatchedFilterBeamformer, envelope
from drus.physics.geometry import ImageGrid, array_pitch
from drus.physics.geometry import Disk
from drus.physics.phantoms import PicmusPhantom

__all__ = [
    "PicmusSet",
    "PICMUS_SETS",
    "SHORT_NAMES",
    "PAPER_METHODS",
    "PAPER_TABLE_I",
    "reference_data_dir",
    "depth_gain",
    "simulate_by",
    "compare_by",
    "infer_dataset",
    "PicmusInputs",
    "load_picmus_inputs",
    "picmus_operator",
    "channel_data_to_by",
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

#: The methods of the paper's Table I, in its column order.
PAPER_METHODS = ("DAS 75 PW", "DAS 1 PW", "DENOmean", "DRUSmean", "DRUSvar")

#: Paper Table I (docs/method.md §7): ``{(dataset, metric): {method: value}}``; FWHM in mm.
PAPER_TABLE_I = {
    ("expe_cont", "gcnr"): dict(zip(PAPER_METHODS, (0.95, 0.87, 0.95, 0.97, 0.98))),
    ("expe_cont", "snr"): dict(zip(PAPER_METHODS, (1.92, 1.97, 1.93, 1.87, 3.03))),
    ("expe_reso", "gcnr"): dict(zip(PAPER_METHODS, (0.77, 0.69, 0.95, 0.95, 1.00))),
    ("expe_reso", "fwhm_axial_mm"): dict(zip(PAPER_METHODS, (0.54, 0.56, 0.31, 0.24, 0.34))),
    ("expe_reso", "fwhm_lateral_mm"): dict(zip(PAPER_METHODS, (0.56, 0.87, 0.64, 0.54, 0.32))),
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
    channel_data : drus.datasets.channel_data.ChannelData
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
