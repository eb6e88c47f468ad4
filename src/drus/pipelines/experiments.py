"""The paper's numerical study (Sect. III, Figs. 2-3) with any prior.

Occlusion phantom (9 anechoic disks) and scatterer phantom (25 small disks), speckle realisations
``o = m ⊙ p`` from held-out seeds, the separable blur ``K`` of :meth:`SeparableBlur.paper`,
``y = K o + γ·max|K o|·n``, ``C`` DDRM samples → DRUSmean and DRUSvar. Scores per image:

- occlusion: gCNR (dB images, 256 bins) per cyst and SNR = μ/σ of the envelope in each cyst's ring;
- scatterers: −6 dB axial and lateral FWHM of every target.

Reported as mean ± std over all cysts (targets) × realisations, as in the paper.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from drus.sampling.config import ReconstructionConfig, SamplerConfig
from drus.physics.geometry import paper_grid
from drus.evaluation.metrics import contrast_metrics, mean_std, resolution_metrics
from drus.physics.operators import SeparableBlur
from drus.physics.phantoms import add_noise, occlusion_disks, occlusion_phantom, scatterer_phantom, scatterer_points, speckle
from drus.sampling.reconstruct import reconstruct

__all__ = ["NumericalStudy", "PHANTOMS", "run_realisation", "occlusion_study", "scatterer_study", "format_table",
           "save_study", "numerical_study", "OCCLUSION_SEED", "SCATTERER_SEED"]

#: First speckle seed of each phantom's realisations (held out from the shipped prior's training, seeded from 0).
OCCLUSION_SEED, SCATTERER_SEED = 1000, 2000

log = logging.getLogger(__name__)

METHODS = ("observation", "DRUSmean", "DRUSvar")


@dataclasses.dataclass
class NumericalStudy:
    """Scores ``{gamma: {method: {metric: [values over ROIs × realisations]}}}`` and the settings."""

    phantom: str
    scores: dict
    settings: dict
    example: dict = dataclasses.field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """``{gamma: {method: {metric: (mean, std)}}}``."""
        return {
            g: {m: {k: mean_std(v) for k, v in per.items()} for m, per in methods.items()}
            for g, methods in self.scores.items()
        }

    def to_json(self) -> str:
        return json.dumps({"phantom": self.phantom, "settings": self.settings, "scores": self.scores,
                           "summary": {str(g): v for g, v in self.summary().items()}}, indent=2)


def _score_occlusion(img, grid) -> dict:
    d = contrast_metrics(img, grid, occlusion_disks())
    return {"gcnr": list(d.gcnr), "snr": list(d.snr)}


def _score_scatterer(img, grid) -> dict:
    r = resolution_metrics(img, grid, scatterer_points())
    return {"fwhm_axial_mm": [v * 1e3 for v in r.axial], "fwhm_lateral_mm": [v * 1e3 for v in r.lateral]}


#: The two phantoms of Sect. III: ``name → (echogenicity map of a grid, scores of one image on a grid)``.
PHANTOMS = {"occlusion": (occlusion_phantom, _score_occlusion), "scatterer": (scatterer_phantom, _score_scatterer)}


def run_realisation(phantom: str, *, gamma: float, seed: int, model, sampler: SamplerConfig = SamplerConfig(),
                    size: int = 256, device="cpu", progress: bool = False) -> tuple[dict, dict]:
    """One unit of the numerical study: one speckle realisation of ``phantom`` at noise level ``gamma``.

    ``o = m ⊙ p`` with speckle seed ``seed``, ``y = K o + γ·max|K o|·n`` (noise seed ``seed + 10000``),
    ``C`` DDRM samples seeded with ``seed`` → DRUSmean, DRUSvar, each scored with the phantom's metrics.

    Returns
    -------
    scores : ``{method: {metric: [one value per cyst / target]}}`` for :data:`METHODS`.
    images : ``{"echogenicity", "reflectivity", *METHODS: [size, size] array}`` (amplitudes; the
        observation and DRUSmean as ``|·|``, DRUSvar the map itself).
    """
    if phantom not in PHANTOMS:
        raise ValueError(f"phantom must be one of {', '.join(PHANTOMS)}, got {phantom!r}")
    echogenicity, score = PHANTOMS[phantom]
    grid = paper_grid(size)
    K = SeparableBlur.paper(grid)
    p = echogenicity(grid)
    o = speckle(p, seed=seed)
    y, sigma0 = add_noise(K.apply(torch.from_numpy(o)).numpy(), gamma=gamma, seed=seed + 10_000)
    rec = reconstruct(K, y, sigma0=sigma0, model=model, sampler=sampler.replace(seed=seed), device=device,
                      progress=progress)
    images = {"observation": np.abs(y), "DRUSmean": np.abs(rec.mean), "DRUSvar": rec.var}
    scores = {m: {k: [float(v) for v in vals] for k, vals in score(img, grid).items()} for m, img in images.items()}
    return scores, {"echogenicity": p, "reflectivity": o} | images


def study_settings(*, gammas, seeds, sampler: SamplerConfig, size: int) -> dict:
    """The settings recorded with a study (the sampler's seed is per realisation, so left out)."""
    return {"gammas": list(gammas), "seeds": list(seeds), **{k: v for k, v in sampler.to_dict().items() if k != "seed"},
            "grid": [size, size], "blur": "SeparableBlur.paper (lateral Gaussian 0.17 mm, axial cos-modulated, unit energy)"}


def _run(phantom: str, *, model, gammas, seeds, sampler, size, device, progress):
    scores = {g: {m: {} for m in METHODS} for g in gammas}
    example = {}
    jobs = [(g, s) for g in gammas for s in seeds]
    for g, s in tqdm(jobs, desc=f"{phantom} study", disable=not progress):
        unit, images = run_realisation(phantom, gamma=g, seed=s, model=model, sampler=sampler, size=size, device=device)
        for m, per in unit.items():
            for k, v in per.items():
                scores[g][m].setdefault(k, []).extend(v)
        if s == seeds[0]:
            example[g] = images
    return NumericalStudy(phantom, scores, study_settings(gammas=gammas, seeds=seeds, sampler=sampler, size=size), example)


def occlusion_study(model, *, gammas=(0.02, 0.08), seeds=tuple(range(OCCLUSION_SEED, OCCLUSION_SEED + 9)),
                    sampler: SamplerConfig = SamplerConfig(), size=256, device="cpu", progress=True) -> NumericalStudy:
    """Fig. 2: gCNR and SNR on the occlusion phantom for each noise level γ (9 realisations by default).

    ``sampler``: C, steps, η, η_B, β (the paper's by default); each realisation seeds the sampler
    with its own speckle seed (:func:`run_realisation`)."""
    return _run("occlusion", model=model, gammas=gammas, seeds=seeds, sampler=sampler, size=size, device=device,
                progress=progress)


def scatterer_study(model, *, gammas=(0.018, 0.1), seeds=tuple(range(SCATTERER_SEED, SCATTERER_SEED + 9)),
                    sampler: SamplerConfig = SamplerConfig(), size=256, device="cpu", progress=True) -> NumericalStudy:
    """Fig. 3: axial/lateral −6 dB FWHM (mm) of the 25 targets of the scatterer phantom (``sampler`` as
    :func:`occlusion_study`)."""
    return _run("scatterer", model=model, gammas=gammas, seeds=seeds, sampler=sampler, size=size, device=device,
                progress=progress)


def format_table(study: NumericalStudy) -> str:
    """Markdown table: rows = method × γ, columns = metrics, cells mean ± std."""
    summary = study.summary()
    metrics = list(next(iter(next(iter(study.scores.values())).values())).keys())
    lines = ["| γ | method | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for g, methods in summary.items():
        for m, per in methods.items():
            cells = [f"{per[k][0]:.3f} ± {per[k][1]:.3f}" for k in metrics]
            lines.append(f"| {g:g} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_study(study: NumericalStudy, out_dir) -> list[Path]:
    """Write ``<phantom>.json``, ``<phantom>.md`` (table) and ``<phantom>.png`` (first realisation)."""
    from drus.evaluation.metrics import to_db
    from drus.outputs import write_text_atomic
    from drus.plotting import save_bmode_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{study.phantom}.json", out / f"{study.phantom}.md"]
    write_text_atomic(files[0], study.to_json())
    write_text_atomic(files[1], format_table(study) + "\n")
    grid = paper_grid(study.settings["grid"][0])
    panels = {}
    for g, imgs in study.example.items():
        for name in ("echogenicity", *METHODS):
            img = np.maximum(imgs[name], 1e-12) if name == "echogenicity" else imgs[name]
            panels[f"{name}, γ={g:g}"] = to_db(img)
    files.append(save_bmode_figure(panels, grid, out / f"{study.phantom}.png", columns=4,
                                   title=f"{study.phantom} phantom, seed {study.settings['seeds'][0]}, [−60, 0] dB"))
    return files


def numerical_study(phantoms=("occlusion", "scatterer"), *, config: ReconstructionConfig = ReconstructionConfig(),
                    realisations: int = 9, size: int = 256, out_dir, overwrite: bool = False,
                    progress: bool = True) -> list[tuple[NumericalStudy, list[Path]]]:
    """Figures 2–3 of the paper (``drus evaluate numerical``): each phantom's study, saved into ``out_dir``.

    ``phantoms``: ``"occlusion"`` (:func:`occlusion_study`) and/or ``"scatterer"`` (:func:`scatterer_study`),
    each with ``realisations`` speckle seeds from :data:`OCCLUSION_SEED` / :data:`SCATTERER_SEED`;
    ``config``: the sampler, prior, device and precision (its operator is not used: the blur is
    defined in mm). Everything is checked before any sampling (the output folder, earlier results,
    kept unless ``overwrite``, the device, and the prior's size multiple). Returns
    ``[(study, files written)]`` in the order of ``phantoms``.
    """
    from drus.device import resolve_device
    from drus.errors import OptionError
    from drus.models.prior import check_size_multiple, load_prior
    from drus.outputs import check_writable_dir, refuse_overwrite

    names = [phantoms] if isinstance(phantoms, str) else list(phantoms)
    runs = {"occlusion": (occlusion_study, OCCLUSION_SEED), "scatterer": (scatterer_study, SCATTERER_SEED)}
    for name in names:
        if name not in runs:
            raise OptionError("--phantom", f"must be one of {', '.join(runs)}, got {name!r}")
    dev = resolve_device(config.device)
    out = check_writable_dir(out_dir)
    refuse_overwrite([out / f"{n}.{ext}" for n in names for ext in ("json", "md", "png")], overwrite=overwrite)
    model = load_prior(config.prior, device=dev, precision=config.precision)
    check_size_multiple(model, size, option="--size")
    studies = [study(model, seeds=tuple(range(seed0, seed0 + realisations)), sampler=config.sampler, size=size,
                     device=dev, progress=progress)
               for study, seed0 in (runs[n] for n in names)]
    for st in studies:  # what ran, read back with ReconstructionConfig.from_dict
        st.settings["config"] = config.to_dict()
    return [(st, save_study(st, out_dir)) for st in studies]
