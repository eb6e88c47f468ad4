"""Image-quality metrics: B-mode dB conversion, gCNR, CNR, SNR, FWHM, and ROI masks (docs/method.md §7).

Images are ``[n_z, n_x]`` arrays on an :class:`~drus.physics.geometry.ImageGrid` (depth down, lateral
right); positions and widths are in m. Every metric takes the *image* (signed reflectivity, envelope
or complex IQ): where an envelope is needed the functions take ``|image|``.

Conventions, as the DRUS reference evaluation computes them (paper Sect. III–IV):

- B-mode: ``20·log10(|X| / max|X|)`` clipped at a floor (−60 dB): :func:`to_db`.
- gCNR (Rodriguez-Molares et al., IEEE TUFFC 2020) ``= 1 − Σ_bins min(p_in, p_out)`` with 256
  bins over the joint range of both samples: :func:`gcnr`. Computed on dB values.
- Cyst ROIs (:func:`cyst_masks`): inside = disk of radius ``r − pad``; outside = ring from
  ``r + pad`` to ``sqrt((r − pad)² + (r + pad)²) ≈ √2·r``, the radius that makes the ring's area
  equal to the inside disk's (the PICMUS evaluation's choice). ``pad`` defaults to 0.5 mm.
- SNR ``= μ/σ`` of the envelope ``|X|`` in speckle ROIs (not of dB values): :func:`snr`.
- FWHM: ±1.8 mm box around each point target, profiles through the maximum, 10× cubic-spline
  interpolation, width of the main lobe at −6 dB: :func:`fwhm`.

Multi-ROI evaluations (:func:`contrast_metrics`, :func:`resolution_metrics`) return small
dataclasses whose :meth:`to_dict` gives JSON-ready floats with mean and std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from drus.physics.geometry import ImageGrid
from drus.physics.geometry import Box, Disk
from drus.physics.pulse import contiguous_run

__all__ = [
    "to_db",
    "gcnr",
    "cnr",
    "snr",
    "mean_std",
    "disk_mask",
    "ring_mask",
    "box_mask",
    "cyst_masks",
    "FWHM",
    "fwhm",
    "ContrastMetrics",
    "ResolutionMetrics",
    "contrast_metrics",
    "resolution_metrics",
    "DEFAULT_FLOOR_DB",
    "DEFAULT_CYST_PAD",
]

DEFAULT_FLOOR_DB = -60.0  # display floor of the paper's B-modes, dB
DEFAULT_CYST_PAD = 0.5e-3  # gap between a cyst's edge and its inside/outside ROIs, m
DEFAULT_GCNR_BINS = 256  # docs/method.md §7
DEFAULT_FWHM_HALF_BOX = 1.8e-3  # m, docs/method.md §7
DEFAULT_FWHM_UPSAMPLE = 10  # docs/method.md §7
DEFAULT_FWHM_LEVEL_DB = -6.0  # docs/method.md §7


# --- input checks ------------------------------------------------------------------------------------
def _check_grid(grid) -> ImageGrid:
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be a drus.physics.geometry.ImageGrid, got {type(grid).__name__}")
    return grid


def _array(name: str, value, *, allow_complex: bool = True) -> np.ndarray:
    """``value`` as a numpy array, checked for a numeric dtype and for NaN/inf."""
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    kinds = "biufc" if allow_complex else "biuf"
    if a.dtype.kind not in kinds:
        raise TypeError(f"{name} must be a {'numeric' if allow_complex else 'real'} array, got dtype {a.dtype}")
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf values; metrics need finite input")
    return a


def _image(name: str, value, grid: ImageGrid) -> np.ndarray:
    a = _array(name, value)
    if a.shape != grid.shape:
        raise ValueError(f"{name} must have the grid's shape (n_z, n_x) = {grid.shape}, got {a.shape}")
    return a


def _samples(name: str, value) -> np.ndarray:
    a = _array(name, value, allow_complex=False).astype(np.float64, copy=False).ravel()
    if a.size == 0:
        raise ValueError(f"{name} is empty: the ROI selects no pixels; enlarge it or check its position")
    return a


def _mask_or_fail(name: str, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        raise ValueError(f"{name} selects no pixels of the grid; check its position and size against the grid")
    return mask


# --- dB ---------------------------------------------------------------------------------------------------
def to_db(image, *, floor_db: float = DEFAULT_FLOOR_DB) -> np.ndarray:
    """B-mode in dB: ``20·log10(|X| / max|X|)``, clipped below at ``floor_db``.

    Parameters
    ----------
    image : array_like
        Any shape; real (signed reflectivity, envelope) or complex (IQ). ``|image|`` is used.
    floor_db : float
        Lower clip in dB, ``< 0`` (−60). Zeros map to the floor, never to ``-inf``.

    Returns
    -------
    numpy.ndarray
        Same shape, values in ``[floor_db, 0]``; float32 for float32/complex64 input, else float64.
    """
    a = _array("image", image)
    if not math.isfinite(floor_db) or floor_db >= 0:
        raise ValueError(f"floor_db must be a negative number of dB, got {floor_db!r}")
    env = np.abs(a)
    dtype = np.float32 if env.dtype == np.float32 else np.float64
    peak = float(env.max()) if env.size else 0.0
    if peak == 0:
        raise ValueError("image is zero everywhere (or empty): its dB scale 20·log10(|X|/max|X|) is undefined")
    floor_amp = 10.0 ** (floor_db / 20.0)
    rel = np.maximum(env.astype(np.float64) / peak, floor_amp)
    return (20.0 * np.log10(rel)).astype(dtype)


# --- contrast / speckle statistics -------------------------------------------------------------------------
def gcnr(inside, outside, *, bins: int = DEFAULT_GCNR_BINS) -> float:
    """Generalised contrast-to-noise ratio, ``1 − Σ_bins min(p_in, p_out)``.

    ``p_in`` and ``p_out`` are the normalised histograms (each summing to 1) of the two samples on
    ``bins`` equal bins over the joint range ``[min(in ∪ out), max(in ∪ out)]``. 0 for identical
    distributions, 1 for disjoint ones. Pass dB values (docs/method.md §7), e.g. ``to_db(image)[mask]``.

    Parameters
    ----------
    inside, outside : array_like
        Pixel values of the two regions (any shape, flattened), real and finite.
    bins : int
        Number of histogram bins (256).

    Returns
    -------
    float
        gCNR in [0, 1].

    References
    ----------
    A. Rodriguez-Molares et al., "The generalized contrast-to-noise ratio: a formal definition for
    lesion detectability", IEEE TUFFC 67(4), 2020.
    """
    a, b = _samples("inside", inside), _samples("outside", outside)
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi == lo:  # both samples are the same constant
        return 0.0
    edges = np.linspace(lo, hi, int(bins) + 1)
    p_in = np.histogram(a, bins=edges)[0] / a.size
    p_out = np.histogram(b, bins=edges)[0] / b.size
    return float(1.0 - np.minimum(p_in, p_out).sum())


def cnr(inside, outside) -> float:
    """Contrast-to-noise ratio ``|μ_in − μ_out| / sqrt(σ_in² + σ_out²)`` (population std).

    Returns ``inf`` when both regions are constant with different means, 0 when they are equal.
    """
    a, b = _samples("inside", inside), _samples("outside", outside)
    num = abs(a.mean() - b.mean())
    den = math.sqrt(a.var() + b.var())
    if den == 0:
        return math.inf if num > 0 else 0.0
    return float(num / den)


def snr(region) -> float:
    """Speckle signal-to-noise ratio ``μ / σ`` (population std) of the given values.

    Pass the envelope in a speckle ROI, e.g. ``np.abs(image)[mask]``, not dB values. For fully
    developed speckle (Rayleigh envelope) it is ``sqrt(π / (4 − π)) ≈ 1.91``. Returns ``inf`` for a
    constant non-zero region.
    """
    a = _samples("region", region)
    sd = a.std()
    if sd == 0:
        if a.mean() == 0:
            raise ValueError("region is zero everywhere: SNR = 0/0 is undefined")
        return math.inf
    return float(a.mean() / sd)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """``(mean, std)`` of a list of scores (population std; ``(nan, nan)`` for an empty list)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std())


# --- ROI masks ------------------------------------------------------------------------------------------------
def _dist2(grid: ImageGrid, x: float, z: float) -> np.ndarray:
    return (grid.x_axis[None, :] - float(x)) ** 2 + (grid.z_axis[:, None] - float(z)) ** 2


def _finite(name: str, value) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def disk_mask(grid: ImageGrid, x: float, z: float, radius: float) -> np.ndarray:
    """Boolean mask ``[n_z, n_x]`` of the pixels at distance ``≤ radius`` (m) from ``(x, z)`` (m)."""
    _check_grid(grid)
    x, z, radius = _finite("x", x), _finite("z", z), _finite("radius", radius)
    if radius <= 0:
        raise ValueError(f"radius must be > 0 m, got {radius!r}")
    return _dist2(grid, x, z) <= radius**2


def ring_mask(grid: ImageGrid, x: float, z: float, r_inner: float, r_outer: float) -> np.ndarray:
    """Boolean mask ``[n_z, n_x]`` of the pixels with ``r_inner ≤ distance ≤ r_outer`` (m) from
    ``(x, z)``."""
    _check_grid(grid)
    x, z = _finite("x", x), _finite("z", z)
    r_inner, r_outer = _finite("r_inner", r_inner), _finite("r_outer", r_outer)
    if not 0 <= r_inner < r_outer:
        raise ValueError(f"need 0 ≤ r_inner < r_outer (m), got r_inner={r_inner!r}, r_outer={r_outer!r}")
    d2 = _dist2(grid, x, z)
    return (d2 >= r_inner**2) & (d2 <= r_outer**2)


def box_mask(grid: ImageGrid, x_min: float, x_max: float, z_min: float, z_max: float) -> np.ndarray:
    """Boolean mask ``[n_z, n_x]`` of the pixels with ``x_min ≤ x ≤ x_max`` and ``z_min ≤ z ≤ z_max`` (m)."""
    _check_grid(grid)
    x_min, x_max = _finite("x_min", x_min), _finite("x_max", x_max)
    z_min, z_max = _finite("z_min", z_min), _finite("z_max", z_max)
    if not (x_min < x_max and z_min < z_max):
        raise ValueError(f"need x_min < x_max and z_min < z_max, got x [{x_min}, {x_max}], z [{z_min}, {z_max}]")
    x, z = grid.x_axis, grid.z_axis
    return ((z >= z_min) & (z <= z_max))[:, None] & ((x >= x_min) & (x <= x_max))[None, :]


def _as_disk(d) -> Disk:
    if isinstance(d, Disk):
        return d
    try:
        x, z, r = d
    except (TypeError, ValueError):
        raise TypeError(f"a cyst must be a drus.physics.geometry.Disk or an (x, z, radius) triple, got {d!r}") from None
    return Disk(x, z, r)


def cyst_masks(grid: ImageGrid, disk, *, pad: float = DEFAULT_CYST_PAD) -> tuple[np.ndarray, np.ndarray]:
    """Inside and outside ROIs of a cyst (boolean masks ``[n_z, n_x]``).

    Inside: disk of radius ``r − pad``. Outside: ring from ``r + pad`` to
    ``sqrt((r − pad)² + (r + pad)²)`` (≈ √2·r; equal area to the inside disk).

    Parameters
    ----------
    grid : ImageGrid
    disk : Disk or (x, z, radius)
        The cyst, in m.
    pad : float
        Gap in m on both sides of the cyst edge (0.5 mm); ``0 ≤ pad < radius``.
    """
    d = _as_disk(disk)
    pad = _finite("pad", pad)
    if not 0 <= pad < d.radius:
        raise ValueError(f"pad must be in [0, radius) = [0, {d.radius!r}) m, got {pad!r}")
    r_in, r_out1 = d.radius - pad, d.radius + pad
    inside = disk_mask(grid, d.x, d.z, r_in)
    outside = ring_mask(grid, d.x, d.z, r_out1, math.hypot(r_in, r_out1))
    return inside, outside


# --- resolution ------------------------------------------------------------------------------------------------
class FWHM(NamedTuple):
    """Full widths of a point target's main lobe, in m."""

    axial: float
    lateral: float


def _lobe_width(positions: np.ndarray, profile: np.ndarray, peak_index: int, upsample: int, level: float) -> float:
    """Width (in the units of ``positions``) of the contiguous run around ``peak_index`` where the
    cubic-spline interpolated ``profile`` is ≥ ``level`` × its maximum."""
    from scipy.interpolate import CubicSpline

    n = profile.size
    rel = profile / profile[peak_index]
    # coarse run on the samples, then a margin of 2 samples for the spline to resolve the crossings
    lo = peak_index
    while lo > 0 and rel[lo - 1] >= level:
        lo -= 1
    hi = peak_index
    while hi < n - 1 and rel[hi + 1] >= level:
        hi += 1
    a, b = max(lo - 2, 0), min(hi + 2, n - 1)
    if b - a < 1:  # single-pixel profile: nothing to interpolate
        return 0.0
    seg_pos = positions[a:b + 1]
    # 'upsample' points per pixel interval (uniform in index, so non-uniform axes are fine)
    fine_idx = np.linspace(0.0, b - a, (b - a) * upsample + 1)
    fine_pos = np.interp(fine_idx, np.arange(b - a + 1), seg_pos)
    if b - a >= 2:
        fine = CubicSpline(seg_pos, profile[a:b + 1], bc_type="not-a-knot")(fine_pos)
    else:
        fine = np.interp(fine_pos, seg_pos, profile[a:b + 1])
    k = int(np.argmax(fine))
    thr = level * fine[k]
    i, j = contiguous_run(fine >= thr, k)

    def crossing(inner: int, outer: int) -> float:
        # linear interpolation of the threshold crossing between fine samples inner (≥) and outer (<)
        f_in, f_out = fine[inner], fine[outer]
        t = (f_in - thr) / (f_in - f_out)
        return fine_pos[inner] + t * (fine_pos[outer] - fine_pos[inner])

    left = crossing(i, i - 1) if i > 0 else fine_pos[0]
    right = crossing(j, j + 1) if j < fine.size - 1 else fine_pos[-1]
    return float(right - left)


def fwhm(
    image,
    grid: ImageGrid,
    x: float,
    z: float,
    *,
    half_box: float = DEFAULT_FWHM_HALF_BOX,
    upsample: int = DEFAULT_FWHM_UPSAMPLE,
    level_db: float = DEFAULT_FWHM_LEVEL_DB,
) -> FWHM:
    """Axial and lateral −6 dB widths of the point target near ``(x, z)``.

    Steps: (1) find the maximum of ``|image|`` in the box ``|x' − x| ≤ half_box``,
    ``|z' − z| ≤ half_box`` (clipped to the grid); (2) take the column (axial) and the row
    (lateral) through that maximum; (3) interpolate each profile ``upsample``× with a cubic spline
    (of the amplitude ``|X|``, not of dB values); (4) the width is the distance between the two
    crossings of ``max + level_db`` dB that bound the main lobe (the contiguous run through the
    maximum, so side lobes above the level are not counted), each crossing located by linear
    interpolation between the fine samples. A lobe that runs into the edge of the grid is cut there.

    Parameters
    ----------
    image : array_like
        ``[n_z, n_x]`` envelope, signed reflectivity or complex IQ image (``|image|`` is used).
    grid : ImageGrid
        The image's grid.
    x, z : float
        Nominal target position in m.
    half_box : float
        Half size of the search box in m (1.8 mm).
    upsample : int
        Interpolation factor (10).
    level_db : float
        Level relative to the maximum, in dB of amplitude (−6; −20·log10(2) ≈ −6.02 gives the exact
        half maximum).

    Returns
    -------
    FWHM
        ``(axial, lateral)`` in m.
    """
    _check_grid(grid)
    env = np.abs(_image("image", image, grid)).astype(np.float64)
    x, z, half_box = _finite("x", x), _finite("z", z), _finite("half_box", half_box)
    if half_box <= 0:
        raise ValueError(f"half_box must be > 0 m, got {half_box!r}")
    if int(upsample) != upsample or upsample < 1:
        raise ValueError(f"upsample must be a positive integer, got {upsample!r}")
    if not math.isfinite(level_db) or level_db >= 0:
        raise ValueError(f"level_db must be a negative number of dB, got {level_db!r}")
    box = _mask_or_fail(
        f"the FWHM search box around (x, z) = ({x * 1e3:.2f}, {z * 1e3:.2f}) mm",
        box_mask(grid, x - half_box, x + half_box, z - half_box, z + half_box),
    )
    masked = np.where(box, env, -np.inf)
    iz, ix = np.unravel_index(int(np.argmax(masked)), env.shape)
    if env[iz, ix] <= 0:
        raise ValueError(f"image is zero in the FWHM search box around ({x * 1e3:.2f}, {z * 1e3:.2f}) mm")
    level = 10.0 ** (level_db / 20.0)
    axial = _lobe_width(grid.z_axis, env[:, ix], iz, int(upsample), level)
    lateral = _lobe_width(grid.x_axis, env[iz, :], ix, int(upsample), level)
    return FWHM(axial=axial, lateral=lateral)


# --- multi-ROI evaluations ----------------------------------------------------------------------------------------
@dataclass
class ContrastMetrics:
    """Per-cyst contrast and per-ROI speckle scores.

    Attributes
    ----------
    gcnr, cnr : list of float
        One value per cyst (computed on dB values when ``db=True``).
    snr : list of float
        One value per speckle ROI (envelope ``|X|``).
    """

    gcnr: list[float] = field(default_factory=list)
    cnr: list[float] = field(default_factory=list)
    snr: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"gcnr": {"values": [...], "mean": m, "std": s}, "cnr": ..., "snr": ...}``."""
        out = {}
        for name in ("gcnr", "cnr", "snr"):
            values = [float(v) for v in getattr(self, name)]
            m, s = mean_std(values)
            out[name] = {"values": values, "mean": m, "std": s}
        return out


@dataclass
class ResolutionMetrics:
    """Per-target FWHM, in m. ``x``, ``z`` are the nominal target positions."""

    x: list[float] = field(default_factory=list)
    z: list[float] = field(default_factory=list)
    axial: list[float] = field(default_factory=list)
    lateral: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready, in m: ``{"x": [...], "z": [...], "axial": {"values", "mean", "std"}, "lateral": ...}``."""
        out: dict = {"x": [float(v) for v in self.x], "z": [float(v) for v in self.z]}
        for name in ("axial", "lateral"):
            values = [float(v) for v in getattr(self, name)]
            m, s = mean_std(values)
            out[name] = {"values": values, "mean": m, "std": s}
        return out


def _speckle_mask(grid: ImageGrid, roi, k: int) -> np.ndarray:
    if isinstance(roi, Box):
        return box_mask(grid, roi.x_min, roi.x_max, roi.z_min, roi.z_max)
    if isinstance(roi, Disk):
        return disk_mask(grid, roi.x, roi.z, roi.radius)
    m = np.asarray(roi)
    if m.dtype != bool or m.shape != grid.shape:
        raise TypeError(
            f"speckle_rois[{k}] must be a Box, a Disk or a boolean mask of shape {grid.shape}, got {type(roi).__name__}"
        )
    return m


def contrast_metrics(
    image,
    grid: ImageGrid,
    disks: Sequence,
    *,
    pad: float = DEFAULT_CYST_PAD,
    db: bool = True,
    floor_db: float = DEFAULT_FLOOR_DB,
    bins: int = DEFAULT_GCNR_BINS,
    speckle_rois: Sequence | None = None,
) -> ContrastMetrics:
    """gCNR and CNR of each cyst, SNR of each speckle ROI (docs/method.md §7).

    Parameters
    ----------
    image : array_like
        ``[n_z, n_x]`` image (signed, envelope or complex; ``|image|`` is used).
    grid : ImageGrid
        The image's grid.
    disks : sequence of Disk or (x, z, radius)
        The cysts in m, e.g. :func:`drus.physics.phantoms.occlusion_disks` or
        :meth:`drus.physics.phantoms.PicmusPhantom.cyst_disks`. Inside/outside ROIs from :func:`cyst_masks`.
    pad : float
        ROI gap around each cyst edge in m (0.5 mm).
    db : bool
        ``True`` (default): gCNR and CNR on ``to_db(image, floor_db=floor_db)`` (normalised by the
        maximum over the whole image); ``False``: on the envelope ``|image|``.
    floor_db : float
        dB floor (−60).
    bins : int
        gCNR histogram bins (256).
    speckle_rois : sequence of Box, Disk or boolean masks, optional
        Where to measure SNR on the envelope. ``None`` (default): the outside ring of each cyst.

    Returns
    -------
    ContrastMetrics
    """
    _check_grid(grid)
    img = _image("image", image, grid)
    disks = [_as_disk(d) for d in disks]
    env = np.abs(img).astype(np.float64)
    values = to_db(env, floor_db=floor_db).astype(np.float64) if db else env
    out = ContrastMetrics()
    rings = []
    for k, d in enumerate(disks):
        inside, outside = cyst_masks(grid, d, pad=pad)
        what = f"cyst {k} at ({d.x * 1e3:.2f}, {d.z * 1e3:.2f}) mm"
        _mask_or_fail(f"the inside ROI of {what}", inside)
        _mask_or_fail(f"the outside ROI of {what}", outside)
        out.gcnr.append(gcnr(values[inside], values[outside], bins=bins))
        out.cnr.append(cnr(values[inside], values[outside]))
        rings.append(outside)
    masks = rings if speckle_rois is None else [_speckle_mask(grid, r, k) for k, r in enumerate(speckle_rois)]
    for k, m in enumerate(masks):
        out.snr.append(snr(env[_mask_or_fail(f"speckle ROI {k}", m)]))
    return out


def resolution_metrics(
    image,
    grid: ImageGrid,
    points,
    *,
    half_box: float = DEFAULT_FWHM_HALF_BOX,
    upsample: int = DEFAULT_FWHM_UPSAMPLE,
    level_db: float = DEFAULT_FWHM_LEVEL_DB,
) -> ResolutionMetrics:
    """Axial and lateral FWHM (m) of each point target (:func:`fwhm`).

    Parameters
    ----------
    image : array_like
        ``[n_z, n_x]`` image.
    grid : ImageGrid
        The image's grid.
    points : array_like
        ``[n_points, 2]`` target positions ``(x, z)`` in m, e.g.
        :func:`drus.physics.phantoms.scatterer_points` or :meth:`drus.physics.phantoms.PicmusPhantom.points`.
    half_box, upsample, level_db
        See :func:`fwhm`.
    """
    _check_grid(grid)
    img = _image("image", image, grid)
    pts = _array("points", points, allow_complex=False).astype(np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (n_points, 2) with columns (x, z) in m, got {pts.shape}")
    out = ResolutionMetrics()
    for x, z in pts:
        w = fwhm(img, grid, x, z, half_box=half_box, upsample=upsample, level_db=level_db)
        out.x.append(float(x))
        out.z.append(float(z))
        out.axial.append(w.axial)
        out.lateral.append(w.lateral)
    return out


def find_point_targets(
    image, grid: ImageGrid, n_points: int, *, min_separation: float = 3e-3, min_db: float = -30.0
) -> np.ndarray:
    """Positions ``[k, 2]`` (x, z in m) of the ``k ≤ n_points`` brightest isolated peaks of ``|image|``.

    Greedy: take the global maximum, blank a disk of radius ``min_separation`` around it, repeat;
    peaks below ``min_db`` relative to the image maximum are not returned. Use it to locate wires
    or point targets whose exact positions are unknown (e.g. a Gammex wire phantom).
    """
    _check_grid(grid)
    env = np.abs(_image("image", image, grid)).astype(np.float64)
    if int(n_points) != n_points or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, got {n_points!r}")
    X, Z = grid.meshgrid()
    peak = env.max()
    work = env.copy()
    found = []
    for _ in range(int(n_points)):
        iz, ix = np.unravel_index(int(np.argmax(work)), work.shape)
        if work[iz, ix] <= 0 or 20 * np.log10(work[iz, ix] / peak) < min_db:
            break
        found.append((X[iz, ix], Z[iz, ix]))
        work[(X - X[iz, ix]) ** 2 + (Z - Z[iz, ix]) ** 2 <= min_separation**2] = 0
    return np.array(found, dtype=np.float64).reshape(-1, 2)
