"""``drus despeckle`` as one library call: ADMSS on the envelope of a saved image, written beside its B-modes.

:func:`despeckle_file` reads the amplitude image of a drus HDF5 (e.g. ``drus reconstruct``'s) or a
``.npy`` 2-D array (:func:`read_despeckle_input`; a signed RF image is despeckled on its envelope,
:func:`drus.evaluation.despeckle.amplitude_of`), filters it with
:func:`drus.evaluation.despeckle.admss` and writes ``<name>.admss.h5`` (``amplitude`` and the input
``amplitude_in``, on the file's grid when it has one) and ``<name>.admss.png`` (B-modes before and
after, [−60, 0] dB).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from pathlib import Path

import numpy as np

from drus.errors import OptionError

__all__ = ["DESPECKLE_METHODS", "DESPECKLE_DATASETS", "DespeckleResult", "read_despeckle_input", "despeckle_file"]

#: What ``drus despeckle --method`` accepts.
DESPECKLE_METHODS = ("admss",)
#: The HDF5 datasets tried, in this order, when none is named.
DESPECKLE_DATASETS = ("amplitude", "mean", "image")


@dataclasses.dataclass(eq=False)
class DespeckleResult:
    """What :func:`despeckle_file` produced: the input and despeckled envelopes ``[n_z, n_x]``, the
    dataset read (``"array"`` for a ``.npy``), the ADMSS parameters, its run time (s) and the files written."""

    amplitude_in: np.ndarray
    amplitude: np.ndarray
    source: str
    parameters: dict
    seconds: float
    files: list


def read_despeckle_input(path, dataset: str | None = None):
    """``(amplitude [n_z, n_x], grid or None, source name)`` of a drus HDF5 or a ``.npy`` 2-D array."""
    from drus.evaluation.despeckle import amplitude_of

    path = Path(path)
    if path.suffix.lower() == ".npy":
        if dataset is not None:
            raise OptionError("--dataset", "a .npy file holds one array; --dataset is for HDF5 files")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})") from None
        return amplitude_of(arr), None, "array"
    from drus.datasets.io import load_images_hdf5

    saved = load_images_hdf5(path)
    names = [dataset] if dataset else [n for n in DESPECKLE_DATASETS if n in saved]
    if not names or names[0] not in saved:
        have = ", ".join(sorted(saved)) or "none"
        want = f"no dataset {dataset!r}" if dataset else f"none of the datasets {', '.join(DESPECKLE_DATASETS)}"
        raise ValueError(f"{path}: {want} (it has: {have}); pass --dataset NAME or a .npy 2-D array")
    arr = saved[names[0]]
    if arr.ndim != 2:
        raise ValueError(f"{path}: dataset {names[0]!r} has shape {arr.shape}; drus despeckle takes a 2-D image [n_z, n_x]")
    grid = saved.grid if saved.grid is not None and saved.grid.shape == arr.shape else None
    return amplitude_of(arr), grid, names[0]


def despeckle_file(path, *, method: str = "admss", dataset: str | None = None, out_dir="out/despeckle",
                   overwrite: bool = False, **parameters) -> DespeckleResult:
    """Despeckle the envelope image of ``path`` and write the result and its B-modes into ``out_dir``.

    ``parameters`` go to :func:`drus.evaluation.despeckle.admss` (``sigma``, ``rho``, ``n_iter``,
    ``memory``, ``dt``; the DRUS authors' values where not given). Earlier results of this file in
    ``out_dir`` are kept unless ``overwrite``.
    """
    from drus.datasets.io import save_images_hdf5
    from drus.evaluation.despeckle import admss
    from drus.evaluation.metrics import to_db
    from drus.outputs import check_writable_dir, refuse_overwrite
    from drus.physics.geometry import ImageGrid
    from drus.plotting import save_bmode_figure

    if method not in DESPECKLE_METHODS:
        raise OptionError("--method", f"must be one of {', '.join(DESPECKLE_METHODS)}, got {method!r}")
    path = Path(path)
    out = check_writable_dir(out_dir)
    files_out = {ext: out / f"{path.stem}.{method}.{ext}" for ext in ("h5", "png")}
    refuse_overwrite(files_out.values(), overwrite=overwrite)
    amp, grid, source = read_despeckle_input(path, dataset)
    t0 = time.perf_counter()
    filtered = admss(amp, **parameters)
    seconds = time.perf_counter() - t0
    used = {k: p.default for k, p in inspect.signature(admss).parameters.items()
            if k in ("sigma", "rho", "n_iter", "memory", "dt", "model")} | parameters
    attrs = {"method": method, "input": str(path), "input_dataset": source, **used, "seconds": seconds}
    files = [save_images_hdf5(files_out["h5"], grid=grid, amplitude=filtered, amplitude_in=amp, attrs=attrs)]
    title = f"{path.name}: [−60, 0] dB"
    if grid is None:  # no grid in the input: axes numbered in pixels from 1
        n_z, n_x = amp.shape
        grid = ImageGrid.from_extent(x_min=1e-3, x_max=n_x * 1e-3, z_min=1e-3, z_max=n_z * 1e-3, n_x=n_x, n_z=n_z)
        title += " (no grid in the file: axes in pixels)"
    files.append(save_bmode_figure({f"input ({source})": to_db(amp), "ADMSS": to_db(filtered)}, grid,
                                   files_out["png"], title=title))
    return DespeckleResult(amplitude_in=amp, amplitude=filtered, source=source, parameters=used, seconds=seconds,
                           files=files)
