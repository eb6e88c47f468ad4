"""``drus demo`` and the CLI, end to end on a tiny grid with the shipped prior."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from drus.cli import main
from drus.defaults import PRIOR_FRACTION
from drus.sampling.config import QUICK_SAMPLES, QUICK_STEPS, ReconstructionConfig, SamplerConfig
from drus.pipelines.demo import DEMO_FILES, PW_CYSTS
from drus.sampling.estimators import drus_var, drus_var_pooled
from drus.datasets.io import load_images_hdf5, read_ustb_channel_data
from drus.models.prior import default_prior_path

needs_prior = pytest.mark.skipif(not default_prior_path().exists(), reason="no shipped prior")


@needs_prior
def test_demo_writes_pictures_samples_and_metrics(tmp_path):
    out, cache = tmp_path / "demo", tmp_path / "cache"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--samples", "2", "--steps", "3", "--size", "64",
                                    "--plane-wave-size", "32", "--cache-dir", str(cache), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "DRUSvar" in res.output and "gCNR" in res.output and "plane wave" in res.output
    for f in DEMO_FILES:
        assert (out / f).stat().st_size > 0, f
    summary = json.loads((out / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert len(metrics) == 5
    for m in metrics.values():
        assert 0 <= m["gcnr"]["mean"] <= 1 and m["snr"]["mean"] > 0 and len(m["gcnr"]["values"]) == 9
    saved = load_images_hdf5(out / "demo.h5")
    assert saved["samples"].shape == (2, 64, 64)
    assert np.allclose(saved["drus_mean"], saved["samples"].mean(axis=0), atol=1e-5)
    cd = read_ustb_channel_data(out / "channel_data.h5")  # re-readable by drus beamform
    assert cd.n_tx == 1 and cd.n_elements == 128

    # the plane-wave panel: DAS 1 PW, DRUSmean, DRUSvar and the pooled DRUSvar, scored on its cysts
    pw = summary["plane_wave"]
    assert [k.split(" (")[0] for k in pw["metrics"]] == ["DAS", "DRUSmean", "DRUSvar", f"DRUSvar pooled "
                                                          f"{pw['settings']['pool_window']}×{pw['settings']['pool_window']}"]
    for name, m in pw["metrics"].items():
        assert len(m["gcnr"]["values"]) == len(PW_CYSTS) == len(m["snr"]["values"]), name
        assert all(np.isfinite(m[k]["mean"]) for k in ("gcnr", "snr", "cnr")), name
        assert 0 <= m["gcnr"]["mean"] <= 1 and m["snr"]["mean"] > 0, name
    st = pw["settings"]
    assert st["split"] == "flip" and st["sigma0"] > 0 and st["sigma0_source"].startswith("spectral fit")
    assert st["prior_fraction"] == PRIOR_FRACTION and st["sigma0_sampler"] >= st["sigma0"]
    for line in ("DAS (1 PW)", "DRUSvar pooled"):
        assert line in res.output
    pws = load_images_hdf5(out / "plane_wave.h5")
    assert pws["samples"].shape == (2, *st["grid"]) and pws.grid.shape == tuple(st["grid"])
    assert pws.attrs["operator"] == "DecomposedBH" and pws.attrs["decomposition_key"] == st["decomposition_key"]
    assert np.allclose(pws["drus_var"], drus_var(pws["samples"]), rtol=1e-5, atol=1e-7)
    assert np.allclose(pws["drus_var_pooled"], drus_var_pooled(pws["samples"], window=st["pool_window"]),
                       rtol=1e-5, atol=1e-7)
    assert any(p.suffix == ".safetensors" for p in cache.iterdir())  # BH decomposed into the given cache
    from drus.outputs import default_file_mode

    assert (out / "plane_wave_acquisition.h5").stat().st_mode & 0o777 == default_file_mode()  # an ordinary file

    # --quick: C = 4 and 20 steps in both parts; a second run reads the cached decomposition
    again = CliRunner().invoke(main, ["demo", "--out", str(out), "--quick", "--size", "64", "--plane-wave-size", "32",
                                      "--cache-dir", str(cache), "--device", "cpu"])
    assert again.exit_code != 0 and "--overwrite" in again.output  # earlier results are kept
    again = CliRunner().invoke(main, ["demo", "--out", str(out), "--quick", "--size", "64", "--plane-wave-size", "32",
                                      "--cache-dir", str(cache), "--device", "cpu", "--overwrite"])
    assert again.exit_code == 0, again.output
    quick = json.loads((out / "metrics.json").read_text())
    assert quick["settings"]["n_samples"] == quick["plane_wave"]["settings"]["n_samples"] == QUICK_SAMPLES == 4
    assert quick["plane_wave"]["settings"]["n_steps"] == QUICK_STEPS == 20
    ran = ReconstructionConfig.from_dict(quick["settings"]["config"])  # the configuration the demo ran, read back
    assert ran == ReconstructionConfig(sampler=SamplerConfig.quick(seed=1000), device="cpu")
    assert quick["plane_wave"]["settings"]["decomposition_key"] == st["decomposition_key"]


@needs_prior
def test_plane_wave_panel_runs_drus_with_the_decomposed_bh_of_the_written_file(tmp_path, monkeypatch):
    """DRUSvar of the panel comes from DDRM with the decomposed BH of the acquisition read back from its file,
    on the grid that `drus reconstruct FILE --x-range … --z-range … --size N` builds."""
    import math

    import torch

    import drus.physics.decompose
    import drus.sampling.reconstruct
    from drus.datasets.acquisition import default_grid, read_acquisition
    from drus.physics.decompose import DecomposedBH
    from drus.physics.decomposition_cache import cache_key
    from drus.pipelines.demo import PW_X_RANGE, PW_X_RANGE_MM, PW_Z_RANGE, PW_Z_RANGE_MM, plane_wave_panel
    from drus.models.prior import load_prior

    seen = {}
    real_reconstruct = drus.sampling.reconstruct.reconstruct

    def spy(operator, y, **kw):
        seen["operator"], seen["y"], seen["kw"] = operator, y, kw
        return real_reconstruct(operator, y, **kw)

    monkeypatch.setattr(drus.sampling.reconstruct, "reconstruct", spy)
    part, files, res, _ = plane_wave_panel(tmp_path, model=load_prior(None), sampler=SamplerConfig.drus(n_samples=2, n_steps=3),
                                           size=32, cache_dir=tmp_path / "cache", progress=False)
    op = seen["operator"]
    assert isinstance(op, DecomposedBH) and op is res.operator and op.beamformer is res.beamformer
    assert seen["y"] is res.by and seen["kw"]["sampler"].prior_fraction == PRIOR_FRACTION
    assert seen["kw"]["sigma0"] == res.sigma0
    # the user's path: the written file read back, the grid of --x-range/--z-range/--size
    acq = read_acquisition(tmp_path / "plane_wave_acquisition.h5")
    grid = default_grid(acq, x_range=PW_X_RANGE, z_range=PW_Z_RANGE, size=32)
    assert grid == res.grid
    assert cache_key(acq.beamformer(grid)) == part["settings"]["decomposition_key"] == op.metadata["key"]
    # … and `drus reconstruct FILE` with the panel's ranges reads the very decomposition the panel made
    monkeypatch.undo()
    cli = CliRunner().invoke(main, [
        "reconstruct", str(tmp_path / "plane_wave_acquisition.h5"), "--method", "drus-var",
        "--x-range", *map(str, PW_X_RANGE_MM), "--z-range", *map(str, PW_Z_RANGE_MM), "--size", "32",
        "--samples", "2", "--steps", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "cli"),
        "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    assert "  cached: " in cli.output
    by_cli = load_images_hdf5(tmp_path / "cli" / "plane_wave_acquisition_drus-var.hdf5")
    assert by_cli.attrs["decomposition_key"] == op.metadata["key"]
    assert by_cli.attrs["sigma0"] == pytest.approx(res.sigma0, rel=1e-6)
    assert np.array_equal(by_cli["by"], res.by)
    saved = ReconstructionConfig.from_json(by_cli.attrs["config"])  # what ran, read back
    assert saved.sampler == SamplerConfig.drus(n_samples=2, n_steps=1) and saved.device == "cpu"
    # the SVD view is BH: U S Vᵀ x = BH x for any x (the kept components hold all of BH above 1e-3·s1)
    x = torch.randn(res.grid.shape, generator=torch.Generator().manual_seed(0))
    bh = res.beamformer.BH.apply(x)
    assert float((op.apply(x) - bh).norm() / bh.norm()) < 1e-3
    # DRUSvar and its pooled version are the estimators of these samples
    rec = res.reconstruction
    assert np.allclose(rec.var, drus_var(rec.samples), rtol=1e-5, atol=1e-7)
    assert np.allclose(res.var_pooled, drus_var_pooled(rec.samples, window=res.pool_window), rtol=1e-5, atol=1e-7)
    assert math.isfinite(part["metrics"][next(k for k in part["metrics"] if k.startswith("DRUSvar ("))]["gcnr"]["mean"])


def test_beamform_command_on_a_synthetic_file(tmp_path):
    from drus.physics.geometry import ImageGrid, picmus
    from drus.physics.forward import PlaneWaveModel
    from drus.datasets.channel_data import ChannelData
    from drus.datasets.io import write_ustb_channel_data

    probe, wave, _ = picmus(8)
    grid = ImageGrid.from_extent(x_min=-5e-3, x_max=5e-3, z_min=10e-3, z_max=20e-3, n_x=51, n_z=51)
    o = np.zeros(grid.shape)
    o[25, 25] = 1.0  # a point at (0, 15) mm
    y = PlaneWaveModel(probe, wave, grid).simulate(o)
    cd = ChannelData(data=y[None], angles=np.zeros(1), sampling_frequency=wave.sampling_frequency,
                     modulation_frequency=0.0, initial_time=np.zeros(1), sound_speed=1540.0,
                     element_positions=np.stack([probe.element_x, 0 * probe.element_x, 0 * probe.element_x], 1))
    path = write_ustb_channel_data(tmp_path / "point.h5", cd)
    res = CliRunner().invoke(main, ["beamform", str(path), "--x-range", "-5", "5", "--z-range", "10", "20",
                                    "--pixel", "0.1", "--points", "1", "--out", str(tmp_path / "b.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "b.png").exists()
    line = [l for l in res.output.splitlines() if l.strip().startswith(("0.00", "-0.00"))][0].split()
    assert abs(float(line[1]) - 15.0) < 0.15  # found at the right depth
    assert 0.2 < float(line[2]) < 0.8 and 0.2 < float(line[3]) < 1.5  # plausible FWHM in mm
    bad = CliRunner().invoke(main, ["beamform", str(path), "--angles", "5"])
    assert bad.exit_code != 0 and "out of range" in bad.output
