"""The plane-wave pulse-echo forward model ``H`` (paper eqs. (2)-(3)).

``y = H o``: a reflectivity image ``o`` (``[n_z, n_x]``) produces channel data ``y``
(``[n_samples, n_elements]``). The echo of the pixel at ``r`` on element ``e`` is the two-way pulse
delayed by ``τ(r, e) = τ_tx(r) + τ_rx(r, e)``::

    y[k, e] = Σ_r h(t0 + k/fs − τ(r, e)) · o(r)

- transmit delay ``τ_tx``: arrival time of the plane wave, with the edge effects of a finite
  aperture: the earliest arrival over virtual sources along the aperture (elements interpolated
  ``aperture_upsampling`` times) fired with the steering delays ``x_e sin θ / c``. For θ = 0 this is
  the distance from the pixel to the aperture segment (``z`` in front of it) over ``c``
  (docs/method.md §3); in the insonified zone of a steered wave it equals ``(x sin θ + z cos θ) / c``.
- receive delay ``τ_rx = |r − r_e| / c``.
- time origin: ``t = 0`` when the wavefront passes the probe centre; sample ``k`` is at
  ``t0 + k / fs`` (:class:`drus.physics.geometry.PlaneWave`).
- fractional delays are rounded to 1/``oversampling`` of a sample and looked up in the pulse's
  polyphase table (:meth:`drus.physics.pulse.PulseEcho.polyphase`).

The sparse matrix stores rows element-major (row ``e · n_samples + k``: the paper's
``y = [y_1ᵀ … y_Lᵀ]ᵀ``) and columns in image C order (``iz · n_x + ix``). Use
:meth:`PlaneWaveModel.simulate` to work with ``[n_samples, n_elements]`` arrays directly.
"""

from __future__ import annotations

import logging
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave
from drus.physics.pulse import PulseEcho, picmus_pulse

__all__ = ["transmit_delay", "receive_delay", "first_firing_time", "steered_plane_wave_delay", "PlaneWaveModel"]

log = logging.getLogger(__name__)

_CHUNK_PIXELS = 2048


def transmit_delay(
    x: np.ndarray, z: np.ndarray, *, probe: LinearProbe, wave: PlaneWave, aperture_upsampling: int = 4
) -> np.ndarray:
    """Plane-wave arrival time at points ``(x, z)`` (m) in s, edge effects included; shape of ``x``.

    The wave is the envelope of spherical wavelets from ``(n_elements − 1)·aperture_upsampling + 1``
    points along the aperture, each fired at ``x_e sin θ / c``.
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    n_src = (probe.n_elements - 1) * aperture_upsampling + 1
    xs = np.linspace(probe.element_x[0], probe.element_x[-1], n_src)
    fire = xs * np.sin(wave.angle)  # path-length equivalent of the steering delay, m
    xf, zf = x.reshape(-1), z.reshape(-1)
    out = np.empty(xf.size)
    step = max(1, 2**22 // n_src)
    for i in range(0, xf.size, step):
        d = np.hypot(xf[i : i + step, None] - xs[None, :], zf[i : i + step, None]) + fire[None, :]
        out[i : i + step] = d.min(axis=1)
    return (out / wave.sound_speed).reshape(x.shape)


def first_firing_time(element_x: np.ndarray, *, angle: float, sound_speed: float) -> float:
    """Time in s from the firing of the first element to the wavefront passing the origin.

    A plane wave steered by ``θ`` fires element ``e`` at ``x_e sin θ / c`` relative to the moment its
    wavefront passes ``x = z = 0`` (drus' time origin); the first element fires at
    ``min_e x_e sin θ / c``, so this is ``−min_e x_e sin θ / c``: ``(aperture / 2)·|sin θ| / c`` for a
    centred array, 0 at 0°. Scanners (e.g. Verasonics) count time from the first firing; subtract
    this from their ``t0`` to get drus' ``t0``.
    """
    x = np.asarray(element_x, dtype=np.float64)
    return float(-np.min(x * np.sin(angle)) / sound_speed)


def steered_plane_wave_delay(
    x: np.ndarray, z: np.ndarray, *, angle: float, sound_speed: float, element_x: np.ndarray
) -> np.ndarray:
    """Closed-form transmit delay of a steered plane wave, from the first element's firing, in s.

    ``τ(x, z) = (x sin θ + z cos θ) / c + first_firing_time``: the textbook plane-wave arrival with the
    reference chosen so that ``τ ≥ 0`` on the aperture (``z = 0``, ``x`` between the first and last
    element) and ``τ = 0`` where the first element fires. :func:`transmit_delay` equals
    ``τ − first_firing_time`` inside the insonified zone (it adds the edge waves of a finite aperture
    outside it).
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    ref = first_firing_time(element_x, angle=angle, sound_speed=sound_speed)
    return (x * np.sin(angle) + z * np.cos(angle)) / sound_speed + ref


def receive_delay(x: np.ndarray, z: np.ndarray, *, probe: LinearProbe, sound_speed: float) -> np.ndarray:
    """Echo travel time from points ``(x, z)`` (shape ``S``) to each element: ``[*S, n_elements]`` s."""
    x = np.asarray(x, dtype=np.float64)[..., None]
    z = np.asarray(z, dtype=np.float64)[..., None]
    return np.hypot(x - probe.element_x, z) / sound_speed


class PlaneWaveModel:
    """Forward operator ``H`` of one plane-wave acquisition on an image grid.

    Parameters
    ----------
    probe, wave, grid :
        Probe, transmit event and image grid (:mod:`drus.physics.geometry`).
    pulse : PulseEcho, optional
        Two-way pulse; defaults to :func:`drus.physics.pulse.picmus_pulse` at ``wave.sampling_frequency``.
    aperture_upsampling : int
        Virtual sources per element pitch for the transmit delay (4, docs/method.md §3).
    dtype :
        Floating type of the sparse matrices (float32 by default).

    Notes
    -----
    ``H`` is built once, vectorised over blocks of pixels, and cached on the instance
    (:attr:`H`). The receive beamformer ``B`` that goes with it lives in :mod:`drus.physics.beamform`.
    """

    def __init__(
        self,
        probe: LinearProbe,
        wave: PlaneWave,
        grid: ImageGrid,
        *,
        pulse: PulseEcho | None = None,
        aperture_upsampling: int = 4,
        dtype=np.float32,
    ):
        self.probe, self.wave, self.grid = probe, wave, grid
        self.pulse = pulse if pulse is not None else picmus_pulse(sampling_frequency=wave.sampling_frequency)
        if not np.isclose(self.pulse.sampling_frequency, wave.sampling_frequency):
            raise ValueError(
                f"pulse sampled for fs = {self.pulse.sampling_frequency} Hz but the wave has "
                f"fs = {wave.sampling_frequency} Hz; build the pulse with the wave's sampling frequency"
            )
        self.aperture_upsampling = int(aperture_upsampling)
        self.dtype = np.dtype(dtype)

    # --- delays -------------------------------------------------------------------------------
    def delays(self, pixels: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Two-way delays in *samples* relative to ``t0``: ``[n_pixels, n_elements]`` float64."""
        X, Z = self.grid.meshgrid()
        x, z = X.reshape(-1)[pixels], Z.reshape(-1)[pixels]
        tau = transmit_delay(x, z, probe=self.probe, wave=self.wave, aperture_upsampling=self.aperture_upsampling)
        tau = tau[:, None] + receive_delay(x, z, probe=self.probe, sound_speed=self.wave.sound_speed)
        return (tau - self.wave.t0) * self.wave.sampling_frequency

    @cached_property
    def n_samples(self) -> int:
        """Number of channel-data samples: ``wave.n_samples``, or enough to hold every echo."""
        if self.wave.n_samples is not None:
            return int(self.wave.n_samples)
        X, Z = self.grid.meshgrid()
        corners = np.array([0, self.grid.n_x - 1, self.grid.size - self.grid.n_x, self.grid.size - 1])
        far = np.concatenate([self.delays(corners).ravel(), self.delays(np.argmax(Z.reshape(-1))[None]).ravel()])
        return int(np.ceil(far.max())) + self.pulse.half_width + 1

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the matrix ``H``: ``(n_elements · n_samples, n_z · n_x)``."""
        return (self.probe.n_elements * self.n_samples, self.grid.size)

    # --- matrix -------------------------------------------------------------------------------
    def pixel_blocks(self, weights=None):
        """Yield ``(start, stop, rows, values)`` blocks of the columns of ``H`` (or of ``H ⊙ W``).

        ``rows``/``values`` are ``[n_block, n_elements, n_taps]`` (row indices int64, values of
        :attr:`dtype`). ``weights(start, stop) → [n_block, n_elements]`` multiplies each
        pixel-element pair (used for the receive apodisation of ``B``). Entries that fall outside the
        recording or are zero are returned with value 0; callers drop them.
        """
        offsets, table = self.pulse.polyphase()
        q = self.pulse.oversampling
        table = table.astype(self.dtype)
        n_s, n_el = self.n_samples, self.probe.n_elements
        elem_base = (np.arange(n_el) * n_s)[None, :, None]
        for start in range(0, self.grid.size, _CHUNK_PIXELS):
            stop = min(start + _CHUNK_PIXELS, self.grid.size)
            d = self.delays(slice(start, stop))
            fine = np.rint(d * q).astype(np.int64)  # delay in 1/q samples, rounded
            n, phase = np.divmod(fine, q)
            k = n[..., None] + offsets  # [b, L, J] sample index
            values = table[phase]  # [b, L, J]
            if weights is not None:
                values = values * weights(start, stop)[..., None].astype(self.dtype)
            inside = (k >= 0) & (k < n_s)
            values = np.where(inside, values, 0).astype(self.dtype, copy=False)
            yield start, stop, elem_base + np.clip(k, 0, n_s - 1), values

    def _assemble(self, weights=None, *, desc: str) -> sp.csc_matrix:
        """Column-compressed ``[n_elements·n_samples, N]`` matrix from :meth:`pixel_blocks`."""
        from tqdm.auto import tqdm

        N = self.grid.size
        counts = np.zeros(N, dtype=np.int64)
        parts_rows, parts_vals = [], []
        n_blocks = -(-N // _CHUNK_PIXELS)
        for start, stop, rows, values in tqdm(
            self.pixel_blocks(weights), total=n_blocks, desc=desc, disable=n_blocks < 8, leave=False
        ):
            keep = values != 0
            counts[start:stop] = keep.sum(axis=(1, 2))
            parts_rows.append(rows[keep].astype(np.int32))
            parts_vals.append(values[keep])
        indptr = np.concatenate([[0], np.cumsum(counts)])
        index_dtype = np.int32 if indptr[-1] < 2**31 else np.int64
        rows = np.concatenate(parts_rows)
        del parts_rows
        vals = np.concatenate(parts_vals)
        del parts_vals
        m = sp.csc_matrix((vals, rows.astype(index_dtype, copy=False), indptr.astype(index_dtype)), shape=self.shape)
        m.has_sorted_indices = True  # rows are element-major and increase along each column
        return m

    @cached_property
    def H(self) -> sp.csc_matrix:
        """The forward matrix ``H``, ``[n_elements·n_samples, n_z·n_x]`` (rows element-major)."""
        return self._assemble(desc="building H")

    # --- convenience --------------------------------------------------------------------------
    def simulate(self, reflectivity: np.ndarray) -> np.ndarray:
        """Noise-free channel data ``H o``: ``[n_z, n_x]`` → ``[n_samples, n_elements]``."""
        o = np.asarray(reflectivity)
        if o.shape != self.grid.shape:
            raise ValueError(f"reflectivity must have the grid shape {self.grid.shape} (n_z, n_x), got {o.shape}")
        if np.iscomplexobj(o):
            raise TypeError("reflectivity is complex; H acts on a real reflectivity image (pass its real part explicitly)")
        bad = ~np.isfinite(o)
        if bad.any():
            iz, ix = np.argwhere(bad)[0]
            raise ValueError(f"reflectivity has {int(bad.sum())} NaN or inf pixel(s), the first at (iz, ix) = "
                             f"({iz}, {ix}); every pixel must be finite")
        y = self.H @ o.reshape(-1).astype(self.dtype)
        return y.reshape(self.probe.n_elements, self.n_samples).T

    def channel_vector(self, channel_data: np.ndarray) -> np.ndarray:
        """``[n_samples, n_elements]`` channel data → the element-major vector ``H`` acts on."""
        y = np.asarray(channel_data)
        expected = (self.n_samples, self.probe.n_elements)
        if y.shape != expected:
            raise ValueError(f"channel_data must be [n_samples, n_elements] = {expected}, got {y.shape}")
        return np.ascontiguousarray(y.T).reshape(-1)
