"""The linear-operator contract used by every degradation model in drus.

An operator ``A`` maps an image ``x`` of shape ``in_shape`` (``[n_z, n_x]`` for images) to a
measurement of shape ``out_shape``. All methods take torch tensors with any number of leading batch
dimensions: ``x`` is ``[..., *in_shape]``.

Operators that have a singular value decomposition ``A = U S Vᵀ`` expose it as an *SVD view*
(:class:`SVDOperator`): ``Vt``/``V`` move between image space and the spectral domain,
``Ut``/``U`` between measurement space and the spectral domain, and ``singular_values`` holds
``S``. The spectral domain has shape ``spectral_shape`` (the number of unknowns, in whatever layout
is natural for the operator), and components beyond the rank have singular value 0. The DDRM sampler
(:mod:`drus.sampling.ddrm`) talks only to this view, so the identity (DENO), the separable blur and the
plane-wave ``BH`` all plug into the same sampler.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "LinearOperator",
    "SVDOperator",
    "Identity",
    "SeparableBlur",
    "gaussian_kernel",
    "modulated_gaussian_kernel",
    "convolution_matrix",
    "canonical_svd",
]


def canonical_svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``numpy.linalg.svd(a)`` with a sign convention that does not depend on the machine.

    LAPACK returns each singular pair ``(u_i, v_i)`` up to a common sign, and which sign depends on
    the BLAS kernels picked for the CPU (seen here: OpenBLAS's Haswell and Prescott kernels flip
    two of eight pairs of the same matrix). The sampler draws its noise in the spectral domain, so
    the sign decides which image a seed produces. Each pair is flipped so that the first entry of
    ``v_i`` whose magnitude is at least half the largest is positive (a rule that rounding cannot
    tip, unlike "the largest entry", which ties for symmetric vectors).
    """
    u, s, vt = np.linalg.svd(a)
    mag = np.abs(vt)
    first_big = np.argmax(mag >= 0.5 * mag.max(axis=1, keepdims=True), axis=1)
    sign = np.where(vt[np.arange(vt.shape[0]), first_big] < 0, -1.0, 1.0)
    k = s.shape[0]
    u[:, :k] *= sign[:k]
    vt *= sign[:, None]
    return u, s, vt


def _check_trailing(name: str, t: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape[t.ndim - len(shape):]) != tuple(shape) or t.ndim < len(shape):
        raise ValueError(
            f"{name} must have trailing shape {tuple(shape)} ({what}), got {tuple(t.shape)}"
        )


class LinearOperator:
    """Base class: a linear map ``[..., *in_shape] → [..., *out_shape]``.

    Subclasses implement :meth:`_apply` and :meth:`_adjoint` on tensors with exactly one leading
    batch dimension; the public methods validate shapes and handle any number of batch dims.
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: ``[..., *in_shape] → [..., *out_shape]``."""
        _check_trailing("x", x, self.in_shape, "the operator's input shape")
        return self._batched(self._apply, x, self.in_shape, self.out_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ y``: ``[..., *out_shape] → [..., *in_shape]``."""
        _check_trailing("y", y, self.out_shape, "the operator's output shape")
        return self._batched(self._adjoint, y, self.out_shape, self.in_shape)

    __call__ = apply

    @staticmethod
    def _batched(fn, t: torch.Tensor, shape_in, shape_out) -> torch.Tensor:
        lead = t.shape[: t.ndim - len(shape_in)]
        out = fn(t.reshape(-1, *shape_in))
        return out.reshape(*lead, *shape_out)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to(self, device=None, dtype=None) -> "LinearOperator":
        """Move the operator's tensors; returns ``self``."""
        for k, v in vars(self).items():
            if isinstance(v, torch.Tensor):
                setattr(self, k, v.to(device=device, dtype=dtype if v.is_floating_point() else None))
        return self

    def moved(self, device=None, dtype=None) -> "LinearOperator":
        """A copy on ``device`` (and ``dtype``); ``self`` is left as it is. Tensors already there are shared."""
        import copy

        return copy.copy(self).to(device=device, dtype=dtype)


class SVDOperator(LinearOperator):
    """An operator with an SVD view ``A = U S Vᵀ`` (Kawar et al. 2022, Sect. 3).

    Subclasses implement ``_Vt, _V, _Ut, _U`` (one leading batch dim) and set
    ``singular_values`` (a tensor of shape ``spectral_shape``, non-negative, zeros beyond the rank).
    ``apply`` and ``adjoint`` default to ``U S Vᵀ`` and ``V S Uᵀ``.
    """

    spectral_shape: tuple[int, ...]
    singular_values: torch.Tensor

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """Image → spectral coefficients: ``[..., *in_shape] → [..., *spectral_shape]``."""
        _check_trailing("x", x, self.in_shape, "the operator's input shape")
        return self._batched(self._Vt, x, self.in_shape, self.spectral_shape)

    def V(self, c: torch.Tensor) -> torch.Tensor:
        """Spectral coefficients → image: ``[..., *spectral_shape] → [..., *in_shape]``."""
        _check_trailing("c", c, self.spectral_shape, "the spectral shape")
        return self._batched(self._V, c, self.spectral_shape, self.in_shape)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        """Measurement → spectral coefficients: ``[..., *out_shape] → [..., *spectral_shape]``."""
        _check_trailing("y", y, self.out_shape, "the operator's output shape")
        return self._batched(self._Ut, y, self.out_shape, self.spectral_shape)

    def U(self, c: torch.Tensor) -> torch.Tensor:
        """Spectral coefficients → measurement: ``[..., *spectral_shape] → [..., *out_shape]``."""
        _check_trailing("c", c, self.spectral_shape, "the spectral shape")
        return self._batched(self._U, c, self.spectral_shape, self.out_shape)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return self._U(self.singular_values * self._Vt(x))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._V(self.singular_values * self._Ut(y))


class Identity(SVDOperator):
    """``A = I`` on images of shape ``shape`` — the DENO setting (pure denoising)."""

    def __init__(self, shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32, device=None):
        self.in_shape = self.out_shape = self.spectral_shape = tuple(int(s) for s in shape)
        self.singular_values = torch.ones(self.spectral_shape, dtype=dtype, device=device)

    def _Vt(self, x):
        return x

    _V = _Ut = _U = _apply = _adjoint = _Vt


# --- separable blur (paper Sect. III; docs/method.md §5) ------------------------------------------
def _half_width(std_px: float, half_width: int | None) -> int:
    """Default truncation ±round(2.5 std) (7 taps at the paper's 1.2 px), at least ±1."""
    return max(1, int(round(2.5 * std_px))) if half_width is None else int(half_width)


def gaussian_kernel(std_px: float, *, half_width: int | None = None) -> np.ndarray:
    """Sampled Gaussian ``exp(-k²/(2 std²))``, ``k = -hw..hw``, ``hw = round(2.5·std)`` by default.

    Normalised to unit energy (``sum(h²) = 1``).
    """
    if not std_px > 0:
        raise ValueError(f"std_px must be positive, got {std_px!r}")
    hw = _half_width(std_px, half_width)
    k = np.arange(-hw, hw + 1, dtype=np.float64)
    h = np.exp(-(k**2) / (2 * std_px**2))
    return h / np.linalg.norm(h)


def modulated_gaussian_kernel(
    std_px: float, period_px: float, *, half_width: int | None = None
) -> np.ndarray:
    """Cosine-modulated Gaussian ``cos(2π k / period) · exp(-k²/(2 std²))``, unit energy.

    This mimics the axial pulse-echo response (paper Sect. III). Unit energy is used instead of the
    reference code's unit sum, which for a band-pass kernel is ≈ 0 (a gain of ≈ 400 with a sign flip).
    """
    if not period_px > 0:
        raise ValueError(f"period_px must be positive, got {period_px!r}")
    hw = _half_width(std_px, half_width)
    k = np.arange(-hw, hw + 1, dtype=np.float64)
    h = np.cos(2 * np.pi * k / period_px) * np.exp(-(k**2) / (2 * std_px**2))
    return h / np.linalg.norm(h)


def convolution_matrix(kernel: np.ndarray, n: int) -> np.ndarray:
    """``[n, n]`` matrix of the centred ("same") convolution with ``kernel``, zero boundaries."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 1 or kernel.size % 2 != 1:
        raise ValueError(f"kernel must be 1-D with an odd number of taps, got shape {kernel.shape}")
    hw = kernel.size // 2
    m = np.zeros((n, n))
    for j, h in enumerate(kernel):  # loop over taps (a handful), not over pixels
        off = j - hw
        m += h * np.eye(n, k=-off)
    return m


class SeparableBlur(SVDOperator):
    """Separable 2-D convolution ``Y = Kz X Kxᵀ`` on ``[n_z, n_x]`` images with an exact SVD.

    With ``Kz = Uz Sz Vzᵀ`` and ``Kx = Ux Sx Vxᵀ`` the SVD of ``Kz ⊗ Kx`` is
    ``(Uz ⊗ Ux)(Sz ⊗ Sx)(Vz ⊗ Vx)ᵀ``: the spectral domain is ``[n_z, n_x]`` with singular values
    ``sz[i]·sx[j]``, and no ``N × N`` matrix is ever formed.

    Parameters
    ----------
    kernel_z, kernel_x : array_like
        1-D kernels (odd length) along depth and lateral axes.
    shape : (n_z, n_x)
        Image shape.
    """

    def __init__(self, kernel_z, kernel_x, shape: tuple[int, int], *, dtype=torch.float32, device=None):
        n_z, n_x = (int(s) for s in shape)
        self.in_shape = self.out_shape = self.spectral_shape = (n_z, n_x)
        self.kernel_z = np.asarray(kernel_z, dtype=np.float64)
        self.kernel_x = np.asarray(kernel_x, dtype=np.float64)
        kz = convolution_matrix(self.kernel_z, n_z)
        kx = convolution_matrix(self.kernel_x, n_x)
        uz, sz, vzt = canonical_svd(kz)
        ux, sx, vxt = canonical_svd(kx)
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        self.Kz, self.Kx = t(kz), t(kx)
        self.Uz, self.Vz, self.Ux, self.Vx = t(uz), t(vzt.T), t(ux), t(vxt.T)
        self.singular_values = t(np.outer(sz, sx))

    @classmethod
    def paper(
        cls,
        grid,
        *,
        std: float = 0.17e-3,
        axial_period_px: float = 4.0,
        dtype=torch.float32,
        device=None,
    ) -> "SeparableBlur":
        """The blur of the paper's numerical study (Sect. III) on ``grid``.

        Lateral Gaussian of standard deviation ``std`` (m, 0.17 mm); axial Gaussian of the same std
        modulated by a cosine of period ``axial_period_px`` pixels (the reference code's choice:
        half the pixel Nyquist frequency). Both kernels have unit energy.
        """
        kz = modulated_gaussian_kernel(std / grid.dz, axial_period_px)
        kx = gaussian_kernel(std / grid.dx)
        return cls(kz, kx, grid.shape, dtype=dtype, device=device)

    def _apply(self, x):
        return self.Kz @ x @ self.Kx.T

    def _adjoint(self, y):
        return self.Kz.T @ y @ self.Kx

    def _Vt(self, x):
        return self.Vz.T @ x @ self.Vx

    def _V(self, c):
        return self.Vz @ c @ self.Vx.T

    def _Ut(self, y):
        return self.Uz.T @ y @ self.Ux

    def _U(self, c):
        return self.Uz @ c @ self.Ux.T
