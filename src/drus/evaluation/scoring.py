"""Scoring one image on a PICMUS-style phantom: the amplitude each method is scored on, and the
Table I metrics of the paper (gCNR and SNR per ROI, −6 dB FWHM per point target).
"""

from __future__ import annotations

import numpy as np

from drus.datasets.picmus import PAPER_METHODS
from drus.physics.beamform import envelope
from drus.physics.geometry import ImageGrid

__all__ = ["METHODS", "method_envelope", "points_in_view", "score_image"]

#: The methods of the paper's Table I, and drus's pooled DRUSvar beside them.
METHODS = PAPER_METHODS + ("DRUSvar pooled",)


def method_envelope(method: str, image: np.ndarray) -> np.ndarray:
    """The amplitude image that metrics and B-modes use for ``method`` (:data:`METHODS`).

    - DAS references are envelope images already: ``|frame|``;
    - DENOmean and DRUSmean are signed RF-like images: envelope by the Hilbert transform along depth
      (:func:`drus.physics.beamform.envelope`);
    - DRUSvar is the sample-variance map ``p̂`` itself: with β = 0.5 it estimates the echogenicity
      ``p``, an amplitude-like quantity (``|o| ∝ p``), so no envelope is taken.
    """
    image = np.asarray(image)
    if method.startswith("DAS"):
        return np.abs(image)
    if method in ("DENOmean", "DRUSmean"):
        return envelope(image, axis=0)
    if method in ("DRUSvar", "DRUSvar pooled"):
        return np.abs(image)
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def points_in_view(points: np.ndarray, grid: ImageGrid, *, margin: float = 0.5e-3) -> np.ndarray:
    """Point targets ``[k, 2]`` (x, z in m) at least ``margin`` inside ``grid``'s field of view.

    A target on the edge (simu_reso has one at z = 10 mm, the first row) has half its main lobe cut
    off; 0.5 mm ≈ the DAS −6 dB width keeps the measured lobes whole.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, z = grid.x_axis, grid.z_axis
    keep = ((pts[:, 0] >= x[0] + margin) & (pts[:, 0] <= x[-1] - margin)
            & (pts[:, 1] >= z[0] + margin) & (pts[:, 1] <= z[-1] - margin))
    return pts[keep]


def score_image(amplitude: np.ndarray, grid: ImageGrid, *, cysts=(), speckle_rois=None, points=None) -> dict:
    """Table I metrics of one amplitude image: ``{metric: [one value per ROI]}``.

    - ``cysts`` given: ``gcnr`` and ``cnr`` per cyst (dB image with the −60 dB floor, 256 bins;
      :func:`drus.evaluation.metrics.contrast_metrics`) and ``snr`` (μ/σ of the amplitude) per speckle ROI —
      ``speckle_rois`` (e.g. :meth:`PicmusPhantom.speckle_boxes`) or, when ``None`` or empty, each
      cyst's outside ring;
    - ``points`` given (non-empty): ``fwhm_axial_mm``, ``fwhm_lateral_mm`` (−6 dB, mm).
    """
    from drus.evaluation.metrics import contrast_metrics, resolution_metrics

    out: dict = {}
    if len(cysts):
        c = contrast_metrics(amplitude, grid, cysts, speckle_rois=list(speckle_rois) if speckle_rois else None)
        out.update(gcnr=[float(v) for v in c.gcnr], cnr=[float(v) for v in c.cnr], snr=[float(v) for v in c.snr])
    if points is not None and len(points):
        r = resolution_metrics(amplitude, grid, points)
        out.update(fwhm_axial_mm=[v * 1e3 for v in r.axial], fwhm_lateral_mm=[v * 1e3 for v in r.lateral])
    return out
