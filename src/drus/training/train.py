"""Training and fine-tuning of the diffusion prior (DDPM ε-prediction; Ho et al. 2020).

Loss: ``‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖²`` with ``t`` uniform over the ``T`` training steps;
with ``learn_sigma`` the network also outputs the interpolation ``v`` of its log-variance between
``β_t`` and ``β̃_t`` and the variational bound term is added with weight ``vlb_weight``
(Nichol & Dhariwal 2021, "hybrid" loss, the mean receiving no gradient from it).

Optimiser AdamW, linear warm-up, gradient clipping, an exponential moving average (EMA) of the
weights, bf16 autocast on CUDA, and checkpoints with full resume: ``<out>/state.pt`` holds model, EMA,
optimiser, generator state and step as tensors and plain data only (loaded with ``weights_only=True``
onto the CPU: a file with any other pickled object is refused, never run); ``<out>/prior.safetensors`` + ``prior.json`` hold the EMA weights in drus's own
checkpoint format (:mod:`drus.models.checkpoint`). A log line per ``log_every`` steps goes to ``train.log``.

Many processes: ``torchrun --nproc-per-node N -m drus.cli train …`` runs the same command as
DistributedDataParallel (NCCL on GPUs, one per process; gloo on CPUs). ``batch_size`` stays the global
batch: rank ``r`` of ``N`` trains on images ``[step·B + r·B/N, step·B + (r+1)·B/N)`` of the same
deterministic stream, with its own noise generator; gradients are averaged by DDP, so a step is the
single-process step on the whole batch (up to the noise draws). Rank 0 alone keeps the EMA and
writes the checkpoints, log and config; ``state.pt`` also holds every rank's generator state, so a
resume with the same number of processes continues exactly.

Images follow the normalisation convention of :mod:`drus.sampling.scaling` (RMS 0.25).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from drus.device import resolve_device
from drus.models.checkpoint import load_checkpoint, load_guided_diffusion, save_checkpoint
from drus.training.data import make_source
from drus.outputs import atomic_write, write_text_atomic
from drus.sampling.schedule import NoiseSchedule
from drus.models.unet import UNet, UNetConfig, convert_to_single_channel

__all__ = ["TrainConfig", "train", "diffusion_loss", "DEFAULT_PRIOR_MODEL"]

log = logging.getLogger(__name__)

#: Architecture of the shipped default prior: a fully convolutional ADM UNet (no attention, so a net
#: trained on 64 × 64 crops sees the same context at 256 × 256), 16 base channels, 4 levels
#: (1, 2, 4, 4), one residual block per level, 8 GroupNorm groups — 1.25 M parameters, chosen for
#: DDRM at 256 × 256 with C = 10 in minutes on 2 CPU cores (benchmarks/RESULTS.md).
DEFAULT_PRIOR_MODEL = {
    "model_channels": 16,
    "channel_mult": (1, 2, 4, 4),
    "num_res_blocks": 1,
    "attention_resolutions": (),
    "num_groups": 8,
}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` next to the checkpoints).

    Attributes
    ----------
    out_dir : str
        Output folder (checkpoints, log, exported prior). Re-running with the same folder resumes.
    data : str
        ``"synthetic"`` (speckle over random echogenicity maps), ``"beamformed"``
        (:class:`drus.training.data.BeamformedSpeckle`: beamformed-RF-like images on the 128² DRUS grid) or a
        folder of images.
    steps : int
        Total optimisation steps.
    batch_size, image_size : int
        Crops per step and their side in pixels.
    lr, weight_decay, warmup : float, float, int
        AdamW learning rate, weight decay, linear warm-up steps.
    ema_decay : float
        EMA decay per step (0.9999 as in the paper for long runs; use ~0.999 for short CPU runs).
    grad_clip : float
        Max global gradient norm (0 disables).
    learn_sigma : bool
        Give a new network a variance output, trained with the hybrid loss (``vlb_weight``). A
        fine-tuned checkpoint keeps its own setting.
    psf_std_px : float or None
        Gaussian blur of synthetic images (pixels).
    model : dict
        :class:`drus.models.unet.UNetConfig` fields for a new network, over :meth:`UNetConfig.small`
        (default: :data:`DEFAULT_PRIOR_MODEL`; ignored when ``init_from`` is set).
    init_from : str or None
        A drus prior (``.safetensors``/``.json``, e.g. the shipped one) or a guided-diffusion ``.pt``
        checkpoint to fine-tune (3-channel nets are converted to 1 channel
        by :func:`drus.models.unet.convert_to_single_channel`).
    init_config : dict or None
        The architecture of ``init_from`` (:class:`UNetConfig` fields); default: OpenAI's
        ``256x256_diffusion_uncond`` configuration, the one DRUS fine-tunes.
    seed : int
        Seeds the weights, the data stream and the noise.
    """

    out_dir: str = "runs/prior"
    data: str = "synthetic"
    steps: int = 20000
    batch_size: int = 16
    image_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    learn_sigma: bool = False
    vlb_weight: float = 0.001
    psf_std_px: float | None = None
    model: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_PRIOR_MODEL))
    init_from: str | None = None
    init_config: dict | None = None
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "image_size", "log_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")


def _gaussian_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def diffusion_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    generator: torch.Generator | None = None,
    learn_sigma: bool = False,
    vlb_weight: float = 0.001,
) -> torch.Tensor:
    """DDPM loss on a batch ``x0`` ``[B, C, H, W]``: ε-MSE, plus the VLB term when ``learn_sigma``."""
    b = x0.shape[0]
    dev = x0.device
    t = torch.randint(0, schedule.n_timesteps, (b,), generator=generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(dev)
    abar = torch.tensor(np.array(schedule.alphas_cumprod), dtype=torch.float32, device=dev)[t].view(b, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    out = model(x_t, t)
    c = x0.shape[1]
    eps = out[:, :c]
    loss = F.mse_loss(eps.float(), noise)
    if learn_sigma:
        v = out[:, c : 2 * c].float()
        betas = torch.tensor(np.array(schedule.betas), dtype=torch.float32, device=dev)
        abar_all = torch.tensor(np.array(schedule.alphas_cumprod), dtype=torch.float32, device=dev)
        abar_prev = torch.cat([torch.ones(1, device=dev), abar_all[:-1]])[t].view(b, 1, 1, 1)
        beta_t = betas[t].view(b, 1, 1, 1)
        post_var = beta_t * (1 - abar_prev) / (1 - abar)
        post_logvar = torch.log(torch.where(t.view(b, 1, 1, 1) == 0, betas[1].expand_as(post_var), post_var))
        post_mean = (abar_prev.sqrt() * beta_t / (1 - abar)) * x0 + ((1 - beta_t).sqrt() * (1 - abar_prev) / (1 - abar)) * x_t
        frac = (v + 1) / 2
        model_logvar = frac * torch.log(beta_t) + (1 - frac) * post_logvar
        x0_hat = (x_t - (1 - abar).sqrt() * eps.detach().float()) / abar.sqrt()
        model_mean = (abar_prev.sqrt() * beta_t / (1 - abar)) * x0_hat + ((1 - beta_t).sqrt() * (1 - abar_prev) / (1 - abar)) * x_t
        kl = _gaussian_kl(post_mean, post_logvar, model_mean, model_logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = (0.5 * (math.log(2 * math.pi) + model_logvar + (x0 - model_mean) ** 2 * torch.exp(-model_logvar)))
        nll = nll.mean(dim=(1, 2, 3)) / math.log(2.0)
        vlb = torch.where(t == 0, nll, kl)
        loss = loss + vlb_weight * schedule.n_timesteps * vlb.mean()
    return loss


#: Version of the ``state.pt`` layout: tensors, and plain data (numbers, strings, lists, dicts) only.
STATE_FORMAT = 2


def _save_state(state: dict, path: Path) -> None:
    atomic_write(path, lambda p: torch.save(state, p))


def _load_state(path: Path) -> dict:
    """A ``state.pt`` written by :func:`train`: tensors and plain data only, loaded onto the CPU.

    ``weights_only=True``: a file holding any other pickled object is refused, never executed. The
    state is read onto the CPU whatever the training device (the generator state must stay a CPU
    ``ByteTensor``); ``load_state_dict`` then copies weights and optimiser moments to the device.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, … from a foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: not a drus training state that loads as tensors and plain data ({first}); it was not "
            "resumed. Delete it to start afresh, or choose another --out") from None
    missing = {"model", "ema", "opt", "generator", "step", "elapsed", "config"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"{path}: not a drus training state (missing {', '.join(sorted(missing))}); delete it to start "
                         "afresh, or choose another --out")
    gens = [state["generator"], *state.get("rank_generators", [])]
    for gen in gens:
        if not (isinstance(gen, torch.Tensor) and gen.dtype == torch.uint8):
            raise ValueError(f"{path}: 'generator' must be a uint8 tensor (torch.Generator.get_state), got {type(gen).__name__}")
    state["generator"] = state["generator"].cpu()
    if "rank_generators" in state:
        state["rank_generators"] = [g.cpu() for g in state["rank_generators"]]
    return state


def distributed_context() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``); ``(0, 1, 0)`` in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def shard(step: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(first image index, count)`` of rank ``rank``'s part of the global batch of ``step``."""
    local = batch_size // world_size
    return step * batch_size + rank * local, local


def _build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, UNetConfig]:
    if cfg.init_from and Path(cfg.init_from).suffix in (".safetensors", ".json"):  # a drus checkpoint (a prior)
        model, config, _ = load_checkpoint(cfg.init_from)
        return model, config
    if cfg.init_from:
        config = UNetConfig.from_dict(cfg.init_config) if cfg.init_config else None
        model = load_guided_diffusion(cfg.init_from, config)
        if model.config.in_channels != 1:
            model = convert_to_single_channel(model.state_dict(), model.config)
        return model, model.config
    fields = dict(cfg.model)
    fields.setdefault("in_channels", 1)
    fields["learn_sigma"] = cfg.learn_sigma
    base = UNetConfig.small().to_dict()
    base.update(fields)
    ucfg = UNetConfig.from_dict(base)
    return UNet(ucfg), ucfg


def train(cfg: TrainConfig, *, progress: bool = True) -> Path:
    """Train (or resume) a prior as described by ``cfg``; returns the exported prior's path.

    The run is deterministic for a given config on a given device: the data stream is a pure
    function of (seed, image index) and the noise comes from a generator whose state is checkpointed.
    """
    from tqdm.auto import tqdm

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world, local_rank = distributed_context()
    is_main = rank == 0
    device = resolve_device(cfg.device)
    dist = None
    started_group = False
    if world > 1:  # under torchrun: DistributedDataParallel, the global batch split across the processes
        import torch.distributed as dist

        if cfg.batch_size % world:
            raise ValueError(f"batch_size {cfg.batch_size} is the global batch and must divide evenly among the "
                             f"{world} processes (torchrun --nproc-per-node); use a multiple of {world}")
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            started_group = True
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    model, ucfg = _build_model(cfg)
    model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if is_main else None  # EMA on rank 0 only
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = NoiseSchedule()
    gen = torch.Generator().manual_seed(cfg.seed + 1 + 1_000_003 * rank)  # a noise stream per rank
    source = make_source(cfg.data, cfg.image_size, seed=cfg.seed, psf_std_px=cfg.psf_std_px)
    step, elapsed, losses = 0, 0.0, []
    state_path = out / "state.pt"
    if state_path.exists():
        state = _load_state(state_path)
        if is_main and state["config"] != dataclasses.asdict(cfg) | {"steps": state["config"]["steps"]}:
            log.warning("resuming %s with a different config than the one it was started with", out)
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        rank_gens = state.get("rank_generators")
        if rank_gens is not None and len(rank_gens) == world:
            gen.set_state(rank_gens[rank])
        elif world == 1:
            gen.set_state(state["generator"])
        else:  # another number of processes than the run was saved with: fresh noise streams, data continues
            gen.manual_seed(cfg.seed + 1 + 1_000_003 * rank + 7919 * step)
            if is_main:
                log.warning("resuming %s with %d processes; it was saved with %d: the noise streams restart "
                            "(the data stream and the weights continue)", out, world, len(rank_gens or [0]))
        if is_main:
            log.info("resumed %s at step %d", out, step)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if is_main:
        write_text_atomic(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    amp = device.type == "cuda"
    logf = open(out / "train.log", "a") if is_main else None
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and is_main), desc="training", dynamic_ncols=True)

    def checkpoint() -> None:
        gens = [gen.get_state()]
        if world > 1:  # every rank's noise stream, for an exact resume
            gens = [None] * world
            dist.all_gather_object(gens, gen.get_state())
        if not is_main:
            return
        _save_state(
            {
                "format": STATE_FORMAT,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "opt": opt.state_dict(),
                "generator": gens[0],
                "rank_generators": gens,
                "world_size": world,
                "step": step,
                "elapsed": elapsed,
                "config": dataclasses.asdict(cfg),
            },
            state_path,
        )
        save_checkpoint(
            ema,
            ucfg,
            out / "prior.safetensors",
            metadata={
                "steps": step,
                "train_seconds": round(elapsed, 1),
                "loss_recent": float(np.mean(losses[-200:])) if losses else None,
                "data": cfg.data,
                "image_size": cfg.image_size,
                "batch_size": cfg.batch_size,
                "normalisation": "RMS 0.25 (drus.sampling.scaling)",
                "noise_schedule": schedule.to_dict(),
                "train_config": dataclasses.asdict(cfg),
            },
        )

    net.train()
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            first, count = shard(step, cfg.batch_size, rank, world)
            x0 = source.batch(first, count).to(device)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                loss = diffusion_loss(net, x0, schedule, generator=gen, learn_sigma=ucfg.learn_sigma, vlb_weight=cfg.vlb_weight)
            mean_loss = loss.detach().float().clone()
            if world > 1:  # every rank sees the same value, so all stop together on a non-finite loss
                dist.all_reduce(mean_loss)
                mean_loss /= world
            if not torch.isfinite(mean_loss):
                raise FloatingPointError(f"loss became {mean_loss.item()} at step {step}; lower lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                with torch.no_grad():
                    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                    for pe, pm in zip(ema.parameters(), model.parameters()):
                        pe.lerp_(pm, 1 - decay)
            step += 1
            elapsed += time.perf_counter() - t0
            losses.append(mean_loss.item())
            bar.update(1)
            if is_main and (step % cfg.log_every == 0 or step == cfg.steps):
                recent = float(np.mean(losses[-cfg.log_every :]))
                bar.set_postfix(loss=f"{recent:.4f}")
                logf.write(json.dumps({"step": step, "loss": recent, "lr": opt.param_groups[0]["lr"],
                                       "seconds": round(elapsed, 1), **({"processes": world} if world > 1 else {})}) + "\n")
                logf.flush()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint()
    finally:
        bar.close()
        if logf is not None:
            logf.close()
        if started_group:
            dist.destroy_process_group()
    return out / "prior.safetensors"
