"""The paper's Table I on the PICMUS sets, end to end: DAS references, DENOmean, DRUSmean, DRUSvar
(and drus's pooled DRUSvar) scored on the same ROIs, written as a table, JSON, HDF5 and a figure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from drus.datasets.picmus import (
    PAPER_TABLE_I,
    PICMUS_SETS,
    SHORT_NAMES,
    PicmusSet,
    _resolve_set,
    load_picmus_inputs,
    picmus_operator,
)
from drus.evaluation.scoring import METHODS, method_envelope, points_in_view, score_image
from drus.outputs import json_safe
from drus.physics.geometry import ImageGrid
from drus.sampling.config import OperatorConfig, ReconstructionConfig, SamplerConfig

__all__ = ["MethodResult", "DatasetResult", "PicmusEvaluation", "SetScoring", "prepare_set", "decimated_grid",
           "decimation", "das_methods", "deno_method", "drus_methods", "evaluate_picmus", "picmus_table", "by_check",
           "TABLE_FILES"]

#: The files :meth:`PicmusEvaluation.save` writes besides one ``<set>.hdf5`` per set.
TABLE_FILES = ("table.md", "results.json", "picmus.png")

log = logging.getLogger(__name__)


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
        return json.dumps(json_safe(self.to_dict()), indent=1)

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


@dataclasses.dataclass(frozen=True, eq=False)
class SetScoring:
    """One PICMUS set ready to be scored: its inputs on the measurement ``grid``, contrast ROIs and
    speckle boxes (:func:`prepare_set`); :meth:`score` turns a method's image into a :class:`MethodResult`."""

    inputs: object = dataclasses.field(repr=False)  # PicmusInputs
    grid: ImageGrid = dataclasses.field(repr=False)
    cysts: tuple = ()
    rois: list | None = None

    @property
    def dataset(self) -> PicmusSet:
        return self.inputs.dataset

    def score(self, method: str, image: np.ndarray, grid: ImageGrid, seconds: float = 0.0, *,
              amplitude: np.ndarray | None = None) -> MethodResult:
        """``method``'s amplitude (:func:`method_envelope`, or ``amplitude`` when given: a method outside
        :data:`METHODS`, e.g. a despeckled envelope) scored on this set's ROIs (:func:`score_image`)."""
        amp = method_envelope(method, image) if amplitude is None else np.asarray(amplitude)
        pts = points_in_view(self.inputs.phantom.points(), grid)
        return MethodResult(image=image, amplitude=amp, grid=grid, seconds=seconds,
                            metrics=score_image(amp, grid, cysts=self.cysts, speckle_rois=self.rois, points=pts))


def decimation(shape: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices ``(iz, ix)`` that keep every ``stride``-th pixel of an ``[n_z, n_x]`` image.

    Depth: ``0, stride, …``. Lateral: mirrored about the centre (``i`` kept iff ``n_x − 1 − i`` is), so
    that a grid symmetric about x = 0 stays symmetric (the flip split of :func:`decompose_bh` needs it);
    the two middle columns are then ``stride + 1`` apart when ``n_x/stride`` is even.
    """
    n_z, n_x = shape
    if stride < 1 or n_z % stride or n_x % (2 * stride):
        raise ValueError(f"stride {stride!r} must divide n_z = {n_z} and n_x/2 = {n_x // 2}")
    half = np.arange(0, n_x // 2, stride)
    return np.arange(0, n_z, stride), np.concatenate([half, (n_x - 1 - half)[::-1]])


def decimated_grid(grid: ImageGrid, stride: int) -> ImageGrid:
    """``grid`` at the pixels of :func:`decimation` (a ``By`` pixel is one row of ``B``: kept exactly)."""
    iz, ix = decimation(grid.shape, stride)
    return ImageGrid(x=tuple(grid.x[i] for i in ix), z=tuple(grid.z[i] for i in iz))


def prepare_set(dataset, *, data_root=None, grid: ImageGrid, file_shape: tuple[int, int] | None = None) -> SetScoring:
    """Read one set (:func:`load_picmus_inputs`) for scoring on the measurement ``grid``.

    ``file_shape``: the shape the ``By``/DENO files are stored in (default ``grid.shape``). When it
    is a multiple of ``grid.shape`` the images are decimated to ``grid`` (:func:`decimation`: a
    ``By`` pixel is one row of ``B``, so the decimated image is exactly ``B y`` on the coarser grid,
    :func:`decimated_grid`); used by the quick reproduction.
    """
    ds = _resolve_set(dataset)
    file_shape = tuple(file_shape or grid.shape)
    inp = load_picmus_inputs(ds, data_root=data_root, shape=file_shape)
    if file_shape != grid.shape:
        k = file_shape[0] // grid.shape[0]
        if k * grid.shape[0] != file_shape[0] or k * grid.shape[1] != file_shape[1]:
            raise ValueError(f"grid {grid.shape} does not divide the files' shape {file_shape}")
        iz, ix = decimation(file_shape, k)
        inp = dataclasses.replace(inp, by=np.ascontiguousarray(inp.by[np.ix_(iz, ix)]),
                                  deno=np.ascontiguousarray(inp.deno[np.ix_(iz, ix)]))
    return SetScoring(inputs=inp, grid=grid, cysts=ds.cysts(inp.phantom), rois=inp.phantom.speckle_boxes() or None)


def das_methods(scoring: SetScoring) -> dict:
    """``{"DAS 75 PW", "DAS 1 PW": MethodResult}``: the reference file's envelopes on its own grid."""
    das = scoring.inputs.das
    return {f"DAS {n} PW": scoring.score(f"DAS {n} PW", np.abs(das.frame_for(n)).astype(np.float32), das.grid)
            for n in (75, 1)}


def deno_method(scoring: SetScoring, *, model, sampler: SamplerConfig, device="cpu", progress: bool = False):
    """``(MethodResult, Reconstruction)`` of DENOmean (:func:`drus.sampling.reconstruct.deno`, ``A = I``) on
    the set's DENO input with its σ0, on the measurement grid."""
    from drus.sampling.reconstruct import deno

    t = time.perf_counter()
    den = deno(scoring.inputs.deno, sigma0=scoring.dataset.sigma0_deno, model=model, sampler=sampler, device=device,
               progress=progress)
    return scoring.score("DENOmean", den.mean, scoring.grid, time.perf_counter() - t), den


def drus_methods(scoring: SetScoring, decomposed, *, model, sampler: SamplerConfig, device="cpu",
                 progress: bool = False, sigma0_from_data: bool = False):
    """``(methods, Reconstruction, attrs)``: DRUSmean, DRUSvar and pooled DRUSvar from one set of ``C``
    DRUS samples with ``decomposed`` (``BH``), σ0 the paper's (or estimated from the data)."""
    from drus.sampling.estimators import pool_window
    from drus.sampling.reconstruct import reconstruct

    unknown_grid = decomposed.beamformer.unknown_grid
    ds, by = scoring.dataset, scoring.inputs.by
    t = time.perf_counter()
    sigma0, sigma0_source = ds.sigma0_drus, "paper"
    if sigma0_from_data:
        from drus.sampling.noise import estimate_sigma0

        sigma0, sigma0_source = estimate_sigma0(decomposed, by)
    rec = reconstruct(decomposed, by, sigma0=sigma0, model=model, sampler=sampler, device=device, progress=progress)
    sec = time.perf_counter() - t
    methods = {"DRUSmean": scoring.score("DRUSmean", rec.mean, unknown_grid, sec),
               "DRUSvar": scoring.score("DRUSvar", rec.var, unknown_grid, sec),
               "DRUSvar pooled": scoring.score("DRUSvar pooled", rec.var_pooled(pool_window(unknown_grid)),
                                               unknown_grid, sec)}
    attrs = {"sigma0_drus": sigma0, "sigma0_drus_source": sigma0_source, "sigma0_sampler_drus": rec.sigma0_sampler,
             "scale_drus": rec.scale, "scale_source_drus": rec.scale_source,
             # the sampler's own split: total, network and everything else (operator, noise), seconds
             **{f"drus_{k}": float(v) for k, v in rec.timings.items()}}
    return methods, rec, attrs


def evaluate_picmus(
    model,
    *,
    sets=("simu_reso", "simu_cont", "expe_reso", "expe_cont"),
    config: ReconstructionConfig = ReconstructionConfig(),
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
      (``By`` on 256², unknowns on ``operator.unknown_size²`` over the same field of view — rectangular
      unless it is 256; :func:`picmus_operator`, one decomposition shared by every set)
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
        The prior, loaded by the caller as ``config`` says (:func:`drus.models.prior.load_prior` with
        ``config.prior``, ``config.precision``) on ``config.device``; used for DENO and DRUS.
    sets : sequence of str
        PICMUS set names (:data:`PICMUS_SETS`).
    config : ReconstructionConfig
        ``config.operator``: the unknown grid's side (128: minutes of CPU decomposition; 256: the
        paper's square operator, hours on a CPU), the decomposition threshold relative to ``s_1`` and
        its dtype. ``config.sampler``: C (≥ 2 for DRUSvar), steps, η, η_B, β, seed (each dataset and
        method starts from it) and the DRUS prior/data split (default: the paper's configuration;
        DENO always runs with ``prior_fraction = 0``). ``config.device``: where DDRM (and the
        decomposition) run. Saved in ``results.json`` (``settings.config``) with the operator that ran.
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
    from drus.sampling.estimators import pool_window
    from drus.physics.geometry import picmus

    names = [sets] if isinstance(sets, str) else list(sets)
    if not names:
        raise ValueError(f"sets is empty; choose among {', '.join(PICMUS_SETS)}")
    chosen = [_resolve_set(n) for n in names]
    if not isinstance(config, ReconstructionConfig):
        raise TypeError(f"config must be a ReconstructionConfig, got {type(config).__name__}")
    sampler, operator = config.sampler, config.operator
    if sampler.n_samples < 2:
        raise ValueError(f"n_samples must be ≥ 2 (DRUSvar is a sample variance), got {sampler.n_samples!r}")
    from drus.device import resolve_device

    device = resolve_device(config.device)
    geometry = geometry if geometry is not None else picmus(256)
    grid = geometry[2]
    t0 = time.perf_counter()
    if decomposed is None:
        _, decomposed = picmus_operator(operator.unknown_size, geometry=geometry, threshold=operator.threshold,
                                        compute_dtype=operator.compute_dtype, cache_dir=cache_dir, device=device,
                                        progress=progress)
    if tuple(decomposed.out_shape) != grid.shape:
        raise ValueError(f"decomposed maps to {tuple(decomposed.out_shape)} images, the measurement grid is {grid.shape}")
    unknown_grid = decomposed.beamformer.unknown_grid
    # what was run, also when a ready operator was passed in
    operator = OperatorConfig(unknown_size=int(unknown_grid.shape[0]), threshold=float(decomposed.threshold),
                              compute_dtype=decomposed.metadata.get("compute_dtype", operator.compute_dtype))
    seconds_decomposition = time.perf_counter() - t0
    settings = {
        "sets": [d.name for d in chosen], **sampler.to_dict(),
        "operator": operator.to_dict(), "threshold": float(operator.threshold), "compute_dtype": operator.compute_dtype,
        "device": str(device), "config": config.replace(operator=operator).to_dict(),
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
        scoring = prepare_set(ds, data_root=data_root, grid=grid)
        methods = das_methods(scoring)
        deno_result, den = deno_method(scoring, **common)
        methods["DENOmean"] = deno_result
        drus, rec, drus_attrs = drus_methods(scoring, decomposed, sigma0_from_data=sigma0_from_data, **common)
        methods.update(drus)
        results[ds.name] = DatasetResult(
            dataset=ds, methods=methods, by=scoring.inputs.by, by_grid=grid, drus_samples=rec.samples,
            deno_samples=den.samples, cysts=scoring.cysts,
            attrs={**drus_attrs, **sampler.to_attrs(), "sigma0_deno": ds.sigma0_deno, **operator.to_dict(),
                   "scale_deno": den.scale, "scale_source_deno": den.scale_source,
                   **{f"deno_{k}": float(v) for k, v in den.timings.items()}},
        )
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            results[ds.name].save(Path(out_dir) / f"{ds.name}.hdf5")
    evaluation = PicmusEvaluation(results, settings)
    if out_dir is not None:
        evaluation.save(out_dir)
    return evaluation


def by_check(dataset: str, *, out_dir, data_root=None, overwrite: bool = False) -> tuple[dict, list]:
    """Simulate a PICMUS phantom through drus's ``H`` and ``B`` and compare with the DRUS ``By`` file
    (``drus evaluate by-check``).

    The phantom file of ``dataset`` (``simu_cont`` or ``simu_reso``) goes through
    :func:`drus.datasets.picmus.simulate_by` (×  the set's By factor) on the 256² PICMUS grid; for a
    phantom with cysts, :func:`drus.datasets.picmus.compare_by` scores both images. Writes
    ``<dataset>.png`` (both envelopes, [−60, 0] dB) and ``<dataset>.json`` (the comparison) into
    ``out_dir``; returns ``(comparison, files)``.
    """
    from drus.datasets.io import read_drus_by
    from drus.datasets.picmus import compare_by, simulate_by
    from drus.errors import OptionError
    from drus.outputs import check_writable_dir, refuse_overwrite, write_text_atomic
    from drus.physics import geometry
    from drus.physics.beamform import MatchedFilterBeamformer, envelope, log_compress
    from drus.physics.phantoms import PicmusPhantom
    from drus.plotting import save_bmode_figure

    ds = _resolve_set(dataset)
    files = ds.files(data_root)
    for key in ("phantom", "by_drus"):
        if not Path(files[key]).is_file():
            raise OptionError("--data", f"{files[key]} not found; point --data at the reference folder (the one "
                                        "holding picmus/), or set $DRUS_REFERENCE_DATA")
    out = check_writable_dir(out_dir)
    written = [out / f"{ds.name}.png", out / f"{ds.name}.json"]
    refuse_overwrite(written, overwrite=overwrite)
    probe, wave, grid = geometry.picmus(256)
    bf = MatchedFilterBeamformer(probe, wave, grid)
    phantom = PicmusPhantom.from_file(files["phantom"])
    ours = simulate_by(phantom, bf, factor=ds.by_factor)
    ref = read_drus_by(files["by_drus"])
    report = compare_by(ours, ref, grid, phantom) if phantom.cyst_disks() else {}
    save_bmode_figure({f"drus B H o ({ds.name} phantom)": log_compress(envelope(ours)),
                       f"DRUS By file ({ds.name}.mat)": log_compress(envelope(ref))},
                      grid, written[0], overlays=list(phantom.cyst_disks()), title="envelope, [−60, 0] dB")
    write_text_atomic(written[1], json.dumps(report, indent=2))
    return report, written


def picmus_table(sets=("simu_reso", "simu_cont", "expe_reso", "expe_cont"), *,
                 config: ReconstructionConfig = ReconstructionConfig(), out_dir, data_root=None, cache_dir=None,
                 sigma0_from_data: bool = True, overwrite: bool = False, progress: bool = True) -> PicmusEvaluation:
    """Table I end to end (``drus evaluate picmus``): everything checked first, the prior loaded as ``config``
    says, then :func:`evaluate_picmus`, its results written into ``out_dir``.

    Checked before any decomposition or sampling: the set names, the device, the output folder and
    earlier results there (kept unless ``overwrite``), the prior and whether it takes
    ``config.operator.unknown_size``.
    """
    from drus.device import resolve_device
    from drus.errors import OptionError
    from drus.models.prior import check_size_multiple, load_prior
    from drus.outputs import check_writable_dir, refuse_overwrite

    names = [sets] if isinstance(sets, str) else list(sets)
    unknown = [n for n in names if n not in PICMUS_SETS]
    if unknown or not names:
        raise OptionError("--sets", f"unknown set(s) {', '.join(unknown) or '(none given)'}; choose among "
                                    f"{', '.join(PICMUS_SETS)}")
    dev = resolve_device(config.device)
    out = check_writable_dir(out_dir)
    refuse_overwrite([out / f"{n}.hdf5" for n in names] + [out / f for f in TABLE_FILES], overwrite=overwrite)
    model = load_prior(config.prior, device=dev, precision=config.precision)
    check_size_multiple(model, config.operator.unknown_size, option="--unknown-size")
    return evaluate_picmus(model, sets=names, config=config, sigma0_from_data=sigma0_from_data, data_root=data_root,
                           cache_dir=cache_dir, out_dir=out_dir, progress=progress)
