"""The paper's central claim (Sect. III, Fig. 2) with the shipped default prior.

DRUSvar must beat DRUSmean and the observation on contrast (gCNR) and DRUSmean on speckle SNR, on
held-out speckle realisations (seeds ≥ 1000; the prior was trained on seed 0's synthetic stream).

- ``test_claim_small`` (default suite): a 128 × 128 crop of the paper grid (same 0.14 mm pixels, so
  the same blur in pixels), 4 cysts, C = 10, 20 steps, one realisation, γ = 0.02.
- ``test_claim_paper_setting`` (slow): the paper's setting, 256², 9 cysts, C = 10, 50 steps,
  γ ∈ {0.02, 0.08}, 2 realisations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drus.sampling.config import SamplerConfig
from drus.pipelines.experiments import occlusion_study
from drus.physics.geometry import ImageGrid, paper_grid
from drus.evaluation.metrics import contrast_metrics, mean_std
from drus.physics.operators import SeparableBlur
from drus.physics.phantoms import add_noise, occlusion_disks, occlusion_phantom, speckle
from drus.models.prior import default_prior_path, load_prior
from drus.sampling.reconstruct import reconstruct

pytestmark = pytest.mark.skipif(not default_prior_path().exists(), reason="no shipped prior")


def test_claim_small():
    full = paper_grid(256)
    grid = ImageGrid(x=full.x[64:192], z=full.z[:128])  # x −9…9 mm, z 10…28 mm, 0.14 mm pixels
    kw = dict(radius=3.5e-3, centers_x=(-4.5e-3, 4.5e-3), centers_z=(14.8e-3, 23.5e-3))
    disks = occlusion_disks(**kw)
    p = occlusion_phantom(grid, **kw)
    K = SeparableBlur.paper(grid)
    o = speckle(p, seed=1001)
    y, sigma0 = add_noise(K.apply(torch.from_numpy(o)).numpy(), gamma=0.02, seed=11001)
    rec = reconstruct(K, y, sigma0=sigma0, model=load_prior(), sampler=SamplerConfig(n_steps=20, seed=1), progress=False)
    m = {name: contrast_metrics(img, grid, disks) for name, img in
         {"obs": np.abs(y), "mean": np.abs(rec.mean), "var": rec.var}.items()}
    g = {k: mean_std(v.gcnr)[0] for k, v in m.items()}
    s = {k: mean_std(v.snr)[0] for k, v in m.items()}
    assert g["var"] > g["mean"] and g["var"] > g["obs"], g
    assert s["var"] > 1.3 * s["mean"], s


@pytest.mark.slow
def test_claim_paper_setting():
    study = occlusion_study(load_prior(), seeds=(1000, 1001), progress=False)
    for gamma, methods in study.summary().items():
        g = {k: v["gcnr"][0] for k, v in methods.items()}
        s = {k: v["snr"][0] for k, v in methods.items()}
        assert g["DRUSvar"] > g["DRUSmean"] and g["DRUSvar"] > g["observation"], (gamma, g)
        assert s["DRUSvar"] >= 1.5 * s["DRUSmean"], (gamma, s)
