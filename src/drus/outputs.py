"""Writing results safely: atomic replacement, ordinary file permissions, no silent overwrites.

Every file drus writes (HDF5 results, figures, JSON, training states, decomposition caches) goes
through :func:`atomic_write`: the content is written to a hidden temporary file beside the target,
``.<name>.<pid>.tmp``, and moved into place with :func:`os.replace`, so a reader never sees half a
file and a killed writer never destroys the previous version. The temporary file gets the
permissions of a file created by ``open()`` (``0o666`` minus the umask, like the PNGs), not the
``0o600`` of :func:`tempfile.mkstemp`. Temporary files left by a killed writer (its process is gone)
are removed the next time the folder is written to (:func:`remove_stale_tmp`).

Commands check their outputs *before* any expensive work: :func:`check_writable_dir` (the folder can
be created and written to) and :func:`refuse_overwrite` (no earlier result is replaced without
``--overwrite``).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["atomic_write", "write_text_atomic", "remove_stale_tmp", "check_writable_dir", "refuse_overwrite",
           "OutputExistsError", "default_file_mode"]

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


class OutputExistsError(FileExistsError):
    """A command would replace the results of an earlier run (pass ``--overwrite`` to allow it)."""


def default_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open(path, "w")`` gives a new file."""
    try:  # Linux: read it without changing it (os.umask is process-wide, not thread-safe)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_tmp(folder, name: str | None = None) -> list[Path]:
    """Remove the ``.<name>.<pid>.tmp`` files in ``folder`` whose writer process no longer exists.

    ``name`` limits the clean-up to the temporary files of one target. Returns the removed paths.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        if m is None or (name is not None and m["name"] != name) or _pid_alive(int(m["pid"])):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` to create the content, then move it to ``path`` atomically.

    ``tmp_path`` is ``.<name>.<pid>.tmp`` in the target's folder (created if needed; same file
    system, so :func:`os.replace` is atomic). On any error the temporary file is removed and
    ``path`` is left as it was. The result has the permissions of an ordinary new file
    (:func:`default_file_mode`). Returns ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(target.parent, target.name)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def check_writable_dir(path, *, option: str = "--out", fix: str = "choose a writable folder") -> Path:
    """Check that the folder ``path`` can be created (if missing) and written to; leaves nothing behind.

    Raises
    ------
    ValueError
        Naming ``option``, the folder and the reason (not a folder, read-only, …), before any work
        whose results would then be lost.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {folder}: exists and is not a folder; {fix}")
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".drus-write-test.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValueError(f"{option} {folder}: cannot write there ({reason}); {fix}") from None
    finally:  # a check leaves no trace: the folders are created again when the results are written
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break
    return folder


def refuse_overwrite(paths: Iterable, *, overwrite: bool, option: str = "--out") -> None:
    """Raise :class:`OutputExistsError` if any of ``paths`` exists and ``overwrite`` is false."""
    if overwrite:
        return
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        names = ", ".join(p.name for p in existing[:4]) + (f" and {len(existing) - 4} more" if len(existing) > 4 else "")
        raise OutputExistsError(
            f"{existing[0].parent} already holds results ({names}); pass --overwrite to replace them, "
            f"or choose another {option}")


def json_safe(o):
    """``o`` with non-finite floats as ``None`` (JSON has no NaN/inf) and dict keys as strings, recursively."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o
