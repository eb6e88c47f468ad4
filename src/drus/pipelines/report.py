"""The reproduction's report: one self-contained HTML page (figures embedded as base64 PNG, no
external file, script or style sheet) and a PNG preview.

Every table puts the paper's value next to ours with the difference, and says in words where they
differ. A value *agrees* when ``|ours − paper| ≤ max(std of ours over the ROIs, 5 % of the paper's
value)``; otherwise the cell says *differs* and by how much. The paper's numbers are its Table I
(:data:`drus.datasets.picmus.PAPER_TABLE_I`); for the numerical study (Figs. 2–3) and Fig. 5 its
text gives no numbers, so the report checks its stated claims instead and says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from drus.outputs import atomic_write, write_text_atomic

__all__ = ["write_report", "agreement", "REPORT_FILE", "PREVIEW_FILE"]

REPORT_FILE = "report.html"
PREVIEW_FILE = "preview.png"

_METHODS_NUM = ("observation", "DRUSmean", "DRUSvar")
_COLOURS = {"observation": "tab:gray", "DRUSmean": "tab:blue", "DRUSvar": "tab:red"}
_LABELS = {"gcnr": "gCNR ↑", "snr": "SNR ↑", "cnr": "CNR ↑", "fwhm_axial_mm": "FWHM axial [mm] ↓",
           "fwhm_lateral_mm": "FWHM lateral [mm] ↓"}
_SHORT = {"expe_cont": "EC", "expe_reso": "ER", "simu_cont": "SC", "simu_reso": "SR"}
_RELATIVE_TOLERANCE = 0.05  # of the paper's value: the "agrees" band, with our std over the ROIs


def agreement(ours: float, std: float, paper: float) -> tuple[bool, str]:
    """``(agrees, text)``: ours against the paper's value (module docstring for the rule)."""
    if not math.isfinite(ours):
        return False, "differs: not measured"
    delta = ours - paper
    tol = max(std if math.isfinite(std) else 0.0, _RELATIVE_TOLERANCE * abs(paper))
    if abs(delta) <= tol:
        return True, f"agrees (Δ {delta:+.2f})"
    rel = f", {delta / paper:+.0%}" if paper else ""
    return False, f"differs: ours {'higher' if delta > 0 else 'lower'} by {abs(delta):.2f}{rel}"


# --- figures -------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig, dpi: int = 72) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _db(amplitude) -> np.ndarray:
    from drus.evaluation.metrics import to_db

    return to_db(np.maximum(np.abs(np.asarray(amplitude, dtype=np.float64)), 1e-12), floor_db=-60.0)


def _curves(ax, summary: dict, metric: str) -> None:
    gammas = sorted(summary)
    for m in _METHODS_NUM:
        mean = np.array([summary[g][m][metric][0] for g in gammas])
        std = np.array([summary[g][m][metric][1] for g in gammas])
        ax.errorbar(gammas, mean, yerr=std, label=m, color=_COLOURS[m], marker="o", ms=3, capsize=2, lw=1)
    ax.set_xlabel("γ (std of the additive noise, × max|Ko|)", fontsize=8)
    ax.set_ylabel(_LABELS[metric], fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def numerical_curves_png(rep, phantom: str) -> bytes:
    """Figs. 2–3 style: each metric against γ, mean ± std over ROIs × realisations, per method."""
    plt = _plt()
    summary = rep.numerical_summary(phantom)
    metrics = ("gcnr", "snr") if phantom == "occlusion" else ("fwhm_axial_mm", "fwhm_lateral_mm")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.0))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.88, wspace=0.25)  # fixed: layout engines are slow
    for ax, k in zip(np.atleast_1d(axes), metrics):
        _curves(ax, summary, k)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(f"{phantom} phantom", fontsize=9)
    return _png(fig)


def _panel_grid(rows: list, *, columns: list[str], title: str | None = None, size: float = 2.1) -> bytes:
    """``rows``: ``[(row label, {column: (amplitude or None, extent_mm)})]``; B-modes in [−60, 0] dB."""
    plt = _plt()
    width, height = size * len(columns) + 0.8, size * len(rows) + 0.5
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.3 / width, right=1 - 0.7 / width, bottom=0.2 / height, top=1 - 0.6 / height,
                        wspace=0.25, hspace=0.3)
    im = None
    for r, (label, cells) in enumerate(rows):
        for c, col in enumerate(columns):
            ax = axes[r, c]
            img, extent = cells.get(col, (None, None))
            if img is None:
                ax.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=7, transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                im = ax.imshow(_db(img), cmap="gray", vmin=-60, vmax=0, extent=extent, aspect="equal")
                ax.tick_params(labelsize=5)
            ax.set_title(f"{label}: {col}" if c == 0 else col, fontsize=7)
    if im is not None:
        cax = fig.add_axes([1 - 0.55 / width, 0.3, 0.12 / width, 0.4])
        fig.colorbar(im, cax=cax).set_label("dB", fontsize=7)
        cax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    return _png(fig)


def numerical_panels_png(rep, phantom: str) -> bytes:
    from drus.physics.geometry import paper_grid

    extent = [float(v) for v in paper_grid(rep.config.numerical_size).extent_mm]
    columns = ["echogenicity", *_METHODS_NUM]
    rows = [(f"γ={g:g}", {c: (imgs.get(c), extent) for c in columns}) for g, imgs in rep.numerical_panels(phantom).items()]
    return _panel_grid(rows, columns=columns, title=f"{phantom} phantom, first realisation, [−60, 0] dB")


def picmus_panels_png(rep) -> bytes:
    """Fig. 4 style: the PICMUS sets and the in vivo observations, one row each."""
    columns = ["DAS 75 PW", "DAS 1 PW / observation", "DENOmean", "DRUSmean", "DRUSvar"]
    rows = []
    for name in _SHORT:
        methods = rep.picmus_methods(name)
        if not methods:
            continue
        cell = {c: (methods[m]["amplitude"], methods[m]["extent_mm"]) for c, m in
                zip(columns, ("DAS 75 PW", "DAS 1 PW", "DENOmean", "DRUSmean", "DRUSvar")) if m in methods}
        rows.append((_SHORT[name], cell))
    for short, (meta, arrays) in rep.invivo().items():
        ext = meta["extents"]
        cell = {"DAS 1 PW / observation": (arrays["observation"], ext["observation"]),
                "DRUSmean": (arrays["DRUSmean"], ext["DRUSmean"]), "DRUSvar": (arrays["DRUSvar"], ext["DRUSvar"])}
        if "DAS_75_PW" in arrays:
            cell["DAS 75 PW"] = (arrays["DAS_75_PW"], ext["DAS 75 PW"])
        rows.append((f"{short} (in vivo)", cell))
    return _panel_grid(rows, columns=columns, title="PICMUS and in vivo (display only), [−60, 0] dB")


def admss_panels_png(rep) -> bytes:
    """Fig. 5 style: DRUSmean, DRUSmean + ADMSS and DRUSvar on EC and ER."""
    columns = ["DRUSmean", "DRUSmean+ADMSS", "DRUSvar"]
    rows = []
    for name in ("expe_cont", "expe_reso"):
        methods = rep.picmus_methods(name)
        rows.append((_SHORT[name], {c: (methods[c]["amplitude"], methods[c]["extent_mm"]) for c in columns if c in methods}))
    return _panel_grid(rows, columns=columns, title="DRUSvar against DRUSmean despeckled by ADMSS", size=2.6)


def preview_png(rep) -> bytes:
    """The README's preview: the occlusion curves and EC's DRUSmean, + ADMSS and DRUSvar."""
    plt = _plt()
    has_num = "numerical" in rep.config.parts
    has_pic = "picmus" in rep.config.parts and rep.picmus_methods("expe_cont")
    ncols = 4
    nrows = int(has_num) + int(bool(has_pic))
    fig, axes = plt.subplots(max(nrows, 1), ncols, figsize=(3.2 * ncols, 2.8 * max(nrows, 1)), squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.9, wspace=0.3, hspace=0.35)
    r = 0
    if has_num:
        for ax, (ph, k) in zip(axes[r], (("occlusion", "gcnr"), ("occlusion", "snr"), ("scatterer", "fwhm_axial_mm"),
                                         ("scatterer", "fwhm_lateral_mm"))):
            _curves(ax, rep.numerical_summary(ph), k)
            ax.set_title(ph, fontsize=8)
        axes[r, 0].legend(fontsize=6)
        r += 1
    if has_pic:
        methods = rep.picmus_methods("expe_cont")
        for ax, m in zip(axes[r], ("DAS 1 PW", "DRUSmean", "DRUSmean+ADMSS", "DRUSvar")):
            if m in methods:
                ax.imshow(_db(methods[m]["amplitude"]), cmap="gray", vmin=-60, vmax=0, extent=methods[m]["extent_mm"])
            ax.set_title(f"EC: {m}", fontsize=8)
            ax.tick_params(labelsize=6)
    mode = "--quick" if rep.config.quick else "full run"
    fig.suptitle(f"drus reproduce ({mode}): curves vs γ, PICMUS EC in [−60, 0] dB", fontsize=9)
    return _png(fig, dpi=70)


# --- HTML ----------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f2f2f2}
.ok{color:#17661f}.bad{color:#a31515;font-weight:600}.na{color:#777}
.banner{background:#fff4d6;border:1px solid #e0b84d;padding:0.5em 1em}
img{max-width:100%;border:1px solid #ddd}
pre{background:#f7f7f7;padding:0.5em;overflow-x:auto;font-size:0.8em}
code{background:#f2f2f2}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(head: list[str], rows: list[list[str]], *, raw: bool = False) -> str:
    """Cells are escaped unless ``raw`` (then they are trusted HTML built here)."""
    f = (lambda c: c) if raw else _e
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{f(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _ms(mean_std) -> str:
    m, s = mean_std
    return "—" if not math.isfinite(m) else f"{m:.3f} ± {s:.3f}"


def _numerical_section(rep) -> str:
    parts = ["<h2>Numerical study (paper Sect. III, Figs. 2–3)</h2>",
             "<p>Occlusion phantom: gCNR and SNR per cyst; scatterer phantom: −6 dB FWHM per target; mean ± std "
             "over all cysts (targets) × realisations, as in the paper. <b>Paper values:</b> the paper shows these "
             "results as plots only; its text gives no numbers, so no paper column is filled in (none is invented). "
             "Instead its stated claims are checked below, per γ.</p>"]
    for phantom in rep.config.gammas:
        summary = rep.numerical_summary(phantom)
        metrics = list(next(iter(next(iter(summary.values())).values())).keys())
        metrics = [k for k in _LABELS if k in metrics]
        rows = [[f"{g:g}", m, *[_ms(summary[g][m][k]) for k in metrics], "no number in the paper's text"]
                for g in summary for m in _METHODS_NUM]
        parts.append(f"<h3>{_e(phantom)} phantom ({len(rep.config.seeds(phantom))} realisations per level)</h3>")
        parts.append(_table(["γ", "method", *[_LABELS[k] for k in metrics], "paper"], rows))
        parts.append(_claims(phantom, summary))
        parts.append(_img(numerical_curves_png(rep, phantom), f"{phantom} metrics against gamma"))
        parts.append(_img(numerical_panels_png(rep, phantom), f"{phantom} image panels"))
    return "\n".join(parts)


def _claims(phantom: str, summary: dict) -> str:
    rows = []
    if phantom == "occlusion":
        claim = "Fig. 2: DRUSvar above DRUSmean and the observation By in gCNR and SNR"
        for g, per in summary.items():
            checks = []
            for k in ("gcnr", "snr"):
                v, mean_, obs = per["DRUSvar"][k][0], per["DRUSmean"][k][0], per["observation"][k][0]
                checks.append((v > mean_ and v > obs, f"{_LABELS[k].split()[0]}: {v:.3f} vs {mean_:.3f} / {obs:.3f}"))
            ok = all(c for c, _ in checks)
            rows.append([f"{g:g}", claim, "; ".join(t for _, t in checks), _verdict(ok)])
    else:
        claim = "Fig. 3: DRUSvar's FWHM slightly above (worse than) DRUSmean's, stable as γ grows"
        for g, per in summary.items():
            d = [per["DRUSvar"][k][0] - per["DRUSmean"][k][0] for k in ("fwhm_axial_mm", "fwhm_lateral_mm")]
            ok = all(math.isfinite(x) and x >= 0 for x in d)
            rows.append([f"{g:g}", claim, f"DRUSvar − DRUSmean: axial {d[0]:+.3f} mm, lateral {d[1]:+.3f} mm",
                         _verdict(ok, "as the paper", "differs from the paper: DRUSvar not wider on both axes")])
        span = [per["DRUSvar"]["fwhm_axial_mm"][0] for per in summary.values()]
        if len(span) > 1 and all(math.isfinite(x) for x in span):
            rows.append(["all", "stability over γ", f"DRUSvar axial FWHM ranges {min(span):.3f}–{max(span):.3f} mm",
                         "(read the curve)"])
    return _table(["γ", "the paper's claim", "ours (DRUSvar vs DRUSmean / By)", "holds?"],
                  [[_e(c) for c in r[:-1]] + [r[-1]] for r in rows], raw=True)


def _verdict(ok: bool, yes: str = "holds", no: str = "does not hold here") -> str:
    return f'<span class="ok">{_e(yes)}</span>' if ok else f'<span class="bad">{_e(no)}</span>'


def _picmus_section(rep) -> str:
    from drus.datasets.picmus import PAPER_TABLE_I

    summary = rep.picmus_summary()
    methods = ("DAS 75 PW", "DAS 1 PW", "DENOmean", "DRUSmean", "DRUSvar", "DRUSvar pooled", "DRUSmean+ADMSS")
    rows, n_diff, n_cmp = [], 0, 0
    for name in _SHORT:
        if name not in summary:
            continue
        per = summary[name]
        metrics = [k for k in ("gcnr", "snr", "fwhm_axial_mm", "fwhm_lateral_mm") if any(k in per[m] for m in per)]
        for k in metrics:
            paper = PAPER_TABLE_I.get((name, k), {})
            cells = []
            for m in methods:
                if m not in per or k not in per[m]:
                    cells.append('<span class="na">—</span>')
                    continue
                mean, std = per[m][k]
                cell = _e(_ms((mean, std)))
                if m in paper:
                    ok, text = agreement(mean, std, paper[m])
                    n_cmp += 1
                    n_diff += not ok
                    cell += f"<br>paper {paper[m]:.2f}<br><span class=\"{'ok' if ok else 'bad'}\">{_e(text)}</span>"
                elif (name, k) in PAPER_TABLE_I:
                    cell += '<br><span class="na">not in the paper</span>'
                cells.append(cell)
            rows.append([_e(_SHORT[name]), _e(_LABELS[k]), *cells])
    head = ["set", "metric", *methods]
    s = rep.config.sampler
    dec = rep.provenance.get("decomposition") or {}
    parts = [
        "<h2>PICMUS: Table I (paper Sect. IV)</h2>",
        f"<p>Ours: mean ± std over the ROIs (cysts for gCNR, speckle boxes for SNR, point targets for FWHM); the "
        f"paper's value (Table I) beneath, with the difference. <b>{n_diff} of {n_cmp}</b> compared values differ "
        f"from the paper by more than max(our std, 5 % of the paper's value). EC = expe_cont, ER = expe_reso (the "
        f"paper's); SC, SR are the simulated sets (not in the paper's table). C = {s.n_samples}, {s.n_steps} steps, "
        f"seed {s.seed}, the paper's σ0 per set; By on {_e(dec.get('measurement_grid', '256×256'))}, DRUS unknowns on "
        f"{rep.config.unknown_size}² (the paper: 256²). DRUSvar pooled (one DAS resolution cell) and "
        f"DRUSmean+ADMSS are drus's additions and have no paper value.</p>",
        _table(head, rows, raw=True),
        _img(picmus_panels_png(rep), "Fig. 4 style panels"),
        "<p>In vivo rows (CC, CL): the paper's carotid observations with the paper's σ0 (12, 1.5), display "
        "only — no ROIs, no metrics. The paper used a prior fine-tuned on in vivo images for them; this run uses "
        "the same prior as for the phantoms. The ‘observation’ column of those rows is the envelope of By.</p>",
    ]
    parts += [_admss_section(rep)]
    return "\n".join(parts)


def _admss_section(rep) -> str:
    rows = []
    for name in ("expe_cont", "expe_reso"):
        per = rep.picmus_summary().get(name, {})
        for m in ("DRUSmean", "DRUSmean+ADMSS", "DRUSvar"):
            if m not in per:
                continue
            rows.append([_SHORT[name], m, *[_ms(per[m].get(k, (math.nan, math.nan)))
                                           for k in ("gcnr", "snr", "fwhm_axial_mm", "fwhm_lateral_mm")],
                         "Fig. 5 is qualitative: no number"])
    admss = next((meta.get("admss") for key, (meta, _) in rep.units.items() if key.endswith("/ADMSS")), {})
    return "\n".join([
        "<h2>DRUSvar against DRUSmean + ADMSS (paper Fig. 5)</h2>",
        f"<p>ADMSS (Ramos-Llordén et al., IEEE TIP 2015; <code>drus.evaluation.despeckle.admss</code>) on the "
        f"envelope of DRUSmean, before log compression, with the DRUS authors' parameters "
        f"{_e(json.dumps(admss))} (σ, ρ in pixels of the unknown grid). The paper shows this comparison as images "
        f"only and claims DRUSvar avoids ADMSS's over-smoothing; our metrics are given for the record.</p>",
        _table(["set", "method", _LABELS["gcnr"], _LABELS["snr"], _LABELS["fwhm_axial_mm"], _LABELS["fwhm_lateral_mm"],
                "paper"], rows),
        _img(admss_panels_png(rep), "Fig. 5 style panels"),
    ])


def _provenance_section(rep) -> str:
    p = rep.provenance
    env = p["environment"]
    prior = p["prior"]
    timing = {k: f"{len(v)} units, {np.mean(v):.1f} s each (mean)" for k, v in sorted(rep.unit_seconds().items())}
    rows = [["command", f"<code>{_e(p['command'])}</code>"],
            ["started", _e(p["started"])],
            ["wall time", _e(f"{p['wall_seconds']:.0f} s ({p['wall_seconds'] / 60:.1f} min), this invocation")],
            ["device", _e(", ".join(f"{k} {env[k]}" for k in ("device", "gpu", "cpu_count", "torch_threads") if k in env))],
            ["versions", _e(", ".join(f"{k} {env[k]}" for k in ("drus", "python", "numpy", "scipy", "torch")))],
            ["platform", _e(env["platform"])],
            ["prior", _e(f"{prior['path']}" + (" (shipped)" if prior["shipped"] else ""))],
            ["prior sha256", "<br>".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in prior["sha256"].items())],
            ["seeds", f"<code>{_e(json.dumps(p['seeds']))}</code>"],
            ["configuration", f"<code>{_e(json.dumps(rep.config.to_dict()))}</code>"],
            ["decomposition of BH", f"<code>{_e(json.dumps(p.get('decomposition') or 'not needed in this run'))}</code>"],
            ["units folder", f"<code>{_e(p['units_folder'])}</code> (fingerprint {_e(p['fingerprint'])})"],
            ["units", _e(f"{len(rep.computed)} computed in this invocation, {len(rep.reused)} reused from an "
                         "earlier run")],
            ["time per unit", "<br>".join(_e(f"{k}: {v}") for k, v in timing.items())]]
    reused = ("<details><summary>Reused units ({n})</summary><pre>{lst}</pre></details>"
              .format(n=len(rep.reused), lst=_e("\n".join(rep.reused) or "none")))
    card = (f"<details><summary>Prior model card ({_e(prior['model_card_source'] or 'none')})</summary>"
            f"<pre>{_e(prior['model_card'])}</pre></details>")
    return "\n".join(["<h2>Provenance</h2>", _table(["", ""], rows, raw=True), reused, card])


def build_html(rep) -> str:
    """The report page (a string)."""
    mode = "--quick" if rep.config.quick else "full"
    banner = ("<p class=\"banner\"><b>Quick run.</b> Reduced levels, realisations, samples, steps and grids "
              "(configuration below): it checks every code path; its numbers are <b>not</b> comparable with the "
              "paper's. Run without <code>--quick</code> for the reproduction.</p>") if rep.config.quick else ""
    body = [f"<h1>drus reproduce {_e(rep.config.target)} ({mode})</h1>", banner,
            f"<p>{len(rep.computed)} units computed, <b>{len(rep.reused)} reused</b> from an earlier run; "
            f"wall time {rep.provenance['wall_seconds'] / 60:.1f} min. Prior: "
            f"<code>{_e(Path(rep.provenance['prior']['path']).name)}</code>. The paper: Zhang et al., DRUSvar (code: github.com/Yuxin-Zhang-Jasmine/DRUSvar).</p>"]
    if "numerical" in rep.config.parts:
        body.append(_numerical_section(rep))
    if "picmus" in rep.config.parts:
        body.append(_picmus_section(rep))
    body.append(_provenance_section(rep))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>drus reproduce {_e(rep.config.target)} ({mode})</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(rep, out_dir) -> dict:
    """Write ``report.html`` and ``preview.png`` into ``out_dir`` (atomically); returns their paths."""
    out = Path(out_dir)
    report = write_text_atomic(out / REPORT_FILE, build_html(rep))
    png = preview_png(rep)
    preview = atomic_write(out / PREVIEW_FILE, lambda tmp: Path(tmp).write_bytes(png))
    return {"report": report, "preview": preview}
