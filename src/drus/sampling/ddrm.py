"""DDRM sampling (Kawar et al. 2022) in the SVD basis of a linear operator, as DRUS uses it.

Code names ↔ symbols of Kawar et al. (2022), Sect. 3.2, and docs/method.md §4
-----------------------------------------------------------------------------
===================  ==========================================================================
code                 symbol / meaning
===================  ==========================================================================
``operator``         ``H = U S Vᵀ`` (the paper's ``H_d``; ``BH`` for DRUS, ``I`` for DENO)
``s``                ``s_i``, the singular values (``operator.singular_values``, shape
                     ``spectral_shape``); ``s_i = 0`` beyond the rank
``y_bar``            ``ȳ = Uᵀy`` — *not* divided by ``s``: the formulas below write ``ȳ_i/s_i``
``y_tilde``          ``ȳ_i/s_i`` (0 where ``s_i = 0``): DDRM's ``ȳ`` (Sect. 3.2)
``sigma0``           ``σ_y`` (DDRM) = ``σ0`` (drus): std of the noise on ``y``
``r``                ``σ0/s_i``: std of the noise on ``ȳ_i/s_i``
``sigma_t``          ``σ_t = √((1 − ᾱ_t)/ᾱ_t)``, ``sigma_next`` = ``σ′ = σ_{t′}``
``x_t``              the network's input, ``x_t = √ᾱ_t·(x0 + σ_t ε)`` (image space)
``x_bar``            ``x̄_t = Vᵀx_t/√ᾱ_t`` (DDRM's variable, "σ" parametrisation, spectral space)
``eps``              ``ε̂ = model(x_t, t)[:, 0]``; ``eps_bar = Vᵀε̂``
``x0``               ``x̂0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t`` (image), ``x0_bar = Vᵀx̂0`` (DDRM's ``x̄_θ,t``)
``eta``, ``eta_b``   ``η`` and ``η_b`` of Sect. 3.2 (DRUS: 0.85 and 1)
``z``                ``z_i ~ N(0, 1)``, fresh at every step
===================  ==========================================================================

Linearity saves transforms: since ``x_t = √ᾱ_t·V x̄_t`` we keep ``x̄_t`` and never apply ``Vᵀ`` to
``x_t``, and ``Vᵀx̂0 = x̄_t − σ_t·Vᵀε̂``. A step therefore costs one ``Vᵀ`` (of ``ε̂``) and one ``V``
(to form ``x_{t′}``), versus three ``Vᵀ`` and one ``V`` in the reference implementation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from drus.sampling.schedule import NoiseSchedule

__all__ = ["DDRMResult", "ddrm_sample"]

logger = logging.getLogger(__name__)

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class DDRMResult:
    """Output of :func:`ddrm_sample`.

    Attributes
    ----------
    samples : torch.Tensor
        ``[C, n_z, n_x]``: ``x̂0`` of the last step for each of the ``C`` samples (not clipped), on
        ``y``'s device — the ``ô_c`` of the DRUSvar paper, eq. (5).
    trajectory : list of torch.Tensor or None
        With ``return_trajectory=True``: ``x̂0`` after each step, ``n_steps`` tensors ``[C, n_z, n_x]``
        on the CPU (the last equals ``samples``).
    timesteps : tuple of int
        The visited timesteps followed by ``−1`` (see :meth:`NoiseSchedule.timesteps`).
    seconds_total, seconds_model, seconds_other : float
        Wall-clock time of the whole call, of the network evaluations, and of everything else.
    """

    samples: torch.Tensor
    trajectory: list[torch.Tensor] | None
    timesteps: tuple[int, ...]
    seconds_total: float
    seconds_model: float
    seconds_other: float


def _check_unit_interval(name: str, value) -> float:
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def _is_count(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_operator(operator) -> None:
    missing = [a for a in ("Vt", "V", "Ut", "singular_values", "in_shape", "out_shape", "spectral_shape")
               if not hasattr(operator, a)]
    if missing:
        raise TypeError(
            f"operator must provide the SVD view of drus.physics.operators.SVDOperator; "
            f"{type(operator).__name__} lacks {', '.join(missing)}"
        )
    if len(tuple(operator.in_shape)) != 2:
        raise ValueError(
            f"operator.in_shape must be an image shape (n_z, n_x), got {tuple(operator.in_shape)}"
        )
    s = operator.singular_values
    if tuple(s.shape) != tuple(operator.spectral_shape):
        raise ValueError(
            f"operator.singular_values has shape {tuple(s.shape)}, expected spectral_shape "
            f"{tuple(operator.spectral_shape)}"
        )
    if not s.is_floating_point():
        raise TypeError(f"operator.singular_values must be a floating tensor, got {s.dtype}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ddrm_sample(
    model: Model,
    operator,
    y: torch.Tensor,
    *,
    sigma0: float,
    n_samples: int = 10,
    n_steps: int = 50,
    eta: float = 0.85,
    eta_b: float = 1.0,
    schedule: NoiseSchedule | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
    model_batch_size: int | None = None,
) -> DDRMResult:
    """Draw ``C`` DDRM samples of the image given one measurement (Kawar et al. 2022, Sect. 3).

    Implements docs/method.md §4 (the DRUS/DRUSvar sampler, paper Sect. II-A) in the spectral space of
    ``H = U S Vᵀ``, with ``σ′ = σ_{t′}``, ``ȳ = Uᵀy`` and fresh ``z_i ~ N(0, 1)`` at each step:

    * **init** (Kawar et al., Sect. 3.2, the ``t = T`` conditional):
      ``x̄_i = ȳ_i/s_i + √(σ_T² − σ0²/s_i²)·z_i`` where ``s_i·σ_T > σ0``, else ``x̄_i = σ_T·z_i``; then
      ``x_T = √ᾱ_T · V x̄``. (The reference code uses ``V x̄ / σ_T``, which equals
      ``√ᾱ_T·V x̄ / √(1 − ᾱ_T)``: a relative difference of ``ᾱ_T/2`` = 3e-5 at ``t = 980``, but 4 % for
      a 2-step run starting at ``t = 500``. ``√ᾱ_T`` is the consistent choice since
      ``x_t = √ᾱ_t·V x̄_t`` at every other step.)
    * **each step** ``t → t′`` (Sect. 3.2), after ``ε̂ = model(x_t, t)[:, 0]`` and
      ``x̂0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t``, ``x̄0 = Vᵀx̂0``:

      - ``s_i = 0``: ``x̄′_i = x̄0_i + √(1 − η²)·σ′·(Vᵀε̂)_i + η·σ′·z_i``;
      - ``0 < s_i·σ′ < σ0``: ``x̄′_i = x̄0_i + √(1 − η²)·σ′·(ȳ_i − s_i·x̄0_i)/σ0 + η·σ′·z_i``;
      - ``s_i·σ′ ≥ σ0``: ``x̄′_i = η_b·ȳ_i/s_i + (1 − η_b)·x̄0_i + √(σ′² − η_b²·σ0²/s_i²)·z_i``
        (the boundary ``s_i·σ′ = σ0`` goes to this case, as in Kawar et al.'s ``σ_t ≥ σ_y/s_i``; the
        square root's argument is clamped at 0);

      then ``x_{t′} = √ᾱ_{t′} · V x̄′``. The cases are re-evaluated at every step (``σ′`` changes).
    * **output**: ``x̂0`` of the last step (``t = 0``), not clipped. The update ``t = 0 → −1`` only
      produces ``x_{−1}``, which is not returned (in the reference code ``x_{−1} = V Vᵀ x̂0``), so it
      is skipped: no network call, transform or random number is wasted on it.

    Cost: one network call per step; one ``Vᵀ`` and one ``V`` per step except the last, which needs
    none (``x̂0`` is formed in image space as ``x_t/√ᾱ_t − σ_t·ε̂``), plus one ``Uᵀ`` (of ``y``) and
    one ``V`` at the init: ``n_steps − 1`` products with ``Vᵀ`` and ``n_steps`` with ``V`` in all.
    By linearity ``Vᵀx̂0 = x̄_t − σ_t·Vᵀε̂`` and ``x̄_t`` is carried along instead of recomputed; the
    reference code needs ``3·n_steps`` products with ``Vᵀ``. This assumes ``VᵀV = I``
    (orthonormal right singular vectors), which the operator contract guarantees.

    Parameters
    ----------
    model : callable
        ``model(x_t, t) -> out`` with ``x_t`` ``[B, 1, n_z, n_x]`` and ``t`` a LongTensor ``[B]`` of
        timesteps in ``[0, T − 1]``; ``out`` is ``[B, k, n_z, n_x]`` with ``ε̂`` in channel 0 (``k = 2``
        when the model also predicts its variance, which DDRM does not use).
    operator : drus.physics.operators.SVDOperator
        The degradation ``H`` with its SVD view (``Vt, V, Ut, singular_values``); images are
        ``in_shape = (n_z, n_x)``. Its tensors must be on ``y``'s device; computations use the dtype
        of ``operator.singular_values``.
    y : torch.Tensor
        One measurement of shape ``operator.out_shape`` (e.g. the beamformed ``By`` as
        ``[n_z, n_x]``).
    sigma0 : float
        ``σ0 ≥ 0``, the standard deviation of the white Gaussian noise on ``y`` (``σ_y`` in Kawar et
        al.; docs/method.md §3 for the paper's values). ``σ0 = 0`` is the noiseless case.
    n_samples : int
        ``C``, the number of samples, all run as one batch (10 in the paper).
    n_steps : int
        Number of sampling steps (network evaluations), 50 in the paper.
    eta, eta_b : float
        ``η`` and ``η_b`` of Kawar et al., Sect. 3.2, in ``[0, 1]`` (paper: 0.85 and 1).
    schedule : NoiseSchedule, optional
        The model's training schedule; default ``NoiseSchedule()`` (linear, ``T = 1000``).
    generator : torch.Generator, optional
        Source of all random numbers. Noise is drawn on the generator's device (CPU for a default
        ``torch.Generator()``) and moved to ``y``'s device, so a CPU generator gives the same
        samples on any device up to floating-point differences.
    progress : bool
        Show a tqdm progress bar.
    return_trajectory : bool
        Also return ``x̂0`` after every step (on the CPU).
    model_batch_size : int, optional
        Evaluate the network on chunks of at most this many images (to bound memory); the
        result does not depend on it for a batch-independent network. Default: all ``C`` at once.

    Returns
    -------
    DDRMResult
        ``samples`` ``[C, n_z, n_x]`` on ``y``'s device, optional ``trajectory``, timings.

    Raises
    ------
    ValueError
        Wrong shape or non-finite values in ``y``; ``sigma0`` negative or not finite; ``eta`` or
        ``eta_b`` outside ``[0, 1]``; ``n_samples``/``n_steps``/``model_batch_size`` out of range; a
        model output of the wrong shape; operator tensors on another device than ``y``.
    TypeError
        ``y`` not a floating tensor, or ``operator`` without an SVD view.

    References
    ----------
    B. Kawar, M. Elad, S. Ermon, J. Song, "Denoising Diffusion Restoration Models", NeurIPS 2022,
    Sect. 3.2. DRUSvar paper, Sect. II-A.
    """
    t_start = time.perf_counter()
    # --- validation --------------------------------------------------------------------------------
    _check_operator(operator)
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"y must be a torch.Tensor of shape {tuple(operator.out_shape)}, got {type(y).__name__}"
        )
    if tuple(y.shape) != tuple(operator.out_shape):
        raise ValueError(
            f"y must have the operator's output shape {tuple(operator.out_shape)} (one observation), "
            f"got {tuple(y.shape)}"
        )
    if not (y.is_floating_point()):
        raise TypeError(f"y must be a floating-point tensor, got dtype {y.dtype}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or inf values; clean or mask the measurement first")
    if isinstance(sigma0, torch.Tensor):
        sigma0 = sigma0.item()
    sigma0 = float(sigma0)
    if not (math.isfinite(sigma0) and sigma0 >= 0.0):
        raise ValueError(f"sigma0 must be a finite number >= 0 (the noise std of y), got {sigma0!r}")
    eta = _check_unit_interval("eta", eta)
    eta_b = _check_unit_interval("eta_b", eta_b)
    if not _is_count(n_samples):
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if model_batch_size is not None and not _is_count(model_batch_size):
        raise ValueError(f"model_batch_size must be None or an integer >= 1, got {model_batch_size!r}")
    n_samples = int(n_samples)
    schedule = NoiseSchedule() if schedule is None else schedule
    steps = schedule.timesteps(n_steps)  # validates n_steps

    device = y.device
    s = operator.singular_values
    if s.device != device:
        raise ValueError(
            f"the operator's tensors are on {s.device} but y is on {device}; move the operator with "
            f"operator.to({str(device)!r}) (or y with y.to({str(s.device)!r}))"
        )
    dtype = s.dtype
    y = y.to(dtype)
    n_z, n_x = (int(d) for d in operator.in_shape)
    spectral_shape = tuple(int(d) for d in operator.spectral_shape)
    C = n_samples
    chunk = C if model_batch_size is None else int(model_batch_size)

    if isinstance(model, torch.nn.Module) and model.training:
        logger.warning("the model is in training mode (dropout/batch-norm active); call model.eval()")

    def randn() -> torch.Tensor:
        shape = (C, *spectral_shape)
        if generator is None:
            return torch.randn(shape, dtype=dtype, device=device)
        return torch.randn(shape, dtype=dtype, device=generator.device, generator=generator).to(device)

    seconds_model = 0.0

    def eval_model(x_t: torch.Tensor, t: int) -> torch.Tensor:
        nonlocal seconds_model
        _sync(device)
        t0 = time.perf_counter()
        outs = []
        for start in range(0, C, chunk):
            xb = x_t[start : start + chunk].unsqueeze(1)  # [B, 1, n_z, n_x]
            tb = torch.full((xb.shape[0],), t, dtype=torch.long, device=device)
            out = model(xb, tb)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"model must return a torch.Tensor, got {type(out).__name__}")
            shape_ok = out.ndim == 4 and out.shape[0] == xb.shape[0] and out.shape[1] >= 1
            if not (shape_ok and tuple(out.shape[2:]) == (n_z, n_x)):
                raise ValueError(
                    f"model returned shape {tuple(out.shape)} for input {tuple(xb.shape)}; "
                    f"expected [B, ≥1, n_z, n_x] = [{xb.shape[0]}, ≥1, {n_z}, {n_x}]"
                )
            outs.append(out[:, 0].to(dtype))
        eps = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
        _sync(device)
        seconds_model += time.perf_counter() - t0
        return eps

    with torch.no_grad():
        # --- spectral view of the measurement ------------------------------------------------------
        y_bar = operator.Ut(y)  # ȳ = Uᵀy, [*spectral_shape]
        nonzero = s > 0
        s_safe = torch.where(nonzero, s, torch.ones_like(s))
        y_tilde = torch.where(nonzero, y_bar / s_safe, torch.zeros_like(s))  # ȳ_i / s_i
        r = torch.where(nonzero, sigma0 / s_safe, torch.zeros_like(s))  # σ0 / s_i
        sigma0_safe = sigma0 if sigma0 > 0 else 1.0  # only used where s_i·σ′ < σ0, i.e. σ0 > 0

        # --- init (Kawar et al., Sect. 3.2, t = T) ------------------------------------------------
        t_first = steps[0]
        sigma_T = float(schedule.sigma(t_first))
        data_init = nonzero & (s * sigma_T > sigma0)
        z = randn()
        x_bar = torch.where(
            data_init,
            y_tilde + (sigma_T**2 - r**2).clamp_min(0.0).sqrt() * z,
            sigma_T * z,
        )
        x_t = math.sqrt(schedule.alpha_bar(t_first)) * operator.V(x_bar)
        logger.debug(
            "DDRM: %d samples, %d steps (t=%d…0), %d of %d spectral components observed at init, sigma0=%g",
            C, n_steps, t_first, int(data_init.sum()), s.numel(), sigma0,
        )

        trajectory: list[torch.Tensor] | None = [] if return_trajectory else None
        c_keep = math.sqrt(max(1.0 - eta**2, 0.0))  # √(1 − η²)
        x0 = x_t  # replaced in the first iteration
        for k in tqdm(range(n_steps), desc="DDRM", disable=not progress, leave=False):
            t, t_next = steps[k], steps[k + 1]
            a_t = float(schedule.alpha_bar(t))
            sigma_t = float(schedule.sigma(t))
            eps = eval_model(x_t, t)  # ε̂, [C, n_z, n_x]
            x0 = x_t / math.sqrt(a_t) - sigma_t * eps  # x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t
            if trajectory is not None:
                trajectory.append(x0.detach().to("cpu"))
            if t_next < 0:
                break  # t = 0 → −1 would only produce x_{−1}, which is not returned (see docstring)

            sigma_next = float(schedule.sigma(t_next))
            eps_bar = operator.Vt(eps)  # Vᵀε̂  — the step's only Vᵀ
            x0_bar = x_bar - sigma_t * eps_bar  # Vᵀx̂0 by linearity
            z = randn()
            # s_i = 0 (no measurement): DDIM-like step
            missing = x0_bar + (c_keep * sigma_next) * eps_bar + (eta * sigma_next) * z
            # 0 < s_i σ′ < σ0 (measurement noisier than the target level)
            after = (
                x0_bar
                + (c_keep * sigma_next / sigma0_safe) * (y_bar - s * x0_bar)
                + (eta * sigma_next) * z
            )
            # s_i σ′ ≥ σ0 (target level noisier than the measurement)
            data = (
                eta_b * y_tilde
                + (1.0 - eta_b) * x0_bar
                + (sigma_next**2 - (eta_b * r) ** 2).clamp_min(0.0).sqrt() * z
            )
            is_after = nonzero & (s * sigma_next < sigma0)
            x_bar = torch.where(nonzero, torch.where(is_after, after, data), missing)
            x_t = math.sqrt(schedule.alpha_bar(t_next)) * operator.V(x_bar)  # the step's only V

        _sync(device)
        seconds_total = time.perf_counter() - t_start

    if not torch.isfinite(x0).all():
        logger.warning("DDRM produced non-finite samples; check the model output and sigma0")
    return DDRMResult(
        samples=x0,
        trajectory=trajectory,
        timesteps=steps,
        seconds_total=seconds_total,
        seconds_model=seconds_model,
        seconds_other=seconds_total - seconds_model,
    )
