"""One plane-wave acquisition, read from any supported file, and the DRUS physics built for it.

:class:`Acquisition` is what every reader produces: the channel data of one transmit event and
everything needed to build ``H`` and ``B`` for it (element positions, fs, c, t0, steering angle,
and the pulse-echo centre frequency and bandwidth when the file knows them).

Readers (:func:`read_acquisition` picks one from the file's content)
--------------------------------------------------------------------
=============================  ==================================================================
PICMUS / USTB UFF (HDF5)       group ``US/US_DATASET0000`` (:func:`drus.datasets.io.read_ustb_channel_data`)
Verasonics-style ``.mat``      ``RF1`` (or ``RF``) ``(n_samples, n_elements, n_tx)`` and the
                               struct ``param1`` (or ``param``) with ``fs``, ``c``, ``pitch``,
                               ``TXangle`` (rad) and optionally ``t0`` (s, from the first firing);
                               8-bit data: float minus the mean (:func:`drus.datasets.io.read_gammex`)
Field II (pybf HDF5)           ``data/rf_data/frame_1/shot_<k>`` (:func:`drus.datasets.io.read_fieldii_dataset`)
minimal layout (.h5 / .npz)    the keys of :data:`MINIMAL_LAYOUT` (:func:`write_acquisition`)
=============================  ==================================================================

The minimal layout is the one to write from any scanner or simulator::

    channel_data   [n_samples, n_elements]  RF samples of ONE transmit (real; any numeric dtype)
    element_x      [n_elements]             lateral element positions, m, increasing
    fs             scalar                   sampling frequency, Hz
    c              scalar                   speed of sound, m/s
    t0             scalar                   time of sample 0, s, counted from the firing of the
                                            first element (so every transmit delay is ≥ 0)
    angle          scalar                   steering angle, rad (positive steers towards +x)
    f0             scalar, optional         pulse-echo centre frequency, Hz
    bandwidth      scalar, optional         pulse-echo fractional −6 dB bandwidth (e.g. 0.67)

Frames (cine loops, :func:`count_frames`; ``read_acquisition(path, frame=k)`` reads frame ``k``, 0-based, and
only it): the minimal layout with ``channel_data [n_frames, n_samples, n_elements]`` (the other keys shared;
:func:`write_acquisition` of a list of acquisitions), a UFF whose ``data/real`` is 4-D (USTB's frame axis), a
Verasonics-style ``.mat`` with a 4-D ``RF1 (n_samples, n_elements, n_tx, n_frames)`` or variables ``RF1, RF2, …``
(with ``param1`` or ``param1, param2, …``), and a Field II file's ``frame_<f>`` groups.

Time conventions: inside drus (:class:`drus.physics.geometry.PlaneWave`, :attr:`Acquisition.t0`) time 0 is the
moment the wavefront passes the origin ``x = z = 0``; scanners count from the first element's firing.
The two differ by :func:`drus.physics.forward.first_firing_time` (``(aperture/2)·|sin θ|/c`` for a centred
array, 0 at 0°), converted once, in the readers.

Physics (:meth:`Acquisition.beamformer`): ``H`` and ``B`` for the file's element positions, angle and
t0 on any grid (:func:`default_grid`: the insonified field of view at λ/2 pixels, capped by
:data:`DEFAULT_MAX_UNKNOWNS`); the pulse is :func:`drus.physics.pulse.gaussian_pulse` at the file's centre
frequency and bandwidth or, when the file has none, at those of the channel data's spectrum
(:func:`drus.physics.pulse.estimate_spectrum`, logged). :func:`decomposition_cost` predicts the time and
peak memory of the exact decomposition of ``BH`` before it starts.

The path of ``drus reconstruct FILE`` as library calls (``drus demo``'s plane-wave panel takes it too)::

    acq, bf = prepare_acquisition("my.h5", x_range=(-5e-3, 5e-3), z_range=(10e-3, 25e-3), size=96)
    split = plan_decomposition(bf)                     # predicted cost, refused if it cannot fit
    res = reconstruct_acquisition(acq, bf, model=load_prior(), split=split)
    res.by, res.das, res.reconstruction.var, res.var_pooled, res.sigma0, res.attrs
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from drus.physics.forward import first_firing_time
from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave, array_pitch
from drus.datasets.channel_data import ChannelData
from drus.datasets.io import (
    DataFileError,
    _existing,
    _finite,
    _h5_array,
    _MatFile,
    read_fieldii_dataset,
    read_gammex,
    read_ustb_channel_data,
    USTB_DATASET,
)
from drus.physics.pulse import PulseEcho, estimate_spectrum, gaussian_pulse

__all__ = [
    "Acquisition",
    "MINIMAL_LAYOUT",
    "read_acquisition",
    "count_frames",
    "read_minimal_acquisition",
    "write_acquisition",
    "default_grid",
    "DecompositionCost",
    "decomposition_cost",
    "check_memory",
    "likely_split",
    "DEFAULT_MAX_UNKNOWNS",
    "prepare_acquisition",
    "plan_decomposition",
    "AcquisitionReconstruction",
    "reconstruct_acquisition",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Keys of the minimal layout: name → (required, meaning).
MINIMAL_LAYOUT = {
    "channel_data": (True, "[n_samples, n_elements] RF samples of one transmit ([n_frames, n_samples, n_elements] for a cine loop)"),
    "element_x": (True, "[n_elements] lateral element positions in m, increasing"),
    "fs": (True, "sampling frequency in Hz"),
    "c": (True, "speed of sound in m/s"),
    "t0": (True, "time of sample 0 in s, counted from the firing of the first element"),
    "angle": (True, "steering angle in rad"),
    "f0": (False, "pulse-echo centre frequency in Hz"),
    "bandwidth": (False, "pulse-echo fractional -6 dB bandwidth"),
}

#: Default cap on the number of unknowns of the default grid: 128² decomposes in ≈ 2–3 min with the
#: flip split on 2 CPU cores, ≈ 4× that without it (docs/decomposition.md).
DEFAULT_MAX_UNKNOWNS = 128 * 128

#: The image sides the shipped prior's UNet accepts are multiples of this.
SIZE_MULTIPLE = 8


def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"Acquisition.{name} {problem}")


@dataclass(frozen=True, eq=False)  # holds arrays: no field-wise ==
class Acquisition:
    """The channel data of one plane-wave transmit and its acquisition parameters (SI units).

    Parameters
    ----------
    channel_data : numpy.ndarray
        ``[n_samples, n_elements]`` real RF, stored as ``float32``.
    element_x : numpy.ndarray
        ``[n_elements]`` lateral element positions in m, strictly increasing (a linear array at
        ``z = 0``).
    sampling_frequency : float
        ``fs`` in Hz.
    sound_speed : float
        ``c`` in m/s.
    t0 : float
        Time of sample 0 in s relative to the moment the wavefront passes the origin (drus'
        convention, :class:`~drus.physics.geometry.PlaneWave`); sample ``k`` is at ``t0 + k / fs``.
    angle : float
        Steering angle in rad, in (−π/2, π/2).
    center_frequency, bandwidth : float, optional
        Pulse-echo centre frequency (Hz) and fractional −6 dB bandwidth, when known.
    spectrum_source : str
        Where ``center_frequency``/``bandwidth`` come from (``"file"``, ``"channel-data spectrum"``…).
    source : str
        The file read (for messages and provenance).
    transmit : str
        Which transmit of the file this is, e.g. ``"4 of 7 (0°)"``.
    """

    channel_data: np.ndarray = field(repr=False)
    element_x: np.ndarray = field(repr=False)
    sampling_frequency: float
    sound_speed: float
    t0: float
    angle: float
    center_frequency: float | None = None
    bandwidth: float | None = None
    spectrum_source: str = ""
    source: str = ""
    transmit: str = ""

    def __post_init__(self) -> None:
        y = np.asarray(self.channel_data)
        _check(y.ndim == 2 and min(y.shape) >= 2, "channel_data",
               f"must be [n_samples, n_elements] (2-D, ≥ 2 × 2), got shape {y.shape}")
        _check(np.issubdtype(y.dtype, np.number) and not np.iscomplexobj(y), "channel_data",
               f"must be real RF samples, got dtype {y.dtype} (IQ data is not supported by the DRUS model)")
        y = y.astype(np.float32, copy=False)
        _check(bool(np.isfinite(y).all()), "channel_data", "contains NaN or inf")
        x = np.asarray(self.element_x, dtype=np.float64).reshape(-1)
        _check(x.size == y.shape[1], "element_x", f"has {x.size} positions for {y.shape[1]} channels")
        _check(bool(np.all(np.isfinite(x))) and bool(np.all(np.diff(x) > 0)), "element_x",
               "must be finite and strictly increasing (m)")
        for name in ("sampling_frequency", "sound_speed"):
            v = float(getattr(self, name))
            _check(math.isfinite(v) and v > 0, name, f"must be a positive finite number, got {v!r}")
            object.__setattr__(self, name, v)
        _check(math.isfinite(self.t0), "t0", f"must be finite (s), got {self.t0!r}")
        _check(math.isfinite(self.angle) and abs(self.angle) < math.pi / 2, "angle",
               f"must be in (−π/2, π/2) rad, got {self.angle!r} (degrees given as radians?)")
        if self.center_frequency is not None:
            f0 = float(self.center_frequency)
            _check(math.isfinite(f0) and 0 < f0 < self.sampling_frequency / 2, "center_frequency",
                   f"must be in (0, fs/2) Hz, got {f0!r}")
            object.__setattr__(self, "center_frequency", f0)
        if self.bandwidth is not None:
            bw = float(self.bandwidth)
            _check(math.isfinite(bw) and 0 < bw <= 2, "bandwidth", f"must be a fraction in (0, 2], got {bw!r}")
            object.__setattr__(self, "bandwidth", bw)
        object.__setattr__(self, "channel_data", y)
        object.__setattr__(self, "element_x", x)
        object.__setattr__(self, "t0", float(self.t0))
        object.__setattr__(self, "angle", float(self.angle))

    # -- sizes and derived quantities ----------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return self.channel_data.shape[0]

    @property
    def n_elements(self) -> int:
        return self.channel_data.shape[1]

    @property
    def t0_first_firing(self) -> float:
        """Time of sample 0 in s counted from the first element's firing (the minimal layout's ``t0``)."""
        return self.t0 + first_firing_time(self.element_x, angle=self.angle, sound_speed=self.sound_speed)

    @property
    def wavelength(self) -> float:
        """``c / f0`` in m (needs the centre frequency: :meth:`with_spectrum`)."""
        if self.center_frequency is None:
            raise ValueError("the centre frequency is unknown; call Acquisition.with_spectrum() first")
        return self.sound_speed / self.center_frequency

    def with_spectrum(self) -> "Acquisition":
        """This acquisition with ``center_frequency`` and ``bandwidth`` filled in.

        Values from the file are kept; missing ones come from the channel data's spectrum
        (:func:`drus.physics.pulse.estimate_spectrum`), and the estimate is logged.
        """
        if self.center_frequency is not None and self.bandwidth is not None:
            return self
        f0, bw = estimate_spectrum(self.channel_data, sampling_frequency=self.sampling_frequency)
        f0 = self.center_frequency if self.center_frequency is not None else f0
        bw = self.bandwidth if self.bandwidth is not None else bw
        log.warning("%s: no pulse centre frequency/bandwidth in the file; estimated from the channel data's "
                    "spectrum: f0 = %.3f MHz, −6 dB bandwidth %.0f %%", self.source or "acquisition", f0 / 1e6, 100 * bw)
        return dataclasses.replace(self, center_frequency=f0, bandwidth=bw, spectrum_source="channel-data spectrum")

    # -- physics ---------------------------------------------------------------------------------
    def probe(self, *, name: str = "linear") -> LinearProbe:
        """The :class:`~drus.physics.geometry.LinearProbe` at :attr:`element_x` (needs f0 and bandwidth)."""
        acq = self.with_spectrum()
        return LinearProbe.from_positions(self.element_x, center_frequency=acq.center_frequency,
                                          bandwidth=acq.bandwidth, name=name)

    def plane_wave(self) -> PlaneWave:
        """The :class:`~drus.physics.geometry.PlaneWave`: fs, c, angle, t0 and the record length."""
        return PlaneWave(self.sampling_frequency, self.sound_speed, self.angle, self.t0, self.n_samples)

    def pulse(self) -> PulseEcho:
        """The two-way pulse: :func:`drus.physics.pulse.gaussian_pulse` at the pulse-echo f0 and bandwidth."""
        acq = self.with_spectrum()
        return gaussian_pulse(center_frequency=acq.center_frequency, bandwidth=acq.bandwidth,
                              sampling_frequency=self.sampling_frequency)

    def beamformer(self, grid: ImageGrid, *, unknown_grid: ImageGrid | None = None, dtype=np.float32):
        """``H``, ``B`` and ``BH`` of this acquisition on ``grid`` (:class:`~drus.physics.beamform.MatchedFilterBeamformer`)."""
        from drus.physics.beamform import MatchedFilterBeamformer

        return MatchedFilterBeamformer(self.probe(), self.plane_wave(), grid, unknown_grid=unknown_grid,
                                       pulse=self.pulse(), dtype=dtype)

    def describe(self) -> str:
        """One line for logs and messages."""
        f0 = f"{self.center_frequency / 1e6:.3f} MHz" if self.center_frequency else "f0 unknown"
        bw = f"{100 * self.bandwidth:.0f} %" if self.bandwidth else "bandwidth unknown"
        pitch = array_pitch(self.element_x)
        return (f"{Path(self.source).name or 'acquisition'}: {self.n_samples} samples × {self.n_elements} elements "
                f"(pitch {pitch * 1e3:.3f} mm), fs {self.sampling_frequency / 1e6:.4g} MHz, c {self.sound_speed:g} m/s, "
                f"angle {math.degrees(self.angle):.2f}°{' (transmit ' + self.transmit + ')' if self.transmit else ''}, "
                f"t0 {self.t0 * 1e6:.3f} µs, pulse {f0} / {bw}"
                + (f" ({self.spectrum_source})" if self.spectrum_source else ""))

    @classmethod
    def from_channel_data(
        cls,
        channel_data: ChannelData,
        index: int,
        *,
        center_frequency: float | None = None,
        bandwidth: float | None = None,
        spectrum_source: str = "",
    ) -> "Acquisition":
        """Transmit ``index`` of a multi-transmit :class:`~drus.datasets.channel_data.ChannelData` (RF, linear array at z = 0)."""
        cd = channel_data
        path = cd.source or "channel data"
        if cd.is_iq:
            raise DataFileError(path, "data", "holds IQ (complex) samples; the DRUS model needs RF channel data")
        pos = cd.element_positions
        if np.max(np.abs(pos[:, 1:])) > 1e-6:
            raise DataFileError(path, "element positions", "are not on the line y = z = 0; drus models linear arrays")
        frame = cd.frame(index)
        return cls(
            channel_data=frame, element_x=pos[:, 0], sampling_frequency=cd.sampling_frequency,
            sound_speed=cd.sound_speed, t0=float(cd.initial_time[index]), angle=float(cd.angles[index]),
            center_frequency=center_frequency, bandwidth=bandwidth,
            spectrum_source=spectrum_source if center_frequency is not None else "", source=cd.source,
            transmit=f"{index + 1} of {cd.n_tx} ({math.degrees(cd.angles[index]):.2f}°)",
        )


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------
def _pick_transmit(cd: ChannelData, angle: float | None, path) -> int:
    """Index of the transmit at ``angle`` (rad; default the one nearest 0°), within 0.01°."""
    target = 0.0 if angle is None else float(angle)
    index = cd.index_of_angle(target)
    if angle is not None and abs(cd.angles[index] - target) > math.radians(0.01):
        available = ", ".join(f"{math.degrees(a):.2f}" for a in cd.angles)
        raise ValueError(f"{path}: no transmit at {math.degrees(target):.2f}°; the file holds {available} (degrees)")
    return index


def _scalar_value(arr, path, name: str, *, unit: str, positive: bool) -> float:
    a = np.asarray(arr)
    if a.size != 1 or not np.issubdtype(a.dtype, np.number):
        raise DataFileError(path, name, f"has shape {a.shape}; expected one number ({unit})")
    v = float(np.real(a.reshape(())))
    if not math.isfinite(v) or (positive and v <= 0):
        raise DataFileError(path, name, f"is {v}; expected a finite{' positive' if positive else ''} number ({unit})")
    return v


def _minimal_frames(values_shape: tuple[int, ...]) -> int:
    return int(values_shape[0]) if len(values_shape) == 3 else 1


def read_minimal_acquisition(path: PathLike, *, frame: int = 0) -> Acquisition:
    """Read the minimal layout (:data:`MINIMAL_LAYOUT`) from ``.h5``/``.hdf5`` or ``.npz``.

    ``frame``: which frame of a 3-D ``channel_data [n_frames, n_samples, n_elements]`` (0-based; an
    HDF5 file is read one frame at a time, and NaN/inf are checked in that frame only).

    Raises
    ------
    DataFileError
        A key is missing, has the wrong shape, or holds NaN/inf (the message names file and key).
    """
    p = _existing(path)
    values: dict = {}
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                values = {k: np.asarray(z[k]) for k in z.files}
        except Exception as err:  # noqa: BLE001 - numpy raises several types for non-npz input
            raise DataFileError(p, "<file>", f"is not a readable .npz archive ({err})") from err
        raw_shape = values["channel_data"].shape if "channel_data" in values else ()
        n_frames = _minimal_frames(raw_shape)
    else:
        if not h5py.is_hdf5(p):
            raise DataFileError(p, "<file>", "is neither HDF5 nor .npz; write the minimal layout with drus.datasets.acquisition.write_acquisition")
        with h5py.File(p, "r") as f:
            n_frames, raw_shape = 1, ()
            for key in MINIMAL_LAYOUT:
                if key == "channel_data" and isinstance(f.get(key), h5py.Dataset) and f[key].ndim == 3:
                    raw_shape = f[key].shape
                    n_frames = _minimal_frames(raw_shape)
                    if isinstance(frame, (int, np.integer)) and 0 <= frame < n_frames:
                        values[key] = np.asarray(f[key][frame])[None]  # this frame only
                        continue
                if key in f:
                    values[key] = _h5_array(f, key, p, expected=MINIMAL_LAYOUT[key][1])
    for key, (required, meaning) in MINIMAL_LAYOUT.items():
        if required and key not in values:
            raise DataFileError(p, key, f"is missing; expected {meaning} (see drus.datasets.acquisition.MINIMAL_LAYOUT)")
    n_x = np.asarray(values["element_x"]).size
    if len(raw_shape) == 3 and raw_shape[2] != n_x:
        raise DataFileError(p, "channel_data", f"has shape {tuple(raw_shape)}; expected [n_samples, n_elements] of one transmit, "
                                               f"or [n_frames, n_samples, n_elements] with n_elements = {n_x} (element_x)")
    if not (isinstance(frame, (int, np.integer)) and 0 <= frame < n_frames):
        raise DataFileError(p, "channel_data", f"holds {n_frames} frame(s); frame {frame!r} asked for (0-based)")
    y = values["channel_data"]
    if y.ndim == 3:
        y = y[frame if y.shape[0] == n_frames else 0]
    if y.ndim != 2 or min(y.shape) < 2:
        raise DataFileError(p, "channel_data", f"has shape {y.shape}; expected [n_samples, n_elements] of one transmit")
    if np.iscomplexobj(y) or not np.issubdtype(y.dtype, np.number):
        raise DataFileError(p, "channel_data", f"has dtype {y.dtype}; expected real RF samples")
    _finite(y, p, "channel_data")
    x = np.asarray(values["element_x"], dtype=np.float64).reshape(-1)
    if x.size != y.shape[1]:
        hint = " (channel_data transposed? it must be [n_samples, n_elements])" if x.size == y.shape[0] else ""
        raise DataFileError(p, "element_x", f"has {x.size} positions; expected n_elements = {y.shape[1]}{hint}")
    _finite(x, p, "element_x")
    if np.any(np.diff(x) <= 0):
        raise DataFileError(p, "element_x", "is not strictly increasing; order the channels by position (m)")
    if np.max(np.abs(x)) > 1.0:
        raise DataFileError(p, "element_x", f"reaches {np.max(np.abs(x)):.4g}; expected metres (e.g. 0.019)")
    fs = _scalar_value(values["fs"], p, "fs", unit="Hz", positive=True)
    c = _scalar_value(values["c"], p, "c", unit="m/s", positive=True)
    t0_first = _scalar_value(values["t0"], p, "t0", unit="s", positive=False)
    angle = _scalar_value(values["angle"], p, "angle", unit="rad", positive=False)
    if abs(angle) >= math.pi / 2:
        raise DataFileError(p, "angle", f"is {angle}; expected radians in (−π/2, π/2) (degrees? multiply by π/180)")
    f0 = _scalar_value(values["f0"], p, "f0", unit="Hz", positive=True) if "f0" in values else None
    bw = _scalar_value(values["bandwidth"], p, "bandwidth", unit="fraction", positive=True) if "bandwidth" in values else None
    if f0 is not None and f0 >= fs / 2:
        raise DataFileError(p, "f0", f"is {f0:g} Hz, not below fs/2 = {fs / 2:g} Hz")
    if bw is not None and bw > 2:
        raise DataFileError(p, "bandwidth", f"is {bw:g}; expected a fraction (0.67 for 67 %)")
    t0 = t0_first - first_firing_time(x, angle=angle, sound_speed=c)
    return Acquisition(channel_data=y, element_x=x, sampling_frequency=fs, sound_speed=c, t0=t0, angle=angle,
                       center_frequency=f0, bandwidth=bw, spectrum_source="file" if f0 is not None else "",
                       source=str(p), transmit="1 of 1")


def write_acquisition(path: PathLike, acquisition) -> Path:
    """Write ``acquisition`` in the minimal layout (``.npz``, else HDF5), read back by :func:`read_acquisition`.

    ``acquisition``: one :class:`Acquisition`, or a sequence of them (frames of a cine loop with the same
    element positions, fs, c, t0, angle and pulse), written as ``channel_data [n_frames, n_samples, n_elements]``.
    """
    frames = [acquisition] if isinstance(acquisition, Acquisition) else list(acquisition)
    if not frames or not all(isinstance(a, Acquisition) for a in frames):
        raise TypeError(f"acquisition must be an Acquisition or a non-empty sequence of them, got {type(acquisition).__name__}")
    acq = frames[0]
    for i, other in enumerate(frames[1:], start=1):
        same = (other.channel_data.shape == acq.channel_data.shape and np.array_equal(other.element_x, acq.element_x)
                and (other.sampling_frequency, other.sound_speed, other.t0, other.angle, other.center_frequency,
                     other.bandwidth) == (acq.sampling_frequency, acq.sound_speed, acq.t0, acq.angle,
                                          acq.center_frequency, acq.bandwidth))
        if not same:
            raise ValueError(f"frame {i} differs from frame 0 in shape or acquisition parameters; the minimal layout "
                             "stores one set of parameters per file (write such frames to separate files)")
    channel_data = acq.channel_data if len(frames) == 1 else np.stack([a.channel_data for a in frames])
    data = {"channel_data": channel_data, "element_x": acq.element_x, "fs": acq.sampling_frequency,
            "c": acq.sound_speed, "t0": acq.t0_first_firing, "angle": acq.angle}
    if acq.center_frequency is not None:
        data["f0"] = acq.center_frequency
    if acq.bandwidth is not None:
        data["bandwidth"] = acq.bandwidth
    target = Path(path)
    if target.suffix.lower() == ".npz":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in data.items()})
    else:
        def write(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                for k, v in data.items():
                    f.create_dataset(k, data=np.asarray(v))
                f.attrs["layout"] = "drus minimal plane-wave acquisition (drus.datasets.acquisition.MINIMAL_LAYOUT)"
    from drus.outputs import atomic_write  # atomically, with the permissions of an ordinary new file

    return atomic_write(target, write)


def _fieldii_spectrum(path: Path) -> tuple[float, float] | None:
    """Pulse-echo f0 and bandwidth of a Field II file from ``excitation ∗ impulse response²``, or None."""
    with h5py.File(path, "r") as f:
        keys = ("sim_params/excitation", "sim_params/electroacoustic_impulse_response", "sim_params/f_sim_hz")
        if not all(k in f for k in keys):
            return None
        exc = np.ravel(f[keys[0]][()])
        ir = np.ravel(f[keys[1]][()])
        f_sim = float(np.ravel(f[keys[2]][()])[0])
    h = np.convolve(np.convolve(exc, ir), ir)
    pad = np.zeros(4 * h.size)
    pad[: h.size] = h
    return estimate_spectrum(pad[:, None], sampling_frequency=f_sim)


def _verasonics_t0(path: Path) -> float | None:
    """Optional ``param1.t0`` / ``param.t0`` (s, from the first firing) of a Verasonics-style ``.mat``."""
    with _MatFile(path) as mat:
        for key in ("param1", "param"):
            if key in mat.keys():
                try:
                    arr = mat.struct_field(key, "t0", expected="a scalar (s)")
                except DataFileError as err:
                    if "is missing" in str(err):
                        return None
                    raise
                return _scalar_value(arr, path, f"{key}.t0", unit="s", positive=False)
    return None


def _file_kind(p: Path) -> str:
    """``"minimal"``, ``"ustb"``, ``"fieldii"`` or ``"verasonics"`` from the content (DataFileError otherwise)."""
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return "minimal"
    if h5py.is_hdf5(p) and suffix != ".mat":
        with h5py.File(p, "r") as f:
            kind = ("minimal" if "channel_data" in f else "ustb" if USTB_DATASET in f
                    else "fieldii" if "data/rf_data" in f else None)
            top = sorted(f.keys())
        if kind is None:
            raise DataFileError(
                p, "channel_data", f"is missing, and so are '{USTB_DATASET}' (PICMUS/USTB) and 'data/rf_data' (Field II); "
                f"the file holds {top}. Write the minimal layout (drus.datasets.acquisition.MINIMAL_LAYOUT) or a UFF file")
        return kind
    with _MatFile(p) as mat:
        keys = mat.keys()
    if "RF1" not in keys:
        raise DataFileError(p, "RF1", f"is missing; expected Verasonics-style RF1 (n_samples, n_elements, n_tx) and "
                                      f"param1 (fs, c, pitch, TXangle); the file holds {keys}")
    return "verasonics"


def count_frames(path: PathLike) -> int:
    """Number of frames (acquisitions of the same geometry, e.g. a cine loop) in a channel-data file.

    Reads the shapes only (module docstring, "Frames"); ``read_acquisition(path, frame=k)`` reads frame ``k``.
    """
    from drus.datasets.io import fieldii_frame_count, ustb_frame_count, verasonics_frame_count

    p = _existing(path)
    kind = _file_kind(p)
    if kind == "ustb":
        return ustb_frame_count(p)
    if kind == "fieldii":
        return fieldii_frame_count(p)
    if kind == "verasonics":
        return verasonics_frame_count(p)
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                shape = z["channel_data"].shape if "channel_data" in z.files else ()
        except Exception as err:  # noqa: BLE001 - numpy raises several types for non-npz input
            raise DataFileError(p, "<file>", f"is not a readable .npz archive ({err})") from err
    else:
        with h5py.File(p, "r") as f:
            shape = f["channel_data"].shape
    return _minimal_frames(tuple(shape))


def read_acquisition(path: PathLike, *, angle: float | None = None, frame: int = 0) -> Acquisition:
    """Read one plane-wave transmit from any supported file (module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        PICMUS/USTB UFF HDF5, Verasonics-style ``.mat``, Field II HDF5, or the minimal layout.
    angle : float, optional
        Steering angle in rad of the transmit to use (within 0.01°); default: the one nearest 0°.
    frame : int
        Which frame of a multi-frame file (0-based; :func:`count_frames`). Only that frame is read
        where the format allows it.

    Returns
    -------
    Acquisition
        ``center_frequency``/``bandwidth`` are set when the file gives them (Field II: from its
        excitation and impulse response); :meth:`Acquisition.with_spectrum` estimates them otherwise.

    Raises
    ------
    FileNotFoundError
        No such file.
    DataFileError
        Not a supported layout, or a field missing / malformed (a one-line message naming file and field).
    """
    p = _existing(path)
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ValueError(f"frame must be an integer ≥ 0 (0-based), got {frame!r}")
    kind = _file_kind(p)
    if kind == "minimal":
        acq = read_minimal_acquisition(p, frame=frame)
    elif kind == "ustb":
        cd = read_ustb_channel_data(p, frame=frame)
        acq = Acquisition.from_channel_data(cd, _pick_transmit(cd, angle, p))
    elif kind == "fieldii":
        n = count_frames(p)
        if frame >= n:
            raise DataFileError(p, "data/rf_data", f"holds {n} frame(s); frame {frame} asked for (0-based)")
        cd = read_fieldii_dataset(p, frame=frame + 1)  # stored 1-based
        spectrum = _fieldii_spectrum(p)
        f0, bw = spectrum if spectrum is not None else (None, None)
        acq = Acquisition.from_channel_data(cd, _pick_transmit(cd, angle, p), center_frequency=f0, bandwidth=bw,
                                            spectrum_source="Field II excitation ∗ impulse response²")
    else:  # a MATLAB file (v5 or v7.3): Verasonics-style RF1 + param1
        cd = read_gammex(p, frame=frame)
        t0_first = _verasonics_t0(p)
        if t0_first:  # read_gammex assumes sample 0 at the first firing; shift by the file's t0
            cd = dataclasses.replace(cd, initial_time=cd.initial_time + t0_first)
        acq = Acquisition.from_channel_data(cd, _pick_transmit(cd, angle, p))
    if angle is not None and abs(acq.angle - angle) > math.radians(0.01):  # the minimal layout: one transmit
        raise ValueError(f"{p}: the file holds one transmit at {math.degrees(acq.angle):.2f}°, not "
                         f"{math.degrees(angle):.2f}°")
    log.info("read %s", acq.describe())
    return acq


# --------------------------------------------------------------------------------------------------
# The grid and the cost of decomposing BH on it
# --------------------------------------------------------------------------------------------------
def _round_to(n: float, multiple: int) -> int:
    return max(multiple, int(round(n / multiple)) * multiple)


def default_grid(
    acquisition: Acquisition,
    *,
    x_range: tuple[float, float] | None = None,
    z_range: tuple[float, float] | None = None,
    size: int | None = None,
    max_unknowns: int | None = DEFAULT_MAX_UNKNOWNS,
    multiple: int = SIZE_MULTIPLE,
) -> ImageGrid:
    """The image grid for ``acquisition``: the insonified field of view at about λ/2 pixels.

    - lateral extent (``x_range``, m): the aperture, first to last element;
    - depth (``z_range``, m): from 10 λ (clear of the transmit ring-down) to the deepest point whose
      echo is recorded, ``z = c·(t_end − t_pulse) / (1 + cos θ)``;
    - pixels: ``size`` along the longer side (the other side keeps the pixels about square), else
      λ/2 pixels; both sides multiples of ``multiple`` (the prior's UNet needs them).
    - cap: with ``size`` not given, when λ/2 pixels would give more than ``max_unknowns`` unknowns,
      the pixels grow until they fit (logged: pass a smaller field of view for finer pixels).

    Returns
    -------
    ImageGrid
        ``n_z × n_x``, the unknowns (and ``B y``) of DRUS for this acquisition.
    """
    acq = acquisition.with_spectrum()
    lam = acq.wavelength
    z_range_given = z_range is not None
    if x_range is None:
        x_range = (float(acq.element_x[0]), float(acq.element_x[-1]))
    if z_range is None:
        t_end = acq.t0 + (acq.n_samples - 1) / acq.sampling_frequency - acq.pulse().half_width / acq.sampling_frequency
        z_max = acq.sound_speed * t_end / (1 + math.cos(acq.angle))
        z_range = (10 * lam, z_max)
    (x0, x1), (z0, z1) = (float(v) for v in x_range), (float(v) for v in z_range)
    if not (math.isfinite(x0) and math.isfinite(x1) and x1 > x0):
        raise ValueError(f"x range must be (min, max) with min < max, got ({x0 * 1e3:g}, {x1 * 1e3:g}) mm")
    if not (math.isfinite(z0) and math.isfinite(z1) and 0 < z0 < z1):
        raise ValueError(f"z range must be (min, max) with 0 < min < max (in front of the probe), got "
                         f"({z0 * 1e3:g}, {z1 * 1e3:g}) mm" + ("" if z_range_given else
                                                             "; the record is too short for the default depth range"))
    width, depth = x1 - x0, z1 - z0
    if size is not None:
        if int(size) != size or size < multiple:
            raise ValueError(f"size must be an integer ≥ {multiple} (pixels along the longer side), got {size!r}")
        pixel = max(width, depth) / (int(size) - 1)
    else:
        pixel = lam / 2
        n = (width / pixel + 1) * (depth / pixel + 1)
        if max_unknowns is not None and n > max_unknowns:
            pixel *= math.sqrt(n / max_unknowns) * 1.02
            log.warning("λ/2 pixels over %.1f × %.1f mm would be %d unknowns, more than %d: pixels of %.3f mm (%.2f λ) "
                        "instead; pass a smaller --x-range/--z-range for finer pixels", width * 1e3, depth * 1e3, int(n),
                        max_unknowns, pixel * 1e3, pixel / lam)
    n_x = _round_to(width / pixel + 1, multiple)
    n_z = _round_to(depth / pixel + 1, multiple)
    if size is None and max_unknowns is not None:
        while n_x * n_z > max_unknowns and max(n_x, n_z) > multiple:
            if n_z >= n_x:
                n_z -= multiple
            else:
                n_x -= multiple
    return ImageGrid.from_extent(x_min=x0, x_max=x1, z_min=z0, z_max=z1, n_x=n_x, n_z=n_z)


@dataclass(frozen=True)
class DecompositionCost:
    """Predicted cost of decomposing ``BH`` (:func:`decomposition_cost`).

    Attributes
    ----------
    seconds : float
        Wall time on the reference machine (2 CPU cores, docs/decomposition.md).
    peak_bytes : float
        Upper estimate of the peak resident memory.
    matrix_bytes : float
        The part of it taken by the sparse ``H`` and ``B`` (and the process): what building them alone needs.
    split : str
        ``"flip"`` (two half blocks) or ``"none"`` (one block).
    block_size : int
        Unknowns per block.
    """

    seconds: float
    peak_bytes: float
    split: str
    block_size: int
    matrix_bytes: float = 0.0

    def describe(self) -> str:
        blocks = "2 flip blocks" if self.split == "flip" else "1 block (no flip symmetry)"
        return (f"{blocks} of {self.block_size} unknowns: ≈ {self.seconds / 60:.1f} min on 2 CPU cores, "
                f"peak memory ≈ {self.peak_bytes / 2**30:.1f} GiB")


# Reference measurements (docs/decomposition.md, 128², 2 threads): per 8 192² block, eigh 59 s (float64) /
# 32 s (float32), Gram accumulation from 8 192 rows 22 s / 19 s; peak memory ≈ 3 dense n_b² blocks
# of the compute dtype + 20 bytes per non-zero of H and B (float32 and float64 copies) + 0.8 GiB.
_EIGH_SECONDS_8192 = {"float64": 59.0, "float32": 32.0}
_GRAM_SECONDS_8192 = {"float64": 22.0, "float32": 19.0}
_BASE_BYTES = 0.8 * 2**30


def decomposition_cost(
    beamformer_or_sizes,
    *,
    split: str,
    compute_dtype: str = "float64",
) -> DecompositionCost:
    """Predict the time and peak memory of :func:`drus.physics.decompose.decompose_bh` before it starts.

    Parameters
    ----------
    beamformer_or_sizes : MatchedFilterBeamformer or tuple
        The beamformer (nothing is built), or ``(n_unknown, n_measured, n_elements, n_taps)``.
    split : {"flip", "none"}
        Two flip blocks of ``N/2`` unknowns, or one of ``N``.
    compute_dtype : {"float64", "float32"}

    Notes
    -----
    Time scales from the 128² measurements of docs/decomposition.md: eigendecomposition as the cube of
    the block size, Gram accumulation as rows × block size². Memory: three dense blocks (Gram matrix,
    ``syevd`` workspace and eigenvectors) plus the sparse ``H``/``B`` and their float64 copies.
    Measured against it (docs/decomposition.md): 128² float64 163 s and 2.6 GiB (predicted 2.7 min, 3.5 GiB);
    256² float32 79 min and 16.6 GiB (predicted 109 min, 17.7 GiB).
    """
    if split not in ("flip", "none"):
        raise ValueError(f"split must be 'flip' or 'none', got {split!r}")
    if compute_dtype not in _EIGH_SECONDS_8192:
        raise ValueError(f"compute_dtype must be 'float64' or 'float32', got {compute_dtype!r}")
    if isinstance(beamformer_or_sizes, tuple):
        n_u, n_m, n_el, n_taps = (int(v) for v in beamformer_or_sizes)
    else:
        bf = beamformer_or_sizes
        n_u, n_m = bf.unknown_grid.size, bf.grid.size
        n_el = bf.model.probe.n_elements
        n_taps = bf.model.pulse.polyphase()[0].size
    n_blocks = 2 if split == "flip" else 1
    n_b = n_u / n_blocks
    rows = n_m / n_blocks
    r = n_b / 8192
    seconds = n_blocks * (_EIGH_SECONDS_8192[compute_dtype] * r**3 + _GRAM_SECONDS_8192[compute_dtype] * r**2 * rows / 8192)
    itemsize = 8 if compute_dtype == "float64" else 4
    nnz = n_el * n_taps * (n_u + 0.5 * n_m)
    peak = _BASE_BYTES + 3 * n_b**2 * itemsize + 20 * nnz
    return DecompositionCost(seconds=float(seconds), peak_bytes=float(peak), split=split, block_size=int(n_b),
                             matrix_bytes=float(_BASE_BYTES + 20 * nnz))


def likely_split(beamformer) -> str:
    """``"flip"`` when the geometry looks flip-symmetric (0° wave, grids and probe symmetric about x = 0),
    else ``"none"``, without building ``H`` or ``B`` (for :func:`decomposition_cost` before any work;
    :func:`drus.physics.decompose.resolve_split` then confirms it numerically)."""
    m = beamformer.model

    def symmetric(x) -> bool:
        x = np.asarray(x, dtype=np.float64)
        return bool(np.allclose(x, -x[::-1], rtol=0.0, atol=1e-9 * max(abs(x[0]), abs(x[-1]))))

    ok = (m.wave.angle == 0 and symmetric(m.probe.element_x) and symmetric(beamformer.grid.x_axis)
          and symmetric(beamformer.unknown_grid.x_axis))
    return "flip" if ok else "none"


def check_memory(cost: DecompositionCost, *, available: float | None = None, matrices_only: bool = False) -> None:
    """Raise ValueError with advice when the predicted peak exceeds the memory available now.

    ``matrices_only``: check only what building ``H`` and ``B`` needs (no decomposition).
    """
    if available is None:
        from drus.physics.decompose import _available_memory

        available = _available_memory()
    if matrices_only and cost.matrix_bytes > available:
        raise ValueError(
            f"H and B on this grid would need ≈ {cost.matrix_bytes / 2**30:.1f} GiB but {available / 2**30:.1f} GiB "
            "are available; use a coarser grid (--size) or a smaller field of view (--x-range/--z-range)")
    if not matrices_only and cost.peak_bytes > available:
        raise ValueError(
            f"the decomposition of BH would need ≈ {cost.peak_bytes / 2**30:.1f} GiB but {available / 2**30:.1f} GiB "
            f"are available ({cost.describe()}); use a coarser grid (--size), a smaller field of view "
            "(--x-range/--z-range; a grid symmetric about x = 0 with the 0° wave halves the blocks), "
            "--compute-dtype float32, or a machine with more memory or a GPU (--device cuda)")


# --------------------------------------------------------------------------------------------------
# The reconstruction path of ``drus reconstruct FILE`` (also used by ``drus demo``)
# --------------------------------------------------------------------------------------------------
def _say(report, message: str) -> None:
    (report or log.info)(message)


def prepare_acquisition(
    source,
    *,
    angle: float | None = None,
    x_range: tuple[float, float] | None = None,
    z_range: tuple[float, float] | None = None,
    size: int | None = None,
    report=None,
):
    """``(acquisition, beamformer)`` as ``drus reconstruct FILE`` builds them (``H`` and ``B`` not built yet).

    Parameters
    ----------
    source : path or Acquisition
        A channel-data file (:func:`read_acquisition`) or an :class:`Acquisition` already read.
    angle : float, optional
        Steering angle in rad of the transmit to use (a file; default the one nearest 0°).
    x_range, z_range : (float, float), optional
        Field of view in m (default: :func:`default_grid`'s).
    size : int, optional
        Pixels along the longer side of the grid (:func:`default_grid`).
    report : callable, optional
        Receives one line per step (pulse, grid); default: the module logger.
    """
    acq = source if isinstance(source, Acquisition) else read_acquisition(source, angle=angle)
    acq = acq.with_spectrum()
    _say(report, acq.describe())
    if acq.spectrum_source == "channel-data spectrum":
        _say(report, "  pulse: centre frequency and bandwidth estimated from the channel data's spectrum (not in the file)")
    grid = default_grid(acq, x_range=x_range, z_range=z_range, size=size)
    _say(report, f"grid: {grid} (pixels {grid.dx * 1e3:.3f} × {grid.dz * 1e3:.3f} mm, λ = {acq.wavelength * 1e3:.3f} mm)")
    return acq, acq.beamformer(grid)


def plan_decomposition(beamformer, *, compute_dtype: str = "float64", threshold: float = 1e-3, cache_dir=None,
                       cache: bool = True, report=None) -> str:
    """Report the predicted time and peak memory of decomposing ``BH`` and refuse what cannot fit
    (:func:`check_memory`), before ``H`` and ``B`` are built; then build them, settle the split
    (:func:`drus.physics.decompose.resolve_split`) and say whether the decomposition is cached. Returns the split."""
    from drus.physics.decomposition_cache import _paths, cache_key, default_cache_dir
    from drus.physics.decompose import FlipSplit, NoSplit, resolve_split

    bf = beamformer
    cost = decomposition_cost(bf, split=likely_split(bf), compute_dtype=compute_dtype)
    _say(report, f"decomposition of BH: {cost.describe()} (estimated from docs/decomposition.md)")
    check_memory(cost)
    split = resolve_split(bf, "auto")
    if split != cost.split:
        _say(report, f"  the geometry is not flip-symmetric after all: "
                     f"{decomposition_cost(bf, split=split, compute_dtype=compute_dtype).describe()}")
    if cache:
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        key = cache_key(bf, threshold=threshold, compute_dtype=compute_dtype, split=split)
        parities = (NoSplit if split == "none" else FlipSplit).parities
        if all(f.exists() for p in parities for f in _paths(folder, key, p)):
            _say(report, f"  cached: {folder} (key {key[:12]}…)")
    return split


@dataclass(eq=False)
class AcquisitionReconstruction:
    """What :func:`reconstruct_acquisition` returns (images ``[n_z, n_x]`` on ``beamformer.grid``).

    Attributes
    ----------
    acquisition, beamformer : the inputs.
    by : ``B y``, the observation DRUS reconstructs. das : single-plane-wave DAS (RF) on the same grid.
    operator : the decomposed ``BH`` (:class:`drus.physics.decompose.DecomposedBH`).
    sigma0, sigma0_source : the noise level DDRM was given and where it came from.
    reconstruction : :class:`drus.sampling.reconstruct.Reconstruction` (samples, DRUSmean, DRUSvar).
    var_pooled : pooled DRUSvar over one DAS resolution cell (:func:`drus.sampling.estimators.pool_window`),
        ``None`` with one sample.
    pool_window : its side in pixels.
    attrs : provenance for the output file (angle, pulse, σ0 and its source, split, decomposition key…).
    """

    acquisition: Acquisition
    beamformer: object
    by: np.ndarray
    das: np.ndarray
    operator: object
    sigma0: float
    sigma0_source: str
    reconstruction: object
    var_pooled: np.ndarray | None
    pool_window: int
    attrs: dict

    @property
    def grid(self) -> ImageGrid:
        return self.beamformer.grid


def reconstruct_acquisition(
    acquisition: Acquisition,
    beamformer,
    *,
    model,
    sampler=None,
    sigma0: float | None = None,
    threshold: float = 1e-3,
    compute_dtype: str = "float64",
    cache_dir=None,
    cache: bool = True,
    device="cpu",
    split: str | None = None,
    operator=None,
    report=None,
    progress: bool = True,
) -> AcquisitionReconstruction:
    """DRUS on one plane-wave acquisition: the path of ``drus reconstruct FILE --method drus-*``.

    ``B y`` and DAS on ``beamformer.grid`` → the decomposed ``BH`` (:func:`drus.physics.decompose.decompose_bh`,
    cached) → σ0 from the data (:func:`drus.sampling.noise.estimate_sigma0`) unless given, with the channel-data
    cross-check (:func:`drus.sampling.noise.channel_noise`, reported and saved, not used) → ``n_samples`` DDRM
    samples (``sampler``, a :class:`drus.sampling.config.SamplerConfig`; default :meth:`SamplerConfig.drus`:
    the sampler's σ0 regularised by :data:`drus.defaults.PRIOR_FRACTION`) → DRUSmean, DRUSvar and the
    pooled DRUSvar.

    ``split``: the split :func:`plan_decomposition` settled (run it first to get the cost checks);
    ``None`` plans here. ``operator``: the decomposed ``BH`` of this beamformer when it is already at hand
    (the frames of a batch share one, :mod:`drus.pipelines.batch`); then nothing is planned or decomposed.
    ``report`` receives the lines ``drus reconstruct`` prints.
    """
    from drus.physics.beamform import das
    from drus.sampling.config import SamplerConfig
    from drus.physics.decompose import decompose_bh
    from drus.sampling.estimators import pool_window
    from drus.sampling.noise import channel_noise, channel_noise_in_by, estimate_sigma0
    from drus.sampling.reconstruct import reconstruct

    acq, bf = acquisition.with_spectrum(), beamformer
    sampler = SamplerConfig.drus() if sampler is None else sampler
    if operator is not None:
        split = operator.metadata.get("split", split or "")
    elif split is None:
        split = plan_decomposition(bf, compute_dtype=compute_dtype, threshold=threshold, cache_dir=cache_dir,
                                   cache=cache, report=report)
    by = bf.beamform(acq.channel_data)
    das_image = das(acq.channel_data, probe=bf.model.probe, waves=bf.model.wave, grid=bf.grid)
    attrs = {"angle_deg": float(np.degrees(acq.angle)), "center_frequency": float(acq.center_frequency),
             "bandwidth": float(acq.bandwidth), "pulse_source": acq.spectrum_source or "file", "transmit": acq.transmit}
    op = operator if operator is not None else decompose_bh(
        bf, threshold=threshold, compute_dtype=compute_dtype, cache_dir=cache_dir, cache=cache, device=device,
        split=split, progress=progress)
    if sigma0 is None:
        sigma0, source = estimate_sigma0(op, by)
        _say(report, f"σ0 = {sigma0:.4g} (estimated from the data: {source})")
    else:
        source = "given (--sigma0)"
        _say(report, f"σ0 = {sigma0:g} (given)")
    try:  # cross-check from the channel data: white noise above the pulse band, seen through B
        sigma_n = channel_noise(acq.channel_data, sampling_frequency=acq.sampling_frequency,
                                center_frequency=acq.center_frequency, bandwidth=acq.bandwidth)
        attrs.update(channel_noise_std=sigma_n, by_noise_rms_from_channel=channel_noise_in_by(bf, sigma_n))
        _say(report, f"  cross-check: channel noise above the pulse band σn = {sigma_n:.4g}, its RMS in By "
                     f"{attrs['by_noise_rms_from_channel']:.4g} (coloured by B; not used)")
    except ValueError as exc:
        _say(report, f"  cross-check from the channel data not available: {exc}")
    rec = reconstruct(op, by, sigma0=float(sigma0), model=model, sampler=sampler, device=device, progress=progress)
    window = pool_window(bf.grid)
    pooled = rec.var_pooled(window) if sampler.n_samples >= 2 else None
    attrs.update(**sampler.to_attrs(), sigma0_sampler=float(rec.sigma0_sampler), sigma0=float(sigma0),
                 sigma0_source=source, split=split, decomposition_key=op.metadata["key"], pool_window=int(window))
    return AcquisitionReconstruction(acquisition=acq, beamformer=bf, by=by, das=das_image, operator=op,
                                     sigma0=float(sigma0), sigma0_source=source, reconstruction=rec,
                                     var_pooled=pooled, pool_window=int(window), attrs=attrs)
