"""The one configuration of a reconstruction (drus.sampling.config): defaults, presets, validation, round trips."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from drus.sampling.config import (
    PRECISION_NAMES,
    QUICK_SAMPLES,
    QUICK_STEPS,
    OperatorConfig,
    ReconstructionConfig,
    SamplerConfig,
)


def test_defaults_are_declared_once_and_compose():
    c = ReconstructionConfig()
    assert c.sampler == SamplerConfig() and c.operator == OperatorConfig()
    assert (c.prior, c.device, c.precision) == (None, "auto", "fp32")
    assert PRECISION_NAMES == ("fp32", "bf16", "fp16")
    q = SamplerConfig.quick()
    assert (q.n_samples, q.n_steps) == (QUICK_SAMPLES, QUICK_STEPS) == (4, 20)
    assert q.replace(n_samples=10, n_steps=50) == SamplerConfig.paper()  # only C and steps differ from the paper's
    assert SamplerConfig.quick(n_steps=3, seed=7) == SamplerConfig(n_samples=4, n_steps=3, seed=7)


@pytest.mark.parametrize("config", [
    ReconstructionConfig(),
    ReconstructionConfig(sampler=SamplerConfig.drus(n_samples=3, seed=None), operator=OperatorConfig(64, 1e-2, "float32"),
                         prior="priors/mine.safetensors", device="cuda:1", precision="bf16"),
])
def test_round_trips_through_dict_json_and_hdf5_attributes(config, tmp_path):
    assert ReconstructionConfig.from_dict(config.to_dict()) == config
    assert ReconstructionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert ReconstructionConfig.from_json(config.to_json()) == config
    with h5py.File(tmp_path / "r.h5", "w") as f:  # HDF5 attributes cannot hold None: the JSON carries it
        f.attrs.update(config.to_attrs())
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert ReconstructionConfig.from_json(f.attrs["config"]) == config
        assert f.attrs["n_samples"] == config.sampler.n_samples and f.attrs["unknown_size"] == config.operator.unknown_size
    assert SamplerConfig.from_dict(config.sampler.to_dict()) == config.sampler
    assert OperatorConfig.from_dict(config.operator.to_dict()) == config.operator


def test_missing_fields_take_the_defaults():
    c = ReconstructionConfig.from_dict({"sampler": {"n_steps": 7}, "device": "cpu"})
    assert c == ReconstructionConfig(sampler=SamplerConfig(n_steps=7), device="cpu")


def test_a_torch_device_is_kept_by_its_name():
    torch = pytest.importorskip("torch")
    assert ReconstructionConfig(device=torch.device("cpu")).device == "cpu"


@pytest.mark.parametrize("data,needles", [
    ({"sampler": {"n_step": 3}}, ["'n_step'", "did you mean 'n_steps'"]),
    ({"operater": {}}, ["'operater'", "did you mean 'operator'"]),
    ({"operator": {"unknown_size": 1}}, ["unknown_size", "1"]),
    ({"precision": "fp8"}, ["precision", "'fp8'", "fp32, bf16, fp16"]),
    ({"device": ""}, ["device", "''"]),
    ({"prior": ""}, ["prior", "''"]),
    ({"sampler": {"eta": 2}}, ["eta", "2"]),
])
def test_bad_fields_are_named_with_the_value(data, needles):
    with pytest.raises(ValueError) as info:
        ReconstructionConfig.from_dict(data)
    for needle in needles:
        assert needle in str(info.value)


def test_bad_types_and_json_are_refused():
    with pytest.raises(TypeError, match="sampler must be a SamplerConfig"):
        ReconstructionConfig(sampler={"n_steps": 2})
    with pytest.raises(TypeError, match="operator must be an OperatorConfig"):
        ReconstructionConfig(operator=None)
    with pytest.raises(TypeError, match="sampler must be a dict"):
        ReconstructionConfig.from_dict({"sampler": [1, 2]})
    with pytest.raises(ValueError, match="not valid JSON"):
        ReconstructionConfig.from_json("{sampler")


def test_it_is_frozen():
    c = ReconstructionConfig()
    with pytest.raises(AttributeError):
        c.device = "cpu"
    assert c.replace(device="cpu").device == "cpu" and c.device == "auto"
    assert np.isfinite(c.operator.threshold)
