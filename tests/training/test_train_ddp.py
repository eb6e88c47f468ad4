"""``drus train`` under ``torchrun --nproc-per-node 2`` (DistributedDataParallel on gloo, 2 CPU processes):
checkpoints and EMA from rank 0, every rank's noise stream saved, and a resumed run equal to an uninterrupted one.

Tiny: a 2-level UNet of 8 channels, 16² crops, a global batch of 4 (2 per process), 4 + 2 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drus.training.train import shard

SRC = str(Path(__file__).resolve().parents[2] / "src")
TORCHRUN = Path(sys.executable).with_name("torchrun")
TINY = ('{"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [], '
        '"num_groups": 4, "num_head_channels": 8}')


def test_shards_split_the_global_batch():
    assert [shard(3, 8, r, 2) for r in range(2)] == [(24, 4), (28, 4)]
    assert shard(3, 8, 0, 1) == (24, 8)  # one process: the whole batch, as before


def _torchrun(out: Path, steps: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)}  # this checkout
    cmd = [str(TORCHRUN), "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "-m", "drus.cli", "train",
           "--out", str(out), "--steps", str(steps), "--batch-size", "4", "--image-size", "16", "--preset", "small",
           "--model", TINY, "--checkpoint-every", "2", "--device", "cpu", "--threads", "1"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not found beside the Python interpreter")
def test_train_under_torchrun_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for out, steps in ((straight, 6), (resumed, 4), (resumed, 6)):
        proc = _torchrun(out, steps)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    state = torch.load(resumed / "state.pt", weights_only=True)
    assert state["step"] == 6 and state["world_size"] == 2
    gens = state["rank_generators"]
    assert len(gens) == 2 and not torch.equal(gens[0], gens[1])  # a noise stream per rank
    log = [json.loads(line) for line in (resumed / "train.log").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [4, 6] and all(entry["processes"] == 2 for entry in log)
    # the run stopped at step 4 and resumed equals the one that went straight to 6: weights, EMA and optimiser
    a, b = load_file(str(straight / "prior.safetensors")), load_file(str(resumed / "prior.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    s_straight = torch.load(straight / "state.pt", weights_only=True)
    assert all(torch.equal(s_straight["model"][k], state["model"][k]) for k in state["model"])
