"""Many frames (drus.pipelines.batch): a local Ray cluster of 2 workers on tiny simulated frames, resume,
a corrupt frame, one decomposition per geometry, and bit-identical frames alone / in a batch / without Ray.

Tiny: 16 elements, a 16 × 16 grid, a 2-level UNet with random weights, C = 2 samples, 3 DDRM steps.
The Ray tests skip when Ray is not installed (pip install 'drus[cluster]').
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from drus.datasets.acquisition import Acquisition, write_acquisition
from drus.datasets.io import load_images_hdf5
from drus.errors import OptionError
from drus.pipelines.batch import BatchConfig, expand_inputs, frame_seed, parse_frames, reconstruct_frames, run_batch
from drus.sampling.config import ReconstructionConfig, SamplerConfig

SRC = str(Path(__file__).resolve().parents[2] / "src")
RANGES = dict(x_range=(-2.2e-3, 2.2e-3), z_range=(3e-3, 7e-3), size=16)
CLI_RANGES = ["--x-range", "-2.2", "2.2", "--z-range", "3", "7", "--size", "16"]


def _frames(n: int, seed0: int = 0) -> list[Acquisition]:
    """``n`` simulated frames (speckle over a cyst, 2 % noise) of one 16-element 0° acquisition."""
    from drus.physics.geometry import ImageGrid
    from drus.physics.phantoms import speckle

    x = (np.arange(16) - 7.5) * 0.3e-3
    acq = Acquisition(channel_data=np.zeros((300, 16)), element_x=x, sampling_frequency=20.832e6, sound_speed=1540.0,
                      t0=0.0, angle=0.0, center_frequency=5.2e6, bandwidth=0.6, spectrum_source="file")
    grid = ImageGrid.from_extent(x_min=-2.2e-3, x_max=2.2e-3, z_min=3e-3, z_max=7e-3, n_x=16, n_z=16)
    model = acq.beamformer(grid).model
    echogenicity = np.ones(grid.shape)
    echogenicity[5:11, 5:11] = 0.1
    out = []
    for k in range(seed0, seed0 + n):
        y = model.simulate(speckle(echogenicity, seed=k))
        y = y + 0.02 * np.abs(y).max() * np.random.default_rng(k).standard_normal(y.shape)
        out.append(dataclasses.replace(acq, channel_data=y))
    return out


def _tiny_prior(path):
    import torch

    from drus.models.checkpoint import save_checkpoint
    from drus.models.unet import UNet, UNetConfig

    cfg = UNetConfig.from_dict({**UNetConfig.small().to_dict(), "model_channels": 8, "channel_mult": (1, 2),
                                "attention_resolutions": (), "num_groups": 4, "num_head_channels": 8})
    torch.manual_seed(0)
    return save_checkpoint(UNet(cfg).eval(), cfg, path)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A folder: ``cine.h5`` (4 frames), ``bad.h5`` (2 frames, the second with a NaN), ``junk.h5`` (not HDF5)."""
    root = tmp_path_factory.mktemp("batch")
    data = root / "scans"
    write_acquisition(data / "cine.h5", _frames(4))
    bad = write_acquisition(data / "bad.h5", _frames(2, seed0=10))
    with h5py.File(bad, "a") as f:
        f["channel_data"][1, 100, 3] = np.nan
    (data / "junk.h5").write_bytes(b"not an acquisition")
    prior = _tiny_prior(root / "prior.safetensors")
    reconstruction = ReconstructionConfig(sampler=SamplerConfig.drus(n_samples=2, n_steps=3, seed=7), prior=str(prior),
                                          device="cpu")
    config = BatchConfig(reconstruction=reconstruction, method="drus-var", **RANGES)
    return {"root": root, "data": data, "config": config, "prior": prior}


def batch_config(manifest: dict) -> BatchConfig:
    return BatchConfig.from_dict(json.loads(json.dumps(manifest["config"])))


def with_sampler(config: BatchConfig, **changes) -> BatchConfig:
    rc = config.reconstruction
    return config.replace(reconstruction=rc.replace(sampler=rc.sampler.replace(**changes)))


def _arrays(path):
    saved = load_images_hdf5(path)
    return {name: saved[name] for name in saved}


# --- without Ray ---------------------------------------------------------------------------------------
def test_frame_seeds_depend_on_the_frame_only():
    seeds = {frame_seed(7, "cine.h5", k) for k in range(100)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert frame_seed(7, "cine.h5", 3) == frame_seed(7, "cine.h5", 3) != frame_seed(8, "cine.h5", 3)
    assert frame_seed(7, "cine.h5", 3) != frame_seed(7, "other.h5", 3)


def test_inputs_and_frame_selection(scans, tmp_path):
    data = scans["data"]
    assert [p.name for p in expand_inputs(data)] == ["bad.h5", "cine.h5", "junk.h5"]
    assert [p.name for p in expand_inputs(str(data / "c*.h5"))] == ["cine.h5"]
    with pytest.raises(ValueError, match="matches no file"):
        expand_inputs(str(data / "*.uff"))
    assert parse_frames("0,3:5") == (0, 3, 4) and parse_frames(None) is None
    with pytest.raises(ValueError, match="'2:8'"):
        parse_frames("a")


def test_batch_config_embeds_the_reconstruction_config_and_round_trips():
    default = BatchConfig()
    assert default.reconstruction == ReconstructionConfig(sampler=SamplerConfig.drus())  # defaults declared there
    config = BatchConfig(reconstruction=ReconstructionConfig(sampler=SamplerConfig.drus(seed=3), prior="p.safetensors"),
                         method="drus-mean", angle=0.1, x_range=[-1e-3, 1e-3], size=32, sigma0=0.5)
    assert config.x_range == (-1e-3, 1e-3) and config.run_seed == 3
    assert Path(config.reconstruction.prior).is_absolute()  # compared across reruns, read by workers anywhere
    assert BatchConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="did you mean 'method'"):
        BatchConfig.from_dict({"methd": "drus-var"})
    with pytest.raises(ValueError, match="integer seed"):
        BatchConfig(reconstruction=ReconstructionConfig(sampler=SamplerConfig(seed=None)))
    with pytest.raises(ValueError, match="drus-var needs at least 2 samples"):
        BatchConfig(reconstruction=ReconstructionConfig(sampler=SamplerConfig(n_samples=1)))


def test_reconstruct_frames_checks_the_options_first(scans, tmp_path):
    with pytest.raises(OptionError, match="many frames run drus-mean or drus-var, not das") as exc:
        reconstruct_frames(scans["data"], method="das", out_dir=tmp_path)
    assert exc.value.option == "--method"
    with pytest.raises(OptionError, match="single PICMUS observation") as exc:
        reconstruct_frames(scans["data"], method="drus-var", layout="drus", out_dir=tmp_path)
    assert exc.value.option == "--layout"
    assert not any(tmp_path.iterdir())


def test_a_rerun_may_change_the_device_but_not_the_sampler(scans, tmp_path):
    """Nothing to run (no frame selected): only the manifest's configuration is checked."""
    config = scans["config"]
    run_batch(scans["data"], config=config, out_dir=tmp_path, frames=(), engine="local", progress=False)
    elsewhere = config.replace(reconstruction=config.reconstruction.replace(device="cuda"))
    res = run_batch(scans["data"], config=elsewhere, out_dir=tmp_path, frames=(), engine="local", progress=False)
    assert batch_config(res.manifest) == elsewhere and len(res.manifest["runs"]) == 2
    more = with_sampler(config, n_steps=4)
    with pytest.raises(ValueError, match=r"differs in reconstruction\.sampler\.n_steps\)"):
        run_batch(scans["data"], config=more, out_dir=tmp_path, frames=(), engine="local", progress=False)


@pytest.fixture(scope="module")
def alone(scans, tmp_path_factory):
    """Frame 2 of cine.h5 alone, in-process (no Ray), through ``drus reconstruct FILE --frames 2``."""
    import torch
    from click.testing import CliRunner

    from drus.cli import main

    out = tmp_path_factory.mktemp("alone")
    threads = torch.get_num_threads()
    result = CliRunner().invoke(main, [
        "reconstruct", str(scans["data"] / "cine.h5"), "--method", "drus-var", *CLI_RANGES, "--samples", "2",
        "--steps", "3", "--seed", "7", "--prior", str(scans["prior"]), "--frames", "2", "--threads", "1",
        "--device", "cpu", "--out", str(out), "--cache-dir", str(scans["root"] / "cache-alone")])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "1 frame(s) done, 0 failed" in result.output
    return out / "cine_f0002_drus-var.hdf5"


def test_one_frame_alone_without_ray(alone):
    saved = load_images_hdf5(alone)
    assert saved.grid.shape == (16, 16) and saved["samples"].shape == (2, 16, 16)
    assert saved.attrs["frame"] == 2 and saved.attrs["frame_seed"] == frame_seed(7, "cine.h5", 2)
    assert np.all(np.isfinite(saved["var"]))
    manifest = json.loads((alone.parent / "manifest.json").read_text())
    assert list(manifest["frames"]) == ["cine.h5#2"] and manifest["runs"][0]["engine"] == "local"


# --- a local Ray cluster with 2 workers --------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'drus[cluster]')")
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)  # workers import this checkout
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def batch(scans, ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    cache = scans["root"] / "cache"
    res = run_batch(scans["data"], config=scans["config"], out_dir=out, workers=2, engine="ray",
                    threads=1, cache_dir=cache, progress=False)
    return {"out": out, "cache": cache, "result": res}


def test_ray_batch_writes_one_output_per_frame(batch):
    res, out = batch["result"], batch["out"]
    assert sorted(res.done) == ["bad.h5#0", "cine.h5#0", "cine.h5#1", "cine.h5#2", "cine.h5#3"]
    assert sorted(p.name for p in out.glob("*.hdf5")) == [
        "bad_f0000_drus-var.hdf5", *(f"cine_f{k:04d}_drus-var.hdf5" for k in range(4))]
    images = [_arrays(out / f"cine_f{k:04d}_drus-var.hdf5") for k in range(4)]
    for k, a in enumerate(images):
        assert a["samples"].shape == (2, 16, 16) and np.all(np.isfinite(a["var"]))
        assert load_images_hdf5(out / f"cine_f{k:04d}_drus-var.hdf5").attrs["frame_seed"] == frame_seed(7, "cine.h5", k)
    assert not np.array_equal(images[0]["by"], images[1]["by"])  # frames are not mixed up
    manifest = json.loads(res.manifest_path.read_text())
    assert BatchConfig.from_dict(manifest["config"]) == batch_config(manifest) and batch_config(manifest).run_seed == 7
    run = manifest["runs"][-1]
    assert run["engine"] == "ray" and run["workers"] == 2 and run["frames_done"] == 5
    frames = manifest["frames"]
    assert len({frames[f"cine.h5#{k}"]["worker"] for k in range(4)}) == 2  # both workers took frames
    assert all(frames[f"cine.h5#{k}"]["timings"]["seconds_sampling"] > 0 for k in range(4))


def test_ray_batch_decomposes_each_geometry_once(batch):
    manifest = batch["result"].manifest
    (geometry,) = manifest["geometries"].values()  # both files share the geometry
    assert geometry["source"] == "computed" and geometry["split"] == "flip"
    assert {e["geometry"] for e in manifest["frames"].values() if e.get("geometry")} == set(manifest["geometries"])
    files = sorted(p.name for p in batch["cache"].iterdir())
    assert len(files) == 4 and len({f.split("-")[1] for f in files}) == 1  # one key: even + odd block, .json each


def test_ray_batch_reports_a_corrupt_frame_and_finishes_the_others(batch):
    res = batch["result"]
    assert sorted(res.failed) == ["bad.h5#1", "junk.h5#*"]
    frames = res.manifest["frames"]
    assert frames["bad.h5#1"]["status"] == "failed" and "NaN" in frames["bad.h5#1"]["error"]
    assert "bad.h5" in frames["bad.h5#1"]["error"] and "channel_data" in frames["bad.h5#1"]["error"]
    assert frames["junk.h5#*"]["status"] == "failed" and "junk.h5" in frames["junk.h5#*"]["error"]
    assert frames["bad.h5#0"]["status"] == "done"


def test_a_frame_alone_and_in_a_ray_batch_is_bit_identical(batch, alone):
    a, b = _arrays(alone), _arrays(batch["out"] / "cine_f0002_drus-var.hdf5")
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_ray_batch_resumes_after_an_output_is_deleted(batch, scans):
    out = batch["out"]
    before = {p.name: _arrays(p) for p in out.glob("*.hdf5")}
    (out / "cine_f0001_drus-var.hdf5").unlink()
    res = run_batch(scans["data"], config=scans["config"], out_dir=out, workers=2, engine="ray",
                    threads=1, cache_dir=batch["cache"], progress=False)
    assert res.done == ["cine.h5#1"]
    assert sorted(res.skipped) == ["bad.h5#0", "cine.h5#0", "cine.h5#2", "cine.h5#3"]
    assert sorted(res.failed) == ["bad.h5#1", "junk.h5#*"]  # retried, and still corrupt
    after = {p.name: _arrays(p) for p in out.glob("*.hdf5")}
    assert sorted(after) == sorted(before)
    for name in before:
        assert all(np.array_equal(before[name][k], after[name][k]) for k in before[name]), name
    manifest = res.manifest
    assert [g["source"] for g in manifest["geometries"].values()] == ["cache"]
    assert manifest["frames"]["cine.h5#1"]["attempts"] == 2 and len(manifest["runs"]) == 2
    config = scans["config"]
    changed = with_sampler(config, seed=8)
    with pytest.raises(ValueError, match="another configuration.*reconstruction.sampler.seed"):
        run_batch(scans["data"], config=changed, out_dir=out, engine="local", progress=False)


def test_cli_batch_reports_a_failed_frame_with_exit_code_1(scans, alone, tmp_path):
    """In-process (no --workers): the good frame is written, the corrupt one named, exit code 1; das is refused."""
    from click.testing import CliRunner

    from drus.cli import main

    common = ["--method", "drus-var", *CLI_RANGES, "--samples", "2", "--steps", "3", "--prior", str(scans["prior"]),
              "--threads", "1", "--device", "cpu", "--cache-dir", str(scans["root"] / "cache-alone")]
    result = CliRunner().invoke(main, ["reconstruct", str(scans["data"] / "bad.h5"), *common, "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "1 frame(s) done, 1 failed" in result.output and "bad.h5#1" in result.output
    assert (tmp_path / "bad_f0000_drus-var.hdf5").exists() and not (tmp_path / "bad_f0001_drus-var.hdf5").exists()
    das = CliRunner().invoke(main, ["reconstruct", str(scans["data"]), "--method", "das", "--out", str(tmp_path / "d")])
    assert das.exit_code == 2 and "many frames run drus-mean or drus-var" in das.output
