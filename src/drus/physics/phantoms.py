"""Numerical phantoms: echogenicity maps, speckle reflectivity, additive noise, PICMUS phantom files.

Everything here follows the conventions of :mod:`drus.physics.geometry`: images are ``[n_z, n_x]`` float32
arrays (depth down, lateral right, C order) on an :class:`~drus.physics.geometry.ImageGrid`, and physical
quantities are in SI units (m).

Vocabulary (paper eq. (1), docs/method.md §2 and §5)
----------------------------------------------------
- *echogenicity* ``p`` ``[n_z, n_x]``: the local scattering strength, ``p ≥ 0``.
- *reflectivity* ``o = m ⊙ p``: a speckle realisation, ``m ~ N(0, 1)`` i.i.d. per pixel.
- *measurement* ``y = K o + γ·max|K o|·n``, ``n ~ N(0, I)``, noise std ``σ0 = γ·max|K o|``.

Contents
--------
- Paper phantoms (paper Sect. III, Fig. 1): :func:`occlusion_phantom` (9 anechoic disks in p = 1)
  and :func:`scatterer_phantom` (25 small bright disks in p = 0), with their ROIs
  :func:`occlusion_disks`, :func:`scatterer_disks`, :func:`scatterer_points`.
- :func:`speckle` and :func:`add_noise`: the stochastic parts of the observation model.
- :func:`random_echogenicity`: random piecewise-smooth echogenicity maps for training the prior.
- :class:`PicmusPhantom`: the official PICMUS phantom descriptions (occlusions, speckle ROIs, point
  targets, scatterer lists) read from their HDF5 files, and :func:`rasterize_scatterers` to put a
  scatterer list on an image grid.

The regions these phantoms are drawn with and scored on, :class:`~drus.physics.geometry.Disk` and
:class:`~drus.physics.geometry.Box`, are plane geometry and live in :mod:`drus.physics.geometry`;
:func:`render_disks` rasterises disks on a grid.

Reproducibility: every stochastic function takes ``seed`` (an int, or ``None`` for fresh entropy) or
``rng`` (a :class:`numpy.random.Generator`), keyword-only; the same seed gives the same array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from drus.physics.geometry import Box, Disk, ImageGrid

__all__ = [
    "occlusion_disks",
    "occlusion_phantom",
    "scatterer_disks",
    "scatterer_points",
    "scatterer_phantom",
    "render_disks",
    "speckle",
    "add_noise",
    "random_echogenicity",
    "rasterize_scatterers",
    "PicmusPhantom",
    "PicmusFieldError",
    "PICMUS_GROUP",
]

# --- paper phantom parameters (paper Sect. III; docs/method.md §5) --------------------------------
OCCLUSION_RADIUS = 3.5e-3  # m
OCCLUSION_CENTERS_X = (-11e-3, 0.0, 11e-3)  # m
OCCLUSION_CENTERS_Z = (17e-3, 28e-3, 39e-3)  # m
SCATTERER_RADIUS = 0.5e-3  # m
SCATTERER_XS = (-14e-3, -7e-3, 0.0, 7e-3, 14e-3)  # m
SCATTERER_ZS = (14e-3, 21e-3, 28e-3, 35e-3, 42e-3)  # m


# --- small helpers ---------------------------------------------------------------------------------
def _make_rng(seed, rng) -> np.random.Generator:
    """The generator to draw from: ``rng`` if given, else ``default_rng(seed)``."""
    if rng is not None and seed is not None:
        raise TypeError("pass either seed or rng, not both")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return rng
    if seed is not None and not isinstance(seed, (int, np.integer, np.random.SeedSequence, np.random.Generator)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return np.random.default_rng(seed)


def _check_grid(grid) -> ImageGrid:
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be a drus.physics.geometry.ImageGrid, got {type(grid).__name__}")
    return grid


def _finite_real_array(name: str, value) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf values; clean the input first")
    return a


def _float_dtype(a: np.ndarray) -> np.dtype:
    """float32 for float32/int inputs (the image convention), float64 kept as float64."""
    return np.dtype(np.float64) if a.dtype == np.float64 else np.dtype(np.float32)


def render_disks(grid: ImageGrid, disks: Iterable[Disk]) -> np.ndarray:
    """Union of disks as a boolean mask ``[n_z, n_x]``; a pixel is inside when its distance to a
    centre is ``≤ radius`` (pixel centres are sampled, no anti-aliasing)."""
    _check_grid(grid)
    disks = list(disks)
    if not disks:
        return np.zeros(grid.shape, dtype=bool)
    cx = np.array([d.x for d in disks])[:, None, None]
    cz = np.array([d.z for d in disks])[:, None, None]
    r2 = np.array([d.radius for d in disks])[:, None, None] ** 2
    d2 = (grid.x_axis[None, None, :] - cx) ** 2 + (grid.z_axis[None, :, None] - cz) ** 2
    return np.any(d2 <= r2, axis=0)


# --- paper phantoms (docs/method.md §5) ------------------------------------------------------------
def occlusion_disks(
    *,
    radius: float = OCCLUSION_RADIUS,
    centers_x: Sequence[float] = OCCLUSION_CENTERS_X,
    centers_z: Sequence[float] = OCCLUSION_CENTERS_Z,
) -> tuple[Disk, ...]:
    """The anechoic disks of the occlusion phantom (paper Sect. III, Fig. 1 left).

    Parameters
    ----------
    radius : float
        Disk radius in m (3.5 mm).
    centers_x, centers_z : sequence of float
        Lateral and depth centre positions in m; the disks sit on their Cartesian product
        (default 3 × 3: x ∈ {−11, 0, 11} mm, z ∈ {17, 28, 39} mm).

    Returns
    -------
    tuple of Disk
        ``len(centers_z) * len(centers_x)`` disks, depth-major (row by row, left to right).
    """
    return tuple(Disk(x, z, radius) for z in centers_z for x in centers_x)


def occlusion_phantom(
    grid: ImageGrid,
    *,
    radius: float = OCCLUSION_RADIUS,
    centers_x: Sequence[float] = OCCLUSION_CENTERS_X,
    centers_z: Sequence[float] = OCCLUSION_CENTERS_Z,
    background: float = 1.0,
) -> np.ndarray:
    """Echogenicity of the occlusion phantom: ``background`` everywhere, 0 inside the 9 disks.

    Parameters
    ----------
    grid : ImageGrid
        Image grid (the paper uses :func:`drus.physics.geometry.paper_grid`).
    radius, centers_x, centers_z : see :func:`occlusion_disks` (m).
    background : float
        Echogenicity outside the disks (1.0).

    Returns
    -------
    numpy.ndarray
        float32 ``[n_z, n_x]``.
    """
    _check_grid(grid)
    if not math.isfinite(background) or background < 0:
        raise ValueError(f"background must be a finite echogenicity ≥ 0, got {background!r}")
    inside = render_disks(grid, occlusion_disks(radius=radius, centers_x=centers_x, centers_z=centers_z))
    return np.where(inside, 0.0, background).astype(np.float32)


def scatterer_disks(
    *,
    radius: float = SCATTERER_RADIUS,
    xs: Sequence[float] = SCATTERER_XS,
    zs: Sequence[float] = SCATTERER_ZS,
) -> tuple[Disk, ...]:
    """The bright disks of the scatterer phantom (paper Sect. III, Fig. 1 right), depth-major.

    Parameters
    ----------
    radius : float
        Disk radius in m (0.5 mm).
    xs, zs : sequence of float
        Lateral and depth positions in m; targets on their Cartesian product
        (default 5 × 5: x ∈ {−14, −7, 0, 7, 14} mm, z ∈ {14, 21, 28, 35, 42} mm).
    """
    return tuple(Disk(x, z, radius) for z in zs for x in xs)


def scatterer_points(
    *, xs: Sequence[float] = SCATTERER_XS, zs: Sequence[float] = SCATTERER_ZS
) -> np.ndarray:
    """Target positions of the scatterer phantom, ``[n_points, 2]`` float64, columns ``(x, z)`` in m,
    depth-major (same order as :func:`scatterer_disks`)."""
    xx, zz = np.meshgrid(np.asarray(xs, dtype=np.float64), np.asarray(zs, dtype=np.float64))
    return np.stack([xx.ravel(), zz.ravel()], axis=1)


def scatterer_phantom(
    grid: ImageGrid,
    *,
    radius: float = SCATTERER_RADIUS,
    xs: Sequence[float] = SCATTERER_XS,
    zs: Sequence[float] = SCATTERER_ZS,
) -> np.ndarray:
    """Echogenicity of the scatterer phantom: 0 everywhere, 1 inside 25 small disks.

    Parameters
    ----------
    grid : ImageGrid
        Image grid.
    radius, xs, zs : see :func:`scatterer_disks` (m).

    Returns
    -------
    numpy.ndarray
        float32 ``[n_z, n_x]``. With the paper grid (0.14 mm pixels) each disk covers ≈ 37 pixels.
    """
    _check_grid(grid)
    inside = render_disks(grid, scatterer_disks(radius=radius, xs=xs, zs=zs))
    return inside.astype(np.float32)


# --- observation model: speckle and noise (paper eq. (1); docs/method.md §5) --------------------
def speckle(
    echogenicity,
    *,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    normalize_max: float | None = None,
) -> np.ndarray:
    """A speckle realisation of an echogenicity map: reflectivity ``o = m ⊙ p``, ``m ~ N(0, 1)``.

    Parameters
    ----------
    echogenicity : array_like
        ``p ≥ 0``, any shape (normally ``[n_z, n_x]``).
    seed, rng : int or None, numpy.random.Generator or None
        Source of randomness (keyword-only; give at most one).
    normalize_max : float or None
        If given, scale ``o`` so that ``max|o| = normalize_max`` (the ref. code uses 4).
        ``None`` (default) keeps ``E[o²] = p²``.

    Returns
    -------
    numpy.ndarray
        Reflectivity, same shape as ``echogenicity``, float32 (float64 for float64 input).
    """
    p = _finite_real_array("echogenicity", echogenicity)
    if p.size and p.min() < 0:
        raise ValueError(f"echogenicity must be ≥ 0 everywhere, got a minimum of {p.min()!r}")
    gen = _make_rng(seed, rng)
    dtype = _float_dtype(p)
    m = gen.standard_normal(p.shape, dtype=dtype)
    o = m * p.astype(dtype, copy=False)
    if normalize_max is not None:
        if not math.isfinite(normalize_max) or normalize_max <= 0:
            raise ValueError(f"normalize_max must be a positive number or None, got {normalize_max!r}")
        peak = np.abs(o).max() if o.size else 0.0
        if peak == 0:
            raise ValueError("cannot normalise: the echogenicity map is zero everywhere (max|o| = 0)")
        o *= dtype.type(normalize_max / peak)
    return o


def add_noise(
    signal,
    *,
    gamma: float,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, float]:
    """Additive white Gaussian noise relative to the signal peak (docs/method.md §5).

    ``noisy = signal + γ·max|signal|·n``, ``n ~ N(0, I)``.

    Parameters
    ----------
    signal : array_like
        Real array of any shape, e.g. ``K o`` ``[n_z, n_x]``.
    gamma : float
        Relative noise level ``γ ≥ 0`` (paper: 0.02 … 0.35 for the occlusion phantom).
    seed, rng : int or None, numpy.random.Generator or None
        Source of randomness (keyword-only; give at most one).

    Returns
    -------
    noisy : numpy.ndarray
        Same shape as ``signal``; float32 (float64 for float64 input).
    sigma0 : float
        The noise standard deviation ``γ·max|signal|``, in the units of ``signal``.
    """
    s = _finite_real_array("signal", signal)
    if not isinstance(gamma, (int, float, np.floating, np.integer)) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number ≥ 0, got {gamma!r}")
    gen = _make_rng(seed, rng)
    dtype = _float_dtype(s)
    sigma0 = float(gamma) * (float(np.abs(s).max()) if s.size else 0.0)
    n = gen.standard_normal(s.shape, dtype=dtype)
    return s.astype(dtype, copy=True) + dtype.type(sigma0) * n, sigma0


# --- random echogenicity maps for training ----------------------------------------------------------
def _normalised_axes(grid_or_shape) -> tuple[np.ndarray, np.ndarray, float]:
    """Depth and lateral coordinates scaled so the longer side spans [0, 1], plus one pixel's size."""
    if isinstance(grid_or_shape, ImageGrid):
        x, z = grid_or_shape.x_axis, grid_or_shape.z_axis
        scale = max(x[-1] - x[0], z[-1] - z[0])
        u, w = (x - x[0]) / scale, (z - z[0]) / scale
        pixel = min(grid_or_shape.dx, grid_or_shape.dz) / scale
        return w.astype(np.float32), u.astype(np.float32), float(pixel)
    try:
        n_z, n_x = (int(v) for v in grid_or_shape)
        ok = tuple(grid_or_shape) == (n_z, n_x) and n_z >= 1 and n_x >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(
            f"grid_or_shape must be an ImageGrid or a shape (n_z, n_x) of positive ints, got {grid_or_shape!r}"
        )
    scale = max(n_z, n_x, 2) - 1
    return (
        (np.arange(n_z, dtype=np.float32) / scale),
        (np.arange(n_x, dtype=np.float32) / scale),
        1.0 / scale,
    )


def _count_range(name: str, value) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (min, max) pair of ints, got {value!r}") from None
    if lo < 0 or hi < lo:
        raise ValueError(f"{name} must satisfy 0 ≤ min ≤ max, got {value!r}")
    return lo, hi


def _smooth_step(signed_distance: np.ndarray, edge) -> np.ndarray:
    """Logistic step: ≈1 where ``signed_distance ≫ edge``, ≈0 where ``≪ −edge``, 0.5 on the edge."""
    return 0.5 + 0.5 * np.tanh(signed_distance / (2.0 * edge))


def random_echogenicity(
    grid_or_shape,
    *,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    n_layers: tuple[int, int] = (0, 3),
    n_inclusions: tuple[int, int] = (0, 5),
    n_points: tuple[int, int] = (0, 6),
    max_value: float = 2.0,
) -> np.ndarray:
    """A random piecewise-smooth echogenicity map, for training the prior on ``speckle(p)``.

    The map is built from, in this order:

    1. a smooth background: a random tissue level in [0.6, 1.2] times ``exp`` of a random linear
       gradient plus a sum of 4 low-frequency plane cosines (0.5–3 cycles per image);
    2. ``n_layers`` horizontal-ish bands (tilt within ±20°, gently undulating, soft edges), each
       multiplying the background by a random gain in [0.4, 1.8];
    3. ``n_inclusions`` ellipses of random size (semi-axes 3–18 % of the image) and orientation,
       each anechoic (p ∈ [0, 0.03]), hypoechoic (0.15–0.6 × tissue) or hyperechoic
       (1.3–2 × tissue), with edges from sharp to blurred;
    4. ``n_points`` bright point targets: small soft disks (radius 0.4–1.2 % of the image, at least
       0.6 pixel) at p ∈ [1.4, 2].

    Counts are drawn uniformly from the inclusive ``(min, max)`` ranges. Feature sizes are relative
    to the longer image side, so one seed gives the same map at any resolution (up to sampling).
    Fully vectorised over pixels (≈ 0.5 ms at 64 × 64, ≈ 5 ms at 256 × 256 on one CPU core).

    Parameters
    ----------
    grid_or_shape : ImageGrid or (int, int)
        An image grid (features scale with its physical extent) or a shape ``(n_z, n_x)`` in
        pixels (square pixels assumed; for training crops).
    seed, rng : int or None, numpy.random.Generator or None
        Source of randomness (keyword-only; give at most one). Same seed → same map.
    n_layers, n_inclusions, n_points : (int, int)
        Inclusive ranges of the number of each feature.
    max_value : float
        Upper clip of the map (2.0); the lower clip is 0.

    Returns
    -------
    numpy.ndarray
        float32 ``[n_z, n_x]`` with values in ``[0, max_value]``.
    """
    w, u, pixel = _normalised_axes(grid_or_shape)
    gen = _make_rng(seed, rng)
    n_layers = _count_range("n_layers", n_layers)
    n_inclusions = _count_range("n_inclusions", n_inclusions)
    n_points = _count_range("n_points", n_points)
    if not math.isfinite(max_value) or max_value <= 0:
        raise ValueError(f"max_value must be a positive number, got {max_value!r}")
    f32 = np.float32
    W, U = w[:, None], u[None, :]  # [n_z, 1], [1, n_x]
    u_max, w_max = float(u[-1]), float(w[-1])

    # 1. background: level · exp(gradient + smooth random field)
    level = gen.uniform(0.6, 1.2)
    grad_x, grad_z = gen.uniform(-0.4, 0.4, size=2)
    n_waves = 4
    freq = 2 * np.pi * gen.uniform(0.5, 3.0, n_waves)
    angle = gen.uniform(0, 2 * np.pi, n_waves)
    phase = gen.uniform(0, 2 * np.pi, n_waves)
    amp = gen.uniform(0.0, 0.15, n_waves)
    arg_x = (freq * np.cos(angle))[:, None] * u[None, :] + phase[:, None]  # [K, n_x]
    arg_z = (freq * np.sin(angle))[:, None] * w[None, :]  # [K, n_z]
    # Σ_k a_k cos(α_k(x) + β_k(z)) written with the angle-sum identity as two small matrix products
    field = (amp[:, None] * np.cos(arg_z)).T @ np.cos(arg_x) - (amp[:, None] * np.sin(arg_z)).T @ np.sin(arg_x)
    log_p = field.astype(f32) + f32(grad_z) * (W - f32(w_max / 2)) + f32(grad_x) * (U - f32(u_max / 2))

    # 2. layers: bands around tilted, gently undulating lines; multiplicative gains
    n = int(gen.integers(n_layers[0], n_layers[1] + 1))
    tilt = gen.uniform(-np.deg2rad(20), np.deg2rad(20), n)
    offset = gen.uniform(0.0, w_max, n)
    half_thickness = gen.uniform(0.02, 0.15, n)
    edge = gen.uniform(0.003, 0.03, n)
    wiggle_amp = gen.uniform(0.0, 0.03, n)
    wiggle_freq = 2 * np.pi * gen.uniform(0.5, 2.0, n)
    wiggle_phase = gen.uniform(0, 2 * np.pi, n)
    log_gain = gen.uniform(np.log(0.4), np.log(1.8), n)
    if n:
        # depth of the (tilted, undulating) centre line, minus the offset: [L, n_x] and [L, n_z]
        line_x = (np.sin(tilt)[:, None] * (u[None, :] - u_max / 2)
                  + wiggle_amp[:, None] * np.sin(wiggle_freq[:, None] * u[None, :] + wiggle_phase[:, None]))
        line_z = np.cos(tilt)[:, None] * w[None, :] - offset[:, None]
        d = line_z.astype(f32)[:, :, None] + line_x.astype(f32)[:, None, :]  # [L, n_z, n_x]
        inside = _smooth_step(half_thickness[:, None, None].astype(f32) - np.abs(d), edge[:, None, None].astype(f32))
        log_p = log_p + np.tensordot(log_gain.astype(f32), inside, axes=1)
    p = f32(level) * np.exp(log_p)

    # 3. inclusions: ellipses composited in order (later ones cover earlier ones)
    n = int(gen.integers(n_inclusions[0], n_inclusions[1] + 1))
    cu = gen.uniform(0.0, u_max, n)
    cw = gen.uniform(0.0, w_max, n)
    semi_a = gen.uniform(0.03, 0.18, n)
    semi_b = gen.uniform(0.03, 0.18, n)
    orient = gen.uniform(0.0, np.pi, n)
    edge = np.maximum(gen.uniform(0.002, 0.02, n), 0.3 * pixel)
    kind = gen.choice(3, size=n, p=[0.35, 0.35, 0.30])  # 0 anechoic, 1 hypo, 2 hyper
    target = np.select(
        [kind == 0, kind == 1],
        [gen.uniform(0.0, 0.03, n), level * gen.uniform(0.15, 0.6, n)],
        level * gen.uniform(1.3, 2.0, n),
    )
    if n:
        du = (U[None] - cu[:, None, None]).astype(f32)  # [E, 1, n_x]
        dw = (W[None] - cw[:, None, None]).astype(f32)  # [E, n_z, 1]
        c, s = np.cos(orient)[:, None, None].astype(f32), np.sin(orient)[:, None, None].astype(f32)
        a, b = semi_a[:, None, None].astype(f32), semi_b[:, None, None].astype(f32)
        rho = np.sqrt(((du * c + dw * s) / a) ** 2 + ((dw * c - du * s) / b) ** 2)
        # (1 − ρ)·min(a, b) approximates the signed distance to the ellipse near its boundary
        weight = _smooth_step((1.0 - rho) * np.minimum(a, b), edge[:, None, None].astype(f32))
        for k in range(n):  # over features, not pixels
            p += weight[k] * (f32(target[k]) - p)

    # 4. bright point targets
    n = int(gen.integers(n_points[0], n_points[1] + 1))
    pu = gen.uniform(0.0, u_max, n)
    pw = gen.uniform(0.0, w_max, n)
    radius = np.maximum(gen.uniform(0.004, 0.012, n), 0.6 * pixel)
    bright = gen.uniform(1.4, 2.0, n)
    if n:
        dist = np.sqrt((U[None] - pu[:, None, None].astype(f32)) ** 2 + (W[None] - pw[:, None, None].astype(f32)) ** 2)
        weight = _smooth_step(radius[:, None, None].astype(f32) - dist, f32(0.25 * pixel))
        for k in range(n):
            p += weight[k] * (f32(bright[k]) - p)

    return np.clip(p, 0.0, max_value, out=p).astype(np.float32, copy=False)


# --- scatterer lists on a grid ----------------------------------------------------------------------
def _fractional_index(axis: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Fractional pixel index of ``pos`` on a strictly increasing ``axis`` (linear inside, extrapolated
    with the end spacings outside, so out-of-grid positions get indices < 0 or > n − 1)."""
    f = np.interp(pos, axis, np.arange(axis.size, dtype=np.float64))
    lo, hi = pos < axis[0], pos > axis[-1]
    f[lo] = (pos[lo] - axis[0]) / (axis[1] - axis[0])
    f[hi] = axis.size - 1 + (pos[hi] - axis[-1]) / (axis[-1] - axis[-2])
    return f


def _rasterize(x_axis, z_axis, px, pz, weights, method: str) -> np.ndarray:
    n_z, n_x = z_axis.size, x_axis.size
    fx, fz = _fractional_index(x_axis, px), _fractional_index(z_axis, pz)
    if method == "nearest":
        ix, iz = np.floor(fx + 0.5).astype(np.int64), np.floor(fz + 0.5).astype(np.int64)
        keep = (ix >= 0) & (ix < n_x) & (iz >= 0) & (iz < n_z)
        flat, w = iz[keep] * n_x + ix[keep], weights[keep]
    elif method == "bilinear":
        ix0, iz0 = np.floor(fx).astype(np.int64), np.floor(fz).astype(np.int64)
        tx, tz = fx - ix0, fz - iz0
        parts_i, parts_w = [], []
        for dz, wz in ((0, 1 - tz), (1, tz)):
            for dx, wx in ((0, 1 - tx), (1, tx)):
                iz, ix = iz0 + dz, ix0 + dx
                keep = (ix >= 0) & (ix < n_x) & (iz >= 0) & (iz < n_z)
                parts_i.append(iz[keep] * n_x + ix[keep])
                parts_w.append((weights * wz * wx)[keep])
        flat, w = np.concatenate(parts_i), np.concatenate(parts_w)
    else:
        raise ValueError(f"method must be 'nearest' or 'bilinear', got {method!r}")
    return np.bincount(flat, weights=w, minlength=n_z * n_x).reshape(n_z, n_x)


def rasterize_scatterers(
    positions_x,
    positions_z,
    amplitudes,
    grid: ImageGrid,
    *,
    method: str = "nearest",
) -> np.ndarray:
    """Accumulate point scatterers onto an image grid: a reflectivity map.

    Parameters
    ----------
    positions_x, positions_z : array_like
        Scatterer positions ``[n_scatterers]`` in m.
    amplitudes : array_like or float
        Scatterer amplitudes ``[n_scatterers]`` (or one value for all).
    grid : ImageGrid
        Target grid (any strictly increasing axes).
    method : {"nearest", "bilinear"}
        ``"nearest"`` (default) adds each amplitude to the pixel whose cell contains the scatterer
        (cells end halfway between pixel centres); ``"bilinear"`` splits it over the 4 surrounding
        pixels with bilinear weights. Both conserve the total amplitude of the scatterers that fall
        inside the grid; scatterers outside it (beyond half a pixel for nearest, beyond one pixel for
        bilinear) are dropped.

    Returns
    -------
    numpy.ndarray
        float32 ``[n_z, n_x]``, the sum of the amplitudes per pixel (not divided by pixel area).
    """
    _check_grid(grid)
    px = _finite_real_array("positions_x", positions_x).astype(np.float64).ravel()
    pz = _finite_real_array("positions_z", positions_z).astype(np.float64).ravel()
    amp = _finite_real_array("amplitudes", amplitudes).astype(np.float64)
    if px.shape != pz.shape:
        raise ValueError(f"positions_x and positions_z must have the same length, got {px.size} and {pz.size}")
    amp = np.broadcast_to(amp, px.shape) if amp.ndim == 0 else amp.ravel()
    if amp.shape != px.shape:
        raise ValueError(f"amplitudes must have one value per scatterer ({px.size}), got {amp.size}")
    out = _rasterize(grid.x_axis, grid.z_axis, px, pz, amp, method)
    return out.astype(np.float32)


# --- PICMUS phantom files ------------------------------------------------------------------------------
PICMUS_GROUP = "US/US_DATASET0000"
_PLACEHOLDER_POINT = (0.0, 20e-3)  # the single point PICMUS writes into contrast phantoms, m


class PicmusFieldError(KeyError, ValueError):
    """A required field is missing from (or malformed in) a PICMUS phantom file."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class PicmusPhantom:
    """The description of a PICMUS phantom (Liebgott et al., IUS 2016), all lengths in m.

    Read it with :meth:`from_file`. Placeholders in the files are turned into empty lists:
    occlusions of diameter ≤ 0, speckle ROIs whose half-size is 0, and, in files that describe
    occlusions (the contrast phantoms), the lone default point target at (x, z) = (0, 20 mm).

    Attributes
    ----------
    name : str
        The dataset name stored in the file (e.g. ``"Simulation: contrast"``).
    source : str
        The file it was read from.
    occlusion_x, occlusion_z, occlusion_diameter : numpy.ndarray
        Anechoic occlusions ``[n_occlusions]``.
    point_x, point_z : numpy.ndarray
        Point targets ``[n_points]``.
    speckle_x, speckle_z : numpy.ndarray
        Centres of the speckle-quality ROIs ``[n_rois]``.
    speckle_half_width_x, speckle_half_width_z : numpy.ndarray
        Their half sizes ``[n_rois]``: ``RoiPsfTimeX × lateralResolution`` and
        ``RoiPsfTimeZ × axialResolution``, as the PICMUS evaluation defines them.
    scatterer_positions : numpy.ndarray
        ``[3, n_scatterers]`` rows ``(x, y, z)``; ``[3, 0]`` if the file has no scatterer list.
    scatterer_amplitudes : numpy.ndarray
        ``[n_scatterers]``.
    """

    name: str
    source: str
    occlusion_x: np.ndarray
    occlusion_z: np.ndarray
    occlusion_diameter: np.ndarray
    point_x: np.ndarray
    point_z: np.ndarray
    speckle_x: np.ndarray
    speckle_z: np.ndarray
    speckle_half_width_x: np.ndarray
    speckle_half_width_z: np.ndarray
    scatterer_positions: np.ndarray
    scatterer_amplitudes: np.ndarray

    # file field names (PICMUS v0.0.39 layout, group US/US_DATASET0000)
    FIELD_OCCLUSION_X = "phantom_occlusionCenterX"
    FIELD_OCCLUSION_Z = "phantom_occlusionCenterZ"
    FIELD_OCCLUSION_D = "phantom_occlusionDiameter"
    FIELD_POINT_X = "phantom_xPts"
    FIELD_POINT_Z = "phantom_zPts"
    FIELD_ROI_X = "phantom_RoiCenterX"
    FIELD_ROI_Z = "phantom_RoiCenterZ"
    FIELD_ROI_TIMES_X = "phantom_RoiPsfTimeX"
    FIELD_ROI_TIMES_Z = "phantom_RoiPsfTimeZ"
    FIELD_LATERAL_RES = "phantom_lateralResolution"
    FIELD_AXIAL_RES = "phantom_axialResolution"
    FIELD_POSITIONS = "scatterers_positions"
    FIELD_AMPLITUDES = "scatterers_amplitude"

    @classmethod
    def from_file(cls, path) -> "PicmusPhantom":
        """Read ``picmus_phantom_*.hdf5`` (layout ``US/US_DATASET0000/<field>``).

        Required fields: occlusion centres and diameters, point targets. Optional (read when
        present): the speckle ROIs with the PSF sizes, the scatterer list.

        Raises
        ------
        FileNotFoundError
            The file does not exist.
        PicmusFieldError
            (a ``KeyError`` and a ``ValueError``) a required field is missing or has the wrong
            shape; the message names the file and the field.
        """
        import h5py

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"PICMUS phantom file not found: {path}")
        try:
            fh = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"{path} is not a readable HDF5 file ({exc})") from exc
        with fh:
            if PICMUS_GROUP not in fh:
                raise PicmusFieldError(f"{path}: missing group {PICMUS_GROUP!r} (not a PICMUS phantom file)")
            group = fh[PICMUS_GROUP]

            def has(field: str) -> bool:
                return field in group

            def vec(field: str) -> np.ndarray:
                if field not in group:
                    raise PicmusFieldError(f"{path}: missing field {PICMUS_GROUP}/{field}")
                a = np.asarray(group[field][()], dtype=np.float64).ravel()
                if not np.all(np.isfinite(a)):
                    raise PicmusFieldError(f"{path}: field {PICMUS_GROUP}/{field} contains NaN or inf")
                return a

            def same_length(*fields: str) -> list[np.ndarray]:
                arrays = [vec(f) for f in fields]
                if len({a.size for a in arrays}) != 1:
                    sizes = ", ".join(f"{f}: {a.size}" for f, a in zip(fields, arrays))
                    raise PicmusFieldError(f"{path}: fields must have the same length ({sizes})")
                return arrays

            name = group.attrs.get("name", b"")
            name = np.asarray(name).ravel()[0] if np.asarray(name).size else b""
            name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)

            ox, oz, od = same_length(cls.FIELD_OCCLUSION_X, cls.FIELD_OCCLUSION_Z, cls.FIELD_OCCLUSION_D)
            real = od > 0
            ox, oz, od = ox[real], oz[real], od[real]

            qx, qz = same_length(cls.FIELD_POINT_X, cls.FIELD_POINT_Z)
            if od.size and qx.size == 1 and np.allclose((qx[0], qz[0]), _PLACEHOLDER_POINT, rtol=0, atol=1e-9):
                qx, qz = qx[:0], qz[:0]

            roi_fields = (cls.FIELD_ROI_X, cls.FIELD_ROI_Z, cls.FIELD_ROI_TIMES_X, cls.FIELD_ROI_TIMES_Z)
            if any(has(f) for f in roi_fields):
                rx, rz, tx, tz = same_length(*roi_fields)
                real = (tx > 0) & (tz > 0)
                rx, rz, tx, tz = rx[real], rz[real], tx[real], tz[real]
                if rx.size:
                    hx, hz = tx * vec(cls.FIELD_LATERAL_RES)[0], tz * vec(cls.FIELD_AXIAL_RES)[0]
                else:
                    hx, hz = tx, tz
            else:
                rx = rz = hx = hz = np.zeros(0)

            if has(cls.FIELD_POSITIONS) or has(cls.FIELD_AMPLITUDES):
                pos = group[cls.FIELD_POSITIONS][()] if has(cls.FIELD_POSITIONS) else None
                if pos is None:
                    raise PicmusFieldError(f"{path}: missing field {PICMUS_GROUP}/{cls.FIELD_POSITIONS}")
                pos = np.asarray(pos, dtype=np.float64)
                if pos.ndim != 2 or pos.shape[0] != 3:
                    raise PicmusFieldError(
                        f"{path}: field {PICMUS_GROUP}/{cls.FIELD_POSITIONS} must be (3, N), got {pos.shape}"
                    )
                amp = vec(cls.FIELD_AMPLITUDES)
                if amp.size != pos.shape[1]:
                    raise PicmusFieldError(
                        f"{path}: field {PICMUS_GROUP}/{cls.FIELD_AMPLITUDES} has {amp.size} values for "
                        f"{pos.shape[1]} scatterer positions"
                    )
            else:
                pos, amp = np.zeros((3, 0)), np.zeros(0)

        return cls(
            name=name,
            source=str(path),
            occlusion_x=_readonly(ox), occlusion_z=_readonly(oz), occlusion_diameter=_readonly(od),
            point_x=_readonly(qx), point_z=_readonly(qz),
            speckle_x=_readonly(rx), speckle_z=_readonly(rz),
            speckle_half_width_x=_readonly(hx), speckle_half_width_z=_readonly(hz),
            scatterer_positions=_readonly(pos), scatterer_amplitudes=_readonly(amp),
        )

    def __repr__(self) -> str:
        return (
            f"PicmusPhantom(name={self.name!r}, occlusions={self.occlusion_x.size}, "
            f"points={self.point_x.size}, speckle_rois={self.speckle_x.size}, scatterers={self.n_scatterers})"
        )

    @property
    def n_scatterers(self) -> int:
        return int(self.scatterer_amplitudes.size)

    def cyst_disks(self) -> tuple[Disk, ...]:
        """The occlusions as :class:`Disk` (radius = diameter / 2), for contrast ROIs."""
        return tuple(
            Disk(x, z, d / 2) for x, z, d in zip(self.occlusion_x, self.occlusion_z, self.occlusion_diameter)
        )

    def points(self) -> np.ndarray:
        """Point targets ``[n_points, 2]``, columns ``(x, z)`` in m, for resolution metrics."""
        return np.stack([self.point_x, self.point_z], axis=1).astype(np.float64)

    def speckle_boxes(self) -> tuple[Box, ...]:
        """The speckle-quality ROIs as :class:`Box` (centre ± half width)."""
        return tuple(
            Box(x - hx, x + hx, z - hz, z + hz)
            for x, z, hx, hz in zip(self.speckle_x, self.speckle_z, self.speckle_half_width_x, self.speckle_half_width_z)
        )

    def _require_scatterers(self) -> None:
        if self.n_scatterers == 0:
            raise ValueError(f"{self.source}: this phantom has no scatterer list")

    def reflectivity(self, grid: ImageGrid, *, method: str = "nearest") -> np.ndarray:
        """The scatterer amplitudes rasterised on ``grid`` (:func:`rasterize_scatterers`), float32
        ``[n_z, n_x]``."""
        self._require_scatterers()
        pos = self.scatterer_positions
        return rasterize_scatterers(pos[0], pos[2], self.scatterer_amplitudes, grid, method=method)

    def echogenicity(
        self, grid: ImageGrid, *, smoothing: float = 0.5e-3, normalize: str | None = "median"
    ) -> np.ndarray:
        """An echogenicity map estimated from the scatterer list: the local RMS amplitude.

        Method: the squared amplitudes ``a_i²`` are accumulated on the nearest pixels of ``grid``
        extended by 4 ``smoothing`` std on every side (so scatterers just outside the field of view
        still count), smoothed with an isotropic Gaussian of std ``smoothing`` (m) — a local
        scattering-power density — cropped back to ``grid``, and square-rooted:
        ``p(r) ∝ sqrt(Σ_i a_i² G_s(r − r_i))``. Occlusions, which contain no scatterers, come out
        dark, with edges blurred over ≈ ``smoothing``. With ≈ 60 scatterers per mm² (PICMUS) and
        the default 0.5 mm, the estimate fluctuates by ≈ 6 % (std) in uniform tissue.

        Parameters
        ----------
        grid : ImageGrid
            A grid with uniform spacing along each axis (e.g. from ``ImageGrid.from_extent``).
        smoothing : float
            Gaussian std in m (0.5 mm).
        normalize : {"median", "max", None}
            ``"median"`` (default): divide by the median over the grid, so typical tissue is ≈ 1
            (assumes that less than half of the grid is anechoic); ``"max"``: peak 1; ``None``:
            the raw ``sqrt`` of the smoothed squared amplitude per pixel.

        Returns
        -------
        numpy.ndarray
            float32 ``[n_z, n_x]``, ≥ 0.
        """
        from scipy.ndimage import gaussian_filter

        _check_grid(grid)
        self._require_scatterers()
        if not math.isfinite(smoothing) or smoothing <= 0:
            raise ValueError(f"smoothing must be a positive std in m, got {smoothing!r}")
        if normalize not in ("median", "max", None):
            raise ValueError(f"normalize must be 'median', 'max' or None, got {normalize!r}")
        x, z = grid.x_axis, grid.z_axis
        for name, axis, step in (("x", x, grid.dx), ("z", z, grid.dz)):
            if not np.allclose(np.diff(axis), step, rtol=1e-6, atol=0):
                raise ValueError(
                    f"echogenicity needs a grid with uniform {name} spacing; build it with ImageGrid.from_extent"
                )
        sigma_px = (smoothing / grid.dz, smoothing / grid.dx)
        pad_z, pad_x = (int(math.ceil(4 * s)) for s in sigma_px)
        ext_x = x[0] + grid.dx * np.arange(-pad_x, grid.n_x + pad_x)
        ext_z = z[0] + grid.dz * np.arange(-pad_z, grid.n_z + pad_z)
        pos = self.scatterer_positions
        power = _rasterize(ext_x, ext_z, pos[0], pos[2], self.scatterer_amplitudes.astype(np.float64) ** 2, "nearest")
        power = gaussian_filter(power, sigma=sigma_px, mode="constant", truncate=4.0)
        p = np.sqrt(np.maximum(power[pad_z:pad_z + grid.n_z, pad_x:pad_x + grid.n_x], 0.0))
        if normalize is not None:
            ref = float(np.median(p)) if normalize == "median" else float(p.max())
            if ref <= 0:
                raise ValueError(
                    f"cannot normalise by the {normalize}: it is 0 on this grid (no scatterers in view?); "
                    "use normalize=None"
                )
            p = p / ref
        return p.astype(np.float32)
