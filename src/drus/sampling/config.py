"""How a reconstruction runs, declared once: :class:`ReconstructionConfig`.

One frozen :class:`ReconstructionConfig` holds everything that decides a reconstruction besides the
observation: the sampler (:class:`SamplerConfig`), the operator ``BH`` and its decomposition
(:class:`OperatorConfig`), the prior checkpoint, the device and the network precision. The
pipelines (:func:`drus.pipelines.reconstruct.reconstruct_file`, :func:`drus.pipelines.demo.run_demo`,
:func:`drus.pipelines.picmus.evaluate_picmus`, :func:`drus.pipelines.experiments.numerical_study`,
and :func:`drus.pipelines.batch.reconstruct_frames`, whose :class:`~drus.pipelines.batch.BatchConfig` embeds it)
take it, the CLI builds it from its options, and results save it
(:meth:`ReconstructionConfig.to_dict` in JSON, :meth:`ReconstructionConfig.to_attrs` in HDF5
attributes); :meth:`ReconstructionConfig.from_dict` reads it back. ``reconstruct``, DENO, the PICMUS evaluation, the numerical study and a user's
acquisition take its :class:`SamplerConfig` part.

The sampler's defaults are the paper's (Sect. III–IV: C = 10 samples, 50 DDRM steps, η = 0.85,
η_B = 1, β = 0.5); :meth:`SamplerConfig.drus` is drus's own default for real acquisitions, which
differs only in the prior/data split (:data:`drus.defaults.PRIOR_FRACTION`, docs/realdata.md), and
:meth:`SamplerConfig.quick` the short preset of ``drus demo --quick``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os

from drus.defaults import PRIOR_FRACTION

__all__ = ["SamplerConfig", "OperatorConfig", "ReconstructionConfig", "PRECISION_NAMES", "QUICK_SAMPLES", "QUICK_STEPS"]

#: ``drus demo --quick``: C and DDRM steps of the short preset (about a minute on 2 CPU cores).
QUICK_SAMPLES, QUICK_STEPS = 4, 20

#: Network precisions (:data:`drus.models.prior.PRECISIONS` maps them to torch dtypes; bf16/fp16 for GPUs).
PRECISION_NAMES = ("fp32", "bf16", "fp16")


def _check_keys(cls, data, where: str) -> dict:
    """``data`` as a dict whose keys are all fields of ``cls``; an unknown key is refused with a "did you mean"."""
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a dict of {cls.__name__} fields, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"{where}: unknown field {key!r} of {cls.__name__} (fields: {', '.join(names)}){hint}")
    return dict(data)


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

    @classmethod
    def quick(cls, **changes) -> "SamplerConfig":
        """The short preset of ``drus demo --quick``: the paper's, with C = :data:`QUICK_SAMPLES` and
        :data:`QUICK_STEPS` DDRM steps."""
        return cls(**{"n_samples": QUICK_SAMPLES, "n_steps": QUICK_STEPS, **changes})

    @classmethod
    def from_dict(cls, data: dict) -> "SamplerConfig":
        """The configuration :meth:`to_dict` wrote (missing fields take their defaults; unknown ones are refused)."""
        return cls(**_check_keys(cls, data, "sampler"))

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

    def replace(self, **changes) -> "OperatorConfig":
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> "OperatorConfig":
        """The configuration :meth:`to_dict` wrote (missing fields take their defaults; unknown ones are refused)."""
        return cls(**_check_keys(cls, data, "operator"))


@dataclasses.dataclass(frozen=True)
class ReconstructionConfig:
    """Everything that decides a reconstruction besides the observation (frozen, validated).

    Attributes
    ----------
    sampler : SamplerConfig
        DDRM and the DRUS estimators (C, steps, η, η_B, β, seed, prior fraction).
    operator : OperatorConfig
        The unknown grid of ``BH`` on the PICMUS field of view, the decomposition threshold and dtype
        (used by the methods that decompose ``BH``).
    prior : str or None
        Path of the prior checkpoint (``.safetensors`` or guided-diffusion ``.pt``); ``None``: the
        shipped prior (:func:`drus.models.prior.default_prior_path`).
    device : str
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, … as given (a
        ``torch.device`` is kept by its name); resolved and checked by :func:`drus.device.resolve_device`.
    precision : {"fp32", "bf16", "fp16"}
        Network precision (bf16/fp16 run the network under autocast, for GPUs).
    """

    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    operator: OperatorConfig = dataclasses.field(default_factory=OperatorConfig)
    prior: str | None = None
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if not isinstance(self.sampler, SamplerConfig):
            raise TypeError(f"sampler must be a SamplerConfig, got {type(self.sampler).__name__}")
        if not isinstance(self.operator, OperatorConfig):
            raise TypeError(f"operator must be an OperatorConfig, got {type(self.operator).__name__}")
        if self.prior is not None:
            if not isinstance(self.prior, (str, os.PathLike)) or not str(self.prior):
                raise ValueError(f"prior must be a checkpoint path or None (the shipped prior), got {self.prior!r}")
            object.__setattr__(self, "prior", str(self.prior))
        if type(self.device).__name__ == "device":  # a torch.device: kept by its name ("cpu", "cuda:0")
            object.__setattr__(self, "device", str(self.device))
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_NAMES)}, got {self.precision!r}")

    def replace(self, **changes) -> "ReconstructionConfig":
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Nested plain fields, for JSON (``prior`` and the sampler's ``seed`` may be ``None``)."""
        return {"sampler": self.sampler.to_dict(), "operator": self.operator.to_dict(), "prior": self.prior,
                "device": self.device, "precision": self.precision}

    @classmethod
    def from_dict(cls, data: dict) -> "ReconstructionConfig":
        """The configuration :meth:`to_dict` (or :meth:`to_json`) wrote; missing fields take their defaults,
        unknown ones are refused with the fields allowed."""
        data = _check_keys(cls, data, "reconstruction config")
        if "sampler" in data:
            data["sampler"] = SamplerConfig.from_dict(data["sampler"])
        if "operator" in data:
            data["operator"] = OperatorConfig.from_dict(data["operator"])
        return cls(**data)

    def to_json(self) -> str:
        """:meth:`to_dict` as one JSON string (what results store in the HDF5 attribute ``config``)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ReconstructionConfig":
        """The configuration :meth:`to_json` wrote."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"reconstruction config: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def to_attrs(self) -> dict:
        """HDF5 attributes: the whole configuration as JSON under ``config`` (read back with
        :meth:`from_json`), and the sampler's and operator's fields flat, for a quick look."""
        return {**self.sampler.to_attrs(), **self.operator.to_dict(), "prior": self.prior or "",
                "device_requested": self.device, "precision": self.precision, "config": self.to_json()}

