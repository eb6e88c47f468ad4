#!/usr/bin/env python3
"""Where DRUSvar's variance comes from, on the inverse-crime observation (docs/realdata.md, round 2).

The CRIME observation of ``bench_realdata.py`` (the occlusion phantom as white reflectivity on the 128²
unknown grid, pushed through the decomposed plane-wave ``BH`` itself, white noise γ = 0.02) is
reconstructed with the shipped prior, and the C samples are split in ``BH``'s right-singular basis by
who decides each component: ``r_i = σ0/s_i`` in prior units (RMS 0.25) below 0.05 (the data), 0.05–1
(both), ≥ 1 (the prior, with a measurement), ``s_i = 0`` (the prior alone). For each group the script
reports its share of the per-pixel variance, the cysts' variance relative to the background (dB,
inside 0.8 of each radius) and the gCNR of that group's variance map.

One factor per option: ``--steps`` (DDRM steps), ``--missing q`` (the weakest fraction q of the kept
components set to s = 0, so that the prior alone decides them), ``--prior`` (another checkpoint).

    python benchmarks/bench_variance_split.py [--steps 50] [--missing 0] [--prior P] [--quick] [--save S.npz]
    python benchmarks/fig_round2.py "label=S.npz" …      # the DRUSvar maps side by side
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from drus.datasets.picmus import picmus_operator
from drus.evaluation.scoring import method_envelope, score_image
from drus.models.prior import load_prior
from drus.physics.phantoms import add_noise, occlusion_disks, occlusion_phantom, speckle
from drus.sampling.config import SamplerConfig
from drus.sampling.estimators import drus_mean, drus_var, drus_var_pooled
from drus.sampling.reconstruct import reconstruct
from drus.sampling.scaling import TARGET_RMS, prior_scale

GROUPS = (("data", 0.0, 0.05), ("both", 0.05, 1.0), ("prior, measured", 1.0, float("inf")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--missing", type=float, default=0.0, help="fraction of the weakest kept components set to s = 0")
    ap.add_argument("--prior", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="C = 4, 10 steps: checks the code path only")
    ap.add_argument("--save", default=None, help="write the samples to this .npz (for fig_round2.py)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bf, op = picmus_operator(128, progress=False)
    grid = bf.unknown_grid
    model = load_prior(a.prior)
    o = speckle(occlusion_phantom(grid), seed=1000)
    y, s0 = add_noise(op.apply(torch.as_tensor(o)).numpy(), gamma=0.02, seed=7)
    cysts = occlusion_disks()
    scale, _ = prior_scale(op, torch.as_tensor(y, dtype=torch.float32), float(s0))  # from the full operator
    run_op = op
    if a.missing > 0:
        s = op.singular_values
        cut = torch.quantile(s[s > 0].double(), a.missing).item()
        run_op = copy.copy(op)
        run_op.singular_values = torch.where(s > cut, s, torch.zeros_like(s))
    C, steps = (4, 10) if a.quick else (10, a.steps)
    t = time.time()
    rec = reconstruct(run_op, y, sigma0=s0, model=model, scale=scale,
                      sampler=SamplerConfig(n_samples=C, n_steps=steps, seed=a.seed), progress=True)
    seconds = time.time() - t
    if a.save:
        np.savez_compressed(a.save, samples=rec.samples)

    def gcnr(img, kind="DRUSvar"):
        return float(np.mean(score_image(method_envelope(kind, img), grid, cysts=cysts)["gcnr"]))

    X, Z = np.meshgrid(grid.x_axis, grid.z_axis)
    inside = np.zeros(grid.shape, bool)
    for c in cysts:
        inside |= (X - c.x) ** 2 + (Z - c.z) ** 2 < (0.8 * c.radius) ** 2

    def contrast_db(v):
        return float(10 * np.log10(v[inside].mean() / max(v[~inside].mean(), 1e-30)))

    samples = torch.as_tensor(rec.samples / rec.scale)  # prior units
    var_all = samples.var(0).numpy()
    coeffs = op.Vt(samples)
    s = run_op.singular_values
    r = torch.where(s > 0, (rec.sigma0_sampler / rec.scale) / s.clamp_min(1e-30), torch.full_like(s, float("inf")))
    out = {"steps": steps, "missing": a.missing, "prior": a.prior or "shipped", "seconds": round(seconds),
           "DRUSmean gCNR": gcnr(drus_mean(rec.samples), "DRUSmean"), "DRUSvar gCNR": gcnr(drus_var(rec.samples)),
           "pooled gCNR": gcnr(drus_var_pooled(rec.samples, window=3)), "cyst contrast dB": contrast_db(var_all),
           "groups": {}}
    masks = [(f"{n} ({lo:g} ≤ r < {hi:g})", (s > 0) & (r >= lo * 1.0) & (r < hi)) for n, lo, hi in GROUPS]
    masks.append(("prior alone (s = 0)", s == 0))
    for name, m in masks:
        v = op.V(torch.where(m, coeffs, torch.zeros_like(coeffs))).var(0).numpy()
        out["groups"][name] = {"components": int(m.sum()), "share of variance": float(v.mean() / var_all.mean()),
                               "cyst contrast dB": contrast_db(v), "gCNR": gcnr(v)}
    print(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"(prior units: RMS {TARGET_RMS}; r_i = σ0/s_i)")


if __name__ == "__main__":
    main()
