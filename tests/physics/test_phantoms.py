"""Tests for drus.physics.phantoms: paper phantoms, speckle and noise, random maps, PICMUS phantom files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import reference_data_dir

from drus.physics.geometry import ImageGrid, paper_grid
from drus.physics.phantoms import (
    PICMUS_GROUP,
    Box,
    Disk,
    PicmusFieldError,
    PicmusPhantom,
    add_noise,
    occlusion_disks,
    occlusion_phantom,
    random_echogenicity,
    rasterize_scatterers,
    render_disks,
    scatterer_disks,
    scatterer_phantom,
    scatterer_points,
    speckle,
)


def _picmus_phantom_file(index: int) -> Path:
    path = reference_data_dir() / "picmus" / "phantoms" / f"picmus_phantom_{index}.hdf5"
    if not path.is_file():
        pytest.skip(f"reference data not found: {path} (set DRUS_REFERENCE_DATA)")
    return path


@pytest.fixture(scope="module")
def grid256() -> ImageGrid:
    return paper_grid(256)


def _nearest_pixel(grid: ImageGrid, x: float, z: float) -> tuple[int, int]:
    return int(np.argmin(np.abs(grid.z_axis - z))), int(np.argmin(np.abs(grid.x_axis - x)))


# --- paper phantoms ------------------------------------------------------------------------------------
def test_occlusion_phantom_disks_at_the_paper_positions(grid256):
    disks = occlusion_disks()
    assert len(disks) == 9
    assert {(round(d.x * 1e3, 6), round(d.z * 1e3, 6)) for d in disks} == {
        (x, z) for x in (-11.0, 0.0, 11.0) for z in (17.0, 28.0, 39.0)
    }
    assert all(d.radius == pytest.approx(3.5e-3) for d in disks)
    p = occlusion_phantom(grid256)
    assert p.shape == (256, 256) and p.dtype == np.float32
    assert set(np.unique(p)) == {0.0, 1.0}
    for d in disks:
        assert p[_nearest_pixel(grid256, d.x, d.z)] == 0.0
        # 0.3 mm outside the edge is background again
        assert p[_nearest_pixel(grid256, d.x + d.radius + 0.3e-3, d.z)] == 1.0
    assert p[0, 0] == p[-1, -1] == p[128, 0] == 1.0
    # area of the 9 disks, to within the pixelisation of their edges
    area = np.count_nonzero(p == 0) * grid256.dx * grid256.dz
    assert area == pytest.approx(9 * np.pi * 3.5e-3**2, rel=0.02)


def test_occlusion_phantom_options(grid256):
    p = occlusion_phantom(grid256, radius=2e-3, centers_x=(0.0,), centers_z=(20e-3,), background=0.5)
    assert set(np.unique(p)) == {0.0, 0.5}
    assert p[_nearest_pixel(grid256, 0.0, 20e-3)] == 0.0
    with pytest.raises(ValueError, match="background"):
        occlusion_phantom(grid256, background=-1.0)
    with pytest.raises(TypeError, match="grid"):
        occlusion_phantom((256, 256))


def test_scatterer_phantom_and_points(grid256):
    disks = scatterer_disks()
    pts = scatterer_points()
    assert len(disks) == 25 and pts.shape == (25, 2)
    np.testing.assert_allclose(pts, [(d.x, d.z) for d in disks])
    assert sorted(set(np.round(pts[:, 0] * 1e3, 6))) == [-14, -7, 0, 7, 14]
    assert sorted(set(np.round(pts[:, 1] * 1e3, 6))) == [14, 21, 28, 35, 42]
    p = scatterer_phantom(grid256)
    assert p.dtype == np.float32 and set(np.unique(p)) == {0.0, 1.0}
    for x, z in pts:
        assert p[_nearest_pixel(grid256, x, z)] == 1.0
    assert p[0, 0] == 0.0
    per_disk = np.count_nonzero(p) / 25
    assert per_disk == pytest.approx(np.pi * 0.5e-3**2 / (grid256.dx * grid256.dz), rel=0.25)


def test_render_disks_matches_brute_force():
    grid = ImageGrid.from_extent(x_min=-3e-3, x_max=3e-3, z_min=1e-3, z_max=5e-3, n_x=31, n_z=21)
    disks = [Disk(0.0, 3e-3, 1e-3), Disk(2e-3, 2e-3, 0.6e-3)]
    expected = np.zeros(grid.shape, dtype=bool)
    for iz, z in enumerate(grid.z_axis):
        for ix, x in enumerate(grid.x_axis):
            expected[iz, ix] = any((x - d.x) ** 2 + (z - d.z) ** 2 <= d.radius**2 for d in disks)
    np.testing.assert_array_equal(render_disks(grid, disks), expected)
    assert not render_disks(grid, []).any()
    with pytest.raises(ValueError, match="radius"):
        Disk(0.0, 1e-3, 0.0)
    with pytest.raises(ValueError, match="x_min < x_max"):
        Box(1.0, 0.0, 0.0, 1.0)


# --- speckle and noise -------------------------------------------------------------------------------------
def test_speckle_statistics_and_seeding():
    p = np.full((256, 256), 2.0, dtype=np.float32)
    p[:, :64] = 0.0
    o = speckle(p, seed=1)
    assert o.shape == p.shape and o.dtype == np.float32
    np.testing.assert_array_equal(o, speckle(p, seed=1))
    np.testing.assert_array_equal(o, speckle(p, rng=np.random.default_rng(1)))
    assert not np.array_equal(o, speckle(p, seed=2))
    assert np.all(o[:, :64] == 0)
    tissue = o[:, 64:].astype(np.float64)  # 49 152 samples of N(0, 4)
    assert abs(tissue.mean()) < 0.05  # std error 0.009
    assert tissue.var() == pytest.approx(4.0, rel=0.03)  # std error 0.6 %
    scaled = speckle(p, seed=1, normalize_max=4.0)
    assert np.abs(scaled).max() == pytest.approx(4.0, rel=1e-6)
    np.testing.assert_allclose(scaled, o * (4.0 / np.abs(o).max()), rtol=1e-5)


def test_speckle_errors():
    p = np.ones((4, 4))
    with pytest.raises(TypeError, match="seed or rng"):
        speckle(p, seed=1, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="echogenicity"):
        speckle(-p, seed=0)
    with pytest.raises(ValueError, match="echogenicity"):
        speckle(np.full((2, 2), np.nan), seed=0)
    with pytest.raises(ValueError, match="zero everywhere"):
        speckle(np.zeros((3, 3)), seed=0, normalize_max=4.0)
    assert speckle(p, seed=0).dtype == np.float64  # float64 in, float64 out


def test_add_noise_level_and_seeding():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((200, 200)).astype(np.float32)
    signal[0, 0] = -5.0  # max|signal| = 5
    noisy, sigma0 = add_noise(signal, gamma=0.1, seed=3)
    assert sigma0 == pytest.approx(0.5)
    assert noisy.dtype == np.float32 and noisy.shape == signal.shape
    assert np.std(noisy - signal) == pytest.approx(0.5, rel=0.02)
    np.testing.assert_array_equal(noisy, add_noise(signal, gamma=0.1, seed=3)[0])
    assert not np.array_equal(noisy, add_noise(signal, gamma=0.1, seed=4)[0])
    same, s0 = add_noise(signal, gamma=0.0, seed=3)
    assert s0 == 0.0 and np.array_equal(same, signal)
    with pytest.raises(ValueError, match="gamma"):
        add_noise(signal, gamma=-0.1, seed=0)


# --- random echogenicity maps ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(64, 64), (37, 91), (256, 128)])
def test_random_echogenicity_shape_range_determinism(shape):
    p = random_echogenicity(shape, seed=7)
    assert p.shape == shape and p.dtype == np.float32
    assert p.min() >= 0.0 and p.max() <= 2.0
    np.testing.assert_array_equal(p, random_echogenicity(shape, seed=7))
    np.testing.assert_array_equal(p, random_echogenicity(shape, rng=np.random.default_rng(7)))
    assert not np.array_equal(p, random_echogenicity(shape, seed=8))


def test_random_echogenicity_features():
    # plenty of inclusions: anechoic, hypo- and hyperechoic regions appear across a few seeds
    maps = [random_echogenicity((96, 96), seed=s, n_inclusions=(4, 4), n_points=(3, 3)) for s in range(8)]
    lo = [float((m < 0.05).mean()) for m in maps]
    hi = [float((m > 1.4).mean()) for m in maps]
    assert max(lo) > 0.01 and max(hi) > 0.003
    # a smooth background alone stays within the tissue range and varies smoothly
    bg = random_echogenicity((96, 96), seed=0, n_layers=(0, 0), n_inclusions=(0, 0), n_points=(0, 0))
    assert 0.2 < bg.min() and bg.max() < 2.0
    assert np.abs(np.diff(bg, axis=0)).max() < 0.1 and np.abs(np.diff(bg, axis=1)).max() < 0.1


def test_random_echogenicity_grid_input_and_errors(grid256):
    small = grid256.resized(64, 48)
    p = random_echogenicity(small, seed=1)
    assert p.shape == (64, 48)
    with pytest.raises(TypeError, match="grid_or_shape"):
        random_echogenicity((64,), seed=0)
    with pytest.raises(TypeError, match="grid_or_shape"):
        random_echogenicity("64x64", seed=0)
    with pytest.raises(ValueError, match="n_layers"):
        random_echogenicity((8, 8), seed=0, n_layers=(3, 1))


# --- rasterisation --------------------------------------------------------------------------------------------------
def test_rasterize_nearest_matches_brute_force():
    grid = ImageGrid.from_extent(x_min=-2e-3, x_max=2e-3, z_min=1e-3, z_max=4e-3, n_x=21, n_z=16)
    rng = np.random.default_rng(0)
    px = rng.uniform(-2.5e-3, 2.5e-3, 500)
    pz = rng.uniform(0.5e-3, 4.5e-3, 500)
    amp = rng.standard_normal(500)
    expected = np.zeros(grid.shape)
    for x, z, a in zip(px, pz, amp):
        ix, iz = np.argmin(np.abs(grid.x_axis - x)), np.argmin(np.abs(grid.z_axis - z))
        if abs(grid.x_axis[ix] - x) <= grid.dx / 2 and abs(grid.z_axis[iz] - z) <= grid.dz / 2:
            expected[iz, ix] += a
    got = rasterize_scatterers(px, pz, amp, grid)
    assert got.dtype == np.float32 and got.shape == grid.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_rasterize_bilinear_splits_and_conserves():
    grid = ImageGrid.from_extent(x_min=0.0, x_max=4e-3, z_min=1e-3, z_max=5e-3, n_x=5, n_z=5)
    # halfway between pixels (1, 1), (1, 2), (2, 1), (2, 2)
    o = rasterize_scatterers([1.5e-3], [2.5e-3], [2.0], grid, method="bilinear")
    np.testing.assert_allclose(o[1:3, 1:3], 0.5)
    assert o.sum() == pytest.approx(2.0)
    rng = np.random.default_rng(1)
    px, pz = rng.uniform(0, 4e-3, 100), rng.uniform(1e-3, 5e-3, 100)
    assert rasterize_scatterers(px, pz, 1.0, grid, method="bilinear").sum() == pytest.approx(100, rel=1e-5)
    assert rasterize_scatterers(px, pz, 1.0, grid).sum() == pytest.approx(100, rel=1e-5)
    with pytest.raises(ValueError, match="method"):
        rasterize_scatterers(px, pz, 1.0, grid, method="cubic")
    with pytest.raises(ValueError, match="amplitudes"):
        rasterize_scatterers(px, pz, np.ones(3), grid)


# --- PICMUS phantom files ---------------------------------------------------------------------------------------------------
def _write_picmus(path: Path, **overrides) -> Path:
    """A small phantom file in the official layout; ``field=None`` leaves a field out."""
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.uniform(-10e-3, 10e-3, n)
    z = rng.uniform(5e-3, 25e-3, n)
    keep = (x - 0.0) ** 2 + (z - 15e-3) ** 2 > 3e-3**2  # one empty occlusion, radius 3 mm
    x, z = x[keep], z[keep]
    fields = {
        "phantom_occlusionCenterX": [0.0, 6e-3],
        "phantom_occlusionCenterZ": [15e-3, 20e-3],
        "phantom_occlusionDiameter": [6e-3, 0.0],  # the second is a placeholder
        "phantom_xPts": [0.0, 1e-3, -1e-3],
        "phantom_zPts": [10e-3, 12e-3, 14e-3],
        "phantom_RoiCenterX": [5e-3],
        "phantom_RoiCenterZ": [10e-3],
        "phantom_RoiPsfTimeX": [4.0],
        "phantom_RoiPsfTimeZ": [6.0],
        "phantom_lateralResolution": [0.5e-3],
        "phantom_axialResolution": [0.4e-3],
        "scatterers_positions": np.stack([x, np.zeros_like(x), z]),
        "scatterers_amplitude": rng.standard_normal(x.size),
    }
    fields.update(overrides)
    with h5py.File(path, "w") as f:
        g = f.create_group(PICMUS_GROUP)
        g.attrs["name"] = np.array([b"Synthetic test phantom"])
        for key, value in fields.items():
            if value is not None:
                g[key] = np.asarray(value, dtype=np.float32)
    return path


def test_picmus_phantom_from_synthetic_file(tmp_path):
    ph = PicmusPhantom.from_file(_write_picmus(tmp_path / "ph.hdf5"))
    assert ph.name == "Synthetic test phantom"
    disks = ph.cyst_disks()
    assert len(disks) == 1  # diameter-0 placeholder dropped
    assert disks[0].radius == pytest.approx(3e-3) and disks[0].z == pytest.approx(15e-3)
    np.testing.assert_allclose(ph.points(), [[0.0, 10e-3], [1e-3, 12e-3], [-1e-3, 14e-3]], atol=1e-9)
    (box,) = ph.speckle_boxes()
    assert (box.x_min, box.x_max) == pytest.approx((3e-3, 7e-3))  # ± 4 × 0.5 mm
    assert (box.z_min, box.z_max) == pytest.approx((7.6e-3, 12.4e-3))  # ± 6 × 0.4 mm
    assert ph.scatterer_positions.shape == (3, ph.n_scatterers) and ph.n_scatterers > 3000
    with pytest.raises(ValueError):
        ph.occlusion_x[0] = 1.0  # read-only


def test_picmus_echogenicity_of_synthetic_file(tmp_path):
    ph = PicmusPhantom.from_file(_write_picmus(tmp_path / "ph.hdf5"))
    grid = ImageGrid.from_extent(x_min=-8e-3, x_max=8e-3, z_min=7e-3, z_max=23e-3, n_x=81, n_z=81)
    p = ph.echogenicity(grid, smoothing=0.7e-3)
    assert p.shape == grid.shape and p.dtype == np.float32 and p.min() >= 0
    assert np.median(p) == pytest.approx(1.0, rel=1e-5)
    from drus.evaluation.metrics import disk_mask

    inside = disk_mask(grid, 0.0, 15e-3, 2e-3)
    outside = ~disk_mask(grid, 0.0, 15e-3, 4e-3)
    assert p[inside].mean() < 0.3 * p[outside].mean()
    assert ph.echogenicity(grid, normalize="max").max() == pytest.approx(1.0)
    o = ph.reflectivity(grid)
    assert o.shape == grid.shape and np.count_nonzero(o[inside]) == 0


def test_picmus_placeholders(tmp_path):
    path = _write_picmus(
        tmp_path / "contrast.hdf5",
        phantom_xPts=[0.0],
        phantom_zPts=[0.02],  # the PICMUS default point of contrast phantoms
        phantom_RoiPsfTimeX=[0.0],
        phantom_RoiPsfTimeZ=[0.0],
    )
    ph = PicmusPhantom.from_file(path)
    assert ph.points().shape == (0, 2) and ph.speckle_boxes() == ()
    path = _write_picmus(
        tmp_path / "reso.hdf5",
        phantom_occlusionCenterX=[0.0], phantom_occlusionCenterZ=[0.0], phantom_occlusionDiameter=[0.0],
        phantom_xPts=[0.0], phantom_zPts=[0.02],
        scatterers_positions=None, scatterers_amplitude=None,
    )
    ph = PicmusPhantom.from_file(path)
    assert ph.cyst_disks() == () and ph.points().shape == (1, 2)  # a real single target is kept
    assert ph.n_scatterers == 0
    with pytest.raises(ValueError, match="no scatterer list"):
        ph.echogenicity(paper_grid(32))


def test_picmus_errors_name_file_and_field(tmp_path):
    path = _write_picmus(tmp_path / "broken.hdf5", phantom_zPts=None)
    with pytest.raises(PicmusFieldError) as info:
        PicmusPhantom.from_file(path)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert "broken.hdf5" in str(info.value) and "phantom_zPts" in str(info.value)

    path = _write_picmus(tmp_path / "amp.hdf5", scatterers_amplitude=np.ones(5))
    with pytest.raises(PicmusFieldError, match=r"amp\.hdf5.*scatterers_amplitude"):
        PicmusPhantom.from_file(path)

    path = _write_picmus(tmp_path / "len.hdf5", phantom_occlusionDiameter=[1e-3])
    with pytest.raises(PicmusFieldError, match="phantom_occlusionDiameter"):
        PicmusPhantom.from_file(path)

    with pytest.raises(FileNotFoundError, match="nowhere.hdf5"):
        PicmusPhantom.from_file(tmp_path / "nowhere.hdf5")

    not_hdf5 = tmp_path / "text.hdf5"
    not_hdf5.write_text("not an HDF5 file")
    with pytest.raises(ValueError, match="text.hdf5"):
        PicmusPhantom.from_file(not_hdf5)

    with h5py.File(tmp_path / "empty.hdf5", "w"):
        pass
    with pytest.raises(PicmusFieldError, match="US/US_DATASET0000"):
        PicmusPhantom.from_file(tmp_path / "empty.hdf5")


# --- real PICMUS phantom files --------------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_picmus_phantom_2_simu_cont(grid256):
    ph = PicmusPhantom.from_file(_picmus_phantom_file(2))
    assert ph.n_scatterers == 141_091
    disks = ph.cyst_disks()
    assert len(disks) == 9
    assert all(d.radius == pytest.approx(4e-3) for d in disks)
    assert ph.points().shape == (0, 2)  # the (0, 20 mm) placeholder is dropped
    assert len(ph.speckle_boxes()) == 4
    p = ph.echogenicity(grid256)
    inside = render_disks(grid256, [Disk(d.x, d.z, d.radius - 0.5e-3) for d in disks])
    outside = ~render_disks(grid256, [Disk(d.x, d.z, d.radius + 0.5e-3) for d in disks])
    assert p[inside].mean() < 0.3 * p[outside].mean()
    assert p[outside].mean() == pytest.approx(1.0, abs=0.15)


@pytest.mark.realdata
def test_real_picmus_phantoms_1_3_4():
    reso = PicmusPhantom.from_file(_picmus_phantom_file(1))
    assert reso.cyst_disks() == () and reso.points().shape == (20, 2) and reso.speckle_boxes() == ()
    expe_reso = PicmusPhantom.from_file(_picmus_phantom_file(3))
    assert expe_reso.points().shape == (5, 2)
    expe_cont = PicmusPhantom.from_file(_picmus_phantom_file(4))
    assert len(expe_cont.cyst_disks()) == 2 and len(expe_cont.speckle_boxes()) == 3
    assert expe_cont.cyst_disks()[0].radius == pytest.approx(2.25e-3)
