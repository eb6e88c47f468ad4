"""Gammex wires: DAS (1 plane wave, 7 angles) against DRUSmean / DRUSvar from ``drus reconstruct``.

Usage (after ``drus reconstruct RFdata1.mat --method drus-var ... --out OUT``)::

    python benchmarks/gammex_drus.py OUT/RFdata1_drus-var.hdf5 --out docs/results/gammex_drus

Finds the N brightest isolated wires on a fine (0.05 mm) 7-angle DAS image of the reconstruction's
field of view and measures their −6 dB axial and lateral FWHM (drus.evaluation.metrics.resolution_metrics) on:
DAS 1 PW and DAS 7 angles at 0.05 mm pixels, and DAS 1 PW, DRUSmean and DRUSvar on the
reconstruction grid. "DAS 1 PW" is the transmit DRUS reconstructed (its ``angle_deg``). Writes a PNG
(DAS 1 PW, DAS 7 angles, DRUSmean, DRUSvar) and a JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from drus.datasets.acquisition import Acquisition
from drus.physics.beamform import das, envelope
from drus.physics.geometry import ImageGrid
from drus.datasets.io import load_images_hdf5, read_channel_data
from drus.evaluation.metrics import find_point_targets, resolution_metrics, to_db
from drus.evaluation.scoring import method_envelope
from drus.plotting import save_bmode_figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", help="HDF5 written by drus reconstruct --method drus-var")
    ap.add_argument("--out", default="docs/results/gammex_drus", help="output stem (.png, .json)")
    ap.add_argument("--points", type=int, default=8, help="number of wires")
    args = ap.parse_args()

    res = load_images_hdf5(args.result)
    grid = res.grid
    cd = read_channel_data(res.attrs["observation"])
    i0 = cd.index_of_angle(np.radians(float(res.attrs.get("angle_deg", 0.0))))  # the transmit DRUS used
    acq = Acquisition.from_channel_data(cd, i0, center_frequency=float(res.attrs["center_frequency"]),
                                        bandwidth=float(res.attrs["bandwidth"]))
    probe = acq.probe()
    waves = [cd.plane_wave(i) for i in range(cd.n_tx)]
    fine = ImageGrid.from_extent(x_min=grid.x[0], x_max=grid.x[-1], z_min=grid.z[0], z_max=grid.z[-1],
                                 n_x=int(round((grid.x[-1] - grid.x[0]) / 0.05e-3)) + 1,
                                 n_z=int(round((grid.z[-1] - grid.z[0]) / 0.05e-3)) + 1)
    das1_fine = envelope(das(cd.data[i0], probe=probe, waves=waves[i0], grid=fine))
    das7_fine = envelope(das(cd.data, probe=probe, waves=waves, grid=fine))
    das1 = envelope(das(cd.data[i0], probe=probe, waves=waves[i0], grid=grid))
    das7 = envelope(das(cd.data, probe=probe, waves=waves, grid=grid))
    drus_mean = method_envelope("DRUSmean", res["mean"])
    drus_var = method_envelope("DRUSvar", res["var"])

    wires = find_point_targets(das7_fine, fine, args.points)
    images = {
        "DAS 1 PW (0.05 mm)": (das1_fine, fine),
        "DAS 7 angles (0.05 mm)": (das7_fine, fine),
        "DAS 1 PW (grid)": (das1, grid),
        "DAS 7 angles (grid)": (das7, grid),
        "DRUSmean (grid)": (drus_mean, grid),
        "DRUSvar (grid)": (drus_var, grid),
    }
    table = {}
    for name, (img, g) in images.items():
        r = resolution_metrics(img, g, wires).to_dict()
        table[name] = {"axial_mm": [v * 1e3 for v in r["axial"]["values"]],
                       "lateral_mm": [v * 1e3 for v in r["lateral"]["values"]],
                       "axial_mean_mm": r["axial"]["mean"] * 1e3, "axial_std_mm": r["axial"]["std"] * 1e3,
                       "lateral_mean_mm": r["lateral"]["mean"] * 1e3, "lateral_std_mm": r["lateral"]["std"] * 1e3}
        print(f"{name:24s} axial {r['axial']['mean'] * 1e3:.3f} ± {r['axial']['std'] * 1e3:.3f} mm, "
              f"lateral {r['lateral']['mean'] * 1e3:.3f} ± {r['lateral']['std'] * 1e3:.3f} mm")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"result": str(args.result), "grid": repr(grid), "wires_mm": (wires * 1e3).round(2).tolist(),
               "sigma0": float(res.attrs.get("sigma0", np.nan)), "sigma0_source": res.attrs.get("sigma0_source", ""),
               "pulse": {"f0_hz": float(res.attrs["center_frequency"]), "bandwidth": float(res.attrs["bandwidth"]),
                         "source": res.attrs.get("pulse_source", "")},
               "fwhm": table}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    angle = float(res.attrs.get("angle_deg", 0.0))
    save_bmode_figure({f"DAS, 1 plane wave ({angle:g}°)": to_db(das1), "DAS, 7 angles": to_db(das7), "DRUSmean": to_db(drus_mean),
                       "DRUSvar": to_db(drus_var)}, grid, out.with_suffix(".png"),
                      title=f"Gammex 403GS, {grid.n_z}×{grid.n_x} grid, [−60, 0] dB", columns=4)
    print(f"wrote {out.with_suffix('.png')}, {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
