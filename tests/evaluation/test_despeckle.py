"""ADMSS (drus.evaluation.despeckle) on synthetic speckle, its input checks, and ``drus despeckle``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from drus.evaluation.despeckle import admss, amplitude_of, fit_gamma_mixture

N = 128
EDGE = N // 2 - 0.5  # the step lies between columns 63 and 64
ROWS = slice(16, N - 16)
BRIGHT, DARK = slice(8, 48), slice(80, 120)  # homogeneous regions, 16 px from the step
LEVEL_DARK = 0.25  # echogenicity right of the step (−12 dB)


def speckle_step(seed: int) -> np.ndarray:
    """128² Rayleigh speckle (complex Gaussian field, correlated over σ = 1 px) times a vertical step 1 → 0.25."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=(N, N)), 1.0) + 1j * ndi.gaussian_filter(rng.normal(size=(N, N)), 1.0)
    m = np.ones((N, N))
    m[:, N // 2:] = LEVEL_DARK
    return m * np.abs(field)


def snr(a: np.ndarray) -> float:
    return float(a.mean() / a.std())


def halfway_crossing(image: np.ndarray) -> float:
    """Where the row-averaged profile crosses half-way between its two plateaus (pixels, interpolated)."""
    p = image[ROWS].mean(axis=0)
    half = 0.5 * (p[BRIGHT].mean() + p[DARK].mean())
    j = np.flatnonzero((p[:-1] >= half) & (p[1:] < half))
    assert len(j) == 1, f"the profile crosses half-way {len(j)} times"
    j = j[0]
    return float(j + (p[j] - half) / (p[j] - p[j + 1]))


def rise_width(image: np.ndarray) -> int:
    """10–90 % width (pixels) of the step in the row-averaged profile."""
    p = image[ROWS].mean(axis=0)
    f = (p - p[DARK].mean()) / (p[BRIGHT].mean() - p[DARK].mean())
    seg = f[40:90]
    return int(40 + np.flatnonzero(seg > 0.1).max() + 1 - (40 + np.flatnonzero(seg >= 0.9).max()))


@pytest.fixture(scope="module")
def filtered():
    """Two speckle realisations and their ADMSS output with the DRUS authors' parameters."""
    out = []
    for seed in (0, 1):
        env = speckle_step(seed)
        out.append((env, admss(env)))
    return out


def test_speckle_snr_rises(filtered):
    """μ/σ in both homogeneous regions: ≥ 1.3× in the bright one (memory keeps its texture), ≥ 3× in the dark one."""
    for env, out in filtered:
        for region, factor in ((BRIGHT, 1.3), (DARK, 3.0)):
            before, after = snr(env[ROWS, region]), snr(out[ROWS, region])
            assert 1.7 < before < 2.2  # Rayleigh speckle: 1.91
            assert after >= factor * before, (region, before, after)


def test_step_edge_stays_in_place(filtered):
    """The half-way crossing stays within ±1 px of the true edge, and the step stays sharp (10–90 % ≤ 8 px)."""
    for env, out in filtered:
        assert abs(halfway_crossing(env) - EDGE) <= 1.0
        assert abs(halfway_crossing(out) - EDGE) <= 1.0
        assert rise_width(out) <= 8


def test_edge_criterion_rejects_isotropic_smoothing(filtered):
    """The sharpness criterion can fail: a Gaussian blur with ADMSS's SNR gain in the dark region smears the step."""
    env, out = filtered[0]
    blurred = ndi.gaussian_filter(env, 4.0, mode="nearest")
    assert snr(blurred[ROWS, DARK]) >= 0.9 * snr(out[ROWS, DARK])
    assert rise_width(blurred) > 8


def test_conserves_mean_and_stays_non_negative(filtered):
    for env, out in filtered:
        assert out.shape == env.shape and out.dtype == np.float64
        assert np.all(np.isfinite(out)) and out.min() >= 0
        assert out.mean() == pytest.approx(env.mean(), rel=1e-6)


def test_scale_invariant_and_trivial_cases():
    env = speckle_step(3)[:48, 40:88]
    a = admss(env, n_iter=6)
    np.testing.assert_allclose(admss(1e4 * env, n_iter=6), 1e4 * a, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(admss(env, n_iter=0), env)
    const = np.full((16, 16), 2.5)
    np.testing.assert_array_equal(admss(const), const)
    assert admss(np.zeros((8, 8))).max() == 0


def test_gamma_mixture_recovers_two_classes():
    rng = np.random.default_rng(4)
    v = np.r_[rng.gamma(4.0, 0.5, 20000), rng.gamma(9.0, 2.0, 10000)]
    gm = fit_gamma_mixture(v, 2)
    np.testing.assert_allclose(gm.weights, [2 / 3, 1 / 3], atol=0.02)
    np.testing.assert_allclose(gm.means, [2.0, 18.0], rtol=0.05)
    np.testing.assert_allclose(gm.shapes, [4.0, 9.0], rtol=0.15)
    post = gm.posteriors(np.array([[1.0, 30.0]]))
    assert post.shape == (2, 1, 2) and post[0, 0, 0] > 0.99 and post[1, 0, 1] > 0.99


@pytest.mark.parametrize("bad, message", [
    (np.ones(16), "2-D"),
    (np.ones((2, 8, 8)), "2-D"),
    (np.ones((2, 8)), "3 × 3"),
    (np.full((8, 8), np.nan), "NaN"),
    (-np.ones((8, 8)), "non-negative"),
    (np.ones((8, 8), dtype=complex), "real"),
])
def test_rejects_bad_images(bad, message):
    with pytest.raises(ValueError, match=message):
        admss(bad)


@pytest.mark.parametrize("kw, message", [
    (dict(sigma=0.0), "sigma"), (dict(rho=float("nan")), "rho"), (dict(dt=-0.1), "dt"),
    (dict(n_iter=-1), "n_iter"), (dict(n_iter=2.5), "n_iter"), (dict(memory=-2), "memory"),
    (dict(model="rayleigh"), "model"),
])
def test_rejects_bad_parameters(kw, message):
    with pytest.raises(ValueError, match=message):
        admss(np.ones((8, 8)), **kw)


def test_amplitude_of():
    rf = np.cos(np.linspace(0, 40 * np.pi, 64))[:, None] * np.ones((1, 4))
    np.testing.assert_allclose(amplitude_of(rf)[8:-8], 1.0, atol=0.05)  # Hilbert envelope of a signed RF image
    np.testing.assert_array_equal(amplitude_of(np.array([[3 + 4j, 0]])), [[5.0, 0.0]])
    np.testing.assert_array_equal(amplitude_of(np.ones((3, 3))), np.ones((3, 3)))


def test_cli_despeckle(tmp_path):
    from click.testing import CliRunner

    from drus.cli import main
    from drus.physics.geometry import paper_grid
    from drus.datasets.io import load_images_hdf5, save_images_hdf5

    env = speckle_step(5)[:64, 32:96]
    grid = paper_grid(64)
    rf = env * np.cos(np.arange(64) * 1.3)[:, None]  # signed: despeckled on its envelope
    h5 = save_images_hdf5(tmp_path / "rec.h5", grid=grid, mean=rf, samples=np.stack([rf, rf]))
    npy = tmp_path / "env.npy"
    np.save(npy, env)
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(main, ["despeckle", str(h5), "--method", "admss", "--out", str(out), "--iterations", "5"])
    assert r.exit_code == 0, r.output
    saved = load_images_hdf5(out / "rec.admss.h5")
    assert saved.grid == grid and saved.attrs["input_dataset"] == "mean" and saved.attrs["n_iter"] == 5
    assert saved["amplitude"].shape == (64, 64) and saved["amplitude"].min() >= 0
    assert (out / "rec.admss.png").stat().st_size > 0
    # refuses to overwrite, then replaces with --overwrite
    r = runner.invoke(main, ["despeckle", str(h5), "--method", "admss", "--out", str(out)])
    assert r.exit_code != 0 and "--overwrite" in r.output
    r = runner.invoke(main, ["despeckle", str(h5), "--method", "admss", "--out", str(out), "--iterations", "2", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert load_images_hdf5(out / "rec.admss.h5").attrs["n_iter"] == 2
    # a .npy array: no grid
    r = runner.invoke(main, ["despeckle", str(npy), "--method", "admss", "--out", str(out), "--iterations", "2"])
    assert r.exit_code == 0, r.output
    saved = load_images_hdf5(out / "env.admss.h5")
    assert saved.grid is None
    np.testing.assert_array_equal(saved["amplitude_in"], env)
    # one-line errors for bad input
    bad = tmp_path / "cube.npy"
    np.save(bad, np.ones((2, 8, 8)))
    r = runner.invoke(main, ["despeckle", str(bad), "--method", "admss", "--out", str(out)])
    assert r.exit_code == 2 and r.output.startswith("Error:") and "2-D" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(main, ["despeckle", str(h5), "--method", "admss", "--out", str(out), "--dataset", "nope", "--overwrite"])
    assert r.exit_code == 2 and "no dataset 'nope'" in r.output and "mean" in r.output
    r = runner.invoke(main, ["despeckle", str(h5), "--method", "admss", "--out", str(out), "--dataset", "samples", "--overwrite"])
    assert r.exit_code == 2 and "2-D" in r.output
    blocked = tmp_path / "file"
    blocked.write_text("")
    r = runner.invoke(main, ["despeckle", str(npy), "--method", "admss", "--out", str(blocked)])
    assert r.exit_code == 2 and "is a file" in r.output  # checked before any work
