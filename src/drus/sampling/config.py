"""How DRUS samples, declared once: :class:`SamplerConfig`.

``reconstruct``, DENO, the PICMUS evaluation and a user's acquisition take one
:class:`SamplerConfig`; the CLI builds it from its options, and results save it
(:meth:`SamplerConfig.to_dict`, :meth:`SamplerConfig.to_attrs`). (The demo and the numerical study
still take C and the number of steps and build it inside.) Its defaults are the paper's (Sect. III–IV: C = 10 samples,
50 DDRM steps, η = 0.85, η_B = 1, β = 0.5); :meth:`SamplerConfig.drus` is drus's own default for
real acquisitions, which differs only in the prior/data split (:data:`drus.defaults.PRIOR_FRACTION`,
docs/realdata.md).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from drus.defaults import PRIOR_FRACTION

__all__ = ["SamplerConfig", "OperatorConfig"]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """DDRM and the DRUS estimators (frozen; change a copy with :meth:`replace`).

    Attributes
    ----------
    n_samples : int
        ``C``, samples per observation (DRUSvar needs ≥ 2).
    n_steps : int
        DDRM steps (``T = 1000`` training steps, skipped evenly).
    eta, eta_b : float
        DDRM's η and η_B, in [0, 1].
    beta : float
        ``β`` of the sample model: DRUSvar is the variance to the power ``1/(2β)``.
    seed : int or None
        Seeds the sampler's generator (``None``: not seeded).
    prior_fraction : float
        In [0, 1): the prior decides at least this fraction of the operator's components
        (:func:`drus.sampling.scaling.regularised_sigma0`); 0 is the paper's use of σ0 as the noise level.
    """

    n_samples: int = 10
    n_steps: int = 50
    eta: float = 0.85
    eta_b: float = 1.0
    beta: float = 0.5
    seed: int | None = 0
    prior_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_samples", "n_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {v!r}")
        for name in ("eta", "eta_b"):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Real) and 0.0 <= float(v) <= 1.0):
                raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
        if not (isinstance(self.beta, numbers.Real) and math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}")
        if not (isinstance(self.prior_fraction, numbers.Real) and 0.0 <= float(self.prior_fraction) < 1.0):
            raise ValueError(f"prior_fraction must lie in [0, 1), got {self.prior_fraction!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    @classmethod
    def paper(cls, **changes) -> "SamplerConfig":
        """The paper's configuration (σ0 used as given), with ``changes`` applied."""
        return cls(**changes)

    @classmethod
    def drus(cls, **changes) -> "SamplerConfig":
        """drus's default for real acquisitions: the paper's, with ``prior_fraction`` = 0.6."""
        return cls(**{"prior_fraction": PRIOR_FRACTION, **changes})

    def replace(self, **changes) -> "SamplerConfig":
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain fields, for JSON (``seed`` may be ``None``)."""
        return dataclasses.asdict(self)

    def to_attrs(self) -> dict:
        """The fields for HDF5 attributes (which cannot hold ``None``: an unset seed is left out)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}


#: Dtypes the decomposition of ``BH`` can be computed in (:func:`drus.physics.decompose.decompose_bh`).
COMPUTE_DTYPES = ("float64", "float32")


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """The DRUS operator ``BH`` on the PICMUS field of view, and its decomposition (frozen).

    Attributes
    ----------
    unknown_size : int
        Side of the unknown grid (``By`` stays on 256²): 128, the CPU default (minutes of
        decomposition), or 256, the paper's square operator (79 min on 2 CPU cores).
    threshold : float
        Components with ``s ≤ threshold · s_1`` are left to the prior, in [0, 1).
    compute_dtype : {"float64", "float32"}
        dtype of the decomposition (float32: about 2× faster, half the memory).
    """

    unknown_size: int = 128
    threshold: float = 1e-3
    compute_dtype: str = "float64"

    def __post_init__(self) -> None:
        n = self.unknown_size
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"unknown_size must be an integer ≥ 2 (pixels per side), got {n!r}")
        if not (isinstance(self.threshold, numbers.Real) and 0.0 <= float(self.threshold) < 1.0):
            raise ValueError(f"threshold must lie in [0, 1) (relative to s_1), got {self.threshold!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")

    def to_dict(self) -> dict:
        """Plain fields, for JSON and HDF5 attributes."""
        return dataclasses.asdict(self)

