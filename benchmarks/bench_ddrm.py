"""Time per DDRM step, split into network time and everything else (operator, noise, bookkeeping).

    python benchmarks/bench_ddrm.py            # 256², C = 10, 10 steps, identity and blur
    python benchmarks/bench_ddrm.py --quick    # 128², C = 4, 5 steps

Uses the shipped default prior's architecture with random weights (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from drus.ddrm import ddrm_sample
from drus.geometry import paper_grid
from drus.operators import Identity, SeparableBlur
from drus.train import DEFAULT_PRIOR_MODEL
from drus.unet import UNet, UNetConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    n, C, steps = (128, 4, 5) if args.quick else (256, 10, 10)
    dev = torch.device(args.device)
    cfg = UNetConfig.from_dict({**UNetConfig.small().to_dict(), **DEFAULT_PRIOR_MODEL})
    torch.manual_seed(0)
    model = UNet(cfg).to(dev).eval()
    grid = paper_grid(n)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}")
    print(f"prior: default architecture ({sum(p.numel() for p in model.parameters())/1e6:.2f} M parameters), grid {n}², C = {C}, {steps} steps")
    print("| operator | s/step | network s/step | other s/step | other / network |")
    print("|---|---|---|---|---|")
    for name, op in (("identity (DENO)", Identity(grid.shape)), ("separable blur", SeparableBlur.paper(grid))):
        op.to(dev)
        y = torch.randn(grid.shape, device=dev) * 0.25
        ddrm_sample(model, op, y, sigma0=0.02, n_samples=C, n_steps=2, progress=False)  # warm-up
        r = ddrm_sample(model, op, y, sigma0=0.02, n_samples=C, n_steps=steps, progress=False,
                        generator=torch.Generator(device=dev).manual_seed(0))
        tot, net, oth = (v / steps for v in (r.seconds_total, r.seconds_model, r.seconds_other))
        print(f"| {name} | {tot:.3f} | {net:.3f} | {oth:.4f} | {oth / net:.1%} |")


if __name__ == "__main__":
    main()
