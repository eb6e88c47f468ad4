"""The ``drus`` command line: thin subcommands that build a configuration and call library functions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from drus.defaults import ADMSS_DT, ADMSS_ITERATIONS, ADMSS_MEMORY, ADMSS_RHO, ADMSS_SIGMA
from drus.defaults import DEMO_GAMMA, DEMO_PLANE_WAVE_SIZE, DEMO_SEED, DEMO_SIZE
from drus.defaults import PRIOR_FRACTION as DEFAULT_PRIOR_FRACTION
from drus.errors import OptionError
from drus.pipelines import beamform as _BF
from drus.pipelines.despeckle import DESPECKLE_METHODS
from drus.pipelines.reconstruct import BY_LAYOUTS, RECONSTRUCT_METHODS
from drus.sampling.config import COMPUTE_DTYPES, PRECISION_NAMES, QUICK_SAMPLES, QUICK_STEPS
from drus.sampling.config import OperatorConfig as _OperatorConfig
from drus.sampling.config import ReconstructionConfig as _ReconstructionConfig
from drus.sampling.config import SamplerConfig as _SamplerConfig

#: The defaults every command shows, from the one place they are declared (no torch import here).
_PAPER, _OPERATOR, _RECONSTRUCTION = _SamplerConfig(), _OperatorConfig(), _ReconstructionConfig()


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
        except OptionError as exc:  # a library check of an option: reported as click reports its own
            if ctx.find_root().params.get("debug"):
                raise
            raise click.BadParameter(exc.problem, param_hint=exc.option) from exc
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


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/demo", show_default=True, help="Output folder.")
@click.option("--quick", is_flag=True, help=f"The quick preset (SamplerConfig.quick): C = {QUICK_SAMPLES} samples and "
              f"{QUICK_STEPS} steps instead of {_PAPER.n_samples} and {_PAPER.n_steps}, in both parts (about a minute on 2 CPU cores).")
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True, help="Speckle/noise and sampler seed (held out from training).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Prior checkpoint (.safetensors); default: the shipped prior.")
@click.option("--device", default=_RECONSTRUCTION.device, show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--samples", "n_samples", type=click.IntRange(min=2), default=None, help=f"Number of DDRM samples C ≥ 2 (default {_PAPER.n_samples}; {QUICK_SAMPLES} with --quick).")
@click.option("--steps", "n_steps", type=click.IntRange(min=1), default=None, help=f"DDRM steps (default {_PAPER.n_steps}; {QUICK_STEPS} with --quick).")
@click.option("--gamma", type=click.FloatRange(min=0), default=DEMO_GAMMA, show_default=True, help="Additive noise level γ: of the blur observation, and of the channel data (γ·max|y|).")
@click.option("--size", type=click.IntRange(min=16), default=DEMO_SIZE, show_default=True, help="Grid side in pixels over the paper's field of view.")
@click.option("--precision", type=click.Choice(PRECISION_NAMES), default=_RECONSTRUCTION.precision, show_default=True, help="Network precision (bf16/fp16 for GPUs).")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
@click.option("--plane-wave-size", type=click.IntRange(min=16), default=DEMO_PLANE_WAVE_SIZE, show_default=True, help="Plane-wave panel: pixels along the depth of its grid (96: 64 × 96 unknowns of 0.15 mm).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Decomposition cache of the plane-wave panel (default: $DRUS_CACHE or ~/.cache/drus, as drus reconstruct).")
def demo(out_dir, quick, seed, prior, device, n_samples, n_steps, gamma, size, precision, overwrite, plane_wave_size,
         cache_dir) -> None:
    """Reconstruct the numerical occlusion phantom end to end (the paper's separable-blur study) and a
    simulated plane-wave acquisition through the drus reconstruct FILE path; write pictures and metrics."""
    from drus.pipelines.demo import demo_config, run_demo

    given = {k: v for k, v in (("n_samples", n_samples), ("n_steps", n_steps)) if v is not None}
    config = demo_config(quick=quick, seed=seed, **given).replace(prior=prior, device=device, precision=precision)
    result = run_demo(out_dir, config=config, seed=seed, gamma=gamma, size=size, overwrite=overwrite,
                      plane_wave_size=plane_wave_size, cache_dir=cache_dir)
    click.echo(result.table())
    click.echo(f"\nwrote {', '.join(str(p) for p in result.files)}")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_png", type=click.Path(dir_okay=False), default=None, help="PNG to write (default: out/beamform/<input name>.das.png; never beside the input).")
@click.option("--angles", default="0", show_default=True, help="'0' for the 0° wave, 'all' to compound every angle, or indices like '0,3,6'.")
@click.option("--x-range", nargs=2, type=float, default=_BF.X_RANGE_MM, show_default=True, help="Lateral extent in mm.")
@click.option("--z-range", nargs=2, type=float, default=_BF.Z_RANGE_MM, show_default=True, help="Depth extent in mm.")
@click.option("--pixel", type=click.FloatRange(min=0, min_open=True), default=_BF.PIXEL_MM, show_default=True, help="Pixel size in mm (> 0).")
@click.option("--f-number", type=click.FloatRange(min=0, min_open=True), default=_BF.F_NUMBER, show_default=True)
@click.option("--center-frequency", type=click.FloatRange(min=0, min_open=True), default=_BF.CENTER_FREQUENCY, show_default=True, help="Probe f0 in Hz (for the probe description).")
@click.option("--dynamic-range", type=click.FloatRange(min=0, min_open=True), default=_BF.DYNAMIC_RANGE_DB, show_default=True, help="B-mode range in dB (> 0).")
@click.option("--points", "n_points", type=click.IntRange(min=0), default=0, help="Measure the −6 dB FWHM of the N brightest isolated point targets (wires).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output PNG.")
def beamform(path, out_png, angles, x_range, z_range, pixel, f_number, center_frequency, dynamic_range, n_points, overwrite) -> None:
    """Delay-and-sum B-mode of a channel-data file (PICMUS/USTB HDF5, Gammex .mat, Field II HDF5)."""
    from drus.pipelines.beamform import beamform_file

    if angles not in ("0", "all"):
        try:
            angles = [int(i) for i in angles.split(",")]
        except ValueError:
            raise click.BadParameter(f"expected '0', 'all' or comma-separated indices, got {angles!r}", param_hint="--angles")
    result = beamform_file(path, out_png=out_png, angles=angles, x_range=x_range, z_range=z_range, pixel=pixel,
                           f_number=f_number, center_frequency=center_frequency, dynamic_range=dynamic_range,
                           n_points=n_points, overwrite=overwrite)
    click.echo(f"wrote {', '.join(str(f) for f in result.files)}")
    if result.resolution is not None:
        res = result.resolution
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
@click.option("--device", default=_RECONSTRUCTION.device, show_default=True)
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
@click.option("--device", default=_RECONSTRUCTION.device, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
def evaluate_numerical(phantom, out_dir, prior, realisations, n_samples, n_steps, size, device, overwrite) -> None:
    """The numerical study of paper Figures 2-3: occlusion (gCNR, SNR) and scatterer (FWHM) phantoms."""
    from drus.pipelines.experiments import format_table, numerical_study

    config = _ReconstructionConfig(sampler=_SamplerConfig.paper(n_samples=n_samples, n_steps=n_steps), prior=prior,
                                   device=device)
    names = [n for n in ("occlusion", "scatterer") if phantom in (n, "both")]
    for st, files in numerical_study(names, config=config, realisations=realisations, size=size, out_dir=out_dir,
                                     overwrite=overwrite):
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
    from drus.pipelines.picmus import by_check

    report, files = by_check(dataset, out_dir=out_dir, data_root=data_root, overwrite=overwrite)
    click.echo(json.dumps(report, indent=2))
    click.echo(f"wrote {', '.join(str(f) for f in files)}")


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
@click.option("--device", default=_RECONSTRUCTION.device, show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Default: $DRUS_CACHE or ~/.cache/drus.")
@click.option("--no-cache", is_flag=True, help="Compute in memory only (nothing read or written).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random and speckle test inputs.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch (LAPACK/BLAS follow OMP_NUM_THREADS).")
def decompose(size, acquisition, angle, x_range, z_range, method, threshold, dtype, compute_dtype, complement, device, cache_dir, no_cache, seed, threads) -> None:
    """Precompute (or load) the exact flip-split decomposition of BH and report its cost and accuracy."""
    from drus.pipelines.decompose import decompose_acquisition_file, decompose_picmus

    kw = dict(method=method, threshold=threshold, dtype=dtype, compute_dtype=compute_dtype, complement=complement,
              device=device, cache_dir=cache_dir, cache=not no_cache, report=click.echo)
    if acquisition is not None:
        _torch_threads(threads)
        decompose_acquisition_file(acquisition, angle=angle, x_range=x_range, z_range=z_range, size=size, **kw)
        return
    if size is None:
        raise click.UsageError("give --size N (the paper's field of view at N × N pixels) or --acquisition FILE")
    _torch_threads(threads)
    decompose_picmus(size, seed=seed, **kw)


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
@click.option("--compute-dtype", type=click.Choice(COMPUTE_DTYPES), default=_OPERATOR.compute_dtype, show_default=True, help="dtype of the BH decomposition (float32: ≈ 2× faster and half the memory; the practical choice for --unknown-size 256 on a CPU).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Prior checkpoint; default: the shipped prior.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="docs/results/picmus", show_default=True)
@click.option("--data", "data_root", type=click.Path(file_okay=False), default=None, help="Reference data folder (default $DRUS_REFERENCE_DATA or ../shared/data).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Decomposition cache (default $DRUS_CACHE or ~/.cache/drus).")
@click.option("--device", default=_RECONSTRUCTION.device, show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--seed", type=int, default=_PAPER.seed, show_default=True, help="Seeds the sampler (SamplerConfig.seed).")
@click.option("--precision", type=click.Choice(PRECISION_NAMES), default=_RECONSTRUCTION.precision, show_default=True, help="Network precision (bf16/fp16 for GPUs).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
@_sampler_options
def evaluate_picmus_command(sets, unknown_size, n_samples, n_steps, threshold, compute_dtype, prior, out_dir, data_root, cache_dir, device, seed, precision, threads, overwrite, prior_fraction, paper, eta, eta_b) -> None:
    """Paper Table I on PICMUS: DAS 75/1 PW, DENOmean, DRUSmean, DRUSvar (gCNR, SNR, FWHM)."""
    from drus.pipelines.picmus import TABLE_FILES, picmus_table

    names = [n.strip() for n in sets.split(",") if n.strip()]
    config = _ReconstructionConfig(
        sampler=_sampler_config(paper=paper, n_samples=n_samples, n_steps=n_steps, seed=seed, eta=eta, eta_b=eta_b,
                                prior_fraction=prior_fraction),
        operator=_OperatorConfig(unknown_size=unknown_size, threshold=threshold, compute_dtype=compute_dtype),
        prior=prior, device=device, precision=precision)
    _torch_threads(threads)
    try:
        result = picmus_table(names, config=config, out_dir=out_dir, data_root=data_root, cache_dir=cache_dir,
                              sigma0_from_data=not paper, overwrite=overwrite)
    except OptionError:
        raise
    except (ValueError, FileNotFoundError) as exc:
        raise click.UsageError(one_line(exc))
    click.echo(result.table())
    click.echo(f"\nwrote {out_dir}/: {', '.join(f'{n}.hdf5' for n in names)}, {', '.join(TABLE_FILES)}")


def _batch_options(command):
    """Many frames (drus.pipelines.batch): the options, and the dispatch to the batch when OBSERVATION is a
    folder, a glob or a multi-frame file (or --workers/--address/--frames is given); else the command as it is."""
    import functools

    @functools.wraps(command)
    def dispatch(*, workers, address, frames, **params):
        from drus.pipelines.batch import is_batch_input

        observation = params["observation"]
        if is_batch_input(observation) or workers or address or frames:
            return _reconstruct_batch(workers=workers, address=address, frames=frames, **params)
        if not Path(observation).is_file():
            raise click.BadParameter(f"{observation}: no such file, folder or matching pattern", param_hint="'OBSERVATION'")
        return command(**params)

    for option in reversed((
        click.option("--workers", type=click.IntRange(min=1), default=None, help="Many frames: Ray workers (a local Ray "
                     "instance unless --address; one GPU each where there are GPUs; pip install 'drus[cluster]'). "
                     "Default: one per GPU, else 1 (frames run here, one after another)."),
        click.option("--address", default=None, help="Many frames: join this Ray cluster ('auto' or ray://HOST:10001) "
                     "instead of starting one here; drus must be installed on its nodes."),
        click.option("--frames", default=None, help="Many frames: the frames of each file to run, 0-based, e.g. '0,3' or "
                     "'10:20' (end excluded); default all. OBSERVATION may be a folder, a glob ('scans/*.uff') or a "
                     "multi-frame file; --seed is the run seed each frame's seed is derived from."),
    )):
        dispatch = option(dispatch)
    return dispatch


def _reconstruct_config(*, n_samples, n_steps, seed, eta, eta_b, prior_fraction, paper, unknown_size, threshold,
                        compute_dtype, prior, device) -> _ReconstructionConfig:
    """The :class:`drus.sampling.config.ReconstructionConfig` of ``drus reconstruct``'s options (one file or
    many frames)."""
    sampler = _sampler_config(paper=paper, n_samples=n_samples, n_steps=n_steps, seed=seed, eta=eta, eta_b=eta_b,
                              prior_fraction=prior_fraction)
    return _ReconstructionConfig(
        sampler=sampler, operator=_OperatorConfig(unknown_size=unknown_size, threshold=threshold,
                                                  compute_dtype=compute_dtype),
        prior=prior, device=device)


def _reconstruct_batch(*, observation, method, workers, address, frames, angle, x_range, z_range, grid_size, sigma0,
                       n_samples, n_steps, unknown_size, threshold, compute_dtype, prior, out_dir, cache_dir, no_cache,
                       device, seed, threads, overwrite, prior_fraction, paper, eta, eta_b, dataset=None, phantom=None,
                       layout=None) -> None:
    """``drus reconstruct`` on many frames: every frame a task (drus.pipelines.batch), one HDF5 each, a manifest."""
    from drus.pipelines.batch import parse_frames, reconstruct_frames

    config = _reconstruct_config(n_samples=n_samples, n_steps=n_steps, seed=seed, eta=eta, eta_b=eta_b,
                                 prior_fraction=prior_fraction, paper=paper, unknown_size=unknown_size,
                                 threshold=threshold, compute_dtype=compute_dtype, prior=prior, device=device)
    res = reconstruct_frames(observation, method=method, config=config, out_dir=out_dir, sigma0=sigma0, angle=angle,
                             x_range=x_range, z_range=z_range, grid_size=grid_size, dataset=dataset, phantom=phantom,
                             layout=layout, workers=workers, address=address, frames=parse_frames(frames),
                             threads=threads, cache_dir=cache_dir, cache=not no_cache, overwrite=overwrite,
                             report=click.echo)
    click.echo(f"{len(res.done)} frame(s) done, {len(res.failed)} failed, {len(res.skipped)} done earlier; "
               f"manifest {res.manifest_path}")
    if res.failed:
        click.echo(f"failed: {', '.join(res.failed[:8])}{' …' if len(res.failed) > 8 else ''} (errors in the "
                   "manifest; rerun the same command to retry them)", err=True)
        click.get_current_context().exit(1)


@main.command("reconstruct")
@_batch_options
@click.argument("observation", type=click.Path())
@click.option("--method", type=click.Choice(RECONSTRUCT_METHODS), required=True, help="das: B-mode of By; deno-mean: DENO on the By image; drus-mean/drus-var: DRUS with the decomposed BH.")
@click.option("--dataset", type=click.Choice(_PICMUS_NAMES), default=None, help="PICMUS set for σ0, the By scale and extra ROIs; default: inferred from the file name when it matches.")
@click.option("--sigma0", type=float, default=None, help="Noise std of the observation (By units; max-normalised image for deno-mean). Overrides the dataset's.")
@click.option("--layout", type=click.Choice(sorted(BY_LAYOUTS)), default=None, help="Flattening of a By .mat: drus (column-major, by_drus/) or deno (row-major, max 1, by_deno/). Default: the method's (deno for deno-mean, else drus), checked against the file.")
@click.option("--unknown-size", type=click.IntRange(min=2), default=_OPERATOR.unknown_size, show_default=True, help="Side of the DRUS unknown grid (a multiple of the prior's 2 ** (levels − 1)).")
@click.option("--samples", "n_samples", type=click.IntRange(min=1), default=_PAPER.n_samples, show_default=True)
@click.option("--steps", "n_steps", type=click.IntRange(min=1), default=_PAPER.n_steps, show_default=True)
@click.option("--threshold", type=click.FloatRange(min=0, max=1, max_open=True), default=_OPERATOR.threshold, show_default=True, help="Decomposition threshold relative to s1.")
@click.option("--compute-dtype", type=click.Choice(COMPUTE_DTYPES), default=_OPERATOR.compute_dtype, show_default=True, help="dtype of the BH decomposition (float32: ≈ 2× faster and half the memory; the practical choice for --unknown-size 256 on a CPU).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None, help="Default: the shipped prior.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/reconstruct", show_default=True)
@click.option("--phantom", type=click.Path(exists=True, dir_okay=False), default=None, help="PICMUS phantom HDF5: adds gCNR/SNR/FWHM (metrics JSON).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Decomposition cache.")
@click.option("--no-cache", is_flag=True, help="Decompose in memory only (no cache read or written).")
@click.option("--angle", type=float, default=None, help="Channel data: steering angle in degrees of the transmit to use (default: the one nearest 0°).")
@click.option("--x-range", nargs=2, type=float, default=None, help="Channel data: lateral extent in mm (default: the aperture).")
@click.option("--z-range", nargs=2, type=float, default=None, help="Channel data: depth extent in mm (default: 10 λ to the deepest recorded echo).")
@click.option("--size", "grid_size", type=click.IntRange(min=8), default=None, help="Channel data: pixels along the longer side of the grid (default: λ/2 pixels, capped at 128² unknowns).")
@click.option("--device", default=_RECONSTRUCTION.device, show_default=True)
@click.option("--seed", type=int, default=_PAPER.seed, show_default=True, help="Seeds the sampler (SamplerConfig.seed).")
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
    from drus.pipelines.reconstruct import reconstruct_file

    config = _reconstruct_config(n_samples=n_samples, n_steps=n_steps, seed=seed, eta=eta, eta_b=eta_b,
                                 prior_fraction=prior_fraction, paper=paper, unknown_size=unknown_size,
                                 threshold=threshold, compute_dtype=compute_dtype, prior=prior, device=device)
    _torch_threads(threads)
    result = reconstruct_file(observation, method=method, config=config, out_dir=out_dir, dataset=dataset,
                              sigma0=sigma0, layout=layout, phantom=phantom, sigma0_from_data=not paper,
                              cache_dir=cache_dir, cache=not no_cache, angle=angle, x_range=x_range, z_range=z_range,
                              grid_size=grid_size, overwrite=overwrite, report=click.echo)
    for k, v in (result.metrics or {}).items():
        click.echo(f"{k}: {v['mean']:.3f} ± {v['std']:.3f}")
    click.echo(f"wrote {', '.join(str(f) for f in result.files)}")


@main.command("despeckle")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--method", type=click.Choice(DESPECKLE_METHODS), required=True, help="admss: anisotropic diffusion with memory based on speckle statistics (Ramos-Llordén et al. 2015; docs/despeckle.md).")
@click.option("--dataset", default=None, help="HDF5 dataset to despeckle (default: the first of amplitude, mean, image). A signed RF image is despeckled on its envelope.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/despeckle", show_default=True, help="Output folder.")
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True), default=ADMSS_SIGMA, show_default=True, help="Structure-tensor scale σ (pixels).")
@click.option("--rho", type=click.FloatRange(min=0, min_open=True), default=ADMSS_RHO, show_default=True, help="Structure-tensor integration scale ρ (pixels).")
@click.option("--iterations", type=click.IntRange(min=0), default=ADMSS_ITERATIONS, show_default=True, help="Diffusion steps.")
@click.option("--memory", type=click.IntRange(min=0), default=ADMSS_MEMORY, show_default=True, help="Memory n of the delay equation.")
@click.option("--dt", type=click.FloatRange(min=0, min_open=True), default=ADMSS_DT, show_default=True, help="Time step Δt.")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run of this file in --out.")
def despeckle_command(path, method, dataset, out_dir, sigma, rho, iterations, memory, dt, overwrite) -> None:
    """Despeckle an envelope image: a drus HDF5 (e.g. drus reconstruct's) or a .npy 2-D array.

    Writes <name>.admss.h5 (the despeckled envelope ``amplitude`` and the input envelope
    ``amplitude_in``, on the file's grid when it has one) and <name>.admss.png (B-modes before and
    after, [−60, 0] dB).
    """
    from drus.pipelines.despeckle import despeckle_file

    result = despeckle_file(path, method=method, dataset=dataset, out_dir=out_dir, overwrite=overwrite, sigma=sigma,
                            rho=rho, n_iter=iterations, memory=memory, dt=dt)
    amp = result.amplitude_in
    click.echo(f"ADMSS (σ = {sigma:g} px, ρ = {rho:g} px, {iterations} iterations, memory {memory}, Δt {dt:g}) on "
               f"{amp.shape[0]} × {amp.shape[1]} pixels in {result.seconds:.1f} s")
    click.echo(f"wrote {', '.join(str(f) for f in result.files)}")


if __name__ == "__main__":  # pragma: no cover
    main()
