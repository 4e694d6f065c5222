"""Physics of the built-in shower simulator: effective medium, conservation, resolution, profiles, chi decays."""

from __future__ import annotations

import numpy as np
import pytest
from iminuit import Minuit
from iminuit.cost import LeastSquares

from calinfer import Geometry, InputError, Layer, get_geometry
from calinfer.simulation import (
    CALOGAN_STACK,
    FACE_DISTANCE_M,
    EMShowerModel,
    chi_decay,
    simulate_chi,
    simulate_hadron_like,
    simulate_showers,
)
from calinfer.simulation.chi import C_MM_PER_NS
from calinfer.simulation.em import deposit_particles, resolve_readout

CALOGAN = get_geometry("calogan")
FAST = EMShowerModel(spot_scale=0.3)


def slab_geometry(n_layers: int = 40, thickness_mm: float = 12.0) -> Geometry:
    """Thin full-window layers (one 480 x 480 mm cell each) to measure longitudinal profiles."""
    return Geometry(
        name="test-slabs",
        layers=tuple(
            Layer(f"slab{i}", (1, 1), cell_size_mm=(480.0, 480.0), depth_mm=(i * thickness_mm, (i + 1) * thickness_mm))
            for i in range(n_layers)
        ),
    )


def test_effective_medium_of_the_calogan_stack():
    s = CALOGAN_STACK
    assert s.depth_mm == pytest.approx(480.0)
    assert 15.0 < s.x0_mm < 16.2  # 1/X0 = (1/3)/5.6 + (2/3)/140 mm
    assert 33.0 < s.moliere_mm < 38.0
    assert 60 < s.z_eff < 75
    assert 0.15 < s.sampling_fraction < 0.22  # "about 20%"
    assert 0.09 < s.stochastic_term < 0.12
    assert 8.5 < s.critical_energy_mev < 10.5


def test_energy_is_conserved_before_sampling_also_for_inclined_particles():
    rng = np.random.default_rng(5)
    m = 60
    energy = rng.uniform(0.5, 100, m)
    direction = np.stack([rng.normal(0, 0.2, m), rng.normal(0, 0.2, m), np.ones(m)], axis=1)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    start = np.stack([rng.uniform(-200, 200, m), rng.uniform(-200, 200, m), rng.uniform(0, 300, m)], axis=1)
    photon = rng.random(m) < 0.5
    dep = deposit_particles(energy, start, direction, photon, resolve_readout("calogan", EMShowerModel()), FAST, rng)
    total = dep.voxels.sum(axis=1) + dep.leak_back + dep.leak_side + dep.leak_dead
    np.testing.assert_allclose(total, energy, rtol=1e-10)
    assert np.all(dep.voxels >= 0)
    assert dep.leak_side.max() > 0.01 and dep.leak_back.max() > 0.01  # off-centre and late showers leak


def test_same_seed_same_showers_other_seed_other_showers():
    a = simulate_showers(150, seed=3, model=FAST)
    b = simulate_showers(150, seed=3, model=FAST)
    c = simulate_showers(150, seed=4, model=FAST)
    np.testing.assert_array_equal(a.voxels, b.voxels)
    np.testing.assert_array_equal(a.incident_energy, b.incident_energy)
    assert not np.array_equal(a.voxels, c.voxels)
    assert np.all((a.incident_energy >= 1) & (a.incident_energy <= 100))


def test_resolution_stochastic_term_and_calibrated_scale():
    energies = np.array([4.0, 10.0, 25.0, 60.0])
    ratios = [
        simulate_showers(500, energy=e, seed=10 + i, model=FAST).deposited_energy() / e for i, e in enumerate(energies)
    ]
    mean = np.array([r.mean() for r in ratios])
    width = np.array([r.std() for r in ratios]) / mean
    assert np.all((mean > 0.97) & (mean < 1.01))  # calibrated scale minus ~0.5% leakage
    assert np.all(np.diff(width) < 0)  # resolution improves with energy
    err = width / np.sqrt(2 * 499)
    fit = Minuit(LeastSquares(energies, width, err, lambda e, a, b: a / np.sqrt(e) + b), a=0.1, b=0.0)
    fit.migrad()
    a, b = fit.values["a"], fit.values["b"]
    assert 0.08 < a < 0.13, f"stochastic term {a:.3f}/sqrt(GeV)"
    assert -0.01 < b < 0.015


def test_shower_maximum_grows_with_log_energy():
    geometry = slab_geometry()
    energies = np.array([2.0, 8.0, 32.0, 128.0])
    peaks = []
    for i, e in enumerate(energies):
        profile = simulate_showers(300, energy=e, particle="electron", geometry=geometry, seed=20 + i, model=FAST)
        mean = profile.voxels.mean(axis=0)
        k = int(np.argmax(mean))
        lo, hi = max(k - 3, 0), min(k + 4, len(mean))
        centres = (np.arange(len(mean)) + 0.5) * 12.0
        coef = np.polyfit(centres[lo:hi], mean[lo:hi], 2)  # parabola through the peak region
        peaks.append(-coef[1] / (2 * coef[0]))
    peaks = np.array(peaks) / CALOGAN_STACK.x0_mm
    assert np.all(np.diff(peaks) > 0)
    slope = np.polyfit(np.log(energies), peaks, 1)[0]
    assert 0.7 < slope < 1.3, f"shower maximum moves {slope:.2f} X0 per e-fold of energy"
    assert 3.0 < peaks[2] < 9.0  # 32 GeV electron in Pb/LAr


def test_photons_start_later_than_electrons():
    ph = simulate_showers(400, energy=20.0, particle="photon", seed=1, model=FAST)
    el = simulate_showers(400, energy=20.0, particle="electron", seed=1, model=FAST)
    assert np.all(el.extra["start_depth_mm"] == 0)
    mean = ph.extra["start_depth_mm"].mean()
    assert mean == pytest.approx(9 / 7 * CALOGAN_STACK.x0_mm, rel=0.15)
    assert el.layer_energies()[:, 0].mean() > 1.2 * ph.layer_energies()[:, 0].mean()


def test_lateral_profile_is_narrow_and_centred():
    sh = simulate_showers(300, energy=50.0, seed=2, model=FAST)
    layer0, layer1, _ = CALOGAN.layer_images(sh.voxels)
    strips = layer0.sum(axis=(0, 1))
    assert strips[46:50].sum() / strips.sum() > 0.75  # 5 mm strips, core of a few mm
    assert strips[:48].sum() / strips.sum() == pytest.approx(0.5, abs=0.02)
    core = layer1[:, 5:7, 5:7].sum() / layer1.sum()
    assert 0.8 < core < 0.97  # central 80 x 80 mm in a 35 mm Moliere-radius medium


def test_calochallenge_polar_geometry_with_dead_material():
    sh = simulate_showers(60, energy=65.536, geometry="calochallenge-ds1-photons", seed=1, model=FAST)
    layers = sh.layer_energies().mean(axis=0)
    assert np.argmax(layers) == 2  # the middle layer holds most of the energy
    assert sh.extra["leak_dead"].mean() > 0.01  # showers starting in the dead material in front
    assert sh.deposited_energy().mean() / 65.536 > 0.8


def test_chi_kinematics_opening_angle_and_energy_sharing():
    rng = np.random.default_rng(0)
    mass, energy = 0.5, 50.0
    e1, e2, d1, d2 = chi_decay(20000, mass, energy, rng)
    np.testing.assert_allclose(e1 + e2, energy)
    angle = np.arccos(np.clip(np.einsum("ij,ij->i", d1, d2), -1, 1))
    assert angle.min() >= 2 * mass / energy * 0.999  # minimum opening angle 2/gamma
    assert 1.0 < np.median(angle) / (2 * mass / energy) < 1.3
    # invariant mass of the pair
    p = e1[:, None] * d1 + e2[:, None] * d2
    m2 = energy**2 - (p**2).sum(axis=1)
    np.testing.assert_allclose(np.sqrt(m2), mass, rtol=1e-6)
    # isotropic decay: flat distribution of the energy fraction
    assert np.histogram(e1 / energy, bins=5, range=(0, 1))[0].std() < 0.05 * 4000


def test_chi_showers_separate_with_mass_and_decay_inside_the_calorimeter():
    heavy = simulate_chi(200, mass=5.0, decay_distance=0.33, seed=1, model=FAST)
    x = heavy.extra
    separation = np.hypot(x["photon1_x_mm"] - x["photon2_x_mm"], x["photon1_y_mm"] - x["photon2_y_mm"])
    expected = (FACE_DISTANCE_M - 0.33) * 1000 * x["opening_angle"]
    ok = np.isfinite(separation)  # a photon emitted backwards never reaches the face
    assert ok.mean() > 0.97
    ratio = separation[ok] / expected[ok]
    assert ratio.min() > 0.999  # tan(theta) >= theta
    assert 1.0 < np.median(ratio) < 1.1  # small-angle geometry
    assert np.nanmedian(separation) > 150  # two well separated showers
    np.testing.assert_allclose(x["photon1_energy"] + x["photon2_energy"], 50.0, rtol=1e-5)
    late = simulate_chi(100, mass=0.5, decay_distance=1.44, seed=2, model=FAST)
    assert np.allclose(late.extra["decay_z_mm"], 200.0)
    assert late.layer_energies()[:, 0].max() == 0  # starts behind layer 0 (90 mm)
    assert np.all(late.extra["photon1_z_mm"] == 200.0)


def test_chi_lifetime_gives_exponential_decay_length():
    mass, energy, tau = 5.0, 50.0, 0.1
    sh = simulate_chi(1000, mass=mass, energy=energy, lifetime=tau, seed=3, model=EMShowerModel(spot_scale=0.1))
    mean = np.sqrt(energy**2 - mass**2) / mass * C_MM_PER_NS * tau / 1000
    assert sh.extra["decay_distance_m"].mean() == pytest.approx(mean, rel=0.1)


def test_hadron_like_showers_conserve_energy_and_are_late_and_broad():
    had = simulate_hadron_like(300, energy=50.0, seed=1, model=FAST)
    x = had.extra
    total = x["true_deposit"] + x["leak_back"] + x["leak_side"] + x["invisible_energy"]
    np.testing.assert_allclose(total, 50.0, rtol=1e-5)
    assert np.all(had.deposited_energy() > 0)
    photons = simulate_showers(300, energy=50.0, seed=1, model=FAST)
    assert had.layer_energies()[:, 2].mean() > 20 * photons.layer_energies()[:, 2].mean()
    assert had.deposited_energy().mean() < 0.8 * photons.deposited_energy().mean()


def test_raw_argon_scale_and_invalid_inputs():
    calibrated = simulate_showers(50, energy=30.0, seed=1, model=FAST)
    raw = simulate_showers(50, energy=30.0, seed=1, model=EMShowerModel(spot_scale=0.3, calibrated=False))
    ratio = raw.deposited_energy().sum() / calibrated.deposited_energy().sum()
    assert ratio == pytest.approx(CALOGAN_STACK.sampling_fraction, rel=1e-3)
    with pytest.raises(InputError, match="unknown particle"):
        simulate_showers(5, particle="muon")
    with pytest.raises(InputError, match="positive"):
        simulate_showers(3, energy=[1.0, -2.0, 3.0])
    with pytest.raises(InputError, match="prior"):
        simulate_showers(3, prior="flat")
    with pytest.raises(InputError, match="mass"):
        simulate_chi(3, mass=60.0, decay_distance=0.5)
    with pytest.raises(InputError, match="exactly one"):
        simulate_chi(3, mass=0.5)
