"""Tests of DRUSmean / DRUSvar (DRUSvar paper, eq. (5)–(6)) and the B-mode helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drus.sampling.estimators import Estimates, bmode_db, drus_mean, drus_var, estimate


def two_level_samples(mean: np.ndarray, half_spread: np.ndarray) -> np.ndarray:
    """``C = 4`` samples ``mean + a·(−1, −1, +1, +1)``: sample mean ``mean``, unbiased variance ``4a²/3``."""
    signs = np.array([-1.0, -1.0, 1.0, 1.0])[:, None, None]
    return mean[None] + signs * half_spread[None]


@pytest.fixture
def known():
    mean = np.array([[0.0, 1.0, -2.0], [3.0, 0.5, -0.25]])
    a = np.array([[0.5, 1.0, 2.0], [0.0, 0.1, 3.0]])
    return two_level_samples(mean, a), mean, 4 * a**2 / 3


@pytest.mark.parametrize("beta", [0.5, 1.0, 0.25, 2.0])
def test_known_values(known, beta):
    """``p̂ = (4a²/3)^{1/(2β)}``: β = 0.5 → the variance, β = 1 → the standard deviation."""
    samples, mean, var = known
    np.testing.assert_allclose(drus_mean(samples), mean, rtol=1e-12)
    np.testing.assert_allclose(drus_var(samples, beta=beta), var ** (1 / (2 * beta)), rtol=1e-12, atol=1e-15)


def test_default_beta_is_the_paper_variance(known):
    samples, _, var = known
    np.testing.assert_allclose(drus_var(samples), var, rtol=1e-12)  # β = 0.5: exponent 1
    np.testing.assert_allclose(drus_var(samples), np.var(samples, axis=0, ddof=1), rtol=1e-12)


def test_numpy_torch_parity_and_types(known):
    samples, _, _ = known
    t = torch.as_tensor(samples, dtype=torch.float32)
    for beta in (0.5, 1.0):
        out_t, out_n = drus_var(t, beta=beta), drus_var(samples.astype(np.float32), beta=beta)
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == (2, 3)
        assert isinstance(out_n, np.ndarray) and out_n.dtype == np.float32
        np.testing.assert_allclose(out_t.numpy(), out_n, rtol=1e-6, atol=1e-7)
    assert isinstance(drus_mean(t), torch.Tensor)
    np.testing.assert_allclose(drus_mean(t).numpy(), drus_mean(samples), rtol=1e-6)


def test_estimate_dataclass(known):
    samples, mean, var = known
    est = estimate(samples, beta=1.0)
    assert isinstance(est, Estimates) and est.samples is samples and est.beta == 1.0
    np.testing.assert_allclose(est.mean, mean)
    np.testing.assert_allclose(est.var, np.sqrt(var))


def test_recovers_echogenicity_under_the_paper_model():
    """eq. (5) with β = 0.5: ``ô_c = m⊙p + √p ⊙ G_c`` ⇒ ``Var[ô_c] = p`` and eq. (6) gives ``p̂ ≈ p``.

    2 000 samples: the relative standard error of a sample variance is √(2/(C − 1)) ≈ 3.2 %;
    tolerance 5 standard errors. The mean estimates ``m⊙p`` within 5·√(p/C).
    """
    C, gen = 2000, torch.Generator().manual_seed(0)
    p = torch.tensor([[0.05, 0.2, 1.0], [2.0, 4.0, 0.5]], dtype=torch.float64)
    m = torch.randn(p.shape, generator=gen, dtype=torch.float64)
    samples = m * p + p.sqrt() * torch.randn((C, *p.shape), generator=gen, dtype=torch.float64)
    est = estimate(samples)
    assert torch.all((est.var / p - 1).abs() < 5 * math.sqrt(2 / (C - 1)))
    assert torch.all((est.mean - m * p).abs() < 5 * (p / C).sqrt())


def test_complex_samples_use_the_modulus():
    z = np.array([1 + 1j, -1 - 1j])[:, None]  # mean 0, |ô − mean|² = 2 each
    np.testing.assert_allclose(drus_var(z), [4.0])
    assert np.isrealobj(drus_var(z))


def test_errors():
    with pytest.raises(ValueError, match="C ≥ 2"):
        drus_var(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="C ≥ 2"):
        estimate(torch.zeros(1, 4, 4))
    assert drus_mean(np.ones((1, 2, 2))).shape == (2, 2)  # the mean is defined for C = 1
    with pytest.raises(ValueError, match="beta"):
        drus_var(np.zeros((3, 2, 2)), beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        drus_var(np.zeros((3, 2, 2)), beta=float("nan"))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        drus_var([[1.0], [2.0]])
    with pytest.raises(ValueError, match="leading sample axis"):
        drus_mean(np.array(1.0))


def test_bmode_db():
    img = np.array([[1.0, -0.1], [0.001, 0.0]])
    np.testing.assert_allclose(bmode_db(img), [[0.0, -20.0], [-60.0, -60.0]], atol=1e-9)
    np.testing.assert_allclose(bmode_db(img, floor_db=-40), [[0.0, -20.0], [-40.0, -40.0]], atol=1e-9)
    out_t = bmode_db(torch.as_tensor(img))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), bmode_db(img), atol=1e-9)
    assert np.all(np.isfinite(bmode_db(np.array([0.0, 2.0, 0.0]))))
    with pytest.raises(ValueError, match="zero everywhere"):
        bmode_db(np.zeros((2, 2)))


def test_pooled_variance_gains_the_closed_form_snr():
    """i.i.d. N(0, σ²) samples: the per-pixel variance of C samples is σ²·χ²_{C−1}/(C−1), relative std
    √(2/(C−1)); pooling a w × w window of independent pixels divides it by w."""
    from drus.sampling.estimators import drus_var_pooled

    rng = np.random.default_rng(0)
    C, w = 10, 3
    s = rng.standard_normal((C, 192, 192)) * 2.0
    paper, pooled = drus_var(s), drus_var_pooled(s, window=w)
    interior = (slice(w, -w), slice(w, -w))
    snr = lambda v: float(v[interior].mean() / v[interior].std())  # noqa: E731
    assert paper[interior].mean() == pytest.approx(4.0, rel=0.02)
    assert pooled[interior].mean() == pytest.approx(4.0, rel=0.02)
    assert snr(paper) == pytest.approx(math.sqrt((C - 1) / 2), rel=0.05)
    assert snr(pooled) == pytest.approx(w * math.sqrt((C - 1) / 2), rel=0.08)
    assert np.array_equal(drus_var_pooled(s, window=1), drus_var(s).astype(np.float32))
    t = drus_var_pooled(torch.as_tensor(s), window=w)
    assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), pooled)
    with pytest.raises(ValueError, match="odd"):
        drus_var_pooled(s, window=2)


def test_pool_window_is_one_resolution_cell():
    from drus.sampling.estimators import POOL_WIDTH, pool_window
    from drus.physics.geometry import paper_grid

    assert POOL_WIDTH == pytest.approx(0.85e-3)
    assert [pool_window(paper_grid(n)) for n in (64, 128, 256)] == [1, 3, 7]  # pitches 0.57, 0.28, 0.14 mm
