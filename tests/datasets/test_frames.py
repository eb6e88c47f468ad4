"""Multi-frame files (cine loops): every reader returns frame k, and count_frames says how many there are."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from drus.datasets.acquisition import Acquisition, count_frames, read_acquisition, write_acquisition
from drus.datasets.io import ChannelData, DataFileError, write_ustb_channel_data

FS, C = 20.832e6, 1540.0


def _frame(seed: int, n_samples: int = 200, n_elements: int = 8) -> Acquisition:
    rng = np.random.default_rng(seed)
    x = (np.arange(n_elements) - (n_elements - 1) / 2) * 0.3e-3
    return Acquisition(channel_data=rng.standard_normal((n_samples, n_elements)), element_x=x, sampling_frequency=FS,
                       sound_speed=C, t0=0.0, angle=0.0, center_frequency=5.2e6, bandwidth=0.6, spectrum_source="file")


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_minimal_layout_frames_round_trip(tmp_path, suffix):
    frames = [_frame(k) for k in range(3)]
    path = write_acquisition(tmp_path / f"cine{suffix}", frames)
    assert count_frames(path) == 3
    for k, expected in enumerate(frames):
        np.testing.assert_array_equal(read_acquisition(path, frame=k).channel_data, expected.channel_data)
    single = write_acquisition(tmp_path / f"one{suffix}", frames[0])
    assert count_frames(single) == 1
    with pytest.raises(DataFileError, match="holds 3 frame"):
        read_acquisition(path, frame=3)
    with pytest.raises(ValueError, match="differs from frame 0"):
        write_acquisition(tmp_path / f"mixed{suffix}", [frames[0], _frame(1, n_samples=150)])


def test_a_nan_frame_fails_alone(tmp_path):
    """NaN/inf are checked in the frame read, so one corrupt frame does not make the others unreadable."""
    path = write_acquisition(tmp_path / "cine.h5", [_frame(0), _frame(1)])
    with h5py.File(path, "a") as f:
        f["channel_data"][1, 5, 2] = np.nan
    assert read_acquisition(path, frame=0).channel_data.shape == (200, 8)
    with pytest.raises(DataFileError, match="channel_data.*NaN"):
        read_acquisition(path, frame=1)


def test_uff_4d_data_is_read_frame_by_frame(tmp_path):
    rng = np.random.default_rng(4)
    pos = np.zeros((8, 3))
    pos[:, 0] = (np.arange(8) - 3.5) * 0.3e-3
    data = rng.standard_normal((3, 2, 200, 8)).astype(np.float32)  # [n_frames, n_tx, n_samples, n_elements]
    cd = ChannelData(data=data[0], angles=[0.05, 0.0], sampling_frequency=FS, modulation_frequency=0.0,
                     initial_time=[1e-6, 2e-6], element_positions=pos, sound_speed=C)
    path = write_ustb_channel_data(tmp_path / "cine.uff", cd)
    with h5py.File(path, "a") as f:  # USTB's 4th MATLAB axis (frames) comes first in h5py
        del f["US/US_DATASET0000/data/real"]
        f["US/US_DATASET0000/data/real"] = data.transpose(0, 1, 3, 2)
    assert count_frames(path) == 3
    for k in range(3):
        np.testing.assert_array_equal(read_acquisition(path, frame=k).channel_data, data[k, 1])
    np.testing.assert_array_equal(read_acquisition(path, frame=2, angle=0.05).channel_data, data[2, 0])


def test_verasonics_frames_4d_and_numbered(tmp_path):
    rng = np.random.default_rng(3)
    rf = rng.integers(0, 256, size=(300, 8, 1, 3), dtype=np.uint8)  # (n_samples, n_elements, n_tx, n_frames)
    param = {"fs": 20e6, "c": 1540.0, "pitch": 0.3e-3, "TXangle": np.zeros((1, 1))}
    four_d = tmp_path / "cine.mat"
    scipy.io.savemat(four_d, {"RF1": rf, "param1": param})
    numbered = tmp_path / "numbered.mat"
    scipy.io.savemat(numbered, {"RF1": rf[..., 0], "RF2": rf[..., 1], "RF3": rf[..., 2], "param1": param})
    for path in (four_d, numbered):
        assert count_frames(path) == 3
        for k in range(3):
            expected = rf[:, :, 0, k].astype(np.float32) - rf[..., k].astype(np.float64).mean()
            np.testing.assert_allclose(read_acquisition(path, frame=k).channel_data, expected, atol=1e-4)
    with pytest.raises(DataFileError, match="holds 3 frame"):
        read_acquisition(numbered, frame=5)


def test_the_shared_single_frame_files_have_one_frame(reference_data):
    for path in (reference_data / "gammex" / "RFdata1.mat", reference_data / "fieldii" / "rf_dataset.hdf5"):
        assert count_frames(path) == 1
        np.testing.assert_array_equal(read_acquisition(path, frame=0).channel_data, read_acquisition(path).channel_data)
        with pytest.raises(DataFileError, match="holds 1 frame"):
            read_acquisition(path, frame=1)
