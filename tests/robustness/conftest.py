"""Fixtures of the robustness corpus: each case runs a ``drus`` command and asserts the exit code, a
one-line ``Error:`` message naming the file, option or value, and that nothing was overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder that cannot be written to, even by root (a read-only mount); skipped where none exists."""
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").write_bytes(b"")
    except OSError:
        yield d
        d.chmod(0o755)
        return
    (d / "probe").unlink()
    d.chmod(0o755)
    for candidate in (Path("/sys/drus-robustness"), Path("/proc/drus-robustness")):
        try:
            candidate.mkdir()
        except OSError:
            yield candidate
            return
        candidate.rmdir()
    pytest.skip("no read-only folder available (running as root without a read-only mount)")
