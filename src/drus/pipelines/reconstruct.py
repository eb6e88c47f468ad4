"""``drus reconstruct`` as one library call: an observation file → images, samples, B-modes and metrics.

:func:`reconstruct_file` takes the file, the method and one
:class:`~drus.sampling.config.ReconstructionConfig`, and does what the command does:

1. **Check everything first** (before any decomposition or sampling): the output folder, the files
   an earlier run left (kept unless ``overwrite``), σ0, C, the phantom file, the By layout, the
   device, the prior and whether it can take the image side.
2. **Read the observation.** A By ``.mat`` of the paper's grid (DRUS layout: column-major,
   ``by_drus/``; DENO layout: row-major, max 1, ``by_deno/``; :data:`BY_LAYOUTS`, checked against
   the file by :func:`by_layout`), PICMUS/USTB channel data of a PICMUS set (the DRUS By
   preprocessing, :func:`drus.datasets.picmus.channel_data_to_by`), or any other plane-wave
   acquisition (:func:`is_acquisition_file`; the path of :mod:`drus.datasets.acquisition`, on a grid
   of its own).
3. **σ0**: given; else the paper's for a PICMUS set (DENO, or ``sigma0_from_data=False``); else
   estimated from the data once ``BH`` is decomposed (:func:`drus.sampling.noise.estimate_sigma0`).
4. **Reconstruct**: ``das`` (the B-mode of ``By``), ``deno-mean`` (DDRM with ``A = I``,
   :func:`drus.sampling.reconstruct.deno`), ``drus-mean`` / ``drus-var`` (DDRM with the decomposed
   ``BH``, :func:`drus.sampling.reconstruct.reconstruct`; the pooled DRUSvar beside).
5. **Write** ``<name>_<method>.hdf5`` (image, amplitude, samples; the configuration in its
   attributes), the B-mode PNGs and, with a phantom, ``<name>_<method>_metrics.json``
   (:func:`drus.evaluation.scoring.score_image`), atomically; no result of an earlier run is left
   beside them.

Errors in what the caller passed are :class:`drus.errors.OptionError` (naming the ``drus reconstruct``
option) or :class:`ValueError`, raised before the expensive work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np

from drus.errors import OptionError
from drus.sampling.config import ReconstructionConfig

__all__ = ["RECONSTRUCT_METHODS", "BY_LAYOUTS", "ReconstructionResult", "reconstruct_file", "is_acquisition_file",
           "by_layout", "read_observation", "prepare_acquisition_mm", "acquisition_options_si"]

log = logging.getLogger(__name__)

#: What ``drus reconstruct --method`` accepts.
RECONSTRUCT_METHODS = ("das", "deno-mean", "drus-mean", "drus-var")

#: The two flattenings of a By ``.mat`` (a MATLAB ``(1, n_z·n_x)`` vector): DRUS files are column-major
#: (``by_drus/``), DENO files row-major and normalised to max 1 (``by_deno/``). Read with the wrong one,
#: a square image comes out transposed without any other sign, so the layout is checked.
BY_LAYOUTS = {"drus": "column-major, by_drus/", "deno": "row-major, max |By| = 1, by_deno/"}

#: The estimator each method's image is, as :func:`drus.evaluation.scoring.method_envelope` names it.
_ESTIMATOR = {"das": "DRUSmean", "deno-mean": "DENOmean", "drus-mean": "DRUSmean", "drus-var": "DRUSvar"}


@dataclasses.dataclass(eq=False)
class ReconstructionResult:
    """What :func:`reconstruct_file` produced.

    Attributes
    ----------
    method : str
        One of :data:`RECONSTRUCT_METHODS`.
    config : ReconstructionConfig
        The configuration it ran with (also in the HDF5 attribute ``config``).
    image : numpy.ndarray
        ``[n_z, n_x]`` the method's image (By, DENOmean, DRUSmean or DRUSvar) on ``grid``.
    grid : drus.physics.geometry.ImageGrid
        The image's grid (for DRUS, the unknown grid of ``BH``).
    attrs : dict
        The attributes written with the HDF5 (σ0 and its source, the dataset, the By layout, …).
    files : list of pathlib.Path
        The files written.
    metrics : dict or None
        With a phantom: ``{metric: {"values", "mean", "std"}}`` (the pooled DRUSvar's with the suffix
        ``" (pooled DRUSvar)"``).
    """

    method: str
    config: ReconstructionConfig
    image: np.ndarray
    grid: object
    attrs: dict
    files: list
    metrics: dict | None = None


def _say(report, message: str) -> None:
    (report or log.info)(message)


def is_acquisition_file(path: Path) -> bool:
    """Whether ``path`` holds channel data that :func:`drus.datasets.acquisition.read_acquisition` reads
    (a minimal-layout ``.npz``/HDF5, PICMUS/USTB UFF, Field II, or a Verasonics-style ``.mat`` with ``RF1``)."""
    import h5py

    from drus.datasets.io import USTB_DATASET, DataFileError, _MatFile

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return True
    try:
        if suffix == ".mat":
            with _MatFile(path) as mat:
                return "RF1" in mat.keys()
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                return "channel_data" in f or USTB_DATASET in f or "data/rf_data" in f
    except (DataFileError, OSError):
        return False
    return False


def by_layout(path: Path, by_max: float, layout: str | None, method: str) -> str:
    """The layout to read ``path`` with: ``layout`` if given, else the method's, checked against the file.

    Without ``layout`` the file must agree with the method's layout by every sign it carries: the
    folder it sits in (``by_drus/``, ``by_deno/``) and the DENO normalisation (max |By| = 1).
    """
    if layout is not None:
        return layout
    expected = "deno" if method == "deno-mean" else "drus"
    other = "drus" if expected == "deno" else "deno"
    folder = Path(path).parent.name.lower()
    normalised = abs(by_max - 1.0) <= 1e-5
    found = None
    if folder == f"by_{other}":
        found = f"it is in a by_{other}/ folder"
    elif expected == "drus" and normalised:
        found = "it is normalised to max |By| = 1 like a DENO input"
    elif expected == "deno" and not normalised:
        found = f"its max |By| is {by_max:.4g}, while DENO inputs are normalised to 1"
    if found:
        raise OptionError("OBSERVATION", (
            f"{path}: {found}, so it looks like a {other.upper()}-layout By ({BY_LAYOUTS[other]}), but --method "
            f"{method} reads the {expected.upper()} layout ({BY_LAYOUTS[expected]}); read with the wrong layout the "
            f"image is transposed. Pass the by_{expected}/ file, or --layout {other} if the file is {other.upper()}-layout"))
    return expected


def read_observation(path: Path, method: str, shape: tuple[int, int], layout: str | None = None):
    """``("by" | "channel", data, layout)``: a By/DENO ``.mat`` image of ``shape``, or channel data from an HDF5 file."""
    from drus.datasets.io import DataFileError, read_channel_data, read_deno_by, read_drus_by

    path = Path(path)
    try:
        if path.suffix.lower() == ".mat":
            by = read_drus_by(path, shape=shape)
            used = by_layout(path, float(np.abs(by).max()), layout, method)
            return "by", (by if used == "drus" else read_deno_by(path, shape=shape)), used
        if layout is not None:
            raise OptionError("--layout", "applies to By .mat files only, not to channel data")
        return "channel", read_channel_data(path), None
    except DataFileError as exc:
        n = f"{shape[0] * shape[1]:,}".replace(",", " ")
        raise OptionError("OBSERVATION", (
            f"{exc}. drus reconstruct takes a DRUS/DENO By .mat of {shape[0]} × {shape[1]} = {n} values on the "
            "paper's grid (x −18…18 mm, z 10…46 mm) or USTB/PICMUS channel data (HDF5)")) from None
    except OSError as exc:
        raise OptionError("OBSERVATION", f"{path}: not a readable .mat/HDF5 file ({exc})") from None


def _check_sigma0(sigma0) -> None:
    if sigma0 is not None and not (np.isfinite(sigma0) and sigma0 >= 0):
        raise OptionError("--sigma0", f"must be a finite number ≥ 0, got {sigma0}")


def reconstruct_file(
    path,
    *,
    method: str,
    config: ReconstructionConfig = ReconstructionConfig(),
    out_dir="out/reconstruct",
    dataset: str | None = None,
    sigma0: float | None = None,
    layout: str | None = None,
    phantom=None,
    sigma0_from_data: bool = True,
    cache_dir=None,
    cache: bool = True,
    angle: float | None = None,
    x_range: tuple[float, float] | None = None,
    z_range: tuple[float, float] | None = None,
    grid_size: int | None = None,
    overwrite: bool = False,
    report: Callable[[str], None] | None = None,
) -> ReconstructionResult:
    """Reconstruct one observation file and write its results into ``out_dir`` (``drus reconstruct``).

    Parameters
    ----------
    path : str or os.PathLike
        A DRUS/DENO By ``.mat`` (256 × 256 on the paper's grid), PICMUS/USTB channel data (HDF5), or
        any plane-wave acquisition :func:`drus.datasets.acquisition.read_acquisition` reads.
    method : {"das", "deno-mean", "drus-mean", "drus-var"}
        :data:`RECONSTRUCT_METHODS`.
    config : ReconstructionConfig
        Sampler, operator (unknown grid, threshold, dtype of the decomposition), prior, device, precision.
    out_dir : str or os.PathLike
        Output folder (created; refused if not writable).
    dataset : str, optional
        PICMUS set for σ0, the By factor and extra cysts; default: inferred from the file name.
    sigma0 : float, optional
        Noise std of the observation (By units; the max-normalised image for ``deno-mean``).
    layout : {"drus", "deno"}, optional
        Flattening of a By ``.mat`` (:data:`BY_LAYOUTS`); default: the method's, checked against the file.
    phantom : str or os.PathLike, optional
        PICMUS phantom HDF5: adds gCNR/SNR/FWHM (``<name>_<method>_metrics.json``).
    sigma0_from_data : bool
        ``False`` (``--paper``): drus-* on a PICMUS set use the paper's σ0 instead of the estimate.
    cache_dir, cache
        Where the decomposition of ``BH`` is cached (``cache=False``: in memory only).
    angle, x_range, z_range, grid_size
        Any other acquisition: the transmit's steering angle (degrees; default nearest 0°), the
        lateral and depth extents (mm) and the pixels along the grid's longer side.
    overwrite : bool
        Replace the results of an earlier run of this file and method in ``out_dir``.
    report : callable, optional
        Receives one line per step (default: ``logging`` at INFO).

    Returns
    -------
    ReconstructionResult
    """
    from drus.datasets.picmus import infer_dataset

    if method not in RECONSTRUCT_METHODS:
        raise OptionError("--method", f"must be one of {', '.join(RECONSTRUCT_METHODS)}, got {method!r}")
    if not isinstance(config, ReconstructionConfig):
        raise TypeError(f"config must be a ReconstructionConfig, got {type(config).__name__}")
    path = Path(path)
    if is_acquisition_file(path) and not dataset and infer_dataset(path) is None:
        return _reconstruct_acquisition(path, method=method, config=config, out_dir=out_dir, sigma0=sigma0,
                                        angle=angle, x_range=x_range, z_range=z_range, grid_size=grid_size,
                                        cache_dir=cache_dir, cache=cache, overwrite=overwrite, report=report)
    return _reconstruct_picmus_grid(path, method=method, config=config, out_dir=out_dir, dataset=dataset,
                                    sigma0=sigma0, layout=layout, phantom=phantom, sigma0_from_data=sigma0_from_data,
                                    cache_dir=cache_dir, cache=cache, overwrite=overwrite, report=report)


def _reconstruct_picmus_grid(path: Path, *, method, config, out_dir, dataset, sigma0, layout, phantom,
                             sigma0_from_data, cache_dir, cache, overwrite, report) -> ReconstructionResult:
    """A By ``.mat`` or PICMUS channel data, on the paper's grid (``BH`` of :func:`drus.datasets.picmus.picmus_operator`)."""
    from drus.device import resolve_device
    from drus.datasets.io import save_images_hdf5
    from drus.datasets.picmus import PICMUS_SETS, channel_data_to_by, infer_dataset
    from drus.evaluation.metrics import to_db
    from drus.evaluation.scoring import method_envelope, points_in_view, score_image
    from drus.outputs import check_writable_dir, refuse_overwrite, write_text_atomic
    from drus.physics import geometry
    from drus.physics.beamform import MatchedFilterBeamformer
    from drus.plotting import save_bmode_figure
    from drus.sampling.estimators import pool_window

    sampler, operator_cfg = config.sampler, config.operator
    ds = PICMUS_SETS[dataset] if dataset else infer_dataset(path)
    if ds is not None and not dataset:
        _say(report, f"dataset: {ds.name} (inferred from the file name; --dataset to change)")
    sigma_given = sigma0 is not None
    sigma_source = "given (--sigma0)" if sigma_given else ""
    if method != "das" and sigma0 is None:
        if ds is None and method == "deno-mean":
            raise ValueError(
                f"σ0 unknown for {path.name}: no --dataset and the file name matches no PICMUS set "
                f"({', '.join(PICMUS_SETS)}), and deno-mean cannot estimate it (its operator, the identity, passes "
                "image and noise alike); pass --sigma0 (noise std of the max-normalised image) or --dataset NAME")
        if ds is not None and (method == "deno-mean" or not sigma0_from_data):
            sigma0 = ds.sigma0_deno if method == "deno-mean" else ds.sigma0_drus
            sigma_source = f"the paper's σ0 of PICMUS {ds.name}"
        # drus-* (unless the paper's σ0 on a PICMUS set): σ0 is estimated once BH is decomposed (drus.sampling.noise)
    _check_sigma0(sigma0)
    if method == "drus-var" and sampler.n_samples < 2:
        raise OptionError("--samples", f"drus-var needs at least 2 samples (C ≥ 2), got {sampler.n_samples}")

    # outputs: a writable folder, and no earlier result of this observation and method replaced
    out = check_writable_dir(out_dir)
    stem = f"{path.stem}_{method}"
    candidates = {k: out / f"{stem}{suffix}" for k, suffix in
                  (("hdf5", ".hdf5"), ("png", ".png"), ("by_png", "_by.png"), ("metrics", "_metrics.json"))}
    refuse_overwrite(candidates.values(), overwrite=overwrite)
    ph = None
    if phantom:
        from drus.physics.phantoms import PicmusPhantom

        try:
            ph = PicmusPhantom.from_file(phantom)
        except (ValueError, KeyError, OSError) as exc:
            raise OptionError("--phantom", " ".join(str(exc).strip("'\"").split())) from None

    probe, wave, grid = geometry.picmus(256)
    kind, data, used_layout = read_observation(path, method, grid.shape, layout)
    if kind == "by" and used_layout == "deno" and method.startswith("drus") and not sigma_given:
        raise OptionError("--layout", "a DENO-layout By is normalised to max 1, so the dataset's σ0 (in DRUS By "
                                      "units) does not apply; pass --sigma0 in the file's units")
    if kind == "by" and used_layout == "drus" and method == "deno-mean":
        data = data / np.abs(data).max()  # the DENO input: the same observation normalised to max 1
    dev = resolve_device(config.device)
    model = None
    if method != "das":
        from drus.models.prior import check_size_multiple, load_prior

        model = load_prior(config.prior, device=dev, precision=config.precision)
        check_size_multiple(model, operator_cfg.unknown_size if method.startswith("drus") else grid.shape[0],
                            option="--unknown-size" if method.startswith("drus") else "OBSERVATION")
    op = None
    if method.startswith("drus"):
        from drus.datasets import picmus as picmus_data

        bf, op = picmus_data.picmus_operator(operator_cfg.unknown_size, threshold=operator_cfg.threshold,
                                             compute_dtype=operator_cfg.compute_dtype, cache_dir=cache_dir, device=dev,
                                             cache=cache)
    if kind == "channel":
        bf = op.beamformer if op is not None else MatchedFilterBeamformer(probe, wave, grid)
        try:
            by = channel_data_to_by(data, bf, by_factor=ds.by_factor if ds else 1.0)
        except ValueError as exc:
            raise OptionError("OBSERVATION", " ".join(str(exc).split())) from None
    else:
        by = data
    if method == "deno-mean" and kind == "channel":
        by = by / np.abs(by).max()  # the DENO input: the same observation normalised to max 1

    files = []
    arrays: dict = {}
    name = {"das": "By (matched filter)", "deno-mean": "DENOmean", "drus-mean": "DRUSmean", "drus-var": "DRUSvar"}[method]
    panels = {"By envelope": to_db(method_envelope("DRUSmean", by))}
    sigma0_sampler = float("nan")
    if method == "das":
        image, img_grid = by, grid
    else:
        from drus.sampling import reconstruct as sampling

        if sigma0 is None:  # drus-* on the By of an unknown acquisition
            from drus.sampling.noise import estimate_sigma0

            sigma0, sigma_source = estimate_sigma0(op, by)
            _say(report, f"σ0 = {sigma0:.4g} (estimated from the data: {sigma_source})")
        kw = dict(sigma0=float(sigma0), model=model, sampler=sampler, device=dev)
        if method == "deno-mean":
            rec = sampling.deno(by, **kw)
            image, img_grid = rec.mean, grid
        else:
            rec = sampling.reconstruct(op, by, **kw)
            img_grid = op.beamformer.unknown_grid
            image = rec.mean if method == "drus-mean" else rec.var
            arrays["var" if method == "drus-mean" else "mean"] = rec.var if method == "drus-mean" else rec.mean
            if sampler.n_samples >= 2:
                arrays["var_pooled"] = rec.var_pooled(pool_window(img_grid))
        arrays["samples"] = rec.samples
        sigma0_sampler = float(getattr(rec, "sigma0_sampler", float("nan")))
        _say(report, f"{name}: {rec.samples.shape[0]} samples, {sampler.n_steps} steps, σ0 = {sigma0:g}, "
                     f"{rec.timings.get('seconds_total', float('nan')):.1f} s")
    amp = method_envelope(_ESTIMATOR[method], image)
    panels[name] = to_db(amp)
    attrs = {"method": method, "observation": str(path), "sigma0": float(sigma0 or 0.0),
             **config.to_attrs(), "sigma0_sampler": sigma0_sampler,
             "dataset": ds.name if ds else "", "sigma0_source": sigma_source,
             "by_layout": used_layout or "channel data"}
    files.append(save_images_hdf5(candidates["hdf5"], grid=img_grid, image=image, amplitude=amp, **arrays, attrs=attrs))
    if img_grid == grid:
        files.append(save_bmode_figure(panels, grid, candidates["png"], title=f"{path.name}: [−60, 0] dB"))
    else:  # the DRUS image lives on the coarser unknown grid: one figure each
        files.append(save_bmode_figure({"By envelope": panels["By envelope"]}, grid, candidates["by_png"]))
        files.append(save_bmode_figure({name: panels[name]}, img_grid, candidates["png"], title=f"{path.name}: [−60, 0] dB"))
    summary = None
    if ph is not None:
        cysts = tuple(ph.cyst_disks()) + (tuple(ds.extra_cysts) if ds else ())
        scored = {"": amp}
        if "var_pooled" in arrays:  # the extended estimator, scored beside the paper's
            scored[" (pooled DRUSvar)"] = arrays["var_pooled"]
        summary = {}
        for label, a in scored.items():
            metrics = score_image(a, img_grid, cysts=cysts, speckle_rois=ph.speckle_boxes() or None,
                                  points=points_in_view(ph.points(), img_grid))
            summary.update({f"{k}{label}": {"values": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
                            for k, v in metrics.items()})
        files.append(write_text_atomic(candidates["metrics"], json.dumps(
            {"method": method, "observation": str(path), "phantom": str(phantom), "config": config.to_dict(),
             "metrics": summary}, indent=1)))
    for stale in set(candidates.values()) - set(files):  # (overwrite) no result of an earlier run left beside these
        stale.unlink(missing_ok=True)
    return ReconstructionResult(method=method, config=config, image=image, grid=img_grid, attrs=attrs, files=files,
                                metrics=summary)


def acquisition_options_si(*, angle=None, x_range=None, z_range=None) -> dict:
    """``drus reconstruct``'s options for a channel-data file in SI units: ``angle`` in degrees → rad,
    ``x_range`` and ``z_range`` (lateral and depth extent) in mm → m; one not given stays ``None``."""
    return {"angle": None if angle is None else math.radians(angle),
            "x_range": None if not x_range else (x_range[0] * 1e-3, x_range[1] * 1e-3),
            "z_range": None if not z_range else (z_range[0] * 1e-3, z_range[1] * 1e-3)}


def prepare_acquisition_mm(path: Path, *, angle=None, x_range=None, z_range=None, size=None, report=None):
    """``(acquisition, beamformer)`` as ``drus reconstruct`` builds them for a channel-data file, from its
    options' units (angle in degrees, ranges in mm; :func:`drus.datasets.acquisition.prepare_acquisition`).
    ``H`` and ``B`` are not built yet."""
    from drus.datasets.acquisition import prepare_acquisition

    return prepare_acquisition(path, **acquisition_options_si(angle=angle, x_range=x_range, z_range=z_range),
                               size=size, report=report)


def _reconstruct_acquisition(path: Path, *, method, config, out_dir, sigma0, angle, x_range, z_range, grid_size,
                             cache_dir, cache, overwrite, report) -> ReconstructionResult:
    """Any plane-wave acquisition (:mod:`drus.datasets.acquisition`), on a grid of its own."""
    from drus.datasets.acquisition import (
        check_memory, decomposition_cost, likely_split, plan_decomposition, reconstruct_acquisition,
    )
    from drus.datasets.io import save_images_hdf5
    from drus.device import resolve_device
    from drus.evaluation.metrics import to_db
    from drus.evaluation.scoring import method_envelope
    from drus.outputs import check_writable_dir, refuse_overwrite
    from drus.physics.beamform import bmode, das
    from drus.plotting import save_bmode_figure

    sampler, operator_cfg = config.sampler, config.operator
    if method == "deno-mean" and sigma0 is None:
        raise ValueError("deno-mean on channel data needs --sigma0 (noise std of the By image normalised to max 1)")
    if method == "drus-var" and sampler.n_samples < 2:
        raise OptionError("--samples", f"drus-var needs at least 2 samples (C ≥ 2), got {sampler.n_samples}")
    _check_sigma0(sigma0)
    out = check_writable_dir(out_dir)
    stem = f"{path.stem}_{method}"
    files_out = {"hdf5": out / f"{stem}.hdf5", "png": out / f"{stem}.png"}
    refuse_overwrite(files_out.values(), overwrite=overwrite)

    acq, bf = prepare_acquisition_mm(path, angle=angle, x_range=x_range, z_range=z_range, size=grid_size, report=report)
    grid = bf.grid
    check_memory(decomposition_cost(bf, split=likely_split(bf), compute_dtype=operator_cfg.compute_dtype),
                 matrices_only=True)
    dev = resolve_device(config.device)
    model = None
    if method != "das":
        from drus.models.prior import check_size_multiple, load_prior

        model = load_prior(config.prior, device=dev, precision=config.precision)
        check_size_multiple(model, grid.n_z, option="--size")
        check_size_multiple(model, grid.n_x, option="--size")
    res = None
    if method in ("drus-mean", "drus-var"):
        # cost and memory first, before any expensive work; then B y, DAS, BH decomposed, σ0, samples
        split = plan_decomposition(bf, compute_dtype=operator_cfg.compute_dtype, threshold=operator_cfg.threshold,
                                   cache_dir=cache_dir, cache=cache, report=report)
        res = reconstruct_acquisition(acq, bf, model=model, sampler=sampler, sigma0=sigma0,
                                      threshold=operator_cfg.threshold, compute_dtype=operator_cfg.compute_dtype,
                                      cache_dir=cache_dir, cache=cache, device=dev, split=split, report=report)
        by, das_image = res.by, res.das
    else:
        by = bf.beamform(acq.channel_data)
        das_image = das(acq.channel_data, probe=bf.model.probe, waves=bf.model.wave, grid=grid)
    panels = {"DAS, 1 plane wave": bmode(das_image), "By (matched filter)": to_db(method_envelope("DRUSmean", by))}
    arrays = {"by": by, "das": das_image}
    attrs = {"method": method, "observation": str(path), "angle_deg": float(np.degrees(acq.angle)),
             "center_frequency": float(acq.center_frequency), "bandwidth": float(acq.bandwidth),
             "pulse_source": acq.spectrum_source or "file", "transmit": acq.transmit, **config.to_attrs()}
    image, amp = by, method_envelope("DRUSmean", by)
    if res is not None:
        rec = res.reconstruction
        arrays.update(samples=rec.samples, mean=rec.mean)
        attrs.update(res.attrs)
        panels["DRUSmean"] = to_db(method_envelope("DRUSmean", rec.mean))
        if sampler.n_samples >= 2:  # DRUSvar needs two samples
            arrays["var"] = rec.var
            arrays["var_pooled"] = res.var_pooled
            panels["DRUSvar"] = to_db(method_envelope("DRUSvar", rec.var))
        image = rec.mean if method == "drus-mean" else rec.var
        amp = method_envelope(_ESTIMATOR[method], image)
        _say(report, f"{_ESTIMATOR[method]}: {sampler.n_samples} samples, {sampler.n_steps} steps, "
                     f"{rec.timings.get('seconds_total', float('nan')):.1f} s")
    elif method == "deno-mean":
        from drus.sampling import reconstruct as sampling

        by_n = by / np.abs(by).max()
        rec = sampling.deno(by_n, sigma0=float(sigma0), model=model, sampler=sampler, device=dev)
        arrays["samples"] = rec.samples
        image, amp = rec.mean, method_envelope("DENOmean", rec.mean)
        panels["DENOmean"] = to_db(amp)
        attrs.update(sigma0=float(sigma0), sigma0_source="given (--sigma0)")
    files = [save_images_hdf5(files_out["hdf5"], grid=grid, image=image, amplitude=amp, **arrays, attrs=attrs),
             save_bmode_figure(panels, grid, files_out["png"], title=f"{path.name}: [−60, 0] dB")]
    return ReconstructionResult(method=method, config=config, image=image, grid=grid, attrs=attrs, files=files)
