"""The ``drus`` command line: thin subcommands that build a configuration and call library functions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="drus")
def main(verbose: int) -> None:
    """drus — diffusion reconstruction of ultrasound images (DRUS) and DRUSvar echogenicity maps."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)], format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/demo", show_default=True, help="Output folder.")
@click.option("--quick", is_flag=True, help="Smaller grid, fewer samples and steps (about a minute on 2 CPU cores).")
@click.option("--seed", type=int, default=1000, show_default=True, help="Speckle/noise seed (held out from training).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Prior checkpoint (.safetensors); default: the shipped prior.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--samples", "n_samples", type=int, default=None, help="Number of DDRM samples C (default 10; 4 with --quick).")
@click.option("--steps", "n_steps", type=int, default=None, help="DDRM steps (default 50; 20 with --quick).")
@click.option("--gamma", type=float, default=0.02, show_default=True, help="Additive noise level γ of the blur experiment.")
def demo(out_dir, quick, seed, prior, device, n_samples, n_steps, gamma) -> None:
    """Reconstruct the numerical occlusion phantom end to end and write pictures and metrics."""
    from .demo import run_demo

    result = run_demo(
        out_dir, quick=quick, seed=seed, prior=prior, device=device, n_samples=n_samples, n_steps=n_steps, gamma=gamma
    )
    click.echo(result.table())
    click.echo(f"\nwrote {', '.join(str(p) for p in result.files)}")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_png", type=click.Path(dir_okay=False), default=None, help="PNG to write (default: next to the input).")
@click.option("--angles", default="0", show_default=True, help="'0' for the 0° wave, 'all' to compound every angle, or indices like '0,3,6'.")
@click.option("--x-range", nargs=2, type=float, default=(-18.0, 18.0), show_default=True, help="Lateral extent in mm.")
@click.option("--z-range", nargs=2, type=float, default=(10.0, 46.0), show_default=True, help="Depth extent in mm.")
@click.option("--pixel", type=float, default=0.1, show_default=True, help="Pixel size in mm.")
@click.option("--f-number", type=float, default=1.4, show_default=True)
@click.option("--center-frequency", type=float, default=5.208e6, show_default=True, help="Probe f0 in Hz (for the probe description).")
@click.option("--dynamic-range", type=float, default=60.0, show_default=True, help="B-mode range in dB.")
def beamform(path, out_png, angles, x_range, z_range, pixel, f_number, center_frequency, dynamic_range) -> None:
    """Delay-and-sum B-mode of a channel-data file (PICMUS/USTB HDF5, Gammex .mat, Field II HDF5)."""
    from .beamform import bmode, das
    from .geometry import ImageGrid
    from .io import read_channel_data
    from .plotting import save_bmode_figure

    cd = read_channel_data(path)
    if angles == "all":
        idx = list(range(cd.n_tx))
    elif angles == "0":
        idx = [cd.index_of_angle(0.0)]
    else:
        try:
            idx = [int(i) for i in angles.split(",")]
        except ValueError:
            raise click.BadParameter(f"expected '0', 'all' or comma-separated indices, got {angles!r}", param_hint="--angles")
        for i in idx:
            if not 0 <= i < cd.n_tx:
                raise click.BadParameter(f"index {i} out of range: the file has {cd.n_tx} transmits", param_hint="--angles")
    n_x = int(round((x_range[1] - x_range[0]) / pixel)) + 1
    n_z = int(round((z_range[1] - z_range[0]) / pixel)) + 1
    grid = ImageGrid.from_extent(x_min=x_range[0] * 1e-3, x_max=x_range[1] * 1e-3, z_min=z_range[0] * 1e-3, z_max=z_range[1] * 1e-3, n_x=n_x, n_z=n_z)
    probe = cd.probe(center_frequency=center_frequency, bandwidth=0.67)
    img = das(
        cd.data[idx], probe=probe, waves=[cd.plane_wave(i) for i in idx], grid=grid, f_number=f_number,
        modulation_frequency=cd.modulation_frequency,
    )
    db = bmode(img, dynamic_range=dynamic_range, rf=not cd.is_iq)
    out_png = Path(out_png) if out_png else Path(path).with_suffix(".das.png")
    title = f"DAS, {len(idx)} plane wave{'s' if len(idx) > 1 else ''}"
    save_bmode_figure({title: db}, grid, out_png, dynamic_range=dynamic_range, title=Path(path).name)
    click.echo(f"wrote {out_png}")


if __name__ == "__main__":  # pragma: no cover
    main()
