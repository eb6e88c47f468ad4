#!/usr/bin/env python3
"""DRUSvar maps of saved sample sets side by side, [−60, 0] dB (docs/realdata.md, round 2).

    python benchmarks/fig_round2.py "50 steps=runs/s50.npz" "25 steps=runs/s25.npz" --out round2.png

Each argument is ``label=path`` to an ``.npz`` holding ``samples [C, 128, 128]`` on the 128² unknown grid of
the PICMUS operator (``bench_variance_split.py --save``, or the per-row files of ``bench_realdata.py``).
"""
from __future__ import annotations

import argparse

import numpy as np

from drus.datasets.picmus import picmus_operator
from drus.physics.beamform import log_compress
from drus.sampling.estimators import drus_var


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("panels", nargs="+", help="label=path.npz")
    ap.add_argument("--out", default="round2.png")
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = picmus_operator(128, progress=False)[0].unknown_grid
    ext = [grid.x_axis[0] * 1e3, grid.x_axis[-1] * 1e3, grid.z_axis[-1] * 1e3, grid.z_axis[0] * 1e3]
    fig, axs = plt.subplots(1, len(a.panels), figsize=(3.2 * len(a.panels), 3.9), constrained_layout=True, squeeze=False)
    for ax, spec in zip(axs[0], a.panels):
        label, _, path = spec.partition("=")
        ax.imshow(log_compress(np.abs(drus_var(np.load(path)["samples"]))), cmap="gray", vmin=-60, vmax=0, extent=ext)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("x [mm]")
    axs[0][0].set_ylabel("z [mm]")
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
