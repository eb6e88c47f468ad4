"""Messages: a drus error is one ``Error:`` line (exit 2) naming the file or option; ``--debug`` shows
the traceback; raw numpy/torch messages are replaced by ones that say what to do."""

from __future__ import annotations

import subprocess
import sys

import h5py
import pytest
import torch

from .robustness_helpers import assert_error, drus, snapshot


@pytest.fixture
def not_channel_data(tmp_path):
    path = tmp_path / "notes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=[1.0, 2.0])
    return path


def test_a_data_file_error_is_one_line_without_traceback(not_channel_data, tmp_path):
    run = drus("beamform", not_channel_data, "--out", tmp_path / "o" / "b.png")
    assert_error(run, str(not_channel_data), "US/US_DATASET0000")
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(not_channel_data, tmp_path):
    cmd = [sys.executable, "-m", "drus.cli", "--debug", "beamform", str(not_channel_data), "--out", str(tmp_path / "b.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "DataFileError" in proc.stderr
    proc = subprocess.run([c for c in cmd if c != "--debug"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [proc.stderr.strip()]
    assert proc.stderr.startswith("Error: ") and str(not_channel_data) in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", [["demo"], ["evaluate", "numerical"]])
def test_device_cuda_without_cuda_says_what_to_do(command, tmp_path):
    out = tmp_path / "out"
    run = drus(*command, "--out", out, "--device", "cuda")
    line = assert_error(run, "--device cuda", "CUDA is not available", "--device cpu")
    assert "not compiled" not in line
    assert not out.exists()


def test_an_unknown_device_name_is_named(tmp_path):
    run = drus("demo", "--out", tmp_path / "out", "--device", "gpu0")
    assert_error(run, "--device 'gpu0'", "cpu")


@pytest.mark.parametrize("option,value", [("--pixel", "0"), ("--pixel", "-0.1"), ("--f-number", "0")])
def test_a_zero_pixel_or_f_number_is_an_option_error_not_zero_division(option, value, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cd.h5").write_bytes(b"")  # never read: the options fail first
    before = snapshot(tmp_path)
    run = drus("beamform", data / "cd.h5", option, value, "--out", tmp_path / "b.png")
    assert_error(run, option, value)
    assert snapshot(tmp_path) == before


def test_an_empty_range_is_named(tmp_path):
    (tmp_path / "cd.h5").write_bytes(b"")
    run = drus("beamform", tmp_path / "cd.h5", "--x-range", "5", "-5", "--out", tmp_path / "b.png")
    assert_error(run, "--x-range", "MIN < MAX", "got 5 -5")


@pytest.mark.parametrize("command", [["demo", "--size", "0"], ["decompose", "--size", "0"],
                                     ["evaluate", "numerical", "--size", "-4"]])
def test_a_non_positive_grid_size_is_an_option_error_not_a_linspace_message(command, tmp_path):
    run = drus(*command, *(["--out", tmp_path / "o"] if command[0] != "decompose" else ["--no-cache"]))
    line = assert_error(run, "--size", command[-1])
    assert "linspace" not in line and "Number of samples" not in line
    assert not (tmp_path / "o").exists()


def test_a_missing_reference_folder_is_one_line(tmp_path):
    missing = tmp_path / "no-such-data"
    run = drus("evaluate", "by-check", "--data", missing, "--out", tmp_path / "o")
    assert_error(run, str(missing), "--data")
    assert not (tmp_path / "o").exists()


def test_a_phantom_file_missing_a_field_is_one_unquoted_line(tmp_path):
    """The reader's PicmusFieldError is a KeyError (whose str is quoted) and a ValueError."""
    root = tmp_path / "data"
    (root / "picmus" / "by_drus").mkdir(parents=True)
    (root / "picmus" / "phantoms").mkdir()
    (root / "picmus" / "by_drus" / "simu_cont.mat").write_bytes(b"")
    bad = root / "picmus" / "phantoms" / "picmus_phantom_2.hdf5"
    with h5py.File(bad, "w") as f:
        f.create_group("US/US_DATASET0000")
    run = drus("evaluate", "by-check", "--data", root, "--out", tmp_path / "out")
    line = assert_error(run, str(bad), "phantom_occlusionCenterX")
    assert not line.startswith("Error: '") and not line.rstrip().endswith("'")
    assert not (tmp_path / "out").exists()
