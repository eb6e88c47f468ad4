"""Security: resuming a training run loads tensors and plain data only, never pickled code."""

from __future__ import annotations


import pytest
import torch

from .robustness_helpers import assert_error, drus, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = '{"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [], "num_groups": 4, "num_head_channels": 8}'


class _Payload:
    """Unpickling this writes a marker file: the proof that a planted pickle ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _train_args(out, steps=2):
    return ["train", "--out", out, "--steps", steps, "--batch-size", 1, "--image-size", 16, "--preset", "small",
            "--model", TINY, "--checkpoint-every", 1, "--device", "cpu"]


def test_a_planted_pickle_in_state_pt_is_refused_not_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "pwned"
    with open(out / "state.pt", "wb") as f:  # what torch.save of an object with a code payload produces
        torch.save({"model": _Payload(marker)}, f)
    before = snapshot(out)
    run = drus(*_train_args(out))
    assert not marker.exists(), "unpickling state.pt executed code"
    assert_error(run, str(out / "state.pt"), "not a drus training state")
    assert snapshot(out) == before  # the planted file is reported, not replaced by a new run


def test_a_truncated_state_is_a_one_line_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    assert_error(drus(*_train_args(out)), str(out / "state.pt"), "not a drus training state")


def test_resume_loads_weights_only_onto_the_cpu(tmp_path, monkeypatch):
    """A real state resumes; it is read with weights_only=True and onto the CPU whatever the device,
    so the generator state stays a CPU ByteTensor (with map_location=cuda, set_state used to fail)."""
    run = drus(*_train_args(tmp_path / "run", steps=1))
    assert run.code == 0, run
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    run = drus(*_train_args(tmp_path / "run", steps=2))
    assert run.code == 0, run
    assert calls and all(c.get("weights_only") is True and str(c.get("map_location")) == "cpu" for c in calls)
    state = real_load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["step"] == 2 and state["generator"].dtype == torch.uint8 and state["generator"].device.type == "cpu"


def test_every_torch_load_in_the_package_is_weights_only():
    from pathlib import Path

    import drus

    src = Path(drus.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if "torch.load(" in line and "``" not in line:
                call = " ".join(text.splitlines()[i - 1:i + 2])
                assert "weights_only=True" in call, f"{path.name}:{i}: {line.strip()}"
