"""The decomposition cache: swapped halves are not trusted; an unusable cache folder fails first."""

from __future__ import annotations

import pytest

import drus.physics.decompose as decomposition
from .robustness_helpers import assert_error, drus, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def test_swapped_even_and_odd_cache_halves_are_rejected(tmp_path):
    cache = tmp_path / "cache"
    first = drus("decompose", "--size", 16, "--cache-dir", cache, "--device", "cpu")
    assert first.code == 0, first
    # 16 × 16: both halves hold 128 unknowns, so a swap keeps every shape and checksum consistent
    files = {p.name: p for p in cache.iterdir()}
    for ext in ("safetensors", "json"):
        even = next(p for n, p in files.items() if n.endswith(f"-even.{ext}"))
        odd = next(p for n, p in files.items() if n.endswith(f"-odd.{ext}"))
        tmp = even.with_name("swap")
        even.rename(tmp)
        odd.rename(even)
        tmp.rename(odd)
    with pytest.warns(UserWarning, match=r"-even\.safetensors .*not the 'even' one \(swapped files\?\)"):
        second = drus("decompose", "--size", 16, "--cache-dir", cache, "--device", "cpu")
    assert second.code == 0, second
    assert "loaded from the cache" not in second.stdout
    assert second.stdout.count("assembled in") == 2  # both halves recomputed, not trusted
    third = drus("decompose", "--size", 16, "--cache-dir", cache, "--device", "cpu")
    assert third.stdout.count("loaded from the cache") == 2  # and the rebuilt cache is the right way round


def test_a_read_only_cache_folder_fails_before_the_decomposition(readonly_dir, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the decomposition started")

    monkeypatch.setattr(decomposition, "flip_gram", never)
    monkeypatch.setattr(decomposition, "flip_block", never)
    before = snapshot(readonly_dir)
    run = drus("decompose", "--size", 16, "--cache-dir", readonly_dir / "cache", "--device", "cpu")
    assert_error(run, "cache folder", str(readonly_dir), "--no-cache")
    assert snapshot(readonly_dir) == before


def test_stale_tmp_files_of_a_killed_writer_are_removed(tmp_path):
    from drus.outputs import atomic_write, write_text_atomic

    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f".result.json.{dead_pid}.tmp"
    stale.write_text("half a file")
    other = tmp_path / ".unrelated.txt"
    other.write_text("keep")
    write_text_atomic(tmp_path / "result.json", "{}")
    assert not stale.exists() and other.exists()
    assert (tmp_path / "result.json").read_text() == "{}"
    # a failing writer leaves neither its temporary file nor a changed target
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "result.json", lambda p: (p.write_text("partial"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert (tmp_path / "result.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".unrelated.txt", "result.json"]
