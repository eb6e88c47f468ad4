"""Training data for the prior, and the one intensity convention shared by training and reconstruction.

Normalisation convention
------------------------
The prior models *signed reflectivity-like images* ``x`` (reflectivity ``o = m ⊙ p``, or signed
beamformed RF) scaled so that their root-mean-square value is :data:`TARGET_RMS` = 0.25. Unit
speckle then spans about ``[−1, 1]`` (4 standard deviations), like the ``[−1, 1]`` images diffusion
models are trained on, while bright regions may exceed 1 (nothing is clipped).

- Training: every crop is divided by its own RMS and multiplied by 0.25 (:func:`normalise_rms`).
- Reconstruction: the RMS of the unknown ``o`` is estimated from the observation in the spectral
  domain of the operator (:func:`prior_scale`, one rule for every caller), and the observation and
  its noise level are scaled by the same factor, so the sampler works in the prior's units. Results
  are scaled back.

Sources
-------
- :class:`SyntheticSpeckle`: ``o = m ⊙ p`` over :func:`drus.physics.phantoms.random_echogenicity` maps,
  optionally blurred by a Gaussian PSF, generated on the fly and fully determined by (seed, index).
- :class:`FolderImages`: 2-D arrays from ``.npy``, ``.npz``, ``.h5``/``.hdf5`` and ``.mat`` files in
  a folder (e.g. beamformed RF images, ``[n_z, n_x]``), random crops and lateral flips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from drus.physics.phantoms import random_echogenicity, speckle

__all__ = ["TARGET_RMS", "normalise_rms", "estimate_rms", "prior_scale", "regularised_sigma0", "SyntheticSpeckle", "BeamformedSpeckle", "FolderImages", "make_source"]

TARGET_RMS = 0.25


def normalise_rms(image: np.ndarray, *, target: float = TARGET_RMS) -> np.ndarray:
    """Scale ``image`` so that ``sqrt(mean(image²)) = target`` (zero images are returned as is)."""
    rms = float(np.sqrt(np.mean(np.square(image, dtype=np.float64))))
    return image if rms == 0 else (image * (target / rms)).astype(np.float32)


def estimate_rms(operator, y: torch.Tensor, sigma0: float, *, fraction: float = 0.5) -> float:
    """RMS of the unknown image ``o`` estimated from ``y = A o + n`` in the SVD basis of ``A``.

    For a white unknown (speckle ``m ⊙ p`` is white whatever ``p``) ``E[ȳ_i²] = s_i² E[o²] + σ0²``
    with ``ȳ = Uᵀy``, so ``E[o²] ≈ mean_i (ȳ_i² − σ0²) / s_i²`` over the best-determined components
    (the ``fraction`` with the largest ``s_i``).
    """
    s = operator.singular_values.reshape(-1).to(torch.float64)
    yb = operator.Ut(y).reshape(-1).to(torch.float64)
    k = max(1, int(fraction * int((s > 0).sum())))
    idx = torch.argsort(s, descending=True)[:k]
    power = (yb[idx] ** 2 - sigma0**2) / s[idx] ** 2
    ms = float(power.mean())
    if not ms > 0:
        raise ValueError(
            "the observation carries no signal above the stated noise level (estimated E[o²] ≤ 0): "
            f"check sigma0 = {sigma0!r}"
        )
    return ms**0.5


def prior_scale(operator, y, sigma0: float) -> tuple[float, str]:
    """``(scale, source)``: units of the unknown per prior unit, so that ``o / scale`` has RMS 0.25.

    The rule, the same for DRUS, DENO and every command:

    - ``"estimated"``: :func:`estimate_rms` with the noise power ``σ0²`` subtracted — unbiased when
      the stated σ0 is the noise level of ``y``.
    - ``"noise-inclusive"``: when the stated σ0 is at or above the observation's power per
      component (noise-subtracted power ≤ 0; e.g. the PICMUS resolution sets, whose DENO inputs have
      RMS 0.045/0.036 for σ0 = 0.11/0.16), the stated σ0 cannot be the noise of ``y``, and the RMS is
      taken with the noise included (``σ0 = 0``). That overestimates the unknown's scale: the unknown
      comes out smaller in prior units, the noise too. Logged as a warning.
    """
    import logging

    y_t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, dtype=torch.float32)
    try:
        return estimate_rms(operator, y_t, float(sigma0)) / TARGET_RMS, "estimated"
    except ValueError:
        logging.getLogger(__name__).warning(
            "σ0 = %g is at or above the observation's power per component: prior scale from the noise-inclusive RMS",
            sigma0)
        return estimate_rms(operator, y_t, 0.0) / TARGET_RMS, "noise-inclusive"


def regularised_sigma0(operator, *, sigma_noise: float, scale: float, prior_fraction: float) -> float:
    """The σ0 given to DDRM so that the prior decides at least ``prior_fraction`` of the components.

    In the SVD basis, component ``i`` of the observation is ``ȳ_i = s_i ō_i + noise`` with ``ō_i`` of
    RMS ``ρ = scale · TARGET_RMS``. DDRM follows the measurement where ``s_i ρ`` exceeds σ0 and the
    prior where it does not. With the true noise level of a well-conditioned operator (the plane-wave
    ``BH``: 56 % of its components above 0.1·s_1) almost every component is data-driven; the sample
    spread of DRUSvar then measures the noise, uniform over the image, not the echogenicity
    (docs/realdata.md). This rule raises σ0 to ``ρ · q_f(s)``, ``q_f`` the ``f``-quantile of the
    kept singular values, never below the noise level:

        σ0 = max(σ_noise, ρ · q_f(s)).

    ``prior_fraction = 0`` returns ``sigma_noise`` (the paper's use of σ0 as the noise level).

    Parameters
    ----------
    operator : SVDOperator
        Its ``singular_values`` (zeros for unobserved components).
    sigma_noise : float
        The noise level of ``y`` (stated, or :func:`drus.sampling.noise.estimate_sigma0`).
    scale : float
        Units of the unknown per prior unit (:func:`prior_scale`).
    prior_fraction : float
        ``f`` in [0, 1).
    """
    f = float(prior_fraction)
    if not 0.0 <= f < 1.0:
        raise ValueError(f"prior_fraction must lie in [0, 1), got {prior_fraction!r}")
    if f == 0.0:
        return float(sigma_noise)
    s = operator.singular_values.reshape(-1)
    s = s[s > 0].double().cpu().numpy()
    return max(float(sigma_noise), float(scale) * TARGET_RMS * float(np.quantile(s, f)))


class SyntheticSpeckle:
    """On-the-fly training images ``o = m ⊙ p``, RMS-normalised, ``[1, size, size]`` float32.

    Parameters
    ----------
    size : int
        Crop side in pixels.
    seed : int
        Base seed; image ``i`` is a pure function of ``(seed, i)``.
    psf_std_px : float or None
        If given, blur ``o`` with an isotropic Gaussian of this std (pixels) — images that look like
        beamformed data rather than raw reflectivity.
    """

    def __init__(self, size: int = 64, *, seed: int = 0, psf_std_px: float | None = None):
        self.size, self.seed, self.psf_std_px = int(size), int(seed), psf_std_px

    def __getitem__(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(index)])
        p = random_echogenicity((self.size, self.size), rng=rng)
        o = speckle(p, rng=rng)
        if self.psf_std_px:
            from scipy.ndimage import gaussian_filter

            o = gaussian_filter(o, self.psf_std_px, mode="constant")
        return normalise_rms(o)[None]

    def batch(self, start: int, n: int) -> torch.Tensor:
        """Images ``start … start+n−1`` as a ``[n, 1, size, size]`` tensor."""
        return torch.from_numpy(np.stack([self[start + i] for i in range(n)]))


class BeamformedSpeckle:
    """On-the-fly training images that look like beamformed RF sampled on a DRUS grid, ``[1, size, size]``.

    The paper's prior saw beamformed images, not white reflectivity. This source makes such images
    from drus's own physics, with the mismatches a real acquisition brings:

    1. ``o = m ⊙ p`` on a grid ``oversample`` times finer than the target pixel pitch
       (``p`` from :func:`drus.physics.phantoms.random_echogenicity` on the target grid, upsampled);
    2. the pulse-echo point-spread function, separable: in depth a Gaussian-windowed cosine of
       spatial frequency ``2 f0 / c`` (the RF oscillates with period λ/2 in depth) and −6 dB
       fractional bandwidth ``bw``; laterally a Gaussian of −6 dB width ``lateral_fwhm``;
    3. a depth gain ``exp(g·z)`` (uncompensated attenuation or a time-gain error);
    4. point sampling at the target pitch, so the depth oscillation aliases exactly as it does on
       the DRUS grid (at 0.28 mm pixels the RF is sampled below its Nyquist rate).

    Per image, drawn uniformly: ``f0 ∈ f0_nominal·[0.85, 1.15]``, ``c ∈ 1540·[0.97, 1.03]`` m/s,
    ``bw ∈ [0.5, 0.8]``, ``lateral_fwhm ∈ [0.4, 0.9]`` mm, a depth gain of ±3 dB over the crop, and a
    random sub-pixel offset of the sampling. Each image is a pure function of ``(seed, index)``.

    Parameters
    ----------
    size : int
        Crop side in pixels.
    pitch : float
        Target pixel pitch in m (0.283 mm: the 128² unknown grid of the paper's field of view).
    f0 : float
        Nominal centre frequency in Hz (PICMUS: 5.208 MHz).
    """

    def __init__(self, size: int = 64, *, seed: int = 0, pitch: float = 36e-3 / 127, f0: float = 5.208e6,
                 oversample: int = 6):
        self.size, self.seed, self.pitch, self.f0, self.oversample = int(size), int(seed), float(pitch), float(f0), int(oversample)

    def __getitem__(self, index: int) -> np.ndarray:
        from scipy.ndimage import convolve1d, zoom

        rng = np.random.default_rng([self.seed, int(index), 7])
        n, k = self.size, self.oversample
        p = random_echogenicity((n, n), rng=rng)
        p_fine = np.maximum(zoom(p, k, order=1), 0.0)
        o = speckle(p_fine, rng=rng).astype(np.float64)
        dz = self.pitch / k
        f0 = self.f0 * rng.uniform(0.85, 1.15)
        c = 1540.0 * rng.uniform(0.97, 1.03)
        bw = rng.uniform(0.5, 0.8)
        kz = 2 * f0 / c  # cycles per m in depth
        sigma_f = bw * kz / (2 * np.sqrt(2 * np.log(2)))  # −6 dB (amplitude 1/2) full width bw·kz
        sigma_z = 1 / (2 * np.pi * sigma_f)
        zt = np.arange(-int(np.ceil(3 * sigma_z / dz)), int(np.ceil(3 * sigma_z / dz)) + 1) * dz
        axial = np.exp(-zt**2 / (2 * sigma_z**2)) * np.cos(2 * np.pi * kz * zt + rng.uniform(0, 2 * np.pi))
        fwhm = rng.uniform(0.4e-3, 0.9e-3)
        sx = fwhm / (2 * np.sqrt(2 * np.log(2)))
        xt = np.arange(-int(np.ceil(3 * sx / dz)), int(np.ceil(3 * sx / dz)) + 1) * dz
        lateral = np.exp(-xt**2 / (2 * sx**2))
        rf = convolve1d(convolve1d(o, axial, axis=0, mode="constant"), lateral, axis=1, mode="constant")
        gain_db = rng.uniform(-3, 3) * np.linspace(-0.5, 0.5, rf.shape[0])
        rf *= (10 ** (gain_db / 20))[:, None]
        i0, j0 = rng.integers(k), rng.integers(k)
        return normalise_rms(np.ascontiguousarray(rf[i0::k, j0::k][:n, :n]).astype(np.float32))[None]

    batch = SyntheticSpeckle.batch


def _load_2d_arrays(path: Path) -> list[np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arrays = [np.load(path)]
    elif suffix == ".npz":
        with np.load(path) as z:
            arrays = [z[k] for k in z.files]
    elif suffix in (".h5", ".hdf5", ".mat"):
        import h5py

        arrays = []
        try:
            with h5py.File(path, "r") as f:
                f.visititems(lambda name, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
        except OSError:
            from scipy.io import loadmat

            arrays = [v for k, v in loadmat(path).items() if not k.startswith("__")]
    else:
        return []
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind not in "fiuc" or a.ndim < 2 or min(a.shape[-2:]) < 8:
            continue
        a = np.real(a).astype(np.float32).reshape(-1, *a.shape[-2:])
        out.extend(list(a))
    return out


class FolderImages:
    """Training crops from the 2-D arrays found in a folder (recursively).

    Each array is an image ``[n_z, n_x]`` (a 3-D array is a stack of images). Crops of
    ``size × size`` are taken at random positions with random lateral flips and RMS-normalised.
    Images smaller than the crop are zero-padded.
    """

    def __init__(self, folder, size: int = 64, *, seed: int = 0):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"training data folder not found: {self.folder}")
        self.images = []
        for p in sorted(self.folder.rglob("*")):
            if p.is_file():
                self.images.extend(_load_2d_arrays(p))
        self.images = [im for im in self.images if np.all(np.isfinite(im)) and np.any(im)]
        if not self.images:
            raise ValueError(
                f"no usable 2-D images (.npy, .npz, .h5, .hdf5, .mat; finite, non-zero) found in {self.folder}"
            )
        self.size, self.seed = int(size), int(seed)

    def __getitem__(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(index)])
        im = self.images[rng.integers(len(self.images))]
        pz, px = max(0, self.size - im.shape[0]), max(0, self.size - im.shape[1])
        if pz or px:
            im = np.pad(im, ((0, pz), (0, px)))
        i = rng.integers(im.shape[0] - self.size + 1)
        j = rng.integers(im.shape[1] - self.size + 1)
        crop = im[i : i + self.size, j : j + self.size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return normalise_rms(np.ascontiguousarray(crop))[None]

    batch = SyntheticSpeckle.batch


def make_source(spec: str, size: int, *, seed: int = 0, psf_std_px: float | None = None):
    """``"synthetic"`` → :class:`SyntheticSpeckle`; ``"beamformed"`` → :class:`BeamformedSpeckle`;
    a folder path → :class:`FolderImages`."""
    if spec == "synthetic":
        return SyntheticSpeckle(size, seed=seed, psf_std_px=psf_std_px)
    if spec == "beamformed":
        return BeamformedSpeckle(size, seed=seed)
    return FolderImages(spec, size, seed=seed)
