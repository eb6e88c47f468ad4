"""Plane-wave channel data of several transmit events: :class:`ChannelData`, what a scanner file holds.

The readers of :mod:`drus.datasets.io` return it (PICMUS/USTB UFF, Verasonics ``.mat``, Field II);
:meth:`drus.datasets.acquisition.Acquisition.from_channel_data` takes one of its transmits, with
everything needed to build ``H`` and ``B`` for it. Layout ``[n_tx, n_samples, n_elements]``, SI
units (m, s, Hz, rad); the probe and plane wave of a transmit come from
:mod:`drus.physics.geometry` (:meth:`ChannelData.probe`, :meth:`ChannelData.plane_wave`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drus.physics.geometry import LinearProbe, PlaneWave, array_pitch

__all__ = ["ChannelData"]


def _finite_scalar(name: str, value: Any) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1 or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be one finite number, got {value!r}")
    return float(arr.reshape(()))


@dataclass(frozen=True, eq=False)  # holds arrays: no field-wise ==
class ChannelData:
    """Plane-wave channel data of ``n_tx`` transmit events, in drus' layout.

    Treat the arrays as read-only; the dataclass is frozen but numpy arrays are not.

    Parameters
    ----------
    data : numpy.ndarray
        ``[n_tx, n_samples, n_elements]`` samples: ``float32`` RF, or ``complex64`` IQ
        (baseband, demodulated at ``modulation_frequency``). Other real or complex dtypes are
        converted; non-finite values are refused.
    angles : numpy.ndarray
        ``[n_tx]`` steering angles in rad (positive steers towards +x).
    sampling_frequency : float
        ``fs`` in Hz.
    modulation_frequency : float
        Demodulation frequency in Hz for IQ data; 0 for RF.
    initial_time : numpy.ndarray or float
        ``[n_tx]`` time in s of the first sample of each event, relative to the moment the
        wavefront passes the origin (``x = z = 0``); sample ``k`` is at
        ``initial_time + k / fs``. A scalar applies to all events.
    element_positions : numpy.ndarray
        ``[n_elements, 3]`` element centres ``(x, y, z)`` in m.
    sound_speed : float
        ``c`` in m/s.
    source : str
        Where the data came from (a file path), for messages and provenance.
    """

    data: np.ndarray = field(repr=False)
    angles: np.ndarray
    sampling_frequency: float
    modulation_frequency: float
    initial_time: np.ndarray
    element_positions: np.ndarray = field(repr=False)
    sound_speed: float
    source: str = ""

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim != 3:
            raise ValueError(
                f"ChannelData.data must be [n_tx, n_samples, n_elements] (3-D), got shape {data.shape}"
            )
        if np.iscomplexobj(data):
            data = data.astype(np.complex64, copy=False)
        elif np.issubdtype(data.dtype, np.number):
            data = data.astype(np.float32, copy=False)
        else:
            raise TypeError(f"ChannelData.data must be numeric, got dtype {data.dtype}")
        if not np.isfinite(data).all():
            raise ValueError("ChannelData.data contains NaN or inf")
        n_tx, _, n_elements = data.shape

        angles = np.asarray(self.angles, dtype=np.float64).reshape(-1)
        if angles.shape != (n_tx,):
            raise ValueError(f"ChannelData.angles must have n_tx = {n_tx} values, got {angles.size}")
        if not np.all(np.isfinite(angles)) or np.any(np.abs(angles) >= np.pi / 2):
            raise ValueError(f"ChannelData.angles must be finite and in (-pi/2, pi/2) rad, got {angles}")

        initial_time = np.asarray(self.initial_time, dtype=np.float64)
        if initial_time.size == 1:
            initial_time = np.full(n_tx, float(initial_time.reshape(())))
        initial_time = initial_time.reshape(-1)
        if initial_time.shape != (n_tx,) or not np.all(np.isfinite(initial_time)):
            raise ValueError(
                f"ChannelData.initial_time must be one finite value or n_tx = {n_tx} values (s), "
                f"got shape {np.shape(self.initial_time)}"
            )

        positions = np.asarray(self.element_positions, dtype=np.float64)
        if positions.shape != (n_elements, 3) or not np.all(np.isfinite(positions)):
            raise ValueError(
                f"ChannelData.element_positions must be finite [n_elements, 3] = [{n_elements}, 3] (m), "
                f"got shape {positions.shape}"
            )

        fs = _finite_scalar("ChannelData.sampling_frequency", self.sampling_frequency)
        fm = _finite_scalar("ChannelData.modulation_frequency", self.modulation_frequency)
        c = _finite_scalar("ChannelData.sound_speed", self.sound_speed)
        if fs <= 0 or c <= 0 or fm < 0:
            raise ValueError(
                "ChannelData needs sampling_frequency > 0, sound_speed > 0 and modulation_frequency >= 0, "
                f"got {fs}, {c}, {fm}"
            )
        for name, value in (
            ("data", data),
            ("angles", angles),
            ("initial_time", initial_time),
            ("element_positions", positions),
            ("sampling_frequency", fs),
            ("modulation_frequency", fm),
            ("sound_speed", c),
            ("source", str(self.source)),
        ):
            object.__setattr__(self, name, value)

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def n_tx(self) -> int:
        """Number of transmit events."""
        return self.data.shape[0]

    @property
    def n_samples(self) -> int:
        """Number of fast-time samples per event."""
        return self.data.shape[1]

    @property
    def n_elements(self) -> int:
        """Number of receive channels."""
        return self.data.shape[2]

    @property
    def is_iq(self) -> bool:
        """``True`` for complex baseband (IQ) data, ``False`` for real RF."""
        return bool(np.iscomplexobj(self.data))

    # -- views -------------------------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        if int(index) != index or not 0 <= index < self.n_tx:
            raise IndexError(f"transmit index must be an integer in [0, {self.n_tx - 1}], got {index!r}")
        return int(index)

    def frame(self, index: int) -> np.ndarray:
        """Channel data of one transmit event, ``[n_samples, n_elements]`` (a view)."""
        return self.data[self._check_index(index)]

    def index_of_angle(self, angle: float, *, tolerance: float | None = None) -> int:
        """Index of the transmit event whose angle is nearest to ``angle`` (rad).

        Parameters
        ----------
        angle : float
            Steering angle in rad.
        tolerance : float, optional
            Largest accepted ``|angles[i] - angle|`` in rad; ``None`` accepts the nearest whatever
            its distance.
        """
        distance = np.abs(self.angles - float(angle))
        index = int(np.argmin(distance))
        if tolerance is not None and distance[index] > tolerance:
            raise ValueError(
                f"no transmit within {tolerance} rad of angle {angle} rad; the nearest is "
                f"{self.angles[index]} rad (index {index})"
            )
        return index

    def plane_wave(self, index: int) -> PlaneWave:
        """The :class:`~drus.physics.geometry.PlaneWave` of transmit ``index``.

        Its ``t0`` is ``initial_time[index]`` and its ``n_samples`` the record length.
        """
        i = self._check_index(index)
        return PlaneWave(
            sampling_frequency=self.sampling_frequency,
            sound_speed=self.sound_speed,
            angle=float(self.angles[i]),
            t0=float(self.initial_time[i]),
            n_samples=self.n_samples,
        )

    def probe(self, *, center_frequency: float, bandwidth: float, name: str = "linear") -> LinearProbe:
        """A :class:`~drus.physics.geometry.LinearProbe` matching the element positions.

        The pitch is the mean spacing of the element x positions. The positions must be equally
        spaced and centred on ``x = 0`` (the convention of :class:`LinearProbe`).

        Parameters
        ----------
        center_frequency : float
            Transducer centre frequency in Hz (not stored in channel data files).
        bandwidth : float
            Fractional -6 dB bandwidth, e.g. 0.67.
        name : str
            Probe label.
        """
        x = self.element_positions[:, 0]
        if self.n_elements < 2:
            raise ValueError("a probe needs at least 2 elements to define a pitch")
        spacing = np.diff(x)
        pitch = array_pitch(x)
        tolerance = 1e-3 * abs(pitch)
        if pitch <= 0 or np.max(np.abs(spacing - pitch)) > tolerance:
            raise ValueError(
                f"element x positions of {self.source or 'the channel data'} are not equally spaced and "
                f"increasing (spacing {spacing.min():.6g} … {spacing.max():.6g} m); not a LinearProbe"
            )
        if abs(float(np.mean(x))) > tolerance:
            raise ValueError(
                f"element x positions are centred on {np.mean(x):.6g} m, not 0; LinearProbe assumes a "
                "probe centred on the origin"
            )
        return LinearProbe(self.n_elements, pitch, center_frequency, bandwidth, name=name)
