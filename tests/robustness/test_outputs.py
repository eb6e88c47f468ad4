"""Data loss: results are never replaced without ``--overwrite``, never written beside the input by
default, written atomically, never mixed with an earlier run's, and get ordinary permissions."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from .robustness_helpers import assert_error, drus, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def channel_file(tmp_path_factory):
    """A small PICMUS/USTB channel-data file of one point target."""
    from drus.physics.forward import PlaneWaveModel
    from drus.physics.geometry import ImageGrid, picmus
    from drus.datasets.channel_data import ChannelData
    from drus.datasets.io import write_ustb_channel_data

    probe, wave, _ = picmus(8)
    grid = ImageGrid.from_extent(x_min=-2e-3, x_max=2e-3, z_min=14e-3, z_max=16e-3, n_x=11, n_z=11)
    o = np.zeros(grid.shape)
    o[5, 5] = 1.0
    y = PlaneWaveModel(probe, wave, grid).simulate(o)
    cd = ChannelData(data=y[None], angles=np.zeros(1), sampling_frequency=wave.sampling_frequency,
                     modulation_frequency=0.0, initial_time=np.zeros(1), sound_speed=1540.0,
                     element_positions=np.stack([probe.element_x, 0 * probe.element_x, 0 * probe.element_x], 1))
    folder = tmp_path_factory.mktemp("data")
    return write_ustb_channel_data(folder / "point.h5", cd)


BEAMFORM = ("--x-range", "-2", "2", "--z-range", "14", "16", "--pixel", "0.2")


def test_beamform_writes_under_out_not_beside_the_input_and_refuses_to_overwrite(channel_file, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    data_before = snapshot(channel_file.parent)
    first = drus("beamform", channel_file, *BEAMFORM, cwd=work)
    assert first.code == 0, first
    assert snapshot(channel_file.parent) == data_before  # nothing written beside the input
    png = work / "out" / "beamform" / "point.das.png"
    assert png.is_file()
    before = snapshot(work)
    second = drus("beamform", channel_file, *BEAMFORM, cwd=work)
    assert_error(second, "point.das.png", "--overwrite")
    assert snapshot(work) == before
    third = drus("beamform", channel_file, *BEAMFORM, "--overwrite", cwd=work)
    assert third.code == 0, third
    assert sorted(p.name for p in png.parent.iterdir()) == ["point.das.png"]  # no temporary file left


def test_demo_refuses_to_replace_an_earlier_run(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.h5").write_bytes(b"an earlier run")
    before = snapshot(out)
    run = drus("demo", "--out", out, "--size", 32, "--samples", 2, "--steps", 1)
    assert_error(run, str(out), "demo.h5", "--overwrite")
    assert snapshot(out) == before


@pytest.mark.parametrize("phantom,files", [
    ("occlusion", ["occlusion.json"]), ("both", ["scatterer.png"])])
def test_evaluate_numerical_refuses_to_replace_results(tmp_path, phantom, files):
    out = tmp_path / "res"
    out.mkdir()
    for f in files:
        (out / f).write_text("earlier")
    before = snapshot(out)
    run = drus("evaluate", "numerical", "--phantom", phantom, "--out", out, "--size", 32, "--realisations", 1)
    assert_error(run, files[0], "--overwrite")
    assert snapshot(out) == before


def _das(root, out, *extra):
    return drus("reconstruct", root / "by_drus" / "expe_cont.mat", "--method", "das", "--out", out, *extra)


def test_reconstruct_refuses_to_overwrite_and_leaves_no_stale_metrics(small_picmus, tmp_path):
    out = tmp_path / "out"
    phantom = small_picmus / "phantoms" / "picmus_phantom_4.hdf5"
    first = _das(small_picmus, out, "--phantom", phantom)
    assert first.code == 0, first
    assert {p.name for p in out.iterdir()} == {"expe_cont_das.hdf5", "expe_cont_das.png", "expe_cont_das_metrics.json"}
    before = snapshot(out)
    second = _das(small_picmus, out)
    assert_error(second, "expe_cont_das", "--overwrite")
    assert snapshot(out) == before
    # with --overwrite and without --phantom: the earlier metrics of this observation go too
    third = _das(small_picmus, out, "--overwrite")
    assert third.code == 0, third
    assert {p.name for p in out.iterdir()} == {"expe_cont_das.hdf5", "expe_cont_das.png"}


def test_output_hdf5_files_get_the_permissions_of_the_pngs(small_picmus, tmp_path):
    out = tmp_path / "out"
    run = _das(small_picmus, out)
    assert run.code == 0, run
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(out / "expe_cont_das.hdf5") == mode(out / "expe_cont_das.png")
    (tmp_path / "plain").write_text("")  # what open() gives a new file under this umask
    assert mode(out / "expe_cont_das.hdf5") == mode(tmp_path / "plain")


def test_a_killed_writers_temporary_file_is_cleaned_up(small_picmus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".expe_cont_das.hdf5.{2**22 + 4321}.tmp"  # a pid above the default pid_max: its writer is gone
    stale.write_bytes(b"half an HDF5 file")
    run = _das(small_picmus, out)
    assert run.code == 0, run
    assert not stale.exists()
    assert {p.name for p in out.iterdir()} == {"expe_cont_das.hdf5", "expe_cont_das.png"}
