"""The ``drus`` command line: thin subcommands that build a configuration and call library functions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np

from drus.defaults import PRIOR_FRACTION as DEFAULT_PRIOR_FRACTION
from drus.sampling.config import OperatorConfig as _OperatorConfig
from drus.sampling.config import SamplerConfig as _SamplerConfig

#: The defaults every command shows, from the one place they are declared (no torch import here).
_PAPER, _OPERATOR = _SamplerConfig(), _OperatorConfig()


def _sampler_options(command):
    """The DRUS sampler's options shared by ``reconstruct`` and ``evaluate picmus`` (one declaration)."""
    for option in reversed((
        click.option("--prior-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=DEFAULT_PRIOR_FRACTION,
                     show_default=True, help="DRUS: the sampler's σ0 is raised so that the prior decides at least this "
                     "fraction of BH's components (drus.sampling.scaling.regularised_sigma0; chosen on simulations, "
                     "docs/realdata.md). 0: σ0 is the noise level, as in the paper."),
        click.option("--eta", type=click.FloatRange(min=0, max=1), default=_PAPER.eta, show_default=True, help="DDRM's η."),
        click.option("--eta-b", type=click.FloatRange(min=0, max=1), default=_PAPER.eta_b, show_default=True,
                     help="DDRM's η_B."),
        click.option("--paper", is_flag=True, help="The paper's exact configuration: --prior-fraction 0, η 0.85, η_B 1 "
                     "and, for the four PICMUS sets, the paper's σ0 (otherwise σ0 is estimated from the data)."),
    )):
        command = option(command)
    return command


class InputError(click.ClickException):
    """A drus error about the user's input (a file, an option, a value): ``Error: …`` on one line, exit 2."""

    exit_code = 2


#: Exceptions that drus raises for user input (files, options, values). Anything else is a bug and
#: keeps its traceback.
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (whitespace runs, newlines included, become one space)."""
    message = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc  # KeyError quotes its str
    text = " ".join(str(message).split())
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text or type(exc).__name__


class DrusGroup(click.Group):
    """A click group that turns drus's input errors into one-line ``Error:`` messages (exit code 2).

    ``drus --debug …`` shows the full traceback instead.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except USER_ERRORS as exc:
            if ctx.find_root().params.get("debug"):
                raise
            raise InputError(one_line(exc)) from exc


@click.group(cls=DrusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of a one-line message.")
@click.version_option(package_name="drus")
def main(verbose: int, debug: bool) -> None:
    """drus — diffusion reconstruction of ultrasound images (DRUS) and DRUSvar echogenicity maps."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)], format="%(levelname)s %(name)s: %(message)s")


def _size_multiple(model) -> int:
    """The image side the prior's UNet needs a multiple of (1 if it does not say)."""
    for m in model.modules():
        mult = getattr(getattr(m, "config", None), "size_multiple", None)
        if mult:
            return int(mult)
    return 1


def _check_size_multiple(model, size: int, option: str) -> None:
    """Reject an image side the prior cannot take, before any decomposition or sampling."""
    m = _size_multiple(model)
    if size % m:
        lo, hi = size // m * m, (size // m + 1) * m
        raise click.BadParameter(f"{size} is not a multiple of {m}, which the prior's UNet needs (its "
                                 f"2 ** (levels − 1)); use e.g. {lo or hi} or {hi}", param_hint=option)


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/demo", show_default=True, help="Output folder.")
@click.option("--quick", is_flag=True, help="C = 4 samples and 20 steps instead of 10 and 50, in both parts (about a minute on 2 CPU cores).")
@click.option("--seed", type=int, default=1000, show_default=True, help="Speckle/noise seed (held out from training).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Prior checkpoint (.safetensors); default: the shipped prior.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--samples", "n_samples", type=click.IntRange(min=2), default=None, help="Number of DDRM samples C ≥ 2 (default 10; 4 with --quick).")
@click.option("--steps", "n_steps", type=click.IntRange(min=1), default=None, help="DDRM steps (default 50; 20 with --quick).")
@click.option("--gamma", type=click.FloatRange(min=0), default=0.02, show_default=True, help="Additive noise level γ: of the blur observation, and of the channel data (γ·max|y|).")
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True, help="Grid side in pixels over the paper's field of view.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True, help="Network precision (bf16/fp16 for GPUs).")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
@click.option("--plane-wave-size", type=click.IntRange(min=16), default=96, show_default=True, help="Plane-wave panel: pixels along the depth of its grid (96: 64 × 96 unknowns of 0.15 mm).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Decomposition cache of the plane-wave panel (default: $DRUS_CACHE or ~/.cache/drus, as drus reconstruct).")
def demo(out_dir, quick, seed, prior, device, n_samples, n_steps, gamma, size, precision, overwrite, plane_wave_size,
         cache_dir) -> None:
    """Reconstruct the numerical occlusion phantom end to end (the paper's separable-blur study) and a
    simulated plane-wave acquisition through the drus reconstruct FILE path; write pictures and metrics."""
    from drus.pipelines.demo import DEMO_FILES, run_demo
    from drus.outputs import check_writable_dir, refuse_overwrite
    from drus.models.prior import load_prior
    from drus.device import resolve_device

    # everything that can be wrong is checked before the minutes of sampling
    resolve_device(device)
    out = check_writable_dir(out_dir)
    refuse_overwrite([out / f for f in DEMO_FILES], overwrite=overwrite)
    if cache_dir is not None:
        check_writable_dir(cache_dir, option="--cache-dir")
    _check_size_multiple(load_prior(prior), size, "--size")
    result = run_demo(
        out_dir, quick=quick, seed=seed, prior=prior, device=device, n_samples=n_samples, n_steps=n_steps, gamma=gamma,
        size=size, precision=precision, overwrite=overwrite, plane_wave_size=plane_wave_size, cache_dir=cache_dir,
    )
    click.echo(result.table())
    click.echo(f"\nwrote {', '.join(str(p) for p in result.files)}")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_png", type=click.Path(dir_okay=False), default=None, help="PNG to write (default: out/beamform/<input name>.das.png; never beside the input).")
@click.option("--angles", default="0", show_default=True, help="'0' for the 0° wave, 'all' to compound every angle, or indices like '0,3,6'.")
@click.option("--x-range", nargs=2, type=float, default=(-18.0, 18.0), show_default=True, help="Lateral extent in mm.")
@click.option("--z-range", nargs=2, type=float, default=(10.0, 46.0), show_default=True, help="Depth extent in mm.")
@click.option("--pixel", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True, help="Pixel size in mm (> 0).")
@click.option("--f-number", type=click.FloatRange(min=0, min_open=True), default=1.4, show_default=True)
@click.option("--center-frequency", type=click.FloatRange(min=0, min_open=True), default=5.208e6, show_default=True, help="Probe f0 in Hz (for the probe description).")
@click.option("--dynamic-range", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True, help="B-mode range in dB (> 0).")
@click.option("--points", "n_points", type=click.IntRange(min=0), default=0, help="Measure the −6 dB FWHM of the N brightest isolated point targets (wires).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output PNG.")
def beamform(path, out_png, angles, x_range, z_range, pixel, f_number, center_frequency, dynamic_range, n_points, overwrite) -> None:
    """Delay-and-sum B-mode of a channel-data file (PICMUS/USTB HDF5, Gammex .mat, Field II HDF5)."""
    from drus.physics.beamform import das, envelope, log_compress
    from drus.physics.geometry import ImageGrid
    from drus.datasets.io import read_channel_data
    from drus.outputs import check_writable_dir, refuse_overwrite
    from drus.plotting import save_bmode_figure

    for name, (lo, hi) in (("--x-range", x_range), ("--z-range", z_range)):
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise click.BadParameter(f"expected MIN MAX in mm with MIN < MAX, got {lo:g} {hi:g}", param_hint=name)
        if (hi - lo) / pixel > 20000:
            raise click.BadParameter(f"{(hi - lo) / pixel:.0f} pixels along {name[2]} at --pixel {pixel:g} mm; "
                                     "use a larger --pixel or a smaller range", param_hint="--pixel")
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
    out_png = Path(out_png) if out_png else Path("out") / "beamform" / f"{Path(path).stem}.das.png"
    check_writable_dir(out_png.parent, option="--out")
    refuse_overwrite([out_png], overwrite=overwrite)
    n_x = int(round((x_range[1] - x_range[0]) / pixel)) + 1
    n_z = int(round((z_range[1] - z_range[0]) / pixel)) + 1
    grid = ImageGrid.from_extent(x_min=x_range[0] * 1e-3, x_max=x_range[1] * 1e-3, z_min=z_range[0] * 1e-3, z_max=z_range[1] * 1e-3, n_x=n_x, n_z=n_z)
    probe = cd.probe(center_frequency=center_frequency, bandwidth=0.67)
    img = das(
        cd.data[idx], probe=probe, waves=[cd.plane_wave(i) for i in idx], grid=grid, f_number=f_number,
        modulation_frequency=cd.modulation_frequency,
    )
    env = envelope(img)
    db = log_compress(env, dynamic_range=dynamic_range)
    title = f"DAS, {len(idx)} plane wave{'s' if len(idx) > 1 else ''}"
    save_bmode_figure({title: db}, grid, out_png, dynamic_range=dynamic_range, title=Path(path).name)
    click.echo(f"wrote {out_png}")
    if n_points:
        from drus.evaluation.metrics import find_point_targets, resolution_metrics

        pts = find_point_targets(env, grid, n_points)
        res = resolution_metrics(env, grid, pts)
        click.echo(f"{'x [mm]':>8}{'z [mm]':>8}{'axial FWHM [mm]':>18}{'lateral FWHM [mm]':>20}")
        for x, z, a, l in zip(res.x, res.z, res.axial, res.lateral):
            click.echo(f"{x * 1e3:8.2f}{z * 1e3:8.2f}{a * 1e3:18.3f}{l * 1e3:20.3f}")
        d = res.to_dict()
        click.echo(f"mean ± std: axial {d['axial']['mean'] * 1e3:.3f} ± {d['axial']['std'] * 1e3:.3f} mm, "
                   f"lateral {d['lateral']['mean'] * 1e3:.3f} ± {d['lateral']['std'] * 1e3:.3f} mm")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/prior", show_default=True, help="Run folder; an existing run there is resumed.")
@click.option("--data", default="synthetic", show_default=True, help="'synthetic' (speckle over random echogenicity maps), 'beamformed' (beamformed-RF-like images on the 128² DRUS grid, with pulse, sound-speed and depth-gain mismatch) or a folder of images.")
@click.option("--steps", type=int, default=20000, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--image-size", type=int, default=64, show_default=True, help="Training crop side (pixels).")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--ema", "ema_decay", type=float, default=0.999, show_default=True, help="EMA decay (the paper uses 0.9999 for long runs).")
@click.option("--grad-clip", type=float, default=1.0, show_default=True)
@click.option("--learn-sigma", is_flag=True, help="Also learn the variance (hybrid loss).")
@click.option("--psf-std", "psf_std_px", type=float, default=None, help="Blur synthetic images with a Gaussian PSF of this std (pixels).")
@click.option("--model", "model_json", default=None, help='UNet config overrides as JSON, e.g. \'{"model_channels": 32}\'.')
@click.option("--preset", type=click.Choice(["default", "small"]), default="default", show_default=True, help="Network size: 'default' = the shipped prior's architecture.")
@click.option("--init-from", type=click.Path(exists=True, dir_okay=False), default=None, help="Fine-tune a drus prior (.safetensors, e.g. src/drus/priors/default.safetensors) or a guided-diffusion .pt checkpoint (lr 1e-4, batch 1 in the paper).")
@click.option("--init-config", "init_config_json", default=None, help="Architecture of --init-from as JSON (default: OpenAI 256x256 uncond).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
def train(out_dir, data, steps, batch_size, image_size, lr, ema_decay, grad_clip, learn_sigma, psf_std_px, model_json, preset, init_from, init_config_json, seed, device, threads, checkpoint_every) -> None:
    """Train (or fine-tune) a diffusion prior; writes <out>/prior.safetensors + prior.json."""
    from drus.training.train import DEFAULT_PRIOR_MODEL, TrainConfig, train as run_train

    model = dict(DEFAULT_PRIOR_MODEL) if preset == "default" else {}
    if model_json:
        try:
            model.update(json.loads(model_json))
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--model")
    cfg = TrainConfig(
        out_dir=out_dir, data=data, steps=steps, batch_size=batch_size, image_size=image_size, lr=lr,
        ema_decay=ema_decay, grad_clip=grad_clip, learn_sigma=learn_sigma, psf_std_px=psf_std_px, model=model,
        init_from=init_from, seed=seed, device=device, threads=threads, checkpoint_every=checkpoint_every,
        init_config=json.loads(init_config_json) if init_config_json else None,
    )
    path = run_train(cfg)
    click.echo(f"prior written to {path}")


@main.group()
def evaluate() -> None:
    """Reproduce the paper's evaluations."""


@evaluate.command("numerical")
@click.option("--phantom", type=click.Choice(["occlusion", "scatterer", "both"]), default="both", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="docs/results/numerical", show_default=True)
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Default: the shipped prior.")
@click.option("--realisations", type=click.IntRange(min=1), default=9, show_default=True, help="Speckle realisations per noise level (held-out seeds).")
@click.option("--samples", "n_samples", type=click.IntRange(min=2), default=_PAPER.n_samples, show_default=True)
@click.option("--steps", "n_steps", type=click.IntRange(min=1), default=_PAPER.n_steps, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
def evaluate_numerical(phantom, out_dir, prior, realisations, n_samples, n_steps, size, device, overwrite) -> None:
    """The numerical study of paper Figures 2-3: occlusion (gCNR, SNR) and scatterer (FWHM) phantoms."""
    from drus.pipelines.experiments import format_table, occlusion_study, save_study, scatterer_study
    from drus.outputs import check_writable_dir, refuse_overwrite
    from drus.models.prior import load_prior
    from drus.device import resolve_device

    dev = resolve_device(device)
    out = check_writable_dir(out_dir)
    names = [n for n in ("occlusion", "scatterer") if phantom in (n, "both")]
    refuse_overwrite([out / f"{n}.{ext}" for n in names for ext in ("json", "md", "png")], overwrite=overwrite)
    model = load_prior(prior, device=dev)
    _check_size_multiple(model, size, "--size")
    from drus.sampling.config import SamplerConfig

    kw = dict(sampler=SamplerConfig.paper(n_samples=n_samples, n_steps=n_steps), size=size, device=dev)
    studies = []
    if phantom in ("occlusion", "both"):
        studies.append(occlusion_study(model, seeds=tuple(range(1000, 1000 + realisations)), **kw))
    if phantom in ("scatterer", "both"):
        studies.append(scatterer_study(model, seeds=tuple(range(2000, 2000 + realisations)), **kw))
    for st in studies:
        files = save_study(st, out_dir)
        click.echo(f"\n{st.phantom} phantom ({realisations} realisations, C={n_samples}, {n_steps} steps, {size}²)")
        click.echo(format_table(st))
        click.echo(f"wrote {', '.join(str(f) for f in files)}")


@evaluate.command("by-check")
@click.option("--dataset", type=click.Choice(["simu_cont", "simu_reso"]), default="simu_cont", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="docs/results/by_check", show_default=True)
@click.option("--data", "data_root", type=click.Path(file_okay=False), default=None, help="Reference data folder (default $DRUS_REFERENCE_DATA or ../shared/data).")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
def evaluate_by_check(dataset, out_dir, data_root, overwrite) -> None:
    """Simulate a PICMUS phantom through drus's H and B and compare with the DRUS By file."""
    from drus.physics.beamform import MatchedFilterBeamformer, envelope, log_compress
    from drus.physics.geometry import picmus
    from drus.datasets.io import read_drus_by
    from drus.outputs import check_writable_dir, refuse_overwrite, write_text_atomic
    from drus.physics.phantoms import PicmusPhantom
    from drus.datasets.picmus import PICMUS_SETS, compare_by, simulate_by
    from drus.plotting import save_bmode_figure

    ds = PICMUS_SETS[dataset]
    files = ds.files(data_root)
    for key in ("phantom", "by_drus"):
        if not Path(files[key]).is_file():
            raise click.BadParameter(f"{files[key]} not found; point --data at the reference folder (the one "
                                     "holding picmus/), or set $DRUS_REFERENCE_DATA", param_hint="--data")
    out = check_writable_dir(out_dir)
    refuse_overwrite([out / f"{dataset}.png", out / f"{dataset}.json"], overwrite=overwrite)
    probe, wave, grid = picmus(256)
    bf = MatchedFilterBeamformer(probe, wave, grid)
    phantom = PicmusPhantom.from_file(files["phantom"])
    ours = simulate_by(phantom, bf, factor=ds.by_factor)
    ref = read_drus_by(files["by_drus"])
    report = compare_by(ours, ref, grid, phantom) if phantom.cyst_disks() else {}
    save_bmode_figure({f"drus B H o ({dataset} phantom)": log_compress(envelope(ours)),
                       f"DRUS By file ({dataset}.mat)": log_compress(envelope(ref))},
                      grid, out / f"{dataset}.png", overlays=list(phantom.cyst_disks()), title="envelope, [−60, 0] dB")
    write_text_atomic(out / f"{dataset}.json", json.dumps(report, indent=2))
    click.echo(json.dumps(report, indent=2))
    click.echo(f"wrote {out / (dataset + '.png')}, {out / (dataset + '.json')}")


@main.command("reproduce")
@click.argument("target", type=click.Choice(["numerical", "picmus", "all"]), default="all")
@click.option("--quick", is_flag=True, help="Reduced run (3 levels per phantom, 2 realisations, C = 4, 20 steps, small grids): every code path in minutes on 2 CPU cores; not comparable with the paper.")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Prior checkpoint; default: the shipped prior.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/reproduce", show_default=True, help="Report and finished units; a run with the same settings there is resumed.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1, …")
@click.option("--data", "data_root", type=click.Path(file_okay=False), default=None, help="Reference data folder (default $DRUS_REFERENCE_DATA or ../shared/data).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: 1 with --quick, torch's choice otherwise).")
def reproduce(target, quick, prior, out_dir, device, data_root, threads) -> None:
    """The paper's experiments (Figs. 2–5, Table I) into one self-contained HTML report; resumable."""
    import shlex

    from drus.outputs import check_writable_dir
    from drus.pipelines.reproduce import ReproduceConfig, run_reproduction

    command = shlex.join(["drus", "reproduce", target] + ["--quick"] * quick + ["--prior", prior] * bool(prior)
                         + ["--out", out_dir, "--device", device] + ["--data", data_root] * bool(data_root)
                         + ["--threads", str(threads)] * bool(threads))
    config = ReproduceConfig.reduced(target) if quick else ReproduceConfig.paper(target)
    rep = run_reproduction(config, out_dir=check_writable_dir(out_dir), prior=prior, device=device,
                           data_root=data_root, command=command, threads=threads)
    click.echo(f"{len(rep.computed)} units computed, {len(rep.reused)} reused from an earlier run; "
               f"wall time {rep.provenance['wall_seconds'] / 60:.1f} min")
    click.echo(f"wrote {', '.join(str(f) for f in rep.files.values())}")


@main.command()
@click.option("--size", type=click.IntRange(min=2), default=None, help="Grid side n: the paper's field of view (x −18…18 mm, z 10…46 mm) at n × n pixels; with --acquisition, pixels along the grid's longer side, as in drus reconstruct.")
@click.option("--acquisition", type=click.Path(exists=True, dir_okay=False), default=None, help="Decompose BH of this channel-data file on the grid drus reconstruct would use (with the same --angle, --x-range, --z-range, --size): warms its cache.")
@click.option("--angle", type=float, default=None, help="With --acquisition: steering angle in degrees (default: nearest 0°).")
@click.option("--x-range", nargs=2, type=float, default=None, help="With --acquisition: lateral extent in mm.")
@click.option("--z-range", nargs=2, type=float, default=None, help="With --acquisition: depth extent in mm.")
@click.option("--method", type=click.Choice(["gram", "svd"]), default="gram", show_default=True, help="Eigendecomposition of AᵀA (faster) or SVD of A.")
@click.option("--threshold", type=float, default=_OPERATOR.threshold, show_default=True, help="Components with s ≤ threshold·s1 get s = 0 (sampled from the prior).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True, help="Storage dtype of V.")
@click.option("--compute-dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True, help="dtype of the dense blocks and their decomposition.")
@click.option("--complement", type=click.Choice(["auto", "basis", "projector"]), default="auto", show_default=True, help="Complete V, or kept vectors + implicit complement.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Default: $DRUS_CACHE or ~/.cache/drus.")
@click.option("--no-cache", is_flag=True, help="Compute in memory only (nothing read or written).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random and speckle test inputs.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch (LAPACK/BLAS follow OMP_NUM_THREADS).")
def decompose(size, acquisition, angle, x_range, z_range, method, threshold, dtype, compute_dtype, complement, device, cache_dir, no_cache, seed, threads) -> None:
    """Precompute (or load) the exact flip-split decomposition of BH and report its cost and accuracy."""
    if acquisition is not None:
        return _decompose_acquisition(acquisition, **click.get_current_context().params)
    if size is None:
        raise click.UsageError("give --size N (the paper's field of view at N × N pixels) or --acquisition FILE")
    import resource
    import time

    import torch

    from drus.physics.beamform import MatchedFilterBeamformer
    from drus.physics.decompose import decompose_bh, operator_error
    from drus.physics.geometry import picmus
    from drus.physics.phantoms import random_echogenicity, speckle
    from drus.device import resolve_device

    _torch_threads(threads)
    dev = resolve_device(device)
    probe, wave, grid = picmus(size)
    t0 = time.perf_counter()
    bf = MatchedFilterBeamformer(probe, wave, grid)
    _ = bf.H, bf.B
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        op = decompose_bh(bf, method=method, threshold=threshold, dtype=dtype, compute_dtype=compute_dtype,
                          complement=complement, device=dev, cache_dir=cache_dir, cache=not no_cache, progress=True)
    except ValueError as exc:
        raise click.UsageError(one_line(exc))
    t_dec = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)

    rng = np.random.default_rng(seed)
    inputs = {
        "random": rng.standard_normal(grid.shape).astype(np.float32),
        "speckle": speckle(random_echogenicity(grid, rng=rng), rng=rng).astype(np.float32),
    }
    blocks = op.blocks
    n = grid.size
    click.echo(f"BH on {grid} (N = {n}), flip blocks {blocks['even'].n} + {blocks['odd'].n}, {method}, "
               f"compute {compute_dtype}, V stored as {dtype}, device {dev}")
    click.echo(f"H, B built in {t_build:.1f} s; decomposition {t_dec:.1f} s")
    for p, m in op.metadata["blocks"].items():
        if m["source"] == "cache":
            click.echo(f"  {p} block: loaded from the cache (computed in {m['seconds_total']:.1f} s on {m['device']})")
        else:
            click.echo(f"  {p} block: assembled in {m['seconds_assemble']:.1f} s, decomposed in "
                       f"{m['seconds_total'] - m['seconds_assemble']:.1f} s")
    click.echo(f"peak RSS {peak_rss:.2f} GiB" + (f", peak CUDA {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if dev.type == "cuda" else ""))
    click.echo(f"s1 = {op.s1:.4g}; reliable floor {op.floor:.2g}·s1")
    s_all = np.concatenate([b.singular_values for b in blocks.values()])
    for t in sorted({1e-1, 1e-2, 1e-3, threshold}, reverse=True):
        k = int((s_all > max(t, op.floor) * op.s1).sum())
        click.echo(f"  kept above {t:g}·s1: {k} of {n} ({100 * k / n:.1f} %)" + ("  ← this operator" if t == threshold else ""))
    click.echo(f"layout {op.layouts['even']}/{op.layouts['odd']}, spectral size {op.spectral_shape[0]}, "
               f"V {op.nbytes / 2**20:.1f} MiB in memory")
    if op.metadata.get("cache_dir"):
        from pathlib import Path

        files = sorted(Path(op.metadata["cache_dir"]).glob(f"bh-{op.metadata['key'][:24]}-*"))
        click.echo(f"cache: {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB in {len(files)} files under {op.metadata['cache_dir']}")
    # the per-step cost of DDRM's transforms: one Vᵀ and one V on C = 10 images
    x = torch.randn(10, *grid.shape, device=dev)
    op.V(op.Vt(x))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(3):
        op.V(op.Vt(x))
    sync()
    click.echo(f"Vᵀ + V on 10 images (one DDRM step): {(time.perf_counter() - t0) / 3 * 1e3:.1f} ms on {dev}")
    others = [t for t in (1e-2, 1e-3) if t != threshold and (t > threshold or set(op.layouts.values()) == {"basis"})]
    for t, o in [(threshold, op)] + [(t, op.with_threshold(t)) for t in others]:
        errs = ", ".join(f"{name} {operator_error(o, bf, x):.3g}" for name, x in inputs.items())
        click.echo(f"operator error ‖USVᵀx − BHx‖/‖BHx‖ at threshold {t:g}: {errs}")


_PICMUS_NAMES = ("simu_reso", "simu_cont", "expe_reso", "expe_cont")


def _sampler_config(*, paper: bool, n_samples: int, n_steps: int, seed: int, eta: float, eta_b: float,
                    prior_fraction: float):
    """The :class:`drus.sampling.config.SamplerConfig` of a command's options (``--paper``: the paper's η, η_B
    and σ0 use, keeping C, steps and seed)."""
    from drus.sampling.config import SamplerConfig

    if paper:
        return SamplerConfig.paper(n_samples=n_samples, n_steps=n_steps, seed=seed)
    return SamplerConfig(n_samples=n_samples, n_steps=n_steps, seed=seed, eta=eta, eta_b=eta_b,
                         prior_fraction=prior_fraction)


def _torch_threads(threads) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


@evaluate.command("picmus")
@click.option("--sets", default=",".join(_PICMUS_NAMES), show_default=True, help="Comma-separated PICMUS sets.")
@click.option("--unknown-size", type=click.IntRange(min=2), default=_OPERATOR.unknown_size, show_default=True, help="Side of the DRUS unknown grid (By stays on 256²; 256 = the paper's square operator, hours of CPU decomposition).")
@click.option("--samples", "n_samples", type=click.IntRange(min=2), default=_PAPER.n_samples, show_default=True, help="DDRM samples C.")
@click.option("--steps", "n_steps", type=click.IntRange(min=1), default=_PAPER.n_steps, show_default=True, help="DDRM steps.")
@click.option("--threshold", type=click.FloatRange(min=0, max=1, max_open=True), default=_OPERATOR.threshold, show_default=True, help="Decomposition threshold relative to s1.")
@click.option("--compute-dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True, help="dtype of the BH decomposition (float32: ≈ 2× faster and half the memory; the practical choice for --unknown-size 256 on a CPU).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Prior checkpoint; default: the shipped prior.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="docs/results/picmus", show_default=True)
@click.option("--data", "data_root", type=click.Path(file_okay=False), default=None, help="Reference data folder (default $DRUS_REFERENCE_DATA or ../shared/data).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Decomposition cache (default $DRUS_CACHE or ~/.cache/drus).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True, help="Network precision (bf16/fp16 for GPUs).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
@_sampler_options
def evaluate_picmus_command(sets, unknown_size, n_samples, n_steps, threshold, compute_dtype, prior, out_dir, data_root, cache_dir, device, seed, precision, threads, overwrite, prior_fraction, paper, eta, eta_b) -> None:
    """Paper Table I on PICMUS: DAS 75/1 PW, DENOmean, DRUSmean, DRUSvar (gCNR, SNR, FWHM)."""
    from drus.datasets.picmus import PICMUS_SETS
    from drus.pipelines.picmus import evaluate_picmus
    from drus.sampling.config import OperatorConfig
    from drus.models.prior import load_prior
    from drus.device import resolve_device

    names = [n.strip() for n in sets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PICMUS_SETS]
    if unknown or not names:
        raise click.BadParameter(f"unknown set(s) {', '.join(unknown) or '(none given)'}; choose among {', '.join(PICMUS_SETS)}",
                                 param_hint="--sets")
    from drus.outputs import check_writable_dir, refuse_overwrite

    _torch_threads(threads)
    dev = resolve_device(device)
    out = check_writable_dir(out_dir)
    refuse_overwrite([out / f"{n}.hdf5" for n in names] + [out / f for f in ("table.md", "results.json", "picmus.png")],
                     overwrite=overwrite)
    model = load_prior(prior, device=dev, precision=precision)
    _check_size_multiple(model, unknown_size, "--unknown-size")
    try:
        sampler = _sampler_config(paper=paper, n_samples=n_samples, n_steps=n_steps, seed=seed, eta=eta, eta_b=eta_b,
                                  prior_fraction=prior_fraction)
        operator = OperatorConfig(unknown_size=unknown_size, threshold=threshold, compute_dtype=compute_dtype)
        result = evaluate_picmus(model, sets=names, operator=operator, sampler=sampler,
                                 sigma0_from_data=not paper, device=dev,
                                 data_root=data_root, cache_dir=cache_dir,
                                 out_dir=out_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise click.UsageError(one_line(exc))
    click.echo(result.table())
    click.echo(f"\nwrote {out_dir}/: {', '.join(f'{n}.hdf5' for n in names)}, table.md, results.json, picmus.png")


RECONSTRUCT_METHODS = ("das", "deno-mean", "drus-mean", "drus-var")


#: The two flattenings of a By ``.mat`` (a MATLAB ``(1, n_z·n_x)`` vector): DRUS files are column-major
#: (``by_drus/``), DENO files row-major and normalised to max 1 (``by_deno/``). Read with the wrong one,
#: a square image comes out transposed without any other sign, so the layout is checked.
BY_LAYOUTS = {"drus": "column-major, by_drus/", "deno": "row-major, max |By| = 1, by_deno/"}


def _by_layout(path: Path, by_max: float, layout: str | None, method: str) -> str:
    """The layout to read ``path`` with: ``layout`` if given, else the method's, checked against the file.

    Without ``--layout`` the file must agree with the method's layout by every sign it carries: the
    folder it sits in (``by_drus/``, ``by_deno/``) and the DENO normalisation (max |By| = 1).
    """
    if layout is not None:
        return layout
    expected = "deno" if method == "deno-mean" else "drus"
    other = "drus" if expected == "deno" else "deno"
    folder = path.parent.name.lower()
    normalised = abs(by_max - 1.0) <= 1e-5
    found = None
    if folder == f"by_{other}":
        found = f"it is in a by_{other}/ folder"
    elif expected == "drus" and normalised:
        found = "it is normalised to max |By| = 1 like a DENO input"
    elif expected == "deno" and not normalised:
        found = f"its max |By| is {by_max:.4g}, while DENO inputs are normalised to 1"
    if found:
        raise click.BadParameter(
            f"{path}: {found}, so it looks like a {other.upper()}-layout By ({BY_LAYOUTS[other]}), but --method "
            f"{method} reads the {expected.upper()} layout ({BY_LAYOUTS[expected]}); read with the wrong layout the "
            f"image is transposed. Pass the by_{expected}/ file, or --layout {other} if the file is {other.upper()}-layout",
            param_hint="OBSERVATION")
    return expected


def _read_observation(path: Path, method: str, shape: tuple[int, int], layout: str | None = None):
    """``("by" | "channel", data, layout)``: a By/DENO ``.mat`` image, or channel data from an HDF5 file."""
    from drus.datasets.io import DataFileError, read_channel_data, read_deno_by, read_drus_by

    try:
        if path.suffix.lower() == ".mat":
            by = read_drus_by(path, shape=shape)
            used = _by_layout(path, float(np.abs(by).max()), layout, method)
            return "by", (by if used == "drus" else read_deno_by(path, shape=shape)), used
        if layout is not None:
            raise click.BadParameter("applies to By .mat files only, not to channel data", param_hint="--layout")
        return "channel", read_channel_data(path), None
    except DataFileError as exc:
        n = f"{shape[0] * shape[1]:,}".replace(",", " ")
        raise click.BadParameter(
            f"{exc}. drus reconstruct takes a DRUS/DENO By .mat of {shape[0]} × {shape[1]} = {n} values on the "
            "paper's grid (x −18…18 mm, z 10…46 mm) or USTB/PICMUS channel data (HDF5)", param_hint="OBSERVATION")
    except OSError as exc:
        raise click.BadParameter(f"{path}: not a readable .mat/HDF5 file ({exc})", param_hint="OBSERVATION")


@main.command("reconstruct")
@click.argument("observation", type=click.Path(exists=True, dir_okay=False))
@click.option("--method", type=click.Choice(RECONSTRUCT_METHODS), required=True, help="das: B-mode of By; deno-mean: DENO on the By image; drus-mean/drus-var: DRUS with the decomposed BH.")
@click.option("--dataset", type=click.Choice(_PICMUS_NAMES), default=None, help="PICMUS set for σ0, the By scale and extra ROIs; default: inferred from the file name when it matches.")
@click.option("--sigma0", type=float, default=None, help="Noise std of the observation (By units; max-normalised image for deno-mean). Overrides the dataset's.")
@click.option("--layout", type=click.Choice(sorted(BY_LAYOUTS)), default=None, help="Flattening of a By .mat: drus (column-major, by_drus/) or deno (row-major, max 1, by_deno/). Default: the method's (deno for deno-mean, else drus), checked against the file.")
@click.option("--unknown-size", type=click.IntRange(min=2), default=_OPERATOR.unknown_size, show_default=True, help="Side of the DRUS unknown grid (a multiple of the prior's 2 ** (levels − 1)).")
@click.option("--samples", "n_samples", type=click.IntRange(min=1), default=_PAPER.n_samples, show_default=True)
@click.option("--steps", "n_steps", type=click.IntRange(min=1), default=_PAPER.n_steps, show_default=True)
@click.option("--threshold", type=click.FloatRange(min=0, max=1, max_open=True), default=_OPERATOR.threshold, show_default=True, help="Decomposition threshold relative to s1.")
@click.option("--compute-dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True, help="dtype of the BH decomposition (float32: ≈ 2× faster and half the memory; the practical choice for --unknown-size 256 on a CPU).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Default: the shipped prior.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/reconstruct", show_default=True)
@click.option("--phantom", type=click.Path(exists=True, dir_okay=False), default=None, help="PICMUS phantom HDF5: adds gCNR/SNR/FWHM (metrics JSON).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Decomposition cache.")
@click.option("--no-cache", is_flag=True, help="Decompose in memory only (no cache read or written).")
@click.option("--angle", type=float, default=None, help="Channel data: steering angle in degrees of the transmit to use (default: the one nearest 0°).")
@click.option("--x-range", nargs=2, type=float, default=None, help="Channel data: lateral extent in mm (default: the aperture).")
@click.option("--z-range", nargs=2, type=float, default=None, help="Channel data: depth extent in mm (default: 10 λ to the deepest recorded echo).")
@click.option("--size", "grid_size", type=click.IntRange(min=8), default=None, help="Channel data: pixels along the longer side of the grid (default: λ/2 pixels, capped at 128² unknowns).")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run of this observation and method in --out.")
@_sampler_options
def reconstruct_command(observation, method, angle, x_range, z_range, grid_size, dataset, sigma0, layout, unknown_size, n_samples, n_steps, threshold, compute_dtype, prior, out_dir, phantom, cache_dir, no_cache, device, seed, threads, overwrite, prior_fraction, paper, eta, eta_b) -> None:
    """Reconstruct one observation: a DRUS By .mat, a DENO By .mat or PICMUS/USTB channel data.

    A .mat is read as a DRUS By (column-major, by_drus/) for das and drus-*, as a DENO input
    (row-major, by_deno/) for deno-mean; both 256 × 256 on the paper's grid. The file must agree
    with that layout (its folder, and DENO's max-1 normalisation), since the other flattening gives a
    silently transposed image; --layout reads it in the given layout instead (a DRUS By is then
    normalised to max 1 for deno-mean; a DENO input for drus-* needs --sigma0 in its units).
    Channel data (HDF5): the 0° wave gets the DRUS preprocessing (depth gain, max 1, × the set's By
    factor — 30 contrast, 10 resolution, 1 without a dataset) and is beamformed with drus's B
    (drus.datasets.picmus.channel_data_to_by); the dataset's σ0 then applies only approximately.
    Writes <name>_<method>.hdf5 (images, samples; the By layout in its attributes), B-mode PNGs and,
    with --phantom, <name>_<method>_metrics.json. Everything is checked before the decomposition
    and the sampling; earlier results are kept unless --overwrite.
    """
    from drus.physics.beamform import MatchedFilterBeamformer
    from drus.physics.geometry import picmus
    from drus.datasets.io import save_images_hdf5
    from drus.evaluation.metrics import to_db
    from drus.outputs import check_writable_dir, refuse_overwrite, write_text_atomic
    from drus.datasets.picmus import PICMUS_SETS, channel_data_to_by, infer_dataset
    from drus.evaluation.scoring import method_envelope, points_in_view, score_image
    from drus.sampling.estimators import pool_window
    from drus.plotting import save_bmode_figure
    from drus.device import resolve_device

    path = Path(observation)
    sampler = _sampler_config(paper=paper, n_samples=n_samples, n_steps=n_steps, seed=seed, eta=eta, eta_b=eta_b,
                              prior_fraction=prior_fraction)
    if _is_acquisition_file(path) and not dataset and infer_dataset(path) is None:
        return _reconstruct_acquisition(path, **click.get_current_context().params, sampler=sampler)
    ds = PICMUS_SETS[dataset] if dataset else infer_dataset(path)
    if ds is not None and not dataset:
        click.echo(f"dataset: {ds.name} (inferred from the file name; --dataset to change)")
    sigma_given = sigma0 is not None
    sigma_source = "given (--sigma0)" if sigma_given else ""
    if method != "das" and sigma0 is None:
        if ds is None and method == "deno-mean":
            raise click.UsageError(
                f"σ0 unknown for {path.name}: no --dataset and the file name matches no PICMUS set "
                f"({', '.join(PICMUS_SETS)}), and deno-mean cannot estimate it (its operator, the identity, passes "
                "image and noise alike); pass --sigma0 (noise std of the max-normalised image) or --dataset NAME")
        if ds is not None and (method == "deno-mean" or paper):
            sigma0 = ds.sigma0_deno if method == "deno-mean" else ds.sigma0_drus
            sigma_source = f"the paper's σ0 of PICMUS {ds.name}"
        # drus-* (unless --paper on a PICMUS set): σ0 is estimated from the observation once BH is decomposed (drus.sampling.noise)
    if sigma0 is not None and not (np.isfinite(sigma0) and sigma0 >= 0):
        raise click.BadParameter(f"must be a finite number ≥ 0, got {sigma0}", param_hint="--sigma0")
    if method == "drus-var" and n_samples < 2:
        raise click.BadParameter("drus-var needs at least 2 samples", param_hint="--samples")

    # outputs: a writable folder, and no earlier result of this observation and method replaced
    out = check_writable_dir(out_dir)
    stem = f"{path.stem}_{method}"
    candidates = {k: out / f"{stem}{suffix}" for k, suffix in
                  (("hdf5", ".hdf5"), ("png", ".png"), ("by_png", "_by.png"), ("metrics", "_metrics.json"))}
    refuse_overwrite(candidates.values(), overwrite=overwrite)
    ph = None
    if phantom:
        from drus.physics.phantoms import PicmusPhantom

        try:
            ph = PicmusPhantom.from_file(phantom)
        except (ValueError, KeyError, OSError) as exc:
            raise click.BadParameter(" ".join(str(exc).strip("'\"").split()), param_hint="--phantom")

    probe, wave, grid = picmus(256)
    kind, data, by_layout = _read_observation(path, method, grid.shape, layout)
    if kind == "by" and by_layout == "deno" and method.startswith("drus") and not sigma_given:
        raise click.BadParameter("a DENO-layout By is normalised to max 1, so the dataset's σ0 (in DRUS By units) "
                                 "does not apply; pass --sigma0 in the file's units", param_hint="--layout")
    if kind == "by" and by_layout == "drus" and method == "deno-mean":
        data = data / np.abs(data).max()  # the DENO input: the same observation normalised to max 1
    _torch_threads(threads)
    dev = resolve_device(device)
    model = None
    if method != "das":
        from drus.models.prior import load_prior

        model = load_prior(prior, device=dev)
        _check_size_multiple(model, unknown_size if method.startswith("drus") else grid.shape[0],
                             "--unknown-size" if method.startswith("drus") else "OBSERVATION")
    op = None
    if method.startswith("drus"):
        from drus.datasets.picmus import picmus_operator
        from drus.sampling.config import OperatorConfig

        try:
            operator_cfg = OperatorConfig(unknown_size=unknown_size, threshold=threshold, compute_dtype=compute_dtype)
            bf, op = picmus_operator(operator_cfg.unknown_size, threshold=operator_cfg.threshold,
                                     compute_dtype=operator_cfg.compute_dtype, cache_dir=cache_dir, device=dev,
                                     cache=not no_cache)
        except ValueError as exc:
            raise click.UsageError(one_line(exc))
    if kind == "channel":
        bf = op.beamformer if op is not None else MatchedFilterBeamformer(probe, wave, grid)
        try:
            by = channel_data_to_by(data, bf, by_factor=ds.by_factor if ds else 1.0)
        except ValueError as exc:
            raise click.BadParameter(one_line(exc), param_hint="OBSERVATION")
    else:
        by = data
    if method == "deno-mean" and kind == "channel":
        by = by / np.abs(by).max()  # the DENO input: the same observation normalised to max 1

    files = []
    arrays: dict = {}
    name = {"das": "By (matched filter)", "deno-mean": "DENOmean", "drus-mean": "DRUSmean", "drus-var": "DRUSvar"}[method]
    panels = {"By envelope": to_db(method_envelope("DRUSmean", by))}
    if method == "das":
        image, img_grid, amp = by, grid, method_envelope("DRUSmean", by)
    else:
        from drus.sampling.reconstruct import deno, reconstruct

        if sigma0 is None:  # drus-* on the By of an unknown acquisition
            from drus.sampling.noise import estimate_sigma0

            sigma0, sigma_source = estimate_sigma0(op, by)
            click.echo(f"σ0 = {sigma0:.4g} (estimated from the data: {sigma_source})")
        kw = dict(sigma0=float(sigma0), model=model, sampler=sampler, device=dev)
        if method == "deno-mean":
            rec = deno(by, **kw)
            image, img_grid = rec.mean, grid
        else:
            rec = reconstruct(op, by, **kw)
            img_grid = op.beamformer.unknown_grid
            image = rec.mean if method == "drus-mean" else rec.var
            arrays["var" if method == "drus-mean" else "mean"] = rec.var if method == "drus-mean" else rec.mean
            if n_samples >= 2:
                arrays["var_pooled"] = rec.var_pooled(pool_window(img_grid))
        arrays["samples"] = rec.samples
        amp = method_envelope({"deno-mean": "DENOmean", "drus-mean": "DRUSmean", "drus-var": "DRUSvar"}[method], image)
        click.echo(f"{name}: {rec.samples.shape[0]} samples, {n_steps} steps, σ0 = {sigma0:g}, "
                   f"{rec.timings.get('seconds_total', float('nan')):.1f} s")
    panels[name] = to_db(amp)
    files.append(save_images_hdf5(candidates["hdf5"], grid=img_grid, image=image, amplitude=amp, **arrays,
                                  attrs={"method": method, "observation": str(path), "sigma0": float(sigma0 or 0.0),
                                         **(rec.sampler.to_attrs() if method != "das" else {}),
                                         **(operator_cfg.to_dict() if method.startswith("drus") else {}),
                                         "sigma0_sampler": float(getattr(rec, "sigma0_sampler", float("nan"))) if method != "das" else float("nan"),
                                         "dataset": ds.name if ds else "", "sigma0_source": sigma_source, "by_layout": by_layout or "channel data"}))
    if img_grid == grid:
        files.append(save_bmode_figure(panels, grid, candidates["png"], title=f"{path.name}: [−60, 0] dB"))
    else:  # the DRUS image lives on the coarser unknown grid: one figure each
        files.append(save_bmode_figure({"By envelope": panels["By envelope"]}, grid, candidates["by_png"]))
        files.append(save_bmode_figure({name: panels[name]}, img_grid, candidates["png"], title=f"{path.name}: [−60, 0] dB"))
    if ph is not None:
        cysts = tuple(ph.cyst_disks()) + (tuple(ds.extra_cysts) if ds else ())
        scored = {"": amp}
        if "var_pooled" in arrays:  # the extended estimator, scored beside the paper's
            scored[" (pooled DRUSvar)"] = arrays["var_pooled"]
        summary = {}
        for label, a in scored.items():
            metrics = score_image(a, img_grid, cysts=cysts, speckle_rois=ph.speckle_boxes() or None,
                                  points=points_in_view(ph.points(), img_grid))
            summary.update({f"{k}{label}": {"values": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
                            for k, v in metrics.items()})
        files.append(write_text_atomic(candidates["metrics"], json.dumps(
            {"method": method, "observation": str(path), "phantom": str(phantom), "metrics": summary}, indent=1)))
        for k, v in summary.items():
            click.echo(f"{k}: {v['mean']:.3f} ± {v['std']:.3f}")
    for stale in set(candidates.values()) - set(files):  # (--overwrite) no result of an earlier run left beside these
        stale.unlink(missing_ok=True)
    click.echo(f"wrote {', '.join(str(f) for f in files)}")


# --- drus reconstruct / decompose on any plane-wave acquisition (drus.datasets.acquisition) -------------------
def _is_acquisition_file(path: Path) -> bool:
    """Whether ``path`` holds channel data that :func:`drus.datasets.acquisition.read_acquisition` reads
    (a minimal-layout ``.npz``/HDF5, PICMUS/USTB UFF, Field II, or a Verasonics-style ``.mat`` with ``RF1``)."""
    import h5py

    from drus.datasets.io import USTB_DATASET, DataFileError, _MatFile

    suffix = path.suffix.lower()
    if suffix == ".npz":
        return True
    try:
        if suffix == ".mat":
            with _MatFile(path) as mat:
                return "RF1" in mat.keys()
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                return "channel_data" in f or USTB_DATASET in f or "data/rf_data" in f
    except (DataFileError, OSError):
        return False
    return False


def _acquisition_setup(path: Path, *, angle, x_range, z_range, size):
    """``(acquisition, beamformer)`` exactly as ``drus reconstruct`` builds them for a channel-data file
    (``H`` and ``B`` are not built yet; :func:`drus.datasets.acquisition.prepare_acquisition`, ranges in mm, angle in degrees)."""
    import math

    from drus.datasets.acquisition import prepare_acquisition

    return prepare_acquisition(path, angle=None if angle is None else math.radians(angle),
                               x_range=None if not x_range else (x_range[0] * 1e-3, x_range[1] * 1e-3),
                               z_range=None if not z_range else (z_range[0] * 1e-3, z_range[1] * 1e-3),
                               size=size, report=click.echo)


def _plan_decomposition(bf, compute_dtype: str, *, threshold: float, cache_dir, cache: bool) -> str:
    """Print the predicted cost of decomposing ``BH``, refuse what cannot fit, settle the split
    (:func:`drus.datasets.acquisition.plan_decomposition`). Returns the split."""
    from drus.datasets.acquisition import plan_decomposition

    return plan_decomposition(bf, compute_dtype=compute_dtype, threshold=threshold, cache_dir=cache_dir, cache=cache,
                              report=click.echo)


def _reconstruct_acquisition(path: Path, *, method, sigma0, angle, x_range, z_range, grid_size, n_samples, n_steps,
                             threshold, compute_dtype, prior, out_dir, cache_dir, device, seed, threads,
                             sampler, no_cache=False, overwrite=False, **_unused) -> None:
    """``drus reconstruct`` on a channel-data file: any plane-wave acquisition (drus.datasets.acquisition)."""
    from drus.physics.beamform import bmode, das
    from drus.datasets.io import save_images_hdf5
    from drus.evaluation.metrics import to_db
    from drus.outputs import check_writable_dir, refuse_overwrite
    from drus.evaluation.scoring import method_envelope
    from drus.plotting import save_bmode_figure
    from drus.device import resolve_device

    if method == "deno-mean" and sigma0 is None:
        raise click.UsageError("deno-mean on channel data needs --sigma0 (noise std of the By image normalised to max 1)")
    if method == "drus-var" and n_samples < 2:
        raise click.BadParameter("drus-var needs at least 2 samples", param_hint="--samples")
    if sigma0 is not None and not (np.isfinite(sigma0) and sigma0 >= 0):
        raise click.BadParameter(f"must be a finite number ≥ 0, got {sigma0}", param_hint="--sigma0")
    out = check_writable_dir(out_dir)
    stem = f"{path.stem}_{method}"
    files_out = {"hdf5": out / f"{stem}.hdf5", "png": out / f"{stem}.png"}
    refuse_overwrite(files_out.values(), overwrite=overwrite)

    acq, bf = _acquisition_setup(path, angle=angle, x_range=x_range, z_range=z_range, size=grid_size)
    grid = bf.grid
    from drus.datasets.acquisition import check_memory, decomposition_cost, likely_split

    check_memory(decomposition_cost(bf, split=likely_split(bf), compute_dtype=compute_dtype), matrices_only=True)
    _torch_threads(threads)
    dev = resolve_device(device)
    model = None
    if method != "das":
        from drus.models.prior import load_prior

        model = load_prior(prior, device=dev)
        _check_size_multiple(model, grid.n_z, "--size")
        _check_size_multiple(model, grid.n_x, "--size")
    res = None
    if method in ("drus-mean", "drus-var"):
        from drus.datasets.acquisition import reconstruct_acquisition

        # cost and memory first, before any expensive work; then B y, DAS, BH decomposed, σ0, samples
        split = _plan_decomposition(bf, compute_dtype, threshold=threshold, cache_dir=cache_dir, cache=not no_cache)
        res = reconstruct_acquisition(acq, bf, model=model, sampler=sampler, sigma0=sigma0, threshold=threshold,
                                      compute_dtype=compute_dtype,
                                      cache_dir=cache_dir, cache=not no_cache, device=dev, split=split,
                                      report=click.echo)
        by, das_image = res.by, res.das
    else:
        by = bf.beamform(acq.channel_data)
        das_image = das(acq.channel_data, probe=bf.model.probe, waves=bf.model.wave, grid=grid)
    panels = {"DAS, 1 plane wave": bmode(das_image), "By (matched filter)": to_db(method_envelope("DRUSmean", by))}
    arrays = {"by": by, "das": das_image}
    attrs = {"method": method, "observation": str(path), "angle_deg": float(np.degrees(acq.angle)),
             "center_frequency": float(acq.center_frequency), "bandwidth": float(acq.bandwidth),
             "pulse_source": acq.spectrum_source or "file", "transmit": acq.transmit}
    image, amp = by, method_envelope("DRUSmean", by)
    if res is not None:
        rec = res.reconstruction
        arrays.update(samples=rec.samples, mean=rec.mean)
        attrs.update(res.attrs)
        panels["DRUSmean"] = to_db(method_envelope("DRUSmean", rec.mean))
        if n_samples >= 2:  # DRUSvar needs two samples
            arrays["var"] = rec.var
            arrays["var_pooled"] = res.var_pooled
            panels["DRUSvar"] = to_db(method_envelope("DRUSvar", rec.var))
        image = rec.mean if method == "drus-mean" else rec.var
        amp = method_envelope("DRUSmean" if method == "drus-mean" else "DRUSvar", image)
        click.echo(f"{'DRUSmean' if method == 'drus-mean' else 'DRUSvar'}: {n_samples} samples, {n_steps} steps, "
                   f"{rec.timings.get('seconds_total', float('nan')):.1f} s")
    elif method == "deno-mean":
        from drus.sampling.reconstruct import deno

        by_n = by / np.abs(by).max()
        rec = deno(by_n, sigma0=float(sigma0), model=model, sampler=sampler, device=dev)
        arrays["samples"] = rec.samples
        image, amp = rec.mean, method_envelope("DENOmean", rec.mean)
        panels["DENOmean"] = to_db(amp)
        attrs.update(sigma0=float(sigma0), sigma0_source="given (--sigma0)")
    files = [save_images_hdf5(files_out["hdf5"], grid=grid, image=image, amplitude=amp, **arrays, attrs=attrs),
             save_bmode_figure(panels, grid, files_out["png"], title=f"{path.name}: [−60, 0] dB")]
    click.echo(f"wrote {', '.join(str(f) for f in files)}")


def _decompose_acquisition(path, *, size, angle, x_range, z_range, method, threshold, dtype, compute_dtype,
                           complement, device, cache_dir, no_cache, threads, **_unused) -> None:
    """``drus decompose --acquisition FILE``: the decomposition ``drus reconstruct FILE`` will read."""
    import time


    from drus.physics.decompose import decompose_bh
    from drus.device import resolve_device

    _torch_threads(threads)
    dev = resolve_device(device)
    _, bf = _acquisition_setup(Path(path), angle=angle, x_range=x_range, z_range=z_range, size=size)
    split = _plan_decomposition(bf, compute_dtype, threshold=threshold, cache_dir=cache_dir, cache=not no_cache)
    t0 = time.perf_counter()
    op = decompose_bh(bf, method=method, threshold=threshold, dtype=dtype, compute_dtype=compute_dtype,
                      complement=complement, device=dev, cache_dir=cache_dir, cache=not no_cache, split=split)
    click.echo(f"{op} in {time.perf_counter() - t0:.1f} s; split {split}"
               + (f"; cache {op.metadata['cache_dir']} (key {op.metadata['key'][:12]}…)" if op.metadata.get("cache_dir") else ""))


# --- drus despeckle (drus.evaluation.despeckle) -------------------------------------------------------------------
DESPECKLE_DATASETS = ("amplitude", "mean", "image")


def _read_despeckle_input(path: Path, dataset: str | None):
    """The amplitude image of ``path`` (a drus HDF5 or a ``.npy`` 2-D array), its grid (or None) and the source name."""
    from drus.evaluation.despeckle import amplitude_of

    if path.suffix.lower() == ".npy":
        if dataset is not None:
            raise click.BadParameter("a .npy file holds one array; --dataset is for HDF5 files", param_hint="--dataset")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({one_line(exc)})") from None
        return amplitude_of(arr), None, "array"
    from drus.datasets.io import load_images_hdf5

    saved = load_images_hdf5(path)
    names = [dataset] if dataset else [n for n in DESPECKLE_DATASETS if n in saved]
    if not names or names[0] not in saved:
        have = ", ".join(sorted(saved)) or "none"
        want = f"no dataset {dataset!r}" if dataset else f"none of the datasets {', '.join(DESPECKLE_DATASETS)}"
        raise ValueError(f"{path}: {want} (it has: {have}); pass --dataset NAME or a .npy 2-D array")
    arr = saved[names[0]]
    if arr.ndim != 2:
        raise ValueError(f"{path}: dataset {names[0]!r} has shape {arr.shape}; drus despeckle takes a 2-D image [n_z, n_x]")
    grid = saved.grid if saved.grid is not None and saved.grid.shape == arr.shape else None
    return amplitude_of(arr), grid, names[0]


@main.command("despeckle")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--method", type=click.Choice(["admss"]), required=True, help="admss: anisotropic diffusion with memory based on speckle statistics (Ramos-Llordén et al. 2015; docs/despeckle.md).")
@click.option("--dataset", default=None, help="HDF5 dataset to despeckle (default: the first of amplitude, mean, image). A signed RF image is despeckled on its envelope.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/despeckle", show_default=True, help="Output folder.")
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True, help="Structure-tensor scale σ (pixels).")
@click.option("--rho", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True, help="Structure-tensor integration scale ρ (pixels).")
@click.option("--iterations", type=click.IntRange(min=0), default=31, show_default=True, help="Diffusion steps.")
@click.option("--memory", type=click.IntRange(min=0), default=9, show_default=True, help="Memory n of the delay equation.")
@click.option("--dt", type=click.FloatRange(min=0, min_open=True), default=0.3, show_default=True, help="Time step Δt.")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run of this file in --out.")
def despeckle_command(path, method, dataset, out_dir, sigma, rho, iterations, memory, dt, overwrite) -> None:
    """Despeckle an envelope image: a drus HDF5 (e.g. drus reconstruct's) or a .npy 2-D array.

    Writes <name>.admss.h5 (the despeckled envelope ``amplitude`` and the input envelope
    ``amplitude_in``, on the file's grid when it has one) and <name>.admss.png (B-modes before and
    after, [−60, 0] dB).
    """
    import time

    from drus.evaluation.despeckle import admss
    from drus.physics.geometry import ImageGrid
    from drus.datasets.io import save_images_hdf5
    from drus.evaluation.metrics import to_db
    from drus.outputs import check_writable_dir, refuse_overwrite
    from drus.plotting import save_bmode_figure

    path = Path(path)
    out = check_writable_dir(out_dir)
    files_out = {ext: out / f"{path.stem}.{method}.{ext}" for ext in ("h5", "png")}
    refuse_overwrite(files_out.values(), overwrite=overwrite)
    amp, grid, source = _read_despeckle_input(path, dataset)
    t0 = time.perf_counter()
    filtered = admss(amp, sigma=sigma, rho=rho, n_iter=iterations, memory=memory, dt=dt)
    seconds = time.perf_counter() - t0
    attrs = {"method": method, "input": str(path), "input_dataset": source, "sigma": sigma, "rho": rho,
             "n_iter": iterations, "memory": memory, "dt": dt, "model": "gamma", "seconds": seconds}
    files = [save_images_hdf5(files_out["h5"], grid=grid, amplitude=filtered, amplitude_in=amp, attrs=attrs)]
    title = f"{path.name}: [−60, 0] dB"
    if grid is None:  # no grid in the input: axes numbered in pixels from 1
        n_z, n_x = amp.shape
        grid = ImageGrid.from_extent(x_min=1e-3, x_max=n_x * 1e-3, z_min=1e-3, z_max=n_z * 1e-3, n_x=n_x, n_z=n_z)
        title += " (no grid in the file: axes in pixels)"
    files.append(save_bmode_figure({f"input ({source})": to_db(amp), "ADMSS": to_db(filtered)}, grid, files_out["png"], title=title))
    click.echo(f"ADMSS (σ = {sigma:g} px, ρ = {rho:g} px, {iterations} iterations, memory {memory}, Δt {dt:g}) on "
               f"{amp.shape[0]} × {amp.shape[1]} pixels in {seconds:.1f} s")
    click.echo(f"wrote {', '.join(str(f) for f in files)}")


if __name__ == "__main__":  # pragma: no cover
    main()
