"""calinfer.anomaly with a stand-in surrogate whose density is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from calinfer import metrics
from calinfer.anomaly import (
    AutoencoderScore,
    EnergyScale,
    LikelihoodScore,
    PhysicsScore,
    ProfileScore,
    SupervisedClassifier,
    make_score,
    shower_features,
)
from calinfer.errors import InputError
from calinfer.geometry import get_geometry
from calinfer.showers import Showers

GEO = get_geometry("calogan")
FRACTIONS = np.array([0.15, 0.70, 0.085])  # mean layer response per GeV of incident energy (sums to 0.935)
SIGMAS = np.array([0.30, 0.08, 0.25])  # spread of ln(layer energy)
BLOB_WIDTH = 1.2  # transverse Gaussian width of the toy showers, in cells


def blob(layer_index: int, offset: float = 0.0) -> np.ndarray:
    """Normalized toy deposit pattern of one layer, centred on the middle cells, optionally shifted in x."""
    ny, nx = GEO.layers[layer_index].shape
    y = np.arange(ny) - (ny - 1) / 2
    x = np.arange(nx) - (nx - 1) / 2 - offset
    w = np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2) / BLOB_WIDTH**2).ravel()
    return w / w.sum()


TEMPLATE = np.concatenate([blob(i) for i in range(3)])


def toy_showers(
    n: int, *, seed: int, energy=None, fractions=FRACTIONS, split: float = 0.0, common_noise: bool = False
) -> Showers:
    """Toy showers: ln-normal layer energies around ``fractions * E``; ``split`` cells separate two half-showers."""
    rng = np.random.default_rng(seed)
    e = rng.uniform(5, 95, n) if energy is None else np.broadcast_to(np.asarray(energy, dtype=np.float64), (n,)).copy()
    z = rng.normal(size=(n, 1)) if common_noise else rng.normal(size=(n, 3))
    e_layer = fractions * e[:, None] * np.exp(SIGMAS * z)
    if split:
        shape = np.concatenate([0.5 * (blob(i, split / 2) + blob(i, -split / 2)) for i in range(3)])
    else:
        shape = TEMPLATE
    vox = np.concatenate([e_layer[:, [i]] * shape[None, s] for i, s in enumerate(GEO.layer_slices)], axis=1)
    vox *= rng.uniform(0.97, 1.03, vox.shape)  # cell noise
    return Showers(voxels=vox, geometry=GEO, incident_energy=e, source="toy")


class StandIn:
    """Analytic 'surrogate'.

    layers: independent normals of ln(E_l) with mean ln(f_l E) and width sigma_l, i.e. a density in GeV with the
    Jacobian prod 1/E_l; voxels: a Gaussian of each layer's normalized shape around its TEMPLATE, independent of E
    unless ``tilt`` is set: then the voxel part adds ``-(ln E - ln(E_dep / 0.935) - tilt)^2 / (2 * 0.3^2)``.
    """

    energy_range = (1.0, 100.0)
    geometry = GEO
    tilt_width = 0.3

    def __init__(self, tilt: float | None = None) -> None:
        self.calls: list[tuple] = []
        self.tilt = tilt

    def voxel_energy_term(self, showers: Showers, energies: np.ndarray) -> np.ndarray:
        if self.tilt is None:
            return np.zeros(np.broadcast_shapes((len(showers), 1), energies.shape))
        centre = np.log(showers.deposited_energy() / 0.935) + self.tilt
        return -0.5 * ((np.log(energies) - centre[:, None]) / self.tilt_width) ** 2

    @staticmethod
    def layers(y: np.ndarray, energies: np.ndarray) -> np.ndarray:
        ly = np.log(y)[:, None, :]  # (N, 1, L)
        mu = np.log(FRACTIONS)[None, None, :] + np.log(energies)[..., None]  # (N or 1, G, 1)
        z = (ly - mu) / SIGMAS
        return (-0.5 * z**2 - np.log(SIGMAS * np.sqrt(2 * np.pi)) - ly).sum(axis=-1)

    @staticmethod
    def voxels(showers: Showers) -> np.ndarray:
        e_layer = showers.layer_energies()
        u = showers.voxels / np.concatenate(
            [np.repeat(e_layer[:, [i]], s.stop - s.start, axis=1) for i, s in enumerate(GEO.layer_slices)], axis=1
        )
        return -0.5 * (((u - TEMPLATE) / (0.05 * TEMPLATE + 1e-6)) ** 2).sum(axis=1)

    def log_prob(self, showers, energies, *, part="full", device=None, batch_size=None):
        self.calls.append((part, np.shape(energies)))
        energies = np.asarray(energies, dtype=np.float64)
        flat = energies.ndim == 1
        e2 = energies[:, None] if flat else energies
        out = np.zeros((len(showers), e2.shape[1]))
        if part in ("full", "layers"):
            out = out + self.layers(showers.layer_energies(), e2)
        if part in ("full", "voxels"):
            out = out + self.voxels(showers)[:, None] + self.voxel_energy_term(showers, e2)
        return out[:, 0] if flat else out


def test_energy_scale_recovers_known_response():
    lam, sigma, n = 0.935, 0.05, 20000
    bkg = toy_showers(n, seed=1, common_noise=True, fractions=FRACTIONS)  # E_dep / E = lam * exp(sigma_l z)
    # rebuild with one common log-normal factor so that E_dep/E is exactly lam * exp(sigma z)
    rng = np.random.default_rng(2)
    ratio = lam * np.exp(sigma * rng.normal(size=n))
    vox = bkg.voxels / bkg.voxels.sum(axis=1, keepdims=True) * (ratio * bkg.incident_energy)[:, None]
    bkg = Showers(voxels=vox, geometry=GEO, incident_energy=bkg.incident_energy)
    med = EnergyScale.fit(bkg, method="median", n_bootstrap=30)
    assert med.uncertainty == pytest.approx(1.2533 * sigma * lam / np.sqrt(n), rel=0.35)
    assert abs(med.value - lam) < 4 * med.uncertainty
    mode = EnergyScale.fit(bkg, method="mode", n_bootstrap=5)
    assert mode.value == pytest.approx(lam * np.exp(-(sigma**2)), abs=0.003)  # log-normal mode
    ratio_fit = EnergyScale.fit(bkg, method="ratio", n_bootstrap=5)
    assert ratio_fit.value == pytest.approx(lam * np.exp(sigma**2 / 2), rel=2e-3)  # log-normal mean
    assert med.reconstruct(np.array([lam * 50])) == pytest.approx([50 * lam / med.value])
    with pytest.raises(InputError, match="known incident energies"):
        EnergyScale.fit(Showers(voxels=vox, geometry=GEO))
    with pytest.raises(InputError, match="unknown energy-scale method"):
        EnergyScale.fit(bkg, method="mean")


def test_nll_score_is_the_density_at_reconstructed_energy():
    sur = StandIn()
    showers = toy_showers(50, seed=3)
    score = LikelihoodScore(sur, scale=0.9)
    out = score.evaluate(showers)
    e_rec = showers.deposited_energy() / 0.9
    expected = StandIn.layers(showers.layer_energies(), e_rec[:, None])[:, 0] + StandIn.voxels(showers)
    np.testing.assert_allclose(out["score"], -expected, rtol=1e-12)
    np.testing.assert_allclose(out["e_rec"], e_rec)
    assert sur.calls[-2:] == [("full", (50,)), ("layers", (50,))]
    # per-part scores call the matching flow only and add up to the full score
    layers = make_score("layers", sur, scale=0.9).evaluate(showers)["score"]
    voxels = make_score("voxels", sur, scale=0.9).evaluate(showers)["score"]
    np.testing.assert_allclose(layers + voxels, out["score"], rtol=1e-10)
    np.testing.assert_allclose(voxels, -StandIn.voxels(showers))
    # E_rec beyond the surrogate's range is evaluated at the range edge and reported unclipped
    big = Showers(voxels=showers.voxels[:1] * 10, geometry=GEO)
    res = score.evaluate(big)
    assert res["e_rec"][0] > 100
    np.testing.assert_allclose(
        res["log_prob"], StandIn.layers(big.layer_energies(), np.array([[100.0]]))[:, 0] + StandIn.voxels(big)
    )


def test_nll_score_needs_a_fitted_scale():
    sur = StandIn()
    bkg = toy_showers(500, seed=4)
    with pytest.raises(InputError, match="energy scale"):
        LikelihoodScore(sur).evaluate(bkg)
    score = LikelihoodScore(sur).fit(bkg)
    med = np.median(bkg.deposited_energy() / bkg.incident_energy)
    assert score.scale.value == pytest.approx(med)
    with pytest.raises(InputError, match="unknown anomaly score"):
        make_score("bogus", sur)


def analytic_profile(showers: Showers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The StandIn's (tilt-free) profile in closed form: ``(ln E*, E*`` clipped to the range, ``max_E log p)``."""
    y = showers.layer_energies()
    w = 1 / SIGMAS**2
    log_e_star = ((np.log(y) - np.log(FRACTIONS)) * w).sum(axis=1) / w.sum()
    e_star = np.clip(np.exp(log_e_star), 1, 100)
    return log_e_star, e_star, StandIn.layers(y, e_star[:, None])[:, 0] + StandIn.voxels(showers)


def test_profile_score_reaches_the_analytic_maximum():
    sur = StandIn()
    showers = toy_showers(200, seed=5)
    log_e_star, e_star, expected = analytic_profile(showers)
    inside = (np.exp(log_e_star) > 1.5) & (np.exp(log_e_star) < 95)
    for score in (ProfileScore(sur), ProfileScore(sur, locate="layers")):  # full grid and cheap two-stage
        out = score.evaluate(showers)
        assert np.all(out["log_prob"] <= expected + 1e-9)  # nobody beats the true maximum
        np.testing.assert_allclose(out["log_prob"], expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["e_hat"][inside], e_star[inside], rtol=1e-3)
        assert not out["at_edge"][inside].any()
    # last zoom round on flow I, restart on the full density, two parabolic steps
    assert sur.calls[-4:] == [("layers", (200, 5)), ("full", (200, 3)), ("full", (200,)), ("full", (200,))]
    # the coarse grid alone is measurably worse: refinement matters
    coarse = ProfileScore(sur, n_refine=0, n_polish=0).evaluate(showers)
    assert np.max(expected - coarse["log_prob"]) > 1e-3


def test_profile_of_an_energy_independent_voxel_density_profiles_flow_one_and_adds_flow_two_once():
    sur = StandIn()
    sur.voxel_density_depends_on_energy = False  # the truth for tilt=None: the voxel part is constant in E
    showers = toy_showers(200, seed=6)
    expected = analytic_profile(showers)[2]
    out = ProfileScore(sur).evaluate(showers)
    np.testing.assert_allclose(out["log_prob"], expected, atol=1e-4, rtol=0)
    assert np.all(out["log_prob"] <= expected + 1e-9)
    assert [part for part, _ in sur.calls].count("full") == 0 and sur.calls[-1] == ("voxels", (200,))


def test_profile_polish_follows_energy_dependence_of_the_voxel_part():
    sur = StandIn(tilt=0.15)  # the voxel part pulls E away from the layer-only maximum
    showers = toy_showers(200, seed=25)
    y = showers.layer_energies()
    w, w_v = 1 / SIGMAS**2, 1 / StandIn.tilt_width**2
    centre = np.log(showers.deposited_energy() / 0.935) + 0.15
    log_e_star = (((np.log(y) - np.log(FRACTIONS)) * w).sum(axis=1) + w_v * centre) / (w.sum() + w_v)
    inside = (np.exp(log_e_star) > 1.5) & (np.exp(log_e_star) < 95)
    e_star = np.exp(log_e_star)[inside]
    shw = showers[np.flatnonzero(inside)]
    expected = sur.log_prob(shw, e_star)
    for score in (ProfileScore(sur), ProfileScore(sur, locate="layers")):
        out = score.evaluate(shw)
        np.testing.assert_allclose(out["e_hat"], e_star, rtol=1e-6)  # quadratic in ln E: parabolic steps are exact
        np.testing.assert_allclose(out["log_prob"], expected, atol=1e-8, rtol=0)
    located_only = ProfileScore(sur, locate="layers", n_polish=0).evaluate(shw)  # 3 points around the layer max
    assert np.max(expected - located_only["log_prob"]) > 1e-3
    # the LikelihoodScore reports both parts, and they add up
    res = LikelihoodScore(sur, scale=0.935).evaluate(shw)
    np.testing.assert_allclose(res["log_prob_layers"] + res["log_prob_voxels"], res["log_prob"], rtol=1e-12)
    np.testing.assert_allclose(res["log_prob_layers"], sur.log_prob(shw, res["e_rec"], part="layers"), rtol=1e-12)


def test_profile_at_range_edge():
    sur = StandIn()
    showers = toy_showers(5, seed=6, energy=400.0)  # far above the range: the maximum sits on its edge
    out = ProfileScore(sur, part="layers").evaluate(showers)
    np.testing.assert_allclose(out["e_hat"], 100.0, rtol=1e-9)
    assert out["at_edge"].all()
    np.testing.assert_allclose(out["log_prob"], StandIn.layers(showers.layer_energies(), np.full((5, 1), 100.0))[:, 0])


def test_likelihood_scores_separate_late_showers():
    sur = StandIn()
    bkg_cal, bkg = toy_showers(1000, seed=7), toy_showers(2000, seed=8)
    late = toy_showers(500, seed=9, energy=50, fractions=np.array([0.02, 0.55, 0.36]))
    for name in ("nll", "profile", "layers"):
        score = make_score(name, sur).fit(bkg_cal)
        a = metrics.auc(score.evaluate(late)["score"], score.evaluate(bkg)["score"])
        assert a > 0.95, name
    # identical shapes: the voxel-only score cannot tell (AUC near 1/2)
    vox = make_score("voxels", sur).fit(bkg_cal)
    assert abs(metrics.auc(vox.evaluate(late)["score"], vox.evaluate(bkg)["score"]) - 0.5) < 0.05


def test_shower_features_hand_computed():
    v = np.zeros((2, GEO.n_voxels))
    s1 = GEO.layer_slices[1]
    x, y = GEO.layers[1].cell_centers_mm()
    v[0, s1.start + 5 * 12 + 7] = 10.0  # one cell of layer 1
    i, j = s1.start + 6 * 12 + 2, s1.start + 6 * 12 + 9  # two equal cells in the same row of layer 1
    v[1, [i, j]] = 4.0
    v[1, GEO.layer_slices[2].start] = 2.0  # and some energy in layer 2
    feats, names = shower_features(Showers(voxels=v, geometry=GEO))
    f = {n: feats[:, k] for k, n in enumerate(names)}
    assert f["x_layer1"][0] == pytest.approx(x[5 * 12 + 7]) and f["y_layer1"][0] == pytest.approx(y[5 * 12 + 7])
    assert f["width_layer1"][0] == pytest.approx(0.0, abs=1e-6)
    assert f["depth"][0] == pytest.approx((90 + 437) / 2)
    assert f["width_layer1"][1] == pytest.approx(abs(x[i - s1.start] - x[j - s1.start]) / 2)
    assert f["frac_layer2"][1] == pytest.approx(0.2)
    assert f["depth"][1] == pytest.approx(0.8 * 263.5 + 0.2 * 458.5)
    assert f["log_edep"][1] == pytest.approx(np.log(10.0))
    assert f["maxfrac_layer1"][1] == pytest.approx(0.5) and f["frac_layer0"][1] == 0


def test_physics_scores():
    bkg = toy_showers(800, seed=10)
    late = toy_showers(300, seed=11, fractions=np.array([0.02, 0.55, 0.36]))
    split = toy_showers(300, seed=12, split=4.0)
    depth, width = PhysicsScore("depth"), PhysicsScore("width")
    assert metrics.auc(depth.evaluate(late)["score"], depth.evaluate(bkg)["score"]) > 0.95
    assert metrics.auc(width.evaluate(split)["score"], width.evaluate(bkg)["score"]) > 0.95
    resp = PhysicsScore("response").fit(bkg)
    low = toy_showers(300, seed=13, fractions=FRACTIONS * 0.6)  # showers losing 40% of their energy
    assert metrics.auc(resp.evaluate(low)["score"], resp.evaluate(bkg)["score"]) > 0.9
    with pytest.raises(InputError, match="unknown physics variable"):
        PhysicsScore("mass")


def test_autoencoder_flags_split_showers():
    bkg_train, bkg = toy_showers(800, seed=14), toy_showers(400, seed=15)
    split = toy_showers(200, seed=16, split=4.0)
    ae = AutoencoderScore(hidden=(64, 16), epochs=6, seed=0).fit(bkg_train)
    assert len(ae.history) == 6 and ae.history[-1][1] < ae.history[0][1]  # it learned something
    assert metrics.auc(ae.evaluate(split)["score"], ae.evaluate(bkg)["score"]) > 0.9
    one, two = (AutoencoderScore(hidden=(64, 16), epochs=1, seed=3).fit(bkg_train[:200]) for _ in range(2))
    np.testing.assert_allclose(one.evaluate(bkg[:20])["score"], two.evaluate(bkg[:20])["score"], rtol=1e-5)
    with pytest.raises(InputError, match="not trained"):
        AutoencoderScore().evaluate(bkg)


def test_supervised_classifier():
    bkg_train, bkg = toy_showers(1000, seed=17), toy_showers(1000, seed=18)
    sig_train, sig = (toy_showers(300, seed=s, split=2.0, energy=50) for s in (19, 20))
    clf = SupervisedClassifier(seed=0).fit(sig_train, bkg_train)
    out = clf.evaluate(sig)
    assert metrics.auc(out["score"], clf.evaluate(bkg)["score"]) > 0.95
    np.testing.assert_allclose(out["score"], np.log(out["probability"] / (1 - out["probability"])), rtol=1e-6)
    with pytest.raises(InputError, match="not trained"):
        SupervisedClassifier().evaluate(bkg)


def test_cli_anomaly_and_sic(tmp_path, monkeypatch):
    import json

    import uproot
    from click.testing import CliRunner

    from calinfer.cli import anomaly_cmd, main
    from calinfer.io import read_metadata, write_showers

    sur = StandIn()
    monkeypatch.setattr(anomaly_cmd, "load_surrogate", lambda model: sur)
    bkg, sig = toy_showers(230, seed=21), toy_showers(120, seed=22, fractions=np.array([0.02, 0.55, 0.36]))
    calib = toy_showers(400, seed=23)
    for name, showers in (("bkg", bkg), ("sig", sig), ("calib", calib)):
        write_showers(tmp_path / f"{name}.root", showers)
    runner = CliRunner()
    args = ["--step-size", "50", "--no-progress"]
    res = runner.invoke(
        main, ["anomaly", str(tmp_path / "bkg.root"), "-o", str(tmp_path / "b.root"), "--scale", "0.9", *args]
    )
    assert res.exit_code == 0, res.output
    with uproot.open(tmp_path / "b.root") as f:
        tree = f["anomaly"]
        assert tree.num_entries == 230
        out = tree.arrays(["score", "entry", "e_rec"], library="np")
    np.testing.assert_array_equal(out["entry"], np.arange(230))  # one entry per shower, in order, over 5 chunks
    expected = LikelihoodScore(sur, scale=0.9).evaluate(bkg)["score"]
    np.testing.assert_allclose(out["score"], expected, rtol=1e-5)
    # lambda fitted on a calibration file is recorded with the result
    for name in ("bkg", "sig"):
        res = runner.invoke(
            main,
            [
                "anomaly",
                str(tmp_path / f"{name}.root"),
                "-o",
                str(tmp_path / f"{name}_s.root"),
                "--calibration",
                str(tmp_path / "calib.root"),
                *args,
            ],
        )
        assert res.exit_code == 0, res.output
    meta = read_metadata(tmp_path / "bkg_s.root")
    assert meta["energy_scale"]["value"] == pytest.approx(EnergyScale.fit(calib).value, rel=1e-6)
    assert meta["score"] == "nll" and meta["input"].endswith("bkg.root")
    # profile: no lambda needed
    res = runner.invoke(
        main, ["anomaly", str(tmp_path / "sig.root"), "-o", str(tmp_path / "p.root"), "--score", "profile", *args]
    )
    assert res.exit_code == 0, res.output
    with uproot.open(tmp_path / "p.root") as f:
        assert set(f["anomaly"].keys()) >= {"score", "e_hat", "at_edge", "entry"}
    # refusing to overwrite the input
    res = runner.invoke(main, ["anomaly", str(tmp_path / "sig.root"), "-o", str(tmp_path / "sig.root"), "--scale", "1"])
    assert res.exit_code != 0 and res.output.startswith("Error: refusing")
    res = runner.invoke(
        main,
        [
            "sic",
            "--signal",
            str(tmp_path / "sig_s.root"),
            "--background",
            str(tmp_path / "bkg_s.root"),
            "-o",
            str(tmp_path / "sic"),
            "--bootstrap",
            "10",
            "--min-background",
            "20",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "sic" / "metrics.json").read_text())
    with uproot.open(tmp_path / "sig_s.root") as fs, uproot.open(tmp_path / "bkg_s.root") as fb:
        s, b = fs["anomaly"]["score"].array(library="np"), fb["anomaly"]["score"].array(library="np")
    assert report["metrics"]["score"]["auc"] == pytest.approx(metrics.auc(s, b))
    assert report["metrics"]["score"]["max_sic"] == pytest.approx(metrics.max_sic(s, b, min_background=20))
    assert all((tmp_path / "sic" / f).stat().st_size > 0 for f in ("roc.pdf", "sic.pdf", "scores.pdf"))


def test_integration_with_a_real_surrogate(tmp_path):
    """The scores and the CLI on a small untrained ShowerSurrogate: E_rec and the layer sums computed here by hand,
    the flow-II part from its own surrogate call, the profile against a grid scan."""
    from click.testing import CliRunner

    from calinfer import datasets
    from calinfer.cli import main
    from calinfer.io import write_showers
    from calinfer.surrogate import ShowerSurrogate

    photons = datasets.load("photons-val")
    train, showers = photons[:300], photons[300:312]
    small = {"n_blocks": 1, "hidden": 8}
    sur = ShowerSurrogate.create(GEO, train.voxels, train.incident_energy, layer_flow=small, voxel_flow=small, seed=0)
    nll = LikelihoodScore(sur, device="cpu").fit(train).evaluate(showers)
    assert np.all(np.isfinite(nll["log_prob"]))
    vox = showers.voxels.astype(np.float64)
    lam = np.median(train.voxels.astype(np.float64).sum(axis=1) / train.incident_energy)
    e_rec = vox.sum(axis=1) / lam  # by hand: E_dep / median(E_dep / E_inc)
    np.testing.assert_allclose(nll["e_rec"], e_rec, rtol=1e-6)
    e_eval = np.clip(e_rec, *sur.energy_range)
    layer_sums = np.stack([vox[:, s].sum(axis=1) for s in GEO.layer_slices], axis=1)
    np.testing.assert_allclose(nll["log_prob_layers"], sur.log_prob_layers(layer_sums, e_eval), rtol=1e-5, atol=1e-4)
    voxels_only = make_score("voxels", sur, scale=lam, device="cpu").evaluate(showers)  # flow II alone
    np.testing.assert_allclose(nll["log_prob_voxels"], voxels_only["log_prob"], rtol=1e-5, atol=1e-2)
    prof = ProfileScore(sur, n_grid=8, device="cpu").evaluate(showers)
    grid = sur.log_prob(showers, np.geomspace(1, 100, 8)[None, :])
    # never below the coarse grid (up to float32 rounding of values ~3000, which depends on the batch layout)
    assert np.all(prof["log_prob"] >= grid.max(axis=1) - 1e-2)
    np.testing.assert_allclose(sur.log_prob(showers, prof["e_hat"]), prof["log_prob"], rtol=1e-6, atol=1e-2)
    model_dir = sur.save(tmp_path / "model")
    write_showers(tmp_path / "x.root", showers)
    res = CliRunner().invoke(
        main,
        [
            "anomaly",
            str(tmp_path / "x.root"),
            "-o",
            str(tmp_path / "s.root"),
            "--model",
            str(model_dir),
            "--score",
            "profile",
            "--n-grid",
            "8",
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    import uproot

    with uproot.open(tmp_path / "s.root") as f:
        np.testing.assert_allclose(f["anomaly"]["score"].array(library="np"), prof["score"], rtol=1e-6, atol=1e-2)


def test_mixed_likelihood_counts_empty_voxels():
    from types import SimpleNamespace

    from calinfer.anomaly import dequantization_width_of

    sur = StandIn()
    sur.dequantization_width = 1e-5
    showers = toy_showers(40, seed=40)
    showers.voxels[:20, :60] = 0.0  # half of them with many empty cells
    showers.voxels[:, :5] = 0.0
    n_empty = (showers.voxels == 0).sum(axis=1)
    plain = make_score("nll", sur, scale=0.9).evaluate(showers)
    mixed = make_score("nll-mixed", sur, scale=0.9).evaluate(showers)
    assert np.all(np.isfinite(mixed["score"]))
    np.testing.assert_array_equal(mixed["n_empty"], n_empty)
    np.testing.assert_allclose(mixed["score"], plain["score"] - n_empty * np.log(1e-5), rtol=1e-12)
    np.testing.assert_allclose(mixed["log_prob"], plain["log_prob"])  # the raw density is still reported
    prof, prof_mixed = make_score("profile", sur).evaluate(showers), make_score("profile-mixed", sur).evaluate(showers)
    np.testing.assert_allclose(prof_mixed["e_hat"], prof["e_hat"])
    np.testing.assert_allclose(prof_mixed["score"], prof["score"] - n_empty * np.log(1e-5), rtol=1e-12)
    assert make_score("nll-mixed", sur, scale=0.9).name == "nll-mixed"
    with pytest.raises(InputError, match="part='full' only"):
        LikelihoodScore(sur, part="layers", mixed=True)
    # where the width is found: the object, its preprocessing, the first ensemble member
    inner = SimpleNamespace(preprocessing=SimpleNamespace(dequantization_width=2e-5))
    assert dequantization_width_of(inner) == 2e-5
    assert dequantization_width_of(SimpleNamespace(members=[inner])) == 2e-5
    with pytest.raises(InputError, match="dequantization width"):
        LikelihoodScore(StandIn(), mixed=True)
    assert LikelihoodScore(StandIn(), mixed=True, dequantization_width=1e-4).width == 1e-4


def test_tail_table_follows_a_shifting_exponential():
    """Scores ``3 ln E + beta(E) * Exp(1)``: the survival is exp(-(s - 3 ln E) / beta(E)) in closed form."""
    from calinfer.anomaly import TailTable

    rng = np.random.default_rng(50)
    log_e = np.linspace(0.0, np.log(100.0), 6)  # neighbours 2.8 apart in 3 ln E: far more than the width
    beta = 1.0 + 0.1 * log_e
    scores = 3 * log_e[:, None] + beta[:, None] * rng.exponential(size=(6, 20000))
    table = TailTable.from_samples(log_e, scores, tail_fraction=0.05)
    e = np.array([1.0, 3.7, 20.0, 64.0, 100.0, 3.7, 20.0, 64.0])
    excess = np.array([0.2, 0.7, 1.5, 2.5, 2.0, 8.0, 15.0, 25.0])  # inside the knots, then deep in the tail
    beta_e = 1.0 + 0.1 * np.log(e)
    s = 3 * np.log(e) + excess * beta_e
    np.testing.assert_allclose(table.log_survival(s, e), -excess, rtol=0.05, atol=0.03)
    # interpolating the CDF at fixed score instead of the quantiles would give ~ -2.8 at the midpoint 3.7 GeV
    assert table.log_survival(np.array([3 * np.log(3.7)]), np.array([3.7]))[0] > -0.05


def test_tail_score_is_flat_on_a_toy_that_the_surrogate_describes():
    """Background drawn from the toy surrogate itself: tail ~ U(0, 1) at every energy, halves AUC 0.5."""
    from scipy.stats import kstest

    class SamplingStandIn(StandIn):
        def sample(self, energies, seed=0):
            return toy_showers(len(energies), seed=seed + 100, energy=energies)

    sur = SamplingStandIn()
    bkg = toy_showers(4000, seed=51)  # 5-95 GeV uniform
    plain = make_score("nll", sur).fit(bkg[:1000])
    tail = make_score("nll-tail", sur, n_energies=12, n_per_energy=1500, threshold=None).fit(bkg[:1000])
    test = bkg[1000:]
    e = test.incident_energy
    high = e > np.median(e)
    n1, n2 = high.sum(), (~high).sum()
    se = np.sqrt((n1 + n2 + 1) / (12 * n1 * n2))  # Mann-Whitney null standard error, 0.0105 here
    out = tail.evaluate(test)
    assert metrics.auc(plain.evaluate(test)["score"][high], plain.evaluate(test)["score"][~high]) > 0.9  # energy
    assert abs(metrics.auc(out["score"][high], out["score"][~high]) - 0.5) < 4 * se
    for lo_e, hi_e in ((5, 35), (35, 65), (65, 95)):
        sel = (e >= lo_e) & (e < hi_e)
        assert kstest(np.exp(out["log_tail"][sel]), "uniform").pvalue > 1e-3, (lo_e, hi_e)
    np.testing.assert_allclose(out["base_score"], plain.evaluate(test)["score"])
    assert tail.name == "nll-tail" and tail.table.quantiles.shape[0] == 12
    with pytest.raises(InputError, match="sample"):
        make_score("nll-tail", StandIn())


def test_tail_score_is_flat_on_real_photons():
    """The shipped surrogate, 2000 simulated photons 1-100 GeV: AUC(high vs low energy half) within 0.05 of 1/2
    (4 null standard errors, 0.0129 each) for the tail score, against 0.90 for the plain mixed score."""
    from calinfer import datasets
    from calinfer.simulation import simulate_showers
    from calinfer.surrogate import load_default

    sur = load_default()
    raw = simulate_showers(2000, energy_range=(1.0, 100.0), seed=4003)
    bkg = Showers(voxels=datasets.round_mantissa(raw.voxels), geometry=GEO, incident_energy=raw.incident_energy)
    train = datasets.load("photons-train")[:3000]
    e = bkg.incident_energy
    high = e > np.median(e)
    tail = make_score("nll-mixed-tail", sur, device="cpu", n_energies=8, n_per_energy=300)
    out = tail.fit(train).evaluate(bkg)
    assert tail.threshold_used == pytest.approx(1e-4, rel=0.01)  # the simulation's read-out threshold
    assert metrics.auc(out["base_score"][high], out["base_score"][~high]) < 0.2  # the plain nll-mixed score
    assert abs(metrics.auc(out["score"][high], out["score"][~high]) - 0.5) < 0.05
    surv = np.exp(out["log_tail"])
    assert 0.05 < np.mean(surv < 0.1) < 0.2  # about as many photons in the surrogate's 10% tail as there should be


class ProductDensity:
    """Independent voxels with a closed-form density of the dequantized energy u (GeV): exponential with rate
    ``rate`` or log-normal around ``median`` with width ``sigma`` in ln u (what a flow in ln x~ looks like)."""

    energy_range = (1.0, 100.0)
    dequantization_width = 1e-5

    def __init__(self, kind: str, rate: float = 0.0, median: float = 0.0, sigma: float = 1.0) -> None:
        self.kind, self.rate, self.median, self.sigma = kind, rate, median, sigma

    def log_density(self, u: np.ndarray) -> np.ndarray:
        from scipy.stats import expon, lognorm

        if self.kind == "exponential":
            return expon.logpdf(u, scale=1 / self.rate)
        return lognorm.logpdf(u, self.sigma, scale=self.median)

    def log_prob(self, showers, energies, *, part="full", device=None, batch_size=None):
        return self.log_density(showers.voxels + self.dequantization_width / 2).sum(axis=1)


@pytest.mark.parametrize(
    ("kind", "options", "per_voxel"),
    [("exponential", {"rate": 2e4}, (0.0, 0.002)), ("lognormal", {"median": 5e-6, "sigma": 1.5}, (0.1, 0.5))],
)
def test_mixed_likelihood_is_the_midpoint_rule_of_the_empty_cells(kind, options, per_voxel):
    """nll-mixed = ln[delta^k p(x~ at the cell midpoints)], the midpoint rule for P(empty cells) = the integral of the
    density over [0, delta)^k; against the integral done numerically (quad) per voxel of a product density."""
    from scipy.integrate import quad

    sur = ProductDensity(kind, **options)
    delta = sur.dequantization_width
    showers = toy_showers(6, seed=52)
    showers.voxels[:, ::3] = 0.0
    mixed = make_score("nll-mixed", sur, scale=1.0).evaluate(showers)
    cell, _ = quad(lambda u: np.exp(sur.log_density(np.array([u])))[0], 0.0, delta, epsabs=0, epsrel=1e-10)
    filled = np.where(showers.voxels > 0, sur.log_density(showers.voxels + delta / 2), 0.0).sum(axis=1)
    exact = filled + mixed["n_empty"] * np.log(cell)
    midpoint = np.log(delta) + sur.log_density(np.array([delta / 2]))[0]
    np.testing.assert_allclose(mixed["log_prob_mixed"], filled + mixed["n_empty"] * midpoint, rtol=1e-12)
    error = (exact - mixed["log_prob_mixed"]) / mixed["n_empty"]  # nats per empty voxel the midpoint rule misses
    np.testing.assert_allclose(error, np.log(cell) - midpoint, rtol=1e-9)
    assert per_voxel[0] <= error.min() and error.max() <= per_voxel[1]
    if kind == "exponential":  # smooth on the cell scale: the second-order midpoint error (r delta)^2 / 24
        np.testing.assert_allclose(error, (options["rate"] * delta) ** 2 / 24, rtol=0.02)


def test_profile_located_by_the_calibration_matches_a_dense_scan(small_calogan_surrogate):
    """locate='calibration' (the calibration's full-likelihood minimum, guarded by the flow-I maximum) against a
    dense 40-point scan with three zoom rounds on the full density, 24 photons, for a surrogate whose voxel density
    depends on E (CaloFlow's context; the shipped default's does not): preprocessing fitted on 3000 photons, flows
    at their initialisation with flow II's weights perturbed (a smooth, non-trivial dependence on E)."""
    from calinfer import datasets

    sur = small_calogan_surrogate(datasets.load("photons-train")[:3000], "incident", voxel_noise=0.05)
    assert sur.voxel_density_depends_on_energy
    photons = datasets.load("photons-val")[:24]
    dense = ProfileScore(sur, n_grid=40, n_refine=3, device="cpu").evaluate(photons)
    fast = ProfileScore(sur, locate="calibration", device="cpu").evaluate(photons)
    gap = fast["log_prob"] - dense["log_prob"]
    assert np.mean(gap > -0.05) >= 0.95 and gap.min() > -2.0
    np.testing.assert_allclose(sur.log_prob(photons, fast["e_hat"]), fast["log_prob"], atol=1e-3)  # exact values
    mixed = ProfileScore(sur, locate="calibration", mixed=True, device="cpu").evaluate(photons)
    np.testing.assert_allclose(mixed["log_prob"], fast["log_prob"])
    with pytest.raises(InputError, match="part='full'"):
        ProfileScore(sur, part="layers", locate="calibration")
