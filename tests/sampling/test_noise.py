"""σ0 from the observation (drus.sampling.noise): accuracy on simulations with known noise, tiny geometries.

``y = BH o + σ0 z`` with white speckle ``o`` and white ``z`` (DDRM's noise model), σ0 spanning two
decades of SNR; the estimate must be within ±20 % of the true σ0 for every realisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drus.physics.beamform import MatchedFilterBeamformer
from drus.physics.decompose import decompose_bh
from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave
from drus.sampling.noise import MIN_RESIDUAL_DOF, estimate_sigma0, residual_sigma0
from drus.physics.operators import SeparableBlur, gaussian_kernel

PROBE = LinearProbe(16, 0.3e-3, 5.208e6, 0.67)
WAVE = PlaneWave(20.832e6, 1540.0)
GRID = ImageGrid.from_extent(x_min=-1.5e-3, x_max=1.5e-3, z_min=5e-3, z_max=8e-3, n_x=16, n_z=16)
REL_NOISE = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)  # σ0 / RMS(BH o): SNR from 50 dB down to 10 dB


def observations(bf_or_op, shape, rel, n=4, seed=0):
    """``n`` pairs ``(y, σ0)`` with σ0 = rel · RMS of the noise-free observation."""
    rng = np.random.default_rng([seed, int(rel * 1e6)])
    apply = bf_or_op.BH.apply if hasattr(bf_or_op, "BH") else bf_or_op.apply
    for _ in range(n):
        o = torch.from_numpy(rng.standard_normal(shape)).float()
        clean = apply(o[None])[0].double().numpy()
        sigma = rel * float(np.sqrt(np.mean(clean**2)))
        yield clean + sigma * rng.standard_normal(clean.shape), sigma


@pytest.fixture(scope="module")
def rectangular():
    """``B y`` on 16 × 16, unknowns on 8 × 8: 192 residual dimensions."""
    bf = MatchedFilterBeamformer(PROBE, WAVE, GRID, unknown_grid=GRID.resized(8, 8))
    return bf, decompose_bh(bf, cache=False, progress=False)


@pytest.fixture(scope="module")
def square():
    """Square 16² ``BH``: 59 components below 1e-3·s1, fewer than MIN_RESIDUAL_DOF → the spectral fit."""
    bf = MatchedFilterBeamformer(PROBE, WAVE, GRID)
    return bf, decompose_bh(bf, cache=False, progress=False)


@pytest.mark.parametrize("rel", REL_NOISE)
def test_residual_estimator_on_a_rectangular_bh(rectangular, rel):
    bf, op = rectangular
    for y, sigma in observations(bf, bf.unknown_grid.shape, rel):
        est, source = estimate_sigma0(op, y)
        assert source.startswith("residual") and "256 − 64" in source
        assert est == pytest.approx(sigma, rel=0.2)


@pytest.mark.parametrize("rel", REL_NOISE[1:])  # not 50 dB: 197 components do not pin σ0 that far below ρ·s
def test_spectral_fit_on_a_square_bh(square, rel):
    bf, op = square
    assert 0 < 256 - op.n_kept < MIN_RESIDUAL_DOF
    for y, sigma in observations(bf, GRID.shape, rel):
        est, source = estimate_sigma0(op, y)
        assert source.startswith("spectral fit") and "60 dB" in source  # wide spectrum: the fit alone
        assert est == pytest.approx(sigma, rel=0.2)


@pytest.mark.parametrize("rel", (3e-2, 1e-1, 3e-1))
def test_spectral_fit_without_any_residual(rel):
    """A full-rank blur (every component kept): the fit alone, down to 30 dB SNR."""
    k = gaussian_kernel(2.0)
    op = SeparableBlur(k, k, (32, 32))
    assert int((op.singular_values > 0).sum()) == 32 * 32
    for y, sigma in observations(op, (32, 32), rel):
        est, source = estimate_sigma0(op, y)
        assert "residual" not in source
        assert est == pytest.approx(sigma, rel=0.2)


@pytest.mark.parametrize("rel", (1e-2, 1e-1))
def test_noise_concentrated_in_the_range_is_found(square, rel):
    """Noise inside range(U) only, like ``B n`` (the matched filter puts it where ``BH`` sees): the
    spectral fit finds it; the residual outside the range sees none of it."""
    bf, op = square
    rng = np.random.default_rng(5)
    clean = bf.BH.apply(torch.from_numpy(rng.standard_normal((1, *GRID.shape))).float())[0].double()
    sigma = rel * float(clean.std())
    keep = (op.singular_values > 0).double()
    c = torch.from_numpy(rng.standard_normal((1, *op.spectral_shape))) * sigma * keep
    n = op.U(c.float())[0].double()  # (Uᵀn)_i = c_i, std σ, on every kept component; nothing outside
    est, _ = estimate_sigma0(op, clean + n)
    assert est == pytest.approx(sigma, rel=0.2)
    assert residual_sigma0(op, clean + n)[0] == pytest.approx(residual_sigma0(op, clean)[0], rel=0.01)


def test_residual_is_exact_on_noise_outside_the_range(rectangular):
    """Noise orthogonal to range(U) is returned in full; the signal leaves no residual."""
    bf, op = rectangular
    o = torch.randn(1, *bf.unknown_grid.shape)
    clean = bf.BH.apply(o)[0]
    sigma_clean, dof = residual_sigma0(op, clean)
    assert dof == 256 - 64 and sigma_clean < 1e-3 * float(clean.std())
    n = torch.randn(*GRID.shape, dtype=torch.float64)
    n_perp = n - op.U(op.Ut(n[None].float())).double()[0]
    est, _ = residual_sigma0(op, clean.double() + n_perp)
    assert est == pytest.approx(float(n_perp.norm()) / dof**0.5, rel=1e-3)


def test_bad_observations_are_refused(rectangular):
    _, op = rectangular
    with pytest.raises(ValueError, match="output shape"):
        estimate_sigma0(op, np.zeros((8, 8)))
    y = np.zeros(GRID.shape)
    y[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_sigma0(op, y)


@pytest.mark.parametrize("sigma_n", (0.01, 0.1))
def test_channel_noise_from_the_band_above_the_pulse(sigma_n):
    """Simulated echoes + white channel noise of known std: σn within ±10 %, RMS of B n within ±20 %."""
    from drus.sampling.noise import channel_noise, channel_noise_in_by
    from drus.physics.pulse import gaussian_pulse

    # a 4 MHz, 50 % pulse sampled at 20.8 MHz: 7–9.9 MHz is noise only (the PICMUS pulse at fs = 4 f0 has no such band)
    pulse = gaussian_pulse(center_frequency=4e6, bandwidth=0.5, sampling_frequency=20.832e6)
    bf = MatchedFilterBeamformer(PROBE, WAVE, GRID, pulse=pulse)
    rng = np.random.default_rng(7)
    y = bf.model.simulate(rng.standard_normal(GRID.shape))
    y = y / np.abs(y).max()
    n = sigma_n * rng.standard_normal(y.shape)
    est = channel_noise(y + n, sampling_frequency=20.832e6, center_frequency=4e6, bandwidth=0.5)
    assert est == pytest.approx(sigma_n, rel=0.1)
    by_noise = bf.beamform(n.astype(np.float32))
    assert channel_noise_in_by(bf, est) == pytest.approx(float(np.sqrt(np.mean(by_noise**2))), rel=0.2)


def test_channel_noise_needs_a_band_above_the_pulse():
    from drus.sampling.noise import channel_noise

    y = np.random.default_rng(0).standard_normal((400, 4))
    with pytest.raises(ValueError, match="no noise-only band"):  # PICMUS: fs = 4 f0
        channel_noise(y, sampling_frequency=20.832e6, center_frequency=5.208e6, bandwidth=0.67)
    with pytest.raises(ValueError, match="too narrow"):
        channel_noise(y, sampling_frequency=20.832e6, center_frequency=5.2e6, bandwidth=0.6)
