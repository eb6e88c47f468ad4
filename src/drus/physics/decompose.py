"""An exact, cached SVD view of the plane-wave operator ``BH`` (docs/decomposition.md).

DDRM (:mod:`drus.sampling.ddrm`) works in the SVD basis of ``A = BH = U S Vᵀ``; at the paper's 256 × 256 grid
``BH`` is a dense 65 536² matrix (docs/decomposition.md: no low-rank or shift-invariant shortcut; the reference
code keeps dense ``U`` and ``V``, 2 × 16 GiB in float32). This module computes that decomposition
exactly, with three savings:

1. **Flip split.** On a grid symmetric about ``x = 0`` with a 0° wave, ``BH`` commutes with the
   lateral flip ``P`` (``x → −x``; docs/decomposition.md §1, ``tests/physics/test_physics.py``). With orthonormal bases
   ``Q_e``, ``Q_o`` of the even (``Px = x``) and odd (``Px = −x``) images — pairs of mirrored columns
   ``(e_j ± e_j')/√2``, the middle column of an odd ``n_x`` in the even part — ``BH`` is block
   diagonal: ``Q_oᵀ BH Q_e = Q_eᵀ BH Q_o = 0``, and the two half-size blocks ``A_e = Q_eᵀ BH Q_e``,
   ``A_o = Q_oᵀ BH Q_o`` are decomposed independently (2 × 32 768² at 256²: ≈ 4× less work and
   half the storage of one 65 536² problem).
2. **Gram eigendecomposition** (``method="gram"``, default) ``A_bᵀA_b = V S² Vᵀ`` instead of an SVD
   (``method="svd"``): ≈ 1.7× faster in float64 (measured on 1 152² blocks); it squares the
   condition number, which in float64 only matters far below any useful threshold
   (:func:`reliable_floor`); in float32 it matters below ≈ 1e-2·s_1.
3. **No stored U.** On the kept components ``U = BH V S⁻¹``, so ``Uᵀy = S⁻¹ Vᵀ (BH)ᵀ y`` (one
   sparse adjoint, ``Hᵀ Bᵀ y``) and ``U c = BH V (c / s)`` (one sparse product). DDRM needs ``Uᵀy``
   once and ``V``/``Vᵀ`` at every step. The implicit ``u_i`` inherits the rounding of the stored
   ``v_i`` amplified by ``s_1/s_i``: ≈ 6e-8·1e3 = 6e-5 at ``1e-3·s_1`` with float32 storage, but a
   few per cent with float16 — float16 storage is for thresholds ≥ 1e-2 (docs/decomposition.md).

Spectral layout (:class:`DecomposedBH`)
---------------------------------------
The spectral vector is ``[even block | odd block]``; inside a block, components are sorted by
descending singular value. Components below ``threshold · s_1`` get ``s = 0`` and DDRM samples them
from the prior (docs/method.md §4, "no singular value"). Such components must still exist
in the spectral domain: the image is ``x = V_k V_kᵀ x + (I − V_k V_kᵀ) x`` and the second term is
what DDRM draws from the prior. Each block stores one of two equivalent representations of it:

- ``"basis"``: the complete orthonormal ``n_b × n_b`` eigenvector matrix; dropped components are
  columns with ``s = 0``. ``Vᵀx`` and ``V c`` cost ``n_b²`` each. Spectral size ``n_b``.
- ``"projector"``: only the ``k_b`` kept vectors ``W``; the complement is carried implicitly in
  image coordinates: ``Vᵀx = [Wᵀx, x − W Wᵀx]`` and ``V [a, r] = r + W (a − Wᵀ r)``, ``2 n_b k_b``
  each. Spectral size ``k_b + n_b`` (the last ``n_b`` have ``s = 0``). ``V Vᵀ = I`` exactly, while
  ``Vᵀ V`` is the projector onto the representable coefficients; DDRM's update of ``s = 0``
  components is linear and isotropic, so the image-space result has exactly the distribution it has
  with a complete basis (tested in ``tests/physics/test_decompose.py``).

``complement="auto"`` picks, per block, whichever costs fewer multiply-adds per DDRM step
(``2 n_b²`` vs ``4 n_b k_b`` for one ``Vᵀ`` and one ``V``): ``"projector"`` when ``k_b < n_b / 2``,
else ``"basis"``; the projector also stores less (``n_b k_b`` vs ``n_b²``). A projector block in which
every component is kept is the complete basis.

Rectangular ``BH``
-----------------
With ``MatchedFilterBeamformer(..., unknown_grid=coarse)`` the unknown reflectivity lives on a
coarser grid than ``B y``: ``BH`` is ``[N_meas, N_unknown]`` (e.g. 65 536 × 16 384 for ``By`` on
256² and unknowns on 128²). Both grids must be symmetric about ``x = 0``; then ``BH P_u = P_m BH``
(the flip of each grid) and the split still holds, with the *column* bases ``Q_e``, ``Q_o`` of
the unknown grid and the *row* bases of the measurement grid: blocks ``Q_m,bᵀ BH Q_u,b`` of shape
``[n_b(meas), n_b(unknown)]``. ``V`` (``[n_b(unknown)]²`` per block) and ``s`` come from the Gram
matrix ``A_bᵀA_b``, which is accumulated from row chunks of ``A_b`` (:func:`flip_gram`): the tall
block itself is never stored. ``Uᵀy = S⁻¹ Vᵀ (Hᵀ Bᵀ y)`` as in the square case; ``in_shape`` is the
unknown grid's shape, ``out_shape`` the measurement grid's.

Images are ``[n_z, n_x]`` (flattened in C order, index ``iz · n_x + ix``); half images (the
coordinates of ``Q_e``/``Q_o``) are ``[n_z, n_x − n_x // 2]`` (even) and ``[n_z, n_x // 2]``
(odd), flattened in C order, column ``j`` standing for the pair ``(j, n_x − 1 − j)``.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from drus.physics.beamform import MatchedFilterBeamformer, SparseOperator
from drus.physics.operators import SVDOperator
from drus.outputs import check_writable_dir

__all__ = [
    "FlipSplit",
    "flip_block",
    "flip_gram",
    "decompose_block",
    "reliable_floor",
    "SpectralBlock",
    "DecomposedBH",
    "decompose_bh",
    "resolve_split",
    "NoSplit",
    "operator_error",
]

log = logging.getLogger(__name__)


METHODS = ("gram", "svd")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
COMPUTE_DTYPES = {"float64": np.float64, "float32": np.float32}
COMPLEMENTS = ("auto", "basis", "projector")
PARITIES = ("even", "odd")
#: How the unknowns are split into independently decomposed blocks: the flip split (two halves; a
#: symmetric grid and a 0° wave), none (one block: any geometry, ≈ 4× the work and 2× the storage),
#: or auto (the flip split where the geometry allows it).
SPLITS = ("flip", "none", "auto")
FULL = "full"  # the one block of split="none"

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_DEFAULT_CHUNK_BYTES = 256 * 2**20
_SYMMETRY_TOLERANCE = 1e-5  # relative commutator ‖BH P x − P BH x‖ / ‖BH x‖ accepted as "symmetric"


def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _parity(name: str, value) -> str:
    return _choice(name, value, PARITIES)


# --- the flip split ---------------------------------------------------------------------------
class FlipSplit:
    """Orthonormal even/odd bases ``Q_e``, ``Q_o`` of the lateral flip on ``[n_z, n_x]`` images.

    ``Q_eᵀ x`` and ``Q_oᵀ x`` are sums and differences of mirrored columns (scaled by ``1/√2``);
    ``Q`` is never formed as a dense matrix. ``[Q_e, Q_o]`` is orthogonal, so
    ``x = Q_e Q_eᵀ x + Q_o Q_oᵀ x``.

    Parameters
    ----------
    shape : (n_z, n_x)
        Image shape.

    Attributes
    ----------
    n_even, n_odd : int
        Dimensions of the two subspaces: ``n_z · (n_x − n_x // 2)`` and ``n_z · (n_x // 2)``.
    """

    def __init__(self, shape: tuple[int, int]):
        if len(tuple(shape)) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be an image shape (n_z, n_x) with positive sides, got {shape!r}")
        self.n_z, self.n_x = (int(s) for s in shape)
        self.half = self.n_x // 2  # mirrored pairs per row
        self.half_even = self.n_x - self.half  # + the middle column when n_x is odd
        self.n_even = self.n_z * self.half_even
        self.n_odd = self.n_z * self.half

    def size(self, parity: str) -> int:
        """Dimension of the ``parity`` subspace."""
        return self.n_even if _parity("parity", parity) == "even" else self.n_odd

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q_eᵀ x, Q_oᵀ x)``: ``[..., n_z, n_x]`` → ``([..., n_even], [..., n_odd])``."""
        h = self.half
        left = x[..., :h]
        right = x[..., self.n_x - h :].flip(-1)  # column n_x − 1 − j at position j
        even = (left + right) * _SQRT1_2
        if self.half_even > h:
            even = torch.cat([even, x[..., h : h + 1]], dim=-1)
        odd = (left - right) * _SQRT1_2
        lead = x.shape[:-2]
        return even.reshape(*lead, self.n_even), odd.reshape(*lead, self.n_odd)

    def merge(self, even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
        """``Q_e c_e + Q_o c_o``: ``([..., n_even], [..., n_odd])`` → ``[..., n_z, n_x]``."""
        lead = even.shape[:-1]
        ce = even.reshape(*lead, self.n_z, self.half_even)
        co = odd.reshape(*lead, self.n_z, self.half)
        h = self.half
        left = (ce[..., :h] + co) * _SQRT1_2
        right = (ce[..., :h] - co) * _SQRT1_2
        parts = [left] + ([ce[..., h:]] if self.half_even > h else []) + [right.flip(-1)]
        return torch.cat(parts, dim=-1)

    def sparse_basis(self, parity: str) -> sp.csc_matrix:
        """``Q_e`` or ``Q_o`` as a scipy CSC matrix ``[N, n_parity]`` (2 non-zeros per column)."""
        parity = _parity("parity", parity)
        h, n_x = self.half, self.n_x
        iz, j = np.divmod(np.arange(self.n_z * h), h)
        cols_pair = iz * (self.half_even if parity == "even" else h) + j
        sign = 1.0 if parity == "even" else -1.0
        rows = [iz * n_x + j, iz * n_x + n_x - 1 - j]
        cols = [cols_pair, cols_pair]
        vals = [np.full(j.size, _SQRT1_2), np.full(j.size, sign * _SQRT1_2)]
        if parity == "even" and self.half_even > h:  # middle column, weight 1
            z = np.arange(self.n_z)
            rows.append(z * n_x + h)
            cols.append(z * self.half_even + h)
            vals.append(np.ones(self.n_z))
        n_cols = self.size(parity)
        return sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.n_z * n_x, n_cols),
        )


class NoSplit:
    """The trivial split of ``[n_z, n_x]`` images: one block, the image flattened in C order.

    Same interface as :class:`FlipSplit` (``parities``, ``size``, ``split``, ``merge``,
    ``sparse_basis``) with the one parity ``"full"``: used for geometries without the lateral
    symmetry (a steered wave, an asymmetric grid or probe).
    """

    parities = (FULL,)

    def __init__(self, shape: tuple[int, int]):
        if len(tuple(shape)) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be an image shape (n_z, n_x) with positive sides, got {shape!r}")
        self.n_z, self.n_x = (int(s) for s in shape)
        self.n_full = self.n_z * self.n_x

    def size(self, parity: str = FULL) -> int:
        _choice("parity", parity, self.parities)
        return self.n_full

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """``(x flattened,)``: ``[..., n_z, n_x]`` → ``([..., n_z·n_x],)``."""
        return (x.reshape(*x.shape[:-2], self.n_full),)

    def merge(self, full: torch.Tensor) -> torch.Tensor:
        """``[..., n_z·n_x]`` → ``[..., n_z, n_x]``."""
        return full.reshape(*full.shape[:-1], self.n_z, self.n_x)

    def sparse_basis(self, parity: str = FULL) -> sp.csc_matrix:
        """The identity ``[N, N]``."""
        return sp.identity(self.size(parity), format="csc", dtype=np.float64)


FlipSplit.parities = PARITIES


def _splitter(kind: str, shape: tuple[int, int]):
    return FlipSplit(shape) if kind == "flip" else NoSplit(shape)


def _is_rectangular(beamformer: MatchedFilterBeamformer) -> bool:
    """Whether the unknowns live on another grid than ``B y`` (compared by value)."""
    return beamformer.unknown_grid != beamformer.grid


def _check_flip_symmetry(beamformer: MatchedFilterBeamformer) -> None:
    """Raise ValueError unless ``BH`` commutes with the lateral flip (geometry, then numerically).

    Both the measurement grid and the unknown grid must be symmetric about ``x = 0``; then
    ``BH P_unknown = P_meas BH``.
    """
    wave = beamformer.model.wave
    grids = [("grid", beamformer.grid)]
    if _is_rectangular(beamformer):
        grids.append(("unknown_grid", beamformer.unknown_grid))
    for name, grid in grids:
        x = grid.x_axis
        if not np.allclose(x, -x[::-1], rtol=0.0, atol=1e-9 * max(abs(x[0]), abs(x[-1]))):
            raise ValueError(
                f"the flip split needs a {name} symmetric about x = 0, got x from {x[0] * 1e3:.4g} to "
                f"{x[-1] * 1e3:.4g} mm; build it with ImageGrid.from_extent(x_min=-a, x_max=a, ...)"
            )
    if wave.angle != 0:
        raise ValueError(
            f"the flip split needs a 0° plane wave (a steered wave breaks the lateral symmetry), got "
            f"angle = {wave.angle!r} rad; decompose BH for the 0° wave"
        )
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1, *beamformer.unknown_grid.shape, generator=g, dtype=torch.float64)
    bh = beamformer.BH
    a, b = bh.apply(v.flip(-1)), bh.apply(v).flip(-1)
    rel = float((a - b).norm() / b.norm())
    if rel > _SYMMETRY_TOLERANCE:
        raise ValueError(
            f"BH does not commute with the lateral flip (relative commutator {rel:.2e} > "
            f"{_SYMMETRY_TOLERANCE:g}): the probe or the model is not symmetric about x = 0"
        )


def _in_order(make, starts, workers: int):
    """``make(start)`` for every start, yielded in order, ``workers`` of them computed at a time in
    threads (SciPy's sparse products release the GIL): the sparse chunks of the next rows are built
    while the caller's GEMM consumes the current one. At most ``workers + 1`` chunks exist at once."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    starts = list(starts)
    if workers <= 1:
        yield from (make(s) for s in starts)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="drus-chunk") as pool:
        pending = deque(pool.submit(make, s) for s in starts[:workers])
        for s in starts[workers:]:
            done = pending.popleft().result()
            pending.append(pool.submit(make, s))
            yield done
        while pending:
            yield pending.popleft().result()


def _chunk_workers() -> int:
    """Threads for the sparse chunk products: torch's thread count (``--threads``)."""
    return max(1, torch.get_num_threads())


def _folded_factors(beamformer: MatchedFilterBeamformer, rows: str, cols: str) -> tuple[sp.csr_matrix, sp.spmatrix]:
    """``(Q_rᵀ B, H Q_c)`` in float64: rows folded with the measurement grid's flip bases, columns
    with the unknown grid's; ``rows = cols = "full"`` (no split): ``(B, H)`` in float64."""
    if FULL in (rows, cols):
        if rows != cols:
            raise ValueError(f"the 'full' block has no cross blocks, got rows={rows!r}, cols={cols!r}")
        return beamformer.B.astype(np.float64).tocsr(), beamformer.H.astype(np.float64)
    q_r = FlipSplit(beamformer.grid.shape).sparse_basis(_parity("rows", rows))
    q_c = FlipSplit(beamformer.unknown_grid.shape).sparse_basis(_parity("cols", cols))
    b_r = (q_r.T.tocsr() @ beamformer.B.astype(np.float64)).tocsr()  # [n_r, M]: folded rows of B
    h_c = beamformer.H.astype(np.float64) @ q_c  # [M, n_c]: folded columns of H
    return b_r, h_c


def flip_block(
    beamformer: MatchedFilterBeamformer,
    rows: str = "even",
    cols: str | None = None,
    *,
    dtype=np.float64,
    chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    progress: bool = True,
) -> np.ndarray:
    """The dense block ``Q_rowsᵀ B H Q_cols`` of ``BH`` in the flip bases.

    Computed as the sparse product ``(Q_rᵀ B)(H Q_c)`` in float64, column chunk by column chunk
    (each chunk's sparse result and dense copy stay below ``chunk_bytes``), so only the output is
    dense. On a symmetric grid the cross blocks (``rows != cols``) vanish. ``Q_r`` are the flip
    bases of the measurement grid (``beamformer.grid``), ``Q_c`` those of the unknown grid
    (``beamformer.unknown_grid``; the same grid unless the beamformer is rectangular).

    Parameters
    ----------
    beamformer : MatchedFilterBeamformer
        Defines ``H`` and ``B``.
    rows, cols : {"even", "odd"}
        Parities of the row and column bases; ``cols`` defaults to ``rows``.
    dtype : numpy dtype
        dtype of the returned array (products are always accumulated in float64).
    chunk_bytes : int
        Memory bound of one chunk in bytes.
    progress : bool
        Show a tqdm progress bar over the chunks.

    Returns
    -------
    numpy.ndarray
        ``[n_rows, n_cols]`` with ``n_even = n_z·(n_x − n_x//2)``, ``n_odd = n_z·(n_x//2)`` of the
        measurement grid (rows) and of the unknown grid (columns).
    """
    from tqdm.auto import tqdm

    cols = rows if cols is None else cols
    b_r, h_c = _folded_factors(beamformer, rows, cols)
    h_c = h_c.tocsc()
    n_r, n_c = b_r.shape[0], h_c.shape[1]
    out = np.empty((n_r, n_c), dtype=dtype)
    # dense float64 chunk + its sparse form (≈ 12 bytes per stored entry)
    step = max(1, int(chunk_bytes) // (n_r * 20))
    starts = range(0, n_c, step)
    chunks = _in_order(lambda start: (b_r @ h_c[:, start : start + step]).toarray(), starts, _chunk_workers())
    for start, chunk in zip(starts, tqdm(chunks, total=len(starts), desc=f"BH block {rows}×{cols}",
                                         disable=not progress, leave=False)):
        out[:, start : start + step] = chunk
    return out


def flip_gram(
    beamformer: MatchedFilterBeamformer,
    parity: str = "even",
    *,
    dtype=np.float64,
    chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    progress: bool = True,
    device: str | torch.device = "cpu",
):
    """The Gram matrix ``A_bᵀ A_b`` of the flip block ``A_b = Q_bᵀ B H Q_b`` without storing ``A_b``.

    For a rectangular beamformer (``By`` on a fine grid, unknowns on a coarse one) ``A_b`` is tall,
    ``[n_b(meas), n_b(unknown)]``; the Gram route only needs ``A_bᵀ A_b`` (``[n_b(unknown)]²``).
    It is accumulated over row chunks of ``A_b`` (sparse ``(Q_bᵀB)[rows] (H Q_b)``, then a
    rank-k update of one triangle, :func:`_add_lower_gram`), each chunk below ``chunk_bytes``: peak memory is the
    Gram matrix plus ``threads + 1`` chunks, instead of the tall block plus the Gram matrix. The
    sparse chunks are computed ``torch.get_num_threads()`` at a time in threads, overlapping the GEMM.

    Parameters
    ----------
    beamformer : MatchedFilterBeamformer
        Defines ``H`` (unknown grid) and ``B`` (measurement grid).
    parity : {"even", "odd"}
        The block (rows and columns of the same parity; the cross blocks vanish).
    dtype : {float64, float32}
        Accumulation and output dtype. Each chunk of ``A_b`` is computed in float64 and rounded once;
        float32 accumulation is about twice as fast as float64 and halves the memory; its rounding, ≈ ε₃₂·s_1² per entry, is of the
        order of the float32 eigensolver's own backward error (docs/decomposition.md).
    chunk_bytes : int
        Memory bound of one chunk in bytes.
    progress : bool
        Show a tqdm progress bar over the chunks.
    device : str or torch.device
        Where the Gram matrix is accumulated (the sparse chunks are always computed on the CPU and
        sent there): on CUDA the matrix never visits host memory.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[n_c, n_c]`` symmetric; only its **upper triangle** is guaranteed (what
        ``eigh(..., lower=False)`` reads; use ``np.triu(g) + np.triu(g, 1).T`` for the full matrix).
        On the CPU a Fortran-ordered numpy array, on another device a tensor there.
    """
    from tqdm.auto import tqdm

    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    b_r, h_c = _folded_factors(beamformer, parity, parity)
    h_c = h_c.tocsr()
    n_r, n_c = b_r.shape[0], h_c.shape[1]
    device = torch.device(device)
    g = torch.zeros(n_c, n_c, dtype=torch.float64 if dtype == np.float64 else torch.float32, device=device)
    step = max(1, int(chunk_bytes) // (n_c * 20))
    starts = range(0, n_r, step)

    def sparse_chunk(start):  # the sparse product in float64, rounded once to the accumulation dtype: [rows, n_c]
        return torch.from_numpy((b_r[start : start + step] @ h_c).toarray().astype(dtype, copy=False))

    chunks = _in_order(sparse_chunk, starts, _chunk_workers())
    for chunk in tqdm(chunks, total=len(starts), desc=f"BH Gram {parity}", disable=not progress, leave=False):
        _add_lower_gram(g, chunk.to(device))  # the lower triangle of g is the upper triangle of gram
    # gᵀ: its upper triangle is filled; on the CPU as a Fortran-ordered numpy view (no copy)
    return g.mT.numpy() if device.type == "cpu" else g.mT


def _add_lower_gram(g: torch.Tensor, c: torch.Tensor, panels: int = 8) -> None:
    """``g += cᵀc`` on the lower triangle (and a few tiles above it), in place, by row panels.

    A rank-k update restricted to one triangle, as BLAS ``syrk`` computes it, in about 56 % of a full
    GEMM's work (with 8 panels). ``syrk`` itself is not used: OpenBLAS's crashes (segmentation fault) at
    n = 32 768, the 256² flip blocks; torch's GEMM (MKL on x86) handles any size.
    """
    n = g.shape[0]
    size = -(-n // panels)
    for i0 in range(0, n, size):
        i1 = min(i0 + size, n)
        g[i0:i1, :i1].addmm_(c[:, i0:i1].mT, c[:, :i1])


# --- decomposition of one block -------------------------------------------------------------------
def reliable_floor(method: str, compute_dtype: str) -> float:
    """Smallest ``s_i / s_1`` whose computed singular value is accurate to about 1 %.

    With ``ε = eps(compute_dtype)`` (2.2e-16 in float64, 1.2e-7 in float32):

    - ``"svd"``: backward-stable, ``|δs_i| ≈ ε·s_1``, so ``δs_i/s_i ≤ 1 %`` needs ``s_i/s_1 ≥ 100·ε``;
    - ``"gram"``: forming ``AᵀA`` squares the condition number, ``|δ(s_i²)| ≈ ε·s_1²``, so
      ``δs_i/s_i ≈ ε/(2 (s_i/s_1)²) ≤ 1 %`` needs ``s_i/s_1 ≥ √(50·ε)``.

    Floors: gram 1.1e-7 (float64) / 2.4e-3 (float32); svd 2.2e-14 / 1.2e-5. Measured on a
    1 152² block with singular values down to 4e-18·s_1 (docs/decomposition.md) the errors are 4–5×
    below these estimates: gram float32 loses 1.5 % at 1e-3·s_1 and 2e-4 at 1e-2·s_1, float64 1e-11.
    So in float64 the squaring never matters above the thresholds in use (σ0/s_1 ≈ 1e-2, docs/decomposition.md);
    in float32 it does below ≈ 1e-2 (use ``method="svd"``). Components below the floor are treated
    as unobserved (``s = 0``).
    """
    eps = float(np.finfo(COMPUTE_DTYPES[_choice("compute_dtype", compute_dtype, COMPUTE_DTYPES)]).eps)
    if _choice("method", method, METHODS) == "svd":
        return 100.0 * eps
    return math.sqrt(50.0 * eps)


def decompose_block(
    block: np.ndarray, *, method: str = "gram", device: str | torch.device = "cpu"
) -> tuple[np.ndarray, torch.Tensor]:
    """Right singular vectors and singular values of a dense block ``A`` (square or rectangular).

    Parameters
    ----------
    block : numpy.ndarray
        ``A``, ``[m, n]`` float64 or float32 (the compute dtype); may be overwritten (``"svd"`` on
        the CPU). ``m > n`` for a rectangular ``BH`` with the unknowns on a coarser grid.
    method : {"gram", "svd"}
        ``"gram"``: eigendecomposition ``AᵀA = V S² Vᵀ`` (``scipy.linalg.eigh`` on the CPU,
        ``torch.linalg.eigh`` on CUDA); ``"svd"``: ``A = U S Vᵀ`` (LAPACK ``gesdd`` / torch), ``U``
        discarded (when ``m < n`` the full ``V`` is computed and ``s`` padded with zeros).
    device : str or torch.device
        Where to compute.

    Returns
    -------
    s : numpy.ndarray
        ``[n]`` float64 singular values, descending.
    V : torch.Tensor
        ``[n, n]`` orthonormal right singular vectors (columns, same order), block dtype, on
        ``device``.
    """
    return _decompose([block], method=method, device=device)


def _reverse_columns(a: np.ndarray, rows_per_chunk: int = 1024) -> None:
    """``a[:, ::-1]`` in place, a block of rows at a time (temporary memory: one block)."""
    for r in range(0, a.shape[0], rows_per_chunk):
        a[r : r + rows_per_chunk] = a[r : r + rows_per_chunk, ::-1].copy()


def _available_memory() -> int:
    """Bytes of physical memory available now (Linux ``MemAvailable``; else the total physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _ilp64_syevd(dtype):
    """LAPACK ``?syevd`` with 64-bit integers, from the OpenBLAS that numpy ≥ 2 wheels bundle, or None.

    The LP64 LAPACK of scipy (and MKL in torch) sizes ``syevd``'s workspace, ``1 + 6n + 2n²``
    elements, in a 32-bit integer: it overflows for n ≥ 32 767 — exactly the 256² flip blocks
    (n = 32 768), where scipy's ``syevd`` crashes with a segmentation fault. numpy's bundled
    OpenBLAS is built with 64-bit integers; its LAPACKE entry point runs in place on a
    Fortran-ordered array and allocates the workspace itself. Returns ``f(a, upper) -> w`` (``a``
    overwritten by the eigenvectors), or None where that library is not found (other numpy builds).
    """
    import ctypes
    import glob

    name = {np.dtype(np.float32): "scipy_LAPACKE_ssyevd64_", np.dtype(np.float64): "scipy_LAPACKE_dsyevd64_"}.get(
        np.dtype(dtype))
    libs = sorted(glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "libscipy_openblas64_*")))
    if name is None or not libs:
        return None
    try:
        fn = getattr(ctypes.CDLL(libs[0]), name)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_void_p]

    def syevd(a: np.ndarray, upper: bool) -> np.ndarray:
        assert a.flags.f_contiguous and a.dtype == np.dtype(dtype) and a.shape[0] == a.shape[1]
        w = np.empty(a.shape[0], dtype=a.dtype)
        info = fn(102, b"V", b"U" if upper else b"L", a.shape[0], a.ctypes.data, a.shape[0], w.ctypes.data)  # 102: column-major
        if info != 0:
            raise np.linalg.LinAlgError(f"LAPACK {name[13:20]} failed with info = {info} (n = {a.shape[0]})")
        return w

    return syevd


def _eigh_gram(gram, *, device: torch.device, upper: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """``s`` (descending) and ``V`` from the Gram matrix ``AᵀA`` (numpy, or a tensor on ``device``;
    overwritten). ``upper``: only its upper triangle is valid, as :func:`flip_gram` returns it."""
    if device.type == "cpu":
        import scipy.linalg as sla

        # divide and conquer (syevd) is the fastest LAPACK driver for all eigenvectors (n = 8 192, float32:
        # 32 s vs 36 s for MRRR computing only the top 30 %) but needs 2n² elements of workspace, sized
        # with 64-bit integers (_ilp64_syevd); MRRR (syevr) needs O(n). syevd when its workspace fits in
        # the available memory, else syevr.
        n = gram.shape[0]
        syevd = _ilp64_syevd(gram.dtype) if 2 * n * n * gram.dtype.itemsize < 0.8 * _available_memory() else None
        log.info("eigendecomposition of a %d² %s Gram matrix (LAPACK %s)", n, gram.dtype, "syevd" if syevd else "syevr")
        if syevd is not None:
            v = gram if gram.flags.f_contiguous else np.asfortranarray(gram)
            w = syevd(v, upper)
        else:
            w, v = sla.eigh(gram, lower=not upper, overwrite_a=True, check_finite=False, driver="evr")
        s = np.sqrt(np.clip(w[::-1].astype(np.float64), 0.0, None))
        _reverse_columns(v)  # descending order, in place (no second n² copy)
        return s, torch.from_numpy(v)
    g = gram if isinstance(gram, torch.Tensor) else torch.from_numpy(gram).to(device)
    try:
        w, V = torch.linalg.eigh(g, UPLO="U" if upper else "L")
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        # cuSOLVER's syevd has failed above n ≈ 25 000 (32-bit workspace sizes; the 256² blocks are
        # 32 768): the host's ILP64 route, then V back on the device
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"eigh of the {g.shape[0]}² Gram matrix failed on {device} ({first}); "
                      "computing it on the host (LAPACK) instead", stacklevel=2)
        host = gram if isinstance(gram, np.ndarray) else g.detach().cpu().numpy()
        del g
        s, V = _eigh_gram(host, device=torch.device("cpu"), upper=upper)
        return s, V.to(device)
    del g
    s = np.sqrt(np.clip(w.flip(0).double().cpu().numpy(), 0.0, None))
    return s, V.flip(1).contiguous()


def _decompose(holder: list, *, method: str, device, is_gram: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`decompose_block` on ``holder.pop()``: the block is freed as soon as it is consumed
    when ``holder`` held the only reference (``A`` and ``AᵀA`` never coexist with ``V``).

    ``is_gram``: ``holder`` holds the Gram matrix ``AᵀA`` of :func:`flip_gram` (upper triangle)
    instead of ``A`` (``method`` must then be ``"gram"``)."""
    _choice("method", method, METHODS)
    device = torch.device(device)
    block = holder.pop()
    if block.ndim != 2 or (is_gram and block.shape[0] != block.shape[1]):
        raise ValueError(f"block must be a 2-D [m, n] array (square for a Gram matrix), got shape {block.shape}")
    if is_gram and method != "gram":
        raise ValueError(f"a precomputed Gram matrix needs method='gram', got {method!r}")
    m, n = block.shape
    t0 = time.perf_counter()
    if method == "gram":
        if is_gram:
            gram = block
        elif device.type == "cpu":
            gram = block.T @ block
        else:
            a = torch.from_numpy(block).to(device)
            del block
            gram = a.mT @ a
            del a
        block = None
        s, V = _eigh_gram(gram, device=device, upper=is_gram)
        del gram
    elif device.type == "cpu":
        import scipy.linalg as sla

        # tall or square: the economy SVD's Vᵀ is complete; wide: the full Vᵀ
        u, s, vt = sla.svd(block, full_matrices=m < n, overwrite_a=True, check_finite=False, lapack_driver="gesdd")
        del block, u
        s = s.astype(np.float64)
        V = torch.from_numpy(vt).mT  # rows of Vᵀ are the right singular vectors: no copy
    else:
        a = torch.from_numpy(block).to(device)
        del block
        _, sv, vh = torch.linalg.svd(a, full_matrices=m < n)
        del a
        s = sv.double().cpu().numpy()
        V = vh.mT.contiguous()
    if s.size < n:  # a wide block has at most m non-zero singular values
        s = np.concatenate([s, np.zeros(n - s.size)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    log.info("%s of a %d×%d block on %s: %.1f s", method, m, n, device, time.perf_counter() - t0)
    return s, V


# --- the operator ----------------------------------------------------------------------------------
@dataclass
class SpectralBlock:
    """One flip block of the decomposition (what the cache stores per half).

    Attributes
    ----------
    parity : {"even", "odd"}
    singular_values : numpy.ndarray
        ``[n]`` float64, all singular values of the block, descending (before any threshold).
    vectors : torch.Tensor
        ``[n, m]`` orthonormal right singular vectors, storage dtype: ``m = n`` (the complete basis,
        layout ``"basis"``) or the first ``m < n`` (layout ``"projector"``, complement implicit).
    """

    parity: str
    singular_values: np.ndarray
    vectors: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def n_stored(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def layout(self) -> str:
        return "basis" if self.n_stored == self.n else "projector"

    @property
    def spectral_size(self) -> int:
        """``n`` (basis) or ``m + n`` (projector: kept coefficients, then the complement in half-image coordinates)."""
        return self.n if self.layout == "basis" else self.n_stored + self.n

    @property
    def nbytes(self) -> int:
        return self.vectors.numel() * self.vectors.element_size()

    # W: [n, m]; h: [B, n] half images; c: [B, spectral_size]
    def _mm(self, a: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``a @ W`` (``transpose=False``) or ``a @ Wᵀ`` in the compute dtype of ``a``."""
        w = self.vectors
        if w.device.type == "cpu":
            return _cpu_mm(a, w, transpose)
        if w.dtype == a.dtype:
            return a @ (w.mT if transpose else w)
        # CUDA half GEMM; scale rows to max |a| = 1 so that no coefficient overflows float16
        scale = a.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        r = (a / scale).to(w.dtype) @ (w.mT if transpose else w)
        return r.to(a.dtype) * scale

    def vt(self, h: torch.Tensor) -> torch.Tensor:
        a = self._mm(h, transpose=False)
        if self.layout == "basis":
            return a
        return torch.cat([a, h - self._mm(a, transpose=True)], dim=-1)

    def v(self, c: torch.Tensor) -> torch.Tensor:
        if self.layout == "basis":
            return self._mm(c, transpose=True)
        m = self.n_stored
        a, r = c[:, :m], c[:, m:]
        return r + self._mm(a - self._mm(r, transpose=False), transpose=True)


_CPU_PANEL_BYTES = 64 * 2**20


def _cpu_mm(a: torch.Tensor, w: torch.Tensor, transpose: bool) -> torch.Tensor:
    """``a @ W`` or ``a @ Wᵀ`` on the CPU for a few rows ``a`` (``[B, n]`` or ``[B, m]``, B ≈ C).

    Through numpy's OpenBLAS rather than torch: for these skinny products (10 × 8 192 by 8 192²,
    10 × 32 768 by 32 768 × 13 100) torch 2.13's CPU GEMM (MKL) was 2–3× slower on the AMD EPYC
    machines where drus is developed (``benchmarks/bench_decompose.py --part products``). ``a @ Wᵀ`` goes
    by panels of rows of ``W`` (≈ 64 MiB each), which measured 1.3× faster than one call; float16
    ``W`` is upcast panel by panel (half-precision GEMM is slow on CPUs).
    """
    a_np = a.detach().contiguous().numpy()
    n, m = w.shape
    same = w.dtype == a.dtype
    if same and not transpose:
        return torch.from_numpy(a_np @ w.numpy())
    rows = max(1, _CPU_PANEL_BYTES // (m * a_np.itemsize))
    if transpose:  # out[:, i:j] = a @ W[i:j]ᵀ
        out = np.empty((a_np.shape[0], n), dtype=a_np.dtype)
        for i in range(0, n, rows):
            panel = w[i : i + rows] if same else w[i : i + rows].to(a.dtype)
            np.matmul(a_np, panel.numpy().T, out=out[:, i : i + rows])
    else:  # float16 W: out = Σ_panels a[:, i:j] @ W[i:j]
        out = np.zeros((a_np.shape[0], m), dtype=a_np.dtype)
        for i in range(0, n, rows):
            out += a_np[:, i : i + rows] @ w[i : i + rows].to(a.dtype).numpy()
    return torch.from_numpy(out)


class DecomposedBH(SVDOperator):
    """``BH = U S Vᵀ`` on ``[n_z, n_x]`` images, from the flip-split decomposition (docs/decomposition.md).

    Square (unknowns on the measurement grid) or rectangular (unknowns on
    ``beamformer.unknown_grid``, a coarser grid; module docstring): ``in_shape`` is the unknown
    grid's shape, ``out_shape`` the measurement grid's, and the spectral domain has one component
    per unknown.

    Build it with :func:`decompose_bh`. ``V`` is stored per flip block (see the module docstring for
    the two layouts); ``U = BH V S⁻¹`` on the kept components is never stored: ``Ut``/``U`` apply the
    sparse ``BH`` (on the CPU, scipy) and come back on the input's device.

    Parameters
    ----------
    beamformer : MatchedFilterBeamformer
        The ``H``/``B`` the blocks were computed from.
    even, odd : SpectralBlock
        The two blocks.
    threshold : float
        Components with ``s_i ≤ threshold · s_1`` get ``s_i = 0`` (unobserved in DDRM).
    floor : float
        :func:`reliable_floor` of the method; the effective threshold is ``max(threshold, floor)``.
    metadata : dict, optional
        Provenance (cache key, method, timings), kept as :attr:`metadata`.

    Attributes
    ----------
    in_shape : (n_z, n_x)
        Shape of the unknown grid (``beamformer.unknown_grid``).
    out_shape : (n_z, n_x)
        Shape of the measurement grid (``beamformer.grid``).
    spectral_shape : (m_even + m_odd,)
        ``m_b = n_b`` for a ``"basis"`` block, ``k_b + n_b`` for a ``"projector"`` block.
    singular_values : torch.Tensor
        ``[spectral_shape]`` float32, even block first, each block descending, zeros for dropped
        components and for the implicit complement.
    s1 : float
        Largest singular value of ``BH``.
    n_kept, n_kept_even, n_kept_odd : int
        Components with ``s > 0``.
    """

    def __init__(
        self,
        beamformer: MatchedFilterBeamformer,
        even: SpectralBlock,
        odd: SpectralBlock | None = None,
        *,
        threshold: float,
        floor: float = 0.0,
        metadata: dict | None = None,
    ):
        threshold = float(threshold)
        if not (math.isfinite(threshold) and 0.0 <= threshold < 1.0):
            raise ValueError(f"threshold must be in [0, 1) (relative to s_1), got {threshold!r}")
        self.beamformer = beamformer
        self.BH: SparseOperator = beamformer.BH
        if odd is None:  # one block (split="none"): `even` holds the whole unknown image
            self.flip = None
            self._split = NoSplit(beamformer.unknown_grid.shape)
            if even.n != self._split.n_full:
                raise ValueError(
                    f"a block of size {even.n} does not match the unknown grid's {self._split.n_full} pixels; "
                    "decompose BH for this grid"
                )
            self.blocks = {FULL: even}
        else:
            self.flip = FlipSplit(beamformer.unknown_grid.shape)  # V acts on the unknown grid
            self._split = self.flip
            if (even.n, odd.n) != (self.flip.n_even, self.flip.n_odd):
                raise ValueError(
                    f"blocks of sizes ({even.n}, {odd.n}) do not match the unknown grid's flip split "
                    f"({self.flip.n_even}, {self.flip.n_odd}); decompose BH for this grid"
                )
            self.blocks = {"even": even, "odd": odd}
        self.in_shape = tuple(beamformer.unknown_grid.shape)
        self.out_shape = tuple(beamformer.grid.shape)
        self.threshold, self.floor = threshold, float(floor)
        self.metadata = dict(metadata or {})
        self.s1 = float(max(b.singular_values[0] for b in self.blocks.values()))
        cut = max(threshold, self.floor) * self.s1
        device = even.vectors.device
        parts, kept = [], {}
        for name, b in self.blocks.items():
            s = np.where(b.singular_values > cut, b.singular_values, 0.0)
            if b.layout == "projector":
                lost = int((s[b.n_stored :] > 0).sum())
                if lost:
                    raise ValueError(
                        f"the {name} block stores {b.n_stored} vectors but {b.n_stored + lost} components lie "
                        f"above threshold {threshold:g}; use a threshold at least the one it was computed with"
                    )
                s = np.concatenate([s[: b.n_stored], np.zeros(b.n)])
            kept[name] = int((s > 0).sum())
            parts.append(torch.from_numpy(s.astype(np.float32)))
        self.singular_values = torch.cat(parts).to(device)
        self.spectral_shape = (int(self.singular_values.numel()),)
        # without the split, the one block counts as "even"
        self.n_kept_even, self.n_kept_odd = kept.get("even", kept.get(FULL, 0)), kept.get("odd", 0)
        self.n_kept = self.n_kept_even + self.n_kept_odd
        self._sizes = tuple(b.spectral_size for b in self.blocks.values())
        if self.floor > threshold:
            msg = (
                f"threshold {threshold:g} is below the reliable floor {self.floor:.2g} of this decomposition "
                f"(method/compute dtype, see drus.physics.decompose.reliable_floor): components below the floor are "
                f"treated as unobserved"
            )
            if threshold > 0:
                warnings.warn(f"{msg}; use method='svd' or compute_dtype='float64' to resolve them", stacklevel=2)
            else:
                log.info(msg)

    def __repr__(self) -> str:
        g, u = self.beamformer.grid, self.beamformer.unknown_grid
        layouts = "/".join(b.layout for b in self.blocks.values())
        shape = f"{g.n_z}×{g.n_x}" if u == g else f"{g.n_z}×{g.n_x} ← {u.n_z}×{u.n_x}"
        return (
            f"DecomposedBH({shape}, kept {self.n_kept}/{u.size} above {self.threshold:g}·s1 "
            f"(s1 = {self.s1:.4g}), layout {layouts}, V {self.nbytes / 2**20:.1f} MiB "
            f"{next(iter(self.blocks.values())).vectors.dtype})"
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored singular vectors."""
        return sum(b.nbytes for b in self.blocks.values())

    @property
    def layouts(self) -> dict[str, str]:
        return {k: b.layout for k, b in self.blocks.items()}

    def with_threshold(self, threshold: float) -> "DecomposedBH":
        """The same decomposition with another threshold (tensors shared, nothing recomputed)."""
        return DecomposedBH(
            self.beamformer, *self.blocks.values(), threshold=threshold, floor=self.floor, metadata=self.metadata,
        )

    def to(self, device=None, dtype=None) -> "DecomposedBH":
        """Move the singular vectors and values (e.g. to CUDA for sampling); returns ``self``.

        ``dtype`` casts the singular values (DDRM's compute dtype) and the vectors. The sparse
        ``BH`` used by ``Ut``/``U`` stays on the CPU.
        """
        for b in self.blocks.values():
            b.vectors = b.vectors.to(device=device, dtype=dtype)
        self.singular_values = self.singular_values.to(device=device, dtype=dtype)
        return self

    def moved(self, device=None, dtype=None) -> "DecomposedBH":
        """A copy on ``device`` (and ``dtype``) with its own blocks; ``self`` and its blocks are left as they are."""
        import copy
        import dataclasses

        new = copy.copy(self)
        new.blocks = {k: dataclasses.replace(b) for k, b in self.blocks.items()}
        return new.to(device=device, dtype=dtype)

    # --- the SVD view (one leading batch dim) --------------------------------------------------------
    def _split_spectral(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.split(c, self._sizes, dim=-1))

    def _Vt(self, x: torch.Tensor) -> torch.Tensor:
        parts = self._split.split(x)
        return torch.cat([b.vt(h) for b, h in zip(self.blocks.values(), parts)], dim=-1)

    def _V(self, c: torch.Tensor) -> torch.Tensor:
        parts = self._split_spectral(c)
        return self._split.merge(*(b.v(ci) for b, ci in zip(self.blocks.values(), parts)))

    def _inv_s(self, like: torch.Tensor) -> torch.Tensor:
        s = self.singular_values.to(device=like.device, dtype=like.dtype)
        return torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))

    def _Ut(self, y: torch.Tensor) -> torch.Tensor:
        # Uᵀy = S⁻¹ Vᵀ (BH)ᵀ y on the kept components, 0 elsewhere
        z = self.BH.adjoint(y.to(self.singular_values.device))
        return self._Vt(z) * self._inv_s(z)

    def _U(self, c: torch.Tensor) -> torch.Tensor:
        # U c = BH V (c / s) on the kept components (1/s = 0 elsewhere, the implicit complement included)
        c = c * self._inv_s(c)
        return self.BH.apply(self._V(c)).to(c.device)


# --- the entry point -----------------------------------------------------------------------------
def decompose_bh(
    beamformer: MatchedFilterBeamformer,
    *,
    method: str = "gram",
    threshold: float = 1e-3,
    dtype: str = "float32",
    compute_dtype: str = "float64",
    complement: str = "auto",
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    progress: bool = True,
    chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    split: str = "flip",
) -> DecomposedBH:
    """Exact SVD view of ``BH`` via the flip split, cached on disk half by half (docs/decomposition.md).

    For each flip block (even, then odd): load it from the cache if a valid file exists, else
    accumulate its Gram matrix from row chunks (:func:`flip_gram`, ``method="gram"``) or assemble
    the dense block (:func:`flip_block`, ``method="svd"``), decompose it, keep the
    basis in the layout chosen by ``complement`` and store it atomically. A CPU job interrupted after
    the even half resumes with the odd half.

    Parameters
    ----------
    beamformer : MatchedFilterBeamformer
        ``H`` and ``B`` on grids symmetric about ``x = 0``, 0° wave. With ``unknown_grid`` set (the
        rectangular variant) ``V`` lives on the unknown grid and each block is tall.
    method : {"gram", "svd"}
        Eigendecomposition of ``AᵀA`` (faster) or SVD of ``A`` (resolves smaller singular values;
        see :func:`reliable_floor`).
    threshold : float
        Relative threshold in ``[0, 1)``: components with ``s_i ≤ threshold · s_1`` get ``s_i = 0``
        (DDRM samples them from the prior). σ0/s_1 ≈ 0.01–0.03 for the PICMUS data (docs/method.md §3).
    dtype : {"float32", "float16"}
        Storage dtype of ``V`` (memory and cache size; float16 halves them, see docs/decomposition.md
        for its effect on the operator error). Singular values are always float32.
    compute_dtype : {"float64", "float32"}
        dtype of the dense block and its decomposition (float32: half the memory; pair it with
        ``method="svd"``).
    complement : {"auto", "basis", "projector"}
        How the dropped components are represented (module docstring); ``"auto"``: per block the
        cheaper one, ``"projector"`` when fewer than half of the components are kept.
    device : str or torch.device
        Where the decomposition runs and where the returned ``V`` lives (``"cpu"``, ``"cuda"``…).
        The sparse assembly always runs on the CPU.
    cache_dir : path, optional
        Cache folder; default :func:`default_cache_dir` (``$DRUS_CACHE`` or ``~/.cache/drus``).
    cache : bool
        Read and write the cache (``False``: compute in memory only).
    progress : bool
        Show progress bars.
    chunk_bytes : int
        Memory bound of one assembly chunk (:func:`flip_block`).
    split : {"flip", "none", "auto"}
        ``"flip"``: the two flip blocks (refused for a geometry without the lateral symmetry);
        ``"none"``: one block of all unknowns, any geometry (a steered wave, an asymmetric grid or
        probe; ≈ 4× the work and 2× the storage); ``"auto"``: ``"flip"`` where the geometry allows it
        (:func:`resolve_split`), else ``"none"``.

    Returns
    -------
    DecomposedBH
        An :class:`~drus.physics.operators.SVDOperator` from ``unknown_grid.shape`` to ``grid.shape`` images
        for :func:`drus.sampling.ddrm.ddrm_sample`.

    Raises
    ------
    ValueError
        An unknown option, a threshold outside ``[0, 1)``, or a geometry without the lateral
        symmetry (asymmetric grid, steered wave).
    """
    from drus.physics.decomposition_cache import (
        FORMAT_VERSION, _load_block, _paths, _save_block, cache_key, default_cache_dir,
    )

    _choice("method", method, METHODS)
    _choice("dtype", dtype, STORAGE_DTYPES)
    _choice("compute_dtype", compute_dtype, COMPUTE_DTYPES)
    _choice("complement", complement, COMPLEMENTS)
    threshold = float(threshold)
    if not (math.isfinite(threshold) and 0.0 <= threshold < 1.0):
        raise ValueError(f"threshold must be in [0, 1) (relative to s_1), got {threshold!r}")
    if not isinstance(beamformer, MatchedFilterBeamformer):
        raise TypeError(f"beamformer must be a drus.physics.beamform.MatchedFilterBeamformer, got {type(beamformer).__name__}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but CUDA is not available; use device='cpu'")
    split = resolve_split(beamformer, split)
    if split == "flip":
        _check_flip_symmetry(beamformer)

    options = dict(method=method, threshold=threshold, dtype=dtype, compute_dtype=compute_dtype, complement=complement)
    key = cache_key(beamformer, **options, split=split)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    flip = _splitter(split, beamformer.unknown_grid.shape)
    floor = reliable_floor(method, compute_dtype)
    blocks, metas = {}, {}
    if cache and not all(f.exists() for p in flip.parities for f in _paths(folder, key, p)):
        # a block will be computed: a cache folder that cannot take it must fail now, not after hours
        check_writable_dir(folder, option="cache folder", fix="pass --cache-dir DIR (a writable folder) or --no-cache")
    for parity in flip.parities:
        n = flip.size(parity)
        loaded = _load_block(folder, key, parity, n) if cache else None
        if loaded is not None:
            blocks[parity], meta = loaded
            blocks[parity].vectors = blocks[parity].vectors.to(device)
            metas[parity] = {**meta, "source": "cache"}
            continue
        t0 = time.perf_counter()
        use_gram = method == "gram"  # accumulate AᵀA from row chunks; A itself is never stored
        assemble = flip_gram if use_gram else flip_block
        where = {"device": device} if use_gram else {}  # a Gram matrix is accumulated where it is decomposed
        holder = [assemble(beamformer, parity, dtype=COMPUTE_DTYPES[compute_dtype], chunk_bytes=chunk_bytes,
                           progress=progress, **where)]
        t_assemble = time.perf_counter() - t0
        s, V = _decompose(holder, method=method, device=device, is_gram=use_gram)
        # components kept relative to this block's s_1 (a superset of the final, global selection)
        k = int((s > max(threshold, floor) * s[0]).sum())
        layout = complement if complement != "auto" else ("projector" if k < n / 2 else "basis")
        m = n if layout == "basis" else max(k, 1)
        if m == n and V.dtype == STORAGE_DTYPES[dtype]:
            vectors = V  # the complete basis in the storage dtype: no copy
        else:
            vectors = torch.empty(n, m, dtype=STORAGE_DTYPES[dtype], device=V.device).copy_(V[:, :m])  # one copy
        del V
        blocks[parity] = SpectralBlock(parity, s, vectors)
        seconds = time.perf_counter() - t0
        metas[parity] = {**options, "format_version": FORMAT_VERSION, "seconds_assemble": t_assemble,
                         "seconds_total": seconds, "device": str(device)}
        log.info("%s block (%d unknowns): %d kept above %g·s1_block, layout %s, %.1f s", parity, n, k, threshold,
                 layout, seconds)
        if cache:
            _save_block(folder, key, blocks[parity], metas[parity])
        metas[parity]["source"] = "computed"
    meta = {"key": key, "cache_dir": str(folder) if cache else None, **options, "split": split, "blocks": metas}
    return DecomposedBH(beamformer, *(blocks[p] for p in flip.parities), threshold=threshold, floor=floor,
                        metadata=meta)


def resolve_split(beamformer: MatchedFilterBeamformer, split: str = "auto") -> str:
    """``"flip"`` or ``"none"``: ``split`` itself, or for ``"auto"`` the flip split when ``BH``
    commutes with the lateral flip (symmetric grids and probe, 0° wave; checked as in
    :func:`decompose_bh`), else no split."""
    _choice("split", split, SPLITS)
    if split != "auto":
        return split
    try:
        _check_flip_symmetry(beamformer)
    except ValueError as exc:
        log.info("no flip split for this geometry (%s): one block of all unknowns", exc)
        return "none"
    return "flip"


# --- accuracy --------------------------------------------------------------------------------------
def operator_error(decomposed: SVDOperator, beamformer: MatchedFilterBeamformer, x) -> float | np.ndarray:
    """Relative operator error ``‖U S Vᵀ x − B H x‖ / ‖B H x‖`` per image.

    Parameters
    ----------
    decomposed : SVDOperator
        E.g. a :class:`DecomposedBH`.
    beamformer : MatchedFilterBeamformer
        The reference ``B (H x)`` (sparse, exact).
    x : array_like or torch.Tensor
        ``[n_z, n_x]`` or ``[..., n_z, n_x]`` images on the unknown grid (``beamformer.unknown_grid``,
        the measurement grid for a square ``BH``): random, speckle…

    Returns
    -------
    float or numpy.ndarray
        A float for one image, else an array of the leading shape.
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    dev = decomposed.singular_values.device
    x = x.to(device=dev, dtype=decomposed.singular_values.dtype)
    ref = beamformer.BH.apply(x.double().cpu())
    approx = decomposed.apply(x).double().cpu()
    err = (approx - ref).flatten(-2).norm(dim=-1) / ref.flatten(-2).norm(dim=-1)
    return float(err) if err.ndim == 0 else err.numpy()
