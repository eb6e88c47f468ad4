"""ADMSS on DRUSmean: gCNR / SNR (EC) and FWHM (ER) of envelope(DRUSmean) before and after (docs/despeckle.md).

Reads the DRUS samples that ``benchmarks/bench_realdata.py --rows test`` saved (``<dir>/EC.npz``,
``<dir>/ER.npz``: ``samples [C, 128, 128]`` on the 128² unknown grid), forms DRUSmean and DRUSvar,
and scores envelope(DRUSmean), ADMSS(envelope(DRUSmean)) (the DRUS authors' parameters) and DRUSvar
with the PICMUS ROIs (:func:`drus.evaluation.scoring.score_image`). No sampling: seconds on a CPU.

    python benchmarks/bench_admss.py --samples /tmp/work/rd_test_s0 [--rows "EC;ER;EC,_reg_f=0.6"]

A row is the name of its ``.npz`` file; the text before the first comma names the PICMUS set.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from drus.evaluation.despeckle import admss
from drus.sampling.estimators import drus_mean, drus_var
from drus.physics.geometry import paper_grid
from drus.datasets.picmus import load_picmus_inputs
from drus.evaluation.scoring import method_envelope, points_in_view, score_image

SETS = {"EC": "expe_cont", "ER": "expe_reso", "SC": "simu_cont", "SR": "simu_reso"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", required=True, help="folder with <row>.npz (key 'samples')")
    ap.add_argument("--rows", default="EC;ER", help="semicolon-separated rows: EC, ER, SC, SR, or e.g. 'EC,_reg_f=0.6'")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--quick", action="store_true", help="the first row only, 5 ADMSS iterations: checks the code path")
    a = ap.parse_args()
    grid = paper_grid(128)
    results = {}
    rows = a.rows.split(";")[:1] if a.quick else a.rows.split(";")
    print("| row | image | metric (mean ± std over ROIs) |\n|---|---|---|")
    for row in rows:
        samples = np.load(Path(a.samples) / f"{row}.npz")["samples"]
        name = SETS[row.split(",")[0]]
        inp = load_picmus_inputs(name)
        resolution = inp.dataset.kind == "resolution"
        kw = dict(points=points_in_view(inp.phantom.points(), grid)) if resolution else dict(
            cysts=inp.dataset.cysts(inp.phantom), speckle_rois=inp.phantom.speckle_boxes() or None)
        env = method_envelope("DRUSmean", drus_mean(samples))
        t = time.time()
        filtered = admss(env, n_iter=5) if a.quick else admss(env)
        seconds = time.time() - t
        images = {"DRUSmean": env, "DRUSmean + ADMSS": filtered, "DRUSvar": method_envelope("DRUSvar", drus_var(samples))}
        results[row] = {"admss_seconds": seconds, "C": int(samples.shape[0])}
        for label, img in images.items():
            m = score_image(img, grid, **kw)
            results[row][label] = {k: [float(np.mean(v)), float(np.std(v))] for k, v in m.items()}
            print(f"| {row} ({name}, C = {samples.shape[0]}) | {label} | "
                  + ", ".join(f"{k} {np.mean(v):.3f} ± {np.std(v):.3f}" for k, v in m.items()) + " |")
        print(f"|  | (ADMSS took {seconds:.1f} s) | |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
