"""The exact, cached decomposition of ``BH`` (:mod:`drus.physics.decompose`; docs/decomposition.md).

References: a dense ``BH`` formed column by column from the sparse ``B (H e_i)`` and its numpy SVD
(float64), on tiny symmetric grids with the 8-element probe of ``conftest.py``.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import drus.physics.decompose as dec
import drus.physics.decomposition_cache as decomposition_cache
from drus.physics.beamform import MatchedFilterBeamformer
from drus.sampling.ddrm import ddrm_sample
from drus.physics.decompose import DecomposedBH, FlipSplit, decompose_bh, flip_block, operator_error
from drus.physics.decomposition_cache import cache_key
from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave


pytestmark = pytest.mark.usefixtures("one_thread")


def symmetric_grid(n_z=12, n_x=10, half_width=1.2e-3) -> ImageGrid:
    """``n_z × n_x`` pixels on x ∈ [−a, a], z ∈ [5, 6.5] mm (symmetric about x = 0)."""
    return ImageGrid.from_extent(x_min=-half_width, x_max=half_width, z_min=5e-3, z_max=6.5e-3, n_x=n_x, n_z=n_z)


def beamformer(grid=None, *, f_number=1.4, dtype=np.float64, probe=None):
    probe = probe or LinearProbe(8, 0.3e-3, 5.208e6, 0.67, name="tiny")
    wave = PlaneWave(sampling_frequency=20.832e6, sound_speed=1540.0)
    return MatchedFilterBeamformer(probe, wave, grid or symmetric_grid(), f_number=f_number, dtype=dtype)


def dense_bh(bf) -> np.ndarray:
    """``[N, N]`` float64 matrix of ``BH`` (column i = ``B H e_i``)."""
    n = bf.grid.size
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *bf.grid.shape)
    return bf.BH.apply(eye).reshape(n, n).T.numpy()


def decompose(bf, **kw) -> DecomposedBH:
    kw.setdefault("cache", False)
    kw.setdefault("progress", False)
    return decompose_bh(bf, **kw)


# --- flip split -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_x", [10, 9])
def test_flip_bases_are_orthonormal_and_match_the_sparse_q(n_x):
    flip = FlipSplit((5, n_x))
    qe, qo = flip.sparse_basis("even").toarray(), flip.sparse_basis("odd").toarray()
    q = np.hstack([qe, qo])
    assert q.shape == (5 * n_x, 5 * n_x) and qe.shape[1] == 5 * (n_x - n_x // 2)
    np.testing.assert_allclose(q.T @ q, np.eye(5 * n_x), atol=1e-15)
    x = torch.randn(3, 5, n_x, dtype=torch.float64)
    e, o = flip.split(x)
    xf = x.reshape(3, -1).numpy()
    np.testing.assert_allclose(e.numpy(), xf @ qe, atol=1e-14)
    np.testing.assert_allclose(o.numpy(), xf @ qo, atol=1e-14)
    assert torch.allclose(flip.merge(e, o), x, atol=1e-14)
    # even ↔ unchanged by the flip, odd ↔ sign change
    assert torch.allclose(flip.merge(e, torch.zeros_like(o)).flip(-1), flip.merge(e, torch.zeros_like(o)))
    assert torch.allclose(flip.merge(torch.zeros_like(e), o).flip(-1), -flip.merge(torch.zeros_like(e), o))


@pytest.mark.parametrize("n_x", [10, 9])
def test_cross_blocks_vanish_and_diagonal_blocks_are_q_bh_q(n_x):
    bf = beamformer(symmetric_grid(n_x=n_x))
    flip = FlipSplit(bf.grid.shape)
    a = dense_bh(bf)
    blocks = {(r, c): flip_block(bf, r, c, progress=False, chunk_bytes=4096) for r in "even odd".split() for c in "even odd".split()}
    scale = np.abs(a).max()
    assert np.abs(blocks["even", "odd"]).max() < 1e-12 * scale
    assert np.abs(blocks["odd", "even"]).max() < 1e-12 * scale
    for p in ("even", "odd"):
        q = flip.sparse_basis(p).toarray()
        np.testing.assert_allclose(blocks[p, p], q.T @ a @ q, atol=1e-12 * scale)


# --- the SVD view contract ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize("complement, threshold", [("basis", 0.0), ("projector", 0.2)])
def test_svd_view_contract(method, complement, threshold):
    bf = beamformer()
    op = decompose(bf, method=method, threshold=threshold, complement=complement).to(dtype=torch.float64)
    assert set(op.layouts.values()) == {complement}
    n = bf.grid.size
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *bf.grid.shape)
    # V Vᵀ = I (both layouts); Vᵀ V = I for the complete basis, a projector for the implicit complement
    assert torch.allclose(op.V(op.Vt(eye)), eye, atol=1e-6)
    vt = op.Vt(eye).reshape(n, -1)  # rows: Vᵀ e_i
    gram = vt.T @ vt
    if complement == "basis":
        assert op.spectral_shape == (n,)
        assert torch.allclose(gram, torch.eye(n, dtype=torch.float64), atol=1e-6)
    else:
        assert op.spectral_shape[0] > n
        assert torch.allclose(gram @ gram, gram, atol=1e-6)
    # A = U S Vᵀ against the sparse B·H (threshold 0: everything; else the kept part)
    x = torch.randn(4, *bf.grid.shape, dtype=torch.float64)
    err = operator_error(op, bf, x)
    if threshold == 0:
        assert err.max() < 1e-5, err
    # adjointness of apply/adjoint, and A Vᵀ-kept = U S exactly (U = A V S⁻¹ is implicit)
    y = torch.randn(4, *bf.grid.shape, dtype=torch.float64)
    assert torch.allclose((op.apply(x) * y).sum(), (x * op.adjoint(y)).sum(), rtol=1e-10)
    # U = BH V S⁻¹ has orthonormal columns on the kept components: Uᵀ U c = c there. The implicit
    # U inherits the float32 rounding of V amplified by s_1/s_i (≈ 6e-8 · 1e3 above 1e-3·s_1).
    op = op.with_threshold(max(threshold, 1e-3))
    kept = op.singular_values > 0
    c = torch.randn(3, *op.spectral_shape, dtype=torch.float64) * kept
    assert torch.allclose(op.Ut(op.U(c)), c, atol=1e-3 * c.abs().max())
    assert torch.all(op.singular_values >= 0)


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_singular_values_match_a_dense_svd(method):
    bf = beamformer(symmetric_grid(n_x=9))
    op = decompose(bf, method=method, threshold=0.0)
    s_ref = np.linalg.svd(dense_bh(bf), compute_uv=False)
    s = np.sort(np.concatenate([b.singular_values for b in op.blocks.values()]))[::-1]
    np.testing.assert_allclose(s, s_ref, rtol=0, atol=1e-10 * s_ref[0])
    assert op.s1 == pytest.approx(s_ref[0], rel=1e-12)
    # even block first, then odd, each descending
    sv = op.singular_values.numpy()
    ne = op.flip.n_even
    assert np.all(np.diff(sv[:ne]) <= 0) and np.all(np.diff(sv[ne:]) <= 0)


def test_threshold_drops_the_right_components_and_the_error_is_the_dropped_energy():
    bf = beamformer()
    full = decompose(bf, threshold=0.0).to(dtype=torch.float64)
    s_all = full.singular_values.numpy()
    for threshold in (0.05, 0.3):
        op = full.with_threshold(threshold)
        s = op.singular_values.numpy()
        assert op.n_kept == int((s_all > threshold * full.s1).sum())
        np.testing.assert_array_equal(s > 0, s_all > threshold * full.s1)
        np.testing.assert_allclose(s[s > 0], s_all[s > 0], rtol=1e-6)
        # ‖A x − U S Vᵀ x‖² = Σ_dropped s_i² (v_iᵀ x)² (U orthonormal), relative to ‖A x‖² = Σ_all
        x = torch.randn(5, *bf.grid.shape, dtype=torch.float64)
        c = full.Vt(x).numpy()
        dropped = (s_all > 0) & (s == 0)
        predicted = np.sqrt(((s_all * c) ** 2 * dropped).sum(-1) / ((s_all * c) ** 2).sum(-1))
        np.testing.assert_allclose(operator_error(op, bf, x), predicted, rtol=1e-4)
        # the projector layout computed at this threshold drops the same components
        proj = decompose(bf, threshold=threshold, complement="projector").to(dtype=torch.float64)
        np.testing.assert_allclose(operator_error(proj, bf, x), predicted, rtol=1e-4)
        assert proj.n_kept == op.n_kept
    with pytest.raises(ValueError, match="threshold"):
        proj.with_threshold(0.01)  # vectors below the computed threshold were not stored


def test_ut_through_the_sparse_adjoint_equals_the_explicit_ut():
    bf = beamformer()
    op = decompose(bf, threshold=0.05, complement="basis").to(dtype=torch.float64)
    n = bf.grid.size
    a = dense_bh(bf)
    v = op.V(torch.eye(n, dtype=torch.float64)).reshape(n, n).T.numpy()  # columns v_i
    s = op.singular_values.numpy()
    kept = s > 0
    u = a @ v[:, kept] / s[kept]  # explicit U on the kept components
    np.testing.assert_allclose(u.T @ u, np.eye(kept.sum()), atol=1e-6)
    y = torch.randn(2, *bf.grid.shape, dtype=torch.float64)
    ut = op.Ut(y).numpy()
    np.testing.assert_allclose(ut[:, kept], y.reshape(2, -1).numpy() @ u, rtol=1e-9, atol=1e-9)
    assert np.all(ut[:, ~kept] == 0)
    c = torch.randn(*op.spectral_shape, dtype=torch.float64)
    np.testing.assert_allclose(op.U(c).reshape(-1).numpy(), u @ c.numpy()[kept], rtol=1e-9, atol=1e-9)


def test_float16_storage_costs_about_its_rounding_error():
    bf = beamformer()
    x = torch.randn(4, *bf.grid.shape)
    e32 = operator_error(decompose(bf, threshold=0.0), bf, x)
    e16 = decompose(bf, threshold=0.0, dtype="float16")
    assert e16.blocks["even"].vectors.dtype == torch.float16
    err16 = operator_error(e16, bf, x)
    assert e32.max() < 1e-5 and 1e-5 < err16.max() < 5e-3, (e32, err16)


# --- DDRM with the decomposition ----------------------------------------------------------------------
def test_ddrm_runs_with_the_decomposition():
    bf = beamformer(dtype=np.float32)
    op = decompose(bf, threshold=0.0)  # every component observed (a zero network leaves the others at ≈ σ_T)
    assert op.n_kept == bf.grid.size
    o = torch.randn(*bf.grid.shape, generator=torch.Generator().manual_seed(1))
    y = bf.BH.apply(o)

    def model(x_t, t):  # a network that predicts no noise: the sampler must still run end to end
        return torch.zeros(x_t.shape[0], 2, *x_t.shape[2:])

    res = ddrm_sample(model, op, y, sigma0=0.0, n_samples=3, n_steps=10,
                      generator=torch.Generator().manual_seed(0), progress=False)
    assert res.samples.shape == (3, *bf.grid.shape) and torch.isfinite(res.samples).all()
    # noiseless and every component observed: the samples reproduce y up to the last step's σ_0 ≈ 0.01
    rel = (bf.BH.apply(res.samples) - y).flatten(1).norm(dim=1) / y.norm()
    assert rel.max() < 0.05, rel


def test_ddrm_law_is_the_same_with_an_implicit_complement():
    """Gaussian prior ``N(0, Σ)`` (exact MMSE network), 4×4 grid, 7/16 components observed.

    The ``"projector"`` layout (kept vectors + complement carried in image coordinates) must give
    DDRM samples with the law of the complete-basis layout: 4 000 samples each, every sample-mean and
    sample-covariance entry of the difference within 4.5 standard errors (152 statistics).
    Measured: largest z ≈ 2.7. Mutation check: dropping the projection in ``V`` (``V [a, r] = W a + r``)
    gives z > 400.
    """
    from drus.sampling.schedule import NoiseSchedule

    bf = beamformer(symmetric_grid(n_z=4, n_x=4, half_width=0.45e-3))
    n = bf.grid.size
    rng = np.random.default_rng(3)
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    cov = q @ np.diag(np.geomspace(2.0, 0.1, n)) @ q.T
    schedule = NoiseSchedule()

    def model(x_t, t):
        ti = int(t[0])
        sig, a = schedule.sigma(ti), schedule.alpha_bar(ti)
        d = cov @ np.linalg.inv(cov + sig**2 * np.eye(n))
        mat = torch.as_tensor(((np.eye(n) - d) / (sig * math.sqrt(a))).T, dtype=x_t.dtype)
        return (x_t.reshape(x_t.shape[0], -1) @ mat).reshape(x_t.shape)

    basis = decompose(bf, threshold=0.5, complement="basis").to(dtype=torch.float64)
    proj = decompose(bf, threshold=0.5, complement="projector").to(dtype=torch.float64)
    assert basis.n_kept == proj.n_kept == 7
    x = torch.as_tensor(np.linalg.cholesky(cov) @ rng.standard_normal(n)).reshape(bf.grid.shape)
    sigma0 = 0.3 * basis.s1 * 0.3  # between the kept singular values: both data cases occur
    y = bf.BH.apply(x) + sigma0 * torch.randn(*bf.grid.shape, dtype=torch.float64)
    runs = []
    for op, seed in ((basis, 1), (proj, 2)):
        res = ddrm_sample(model, op, y, sigma0=sigma0, n_samples=4000, n_steps=50, eta=0.85,
                          generator=torch.Generator().manual_seed(seed), progress=False)
        runs.append(res.samples.reshape(4000, -1).numpy())
    a, b = runs
    ca, cb = np.cov(a.T), np.cov(b.T)
    d = np.diag(ca)
    z_mean = np.abs(a.mean(0) - b.mean(0)) / np.sqrt(2 * d / 4000)
    z_cov = np.abs(ca - cb) / np.sqrt(2 * (np.outer(d, d) + ca**2) / 4000)
    assert z_mean.max() < 4.5 and z_cov[np.triu_indices(n)].max() < 4.5, (z_mean.max(), z_cov.max())


# --- cache --------------------------------------------------------------------------------------------
def test_cache_round_trip_and_resume(tmp_path, monkeypatch):
    bf = beamformer()
    op = decompose(bf, cache=True, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 4 and all(f.startswith("bh-") for f in files)
    meta = json.loads(next(tmp_path.glob("*-even.json")).read_text())
    assert meta["key"] == op.metadata["key"] and meta["method"] == "gram" and meta["threshold"] == 1e-3
    calls = []
    real = dec._decompose
    monkeypatch.setattr(dec, "_decompose", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = decompose(bf, cache=True, cache_dir=tmp_path)
    assert calls == []  # both halves loaded
    for p in ("even", "odd"):
        assert torch.equal(again.blocks[p].vectors, op.blocks[p].vectors)
        np.testing.assert_array_equal(again.blocks[p].singular_values, op.blocks[p].singular_values)
    assert torch.equal(again.singular_values, op.singular_values)
    # an interrupted job: only the missing half is computed
    for f in tmp_path.glob("*-odd.*"):
        f.unlink()
    decompose(bf, cache=True, cache_dir=tmp_path)
    assert calls == [1]
    # $DRUS_CACHE is the default folder
    monkeypatch.setenv("DRUS_CACHE", str(tmp_path / "env"))
    assert decomposition_cache.default_cache_dir() == tmp_path / "env"
    decompose(bf, cache=True)
    assert len(list((tmp_path / "env").glob("*.safetensors"))) == 2


def test_corrupt_or_mismatched_cache_is_detected_and_rebuilt(tmp_path):
    bf = beamformer()
    ref = decompose(bf, cache=True, cache_dir=tmp_path)
    st = next(tmp_path.glob("*-even.safetensors"))
    raw = bytearray(st.read_bytes())
    raw[-7] ^= 0x40  # one bit of the vectors
    st.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=st.name):
        rebuilt = decompose(bf, cache=True, cache_dir=tmp_path)
    assert torch.equal(rebuilt.blocks["even"].vectors, ref.blocks["even"].vectors)
    assert st.read_bytes() != bytes(raw)  # rewritten
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decompose(bf, cache=True, cache_dir=tmp_path)  # valid again: no warning
    # a truncated file, and metadata with another key
    st.write_bytes(st.read_bytes()[:100])
    with pytest.warns(UserWarning, match="rebuilding"):
        decompose(bf, cache=True, cache_dir=tmp_path)
    js = next(tmp_path.glob("*-odd.json"))
    meta = json.loads(js.read_text())
    meta["key"] = "0" * 64
    js.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="differs from the requested"):
        decompose(bf, cache=True, cache_dir=tmp_path)


def test_cache_key_changes_with_every_parameter():
    bf = beamformer(dtype=np.float32)
    base = cache_key(bf)
    assert cache_key(beamformer(dtype=np.float32)) == base  # deterministic
    variants = [
        cache_key(beamformer(f_number=1.5, dtype=np.float32)),
        cache_key(beamformer(symmetric_grid(n_z=11), dtype=np.float32)),
        cache_key(beamformer(symmetric_grid(half_width=1.0e-3), dtype=np.float32)),
        cache_key(beamformer(dtype=np.float64)),
        cache_key(beamformer(probe=LinearProbe(8, 0.31e-3, 5.208e6, 0.67), dtype=np.float32)),
        cache_key(bf, method="svd"),
        cache_key(bf, threshold=1e-2),
        cache_key(bf, dtype="float16"),
        cache_key(bf, compute_dtype="float32"),
        cache_key(bf, complement="basis"),
    ]
    assert len(set(variants)) == len(variants) and base not in variants
    alpha = MatchedFilterBeamformer(bf.model.probe, bf.model.wave, bf.grid, alpha=0.5)
    assert cache_key(alpha) != base


# --- errors -------------------------------------------------------------------------------------------
def test_bad_inputs_are_named():
    asym = ImageGrid.from_extent(x_min=-1.0e-3, x_max=1.2e-3, z_min=5e-3, z_max=6e-3, n_x=8, n_z=6)
    with pytest.raises(ValueError, match="symmetric about x = 0"):
        decompose(beamformer(asym))
    steered = MatchedFilterBeamformer(
        LinearProbe(8, 0.3e-3, 5.208e6, 0.67), PlaneWave(20.832e6, 1540.0, angle=0.1), symmetric_grid()
    )
    with pytest.raises(ValueError, match="0° plane wave"):
        decompose(steered)
    bf = beamformer()
    for kw, match in [({"method": "qr"}, "method"), ({"dtype": "int8"}, "dtype"),
                      ({"complement": "none"}, "complement"), ({"threshold": 1.0}, "threshold"),
                      ({"threshold": -1e-3}, "threshold"), ({"compute_dtype": "float16"}, "compute_dtype")]:
        with pytest.raises(ValueError, match=match):
            decompose(bf, **kw)
    with pytest.warns(UserWarning, match="reliable floor"):
        decompose(bf, method="gram", compute_dtype="float32", threshold=1e-3)


def test_cli_decompose_reports_cost_and_accuracy(tmp_path):
    from click.testing import CliRunner

    from drus.cli import main

    args = ["decompose", "--size", "16", "--cache-dir", str(tmp_path), "--threads", "1"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    for text in ("peak RSS", "kept above 0.001·s1: 256 of 256", "operator error", "speckle", "cache: "):
        assert text in out.output, out.output
    again = CliRunner().invoke(main, args)
    assert "loaded from the cache" in again.output
    bad = CliRunner().invoke(main, ["decompose", "--size", "16", "--threshold", "2", "--no-cache"])
    assert bad.exit_code != 0 and "threshold must be in [0, 1)" in bad.output


# --- rectangular BH: By on the measurement grid, unknowns on a coarser grid ---------------------------
def rectangular_beamformer(meas=(12, 10), unknown=(6, 5), *, dtype=np.float64):
    """``B`` on ``meas`` pixels, ``H`` on ``unknown`` pixels, both over the same symmetric extent."""
    grid, coarse = symmetric_grid(*meas), symmetric_grid(*unknown)
    probe = LinearProbe(8, 0.3e-3, 5.208e6, 0.67, name="tiny")
    wave = PlaneWave(sampling_frequency=20.832e6, sound_speed=1540.0)
    return MatchedFilterBeamformer(probe, wave, grid, unknown_grid=coarse, dtype=dtype)


def dense_rectangular_bh(bf) -> np.ndarray:
    """``[N_meas, N_unknown]`` float64 matrix of ``BH`` (column i = ``B H e_i``)."""
    n = bf.unknown_grid.size
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *bf.unknown_grid.shape)
    return bf.BH.apply(eye).reshape(n, -1).T.numpy()


# even and odd n_x on both grids
RECTANGULAR = [((12, 10), (6, 5)), ((12, 9), (6, 4)), ((12, 10), (6, 4)), ((12, 9), (6, 5))]


@pytest.mark.parametrize("meas, unknown", RECTANGULAR, ids=lambda s: "x".join(map(str, s)))
def test_rectangular_blocks_and_gram_match_the_dense_operator(meas, unknown):
    bf = rectangular_beamformer(meas, unknown)
    a = dense_rectangular_bh(bf)
    assert a.shape == (bf.grid.size, bf.unknown_grid.size)
    rows, cols = FlipSplit(bf.grid.shape), FlipSplit(bf.unknown_grid.shape)
    scale = np.abs(a).max()
    for r in ("even", "odd"):
        for c in ("even", "odd"):
            blk = flip_block(bf, r, c, progress=False, chunk_bytes=4096)
            assert blk.shape == (rows.size(r), cols.size(c))
            if r != c:  # the flip split holds for the rectangular operator too
                assert np.abs(blk).max() < 1e-12 * scale
            else:
                qr, qc = rows.sparse_basis(r).toarray(), cols.sparse_basis(c).toarray()
                np.testing.assert_allclose(blk, qr.T @ a @ qc, atol=1e-12 * scale)
                # the Gram matrix accumulated in row chunks (upper triangle) = AᵀA
                g = dec.flip_gram(bf, r, progress=False, chunk_bytes=2048)
                np.testing.assert_allclose(np.triu(g), np.triu(blk.T @ blk), rtol=0, atol=1e-12 * scale**2)


@pytest.mark.parametrize("meas, unknown", RECTANGULAR, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_rectangular_svd_view_contract(meas, unknown, method):
    bf = rectangular_beamformer(meas, unknown)
    op = decompose(bf, method=method, threshold=0.0, complement="basis").to(dtype=torch.float64)
    n = bf.unknown_grid.size
    assert op.in_shape == bf.unknown_grid.shape and op.out_shape == bf.grid.shape
    assert op.spectral_shape == (n,) and op.n_kept == n  # tall BH: full column rank
    # singular values = those of the dense BH; A = U S Vᵀ against the sparse B·H
    s_ref = np.linalg.svd(dense_rectangular_bh(bf), compute_uv=False)
    np.testing.assert_allclose(np.sort(op.singular_values.numpy())[::-1], s_ref, rtol=0, atol=1e-6 * s_ref[0])
    x = torch.randn(4, *bf.unknown_grid.shape, dtype=torch.float64)
    assert operator_error(op, bf, x).max() < 1e-5
    # V orthonormal (complete basis on the unknown grid)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *bf.unknown_grid.shape)
    vt = op.Vt(eye).reshape(n, n)
    assert torch.allclose(vt.T @ vt, torch.eye(n, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(op.V(op.Vt(x)), x, atol=1e-6)
    # adjointness on the two grids
    y = torch.randn(4, *bf.grid.shape, dtype=torch.float64)
    assert torch.allclose((op.apply(x) * y).sum(), (x * op.adjoint(y)).sum(), rtol=1e-9)
    assert torch.allclose(op.adjoint(y), bf.BH.adjoint(y), atol=1e-5 * bf.BH.adjoint(y).abs().max())


@pytest.mark.parametrize("meas, unknown", RECTANGULAR[:2], ids=lambda s: "x".join(map(str, s)))
def test_rectangular_ut_through_the_sparse_adjoint_equals_the_explicit_ut(meas, unknown):
    bf = rectangular_beamformer(meas, unknown)
    full = decompose(bf, threshold=0.0, complement="basis").to(dtype=torch.float64)
    op = full.with_threshold(float(full.singular_values.median()) / full.s1)  # drop about half
    n, m = bf.unknown_grid.size, bf.grid.size
    a = dense_rectangular_bh(bf)
    v = op.V(torch.eye(n, dtype=torch.float64)).reshape(n, n).T.numpy()  # columns v_i
    s = op.singular_values.numpy()
    kept = s > 0
    assert 0 < kept.sum() < n
    u = a @ v[:, kept] / s[kept]  # explicit U [N_meas, k]
    np.testing.assert_allclose(u.T @ u, np.eye(kept.sum()), atol=1e-6)
    y = torch.randn(2, *bf.grid.shape, dtype=torch.float64)
    ut = op.Ut(y).numpy()
    np.testing.assert_allclose(ut[:, kept], y.reshape(2, m).numpy() @ u, rtol=1e-9, atol=1e-9)
    assert np.all(ut[:, ~kept] == 0)
    c = torch.randn(*op.spectral_shape, dtype=torch.float64)
    np.testing.assert_allclose(op.U(c).reshape(-1).numpy(), u @ c.numpy()[kept], rtol=1e-9, atol=1e-9)


def test_rectangular_projector_layout_cache_and_ddrm(tmp_path):
    bf = rectangular_beamformer((12, 10), (6, 5), dtype=np.float32)
    basis = decompose(bf, threshold=0.2, complement="basis").to(dtype=torch.float64)
    proj = decompose(bf, threshold=0.2, complement="projector", cache=True, cache_dir=tmp_path)
    assert proj.n_kept == basis.n_kept and set(proj.layouts.values()) == {"projector"}
    x = torch.randn(3, *bf.unknown_grid.shape, dtype=torch.float64)
    np.testing.assert_allclose(operator_error(proj.to(dtype=torch.float64), bf, x), operator_error(basis, bf, x), rtol=1e-4)
    again = decompose(bf, threshold=0.2, complement="projector", cache=True, cache_dir=tmp_path)
    assert all(m["source"] == "cache" for m in again.metadata["blocks"].values())
    # the sampler runs on the rectangular operator: y on the measurement grid, samples on the unknown grid
    y = bf.BH.apply(torch.randn(*bf.unknown_grid.shape))
    res = ddrm_sample(lambda x_t, t: torch.zeros_like(x_t), again, y, sigma0=0.1, n_samples=2, n_steps=5,
                      generator=torch.Generator().manual_seed(0), progress=False)
    assert res.samples.shape == (2, *bf.unknown_grid.shape) and torch.isfinite(res.samples).all()


def test_rectangular_cache_key_covers_the_unknown_grid_and_keeps_square_keys():
    square = beamformer(symmetric_grid(12, 10), dtype=np.float32)
    same = MatchedFilterBeamformer(square.model.probe, square.model.wave, square.grid,
                                   unknown_grid=symmetric_grid(12, 10), dtype=np.float32)
    assert cache_key(same) == cache_key(square)  # an equal unknown grid is the square case
    keys = {cache_key(rectangular_beamformer((12, 10), u, dtype=np.float32)) for u in [(6, 5), (6, 4), (5, 5)]}
    assert len(keys) == 3 and cache_key(square) not in keys
    d = decomposition_cache._definition(rectangular_beamformer(dtype=np.float32))
    assert len(d["unknown_grid"]["x"]) == 5 and "unknown_grid" not in decomposition_cache._definition(square)


def test_rectangular_needs_symmetric_grids():
    grid = symmetric_grid(12, 10)
    asym = ImageGrid.from_extent(x_min=-1.0e-3, x_max=1.2e-3, z_min=5e-3, z_max=6.5e-3, n_x=5, n_z=6)
    bf = MatchedFilterBeamformer(LinearProbe(8, 0.3e-3, 5.208e6, 0.67), PlaneWave(20.832e6, 1540.0), grid,
                                 unknown_grid=asym)
    with pytest.raises(ValueError, match="unknown_grid symmetric about x = 0"):
        decompose(bf)


@pytest.mark.parametrize("n, panels", [(1, 8), (7, 8), (37, 8), (40, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lower_triangle_rank_k_update_matches_numpy(n, panels, dtype):
    rng = np.random.default_rng(n)
    g0 = rng.standard_normal((n, n)).astype(dtype)
    c = rng.standard_normal((5, n)).astype(dtype)
    g = torch.from_numpy(g0.copy())
    dec._add_lower_gram(g, torch.from_numpy(c), panels=panels)
    ref = g0.astype(np.float64) + c.T.astype(np.float64) @ c
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(np.tril(g.numpy()), np.tril(ref), rtol=0, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("compute_dtype", ["float64", "float32"])
def test_square_gram_is_accumulated_without_the_block(compute_dtype):
    bf = beamformer()
    dt = dec.COMPUTE_DTYPES[compute_dtype]
    for parity in ("even", "odd"):
        blk = flip_block(bf, parity, progress=False)
        g = dec.flip_gram(bf, parity, dtype=dt, progress=False, chunk_bytes=2048)
        assert g.dtype == dt and g.flags.f_contiguous
        ref = blk.T @ blk
        tol = 1e-12 if dt == np.float64 else 1e-6
        np.testing.assert_allclose(np.triu(g), np.triu(ref), rtol=0, atol=tol * np.abs(ref).max())


def test_eigensolver_falls_back_to_mrrr_when_divide_and_conquer_does_not_fit(monkeypatch, caplog):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 20))
    gram = a.T @ a
    results = {}
    assert dec._ilp64_syevd(np.float64) is not None  # numpy ≥ 2 wheels bundle a 64-bit-integer OpenBLAS
    for memory, driver in [(2**40, "syevd"), (1000, "syevr")]:
        monkeypatch.setattr(dec, "_available_memory", lambda memory=memory: memory)
        with caplog.at_level("INFO", logger="drus.physics.decompose"):
            s, v = dec._eigh_gram(np.triu(gram).copy(order="F"), device=torch.device("cpu"), upper=True)
        assert driver in caplog.text
        caplog.clear()
        results[driver] = s, v.numpy()
    s_ref = np.linalg.svd(a, compute_uv=False)
    for s, v in results.values():
        np.testing.assert_allclose(s, s_ref, rtol=1e-10)
        np.testing.assert_allclose(np.abs(v.T @ a.T @ a @ v), np.diag(s**2), atol=1e-9 * s[0] ** 2)


def test_sparse_chunks_in_threads_give_the_same_blocks(monkeypatch):
    """The threaded chunk producer (``_in_order``) keeps the order and the results of the serial loop,
    for the dense block and the Gram matrix (the same products, accumulated in the same order)."""
    import time as _time

    # order is kept whatever finishes first; never more than workers + 1 results alive
    got = list(dec._in_order(lambda s: _time.sleep(0.002 * (5 - s)) or s, range(6), 3))
    assert got == list(range(6))
    bf = beamformer()
    monkeypatch.setattr(dec, "_chunk_workers", lambda: 1)
    serial = [flip_block(bf, "even", progress=False, chunk_bytes=4096), dec.flip_gram(bf, "odd", progress=False, chunk_bytes=2048)]
    monkeypatch.setattr(dec, "_chunk_workers", lambda: 3)
    threaded = [flip_block(bf, "even", progress=False, chunk_bytes=4096), dec.flip_gram(bf, "odd", progress=False, chunk_bytes=2048)]
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(np.triu(a), np.triu(b))


@pytest.mark.parametrize("storage", [torch.float32, torch.float16])
def test_cpu_products_match_torch(monkeypatch, storage):
    """``_cpu_mm`` (numpy/OpenBLAS, by panels of rows of ``W``) = ``a @ W`` and ``a @ Wᵀ``, several panels."""
    monkeypatch.setattr(dec, "_CPU_PANEL_BYTES", 7 * 4 * 5)  # 7 rows of 5 columns per panel
    w = torch.randn(23, 5).to(storage)
    ref = w.to(torch.float64)
    h, c = torch.randn(3, 23), torch.randn(3, 5)
    for a, transpose, expected in ((h, False, h.double() @ ref), (c, True, c.double() @ ref.mT)):
        got = dec._cpu_mm(a, w, transpose)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_eigh_falls_back_to_the_host_when_the_device_solver_fails(monkeypatch):
    """The CPU twin of the cuSOLVER failure at n = 32 768: a failing device eigh hands the Gram matrix
    to the host's LAPACK route, with a warning, and V comes back on the device."""
    import warnings

    from drus.physics.decompose import _eigh_gram

    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 24))
    gram = a.T @ a
    expected = np.sqrt(np.linalg.eigvalsh(gram)[::-1])

    def failing(*args, **kwargs):
        raise RuntimeError("cusolver error: CUSOLVER_STATUS_INVALID_VALUE")

    monkeypatch.setattr(torch.linalg, "eigh", failing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s, V = _eigh_gram(gram.copy(), device=torch.device("meta"))
    assert any("on the host" in str(w.message) for w in caught)
    np.testing.assert_allclose(s, expected, rtol=1e-10)
    assert V.device.type == "meta" and tuple(V.shape) == (24, 24)
