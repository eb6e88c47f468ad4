"""Tests of the ADM UNet (drus.models.unet) and checkpoint I/O (drus.models.checkpoint).

The expected state-dict layout is derived here independently, from the architecture rules of
guided-diffusion's ``UNetModel`` (Dhariwal & Nichol 2021, github.com/openai/guided-diffusion,
``guided_diffusion/unet.py``): closed-form block indices and channel counts, not the model code.
The parameter count 552 814 086 of ``256x256_diffusion_uncond.pt`` is the published size of that
checkpoint (``sum(p.numel())`` of guided-diffusion's model built with the release flags).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from drus.models.checkpoint import (
    CheckpointError,
    count_parameters,
    load_checkpoint,
    load_guided_diffusion,
    save_checkpoint,
)
from drus.models.unet import (
    AttentionBlock,
    GreyscaleAdapter,
    OneChannelUNet,
    UNet,
    UNetConfig,
    convert_to_single_channel,
    timestep_embedding,
)

torch.set_num_threads(1)

OPENAI_256_N_PARAMS = 552_814_086


# ---------------------------------------------------------------------------- fixtures/helpers
def tiny_config(**kw) -> UNetConfig:
    """2 levels, 16 px, colour in/out with learned variance: a few 10 k parameters."""
    base = dict(
        image_size=16, in_channels=3, model_channels=16, out_channels=3, num_res_blocks=1,
        attention_resolutions=(8,), channel_mult=(1, 2), num_head_channels=8,
        use_scale_shift_norm=True, resblock_updown=True, learn_sigma=True, num_groups=8,
    )
    base.update(kw)
    return UNetConfig(**base)


def mid_config() -> UNetConfig:
    """Same structure as the OpenAI 256 net (6 levels, attention at factors 8/16/32) but 1/8 wide."""
    return UNetConfig.openai_256_uncond().replace(image_size=64, model_channels=32, num_head_channels=8)


def randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Replace every parameter (incl. the zero-initialised convs) by seeded noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def inputs(batch, channels, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, h, w, generator=g), torch.tensor([3, 517, 999][:batch])


# ---------------------------------------------------------------------------- expected layout
def expected_state_dict_shapes(cfg: UNetConfig) -> dict[str, tuple[int, ...]]:
    """guided-diffusion ``UNetModel`` keys → shapes, in registration order, from first principles.

    Rules: L levels with widths ``w_l = mult_l · C``; encoder = conv, then per level
    ``num_res_blocks`` ResBlocks (+ attention if the level's factor ``2**l`` is listed) and, except
    at the last level, one down block: input block count ``1 + L·R + (L-1)``. Encoder block of
    (level l, r) sits at ``1 + l(R+1) + r``, the down block of level l at ``1 + l(R+1) + R``.
    Decoder: ``L(R+1)`` blocks; block j is level ``L-1-j//(R+1)``, index ``i = j % (R+1)``, takes the
    skip from encoder block ``n_in-1-j`` and ends with an up block if ``i == R`` and level > 0.
    """
    C, R, L = cfg.model_channels, cfg.num_res_blocks, len(cfg.channel_mult)
    E = 4 * C
    w = [m * C for m in cfg.channel_mult]
    factors = {cfg.image_size // r for r in cfg.attention_resolutions}
    k = 2 if cfg.use_scale_shift_norm else 1
    out: dict[str, tuple[int, ...]] = {}

    def res(p, cin, cout):
        out.update({
            f"{p}.in_layers.0.weight": (cin,), f"{p}.in_layers.0.bias": (cin,),
            f"{p}.in_layers.2.weight": (cout, cin, 3, 3), f"{p}.in_layers.2.bias": (cout,),
            f"{p}.emb_layers.1.weight": (k * cout, E), f"{p}.emb_layers.1.bias": (k * cout,),
            f"{p}.out_layers.0.weight": (cout,), f"{p}.out_layers.0.bias": (cout,),
            f"{p}.out_layers.3.weight": (cout, cout, 3, 3), f"{p}.out_layers.3.bias": (cout,),
        })
        if cin != cout:
            out.update({f"{p}.skip_connection.weight": (cout, cin, 1, 1), f"{p}.skip_connection.bias": (cout,)})

    def attn(p, ch):
        out.update({
            f"{p}.norm.weight": (ch,), f"{p}.norm.bias": (ch,),
            f"{p}.qkv.weight": (3 * ch, ch, 1), f"{p}.qkv.bias": (3 * ch,),
            f"{p}.proj_out.weight": (ch, ch, 1), f"{p}.proj_out.bias": (ch,),
        })

    out["time_embed.0.weight"], out["time_embed.0.bias"] = (E, C), (E,)
    out["time_embed.2.weight"], out["time_embed.2.bias"] = (E, E), (E,)
    out["input_blocks.0.0.weight"], out["input_blocks.0.0.bias"] = (w[0], cfg.in_channels, 3, 3), (w[0],)
    n_in = 1 + L * R + (L - 1)
    enc_width = [w[0]] + [None] * (n_in - 1)
    for level in range(L):
        for r in range(R):
            idx = 1 + level * (R + 1) + r
            cin = w[level - 1] if (r == 0 and level > 0) else w[level]
            res(f"input_blocks.{idx}.0", cin, w[level])
            if 2**level in factors:
                attn(f"input_blocks.{idx}.1", w[level])
            enc_width[idx] = w[level]
        if level < L - 1:
            idx = 1 + level * (R + 1) + R
            if cfg.resblock_updown:
                res(f"input_blocks.{idx}.0", w[level], w[level])
            elif cfg.conv_resample:
                out[f"input_blocks.{idx}.0.op.weight"] = (w[level], w[level], 3, 3)
                out[f"input_blocks.{idx}.0.op.bias"] = (w[level],)
            enc_width[idx] = w[level]
    res("middle_block.0", w[-1], w[-1])
    attn("middle_block.1", w[-1])
    res("middle_block.2", w[-1], w[-1])
    ch = w[-1]
    for j in range(L * (R + 1)):
        level, i = L - 1 - j // (R + 1), j % (R + 1)
        res(f"output_blocks.{j}.0", ch + enc_width[n_in - 1 - j], w[level])
        ch = w[level]
        sub = 1
        if 2**level in factors:
            attn(f"output_blocks.{j}.1", ch)
            sub = 2
        if i == R and level > 0:
            if cfg.resblock_updown:
                res(f"output_blocks.{j}.{sub}", ch, ch)
            elif cfg.conv_resample:
                out[f"output_blocks.{j}.{sub}.conv.weight"] = (ch, ch, 3, 3)
                out[f"output_blocks.{j}.{sub}.conv.bias"] = (ch,)
    out["out.0.weight"], out["out.0.bias"] = (w[0],), (w[0],)
    out["out.2.weight"] = (cfg.model_out_channels, w[0], 3, 3)
    out["out.2.bias"] = (cfg.model_out_channels,)
    return out


@pytest.fixture(scope="module")
def openai_meta() -> UNet:
    with torch.device("meta"):
        return UNet(UNetConfig.openai_256_uncond())


# ---------------------------------------------------------------------------- the OpenAI layout
def test_openai_256_parameter_count(openai_meta):
    assert count_parameters(openai_meta) == OPENAI_256_N_PARAMS
    assert openai_meta.out_channels == 6 and openai_meta.in_channels == 3
    assert UNetConfig.openai_256_uncond().attention_downsample_factors == (8, 16, 32)


@pytest.mark.parametrize(
    "cfg",
    [
        UNetConfig.openai_256_uncond(),
        UNetConfig.small(),
        UNetConfig.small(num_res_blocks=2, learn_sigma=True),
        # strided-conv / pooling resampling, additive time conditioning, no attention in blocks
        UNetConfig(image_size=32, model_channels=32, channel_mult=(1, 2, 3), attention_resolutions=(),
                   resblock_updown=False, use_scale_shift_norm=False, num_res_blocks=2),
        UNetConfig(image_size=32, model_channels=32, channel_mult=(1, 2), attention_resolutions=(32,),
                   resblock_updown=False, conv_resample=False, num_heads=2),
    ],
    ids=["openai256", "small", "small-r2-sigma", "conv-resample", "pool-resample"],
)
def test_state_dict_layout_matches_first_principles(cfg):
    with torch.device("meta"):
        model = UNet(cfg)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_state_dict_shapes(cfg)
    assert list(actual) == list(expected)  # same keys, same (registration) order
    assert actual == expected
    assert count_parameters(model) == sum(math.prod(s) for s in expected.values())


def test_openai_256_block_counts_and_spot_shapes(openai_meta):
    sd = openai_meta.state_dict()
    blocks = lambda part: {int(k.split(".")[1]) for k in sd if k.startswith(part + ".")}  # noqa: E731
    assert blocks("input_blocks") == set(range(1 + 6 * 2 + 5))  # 18
    assert blocks("output_blocks") == set(range(6 * 3))  # 18
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    # hand-derived for num_channels 256, mult (1,1,2,2,4,4), heads of 64 channels
    spot = {
        "input_blocks.0.0.weight": (256, 3, 3, 3),
        "time_embed.0.weight": (1024, 256),
        "time_embed.2.weight": (1024, 1024),
        "input_blocks.1.0.emb_layers.1.weight": (512, 1024),  # 2 × 256 for scale and shift
        "input_blocks.3.0.in_layers.0.weight": (256,),  # level-0 down block is a ResBlock
        "input_blocks.3.0.in_layers.2.weight": (256, 256, 3, 3),
        "input_blocks.7.0.skip_connection.weight": (512, 256, 1, 1),  # level 2: 256 → 512
        "input_blocks.10.1.qkv.weight": (1536, 512, 1),  # factor 8 = 32 px: attention
        "input_blocks.13.0.skip_connection.weight": (1024, 512, 1, 1),
        "input_blocks.13.1.qkv.weight": (3072, 1024, 1),  # factor 16
        "input_blocks.17.1.proj_out.weight": (1024, 1024, 1),  # factor 32
        "middle_block.1.qkv.weight": (3072, 1024, 1),
        "middle_block.0.out_layers.3.weight": (1024, 1024, 3, 3),
        "output_blocks.0.0.in_layers.2.weight": (1024, 2048, 3, 3),
        "output_blocks.0.0.skip_connection.weight": (1024, 2048, 1, 1),
        "output_blocks.2.2.in_layers.2.weight": (1024, 1024, 3, 3),  # up ResBlock after attention
        "output_blocks.5.0.in_layers.2.weight": (1024, 1536, 3, 3),  # skip from the 512-ch down block
        "output_blocks.6.1.qkv.weight": (1536, 512, 1),
        "output_blocks.11.1.in_layers.0.weight": (512,),  # level 2 (64 px): up block, no attention
        "output_blocks.17.0.in_layers.2.weight": (256, 512, 3, 3),
        "out.0.weight": (256,),
        "out.2.weight": (6, 256, 3, 3),
    }
    for key, shape in spot.items():
        assert shapes.get(key) == shape, key
    absent = [
        "input_blocks.3.0.op.weight",  # resblock_updown: no strided conv
        "input_blocks.1.1.qkv.weight",  # 256 px: no attention
        "input_blocks.7.1.qkv.weight",  # 64 px: no attention
        "input_blocks.3.0.skip_connection.weight",  # same channels: identity skip
        "output_blocks.9.1.qkv.weight",
        "output_blocks.17.1.in_layers.0.weight",  # level 0: no upsampling
    ]
    for key in absent:
        assert key not in shapes, key
    # 16 attention blocks: 2 per attended level in the encoder (3 levels), 1 middle, 3 per level in decoder
    assert sum(k.endswith("qkv.weight") for k in shapes) == 3 * 2 + 1 + 3 * 3
    assert openai_meta.middle_block[1].num_heads == 16


def test_guided_diffusion_pt_round_trip_strict(tmp_path):
    cfg = mid_config()
    model = randomise(UNet(cfg)).eval()
    path = tmp_path / "gd_mid.pt"
    torch.save(model.state_dict(), path)
    loaded = load_guided_diffusion(path, cfg)
    x, t = inputs(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, t), loaded(x, t))
    # DataParallel-style prefix is stripped
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    assert torch.equal(load_guided_diffusion(path, cfg).out[2].weight, model.out[2].weight)


def test_guided_diffusion_mismatch_explains(tmp_path):
    cfg = tiny_config()
    path = tmp_path / "colour_net.pt"
    torch.save(UNet(cfg).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_guided_diffusion(path, cfg.replace(in_channels=1, out_channels=1))
    msg = str(info.value)
    assert "colour_net.pt" in msg and "shape mismatches" in msg
    assert "input_blocks.0.0.weight (16, 3, 3, 3) vs expected (16, 1, 3, 3)" in msg
    assert "convert_to_single_channel" in msg
    with pytest.raises(CheckpointError) as info:
        load_guided_diffusion(path, cfg.replace(learn_sigma=False))
    assert "learn_sigma=True" in str(info.value)
    with pytest.raises(CheckpointError) as info:
        load_guided_diffusion(path, cfg.replace(resblock_updown=False))
    msg = str(info.value)
    assert "missing keys" in msg and "unexpected keys" in msg and "resblock_updown=True" in msg
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_guided_diffusion(bad, cfg)


# ---------------------------------------------------------------------------- forward semantics
def test_timestep_embedding_closed_form():
    t = torch.tensor([0, 1, 250, 999])
    dim = 32
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    half = dim // 2
    for b, i in [(1, 0), (2, 3), (3, 15), (2, 7)]:
        omega = 10_000 ** (-i / half)
        assert emb[b, i].item() == pytest.approx(math.cos(t[b].item() * omega), abs=1e-5)
        assert emb[b, half + i].item() == pytest.approx(math.sin(t[b].item() * omega), abs=1e-5)
    assert torch.equal(emb[0, :half], torch.ones(half)) and torch.equal(emb[0, half:], torch.zeros(half))
    odd = timestep_embedding(torch.tensor([5.5]), 7)
    assert odd.shape == (1, 7) and odd[0, -1] == 0
    assert odd[0, 0].item() == pytest.approx(math.cos(5.5), abs=1e-6)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_matches_reference_formula(new_order):
    """guided-diffusion's QKVAttention(Legacy) written out with einsum, scale 1/√d on q·k."""
    torch.manual_seed(0)
    block = randomise(AttentionBlock(16, num_head_channels=4, use_new_attention_order=new_order, num_groups=4))
    x = torch.randn(2, 16, 5, 3)  # any spatial size
    heads, d, T = 4, 4, 15
    qkv = block.qkv(block.norm(x.reshape(2, 16, T)))
    if new_order:
        q, k, v = (z.reshape(2 * heads, d, T) for z in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(2 * heads, 3 * d, T).split(d, dim=1)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(2, 16, T)
    expected = (x.reshape(2, 16, T) + block.proj_out(a)).reshape(x.shape)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_small_net_is_fully_convolutional_and_trains():
    cfg = UNetConfig.small()
    model = randomise(UNet(cfg))
    for h, w in [(64, 64), (128, 96)]:
        x, t = inputs(2, 1, h, w)
        x.requires_grad_(True)
        y = model(x, t)
        assert y.shape == (2, cfg.model_out_channels, h, w) and torch.isfinite(y).all()
    loss = y.square().mean()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) == len(grads)
    # scalar timestep broadcasts; float timesteps work
    with torch.no_grad():
        y1 = model(x[:1], 517)
        y2 = model(x[:1], torch.tensor([517.0]))
    torch.testing.assert_close(y1, y2)


def test_trained_size_crops_apply_at_256():
    model = randomise(UNet(UNetConfig.small()))
    x, t = inputs(1, 1, 256, 256)
    with torch.no_grad():
        y = model(x, t)
    assert y.shape == (1, 1, 256, 256) and torch.isfinite(y).all()


def test_input_validation_messages():
    model = UNet(UNetConfig.small())
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.zeros(1, 1, 66, 64), torch.tensor([1]))
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 3, 64, 64), torch.tensor([1]))
    with pytest.raises(ValueError, match="timesteps"):
        model(torch.zeros(2, 1, 64, 64), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[batch, channels, n_z, n_x\]"):
        model(torch.zeros(64, 64), torch.tensor([1]))


def test_small_preset_size():
    with torch.device("meta"):
        n = count_parameters(UNet(UNetConfig.small()))
    assert 0.8e6 < n < 2e6
    assert n == 1_369_953


def test_bfloat16_forward_close_to_float32():
    cfg = tiny_config()
    model = randomise(UNet(cfg)).eval()
    x, t = inputs(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x, t)
        y = model.to(torch.bfloat16)(x, t)
    assert y.dtype == torch.float32  # output in the input's dtype
    torch.testing.assert_close(y, ref, atol=0.05 * ref.abs().max().item(), rtol=0.0)


# ---------------------------------------------------------------------------- 1-channel variants
def test_convert_to_single_channel_equals_colour_average():
    cfg = tiny_config()
    colour = randomise(UNet(cfg), seed=3).eval()
    grey = convert_to_single_channel(colour.state_dict(), cfg).eval()
    assert grey.in_channels == 1 and grey.out_channels == 2 and grey.learn_sigma
    assert grey.config == cfg.replace(in_channels=1, out_channels=1)
    g, t = inputs(2, 1, 16, 16)
    with torch.no_grad():
        full = colour(g.repeat(1, 3, 1, 1), t)  # [B, 6, H, W]
        expected = torch.stack([full[:, 0:3].mean(1), full[:, 3:6].mean(1)], dim=1)
        torch.testing.assert_close(grey(g, t), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(GreyscaleAdapter(colour)(g, t), expected, atol=1e-6, rtol=0)


def test_greyscale_adapter_attributes():
    adapter = GreyscaleAdapter(UNet(tiny_config(learn_sigma=False)))
    assert (adapter.in_channels, adapter.out_channels, adapter.learn_sigma) == (1, 1, False)
    with pytest.raises(ValueError, match=r"\[batch, 1"):
        adapter(torch.zeros(1, 3, 16, 16), 0)
    with pytest.raises(ValueError, match="already takes 1-channel"):
        GreyscaleAdapter(OneChannelUNet(tiny_config()))


def test_one_channel_unet_layout_and_initial_average():
    cfg = tiny_config()
    model = randomise(OneChannelUNet(cfg), seed=4)
    keys = list(model.state_dict())
    assert keys[-2:] == ["out_1ch.weight", "out_1ch.bias"]
    assert keys[:-2] == list(expected_state_dict_shapes(cfg))
    assert tuple(model.out_1ch.weight.shape) == (2, 6, 1, 1)
    assert (model.in_channels, model.out_channels) == (1, 2)
    # a freshly built variant averages the colour channels, like GreyscaleAdapter
    fresh = OneChannelUNet(cfg)
    backbone = UNet(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("out_1ch.")}
    fresh.load_state_dict({**state, "out_1ch.weight": fresh.out_1ch.weight, "out_1ch.bias": fresh.out_1ch.bias})
    backbone.load_state_dict(state)
    g, t = inputs(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(g, t), GreyscaleAdapter(backbone)(g, t), atol=1e-6, rtol=0)


def test_safetensors_json_round_trip_exact(tmp_path):
    cfg = UNetConfig.small(learn_sigma=True)
    model = randomise(UNet(cfg), seed=7)
    meta = {"steps": 1200, "loss": 0.0412, "data": "speckle(seed=0)"}
    written = save_checkpoint(model, cfg, tmp_path / "prior.safetensors", metadata=meta)
    assert written.name == "prior.safetensors" and (tmp_path / "prior.json").is_file()
    loaded, cfg2, meta2 = load_checkpoint(tmp_path / "prior.json")
    assert cfg2 == cfg and meta2 == meta and type(loaded) is UNet
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    # directory form and the 1-channel variant
    one = randomise(OneChannelUNet(tiny_config()), seed=8)
    save_checkpoint(one, one.config, tmp_path / "runs", metadata={})
    loaded1, _, _ = load_checkpoint(tmp_path / "runs")
    assert type(loaded1) is OneChannelUNet
    assert all(torch.equal(v, loaded1.state_dict()[k]) for k, v in one.state_dict().items())


def test_load_checkpoint_errors_name_the_file(tmp_path):
    cfg = tiny_config()
    save_checkpoint(UNet(cfg), cfg, tmp_path / "net.safetensors", metadata={"steps": 0})
    json_path = tmp_path / "net.json"
    document = json.loads(json_path.read_text())
    # weights do not fit the config any more
    document["config"]["in_channels"] = 1
    json_path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "net.safetensors")
    msg = str(info.value)
    assert "net.safetensors" in msg and "shape mismatches" in msg and "input_blocks.0.0.weight" in msg
    # unknown config key
    document["config"]["in_channels"] = 3
    document["config"]["learn_sgima"] = True
    json_path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"net\.json.*'learn_sigma'"):
        load_checkpoint(json_path)
    # corrupt JSON
    json_path.write_text("{ not json")
    with pytest.raises(CheckpointError, match=r"net\.json is not valid JSON"):
        load_checkpoint(json_path)
    # missing JSON
    json_path.unlink()
    with pytest.raises(CheckpointError, match=r"net\.json not found"):
        load_checkpoint(tmp_path / "net.safetensors")
    with pytest.raises(ValueError, match="differs from model.config"):
        save_checkpoint(UNet(cfg), cfg.replace(dropout=0.1), tmp_path / "x.safetensors")


# ---------------------------------------------------------------------------- config
def test_config_dict_round_trip_and_validation():
    cfg = UNetConfig.openai_256_uncond()
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert UNetConfig.from_dict(json.loads(json.dumps(d))) == cfg
    flags = dict(d)
    flags["num_channels"] = flags.pop("model_channels")
    flags["attention_resolutions"] = "32,16,8"
    flags["channel_mult"] = "1,1,2,2,4,4"
    assert UNetConfig.from_dict(flags) == cfg
    with pytest.raises(ValueError, match="did you mean 'attention_resolutions'"):
        UNetConfig.from_dict({"attention_resolution": (16,)})
    with pytest.raises(ValueError, match="did you mean 'num_head_channels'"):
        UNetConfig.from_dict({"num_heads_channels": 64})
    with pytest.raises(ValueError, match="never reached"):
        UNetConfig(image_size=64, channel_mult=(1, 2), attention_resolutions=(16,))
    with pytest.raises(ValueError, match="num_groups"):
        UNetConfig(model_channels=24)


# ---------------------------------------------------------------------------- GPU (off by default)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_gpu(dtype):
    cfg = mid_config()
    model = randomise(UNet(cfg)).eval().cuda()
    x, t = inputs(2, 3, 64, 96)
    x, t = x.cuda(), t.cuda()
    with torch.no_grad():
        ref = model(x, t)
        y = model.to(dtype)(x, t)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    rel = (y - ref).norm() / ref.norm()
    assert rel < 0.05, rel.item()
