"""Fixtures of the robustness corpus: each case runs a ``drus`` command and asserts the exit code, a
one-line ``Error:`` message naming the file, option or value, and that nothing was overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder that cannot be written to, even by root (a read-only mount); skipped where none exists."""
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").write_bytes(b"")
    except OSError:
        yield d
        d.chmod(0o755)
        return
    (d / "probe").unlink()
    d.chmod(0o755)
    for candidate in (Path("/sys/drus-robustness"), Path("/proc/drus-robustness")):
        try:
            candidate.mkdir()
        except OSError:
            yield candidate
            return
        candidate.rmdir()
    pytest.skip("no read-only folder available (running as root without a read-only mount)")


MEAS, UNKNOWN = 32, 16  # the By grid and the DRUS unknown grid of the tiny PICMUS stand-in


def tiny_prior(path):
    """A 2-level UNet (needs sides divisible by 2) saved as a drus checkpoint."""
    import torch

    from drus.models.checkpoint import save_checkpoint
    from drus.models.unet import UNet, UNetConfig

    cfg = UNetConfig.from_dict({**UNetConfig.small().to_dict(), "model_channels": 8, "channel_mult": (1, 2),
                                "attention_resolutions": (), "num_groups": 4, "num_head_channels": 8})
    torch.manual_seed(0)
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.05 * torch.randn_like(p))
    return save_checkpoint(net.eval(), cfg, path)


@pytest.fixture(scope="module")
def picmus_files(tmp_path_factory):
    """``root``: a 32² stand-in of the reference folder (expe_cont By in both layouts, its phantom), a
    tiny prior and a warm decomposition cache of the 16²-unknown ``BH``."""
    import h5py
    import numpy as np
    import scipy.io
    import torch

    from drus.physics.geometry import paper_grid, picmus
    from drus.datasets.picmus import picmus_operator

    root = tmp_path_factory.mktemp("reference")
    bf, _ = picmus_operator(UNKNOWN, geometry=picmus(MEAS), cache_dir=root / "cache", progress=False)
    rng = np.random.default_rng(0)
    X, Z = paper_grid(UNKNOWN).meshgrid()
    o = rng.standard_normal(X.shape)
    o[(X + 8e-3) ** 2 + (Z - 22e-3) ** 2 < (4e-3) ** 2] *= 0.01
    by = bf.BH.apply(torch.from_numpy(o)).numpy()
    by = by / np.abs(by).std() * 20 * 55 + 55 * rng.standard_normal(by.shape)  # σ0 of expe_cont: 55
    for sub in ("by_drus", "by_deno", "phantoms"):
        (root / sub).mkdir()
    scipy.io.savemat(root / "by_drus" / "expe_cont.mat", {"By": by.reshape(-1, order="F")[None].astype(np.float32)})
    scipy.io.savemat(root / "by_deno" / "expe_cont.mat", {"By": (by / np.abs(by).max()).reshape(1, -1).astype(np.float32)})
    with h5py.File(root / "phantoms" / "picmus_phantom_4.hdf5", "w") as f:
        g = f.create_group("US/US_DATASET0000")
        for name, v in [("phantom_occlusionCenterX", [-8e-3]), ("phantom_occlusionCenterZ", [22e-3]),
                        ("phantom_occlusionDiameter", [8e-3]), ("phantom_xPts", [0.0]), ("phantom_zPts", [20e-3]),
                        ("phantom_RoiCenterX", [0.0]), ("phantom_RoiCenterZ", [0.0]), ("phantom_RoiPsfTimeX", [0.0]),
                        ("phantom_RoiPsfTimeZ", [0.0]), ("phantom_lateralResolution", [0.45e-3]),
                        ("phantom_axialResolution", [0.45e-3])]:
            g.create_dataset(name, data=np.asarray(v, np.float32))
    tiny_prior(root / "prior.safetensors")
    return root


@pytest.fixture
def small_picmus(picmus_files, monkeypatch):
    """``picmus_files`` with drus's PICMUS geometry patched to 32² for the duration of a test."""
    import drus.physics.geometry

    geometry = drus.physics.geometry.picmus(MEAS)
    monkeypatch.setattr(drus.physics.geometry, "picmus", lambda n=256: geometry)
    return picmus_files
