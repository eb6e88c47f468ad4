"""The operator contract, run on every operator drus has (STYLE §2, §9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drus.physics.beamform import MatchedFilterBeamformer
from drus.physics.geometry import paper_grid
from drus.physics.operators import (
    Identity,
    SeparableBlur,
    canonical_svd,
    convolution_matrix,
    gaussian_kernel,
    modulated_gaussian_kernel,
)


def _blur(dtype):
    return SeparableBlur(modulated_gaussian_kernel(1.2, 4.0), gaussian_kernel(1.2), (9, 7), dtype=dtype)


def _paper_blur(dtype):
    return SeparableBlur.paper(paper_grid(256).resized(24, 20), dtype=dtype)


def _identity(dtype):
    return Identity((5, 6), dtype=dtype)


def _bh(dtype, tiny=None):
    from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave

    probe = LinearProbe(8, 0.3e-3, 5.208e6, 0.67)
    grid = ImageGrid.from_extent(x_min=-0.6e-3, x_max=0.6e-3, z_min=5e-3, z_max=6e-3, n_x=6, n_z=5)
    bf = MatchedFilterBeamformer(probe, PlaneWave(20.832e6, 1540.0), grid, dtype=np.float64)
    return bf.BH


def _decomposed_bh(dtype, threshold=1e-3):
    """The exact decomposition of a tiny rectangular BH (drus.physics.decompose), thresholded at 1e-3·s1."""
    from drus.physics.decompose import decompose_bh
    from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave

    probe = LinearProbe(8, 0.3e-3, 5.208e6, 0.67)
    grid = ImageGrid.from_extent(x_min=-0.6e-3, x_max=0.6e-3, z_min=5e-3, z_max=6.4e-3, n_x=6, n_z=8)
    bf = MatchedFilterBeamformer(probe, PlaneWave(20.832e6, 1540.0), grid, unknown_grid=grid.resized(4, 6),
                                 dtype=np.float64)
    return decompose_bh(bf, threshold=threshold, cache=False, progress=False).moved(dtype=dtype)


ALL = {"identity": _identity, "blur": _blur, "paper-blur": _paper_blur, "BH": _bh, "decomposed-BH": _decomposed_bh}
WITH_SVD = {k: v for k, v in ALL.items() if k not in ("BH", "decomposed-BH")}


def test_decomposed_bh_contract_for_a_thresholded_basis():
    """What holds for a thresholded exact basis: V orthogonal, Uᵀ orthonormal rows on the kept
    components and zero elsewhere, U S Vᵀ equal to the sparse BH up to the dropped components."""
    A = _decomposed_bh(torch.float64)
    n = int(np.prod(A.in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *A.in_shape)
    vt = A.Vt(eye).reshape(n, -1)
    assert torch.allclose(vt @ vt.T, torch.eye(n, dtype=torch.float64), atol=1e-6)
    kept = A.singular_values > 0
    assert 0 < int(kept.sum()) <= n
    m = int(np.prod(A.out_shape))
    ut = A.Ut(torch.eye(m, dtype=torch.float64).reshape(m, *A.out_shape)).reshape(m, -1).T  # [spectral, m]
    gram = ut @ ut.T
    k = torch.diag(kept.double())
    # orthonormal on the kept components, zero beyond; the Gram route loses (s1/s)²·ε: 3e-5 at s = 1.2e-3·s1
    assert torch.allclose(gram, k, atol=1e-4)
    dense = A.BH.apply(eye).reshape(n, -1)
    usv = A.U(A.singular_values * A.Vt(eye)).reshape(n, -1)
    err = float(torch.linalg.matrix_norm(dense - usv, ord=2) / torch.linalg.matrix_norm(dense, ord=2))
    assert err <= 1e-3 + 1e-6  # the largest dropped singular value is below the threshold


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_adjointness(make):
    A = make(torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *A.in_shape, generator=g, dtype=torch.float64)
    y = torch.randn(3, *A.out_shape, generator=g, dtype=torch.float64)
    lhs = (A.apply(x) * y).sum()
    rhs = (x * A.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", WITH_SVD.values(), ids=WITH_SVD.keys())
def test_svd_view(make):
    A = make(torch.float64)
    n = int(np.prod(A.in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *A.in_shape)
    # V is orthogonal: Vᵀ V = I and V Vᵀ = I (square operators)
    vt = A.Vt(eye).reshape(n, -1)
    assert torch.allclose(vt @ vt.T, torch.eye(n, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(A.V(A.Vt(eye)), eye, atol=1e-10)
    ut = A.Ut(torch.eye(n, dtype=torch.float64).reshape(n, *A.out_shape)).reshape(n, -1)
    assert torch.allclose(ut @ ut.T, torch.eye(n, dtype=torch.float64), atol=1e-10)
    # A = U S Vᵀ against the operator's own apply
    dense = A.apply(eye).reshape(n, -1).T
    usv = A.U(A.singular_values * A.Vt(eye)).reshape(n, -1).T
    assert torch.allclose(dense, usv, atol=1e-10)
    assert torch.all(A.singular_values >= 0)


def test_blur_matches_direct_convolution():
    from scipy.signal import convolve2d

    kz, kx = modulated_gaussian_kernel(1.2, 4.0), gaussian_kernel(1.2)
    A = SeparableBlur(kz, kx, (9, 7), dtype=torch.float64)
    x = np.random.default_rng(0).standard_normal((9, 7))
    ref = convolve2d(x, np.outer(kz, kx), mode="same")
    assert np.allclose(A.apply(torch.from_numpy(x)).numpy(), ref, atol=1e-12)


def test_paper_kernels_are_unit_energy_and_physical():
    grid = paper_grid(256)
    A = SeparableBlur.paper(grid)
    assert np.isclose(np.sum(A.kernel_x**2), 1) and np.isclose(np.sum(A.kernel_z**2), 1)
    # lateral std 0.17 mm ≈ 1.2 px on the paper grid: 7 taps
    assert A.kernel_x.size == 7
    # the axial kernel is cosine-modulated: negative side lobes, symmetric, peak at the centre
    assert A.kernel_z.size == 7 and A.kernel_z.min() < -0.2
    assert np.allclose(A.kernel_z, A.kernel_z[::-1]) and np.argmax(A.kernel_z) == 3


def test_canonical_svd_signs_do_not_depend_on_lapack(monkeypatch):
    """Whatever signs LAPACK returns (they change with the BLAS kernels of the CPU), the factors
    are the same: here LAPACK's own pairs, then the same pairs with every other one flipped."""
    a = convolution_matrix(modulated_gaussian_kernel(1.2, 4.0), 9)  # symmetric-ish: mirrored vectors
    u, s, vt = canonical_svd(a)
    np.testing.assert_allclose((u * s) @ vt, a, atol=1e-12)
    flip = np.where(np.arange(9) % 2 == 0, -1.0, 1.0)
    real_svd = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda m: (lambda f: (f[0] * flip, f[1], f[2] * flip[:, None]))(real_svd(m)))
    u2, s2, vt2 = canonical_svd(a)
    np.testing.assert_array_equal(vt2, vt)
    np.testing.assert_array_equal(u2, u)
    # the rule: the first entry of each v_i with at least half the largest magnitude is positive
    mag = np.abs(vt)
    first = np.argmax(mag >= 0.5 * mag.max(axis=1, keepdims=True), axis=1)
    assert (vt[np.arange(9), first] > 0).all()


def test_convolution_matrix_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        convolution_matrix(np.ones(4), 5)


def test_shape_errors_name_the_argument():
    A = _blur(torch.float32)
    with pytest.raises(ValueError, match="x must have trailing shape"):
        A.apply(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        A.apply(np.zeros((9, 7)))


def test_batch_dims_are_free():
    A = _blur(torch.float64)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    assert A.apply(x).shape == (2, 3, 9, 7)
    assert torch.allclose(A.apply(x)[1, 2], A.apply(x[1, 2]))
