"""PICMUS evaluation (paper Table I; :mod:`drus.datasets.picmus`) and ``drus reconstruct``.

The evaluation runs end to end on a FAKE reference-data folder written in ``tmp_path`` in the real
layouts (``by_drus``/``by_deno`` ``.mat``, USTB DAS references, PICMUS phantom HDF5) on the paper's
field of view at 32 × 32 pixels with 16 × 16 DRUS unknowns, a tiny random UNet, C = 2 and 2 steps.
The real files are only parsed (``realdata``), never reconstructed here.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from click.testing import CliRunner

from drus.sampling.config import ReconstructionConfig, SamplerConfig
from drus.physics.beamform import MatchedFilterBeamformer, envelope
from drus.cli import main
from drus.physics.geometry import paper_grid, picmus
from drus.datasets.channel_data import ChannelData
from drus.datasets.io import load_images_hdf5, write_ustb_channel_data
from drus.datasets.picmus import (
    PAPER_TABLE_I,
    PICMUS_SETS,
    channel_data_to_by,
    infer_dataset,
    load_picmus_inputs,
    picmus_operator,
)
from drus.evaluation.scoring import METHODS, method_envelope, points_in_view
from drus.pipelines.picmus import evaluate_picmus

MEAS, UNKNOWN = 32, 16
GROUP = "US/US_DATASET0000"


pytestmark = pytest.mark.usefixtures("one_thread")


# --- a fake reference-data folder in the real layouts ---------------------------------------------------
def _write_phantom(path, *, cysts=(), points=(), rois=()):
    """PICMUS phantom file: occlusions (x, z, diameter), points (x, z), speckle ROIs (x, z) in m."""
    with h5py.File(path, "w") as f:
        g = f.create_group(GROUP)
        g.attrs["name"] = np.bytes_("fake phantom")
        c = np.array(cysts, dtype=np.float32).reshape(-1, 3) if cysts else np.zeros((1, 3), np.float32)
        p = np.array(points, dtype=np.float32).reshape(-1, 2) if points else np.array([[0.0, 20e-3]], np.float32)
        r = np.array(rois, dtype=np.float32).reshape(-1, 2) if rois else np.zeros((1, 2), np.float32)
        times = np.full(len(r), 10.0 if rois else 0.0, np.float32)  # 10 × 0.45 mm half sizes
        for name, v in [("phantom_occlusionCenterX", c[:, 0]), ("phantom_occlusionCenterZ", c[:, 1]),
                        ("phantom_occlusionDiameter", c[:, 2]), ("phantom_xPts", p[:, 0]), ("phantom_zPts", p[:, 1]),
                        ("phantom_RoiCenterX", r[:, 0]), ("phantom_RoiCenterZ", r[:, 1]), ("phantom_RoiPsfTimeX", times),
                        ("phantom_RoiPsfTimeZ", times), ("phantom_lateralResolution", [0.45e-3]),
                        ("phantom_axialResolution", [0.45e-3])]:
            g.create_dataset(name, data=np.asarray(v, np.float32))


def _write_das(path, grid, image):
    """USTB DAS reference: frames [x, z] with 1, 3, 11, 75 plane waves (envelopes, imag = 0)."""
    frames = np.stack([np.abs(image) * (1 + 0.1 * k) for k in range(4)]).transpose(0, 2, 1)
    with h5py.File(path, "w") as f:
        g = f.create_group(GROUP)
        g.create_dataset("data/real", data=frames.astype(np.float32))
        g.create_dataset("data/imag", data=np.zeros_like(frames, np.float32))
        g.create_dataset("number_plane_waves", data=np.array([1, 3, 11, 75], np.float32))
        g.create_dataset("scan/x_axis", data=grid.x_axis.astype(np.float32))
        g.create_dataset("scan/z_axis", data=grid.z_axis.astype(np.float32))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """``(root, geometry, operator)``: 32² By/DENO/DAS/phantom files of the 4 sets, and the decomposed BH."""
    root = tmp_path_factory.mktemp("reference")
    geometry = picmus(MEAS)
    grid = geometry[2]
    bf, op = picmus_operator(UNKNOWN, geometry=geometry, cache_dir=root / "cache", progress=False)
    rng = np.random.default_rng(0)
    X, Z = paper_grid(UNKNOWN).meshgrid()
    folder = root / "picmus"
    for sub in ("by_drus", "by_deno", "das_reference", "phantoms"):
        (folder / sub).mkdir(parents=True)
    cysts = [(-8e-3, 22e-3, 8e-3), (8e-3, 36e-3, 8e-3)]
    points = [(0.0, 10e-3), (0.0, 20e-3), (-9e-3, 30e-3), (5e-3, 40e-3)]  # the first on the edge: not measured
    for ds in PICMUS_SETS.values():
        o = rng.standard_normal(X.shape)
        if ds.kind == "contrast":
            for x, z, d in cysts:
                o[(X - x) ** 2 + (Z - z) ** 2 < (d / 2) ** 2] *= 0.01
            _write_phantom(folder / "phantoms" / f"picmus_phantom_{ds.number}.hdf5", cysts=cysts,
                           rois=[(-8e-3, 30e-3), (8e-3, 28e-3)])
        else:
            o *= 0.05
            for x, z in points:
                o[np.argmin(np.abs(Z[:, 0] - z)), np.argmin(np.abs(X[0] - x))] = 20.0
            _write_phantom(folder / "phantoms" / f"picmus_phantom_{ds.number}.hdf5", points=points)
        by = bf.BH.apply(torch.from_numpy(o)).numpy()
        by = by / np.abs(by).std() * 20 * ds.sigma0_drus + ds.sigma0_drus * rng.standard_normal(by.shape)
        # DRUS By: MATLAB (1, N) flattened column-major; DENO: row-major, max 1
        scipy.io.savemat(folder / "by_drus" / f"{ds.name}.mat", {"By": by.reshape(-1, order="F")[None].astype(np.float32)})
        scipy.io.savemat(folder / "by_deno" / f"{ds.name}.mat", {"By": (by / np.abs(by).max()).reshape(1, -1).astype(np.float32)})
        _write_das(folder / "das_reference" / f"{ds.number}.hdf5", grid, envelope(by))
    return root, geometry, op


def tiny_unet():
    from drus.models.unet import UNet, UNetConfig

    cfg = UNetConfig.from_dict({**UNetConfig.small().to_dict(), "model_channels": 8, "channel_mult": (1, 2),
                                "attention_resolutions": (), "num_groups": 4, "num_head_channels": 8})
    torch.manual_seed(0)
    net = UNet(cfg)
    with torch.no_grad():  # the output conv is zero-initialised: give every weight a small value
        for p in net.parameters():
            p.copy_(0.05 * torch.randn_like(p))
    return net.eval()


# --- the evaluation --------------------------------------------------------------------------------------
def test_evaluate_picmus_on_fake_data_writes_table_and_files(fake, tmp_path):
    root, geometry, op = fake
    out = tmp_path / "out"
    res = evaluate_picmus(tiny_unet(), config=ReconstructionConfig(sampler=SamplerConfig(n_samples=2, n_steps=2), device="cpu"),
                          data_root=root, geometry=geometry, decomposed=op,
                          progress=False, out_dir=out)
    assert list(res.datasets) == ["simu_reso", "simu_cont", "expe_reso", "expe_cont"]
    table = res.table()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "metric" not in line]
    labels = [tuple(c.strip() for c in r.split("|")[1:3]) for r in rows]
    assert labels == [("EC", "gCNR ↑"), ("EC", "SNR ↑"), ("ER", "gCNR ↑"), ("ER", "SNR ↑"), ("ER", "FWHM A [mm] ↓"),
                      ("ER", "FWHM L [mm] ↓"), ("SC", "gCNR ↑"), ("SC", "SNR ↑"), ("SR", "FWHM A [mm] ↓"),
                      ("SR", "FWHM L [mm] ↓")], table
    assert all(len(r.split("|")) == len(METHODS) + 4 for r in rows)
    assert "0.95 ± " in table or "(0.95)" in table  # the paper's EC gCNR beside ours
    ec_gcnr = rows[0]
    for meth in PAPER_TABLE_I["expe_cont", "gcnr"]:
        assert f"({PAPER_TABLE_I['expe_cont', 'gcnr'][meth]:.2f})" in ec_gcnr
    assert "DRUSvar pooled" in METHODS and "DRUSvar pooled" not in PAPER_TABLE_I["expe_cont", "gcnr"]  # ours only
    # grids: DAS on its file's axes, DENO on the By grid, DRUS on the unknown grid
    d = res.datasets["expe_cont"]
    assert d.methods["DENOmean"].grid.shape == (MEAS, MEAS) and d.methods["DRUSvar"].grid.shape == (UNKNOWN, UNKNOWN)
    assert d.drus_samples.shape == (2, UNKNOWN, UNKNOWN) and d.deno_samples.shape == (2, MEAS, MEAS)
    assert len(d.methods["DAS 1 PW"].metrics["gcnr"]) == 2 and len(d.methods["DAS 1 PW"].metrics["snr"]) == 2
    # ER: the extra (hyperechoic) ROI of PICMUS_SETS; points: 3 of 4 inside the field of view
    er = res.datasets["expe_reso"].methods["DRUSmean"].metrics
    assert len(er["gcnr"]) == 1 and len(er["fwhm_axial_mm"]) == 3
    for meth in METHODS:
        for v in res.summary()["simu_cont"][meth].values():
            assert np.isfinite(v[0])
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["expe_cont.hdf5", "expe_reso.hdf5", "simu_cont.hdf5", "simu_reso.hdf5", "table.md",
                            "results.json", "picmus.png"])
    saved = load_images_hdf5(out / "expe_cont.hdf5")
    assert saved.grid.shape == (UNKNOWN, UNKNOWN) and saved["samples"].shape == (2, UNKNOWN, UNKNOWN)
    assert saved["var_pooled"].shape == (UNKNOWN, UNKNOWN)
    assert saved["by"].shape == saved["deno_mean"].shape == (MEAS, MEAS) and saved["das_75pw"].shape == (MEAS, MEAS)
    js = json.loads((out / "results.json").read_text())
    assert js["settings"]["operator"] == {"unknown_size": UNKNOWN, "threshold": 1e-3, "compute_dtype": "float64"}
    assert js["settings"]["n_samples"] == 2 and js["settings"]["prior_fraction"] == 0.0
    # the whole configuration, with the operator that ran, reads back
    ran = ReconstructionConfig.from_dict(js["settings"]["config"])
    assert ran.sampler == SamplerConfig(n_samples=2, n_steps=2) and ran.operator.unknown_size == UNKNOWN
    m = js["datasets"]["expe_cont"]["methods"]["DRUSvar"]["metrics"]["gcnr"]
    assert m["paper"] == 0.98 and len(m["values"]) == 2
    assert (out / "table.md").read_text().startswith("| set | metric |")


CPU = ReconstructionConfig(device="cpu")


def test_evaluate_picmus_rejects_bad_arguments(fake):
    root, geometry, op = fake
    with pytest.raises(ValueError, match="unknown PICMUS dataset 'carotid'"):
        evaluate_picmus(None, sets=["carotid"], config=CPU, data_root=root, geometry=geometry, decomposed=op)
    with pytest.raises(ValueError, match="n_samples must be ≥ 2"):
        evaluate_picmus(None, config=CPU.replace(sampler=SamplerConfig(n_samples=1)), data_root=root, geometry=geometry, decomposed=op)
    with pytest.raises(FileNotFoundError, match="PICMUS files of simu_reso not found"):
        evaluate_picmus(tiny_unet(), sets=["simu_reso"], config=CPU.replace(sampler=SamplerConfig(n_samples=2, n_steps=1)),
                        data_root=root / "nowhere",
                        geometry=geometry, decomposed=op, progress=False)


def test_helpers():
    assert method_envelope("DAS 1 PW", -np.ones((4, 4))).min() == 1
    with pytest.raises(ValueError, match="unknown method"):
        method_envelope("ADMSS", np.ones((4, 4)))
    pts = np.array([[0.0, 9.99999978e-3], [0.0, 45e-3], [17.9e-3, 20e-3], [0.0, 30e-3]])
    np.testing.assert_array_equal(points_in_view(pts, paper_grid(256)), pts[[1, 3]])
    assert infer_dataset("by_drus/expe_cont.mat").name == "expe_cont"
    assert infer_dataset("contrast_speckle_expe_dataset_rf.hdf5").name == "expe_cont"
    assert infer_dataset("resolution_distorsion_simu_dataset_rf.hdf5").name == "simu_reso"
    assert infer_dataset("carotid_cross_expe_dataset_rf.hdf5") is None


def test_channel_data_to_by_matches_the_by_preprocessing():
    """Channel data on the model's own time axis: B (gain · y / max · factor), exactly."""
    probe, wave, grid = picmus(MEAS)
    bf = MatchedFilterBeamformer(probe, wave, grid)
    o = np.random.default_rng(1).standard_normal(grid.shape)
    y = bf.model.simulate(o)
    cd = ChannelData(data=y[None], angles=np.zeros(1), sampling_frequency=wave.sampling_frequency,
                     modulation_frequency=0.0, initial_time=np.array([wave.t0]), sound_speed=wave.sound_speed,
                     element_positions=np.stack([probe.element_x, 0 * probe.element_x, 0 * probe.element_x], 1))
    from drus.datasets.picmus import depth_gain

    g = y * depth_gain(y.shape[0])[:, None]
    expected = bf.beamform(g / np.abs(g).max() * 30)
    by = channel_data_to_by(cd, bf, by_factor=30)
    np.testing.assert_allclose(by, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    iq = ChannelData(data=y[None] + 0j, angles=np.zeros(1), sampling_frequency=wave.sampling_frequency,
                     modulation_frequency=5e6, initial_time=np.zeros(1), sound_speed=wave.sound_speed,
                     element_positions=cd.element_positions)
    with pytest.raises(ValueError, match="IQ data"):
        channel_data_to_by(iq, bf, by_factor=30)


# --- drus reconstruct: errors -------------------------------------------------------------------------------------
def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_reconstruct_errors(tmp_path):
    obs = tmp_path / "my_scan.mat"
    scipy.io.savemat(obs, {"By": np.ones((1, 256 * 256), np.float32)})
    r = _invoke("reconstruct", obs, "--method", "magic")
    assert r.exit_code != 0 and "Invalid value for '--method'" in r.output and "drus-var" in r.output
    # drus-* estimate σ0 of an unknown By from the data (tests/datasets/test_acquisition.py); deno-mean cannot
    r = _invoke("reconstruct", obs, "--method", "deno-mean", "--out", tmp_path / "o")
    assert r.exit_code != 0 and "pass --sigma0" in r.output and "σ0 unknown for my_scan.mat" in r.output
    r = _invoke("reconstruct", obs, "--method", "drus-var", "--sigma0", "1", "--samples", "1")
    assert r.exit_code == 2 and "Invalid value for --samples" in r.output and "at least 2 samples (C ≥ 2), got 1" in r.output
    small = tmp_path / "expe_cont.mat"  # σ0 from the inferred dataset, but a 32² image
    scipy.io.savemat(small, {"By": np.ones((1, 32 * 32), np.float32)})
    r = _invoke("reconstruct", small, "--method", "deno-mean", "--out", tmp_path / "o")
    assert r.exit_code != 0 and "65 536 values" in r.output and "inferred" in r.output
    r = _invoke("reconstruct", obs, "--method", "das", "--dataset", "carotid")
    assert r.exit_code != 0 and "Invalid value for '--dataset'" in r.output
    r = _invoke("evaluate", "picmus", "--sets", "expe_cont,carotid")
    assert r.exit_code != 0 and "unknown set(s) carotid" in r.output


def test_cli_reconstruct_das_writes_png_hdf5_and_metrics(tmp_path):
    """``--method das`` (no DDRM, no decomposition) on a 256² By file, with a phantom for the metrics."""
    grid = paper_grid(256)
    rng = np.random.default_rng(2)
    img = rng.standard_normal(grid.shape).astype(np.float32)
    X, Z = grid.meshgrid()
    img[(X - 5e-3) ** 2 + (Z - 30e-3) ** 2 < 3e-3**2] *= 0.01
    obs = tmp_path / "simu_cont.mat"
    scipy.io.savemat(obs, {"By": img.reshape(-1, order="F")[None]})
    ph = tmp_path / "phantom.hdf5"
    _write_phantom(ph, cysts=[(5e-3, 30e-3, 6e-3)], rois=[(-8e-3, 30e-3)])
    r = _invoke("reconstruct", obs, "--method", "das", "--out", tmp_path / "o", "--phantom", ph)
    assert r.exit_code == 0, r.output
    out = tmp_path / "o"
    assert {p.name for p in out.iterdir()} == {"simu_cont_das.png", "simu_cont_das.hdf5", "simu_cont_das_metrics.json"}
    m = json.loads((out / "simu_cont_das_metrics.json").read_text())["metrics"]
    assert m["gcnr"]["mean"] > 0.5 and len(m["snr"]["values"]) == 1
    saved = load_images_hdf5(out / "simu_cont_das.hdf5")
    np.testing.assert_allclose(saved["image"], img)  # column-major By restored to [z, x]


def test_cli_reconstruct_reads_channel_data(tmp_path, monkeypatch):
    """A USTB channel-data file goes through channel_data_to_by (here on a 32² grid, ``das``)."""
    import drus.physics.geometry

    probe, wave, grid = picmus(MEAS)
    bf = MatchedFilterBeamformer(probe, wave, grid)
    y = bf.model.simulate(np.random.default_rng(3).standard_normal(grid.shape))
    path = write_ustb_channel_data(tmp_path / "contrast_speckle_simu_dataset_rf.hdf5", ChannelData(
        data=y[None], angles=np.zeros(1), sampling_frequency=wave.sampling_frequency, modulation_frequency=0.0,
        initial_time=np.array([wave.t0]), sound_speed=wave.sound_speed,
        element_positions=np.stack([probe.element_x, 0 * probe.element_x, 0 * probe.element_x], 1)))
    monkeypatch.setattr(drus.physics.geometry, "picmus", lambda n=256: (probe, wave, grid))
    r = _invoke("reconstruct", path, "--method", "das", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert "simu_cont (inferred" in r.output
    saved = load_images_hdf5(tmp_path / "o" / "contrast_speckle_simu_dataset_rf_das.hdf5")
    assert saved.grid.shape == (MEAS, MEAS) and np.abs(saved["image"]).max() > 0


# --- the real files (parsing only) ------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_picmus_files_parse_into_the_paper_grids(reference_data):
    grid = paper_grid(256)
    for name, ds in PICMUS_SETS.items():
        inp = load_picmus_inputs(name, data_root=reference_data)
        assert inp.by.shape == inp.deno.shape == grid.shape
        # the DENO input is the same observation, max-normalised
        np.testing.assert_allclose(inp.deno, inp.by / np.abs(inp.by).max(), atol=1e-5)
        das = inp.das
        assert list(das.number_plane_waves) == [1, 3, 11, 75] and das.images.shape == (4, 256, 256)
        np.testing.assert_allclose(das.x_axis, grid.x_axis, atol=1e-9)
        np.testing.assert_allclose(das.z_axis, grid.z_axis, atol=1e-9)
        cysts = ds.cysts(inp.phantom)
        points = points_in_view(inp.phantom.points(), grid)
        expected = {"simu_reso": (0, 19), "simu_cont": (9, 0), "expe_reso": (1, 5), "expe_cont": (2, 0)}[name]
        assert (len(cysts), len(points)) == expected, name
        if ds.kind == "contrast":
            assert len(inp.phantom.speckle_boxes()) in (3, 4)
        # ROIs are inside the field of view: the metrics can be computed on the 75-PW reference
        from drus.evaluation.scoring import score_image

        scores = score_image(np.abs(das.frame_for(75)), das.grid, cysts=cysts,
                             speckle_rois=inp.phantom.speckle_boxes() or None, points=points)
        assert all(np.all(np.isfinite(v)) for v in scores.values())


def test_cli_evaluate_picmus_prints_the_table(fake, tmp_path, monkeypatch):
    """``drus evaluate picmus`` end to end on the fake folder (the PICMUS geometry patched to 32²)."""
    import drus.physics.geometry
    from drus.models.checkpoint import save_checkpoint

    root, geometry, _ = fake
    net = tiny_unet()
    prior = save_checkpoint(net, net.config, tmp_path / "prior.safetensors")
    monkeypatch.setattr(drus.physics.geometry, "picmus", lambda n=256: geometry)
    out = tmp_path / "res"
    r = _invoke("evaluate", "picmus", "--sets", "expe_cont,expe_reso", "--unknown-size", UNKNOWN, "--samples", 2,
                "--steps", 1, "--prior", prior, "--data", root, "--cache-dir", root / "cache", "--out", out,
                "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "| EC | gCNR ↑ |" in r.output and "| ER | FWHM L [mm] ↓ |" in r.output and "| SC |" not in r.output
    assert {p.name for p in out.iterdir()} == {"expe_cont.hdf5", "expe_reso.hdf5", "table.md", "results.json", "picmus.png"}


def test_cli_reconstruct_drus_var_end_to_end(fake, tmp_path, monkeypatch):
    """``--method drus-var`` on a (fake, 32²) By file: σ0 from the inferred set, samples, PNGs, metrics."""
    import drus.physics.geometry
    from drus.models.checkpoint import save_checkpoint

    root, geometry, _ = fake
    net = tiny_unet()
    prior = save_checkpoint(net, net.config, tmp_path / "prior.safetensors")
    monkeypatch.setattr(drus.physics.geometry, "picmus", lambda n=256: geometry)
    folder = root / "picmus"
    r = _invoke("reconstruct", folder / "by_drus" / "expe_cont.mat", "--method", "drus-var", "--unknown-size", UNKNOWN,
                "--samples", 2, "--steps", 1, "--prior", prior, "--cache-dir", root / "cache", "--out", tmp_path / "o",
                "--phantom", folder / "phantoms" / "picmus_phantom_4.hdf5", "--device", "cpu", "--eta", "0.9")
    assert r.exit_code == 0, r.output
    assert "expe_cont (inferred" in r.output and "estimated from the data" in r.output and "gcnr:" in r.output
    assert "gcnr (pooled DRUSvar):" in r.output  # the extended estimator, scored beside the paper's
    paper = _invoke("reconstruct", folder / "by_drus" / "expe_cont.mat", "--method", "drus-var", "--unknown-size",
                    UNKNOWN, "--samples", 2, "--steps", 1, "--prior", prior, "--cache-dir", root / "cache", "--out",
                    tmp_path / "paper", "--device", "cpu", "--paper")
    assert paper.exit_code == 0, paper.output
    assert "σ0 = 55" in paper.output and "estimated" not in paper.output  # the paper's σ0 of expe_cont
    paper_attrs = load_images_hdf5(tmp_path / "paper" / "expe_cont_drus-var.hdf5").attrs
    assert paper_attrs["prior_fraction"] == 0.0 and paper_attrs["eta"] == pytest.approx(0.85)
    out = tmp_path / "o"
    assert {p.name for p in out.iterdir()} == {"expe_cont_drus-var_by.png", "expe_cont_drus-var.png", "expe_cont_drus-var.hdf5",
                                               "expe_cont_drus-var_metrics.json"}
    saved = load_images_hdf5(out / "expe_cont_drus-var.hdf5")
    assert saved.grid.shape == (UNKNOWN, UNKNOWN) and saved["samples"].shape == (2, UNKNOWN, UNKNOWN)
    assert saved["var_pooled"].shape == (UNKNOWN, UNKNOWN)
    np.testing.assert_allclose(saved["image"], saved["samples"].var(0, ddof=1), rtol=1e-4)
    m = json.loads((out / "expe_cont_drus-var_metrics.json").read_text())["metrics"]
    assert len(m["gcnr"]["values"]) == 2 and len(m["snr"]["values"]) == 2
    assert len(m["gcnr (pooled DRUSvar)"]["values"]) == 2
    assert saved.attrs["prior_fraction"] == pytest.approx(0.6) and saved.attrs["sigma0_sampler"] > saved.attrs["sigma0"]
    assert saved.attrs["eta"] == pytest.approx(0.9) and saved.attrs["eta_b"] == 1.0 and saved.attrs["n_steps"] == 1
    assert saved.attrs["unknown_size"] == UNKNOWN and saved.attrs["compute_dtype"] == "float64"


@pytest.mark.realdata
def test_real_das_references_reproduce_the_paper_das_columns(reference_data):
    """Our ROIs and metrics on the PICMUS DAS references vs the DAS columns of paper Table I.

    Measured: EC gCNR 0.92/0.82 (paper 0.95/0.87 for 75/1 PW), EC SNR 1.96/1.98 (1.92/1.97), ER gCNR
    0.78/0.72 (0.77/0.69; the fitted hyperechoic ROI), ER FWHM A 0.57/0.58 (0.54/0.56), L 0.58/0.89
    (0.56/0.87) mm. Tolerances: 0.06 (gCNR), 0.1 (SNR), 0.05 mm (FWHM).
    """
    from drus.evaluation.scoring import score_image

    tol = {"gcnr": 0.06, "snr": 0.1, "fwhm_axial_mm": 0.05, "fwhm_lateral_mm": 0.05}
    for name in ("expe_cont", "expe_reso"):
        ds = PICMUS_SETS[name]
        inp = load_picmus_inputs(name, data_root=reference_data)
        for meth, n_pw in (("DAS 75 PW", 75), ("DAS 1 PW", 1)):
            amp = method_envelope(meth, inp.das.frame_for(n_pw))
            scores = score_image(amp, inp.das.grid, cysts=ds.cysts(inp.phantom),
                                 speckle_rois=inp.phantom.speckle_boxes() or None,
                                 points=points_in_view(inp.phantom.points(), inp.das.grid))
            for (set_name, metric), paper in PAPER_TABLE_I.items():
                if set_name == name:
                    assert abs(np.mean(scores[metric]) - paper[meth]) < tol[metric], (name, meth, metric)


def test_picmus_operator_passes_the_compute_dtype(tmp_path):
    geometry = picmus(MEAS)
    _, op64 = picmus_operator(UNKNOWN, geometry=geometry, cache_dir=tmp_path, progress=False)
    _, op32 = picmus_operator(UNKNOWN, geometry=geometry, compute_dtype="float32", cache_dir=tmp_path, progress=False)
    assert op64.metadata["compute_dtype"] == "float64" and op32.metadata["compute_dtype"] == "float32"
    assert op32.metadata["key"] != op64.metadata["key"]  # two cache entries, not one overwritten
    s64, s32 = (np.concatenate([b.singular_values for b in o.blocks.values()]) for o in (op64, op32))
    np.testing.assert_allclose(s32[: s32.size // 4], s64[: s64.size // 4], rtol=1e-4)
