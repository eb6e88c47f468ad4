"""``drus demo`` and the CLI, end to end on a tiny grid with the shipped prior."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from drus.cli import main
from drus.io import load_images_hdf5, read_ustb_channel_data
from drus.reconstruct import default_prior_path

needs_prior = pytest.mark.skipif(not default_prior_path().exists(), reason="no shipped prior")


@needs_prior
def test_demo_writes_pictures_samples_and_metrics(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--samples", "2", "--steps", "3", "--size", "64"])
    assert res.exit_code == 0, res.output
    assert "DRUSvar" in res.output and "gCNR" in res.output
    for f in ("demo.png", "demo.h5", "metrics.json", "channel_data.h5"):
        assert (tmp_path / f).stat().st_size > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert len(metrics) == 5
    for m in metrics.values():
        assert 0 <= m["gcnr"]["mean"] <= 1 and m["snr"]["mean"] > 0 and len(m["gcnr"]["values"]) == 9
    saved = load_images_hdf5(tmp_path / "demo.h5")
    assert saved["samples"].shape == (2, 64, 64)
    assert np.allclose(saved["drus_mean"], saved["samples"].mean(axis=0), atol=1e-5)
    cd = read_ustb_channel_data(tmp_path / "channel_data.h5")  # re-readable by drus beamform
    assert cd.n_tx == 1 and cd.n_elements == 128


def test_beamform_command_on_a_synthetic_file(tmp_path):
    from drus.geometry import ImageGrid, picmus
    from drus.forward import PlaneWaveModel
    from drus.io import ChannelData, write_ustb_channel_data

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
