"""Noise schedules of denoising diffusion models (the "scheduler" piece, kept apart from model and sampler).

The forward process of a DDPM (Ho et al. 2020) with ``T`` steps and variances ``β_t`` is

    x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε,        ᾱ_t = Π_{s ≤ t} (1 − β_s),   ε ~ N(0, I),

for ``t = 0, …, T − 1`` (0-based, as in the reference code), with the convention ``ᾱ_{−1} = 1`` (no
noise). DDRM (Kawar et al. 2022, Sect. 3–4) works in the "σ" (variance-exploding) parametrisation
``x_t / √ᾱ_t = x0 + σ_t · ε`` with ``σ_t = √((1 − ᾱ_t)/ᾱ_t)``; this module provides both views.

The paper's setting (docs/method.md §3) is ``T = 1000``, linear ``β`` from 1e-4 to 0.02 and 50 sampling steps
(skip 20): ``t = 980, 960, …, 0`` followed by ``−1``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch

__all__ = ["NoiseSchedule"]

_COSINE_OFFSET = 0.008  # s of Nichol & Dhariwal (2021), eq. (17)
_COSINE_MAX_BETA = 0.999  # their clipping of β_t, "to prevent singularities near t = T"


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """A discrete DDPM noise schedule ``β_t``, ``t = 0 … T − 1``, and the quantities derived from it.

    Parameters
    ----------
    n_timesteps : int
        ``T``, the number of diffusion steps the model was trained with (1000 in the paper).
    kind : {"linear", "cosine"}
        ``"linear"``: ``β_t`` evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020; the
        paper's and guided-diffusion's schedule). ``"cosine"``: ``ᾱ_t = f(t)/f(0)`` with
        ``f(t) = cos²(π/2 · (t/T + s)/(1 + s))``, ``s = 0.008``, ``β_t`` clipped at 0.999 (Nichol &
        Dhariwal 2021, eq. (17)); ``beta_start``/``beta_end`` are then unused.
    beta_start, beta_end : float
        End points of the linear schedule (1e-4 and 0.02).

    Attributes
    ----------
    betas : numpy.ndarray
        ``[T]`` float64, read-only.
    alphas_cumprod : numpy.ndarray
        ``[T]`` float64, read-only: ``ᾱ_t``.

    Examples
    --------
    >>> s = NoiseSchedule()
    >>> s.timesteps(50)[:3], s.timesteps(50)[-2:]
    ((980, 960, 940), (0, -1))
    """

    n_timesteps: int = 1000
    kind: Literal["linear", "cosine"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    betas: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    alphas_cumprod: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The defining fields (what a checkpoint stores to reload its schedule exactly)."""
        return {"n_timesteps": int(self.n_timesteps), "kind": self.kind, "beta_start": float(self.beta_start),
                "beta_end": float(self.beta_end)}

    @classmethod
    def from_dict(cls, d: dict) -> "NoiseSchedule":
        """Inverse of :meth:`to_dict`; unknown keys are refused (a checkpoint of another format)."""
        allowed = {"n_timesteps", "kind", "beta_start", "beta_end"}
        extra = set(d) - allowed
        if extra:
            raise ValueError(f"noise schedule: unknown field(s) {', '.join(sorted(extra))}; expected {sorted(allowed)}")
        return cls(**d)

    def __post_init__(self) -> None:
        T = self.n_timesteps
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"n_timesteps must be a positive integer, got {T!r}")
        if self.kind == "linear":
            if not (0 < self.beta_start <= self.beta_end < 1):
                raise ValueError(
                    "need 0 < beta_start <= beta_end < 1 for a linear schedule, got "
                    f"beta_start={self.beta_start!r}, beta_end={self.beta_end!r}"
                )
            betas = np.linspace(self.beta_start, self.beta_end, T, dtype=np.float64)
        elif self.kind == "cosine":
            steps = np.arange(T + 1, dtype=np.float64) / T
            f = np.cos((steps + _COSINE_OFFSET) / (1 + _COSINE_OFFSET) * math.pi / 2) ** 2
            betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, _COSINE_MAX_BETA)
        else:
            raise ValueError(f"kind must be 'linear' or 'cosine', got {self.kind!r}")
        alphas_cumprod = np.cumprod(1.0 - betas)
        betas.flags.writeable = False
        alphas_cumprod.flags.writeable = False
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)

    # --- per-timestep quantities -------------------------------------------------------------------
    def _check_t(self, t_arr: np.ndarray) -> None:
        if t_arr.size and (t_arr.min() < -1 or t_arr.max() >= self.n_timesteps):
            raise ValueError(
                f"timesteps must lie in [-1, {self.n_timesteps - 1}] (−1 means no noise), got "
                f"values in [{t_arr.min()}, {t_arr.max()}]"
            )

    def alpha_bar(self, t):
        """``ᾱ_t`` with ``ᾱ_{−1} = 1``.

        Parameters
        ----------
        t : int, numpy.ndarray or torch.Tensor
            Integer timestep(s) in ``[−1, T − 1]``.

        Returns
        -------
        float, numpy.ndarray or torch.Tensor
            Same kind as ``t`` (float64; a tensor stays on ``t``'s device).
        """
        if isinstance(t, torch.Tensor):
            idx = t.detach().to("cpu", torch.int64).numpy()
            return torch.as_tensor(self.alpha_bar(idx), dtype=torch.float64, device=t.device)
        t_arr = np.asarray(t)
        if not np.issubdtype(t_arr.dtype, np.integer):
            raise TypeError(f"timesteps must be integers, got dtype {t_arr.dtype}")
        self._check_t(t_arr)
        padded = np.concatenate([[1.0], self.alphas_cumprod])  # padded[t + 1] = ᾱ_t
        out = padded[t_arr + 1]
        return float(out) if out.ndim == 0 else out

    def sigma(self, t):
        """``σ_t = √((1 − ᾱ_t)/ᾱ_t)``: the noise std of ``x_t/√ᾱ_t = x0 + σ_t ε`` (``σ_{−1} = 0``).

        Same argument and return conventions as :meth:`alpha_bar`.
        """
        a = self.alpha_bar(t)
        if isinstance(a, torch.Tensor):
            return ((1.0 - a).clamp_min(0.0) / a).sqrt()
        return np.sqrt(np.maximum(1.0 - a, 0.0) / a) if isinstance(a, np.ndarray) else math.sqrt(
            max(1.0 - a, 0.0) / a
        )

    def timesteps(self, n_steps: int) -> tuple[int, ...]:
        """The DDRM/DDIM skip sequence for ``n_steps`` sampling steps, ending with ``−1``.

        ``skip = T // n_steps`` and the visited timesteps are ``(n_steps − 1)·skip, …, skip, 0``,
        followed by ``−1`` (``ᾱ = 1``), the "next" timestep of the last step. For ``T = 1000`` and 50
        steps: ``980, 960, …, 20, 0, −1`` (docs/method.md §4). The result always has ``n_steps + 1`` entries;
        when ``n_steps`` does not divide ``T``, the reference code's ``range(0, T, skip)`` would give
        one step more, this does not.

        Parameters
        ----------
        n_steps : int
            Number of network evaluations, ``1 ≤ n_steps ≤ T``.

        Returns
        -------
        tuple of int
            ``n_steps + 1`` decreasing timesteps, the last being ``−1``.
        """
        T = self.n_timesteps
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or not (
            1 <= n_steps <= T
        ):
            raise ValueError(f"n_steps must be an integer in [1, {T}] (T = n_timesteps), got {n_steps!r}")
        skip = T // int(n_steps)
        return tuple(k * skip for k in range(int(n_steps) - 1, -1, -1)) + (-1,)

    # --- training ----------------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """Forward process ``x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε`` (Ho et al. 2020, eq. (4)).

        Parameters
        ----------
        x0 : torch.Tensor
            Clean images ``[B, ...]`` (e.g. ``[B, 1, n_z, n_x]``).
        t : int or torch.Tensor
            One timestep for the whole batch, or a LongTensor ``[B]`` (one per image).
        noise : torch.Tensor
            ``ε``, same shape as ``x0``.

        Returns
        -------
        torch.Tensor
            ``x_t``, same shape and dtype as ``x0``. Coefficients are computed in float64.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            if t.shape[0] != x0.shape[0]:
                raise ValueError(
                    f"t must be a scalar or have one entry per image ({x0.shape[0]}), "
                    f"got shape {tuple(t.shape)}"
                )
            a = self.alpha_bar(t.to(x0.device)).reshape(-1, *([1] * (x0.ndim - 1)))
        else:
            a = torch.as_tensor(self.alpha_bar(int(t)), dtype=torch.float64, device=x0.device)
        sa, s1a = a.sqrt().to(x0.dtype), (1.0 - a).sqrt().to(x0.dtype)
        return sa * x0 + s1a * noise
