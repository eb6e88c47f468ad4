"""``drus decompose`` as library calls: the exact SVD view of ``BH``, computed or read from the cache, and its report.

:func:`decompose_picmus` decomposes ``BH`` on the paper's field of view at ``n × n`` pixels and
reports what it cost (time, peak memory, the cache), what it kept (components above each
threshold), what one DDRM step costs (``Vᵀ`` and ``V`` on 10 images) and how exact it is
(:func:`drus.physics.decompose.operator_error` on a random and a speckle image).
:func:`decompose_acquisition_file` warms the cache of the grid ``drus reconstruct FILE`` would use.
Both send their lines to ``report`` (default: ``logging`` at INFO).
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["decompose_picmus", "decompose_acquisition_file"]

log = logging.getLogger(__name__)

#: The thresholds (relative to s1) whose kept components are always reported.
REPORTED_THRESHOLDS = (1e-1, 1e-2, 1e-3)


def _say(report, message: str) -> None:
    (report or log.info)(message)


def decompose_picmus(size: int, *, method: str = "gram", threshold: float = 1e-3, dtype: str = "float32",
                     compute_dtype: str = "float64", complement: str = "auto", device="auto", cache_dir=None,
                     cache: bool = True, seed: int = 0, report: Callable[[str], None] | None = None):
    """Decompose (or load) ``BH`` of the PICMUS geometry at ``size × size`` pixels and report its cost and accuracy.

    Parameters follow :func:`drus.physics.decompose.decompose_bh`; ``seed`` seeds the random and
    speckle test images of the accuracy check. Returns the :class:`~drus.physics.decompose.DecomposedBH`.
    """
    import torch

    from drus.device import resolve_device
    from drus.physics import geometry
    from drus.physics.beamform import MatchedFilterBeamformer
    from drus.physics.decompose import decompose_bh, operator_error
    from drus.physics.phantoms import random_echogenicity, speckle

    dev = resolve_device(device)
    probe, wave, grid = geometry.picmus(size)
    t0 = time.perf_counter()
    bf = MatchedFilterBeamformer(probe, wave, grid)
    _ = bf.H, bf.B
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    op = decompose_bh(bf, method=method, threshold=threshold, dtype=dtype, compute_dtype=compute_dtype,
                      complement=complement, device=dev, cache_dir=cache_dir, cache=cache, progress=True)
    t_dec = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)

    rng = np.random.default_rng(seed)
    inputs = {
        "random": rng.standard_normal(grid.shape).astype(np.float32),
        "speckle": speckle(random_echogenicity(grid, rng=rng), rng=rng).astype(np.float32),
    }
    blocks = op.blocks
    n = grid.size
    _say(report, f"BH on {grid} (N = {n}), flip blocks {blocks['even'].n} + {blocks['odd'].n}, {method}, "
                 f"compute {compute_dtype}, V stored as {dtype}, device {dev}")
    _say(report, f"H, B built in {t_build:.1f} s; decomposition {t_dec:.1f} s")
    for p, m in op.metadata["blocks"].items():
        if m["source"] == "cache":
            _say(report, f"  {p} block: loaded from the cache (computed in {m['seconds_total']:.1f} s on {m['device']})")
        else:
            _say(report, f"  {p} block: assembled in {m['seconds_assemble']:.1f} s, decomposed in "
                         f"{m['seconds_total'] - m['seconds_assemble']:.1f} s")
    _say(report, f"peak RSS {peak_rss:.2f} GiB"
         + (f", peak CUDA {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if dev.type == "cuda" else ""))
    _say(report, f"s1 = {op.s1:.4g}; reliable floor {op.floor:.2g}·s1")
    s_all = np.concatenate([b.singular_values for b in blocks.values()])
    for t in sorted({*REPORTED_THRESHOLDS, threshold}, reverse=True):
        k = int((s_all > max(t, op.floor) * op.s1).sum())
        _say(report, f"  kept above {t:g}·s1: {k} of {n} ({100 * k / n:.1f} %)"
             + ("  ← this operator" if t == threshold else ""))
    _say(report, f"layout {op.layouts['even']}/{op.layouts['odd']}, spectral size {op.spectral_shape[0]}, "
                 f"V {op.nbytes / 2**20:.1f} MiB in memory")
    if op.metadata.get("cache_dir"):
        files = sorted(Path(op.metadata["cache_dir"]).glob(f"bh-{op.metadata['key'][:24]}-*"))
        _say(report, f"cache: {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB in {len(files)} files under "
                     f"{op.metadata['cache_dir']}")
    # the per-step cost of DDRM's transforms: one Vᵀ and one V on C = 10 images
    x = torch.randn(10, *grid.shape, device=dev)
    op.V(op.Vt(x))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(3):
        op.V(op.Vt(x))
    sync()
    _say(report, f"Vᵀ + V on 10 images (one DDRM step): {(time.perf_counter() - t0) / 3 * 1e3:.1f} ms on {dev}")
    others = [t for t in (1e-2, 1e-3) if t != threshold and (t > threshold or set(op.layouts.values()) == {"basis"})]
    for t, o in [(threshold, op)] + [(t, op.with_threshold(t)) for t in others]:
        errs = ", ".join(f"{name} {operator_error(o, bf, x):.3g}" for name, x in inputs.items())
        _say(report, f"operator error ‖USVᵀx − BHx‖/‖BHx‖ at threshold {t:g}: {errs}")
    return op


def decompose_acquisition_file(path, *, angle=None, x_range=None, z_range=None, size=None, method: str = "gram",
                               threshold: float = 1e-3, dtype: str = "float32", compute_dtype: str = "float64",
                               complement: str = "auto", device="auto", cache_dir=None, cache: bool = True,
                               report: Callable[[str], None] | None = None):
    """The decomposition ``drus reconstruct FILE`` will read, for the same angle (degrees), ranges (mm) and
    size (:func:`drus.pipelines.reconstruct.prepare_acquisition_mm`): its predicted cost first, then
    computed into the cache. Returns ``(DecomposedBH, split)``."""
    from drus.datasets.acquisition import plan_decomposition
    from drus.device import resolve_device
    from drus.physics.decompose import decompose_bh
    from drus.pipelines.reconstruct import prepare_acquisition_mm

    dev = resolve_device(device)
    _, bf = prepare_acquisition_mm(Path(path), angle=angle, x_range=x_range, z_range=z_range, size=size, report=report)
    split = plan_decomposition(bf, compute_dtype=compute_dtype, threshold=threshold, cache_dir=cache_dir, cache=cache,
                               report=report)
    t0 = time.perf_counter()
    op = decompose_bh(bf, method=method, threshold=threshold, dtype=dtype, compute_dtype=compute_dtype,
                      complement=complement, device=dev, cache_dir=cache_dir, cache=cache, split=split)
    _say(report, f"{op} in {time.perf_counter() - t0:.1f} s; split {split}"
         + (f"; cache {op.metadata['cache_dir']} (key {op.metadata['key'][:12]}…)" if op.metadata.get("cache_dir") else ""))
    return op, split
