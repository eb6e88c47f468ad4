"""Training pipeline: data sources, the DDPM loss, determinism and exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drus.models.checkpoint import load_checkpoint
from drus.sampling.scaling import TARGET_RMS, normalise_rms
from drus.training.data import FolderImages, SyntheticSpeckle, make_source
from drus.sampling.schedule import NoiseSchedule
from drus.training.train import TrainConfig, diffusion_loss, train
from drus.models.unet import UNet, UNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"model_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (), "num_groups": 4,
        "num_head_channels": 8}


def _cfg(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path / "run"), steps=4, batch_size=2, image_size=16, model=TINY, log_every=1,
                checkpoint_every=2, device="cpu", warmup=1)
    base.update(kw)
    return TrainConfig(**base)


def test_synthetic_source_is_deterministic_and_normalised():
    src = SyntheticSpeckle(32, seed=3)
    a, b = src[5], src[5]
    assert a.shape == (1, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, src[6])
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(TARGET_RMS, rel=1e-5)
    assert src.batch(0, 3).shape == (3, 1, 32, 32)
    blurred = SyntheticSpeckle(32, seed=3, psf_std_px=1.5)[5]
    # a PSF correlates neighbouring pixels: lag-1 correlation goes from ≈ 0 to clearly positive
    corr = lambda x: np.corrcoef(x[0, :, :-1].ravel(), x[0, :, 1:].ravel())[0, 1]  # noqa: E731
    assert abs(corr(a)) < 0.15 < corr(blurred)


def test_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((40, 30)).astype(np.float32))
    np.savez(tmp_path / "b.npz", img=rng.standard_normal((2, 20, 50)))
    src = FolderImages(tmp_path, 24, seed=1)
    assert len(src.images) == 3
    x = src[0]
    assert x.shape == (1, 24, 24)
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(TARGET_RMS, rel=1e-5)
    assert isinstance(make_source(str(tmp_path), 24), FolderImages)
    with pytest.raises(FileNotFoundError, match="not found"):
        make_source(str(tmp_path / "nope"), 24)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable 2-D images"):
        FolderImages(tmp_path / "empty", 24)


def test_normalise_rms_keeps_zero_images():
    z = np.zeros((4, 4), np.float32)
    assert normalise_rms(z) is z


def test_loss_is_the_noise_mse_for_a_known_predictor():
    """A 'network' that returns the true noise has zero ε-loss; one that returns 0 has loss ≈ 1."""
    sched = NoiseSchedule()

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    x0 = torch.randn(64, 1, 8, 8) * 0.25
    loss = diffusion_loss(Zero(), x0, sched, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(1.0, abs=0.05)
    model = UNet(UNetConfig.from_dict({**UNetConfig.small().to_dict(), **TINY, "learn_sigma": True}))
    hybrid = diffusion_loss(model, x0, sched, generator=torch.Generator().manual_seed(0), learn_sigma=True)
    assert torch.isfinite(hybrid) and hybrid.requires_grad


def test_training_reduces_the_loss(tmp_path):
    cfg = _cfg(tmp_path, steps=60, batch_size=8, lr=2e-3, log_every=10, checkpoint_every=60)
    train(cfg, progress=False)
    log = [json.loads(l) for l in (tmp_path / "run" / "train.log").read_text().splitlines()]
    assert log[-1]["step"] == 60
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]


def test_resume_is_exact(tmp_path):
    """4 steps straight == 2 steps, stop, resume to 4 (same weights bit for bit)."""
    straight = train(_cfg(tmp_path / "a"), progress=False)
    train(_cfg(tmp_path / "b", steps=2), progress=False)
    resumed = train(_cfg(tmp_path / "b", steps=4), progress=False)
    ma, _, meta_a = load_checkpoint(straight)
    mb, _, meta_b = load_checkpoint(resumed)
    assert meta_a["steps"] == meta_b["steps"] == 4
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="ema_decay"):
        _cfg(tmp_path, ema_decay=1.0)
    with pytest.raises(ValueError, match="steps"):
        _cfg(tmp_path, steps=0)


def test_fine_tuning_a_three_channel_guided_diffusion_checkpoint(tmp_path):
    """A 3-channel learned-variance net saved as a plain .pt state dict is converted to 1 channel and trained."""
    cfg3 = UNetConfig.from_dict({**UNetConfig.small().to_dict(), **TINY, "in_channels": 3, "learn_sigma": True})
    torch.manual_seed(0)
    net3 = UNet(cfg3)
    with torch.no_grad():
        for p in net3.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(net3.state_dict(), tmp_path / "gd.pt")
    cfg = _cfg(tmp_path, steps=2, init_from=str(tmp_path / "gd.pt"), init_config=cfg3.to_dict(), lr=1e-4, batch_size=1)
    out = train(cfg, progress=False)
    model, ucfg, meta = load_checkpoint(out)
    assert ucfg.in_channels == 1 and ucfg.learn_sigma and meta["steps"] == 2
    # the first conv is the 3-channel one summed over its inputs (then moved by 2 small steps)
    first = net3.state_dict()["input_blocks.0.0.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(model.state_dict()["input_blocks.0.0.weight"], first, atol=5e-3)


def test_beamformed_source_looks_like_pulse_echo_rf():
    """Deterministic, RMS-normalised; without aliasing (a pitch of λ/8) the depth spectrum peaks at the
    pulse-echo frequency 2 f0 / c (within the ±15 % f0 and ±3 % c jitter); laterally it is smooth."""
    from drus.training.data import BeamformedSpeckle

    f0, c = 5.208e6, 1540.0
    fine = BeamformedSpeckle(64, seed=1, pitch=c / f0 / 8, f0=f0)
    a = fine[3]
    assert a.shape == (1, 64, 64) and a.dtype == np.float32 and np.array_equal(a, fine[3])
    assert not np.array_equal(a, fine[4])
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(TARGET_RMS, rel=1e-5)
    spec = np.mean(np.abs(np.fft.rfft(fine.batch(0, 8)[:, 0].numpy(), axis=1)) ** 2, axis=(0, 2))
    k = np.fft.rfftfreq(64, d=fine.pitch)
    assert k[np.argmax(spec)] == pytest.approx(2 * f0 / c, rel=0.2)
    corr = lambda x, ax: np.corrcoef(np.take(x, range(63), axis=ax).ravel(), np.take(x, range(1, 64), axis=ax).ravel())[0, 1]  # noqa: E731
    assert corr(a[0], 1) > 0.8  # 0.4–0.9 mm lateral PSF at λ/8 pixels
    assert make_source("beamformed", 16).size == 16


def test_fine_tuning_a_drus_prior(tmp_path):
    """--init-from a drus safetensors prior (e.g. the shipped one): same architecture, trained further."""
    first = train(_cfg(tmp_path, steps=2), progress=False)
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / "tuned"), steps=2, init_from=str(first), data="beamformed", lr=1e-4)
    tuned, ucfg, meta = load_checkpoint(train(cfg, progress=False))
    base, bcfg, _ = load_checkpoint(first)
    assert ucfg == bcfg and meta["steps"] == 2
    w0, w1 = base.state_dict()["input_blocks.0.0.weight"], tuned.state_dict()["input_blocks.0.0.weight"]
    assert not torch.equal(w0, w1) and torch.allclose(w0, w1, atol=5e-2)
