"""Shared fixtures: tiny geometries, the reference-data folder, the compute devices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave

torch.set_num_threads(min(2, torch.get_num_threads()))


def reference_data_dir() -> Path:
    """``$DRUS_REFERENCE_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("DRUS_REFERENCE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def reference_data() -> Path:
    root = reference_data_dir()
    if not root.is_dir():
        pytest.skip(f"reference data not found at {root} (set DRUS_REFERENCE_DATA)")
    return root


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state, whatever ran before it."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Single-threaded torch for a test module, restored afterwards: the tensors are tiny, and on
    shared cores two OpenMP threads make every small op wait for a descheduled thread (10–20×)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_probe() -> LinearProbe:
    """8 elements at pitch 0.3 mm, 5.208 MHz."""
    return LinearProbe(8, 0.3e-3, 5.208e6, 0.67, name="tiny")


@pytest.fixture
def tiny_wave() -> PlaneWave:
    return PlaneWave(sampling_frequency=20.832e6, sound_speed=1540.0)


@pytest.fixture
def tiny_grid() -> ImageGrid:
    """12 × 10 pixels, 1.5 mm wide, 5–6.5 mm deep (non-square to catch transpositions)."""
    return ImageGrid.from_extent(x_min=-0.75e-3, x_max=0.75e-3, z_min=5e-3, z_max=6.5e-3, n_x=10, n_z=12)


def _devices():
    devs = [torch.device("cpu")]
    if torch.cuda.is_available():
        devs.append(torch.device("cuda"))
    return devs


@pytest.fixture(params=_devices(), ids=str)
def device(request) -> torch.device:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
