"""Helpers of the robustness corpus (bad inputs through the command line, tiny and fast).

Every case runs a ``drus`` command (click's ``CliRunner``) and asserts the exit code, a one-line
``Error:`` message that names the file, option or value, and that nothing was overwritten.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from click.testing import CliRunner

from drus.cli import main


class Run:
    """The result of one command: ``code``, ``stdout``, ``stderr``, ``exception``."""

    def __init__(self, result):
        self.code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}\nexception: {self.exception!r}"


def drus(*args, cwd=None) -> Run:
    """``drus ARGS…`` in-process; ``cwd`` changes the working folder for the call."""
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return Run(CliRunner().invoke(main, [str(a) for a in args]))
    finally:
        os.chdir(old)


def assert_error(run: Run, *needles: str, code: int = 2) -> str:
    """A failed command: exit ``code``, one ``Error:`` line on stderr naming every needle, no traceback."""
    assert run.code == code, run
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, run
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run
    # click's usage errors put "Usage: …" and "Try …" lines before the one error line: allowed
    assert all(line.startswith(("Error:", "Usage:", "Try ")) for line in lines), run
    for needle in needles:
        assert needle in errors[0], (needle, run)
    return errors[0]


def snapshot(folder) -> dict:
    """``{relative path: (size, sha256, mtime_ns)}`` of every file under ``folder``."""
    root = Path(folder)
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest(),
                                             p.stat().st_mtime_ns)
    return out


