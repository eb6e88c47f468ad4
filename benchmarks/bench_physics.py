"""Build time, memory and apply time of H, B and BH on the paper's field of view.

Each grid size runs in a fresh subprocess so that its peak resident memory is its own.

    python benchmarks/bench_physics.py            # 64², 128², 256²
    python benchmarks/bench_physics.py --quick    # 64², 128²
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def one(n: int) -> dict:
    import numpy as np

    from drus.physics.beamform import MatchedFilterBeamformer
    from drus.physics.geometry import picmus

    probe, wave, grid = picmus(n)
    bf = MatchedFilterBeamformer(probe, wave, grid)
    t = time.perf_counter()
    H = bf.H
    t_h = time.perf_counter() - t
    t = time.perf_counter()
    B = bf.B
    t_b = time.perf_counter() - t
    v = np.random.default_rng(0).standard_normal(grid.size).astype(np.float32)
    B @ (H @ v)  # warm-up
    reps = 5
    t = time.perf_counter()
    for _ in range(reps):
        B @ (H @ v)
    t_bh = (time.perf_counter() - t) / reps
    nbytes = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in (H, B))
    return {
        "grid": f"{n}x{n}",
        "H_nnz_M": H.nnz / 1e6,
        "B_nnz_M": B.nnz / 1e6,
        "H_build_s": t_h,
        "B_build_s": t_b,
        "HB_GB": nbytes / 1e9,
        "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "BH_apply_s": t_bh,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64² and 128² only")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    sizes = [64, 128] if args.quick else [64, 128, 256]
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs, python {platform.python_version()}")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
