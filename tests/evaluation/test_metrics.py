"""Tests for drus.evaluation.metrics against closed forms: gCNR of Gaussians, FWHM of Gaussian PSFs, Rayleigh SNR."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from drus.physics.geometry import ImageGrid, paper_grid
from drus.evaluation.metrics import (
    FWHM,
    box_mask,
    cnr,
    contrast_metrics,
    cyst_masks,
    disk_mask,
    fwhm,
    gcnr,
    mean_std,
    resolution_metrics,
    ring_mask,
    snr,
    to_db,
)
from drus.physics.geometry import Box, Disk
from drus.physics.phantoms import occlusion_disks, occlusion_phantom, scatterer_points, speckle

RAYLEIGH_SNR = math.sqrt(math.pi / (4 - math.pi))  # ≈ 1.913, envelope of circular complex Gaussian speckle
HALF_NORMAL_SNR = math.sqrt(2 / math.pi) / math.sqrt(1 - 2 / math.pi)  # ≈ 1.324, |N(0, σ²)|


@pytest.fixture(scope="module")
def small_grid() -> ImageGrid:
    # 0.1 mm pixels, 10 mm × 10 mm
    return ImageGrid.from_extent(x_min=-5e-3, x_max=5e-3, z_min=10e-3, z_max=20e-3, n_x=101, n_z=101)


def _gaussian_psf(grid: ImageGrid, x0, z0, sx, sz) -> np.ndarray:
    X, Z = grid.meshgrid()
    return np.exp(-((X - x0) ** 2) / (2 * sx**2) - (Z - z0) ** 2 / (2 * sz**2))


def _gaussian_width(sigma: float, level_db: float) -> float:
    """Full width of exp(−t²/2σ²) at ``level_db`` dB of its peak amplitude."""
    return 2 * sigma * math.sqrt(-2 * math.log(10 ** (level_db / 20)))


# --- dB -------------------------------------------------------------------------------------------------
def test_to_db_values_floor_and_errors():
    x = np.array([[1.0, -0.1], [0.0, 1e-6]], dtype=np.float32)
    d = to_db(x)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, [[0.0, -20.0], [-60.0, -60.0]], atol=1e-4)
    np.testing.assert_allclose(to_db(x, floor_db=-130.0)[1, 1], -120.0, atol=1e-3)
    assert np.all(np.isfinite(to_db(np.array([0.0, 0.0, 2.0]))))
    z = np.array([3 + 4j, 0.5j])
    np.testing.assert_allclose(to_db(z), [0.0, 20 * np.log10(0.1)])
    with pytest.raises(ValueError, match="zero everywhere"):
        to_db(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="image.*NaN"):
        to_db(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="floor_db"):
        to_db(x, floor_db=3.0)


# --- gCNR / CNR / SNR -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [0.5, 1.0, 2.0, 3.0])
def test_gcnr_of_two_gaussians_matches_closed_form(d):
    # gCNR = 1 − OVL(N(0,1), N(d,1)) = 2Φ(d/2) − 1. With 200 k samples each and 256 bins the
    # histogram noise and binning error stay below 0.005 here; tolerance 0.01.
    rng = np.random.default_rng(int(d * 10))
    inside = rng.standard_normal(200_000)
    outside = rng.standard_normal(200_000) + d
    assert gcnr(inside, outside) == pytest.approx(2 * norm.cdf(d / 2) - 1, abs=0.01)
    assert gcnr(outside, inside) == pytest.approx(gcnr(inside, outside), abs=1e-12)


def test_gcnr_limits():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(200_000)
    b = rng.standard_normal(200_000)
    assert gcnr(a, b) < 0.03  # same distribution: only histogram noise
    assert gcnr(a, a) == pytest.approx(0.0, abs=1e-12)
    assert gcnr(rng.uniform(0, 1, 1000), rng.uniform(2, 3, 500)) == 1.0
    assert gcnr(np.full(10, 3.0), np.full(20, 3.0)) == 0.0
    assert gcnr([0.0], [1.0]) == 1.0


def test_cnr_and_snr_closed_forms():
    inside = np.array([0.0, 2.0])  # μ 1, σ 1
    outside = np.array([3.0, 5.0])  # μ 4, σ 1
    assert cnr(inside, outside) == pytest.approx(3 / math.sqrt(2))
    assert cnr([1.0, 1.0], [2.0]) == math.inf
    assert cnr([1.0], [1.0]) == 0.0
    assert snr(np.array([1.0, 3.0])) == pytest.approx(2.0)
    assert snr(np.full(5, 2.0)) == math.inf
    with pytest.raises(ValueError, match="region"):
        snr(np.zeros(5))


def test_snr_of_rayleigh_speckle():
    # |circular complex Gaussian| is Rayleigh: SNR = sqrt(π/(4−π)) ≈ 1.913; 262 k samples give a
    # standard error ≈ 0.003, tolerance 0.02
    rng = np.random.default_rng(5)
    z = rng.standard_normal((512, 512)) + 1j * rng.standard_normal((512, 512))
    assert snr(np.abs(z)) == pytest.approx(RAYLEIGH_SNR, abs=0.02)
    assert RAYLEIGH_SNR == pytest.approx(1.91, abs=0.005)


def test_statistics_input_errors():
    with pytest.raises(ValueError, match="inside is empty"):
        gcnr([], [1.0, 2.0])
    with pytest.raises(ValueError, match="outside.*NaN"):
        gcnr([1.0], [np.nan, 2.0])
    with pytest.raises(ValueError, match="outside is empty"):
        cnr([1.0], np.array([]))
    with pytest.raises(TypeError, match="inside"):
        gcnr(np.array([1 + 1j]), [1.0])
    with pytest.raises(ValueError, match="bins"):
        gcnr([1.0], [2.0], bins=0)
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert all(math.isnan(v) for v in mean_std([]))


# --- ROI masks -------------------------------------------------------------------------------------------------------------
def test_masks(small_grid):
    g = small_grid
    pixel_area = g.dx * g.dz
    d = disk_mask(g, 0.0, 15e-3, 2e-3)
    assert d.shape == g.shape and d.dtype == bool
    assert d.sum() * pixel_area == pytest.approx(np.pi * 2e-3**2, rel=0.02)
    r = ring_mask(g, 0.0, 15e-3, 2e-3, 3e-3)
    assert r.sum() * pixel_area == pytest.approx(np.pi * (3e-3**2 - 2e-3**2), rel=0.03)
    assert not (r & disk_mask(g, 0.0, 15e-3, 1.95e-3)).any()
    b = box_mask(g, -1.05e-3, 1.05e-3, 11.95e-3, 13.05e-3)  # bounds between pixels (0.1 mm lattice)
    assert b.sum() == 21 * 11
    assert b[np.ix_(np.abs(g.z_axis - 12.5e-3) < 0.55e-3, np.abs(g.x_axis) < 1.05e-3)].all()
    inside, outside = cyst_masks(g, Disk(0.0, 15e-3, 3e-3), pad=0.5e-3)
    assert not (inside & outside).any()
    assert outside.sum() == pytest.approx(inside.sum(), rel=0.05)  # equal-area ring
    X, Z = g.meshgrid()
    dist = np.hypot(X, Z - 15e-3)
    assert dist[inside].max() <= 2.5e-3 and dist[outside].min() >= 3.5e-3
    assert dist[outside].max() <= math.hypot(2.5e-3, 3.5e-3) + 1e-12
    with pytest.raises(ValueError, match="pad"):
        cyst_masks(g, (0.0, 15e-3, 1e-3), pad=1e-3)
    with pytest.raises(ValueError, match="r_inner"):
        ring_mask(g, 0.0, 15e-3, 3e-3, 2e-3)
    with pytest.raises(ValueError, match="radius"):
        disk_mask(g, 0.0, 15e-3, -1.0)
    with pytest.raises(TypeError, match="grid"):
        disk_mask(g.shape, 0.0, 15e-3, 1e-3)


# --- FWHM ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sx, sz, x0, z0",
    [
        (0.30e-3, 0.20e-3, 0.0, 15e-3),  # on a pixel
        (0.25e-3, 0.40e-3, 0.037e-3, 15.043e-3),  # between pixels
        (0.15e-3, 0.15e-3, -0.02e-3, 14.99e-3),  # narrow: 1.5 px std
    ],
)
@pytest.mark.parametrize("level_db", [-6.0, -20 * math.log10(2)])
def test_fwhm_of_gaussian_psf(small_grid, sx, sz, x0, z0, level_db):
    # −20·log10(2) dB is the exact half amplitude: width 2σ·sqrt(2 ln 2); −6 dB is 0.2 % narrower.
    # Tolerance: 0.05 pixel.
    img = _gaussian_psf(small_grid, x0, z0, sx, sz).astype(np.float32)
    w = fwhm(img, small_grid, x0 + 0.3e-3, z0 - 0.2e-3, level_db=level_db)
    assert isinstance(w, FWHM)
    assert w.axial == pytest.approx(_gaussian_width(sz, level_db), abs=0.05 * small_grid.dz)
    assert w.lateral == pytest.approx(_gaussian_width(sx, level_db), abs=0.05 * small_grid.dx)
    if level_db != -6.0:
        assert w.lateral == pytest.approx(2 * sx * math.sqrt(2 * math.log(2)), abs=0.05 * small_grid.dx)


def test_fwhm_ignores_side_lobes_and_signs(small_grid):
    x0, z0, s = 0.0, 15e-3, 0.2e-3
    img = _gaussian_psf(small_grid, x0, z0, s, s)
    # a side lobe at 0.8 of the peak, 1.5 mm away laterally, separated by a dip
    img += 0.8 * _gaussian_psf(small_grid, x0 + 1.5e-3, z0, s, s)
    w = fwhm(-img, small_grid, x0, z0)  # signed images: |X| is used
    assert w.lateral == pytest.approx(_gaussian_width(s, -6.0), abs=0.05 * small_grid.dx)
    # complex IQ input
    w2 = fwhm(img * np.exp(1j * 0.3), small_grid, x0, z0)
    assert w2.lateral == pytest.approx(w.lateral, rel=1e-9)


def test_fwhm_near_the_edge_and_errors(small_grid):
    g = small_grid
    x0, z0 = g.x_axis[-1], g.z_axis[0]  # a target on the corner: box and lobe cut by the grid
    w = fwhm(_gaussian_psf(g, x0, z0, 0.3e-3, 0.3e-3), g, x0, z0)
    half = _gaussian_width(0.3e-3, -6.0) / 2
    assert w.axial == pytest.approx(half, abs=0.05 * g.dz) and w.lateral == pytest.approx(half, abs=0.05 * g.dx)
    img = _gaussian_psf(g, 0.0, 15e-3, 0.3e-3, 0.3e-3)
    with pytest.raises(ValueError, match="search box"):
        fwhm(img, g, 10e-3, 15e-3)
    with pytest.raises(ValueError, match=r"image must have the grid's shape"):
        fwhm(img[:-1], g, 0.0, 15e-3)
    img[3, 3] = np.nan
    with pytest.raises(ValueError, match="image contains NaN"):
        fwhm(img, g, 0.0, 15e-3)


def test_resolution_metrics_on_the_scatterer_phantom_targets():
    grid = paper_grid(256)
    pts = scatterer_points()
    img = sum(_gaussian_psf(grid, x, z, 0.3e-3, 0.2e-3) for x, z in pts)
    res = resolution_metrics(img, grid, pts)
    assert len(res.axial) == 25
    np.testing.assert_allclose(res.axial, _gaussian_width(0.2e-3, -6.0), atol=0.05 * grid.dz)
    np.testing.assert_allclose(res.lateral, _gaussian_width(0.3e-3, -6.0), atol=0.05 * grid.dx)
    out = json.loads(json.dumps(res.to_dict()))
    assert out["axial"]["mean"] == pytest.approx(np.mean(res.axial)) and len(out["x"]) == 25
    with pytest.raises(ValueError, match="points"):
        resolution_metrics(img, grid, pts[:, :1])


# --- contrast evaluation ------------------------------------------------------------------------------------------------------
def test_contrast_metrics_on_the_occlusion_phantom():
    grid = paper_grid(128)
    disks = occlusion_disks()
    o = speckle(occlusion_phantom(grid), seed=0)
    m = contrast_metrics(o, grid, disks)
    assert len(m.gcnr) == len(m.cnr) == len(m.snr) == 9
    # inside is exactly 0 (the −60 dB floor); outside is |N(0,1)| in dB, which reaches the floor
    # only with probability ≈ 2·φ(0)·1e-3·max|o| ≈ 0.3 %
    assert min(m.gcnr) > 0.95
    # SNR on the envelope of real Gaussian speckle: half-normal, sqrt(2/π)/sqrt(1 − 2/π) ≈ 1.32
    mean_snr, _ = mean_std(m.snr)
    assert mean_snr == pytest.approx(HALF_NORMAL_SNR, abs=0.06)
    d = json.loads(json.dumps(m.to_dict()))
    assert set(d) == {"gcnr", "cnr", "snr"} and len(d["gcnr"]["values"]) == 9
    # envelope instead of dB values, and explicit speckle ROIs
    m2 = contrast_metrics(o, grid, disks, db=False, speckle_rois=[Box(-18e-3, -15e-3, 10e-3, 46e-3)])
    assert len(m2.snr) == 1 and m2.snr[0] == pytest.approx(HALF_NORMAL_SNR, abs=0.1)
    assert min(m2.gcnr) > 0.95


def test_contrast_metrics_errors():
    grid = paper_grid(64)
    img = np.ones(grid.shape)
    with pytest.raises(ValueError, match="image must have"):
        contrast_metrics(img[:, :10], grid, occlusion_disks())
    with pytest.raises(ValueError, match="inside ROI of cyst 0"):
        contrast_metrics(img, grid, [Disk(0.1, 0.2, 3e-3)])  # far outside the grid
    with pytest.raises(TypeError, match="cyst"):
        contrast_metrics(img, grid, ["not a disk"])
    with pytest.raises(TypeError, match="speckle_rois"):
        contrast_metrics(img, grid, occlusion_disks(), speckle_rois=["nope"])
