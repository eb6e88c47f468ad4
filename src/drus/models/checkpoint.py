"""Loading and saving diffusion-prior weights.

Two formats:

- **guided-diffusion** ``.pt`` files (a pickled ``state_dict``), e.g. OpenAI's
  ``256x256_diffusion_uncond.pt`` or a DRUS fine-tune of it: :func:`load_guided_diffusion`.
  (A loader that guessed the key names of a 1-channel DRUS head was removed: no real checkpoint of
  that layout was available to test it against.) Loaded with ``torch.load(..., weights_only=True)``, so no code
  in the file is executed.
- **drus** checkpoints, our own: ``<name>.safetensors`` (the weights) next to ``<name>.json``
  (``{"format": "drus-unet", "format_version": 1, "model_class": ..., "config": {...},
  "metadata": {...}}``): :func:`save_checkpoint`, :func:`load_checkpoint`. The JSON alone rebuilds
  the network exactly; the metadata records e.g. training steps, loss and data.

Every mismatch raises :class:`CheckpointError` (a ``ValueError``) naming the file, listing
missing / unexpected keys and shape mismatches, and suggesting the config change that fixes it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from drus.models.unet import GreyscaleAdapter, OneChannelUNet, UNet, UNetConfig

__all__ = [
    "CheckpointError",
    "load_guided_diffusion",
    "save_checkpoint",
    "load_checkpoint",
    "count_parameters",
    "checkpoint_paths",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

logger = logging.getLogger(__name__)

FORMAT_NAME = "drus-unet"
FORMAT_VERSION = 1
#: File stem used when :func:`save_checkpoint` is given a directory.
DEFAULT_STEM = "model"
#: How many keys of each kind an error message lists.
_MAX_LISTED = 10
#: Containers a training script may wrap a state dict in.
_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "ema", "ema_model")
#: Prefixes that wrappers (DataParallel, Lightning, a parent module) put before the UNet keys.
_WRAPPER_PREFIXES = ("", "module.", "model.", "unet.", "net.", "module.model.", "model.unet.")
_MODEL_CLASSES: dict[str, type[UNet]] = {"UNet": UNet, "OneChannelUNet": OneChannelUNet}


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the network; the message says why and the fix."""


# ====================================================================== helpers
def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (works for models on the ``meta`` device).

    Parameters
    ----------
    model : nn.Module
        Any module.
    trainable_only : bool
        Count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _listing(items: list[str], what: str) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", … ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"\n  {len(items)} {what}: {shown}{more}"


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(getattr(t, "shape", ()))


def _config_hints(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], config: UNetConfig | None
) -> list[str]:
    """Guess which config field explains a state-dict mismatch."""
    hints: list[str] = []
    w_in_e, w_in_f = expected.get("input_blocks.0.0.weight"), found.get("input_blocks.0.0.weight")
    if w_in_e is not None and w_in_f is not None and _shape(w_in_f) and len(_shape(w_in_f)) == 4:
        c_e, c_f = _shape(w_in_e)[1], _shape(w_in_f)[1]
        ch_e, ch_f = _shape(w_in_e)[0], _shape(w_in_f)[0]
        if ch_e != ch_f and config is not None:
            base = ch_f // config.channel_mult[0]
            hints.append(
                f"first conv has {ch_f} output channels vs {ch_e}: set model_channels={base} "
                "(guided-diffusion flag num_channels)"
            )
        if c_e != c_f:
            if c_f == 3 and c_e == 1:
                hints.append(
                    "in_channels 1 vs 3 in the checkpoint: load it with the 3-channel config and use "
                    "convert_to_single_channel(state_dict, config) or GreyscaleAdapter(model)"
                )
            else:
                hints.append(f"in_channels {c_e} vs {c_f} in the checkpoint: set in_channels={c_f}")
    w_out_e, w_out_f = expected.get("out.2.weight"), found.get("out.2.weight")
    if w_out_e is not None and w_out_f is not None and _shape(w_out_f):
        o_e, o_f = _shape(w_out_e)[0], _shape(w_out_f)[0]
        if o_f == 2 * o_e:
            hints.append(
                f"the checkpoint outputs {o_f} channels vs {o_e}: it predicts the variance too, "
                "set learn_sigma=True"
            )
        elif 2 * o_f == o_e:
            hints.append(
                f"the checkpoint outputs {o_f} channels vs {o_e}: set learn_sigma=False"
            )
        elif o_f != o_e:
            hints.append(f"the checkpoint outputs {o_f} channels vs {o_e}: check out_channels/learn_sigma")
    extra = [k for k in found if k.split(".")[0] == OneChannelUNet.EXTRA_CONV]
    if extra:
        hints.append(
            f"keys {extra[:4]} are the extra 1×1 conv of drus's 1-channel variant: save such a model with "
            "drus.models.checkpoint.save_checkpoint and load it with load_checkpoint"
        )
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    if any(".op." in k for k in missing) and any(".in_layers." in k for k in unexpected):
        hints.append("the checkpoint downsamples with residual blocks: set resblock_updown=True")
    if any(".op." in k for k in unexpected) and any(".in_layers." in k for k in missing):
        hints.append("the checkpoint downsamples with strided convs: set resblock_updown=False")
    for key, t in expected.items():
        if key.endswith("emb_layers.1.weight") and key in found and _shape(found[key]):
            r = _shape(found[key])[0] / _shape(t)[0]
            if r == 2:
                hints.append("emb_layers output twice as wide in the checkpoint: set use_scale_shift_norm=True")
            elif r == 0.5:
                hints.append("emb_layers output half as wide in the checkpoint: set use_scale_shift_norm=False")
            break
    if any(".qkv." in k or ".proj_out." in k for k in missing ^ unexpected):
        hints.append("attention blocks sit elsewhere: check attention_resolutions and image_size")
    if any(k.startswith(("input_blocks.", "output_blocks.")) for k in missing ^ unexpected) and not hints:
        hints.append("the block layout differs: check num_res_blocks and channel_mult")
    return hints


def _diagnose(
    model: nn.Module, state_dict: Mapping[str, Any], source: str, config: UNetConfig | None
) -> CheckpointError | None:
    """Compare a state dict with ``model``; return an explanatory error or ``None`` if they fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(_shape(state_dict[k])) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return None
    hints = _config_hints(expected, state_dict, config)
    msg = (
        f"checkpoint {source} does not match the {type(model).__name__} built from the config"
        + _listing(missing, "missing keys (in the network, not in the file)")
        + _listing(unexpected, "unexpected keys (in the file, not in the network)")
        + _listing(mismatched, "shape mismatches")
    )
    if hints:
        msg += "\n  likely fix: " + "; ".join(hints)
    return CheckpointError(msg)


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Return the tensor dict inside a loaded ``.pt`` object (unwrapping common containers)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(obj).__name__}, expected a state dict (mapping of tensors)"
        )
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                logger.info("checkpoint %s: using the state dict stored under %r", source, key)
                return _unwrap(obj[key], source)
        raise CheckpointError(
            f"checkpoint {source} contains no tensors at the top level and none of the containers "
            f"{list(_CONTAINER_KEYS)}; top-level keys: {list(obj)[:_MAX_LISTED]}"
        )
    return dict(obj)


def _strip_prefix(state_dict: dict[str, torch.Tensor], anchor: str, source: str) -> tuple[dict, str]:
    """Remove a wrapper prefix such as ``module.`` if the UNet keys carry one."""
    for prefix in _WRAPPER_PREFIXES:
        if prefix + anchor in state_dict:
            if prefix:
                logger.info("checkpoint %s: stripping key prefix %r", source, prefix)
                n = len(prefix)
                return {k[n:] if k.startswith(prefix) else k: v for k, v in state_dict.items()}, prefix
            return state_dict, ""
    return state_dict, ""


def _read_pt(source: str | os.PathLike | Mapping[str, torch.Tensor], map_location: Any) -> tuple[dict, str]:
    if isinstance(source, Mapping):
        return _unwrap(source, "<state dict>"), "<state dict>"
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle errors, truncated files, non-weights objects
        raise CheckpointError(
            f"cannot read checkpoint {path} with torch.load(weights_only=True): {err}"
        ) from err
    return _unwrap(obj, str(path)), str(path)


# ====================================================================== guided-diffusion
def load_guided_diffusion(
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    config: UNetConfig | None = None,
    *,
    map_location: str | torch.device = "cpu",
) -> UNet:
    """Load a guided-diffusion UNet checkpoint strictly.

    Parameters
    ----------
    path : path-like or mapping
        A ``.pt`` file holding a guided-diffusion ``state_dict`` (optionally wrapped in
        ``{"state_dict": ...}``-like containers or with a ``module.`` prefix), or the state dict.
    config : UNetConfig, optional
        Architecture; defaults to :meth:`UNetConfig.openai_256_uncond`.
    map_location : str or torch.device
        Where to load the tensors and build the model.

    Returns
    -------
    UNet
        The network in float32 on ``map_location``, in eval mode.

    Raises
    ------
    CheckpointError
        If the file cannot be read or its keys/shapes do not match ``config``; the message lists
        missing/unexpected keys and shape mismatches and suggests the config fix.
    """
    config = UNetConfig.openai_256_uncond() if config is None else config
    state_dict, source = _read_pt(path, map_location)
    state_dict, _ = _strip_prefix(state_dict, "input_blocks.0.0.weight", source)
    with torch.device("meta"):
        model = UNet(config)
    err = _diagnose(model, state_dict, source, config)
    if err is not None:
        raise err
    model = model.to_empty(device=map_location)
    model.load_state_dict(state_dict, strict=True)
    logger.info("loaded guided-diffusion UNet from %s (%d parameters)", source, count_parameters(model))
    return model.eval()


# ====================================================================== drus format
def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, json)`` paths of a drus checkpoint.

    ``path`` may be the ``.safetensors`` file, the ``.json`` file, or a directory (then the stem
    ``model`` is used: ``<dir>/model.safetensors`` + ``<dir>/model.json``). Any other path is
    taken as a directory.
    """
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        return p.with_suffix(".safetensors"), p.with_suffix(".json")
    return p / f"{DEFAULT_STEM}.safetensors", p / f"{DEFAULT_STEM}.json"


def _model_class_name(model: nn.Module) -> str:
    for name, cls in _MODEL_CLASSES.items():
        if type(model) is cls:
            return name
    raise TypeError(
        f"save_checkpoint supports {list(_MODEL_CLASSES)}, got {type(model).__name__}"
        + (" (save the wrapped .model of a GreyscaleAdapter)" if isinstance(model, GreyscaleAdapter) else "")
    )


def save_checkpoint(
    model: UNet,
    config: UNetConfig,
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` as ``<name>.safetensors`` + ``<name>.json``.

    Parameters
    ----------
    model : UNet or OneChannelUNet
        The network; its ``config`` must equal ``config``.
    config : UNetConfig
        Architecture, written to the JSON so that :func:`load_checkpoint` rebuilds the net.
    path : path-like
        ``<name>.safetensors`` / ``<name>.json``, or a directory (created; files ``model.*``).
    metadata : mapping, optional
        JSON-serialisable facts about the weights (training steps, loss, data, seed, …).

    Returns
    -------
    Path
        The ``.safetensors`` file written.
    """
    from safetensors.torch import save_file

    class_name = _model_class_name(model)
    if not isinstance(config, UNetConfig):
        raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
    if model.config != config:
        raise ValueError(
            "save_checkpoint: config differs from model.config; pass model.config "
            f"(differences: {_config_diff(model.config, config)})"
        )
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as err:
        raise ValueError(f"save_checkpoint: metadata must be JSON-serialisable: {err}") from err
    weights_path, json_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(weights_path), metadata={"format": "pt", "drus_format": FORMAT_NAME})
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_class": class_name,
        "weights": weights_path.name,
        "n_parameters": count_parameters(model),
        "config": config.to_dict(),
        "metadata": metadata,
    }
    json_path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    logger.info("saved %s checkpoint to %s (+ %s)", class_name, weights_path, json_path.name)
    return weights_path


def _config_diff(a: UNetConfig, b: UNetConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    return ", ".join(f"{k}: {da[k]!r} vs {db[k]!r}" for k in da if da[k] != db[k])


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[UNet, UNetConfig, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : path-like
        The ``.safetensors`` or ``.json`` file, or the directory holding ``model.*``.
    map_location : str or torch.device
        Device for the weights.

    Returns
    -------
    model : UNet or OneChannelUNet
        Rebuilt from the JSON config, loaded strictly, in eval mode.
    config : UNetConfig
    metadata : dict

    Raises
    ------
    CheckpointError
        Missing/corrupt JSON or weights, unknown format or config key, or weights that do not
        match the config; the message names the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, json_path = checkpoint_paths(path)
    if not json_path.is_file():
        raise CheckpointError(
            f"checkpoint config {json_path} not found (a drus checkpoint is <name>.safetensors + "
            f"<name>.json; for a guided-diffusion .pt file use load_guided_diffusion)"
        )
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint config {json_path} is not valid JSON: {err}") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"checkpoint config {json_path} is not a {FORMAT_NAME!r} file "
            f"(format = {document.get('format') if isinstance(document, dict) else None!r})"
        )
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint config {json_path} has format_version {version!r}; this drus reads up to "
            f"{FORMAT_VERSION} — upgrade drus"
        )
    for key in ("config", "model_class"):
        if key not in document:
            raise CheckpointError(f"checkpoint config {json_path} lacks the field {key!r}")
    class_name = document["model_class"]
    if class_name not in _MODEL_CLASSES:
        raise CheckpointError(
            f"checkpoint config {json_path}: unknown model_class {class_name!r}; known: {list(_MODEL_CLASSES)}"
        )
    try:
        config = UNetConfig.from_dict(document["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint config {json_path}: invalid config: {err}") from err
    metadata = document.get("metadata", {})
    if document.get("weights") and document["weights"] != weights_path.name:
        weights_path = json_path.parent / document["weights"]
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights {weights_path} not found (config {json_path})")
    try:
        state_dict = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint weights {weights_path}: {err}") from err
    with torch.device("meta"):
        model = _MODEL_CLASSES[class_name](config)
    err = _diagnose(model, state_dict, str(weights_path), config)
    if err is not None:
        raise err
    model = model.to_empty(device=map_location)
    model.load_state_dict(state_dict, strict=True)
    logger.info("loaded %s from %s", class_name, weights_path)
    return model.eval(), config, metadata
