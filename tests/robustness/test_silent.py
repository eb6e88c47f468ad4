"""Silent wrong results: inputs that used to run to a wrong answer with exit 0 are rejected or handled."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io
import torch

from drus.datasets.io import load_images_hdf5
from .robustness_helpers import assert_error, drus, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _reconstruct(root, observation, out, *extra):
    return drus("reconstruct", observation, "--prior", root / "prior.safetensors", "--cache-dir", root / "cache",
                "--unknown-size", 16, "--samples", 2, "--steps", 1, "--device", "cpu", "--out", out, *extra)


# --- options that silently fell back to defaults or gave blank images ----------------------------------------
@pytest.mark.parametrize("option,value", [("--samples", 0), ("--steps", 0), ("--samples", 1), ("--steps", -3)])
def test_demo_rejects_zero_samples_or_steps(option, value, tmp_path):
    out = tmp_path / "demo"
    run = drus("demo", "--out", out, "--size", 32, option, value)
    assert_error(run, option, str(value))
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-20"])
def test_beamform_rejects_a_non_positive_dynamic_range(value, tmp_path):
    (tmp_path / "cd.h5").write_bytes(b"")
    before = snapshot(tmp_path)
    run = drus("beamform", tmp_path / "cd.h5", "--dynamic-range", value, "--out", tmp_path / "b.png")
    assert_error(run, "--dynamic-range", value)
    assert snapshot(tmp_path) == before


# --- non-finite and complex input ------------------------------------------------------------------------------
def test_one_nan_pixel_in_simulate_is_an_error(tiny_probe, tiny_wave, tiny_grid):
    from drus.physics.forward import PlaneWaveModel

    model = PlaneWaveModel(tiny_probe, tiny_wave, tiny_grid)
    o = np.ones(tiny_grid.shape)
    o[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or inf pixel\(s\), the first at \(iz, ix\) = \(3, 4\)"):
        model.simulate(o)


def test_complex_input_is_an_error_not_a_warning(tiny_probe, tiny_wave, tiny_grid):
    from drus.physics.beamform import MatchedFilterBeamformer
    from drus.physics.operators import Identity
    from drus.sampling.reconstruct import reconstruct

    bf = MatchedFilterBeamformer(tiny_probe, tiny_wave, tiny_grid)
    o = np.ones(tiny_grid.shape) * (1 + 1j)
    with pytest.raises(TypeError, match="reflectivity is complex"):
        bf.model.simulate(o)
    y = bf.model.simulate(o.real)
    with pytest.raises(TypeError, match="channel_data is complex"):
        bf.beamform(y * (1 + 1j))
    with pytest.raises(TypeError, match="y is complex"):
        reconstruct(Identity((4, 4)), np.ones((4, 4)) * 1j, sigma0=0.1, model=torch.nn.Identity())


# --- a By far from unit scale ----------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1e30, 1e-30])
def test_a_by_scaled_by_1e30_or_1e_minus_30_gives_the_same_drusvar_scaled(small_picmus, tmp_path, factor):
    mat = scipy.io.loadmat(small_picmus / "by_drus" / "expe_cont.mat")["By"].astype(np.float64)
    (tmp_path / "by_drus").mkdir()
    scipy.io.savemat(tmp_path / "by_drus" / "expe_cont.mat", {"By": (mat * factor).astype(np.float32)})
    ref = _reconstruct(small_picmus, small_picmus / "by_drus" / "expe_cont.mat", tmp_path / "ref",
                       "--method", "drus-var", "--sigma0", 55)
    assert ref.code == 0, ref
    run = _reconstruct(small_picmus, tmp_path / "by_drus" / "expe_cont.mat", tmp_path / "scaled",
                       "--method", "drus-var", "--sigma0", 55 * factor)
    assert run.code == 0, run
    var = load_images_hdf5(tmp_path / "scaled" / "expe_cont_drus-var.hdf5")["image"].astype(np.float64)
    var_ref = load_images_hdf5(tmp_path / "ref" / "expe_cont_drus-var.hdf5")["image"].astype(np.float64)
    assert np.isfinite(var).all() and np.count_nonzero(var) == var.size
    np.testing.assert_allclose(var / factor**2, var_ref, rtol=2e-3, atol=1e-6 * np.abs(var_ref).max())


# --- the By layout -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder,method", [("by_deno", "drus-mean"), ("by_deno", "das"), ("by_drus", "deno-mean")])
def test_a_by_of_the_other_layout_is_refused(small_picmus, tmp_path, folder, method):
    path = small_picmus / folder / "expe_cont.mat"
    other = "deno" if folder == "by_deno" else "drus"
    run = _reconstruct(small_picmus, path, tmp_path / "out", "--method", method)
    assert_error(run, str(path), f"--method {method}", f"--layout {other}", "transposed")
    assert not (tmp_path / "out").exists()


def test_a_deno_by_outside_its_folder_is_recognised_by_its_normalisation(small_picmus, tmp_path):
    shutil.copy(small_picmus / "by_deno" / "expe_cont.mat", tmp_path / "expe_cont.mat")
    run = _reconstruct(small_picmus, tmp_path / "expe_cont.mat", tmp_path / "out", "--method", "das")
    assert_error(run, "expe_cont.mat", "max |By| = 1", "--layout deno")


def test_an_explicit_layout_reads_the_file_the_right_way_round(small_picmus, tmp_path):
    drus_run = _reconstruct(small_picmus, small_picmus / "by_drus" / "expe_cont.mat", tmp_path / "a", "--method", "das")
    deno_run = _reconstruct(small_picmus, small_picmus / "by_deno" / "expe_cont.mat", tmp_path / "b", "--method", "das",
                            "--layout", "deno")
    assert drus_run.code == 0 and deno_run.code == 0, (drus_run, deno_run)
    a = load_images_hdf5(tmp_path / "a" / "expe_cont_das.hdf5")
    b = load_images_hdf5(tmp_path / "b" / "expe_cont_das.hdf5")
    assert a.attrs["by_layout"] == "drus" and b.attrs["by_layout"] == "deno"
    np.testing.assert_allclose(b["image"] * np.abs(a["image"]).max(), a["image"], rtol=1e-4, atol=1e-3)
    # a DENO-layout file for DRUS needs σ0 in its own (max-normalised) units
    run = _reconstruct(small_picmus, small_picmus / "by_deno" / "expe_cont.mat", tmp_path / "c", "--method",
                       "drus-mean", "--layout", "deno")
    assert_error(run, "--layout", "DENO-layout", "--sigma0")
