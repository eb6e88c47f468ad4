"""The two-way (pulse-echo) pulse ``h = h0 ∗ he ∗ h0`` and its polyphase table.

Paper eq. (2): the received signal is the reflectivity convolved with ``h``, the excitation ``he``
filtered twice by the element impulse response ``h0`` (transmit and receive). Parameters from
the DRUS authors' code (docs/method.md §3): excitation = Gaussian-windowed cosine at ``fe`` = 5.208 MHz, 67 %
bandwidth, 2.5 cycles; element response = Gaussian-windowed cosine at 5.1333 MHz, 65 % bandwidth,
support ±2 periods. The Gaussian window is ``exp(-t²/a)`` with ``a = 4 ln2 / (π f BWR)²``, which puts
the −6 dB points of the spectrum at ``f (1 ± BWR/2)``.

The pulse is sampled ``oversampling`` times finer than the channel data (10× by default) so that a
fractional delay rounded to 1/10 of a sample selects one row of a *polyphase table*: row ``f`` holds
the taps ``h((j - f/oversampling) / fs)`` at the integer sample offsets ``j``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "gaussian_windowed_cosine",
    "PulseEcho",
    "picmus_pulse",
    "gaussian_pulse",
    "estimate_spectrum",
]


def gaussian_windowed_cosine(
    t: np.ndarray, *, frequency: float, bandwidth: float
) -> np.ndarray:
    """``cos(2π f t) · exp(-t² / a)`` with ``a = 4 ln2 / (π f BWR)²``.

    Parameters
    ----------
    t : array
        Times in s.
    frequency : float
        Centre frequency ``f`` in Hz.
    bandwidth : float
        Fractional −6 dB bandwidth ``BWR`` (e.g. 0.67).
    """
    a = 4 * np.log(2) / (np.pi * frequency * bandwidth) ** 2
    return np.cos(2 * np.pi * frequency * t) * np.exp(-(t**2) / a)


@dataclass(frozen=True)
class PulseEcho:
    """A two-way pulse sampled at ``sampling_frequency · oversampling``.

    Attributes
    ----------
    samples : np.ndarray
        ``[n_taps_fine]`` pulse, peak-normalised, odd length, centred: sample ``lag`` is ``t = 0``.
    sampling_frequency : float
        ``fs`` of the channel data in Hz.
    oversampling : int
        Fine samples per channel-data sample.
    """

    samples: np.ndarray
    sampling_frequency: float
    oversampling: int = 10

    def __post_init__(self) -> None:
        s = np.asarray(self.samples, dtype=np.float64)
        if s.ndim != 1 or s.size % 2 != 1:
            raise ValueError(f"pulse samples must be 1-D with odd length (centred), got shape {s.shape}")
        object.__setattr__(self, "samples", s)

    @property
    def lag(self) -> int:
        """Index of ``t = 0`` in :attr:`samples`."""
        return self.samples.size // 2

    @property
    def fine_times(self) -> np.ndarray:
        """``[n_taps_fine]`` times of :attr:`samples` in s."""
        return (np.arange(self.samples.size) - self.lag) / (self.sampling_frequency * self.oversampling)

    @property
    def half_width(self) -> int:
        """Largest integer tap offset ``J`` such that taps ``-J..J`` cover the pulse support."""
        return int(np.ceil(self.lag / self.oversampling))

    def polyphase(self) -> tuple[np.ndarray, np.ndarray]:
        """Polyphase table of the pulse.

        Returns
        -------
        offsets : np.ndarray
            ``[n_taps]`` integer sample offsets ``j = -J..J``.
        table : np.ndarray
            ``[oversampling, n_taps]`` float64: ``table[f, j] = h((j - f / oversampling) / fs)``,
            i.e. the response at sample ``n + j`` of a scatterer whose echo arrives at the fractional
            sample ``n + f / oversampling``.
        """
        q = self.oversampling
        J = self.half_width
        offsets = np.arange(-J, J + 1)
        fine = offsets[None, :] * q - np.arange(q)[:, None] + self.lag
        valid = (fine >= 0) & (fine < self.samples.size)
        table = np.where(valid, self.samples[np.clip(fine, 0, self.samples.size - 1)], 0.0)
        # drop offsets that are zero for every phase (keeps the table tight)
        keep = np.flatnonzero(np.any(table != 0, axis=0))
        return offsets[keep[0] : keep[-1] + 1], table[:, keep[0] : keep[-1] + 1]


def picmus_pulse(
    *,
    sampling_frequency: float = 20.832e6,
    excitation_frequency: float = 5.208e6,
    excitation_bandwidth: float = 0.67,
    excitation_cycles: float = 2.5,
    element_frequency: float = 5.1333e6,
    element_bandwidth: float = 0.65,
    element_periods: float = 2.0,
    oversampling: int = 10,
) -> PulseEcho:
    """The DRUS two-way pulse for the L11-4v (docs/method.md §3).

    ``h = h0 ∗ he ∗ h0`` with ``he`` supported on ±``excitation_cycles``/2 periods of
    ``excitation_frequency`` and ``h0`` on ±``element_periods`` periods of ``element_frequency``;
    normalised to a peak of 1, and only the central half of the full convolution is kept.
    """
    fine_fs = sampling_frequency * oversampling
    dt = 1.0 / fine_fs

    def support(half: float) -> np.ndarray:
        n = int(np.floor(half / dt))
        return np.arange(-n, n + 1) * dt

    he = gaussian_windowed_cosine(
        support(excitation_cycles / 2 / excitation_frequency),
        frequency=excitation_frequency,
        bandwidth=excitation_bandwidth,
    )
    h0 = gaussian_windowed_cosine(
        support(element_periods / element_frequency), frequency=element_frequency, bandwidth=element_bandwidth
    )
    h = np.convolve(np.convolve(h0, he), h0)  # odd length, centred
    h = h / np.max(np.abs(h))
    c, quarter = h.size // 2, h.size // 4
    return PulseEcho(h[c - quarter : c + quarter + 1], sampling_frequency, oversampling)


#: Where :func:`gaussian_pulse` truncates its envelope, relative to the peak (−40 dB).
GAUSSIAN_PULSE_FLOOR = 1e-2


def gaussian_pulse(
    *, center_frequency: float, bandwidth: float, sampling_frequency: float, oversampling: int = 10
) -> PulseEcho:
    """A two-way pulse with a Gaussian spectrum: centre ``f0``, fractional −6 dB bandwidth ``BWR``.

    ``h(t) = cos(2π f0 t) · exp(−t²/a)``, ``a = 4 ln2 / (π f0 BWR)²`` (:func:`gaussian_windowed_cosine`:
    the amplitude spectrum is down 6 dB at ``f0 (1 ± BWR/2)``), truncated where the envelope falls
    below :data:`GAUSSIAN_PULSE_FLOOR` (−40 dB), peak 1. Used for acquisitions other than PICMUS, whose
    file gives the pulse-echo centre frequency and bandwidth or whose channel data's spectrum gives
    them (:func:`estimate_spectrum`).

    Parameters
    ----------
    center_frequency : float
        ``f0`` in Hz, below ``sampling_frequency / 2``.
    bandwidth : float
        Fractional −6 dB bandwidth of the pulse-echo spectrum, in (0, 2].
    sampling_frequency : float
        ``fs`` of the channel data in Hz.
    oversampling : int
        Fine samples per channel-data sample (polyphase table rows).
    """
    for name, value in (("center_frequency", center_frequency), ("sampling_frequency", sampling_frequency)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number (Hz), got {value!r}")
    if not (np.isfinite(bandwidth) and 0 < bandwidth <= 2):
        raise ValueError(f"bandwidth must be a fraction in (0, 2] (e.g. 0.67 for 67 %), got {bandwidth!r}")
    if center_frequency >= sampling_frequency / 2:
        raise ValueError(
            f"center_frequency {center_frequency:.4g} Hz is not below the Nyquist frequency {sampling_frequency / 2:.4g} Hz"
        )
    if int(oversampling) != oversampling or oversampling < 1:
        raise ValueError(f"oversampling must be a positive integer, got {oversampling!r}")
    a = 4 * np.log(2) / (np.pi * center_frequency * bandwidth) ** 2
    half = np.sqrt(a * np.log(1 / GAUSSIAN_PULSE_FLOOR))
    dt = 1.0 / (sampling_frequency * oversampling)
    n = int(np.floor(half / dt))
    t = np.arange(-n, n + 1) * dt
    h = gaussian_windowed_cosine(t, frequency=center_frequency, bandwidth=bandwidth)
    return PulseEcho(h / np.max(np.abs(h)), sampling_frequency, int(oversampling))


def estimate_spectrum(channel_data: np.ndarray, *, sampling_frequency: float) -> tuple[float, float]:
    """Pulse-echo centre frequency and fractional −6 dB bandwidth from channel data's spectrum.

    The amplitude spectrum is ``sqrt`` of the power spectrum averaged over the channels (each channel
    minus its mean, Hann-windowed along fast time), smoothed over ≈ 0.2 MHz. The −6 dB band is the
    contiguous range around the peak where it stays above half the peak; ``f0`` is the amplitude
    centroid over that band and the bandwidth ``(f_high − f_low) / f0``. For a Gaussian pulse
    (:func:`gaussian_pulse`) this returns its ``f0`` and ``BWR``.

    Parameters
    ----------
    channel_data : numpy.ndarray
        ``[n_samples, n_elements]`` real RF.
    sampling_frequency : float
        ``fs`` in Hz.

    Returns
    -------
    (float, float)
        ``(f0 in Hz, fractional bandwidth)``.
    """
    y = np.asarray(channel_data, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 16:
        raise ValueError(f"channel_data must be [n_samples ≥ 16, n_elements] real RF, got shape {y.shape}")
    if np.iscomplexobj(y) or not np.all(np.isfinite(y)):
        raise ValueError("channel_data must be finite real RF to estimate its spectrum")
    y = (y - y.mean(axis=0)) * np.hanning(y.shape[0])[:, None]
    power = np.mean(np.abs(np.fft.rfft(y, axis=0)) ** 2, axis=1)
    f = np.fft.rfftfreq(y.shape[0], 1.0 / sampling_frequency)
    width = max(1, int(round(0.2e6 / (f[1] - f[0]))))
    amp = np.sqrt(np.convolve(power, np.ones(width) / width, mode="same"))
    amp[0] = 0.0  # DC carries no echo
    if not np.any(amp > 0):
        raise ValueError("channel_data is constant: no spectrum to estimate the pulse from")
    peak = int(np.argmax(amp))
    lo, hi = contiguous_run(amp >= amp[peak] / 2, peak)
    band = slice(lo, hi + 1)
    f0 = float(np.sum(f[band] * amp[band]) / np.sum(amp[band]))
    # band edges interpolated to the half-peak crossing
    def crossing(i_in: int, i_out: int) -> float:
        if i_out < 0 or i_out >= f.size:
            return float(f[i_in])
        a_in, a_out = amp[i_in], amp[i_out]
        w = (a_in - amp[peak] / 2) / (a_in - a_out) if a_in != a_out else 0.0
        return float(f[i_in] + w * (f[i_out] - f[i_in]))

    f_lo, f_hi = crossing(lo, lo - 1), crossing(hi, hi + 1)
    return f0, float((f_hi - f_lo) / f0)


def contiguous_run(mask: np.ndarray, index: int) -> tuple[int, int]:
    """First and last index of the run of ``True`` in the 1-D ``mask`` that contains ``index``."""
    lo = hi = int(index)
    while lo > 0 and mask[lo - 1]:
        lo -= 1
    while hi < mask.size - 1 and mask[hi + 1]:
        hi += 1
    return lo, hi
