"""Readers and writers: plane-wave channel data, DRUS/DENO observations, reference images.

Every reader converts the file's layout to the drus conventions *once*, here at the boundary
(docs/method.md §8):

- channel data are ``[n_tx, n_samples, n_elements]`` (one ``[n_samples, n_elements]`` frame per
  transmit event), ``float32`` for RF and ``complex64`` for IQ;
- images are ``[n_z, n_x]`` (depth down, lateral right), C order;
- SI units: m, s, Hz, rad.

Each reader checks what it reads and raises :class:`DataFileError` (a :class:`ValueError`) naming the
file, the field and what was expected; a missing file raises :class:`FileNotFoundError` with its path.

Supported layouts
-----------------
========================================  ======================================================
:func:`read_ustb_channel_data`            PICMUS / USTB HDF5 ``US/US_DATASET0000`` channel data
                                          (and :func:`write_ustb_channel_data` to write it)
:func:`read_drus_by`                      DRUS ``By`` ``.mat`` (column-major flattened image)
:func:`read_deno_by`                      DENO ``By`` ``.mat`` (row-major flattened image)
:func:`read_das_reference`                PICMUS DAS reference images (USTB HDF5, frames ``[x, z]``)
:func:`read_mat_image`                    a 2-D image variable of a ``.mat`` file
:func:`read_gammex`                       Verasonics ``RFdata1.mat`` (``RF1`` uint8, ``param1``)
:func:`read_fieldii_dataset`              Field II ``rf_dataset.hdf5`` (pybf layout)
:func:`save_images_hdf5`                  write drus reconstructions (samples, mean, var, grid)
:func:`load_images_hdf5`                  read them back
========================================  ======================================================

MATLAB files are read in both formats: v7.3 (HDF5, through :mod:`h5py`) and v5 and older
(:func:`scipy.io.loadmat`). h5py sees a MATLAB array with its axes reversed (MATLAB stores column
major); the readers first restore MATLAB's own shape, then convert to drus' layout.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np
import scipy.io

from drus.datasets.channel_data import ChannelData, _finite_scalar
from drus.physics.geometry import ImageGrid

__all__ = [
    "DataFileError",
    "DasReference",
    "SavedImages",
    "read_channel_data",
    "read_ustb_channel_data",
    "write_ustb_channel_data",
    "read_drus_by",
    "read_deno_by",
    "read_das_reference",
    "read_mat_image",
    "read_gammex",
    "read_fieldii_dataset",
    "ustb_frame_count",
    "verasonics_frame_count",
    "fieldii_frame_count",
    "save_images_hdf5",
    "load_images_hdf5",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Default dataset group of the PICMUS / USTB HDF5 format.
USTB_DATASET = "US/US_DATASET0000"

#: Speed of sound assumed where a file does not store it (Field II's default), m/s.
DEFAULT_SOUND_SPEED = 1540.0


class DataFileError(ValueError):
    """A data file is readable but a field is missing or malformed.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    field : str
        The field (HDF5 path or MATLAB variable, e.g. ``"US/US_DATASET0000/angles"``).
    problem : str
        What is wrong and what was expected.

    Attributes
    ----------
    path : str
    field : str
    """

    def __init__(self, path: PathLike, field: str, problem: str) -> None:
        self.path = str(path)
        self.field = field
        super().__init__(f"{self.path}: field '{field}' {problem}")


# --------------------------------------------------------------------------------------------------
# File helpers
# --------------------------------------------------------------------------------------------------
def _existing(path: PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(p))
    return p


def _open_hdf5(path: Path) -> h5py.File:
    if not h5py.is_hdf5(path):
        raise DataFileError(path, "<file>", "is not an HDF5 file (expected HDF5 / MATLAB v7.3)")
    return h5py.File(path, "r")


def _h5_array(f: h5py.File | h5py.Group, name: str, path: Path, *, expected: str) -> np.ndarray:
    obj = f.get(name)
    full = f"{f.name.rstrip('/')}/{name}".lstrip("/")
    if obj is None:
        raise DataFileError(path, full, f"is missing; expected {expected}")
    if not isinstance(obj, h5py.Dataset):
        raise DataFileError(path, full, f"is a group, not a dataset; expected {expected}")
    arr = np.asarray(obj[()])
    if arr.dtype.names and {"real", "imag"} <= set(arr.dtype.names):  # MATLAB v7.3 complex
        arr = arr["real"] + 1j * arr["imag"]
    if not np.issubdtype(arr.dtype, np.number):
        raise DataFileError(path, full, f"has non-numeric dtype {arr.dtype}; expected {expected}")
    return arr


def _scalar(arr: np.ndarray, path: Path, name: str, *, unit: str, positive: bool = True) -> float:
    if arr.size != 1:
        raise DataFileError(path, name, f"has shape {arr.shape}; expected one value ({unit})")
    value = float(np.real(arr.reshape(())))
    if not np.isfinite(value) or (positive and value <= 0) or (not positive and value < 0):
        sign = "> 0" if positive else ">= 0"
        raise DataFileError(path, name, f"is {value}; expected a finite value {sign} ({unit})")
    return value


def _finite(arr: np.ndarray, path: Path, name: str) -> np.ndarray:
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataFileError(path, name, f"contains {bad} NaN or inf value(s); expected finite numbers")
    return arr


def _atomic_write_hdf5(path: PathLike, write) -> Path:
    """Run ``write(h5py.File)`` on a temporary file beside ``path``, then move it into place."""
    from drus.outputs import atomic_write

    def write_file(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            write(f)

    return atomic_write(path, write_file)


class _MatFile:
    """Variables of a MATLAB ``.mat`` file, v7.3 (HDF5) or v5, in MATLAB's own shape."""

    def __init__(self, path: PathLike) -> None:
        self.path = _existing(path)
        self._h5: h5py.File | None = None
        self._v5: dict[str, Any] | None = None
        if h5py.is_hdf5(self.path):
            self._h5 = h5py.File(self.path, "r")
        else:
            try:
                self._v5 = scipy.io.loadmat(self.path, squeeze_me=False, struct_as_record=True)
            except Exception as err:  # scipy raises several types for non-MAT input
                raise DataFileError(
                    self.path, "<file>", f"is neither a MATLAB v7.3 (HDF5) nor a v5 .mat file ({err})"
                ) from err

    def __enter__(self) -> "_MatFile":
        return self

    def __exit__(self, *exc) -> None:
        if self._h5 is not None:
            self._h5.close()

    def keys(self) -> list[str]:
        if self._h5 is not None:
            return sorted(k for k in self._h5.keys() if not k.startswith("#"))
        return sorted(k for k in self._v5 if not k.startswith("__"))

    def _missing(self, key: str, expected: str) -> DataFileError:
        return DataFileError(self.path, key, f"is missing; expected {expected}; the file holds {self.keys()}")

    def shape(self, key: str) -> tuple[int, ...]:
        """MATLAB shape of variable ``key`` without reading it (v5: :func:`scipy.io.whosmat`)."""
        if self._h5 is not None:
            obj = self._h5.get(key)
            if not isinstance(obj, h5py.Dataset):
                raise self._missing(key, "a numeric array")
            return tuple(int(n) for n in obj.shape[::-1])
        if key not in self._v5:
            raise self._missing(key, "a numeric array")
        return tuple(int(n) for n in np.shape(self._v5[key]))

    def variable(self, key: str, *, expected: str) -> np.ndarray:
        """A numeric variable in MATLAB's shape (h5py's reversed axes are restored)."""
        if self._h5 is not None:
            if key not in self._h5:
                raise self._missing(key, expected)
            return _h5_array(self._h5, key, self.path, expected=expected).T
        if key not in self._v5:
            raise self._missing(key, expected)
        arr = np.asarray(self._v5[key])
        if not np.issubdtype(arr.dtype, np.number):
            raise DataFileError(self.path, key, f"has dtype {arr.dtype}; expected {expected}")
        return arr

    def struct_field(self, key: str, name: str, *, expected: str) -> np.ndarray:
        """Field ``name`` of the scalar struct ``key``, in MATLAB's shape."""
        full = f"{key}.{name}"
        if self._h5 is not None:
            group = self._h5.get(key)
            if group is None:
                raise self._missing(key, "a struct")
            if not isinstance(group, h5py.Group):
                raise DataFileError(self.path, key, "is not a struct")
            if name not in group:
                raise DataFileError(self.path, full, f"is missing; expected {expected}")
            return _h5_array(group, name, self.path, expected=expected).T
        if key not in self._v5:
            raise self._missing(key, "a struct")
        record = np.asarray(self._v5[key])
        if record.dtype.names is None or record.size != 1:
            raise DataFileError(self.path, key, f"is not a scalar struct (dtype {record.dtype}, size {record.size})")
        if name not in record.dtype.names:
            raise DataFileError(self.path, full, f"is missing; expected {expected}; fields {record.dtype.names}")
        arr = np.asarray(record.reshape(-1)[0][name])
        if not np.issubdtype(arr.dtype, np.number):
            raise DataFileError(self.path, full, f"has dtype {arr.dtype}; expected {expected}")
        return arr


# --------------------------------------------------------------------------------------------------
# PICMUS / USTB channel data
# --------------------------------------------------------------------------------------------------
def _ustb_frames(group: h5py.Group, path: Path, g: str) -> int:
    """Frames of a USTB dataset group: the leading axis of a 4-D ``data/real``, else 1."""
    real = group.get("data/real")
    if not isinstance(real, h5py.Dataset):
        raise DataFileError(path, f"{g}/data/real", "is missing; expected (n_tx, n_elements, n_samples) samples")
    return int(real.shape[0]) if real.ndim == 4 else 1


def _ustb_frame_array(group: h5py.Group, name: str, path: Path, frame: int) -> np.ndarray:
    """``group[name]``, or only its ``frame`` when it is 4-D (a cine loop is not read whole)."""
    obj = group.get(name)
    if isinstance(obj, h5py.Dataset) and obj.ndim == 4:
        arr = np.asarray(obj[frame])
        if arr.dtype.names and {"real", "imag"} <= set(arr.dtype.names):
            arr = arr["real"] + 1j * arr["imag"]
        if not np.issubdtype(arr.dtype, np.number):
            raise DataFileError(path, f"{group.name.strip('/')}/{name}", f"has non-numeric dtype {arr.dtype}")
        return arr
    return _h5_array(group, name, path, expected="(n_tx, n_elements, n_samples) samples")


def ustb_frame_count(path: PathLike, *, dataset: str = USTB_DATASET) -> int:
    """Number of frames in a PICMUS / USTB file (the leading axis of a 4-D ``data/real``; else 1)."""
    p = _existing(path)
    with _open_hdf5(p) as f:
        group = f.get(dataset)
        if not isinstance(group, h5py.Group):
            raise DataFileError(p, dataset, f"is missing; expected the dataset group (top level holds {sorted(f.keys())})")
        return _ustb_frames(group, p, dataset.strip("/"))


def read_ustb_channel_data(path: PathLike, *, dataset: str = USTB_DATASET, frame: int = 0) -> ChannelData:
    """Read plane-wave channel data in the PICMUS / USTB HDF5 layout.

    Layout of group ``dataset`` (shapes as h5py shows them, i.e. MATLAB's reversed):

    ====================================  ===========================================================
    ``data/real``, ``data/imag``          ``(n_tx, n_elements, n_samples)``; no ``imag`` = RF data.
                                          ``(n_elements, n_samples)`` is read as one transmit;
                                          ``(n_frames, n_tx, n_elements, n_samples)`` (USTB's
                                          4th dimension, frames of a cine loop): only ``frame``
                                          is read (:func:`ustb_frame_count`).
    ``angles``                            ``n_tx`` steering angles, rad
    ``sampling_frequency``                Hz
    ``modulation_frequency``              Hz (0 for RF); may be absent for RF data
    ``initial_time``                      ``n_tx`` values (or one for all), s, first sample relative
                                          to the wavefront passing the origin
    ``probe_geometry``                    ``(3, n_elements)`` or ``(n_elements, 3)``, m
    ``sound_speed``                       m/s
    ====================================  ===========================================================

    Parameters
    ----------
    path : str or os.PathLike
        The ``.hdf5`` file.
    dataset : str
        HDF5 group of the dataset.
    frame : int
        Which frame of a 4-D ``data/real`` to read (0-based); a 3-D or 2-D one has the single frame 0.

    Returns
    -------
    ChannelData
        ``data`` is ``[n_tx, n_samples, n_elements]``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    DataFileError
        A field is missing, has the wrong shape, or holds non-finite values.

    References
    ----------
    Liebgott et al., "Plane-wave imaging challenge in medical ultrasound", IEEE IUS 2016 (PICMUS).
    """
    p = _existing(path)
    with _open_hdf5(p) as f:
        group = f.get(dataset)
        if not isinstance(group, h5py.Group):
            found = sorted(f.keys())
            raise DataFileError(p, dataset, f"is missing; expected the dataset group (top level holds {found})")
        g = dataset.strip("/")
        n_frames = _ustb_frames(group, p, g)
        if not (isinstance(frame, (int, np.integer)) and 0 <= frame < n_frames):
            raise DataFileError(p, f"{g}/data/real", f"holds {n_frames} frame(s); frame {frame!r} asked for (0-based)")
        real = _ustb_frame_array(group, "data/real", p, frame)
        has_imag = "data/imag" in group
        if real.ndim == 2:
            real = real[None]
        if real.ndim != 3:
            raise DataFileError(
                p, f"{g}/data/real", f"has shape {real.shape} (rank {real.ndim}); expected rank 3 "
                "(n_tx, n_elements, n_samples)"
            )
        if np.iscomplexobj(real):
            raise DataFileError(p, f"{g}/data/real", "is complex; expected real samples")
        data = real.astype(np.float32, copy=False)
        _finite(data, p, f"{g}/data/real")
        if has_imag:
            imag = _ustb_frame_array(group, "data/imag", p, frame)
            if imag.ndim == 2:
                imag = imag[None]
            if imag.shape != real.shape:
                raise DataFileError(
                    p, f"{g}/data/imag", f"has shape {imag.shape}; expected {real.shape} like data/real"
                )
            _finite(imag, p, f"{g}/data/imag")
            data = data + 1j * imag.astype(np.float32, copy=False)
        n_tx, n_elements, _ = data.shape

        angles = _h5_array(group, "angles", p, expected=f"{n_tx} steering angles (rad)").reshape(-1)
        if angles.size != n_tx:
            raise DataFileError(p, f"{g}/angles", f"has {angles.size} values; expected n_tx = {n_tx} (rad)")
        _finite(angles, p, f"{g}/angles")
        if np.any(np.abs(angles) >= np.pi / 2):
            raise DataFileError(p, f"{g}/angles", f"holds {angles.max():.4g} rad; expected radians in (-pi/2, pi/2)")

        fs = _scalar(_h5_array(group, "sampling_frequency", p, expected="a scalar (Hz)"), p,
                     f"{g}/sampling_frequency", unit="Hz")
        c = _scalar(_h5_array(group, "sound_speed", p, expected="a scalar (m/s)"), p, f"{g}/sound_speed", unit="m/s")
        if "modulation_frequency" in group or has_imag:
            fm = _scalar(
                _h5_array(group, "modulation_frequency", p, expected="a scalar (Hz), required for IQ data"),
                p, f"{g}/modulation_frequency", unit="Hz", positive=False,
            )
        else:
            fm = 0.0

        t0 = _h5_array(group, "initial_time", p, expected=f"{n_tx} times (s)").reshape(-1)
        if t0.size not in (1, n_tx):
            raise DataFileError(p, f"{g}/initial_time", f"has {t0.size} values; expected 1 or n_tx = {n_tx} (s)")
        _finite(t0, p, f"{g}/initial_time")

        geometry = _h5_array(group, "probe_geometry", p, expected=f"(3, {n_elements}) or ({n_elements}, 3) (m)")
        if geometry.shape == (3, n_elements):
            positions = geometry.T
        elif geometry.shape == (n_elements, 3):
            positions = geometry
        else:
            raise DataFileError(
                p, f"{g}/probe_geometry",
                f"has shape {geometry.shape}; expected (3, {n_elements}) or ({n_elements}, 3) element positions (m)",
            )
        _finite(positions, p, f"{g}/probe_geometry")

    logger.debug("read %s: %d transmits, %d samples, %d elements", p, n_tx, data.shape[2], n_elements)
    return ChannelData(
        data=np.ascontiguousarray(data.transpose(0, 2, 1)),
        angles=angles.astype(np.float64),
        sampling_frequency=fs,
        modulation_frequency=fm,
        initial_time=t0.astype(np.float64),
        element_positions=positions.astype(np.float64),
        sound_speed=c,
        source=str(p),
    )


def write_ustb_channel_data(
    path: PathLike, channel_data: ChannelData, *, dataset: str = USTB_DATASET, name: str = "drus export"
) -> Path:
    """Write channel data in the PICMUS / USTB HDF5 layout read by :func:`read_ustb_channel_data`.

    ``data`` is stored as ``data/real`` (and ``data/imag`` for IQ data) of shape
    ``(n_tx, n_elements, n_samples)``, ``probe_geometry`` as ``(3, n_elements)``, scalars as
    ``(1,)``, all ``float32``. The file is written to a temporary name and moved into place, so a
    reader never sees a half-written file.

    Parameters
    ----------
    path : str or os.PathLike
        Output ``.hdf5`` file (overwritten).
    channel_data : ChannelData
        The data, ``[n_tx, n_samples, n_elements]``.
    dataset : str
        HDF5 group to write.
    name : str
        Stored as the group's ``name`` attribute.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not isinstance(channel_data, ChannelData):
        raise TypeError(f"channel_data must be a ChannelData, got {type(channel_data).__name__}")
    cd = channel_data
    stored = np.ascontiguousarray(cd.data.transpose(0, 2, 1))  # (n_tx, n_elements, n_samples)

    def write(f: h5py.File) -> None:
        g = f.create_group(dataset)
        g.attrs["name"] = name
        g.create_dataset("data/real", data=stored.real.astype(np.float32))
        if cd.is_iq:
            g.create_dataset("data/imag", data=stored.imag.astype(np.float32))
        g.create_dataset("angles", data=cd.angles.astype(np.float32))
        g.create_dataset("initial_time", data=cd.initial_time.astype(np.float32))
        g.create_dataset("probe_geometry", data=cd.element_positions.T.astype(np.float32))
        for key, value in (
            ("sampling_frequency", cd.sampling_frequency),
            ("modulation_frequency", cd.modulation_frequency),
            ("sound_speed", cd.sound_speed),
        ):
            g.create_dataset(key, data=np.array([value], dtype=np.float32))

    return _atomic_write_hdf5(path, write)


# --------------------------------------------------------------------------------------------------
# DRUS / DENO observations and reference images
# --------------------------------------------------------------------------------------------------
def _check_shape_arg(shape: tuple[int, int]) -> tuple[int, int]:
    try:
        n_z, n_x = (int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"shape must be (n_z, n_x), got {shape!r}") from err
    if n_z < 1 or n_x < 1:
        raise ValueError(f"shape must be positive (n_z, n_x), got {shape!r}")
    return n_z, n_x


def _read_flat_image(path: PathLike, key: str, shape: tuple[int, int], order: str) -> np.ndarray:
    n_z, n_x = _check_shape_arg(shape)
    with _MatFile(path) as mat:
        value = mat.variable(key, expected=f"a real vector of n_z * n_x = {n_z * n_x} values")
        p = mat.path
    if np.iscomplexobj(value):
        raise DataFileError(p, key, "is complex; expected a real vector")
    if value.size != n_z * n_x or sum(s > 1 for s in value.shape) > 1:
        raise DataFileError(
            p, key, f"has shape {value.shape}; expected a vector of n_z * n_x = {n_z}*{n_x} = {n_z * n_x} "
            "values (pass shape=(n_z, n_x) for another grid)"
        )
    _finite(value, p, key)
    image = value.reshape(-1).reshape((n_z, n_x), order=order)
    return np.ascontiguousarray(image, dtype=np.float32)


def read_drus_by(path: PathLike, *, shape: tuple[int, int] = (256, 256), key: str = "By") -> np.ndarray:
    """Read a DRUS observation ``By`` (matched-filter beamformed RF) as an ``[n_z, n_x]`` image.

    The file holds a MATLAB vector of ``n_z * n_x`` values (``float32 (1, 65536)`` for the
    paper's 256 × 256 grid) flattened column-major from the ``[n_z, n_x]`` image, i.e. element
    ``iz + ix * n_z``. Equivalently, in numpy: ``By.reshape(n_x, n_z).T``.

    Parameters
    ----------
    path : str or os.PathLike
        ``.mat`` file, v7.3 (HDF5) or v5.
    shape : tuple of int
        Image shape ``(n_z, n_x)``.
    key : str
        Variable name.

    Returns
    -------
    numpy.ndarray
        ``float32`` image ``[n_z, n_x]``, C order.
    """
    return _read_flat_image(path, key, shape, order="F")


def read_deno_by(path: PathLike, *, shape: tuple[int, int] = (256, 256), key: str = "By") -> np.ndarray:
    """Read a DENO observation ``By`` as an ``[n_z, n_x]`` image.

    Same content as :func:`read_drus_by` up to a scale (normalised to max 1), but flattened row
    major from ``[n_z, n_x]``: element ``ix + iz * n_x``, i.e. ``By.reshape(n_z, n_x)``.

    Parameters
    ----------
    path : str or os.PathLike
        ``.mat`` file, v7.3 (HDF5) or v5.
    shape : tuple of int
        Image shape ``(n_z, n_x)``.
    key : str
        Variable name.

    Returns
    -------
    numpy.ndarray
        ``float32`` image ``[n_z, n_x]``, C order.
    """
    return _read_flat_image(path, key, shape, order="C")


def read_mat_image(path: PathLike, key: str = "x") -> np.ndarray:
    """Read a 2-D MATLAB matrix whose rows are depths (MATLAB ``image(iz, ix)``) as ``[n_z, n_x]``.

    For ``das_reference/contrast_expe_das75.mat`` (h5py shows ``(n_x, n_z)``) this is the transpose
    of the stored array.

    Returns
    -------
    numpy.ndarray
        ``float32`` (or ``complex64``) image ``[n_z, n_x]``, C order.
    """
    with _MatFile(path) as mat:
        value = mat.variable(key, expected="a 2-D image matrix (n_z, n_x)")
        p = mat.path
    if value.ndim != 2 or min(value.shape) < 2:
        raise DataFileError(p, key, f"has shape {value.shape}; expected a 2-D image matrix (n_z, n_x)")
    _finite(value, p, key)
    dtype = np.complex64 if np.iscomplexobj(value) else np.float32
    return np.ascontiguousarray(value, dtype=dtype)


@dataclass(frozen=True, eq=False)  # holds arrays: no field-wise ==
class DasReference:
    """Stack of DAS reference images on one grid.

    Parameters
    ----------
    images : numpy.ndarray
        ``complex64`` ``[n_frames, n_z, n_x]``.
    number_plane_waves : numpy.ndarray
        ``[n_frames]`` number of compounded plane waves of each frame.
    x_axis, z_axis : numpy.ndarray
        Lateral ``[n_x]`` and depth ``[n_z]`` pixel positions in m.
    source : str
        The file read.
    """

    images: np.ndarray = field(repr=False)
    number_plane_waves: np.ndarray
    x_axis: np.ndarray = field(repr=False)
    z_axis: np.ndarray = field(repr=False)
    source: str = ""

    @property
    def n_frames(self) -> int:
        return self.images.shape[0]

    @property
    def grid(self) -> ImageGrid:
        """The :class:`~drus.physics.geometry.ImageGrid` of the images."""
        return ImageGrid(x=tuple(self.x_axis), z=tuple(self.z_axis))

    def frame_for(self, n_plane_waves: int) -> np.ndarray:
        """The ``[n_z, n_x]`` image compounded from ``n_plane_waves`` plane waves."""
        hits = np.flatnonzero(self.number_plane_waves == n_plane_waves)
        if hits.size == 0:
            raise ValueError(
                f"no frame with {n_plane_waves} plane waves in {self.source or 'this reference'}; "
                f"available: {self.number_plane_waves.tolist()}"
            )
        return self.images[hits[0]]


def read_das_reference(path: PathLike, *, dataset: str = USTB_DATASET) -> DasReference:
    """Read PICMUS DAS reference images (``das_reference/{1..4}.hdf5``).

    Layout of group ``dataset`` (h5py shapes): ``data/real`` and optional ``data/imag``
    ``(n_frames, n_x, n_z)`` — each frame is stored ``[x, z]`` and is transposed here;
    ``number_plane_waves`` ``(n_frames,)``; ``scan/x_axis`` ``(n_x,)`` and ``scan/z_axis``
    ``(n_z,)`` in m.

    In the shipped PICMUS references ``data/imag`` is all zeros and ``data/real`` is the
    non-negative envelope, so ``abs(images)`` is the envelope either way.

    Returns
    -------
    DasReference
        ``images`` ``complex64 [n_frames, n_z, n_x]``.
    """
    p = _existing(path)
    with _open_hdf5(p) as f:
        group = f.get(dataset)
        if not isinstance(group, h5py.Group):
            found = sorted(f.keys())
            raise DataFileError(p, dataset, f"is missing; expected the dataset group (top level holds {found})")
        g = dataset.strip("/")
        x_axis = _h5_array(group, "scan/x_axis", p, expected="lateral pixel positions (m)").reshape(-1)
        z_axis = _h5_array(group, "scan/z_axis", p, expected="depth pixel positions (m)").reshape(-1)
        expected = f"(n_frames, n_x, n_z) = (n_frames, {x_axis.size}, {z_axis.size})"
        real = _h5_array(group, "data/real", p, expected=expected)
        if real.ndim == 2:
            real = real[None]
        if real.ndim != 3 or real.shape[1:] != (x_axis.size, z_axis.size):
            raise DataFileError(p, f"{g}/data/real", f"has shape {real.shape}; expected {expected}")
        images = real.astype(np.complex64)
        if "data/imag" in group:
            imag = _h5_array(group, "data/imag", p, expected=expected).reshape(images.shape)
            images.imag = imag
        _finite(images, p, f"{g}/data")
        n_pw = _h5_array(group, "number_plane_waves", p, expected=f"{images.shape[0]} counts").reshape(-1)
        if n_pw.size != images.shape[0] or not np.all(np.isfinite(n_pw)) or np.any(n_pw != np.round(n_pw)):
            raise DataFileError(
                p, f"{g}/number_plane_waves", f"is {n_pw}; expected {images.shape[0]} integer counts, one per frame"
            )
        for name, axis in (("scan/x_axis", x_axis), ("scan/z_axis", z_axis)):
            if not np.all(np.isfinite(axis)) or np.any(np.diff(axis) <= 0):
                raise DataFileError(p, f"{g}/{name}", "is not finite and strictly increasing (m)")
    return DasReference(
        images=np.ascontiguousarray(images.transpose(0, 2, 1)),
        number_plane_waves=n_pw.astype(np.int64),
        x_axis=x_axis.astype(np.float64),
        z_axis=z_axis.astype(np.float64),
        source=str(p),
    )


# --------------------------------------------------------------------------------------------------
# Other channel-data formats
# --------------------------------------------------------------------------------------------------
def _linear_positions(n_elements: int, pitch: float) -> np.ndarray:
    positions = np.zeros((n_elements, 3))
    positions[:, 0] = (np.arange(n_elements) - (n_elements - 1) / 2) * pitch
    return positions


def verasonics_frame_count(path: PathLike) -> int:
    """Number of frames in a Verasonics-style ``.mat`` (:func:`read_gammex`): the 4th axis of a 4-D
    ``RF1 (n_samples, n_elements, n_tx, n_frames)``, else the run ``RF1, RF2, …`` of variables (1 for ``RF1`` alone)."""
    with _MatFile(path) as mat:
        keys = set(mat.keys())
        if "RF1" not in keys:
            raise mat._missing("RF1", "(n_samples, n_elements, n_tx) samples")
        shape = mat.shape("RF1")
    if len(shape) == 4:
        return int(shape[3])
    n = 1
    while f"RF{n + 1}" in keys:
        n += 1
    return n


def read_gammex(path: PathLike, *, pulse_lag: float = 0.0, frame: int = 0) -> ChannelData:
    """Read the Verasonics Gammex 403GS acquisition ``gammex/RFdata1.mat``.

    The file holds ``RF1`` ``uint8 (n_samples, n_elements, n_tx)`` (MATLAB shape; 2688 × 128 × 7)
    and the struct ``param1`` with ``fs`` (Hz), ``c`` (m/s), ``pitch`` (m) and ``TXangle``
    (``n_tx`` angles, rad). The samples are converted to ``float32`` and the mean of the whole
    array (the 8-bit offset, ≈ 127.55) is subtracted. Elements are placed at the pitch, centred on
    ``x = 0``.

    The file does not say when the first sample was taken. We assume it is the moment the wave
    leaves the probe, i.e. when the first element fires (for a 0° wave: when the wavefront passes
    ``x = 0``), with no pulse or lens delay. A steered wave passes the origin
    ``x_max |sin(angle)| / c`` after its first element fires (``x_max`` = half the aperture), so in
    drus' convention (time relative to the wavefront passing the origin)::

        initial_time[i] = -pulse_lag - x_max * |sin(angles[i])| / c

    which is 0 for the 0° wave and -0.32 µs at ±1.5°. Evidence: with the same ``initial_time``
    for every angle, DAS puts the wires ≈ 0.25 mm deeper at ±1.5° than at 0°, which is what the
    0.32 µs of this term predicts. The default ``pulse_lag`` is 0; a focusing sweep on the wires
    (0° wave, DAS) peaks near ``pulse_lag ≈ 1 µs``, with 2–8 % more amplitude than at 0, a hint of
    an uncompensated pulse lag.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mat`` file (v5, or v7.3).
    pulse_lag : float
        Time in s from the first element firing to the first sample's reference, subtracted from
        every ``initial_time``.
    frame : int
        Which frame to read (0-based; :func:`verasonics_frame_count`): of a 4-D
        ``RF1 (n_samples, n_elements, n_tx, n_frames)``, or the variable ``RF<frame + 1>`` with
        ``param<frame + 1>`` (``param1`` when the file has only that). The 8-bit mean is the frame's.

    Returns
    -------
    ChannelData
        ``data`` ``float32 [n_tx, n_samples, n_elements]``, RF (modulation 0).
    """
    lag = _finite_scalar("pulse_lag", pulse_lag)
    n_frames = verasonics_frame_count(path)
    if not (isinstance(frame, (int, np.integer)) and 0 <= frame < n_frames):
        raise DataFileError(path, "RF1", f"holds {n_frames} frame(s); frame {frame!r} asked for (0-based)")
    with _MatFile(path) as mat:
        p = mat.path
        four_d = len(mat.shape("RF1")) == 4
        rf_key = "RF1" if four_d else f"RF{frame + 1}"
        par = f"param{frame + 1}" if not four_d and f"param{frame + 1}" in mat.keys() else "param1"
        rf = mat.variable(rf_key, expected="(n_samples, n_elements, n_tx) samples")
        if four_d:
            rf = rf[..., frame]
        fs = _scalar(mat.struct_field(par, "fs", expected="a scalar (Hz)"), p, f"{par}.fs", unit="Hz")
        c = _scalar(mat.struct_field(par, "c", expected="a scalar (m/s)"), p, f"{par}.c", unit="m/s")
        pitch = _scalar(mat.struct_field(par, "pitch", expected="a scalar (m)"), p, f"{par}.pitch", unit="m")
        angles = mat.struct_field(par, "TXangle", expected="steering angles (rad)").astype(np.float64).reshape(-1)
    if rf.ndim == 2:
        rf = rf[:, :, None]
    if rf.ndim != 3:
        raise DataFileError(p, rf_key, f"has shape {rf.shape}; expected (n_samples, n_elements, n_tx)")
    if rf.shape[2] != angles.size:
        raise DataFileError(
            p, f"{par}.TXangle", f"has {angles.size} angles; expected n_tx = {rf.shape[2]} (third axis of {rf_key})"
        )
    _finite(angles, p, f"{par}.TXangle")
    if np.any(np.abs(angles) >= np.pi / 2):
        raise DataFileError(p, f"{par}.TXangle", f"holds {angles}; expected radians in (-pi/2, pi/2)")
    if pitch > 1e-2:
        raise DataFileError(p, f"{par}.pitch", f"is {pitch}; expected metres (e.g. 0.000298)")
    data = rf.astype(np.float32)
    _finite(data, p, rf_key + (f"[..., {frame}]" if four_d else ""))
    data -= data.mean(dtype=np.float64)
    positions = _linear_positions(rf.shape[1], pitch)
    x_max = float(positions[-1, 0])
    return ChannelData(
        data=np.ascontiguousarray(data.transpose(2, 0, 1)),
        angles=angles,
        sampling_frequency=fs,
        modulation_frequency=0.0,
        initial_time=-lag - x_max * np.abs(np.sin(angles)) / c,
        element_positions=positions,
        sound_speed=c,
        source=str(p),
    )


_SHOT = re.compile(r"^shot_(\d+)$")
_FRAME = re.compile(r"^frame_(\d+)$")


def fieldii_frame_count(path: PathLike) -> int:
    """Number of ``data/rf_data/frame_<f>`` groups of a Field II file (:func:`read_fieldii_dataset`)."""
    p = _existing(path)
    with _open_hdf5(p) as f:
        group = f.get("data/rf_data")
        if not isinstance(group, h5py.Group):
            raise DataFileError(p, "data/rf_data", "is missing; expected frame_<f> groups")
        return sum(1 for k in group if _FRAME.match(k))
_TX_MODE = re.compile(r"^PW_(\d+)_(\d+(?:\.\d+)?)$")


def read_fieldii_dataset(
    path: PathLike,
    *,
    frame: int = 1,
    sound_speed: float = DEFAULT_SOUND_SPEED,
    pulse_lag: float | None = None,
) -> ChannelData:
    """Read a Field II plane-wave simulation in the pybf layout (``fieldii/rf_dataset.hdf5``).

    Layout (h5py shapes): ``data/rf_data/frame_<f>/shot_<k>`` ``(n_elements, n_samples)`` (int16),
    one per transmit, ordered by ``k``; ``data/tx_mode/PW_<n>_<deg>`` ``(1, n)`` angles in rad
    (``n`` waves up to ``deg`` degrees); ``data/f_sampling`` (Hz);
    ``trans_params/x_num_of_elements``, ``trans_params/x_pitch`` (m); ``sim_params/start_time``
    (s); ``sim_params/excitation``, ``sim_params/electroacoustic_impulse_response`` sampled at
    ``sim_params/f_sim_hz``; ``data/correction_time_shift`` (s). The file stores no speed of sound.

    How ``initial_time`` is derived (same for all transmits)::

        initial_time = start_time - pulse_lag

    ``start_time`` is Field II's time of the first sample, with t = 0 when the wavefront passes the
    origin (the simulation fires the elements with delays ``x sin(angle) / c`` around the probe
    centre: the ±12° shots focus at the same lag as the 0° one, where a first-element reference
    would shift them by 2.97 µs). ``pulse_lag`` moves the reference from the start of the two-way pulse to its centre
    (the convention of the drus forward model): by default half the length of
    ``excitation * impulse_response * impulse_response``, as pybf computes its correction time,
    here ``624 / 2 / 120 MHz = 2.60 µs``. The stored ``data/correction_time_shift`` (3.66 µs) is used
    only when the pulses are absent: a DAS check on the dataset's isolated point targets focuses
    best at a lag of ≈ 2.8 µs, is within 2–15 % of that amplitude at 2.60 µs and loses ≈ 90 % of it
    at 3.66 µs, with the stored angle signs (positive steers towards +x).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.hdf5`` file.
    frame : int
        Which ``frame_<f>`` to read (1-based, as stored).
    sound_speed : float
        ``c`` in m/s (not stored; Field II's default 1540 m/s).
    pulse_lag : float, optional
        Override the pulse lag in s.

    Returns
    -------
    ChannelData
        ``data`` ``float32 [n_tx, n_samples, n_elements]``, RF (modulation 0).
    """
    p = _existing(path)
    c = _finite_scalar("sound_speed", sound_speed)
    if c <= 0:
        raise ValueError(f"sound_speed must be > 0 m/s, got {sound_speed!r}")
    with _open_hdf5(p) as f:
        frame_name = f"data/rf_data/frame_{int(frame)}"
        group = f.get(frame_name)
        if not isinstance(group, h5py.Group):
            raise DataFileError(p, frame_name, "is missing; expected a group of shot_<k> datasets")
        shots = sorted(((int(m.group(1)), k) for k in group if (m := _SHOT.match(k))), key=lambda t: t[0])
        if not shots:
            raise DataFileError(p, frame_name, f"holds no shot_<k> dataset (found {sorted(group.keys())})")
        records = []
        for _, key in shots:
            rf = _h5_array(group, key, p, expected="(n_elements, n_samples) samples")
            if rf.ndim != 2 or (records and rf.shape != records[0].shape):
                raise DataFileError(
                    p, f"{frame_name}/{key}", f"has shape {rf.shape}; expected 2-D (n_elements, n_samples) like shot 1"
                )
            records.append(rf)
        data = np.stack(records).astype(np.float32)  # (n_tx, n_elements, n_samples)
        _finite(data, p, frame_name)
        n_tx, n_elements, _ = data.shape

        modes = f.get("data/tx_mode")
        names = sorted(modes.keys()) if isinstance(modes, h5py.Group) else []
        if len(names) != 1 or not _TX_MODE.match(names[0]):
            raise DataFileError(p, "data/tx_mode", f"holds {names}; expected one dataset named PW_<n>_<max degrees>")
        match = _TX_MODE.match(names[0])
        angles = _h5_array(modes, names[0], p, expected=f"{n_tx} angles (rad)").astype(np.float64).reshape(-1)
        if angles.size != n_tx or int(match.group(1)) != n_tx:
            raise DataFileError(
                p, f"data/tx_mode/{names[0]}", f"has {angles.size} angles; expected n_tx = {n_tx} shots"
            )
        _finite(angles, p, f"data/tx_mode/{names[0]}")
        max_angle = np.radians(float(match.group(2)))
        if abs(np.max(np.abs(angles)) - max_angle) > 1e-3:
            raise DataFileError(
                p, f"data/tx_mode/{names[0]}",
                f"has max |angle| {np.max(np.abs(angles)):.4g} rad; expected {max_angle:.4g} rad (radians, as named)",
            )

        fs = _scalar(_h5_array(f, "data/f_sampling", p, expected="a scalar (Hz)"), p, "data/f_sampling", unit="Hz")
        pitch = _scalar(_h5_array(f, "trans_params/x_pitch", p, expected="a scalar (m)"), p,
                        "trans_params/x_pitch", unit="m")
        n_declared = _scalar(_h5_array(f, "trans_params/x_num_of_elements", p, expected="a count"), p,
                             "trans_params/x_num_of_elements", unit="count")
        if n_declared != n_elements:
            raise DataFileError(
                p, "trans_params/x_num_of_elements", f"is {n_declared:g}; expected {n_elements} (rows of each shot)"
            )
        start_time = _h5_array(f, "sim_params/start_time", p, expected="a scalar (s)")
        if start_time.size != 1 or not np.isfinite(start_time).all():
            raise DataFileError(
                p, "sim_params/start_time", f"has shape {start_time.shape}; expected one finite value (s)"
            )
        start_time = float(start_time.reshape(()))

        if pulse_lag is None:
            if "sim_params/excitation" in f and "sim_params/electroacoustic_impulse_response" in f:
                n_exc = f["sim_params/excitation"].size
                n_ir = f["sim_params/electroacoustic_impulse_response"].size
                f_sim = _scalar(_h5_array(f, "sim_params/f_sim_hz", p, expected="a scalar (Hz)"), p,
                                "sim_params/f_sim_hz", unit="Hz")
                lag = (n_exc + 2 * n_ir - 2) / 2 / f_sim
            else:
                lag = _scalar(_h5_array(f, "data/correction_time_shift", p, expected="a scalar (s)"), p,
                              "data/correction_time_shift", unit="s", positive=False)
        else:
            lag = _finite_scalar("pulse_lag", pulse_lag)

    return ChannelData(
        data=np.ascontiguousarray(data.transpose(0, 2, 1)),
        angles=angles,
        sampling_frequency=fs,
        modulation_frequency=0.0,
        initial_time=start_time - lag,
        element_positions=_linear_positions(n_elements, pitch),
        sound_speed=c,
        source=str(p),
    )


# --------------------------------------------------------------------------------------------------
# drus reconstruction files
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # holds arrays: no field-wise ==
class SavedImages:
    """Content of a file written by :func:`save_images_hdf5`.

    Attributes
    ----------
    arrays : dict of str to numpy.ndarray
        Every dataset except the grid axes, e.g. ``samples [C, n_z, n_x]``, ``mean``, ``var``.
    attrs : dict
        File attributes.
    grid : ImageGrid or None
        Built from the ``x_axis`` / ``z_axis`` datasets when both are present.
    source : str
        The file read.
    """

    arrays: dict = field(repr=False)
    attrs: dict
    grid: ImageGrid | None
    source: str = ""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"array {name!r} must be numeric, got dtype {arr.dtype}")
    return arr


def save_images_hdf5(
    path: PathLike,
    *,
    grid: ImageGrid | None = None,
    attrs: Mapping[str, Any] | None = None,
    **arrays: Any,
) -> Path:
    """Write reconstructions (or any named arrays) to an HDF5 file, atomically.

    One dataset per keyword, e.g. ``samples`` ``[C, n_z, n_x]``, ``mean`` and ``var``
    ``[n_z, n_x]``; numpy arrays or torch tensors. With ``grid`` the axes are stored as the
    datasets ``x_axis`` ``[n_x]`` and ``z_axis`` ``[n_z]`` (m), and every array of 2 or more
    dimensions must end with ``(n_z, n_x)``. The file is written under a temporary name and moved
    into place (:func:`os.replace`).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (overwritten).
    grid : ImageGrid, optional
        The image grid.
    attrs : mapping, optional
        File attributes: str, int, float, bool or small numeric arrays (e.g. the sampler settings).
    **arrays
        Named arrays.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not arrays:
        raise ValueError("save_images_hdf5 needs at least one array, e.g. mean=image")
    data = {}
    for name, value in arrays.items():
        if grid is not None and name in ("x_axis", "z_axis"):
            raise ValueError(f"pass either grid or a {name!r} array, not both")
        arr = _to_numpy(name, value)
        if grid is not None and arr.ndim >= 2 and arr.shape[-2:] != grid.shape:
            raise ValueError(
                f"array {name!r} has shape {arr.shape}; images on the grid must end with (n_z, n_x) = {grid.shape}"
            )
        data[name] = arr
    if grid is not None:
        data["x_axis"] = grid.x_axis
        data["z_axis"] = grid.z_axis
    clean_attrs = {}
    for key, value in dict(attrs or {}).items():
        if isinstance(value, (str, bool, int, float, np.generic)):
            clean_attrs[key] = value
        elif isinstance(value, (list, tuple, np.ndarray)) and np.asarray(value).dtype.kind in "biuf":
            clean_attrs[key] = np.asarray(value)
        else:
            raise TypeError(
                f"attribute {key!r} must be str, bool, int, float or a numeric array, got {type(value).__name__}"
            )

    def write(f: h5py.File) -> None:
        for name, arr in data.items():
            f.create_dataset(name, data=arr)
        for key, value in clean_attrs.items():
            f.attrs[key] = value

    return _atomic_write_hdf5(path, write)


def load_images_hdf5(path: PathLike) -> SavedImages:
    """Read a file written by :func:`save_images_hdf5`.

    Returns
    -------
    SavedImages
        ``arrays`` (all datasets but ``x_axis``/``z_axis``), ``attrs`` and ``grid``.
    """
    p = _existing(path)
    with _open_hdf5(p) as f:
        arrays = {name: obj[()] for name, obj in f.items() if isinstance(obj, h5py.Dataset)}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    grid = None
    if "x_axis" in arrays and "z_axis" in arrays:
        x_axis = arrays.pop("x_axis")
        z_axis = arrays.pop("z_axis")
        try:
            grid = ImageGrid(x=tuple(np.ravel(x_axis)), z=tuple(np.ravel(z_axis)))
        except ValueError as err:
            raise DataFileError(p, "x_axis/z_axis", f"do not form an image grid: {err}") from err
    return SavedImages(arrays=arrays, attrs=attrs, grid=grid, source=str(p))


def read_channel_data(path: PathLike) -> ChannelData:
    """Read any supported channel-data file, choosing the reader from its content.

    ``.mat`` → :func:`read_gammex` (Verasonics ``RF1``/``param1``); HDF5 with a ``US/`` group →
    :func:`read_ustb_channel_data`; HDF5 with ``data/rf_data`` → :func:`read_fieldii_dataset`.
    """
    p = _existing(path)
    if p.suffix.lower() == ".mat":
        return read_gammex(p)
    with _open_hdf5(p) as f:
        is_ustb, is_fieldii = USTB_DATASET in f, "data/rf_data" in f
    if is_ustb:
        return read_ustb_channel_data(p)
    if is_fieldii:
        return read_fieldii_dataset(p)
    raise DataFileError(p, USTB_DATASET, "not found, nor 'data/rf_data': not a PICMUS/USTB or Field II channel-data file")
