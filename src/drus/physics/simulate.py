"""Channel-data simulation: ``y = H o + n`` with drus's own model, or PyMUST's ``simus``.

``simulate_channel_data`` uses the sparse forward model of :mod:`drus.physics.forward` (the same ``H`` DRUS
inverts, so it is the "inverse crime" setting used for controlled experiments). ``simulate_pymust``
calls PyMUST's independent frequency-domain simulator (optional extra ``drus[sim]``) on a scatterer
list; the two agree on times of flight (``tests/physics/test_physics.py``).
"""

from __future__ import annotations

import numpy as np

from drus.physics.forward import PlaneWaveModel
from drus.physics.geometry import LinearProbe, PlaneWave
from drus.physics.phantoms import add_noise

__all__ = ["simulate_channel_data", "simulate_pymust"]


def simulate_channel_data(
    model: PlaneWaveModel, reflectivity: np.ndarray, *, gamma: float = 0.0, seed: int | None = None
) -> tuple[np.ndarray, float]:
    """``y = H o + n`` for a reflectivity image ``o`` (``[n_z, n_x]``).

    Returns channel data ``[n_samples, n_elements]`` and the noise std ``σ = gamma · max|H o|``.
    """
    return add_noise(model.simulate(reflectivity), gamma=gamma, seed=seed)


def simulate_pymust(
    x: np.ndarray,
    z: np.ndarray,
    amplitude: np.ndarray,
    *,
    probe: LinearProbe,
    wave: PlaneWave,
    n_samples: int | None = None,
    element_width: float | None = None,
) -> np.ndarray:
    """Channel data ``[n_samples, n_elements]`` of point scatterers from PyMUST's ``simus``.

    PyMUST has no L11-4v preset; its L11-5v parameters are used with the probe's element count,
    pitch, centre frequency and bandwidth set by hand. Time zero is the firing of the first element
    (equal to drus's origin for a 0° wave). Requires ``pip install 'drus[sim]'``.
    """
    try:
        import pymust
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("simulate_pymust needs PyMUST: pip install 'drus[sim]'") from exc
    p = pymust.getparam("L11-5v")
    p.fc = probe.center_frequency
    p.bandwidth = 100 * probe.bandwidth
    p.pitch = probe.pitch
    p.Nelements = probe.n_elements
    p.width = element_width if element_width is not None else 0.9 * probe.pitch
    p.kerf = probe.pitch - p.width
    p.fs = wave.sampling_frequency
    p.c = wave.sound_speed
    delays = pymust.txdelay(p, wave.angle) if wave.angle else np.zeros((1, probe.n_elements))
    out = pymust.simus(
        np.asarray(x, float).ravel(), np.asarray(z, float).ravel(), np.asarray(amplitude, float).ravel(), delays, p
    )
    rf = out[0] if isinstance(out, tuple) else out
    if n_samples is not None:
        rf = np.pad(rf, ((0, max(0, n_samples - rf.shape[0])), (0, 0)))[:n_samples]
    return np.asarray(rf)
