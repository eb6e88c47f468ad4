"""Despeckling of envelope images: ADMSS, the paper's baseline for DRUSmean (docs/despeckle.md).

ADMSS — anisotropic diffusion filter with memory based on speckle statistics (Ramos-Llordén,
Vegas-Sánchez-Ferrero, Martin-Fernandez, Alberola-López, Aja-Fernández, IEEE Trans. Image Process.
24(1), 345–358, 2015) — evolves the envelope ``u`` by tensor diffusion

    ∂u/∂t = div(L ∇u),   u(0) = envelope,

where the diffusion tensor ``L`` is built from the speckle statistics and carries a memory:

1. **Speckle statistics.** A mixture of ``K = 3`` Gamma densities is fitted to the envelope values
   by EM (re-fitted every 5 iterations on the current ``u``); its posteriors give one probability
   map ``P_k(x)`` per class. The class with the lowest mean is the *meaningless* one (blood,
   anechoic regions): its map ``P_b`` drives the tissue selectivity.
2. **Diffusion tensor** ``D``, from the probability maps rather than the noisy image: each map is
   smoothed at scale σ, its structure tensor ``J_ρ = G_ρ * (∇P_σ ∇P_σᵀ)`` is formed, and at each
   pixel the class with the largest structure eigenvalue (the strongest class boundary) gives the
   eigenvectors: ``D`` diffuses fully (eigenvalue 1) along the boundary and ``1 − e`` across it,
   with ``e ∈ [0, 1]`` the boundary strength ``|∇P_σ|`` normalised so that an ideal step of a
   probability map from 0 to 1 gives ``e = 1``.
3. **Tissue-selective filtering and memory.** The eigenvalues are weighted by ``P_b``
   (``S{D} = P_b·D``: full diffusion in meaningless regions) and then pass through a delay
   (relaxation) equation, implicitly discretised per iteration,

       γ_{k+1} = (β γ_k + S{λ}_{k+1}) / (1 + β),   β = (1 − P_b) / P_b^n,

   with ``n`` the memory (polynomial degree of the memory function). Where ``P_b ≈ 1`` there is no
   memory (``β → 0``: the instantaneous tensor); in relevant tissue (``P_b`` small) ``β`` is large
   and ``L`` keeps its initial, selective value, so the speckle pattern that carries tissue
   information is not over-filtered. ``L`` has the eigenvalues ``γ`` on the current eigenvectors.
4. **Time stepping.** Each of the ``n_iter`` steps of size Δt is semi-implicit,
   ``(I + Δt K(L)) u_{k+1} = u_k``, where ``−K`` is a symmetric, negative semi-definite
   discretisation of ``div(L ∇·)`` with reflecting (Neumann) borders (each 2 × 2 cell averages the
   four one-sided gradient stencils; for ``L = I`` it is the 5-point Laplacian), solved by conjugate
   gradients: stable for any Δt, and the mean of ``u`` is conserved.

This is our implementation from the paper's description (no code of the authors'); where the
description leaves a choice open (the edge normalisation, the refit period, the spatial scheme) the
choice is stated above. σ and ρ are in pixels. The DRUS authors' parameters are the defaults:
σ = ρ = 4, 31 iterations, memory 9, Δt = 0.3, Gamma model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.special import gammaln, logsumexp, polygamma, psi

from drus.defaults import ADMSS_DT, ADMSS_ITERATIONS, ADMSS_MEMORY, ADMSS_RHO, ADMSS_SIGMA

__all__ = ["GammaMixture", "fit_gamma_mixture", "admss", "amplitude_of"]

#: Mixture classes and refit period of the speckle statistics (iterations).
N_CLASSES = 3
REFIT_EVERY = 5
#: Images with at least this many pixels show a progress bar by default (256²: about 5 s on one core).
_PROGRESS_PIXELS = 60_000


@dataclass(frozen=True)
class GammaMixture:
    """A finite mixture of Gamma densities, classes ordered by increasing mean.

    Attributes
    ----------
    weights, shapes, scales : numpy.ndarray
        ``[K]`` mixing weights (sum 1), shape ``α_k`` and scale ``θ_k`` (mean ``α_k θ_k``).
    """

    weights: np.ndarray
    shapes: np.ndarray
    scales: np.ndarray

    @property
    def means(self) -> np.ndarray:
        return self.shapes * self.scales

    def _log_joint(self, values: np.ndarray) -> np.ndarray:
        v = np.maximum(np.asarray(values, dtype=np.float64), np.finfo(np.float64).tiny)[..., None]
        a, s = self.shapes, self.scales
        return np.log(self.weights) + (a - 1) * np.log(v) - v / s - a * np.log(s) - gammaln(a)

    def posteriors(self, values: np.ndarray) -> np.ndarray:
        """Class probabilities ``[K, *values.shape]`` of each value (Bayes' rule)."""
        lj = self._log_joint(values)
        post = np.exp(lj - logsumexp(lj, axis=-1, keepdims=True))
        return np.moveaxis(post, -1, 0)


def _gamma_shape(s: np.ndarray) -> np.ndarray:
    """Solve ``log α − ψ(α) = s`` (s > 0): Minka's closed form, then Newton steps."""
    a = (3 - s + np.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    for _ in range(4):
        f = np.log(a) - psi(a) - s
        df = 1 / a - polygamma(1, a)
        a = np.maximum(a - f / df, a / 10)
    return a


def fit_gamma_mixture(values: np.ndarray, n_classes: int = N_CLASSES, *, max_iter: int = 70, tol: float = 1e-5) -> GammaMixture:
    """Maximum-likelihood Gamma mixture of positive values by EM.

    Initialised deterministically on ``n_classes`` equal-count groups of the sorted values; stops
    when the mean log-likelihood changes by less than ``tol`` or after ``max_iter`` iterations.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    peak = v.max()
    v = np.maximum(v, peak * 1e-6)  # zeros: the Gamma log-likelihood needs positive values
    logv = np.log(v)
    groups = np.array_split(np.sort(v), n_classes)
    m = np.array([g.mean() for g in groups])
    var = np.array([max(g.var(), (1e-3 * g.mean()) ** 2) for g in groups])
    shapes, scales = m**2 / var, var / m
    weights = np.full(n_classes, 1.0 / n_classes)
    prev = -np.inf
    for _ in range(max_iter):
        lj = np.log(weights) + (shapes - 1) * logv[:, None] - v[:, None] / scales - shapes * np.log(scales) - gammaln(shapes)
        norm = logsumexp(lj, axis=1)
        r = np.exp(lj - norm[:, None])
        nk = np.maximum(r.sum(axis=0), 1e-10 * v.size)
        weights = nk / nk.sum()
        mk = (r.T @ v) / nk
        lk = (r.T @ logv) / nk
        shapes = _gamma_shape(np.maximum(np.log(mk) - lk, 1e-8))
        scales = mk / shapes
        ll = float(norm.mean())
        if abs(ll - prev) < tol * max(1.0, abs(ll)):
            break
        prev = ll
    order = np.argsort(shapes * scales)
    return GammaMixture(weights=weights[order], shapes=shapes[order], scales=scales[order])


def _structure_eigen(post: np.ndarray, sigma: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Normal direction (angle from x) and boundary strength ``e`` of the strongest class boundary.

    ``post`` is ``[K, n_z, n_x]``. For each class map: ``P_σ``, its gradient, the structure tensor
    ``J_ρ`` and its largest eigenvalue; per pixel the class with the largest one wins.
    """
    best = np.full(post.shape[1:], -np.inf)
    angle = np.zeros(post.shape[1:])
    edge = np.zeros(post.shape[1:])
    for pk in post:
        ps = ndi.gaussian_filter(pk, sigma, mode="nearest")
        gz, gx = np.gradient(ps)
        jxx = ndi.gaussian_filter(gx * gx, rho, mode="nearest")
        jxz = ndi.gaussian_filter(gx * gz, rho, mode="nearest")
        jzz = ndi.gaussian_filter(gz * gz, rho, mode="nearest")
        mu1 = 0.5 * (jxx + jzz + np.sqrt((jxx - jzz) ** 2 + 4 * jxz**2))
        take = mu1 > best
        best = np.where(take, mu1, best)
        angle = np.where(take, 0.5 * np.arctan2(2 * jxz, jxx - jzz), angle)
        # a step of P from 0 to 1 smoothed at σ has a peak gradient 1/(σ√(2π)): that is e = 1
        edge = np.where(take, np.clip(np.hypot(gx, gz) * sigma * math.sqrt(2 * math.pi), 0.0, 1.0), edge)
    return angle, edge


class _Stencil:
    """The fixed difference operators of the 2 × 2-cell discretisation of ``div(L ∇u)``."""

    def __init__(self, shape: tuple[int, int]):
        nz, nx = shape
        idx = np.arange(nz * nx).reshape(nz, nx)
        a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
        c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
        n_cells, n = a.size, nz * nx
        rows = np.arange(n_cells)

        def diff(plus, minus, w=1.0):
            return sp.csr_matrix((np.r_[np.full(n_cells, w), np.full(n_cells, -w)], (np.r_[rows, rows], np.r_[plus, minus])), shape=(n_cells, n))

        self.top, self.bottom = diff(b, a), diff(d, c)  # x differences of the cell's two rows
        self.left, self.right = diff(c, a), diff(d, b)  # z differences of its two columns
        self.x_mean = diff(b, a, 0.5) + diff(d, c, 0.5)
        self.z_mean = diff(c, a, 0.5) + diff(d, b, 0.5)
        # an edge on the image border lies in one cell only, an inner edge in two: the border ones
        # count twice, so that L = I gives the 5-point Laplacian with reflecting borders everywhere
        ci, cj = np.divmod(rows, nx - 1)
        self.w_top = np.where(ci == 0, 1.0, 0.5)
        self.w_bottom = np.where(ci == nz - 2, 1.0, 0.5)
        self.w_left = np.where(cj == 0, 1.0, 0.5)
        self.w_right = np.where(cj == nx - 2, 1.0, 0.5)
        self.corners = (a, b, c, d)
        self.shape = shape
        self.eye = sp.identity(n, format="csr")

    def cell_mean(self, field: np.ndarray) -> np.ndarray:
        f = field.ravel()
        return 0.25 * sum(f[k] for k in self.corners)

    def operator(self, lxx: np.ndarray, lxz: np.ndarray, lzz: np.ndarray) -> sp.csr_matrix:
        """``K`` with ``uᵀKu = Σ_cells ¼ Σ_stencils gᵀ L g`` (+ the border edges' second half).

        Symmetric positive semi-definite for a positive semi-definite ``L``.
        """
        cxx, cxz, czz = (self.cell_mean(f) for f in (lxx, lxz, lzz))
        k = (self.top.T @ sp.diags(self.w_top * cxx) @ self.top + self.bottom.T @ sp.diags(self.w_bottom * cxx) @ self.bottom
             + self.left.T @ sp.diags(self.w_left * czz) @ self.left + self.right.T @ sp.diags(self.w_right * czz) @ self.right)
        cross = self.x_mean.T @ sp.diags(cxz) @ self.z_mean
        return (k + cross + cross.T).tocsr()


def _check_envelope(envelope) -> np.ndarray:
    arr = np.asarray(envelope)
    if arr.ndim != 2:
        raise ValueError(f"ADMSS takes a 2-D envelope image [n_z, n_x], got an array of shape {arr.shape}")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"ADMSS takes a real envelope (amplitude) image, got dtype {arr.dtype}; take |IQ| or the "
                         "Hilbert envelope first (drus.physics.beamform.envelope)")
    if min(arr.shape) < 3:
        raise ValueError(f"ADMSS needs at least 3 × 3 pixels, got {arr.shape[0]} × {arr.shape[1]}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("the envelope contains NaN or inf")
    if arr.min() < 0:
        raise ValueError(f"the envelope must be non-negative (an amplitude, before log compression), its minimum is "
                         f"{arr.min():.3g}; a signed RF image needs its envelope first (drus.physics.beamform.envelope)")
    return arr


def admss(
    envelope: np.ndarray,
    *,
    sigma: float = ADMSS_SIGMA,
    rho: float = ADMSS_RHO,
    n_iter: int = ADMSS_ITERATIONS,
    memory: int = ADMSS_MEMORY,
    dt: float = ADMSS_DT,
    model: str = "gamma",
    progress: bool | None = None,
) -> np.ndarray:
    """Despeckle an envelope image with ADMSS (Ramos-Llordén et al. 2015; module docstring).

    Apply it to the envelope (amplitude) before log compression. The defaults are the parameters
    the DRUS authors used for DRUSmean + ADMSS.

    Parameters
    ----------
    envelope : numpy.ndarray
        ``[n_z, n_x]`` real, finite, non-negative amplitude image (at least 3 × 3).
    sigma, rho : float
        Gaussian scales (pixels, > 0) of the structure tensor: the smoothing of the probability
        maps (σ) and of the tensor ``∇P_σ∇P_σᵀ`` (ρ).
    n_iter : int
        Diffusion steps (≥ 0; 0 returns a copy).
    memory : int
        Memory ``n`` ≥ 0 (degree of the memory function ``β = (1 − P_b)/P_b^n``).
    dt : float
        Time step Δt > 0 (the scheme is semi-implicit, stable for any Δt).
    model : str
        Speckle model of the tissue classes; ``"gamma"`` (a 3-class Gamma mixture).
    progress : bool, optional
        Show a progress bar; default: only for images of ≥ 60 000 pixels (256²: about 5 s).

    Returns
    -------
    numpy.ndarray
        The despeckled envelope, ``[n_z, n_x]`` float64, non-negative (same mean as the input).

    Raises
    ------
    ValueError
        For an input that is not a finite, non-negative 2-D image, or a parameter out of range.
    """
    u0 = _check_envelope(envelope)
    if model != "gamma":
        raise ValueError(f"unknown speckle model {model!r}; ADMSS here implements 'gamma'")
    for name, value in (("sigma", sigma), ("rho", rho), ("dt", dt)):
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    for name, value in (("n_iter", n_iter), ("memory", memory)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer ≥ 0, got {value!r}")
    u = u0.copy()
    if n_iter == 0 or np.ptp(u) == 0:  # nothing to diffuse
        return u
    scale = u.max()
    u /= scale  # the filter is scale-invariant; work at max 1
    stencil = _Stencil(u.shape)
    if progress is None:
        progress = u.size >= _PROGRESS_PIXELS
    from tqdm.auto import tqdm

    eps = np.finfo(np.float64).eps
    gamma_n = gamma_t = None
    for it in tqdm(range(n_iter), desc="ADMSS", disable=not progress, leave=False):
        if it % REFIT_EVERY == 0:  # speckle statistics of the current image, and D from its class maps
            post = fit_gamma_mixture(u).posteriors(u)
            p_b = post[0]  # the lowest-mean (meaningless) class
            angle, edge = _structure_eigen(post, sigma, rho)
            cos, sin = np.cos(angle), np.sin(angle)  # normal to the strongest class boundary
            sel_n, sel_t = p_b * (1.0 - edge), p_b  # S{D}: eigenvalues across / along, times P_b
            beta = (1.0 - p_b) / (p_b**memory + eps)
        if gamma_n is None:
            gamma_n, gamma_t = sel_n, sel_t
        else:  # the delay equation: relax towards S{λ} at a rate set by P_b
            gamma_n = (beta * gamma_n + sel_n) / (1.0 + beta)
            gamma_t = (beta * gamma_t + sel_t) / (1.0 + beta)
        lxx = gamma_n * cos**2 + gamma_t * sin**2
        lzz = gamma_n * sin**2 + gamma_t * cos**2
        lxz = (gamma_n - gamma_t) * cos * sin
        a = (stencil.eye + dt * stencil.operator(lxx, lxz, lzz)).tocsr()
        diag = a.diagonal()
        pre = spla.LinearOperator(a.shape, matvec=lambda x, d=diag: x / d)
        x, info = spla.cg(a, u.ravel(), x0=u.ravel(), rtol=1e-8, atol=0.0, maxiter=500, M=pre)
        if info != 0:
            raise FloatingPointError(f"ADMSS: the implicit step {it + 1} did not converge (cg info {info})")
        u = x.reshape(u.shape)
    return np.maximum(u, 0.0) * scale


def amplitude_of(image: np.ndarray) -> np.ndarray:
    """The amplitude image to despeckle: ``|IQ|`` of a complex image, the Hilbert envelope along depth
    (:func:`drus.physics.beamform.envelope`) of a signed RF image, and a non-negative image as it is."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image [n_z, n_x], got an array of shape {arr.shape}")
    if np.iscomplexobj(arr):
        return np.abs(arr)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"expected a numeric image, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("the image contains NaN or inf")
    if arr.min() < 0:
        from drus.physics.beamform import envelope

        return envelope(arr, axis=0)
    return arr
