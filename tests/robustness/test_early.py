"""Late failures: everything is checked before the decomposition and the sampling."""

from __future__ import annotations

import pytest

import drus.datasets.picmus
import drus.sampling.reconstruct
from .robustness_helpers import assert_error, drus as run_drus, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_work(monkeypatch):
    """Make the decomposition and the sampling fail loudly if a test reaches them."""
    def never(*args, **kwargs):
        raise AssertionError("the expensive work started")

    monkeypatch.setattr(drus.datasets.picmus, "picmus_operator", never)
    monkeypatch.setattr(drus.sampling.reconstruct, "reconstruct", never)
    monkeypatch.setattr(drus.sampling.reconstruct, "deno", never)


def _drus_var(root, out, *extra, cache=None):
    return run_drus("reconstruct", root / "by_drus" / "expe_cont.mat", "--method", "drus-var", "--out", out,
                    "--prior", root / "prior.safetensors", "--cache-dir", cache or root / "cache",
                    "--samples", 2, "--steps", 1, "--device", "cpu", *extra)


def test_a_read_only_out_fails_before_the_decomposition(small_picmus, readonly_dir, no_work):
    run = _drus_var(small_picmus, readonly_dir / "out", "--unknown-size", 16)
    assert_error(run, "--out", str(readonly_dir))


def test_an_out_below_a_file_fails_before_the_decomposition(small_picmus, tmp_path, no_work):
    (tmp_path / "file").write_text("x")
    run = _drus_var(small_picmus, tmp_path / "file" / "out", "--unknown-size", 16)
    assert_error(run, "--out", str(tmp_path / "file" / "out"))
    assert (tmp_path / "file").read_text() == "x"


def test_a_read_only_out_fails_before_the_demo_samples(readonly_dir, no_work):
    run = run_drus("demo", "--out", readonly_dir / "demo", "--size", 32, "--samples", 2, "--steps", 1)
    assert_error(run, "--out", str(readonly_dir / "demo"))


def test_a_bad_phantom_fails_before_the_decomposition(small_picmus, tmp_path, no_work):
    bad = tmp_path / "phantom.hdf5"
    bad.write_bytes(b"not hdf5")
    run = _drus_var(small_picmus, tmp_path / "out", "--unknown-size", 16, "--phantom", bad)
    assert_error(run, "--phantom", str(bad))
    assert not (tmp_path / "out").exists()


def test_an_unknown_size_the_prior_cannot_take_fails_before_it_is_decomposed(small_picmus, tmp_path, no_work):
    cache = tmp_path / "cache"
    run = _drus_var(small_picmus, tmp_path / "out", "--unknown-size", 15, cache=cache)
    assert_error(run, "--unknown-size", "15", "multiple of 2")
    assert snapshot(cache) == {}


def test_a_read_only_cache_folder_fails_before_the_decomposition(small_picmus, tmp_path, readonly_dir, monkeypatch):
    import drus.physics.decompose

    def never(*args, **kwargs):
        raise AssertionError("the decomposition started")

    monkeypatch.setattr(drus.physics.decompose, "flip_gram", never)
    run = _drus_var(small_picmus, tmp_path / "out", "--unknown-size", 8, cache=readonly_dir / "cache")
    assert_error(run, "cache folder", str(readonly_dir / "cache"), "--no-cache")


def test_no_cache_reads_and_writes_no_cache(small_picmus, tmp_path):
    cache = tmp_path / "cache"
    run = _drus_var(small_picmus, tmp_path / "out", "--unknown-size", 8, "--no-cache", cache=cache)
    assert run.code == 0, run
    assert not cache.exists()
    assert (tmp_path / "out" / "expe_cont_drus-var.hdf5").is_file()


def test_evaluate_picmus_checks_the_unknown_size_before_the_decomposition(small_picmus, tmp_path, no_work):
    run = run_drus("evaluate", "picmus", "--sets", "expe_cont", "--unknown-size", 15, "--prior",
                   small_picmus / "prior.safetensors", "--out", tmp_path / "res", "--data", tmp_path,
                   "--cache-dir", tmp_path / "cache", "--device", "cpu")
    assert_error(run, "--unknown-size", "15")
    assert not (tmp_path / "cache").exists()
