"""What the routes to the exact decomposition of ``BH`` cost, and what their precision does to DRUS images.

    python benchmarks/bench_decompose.py --quick    # eigensolvers at n = 2 048; images at 64²   (≈ 2 min)
    python benchmarks/bench_decompose.py            # eigensolvers at n = 8 192; images at 128²  (≈ 20 min)
    python benchmarks/bench_decompose.py --part images --size 128
    python benchmarks/bench_decompose.py --part products            # Vᵀ/V GEMMs of one flip block (≈ 1 min)

Part 1, eigensolvers: one symmetric positive definite ``n × n`` matrix (a Gram matrix), every LAPACK
route scipy and torch offer: divide and conquer (``syevd``), MRRR (``syevr``) for all eigenvectors
or only the top 30 % (``subset_by_index``, what a σ0-based threshold of ≈ 1e-2·s_1 keeps at 256²),
bisection (``syevx``) for the same subset, and ``torch.linalg.eigh`` (MKL ``syevd`` on x86). The
last column extrapolates to one 256² flip block (n = 32 768) by n³.

Part 2, images: the square ``BH`` on an ``n × n`` PICMUS grid, decomposed by each route (Gram or SVD,
float64 or float32 compute, float32 or float16 storage of ``V``), then DRUS (C = 10, 50 steps, the
shipped prior, the same seed for every route) on one occlusion-phantom observation ``By = BH o + n``.
Reported: decomposition time, operator error on a speckle image, the relative L2 change of DRUSmean
and DRUSvar against the float64 reference, and the gCNR of DRUSvar (mean over the 9 cysts). The
yardstick for the changes is the reference run with another seed: within a cluster of (nearly) equal
singular values any orthonormal basis is exact, so two routes may return different, equally valid
bases, and the same seed then draws different (equally distributed) samples.

Part 3, products: what one DDRM step multiplies, ``h @ W`` (Vᵀ) and ``c @ Wᵀ`` (V) for C = 10 rows
against one flip block's float32 vectors, at the shapes of the 128² basis (8 192²) and of the 256²
projector (32 768 × 13 100), random ``W``: torch's CPU GEMM, numpy's (OpenBLAS), and the route
``SpectralBlock`` takes (:func:`drus.physics.decompose._cpu_mm`). Milliseconds, best of 5.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def eigensolvers(n: int) -> None:
    import scipy.linalg as sla

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n))
    gram64 = a.T @ a / n
    top = [int(0.7 * n), n - 1]
    routes = [
        ("scipy syevd (all)", lambda g: sla.eigh(g, overwrite_a=True, check_finite=False, driver="evd")),
        ("scipy syevr (all)", lambda g: sla.eigh(g, overwrite_a=True, check_finite=False, driver="evr")),
        ("scipy syevr (top 30 %)", lambda g: sla.eigh(g, overwrite_a=True, check_finite=False, driver="evr",
                                                     subset_by_index=top)),
        ("scipy syevx (top 30 %)", lambda g: sla.eigh(g, overwrite_a=True, check_finite=False, driver="evx",
                                                     subset_by_index=top)),
        ("torch eigh (MKL syevd, all)", lambda g: torch.linalg.eigh(torch.from_numpy(g))),
    ]
    print(f"\n## Eigensolvers, n = {n}\n")
    print("| route | dtype | seconds | extrapolated to n = 32 768 |")
    print("|---|---|---|---|")
    for dtype in (np.float64, np.float32):
        for name, solve in routes:
            g = np.asfortranarray(gram64, dtype=dtype)
            t = time.perf_counter()
            solve(g)
            sec = time.perf_counter() - t
            print(f"| {name} | {np.dtype(dtype).name} | {sec:.2f} | {sec * (32768 / n) ** 3 / 60:.0f} min |", flush=True)


def images(size: int, n_samples: int = 10, n_steps: int = 50) -> None:
    from drus.physics.beamform import MatchedFilterBeamformer
    from drus.physics.decompose import DecomposedBH, SpectralBlock, decompose_bh, operator_error
    from drus.physics.geometry import picmus
    from drus.evaluation.metrics import contrast_metrics
    from drus.physics.phantoms import occlusion_disks, occlusion_phantom, speckle
    from drus.sampling.config import SamplerConfig
    from drus.models.prior import load_prior
    from drus.sampling.reconstruct import reconstruct

    probe, wave, grid = picmus(size)
    bf = MatchedFilterBeamformer(probe, wave, grid)
    model = load_prior()
    o = speckle(occlusion_phantom(grid), seed=7)
    clean = bf.BH.apply(torch.from_numpy(o)[None].double())[0].float()
    rng = np.random.default_rng(8)
    routes = [  # (label, method, compute dtype, storage dtype)
        ("gram f64 → V f32 (reference)", "gram", "float64", "float32"),
        ("gram f32 → V f32", "gram", "float32", "float32"),
        ("svd f32 → V f32", "svd", "float32", "float32"),
        ("gram f64 → V f16", "gram", "float64", "float16"),
    ]
    s1 = None
    ref = None
    rows = []
    for label, method, compute, storage in routes:
        t = time.perf_counter()
        if storage == "float16":  # the reference's V rounded to float16
            blocks = [SpectralBlock(b.parity, b.singular_values, b.vectors.half()) for b in ref_op.blocks.values()]
            op = DecomposedBH(bf, *blocks, threshold=ref_op.threshold, floor=ref_op.floor)
        else:
            op = decompose_bh(bf, method=method, compute_dtype=compute, dtype=storage, threshold=1e-3, cache=False,
                              progress=False)
        sec = time.perf_counter() - t
        if s1 is None:
            s1, ref_op = op.s1, op
            sigma0 = 0.02 * s1 * float(np.sqrt(np.mean(o**2)))  # the paper's σ0/s_1 range (docs/method.md §3)
            y = clean + sigma0 * torch.from_numpy(rng.standard_normal(grid.shape).astype(np.float32))
        err = operator_error(op, bf, speckle(np.ones(grid.shape, np.float32), seed=9))
        recs = {label: reconstruct(op, y, sigma0=sigma0, model=model,
                                   sampler=SamplerConfig(n_samples=n_samples, n_steps=n_steps, seed=0), progress=False)}
        if ref is None:
            ref = recs[label]
            # the yardstick: the same decomposition with another seed (sampling variability)
            recs["reference, another seed"] = reconstruct(
                op, y, sigma0=sigma0, model=model, sampler=SamplerConfig(n_samples=n_samples, n_steps=n_steps, seed=1),
                progress=False)

        def change(a, b):
            return float(np.linalg.norm(a - b) / np.linalg.norm(b))

        for name, rec in recs.items():
            gcnr = float(np.mean(contrast_metrics(rec.var, grid, occlusion_disks()).gcnr))
            rows.append((name, sec, op.nbytes / 2**20, err, change(rec.mean, ref.mean), change(rec.var, ref.var), gcnr))
        print(f"  {label}: done", flush=True)
    print(f"\n## Precision and DRUS images, {size}² square BH, σ0 = 0.02·s_1·rms(o), C = {n_samples}, {n_steps} steps\n")
    print("| route | decomposition s | V MiB | operator error (speckle) | DRUSmean change | DRUSvar change | gCNR DRUSvar |")
    print("|---|---|---|---|---|---|---|")
    for label, sec, mib, err, dm, dv, g in rows:
        print(f"| {label} | {sec:.1f} | {mib:.0f} | {err:.2e} | {dm:.2e} | {dv:.2e} | {g:.3f} |")


def products(quick: bool) -> None:
    from drus.physics.decompose import _cpu_mm

    shapes = [(8192, 8192)] if quick else [(8192, 8192), (32768, 13100)]

    def best(f, r=5):
        f()
        times = []
        for _ in range(r):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return 1e3 * min(times)

    print("| W shape | product | torch ms | numpy ms | drus ms | W read once (W.sum) ms |")
    print("|---|---|---|---|---|---|")
    for n, m in shapes:
        w = torch.randn(n, m)
        h, c = torch.randn(10, n), torch.randn(10, m)
        wn, hn, cn = w.numpy(), h.numpy(), c.numpy()
        read = best(lambda: w.sum())
        print(f"| {n} × {m} | h @ W (Vᵀ) | {best(lambda: h @ w):.0f} | {best(lambda: hn @ wn):.0f} | "
              f"{best(lambda: _cpu_mm(h, w, False)):.0f} | {read:.0f} |")
        print(f"| {n} × {m} | c @ Wᵀ (V) | {best(lambda: c @ w.mT):.0f} | {best(lambda: cn @ wn.T):.0f} | "
              f"{best(lambda: _cpu_mm(c, w, True)):.0f} | {read:.0f} |")
        del w, wn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n = 2 048 eigensolvers, 64² images")
    ap.add_argument("--part", choices=("all", "eigensolvers", "images", "products"), default="all")
    ap.add_argument("--n", type=int, help="matrix size of part 1 (default 8 192, --quick 2 048)")
    ap.add_argument("--size", type=int, help="grid of part 2 (default 128, --quick 64)")
    args = ap.parse_args()
    n = args.n or (2048 if args.quick else 8192)
    size = args.size or (64 if args.quick else 128)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.part in ("all", "eigensolvers"):
        eigensolvers(n)
    if args.part in ("all", "images"):
        images(size)
    if args.part in ("all", "products"):
        products(args.quick)


if __name__ == "__main__":
    main()
