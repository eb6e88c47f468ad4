"""Figures: B-mode panels side by side, in dB, on the grid's physical axes (mm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drus.physics.geometry import ImageGrid
from drus.outputs import atomic_write

__all__ = ["save_bmode_figure"]


def save_bmode_figure(
    images: dict[str, np.ndarray],
    grid: ImageGrid,
    path,
    *,
    dynamic_range: float = 60.0,
    title: str | None = None,
    overlays: list | None = None,
    columns: int | None = None,
) -> Path:
    """Save B-mode images (already in dB, ``[n_z, n_x]``) as one PNG with a shared colour bar, atomically.

    Parameters
    ----------
    images : dict
        Panel title → image in dB (``[−dynamic_range, 0]``).
    grid : ImageGrid
        Axes of the images (labels in mm).
    overlays : list of Disk-like, optional
        Circles (objects with ``x``, ``z``, ``radius`` in m) drawn on every panel (ROIs).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(images)
    cols = columns or min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.4 * rows + 0.4), squeeze=False, constrained_layout=True)
    im = None
    for ax, (name, db) in zip(axes.flat, images.items()):
        im = ax.imshow(db, cmap="gray", vmin=-dynamic_range, vmax=0, extent=grid.extent_mm, aspect="equal")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x [mm]", fontsize=8)
        ax.set_ylabel("z [mm]", fontsize=8)
        ax.tick_params(labelsize=7)
        for d in overlays or []:
            ax.add_patch(plt.Circle((d.x * 1e3, d.z * 1e3), d.radius * 1e3, fill=False, color="tab:red", lw=0.6))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="dB")
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    try:  # written under a temporary name and moved into place: never half a PNG
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower() or "png"))
    finally:
        plt.close(fig)
    return path
