"""Training data for the prior, generated on the fly or read from a folder, in the intensity
convention of :mod:`drus.sampling.scaling` (each crop at RMS 0.25).

Sources
-------
- :class:`SyntheticSpeckle`: ``o = m ⊙ p`` over :func:`drus.physics.phantoms.random_echogenicity` maps,
  optionally blurred by a Gaussian PSF, generated on the fly and fully determined by (seed, index).
- :class:`BeamformedSpeckle`: beamformed-RF-looking images on a DRUS grid, with pulse, sound-speed
  and depth-gain mismatch.
- :class:`FolderImages`: 2-D arrays from ``.npy``, ``.npz``, ``.h5``/``.hdf5`` and ``.mat`` files in
  a folder (e.g. beamformed RF images, ``[n_z, n_x]``), random crops and lateral flips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from drus.physics.phantoms import random_echogenicity, speckle
from drus.sampling.scaling import normalise_rms

__all__ = ["SyntheticSpeckle", "BeamformedSpeckle", "FolderImages", "make_source"]


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
