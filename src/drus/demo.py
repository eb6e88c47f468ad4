"""``drus demo``: the whole chain on the numerical occlusion phantom, offline, on built-in defaults.

1. Physics (paper Sect. II-B): echogenicity ``p`` (9 anechoic disks) → speckle ``o = m ⊙ p`` →
   channel data ``y = H o + n`` of one 0° plane wave (PICMUS L11-4v) → DAS and the matched-filter
   image ``B y``.
2. DRUS (paper Sect. III, Fig. 2): the separable blur ``K`` standing in for ``BH``,
   ``y_K = K o + γ·max|K o|·n``, ``C`` DDRM samples with the prior → DRUSmean and DRUSvar.
3. gCNR and SNR of every image over the 9 cysts (:func:`drus.metrics.contrast_metrics`), a figure
   with all B-modes in [−60, 0] dB, the samples and images in HDF5, and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .beamform import MatchedFilterBeamformer, das, envelope, log_compress
from .geometry import paper_grid, picmus_plane_wave, picmus_probe
from .io import ChannelData, save_images_hdf5, write_ustb_channel_data
from .metrics import contrast_metrics
from .operators import SeparableBlur
from .outputs import refuse_overwrite, write_text_atomic
from .phantoms import add_noise, occlusion_disks, occlusion_phantom, speckle
from .plotting import save_bmode_figure

__all__ = ["DemoResult", "run_demo", "DEMO_FILES"]

#: The files ``run_demo`` writes into its output folder.
DEMO_FILES = ("demo.png", "demo.h5", "channel_data.h5", "metrics.json")

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DemoResult:
    """Metrics per method (``{"gcnr": {"mean", "std", "values"}, "snr": …}``), files written, timings."""

    metrics: dict
    files: list
    seconds: dict

    def table(self) -> str:
        """The metrics as a plain-text table (mean ± std over the 9 cysts)."""
        lines = [f"{'method':<28}{'gCNR':>16}{'SNR':>16}", "-" * 60]
        for name, m in self.metrics.items():
            g, s = m["gcnr"], m["snr"]
            lines.append(f"{name:<28}{g['mean']:>9.3f} ± {g['std']:.3f}{s['mean']:>9.3f} ± {s['std']:.3f}")
        t = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        return "\n".join(lines + ["", f"time: {t}"])


def run_demo(
    out_dir="out/demo",
    *,
    quick: bool = False,
    seed: int = 1000,
    prior=None,
    device: str = "auto",
    n_samples: int | None = None,
    n_steps: int | None = None,
    gamma: float = 0.02,
    size: int = 256,
    precision: str = "fp32",
    progress: bool = True,
    overwrite: bool = True,
) -> DemoResult:
    """Run the demo and write its outputs into ``out_dir``.

    ``quick``: C = 4 samples and 20 steps instead of C = 10 and 50 (the paper's setting).
    ``size``: grid side in pixels over the paper's field of view (256; the blur is defined in mm, so
    a coarser grid makes the problem easier and the comparison less meaningful).
    ``seed`` seeds the speckle and the noise (1000+ are never used by the shipped prior's training,
    whose synthetic images come from seed 0). ``prior=None`` uses the shipped default prior.
    ``overwrite=False`` refuses to start when ``out_dir`` already holds demo results
    (:class:`drus.outputs.OutputExistsError`).
    """
    from .reconstruct import load_prior, reconstruct
    from .train import resolve_device

    out = Path(out_dir)
    n_samples = (4 if quick else 10) if n_samples is None else int(n_samples)
    n_steps = (20 if quick else 50) if n_steps is None else int(n_steps)
    if n_samples < 2:
        raise ValueError(f"--samples {n_samples}: DRUSvar needs at least 2 samples (C ≥ 2)")
    if n_steps < 1:
        raise ValueError(f"--steps {n_steps}: DDRM needs at least 1 step")
    refuse_overwrite([out / f for f in DEMO_FILES], overwrite=overwrite)
    dev = resolve_device(device)
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

    # 2. DRUS with the separable blur of the paper's numerical study
    t = time.perf_counter()
    K = SeparableBlur.paper(grid)
    ko = K.apply(torch.from_numpy(o)).numpy()
    y_k, sigma0 = add_noise(ko, gamma=gamma, seed=seed + 2)
    model = load_prior(prior, device=dev, precision=precision)
    rec = reconstruct(K, y_k, sigma0=sigma0, model=model, n_samples=n_samples, n_steps=n_steps, seed=seed, device=dev, progress=progress)
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
            out / "demo.h5", grid=grid, attrs={"seed": seed, "gamma": gamma, "sigma0": sigma0, "n_steps": n_steps},
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
    write_text_atomic(out / "metrics.json", json.dumps({"settings": {
        "grid": list(grid.shape), "n_samples": n_samples, "n_steps": n_steps, "gamma": gamma, "seed": seed,
        "device": str(dev), "timings_s": seconds | {f"ddrm_{k}": v for k, v in rec.timings.items()}}, "metrics": metrics}, indent=2))
    files.append(out / "metrics.json")
    return DemoResult(metrics=metrics, files=files, seconds=seconds)
