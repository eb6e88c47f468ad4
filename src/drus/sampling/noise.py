"""The noise level σ0 of an observation ``y = A o + n``, estimated from the observation itself.

DDRM (:mod:`drus.sampling.ddrm`) models the observation as ``y = A o + σ0 z`` with white ``z``; in the SVD
basis ``A = U S Vᵀ`` that is ``ȳ_i = (Uᵀy)_i = s_i ō_i + σ0 z̄_i``. Two sources of σ0 in ``y``:

1. **The residual outside the range of ``U``** (``source`` starts with ``"residual"``). When ``A``
   has fewer kept components ``k`` than observations ``n_obs`` (a rectangular ``BH`` with the
   unknowns on a coarser grid than ``B y``, or components dropped below the threshold), the part of
   ``y`` outside the span of the kept left singular vectors, ``r = y − U Uᵀ y``, holds ``n_obs − k``
   dimensions of noise and (next to) no signal::

       σ0 = ‖y − U Uᵀ y‖ / sqrt(n_obs − k)

   Used when ``n_obs − k ≥`` :data:`MIN_RESIDUAL_DOF`; fewer residual dimensions join the fit below.
2. **A spectral fit** (``source`` starts with ``"spectral fit"``) otherwise. For an unknown whose
   coefficients ``ō_i`` have one variance ``ρ²`` (speckle ``o = m ⊙ p`` with white ``m``, the
   assumption of :func:`drus.sampling.scaling.estimate_rms`), ``ȳ_i ~ N(0, ρ² s_i² + σ0²)``: the components the
   operator barely sees (``s_i ρ ≪ σ0``) carry only noise. ``(ρ², σ0²)`` is the maximum-likelihood
   fit of that model to all kept components (and the residual dimensions, ``s = 0``). It needs components with ``s_i ρ`` not far above σ0:
   at very high SNR (σ0 below ``ρ`` times the smallest kept ``s_i``) the noise is not identifiable
   and the estimate is an upper bound.

Both assume white noise in ``y``'s domain, DDRM's model. (Noise added to channel data reaches
``B y`` coloured by ``B``; then σ0 is the level DDRM's white model best matches in the operator's
basis, not the per-pixel RMS of ``B n``.)

Validated in ``tests/sampling/test_noise.py`` on tiny geometries with known σ0 over SNRs spanning two decades.

A cross-check from the channel data (:func:`channel_noise`, :func:`channel_noise_in_by`): white
channel noise fills the whole band up to fs/2, the echoes only the transducer's band, so the power
above the pulse band gives the channel noise std σn, and ``B n`` then has the per-pixel RMS
``σn ‖B‖_F / sqrt(n_pixels)``. That is the RMS of the (coloured) noise in ``B y``, not DDRM's white
σ0; ``drus reconstruct`` reports it beside the estimate it uses.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

__all__ = ["MIN_RESIDUAL_DOF", "MIN_SPECTRAL_SPAN", "estimate_sigma0", "residual_sigma0", "spectral_fit_sigma0", "channel_noise",
           "channel_noise_in_by"]

log = logging.getLogger(__name__)

#: Fewest residual dimensions ``n_obs − k`` for the residual estimator (its relative standard error
#: is ``1/sqrt(2 (n_obs − k))``: 9 % at 64).
MIN_RESIDUAL_DOF = 64

#: Ratio ``s_max / s_min`` of the kept components above which the spectral fit alone is used
#: (:func:`estimate_sigma0`): 40 dB, so that the weakest components see the noise at any usable SNR.
MIN_SPECTRAL_SPAN = 100.0


def _as_tensor(operator, y) -> torch.Tensor:
    y_t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, dtype=torch.float32)
    if tuple(y_t.shape[-len(operator.out_shape):]) != tuple(operator.out_shape):
        raise ValueError(f"y must have the operator's output shape {tuple(operator.out_shape)}, got {tuple(y_t.shape)}")
    if not torch.isfinite(y_t).all():
        raise ValueError("y contains NaN or inf")
    return y_t.reshape(tuple(operator.out_shape))


def residual_sigma0(operator, y) -> tuple[float, int]:
    """``(‖y − U Uᵀ y‖ / sqrt(n_obs − k), n_obs − k)``: the noise outside the span of the kept ``U``.

    ``k`` is the number of components with ``s_i > 0``. Raises ValueError when ``n_obs ≤ k``.
    """
    y_t = _as_tensor(operator, y)
    s = operator.singular_values.reshape(-1)
    k = int((s > 0).sum())
    n_obs = int(np.prod(operator.out_shape))
    dof = n_obs - k
    if dof <= 0:
        raise ValueError(f"no residual: the operator keeps {k} components for {n_obs} observations")
    dev = s.device
    yb = operator.Ut(y_t[None].to(dev))
    r = y_t[None].to(dev).double() - operator.U(yb).double()
    return float(r.norm() / math.sqrt(dof)), dof


def spectral_fit_sigma0(operator, y, *, residual: tuple[float, int] | None = None) -> tuple[float, float]:
    """``(σ0, ρ)``: maximum-likelihood fit of ``(Uᵀy)_i ~ N(0, ρ² s_i² + σ0²)`` over the kept components.

    ``residual = (σ_r, dof)`` (from :func:`residual_sigma0`) adds ``dof`` noise-only dimensions of
    mean power ``σ_r²`` to the likelihood.
    """
    from scipy.optimize import minimize

    y_t = _as_tensor(operator, y)
    s_all = operator.singular_values.reshape(-1)
    yb = operator.Ut(y_t[None].to(s_all.device)).reshape(-1).double().cpu().numpy()
    s = s_all.double().cpu().numpy()
    keep = s > 0
    if keep.sum() < 16:
        raise ValueError(f"too few components with s > 0 ({int(keep.sum())}) to fit the noise level")
    s2, p = s[keep] ** 2, yb[keep] ** 2
    scale = float(np.mean(p))  # fit in units of the mean power: well-conditioned whatever y's units
    if scale <= 0:
        raise ValueError("the observation is zero in every kept component: no noise level to estimate")
    s2n, pn = s2 / s2.max(), p / scale
    order = np.argsort(s2n)
    low = pn[order[: max(8, order.size // 10)]].mean()  # the least-seen tenth: mostly noise
    high = pn[order[-max(8, order.size // 10):]].mean()

    r_pow, r_dof = (0.0, 0) if residual is None else (residual[0] ** 2 / scale, int(residual[1]))

    def nll(theta):
        a, b = np.exp(theta)
        v = a * s2n + b
        f = np.sum(np.log(v) + pn / v) + r_dof * (np.log(b) + r_pow / b)
        g = (1 / v - pn / v**2)
        return f, np.array([np.sum(g * s2n) * a, (np.sum(g) + r_dof * (1 / b - r_pow / b**2)) * b])

    x0 = np.log([max(high, 1e-12), max(low, 1e-12)])
    res = minimize(nll, x0, jac=True, method="L-BFGS-B", bounds=[(-60, 20), (-60, 20)])
    a, b = np.exp(res.x)
    rho = math.sqrt(a * scale / s2.max())
    return math.sqrt(b * scale), rho


def estimate_sigma0(operator, y) -> tuple[float, str]:
    """σ0 of ``y = A o + σ0 z`` from ``y`` alone (module docstring): ``(sigma0, source)``.

    When the kept spectrum spans at least :data:`MIN_SPECTRAL_SPAN` (the plane-wave ``BH``: 60 dB),
    its weakest components hold noise alone and the spectral fit over the kept components is used,
    *without* the residual dimensions. The residual outside the range is exact for noise that is
    white in ``y``'s domain, but a beamformed observation ``B y`` carries ``B n``, which the matched
    filter concentrates where ``BH`` sees: on the PICMUS simu_cont ``By`` the residual gives 20
    where the spectral fit gives 68 (the paper's σ0: 65; docs/realdata.md). Operators with a narrow
    spectrum (tiny geometries) fall back to the residual, then to the fit with the residual.

    Parameters
    ----------
    operator : SVDOperator
        ``A`` with its SVD view (a :class:`drus.physics.decompose.DecomposedBH`, the separable blur…).
    y : array or tensor
        The observation, ``operator.out_shape`` (e.g. ``B y`` ``[n_z, n_x]``).

    Returns
    -------
    sigma0 : float
        In the units of ``y``.
    source : str
        How it was obtained, for printing and saving with the results.
    """
    s = operator.singular_values.reshape(-1)
    k = int((s > 0).sum())
    n_obs = int(np.prod(operator.out_shape))
    kept = s[s > 0]
    span = float(kept.max() / kept.min()) if k else 0.0
    if span >= MIN_SPECTRAL_SPAN:
        sigma0, rho = spectral_fit_sigma0(operator, y)
        source = (f"spectral fit E[(Uᵀy)_i²] = ρ² s_i² + σ0² over the {k} kept components, spanning "
                  f"{20 * math.log10(span):.0f} dB (ρ = {rho:.4g})")
    elif n_obs - k >= MIN_RESIDUAL_DOF:
        sigma0, dof = residual_sigma0(operator, y)
        source = f"residual outside the range of U: ‖y − U Uᵀy‖ / sqrt({n_obs} − {k})"
    else:
        residual = residual_sigma0(operator, y) if n_obs > k else None
        sigma0, rho = spectral_fit_sigma0(operator, y, residual=residual)
        source = (f"spectral fit E[(Uᵀy)_i²] = ρ² s_i² + σ0² over the {k} kept components"
                  + (f" and the {n_obs - k} residual dimensions" if residual else "") + f" (ρ = {rho:.4g})")
    log.info("σ0 = %.4g (%s)", sigma0, source)
    return float(sigma0), source


def channel_noise(channel_data: np.ndarray, *, sampling_frequency: float, center_frequency: float,
                  bandwidth: float) -> float:
    """Std of white channel noise from the spectrum above the pulse band.

    The band used is ``[f0 (1 + 1.5·BW), 0.95 fs/2]``, where a Gaussian pulse of fractional −6 dB
    bandwidth ``BW`` is below −50 dB: there the periodogram (Hann window, averaged over channels)
    holds the noise alone, ``E|X_k|² = σn² Σ w²``.

    Parameters
    ----------
    channel_data : numpy.ndarray
        ``[n_samples, n_elements]`` RF.
    sampling_frequency, center_frequency : float
        Hz.
    bandwidth : float
        Fractional −6 dB bandwidth of the pulse-echo spectrum.
    """
    y = np.asarray(channel_data, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 64:
        raise ValueError(f"channel_data must be [n_samples ≥ 64, n_elements], got shape {y.shape}")
    lo, hi = center_frequency * (1 + 1.5 * bandwidth), 0.95 * sampling_frequency / 2
    if lo >= hi:
        raise ValueError(
            f"no noise-only band above the pulse: f0 (1 + 1.5 BW) = {lo / 1e6:.3g} MHz ≥ 0.95 fs/2 = {hi / 1e6:.3g} MHz")
    w = np.hanning(y.shape[0])
    spec = np.abs(np.fft.rfft((y - y.mean(axis=0)) * w[:, None], axis=0)) ** 2
    f = np.fft.rfftfreq(y.shape[0], 1.0 / sampling_frequency)
    band = (f >= lo) & (f <= hi)
    if band.sum() < 8:
        raise ValueError(f"the band above the pulse, {lo / 1e6:.3g}–{hi / 1e6:.3g} MHz, holds {int(band.sum())} "
                         "frequency bins (< 8): too narrow to measure the noise")
    return float(np.sqrt(spec[band].mean() / np.sum(w**2)))


def channel_noise_in_by(beamformer, sigma_n: float) -> float:
    """Per-pixel RMS of ``B n`` for white channel noise of std ``sigma_n``: ``σn ‖B‖_F / sqrt(n_pixels)``."""
    B = beamformer.B
    return float(sigma_n * np.sqrt(np.sum(np.square(B.data, dtype=np.float64)) / B.shape[0]))
