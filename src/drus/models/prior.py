"""The diffusion prior as DRUS uses it: where the shipped one lives, and loading any checkpoint.

:func:`load_prior` reads a drus checkpoint (safetensors + JSON, with the noise schedule it was trained
with) or a guided-diffusion ``.pt`` file, adapts 3-channel nets to grey images, and optionally runs
the network under autocast (:class:`Autocast`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from drus.sampling.config import PRECISION_NAMES

__all__ = ["DEFAULT_PRIOR", "default_prior_path", "Autocast", "PRECISIONS", "load_prior", "size_multiple",
           "check_size_multiple"]

DEFAULT_PRIOR = "default.safetensors"


def default_prior_path() -> Path:
    """Path of the prior shipped inside the package (``drus/priors/default.safetensors``)."""
    return Path(str(resources.files("drus") / "priors" / DEFAULT_PRIOR))


class Autocast(torch.nn.Module):
    """Runs a network under :func:`torch.autocast` (bf16/fp16 matmuls and convolutions, fp32 norms)
    and returns float32, so the sampler's arithmetic stays in float32."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x, t):
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.model(x, t).float()


#: The network precisions (:data:`drus.sampling.config.PRECISION_NAMES`) and their autocast dtypes (None: float32).
PRECISIONS = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))


def load_prior(path=None, *, device="cpu", precision: str = "fp32") -> torch.nn.Module:
    """Load a prior checkpoint (drus safetensors+JSON, or a guided-diffusion ``.pt``) in eval mode.

    ``path=None`` loads the shipped default prior. A 3-channel network is wrapped so that it
    takes and returns 1-channel images (:class:`drus.models.unet.GreyscaleAdapter`). ``precision`` "bf16" or
    "fp16" runs the network under autocast (for GPUs; weights stay float32).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    from drus.models.checkpoint import load_checkpoint, load_guided_diffusion
    from drus.models.unet import GreyscaleAdapter

    path = Path(path) if path is not None else default_prior_path()
    if not path.exists():
        raise FileNotFoundError(
            f"prior checkpoint not found: {path}. Train one with `drus train` or pass --prior PATH"
        )
    schedule = None
    if path.suffix == ".pt":
        model = load_guided_diffusion(path)
    else:
        model, _, meta = load_checkpoint(path)
        if meta.get("noise_schedule"):  # a prior samples with the schedule it was trained with
            from drus.sampling.schedule import NoiseSchedule

            schedule = NoiseSchedule.from_dict(meta["noise_schedule"])
    if getattr(model, "in_channels", model.config.in_channels) == 3:
        model = GreyscaleAdapter(model)
    model = model.to(device).eval()
    model = model if PRECISIONS[precision] is None else Autocast(model, PRECISIONS[precision]).eval()
    model.noise_schedule = schedule  # None: the paper's (linear 1e-4 → 0.02, T = 1000), drus.sampling.schedule.NoiseSchedule()
    return model


def size_multiple(model: torch.nn.Module) -> int:
    """The image side the prior's UNet needs a multiple of (its ``2 ** (levels − 1)``; 1 if it does not say)."""
    for m in model.modules():
        mult = getattr(getattr(m, "config", None), "size_multiple", None)
        if mult:
            return int(mult)
    return 1


def check_size_multiple(model: torch.nn.Module, size: int, *, option: str) -> None:
    """Refuse an image side ``size`` (pixels) the prior cannot take, before any decomposition or sampling.

    Raises :class:`drus.errors.OptionError` naming ``option`` (the argument that set ``size``) and the
    nearest sides that work.
    """
    from drus.errors import OptionError

    m = size_multiple(model)
    if size % m:
        lo, hi = size // m * m, (size // m + 1) * m
        raise OptionError(option, f"{size} is not a multiple of {m}, which the prior's UNet needs (its "
                                  f"2 ** (levels − 1)); use e.g. {lo or hi} or {hi}")
