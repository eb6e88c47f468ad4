"""``drus reconstruct`` as a library call (drus.pipelines.reconstruct.reconstruct_file), without the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from drus.datasets.acquisition import Acquisition, write_acquisition
from drus.datasets.io import load_images_hdf5
from drus.errors import OptionError
from drus.outputs import OutputExistsError
from drus.pipelines.reconstruct import ReconstructionResult, reconstruct_file
from drus.sampling.config import ReconstructionConfig, SamplerConfig

FS, C = 20.832e6, 1540.0


@pytest.fixture
def acquisition_file(tmp_path):
    """A tiny minimal-layout acquisition (8 elements, noise): read, beamformed and written in well under a second."""
    rng = np.random.default_rng(0)
    x = (np.arange(8) - 3.5) * 0.3e-3
    acq = Acquisition(channel_data=rng.standard_normal((400, 8)), element_x=x, sampling_frequency=FS, sound_speed=C,
                      t0=0.0, angle=0.0, center_frequency=5.2e6, bandwidth=0.6, spectrum_source="file", source="tiny")
    return write_acquisition(tmp_path / "tiny.h5", acq)


RANGES = dict(x_range=(-1.0, 1.0), z_range=(4.0, 6.0), grid_size=16)


def test_das_of_an_acquisition_writes_images_and_the_configuration(acquisition_file, tmp_path):
    config = ReconstructionConfig(sampler=SamplerConfig(n_samples=3, seed=5), device="cpu")
    lines = []
    res = reconstruct_file(acquisition_file, method="das", config=config, out_dir=tmp_path / "out", report=lines.append,
                           **RANGES)
    assert isinstance(res, ReconstructionResult) and res.method == "das" and res.config is config
    assert [f.name for f in res.files] == ["tiny_das.hdf5", "tiny_das.png"]
    assert res.image.shape == res.grid.shape and max(res.grid.shape) == 16
    assert lines and any(line.startswith("grid:") for line in lines)  # progress goes to the caller's report
    saved = load_images_hdf5(tmp_path / "out" / "tiny_das.hdf5")
    assert ReconstructionConfig.from_json(saved.attrs["config"]) == config  # what ran, read back
    assert saved.attrs["method"] == "das" and saved.grid == res.grid
    # an earlier result is kept unless overwrite
    with pytest.raises(OutputExistsError, match="--overwrite"):
        reconstruct_file(acquisition_file, method="das", config=config, out_dir=tmp_path / "out", **RANGES)
    again = reconstruct_file(acquisition_file, method="das", config=config, out_dir=tmp_path / "out", overwrite=True,
                             **RANGES)
    np.testing.assert_array_equal(again.image, res.image)


@pytest.mark.parametrize("kwargs,option,needle", [
    (dict(method="magic"), "--method", "'magic'"),
    (dict(method="drus-var", sigma0=float("nan")), "--sigma0", "got nan"),
    (dict(method="drus-var", sigma0=-1.0), "--sigma0", "got -1.0"),
    (dict(method="drus-var", config=ReconstructionConfig(sampler=SamplerConfig(n_samples=1))), "--samples", "got 1"),
])
def test_bad_arguments_name_the_option_and_the_value_before_any_work(acquisition_file, tmp_path, kwargs, option, needle):
    with pytest.raises(OptionError) as info:
        reconstruct_file(acquisition_file, out_dir=tmp_path / "out", **RANGES, **kwargs)
    assert info.value.option == option and needle in str(info.value) and str(info.value).startswith(option)
    assert not (tmp_path / "out").exists()


def test_deno_on_channel_data_needs_sigma0(acquisition_file, tmp_path):
    with pytest.raises(ValueError, match="deno-mean on channel data needs --sigma0"):
        reconstruct_file(acquisition_file, method="deno-mean", out_dir=tmp_path / "out", **RANGES)
    with pytest.raises(TypeError, match="ReconstructionConfig"):
        reconstruct_file(acquisition_file, method="das", config=SamplerConfig(), out_dir=tmp_path / "out")
