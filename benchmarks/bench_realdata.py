#!/usr/bin/env python3
"""Why DRUS loses to DAS on data it did not simulate: one factor per row (docs/realdata.md).

Each row draws C DDRM samples for one observation with the 128² rectangular ``BH`` (By on 256²,
unknowns on 128²) and scores every estimator from the same samples: DRUSmean, the paper's exact
DRUSvar (eq. (6)), and the pooled DRUSvar (:func:`drus.sampling.estimators.drus_var_pooled`). Samples are
saved per row under ``--out`` so that a rerun skips finished rows (resumable) and new estimators can
be scored without resampling.

Validation observations only (settings are chosen on these):
- ``SC``: the PICMUS Field II contrast set (``by_drus/simu_cont.mat``), paper σ0 = 65.
- ``SIM-ramp`` / ``SIM-flat``: the SC scatterers through drus's own ``H``, with the DRUS depth gain
  ``exp(4t/t_max)`` (a +27 dB ramp in By) or without it, white channel noise at a stated level.
- ``CRIME``: white reflectivity on the unknown grid through the decomposed ``BH`` itself.
The test sets (EC, ER) run only with ``--rows test``, once, after the settings are fixed.

    python benchmarks/bench_realdata.py --rows validation [--quick] [--out runs/realdata]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from drus.physics.beamform import MatchedFilterBeamformer
from drus.sampling.config import SamplerConfig
from drus.sampling.estimators import drus_mean, drus_var, drus_var_pooled
from drus.physics.geometry import picmus
from drus.physics.phantoms import add_noise, occlusion_disks, occlusion_phantom, speckle
from drus.sampling.noise import estimate_sigma0, residual_sigma0
from drus.datasets.picmus import depth_gain, load_picmus_inputs, picmus_operator
from drus.evaluation.scoring import points_in_view, method_envelope, score_image
from drus.models.prior import load_prior
from drus.sampling.reconstruct import reconstruct


def simulate_by_variant(phantom, bf, *, ramp: bool, noise: float, seed: int = 7, factor: float = 30.0):
    """``B y`` of the phantom's scatterers through drus's ``H``; ``noise`` = channel noise std / max|y|.

    Returns ``(By, sigma0)`` with σ0 the RMS per-pixel std of ``B n`` (0 without noise).
    """
    o = phantom.reflectivity(bf.grid)
    y = bf.model.simulate(o)
    if ramp:
        y = y * depth_gain(bf.model.n_samples)[:, None]
    y = y / np.abs(y).max() * factor
    sigma0 = 0.0
    if noise > 0:
        rng = np.random.default_rng(seed)
        n = rng.standard_normal(y.shape).astype(np.float32) * noise * factor
        y = y + n
        bn = bf.beamform(n)
        sigma0 = float(np.sqrt(np.mean(bn.astype(np.float64) ** 2)))
    return bf.beamform(y), sigma0


def weak_component_sigma0(op, y, fraction=0.1):
    """σ0 from the RMS of ȳ = Uᵀy over the weakest ``fraction`` of the kept components."""
    s = op.singular_values.double()
    yb = op.Ut(y.to(torch.float32)[None])[0].double()
    k = s > 0
    order = torch.argsort(s[k])
    n = max(1, int(fraction * int(k.sum())))
    return float(yb[k][order[:n]].pow(2).mean().sqrt()), "weak components"


def depth_profile(by: np.ndarray, z_axis: np.ndarray, *, smooth_m: float = 3e-3) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    dz = float(z_axis[1] - z_axis[0])
    p = np.sqrt(gaussian_filter1d(np.mean(by.astype(np.float64) ** 2, axis=1), smooth_m / dz, mode="nearest"))
    return (p / np.median(p)).astype(np.float32)


def key_of(label: str) -> str:
    return label.replace(" ", "_").replace("/", "_").replace("σ", "s").replace("η", "eta").replace("γ", "g")


def draw(labels, out: Path, grid, name: str) -> None:
    """B-modes ([−60, 0] dB) of DRUSmean, DRUSvar and pooled DRUSvar for each saved row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drus.physics.beamform import envelope
    from drus.evaluation.metrics import to_db

    ext = [grid.x_axis[0] * 1e3, grid.x_axis[-1] * 1e3, grid.z_axis[-1] * 1e3, grid.z_axis[0] * 1e3]
    fig, axes = plt.subplots(len(labels), 3, figsize=(9, 3.1 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        z = np.load(out / f"{key_of(label)}.npz")
        samples = z["samples"]
        for c, (title, img) in enumerate((("DRUSmean", envelope(drus_mean(samples))), ("DRUSvar (paper)", drus_var(samples)),
                                          ("DRUSvar pooled 3×3", drus_var_pooled(samples, window=3)))):
            ax = axes[r, c]
            ax.imshow(to_db(img, floor_db=-60), cmap="gray", vmin=-60, vmax=0, extent=ext, aspect="equal")
            ax.set_title(f"{label}\n{title}" if c == 0 else title, fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    print(path)


def invivo(op, bf, model, out: Path, C: int, steps: int, seed: int) -> None:
    """CC and CL (the paper's σ0 12 and 1.5) with the paper's configuration and drus's defaults: pictures only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drus.datasets.io import read_drus_by
    from drus.datasets.picmus import reference_data_dir
    from drus.evaluation.scoring import method_envelope
    from drus.evaluation.metrics import to_db
    from drus.sampling.estimators import pool_window

    grid = bf.unknown_grid
    sets = {"CC (carotid cross)": ("expe_cross", 12.0), "CL (carotid long.)": ("expe_long", 1.5)}
    rows = []
    for label, (name, paper_sigma0) in sets.items():
        by = read_drus_by(reference_data_dir() / "picmus" / "by_drus" / f"{name}.mat")
        noise, _ = estimate_sigma0(op, by)
        for cfg_label, sigma0, sampler in (
                ("paper", paper_sigma0, SamplerConfig.paper(n_samples=C, n_steps=steps, seed=seed)),
                ("drus defaults", noise, SamplerConfig.drus(n_samples=C, n_steps=steps, seed=seed))):
            rec = reconstruct(op, by, sigma0=sigma0, model=model, sampler=sampler, progress=False)
            rows.append((f"{label}, {cfg_label} (σ0 {sigma0:.3g})", by, rec))
            print(f"{label}, {cfg_label}: σ0 {sigma0:.3g}, sampler σ0 {rec.sigma0_sampler:.3g}", flush=True)
    ext_by = [bf.grid.x_axis[0] * 1e3, bf.grid.x_axis[-1] * 1e3, bf.grid.z_axis[-1] * 1e3, bf.grid.z_axis[0] * 1e3]
    ext = [grid.x_axis[0] * 1e3, grid.x_axis[-1] * 1e3, grid.z_axis[-1] * 1e3, grid.z_axis[0] * 1e3]
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3.1 * len(rows)), squeeze=False)
    w = pool_window(grid)
    for r, (label, by, rec) in enumerate(rows):
        panels = ((f"{label}\nBy envelope", method_envelope("DRUSmean", by), ext_by),
                  ("DRUSmean", method_envelope("DRUSmean", rec.mean), ext),
                  ("DRUSvar (paper)", rec.var, ext), (f"DRUSvar pooled {w}×{w}", rec.var_pooled(w), ext))
        for c, (title, img, e) in enumerate(panels):
            axes[r, c].imshow(to_db(img, floor_db=-60), cmap="gray", vmin=-60, vmax=0, extent=e, aspect="equal")
            axes[r, c].set_title(title, fontsize=8)
            axes[r, c].tick_params(labelsize=6)
    fig.tight_layout()
    path = out / "invivo.png"
    fig.savefig(path, dpi=100)
    print(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="validation", help="validation | test | semicolon-separated row names")
    ap.add_argument("--out", default="runs/realdata")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prior", default=None)
    ap.add_argument("--quick", action="store_true", help="C = 4, 10 steps: checks the code paths only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", default=None, help="semicolon-separated rows to draw (from saved samples) into --out/<name>.png")
    ap.add_argument("--figure-name", default="realdata")
    ap.add_argument("--invivo", action="store_true",
                    help="display only: the paper's carotid observations (CC, CL) with both configurations, "
                         "into --out/invivo.png (no metrics: no ROIs; never used to choose anything)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bf, op = picmus_operator(128, progress=False)
    grid = bf.unknown_grid
    model = load_prior(a.prior)
    C, steps = (4, 10) if a.quick else (10, 50)

    cache: dict = {}

    def obs(name):
        if name not in cache:
            if name in ("SC", "EC", "ER", "SR"):
                ds = {"SC": "simu_cont", "EC": "expe_cont", "ER": "expe_reso", "SR": "simu_reso"}[name]
                inp = load_picmus_inputs(ds)
                cy = inp.dataset.cysts(inp.phantom)
                bx = inp.phantom.speckle_boxes() or None
                pts = points_in_view(inp.phantom.points(), grid) if inp.dataset.kind == "resolution" else None
                cache[name] = (inp.by, inp.dataset.sigma0_drus, cy, bx, pts)
            elif name.startswith("SIM"):
                sc = load_picmus_inputs("simu_cont")
                probe, wave, g256 = picmus(256)
                ramp = name.startswith("SIM-ramp")
                noise = float(name.split("-")[2]) if name.count("-") == 2 else 0.0
                by, s0 = simulate_by_variant(sc.phantom, MatchedFilterBeamformer(probe, wave, g256), ramp=ramp, noise=noise)
                cache[name] = (by, s0 if s0 > 0 else sc.dataset.sigma0_drus, sc.dataset.cysts(sc.phantom),
                               sc.phantom.speckle_boxes() or None, None)
            elif name == "SC-CRIME":
                sc = load_picmus_inputs("simu_cont")
                o = sc.phantom.reflectivity(grid)
                Ao = op.apply(torch.as_tensor(o)).numpy()
                gamma = sc.dataset.sigma0_drus / float(np.abs(sc.by).max())
                y, s0 = add_noise(Ao, gamma=gamma, seed=7)
                cache[name] = (y, s0, sc.dataset.cysts(sc.phantom), sc.phantom.speckle_boxes() or None, None)
            elif name.startswith("CRIME"):
                g = float(name.split("-")[1])
                o = speckle(occlusion_phantom(grid), seed=1000)
                Ao = op.apply(torch.as_tensor(o)).numpy()
                y, s0 = add_noise(Ao, gamma=g, seed=7)
                cache[name] = (y, s0, occlusion_disks(), None, None)
        return cache[name]

    # row name -> (observation, options)
    rows = {
        "SC": ("SC", {}),
        "SC σ0 from data": ("SC", {"sigma0": "data"}),
        "SC C=30": ("SC", {"n_samples": 30}),
        "SC η=1": ("SC", {"eta": 1.0}),
        "SC depth-normalised": ("SC", {"depth": True}),
        "SIM ramp, no noise": ("SIM-ramp", {}),
        "SIM flat, no noise": ("SIM-flat", {}),
        "SIM flat, noise 0.01": ("SIM-flat-0.01", {}),
        "SIM flat, noise 0.01, σ0 from data": ("SIM-flat-0.01", {"sigma0": "data"}),
        "SC phantom on the unknown grid (crime)": ("SC-CRIME", {}),
        "CRIME γ=0.02": ("CRIME-0.02", {}),
        "CRIME γ=0.02, σ0 from data": ("CRIME-0.02", {"sigma0": "data"}),
    }
    for f in (0.4, 0.6, 0.8):
        rows[f"SC reg f={f}"] = ("SC", {"sigma0": ("frac-weak", f)})
        rows[f"SIM flat, noise 0.01, reg f={f}"] = ("SIM-flat-0.01", {"sigma0": ("frac-weak", f)})
        rows[f"SC phantom on the unknown grid (crime), reg f={f}"] = ("SC-CRIME", {"sigma0": ("frac-weak", f)})
    for d, lab in (("SC", "SC"), ("SIM-flat-0.01", "SIM flat, noise 0.01"), ("SC-CRIME", "SC phantom on the unknown grid (crime)")):
        rows[f"{lab}, reg f=0.6, η=1"] = (d, {"sigma0": ("frac-weak", 0.6), "eta": 1.0})
        rows[f"{lab}, reg f=0.6, C=30"] = (d, {"sigma0": ("frac-weak", 0.6), "n_samples": 30})
    rows["SC, drus defaults"] = ("SC", {"sigma0": ("frac", 0.6)})
    # the test: the paper's configuration and the one chosen on the validation rows above, run once
    test_rows = {}
    for d in ("EC", "ER", "SR"):
        test_rows[f"{d}"] = (d, {})
        test_rows[f"{d}, reg f=0.6"] = (d, {"sigma0": ("frac", 0.6)})
    if a.rows == "validation":
        chosen = rows
    elif a.rows == "test":
        chosen = test_rows
    else:
        allr = {**rows, **test_rows}
        chosen = {k: allr[k] for k in a.rows.split(";")}

    if a.figure:
        return draw(a.figure.split(";"), out, grid, a.figure_name)
    if a.invivo:
        return invivo(op, bf, model, out, C, steps, a.seed)

    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    print("| row | σ0 used | scale | DRUSmean gCNR | DRUSvar gCNR | DRUSvar SNR | pooled gCNR | pooled SNR | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, (name, opts) in chosen.items():
        by, s0, cysts, boxes, pts = obs(name)
        opts = dict(opts)
        npz = out / f"{key_of(label)}.npz"
        sigma0 = s0
        source = "stated"
        mode = opts.pop("sigma0", None)
        if mode == "data":
            sigma0, source = residual_sigma0(op, by)[0], "residual"
        elif isinstance(mode, tuple):  # ("frac", f): σ0 from the data, the prior decides a fraction f
            if mode[0] == "frac-weak":  # the validation sweep's noise estimate: RMS of the least-seen tenth
                sigma0, _ = weak_component_sigma0(op, torch.as_tensor(by))
                source = f"least-seen tenth, reg f={mode[1]}"
            else:  # what drus ships: drus.sampling.noise.estimate_sigma0
                sigma0, _ = estimate_sigma0(op, by)
                source = f"spectral fit, reg f={mode[1]}"
            opts["prior_fraction"] = mode[1]
        depth = opts.pop("depth", False)
        y = by
        if depth:
            g_obs = depth_profile(by, bf.grid.z_axis)
            y = by / g_obs[:, None]
        t = time.time()
        if npz.exists():
            z = np.load(npz)
            samples, scale = z["samples"], float(z["scale"])
        else:
            sampler = SamplerConfig(n_samples=opts.pop("n_samples", C), n_steps=steps, seed=a.seed, **opts)
            rec = reconstruct(op, y, sigma0=sigma0, model=model, sampler=sampler, progress=False)
            samples, scale = rec.samples, rec.scale
            if depth:
                g_unk = np.interp(grid.z_axis, bf.grid.z_axis, g_obs).astype(np.float32)
                samples = samples * g_unk[None, :, None]
            np.savez_compressed(npz, samples=samples, scale=scale)
        row = {"sigma0": sigma0, "sigma0_source": source, "scale": scale, "seconds": time.time() - t}
        for est, img in (("DRUSmean", drus_mean(samples)), ("DRUSvar", drus_var(samples)),
                         ("DRUSvar-pooled", drus_var_pooled(samples, window=3))):
            m = score_image(method_envelope("DRUSmean" if est == "DRUSmean" else "DRUSvar", img), grid,
                            cysts=cysts, speckle_rois=boxes, points=pts)
            row[est] = {k: [float(np.mean(v)), float(np.std(v))] for k, v in m.items()}
        results[label] = row
        results_path.write_text(json.dumps(results, indent=1))
        g = lambda e, k: row[e].get(k, [float("nan")])[0]  # noqa: E731
        print(f"| {label} | {sigma0:.3g} ({source}) | {scale:.3g} | {g('DRUSmean','gcnr'):.3f} | {g('DRUSvar','gcnr'):.3f} | "
              f"{g('DRUSvar','snr'):.2f} | {g('DRUSvar-pooled','gcnr'):.3f} | {g('DRUSvar-pooled','snr'):.2f} | "
              f"{row['seconds']:.0f} |", flush=True)
        if "fwhm_axial_mm" in row["DRUSvar"]:
            print("|   FWHM axial / lateral [mm] | | | " + " | ".join(
                f"{row[e]['fwhm_axial_mm'][0]:.2f} / {row[e]['fwhm_lateral_mm'][0]:.2f}"
                for e in ("DRUSmean", "DRUSvar", "DRUSvar-pooled")) + " | | | |", flush=True)


if __name__ == "__main__":
    main()
