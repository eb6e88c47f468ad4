"""Many frames (drus.pipelines.batch): frames per minute for 1 and 2 workers, and where the time goes.

A simulated cine loop (a 32-element, 0.3 mm-pitch linear array, 0° wave, speckle over a cyst that
moves between frames) in the minimal layout, reconstructed with the shipped prior (drus-var) by:

- ``local``: in-process, one frame after another (no Ray);
- ``ray × 1``: a local Ray instance with one worker;
- ``ray × 2``: two workers;

each worker with ``--threads`` torch threads (default 1: on a 2-core machine shared with other jobs,
two OpenMP threads per process make the small ops of a tiny UNet wait for descheduled threads).

The decomposition of ``BH`` is computed once before the runs (reported on its own: it is per geometry,
not per frame) and read from the cache by every run. Per run: wall time, frames per minute, and the
split of the workers' time (wall × workers) between DDRM sampling and set-up (engine start, worker
start with the prior, the operator, reading, ``B y``/DAS/σ0, writing, and idle time).

    python benchmarks/bench_batch.py --quick          # 4 frames, 32² grid, C = 4, 20 steps (~2 min on 2 cores)
    python benchmarks/bench_batch.py                  # 8 frames, 64² grid, C = 10, 50 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def simulate_cine(path: Path, *, n_frames: int, size: int) -> dict:
    """``n_frames`` of a 32-element 0° acquisition on a ``size``² grid; returns the batch's grid options."""
    from drus.datasets.acquisition import Acquisition, write_acquisition
    from drus.physics.geometry import ImageGrid
    from drus.physics.phantoms import speckle

    n_el, pitch = 32, 0.3e-3
    x = (np.arange(n_el) - (n_el - 1) / 2) * pitch
    half = x[-1]
    z0, z1 = 5e-3, 5e-3 + 2 * half
    fs, c = 20.832e6, 1540.0
    n_samples = int(np.ceil((2 * np.hypot(z1, 2 * half) / c) * fs)) + 64
    acq = Acquisition(channel_data=np.zeros((n_samples, n_el)), element_x=x, sampling_frequency=fs, sound_speed=c,
                      t0=0.0, angle=0.0, center_frequency=5.2e6, bandwidth=0.6, spectrum_source="file")
    grid = ImageGrid.from_extent(x_min=-half, x_max=half, z_min=z0, z_max=z1, n_x=size, n_z=size)
    model = acq.beamformer(grid).model
    frames = []
    zz, xx = np.meshgrid(grid.z_axis, grid.x_axis, indexing="ij")
    for k in range(n_frames):
        cx = -0.3 * half + 0.6 * half * k / max(1, n_frames - 1)  # the cyst moves across the field
        echo = np.where(np.hypot(xx - cx, zz - (z0 + z1) / 2) < 0.25 * half, 0.05, 1.0)
        y = model.simulate(speckle(echo, seed=k))
        y = y + 0.02 * np.abs(y).max() * np.random.default_rng(k).standard_normal(y.shape)
        frames.append(dataclasses.replace(acq, channel_data=y))
    write_acquisition(path, frames)
    return {"x_range": (-half, half), "z_range": (z0, z1), "size": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 frames, 32² grid, C = 4, 20 steps")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--keep", default=None, help="keep the files in this folder")
    args = parser.parse_args()
    n_frames = args.frames or (4 if args.quick else 8)
    size = args.size or (32 if args.quick else 64)
    n_samples = args.samples or (4 if args.quick else 10)
    n_steps = args.steps or (20 if args.quick else 50)

    import torch

    from drus.pipelines.batch import BatchConfig, decompose_geometry, _plan_file, ray_available, run_batch
    from drus.sampling.config import ReconstructionConfig, SamplerConfig

    cores = os.cpu_count() or 1
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_batch_"))
    root.mkdir(parents=True, exist_ok=True)
    cine = root / "cine.h5"
    grid_opts = simulate_cine(cine, n_frames=n_frames, size=size)
    reconstruction = ReconstructionConfig(sampler=SamplerConfig.drus(n_samples=n_samples, n_steps=n_steps, seed=0),
                                          device="cpu")
    config = BatchConfig(reconstruction=reconstruction, method="drus-var", **grid_opts)
    cache = root / "cache"
    torch.set_num_threads(cores)
    geometry = _plan_file(cine, n_frames, config)
    t0 = time.perf_counter()
    info, _ = decompose_geometry(geometry, config, cache_dir=cache)
    t_dec = time.perf_counter() - t0
    print(f"machine: {platform.machine()}, {cores} cores, torch {torch.__version__}, {platform.python_version()}")
    print(f"workload: {n_frames} frames of 32 elements, {size}² grid, C = {n_samples}, {n_steps} steps, shipped prior")
    print(f"decomposition of BH (once per geometry, {info['split']} split): {t_dec:.1f} s\n")

    runs = [("local", 1, "local", args.threads)]
    if ray_available():
        runs += [("ray × 1", 1, "ray", args.threads), ("ray × 2", 2, "ray", args.threads)]
    else:
        print("(Ray not installed: pip install 'drus[cluster]' for the Ray rows)")
    rows = []
    for label, workers, engine, threads in runs:
        out = root / f"out_{label.replace(' × ', '')}"
        shutil.rmtree(out, ignore_errors=True)
        res = run_batch(cine, config=config, out_dir=out, workers=workers, engine=engine,
                        threads=threads, cache_dir=cache, progress=False, report=lambda _: None)
        assert not res.failed, res.manifest["frames"]
        wall = res.timings["seconds_total"]
        frames = res.manifest["frames"].values()
        sampling = sum(f["timings"]["seconds_sampling"] for f in frames)
        per_frame_setup = sum(f["timings"]["seconds_total"] - f["timings"]["seconds_sampling"] for f in frames)
        busy = wall * workers
        rows.append((label, workers, threads, wall, 60 * n_frames / wall, res.timings["seconds_engine_start"],
                     res.timings["seconds_worker_start"], per_frame_setup, sampling, sampling / busy,
                     sampling / n_frames / n_steps))
    print("| engine | workers | threads each | wall (s) | frames / min | engine start (s) | worker start (s) "
          "| per-frame set-up, all frames (s) | sampling, all frames (s) | sampling / (wall × workers) | s per DDRM step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.2f} | {r[5]:.1f} | {r[6]:.1f} | {r[7]:.1f} | "
              f"{r[8]:.1f} | {100 * r[9]:.0f} % | {r[10]:.3f} |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
