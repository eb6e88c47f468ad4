"""Tests of the noise schedule and the DDRM sampler (Kawar et al. 2022; docs/method.md §4).

The sampler is checked against three references, from the strongest to the most specific:

1. **Exact law of DDRM under a Gaussian prior.** With a prior ``x ~ N(0, Σ)`` the MMSE denoiser is
   linear, ``E[x0 | x_t] = Σ(Σ + σ_t² I)⁻¹ x_t/√ᾱ_t``, so every DDRM step is an affine map plus
   Gaussian noise and the law of the output is Gaussian with a mean and covariance computed here in
   closed form (:func:`exact_ddrm_law`: dense float64 matrices in image space, structured like the
   reference code — ``Vᵀ`` of ``x̂0`` and of ``ε̂`` formed explicitly, no linearity shortcut). 4 000
   samples must match it within Monte-Carlo error, for ``η = 1`` and ``η = 0.85``, a prior diagonal
   in the operator's ``V`` basis or not, square/wide/tall operators with zero singular values.
2. **The exact Bayesian posterior**, where DDRM is exact: noiseless measurement, prior diagonal in
   ``V``, ``η = 0`` (DDIM) and many steps.
3. **Kawar et al.'s marginal consistency**: with an oracle network (``x̂0`` = the true image), each
   state satisfies ``x̄_t = x̄0 + σ_t·ε``, ``ε ~ N(0, I)``, for any ``η, η_b`` (Kawar et al. 2022,
   Sect. 3.2: the conditionals are built so that ``q(x̄_t | x0) = N(x̄0, σ_t² I)``).

What DDRM is *not*: a sampler of the exact posterior for a Gaussian prior, even diagonal in ``V`` and
with ``η = η_b = 1``; see :func:`test_ddrm_is_not_the_exact_posterior` for the numbers and the reason.
Breaking one formula of the sampler makes at least one of 1–3 fail (checked by mutating ``ddrm.py``
locally): the sign of the data residual, ``√(1−η²)`` replaced by ``1−η²``, the sign of ``σ′·Vᵀε̂`` or
of ``σ_t·Vᵀε̂``, ``η_b`` dropped from the data-case noise, the init's data term dropped, ``x_{t′}``
scaled by ``√ᾱ_t``, dropping the ``η·σ′·z`` noise, and the reference code's init scaling ``V x̄/σ_T``
(seen only in the 2-step case, where it differs from ``√ᾱ_T·V x̄`` by ``√(1 − ᾱ_T)`` = 0.96; at
``t = 980`` the difference is 3e-5). Not detectable, as expected: moving the boundary ``s_i σ′ = σ0``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drus.sampling.ddrm import DDRMResult, ddrm_sample
from drus.physics.operators import (
    Identity, SeparableBlur, SVDOperator, canonical_svd, gaussian_kernel, modulated_gaussian_kernel,
)
from drus.sampling.schedule import NoiseSchedule

SCHEDULE = NoiseSchedule()


pytestmark = pytest.mark.usefixtures("one_thread")


# =================================================================================================
# helpers
# =================================================================================================
class DenseSVDOperator(SVDOperator):
    """A dense ``[m, n]`` matrix on ``in_shape`` images (``n = n_z·n_x``, C order), SVD from numpy.

    Spectral domain ``[n]``: the ``min(m, n)`` singular values in decreasing order, then zeros.
    Singular values below ``1e-12·s_max`` are set to exactly 0 (the contract's "beyond the rank").
    """

    def __init__(self, matrix: np.ndarray, in_shape: tuple[int, int], *, factors=None, dtype=torch.float64):
        matrix = np.asarray(matrix, dtype=np.float64)
        m, n = matrix.shape
        if n != in_shape[0] * in_shape[1]:
            raise ValueError("matrix columns must match the image size")
        self.in_shape, self.out_shape, self.spectral_shape = tuple(in_shape), (m,), (n,)
        # ``factors=(u, s, vt)``: the SVD the matrix was built from. A computed SVD leaves the basis of
        # a cluster of equal singular values (the null space, say) to the machine's BLAS kernels.
        u, s, vt = canonical_svd(matrix) if factors is None else factors
        self.rank_max = k = min(m, n)
        sv = np.zeros(n)
        sv[:k] = np.where(s < 1e-12 * s.max(), 0.0, s)
        t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
        self.matrix, self.u, self.v, self.singular_values = t(matrix), t(u[:, :k]), t(vt.T), t(sv)

    def _Vt(self, x):
        return x.reshape(x.shape[0], -1) @ self.v

    def _V(self, c):
        return (c @ self.v.T).reshape(c.shape[0], *self.in_shape)

    def _Ut(self, y):
        return torch.nn.functional.pad(y @ self.u, (0, self.spectral_shape[0] - self.rank_max))

    def _U(self, c):
        return c[:, : self.rank_max] @ self.u.T


class DiagonalOperator(SVDOperator):
    """``A = diag(s)`` on ``[n_z, n_x]`` images (``U = V = I``): one scalar problem per pixel."""

    def __init__(self, s: torch.Tensor):
        self.in_shape = self.out_shape = self.spectral_shape = tuple(s.shape)
        self.singular_values = s

    def _Vt(self, x):
        return x

    _V = _Ut = _U = _Vt


class CountingOperator:
    """Delegates the SVD view to ``inner`` and logs every call to ``Vt, V, Ut, U``."""

    def __init__(self, inner: SVDOperator):
        self.inner, self.calls = inner, []
        self.in_shape, self.out_shape = inner.in_shape, inner.out_shape
        self.spectral_shape, self.singular_values = inner.spectral_shape, inner.singular_values

    def __getattr__(self, name):
        if name in ("Vt", "V", "Ut", "U"):
            def counted(arg, _f=getattr(self.inner, name), _n=name):
                self.calls.append(_n)
                return _f(arg)
            return counted
        raise AttributeError(name)


class GaussianDenoiser:
    """Exact ε-prediction network for the prior ``x ~ N(0, Σ)`` on ``[n_z, n_x]`` images.

    With ``u = x_t/√ᾱ_t = x0 + σ_t ε``: ``x̂0 = Σ(Σ + σ_t² I)⁻¹ u`` and ``ε̂ = (u − x̂0)/σ_t``;
    returns ``[B, 1, n_z, n_x]`` in the input's dtype.
    """

    def __init__(self, cov: np.ndarray, schedule: NoiseSchedule = SCHEDULE):
        self.cov, self.schedule, self._cache = np.asarray(cov, dtype=np.float64), schedule, {}

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ti = int(t[0])
        assert bool((t == ti).all()), "DDRM evaluates one timestep per call"
        if ti not in self._cache:
            n = self.cov.shape[0]
            sig, a = self.schedule.sigma(ti), self.schedule.alpha_bar(ti)
            d = self.cov @ np.linalg.inv(self.cov + sig**2 * np.eye(n))
            self._cache[ti] = torch.as_tensor(((np.eye(n) - d) / (sig * math.sqrt(a))).T)
        mat = self._cache[ti].to(x_t.dtype)
        return (x_t.reshape(x_t.shape[0], -1) @ mat).reshape(x_t.shape)


def exact_ddrm_law(cov, operator: DenseSVDOperator, y, *, sigma0, eta, eta_b, n_steps, schedule=SCHEDULE):
    """Mean ``[n]`` and covariance ``[n, n]`` of DDRM's output given ``y`` for the prior ``N(0, cov)``.

    An independent implementation of docs/method.md §4 / Kawar et al. Sect. 3.2: the state
    ``u = x_t/√ᾱ_t`` (image space) is Gaussian; each step is ``x̄′ = G u + h + diag(ν) z`` with the
    rows of ``G`` chosen per spectral component and case, and ``u′ = V x̄′``.
    """
    v = operator.v.numpy()
    s = operator.singular_values.numpy()
    n = v.shape[0]
    eye = np.eye(n)
    y_bar = operator.Ut(torch.as_tensor(y)).numpy()
    obs = s > 0
    s1 = np.where(obs, s, 1.0)
    y_til, r = np.where(obs, y_bar / s1, 0.0), np.where(obs, sigma0 / s1, 0.0)
    steps = schedule.timesteps(n_steps)
    sig_T = schedule.sigma(steps[0])
    data0 = obs & (s * sig_T > sigma0)
    mean = v @ np.where(data0, y_til, 0.0)
    P = v @ np.diag(np.where(data0, sig_T**2 - r**2, sig_T**2)) @ v.T
    keep = math.sqrt(1 - eta**2)
    for t, t_next in zip(steps[:-1], steps[1:]):
        sig = schedule.sigma(t)
        den = cov @ np.linalg.inv(cov + sig**2 * eye)  # u ↦ x̂0
        if t_next < 0:
            return den @ mean, den @ P @ den.T
        sn = schedule.sigma(t_next)
        vt_x0 = v.T @ den  # u ↦ Vᵀx̂0
        vt_eps = v.T @ (eye - den) / sig  # u ↦ Vᵀε̂
        G, h, nu = np.empty((n, n)), np.zeros(n), np.empty(n)
        for i in range(n):
            if not obs[i]:
                G[i], nu[i] = vt_x0[i] + keep * sn * vt_eps[i], eta * sn
            elif s[i] * sn < sigma0:
                G[i] = vt_x0[i] * (1 - keep * sn * s[i] / sigma0)
                h[i], nu[i] = keep * sn * y_bar[i] / sigma0, eta * sn
            else:
                G[i], h[i] = (1 - eta_b) * vt_x0[i], eta_b * y_til[i]
                nu[i] = math.sqrt(max(sn**2 - (eta_b * r[i]) ** 2, 0.0))
        mean = v @ (G @ mean + h)
        P = v @ (G @ P @ G.T + np.diag(nu**2)) @ v.T
    raise AssertionError("unreachable")


def gaussian_posterior(cov, matrix, y, sigma0):
    """``p(x | y)`` for ``x ~ N(0, cov)``, ``y = A x + σ0 n``: mean ``ΣAᵀG⁺y``, cov ``Σ − ΣAᵀG⁺AΣ``."""
    g = matrix @ cov @ matrix.T + sigma0**2 * np.eye(matrix.shape[0])
    gain = cov @ matrix.T @ np.linalg.pinv(g, hermitian=True)
    return gain @ y, cov - gain @ matrix @ cov


def gaussian_problem(*, m=16, aligned=True, sigma0=0.3, n_zero=3, seed=0):
    """A ``4 × 4``-image inverse problem: operator, prior covariance, matrix, measurement.

    Singular values ``geomspace(3, 0.05, min(m, 16))`` with the last ``n_zero`` set to 0 (so with
    ``σ0 = 0.3`` every case of the update occurs, ``σ0/s_i`` from 0.1 to 6); prior eigenvalues
    ``geomspace(2, 0.1, 16)`` in random order, eigenvectors = the operator's ``V`` (``aligned``) or
    a random orthogonal matrix; ``y = A x + σ0 n`` with ``x`` drawn from the prior.
    """
    rng = np.random.default_rng(seed)
    n = 16
    u0 = np.linalg.qr(rng.standard_normal((m, m)))[0]
    v0 = np.linalg.qr(rng.standard_normal((n, n)))[0]
    k = min(m, n)
    s = np.geomspace(3.0, 0.05, k)
    s[k - n_zero :] = 0.0
    sm = np.zeros((m, n))
    sm[np.arange(k), np.arange(k)] = s
    matrix = u0 @ sm @ v0.T
    op = DenseSVDOperator(matrix, (4, 4), factors=(u0, s, v0.T))
    lam = np.geomspace(2.0, 0.1, n)
    rng.shuffle(lam)
    q = op.v.numpy() if aligned else np.linalg.qr(rng.standard_normal((n, n)))[0]
    cov = q @ np.diag(lam) @ q.T
    x = np.linalg.cholesky(cov) @ rng.standard_normal(n)
    y = matrix @ x + sigma0 * rng.standard_normal(m)
    return op, cov, matrix, y


def z_scores(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[float, float]:
    """Largest |error|/standard-error of the sample mean and of the sample covariance entries.

    For ``C`` Gaussian samples, ``se(mean_j) = √(P_jj/C)`` and ``se(cov_jk) = √((P_jj P_kk + P_jk²)/C)``.
    """
    C = samples.shape[0]
    d = np.diag(cov)
    z_mean = np.abs(samples.mean(0) - mean) / np.sqrt(d / C)
    z_cov = np.abs(np.cov(samples.T) - cov) / np.sqrt((np.outer(d, d) + cov**2) / C)
    return float(z_mean.max()), float(z_cov[np.triu_indices(len(mean))].max())


def run_gaussian(op, cov, y, *, sigma0, eta, eta_b=1.0, n_steps=50, n_samples=4000, seed=1):
    res = ddrm_sample(
        GaussianDenoiser(cov), op, torch.as_tensor(y), sigma0=sigma0, n_samples=n_samples,
        n_steps=n_steps, eta=eta, eta_b=eta_b, generator=torch.Generator().manual_seed(seed), progress=False,
    )
    return res.samples.reshape(n_samples, -1).numpy()


# =================================================================================================
# schedule
# =================================================================================================
def test_schedule_linear_values():
    s = NoiseSchedule()
    assert s.betas.shape == (1000,) and s.betas.dtype == np.float64
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    assert s.alphas_cumprod[0] == pytest.approx(1 - 1e-4)
    assert np.all(np.diff(s.alphas_cumprod) < 0)
    assert s.alpha_bar(-1) == 1.0 and s.sigma(-1) == 0.0
    assert s.alpha_bar(999) == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 1000)))
    assert s.sigma(980) == pytest.approx(math.sqrt((1 - s.alpha_bar(980)) / s.alpha_bar(980)))
    t = torch.tensor([-1, 0, 980])
    expected = torch.tensor([1.0, s.alpha_bar(0), s.alpha_bar(980)], dtype=torch.float64)
    assert torch.allclose(s.alpha_bar(t), expected)
    with pytest.raises(ValueError, match=r"\[-1, 999\]"):
        s.alpha_bar(1000)
    with pytest.raises(ValueError):
        s.betas[0] = 1.0  # read-only


def test_schedule_timesteps():
    s = NoiseSchedule()
    seq = s.timesteps(50)
    assert seq[:3] == (980, 960, 940) and seq[-2:] == (0, -1) and len(seq) == 51
    assert s.timesteps(1000) == tuple(range(999, -2, -1))
    assert s.timesteps(1) == (0, -1)
    assert len(s.timesteps(3)) == 4  # exactly n_steps + 1, also when n_steps does not divide T
    for bad in (0, 1001, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_steps"):
            s.timesteps(bad)


def test_schedule_cosine_and_add_noise():
    s = NoiseSchedule(kind="cosine")
    assert np.all(np.diff(s.alphas_cumprod) < 0) and s.betas.max() <= 0.999
    # Nichol & Dhariwal eq. (17) at t = 500 (0-based t ↦ (t+1)/T)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert s.alpha_bar(499) == pytest.approx(f(0.5) / f(0.0), rel=1e-9)
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule(kind="quadratic")
    lin = NoiseSchedule()
    x0, eps = torch.ones(3, 1, 2, 2), torch.full((3, 1, 2, 2), 2.0)
    t = torch.tensor([0, 500, 999])
    xt = lin.add_noise(x0, t, eps)
    a = lin.alpha_bar(t).float()
    assert torch.allclose(xt[:, 0, 0, 0], a.sqrt() + 2 * (1 - a).sqrt())
    assert torch.allclose(lin.add_noise(x0, 500, eps), xt[1:2].expand(3, -1, -1, -1))


# =================================================================================================
# 1. exact DDRM law under a Gaussian prior
# =================================================================================================
@pytest.mark.parametrize(
    "m, aligned, eta, eta_b, n_steps",
    [
        (16, True, 1.0, 1.0, 50),
        (16, True, 0.85, 1.0, 50),
        (16, False, 1.0, 1.0, 50),
        (16, False, 0.85, 1.0, 50),
        (12, True, 0.85, 0.6, 50),  # wide A: Uᵀy padded with zeros, 4 + 2 zero singular values
        (20, False, 0.5, 1.0, 50),  # tall A: Uᵀ drops the 4 components outside the range
        (16, False, 0.85, 0.5, 2),  # t = 500, 0: the init's data term shows in the output
    ],
)
def test_samples_follow_the_exact_ddrm_law(m, aligned, eta, eta_b, n_steps):
    """4 000 samples (σ0 = 0.3) vs the closed-form law of DDRM's output.

    Tolerance: every sample-mean entry and every sample-covariance entry within 4.5 standard errors
    (152 statistics; the largest of 152 independent |N(0, 1)| exceeds 4.5 with probability ≈ 1e-3;
    the seed is fixed). Measured: largest z ≈ 1.7–2.5. Mutations (η < 1 cases): sign of the data
    residual ``ȳ_i − s_i x̄0_i`` flipped → z ≈ 400–850; ``1 − η²`` for ``√(1 − η²)`` → z ≈ 15–45;
    sign of ``σ′·Vᵀε̂`` in the ``s_i = 0`` case → z ≈ 25; of ``σ_t·Vᵀε̂`` in ``Vᵀx̂0`` → divergence.
    """
    op, cov, matrix, y = gaussian_problem(m=m, aligned=aligned)
    samples = run_gaussian(op, cov, y, sigma0=0.3, eta=eta, eta_b=eta_b, n_steps=n_steps)
    mean, law_cov = exact_ddrm_law(cov, op, y, sigma0=0.3, eta=eta, eta_b=eta_b, n_steps=n_steps)
    z_mean, z_cov = z_scores(samples, mean, law_cov)
    assert z_mean < 4.5 and z_cov < 4.5, (z_mean, z_cov)


# =================================================================================================
# 2. the exact posterior, where DDRM is exact
# =================================================================================================
def test_noiseless_aligned_ddim_reproduces_the_exact_posterior():
    """σ0 = 0, prior diagonal in ``V``, η = 0, 250 steps, 10 000 samples vs ``p(x | y)``.

    In the ``V`` basis the posterior is a point mass ``x̄_i = ȳ_i/s_i`` on the 13 observed
    components and the prior ``N(0, λ_i)`` on the 3 with ``s_i = 0``. DDRM sets the observed ones to
    ``ȳ_i/s_i + σ_{t′}·z`` and runs DDIM (deterministic, marginal-preserving as the step → 0) on
    the others, so it samples the posterior up to (a) the output being ``x̂0`` at ``t = 0``, where
    ``σ_0 = 0.01``: observed components scatter by ≈ 0.01, and (b) DDIM's first-order step error on
    the variance, ≈ −4.7/n_steps relative (exact law: −2.0 % at 250 steps, −0.5 % at 1000).
    Tolerance on the whitened missing block ``cov(x̄_i/√λ_i) ≈ I``: 4·√(2/C) + 6/n_steps = 0.081;
    measured 0.040 (variance ratios 0.96–0.975). Breaking the sign of ``σ′·Vᵀε̂`` (or dropping it) collapses the variance: fails.
    """
    n_steps, C = 250, 10_000
    op, cov, matrix, y = gaussian_problem(sigma0=0.0, aligned=True)
    samples = run_gaussian(op, cov, y, sigma0=0.0, eta=0.0, n_steps=n_steps, n_samples=C)
    post_mean, post_cov = gaussian_posterior(cov, matrix, y, 0.0)
    v, s = op.v.numpy(), op.singular_values.numpy()
    coef = samples @ v  # x̄ = Vᵀx per sample
    obs = s > 0
    y_til = (op.Ut(torch.as_tensor(y)).numpy() / np.where(obs, s, 1.0))[obs]
    np.testing.assert_allclose((v.T @ post_mean)[obs], y_til, rtol=1e-9)  # the point mass
    sigma_last = SCHEDULE.sigma(0)
    assert np.abs(coef[:, obs].mean(0) - y_til).max() < 1e-3
    assert coef[:, obs].std(0).max() < 1.2 * sigma_last
    lam = np.diag(v.T @ cov @ v)[~obs]
    np.testing.assert_allclose(lam, np.diag(v.T @ post_cov @ v)[~obs], rtol=1e-9)  # posterior = prior
    w = coef[:, ~obs] / np.sqrt(lam)
    tol = 4 * math.sqrt(2 / C) + 6 / n_steps
    assert np.abs(np.cov(w.T) - np.eye(3)).max() < tol
    assert np.abs(w.mean(0)).max() < 4 / math.sqrt(C)


def test_ddrm_is_not_the_exact_posterior():
    """DDRM with a Gaussian prior diagonal in ``V`` is *not* the exact posterior — not a bug.

    Setting: ``gaussian_problem()`` (σ0 = 0.3, 13 observed + 3 unobserved spectral components,
    ``σ0/s_i`` from 0.1 to 6), 50 steps. Exact law vs posterior, per component of the ``V`` basis
    (both covariances are diagonal there):

    ==========================  ==================  ===========================
    quantity                    η = 1, η_b = 1      η = 0.85, η_b = 1 (paper)
    ==========================  ==================  ===========================
    var / posterior var, s = 0  0.44                0.68
    var / posterior var, s > 0  0.47 – 1.73         0.23 – 0.73
    max |mean error|            1.11 posterior sd   0.66 posterior sd
    ‖cov − post‖_F / ‖post‖_F   0.49                0.68
    ==========================  ==================  ===========================

    Why: DDRM's transition is ``q(x_{t′} | x0, y)`` with the unknown ``x0`` replaced by ``x̂0``. For
    ``s_i = 0`` and η = 1 this is ``x̄′ = x̄0 + σ′ z``: every step throws ``x_t`` away except through
    the denoiser, which shrinks by ``λ/(λ + σ_t²)``, and re-noises with a full-size ``σ′``. The exact
    reverse step (DDPM's posterior mean) keeps a share ``σ′²/σ_t²`` of ``x_t``. The variance of such
    a chain tends to ``(λ + σ²)²/(2λ + σ²) → λ/2`` for fine steps — and indeed with 1 000 steps the
    ratio is 0.49, not closer to 1. Below the crossing ``σ′ = σ0/s_i`` the ``y`` term has weight
    ``√(1 − η²)``, 0 for η = 1: the observed components forget ``y`` (1 000 steps: mean errors up to
    4.6 posterior sd). Smaller η keeps ``y`` but collapses the variance (η = 0.85, 1 000 steps:
    observed ratios 0.07–0.19; η = 0: ≈ 0). What DDRM does guarantee is the oracle marginal
    ``q(x̄_t | x0) = N(x̄0, σ_t²)`` (:func:`test_oracle_marginals`), and it is exact in the noiseless
    ``V``-aligned case with η = 0 (:func:`test_noiseless_aligned_ddim_reproduces_the_exact_posterior`).
    The sampler agrees with the exact DDRM law (:func:`test_samples_follow_the_exact_ddrm_law`);
    here its samples are also checked to be far from the posterior (z > 20 for its mean and its
    covariance).
    """
    op, cov, matrix, y = gaussian_problem()
    v = op.v.numpy()
    observed = op.singular_values.numpy() > 0
    post_mean, post_cov = gaussian_posterior(cov, matrix, y, 0.3)
    post_var = np.diag(v.T @ post_cov @ v)
    # η: (var ratio s = 0, var ratio range s > 0, max |mean error| / posterior sd, relative Frobenius)
    expected = {1.0: (0.44, (0.47, 1.73), 1.11, 0.49), 0.85: (0.68, (0.23, 0.73), 0.66, 0.68)}
    for eta, (ratio_missing, ratio_observed, mean_err, rel_fro) in expected.items():
        mean, law_cov = exact_ddrm_law(cov, op, y, sigma0=0.3, eta=eta, eta_b=1.0, n_steps=50)
        ratio = np.diag(v.T @ law_cov @ v) / post_var
        assert ratio[~observed] == pytest.approx(np.full(3, ratio_missing), abs=0.015)
        assert (ratio[observed].min(), ratio[observed].max()) == pytest.approx(ratio_observed, abs=0.01)
        err_sd = np.abs(v.T @ (mean - post_mean)) / np.sqrt(post_var)
        assert err_sd.max() == pytest.approx(mean_err, abs=0.01)
        fro = np.linalg.norm(law_cov - post_cov) / np.linalg.norm(post_cov)
        assert fro == pytest.approx(rel_fro, abs=0.01)
        samples = run_gaussian(op, cov, y, sigma0=0.3, eta=eta)
        assert min(z_scores(samples, post_mean, post_cov)) > 20


# =================================================================================================
# 3. oracle marginals (Kawar et al. 2022, Sect. 3)
# =================================================================================================
@pytest.mark.parametrize("eta, eta_b", [(0.85, 1.0), (0.3, 0.5)])
def test_oracle_marginals(eta, eta_b):
    """With ``x̂0 = x0`` exactly, ``(x_t/√ᾱ_t − x0)/σ_t ~ N(0, 1)`` at every step and for every case.

    ``A = diag(s)`` on a 160 × 160 image, ``s ∈ {0, 0.01, 0.2, 1, 5}`` (5 120 pixels each), σ0 = 0.2:
    ``σ0/s = 20, 1, 0.2, 0.04`` cross the σ-range at different steps, so each class visits the
    init, data and noisy-measurement cases (and ``s = 0`` the missing case). The oracle returns the
    true ``ε = (x_t/√ᾱ_t − x0)/σ_t``; its per-class mean and std over pixels × 4 samples are checked
    at each of the 50 steps against 0 ± 0.07 and 1 ± 0.05 (the measurement noise is shared by the 4
    samples of a pixel, so the standard error of the std is ≤ 1/√(2·5120) = 0.01). Measured: |mean|
    ≤ 0.024, |std − 1| ≤ 0.016. ``1 − η²`` for ``√(1 − η²)`` shifts the std by ≈ 10 %.
    """
    n, C, sigma0 = 160, 4, 0.2
    gen = torch.Generator().manual_seed(3)
    levels = torch.tensor([0.0, 0.01, 0.2, 1.0, 5.0], dtype=torch.float64)
    cls = torch.arange(n * n).reshape(n, n) % 5
    s = levels[cls]
    x0 = torch.randn(n, n, generator=gen, dtype=torch.float64)
    y = s * x0 + sigma0 * torch.randn(n, n, generator=gen, dtype=torch.float64)
    recorded = []

    def oracle(x_t, t):
        ti = int(t[0])
        eps = (x_t[:, 0] / math.sqrt(SCHEDULE.alpha_bar(ti)) - x0) / SCHEDULE.sigma(ti)
        recorded.append(eps)
        return eps[:, None]

    res = ddrm_sample(oracle, DiagonalOperator(s), y, sigma0=sigma0, n_samples=C, eta=eta, eta_b=eta_b,
                      generator=gen, progress=False)
    assert len(recorded) == 50
    for k, eps in enumerate(recorded):
        for c in range(5):
            e = eps[:, cls == c]
            assert abs(float(e.mean())) < 0.07, (k, c, float(e.mean()))
            assert abs(float(e.std()) - 1) < 0.05, (k, c, float(e.std()))
    torch.testing.assert_close(res.samples, x0.expand(C, n, n), atol=1e-9, rtol=0)


# =================================================================================================
# golden test, reproducibility, operators, options
# =================================================================================================
def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dummy_model(x_t, t):
    """A fixed, deterministic ε-network: ``0.1·x_t + 0.05·sin(z + 2x) + 1e-4·t`` (2 output channels)."""
    n_z, n_x = x_t.shape[-2:]
    zz = torch.arange(n_z, dtype=x_t.dtype)[:, None]
    xx = torch.arange(n_x, dtype=x_t.dtype)[None, :]
    pattern = 0.05 * torch.sin(zz + 2 * xx)
    eps = 0.1 * x_t + pattern + 1e-4 * t.to(x_t.dtype)[:, None, None, None]
    return torch.cat([eps, torch.full_like(eps, float("nan"))], dim=1)  # channel 1 (variance) unused


def blur_problem(shape=(8, 6)):
    # period 5 px: every singular value of both factors is distinct (gaps ≥ 0.005). With period 4 the
    # axial factor has exactly repeated pairs, whose basis LAPACK picks differently per CPU.
    op = SeparableBlur(modulated_gaussian_kernel(1.2, 5.0), gaussian_kernel(1.0), shape)
    zz, xx = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    y = op.apply(torch.cos(0.7 * zz + 0.3 * xx).float())
    return op, y


def test_golden_separable_blur():
    """Regression: fixed dummy network, SeparableBlur 8 × 6, σ0 = 0.1, 20 steps, seed 0.

    Values computed once with this implementation (torch 2.13, CPU; recomputed when the problem moved to
    a non-degenerate spectrum, 2026-12-02), and meant to hold with OpenBLAS's
    Haswell, Zen, Nehalem and Prescott kernels (the blur's SVD signs are canonical,
    :func:`drus.physics.operators.canonical_svd`); any change to the algorithm, the schedule, the order of
    random draws or the operator moves them.
    """
    op, y = blur_problem()
    res = ddrm_sample(dummy_model, op, y, sigma0=0.1, n_samples=3, n_steps=20, generator=seeded(0),
                      progress=False)
    assert isinstance(res, DDRMResult)
    assert res.samples.shape == (3, 8, 6) and res.samples.dtype == torch.float32
    got = res.samples[:, [0, 3, 7], [0, 2, 5]]
    expected = torch.tensor(GOLDEN)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert res.timesteps == NoiseSchedule().timesteps(20)


GOLDEN = [
    [1.0527770519256592, -0.875177800655365, 0.9839017987251282],
    [0.8519443869590759, -1.900884747505188, 1.4520961046218872],
    [1.2869603633880615, -1.827034592628479, 1.2743862867355347],
]


def test_reproducible_and_seed_dependent():
    op, y = blur_problem()
    kw = dict(sigma0=0.1, n_samples=4, n_steps=10, progress=False)
    a = ddrm_sample(dummy_model, op, y, generator=seeded(5), **kw).samples
    b = ddrm_sample(dummy_model, op, y, generator=seeded(5), **kw).samples
    c = ddrm_sample(dummy_model, op, y, generator=seeded(6), **kw).samples
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-2
    assert (a[0] - a[1]).abs().max() > 1e-2  # the C samples differ from one another


def test_model_batch_size_and_trajectory():
    op, y = blur_problem()
    kw = dict(sigma0=0.1, n_samples=5, n_steps=7, progress=False, return_trajectory=True)
    full = ddrm_sample(dummy_model, op, y, generator=seeded(2), **kw)
    chunked = ddrm_sample(dummy_model, op, y, generator=seeded(2), model_batch_size=2, **kw)
    assert torch.equal(full.samples, chunked.samples)
    assert len(full.trajectory) == 7
    assert all(x.shape == (5, 8, 6) and x.device.type == "cpu" for x in full.trajectory)
    assert torch.equal(full.trajectory[-1], full.samples)
    assert full.seconds_total >= full.seconds_model >= 0 and full.seconds_other >= 0
    assert full.seconds_model + full.seconds_other == pytest.approx(full.seconds_total)
    no_traj = ddrm_sample(dummy_model, op, y, sigma0=0.1, n_samples=2, n_steps=3, progress=False)
    assert no_traj.trajectory is None


def test_noiseless_identity_is_data_consistent(device):
    """DENO with σ0 = 0: every component is in the data case, so ``x̂0 = y + O(σ_0)``, σ_0 = 0.01."""
    shape = (6, 5)
    y = torch.linspace(-1, 1, 30, device=device).reshape(shape)
    op = Identity(shape, device=device)
    res = ddrm_sample(dummy_model, op, y, sigma0=0.0, n_samples=3, n_steps=10, generator=seeded(0),
                      progress=False)
    assert res.samples.device.type == device.type and torch.isfinite(res.samples).all()
    # last step: x_0 = √ᾱ_0 (y + σ_0 z), x̂0 = x_0/√ᾱ_0 − σ_0 ε̂, |ε̂| ≲ 0.2
    assert (res.samples - y).abs().max() < 6 * NoiseSchedule().sigma(0)


def test_noiseless_blur_and_noisy_identity_run():
    op, y = blur_problem()
    kw = dict(n_samples=2, n_steps=5, generator=seeded(0), progress=False)
    res = ddrm_sample(dummy_model, op, y, sigma0=0.0, **kw)
    assert torch.isfinite(res.samples).all()
    res = ddrm_sample(dummy_model, Identity((8, 6)), y, sigma0=0.3, **kw)
    assert torch.isfinite(res.samples).all()


def test_one_vt_and_one_v_per_step():
    """Init: ``Uᵀy`` and one ``V``; each step but the last: one ``Vᵀ`` and one ``V``; last: none."""
    op, y = blur_problem()
    counting = CountingOperator(op)
    calls = []
    model = lambda x, t: (calls.append(int(t[0])), dummy_model(x, t))[1]  # noqa: E731
    n_steps = 12
    ddrm_sample(model, counting, y, sigma0=0.1, n_samples=2, n_steps=n_steps, progress=False)
    assert counting.calls == ["Ut", "V"] + ["Vt", "V"] * (n_steps - 1)
    assert calls == list(NoiseSchedule().timesteps(n_steps)[:-1])


# =================================================================================================
# input validation
# =================================================================================================
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(y=torch.zeros(8, 5)), r"output shape \(8, 6\)"),
        (dict(y=torch.full((8, 6), float("nan"))), "NaN"),
        (dict(sigma0=-0.1), "sigma0"),
        (dict(sigma0=float("nan")), "sigma0"),
        (dict(eta=1.5), "eta"),
        (dict(eta_b=-0.1), "eta_b"),
        (dict(n_samples=0), "n_samples"),
        (dict(n_steps=0), "n_steps"),
        (dict(model_batch_size=0), "model_batch_size"),
        (dict(model=lambda x, t: x[:, 0]), r"model returned shape \(2, 8, 6\) for input \(2, 1, 8, 6\)"),
        (dict(model=lambda x, t: x[:, :, :4]), r"expected \[B, ≥1, n_z, n_x\]"),
    ],
)
def test_validation(change, match):
    op, y = blur_problem()
    kw = dict(model=dummy_model, operator=op, y=y, sigma0=0.1, n_samples=2, n_steps=3, progress=False)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        ddrm_sample(kw.pop("model"), kw.pop("operator"), kw.pop("y"), **kw)


def test_validation_operator_and_device():
    op, y = blur_problem()
    with pytest.raises(TypeError, match="SVD view"):
        ddrm_sample(dummy_model, object(), y, sigma0=0.1, progress=False)
    with pytest.raises(ValueError, match=r"operator\.to\('cpu'\)"):
        ddrm_sample(dummy_model, blur_problem()[0].to("meta"), y, sigma0=0.1, progress=False)
