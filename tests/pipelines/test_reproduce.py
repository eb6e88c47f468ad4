"""``drus reproduce``: units saved and reused on a rerun, and a report whose every figure resolves.

Tiny settings (64² numerical and 32² DRUS grids, C = 2, 2 steps, one level per phantom): seconds, not
numbers worth reading. The PICMUS part reads the shared reference data and skips without it.
"""

from __future__ import annotations

import base64
import binascii
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner

from drus.models.prior import default_prior_path
from drus.pipelines.picmus import decimated_grid, decimation
from drus.pipelines.report import REPORT_FILE, agreement
from drus.pipelines.reproduce import NUMERICAL_GAMMAS, PANEL_GAMMAS, ReproduceConfig, UnitStore, run_reproduction
from drus.physics.geometry import paper_grid
from drus.sampling.config import SamplerConfig

needs_prior = pytest.mark.skipif(not default_prior_path().exists(), reason="no shipped prior")
pytestmark = pytest.mark.usefixtures("one_thread")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects every ``src``/``href`` and counts tables and table rows."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.tables, self.rows = [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if "href" in a or (tag != "img" and "src" in a):
            self.links.append(a.get("href") or a.get("src"))
        self.tables += tag == "table"
        self.rows += tag == "tr"


def parse_report(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert page.images, "the report has no figure"
    for src in page.images:  # self-contained: every figure is an embedded PNG that decodes
        assert src.startswith("data:image/png;base64,"), src[:60]
        try:
            data = base64.b64decode(src.split(",", 1)[1], validate=True)
        except binascii.Error as exc:
            pytest.fail(f"figure does not decode: {exc}")
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert not page.links, f"the report refers to outside files: {page.links}"
    return page


def tiny(target: str, **changes) -> ReproduceConfig:
    base = dict(gammas={"occlusion": (0.02,), "scatterer": (0.1,)}, realisations=1,
                sampler=SamplerConfig.paper(n_samples=2, n_steps=2), numerical_size=64, picmus_stride=4,
                unknown_size=32)
    return ReproduceConfig(target=target, quick=True, **{**base, **changes})


def test_paper_levels_and_config():
    assert len(NUMERICAL_GAMMAS["occlusion"]) == 12 and NUMERICAL_GAMMAS["occlusion"][0] == 0.02
    assert NUMERICAL_GAMMAS["occlusion"][-1] == 0.35
    assert len(NUMERICAL_GAMMAS["scatterer"]) == 11 and NUMERICAL_GAMMAS["scatterer"][::10] == (0.0, 0.1)
    for phantom, levels in PANEL_GAMMAS.items():  # the paper's panels are among the levels run
        assert set(levels) <= set(NUMERICAL_GAMMAS[phantom])
    full = ReproduceConfig.paper()
    assert full.realisations == 9 and full.sampler.n_samples == 10 and full.sampler.n_steps == 50
    assert full.numerical_size == 256 and not full.quick and ReproduceConfig.reduced().quick
    assert full.fingerprint("a") != ReproduceConfig.reduced().fingerprint("a") != ReproduceConfig.reduced().fingerprint("b")
    assert ReproduceConfig.paper("picmus").fingerprint("a") == ReproduceConfig.paper("all").fingerprint("a")
    with pytest.raises(ValueError, match="target"):
        ReproduceConfig(target="table")
    with pytest.raises(ValueError, match="n_samples"):
        ReproduceConfig(sampler=SamplerConfig(n_samples=1))


def test_agreement_rule():
    assert agreement(0.96, 0.01, 0.98)[0]  # within 5 % of the paper's value
    ok, text = agreement(0.69, 0.03, 0.98)
    assert not ok and "lower by 0.29" in text and "-30%" in text
    assert agreement(0.30, 0.10, 0.34)[0]  # within our std
    assert not agreement(float("nan"), 0.0, 1.0)[0]


def test_decimation_keeps_the_grid_symmetric():
    grid = paper_grid(256)
    iz, ix = decimation(grid.shape, 4)
    assert len(iz) == len(ix) == 64 and np.array_equal(ix, 255 - ix[::-1])
    small = decimated_grid(grid, 4)
    assert small.shape == (64, 64) and np.allclose(small.x_axis, -small.x_axis[::-1])
    with pytest.raises(ValueError, match="stride"):
        decimation((256, 256), 3)


@needs_prior
def test_numerical_units_are_saved_reused_and_reported(tmp_path):
    out = tmp_path / "rep"
    first = run_reproduction(tiny("numerical"), out_dir=out, device="cpu", progress=False, command="drus reproduce test")
    assert len(first.computed) == 2 and first.reused == []
    store = UnitStore(first.provenance["units_folder"])
    for key in first.computed:
        assert store.has(key)
        meta, arrays = store.load(key)
        assert set(meta["scores"]) == {"observation", "DRUSmean", "DRUSvar"} and meta["seconds"] > 0
        assert arrays["DRUSvar"].shape == (64, 64)  # panel level and first seed: images kept
    summary = first.numerical_summary("occlusion")
    assert set(summary) == {0.02} and 0 <= summary[0.02]["DRUSvar"]["gcnr"][0] <= 1
    page = parse_report(out / REPORT_FILE)
    assert page.tables >= 4 and len(page.images) == 4  # 2 phantoms × (curves, panels)
    assert (out / "preview.png").read_bytes().startswith(PNG_SIGNATURE) and (out / "results.json").is_file()

    # a rerun reuses everything; removing one unit recomputes only that one
    second = run_reproduction(tiny("numerical"), out_dir=out, device="cpu", progress=False)
    assert second.computed == [] and sorted(second.reused) == sorted(first.computed)
    assert second.numerical_summary("occlusion") == summary
    text = (out / REPORT_FILE).read_text()
    assert "2 reused" in text and first.computed[0] in text
    store.path(first.computed[0]).unlink()
    third = run_reproduction(tiny("numerical"), out_dir=out, device="cpu", progress=False)
    assert third.computed == [first.computed[0]] and third.reused == [first.computed[1]]


@needs_prior
def test_picmus_and_cli_on_the_reference_data(reference_data, tmp_path, monkeypatch):
    if not (reference_data / "picmus" / "by_drus" / "expe_cross.mat").is_file():
        pytest.skip("PICMUS observations not in the reference data")
    monkeypatch.setenv("DRUS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rep"
    rep = run_reproduction(tiny("picmus"), out_dir=out, device="cpu", progress=False, data_root=reference_data,
                           cache_dir=tmp_path / "cache")
    units = set(rep.computed)
    for name in ("expe_cont", "expe_reso", "simu_cont", "simu_reso"):
        assert {f"picmus/{name}/DAS", f"picmus/{name}/DENOmean", f"picmus/{name}/DRUS"} <= units
    assert {"picmus/expe_cont/ADMSS", "picmus/expe_reso/ADMSS", "invivo/CC/DRUS", "invivo/CL/DRUS"} <= units
    summary = rep.picmus_summary()
    ec = summary["expe_cont"]
    assert {"DAS 75 PW", "DAS 1 PW", "DENOmean", "DRUSmean", "DRUSvar", "DRUSmean+ADMSS"} <= set(ec)
    assert np.isfinite(ec["DRUSmean+ADMSS"]["snr"][0]) and "fwhm_axial_mm" in summary["expe_reso"]["DRUSmean+ADMSS"]
    page = parse_report(out / REPORT_FILE)
    assert page.tables >= 3 and len(page.images) == 2  # Fig. 4 and Fig. 5 panels
    text = (out / REPORT_FILE).read_text()
    assert "paper 0.98" in text and ("agrees" in text or "differs" in text)  # the paper's EC DRUSvar gCNR

    # the command (with --quick made tiny): a rerun through it into the same folder reuses every unit
    from drus.cli import main
    from drus.pipelines import reproduce as module

    monkeypatch.setattr(module.ReproduceConfig, "reduced", classmethod(lambda cls, target: tiny(target)))
    res = CliRunner().invoke(main, ["reproduce", "picmus", "--quick", "--out", str(out), "--device", "cpu",
                                    "--data", str(reference_data)])
    assert res.exit_code == 0, res.output
    assert f"0 units computed, {len(units)} reused" in res.output and "report.html" in res.output
    assert "drus reproduce picmus --quick --out" in (out / REPORT_FILE).read_text()
