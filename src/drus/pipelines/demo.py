"""``drus demo``: the whole chain on the numerical occlusion phantom, offline, on built-in defaults.

1. Physics (paper Sect. II-B): echogenicity ``p`` (9 anechoic disks) → speckle ``o = m ⊙ p`` →
   channel data ``y = H o + n`` of one 0° plane wave (PICMUS L11-4v) → DAS and the matched-filter
   image ``B y``.
2. DRUS (paper Sect. III, Fig. 2): the separable blur ``K`` standing in for ``BH``,
   ``y_K = K o + γ·max|K o|·n``, ``C`` DDRM samples with the prior → DRUSmean and DRUSvar.
3. gCNR and SNR of every image over the 9 cysts (:func:`drus.evaluation.metrics.contrast_metrics`), a figure
   with all B-modes in [−60, 0] dB, the samples and images in HDF5, and ``metrics.json``.
4. The plane-wave panel (:func:`plane_wave_panel`), the toolkit's main job: a small field of view
   with anechoic cysts and point targets, simulated on a grid twice as fine as the reconstruction's
   → channel data of a 0° plane wave with white noise, written in the minimal layout
   (:func:`drus.datasets.acquisition.write_acquisition`) → read back and reconstructed exactly as
   ``drus reconstruct FILE --method drus-var`` does (:func:`drus.datasets.acquisition.prepare_acquisition`,
   :func:`~drus.datasets.acquisition.plan_decomposition`, :func:`~drus.datasets.acquisition.reconstruct_acquisition`:
   the decomposed ``BH``, σ0 from the data, the sampler's σ0 at ``drus.defaults.PRIOR_FRACTION``) →
   DAS 1 PW, DRUSmean, DRUSvar and the pooled DRUSvar, scored on the cysts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from drus.defaults import DEMO_GAMMA, DEMO_PLANE_WAVE_SIZE, DEMO_SEED, DEMO_SIZE, PRIOR_FRACTION
from drus.sampling.config import ReconstructionConfig, SamplerConfig
from drus.physics.beamform import MatchedFilterBeamformer, das, envelope, log_compress
from drus.physics.geometry import ImageGrid, paper_grid, picmus_plane_wave, picmus_probe
from drus.datasets.channel_data import ChannelData
from drus.datasets.io import save_images_hdf5, write_ustb_channel_data
from drus.evaluation.metrics import contrast_metrics
from drus.physics.operators import SeparableBlur
from drus.outputs import check_writable_dir, refuse_overwrite, write_text_atomic
from drus.physics.phantoms import add_noise, occlusion_disks, occlusion_phantom, speckle
from drus.plotting import save_bmode_figure

__all__ = ["DemoResult", "demo_config", "run_demo", "plane_wave_panel", "DEMO_FILES"]

#: The files ``run_demo`` writes into its output folder.
DEMO_FILES = ("demo.png", "demo.h5", "channel_data.h5", "metrics.json", "plane_wave.png", "plane_wave.h5",
              "plane_wave_acquisition.h5")

#: The plane-wave panel's field of view (m): 9.45 × 14.25 mm, 64 × 96 pixels of 0.15 mm (≈ λ/2 at 5.2 MHz)
#: with the default ``plane_wave_size`` of 96.
#: In mm and converted as ``drus reconstruct --x-range/--z-range`` converts them, so that the grid, and
#: with it the cache key of ``BH``, is the one of ``drus reconstruct plane_wave_acquisition.h5 --method
#: drus-var --x-range -4.725 4.725 --z-range 13 27.25 --size 96``.
PW_X_RANGE_MM = (-4.725, 4.725)
PW_Z_RANGE_MM = (13.0, 27.25)
PW_X_RANGE = (PW_X_RANGE_MM[0] * 1e-3, PW_X_RANGE_MM[1] * 1e-3)
PW_Z_RANGE = (PW_Z_RANGE_MM[0] * 1e-3, PW_Z_RANGE_MM[1] * 1e-3)
#: Its anechoic cysts (x, z, radius in m) and point targets (x, z in m).
PW_CYSTS = ((0.0, 15.6e-3, 1.5e-3), (0.0, 20.1e-3, 1.5e-3), (0.0, 24.6e-3, 1.5e-3))
PW_POINTS = ((-3.6e-3, 15.0e-3), (3.6e-3, 15.0e-3), (-3.6e-3, 20.0e-3), (3.6e-3, 20.0e-3),
             (-3.6e-3, 25.0e-3), (3.6e-3, 25.0e-3))
#: Point-target amplitude relative to the speckle's per-pixel standard deviation on the simulation grid.
PW_POINT_AMPLITUDE = 30.0

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DemoResult:
    """Metrics per method (``{"gcnr": {"mean", "std", "values"}, "snr": …}``), files written, timings."""

    metrics: dict
    files: list
    seconds: dict

    plane_wave: dict | None = None

    def table(self) -> str:
        """The metrics as plain-text tables (mean ± std over the cysts): the blur study, then the plane-wave panel."""
        def rows(metrics: dict) -> list:
            out = [f"{'method':<32}{'gCNR':>17}{'SNR':>17}", "-" * 66]
            for name, m in metrics.items():
                g, s = m["gcnr"], m["snr"]
                out.append(f"{name:<32}{g['mean']:>9.3f} ± {g['std']:.3f}{s['mean']:>9.3f} ± {s['std']:.3f}")
            return out

        lines = ["separable blur (paper's numerical study), 9 cysts:"] + rows(self.metrics)
        if self.plane_wave is not None:
            st = self.plane_wave["settings"]
            lines += ["", f"plane wave, channel data → drus reconstruct path ({st['grid'][0]} × {st['grid'][1]} unknowns, "
                          f"σ0 {st['sigma0']:.4g} from the data, sampler σ0 {st['sigma0_sampler']:.4g}), "
                          f"{len(PW_CYSTS)} cysts:"] + rows(self.plane_wave["metrics"])
        t = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        return "\n".join(lines + ["", f"time: {t}"])


def demo_config(*, quick: bool = False, seed: int = DEMO_SEED, **changes) -> ReconstructionConfig:
    """The demo's :class:`~drus.sampling.config.ReconstructionConfig`: the paper's sampler
    (:meth:`SamplerConfig.paper`, C = 10, 50 steps) or, with ``quick``, :meth:`SamplerConfig.quick`
    (C = 4, 20 steps), seeded with ``seed``; ``changes`` replace sampler fields (``n_samples``, ``n_steps``, …)."""
    preset = SamplerConfig.quick if quick else SamplerConfig.paper
    return ReconstructionConfig(sampler=preset(**{"seed": seed, **changes}))


def run_demo(
    out_dir="out/demo",
    *,
    config: ReconstructionConfig | None = None,
    seed: int = DEMO_SEED,
    gamma: float = DEMO_GAMMA,
    size: int = DEMO_SIZE,
    progress: bool = True,
    overwrite: bool = True,
    plane_wave: bool = True,
    plane_wave_size: int = DEMO_PLANE_WAVE_SIZE,
    cache_dir=None,
    cache: bool = True,
) -> DemoResult:
    """Run the demo and write its outputs into ``out_dir``.

    ``config``: the sampler (C ≥ 2, steps, η, η_B, β, seed), prior, device and precision
    (:class:`~drus.sampling.config.ReconstructionConfig`; default :func:`demo_config`, the paper's
    C = 10 and 50 steps seeded with ``seed``; ``demo_config(quick=True)``: C = 4 and 20 steps). The blur
    study samples with ``config.sampler``; the plane-wave panel with the same sampler at drus's prior
    fraction (:data:`drus.defaults.PRIOR_FRACTION`), as ``drus reconstruct FILE`` does. Its operator part
    is not used (the panel builds ``BH`` for its own grid).
    ``size``: grid side in pixels over the paper's field of view (256; the blur is defined in mm, so
    a coarser grid makes the problem easier and the comparison less meaningful).
    ``seed`` seeds the speckle and the noise (1000+ are never used by the shipped prior's training,
    whose synthetic images come from seed 0). ``prior=None`` uses the shipped default prior.
    ``overwrite=False`` refuses to start when ``out_dir`` already holds demo results
    (:class:`drus.outputs.OutputExistsError`).
    ``plane_wave``: add the plane-wave panel (:func:`plane_wave_panel`) with ``plane_wave_size`` pixels
    along its depth (96: 64 × 96 unknowns); ``cache_dir``/``cache``: where its decomposition of ``BH``
    is cached (default: :func:`drus.physics.decomposition_cache.default_cache_dir`, as ``drus reconstruct``).
    """
    from drus.models.prior import check_size_multiple, load_prior
    from drus.sampling.reconstruct import reconstruct
    from drus.device import resolve_device

    out = Path(out_dir)
    config = demo_config(seed=seed) if config is None else config
    if not isinstance(config, ReconstructionConfig):
        raise TypeError(f"config must be a ReconstructionConfig, got {type(config).__name__}")
    sampler = config.sampler
    n_samples, n_steps = sampler.n_samples, sampler.n_steps
    if n_samples < 2:
        raise ValueError(f"config.sampler.n_samples (--samples) {n_samples}: DRUSvar needs at least 2 samples (C ≥ 2)")
    # everything that can be wrong is checked before the minutes of sampling
    dev = resolve_device(config.device)
    check_writable_dir(out)
    refuse_overwrite([out / f for f in DEMO_FILES], overwrite=overwrite)
    if cache_dir is not None:
        check_writable_dir(cache_dir, option="--cache-dir")
    model = load_prior(config.prior, device=dev, precision=config.precision)
    check_size_multiple(model, int(size), option="--size")
    out.mkdir(parents=True, exist_ok=True)
    n = int(size)
    seconds: dict = {}
    grid = paper_grid(n)
    disks = occlusion_disks()
    p = occlusion_phantom(grid)
    o = speckle(p, seed=seed)

    # 1. physics: one 0° plane wave through H, then DAS and B y
    t = time.perf_counter()
    bf = MatchedFilterBeamformer(picmus_probe(), picmus_plane_wave(), grid)
    y_ch, _ = add_noise(bf.model.simulate(o), gamma=gamma, seed=seed + 1)
    das_img = das(y_ch, probe=bf.model.probe, waves=bf.model.wave, grid=grid)
    by = bf.beamform(y_ch)
    seconds["physics"] = time.perf_counter() - t

    # the plane-wave panel's acquisition, grid and the predicted cost of its BH, before any sampling
    pw_plan = None
    if plane_wave:
        pw_plan = _plane_wave_acquisition(out, gamma=gamma, seed=seed, size=plane_wave_size, cache_dir=cache_dir,
                                          cache=cache)

    # 2. DRUS with the separable blur of the paper's numerical study
    t = time.perf_counter()
    K = SeparableBlur.paper(grid)
    ko = K.apply(torch.from_numpy(o)).numpy()
    y_k, sigma0 = add_noise(ko, gamma=gamma, seed=seed + 2)
    rec = reconstruct(K, y_k, sigma0=sigma0, model=model, sampler=sampler, device=dev, progress=progress)
    seconds["drus"] = time.perf_counter() - t

    # 3. metrics, figure, files. Envelopes: Hilbert for beamformed RF, |x| for reflectivity images.
    envelopes = {
        "DAS (1 PW, channel data)": envelope(das_img),
        "By (matched filter)": envelope(by),
        f"observation K o + n (γ={gamma:g})": np.abs(y_k),
        f"DRUSmean (C={n_samples})": np.abs(rec.mean),
        f"DRUSvar (C={n_samples})": rec.var,
    }
    metrics = {name: contrast_metrics(env, grid, disks).to_dict() for name, env in envelopes.items()}
    panels = {"echogenicity p": log_compress(np.maximum(p, 1e-6))} | {k: log_compress(v) for k, v in envelopes.items()}
    files = [
        save_bmode_figure(panels, grid, out / "demo.png", overlays=list(disks), columns=3,
                          title=f"occlusion phantom, seed {seed}: B-mode [−60, 0] dB"),
        save_images_hdf5(
            out / "demo.h5", grid=grid,
            attrs={**config.to_attrs(), "seed": seed, "gamma": gamma, "sigma0": sigma0, "n_steps": n_steps},
            echogenicity=p, reflectivity=o, das=das_img, by=by, observation=y_k,
            samples=rec.samples, drus_mean=rec.mean, drus_var=rec.var,
        ),
    ]
    probe, wave = bf.model.probe, bf.model.wave
    files.append(write_ustb_channel_data(out / "channel_data.h5", ChannelData(
        data=y_ch[None], angles=np.array([wave.angle]), sampling_frequency=wave.sampling_frequency,
        modulation_frequency=0.0, initial_time=np.array([wave.t0]), sound_speed=wave.sound_speed,
        element_positions=np.stack([probe.element_x, 0 * probe.element_x, 0 * probe.element_x], axis=1),
        source="drus demo")))

    # 4. the plane-wave panel: a simulated acquisition through the `drus reconstruct FILE` path
    pw = None
    if pw_plan is not None:
        pw, pw_files, _, pw_seconds = _plane_wave_reconstruction(
            pw_plan, model=model, sampler=sampler.replace(prior_fraction=PRIOR_FRACTION), seed=seed, device=dev,
            progress=progress)
        files += pw_files
        seconds |= pw_seconds
    summary = {"settings": {
        "grid": list(grid.shape), "n_samples": n_samples, "n_steps": n_steps, "gamma": gamma, "seed": seed,
        "device": str(dev), "config": config.to_dict(),
        "timings_s": seconds | {f"ddrm_{k}": v for k, v in rec.timings.items()}}, "metrics": metrics}
    if pw is not None:
        summary["plane_wave"] = pw
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2))
    files.append(out / "metrics.json")
    return DemoResult(metrics=metrics, files=files, seconds=seconds, plane_wave=pw)


def plane_wave_panel(
    out_dir,
    *,
    model,
    sampler: SamplerConfig | None = None,
    gamma: float = DEMO_GAMMA,
    seed: int = DEMO_SEED,
    device="cpu",
    size: int = DEMO_PLANE_WAVE_SIZE,
    cache_dir=None,
    cache: bool = True,
    progress: bool = True,
) -> tuple[dict, list, object, dict]:
    """The plane-wave panel: a simulated acquisition through the ``drus reconstruct FILE`` path.

    1. Echogenicity 1 with the anechoic :data:`PW_CYSTS`, speckle ``o = m ⊙ p`` plus the point targets
       :data:`PW_POINTS` (amplitude :data:`PW_POINT_AMPLITUDE`) on a grid with half the pixel size of
       the reconstruction grid (the unknowns never coincide with the simulated scatterers) → channel
       data of the PICMUS L11-4v probe's 0° plane wave (:class:`drus.physics.forward.PlaneWaveModel`, the
       PICMUS pulse) + white noise ``γ·max|y|`` → ``plane_wave_acquisition.h5`` in the minimal layout
       with the probe's nominal f0 and bandwidth (DRUS then models the pulse as a Gaussian: the pulse
       shape does not match exactly, as with a scanner's file).
    2. The file is read back and reconstructed as ``drus reconstruct FILE --method drus-var --x-range …
       --z-range … --size SIZE`` does: grid over :data:`PW_X_RANGE` × :data:`PW_Z_RANGE` with ``size``
       pixels along the depth, ``BH`` decomposed (flip split, cached), σ0 from the data, the sampler's
       σ0 at ``drus.defaults.PRIOR_FRACTION``.
    3. gCNR/SNR of DAS 1 PW, DRUSmean, DRUSvar and the pooled DRUSvar over the cysts (SNR in the ring
       around each cyst); ``plane_wave.png`` and ``plane_wave.h5``.

    ``sampler``: default :meth:`SamplerConfig.drus` seeded with ``seed`` (what ``drus reconstruct FILE`` uses).

    Returns ``(part of metrics.json, files written, AcquisitionReconstruction, timings in s)``.
    """
    plan = _plane_wave_acquisition(out_dir, gamma=gamma, seed=seed, size=size, cache_dir=cache_dir, cache=cache)
    sampler = SamplerConfig.drus(seed=seed) if sampler is None else sampler
    return _plane_wave_reconstruction(plan, model=model, sampler=sampler, seed=seed, device=device, progress=progress)


def _plane_wave_acquisition(out_dir, *, gamma: float, seed: int, size: int, cache_dir, cache: bool) -> dict:
    """Steps 1–2 of :func:`plane_wave_panel` up to the settled split: the simulated file written and read
    back, the grid, ``H`` and ``B`` built and the predicted cost of the decomposition checked (cheap;
    ``run_demo`` does it before any sampling)."""
    from drus.datasets.acquisition import Acquisition, plan_decomposition, prepare_acquisition, write_acquisition
    from drus.physics.forward import PlaneWaveModel
    from drus.physics.geometry import Disk
    from drus.physics.phantoms import render_disks

    if int(size) != size or size < 16:
        raise ValueError(f"plane_wave_size must be an integer ≥ 16 (pixels along the depth), got {size!r}")
    out = Path(out_dir)
    seconds: dict = {}
    cysts = [Disk(x, z, r) for x, z, r in PW_CYSTS]
    (x0, x1), (z0, z1) = PW_X_RANGE, PW_Z_RANGE
    pixel = max(x1 - x0, z1 - z0) / (int(size) - 1) / 2  # half the reconstruction pixel
    sim_grid = ImageGrid.from_extent(x_min=x0, x_max=x1, z_min=z0, z_max=z1, n_x=int(round((x1 - x0) / pixel)) + 1,
                                     n_z=int(round((z1 - z0) / pixel)) + 1)

    # 1. the simulated acquisition, written as a user's file would be
    t = time.perf_counter()
    probe, wave = picmus_probe(), picmus_plane_wave()
    p_sim = np.where(render_disks(sim_grid, cysts), 0.0, 1.0).astype(np.float32)
    o = speckle(p_sim, seed=seed + 10)
    for x, z in PW_POINTS:
        o[int(np.argmin(np.abs(sim_grid.z_axis - z))), int(np.argmin(np.abs(sim_grid.x_axis - x)))] += PW_POINT_AMPLITUDE
    y_clean = PlaneWaveModel(probe, wave, sim_grid).simulate(o)
    y, noise_std = add_noise(y_clean, gamma=gamma, seed=seed + 11)
    acq_path = write_acquisition(out / "plane_wave_acquisition.h5", Acquisition(
        channel_data=y, element_x=probe.element_x, sampling_frequency=wave.sampling_frequency,
        sound_speed=wave.sound_speed, t0=wave.t0, angle=wave.angle, center_frequency=probe.center_frequency,
        bandwidth=probe.bandwidth, spectrum_source="file", source="drus demo"))
    seconds["plane_wave_simulation"] = time.perf_counter() - t

    # 2. the path of `drus reconstruct FILE --method drus-var`
    t = time.perf_counter()
    acq, bf = prepare_acquisition(acq_path, x_range=PW_X_RANGE, z_range=PW_Z_RANGE, size=size)
    split = plan_decomposition(bf, cache_dir=cache_dir, cache=cache)
    seconds["plane_wave_setup"] = time.perf_counter() - t
    return dict(out=out, acq=acq, bf=bf, split=split, acq_path=acq_path, cysts=cysts, sim_grid=sim_grid,
                noise_std=noise_std, gamma=gamma, cache_dir=cache_dir, cache=cache, seconds=seconds)


def _plane_wave_reconstruction(plan: dict, *, model, sampler: SamplerConfig, seed: int, device,
                               progress: bool) -> tuple[dict, list, object, dict]:
    """Steps 2–3 of :func:`plane_wave_panel`: ``BH`` decomposed, σ0, DDRM samples, scores, figure, file."""
    from drus.datasets.acquisition import reconstruct_acquisition
    from drus.physics.phantoms import render_disks
    from drus.evaluation.scoring import method_envelope

    out, acq, bf, split, cysts, seconds = (plan[k] for k in ("out", "acq", "bf", "split", "cysts", "seconds"))
    sim_grid, noise_std, gamma = plan["sim_grid"], plan["noise_std"], plan["gamma"]
    (x0, x1), (z0, z1) = PW_X_RANGE, PW_Z_RANGE
    n_samples, n_steps = sampler.n_samples, sampler.n_steps
    t = time.perf_counter()
    res = reconstruct_acquisition(acq, bf, model=model, sampler=sampler,
                                  device=device, cache_dir=plan["cache_dir"], cache=plan["cache"], split=split,
                                  progress=progress)
    seconds["plane_wave_drus"] = time.perf_counter() - t

    # 3. scores, figure, file
    grid, rec = bf.grid, res.reconstruction
    w = res.pool_window
    envelopes = {
        "DAS (1 PW)": envelope(res.das),
        f"DRUSmean (C={n_samples})": method_envelope("DRUSmean", rec.mean),
        f"DRUSvar (C={n_samples})": method_envelope("DRUSvar", rec.var),
        f"DRUSvar pooled {w}×{w} (C={n_samples})": method_envelope("DRUSvar pooled", res.var_pooled),
    }
    metrics = {name: contrast_metrics(env, grid, cysts).to_dict() for name, env in envelopes.items()}
    p_grid = np.where(render_disks(grid, cysts), 1e-6, 1.0)
    panels = ({"echogenicity p (+ 6 point targets, not drawn)": log_compress(p_grid),
               "By (matched filter)": log_compress(method_envelope("DRUSmean", res.by))}
              | {k: log_compress(v) for k, v in envelopes.items()})
    files = [plan["acq_path"],
             save_bmode_figure(panels, grid, out / "plane_wave.png", overlays=cysts, columns=3,
                               title="plane wave 0°, simulated channel data → the drus reconstruct FILE path: [−60, 0] dB"),
             save_images_hdf5(out / "plane_wave.h5", grid=grid,
                              attrs=res.attrs | {"seed": seed, "gamma": gamma, "channel_noise_std_true": noise_std,
                                                 "n_steps": n_steps, "operator": type(res.operator).__name__},
                              by=res.by, das=res.das, samples=rec.samples, drus_mean=rec.mean, drus_var=rec.var,
                              drus_var_pooled=res.var_pooled)]
    settings = {"grid": list(grid.shape), "pixel_mm": [grid.dz * 1e3, grid.dx * 1e3],
                "x_range_mm": [x0 * 1e3, x1 * 1e3], "z_range_mm": [z0 * 1e3, z1 * 1e3],
                "simulation_grid": list(sim_grid.shape), "cysts_mm": [[1e3 * v for v in c] for c in PW_CYSTS],
                "points_mm": [[1e3 * v for v in p] for p in PW_POINTS], "gamma": gamma,
                "channel_noise_std_true": noise_std, "n_samples": n_samples, "n_steps": n_steps, "seed": seed,
                "sigma0": res.sigma0, "sigma0_source": res.sigma0_source, "sigma0_sampler": res.attrs["sigma0_sampler"],
                "prior_fraction": res.attrs["prior_fraction"], "pool_window": w, "split": split,
                "decomposition_key": res.attrs["decomposition_key"],
                "kept_components": int((res.operator.singular_values > 0).sum()),
                "timings_s": seconds | {f"ddrm_{k}": v for k, v in rec.timings.items()}}
    return {"settings": settings, "metrics": metrics}, files, res, seconds
