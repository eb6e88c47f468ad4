"""Geometry of a plane-wave acquisition: linear probe, image grid, transmit event.

Conventions (used throughout drus)
----------------------------------
- SI units inside the code: metres, seconds, hertz. Millimetres appear only in labels.
- Lateral axis ``x`` (element direction), depth axis ``z`` (positive into the medium),
  origin at the centre of the probe face.
- Images are arrays of shape ``[n_z, n_x]`` (depth down, lateral right), C order. A flattened
  image is ``image.reshape(-1)``, i.e. index ``iz * n_x + ix``.
- Channel data are arrays of shape ``[n_samples, n_elements]``.

Dimension names: ``n_samples`` (fast time), ``n_elements`` (receive channels), ``n_z``, ``n_x``
(image), ``n_tx`` (transmit events).

Regions of the imaging plane (:class:`Disk`, :class:`Box`, in m) are geometry too: the phantoms draw
their media with them (:mod:`drus.physics.phantoms`) and the metrics score their ROIs
(:mod:`drus.evaluation.metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "array_pitch",
    "LinearProbe",
    "ImageGrid",
    "PlaneWave",
    "Disk",
    "Box",
    "picmus_probe",
    "picmus_plane_wave",
    "paper_grid",
    "picmus",
]


def array_pitch(element_x) -> float:
    """Pitch of a linear array in m: ``(x_last − x_first) / (n − 1)``, the mean element spacing.

    The one rule for every reader and check (a median of the spacings disagreed with it on arrays
    whose positions are rounded in the file).
    """
    x = np.asarray(element_x, dtype=np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f"a linear array needs at least 2 element positions, got {x.size}")
    return float((x[-1] - x[0]) / (x.size - 1))


def _positive(name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class LinearProbe:
    """A linear array of ``n_elements`` equally spaced elements centred on ``x = 0``.

    Parameters
    ----------
    n_elements : int
        Number of elements.
    pitch : float
        Element spacing in m.
    center_frequency : float
        Transducer centre frequency ``f0`` in Hz.
    bandwidth : float
        Fractional -6 dB bandwidth (e.g. ``0.67`` for 67 %).
    name : str
        Label, e.g. ``"L11-4v"``.
    positions : tuple of float, optional
        Explicit lateral element positions ``[n_elements]`` in m, strictly increasing (a linear
        array read from a file: any spacing, any offset). ``None`` (default): equally spaced at
        ``pitch`` and centred on ``x = 0``. Build it with :meth:`from_positions`.
    """

    n_elements: int
    pitch: float
    center_frequency: float
    bandwidth: float
    name: str = "linear"
    positions: tuple | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if int(self.n_elements) != self.n_elements or self.n_elements < 1:
            raise ValueError(f"n_elements must be a positive integer, got {self.n_elements!r}")
        _positive("pitch", self.pitch)
        _positive("center_frequency", self.center_frequency)
        _positive("bandwidth", self.bandwidth)
        if self.positions is not None:
            x = np.asarray(self.positions, dtype=np.float64).reshape(-1)
            if x.size != self.n_elements or not np.all(np.isfinite(x)) or np.any(np.diff(x) <= 0):
                raise ValueError(
                    f"positions must be {self.n_elements} finite, strictly increasing element x positions (m), "
                    f"got {x.size} values"
                )
            object.__setattr__(self, "positions", tuple(float(v) for v in x))

    @classmethod
    def from_positions(
        cls, element_x, *, center_frequency: float, bandwidth: float, name: str = "linear"
    ) -> "LinearProbe":
        """A linear array with the given lateral element positions ``[n_elements]`` (m, increasing).

        ``pitch`` is their mean spacing. Equally spaced positions centred on 0 (to 1e-9 of the
        pitch) give exactly the probe built from the pitch, so that such a probe and its cache keys
        do not depend on how it was built.
        """
        x = np.asarray(element_x, dtype=np.float64).reshape(-1)
        if x.size < 2:
            raise ValueError(f"a linear array needs at least 2 element positions, got {x.size}")
        if not np.all(np.isfinite(x)) or np.any(np.diff(x) <= 0):
            raise ValueError("element x positions must be finite and strictly increasing (m)")
        pitch = array_pitch(x)
        regular = (np.arange(x.size) - (x.size - 1) / 2) * pitch
        if np.max(np.abs(x - regular)) <= 1e-9 * pitch:
            return cls(x.size, pitch, center_frequency, bandwidth, name=name)
        return cls(x.size, pitch, center_frequency, bandwidth, name=name, positions=tuple(x))

    @property
    def element_x(self) -> np.ndarray:
        """Lateral element positions ``[n_elements]`` in m (symmetric about 0 unless ``positions`` is given)."""
        if self.positions is not None:
            return np.asarray(self.positions)
        return (np.arange(self.n_elements) - (self.n_elements - 1) / 2) * self.pitch

    @property
    def aperture(self) -> float:
        """Distance between the first and last element centres, in m."""
        if self.positions is None:
            return (self.n_elements - 1) * self.pitch
        return self.positions[-1] - self.positions[0]


@dataclass(frozen=True)
class ImageGrid:
    """A rectilinear image grid; images on it are ``[n_z, n_x]``.

    Build it with :meth:`from_extent` (the usual way) or from explicit axes.

    Parameters
    ----------
    x : tuple of float
        Lateral pixel positions in m, strictly increasing, ``n_x`` values.
    z : tuple of float
        Depth pixel positions in m, strictly increasing and positive, ``n_z`` values.
    """

    x: tuple = field(repr=False)
    z: tuple = field(repr=False)

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float64)
        z = np.asarray(self.z, dtype=np.float64)
        for name, a in (("x", x), ("z", z)):
            if a.ndim != 1 or a.size < 2:
                raise ValueError(f"grid axis {name} must be 1-D with at least 2 points, got shape {a.shape}")
            if not np.all(np.isfinite(a)) or not np.all(np.diff(a) > 0):
                raise ValueError(f"grid axis {name} must be finite and strictly increasing")
        if z[0] <= 0:
            raise ValueError(f"grid depths must be positive (in front of the probe), got z[0] = {z[0]!r} m")
        object.__setattr__(self, "x", tuple(float(v) for v in x))
        object.__setattr__(self, "z", tuple(float(v) for v in z))

    @classmethod
    def from_extent(
        cls, *, x_min: float, x_max: float, z_min: float, z_max: float, n_x: int, n_z: int
    ) -> "ImageGrid":
        """Grid with ``n_x`` points on ``[x_min, x_max]`` and ``n_z`` on ``[z_min, z_max]`` (m), ends included."""
        return cls(x=tuple(np.linspace(x_min, x_max, n_x)), z=tuple(np.linspace(z_min, z_max, n_z)))

    def __repr__(self) -> str:
        return (
            f"ImageGrid(n_z={self.n_z}, n_x={self.n_x}, x=[{self.x[0]*1e3:.2f}, {self.x[-1]*1e3:.2f}] mm, "
            f"z=[{self.z[0]*1e3:.2f}, {self.z[-1]*1e3:.2f}] mm)"
        )

    @property
    def x_axis(self) -> np.ndarray:
        """Lateral positions ``[n_x]`` in m."""
        return np.asarray(self.x)

    @property
    def z_axis(self) -> np.ndarray:
        """Depths ``[n_z]`` in m."""
        return np.asarray(self.z)

    @property
    def n_x(self) -> int:
        return len(self.x)

    @property
    def n_z(self) -> int:
        return len(self.z)

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(n_z, n_x)``."""
        return (self.n_z, self.n_x)

    @property
    def size(self) -> int:
        return self.n_z * self.n_x

    @property
    def dx(self) -> float:
        """Mean lateral pixel spacing in m."""
        return (self.x[-1] - self.x[0]) / (self.n_x - 1)

    @property
    def dz(self) -> float:
        """Mean axial pixel spacing in m."""
        return (self.z[-1] - self.z[0]) / (self.n_z - 1)

    @property
    def extent_mm(self) -> list[float]:
        """``[x_min, x_max, z_max, z_min]`` in mm, for ``matplotlib.imshow(extent=...)``."""
        return [self.x[0] * 1e3, self.x[-1] * 1e3, self.z[-1] * 1e3, self.z[0] * 1e3]

    def meshgrid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(X, Z)``, each ``[n_z, n_x]`` in m."""
        return np.meshgrid(self.x_axis, self.z_axis)

    def resized(self, n_z: int, n_x: int) -> "ImageGrid":
        """Same extent, other number of pixels."""
        return ImageGrid.from_extent(
            x_min=self.x[0], x_max=self.x[-1], z_min=self.z[0], z_max=self.z[-1], n_x=n_x, n_z=n_z
        )


@dataclass(frozen=True)
class PlaneWave:
    """One plane-wave transmit event and its receive sampling.

    Parameters
    ----------
    sampling_frequency : float
        ``fs`` in Hz.
    sound_speed : float
        ``c`` in m/s.
    angle : float
        Steering angle in rad (0 = the paper's case; positive steers towards +x).
    t0 : float
        Time of the first recorded sample in s, relative to the moment the wavefront passes the
        origin. Sample ``k`` is at ``t0 + k / fs``.
    n_samples : int or None
        Number of recorded samples; ``None`` = just enough to cover the image grid.
    """

    sampling_frequency: float
    sound_speed: float
    angle: float = 0.0
    t0: float = 0.0
    n_samples: int | None = None

    def __post_init__(self) -> None:
        _positive("sampling_frequency", self.sampling_frequency)
        _positive("sound_speed", self.sound_speed)
        if not np.isfinite(self.angle) or abs(self.angle) >= np.pi / 2:
            raise ValueError(f"angle must be in (-pi/2, pi/2) rad, got {self.angle!r}")
        if self.n_samples is not None and (int(self.n_samples) != self.n_samples or self.n_samples < 1):
            raise ValueError(f"n_samples must be a positive integer or None, got {self.n_samples!r}")

    @property
    def dt(self) -> float:
        return 1.0 / self.sampling_frequency

    def with_angle(self, angle: float) -> "PlaneWave":
        return PlaneWave(self.sampling_frequency, self.sound_speed, angle, self.t0, self.n_samples)


# --- PICMUS / paper presets (paper Sect. IV; docs/method.md §3) -----------------------------------
PICMUS_N_ELEMENTS = 128
PICMUS_PITCH = 0.300e-3  # m
PICMUS_F0 = 5.208e6  # Hz
PICMUS_BANDWIDTH = 0.67
PICMUS_FS = 20.832e6  # Hz
PICMUS_C = 1540.0  # m/s


# --- regions of the imaging plane: the media of the phantoms and the ROIs of the metrics -------------
@dataclass(frozen=True)
class Disk:
    """A disk in the imaging plane: an anechoic occlusion, a cyst ROI or a small target.

    Parameters
    ----------
    x, z : float
        Centre in m (lateral, depth).
    radius : float
        Radius in m, ``> 0``.
    """

    x: float
    z: float
    radius: float

    def __post_init__(self) -> None:
        for name in ("x", "z", "radius"):
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"Disk.{name} must be finite, got {v!r}")
            object.__setattr__(self, name, v)
        if self.radius <= 0:
            raise ValueError(f"Disk.radius must be > 0 m, got {self.radius!r}")


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle ``[x_min, x_max] × [z_min, z_max]`` in m (e.g. a speckle ROI)."""

    x_min: float
    x_max: float
    z_min: float
    z_max: float

    def __post_init__(self) -> None:
        for name in ("x_min", "x_max", "z_min", "z_max"):
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"Box.{name} must be finite, got {v!r}")
            object.__setattr__(self, name, v)
        if not (self.x_min < self.x_max and self.z_min < self.z_max):
            raise ValueError(f"Box needs x_min < x_max and z_min < z_max, got {self!r}")


def picmus_probe() -> LinearProbe:
    """The PICMUS L11-4v probe: 128 elements, pitch 0.300 mm, f0 5.208 MHz, 67 % bandwidth."""
    return LinearProbe(PICMUS_N_ELEMENTS, PICMUS_PITCH, PICMUS_F0, PICMUS_BANDWIDTH, name="L11-4v")


def picmus_plane_wave(angle: float = 0.0) -> PlaneWave:
    """PICMUS sampling: fs 20.832 MHz, c 1540 m/s, the given steering angle (rad)."""
    return PlaneWave(sampling_frequency=PICMUS_FS, sound_speed=PICMUS_C, angle=angle)


def paper_grid(n: int = 256, n_x: int | None = None) -> ImageGrid:
    """The paper's field of view, x -18…18 mm, z 10…46 mm, ``n × n`` pixels (256 × 256 by default)."""
    return ImageGrid.from_extent(
        x_min=-18e-3, x_max=18e-3, z_min=10e-3, z_max=46e-3, n_x=n if n_x is None else n_x, n_z=n
    )


def picmus(n: int = 256) -> tuple[LinearProbe, PlaneWave, ImageGrid]:
    """``(probe, plane_wave, grid)`` of the paper's PICMUS setup at ``n × n`` pixels."""
    return picmus_probe(), picmus_plane_wave(), paper_grid(n)
