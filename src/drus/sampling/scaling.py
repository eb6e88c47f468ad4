"""The prior's intensity convention, and the scale and noise split of an observation in it.

The prior models *signed reflectivity-like images* ``x`` (reflectivity ``o = m ⊙ p``, or signed
beamformed RF) scaled so that their root-mean-square value is :data:`TARGET_RMS` = 0.25. Unit
speckle then spans about ``[−1, 1]`` (4 standard deviations), like the ``[−1, 1]`` images diffusion
models are trained on, while bright regions may exceed 1 (nothing is clipped).

- Training: every crop is divided by its own RMS and multiplied by 0.25 (:func:`normalise_rms`).
- Reconstruction: the RMS of the unknown ``o`` is estimated from the observation in the spectral
  domain of the operator (:func:`prior_scale`, one rule for every caller), and the observation and
  its noise level are scaled by the same factor, so the sampler works in the prior's units. Results
  are scaled back. :func:`regularised_sigma0` sets the σ0 DDRM runs with (docs/realdata.md).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["TARGET_RMS", "normalise_rms", "estimate_rms", "prior_scale", "regularised_sigma0"]

TARGET_RMS = 0.25


def normalise_rms(image: np.ndarray, *, target: float = TARGET_RMS) -> np.ndarray:
    """Scale ``image`` so that ``sqrt(mean(image²)) = target`` (zero images are returned as is)."""
    rms = float(np.sqrt(np.mean(np.square(image, dtype=np.float64))))
    return image if rms == 0 else (image * (target / rms)).astype(np.float32)


def estimate_rms(operator, y: torch.Tensor, sigma0: float, *, fraction: float = 0.5) -> float:
    """RMS of the unknown image ``o`` estimated from ``y = A o + n`` in the SVD basis of ``A``.

    For a white unknown (speckle ``m ⊙ p`` is white whatever ``p``) ``E[ȳ_i²] = s_i² E[o²] + σ0²``
    with ``ȳ = Uᵀy``, so ``E[o²] ≈ mean_i (ȳ_i² − σ0²) / s_i²`` over the best-determined components
    (the ``fraction`` with the largest ``s_i``).
    """
    s = operator.singular_values.reshape(-1).to(torch.float64)
    yb = operator.Ut(y).reshape(-1).to(torch.float64)
    k = max(1, int(fraction * int((s > 0).sum())))
    idx = torch.argsort(s, descending=True)[:k]
    power = (yb[idx] ** 2 - sigma0**2) / s[idx] ** 2
    ms = float(power.mean())
    if not ms > 0:
        raise ValueError(
            "the observation carries no signal above the stated noise level (estimated E[o²] ≤ 0): "
            f"check sigma0 = {sigma0!r}"
        )
    return ms**0.5


def prior_scale(operator, y, sigma0: float) -> tuple[float, str]:
    """``(scale, source)``: units of the unknown per prior unit, so that ``o / scale`` has RMS 0.25.

    The rule, the same for DRUS, DENO and every command:

    - ``"estimated"``: :func:`estimate_rms` with the noise power ``σ0²`` subtracted — unbiased when
      the stated σ0 is the noise level of ``y``.
    - ``"noise-inclusive"``: when the stated σ0 is at or above the observation's power per
      component (noise-subtracted power ≤ 0; e.g. the PICMUS resolution sets, whose DENO inputs have
      RMS 0.045/0.036 for σ0 = 0.11/0.16), the stated σ0 cannot be the noise of ``y``, and the RMS is
      taken with the noise included (``σ0 = 0``). That overestimates the unknown's scale: the unknown
      comes out smaller in prior units, the noise too. Logged as a warning.
    """
    import logging

    y_t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, dtype=torch.float32)
    try:
        return estimate_rms(operator, y_t, float(sigma0)) / TARGET_RMS, "estimated"
    except ValueError:
        logging.getLogger(__name__).warning(
            "σ0 = %g is at or above the observation's power per component: prior scale from the noise-inclusive RMS",
            sigma0)
        return estimate_rms(operator, y_t, 0.0) / TARGET_RMS, "noise-inclusive"


def regularised_sigma0(operator, *, sigma_noise: float, scale: float, prior_fraction: float) -> float:
    """The σ0 given to DDRM so that the prior decides at least ``prior_fraction`` of the components.

    In the SVD basis, component ``i`` of the observation is ``ȳ_i = s_i ō_i + noise`` with ``ō_i`` of
    RMS ``ρ = scale · TARGET_RMS``. DDRM follows the measurement where ``s_i ρ`` exceeds σ0 and the
    prior where it does not. With the true noise level of a well-conditioned operator (the plane-wave
    ``BH``: 56 % of its components above 0.1·s_1) almost every component is data-driven; the sample
    spread of DRUSvar then measures the noise, uniform over the image, not the echogenicity
    (docs/realdata.md). This rule raises σ0 to ``ρ · q_f(s)``, ``q_f`` the ``f``-quantile of the
    kept singular values, never below the noise level:

        σ0 = max(σ_noise, ρ · q_f(s)).

    ``prior_fraction = 0`` returns ``sigma_noise`` (the paper's use of σ0 as the noise level).

    Parameters
    ----------
    operator : SVDOperator
        Its ``singular_values`` (zeros for unobserved components).
    sigma_noise : float
        The noise level of ``y`` (stated, or :func:`drus.sampling.noise.estimate_sigma0`).
    scale : float
        Units of the unknown per prior unit (:func:`prior_scale`).
    prior_fraction : float
        ``f`` in [0, 1).
    """
    f = float(prior_fraction)
    if not 0.0 <= f < 1.0:
        raise ValueError(f"prior_fraction must lie in [0, 1), got {prior_fraction!r}")
    if f == 0.0:
        return float(sigma_noise)
    s = operator.singular_values.reshape(-1)
    s = s[s > 0].double().cpu().numpy()
    return max(float(sigma_noise), float(scale) * TARGET_RMS * float(np.quantile(s, f)))
