"""Time per DDRM step, split into network time and everything else (operator, noise, bookkeeping).

    python benchmarks/bench_ddrm.py            # 256², C = 10, 10 steps, identity and blur
    python benchmarks/bench_ddrm.py --quick    # 128², C = 4, 5 steps
    python benchmarks/bench_ddrm.py --bh --compute-dtype float32   # + the exact decomposition of BH
    python benchmarks/bench_ddrm.py --bh --square --size 128       # BH square on 128² (By on 128² too)

``--bh`` adds the plane-wave operator ``BH`` (By on the 256² PICMUS grid, unknowns on the benchmark grid;
with ``--square`` By on the benchmark grid too), exactly decomposed
(:func:`drus.datasets.picmus.picmus_operator`; square at 256²); it is loaded from the cache and computed first when
missing (minutes at 128², ≈ 1.5 h on 2 CPU cores at 256²: run ``drus decompose`` beforehand).

Uses the shipped default prior's architecture with random weights (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from drus.sampling.ddrm import ddrm_sample
from drus.physics.geometry import paper_grid
from drus.physics.operators import Identity, SeparableBlur
from drus.training.train import DEFAULT_PRIOR_MODEL
from drus.models.unet import UNet, UNetConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bh", action="store_true", help="also time DDRM with the decomposed BH")
    ap.add_argument("--compute-dtype", default="float64", choices=("float64", "float32"),
                    help="compute dtype of the BH decomposition to load (its cache key)")
    ap.add_argument("--square", action="store_true", help="--bh: By on the benchmark grid (square BH) instead of 256²")
    ap.add_argument("--size", type=int, help="grid side (default 256, --quick 128)")
    ap.add_argument("--samples", type=int, help="C (default 10, --quick 4)")
    args = ap.parse_args()
    n, C, steps = (128, 4, 5) if args.quick else (256, 10, 10)
    n, C = args.size or n, args.samples or C
    dev = torch.device(args.device)
    cfg = UNetConfig.from_dict({**UNetConfig.small().to_dict(), **DEFAULT_PRIOR_MODEL})
    torch.manual_seed(0)
    model = UNet(cfg).to(dev).eval()
    grid = paper_grid(n)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}")
    print(f"prior: default architecture ({sum(p.numel() for p in model.parameters())/1e6:.2f} M parameters), grid {n}², C = {C}, {steps} steps")
    print("| operator | s/step | network s/step | other s/step | other / network |")
    print("|---|---|---|---|---|")
    operators = [("identity (DENO)", Identity(grid.shape)), ("separable blur", SeparableBlur.paper(grid))]
    if args.bh:
        from drus.physics.geometry import picmus
        from drus.datasets.picmus import picmus_operator

        m = n if args.square else 256
        _, bh = picmus_operator(n, geometry=picmus(m), compute_dtype=args.compute_dtype, device=dev)
        operators.append((f"BH exact, By {m}² ← unknowns {n}² ({bh.layouts['even']}, {bh.n_kept} kept)", bh))
    for name, op in operators:
        op.to(dev)
        y = op.apply(torch.randn(1, *op.in_shape, device=dev) * 0.25)[0].to(dev)  # in the operator's range
        ddrm_sample(model, op, y, sigma0=0.02, n_samples=C, n_steps=2, progress=False)  # warm-up
        r = ddrm_sample(model, op, y, sigma0=0.02, n_samples=C, n_steps=steps, progress=False,
                        generator=torch.Generator(device=dev).manual_seed(0))
        tot, net, oth = (v / steps for v in (r.seconds_total, r.seconds_model, r.seconds_other))
        print(f"| {name} | {tot:.3f} | {net:.3f} | {oth:.4f} | {oth / net:.1%} |")


if __name__ == "__main__":
    main()
