"""Pulse, delays, the forward matrix H, the beamformer B and DAS against brute force and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drus.physics.beamform import MatchedFilterBeamformer, bmode, das, envelope, log_compress, receive_apodization, tukey
from drus.physics.forward import PlaneWaveModel, receive_delay, transmit_delay
from drus.physics.geometry import ImageGrid, LinearProbe, PlaneWave, picmus
from drus.physics.pulse import gaussian_windowed_cosine, picmus_pulse


# --- pulse ----------------------------------------------------------------------------------------
def test_pulse_is_centred_peak_normalised_and_in_band():
    p = picmus_pulse()
    assert p.samples[p.lag] == pytest.approx(1.0)
    assert np.argmax(np.abs(p.samples)) == p.lag
    spec = np.abs(np.fft.rfft(p.samples, 8192))
    freqs = np.fft.rfftfreq(8192, 1 / (p.sampling_frequency * p.oversampling))
    assert 4.5e6 < freqs[np.argmax(spec)] < 5.6e6  # centred near f0 = 5.2 MHz


def test_polyphase_table_matches_fine_pulse():
    p = picmus_pulse()
    offsets, table = p.polyphase()
    q = p.oversampling
    for f in range(q):
        for j, off in enumerate(offsets):
            idx = off * q - f + p.lag
            expected = p.samples[idx] if 0 <= idx < p.samples.size else 0.0
            assert table[f, j] == expected
    assert table[0, list(offsets).index(0)] == pytest.approx(1.0)


def test_gaussian_window_has_the_stated_bandwidth():
    f0, bwr = 5e6, 0.6
    t = np.arange(-4000, 4001) / 1e9
    h = gaussian_windowed_cosine(t, frequency=f0, bandwidth=bwr)
    spec = np.abs(np.fft.rfft(h, 2**18))
    freqs = np.fft.rfftfreq(2**18, 1e-9)
    above = freqs[spec >= spec.max() / 2]  # −6 dB band
    assert (above.max() - above.min()) / f0 == pytest.approx(bwr, rel=0.02)


# --- delays ---------------------------------------------------------------------------------------
def test_transmit_delay_zero_degrees_is_depth_inside_the_aperture(tiny_probe, tiny_wave):
    x = np.array([0.0, 0.5e-3, -1.0e-3])
    z = np.array([5e-3, 7e-3, 9e-3])
    assert np.allclose(transmit_delay(x, z, probe=tiny_probe, wave=tiny_wave), z / 1540.0, rtol=1e-12)
    # outside the aperture: distance to the nearest edge element
    xo = np.array([tiny_probe.element_x[-1] + 2e-3])
    zo = np.array([3e-3])
    expected = np.hypot(2e-3, 3e-3) / 1540.0
    assert transmit_delay(xo, zo, probe=tiny_probe, wave=tiny_wave)[0] == pytest.approx(expected, rel=1e-9)


def test_steered_transmit_delay_is_a_plane_wave_in_the_insonified_zone():
    probe = LinearProbe(64, 0.3e-3, 5e6, 0.6)
    wave = PlaneWave(20e6, 1540.0, angle=np.deg2rad(5))
    x, z = np.array([0.0, 1e-3, -2e-3]), np.array([10e-3, 12e-3, 8e-3])
    plane = (x * np.sin(wave.angle) + z * np.cos(wave.angle)) / 1540.0
    # exact up to the discretisation of the virtual sources (¼ pitch)
    assert np.allclose(transmit_delay(x, z, probe=probe, wave=wave, aperture_upsampling=16), plane, atol=2e-10)


def test_receive_delay(tiny_probe):
    d = receive_delay(np.array([0.0]), np.array([5e-3]), probe=tiny_probe, sound_speed=1540.0)
    assert d.shape == (1, 8)
    assert np.allclose(d[0], np.hypot(tiny_probe.element_x, 5e-3) / 1540.0)


# --- forward matrix -------------------------------------------------------------------------------
def _brute_force_H(model: PlaneWaveModel) -> np.ndarray:
    """Column by column, element by element, tap by tap: the textbook sum of paper eq. (2)."""
    pulse = model.pulse
    q, lag = pulse.oversampling, pulse.lag
    grid, probe, wave = model.grid, model.probe, model.wave
    H = np.zeros(model.shape)
    for iz, z in enumerate(grid.z):
        for ix, x in enumerate(grid.x):
            t_tx = transmit_delay(np.array(x), np.array(z), probe=probe, wave=wave)
            for e, xe in enumerate(probe.element_x):
                tau = t_tx + np.hypot(x - xe, z) / wave.sound_speed
                d = round((tau - wave.t0) * wave.sampling_frequency * q)  # delay in 1/q samples
                for k in range(model.n_samples):
                    i = k * q - d + lag
                    if 0 <= i < pulse.samples.size:
                        H[e * model.n_samples + k, iz * grid.n_x + ix] = pulse.samples[i]
    return H


def test_H_matches_brute_force(tiny_probe, tiny_wave, tiny_grid):
    wave = PlaneWave(tiny_wave.sampling_frequency, tiny_wave.sound_speed, t0=2e-6, n_samples=120)
    model = PlaneWaveModel(tiny_probe, wave, tiny_grid, dtype=np.float64)
    assert np.allclose(model.H.toarray(), _brute_force_H(model), atol=1e-12)


def test_H_point_target_arrival_times(tiny_probe, tiny_wave, tiny_grid):
    model = PlaneWaveModel(tiny_probe, tiny_wave, tiny_grid)
    o = np.zeros(tiny_grid.shape)
    iz, ix = 7, 3
    o[iz, ix] = 1.0
    y = model.simulate(o)
    assert y.shape == (model.n_samples, tiny_probe.n_elements)
    x, z = tiny_grid.x[ix], tiny_grid.z[iz]
    expected = (z + np.hypot(x - tiny_probe.element_x, z)) / 1540.0 * tiny_wave.sampling_frequency
    assert np.all(np.abs(np.argmax(y, axis=0) - expected) <= 0.55)


def test_B_is_the_apodised_transpose_of_H(tiny_probe, tiny_wave, tiny_grid):
    bf = MatchedFilterBeamformer(tiny_probe, tiny_wave, tiny_grid, dtype=np.float64)
    W = bf.apodization()  # [N, L]
    n_s = bf.model.n_samples
    weights = np.repeat(W.T, n_s, axis=0)  # row e·n_s + k → W[:, e]
    assert np.allclose(bf.B.toarray(), (bf.H.toarray() * weights).T, atol=1e-12)


def test_apodization_is_a_tukey_window_of_width_z_over_f_number(tiny_probe):
    w = receive_apodization(np.array([0.0]), np.array([1.4e-3]), probe=tiny_probe, f_number=1.4)
    # aperture 1 mm wide centred at 0: elements at ±0.15, ±0.45 mm inside, ±0.75 mm and beyond outside
    xe = tiny_probe.element_x
    assert np.allclose(w[0], tukey(xe / 1e-3, 0.25))
    assert np.all(w[0][np.abs(xe) > 0.5e-3] == 0) and np.all(w[0][np.abs(xe) < 0.3e-3] == 1)


def test_BH_commutes_with_the_lateral_flip(tiny_probe, tiny_wave, tiny_grid):
    bf = MatchedFilterBeamformer(tiny_probe, tiny_wave, tiny_grid, dtype=np.float64)
    x = torch.randn(2, *tiny_grid.shape, dtype=torch.float64)
    assert torch.allclose(bf.BH.apply(x.flip(-1)), bf.BH.apply(x).flip(-1), atol=1e-9)


def test_beamformed_point_target_peaks_at_the_target():
    probe, wave, grid = picmus(48)
    bf = MatchedFilterBeamformer(probe, wave, grid)
    o = np.zeros(grid.shape)
    o[30, 17] = 1.0
    img = envelope(bf.beamform(bf.model.simulate(o)))
    assert np.unravel_index(np.argmax(img), img.shape) == (30, 17)


def test_bad_inputs_are_named(tiny_probe, tiny_wave, tiny_grid):
    bf = MatchedFilterBeamformer(tiny_probe, tiny_wave, tiny_grid)
    with pytest.raises(ValueError, match="reflectivity must have the grid shape"):
        bf.model.simulate(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="channel_data must be"):
        bf.beamform(np.zeros((5, 8)))
    y = np.full((bf.model.n_samples, 8), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        bf.beamform(y)
    with pytest.raises(ValueError, match="fs"):
        PlaneWaveModel(tiny_probe, PlaneWave(40e6, 1540.0), tiny_grid, pulse=picmus_pulse())


# --- DAS, envelope, B-mode ------------------------------------------------------------------------
def test_das_focuses_a_point_target_rf_and_iq():
    probe, wave, grid = picmus(48)
    model = PlaneWaveModel(probe, wave, grid)
    o = np.zeros(grid.shape)
    o[20, 30] = 1.0
    y = model.simulate(o)
    img = envelope(das(y, probe=probe, waves=wave, grid=grid))
    assert np.unravel_index(np.argmax(img), img.shape) == (20, 30)
    # IQ: demodulate at f0, the complex DAS envelope peaks at the same place
    t = np.arange(y.shape[0]) / wave.sampling_frequency
    from scipy.signal import hilbert

    iq = hilbert(y, axis=0) * np.exp(-2j * np.pi * probe.center_frequency * t)[:, None]
    img_iq = np.abs(das(iq, probe=probe, waves=wave, grid=grid, modulation_frequency=probe.center_frequency))
    assert np.unravel_index(np.argmax(img_iq), img_iq.shape) == (20, 30)


def test_das_compounding_and_shape_errors():
    probe, wave, grid = picmus(24)
    y = np.random.default_rng(0).standard_normal((2, 1500, 128))
    waves = [wave.with_angle(-0.05), wave.with_angle(0.05)]
    both = das(y, probe=probe, waves=waves, grid=grid)
    one = das(y[0], probe=probe, waves=waves[0], grid=grid) + das(y[1], probe=probe, waves=waves[1], grid=grid)
    assert np.allclose(both, one)
    with pytest.raises(ValueError, match="n_elements = 128"):
        das(y[:, :, :64], probe=probe, waves=waves, grid=grid)
    with pytest.raises(ValueError, match="2 transmits"):
        das(y, probe=probe, waves=[wave], grid=grid)


def test_log_compression():
    a = np.array([[1.0, 0.1, 1e-5]])
    assert np.allclose(log_compress(a), [[0.0, -20.0, -60.0]])
    with pytest.raises(ValueError, match="zero everywhere"):
        log_compress(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        bmode(np.array([1.0, np.nan]))


# --- independent simulator ------------------------------------------------------------------------
def test_pymust_agrees_on_time_of_flight():
    pytest.importorskip("pymust")
    from drus.physics.simulate import simulate_pymust

    probe, wave, _ = picmus(8)
    x0, z0 = 3e-3, 25e-3
    rf = simulate_pymust([x0], [z0], [1.0], probe=probe, wave=wave)
    grid = ImageGrid(x=(x0 - 1e-4, x0, x0 + 1e-4), z=(z0 - 1e-4, z0, z0 + 1e-4))
    model = PlaneWaveModel(probe, PlaneWave(wave.sampling_frequency, wave.sound_speed, n_samples=rf.shape[0]), grid)
    o = np.zeros(grid.shape)
    o[1, 1] = 1.0
    ours = model.simulate(o)

    def arrival(a):  # envelope peak with parabolic refinement, per element
        e = envelope(a)
        i = np.clip(np.argmax(e, axis=0), 1, a.shape[0] - 2)
        c = np.arange(a.shape[1])
        l, m, r = e[i - 1, c], e[i, c], e[i + 1, c]
        return i + 0.5 * (l - r) / (l - 2 * m + r)

    # measured: |difference| ≤ 0.05 samples (2.4 ns) on every element
    assert np.max(np.abs(arrival(rf) - arrival(ours))) < 0.25


# --- real data ------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_gammex_wires_are_points(reference_data):
    from scipy.io import loadmat

    path = reference_data / "gammex" / "RFdata1.mat"
    if not path.exists():
        pytest.skip(f"{path} absent")
    m = loadmat(path)
    rf = m["RF1"][:, :, 3].astype(np.float32)
    rf -= rf.mean()
    p = m["param1"][0, 0]
    probe = LinearProbe(128, float(p["pitch"][0, 0]), 5.2e6, 0.6)
    wave = PlaneWave(float(p["fs"][0, 0]), float(p["c"][0, 0]))
    grid = ImageGrid.from_extent(x_min=-18e-3, x_max=18e-3, z_min=5e-3, z_max=60e-3, n_x=181, n_z=551)
    img = envelope(das(rf, probe=probe, waves=wave, grid=grid))
    db = log_compress(img)
    # the wires are isolated bright points: the brightest pixel stands > 25 dB above the median
    assert np.median(db) < -25


def test_rectangular_BH_unknowns_on_a_coarser_grid(tiny_probe, tiny_wave):
    fine = ImageGrid.from_extent(x_min=-0.9e-3, x_max=0.9e-3, z_min=5e-3, z_max=6.2e-3, n_x=10, n_z=9)
    coarse = fine.resized(5, 4)
    bf = MatchedFilterBeamformer(tiny_probe, tiny_wave, fine, unknown_grid=coarse, dtype=np.float64)
    assert bf.H.shape == (bf.B.shape[1], coarse.size)
    # H on the coarse grid is exactly H on the fine grid restricted to the coarse pixels' positions
    direct = PlaneWaveModel(tiny_probe, PlaneWave(tiny_wave.sampling_frequency, 1540.0, n_samples=bf.model.n_samples), coarse, dtype=np.float64)
    assert np.allclose(bf.H.toarray(), direct.H.toarray())
    x = torch.randn(2, *coarse.shape, dtype=torch.float64)
    y = torch.randn(2, *fine.shape, dtype=torch.float64)
    assert torch.allclose((bf.BH.apply(x) * y).sum(), (x * bf.BH.adjoint(y)).sum())
    assert torch.allclose(bf.BH.apply(x.flip(-1)), bf.BH.apply(x).flip(-1), atol=1e-9)


def test_simulate_channel_data_adds_noise_relative_to_the_peak(tiny_probe, tiny_wave, tiny_grid):
    from drus.physics.simulate import simulate_channel_data

    model = PlaneWaveModel(tiny_probe, tiny_wave, tiny_grid)
    o = np.random.default_rng(0).standard_normal(tiny_grid.shape)
    clean = model.simulate(o)
    y, sigma = simulate_channel_data(model, o, gamma=0.1, seed=3)
    assert sigma == pytest.approx(0.1 * np.abs(clean).max())
    assert np.std(y - clean) == pytest.approx(sigma, rel=0.05)
    y2, _ = simulate_channel_data(model, o, gamma=0.1, seed=3)
    assert np.array_equal(y, y2)
