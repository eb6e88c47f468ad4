"""The paper in one command: the numerical study (Figs. 2–3), Table I, Fig. 4 and Fig. 5, resumable,
into one self-contained report (:mod:`drus.pipelines.report`).

The work is cut into *units*, each saved as soon as it finishes and skipped by a rerun:

- ``numerical/<phantom>/g<γ>_s<seed>``: one speckle realisation of the occlusion or scatterer phantom
  at one noise level (:func:`drus.pipelines.experiments.run_realisation`);
- ``picmus/<set>/<method>``: one method on one PICMUS set — ``DAS`` (the 75- and 1-PW references),
  ``DENOmean``, ``DRUS`` (DRUSmean, DRUSvar and the pooled DRUSvar from one set of samples;
  :mod:`drus.pipelines.picmus`) and, on EC and ER, ``ADMSS`` (DRUSmean despeckled by
  :func:`drus.evaluation.despeckle.admss`, the paper's Fig. 5 baseline);
- ``invivo/<CC|CL>/DRUS``: the carotid observations, display only (no ROIs, so no metrics).

A unit is one ``.npz`` (its scores and timing as JSON in ``meta``, the images worth showing as
float32 arrays), written atomically (:func:`drus.outputs.atomic_write`) under
``<out>/units/<fingerprint>/``, where the fingerprint hashes everything that defines the numbers
(the configuration and the prior's sha256): a rerun with the same settings reuses the finished units,
another configuration (``--quick`` or another prior) gets its own folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from drus.evaluation.metrics import mean_std
from drus.defaults import ADMSS_DT, ADMSS_ITERATIONS, ADMSS_MEMORY, ADMSS_RHO, ADMSS_SIGMA
from drus.outputs import atomic_write, json_safe, write_text_atomic
from drus.sampling.config import SamplerConfig

__all__ = ["NUMERICAL_GAMMAS", "PANEL_GAMMAS", "INVIVO_SETS", "ReproduceConfig", "UnitStore", "Reproduction",
           "run_reproduction", "TARGETS"]

log = logging.getLogger(__name__)

TARGETS = ("numerical", "picmus", "all")

#: Noise levels γ of the numerical study. The paper (Sect. III, Figs. 2–3) sweeps the occlusion
#: phantom over 12 levels from 0.02 to 0.35 and the scatterer phantom over 11 levels from 0 to 0.1;
#: its text gives the ranges and the levels of the image panels, not the intermediate values. Ours:
#: 12 evenly spaced levels (step 0.03, which contains the panel levels 0.02 and 0.08), and 11 levels
#: 0, 0.01, …, 0.1 with 0.02 replaced by the panel level 0.018.
NUMERICAL_GAMMAS = {
    "occlusion": tuple(round(0.02 + 0.03 * k, 3) for k in range(12)),
    "scatterer": (0.0, 0.01, 0.018) + tuple(round(0.01 * k, 3) for k in range(3, 11)),
}
#: The levels whose images the paper shows (Fig. 2: std(n) = 0.02, 0.08; Fig. 3: 0.018, 0.1).
PANEL_GAMMAS = {"occlusion": (0.02, 0.08), "scatterer": (0.018, 0.1)}
#: First speckle seed of each phantom's realisations (held out from the prior's training stream).
FIRST_SEED = {"occlusion": 1000, "scatterer": 2000}

#: The paper's in vivo carotid observations (Sect. IV): file name in ``by_drus/`` and the paper's DRUS
#: σ0 (12 for CC, 1.5 for CL; ../shared/data/README.md). Display only: no ROIs, never used to tune.
INVIVO_SETS = {"CC": ("expe_cross", 12.0), "CL": ("expe_long", 1.5)}
#: The Table I sets, in table order, and the sets of the Fig. 5-style ADMSS comparison.
PICMUS_TABLE_SETS = ("expe_cont", "expe_reso", "simu_cont", "simu_reso")
ADMSS_SETS = ("expe_cont", "expe_reso")

# rough seconds per unit of work on 2 CPU cores, only to weight the progress bar's ETA
_SECONDS_PER_PIXEL_SAMPLE_STEP = 5e-6
_SECONDS_PER_ADMSS_PIXEL = 1.1e-4


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """What a reproduction runs (frozen). :meth:`paper` is the paper's setting, :meth:`reduced` the ``--quick`` one.

    Attributes
    ----------
    target : "numerical", "picmus" or "all".
    quick : whether this is the reduced run (recorded in the report).
    gammas : ``{phantom: noise levels}`` of the numerical study.
    realisations : speckle realisations per level (seeds ``FIRST_SEED[phantom] + k``).
    sampler : C, steps, η, η_B, β and the seed of the PICMUS reconstructions (the paper's).
    numerical_size : side of the numerical study's grid over the paper's field of view (pixels).
    picmus_stride : 1 reads the ``By`` files on their 256² grid; k > 1 keeps every k-th pixel (quick).
    unknown_size : side of the DRUS unknown grid on PICMUS (128: the cached rectangular ``BH``).
    threshold : decomposition threshold relative to ``s_1``.
    """

    target: str = "all"
    quick: bool = False
    gammas: dict = dataclasses.field(default_factory=lambda: dict(NUMERICAL_GAMMAS))
    realisations: int = 9
    sampler: SamplerConfig = SamplerConfig.paper()
    numerical_size: int = 256
    picmus_stride: int = 1
    unknown_size: int = 128
    threshold: float = 1e-3

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.sampler.n_samples < 2:
            raise ValueError(f"n_samples must be ≥ 2 (DRUSvar is a sample variance), got {self.sampler.n_samples}")
        if not (isinstance(self.realisations, int) and self.realisations >= 1):
            raise ValueError(f"realisations must be an integer ≥ 1, got {self.realisations!r}")
        if 256 % self.picmus_stride or self.picmus_stride < 1:
            raise ValueError(f"picmus_stride must divide 256, got {self.picmus_stride!r}")

    @classmethod
    def paper(cls, target: str = "all", **changes) -> "ReproduceConfig":
        """The paper's setting: 12 + 11 levels, 9 realisations, C = 10, 50 steps, 256² grids."""
        return cls(target=target, **changes)

    @classmethod
    def reduced(cls, target: str = "all", **changes) -> "ReproduceConfig":
        """Every code path in minutes on 2 CPU cores: 3 levels per phantom (the panel levels and the
        largest), 2 realisations, C = 4, 20 steps, a 64² numerical grid, ``By`` on 128² (every other
        pixel) with 64² DRUS unknowns."""
        base = dict(target=target, quick=True,
                    gammas={"occlusion": (0.02, 0.08, 0.35), "scatterer": (0.0, 0.018, 0.1)},
                    realisations=2, sampler=SamplerConfig.paper(n_samples=4, n_steps=20), numerical_size=64,
                    picmus_stride=2, unknown_size=64)
        return cls(**{**base, **changes})

    @property
    def parts(self) -> tuple[str, ...]:
        return ("numerical", "picmus") if self.target == "all" else (self.target,)

    def seeds(self, phantom: str) -> tuple[int, ...]:
        return tuple(FIRST_SEED[phantom] + k for k in range(self.realisations))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["gammas"] = {k: list(v) for k, v in self.gammas.items()}
        d["sampler"] = self.sampler.to_dict()
        return d

    def fingerprint(self, prior_sha256: str) -> str:
        """12 hex digits of the sha256 of the settings that define a unit's numbers (not the target)."""
        d = self.to_dict()
        d.pop("target")
        d.pop("gammas")  # a unit's key holds its γ; other levels do not change it
        d.pop("realisations")
        return hashlib.sha256(json.dumps({**d, "prior": prior_sha256}, sort_keys=True).encode()).hexdigest()[:12]


class UnitStore:
    """Finished units under one folder: ``<key>.npz`` with ``meta`` (JSON) and float32 images."""

    def __init__(self, root) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(self, key: str, meta: dict, arrays: dict) -> Path:
        def write(tmp):
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
                np.savez_compressed(f, meta=np.array(json.dumps(meta)),
                                    **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})

        return atomic_write(self.path(key), write)

    def load(self, key: str) -> tuple[dict, dict]:
        with np.load(self.path(key), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return meta, arrays


@dataclasses.dataclass
class _Unit:
    key: str
    label: str
    cost: float  # estimated seconds, for the progress bar
    run: Callable[[], tuple[dict, dict]]


@dataclasses.dataclass
class Reproduction:
    """Everything the report shows (:func:`drus.pipelines.report.write_report`).

    ``units``: key → (meta, arrays) of every unit; ``reused``/``computed``: unit keys;
    ``provenance``: command, versions, device, prior, wall time; ``config``: :class:`ReproduceConfig`.
    """

    config: ReproduceConfig
    units: dict
    reused: list
    computed: list
    provenance: dict
    files: dict = dataclasses.field(default_factory=dict)

    # --- the numerical study -------------------------------------------------------------------------------
    def numerical_scores(self, phantom: str) -> dict:
        """``{γ: {method: {metric: [values over ROIs × realisations]}}}``."""
        out: dict = {}
        for g in self.config.gammas[phantom]:
            per: dict = {}
            for s in self.config.seeds(phantom):
                meta, _ = self.units[_numerical_key(phantom, g, s)]
                for m, metrics in meta["scores"].items():
                    for k, v in metrics.items():
                        per.setdefault(m, {}).setdefault(k, []).extend(v)
            out[g] = per
        return out

    def numerical_summary(self, phantom: str) -> dict:
        """``{γ: {method: {metric: (mean, std)}}}``: over all cysts (targets) × realisations, as the paper."""
        return {g: {m: {k: mean_std(v) for k, v in per.items()} for m, per in methods.items()}
                for g, methods in self.numerical_scores(phantom).items()}

    def numerical_panels(self, phantom: str) -> dict:
        """``{γ: {image name: array}}`` of the first realisation at the panel levels that were run."""
        seed = self.config.seeds(phantom)[0]
        return {g: self.units[_numerical_key(phantom, g, seed)][1] for g in PANEL_GAMMAS[phantom]
                if g in self.config.gammas[phantom]}

    # --- PICMUS ---------------------------------------------------------------------------------------------
    def picmus_methods(self, name: str) -> dict:
        """``{method: {"metrics": {metric: [values per ROI]}, "amplitude": array, "extent_mm": [...]}}``."""
        out = {}
        for unit in ("DAS", "DENOmean", "DRUS", "ADMSS"):
            key = f"picmus/{name}/{unit}"
            if key not in self.units:
                continue
            meta, arrays = self.units[key]
            for m, info in meta["methods"].items():
                out[m] = {"metrics": info["metrics"], "extent_mm": info["extent_mm"], "seconds": meta["seconds"],
                          "amplitude": arrays.get(_array_name(m))}
        return out

    def picmus_summary(self) -> dict:
        """``{set: {method: {metric: (mean, std)}}}`` over the ROIs."""
        return {name: {m: {k: mean_std(v) for k, v in info["metrics"].items()}
                       for m, info in self.picmus_methods(name).items()}
                for name in PICMUS_TABLE_SETS if f"picmus/{name}/DAS" in self.units}

    def invivo(self) -> dict:
        """``{"CC"|"CL": (meta, arrays)}`` of the carotid observations."""
        return {k: self.units[f"invivo/{k}/DRUS"] for k in INVIVO_SETS if f"invivo/{k}/DRUS" in self.units}

    def unit_seconds(self) -> dict:
        """``{kind: [seconds of each unit computed in this or an earlier run]}``."""
        out: dict = {}
        for key, (meta, _) in self.units.items():
            parts = key.split("/")
            kind = f"numerical {parts[1]}" if parts[0] == "numerical" else f"{parts[0]} {parts[2]}"
            out.setdefault(kind, []).append(float(meta.get("seconds", 0.0)))
        return out

    def to_json(self) -> str:
        d = {"config": self.config.to_dict(), "provenance": self.provenance, "reused": self.reused,
             "computed": self.computed}
        if "numerical" in self.config.parts:
            d["numerical"] = {p: self.numerical_summary(p) for p in self.config.gammas}
        if "picmus" in self.config.parts:
            d["picmus"] = self.picmus_summary()
        return json.dumps(json_safe(d), indent=1)


def _numerical_key(phantom: str, gamma: float, seed: int) -> str:
    return f"numerical/{phantom}/g{gamma:.3f}_s{seed}"


def _array_name(method: str) -> str:
    return method.replace(" ", "_").replace("+", "plus")


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prior_provenance(path=None) -> dict:
    """Path, sha256 and model card of a prior checkpoint (the shipped one when ``path`` is ``None``).

    The model card is ``README.md`` beside the shipped prior, else the JSON written beside a drus
    checkpoint, else none (said so).
    """
    from drus.models.prior import default_prior_path

    p = Path(path) if path is not None else default_prior_path()
    files = [p] + ([p.with_suffix(".json")] if p.with_suffix(".json").is_file() and p.suffix != ".json" else [])
    card, card_source = "no model card found beside the checkpoint", None
    for cand in ((p.parent / "README.md") if path is None else None, p.with_suffix(".json")):
        if cand is not None and cand.is_file():
            card, card_source = cand.read_text(encoding="utf-8"), str(cand)
            break
    return {"path": str(p), "shipped": path is None, "sha256": {f.name: file_sha256(f) for f in files},
            "model_card": card, "model_card_source": card_source}


def environment(device) -> dict:
    """Versions and the machine, for the report."""
    import os

    import scipy
    import torch

    import drus

    dev = {"device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if getattr(device, "type", str(device)) == "cuda":
        dev["gpu"] = torch.cuda.get_device_name(device)
    return {"drus": drus.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "torch": torch.__version__, "platform": platform.platform(), **dev}


# --- building the units ------------------------------------------------------------------------------------
def _numerical_units(cfg: ReproduceConfig, model, device) -> list[_Unit]:
    from drus.pipelines.experiments import run_realisation

    units = []
    n = cfg.numerical_size
    for phantom, gammas in cfg.gammas.items():
        seeds = cfg.seeds(phantom)
        for g in gammas:
            for s in seeds:
                keep = g in PANEL_GAMMAS[phantom] and s == seeds[0]

                def run(phantom=phantom, g=g, s=s, keep=keep):
                    t = time.perf_counter()
                    scores, images = run_realisation(phantom, gamma=g, seed=s, model=model, sampler=cfg.sampler,
                                                     size=n, device=device)
                    meta = {"phantom": phantom, "gamma": g, "seed": s, "noise_seed": s + 10_000, "scores": scores,
                            "seconds": time.perf_counter() - t}
                    arrays = {k: images[k] for k in ("echogenicity", "observation", "DRUSmean", "DRUSvar")} if keep else {}
                    return meta, arrays

                cost = n * n * cfg.sampler.n_samples * cfg.sampler.n_steps * _SECONDS_PER_PIXEL_SAMPLE_STEP
                units.append(_Unit(_numerical_key(phantom, g, s), f"{phantom} γ={g:g} seed {s}", cost, run))
    return units


class _Picmus:
    """Lazily prepared PICMUS inputs and operator, shared by the units of one run."""

    def __init__(self, cfg: ReproduceConfig, *, model, device, data_root, cache_dir, progress):
        from drus.physics.geometry import paper_grid, picmus

        from drus.pipelines.picmus import decimated_grid

        self.cfg, self.model, self.device = cfg, model, device
        self.data_root, self.cache_dir, self.progress = data_root, cache_dir, progress
        probe, wave, grid256 = picmus(256)
        self.grid = decimated_grid(grid256, cfg.picmus_stride)
        self.geometry = (probe, wave, self.grid)
        self.unknown_grid = paper_grid(cfg.unknown_size) if cfg.picmus_stride == 1 else self.grid.resized(
            cfg.unknown_size, cfg.unknown_size)
        self._sets: dict = {}
        self._op = None
        self.decomposition: dict = {}

    def operator(self):
        if self._op is None:
            from drus.datasets.picmus import picmus_operator

            t = time.perf_counter()
            geometry = None if self.cfg.picmus_stride == 1 else self.geometry
            _, self._op = picmus_operator(self.cfg.unknown_size, geometry=geometry, threshold=self.cfg.threshold,
                                          cache_dir=self.cache_dir, device=self.device, progress=self.progress)
            self.decomposition = {"seconds": time.perf_counter() - t, "n_kept": int(self._op.n_kept),
                                  "key": self._op.metadata.get("key"), "unknown_grid": list(self.unknown_grid.shape),
                                  "measurement_grid": list(self.grid.shape)}
        return self._op

    def scoring(self, name: str):
        if name not in self._sets:
            from drus.pipelines.picmus import prepare_set

            self._sets[name] = prepare_set(name, data_root=self.data_root, grid=self.grid, file_shape=(256, 256))
        return self._sets[name]


def _methods_meta(methods: dict) -> tuple[dict, dict]:
    meta = {m: {"metrics": r.metrics, "extent_mm": [float(v) for v in r.grid.extent_mm], "seconds": r.seconds}
            for m, r in methods.items()}
    return meta, {_array_name(m): r.amplitude for m, r in methods.items()}


def _picmus_units(cfg: ReproduceConfig, ctx: _Picmus, store: UnitStore) -> list[_Unit]:
    from drus.evaluation.despeckle import admss
    from drus.pipelines.picmus import das_methods, deno_method, drus_methods

    s = cfg.sampler
    n_meas, n_unk = ctx.grid.shape[0] * ctx.grid.shape[1], cfg.unknown_size ** 2
    ddrm = s.n_samples * s.n_steps * _SECONDS_PER_PIXEL_SAMPLE_STEP
    common = dict(model=ctx.model, sampler=s, device=ctx.device, progress=False)
    units = []
    for name in PICMUS_TABLE_SETS:
        def run_das(name=name):
            t = time.perf_counter()
            meta, arrays = _methods_meta(das_methods(ctx.scoring(name)))
            return {"set": name, "methods": meta, "seconds": time.perf_counter() - t}, arrays

        def run_deno(name=name):
            t = time.perf_counter()
            result, den = deno_method(ctx.scoring(name), **common)
            meta, arrays = _methods_meta({"DENOmean": result})
            return {"set": name, "methods": meta, "sigma0": ctx.scoring(name).dataset.sigma0_deno,
                    "scale": den.scale, "seconds": time.perf_counter() - t}, arrays

        def run_drus(name=name):
            t = time.perf_counter()
            methods, rec, attrs = drus_methods(ctx.scoring(name), ctx.operator(), **common)
            meta, arrays = _methods_meta(methods)
            arrays["DRUSmean_signed"] = rec.mean
            return {"set": name, "methods": meta, "run": attrs, "seconds": time.perf_counter() - t}, arrays

        def run_admss(name=name):
            from drus.physics.beamform import envelope

            t = time.perf_counter()
            drus_meta, drus_arrays = store.load(f"picmus/{name}/DRUS")
            extent = drus_meta["methods"]["DRUSmean"]["extent_mm"]
            params = {"sigma": ADMSS_SIGMA, "rho": ADMSS_RHO, "n_iter": ADMSS_ITERATIONS, "memory": ADMSS_MEMORY,
                      "dt": ADMSS_DT, "model": "gamma"}
            filtered = admss(envelope(drus_arrays["DRUSmean_signed"], axis=0), progress=False, **params)
            scoring = ctx.scoring(name)
            result = scoring.score("DRUSmean+ADMSS", filtered, ctx.unknown_grid, time.perf_counter() - t, amplitude=filtered)
            meta, arrays = _methods_meta({"DRUSmean+ADMSS": result})
            meta["DRUSmean+ADMSS"]["extent_mm"] = extent
            return {"set": name, "methods": meta, "admss": params, "seconds": time.perf_counter() - t}, arrays

        units += [_Unit(f"picmus/{name}/DAS", f"PICMUS {name}: DAS", 0.5, run_das),
                  _Unit(f"picmus/{name}/DENOmean", f"PICMUS {name}: DENOmean", n_meas * ddrm, run_deno),
                  _Unit(f"picmus/{name}/DRUS", f"PICMUS {name}: DRUS", n_unk * ddrm, run_drus)]
        if name in ADMSS_SETS:
            units.append(_Unit(f"picmus/{name}/ADMSS", f"PICMUS {name}: DRUSmean+ADMSS",
                               n_unk * _SECONDS_PER_ADMSS_PIXEL, run_admss))
    for short, (fname, sigma0) in INVIVO_SETS.items():
        def run_invivo(short=short, fname=fname, sigma0=sigma0):
            from drus.datasets.io import read_drus_by, read_mat_image
            from drus.datasets.picmus import reference_data_dir
            from drus.evaluation.scoring import method_envelope
            from drus.sampling.reconstruct import reconstruct

            t = time.perf_counter()
            root = reference_data_dir(ctx.data_root) / "picmus"
            from drus.pipelines.picmus import decimation

            by = read_drus_by(root / "by_drus" / f"{fname}.mat")
            by = np.ascontiguousarray(by[np.ix_(*decimation(by.shape, cfg.picmus_stride))])
            rec = reconstruct(ctx.operator(), by, sigma0=sigma0, **common)
            arrays = {"observation": method_envelope("DRUSmean", by), "DRUSmean": method_envelope("DRUSmean", rec.mean),
                      "DRUSvar": rec.var}
            ext_by = [float(v) for v in ctx.grid.extent_mm]
            ext_u = [float(v) for v in ctx.unknown_grid.extent_mm]
            extents = {"observation": ext_by, "DRUSmean": ext_u, "DRUSvar": ext_u}
            das75 = root / "das_reference" / "carotid_cross_das75.mat"
            if short == "CC" and das75.is_file():
                from drus.physics.geometry import paper_grid

                arrays["DAS_75_PW"] = np.abs(read_mat_image(das75))
                extents["DAS 75 PW"] = [float(v) for v in paper_grid(arrays["DAS_75_PW"].shape[0]).extent_mm]
            return {"set": fname, "sigma0": sigma0, "sigma0_source": "the paper's (../shared/data/README.md)",
                    "extents": extents, "scale": rec.scale, "seconds": time.perf_counter() - t}, arrays

        units.append(_Unit(f"invivo/{short}/DRUS", f"in vivo {short}: DRUS (display only)", n_unk * ddrm, run_invivo))
    return units


def run_reproduction(
    config: ReproduceConfig,
    *,
    out_dir,
    prior=None,
    device="auto",
    data_root=None,
    cache_dir=None,
    progress: bool = True,
    command: str | None = None,
    threads: int | None = None,
) -> Reproduction:
    """Run (or resume) the paper's experiments and write the report.

    Parameters
    ----------
    config : ReproduceConfig
        What to run (:meth:`ReproduceConfig.paper` or :meth:`ReproduceConfig.reduced`).
    out_dir : path
        Units go to ``<out_dir>/units/<fingerprint>/``; ``report.html``, ``results.json`` and
        ``preview.png`` to ``out_dir``. An earlier run with the same settings there is resumed.
    prior : path, optional
        Prior checkpoint (default: the shipped one); its sha256 enters the fingerprint.
    device : "auto", "cpu", "cuda", …
        :func:`drus.device.resolve_device` ("auto": CUDA when present).
    data_root, cache_dir : path, optional
        Reference data (``$DRUS_REFERENCE_DATA`` or ``../shared/data``) and the decomposition cache.
    progress : bool
        One progress bar over all units still to run (what is running, time left).
    command : str, optional
        The command line, shown in the report.
    threads : int, optional
        torch CPU threads during the run (restored afterwards). Default: 1 for a quick run — its
        tensors are small, and on shared cores a second OpenMP thread makes every small operation
        wait (measured: a 64² unit 1.7 s with one thread, 11 s with two, beside another job) —
        torch's own setting otherwise.

    Returns
    -------
    Reproduction
        With ``files``: the report, JSON and preview paths.
    """


    import torch

    n_threads = torch.get_num_threads()
    if threads is not None or config.quick:
        torch.set_num_threads(threads or 1)
    try:
        return _run(config, out_dir=out_dir, prior=prior, device=device, data_root=data_root, cache_dir=cache_dir,
                    progress=progress, command=command)
    finally:
        torch.set_num_threads(n_threads)


def _run(config, *, out_dir, prior, device, data_root, cache_dir, progress, command) -> Reproduction:
    from tqdm.auto import tqdm

    from drus.device import resolve_device
    from drus.models.prior import load_prior
    from drus.pipelines.report import write_report

    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    dev = resolve_device(device)
    out = Path(out_dir)
    prior_info = prior_provenance(prior)
    prior_sha = next(iter(prior_info["sha256"].values()))
    fingerprint = config.fingerprint(prior_sha)
    store = UnitStore(out / "units" / fingerprint)
    model = load_prior(prior, device=dev)
    if "picmus" in config.parts:  # fail before any work when the data are missing
        from drus.datasets.picmus import reference_data_dir

        root = reference_data_dir(data_root) / "picmus"
        if not root.is_dir():
            raise FileNotFoundError(f"PICMUS data not found at {root}; set DRUS_REFERENCE_DATA or pass --data DIR "
                                    "(data_root)")

    units: list[_Unit] = []
    ctx = None
    if "numerical" in config.parts:
        units += _numerical_units(config, model, dev)
    if "picmus" in config.parts:
        ctx = _Picmus(config, model=model, device=dev, data_root=data_root, cache_dir=cache_dir, progress=progress)
        units += _picmus_units(config, ctx, store)
    reused = [u.key for u in units if store.has(u.key)]
    todo = [u for u in units if not store.has(u.key)]
    log.info("%d units: %d reused from %s, %d to run", len(units), len(reused), store.root, len(todo))
    if todo and ctx is not None and any(u.key.endswith(("/DRUS",)) for u in todo):
        ctx.operator()  # the decomposition (cached on disk) before the bar, with its own progress
    bar = tqdm(total=sum(u.cost for u in todo), disable=not progress, unit="s", unit_scale=False,
               bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    computed = []
    try:
        for i, u in enumerate(todo):
            bar.set_description_str(f"[{i + 1}/{len(todo)}, {len(reused)} reused] {u.label}")
            meta, arrays = u.run()
            store.save(u.key, meta, arrays)
            computed.append(u.key)
            bar.update(u.cost)
    finally:
        bar.close()
    results = {u.key: store.load(u.key) for u in units}
    provenance = {
        "command": command or f"run_reproduction({config.target!r}, quick={config.quick})",
        "started": started, "wall_seconds": time.perf_counter() - t_start,
        "environment": environment(dev), "prior": prior_info, "fingerprint": fingerprint,
        "units_folder": str(store.root),
        "seeds": {"numerical": {p: list(config.seeds(p)) for p in config.gammas},
                  "noise_seed": "speckle seed + 10000", "sampler_numerical": "the realisation's speckle seed",
                  "sampler_picmus": config.sampler.seed},
        "decomposition": ctx.decomposition if ctx is not None else {},
    }
    rep = Reproduction(config=config, units=results, reused=reused, computed=computed, provenance=provenance)
    out.mkdir(parents=True, exist_ok=True)
    rep.files["results"] = write_text_atomic(out / "results.json", rep.to_json())
    rep.files.update(write_report(rep, out))
    return rep

