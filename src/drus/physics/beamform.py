"""Beamforming: the matched-filter matrix ``B`` of DRUS, ``BH``, and delay-and-sum (DAS).

- ``B`` (paper eq. (4)): a receive-apodised matched filter of ``H``. Each pixel correlates every
  channel with the pulse it would have produced there (the transposed taps of ``H``; the pulse is
  real, so the conjugate taps are the taps themselves), weighted by a Tukey-25 receive window over an
  aperture of width ``z / f_number`` (f-number 1.4) centred on the pixel: ``B = (W ⊙ H)ᵀ``.
- ``BH``: the ``N × N`` operator DRUS inverts, applied matrix-free as ``B (H v)``.
- DAS: delay, apodise and sum raw channel data (RF or IQ) for one or many plane waves, then the
  envelope (Hilbert transform along depth for RF) and log compression to a B-mode image in dB.

Images are ``[n_z, n_x]``; channel data ``[n_samples, n_elements]`` (one wave) or
``[n_tx, n_samples, n_elements]``.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.signal
import scipy.sparse as sp
import torch

from drus.physics.forward import PlaneWaveModel, receive_delay, transmit_delay
from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave
from drus.physics.operators import LinearOperator

__all__ = [
    "tukey",
    "receive_apodization",
    "MatchedFilterBeamformer",
    "SparseOperator",
    "das",
    "envelope",
    "log_compress",
    "bmode",
]


def tukey(u: np.ndarray, alpha: float = 0.25) -> np.ndarray:
    """Tukey window on ``u ∈ [−½, ½]`` (0 outside): flat for ``|u| ≤ (1−α)/2``, cosine tapers."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    a = np.abs(np.asarray(u, dtype=np.float64))
    flat = (1 - alpha) / 2
    w = np.where(a <= flat, 1.0, 0.0)
    if alpha > 0:
        taper = (a > flat) & (a <= 0.5)
        w = np.where(taper, 0.5 * (1 + np.cos(2 * np.pi / alpha * (a - flat))), w)
    return w


def receive_apodization(
    x: np.ndarray, z: np.ndarray, *, probe: LinearProbe, f_number: float = 1.4, alpha: float = 0.25
) -> np.ndarray:
    """Dynamic receive apodisation ``[*shape(x), n_elements]``: Tukey-α window over ``z / f_number``.

    The window is centred on the pixel's lateral position; elements outside the aperture get 0.
    """
    if not f_number > 0:
        raise ValueError(f"f_number must be positive, got {f_number!r}")
    x = np.asarray(x, dtype=np.float64)[..., None]
    z = np.asarray(z, dtype=np.float64)[..., None]
    width = z / f_number
    return tukey((probe.element_x - x) / width, alpha)


class SparseOperator(LinearOperator):
    """A product of scipy sparse matrices as a drus :class:`~drus.physics.operators.LinearOperator`.

    ``apply(x) = M_k ⋯ M_1 x`` on tensors ``[..., *in_shape]``; the sparse products run in scipy
    (CPU) and the result comes back on the input's device and dtype.
    """

    def __init__(self, matrices: list, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
        self.matrices = list(matrices)
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)

    def _run(self, mats, t: torch.Tensor, out_shape) -> torch.Tensor:
        v = t.detach().cpu().numpy().reshape(t.shape[0], -1).T  # [n_in, batch]
        v = v.astype(mats[0].dtype, copy=False)
        for m in mats:
            v = m @ v
        return torch.from_numpy(np.ascontiguousarray(v.T)).reshape(t.shape[0], *out_shape).to(t.device, t.dtype)

    def _apply(self, x):
        return self._run(self.matrices, x, self.out_shape)

    def _adjoint(self, y):
        return self._run([m.T for m in reversed(self.matrices)], y, self.in_shape)


class MatchedFilterBeamformer:
    """DRUS's forward model ``H``, its beamformer ``B`` and the composite ``BH`` on one grid.

    Parameters
    ----------
    probe, wave, grid :
        Acquisition and image grid (:mod:`drus.physics.geometry`).
    f_number : float
        Receive f-number (1.4 in the paper).
    alpha : float
        Tukey taper fraction of the receive window (0.25).
    unknown_grid : ImageGrid, optional
        Grid of the unknown reflectivity if it differs from ``grid`` (the "rectangular" variant:
        ``B y`` on the fine ``grid``, ``o`` on a coarser grid; ``BH`` is then ``[n_z·n_x, n_u]``).
        By default the unknown lives on ``grid``.
    **model_kwargs :
        Passed to :class:`drus.physics.forward.PlaneWaveModel` (``pulse``, ``aperture_upsampling``, ``dtype``).

    Examples
    --------
    >>> from drus.physics.geometry import picmus
    >>> probe, wave, grid = picmus(64)
    >>> bf = MatchedFilterBeamformer(probe, wave, grid)
    >>> y = bf.model.simulate(reflectivity)          # [n_samples, n_elements]
    >>> image = bf.beamform(y)                       # B y, [n_z, n_x]
    """

    def __init__(
        self,
        probe: LinearProbe,
        wave: PlaneWave,
        grid: ImageGrid,
        *,
        f_number: float = 1.4,
        alpha: float = 0.25,
        unknown_grid: ImageGrid | None = None,
        **model_kwargs,
    ):
        self.model = PlaneWaveModel(probe, wave, grid, **model_kwargs)
        self.f_number, self.alpha = float(f_number), float(alpha)
        self.grid = grid
        self.unknown_grid = grid if unknown_grid is None else unknown_grid
        if unknown_grid is None:
            self.unknown_model = self.model
        else:  # same recording window as the measurement grid's model, so H and B share rows
            w = PlaneWave(wave.sampling_frequency, wave.sound_speed, wave.angle, wave.t0, self.model.n_samples)
            self.unknown_model = PlaneWaveModel(probe, w, unknown_grid, **model_kwargs)

    def apodization(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Receive apodisation ``[n_pixels, n_elements]`` of pixels ``start:stop`` (C order)."""
        X, Z = self.grid.meshgrid()
        sl = slice(start, stop)
        return receive_apodization(
            X.reshape(-1)[sl], Z.reshape(-1)[sl], probe=self.model.probe, f_number=self.f_number, alpha=self.alpha
        )

    @property
    def H(self) -> sp.csc_matrix:
        """``[n_elements·n_samples, N_unknown]`` forward matrix on the unknown grid (:mod:`drus.physics.forward`)."""
        return self.unknown_model.H

    @cached_property
    def B(self) -> sp.csr_matrix:
        """``[N, n_elements·n_samples]`` matched-filter beamformer ``(W ⊙ H)ᵀ``."""
        return self.model._assemble(self.apodization, desc="building B").T.tocsr(copy=False)

    def beamform(self, channel_data: np.ndarray) -> np.ndarray:
        """``B y``: channel data ``[n_samples, n_elements]`` → image ``[n_z, n_x]``."""
        y = self.model.channel_vector(channel_data)
        if np.iscomplexobj(y):
            raise TypeError("channel_data is complex (IQ); B acts on real RF channel data — use drus.physics.beamform.das "
                            "for IQ data")
        if not np.all(np.isfinite(y)):
            raise ValueError("channel_data contains NaN or inf")
        return (self.B @ y.astype(self.B.dtype)).reshape(self.grid.shape)

    @cached_property
    def BH(self) -> SparseOperator:
        """``BH`` as a matrix-free operator ``unknown_grid.shape → grid.shape`` (``B (H v)``)."""
        return SparseOperator([self.H, self.B], self.unknown_grid.shape, self.grid.shape)


# --- delay-and-sum from raw channel data -------------------------------------------------------
def das(
    channel_data: np.ndarray,
    *,
    probe: LinearProbe,
    waves: PlaneWave | list[PlaneWave],
    grid: ImageGrid,
    f_number: float = 1.4,
    alpha: float = 0.25,
    modulation_frequency: float = 0.0,
    aperture_upsampling: int = 4,
) -> np.ndarray:
    """Delay-and-sum beamforming of one or several plane waves (coherent compounding).

    Parameters
    ----------
    channel_data : array
        ``[n_samples, n_elements]`` for one wave or ``[n_tx, n_samples, n_elements]``; real RF or
        complex IQ (then give ``modulation_frequency``).
    probe, grid :
        Geometry. ``waves`` : one :class:`PlaneWave` or one per transmit (angle, fs, c, t0).
    f_number, alpha :
        Receive aperture ``z / f_number`` with a Tukey-``alpha`` window.
    modulation_frequency : float
        IQ demodulation frequency in Hz (0 for RF).

    Returns
    -------
    np.ndarray
        ``[n_z, n_x]`` beamformed image, real for RF input and complex for IQ, summed over transmits.
        Linear interpolation between samples.
    """
    data = np.asarray(channel_data)
    if data.ndim == 2:
        data = data[None]
    if isinstance(waves, PlaneWave):
        waves = [waves]
    if data.ndim != 3 or data.shape[2] != probe.n_elements:
        raise ValueError(
            f"channel_data must be [n_samples, n_elements] or [n_tx, n_samples, n_elements] with "
            f"n_elements = {probe.n_elements}, got {np.shape(channel_data)}"
        )
    if len(waves) != data.shape[0]:
        raise ValueError(f"got {data.shape[0]} transmits in channel_data but {len(waves)} waves")
    if not np.all(np.isfinite(data)):
        raise ValueError("channel_data contains NaN or inf")
    iq = np.iscomplexobj(data) or modulation_frequency != 0
    X, Z = grid.meshgrid()
    x, z = X.reshape(-1), Z.reshape(-1)
    apod = receive_apodization(x, z, probe=probe, f_number=f_number, alpha=alpha)  # [N, L]
    t_rx = receive_delay(x, z, probe=probe, sound_speed=waves[0].sound_speed)  # [N, L]
    out = np.zeros(x.size, dtype=np.complex128 if iq else np.float64)
    n_s = data.shape[1]
    cols = np.arange(probe.n_elements)[None, :]
    for frame, wave in zip(data, waves):
        tau = transmit_delay(x, z, probe=probe, wave=wave, aperture_upsampling=aperture_upsampling)[:, None] + t_rx
        s = (tau - wave.t0) * wave.sampling_frequency
        i0 = np.floor(s).astype(np.int64)
        w1 = s - i0
        ok = (i0 >= 0) & (i0 + 1 < n_s)
        i0c = np.clip(i0, 0, n_s - 2)
        v = (1 - w1) * frame[i0c, cols] + w1 * frame[i0c + 1, cols]
        if iq:
            v = v * np.exp(2j * np.pi * modulation_frequency * tau)
        out += np.sum(np.where(ok, v, 0) * apod, axis=1)
    return out.reshape(grid.shape)


def envelope(image: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """Envelope ``|analytic signal|`` of a beamformed RF image along depth (``axis=0``); ``|IQ|`` for complex input."""
    image = np.asarray(image)
    if np.iscomplexobj(image):
        return np.abs(image)
    return np.abs(scipy.signal.hilbert(image, axis=axis))


def log_compress(amplitude: np.ndarray, *, dynamic_range: float = 60.0) -> np.ndarray:
    """``20·log10(A / max A)`` clipped to ``[−dynamic_range, 0]`` dB: :func:`drus.evaluation.metrics.to_db`, float64."""
    from drus.evaluation.metrics import to_db

    if not (np.isfinite(dynamic_range) and dynamic_range > 0):
        raise ValueError(f"dynamic_range must be a positive number of dB, got {dynamic_range!r}")
    return to_db(np.asarray(amplitude, dtype=np.float64), floor_db=-float(dynamic_range))


def bmode(image: np.ndarray, *, dynamic_range: float = 60.0, rf: bool = True) -> np.ndarray:
    """B-mode in dB of a beamformed image: envelope (if ``rf``) then log compression."""
    amp = envelope(image) if rf else np.abs(image)
    return log_compress(amp, dynamic_range=dynamic_range)
