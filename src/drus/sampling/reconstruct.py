"""DRUS reconstruction of one observation: normalise, sample with DDRM, estimate, scale back.

``reconstruct(operator, y, sigma0=…, model=…)`` is the library entry point used by ``drus demo`` and
``drus reconstruct``: it puts the observation in the prior's units (:mod:`drus.sampling.scaling`: the unknown is
scaled to RMS 0.25), draws ``C`` DDRM samples (:func:`drus.sampling.ddrm.ddrm_sample`), and returns
DRUSmean and DRUSvar (paper eqs. (5)-(6)) in the units of the original unknown.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from drus.sampling.config import SamplerConfig
from drus.sampling.scaling import prior_scale, regularised_sigma0
from drus.sampling.ddrm import ddrm_sample
from drus.sampling.estimators import drus_mean, drus_var, drus_var_pooled

__all__ = ["Reconstruction", "reconstruct", "deno"]

log = logging.getLogger(__name__)

@dataclasses.dataclass
class Reconstruction:
    """Output of :func:`reconstruct` (numpy, ``[n_z, n_x]`` unless noted).

    Attributes
    ----------
    samples : ``[C, n_z, n_x]`` DDRM samples ``ô_c`` in the units of the unknown.
    mean : DRUSmean. var : DRUSvar ``p̂`` (eq. (6), exponent ``1/(2β)``).
    scale : the factor between prior units and the unknown's units.
    sigma0_sampler : the σ0 DDRM ran with, in the units of ``y`` (the noise level, or the regularised
        level of :func:`drus.sampling.scaling.regularised_sigma0` when ``prior_fraction > 0``).
    timings : seconds (total, network, other) from the sampler.
    sampler : the :class:`~drus.sampling.config.SamplerConfig` it ran with.
    scale_source : how ``scale`` was set: ``"given"``, or the rule of :func:`drus.sampling.scaling.prior_scale`
        (``"estimated"`` / ``"noise-inclusive"``).
    """

    samples: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    scale: float
    timings: dict
    scale_source: str = "given"
    sigma0_sampler: float = float("nan")
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)

    def var_pooled(self, window: int = 3) -> np.ndarray:
        """The pooled DRUSvar of these samples (:func:`drus.sampling.estimators.drus_var_pooled`, the sampler's β)."""
        return drus_var_pooled(self.samples, window=window, beta=self.sampler.beta)


def reconstruct(
    operator,
    y,
    *,
    sigma0: float,
    model: torch.nn.Module,
    sampler: SamplerConfig = SamplerConfig(),
    device="cpu",
    scale: float | None = None,
    progress: bool = True,
) -> Reconstruction:
    """DRUS/DRUSvar for ``y = A o + n`` (``A`` an :class:`~drus.physics.operators.SVDOperator`).

    Parameters
    ----------
    operator : SVDOperator
        The degradation with its SVD view (separable blur, identity for DENO, ``BH``).
    y : array or tensor
        Observation of shape ``operator.out_shape``.
    sigma0 : float
        Noise standard deviation of ``y`` (same units as ``y``).
    model : torch.nn.Module
        Prior ε-network (1-channel input).
    sampler : SamplerConfig
        C, steps, η, η_B, β, seed and the prior/data split (default: the paper's). With
        ``prior_fraction = 0`` DDRM runs with ``sigma0``; with ``f > 0`` with the regularised level
        of :func:`drus.sampling.scaling.regularised_sigma0`, so that the prior decides at least the fraction
        ``f`` of the components (the scale still comes from the noise level ``sigma0``).
    scale : float, optional
        Units of the unknown per prior unit; default: estimated so that the unknown has RMS 0.25
        in prior units (:func:`drus.sampling.scaling.prior_scale`, with ``sigma0`` as the noise level).
    """
    if not isinstance(sampler, SamplerConfig):
        raise TypeError(f"sampler must be a drus.sampling.config.SamplerConfig, got {type(sampler).__name__}")
    device = torch.device(device)
    if (y.is_complex() if isinstance(y, torch.Tensor) else np.iscomplexobj(y)):
        raise TypeError("y is complex; drus reconstructs real (RF) observations — pass the real part explicitly "
                        "if that is what you mean, or an RF rather than an IQ image")
    if not (np.isfinite(sigma0) and sigma0 >= 0):
        raise ValueError(f"sigma0 must be a finite number ≥ 0, got {sigma0!r}")
    y64 = (y.detach().cpu().double().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, dtype=np.float64))
    if y64.shape == tuple(operator.out_shape) and np.isfinite(y64).all():
        peak = float(np.abs(y64).max(initial=0.0))
        if peak == 0.0:
            raise ValueError("y is all zeros: there is nothing to reconstruct")
        if not _UNIT_RANGE[0] <= peak <= _UNIT_RANGE[1]:
            # far from unit scale (e.g. a By × 1e30): float32 products of the samples would overflow or
            # underflow. Reconstruct y / peak (the samples are linear in y's units) and scale back in float64.
            log.info("observation peak %.3g: reconstructing y / peak and scaling the results back", peak)
            rec = reconstruct(operator, y64 / peak, sigma0=float(sigma0) / peak, model=model, sampler=sampler,
                              device=device, scale=None if scale is None else scale / peak, progress=progress)
            return _rescaled(rec, peak)
    y_t = torch.as_tensor(y64, dtype=torch.float32)  # the same float32 values as a direct cast
    if tuple(y_t.shape) != tuple(operator.out_shape):
        raise ValueError(f"y must have the operator's output shape {tuple(operator.out_shape)}, got {tuple(y_t.shape)}")
    if not torch.isfinite(y_t).all():
        raise ValueError("y contains NaN or inf")
    if operator.singular_values.device != device:  # a copy: the caller's operator stays where it is
        operator = operator.moved(device=device)
    y_t = y_t.to(device)
    source = "given"
    if scale is None:
        scale, source = prior_scale(operator, y_t, float(sigma0))
    log.info("prior-unit scale %.4g (%s; observation divided by it)", scale, source)
    f = sampler.prior_fraction
    sigma_s = regularised_sigma0(operator, sigma_noise=float(sigma0), scale=float(scale), prior_fraction=f)
    if f:
        log.info("sampler σ0 %.4g (noise level %.4g, prior decides ≥ %.0f %% of the components)", sigma_s, sigma0,
                 100 * f)
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
    if sampler.seed is not None:
        gen.manual_seed(int(sampler.seed))
    res = ddrm_sample(
        model, operator, y_t / scale, sigma0=sigma_s / scale, n_samples=sampler.n_samples, n_steps=sampler.n_steps,
        eta=sampler.eta, eta_b=sampler.eta_b, generator=gen, progress=progress,
        schedule=getattr(model, "noise_schedule", None),
    )
    samples = (res.samples.float() * scale).cpu().numpy()
    timings = {k: getattr(res, k) for k in ("seconds_total", "seconds_model", "seconds_other") if hasattr(res, k)}
    var = (drus_var(samples, beta=sampler.beta) if sampler.n_samples >= 2
           else np.full(samples.shape[1:], np.nan, np.float32))
    return Reconstruction(samples=samples, mean=drus_mean(samples), var=var, scale=float(scale), timings=timings,
                          scale_source=source, sigma0_sampler=float(sigma_s), sampler=sampler)


#: Peak |y| outside this range is reconstructed as y / peak (float32 samples and their squares stay in range).
_UNIT_RANGE = (1e-12, 1e12)


def _as_float32_if_exact_range(a: np.ndarray) -> np.ndarray:
    """float32 when every value survives the cast (finite, no non-zero flushed to zero), else float64."""
    with np.errstate(over="ignore", under="ignore"):
        a32 = a.astype(np.float32)
    if np.isfinite(a32).all() and np.count_nonzero(a32) == np.count_nonzero(a):
        return a32
    return a


def _rescaled(rec: Reconstruction, factor: float) -> Reconstruction:
    """``rec`` of ``y / factor`` in the units of ``y``: samples and mean × factor, DRUSvar × factor^(1/β)."""
    samples = rec.samples.astype(np.float64) * factor
    var = rec.var.astype(np.float64) * factor ** (1.0 / rec.sampler.beta)  # p̂ = (Σ|ô − mean|² / (C − 1))^(1/(2β))
    mean = rec.mean.astype(np.float64) * factor
    return Reconstruction(samples=_as_float32_if_exact_range(samples), mean=_as_float32_if_exact_range(mean),
                          var=_as_float32_if_exact_range(var), scale=rec.scale * factor, timings=rec.timings,
                          scale_source=rec.scale_source, sigma0_sampler=rec.sigma0_sampler * factor, sampler=rec.sampler)


def deno(image, *, sigma0: float, model: torch.nn.Module, **kwargs) -> Reconstruction:
    """DENO (Asgariandehkordi et al.; paper ref. [17]): the same sampler with ``A = I`` on a beamformed image.

    ``image`` is a signed beamformed image ``[n_z, n_x]`` (e.g. DAS RF or the ``by_deno`` files,
    normalised to max 1) and ``sigma0`` its noise std in the same units. Keyword arguments as
    :func:`reconstruct`; ``.mean`` is DENOmean. The sampler's ``prior_fraction`` is set to 0: with
    ``A = I`` every component has the same singular value, so there is no split to choose.
    """
    from drus.physics.operators import Identity

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D [n_z, n_x], got shape {image.shape}")
    sampler = kwargs.pop("sampler", SamplerConfig()).replace(prior_fraction=0.0)
    return reconstruct(Identity(image.shape), image, sigma0=sigma0, model=model, sampler=sampler, **kwargs)
