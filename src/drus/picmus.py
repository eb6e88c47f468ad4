"""PICMUS datasets as DRUS uses them: names, files, noise levels, the depth gain of the ``By`` files.

The shared reference data (``$DRUS_REFERENCE_DATA`` or ``../shared/data``) holds, for the four
PICMUS sets, the DRUS observations ``By`` (``picmus/by_drus``), the DENO inputs (``by_deno``), DAS
references with 1/3/11/75 plane waves and the official phantom descriptions. Numbers below are from
DESIGN §2 and the data README.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .beamform import MatchedFilterBeamformer, envelope
from .geometry import ImageGrid
from .phantoms import PicmusPhantom

__all__ = ["PicmusSet", "PICMUS_SETS", "reference_data_dir", "depth_gain", "simulate_by", "compare_by"]


@dataclasses.dataclass(frozen=True)
class PicmusSet:
    """One PICMUS dataset: file numbers, DRUS/DENO noise levels, the ``By`` amplitude factor."""

    name: str
    number: int  # das_reference/<n>.hdf5, phantoms/picmus_phantom_<n>.hdf5
    sigma0_drus: float  # noise std in By units (DESIGN §2)
    sigma0_deno: float  # noise std of the max-normalised DENO input
    by_factor: float  # y normalised to max 1 then multiplied by this (30 contrast, 10 resolution)
    kind: str  # "contrast" or "resolution"

    def files(self, root=None) -> dict[str, Path]:
        root = reference_data_dir(root) / "picmus"
        return {
            "by_drus": root / "by_drus" / f"{self.name}.mat",
            "by_deno": root / "by_deno" / f"{self.name}.mat",
            "das": root / "das_reference" / f"{self.number}.hdf5",
            "phantom": root / "phantoms" / f"picmus_phantom_{self.number}.hdf5",
        }


PICMUS_SETS = {
    s.name: s
    for s in (
        PicmusSet("simu_reso", 1, 30.0, 0.11, 10.0, "resolution"),
        PicmusSet("simu_cont", 2, 65.0, 0.12, 30.0, "contrast"),
        PicmusSet("expe_reso", 3, 90.0, 0.16, 10.0, "resolution"),
        PicmusSet("expe_cont", 4, 55.0, 0.025, 30.0, "contrast"),
    )
}


def reference_data_dir(root=None) -> Path:
    """``root``, else ``$DRUS_REFERENCE_DATA``, else ``../shared/data`` beside the working directory's repo."""
    if root is not None:
        return Path(root)
    env = os.environ.get("DRUS_REFERENCE_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    raise FileNotFoundError("reference data not found: set DRUS_REFERENCE_DATA to the folder holding picmus/, gammex/ …")


def depth_gain(n_samples: int) -> np.ndarray:
    """``exp(4·t/t_max)`` over the samples of a recording (the DRUS ``By`` preprocessing), ``[n_samples]``."""
    t = np.arange(n_samples, dtype=np.float64)
    return np.exp(4.0 * t / max(t[-1], 1.0))


def simulate_by(phantom: PicmusPhantom, beamformer: MatchedFilterBeamformer, *, factor: float = 30.0) -> np.ndarray:
    """``B y`` of a PICMUS scatterer phantom through drus's ``H``, with the DRUS preprocessing.

    Scatterers are rasterised to the nearest pixel of the grid (those outside are dropped), the
    channel data ``y = H o`` gets the depth gain, is normalised to max 1 and multiplied by ``factor``,
    then beamformed: ``[n_z, n_x]``.
    """
    grid = beamformer.grid
    o = phantom.reflectivity(grid)
    y = beamformer.model.simulate(o) * depth_gain(beamformer.model.n_samples)[:, None]
    y = y / np.abs(y).max() * factor
    return beamformer.beamform(y)


def compare_by(ours: np.ndarray, reference: np.ndarray, grid: ImageGrid, phantom: PicmusPhantom, *, pad: float = 0.5e-3) -> dict:
    """Orientation and amplitude checks between two ``By`` images of a contrast phantom.

    Returns the mean envelope inside each cyst relative to its ring (dB, per image), the same with
    the images transposed/flipped (a wrong orientation loses the contrast), the correlation of the
    two log-envelopes, and the amplitude ranges.
    """
    from .metrics import cyst_masks

    def contrast(img):
        env = envelope(img)
        vals = []
        for d in phantom.cyst_disks():
            inside, outside = cyst_masks(grid, d, pad=pad)
            vals.append(20 * np.log10(env[inside].mean() / env[outside].mean()))
        return float(np.mean(vals))

    le_o, le_r = np.log(envelope(ours) + 1e-12), np.log(envelope(reference) + 1e-12)
    return {
        "cyst_contrast_db": {"ours": contrast(ours), "reference": contrast(reference),
                             "reference_transposed": contrast(reference.T), "reference_depth_flipped": contrast(reference[::-1])},
        "log_envelope_correlation": float(np.corrcoef(le_o.ravel(), le_r.ravel())[0, 1]),
        "depth_profile_correlation": float(np.corrcoef(le_o.mean(axis=1), le_r.mean(axis=1))[0, 1]),
        "amplitude": {"ours": [float(ours.min()), float(ours.max()), float(ours.std())],
                      "reference": [float(reference.min()), float(reference.max()), float(reference.std())]},
    }
