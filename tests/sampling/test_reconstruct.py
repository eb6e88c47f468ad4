"""The reconstruction entry point: intensity normalisation, sampling, estimates, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drus.sampling.scaling import TARGET_RMS, estimate_rms, prior_scale
from drus.physics.operators import Identity, SeparableBlur, gaussian_kernel, modulated_gaussian_kernel
from drus.sampling.config import SamplerConfig
from drus.models.prior import load_prior
from drus.sampling.reconstruct import reconstruct


class WhiteGaussianDenoiser(torch.nn.Module):
    """Exact ε-predictor for the prior x0 ~ N(0, r² I): x̂0 = x_t/√ᾱ · r²/(r² + σ_t²)."""

    def __init__(self, r: float = TARGET_RMS):
        super().__init__()
        from drus.sampling.schedule import NoiseSchedule

        self.r = r
        self.abar = torch.tensor(np.array(NoiseSchedule().alphas_cumprod), dtype=torch.float64)

    def forward(self, x, t):
        a = self.abar[t.long()].view(-1, 1, 1, 1).to(x.dtype)
        sig2 = (1 - a) / a
        x0 = x / a.sqrt() * self.r**2 / (self.r**2 + sig2)
        return (x / a.sqrt() - x0) / sig2.sqrt()


def _blur(n=(24, 20)):
    return SeparableBlur(modulated_gaussian_kernel(1.2, 4.0), gaussian_kernel(1.2), n)


@pytest.mark.parametrize("rms", [0.03, 3.0, 250.0])
def test_estimate_rms_recovers_the_scale_of_white_unknowns(rms):
    A = _blur((64, 64))
    g = torch.Generator().manual_seed(0)
    p = torch.ones(64, 64)
    p[20:40, 10:30] = 0  # an anechoic region: E[o²] is what is estimated, whatever p
    o = rms * torch.randn(64, 64, generator=g) * p / p.pow(2).mean().sqrt()
    sigma0 = 0.05 * float(A.apply(o).abs().max())
    y = A.apply(o) + sigma0 * torch.randn(64, 64, generator=g)
    assert estimate_rms(A, y, sigma0) == pytest.approx(rms, rel=0.06)


def test_estimate_rms_rejects_pure_noise():
    A = Identity((16, 16))
    with pytest.raises(ValueError, match="no signal above the stated noise"):
        estimate_rms(A, torch.zeros(16, 16), 1.0)


def test_prior_scale_is_one_rule_with_a_noise_inclusive_fallback(caplog):
    A = _blur((64, 64))
    g = torch.Generator().manual_seed(2)
    o = 3.0 * torch.randn(64, 64, generator=g)
    sigma0 = 0.05 * float(A.apply(o).abs().max())
    y = A.apply(o) + sigma0 * torch.randn(64, 64, generator=g)
    scale, source = prior_scale(A, y, sigma0)
    assert source == "estimated" and scale == pytest.approx(estimate_rms(A, y, sigma0) / TARGET_RMS)
    # a stated σ0 above the observation's power per component cannot be its noise level
    big = 10 * float(y.pow(2).mean().sqrt()) * float(A.singular_values.max())
    with caplog.at_level("WARNING", logger="drus.sampling.scaling"):
        scale2, source2 = prior_scale(A, y.numpy(), big)
    assert source2 == "noise-inclusive" and "noise-inclusive" in caplog.text
    assert scale2 == pytest.approx(estimate_rms(A, y, 0.0) / TARGET_RMS)
    # reconstruct() applies the same rule and says which branch it took
    model = WhiteGaussianDenoiser().eval()
    rec = reconstruct(A, y, sigma0=big, model=model, sampler=SamplerConfig(n_samples=2, n_steps=3), progress=False)
    assert rec.scale_source == "noise-inclusive" and rec.scale == pytest.approx(scale2)
    rec = reconstruct(A, y, sigma0=sigma0, model=model, sampler=SamplerConfig(n_samples=2, n_steps=3), progress=False,
                      scale=2.0)
    assert rec.scale_source == "given" and rec.scale == 2.0


def test_reconstruct_normalises_samples_and_is_reproducible():
    A = _blur()
    g = torch.Generator().manual_seed(1)
    o = 7.0 * torch.randn(*A.in_shape, generator=g)
    y = A.apply(o).numpy()
    sigma0 = 0.01 * float(np.abs(y).max())
    y = y + sigma0 * np.random.default_rng(0).standard_normal(y.shape)
    model = WhiteGaussianDenoiser().eval()
    sampler = SamplerConfig(n_samples=6, n_steps=20, seed=3)
    r1 = reconstruct(A, y, sigma0=sigma0, model=model, sampler=sampler, progress=False)
    r2 = reconstruct(A, y, sigma0=sigma0, model=model, sampler=sampler, progress=False)
    assert r1.sampler is sampler
    assert r1.samples.shape == (6, *A.in_shape)
    assert np.array_equal(r1.samples, r2.samples)
    assert r1.scale == pytest.approx(7.0 / TARGET_RMS, rel=0.1)
    # samples are in the units of the unknown and follow o where the data determine it (the
    # band-pass axial kernel loses o's low axial frequencies: measured correlation 0.85)
    assert np.corrcoef(r1.mean.ravel(), o.numpy().ravel())[0, 1] > 0.8
    assert np.std(r1.samples) == pytest.approx(7.0, rel=0.25)
    assert r1.var.shape == A.in_shape and np.all(r1.var >= 0)


def test_reconstruct_errors():
    A = _blur()
    m = WhiteGaussianDenoiser().eval()
    with pytest.raises(ValueError, match="output shape"):
        reconstruct(A, np.zeros((3, 3)), sigma0=0.1, model=m)
    y = np.ones(A.out_shape)
    y[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reconstruct(A, y, sigma0=0.1, model=m)
    with pytest.raises(ValueError, match="sigma0"):
        reconstruct(A, np.ones(A.out_shape), sigma0=-1.0, model=m)


def test_missing_prior_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="drus train"):
        load_prior(tmp_path / "nothing.safetensors")


def test_deno_is_the_identity_operator_case():
    from drus.sampling.reconstruct import deno

    g = np.random.default_rng(0)
    img = 0.3 * g.standard_normal((16, 24))
    m = WhiteGaussianDenoiser().eval()
    r = deno(img, sigma0=0.01, model=m, sampler=SamplerConfig.drus(n_samples=3, n_steps=10), progress=False)
    assert r.sampler.prior_fraction == 0.0  # DENO: the identity has no split to choose
    assert r.samples.shape == (3, 16, 24)
    # almost noiseless identity problem: every sample reproduces the image
    assert np.abs(r.mean - img).max() < 0.05
    with pytest.raises(ValueError, match="2-D"):
        deno(img[None], sigma0=0.01, model=m)


def test_reduced_precision_prior_stays_close_to_fp32(tmp_path):
    from drus.models.checkpoint import save_checkpoint
    from drus.models.unet import UNet, UNetConfig

    cfg = UNetConfig.from_dict({**UNetConfig.small().to_dict(), "model_channels": 8, "channel_mult": (1, 2),
                                "attention_resolutions": (), "num_groups": 4, "num_head_channels": 8})
    torch.manual_seed(0)
    net = UNet(cfg)
    with torch.no_grad():  # the output conv is zero-initialised: give every weight a value
        for p in net.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    path = save_checkpoint(net, cfg, tmp_path / "p.safetensors")
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        ref = load_prior(path)(x, t)
        low = load_prior(path, precision="bf16")(x, t)
    assert low.dtype == torch.float32 and ref.abs().max() > 0.1
    assert not torch.equal(low, ref)  # it really ran in bf16
    assert torch.allclose(low, ref, atol=0.05 * float(ref.abs().max()))
    with pytest.raises(ValueError, match="precision"):
        load_prior(path, precision="int8")


def test_sampler_config_defaults_are_the_papers_and_validate():
    p = SamplerConfig()
    assert (p.n_samples, p.n_steps, p.eta, p.eta_b, p.beta, p.seed, p.prior_fraction) == (10, 50, 0.85, 1.0, 0.5, 0, 0.0)
    assert SamplerConfig.paper() == p and SamplerConfig.drus().prior_fraction == 0.6
    assert SamplerConfig.drus(n_samples=3).replace(seed=None).to_attrs() == {
        "n_samples": 3, "n_steps": 50, "eta": 0.85, "eta_b": 1.0, "beta": 0.5, "prior_fraction": 0.6}
    for bad in ({"n_samples": 0}, {"n_steps": 2.5}, {"eta": 1.5}, {"eta_b": -0.1}, {"beta": 0}, {"prior_fraction": 1.0},
                {"seed": "x"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplerConfig(**bad)
    with pytest.raises(TypeError, match="SamplerConfig"):
        reconstruct(_blur(), np.ones(_blur().out_shape), sigma0=0.1, model=WhiteGaussianDenoiser(), sampler={"n_steps": 2})


def test_operator_config_validates():
    from drus.sampling.config import OperatorConfig

    assert OperatorConfig().to_dict() == {"unknown_size": 128, "threshold": 1e-3, "compute_dtype": "float64"}
    for bad, field in (({"unknown_size": 1}, "unknown_size"), ({"threshold": 1.0}, "threshold"),
                       ({"compute_dtype": "float16"}, "compute_dtype")):
        with pytest.raises(ValueError, match=field):
            OperatorConfig(**bad)


def test_regularised_sigma0_is_the_stated_quantile_rule():
    from drus.sampling.scaling import regularised_sigma0

    A = _blur()
    s = A.singular_values[A.singular_values > 0].double().numpy()
    scale = 4.0
    assert regularised_sigma0(A, sigma_noise=0.3, scale=scale, prior_fraction=0.0) == 0.3
    got = regularised_sigma0(A, sigma_noise=0.0, scale=scale, prior_fraction=0.6)
    assert got == pytest.approx(scale * TARGET_RMS * np.quantile(s, 0.6))
    # the prior decides (s_i · ρ < σ0) 60 % of the components
    assert np.mean(s * scale * TARGET_RMS < got * (1 + 1e-9)) == pytest.approx(0.6, abs=1.5 / s.size)
    assert regularised_sigma0(A, sigma_noise=1e6, scale=scale, prior_fraction=0.6) == 1e6  # never below the noise
    with pytest.raises(ValueError, match="prior_fraction"):
        regularised_sigma0(A, sigma_noise=0.1, scale=scale, prior_fraction=1.0)


def test_reconstruct_prior_fraction_runs_ddrm_with_the_regularised_sigma0():
    from drus.sampling.scaling import regularised_sigma0

    A = _blur()
    g = torch.Generator().manual_seed(1)
    y = A.apply(3.0 * torch.randn(*A.in_shape, generator=g)).numpy()
    sigma0 = 0.01 * float(np.abs(y).max())
    model = WhiteGaussianDenoiser().eval()
    kw = dict(sigma0=sigma0, model=model, progress=False)
    paper = reconstruct(A, y, sampler=SamplerConfig.paper(n_samples=4, n_steps=10), **kw)
    assert paper.sigma0_sampler == pytest.approx(sigma0)
    reg = reconstruct(A, y, sampler=SamplerConfig.paper(n_samples=4, n_steps=10, prior_fraction=0.6), **kw)
    assert reg.scale == paper.scale  # the scale comes from the noise level, not the regularised σ0
    assert reg.sigma0_sampler == pytest.approx(
        regularised_sigma0(A, sigma_noise=sigma0, scale=paper.scale, prior_fraction=0.6), rel=1e-6)
    assert reg.sigma0_sampler > 5 * sigma0
    # more components left to the prior: the samples spread more
    assert float(reg.var.mean()) > 1.5 * float(paper.var.mean())
    pooled = reg.var_pooled(3)
    assert pooled.shape == A.in_shape and pooled.mean() == pytest.approx(reg.var.mean(), rel=0.1)


def test_reconstruct_never_moves_the_callers_operator(monkeypatch):
    """The CPU twin of the GPU path: an operator on another device is copied, never moved in place
    (the numerical study reuses its operator for CPU tensors after a CUDA run)."""
    A = _blur()
    assert A.singular_values.device.type == "cpu"
    monkeypatch.setattr(type(A), "to", lambda self, *a, **k: (_ for _ in ()).throw(AssertionError("moved in place")))
    y = A.apply(torch.randn(*A.in_shape, generator=torch.Generator().manual_seed(0))).numpy()
    reconstruct(A, y, sigma0=0.01, model=WhiteGaussianDenoiser().eval(), sampler=SamplerConfig(n_samples=2, n_steps=2),
                progress=False)


def test_moved_copies_leave_the_original_untouched():
    from drus.physics.beamform import MatchedFilterBeamformer
    from drus.physics.decompose import decompose_bh
    from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave

    A = _blur()
    B = A.moved(dtype=torch.float64)
    assert B.singular_values.dtype == torch.float64 and A.singular_values.dtype == torch.float32
    grid = ImageGrid.from_extent(x_min=-1.5e-3, x_max=1.5e-3, z_min=5e-3, z_max=7e-3, n_x=8, n_z=8)
    op = decompose_bh(MatchedFilterBeamformer(LinearProbe(8, 0.3e-3, 5.208e6, 0.67), PlaneWave(20.832e6, 1540.0), grid),
                      cache=False, progress=False)
    moved = op.moved(dtype=torch.float64)
    assert all(b.vectors.dtype == torch.float64 for b in moved.blocks.values())
    assert all(b.vectors.dtype != torch.float64 for b in op.blocks.values()) and op.singular_values.dtype == torch.float32
    x = torch.randn(1, *op.in_shape)
    torch.testing.assert_close(moved.Vt(x.double()).float(), op.Vt(x), rtol=1e-4, atol=1e-5)


def test_a_prior_round_trips_with_its_noise_schedule(tmp_path, monkeypatch):
    """The schedule saved in a checkpoint's metadata comes back with load_prior and drives DDRM."""
    import drus.sampling.reconstruct as rec_mod
    from drus.models.checkpoint import save_checkpoint
    from drus.sampling.schedule import NoiseSchedule
    from drus.models.unet import UNet, UNetConfig

    cfg = UNetConfig.from_dict({**UNetConfig.small().to_dict(), "in_channels": 1, "model_channels": 8,
                                "channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (),
                                "num_groups": 4, "num_head_channels": 8})
    cosine = NoiseSchedule(kind="cosine")
    path = save_checkpoint(UNet(cfg), cfg, tmp_path / "p.safetensors", metadata={"noise_schedule": cosine.to_dict()})
    model = load_prior(path)
    assert model.noise_schedule == cosine
    assert load_prior().noise_schedule == NoiseSchedule()  # the shipped prior states the paper's schedule
    seen = {}
    real = rec_mod.ddrm_sample
    monkeypatch.setattr(rec_mod, "ddrm_sample", lambda *a, **k: seen.setdefault("s", k["schedule"]) and real(*a, **k))
    A = Identity((8, 8))
    reconstruct(A, np.random.default_rng(0).standard_normal((8, 8)), sigma0=0.1, model=model,
                sampler=SamplerConfig(n_samples=2, n_steps=2),
                progress=False)
    assert seen["s"] == cosine
    with pytest.raises(ValueError, match="unknown field"):
        NoiseSchedule.from_dict({"n_timesteps": 10, "warp": 2})
