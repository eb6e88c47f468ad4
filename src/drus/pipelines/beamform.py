"""``drus beamform`` as one library call: delay-and-sum B-mode of a channel-data file, and its point targets.

:func:`beamform_file` reads the file (:func:`drus.datasets.io.read_channel_data`), picks the
transmits, beamforms them with DAS on a grid given in mm (:func:`drus.physics.beamform.das`,
compounding several), writes the log-compressed B-mode as a PNG and, when asked, measures the −6 dB
FWHM of the brightest isolated point targets (:func:`drus.evaluation.metrics.resolution_metrics`).
The defaults are the PICMUS field of view and the L11-4v probe's nominal f0, declared here once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from drus.errors import OptionError

__all__ = ["X_RANGE_MM", "Z_RANGE_MM", "PIXEL_MM", "F_NUMBER", "CENTER_FREQUENCY", "DYNAMIC_RANGE_DB",
           "MAX_PIXELS_PER_SIDE", "BeamformResult", "beamform_file", "default_output"]

#: The PICMUS field of view (mm) and pixel (mm): the paper's grid at 0.1 mm.
X_RANGE_MM, Z_RANGE_MM, PIXEL_MM = (-18.0, 18.0), (10.0, 46.0), 0.1
#: Receive f-number of the DAS apodization.
F_NUMBER = 1.4
#: The L11-4v probe's nominal centre frequency (Hz), for the probe description (not stored in channel data).
CENTER_FREQUENCY = 5.208e6
#: Displayed range of the B-mode (dB).
DYNAMIC_RANGE_DB = 60.0
#: Largest number of pixels along one side of the grid (a guard against a typo in --pixel).
MAX_PIXELS_PER_SIDE = 20000
#: Fractional bandwidth of the probe description built from the file.
_BANDWIDTH = 0.67


@dataclasses.dataclass(eq=False)
class BeamformResult:
    """What :func:`beamform_file` produced: the envelope ``[n_z, n_x]`` on ``grid``, the transmits used,
    the PNG written, and (with ``n_points``) the point targets' FWHM
    (:class:`drus.evaluation.metrics.ResolutionMetrics`, m) or ``None``."""

    envelope: np.ndarray
    grid: object
    transmits: list
    files: list
    resolution: object = None


def default_output(path) -> Path:
    """Where ``drus beamform`` writes by default: ``out/beamform/<input name>.das.png`` (never beside the input)."""
    return Path("out") / "beamform" / f"{Path(path).stem}.das.png"


def _check_ranges(x_range, z_range, pixel) -> None:
    for name, (lo, hi) in (("--x-range", x_range), ("--z-range", z_range)):
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise OptionError(name, f"expected MIN MAX in mm with MIN < MAX, got {lo:g} {hi:g}")
        if (hi - lo) / pixel > MAX_PIXELS_PER_SIDE:
            raise OptionError("--pixel", f"{(hi - lo) / pixel:.0f} pixels along {name[2]} at --pixel {pixel:g} mm; "
                                         "use a larger --pixel or a smaller range")


def beamform_file(
    path,
    *,
    out_png=None,
    angles: str | Sequence[int] = "0",
    x_range: tuple[float, float] = X_RANGE_MM,
    z_range: tuple[float, float] = Z_RANGE_MM,
    pixel: float = PIXEL_MM,
    f_number: float = F_NUMBER,
    center_frequency: float = CENTER_FREQUENCY,
    dynamic_range: float = DYNAMIC_RANGE_DB,
    n_points: int = 0,
    overwrite: bool = False,
) -> BeamformResult:
    """DAS B-mode of a channel-data file (PICMUS/USTB HDF5, Gammex ``.mat``, Field II HDF5) as a PNG.

    Parameters
    ----------
    path : str or os.PathLike
        The channel-data file.
    out_png : str or os.PathLike, optional
        The PNG (default :func:`default_output`); refused if it exists, unless ``overwrite``.
    angles : "0", "all" or sequence of int
        The transmit nearest 0°, every transmit (compounded), or these transmit indices.
    x_range, z_range : (float, float)
        Lateral and depth extent in mm (MIN < MAX).
    pixel : float
        Pixel size in mm (> 0).
    f_number, center_frequency, dynamic_range
        Receive f-number, the probe's f0 in Hz, the B-mode range in dB (> 0).
    n_points : int
        Measure the −6 dB FWHM of the ``n_points`` brightest isolated point targets (0: none).
    overwrite : bool
        Replace an existing ``out_png``.
    """
    from drus.datasets.io import read_channel_data
    from drus.outputs import check_writable_dir, refuse_overwrite
    from drus.physics.beamform import das, envelope, log_compress
    from drus.physics.geometry import ImageGrid
    from drus.plotting import save_bmode_figure

    for name, v in (("--pixel", pixel), ("--f-number", f_number), ("--center-frequency", center_frequency),
                    ("--dynamic-range", dynamic_range)):
        if not (np.isfinite(v) and v > 0):
            raise OptionError(name, f"must be a finite number > 0, got {v!r}")
    _check_ranges(x_range, z_range, pixel)
    cd = read_channel_data(path)
    if isinstance(angles, str) and angles == "all":
        idx = list(range(cd.n_tx))
    elif isinstance(angles, str) and angles == "0":
        idx = [cd.index_of_angle(0.0)]
    elif isinstance(angles, str):
        raise OptionError("--angles", f"expected '0', 'all' or comma-separated indices, got {angles!r}")
    else:
        idx = [int(i) for i in angles]
        for i in idx:
            if not 0 <= i < cd.n_tx:
                raise OptionError("--angles", f"index {i} out of range: the file has {cd.n_tx} transmits")
    out_png = Path(out_png) if out_png else default_output(path)
    check_writable_dir(out_png.parent, option="--out")
    refuse_overwrite([out_png], overwrite=overwrite)
    n_x = int(round((x_range[1] - x_range[0]) / pixel)) + 1
    n_z = int(round((z_range[1] - z_range[0]) / pixel)) + 1
    grid = ImageGrid.from_extent(x_min=x_range[0] * 1e-3, x_max=x_range[1] * 1e-3, z_min=z_range[0] * 1e-3,
                                 z_max=z_range[1] * 1e-3, n_x=n_x, n_z=n_z)
    probe = cd.probe(center_frequency=center_frequency, bandwidth=_BANDWIDTH)
    img = das(cd.data[idx], probe=probe, waves=[cd.plane_wave(i) for i in idx], grid=grid, f_number=f_number,
              modulation_frequency=cd.modulation_frequency)
    env = envelope(img)
    db = log_compress(env, dynamic_range=dynamic_range)
    title = f"DAS, {len(idx)} plane wave{'s' if len(idx) > 1 else ''}"
    save_bmode_figure({title: db}, grid, out_png, dynamic_range=dynamic_range, title=Path(path).name)
    resolution = None
    if n_points:
        from drus.evaluation.metrics import find_point_targets, resolution_metrics

        resolution = resolution_metrics(env, grid, find_point_targets(env, grid, n_points))
    return BeamformResult(envelope=env, grid=grid, transmits=idx, files=[out_png], resolution=resolution)
