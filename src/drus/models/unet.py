"""The diffusion prior network: an ADM UNet compatible with OpenAI's guided-diffusion.

This is an independent implementation of the "ablated diffusion model" (ADM) UNet of
Dhariwal & Nichol (2021) [1]_, itself built on the improved-DDPM UNet of Nichol & Dhariwal
(2021) [2]_. Module structure and ``state_dict`` key names/shapes are identical to the public
guided-diffusion ``UNetModel``, so its checkpoints (e.g. ``256x256_diffusion_uncond.pt``, the
network the DRUS paper fine-tunes, docs/method.md §6) load strictly with
:func:`drus.models.checkpoint.load_guided_diffusion`.

Architecture in one paragraph
-----------------------------
A sinusoidal embedding of the timestep ``t`` (``model_channels`` wide, cos half then sin half)
goes through ``time_embed`` = Linear → SiLU → Linear to ``4 · model_channels``. The encoder
(``input_blocks``) starts with a 3×3 convolution, then for each resolution level ``l`` with
multiplier ``channel_mult[l]`` stacks ``num_res_blocks`` residual blocks (each optionally followed
by self-attention when the level's downsampling factor is listed in the attention factors) and,
except at the last level, a downsampling block (strided conv, average pooling, or a residual block
with ``down=True`` when ``resblock_updown``). The bottleneck (``middle_block``) is ResBlock →
attention → ResBlock. The decoder (``output_blocks``) mirrors the encoder with
``num_res_blocks + 1`` blocks per level, each consuming the concatenation of the current
features and one stored encoder activation (a skip connection), and ends each level but the
first with an upsampling block. The head ``out`` is GroupNorm → SiLU → zero-initialised 3×3 conv.

Residual blocks are conditioned on the time embedding either additively or, with
``use_scale_shift_norm``, by FiLM: ``GroupNorm(h) · (1 + scale) + shift``. Every normalisation is
a 32-group GroupNorm evaluated in float32 whatever the parameter dtype (guided-diffusion's
``GroupNorm32``), so ``model.to(torch.bfloat16)`` is numerically safe on a GPU.

Shapes
------
Images enter as ``[batch, channels, n_z, n_x]`` (depth down, lateral right; docs/method.md §8 — a
single image ``[n_z, n_x]`` becomes ``image[None, None]``). The network is fully convolutional:
attention acts on however many positions there are, so a net trained on 64 × 64 crops runs on
256 × 256 images. ``n_z`` and ``n_x`` must be divisible by ``2 ** (len(channel_mult) - 1)``.

1-channel variants
------------------
Ultrasound reflectivity images are single-channel; the ImageNet prior has 3 colour channels.
Three ways to bridge the gap are provided, all exact rewrites of "repeat the grey image on the
3 channels and average the colour channels of each output" (what the DRUS reference code does,
docs/method.md §6):

- :class:`GreyscaleAdapter` wraps a 3-channel net at run time (no new weights);
- :func:`convert_to_single_channel` folds that rule into the weights of a genuine 1-channel
  :class:`UNet` (first conv summed over the input channels, output-conv rows averaged per
  block), with identical outputs;
- :class:`OneChannelUNet` is the DRUS fine-tuning variant: the 3-channel net plus a learned 1×1
  convolution ``out_1ch`` from the ``6`` outputs to ``2`` (ε, variance). Its state dict is the
  flat 3-channel guided-diffusion keys plus ``out_1ch.weight`` ``[2, 6, 1, 1]`` and
  ``out_1ch.bias`` ``[2]``; it is saved and loaded in drus's own checkpoint format.

References
----------
.. [1] P. Dhariwal and A. Nichol, "Diffusion Models Beat GANs on Image Synthesis",
   NeurIPS 2021, arXiv:2105.05233. Code: github.com/openai/guided-diffusion.
.. [2] A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models",
   ICML 2021, arXiv:2102.09672.
"""

from __future__ import annotations

import difflib
import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UNetConfig",
    "UNet",
    "OneChannelUNet",
    "GreyscaleAdapter",
    "convert_to_single_channel",
    "timestep_embedding",
    "GroupNorm32",
    "ResBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
    "TimestepEmbedSequential",
]

logger = logging.getLogger(__name__)

#: Period of the slowest sinusoid in the timestep embedding (guided-diffusion, after [Vaswani 2017]).
MAX_PERIOD = 10_000
#: Width of the time embedding MLP relative to ``model_channels`` (guided-diffusion).
TIME_EMBED_MULT = 4
#: GroupNorm epsilon of PyTorch's default, used by guided-diffusion.
GROUP_NORM_EPS = 1e-5

# Alternative spellings accepted by UNetConfig.from_dict (guided-diffusion's command-line flags).
_KEY_ALIASES = {"num_channels": "model_channels"}


def _parse_int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """Accept ``(32, 16, 8)``, ``[32, 16, 8]`` or guided-diffusion's flag string ``"32,16,8"``."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"{name} must be a comma-separated list of integers, got {value!r}"
            ) from None
    if isinstance(value, int):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of integers, got {value!r}") from None
    out = []
    for v in items:
        if isinstance(v, bool) or not float(v).is_integer():
            raise ValueError(f"{name} must contain integers, got {value!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of the ADM UNet (names follow guided-diffusion's ``UNetModel``).

    Parameters
    ----------
    image_size : int
        Nominal (training) image side in pixels. Only used to turn ``attention_resolutions`` into
        downsampling factors; the network itself runs at any admissible size.
    in_channels : int
        Channels of the input image ``x_t`` (1 for ultrasound, 3 for ImageNet).
    model_channels : int
        Base width ``C`` of the network (guided-diffusion flag ``num_channels``); level ``l`` has
        ``channel_mult[l] · C`` channels, the time embedding ``4 · C``.
    out_channels : int or None
        Channels of the predicted noise ε; ``None`` means ``in_channels``. The network outputs
        :attr:`model_out_channels` channels (doubled when ``learn_sigma``).
    num_res_blocks : int
        Residual blocks per level in the encoder (the decoder has one more per level).
    attention_resolutions : tuple of int
        Image resolutions (side in pixels at ``image_size`` input) at which self-attention follows
        each residual block, e.g. ``(32, 16, 8)``. Converted to downsampling factors
        ``image_size // res`` (:attr:`attention_downsample_factors`) as guided-diffusion does, so
        the *factors* are what the weights encode. A string ``"32,16,8"`` is accepted.
    dropout : float
        Dropout probability inside residual blocks (before their last conv).
    channel_mult : tuple of int
        Width multiplier per resolution level; ``len(channel_mult) - 1`` downsamplings.
    conv_resample : bool
        Learned 3×3 convolutions for down/upsampling (else average pooling / plain nearest
        upsampling). Irrelevant when ``resblock_updown``.
    num_heads : int
        Attention heads when ``num_head_channels == -1``.
    num_head_channels : int
        Channels per attention head; ``-1`` to use a fixed ``num_heads`` instead.
    num_heads_upsample : int
        Heads in the decoder's attention when ``num_head_channels == -1``; ``-1`` means
        ``num_heads`` (deprecated in guided-diffusion, kept for compatibility).
    use_scale_shift_norm : bool
        FiLM conditioning ``norm(h)·(1+scale)+shift`` instead of adding the embedding.
    resblock_updown : bool
        Down/upsample with residual blocks (``down=True``/``up=True``) instead of ``Downsample``/
        ``Upsample`` layers.
    use_new_attention_order : bool
        Split q, k, v before heads (``QKVAttention``); default ``False`` splits heads first
        (``QKVAttentionLegacy``), the order of all released guided-diffusion checkpoints.
    learn_sigma : bool
        Also predict the interpolation coefficient of the variance (Improved DDPM); doubles the
        output channels: ``[ε (out_channels), v (out_channels)]``.
    num_groups : int
        GroupNorm groups (32 in guided-diffusion). Every width must be divisible by it; lower it
        only for tiny test networks.
    use_fp16 : bool
        Accepted for compatibility with guided-diffusion flag dicts and ignored: choose the
        precision with ``model.to(dtype)``.
    """

    image_size: int = 64
    in_channels: int = 1
    model_channels: int = 32
    out_channels: int | None = None
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 2)
    conv_resample: bool = True
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    learn_sigma: bool = False
    num_groups: int = 32
    use_fp16: bool = False

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        object.__setattr__(
            self, "attention_resolutions",
            _parse_int_tuple("attention_resolutions", self.attention_resolutions),
        )
        object.__setattr__(self, "channel_mult", _parse_int_tuple("channel_mult", self.channel_mult))
        for name in ("image_size", "in_channels", "model_channels", "num_res_blocks", "num_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}")
        if self.out_channels is not None and (
            isinstance(self.out_channels, bool)
            or not isinstance(self.out_channels, int)
            or self.out_channels <= 0
        ):
            raise ValueError(
                f"UNetConfig.out_channels must be a positive integer or None, got {self.out_channels!r}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            raise ValueError(
                f"UNetConfig.channel_mult must be a non-empty tuple of positive integers, "
                f"got {self.channel_mult!r}"
            )
        if self.num_head_channels == -1:
            if self.num_heads <= 0:
                raise ValueError(
                    f"UNetConfig.num_heads must be positive when num_head_channels == -1, "
                    f"got {self.num_heads!r}"
                )
        elif self.num_head_channels <= 0:
            raise ValueError(
                f"UNetConfig.num_head_channels must be -1 or positive, got {self.num_head_channels!r}"
            )
        if self.num_heads_upsample != -1 and self.num_heads_upsample <= 0:
            raise ValueError(
                f"UNetConfig.num_heads_upsample must be -1 or positive, got {self.num_heads_upsample!r}"
            )
        levels = len(self.channel_mult)
        reachable = {2**level for level in range(levels)}
        for res in self.attention_resolutions:
            if res <= 0 or self.image_size % res:
                raise ValueError(
                    f"UNetConfig.attention_resolutions entry {res} must divide image_size "
                    f"{self.image_size} (it is a resolution in pixels, e.g. 32 for 32 × 32)"
                )
            if self.image_size // res not in reachable:
                sizes = sorted((self.image_size // f for f in reachable), reverse=True)
                raise ValueError(
                    f"UNetConfig.attention_resolutions entry {res} is never reached: with "
                    f"image_size {self.image_size} and {levels} levels the feature maps are "
                    f"{sizes} pixels wide"
                )
        widths = {self.model_channels * m for m in self.channel_mult}
        bad = sorted(w for w in widths if w % self.num_groups)
        if bad:
            raise ValueError(
                f"UNetConfig: widths {bad} (model_channels × channel_mult) are not divisible by "
                f"num_groups {self.num_groups}; change model_channels or num_groups"
            )
        if self.num_head_channels != -1:
            for level, m in enumerate(self.channel_mult):
                if 2**level in self.attention_downsample_factors or level == levels - 1:
                    width = self.model_channels * m
                    if width % self.num_head_channels:
                        raise ValueError(
                            f"UNetConfig: attention width {width} is not divisible by "
                            f"num_head_channels {self.num_head_channels}"
                        )

    # ------------------------------------------------------------------ derived
    @property
    def eps_channels(self) -> int:
        """Channels of the predicted noise ε (``out_channels`` or ``in_channels``)."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def model_out_channels(self) -> int:
        """Channels the network outputs: ε, followed by the variance channels if ``learn_sigma``."""
        return self.eps_channels * (2 if self.learn_sigma else 1)

    @property
    def attention_downsample_factors(self) -> tuple[int, ...]:
        """Downsampling factors ``image_size // res`` at which attention is used."""
        return tuple(self.image_size // r for r in self.attention_resolutions)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2 ** (len(channel_mult) - 1)``)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def time_embed_dim(self) -> int:
        """Width of the time embedding (``4 · model_channels``)."""
        return TIME_EMBED_MULT * self.model_channels

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists); inverse of :meth:`from_dict`."""
        d = asdict(self)
        d["attention_resolutions"] = list(self.attention_resolutions)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UNetConfig":
        """Build a config from a dict such as :meth:`to_dict` returns.

        Also accepts guided-diffusion's flag ``num_channels`` for ``model_channels`` and its
        comma-separated strings for ``attention_resolutions``/``channel_mult``.

        Raises
        ------
        ValueError
            For an unknown key, naming the closest valid key.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"UNetConfig.from_dict expects a mapping, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = _KEY_ALIASES.get(key, key)
            if name not in valid:
                close = difflib.get_close_matches(str(key), valid + list(_KEY_ALIASES), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"unknown UNetConfig key {key!r}{hint} Valid keys: {', '.join(valid)}"
                )
            if name in kwargs:
                raise ValueError(f"UNetConfig key {name!r} given twice (directly and as an alias)")
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "UNetConfig":
        """Copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # ------------------------------------------------------------------ presets
    @classmethod
    def openai_256_uncond(cls) -> "UNetConfig":
        """guided-diffusion's ``256x256_diffusion_uncond.pt`` (the prior DRUS fine-tunes).

        Flags of the release: ``--attention_resolutions 32,16,8 --class_cond False
        --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear
        --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True
        --use_fp16 True --use_scale_shift_norm True``; guided-diffusion picks
        ``channel_mult = (1, 1, 2, 2, 4, 4)`` for 256 × 256. 552 814 086 parameters.
        """
        return cls(
            image_size=256,
            in_channels=3,
            model_channels=256,
            out_channels=3,
            num_res_blocks=2,
            attention_resolutions=(32, 16, 8),
            dropout=0.0,
            channel_mult=(1, 1, 2, 2, 4, 4),
            conv_resample=True,
            num_heads=4,
            num_head_channels=64,
            num_heads_upsample=-1,
            use_scale_shift_norm=True,
            resblock_updown=True,
            use_new_attention_order=False,
            learn_sigma=True,
        )

    @classmethod
    def small(
        cls,
        *,
        image_size: int = 64,
        in_channels: int = 1,
        model_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (16,),
        num_head_channels: int = 32,
        learn_sigma: bool = False,
        dropout: float = 0.0,
    ) -> "UNetConfig":
        """A ~1 M-parameter prior that trains and samples on a CPU.

        Same building blocks as :meth:`openai_256_uncond` (scale-shift norm, residual
        up/downsampling, 32-channel heads), 3 levels (64 → 32 → 16 pixels at ``image_size`` 64),
        attention at 16 × 16. With the defaults: 1 369 953 parameters (1 921 601 with
        ``num_res_blocks=2``).
        """
        return cls(
            image_size=image_size,
            in_channels=in_channels,
            model_channels=model_channels,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            dropout=dropout,
            channel_mult=channel_mult,
            num_head_channels=num_head_channels,
            use_scale_shift_norm=True,
            resblock_updown=True,
            learn_sigma=learn_sigma,
        )


# ====================================================================== building blocks
def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = MAX_PERIOD) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, guided-diffusion's convention.

    ``emb[b, i] = cos(t_b · ω_i)`` and ``emb[b, half + i] = sin(t_b · ω_i)`` with
    ``ω_i = max_period ** (-i / half)``, ``half = dim // 2``, ``i = 0 … half-1``; an odd ``dim``
    gets a trailing zero column.

    Parameters
    ----------
    timesteps : torch.Tensor
        ``[batch]`` timesteps (integer or float).
    dim : int
        Embedding width.
    max_period : float
        Period of the slowest sinusoid.

    Returns
    -------
    torch.Tensor
        ``[batch, dim]`` float32 embedding.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 and cast back to the input dtype (for bf16/fp16 nets)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def _norm(channels: int, groups: int) -> GroupNorm32:
    return GroupNorm32(groups, channels, eps=GROUP_NORM_EPS)


def _zero(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (the last conv of each residual branch, guided-diffusion)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepBlock(nn.Module):
    """A module whose ``forward`` takes the time embedding as a second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """``nn.Sequential`` that passes the time embedding to the children that take one."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Halve the resolution with a strided 3×3 conv (parameter ``op``) or 2×2 average pooling.

    Parameters
    ----------
    channels : int
        Input channels.
    use_conv : bool
        Learned strided convolution; else average pooling (then ``out_channels == channels``).
    out_channels : int or None
        Output channels (``channels`` if ``None``).
    """

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("Downsample without a conv cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution (nearest neighbour), then an optional 3×3 conv (parameter ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        elif self.out_channels != channels:
            raise ValueError("Upsample without a conv cannot change the channel count")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(TimestepBlock):
    """Residual block conditioned on the time embedding, optionally resampling.

    ``h = conv(SiLU(norm(x)))``; then either ``h + emb`` or, with scale-shift norm,
    ``norm(h)·(1 + scale) + shift``; then SiLU → dropout → zero-initialised conv; output
    ``skip(x) + h``. With ``up``/``down`` both branches are resampled (nearest / average pooling)
    after the first normalisation + SiLU.

    Parameters
    ----------
    channels : int
        Input channels.
    emb_channels : int
        Width of the time embedding.
    dropout : float
        Dropout probability.
    out_channels : int or None
        Output channels (``channels`` if ``None``); a 1×1 ``skip_connection`` conv appears when
        they differ, else the skip is an identity without parameters.
    use_scale_shift_norm : bool
        FiLM conditioning (``emb_layers`` then outputs ``2 · out_channels``).
    up, down : bool
        Resample by 2 inside the block.
    num_groups : int
        GroupNorm groups.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        *,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("ResBlock cannot both upsample and downsample")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            _norm(channels, num_groups),
            nn.SiLU(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, (2 if use_scale_shift_norm else 1) * self.out_channels),
        )
        self.out_layers = nn.Sequential(
            _norm(self.out_channels, num_groups),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zero(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, channels, H, W]``, ``emb``: ``[B, emb_channels]`` → ``[B, out_channels, H', W']``."""
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[2](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with a residual connection.

    ``qkv`` (1×1 conv1d, ``channels → 3·channels``) of the normalised features; attention with
    scale ``1/√d_head``; zero-initialised ``proj_out``. Legacy order (default, guided-diffusion's
    ``QKVAttentionLegacy``): the ``3·channels`` qkv rows are ``heads × [q, k, v] × d_head``. New
    order (``QKVAttention``): ``[q, k, v] × heads × d_head``.

    Parameters
    ----------
    channels : int
        Feature channels.
    num_heads : int
        Heads when ``num_head_channels == -1``.
    num_head_channels : int
        Channels per head (overrides ``num_heads``), or -1.
    use_new_attention_order : bool
        qkv layout, see above.
    num_groups : int
        GroupNorm groups.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        *,
        use_new_attention_order: bool = False,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"attention channels {channels} not divisible by num_head_channels {num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"attention channels {channels} not divisible by {self.num_heads} heads")
        self.use_new_attention_order = use_new_attention_order
        self.norm = _norm(channels, num_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def _split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, 3C, T]`` → q, k, v each ``[B, heads, T, d_head]``."""
        b, width, t = qkv.shape
        d = width // (3 * self.num_heads)
        if self.use_new_attention_order:
            q, k, v = qkv.reshape(b, 3, self.num_heads, d, t).unbind(1)
        else:
            q, k, v = qkv.reshape(b, self.num_heads, 3, d, t).unbind(2)
        return q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` → ``[B, C, H, W]``; any ``H·W``."""
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        q, k, v = self._split(self.qkv(self.norm(x)))
        # softmax(q kᵀ / √d) v, memory-efficient kernels where available.
        a = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, d]
        a = a.transpose(-1, -2).reshape(b, c, -1)
        return (x + self.proj_out(a)).reshape(b, c, *spatial)


# ====================================================================== the network
class UNet(nn.Module):
    """ADM UNet (guided-diffusion ``UNetModel`` layout, unconditional).

    Parameters
    ----------
    config : UNetConfig
        Hyper-parameters; kept as ``self.config``.

    Attributes
    ----------
    in_channels, out_channels : int
        Input channels and output channels (``config.model_out_channels``: ε then, if
        ``learn_sigma``, the variance channels).
    learn_sigma : bool
        Whether the output carries variance channels after the ε channels.

    Notes
    -----
    Call as ``model(x, t)`` with ``x`` ``[B, in_channels, H, W]`` and ``t`` ``[B]`` (or a scalar,
    broadcast) integer or float timesteps; returns ``[B, out_channels, H, W]``. ``H`` and ``W``
    must be multiples of ``config.size_multiple``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config = config
        cfg = config
        self.in_channels = cfg.in_channels
        self.out_channels = cfg.model_out_channels
        self.learn_sigma = cfg.learn_sigma
        self.model_channels = cfg.model_channels
        groups = cfg.num_groups
        emb_dim = cfg.time_embed_dim
        attn_factors = set(cfg.attention_downsample_factors)
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample

        def res(ch_in: int, ch_out: int | None = None, **kw: bool) -> ResBlock:
            return ResBlock(
                ch_in, emb_dim, cfg.dropout, ch_out,
                use_scale_shift_norm=cfg.use_scale_shift_norm, num_groups=groups, **kw,
            )

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch, heads, cfg.num_head_channels,
                use_new_attention_order=cfg.use_new_attention_order, num_groups=groups,
            )

        self.time_embed = nn.Sequential(
            nn.Linear(cfg.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        ch = first_ch = cfg.channel_mult[0] * cfg.model_channels
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))]
        )
        skip_channels = [ch]
        factor = 1
        last_level = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * cfg.model_channels)]
                ch = mult * cfg.model_channels
                if factor in attn_factors:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != last_level:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                factor *= 2

        self.middle_block = TimestepEmbedSequential(res(ch), attn(ch, cfg.num_heads), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * cfg.model_channels)]
                ch = mult * cfg.model_channels
                if factor in attn_factors:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample))
                    factor //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            _norm(ch, groups),
            nn.SiLU(),
            _zero(nn.Conv2d(first_ch, self.out_channels, 3, padding=1)),
        )

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (the first conv's)."""
        return self.input_blocks[0][0].weight.dtype

    def _check_input(
        self, x: torch.Tensor, timesteps: torch.Tensor | float | int, channels: int
    ) -> torch.Tensor:
        """Validate ``x`` (``channels`` channels, admissible size) and return ``[B]`` timesteps."""
        if x.ndim != 4:
            raise ValueError(
                f"x must be [batch, channels, n_z, n_x], got shape {tuple(x.shape)} "
                "(a single image [n_z, n_x] is image[None, None])"
            )
        if x.shape[1] != channels:
            raise ValueError(
                f"x has {x.shape[1]} channels, the network takes {channels}"
                + (" (wrap a 3-channel net in GreyscaleAdapter for 1-channel images)"
                   if x.shape[1] == 1 and channels == 3 else "")
            )
        m = self.config.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} must be divisible by {m} "
                f"(2 ** (len(channel_mult) - 1)); pad the image, e.g. with torch.nn.functional.pad"
            )
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(
                f"timesteps must be a scalar or have shape [batch] = [{x.shape[0]}], got {tuple(t.shape)}"
            )
        return t

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float | int) -> torch.Tensor:
        """Predict ε (and the variance interpolation ``v`` if ``learn_sigma``).

        Parameters
        ----------
        x : torch.Tensor
            ``[B, in_channels, H, W]`` noisy images ``x_t``.
        timesteps : torch.Tensor or number
            ``[B]`` integer or float timesteps, or a scalar used for the whole batch.

        Returns
        -------
        torch.Tensor
            ``[B, out_channels, H, W]`` in ``x``'s dtype.
        """
        t = self._check_input(x, timesteps, self.in_channels)
        return self._backbone(x, t)

    def _backbone(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet proper, without input checks: ``[B, C_in, H, W]``, ``[B]`` → ``[B, C_out, H, W]``."""
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.dtype))
        h = x.to(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h).to(x.dtype)


class GreyscaleAdapter(nn.Module):
    """Use a multi-channel (colour) network on 1-channel images.

    The input ``[B, 1, H, W]`` is repeated on the ``in_channels`` of the wrapped net, and each
    block of ``in_channels`` outputs (ε, then the variance channels if ``learn_sigma``) is
    averaged — what the DRUS reference code does around the ImageNet prior. Averaging the three
    ε estimates of a grey image lowers their variance, and so the samples' spread (docs/method.md §6).

    Parameters
    ----------
    model : UNet
        A net whose ``out_channels`` is a multiple of its ``in_channels``.

    Attributes
    ----------
    in_channels : int
        1.
    out_channels : int
        ``1`` or ``2`` (``learn_sigma``): channel 0 is ε.
    learn_sigma : bool
        As the wrapped net.
    """

    def __init__(self, model: UNet) -> None:
        super().__init__()
        if model.in_channels == 1:
            raise ValueError(
                f"GreyscaleAdapter: the {type(model).__name__} already takes 1-channel images; "
                "use it directly (test model.in_channels, not model.config.in_channels)"
            )
        if model.out_channels % model.in_channels:
            raise ValueError(
                f"GreyscaleAdapter needs out_channels ({model.out_channels}) to be a multiple of "
                f"in_channels ({model.in_channels})"
            )
        self.model = model
        self.in_channels = 1
        self.out_channels = model.out_channels // model.in_channels
        self.learn_sigma = model.learn_sigma

    @property
    def config(self) -> UNetConfig:
        """The wrapped net's config."""
        return self.model.config

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float | int) -> torch.Tensor:
        """``[B, 1, H, W]`` → ``[B, out_channels, H, W]`` (channel 0 = ε averaged over colours)."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"GreyscaleAdapter expects [batch, 1, n_z, n_x], got {tuple(x.shape)}")
        c = self.model.in_channels
        out = self.model(x.expand(-1, c, -1, -1), timesteps)
        b, _, h, w = out.shape
        return out.reshape(b, self.out_channels, c, h, w).mean(dim=2)


class OneChannelUNet(UNet):
    """The DRUS 1-channel variant: a 3-channel ADM UNet plus a learned 1×1 output conv.

    The grey image is repeated on the ``in_channels`` inputs of the backbone, whose
    ``model_out_channels`` outputs (6 for the OpenAI net: 3 ε + 3 variance) are mapped by the
    1×1 convolution ``out_1ch`` to ``model_out_channels // in_channels`` outputs (2: ε, variance).

    State-dict naming: the backbone's guided-diffusion keys unchanged (``time_embed.0.weight``,
    ``input_blocks.0.0.weight``, …, ``out.2.bias``) plus ``out_1ch.weight``
    ``[n_out, model_out_channels, 1, 1]`` and ``out_1ch.bias`` ``[n_out]``.

    ``out_1ch`` is initialised to the colour average (weight ``1/in_channels`` from each block of
    colour channels, bias 0), so a freshly converted OpenAI net behaves exactly like
    ``GreyscaleAdapter(backbone)`` before fine-tuning.

    Parameters
    ----------
    config : UNetConfig
        Config of the multi-channel backbone (e.g. :meth:`UNetConfig.openai_256_uncond`).
    """

    #: Name of the extra convolution in the state dict.
    EXTRA_CONV = "out_1ch"

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        backbone_out = config.model_out_channels
        if backbone_out % config.in_channels:
            raise ValueError(
                f"OneChannelUNet needs model_out_channels ({backbone_out}) to be a multiple of "
                f"in_channels ({config.in_channels})"
            )
        n_out = backbone_out // config.in_channels
        self.backbone_out_channels = backbone_out
        self.out_1ch = nn.Conv2d(backbone_out, n_out, 1)
        with torch.no_grad():
            self.out_1ch.weight.copy_(_block_average_matrix(n_out, config.in_channels)[:, :, None, None])
            self.out_1ch.bias.zero_()
        self.in_channels = 1
        self.out_channels = n_out

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float | int) -> torch.Tensor:
        """``[B, 1, H, W]`` → ``[B, out_channels, H, W]`` (channel 0 = ε)."""
        t = self._check_input(x, timesteps, 1)
        h = self._backbone(x.expand(-1, self.config.in_channels, -1, -1), t)
        return self.out_1ch(h.to(self.dtype)).to(x.dtype)


def _block_average_matrix(n_blocks: int, block: int) -> torch.Tensor:
    """``[n_blocks, n_blocks·block]`` matrix averaging each consecutive block of ``block`` rows."""
    m = torch.zeros(n_blocks, n_blocks * block)
    for i in range(n_blocks):
        m[i, i * block:(i + 1) * block] = 1.0 / block
    return m


def convert_to_single_channel(
    state_dict: Mapping[str, torch.Tensor], config: UNetConfig
) -> UNet:
    """Fold "repeat grey input, average colour outputs" into a genuine 1-channel UNet.

    For an image ``g`` repeated on the ``C`` input channels the first convolution gives
    ``Σ_c W[:, c] ∗ g + b = (Σ_c W[:, c]) ∗ g + b``: summing the first conv's weight over the input
    channels is exact. The output conv is linear in the features, so averaging its rows (and
    biases) within each block of ``C`` colour channels — ε rows ``0..C-1`` and, with
    ``learn_sigma``, variance rows ``C..2C-1`` — yields exactly the colour-averaged outputs. The
    averaged ε is what the DRUS reference code uses; keeping only channel 0 would instead throw
    away two of three equally valid estimates. Hence, for every grey input::

        convert_to_single_channel(sd, cfg)(g, t) == GreyscaleAdapter(UNet(cfg) ⟵ sd)(g, t)

    up to float rounding.

    Parameters
    ----------
    state_dict : mapping
        guided-diffusion state dict of a net with ``config`` (e.g. the OpenAI 256 net).
    config : UNetConfig
        Its config; ``model_out_channels`` must be a multiple of ``in_channels``.

    Returns
    -------
    UNet
        A net with config ``config.replace(in_channels=1, out_channels=1)`` (2 outputs when
        ``learn_sigma``), in float32 on the state dict's device, in eval mode unchanged.
    """
    c = config.in_channels
    n_out = config.model_out_channels
    if n_out % c:
        raise ValueError(
            f"convert_to_single_channel: model_out_channels {n_out} is not a multiple of "
            f"in_channels {c}; no per-colour averaging is defined"
        )
    required = ("input_blocks.0.0.weight", "out.2.weight", "out.2.bias")
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise ValueError(
            f"convert_to_single_channel: state dict lacks {missing}; is it a guided-diffusion UNet state dict?"
        )
    w_in = state_dict["input_blocks.0.0.weight"]
    if w_in.shape[1] != c:
        raise ValueError(
            f"convert_to_single_channel: first conv takes {w_in.shape[1]} channels, config says "
            f"in_channels={c}"
        )
    if state_dict["out.2.weight"].shape[0] != n_out:
        raise ValueError(
            f"convert_to_single_channel: output conv has {state_dict['out.2.weight'].shape[0]} "
            f"channels, config says {n_out} (check learn_sigma)"
        )
    new_cfg = config.replace(in_channels=1, out_channels=1)
    new_sd = {k: v for k, v in state_dict.items()}
    new_sd["input_blocks.0.0.weight"] = w_in.float().sum(dim=1, keepdim=True).to(w_in.dtype)
    w_out, b_out = state_dict["out.2.weight"], state_dict["out.2.bias"]
    k_out = n_out // c
    new_sd["out.2.weight"] = w_out.float().reshape(k_out, c, *w_out.shape[1:]).mean(1).to(w_out.dtype)
    new_sd["out.2.bias"] = b_out.float().reshape(k_out, c).mean(1).to(b_out.dtype)
    device = w_in.device
    with torch.device("meta"):
        model = UNet(new_cfg)
    model = model.to_empty(device=device)
    model.load_state_dict(new_sd, strict=True, assign=False)
    logger.info(
        "converted a %d-channel UNet to 1 channel (%d outputs: colour-averaged)", c, new_cfg.model_out_channels
    )
    return model
