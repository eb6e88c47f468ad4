"""Many frames, many machines: ``drus reconstruct`` over a folder, a glob or multi-frame files.

Every frame of every input is one task (:class:`FrameTask`); each writes one HDF5 file named after its
input and frame, ``<stem>_f<frame:04d>_<method>.hdf5`` (the arrays and attributes of the single-file
``drus reconstruct FILE``, plus ``frame``, ``frame_seed`` and ``run_seed``). A manifest
(``manifest.json`` in the output folder, rewritten atomically after every frame) holds the
configuration (:class:`BatchConfig`: the :class:`~drus.sampling.config.ReconstructionConfig` of every
frame and the batch's own options; :meth:`BatchConfig.from_dict` reads it back), and per frame its
seed, status (``done`` / ``failed`` / ``pending``), timings, worker and error. A rerun with the same
configuration (the device may change, :data:`RERUN_MAY_CHANGE`) skips the frames that are done and whose output
exists: a batch stopped by a crash or Ctrl-C resumes where it stopped, and failed frames are retried.

The stages, and where each runs::

    driver       inputs → frames (drus.datasets.acquisition.count_frames) → the geometry of each file from
                 its first readable frame (pulse f0/bandwidth and grid, shared by all its frames)
    one task     per distinct geometry: plan and decompose BH once (drus.physics.decompose.decompose_bh,
                 written to the decomposition cache); its singular values and vectors go back as
                 arrays (Ray: into the object store, read zero-copy by every worker)
    workers      FrameWorker: the prior loaded once per worker; per geometry the operator built
                 once from those arrays; per frame read → B y, DAS, σ0 → DDRM
                 (drus.datasets.acquisition.reconstruct_acquisition) → HDF5

Engines: ``"ray"`` (:func:`run_batch` starts a local Ray instance with ``workers`` actors, or joins a
cluster with ``address="auto"`` / ``"ray://host:10001"``; one GPU per worker where the cluster has
GPUs) or ``"local"`` (in-process, one frame after another; no Ray needed). Both run the same code on
each frame, and every frame's seed comes from the run seed and the frame's identity
(:func:`frame_seed`), never from the order or the worker: with the same threads per worker and device
type, a frame's result is bit-identical alone, in a batch, on one worker or on many.

Install Ray with ``pip install drus[cluster]``.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import socket
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drus.errors import OptionError
from drus.sampling.config import ReconstructionConfig, SamplerConfig, _check_keys

__all__ = [
    "BatchConfig",
    "BatchResult",
    "FrameTask",
    "FrameWorker",
    "Geometry",
    "MANIFEST_NAME",
    "expand_inputs",
    "frame_seed",
    "is_batch_input",
    "parse_frames",
    "ray_available",
    "reconstruct_frames",
    "run_batch",
]

log = logging.getLogger(__name__)

#: Name of the manifest in the output folder.
MANIFEST_NAME = "manifest.json"
#: Version of the manifest layout.
MANIFEST_FORMAT = 1
#: File suffixes taken from a folder (channel data that :func:`drus.datasets.acquisition.read_acquisition` reads).
ACQUISITION_SUFFIXES = (".h5", ".hdf5", ".uff", ".npz", ".mat")
#: The manifest is rewritten at most this often while frames finish (and always at the end, or on Ctrl-C);
#: a frame done but not yet recorded is simply run again by a rerun.
MANIFEST_SAVE_SECONDS = 2.0
#: Methods a batch runs (the ones with the decomposed BH).
BATCH_METHODS = ("drus-mean", "drus-var")


def ray_available() -> bool:
    """Whether Ray can be imported (``pip install drus[cluster]``)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Inputs, frames, seeds
# --------------------------------------------------------------------------------------------------
def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def expand_inputs(inputs) -> list[Path]:
    """The channel-data files of ``inputs``: a folder (its files with :data:`ACQUISITION_SUFFIXES`,
    not recursive), a glob pattern, a file, or a sequence of these; sorted, without duplicates.

    Raises
    ------
    ValueError
        Nothing matches (the message says what was looked for).
    """
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[Path] = []
    for spec in specs:
        text = str(spec)
        p = Path(text).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in ACQUISITION_SUFFIXES
                           and not f.name.startswith("."))
            if not files:
                raise ValueError(f"{p}: the folder holds no channel-data file ({', '.join(ACQUISITION_SUFFIXES)})")
        elif _is_glob(text):
            files = sorted(Path(f) for f in glob.glob(os.path.expanduser(text)) if Path(f).is_file())
            if not files:
                raise ValueError(f"{text}: the pattern matches no file")
        elif p.is_file():
            files = [p]
        else:
            raise ValueError(f"{text}: no such file or folder")
        found.extend(files)
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return unique


def is_batch_input(spec) -> bool:
    """Whether ``spec`` asks for a batch: a folder, a glob pattern, or a file with more than one frame."""
    text = str(spec)
    p = Path(text).expanduser()
    if p.is_dir() or (_is_glob(text) and not p.exists()):
        return True
    if not p.is_file():
        return False
    from drus.datasets.acquisition import count_frames

    try:
        return count_frames(p) > 1
    except (ValueError, OSError):  # not channel data (a By .mat…): the single-file path reports it
        return False


def parse_frames(spec: str | None) -> tuple[int, ...] | None:
    """``"0,3,5"``, ``"2:8"`` (Python slice, end excluded) or a mix like ``"0,4:6"`` → frame indices (0-based)."""
    if spec is None or str(spec).strip() in ("", "all"):
        return None
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if ":" in part:
                lo, hi = part.split(":", 1)
                lo_i, hi_i = int(lo or 0), int(hi)
                if hi_i <= lo_i:
                    raise ValueError
                out.extend(range(lo_i, hi_i))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"frames {spec!r}: expected indices and ranges like '0,3,5' or '2:8' (0-based, end "
                             "excluded)") from None
    if any(i < 0 for i in out):
        raise ValueError(f"frames {spec!r}: indices are ≥ 0 (0-based)")
    return tuple(sorted(set(out)))


def frame_seed(run_seed: int, name: str, frame: int) -> int:
    """The sampler seed of frame ``frame`` of the input named ``name`` (file name, not path), from the run seed.

    :class:`numpy.random.SeedSequence` with ``spawn_key = (crc32(name), frame)``: independent streams
    per frame, the same for a frame whatever else the batch holds, its order or the worker that runs it.
    Returns a 63-bit integer (for :class:`torch.Generator`).
    """
    seq = np.random.SeedSequence(int(run_seed), spawn_key=(zlib.crc32(name.encode()), int(frame)))
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class FrameTask:
    """One frame to reconstruct: ``input`` file, 0-based ``frame``, its ``seed`` and ``output`` file name."""

    id: str
    input: str
    frame: int
    seed: int
    output: str
    geometry: str


@dataclass(frozen=True)
class BatchConfig:
    """What every frame of a batch is reconstructed with (saved in the manifest; a rerun must match it).

    The reconstruction itself (sampler, decomposition threshold and dtype, prior, device, precision) is
    one :class:`~drus.sampling.config.ReconstructionConfig`, whose defaults are declared there; a batch
    adds only what is its own.

    Attributes
    ----------
    reconstruction : ReconstructionConfig
        How each frame is reconstructed. Its sampler's ``seed`` is the run seed: each frame samples with
        :func:`frame_seed` of it (an integer is needed). Its operator's ``unknown_size`` (the PICMUS grid)
        is not used: each file's grid comes from ``x_range``, ``z_range`` and ``size``. Its ``device``
        says where the frames run (``"auto"``: a GPU per worker when there are GPUs). Default: the
        sampler of :meth:`SamplerConfig.drus <drus.sampling.config.SamplerConfig.drus>` (drus's default
        for real acquisitions), the rest :class:`~drus.sampling.config.ReconstructionConfig`'s.
    method : {"drus-mean", "drus-var"}
    angle : float, optional
        Steering angle in rad of the transmit to use (default: the one nearest 0°).
    x_range, z_range : (float, float), optional
        Field of view in m (default: :func:`drus.datasets.acquisition.default_grid`'s).
    size : int, optional
        Pixels along the longer side of the grid.
    sigma0 : float, optional
        Noise level of every frame's ``B y``; default: estimated per frame.
    """

    reconstruction: ReconstructionConfig = field(
        default_factory=lambda: ReconstructionConfig(sampler=SamplerConfig.drus()))
    method: str = "drus-var"
    angle: float | None = None
    x_range: tuple[float, float] | None = None
    z_range: tuple[float, float] | None = None
    size: int | None = None
    sigma0: float | None = None

    def __post_init__(self) -> None:
        rc = self.reconstruction
        if not isinstance(rc, ReconstructionConfig):
            raise TypeError(f"reconstruction must be a ReconstructionConfig, got {type(rc).__name__}")
        if self.method not in BATCH_METHODS:
            raise ValueError(f"method must be one of {', '.join(BATCH_METHODS)} for many frames, got {self.method!r}")
        if self.method == "drus-var" and rc.sampler.n_samples < 2:
            raise ValueError("drus-var needs at least 2 samples (sampler.n_samples ≥ 2)")
        if rc.sampler.seed is None:
            raise ValueError("a batch derives every frame's seed from the sampler's seed (frame_seed): give an "
                             "integer seed (sampler.seed), got None")
        if self.sigma0 is not None and not (math.isfinite(self.sigma0) and self.sigma0 >= 0):
            raise ValueError(f"sigma0 must be a finite number ≥ 0, got {self.sigma0!r}")
        if rc.prior is not None:  # absolute: the manifest compares it across reruns, workers load it from any folder
            object.__setattr__(self, "reconstruction", rc.replace(prior=str(Path(rc.prior).expanduser().resolve())))
        for name in ("x_range", "z_range"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    @property
    def run_seed(self) -> int:
        """The seed each frame's seed is derived from (:func:`frame_seed`): the sampler's."""
        return self.reconstruction.sampler.seed

    def replace(self, **changes) -> "BatchConfig":
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Nested plain fields, for JSON (the manifest's ``config``); :meth:`from_dict` reads them back."""
        return {"reconstruction": self.reconstruction.to_dict(), "method": self.method, "angle": self.angle,
                "x_range": list(self.x_range) if self.x_range else None,
                "z_range": list(self.z_range) if self.z_range else None, "size": self.size, "sigma0": self.sigma0}

    @classmethod
    def from_dict(cls, data: dict) -> "BatchConfig":
        """The configuration :meth:`to_dict` wrote (missing fields take their defaults; unknown ones are refused)."""
        data = _check_keys(cls, data, "batch config")
        if "reconstruction" in data:
            data["reconstruction"] = ReconstructionConfig.from_dict(data["reconstruction"])
        return cls(**data)


# --------------------------------------------------------------------------------------------------
# Geometry: what defines BH for the frames of one file
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """The pulse and grid of one file's frames, settled from its first readable frame ``frame``.

    ``signature`` hashes everything that defines ``BH`` on the grid (element positions, fs, c, t0,
    angle, record length, pulse f0/bandwidth, grid, decomposition options): files with equal
    signatures share one decomposition.
    """

    signature: str
    center_frequency: float
    bandwidth: float
    spectrum_source: str
    grid: object
    source: str
    frame: int

    def apply(self, acquisition):
        """``acquisition`` with this geometry's pulse (the frames of a file share the pulse of its first frame)."""
        return dataclasses.replace(acquisition, center_frequency=self.center_frequency, bandwidth=self.bandwidth,
                                   spectrum_source=self.spectrum_source)


def _signature(acq, grid, config: BatchConfig) -> str:
    d = {"element_x": [float(v) for v in acq.element_x], "fs": acq.sampling_frequency, "c": acq.sound_speed,
         "t0": acq.t0, "angle": acq.angle, "n_samples": acq.n_samples, "f0": acq.center_frequency,
         "bandwidth": acq.bandwidth, "grid_x": list(grid.x), "grid_z": list(grid.z),
         "threshold": config.reconstruction.operator.threshold,
         "compute_dtype": config.reconstruction.operator.compute_dtype}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:24]


def _plan_file(path: Path, n_frames: int, config: BatchConfig) -> Geometry:
    """The geometry of ``path`` from its first frame that reads (ValueError when none does)."""
    from drus.datasets.acquisition import default_grid, read_acquisition

    errors = []
    for k in range(n_frames):
        try:
            acq = read_acquisition(path, angle=config.angle, frame=k).with_spectrum()
        except (ValueError, OSError) as exc:
            errors.append(f"frame {k}: {_one_line(exc)}")
            if len(errors) >= 3:
                break
            continue
        grid = default_grid(acq, x_range=config.x_range, z_range=config.z_range, size=config.size)
        return Geometry(signature=_signature(acq, grid, config), center_frequency=acq.center_frequency,
                        bandwidth=acq.bandwidth, spectrum_source=acq.spectrum_source or "file", grid=grid,
                        source=str(path), frame=k)
    raise ValueError(f"{path.name}: no frame could be read ({'; '.join(errors)})")


def decompose_geometry(geometry: Geometry, config: BatchConfig, *, cache_dir=None, cache: bool = True,
                       device: str = "cpu") -> tuple[dict, dict]:
    """Decompose ``BH`` of ``geometry`` once (from the cache when it is there) and return it as arrays.

    Returns ``(info, arrays)``. ``info``: ``key`` (the cache key), ``split``, ``source`` (``"computed"``
    or ``"cache"``), ``seconds``, ``host``. ``arrays``: ``key``, ``split``, ``floor``, ``threshold``,
    ``metadata`` and ``blocks`` ``[(parity, singular_values float64 [n], vectors [n, m])]`` (numpy, CPU),
    the form that travels through Ray's object store and that :func:`_operator_from_arrays` rebuilds the
    operator from.
    """
    from drus.datasets.acquisition import plan_decomposition, read_acquisition
    from drus.physics.decompose import decompose_bh

    t0 = time.perf_counter()
    acq = geometry.apply(read_acquisition(geometry.source, angle=config.angle, frame=geometry.frame))
    bf = acq.beamformer(geometry.grid)
    operator = config.reconstruction.operator
    split = plan_decomposition(bf, compute_dtype=operator.compute_dtype, threshold=operator.threshold,
                               cache_dir=cache_dir, cache=cache, report=log.info)
    op = decompose_bh(bf, threshold=operator.threshold, compute_dtype=operator.compute_dtype, cache_dir=cache_dir,
                      cache=cache, device=device, split=split, progress=False)
    sources = {b.get("source") for b in op.metadata.get("blocks", {}).values()}
    blocks = [(parity, np.asarray(b.singular_values, dtype=np.float64), b.vectors.detach().cpu().numpy())
              for parity, b in op.blocks.items()]
    info = {"key": op.metadata["key"], "split": split, "source": "computed" if "computed" in sources else "cache",
            "seconds": time.perf_counter() - t0, "host": socket.gethostname()}
    arrays = {"key": op.metadata["key"], "split": split, "floor": op.floor, "threshold": op.threshold,
              "metadata": json.loads(json.dumps(op.metadata, default=str)), "blocks": blocks}
    return info, arrays


def _operator_from_arrays(beamformer, arrays: dict, device):
    """The :class:`~drus.physics.decompose.DecomposedBH` of :func:`decompose_geometry`'s arrays, on ``device``.

    The vectors are used as they are (no copy on the CPU: with Ray they stay in the shared-memory object store).
    """
    import torch

    from drus.physics.decompose import DecomposedBH, SpectralBlock

    blocks = []
    with warnings.catch_warnings():  # object-store arrays are read-only; the operator never writes them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for parity, s, v in arrays["blocks"]:
            blocks.append(SpectralBlock(parity, np.asarray(s, dtype=np.float64), torch.from_numpy(v)))
    op = DecomposedBH(beamformer, *blocks, threshold=arrays["threshold"], floor=arrays["floor"],
                      metadata={**arrays["metadata"], "split": arrays["split"]})
    return op.to(device=device) if torch.device(device).type != "cpu" else op


# --------------------------------------------------------------------------------------------------
# The worker
# --------------------------------------------------------------------------------------------------
class FrameWorker:
    """Reconstructs frames: the prior is loaded once (here), each geometry's operator once (first use).

    Runs in-process (the local engine) or as a Ray actor (``ray.remote(FrameWorker)``).

    Parameters
    ----------
    config : BatchConfig
    out_dir : path
        Where the per-frame HDF5 files go.
    device : str, optional
        ``"cpu"``, ``"cuda"``… (an actor with a GPU sees it as ``"cuda"``); default the configuration's.
    threads : int, optional
        torch CPU threads of this worker (fix it to compare results bit for bit across runs).
    """

    def __init__(self, config: BatchConfig, out_dir, *, device: str | None = None, threads: int | None = None):
        import torch

        t0 = time.perf_counter()
        if threads:
            torch.set_num_threads(int(threads))
        from drus.device import resolve_device
        from drus.models.prior import load_prior

        import drus.datasets.acquisition  # noqa: F401 - imported here: a worker's start-up, not its first frame
        import drus.evaluation.scoring  # noqa: F401
        import drus.sampling.reconstruct  # noqa: F401

        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(config.reconstruction.device if device is None else device)
        self.model = load_prior(config.reconstruction.prior, device=self.device,
                                precision=config.reconstruction.precision)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._operators: dict[str, tuple] = {}
        self.seconds_start = time.perf_counter() - t0

    def info(self) -> dict:
        return {"worker": self.name, "seconds_start": self.seconds_start, "device": str(self.device)}

    def decompose(self, geometry: Geometry, *, cache_dir=None, cache: bool = True) -> tuple[dict, dict]:
        """:func:`decompose_geometry` on this worker's device: one worker does it, once per geometry."""
        return decompose_geometry(geometry, self.config, cache_dir=cache_dir, cache=cache, device=str(self.device))

    def _operator(self, geometry: Geometry, acquisition, arrays_ref):
        """``(beamformer, operator)`` of ``geometry``, built once per worker."""
        if geometry.signature not in self._operators:
            arrays = arrays_ref[0]
            if not isinstance(arrays, dict):  # a Ray ObjectRef (kept in a list so that Ray does not resolve it per call)
                import ray

                arrays = ray.get(arrays)
            bf = acquisition.beamformer(geometry.grid)
            self._operators[geometry.signature] = (bf, _operator_from_arrays(bf, arrays, self.device))
        return self._operators[geometry.signature]

    def run(self, task: FrameTask, geometry: Geometry, arrays_ref: list) -> dict:
        """Reconstruct ``task`` and write its output; never raises for a bad frame (its record says ``failed``)."""
        record = {"id": task.id, "worker": self.name, "status": "failed", "error": None, "timings": {}}
        t = {"start": time.perf_counter()}
        try:
            record.update(self._run(task, geometry, arrays_ref, t))
            record["status"] = "done"
        except Exception as exc:  # noqa: BLE001 - a bad frame is reported, the batch goes on
            record["error"] = _one_line(exc)
            log.warning("%s failed: %s", task.id, record["error"])
        record["timings"]["seconds_total"] = time.perf_counter() - t["start"]
        return record

    def _run(self, task: FrameTask, geometry: Geometry, arrays_ref: list, t: dict) -> dict:
        from drus.datasets.acquisition import read_acquisition, reconstruct_acquisition
        from drus.datasets.io import save_images_hdf5
        from drus.evaluation.scoring import method_envelope

        cfg = self.config
        # this frame's configuration: the batch's, with the frame's own sampler seed
        frame_cfg = cfg.reconstruction.replace(sampler=cfg.reconstruction.sampler.replace(seed=task.seed))
        acq = geometry.apply(read_acquisition(task.input, angle=cfg.angle, frame=task.frame))
        if _signature(acq, geometry.grid, cfg) != geometry.signature:
            raise ValueError(f"frame {task.frame} has other acquisition parameters (element positions, fs, c, t0, "
                             f"angle or record length) than frame {geometry.frame} of the same file; put it in a "
                             "file of its own")
        t_read = time.perf_counter()
        bf, op = self._operator(geometry, acq, arrays_ref)
        t_op = time.perf_counter()
        res = reconstruct_acquisition(acq, bf, model=self.model, sampler=frame_cfg.sampler, sigma0=cfg.sigma0,
                                      threshold=frame_cfg.operator.threshold,
                                      compute_dtype=frame_cfg.operator.compute_dtype, device=self.device,
                                      operator=op, report=log.debug, progress=False)
        t_rec = time.perf_counter()
        rec = res.reconstruction
        arrays = {"by": res.by, "das": res.das, "samples": rec.samples, "mean": rec.mean}
        if frame_cfg.sampler.n_samples >= 2:
            arrays.update(var=rec.var, var_pooled=res.var_pooled)
        image = rec.mean if cfg.method == "drus-mean" else rec.var
        amp = method_envelope("DRUSmean" if cfg.method == "drus-mean" else "DRUSvar", image)
        attrs = {"method": cfg.method, "observation": task.input, "frame": task.frame, "frame_seed": task.seed,
                 "run_seed": cfg.run_seed, **frame_cfg.to_attrs(), **res.attrs}
        save_images_hdf5(self.out_dir / task.output, grid=bf.grid, image=image, amplitude=amp, **arrays, attrs=attrs)
        t_end = time.perf_counter()
        sampling = float(rec.timings.get("seconds_total", float("nan")))
        return {"sigma0": float(res.sigma0), "sigma0_source": res.sigma0_source,
                "timings": {"seconds_read": t_read - t["start"], "seconds_operator": t_op - t_read,
                            "seconds_sampling": sampling, "seconds_prepare": (t_rec - t_op) - sampling,
                            "seconds_write": t_end - t_rec}}


# --------------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------------
#: Fields of the manifest's configuration (dotted paths of :meth:`BatchConfig.to_dict`) that a rerun may
#: change: where the frames run, and the PICMUS unknown grid, which a batch does not use (each file's grid
#: is its own). The manifest keeps the latest run's.
RERUN_MAY_CHANGE = ("reconstruction.device", "reconstruction.operator.unknown_size")


def _flatten(data, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (anything but a dict is one value)."""
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data} if prefix else {}
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_MISSING = object()


def _differences(old, new: dict) -> list[str]:
    """The dotted names of the fields in which two saved configurations differ, sorted."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING))


def _load_manifest(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or "frames" not in manifest:
            raise ValueError("not a drus batch manifest")
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: unreadable batch manifest ({_one_line(exc)}); delete it to start afresh, or "
                         "choose another --out") from None
    return manifest


def _save_manifest(path: Path, manifest: dict) -> None:
    from drus.outputs import write_text_atomic

    write_text_atomic(path, json.dumps(manifest, indent=1, sort_keys=False, default=str))


@dataclass
class BatchResult:
    """What :func:`run_batch` did: frame ids by outcome, the manifest, and the timings of this run."""

    done: list
    failed: list
    skipped: list
    manifest_path: Path
    manifest: dict
    timings: dict

    @property
    def n_frames(self) -> int:
        return len(self.done) + len(self.failed) + len(self.skipped)


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------
def _source_root() -> str:
    """The folder holding the ``drus`` package being run (for the workers' ``PYTHONPATH``)."""
    import drus

    return str(Path(drus.__file__).resolve().parents[1])


def _start_ray(address: str | None, workers: int, threads: int, gpus: int) -> bool:
    """Connect to Ray (an existing connection is reused); returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    path = os.pathsep.join(p for p in (_source_root(), os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": path}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=workers * threads, num_gpus=gpus, include_dashboard=False, runtime_env=runtime_env,
                 logging_level=logging.WARNING, log_to_driver=False)
    return True


def run_batch(
    inputs,
    *,
    config: BatchConfig,
    out_dir,
    workers: int | None = None,
    engine: str = "auto",
    address: str | None = None,
    frames=None,
    threads: int | None = None,
    cache_dir=None,
    cache: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    report=None,
) -> BatchResult:
    """Reconstruct every frame of ``inputs`` (module docstring), resuming an earlier run in ``out_dir``.

    Parameters
    ----------
    inputs : path, glob pattern or a sequence of them
        Folders, patterns and files (:func:`expand_inputs`).
    config : BatchConfig
        Saved in the manifest (:meth:`BatchConfig.to_dict`). Its reconstruction's ``device`` says where
        the frames run: ``"auto"``, a GPU per worker when there are GPUs, else the CPU.
    out_dir : path
        Outputs and ``manifest.json``.
    workers : int, optional
        Ray workers (actors). Default: one per GPU when the machine has GPUs, else 1.
    engine : {"auto", "ray", "local"}
        ``"auto"``: Ray when it is installed and there is more than one worker or an ``address``; else local.
    address : str, optional
        ``"auto"`` or ``"ray://host:10001"``: join that Ray cluster instead of starting one here.
    frames : sequence of int, optional
        Frames of every file to run (0-based; indices a file lacks are ignored); default all.
    threads : int, optional
        torch threads per worker; default: this machine's cores / workers (at least 1).
    cache_dir, cache : the decomposition cache (default ``$DRUS_CACHE`` or ``~/.cache/drus``).
    overwrite : bool
        Start afresh where an earlier run with another configuration (or files without a manifest) is found.
        A rerun may change the fields of :data:`RERUN_MAY_CHANGE` (the device, and the unknown grid a batch
        does not use); any other difference is refused without ``overwrite``.
    progress : bool
        One progress bar over all frames.
    report : callable, optional
        Receives one line per stage (default: the module logger).

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        Unknown engine, Ray asked for but not installed, no input, or an earlier run in ``out_dir`` with
        another configuration (without ``overwrite``).
    """
    from tqdm.auto import tqdm

    from drus.datasets.acquisition import count_frames
    from drus.outputs import check_writable_dir, refuse_overwrite

    say = report or log.info
    t_run = time.perf_counter()
    if not isinstance(config, BatchConfig):
        raise TypeError(f"config must be a BatchConfig, got {type(config).__name__}")
    device = config.reconstruction.device
    if engine not in ("auto", "ray", "local"):
        raise ValueError(f"engine must be 'auto', 'ray' or 'local', got {engine!r}")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers!r}")
    if engine == "ray" or address:
        if not ray_available():
            raise ValueError("Ray is not installed; pip install 'drus[cluster]' (or run without --workers/--address: "
                             "frames then run here, one after another)")
    import torch

    local_gpus = torch.cuda.device_count() if device != "cpu" else 0
    if workers is None:
        workers = max(1, local_gpus) if not address else None
    use_ray = engine == "ray" or bool(address) or (engine == "auto" and (workers or 1) > 1 and ray_available())
    if engine == "auto" and (workers or 1) > 1 and not use_ray:
        say("Ray is not installed (pip install 'drus[cluster]'): the frames run here, one after another")
    n_workers = workers or 1
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // n_workers) if not address else 1

    out = check_writable_dir(out_dir)
    manifest_path = out / MANIFEST_NAME
    files = expand_inputs(inputs)
    config_dict = json.loads(json.dumps(config.to_dict(), default=str))
    manifest = _load_manifest(manifest_path)
    if manifest is not None:
        changed = [k for k in _differences(manifest.get("config"), config_dict) if k not in RERUN_MAY_CHANGE]
        if changed and not overwrite:
            raise ValueError(f"{manifest_path}: an earlier batch in this folder used another configuration (differs "
                             f"in {', '.join(changed)}); pass --overwrite to start afresh, or choose another --out")
        if changed:
            manifest = None
        else:
            manifest["config"] = config_dict  # this run's device
    fresh = manifest is None
    if fresh:
        manifest = {"format": MANIFEST_FORMAT, "config": config_dict, "geometries": {}, "frames": {}, "runs": []}

    # --- plan: frames, their geometry, seeds and outputs --------------------------------------------
    tasks: list[FrameTask] = []
    geometries: dict[str, Geometry] = {}
    problems: dict[str, str] = {}
    names: dict[str, str] = {}
    for path in files:
        try:
            n = count_frames(path)
            selected = [k for k in (frames if frames is not None else range(n)) if k < n]
            geometry = _plan_file(path, n, config) if selected else None
        except (ValueError, OSError) as exc:
            problems[f"{path.name}#*"] = _one_line(exc)
            continue
        manifest["frames"].pop(f"{path.name}#*", None)  # readable now
        for k in selected:
            task_id = f"{path.name}#{k}"
            output = f"{path.stem}_f{k:04d}_{config.method}.hdf5"
            if output in names:
                raise ValueError(f"{path} and {names[output]} would both write {output}; give the inputs distinct "
                                 "file names (or run them into separate --out folders)")
            names[output] = str(path)
            tasks.append(FrameTask(id=task_id, input=str(path), frame=k, seed=frame_seed(config.run_seed, path.name, k),
                                   output=output, geometry=geometry.signature))
        if geometry is not None:
            geometries.setdefault(geometry.signature, geometry)

    entries = manifest["frames"]
    todo, skipped = [], []
    for task in tasks:
        entry = entries.get(task.id)
        if entry and entry.get("status") == "done" and entry.get("seed") == task.seed and (out / task.output).exists():
            skipped.append(task.id)
        else:
            todo.append(task)
    if fresh:  # results of some other run (no manifest) are not replaced silently
        refuse_overwrite([out / t.output for t in todo], overwrite=overwrite)
    for task in todo:
        entries[task.id] = {"input": task.input, "frame": task.frame, "seed": task.seed, "output": task.output,
                            "geometry": task.geometry, "status": "pending", "error": None,
                            "attempts": entries.get(task.id, {}).get("attempts", 0)}
    for task_id, error in problems.items():
        entries[task_id] = {"input": task_id[:-2], "frame": None, "status": "failed", "error": error}
    run_info = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "engine": "ray" if use_ray else "local",
                "device": device, "address": address, "workers": n_workers, "threads_per_worker": threads,
                "frames_total": len(tasks), "frames_skipped": len(skipped)}
    manifest["runs"].append(run_info)
    _save_manifest(manifest_path, manifest)
    say(f"{len(tasks)} frame(s) in {len(files)} file(s): {len(skipped)} done earlier, {len(todo)} to run"
        + (f"; {len(problems)} file(s) unreadable" if problems else ""))

    done, failed = [], [k for k in problems]
    timings = {"seconds_engine_start": 0.0, "seconds_decomposition": 0.0, "seconds_worker_start": 0.0}
    bar = tqdm(total=len(tasks), initial=len(skipped), disable=not progress, desc="frames", dynamic_ncols=True)
    needed = {t.geometry for t in todo}
    started_ray = False
    torch_threads = torch.get_num_threads()  # the local engine's worker sets them in this process; restored below

    last_save = [time.monotonic()]

    def finish(task: FrameTask, record: dict) -> None:
        entry = entries[task.id]
        entry["attempts"] = entry.get("attempts", 0) + 1
        entry.update({k: v for k, v in record.items() if k != "id"})
        (done if record["status"] == "done" else failed).append(task.id)
        if record["status"] != "done":
            (bar.write if progress else say)(f"{task.id}: failed: {record['error']}")
        if time.monotonic() - last_save[0] >= MANIFEST_SAVE_SECONDS:  # a long batch rewrites it every few seconds
            _save_manifest(manifest_path, manifest)
            last_save[0] = time.monotonic()
        bar.update(1)

    def record_geometry(sig: str, arrays: dict) -> None:
        manifest["geometries"][sig] = {"key": arrays["key"], "split": arrays["split"], "source": arrays["source"],
                                       "seconds": arrays["seconds"], "host": arrays["host"],
                                       "grid": str(geometries[sig].grid), "from": f"{Path(geometries[sig].source).name}"
                                       f"#{geometries[sig].frame}"}
        say(f"geometry {sig[:12]}: BH {arrays['source']} (key {arrays['key'][:12]}…, {arrays['seconds']:.1f} s)")

    try:
        if not todo:
            pass
        elif not use_ray:
            t0 = time.perf_counter()
            worker = FrameWorker(config, out, threads=threads)
            timings["seconds_worker_start"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            arrays = {}
            for sig in needed:
                try:
                    info, arrays[sig] = worker.decompose(geometries[sig], cache_dir=cache_dir, cache=cache)
                    record_geometry(sig, info)
                except (ValueError, OSError) as exc:
                    arrays[sig] = _one_line(exc)
            timings["seconds_decomposition"] = time.perf_counter() - t0
            for task in todo:
                if isinstance(arrays[task.geometry], str):
                    finish(task, {"status": "failed", "error": f"decomposition: {arrays[task.geometry]}",
                                  "worker": worker.name, "timings": {}})
                    continue
                finish(task, worker.run(task, geometries[task.geometry], [arrays[task.geometry]]))
        else:
            import ray

            t0 = time.perf_counter()
            started_ray = _start_ray(address, n_workers, threads, local_gpus)
            timings["seconds_engine_start"] = time.perf_counter() - t0
            gpus = int(ray.cluster_resources().get("GPU", 0)) if device != "cpu" else 0
            if workers is None:
                workers = n_workers = max(1, gpus or int(ray.cluster_resources().get("CPU", 1)) // threads)
                manifest["runs"][-1]["workers"] = n_workers
            per_gpu = 1 if gpus else 0
            worker_device = "cuda" if per_gpu else "cpu"
            if per_gpu and n_workers > gpus:  # one GPU per worker: more workers would wait for a GPU forever
                say(f"{n_workers} workers asked for but the cluster has {gpus} GPU(s): {gpus} worker(s), one GPU each")
                n_workers = gpus
                manifest["runs"][-1]["workers"] = n_workers
            t0 = time.perf_counter()
            actor_cls = ray.remote(FrameWorker)
            make = lambda: actor_cls.options(num_cpus=threads, num_gpus=per_gpu).remote(  # noqa: E731
                config, str(out), device=worker_device, threads=threads)
            actors = [make() for _ in range(min(n_workers, len(todo)))]
            # each geometry decomposed once, by one worker (round robin); its arrays stay in the object store
            refs = {sig: actors[i % len(actors)].decompose.options(num_returns=2).remote(
                geometries[sig], cache_dir=cache_dir, cache=cache) for i, sig in enumerate(sorted(needed))}
            infos = ray.get([a.info.remote() for a in actors])
            timings["seconds_worker_start"] = time.perf_counter() - t0
            manifest["runs"][-1]["worker_start_seconds"] = [round(i["seconds_start"], 3) for i in infos]
            t0 = time.perf_counter()
            arrays_refs: dict = {}
            for sig, (info_ref, arrays_ref) in refs.items():
                try:
                    record_geometry(sig, ray.get(info_ref))  # the small part; the arrays go to the workers
                    arrays_refs[sig] = arrays_ref
                except Exception as exc:  # noqa: BLE001 - a geometry that cannot be decomposed fails its frames
                    arrays_refs[sig] = _one_line(getattr(exc, "cause", None) or exc)
            timings["seconds_decomposition"] = time.perf_counter() - t0
            _save_manifest(manifest_path, manifest)
            queue = list(todo)
            running: dict = {}
            restarts = 0

            def submit(actor) -> None:
                while queue:
                    task = queue.pop(0)
                    ref = arrays_refs[task.geometry]
                    if isinstance(ref, str):
                        finish(task, {"status": "failed", "error": f"decomposition: {ref}", "timings": {}})
                        continue
                    running[actor.run.remote(task, geometries[task.geometry], [ref])] = (actor, task)
                    return

            for actor in actors:
                submit(actor)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                actor, task = running.pop(ready[0])
                try:
                    record = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - the worker died (OOM, segfault…): the frame fails, a new worker goes on
                    record = {"status": "failed", "error": f"worker lost: {_one_line(exc)}", "timings": {}}
                    restarts += 1
                    if restarts > 2 * n_workers:
                        raise RuntimeError(f"{restarts} workers lost; giving up (last: {record['error']})") from exc
                    actor = make()
                finish(task, record)
                submit(actor)
    except KeyboardInterrupt:
        say(f"interrupted: {len(done)} frame(s) done in this run; rerun the same command to resume")
        raise
    finally:
        bar.close()
        run_info.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), frames_done=len(done),
                        frames_failed=len(failed), seconds_total=time.perf_counter() - t_run,
                        **{k: round(v, 3) for k, v in timings.items()})
        _save_manifest(manifest_path, manifest)
        torch.set_num_threads(torch_threads)
        if started_ray:
            import ray

            ray.shutdown()
    timings["seconds_total"] = time.perf_counter() - t_run
    return BatchResult(done=done, failed=failed, skipped=skipped, manifest_path=manifest_path, manifest=manifest,
                       timings=timings)


def reconstruct_frames(
    inputs,
    *,
    method: str,
    config: ReconstructionConfig | None = None,
    out_dir="out/reconstruct",
    sigma0: float | None = None,
    angle: float | None = None,
    x_range: tuple[float, float] | None = None,
    z_range: tuple[float, float] | None = None,
    grid_size: int | None = None,
    dataset: str | None = None,
    phantom=None,
    layout: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    frames=None,
    threads: int | None = None,
    cache_dir=None,
    cache: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    report=None,
) -> BatchResult:
    """``drus reconstruct`` on many frames: its options, in its units, checked → a :class:`BatchConfig` →
    :func:`run_batch`.

    Parameters
    ----------
    inputs : path, glob pattern or a sequence of them
        ``OBSERVATION``: folders, patterns, multi-frame files (:func:`expand_inputs`).
    method : {"drus-mean", "drus-var"}
        :data:`BATCH_METHODS`.
    config : ReconstructionConfig, optional
        Sampler (its seed is the run seed, :func:`frame_seed`), decomposition threshold and dtype, prior,
        device, precision; default :class:`BatchConfig`'s.
    out_dir : path
        Outputs and ``manifest.json``.
    sigma0 : float, optional
        Noise std of every frame's ``B y``; default: estimated per frame.
    angle, x_range, z_range, grid_size
        As for one acquisition (:func:`drus.pipelines.reconstruct.reconstruct_file`): the steering angle
        in degrees, the lateral and depth extents in mm, the pixels along the grid's longer side.
    dataset, phantom, layout
        Options of a single PICMUS observation: refused here when given.
    workers, address, frames, threads, cache_dir, cache, overwrite, progress, report
        As for :func:`run_batch` (``frames``: 0-based indices, :func:`parse_frames` of ``--frames``).

    Returns
    -------
    BatchResult

    Raises
    ------
    drus.errors.OptionError
        A method other than :data:`BATCH_METHODS`, or ``dataset``, ``phantom`` or ``layout`` given.
    ValueError
        What :class:`BatchConfig` and :func:`run_batch` refuse.
    """
    from drus.pipelines.reconstruct import acquisition_options_si

    if method not in BATCH_METHODS:
        raise OptionError("--method", f"many frames run {' or '.join(BATCH_METHODS)}, not {method}")
    for option, value in (("--dataset", dataset), ("--phantom", phantom), ("--layout", layout)):
        if value:
            raise OptionError(option, "applies to a single PICMUS observation, not to many frames")
    if config is not None and not isinstance(config, ReconstructionConfig):
        raise TypeError(f"config must be a ReconstructionConfig, got {type(config).__name__}")
    batch = BatchConfig(**({} if config is None else {"reconstruction": config}), method=method, size=grid_size,
                        sigma0=sigma0, **acquisition_options_si(angle=angle, x_range=x_range, z_range=z_range))
    return run_batch(inputs, config=batch, out_dir=out_dir, workers=workers, address=address, frames=frames,
                     threads=threads, cache_dir=cache_dir, cache=cache, overwrite=overwrite, progress=progress,
                     report=report)
