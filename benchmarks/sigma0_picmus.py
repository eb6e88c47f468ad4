"""σ0 estimated from the DRUS By files (drus.sampling.noise.estimate_sigma0) against the paper's σ0.

Usage: ``python benchmarks/sigma0_picmus.py [--unknown-size 128]``. Uses the PICMUS operator of
``drus reconstruct`` / ``drus evaluate picmus`` (By on 256², unknowns on N², decomposed and cached by
:func:`drus.datasets.picmus.picmus_operator`) and the four ``by_drus`` files of the reference data, plus a
copy of one of them under another name (what a user's By file looks like to ``drus reconstruct``).
"""

from __future__ import annotations

import argparse
import json

from drus.datasets.io import read_drus_by
from drus.sampling.noise import estimate_sigma0
from drus.datasets.picmus import PICMUS_SETS, picmus_operator, reference_data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unknown-size", type=int, default=128)
    ap.add_argument("--data", default=None, help="reference data folder")
    args = ap.parse_args()
    _, op = picmus_operator(args.unknown_size, progress=False)
    rows = {}
    for name, ds in PICMUS_SETS.items():
        by = read_drus_by(reference_data_dir(args.data) / "picmus" / "by_drus" / f"{name}.mat")
        est, source = estimate_sigma0(op, by)
        rows[name] = {"paper_sigma0": ds.sigma0_drus, "estimated_sigma0": est, "ratio": est / ds.sigma0_drus,
                      "by_rms": float((by**2).mean() ** 0.5), "source": source}
        print(f"{name:10s} paper σ0 {ds.sigma0_drus:6.1f}   estimated {est:8.3f}   ratio {est / ds.sigma0_drus:.3f}   "
              f"RMS(By) {rows[name]['by_rms']:.1f}")
    print(source)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
