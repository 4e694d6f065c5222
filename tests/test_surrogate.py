"""ShowerSurrogate: the exact density in GeV, its normalization, batching, sampling, checkpoints and ensembles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import special

import calinfer
from calinfer import preprocessing
from calinfer.errors import GeometryMismatchError, InputError, ModelError
from calinfer.geometry import Geometry, Layer, get_geometry
from calinfer.showers import Showers
from calinfer.surrogate import ShowerSurrogate, SurrogateEnsemble, load_model

TINY = Geometry(name="tiny", layers=(Layer("a", (1, 3), cell_size_mm=(1.0, 1.0)),
                                     Layer("b", (2, 2), cell_size_mm=(1.0, 1.0))))
SMALL_FLOWS = {"layer_flow": {"n_blocks": 2, "hidden": 8}, "voxel_flow": {"n_blocks": 2, "hidden": 8}}


def tiny_data(n: int = 400, seed: int = 0, zeros: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    energies = rng.uniform(1, 100, n)
    vox = rng.lognormal(0.0, 0.7, (n, TINY.n_voxels)) * energies[:, None] / 7
    if zeros:
        vox[rng.random(vox.shape) < 0.2] = 0.0
        vox[:10, 3:] = 0.0  # a few empty layers
    return vox, energies


def perturb(model: ShowerSurrogate, scale: float, seed: int = 0) -> ShowerSurrogate:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for flow, s in ((model.layer_flow, scale), (model.voxel_flow, scale)):
            for p in flow.parameters():
                p.add_(s * torch.randn(p.shape, generator=gen))
    return model


def tiny_surrogate(scale: float = 0.1, width: float | None = None, zeros: bool = True, seed: int = 0,
                   gaussianize: bool = True):
    vox, energies = tiny_data(seed=seed, zeros=zeros)
    model = ShowerSurrogate.create(TINY, vox, energies, dequantization_width=width, gaussianize=gaussianize, seed=seed,
                                   **SMALL_FLOWS)
    return perturb(model, scale, seed), vox, energies


def independent_log_prob(model: ShowerSurrogate, vox: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """log p(x~ | E) written out from the definitions, with numpy for every transform."""
    pre = model.preprocessing
    xt = vox + pre.dequantization_width / 2
    layers = np.stack([xt[:, a:b].sum(axis=1) for a, b in pre.layer_slices], axis=1)
    y1 = (np.log(layers / energies[:, None]) - pre.layer_mean) / pre.layer_scale
    keep = [i for i in range(TINY.n_voxels) if i not in pre.reference]
    ref = [pre.reference[0] if i < 3 else pre.reference[1] for i in keep]
    u = (np.log(xt[:, keep]) - np.log(xt[:, ref]) - pre.ratio_mean) / pre.ratio_scale
    log_gauss = np.zeros(len(vox))
    if pre.gaussianize is not None:  # piecewise-linear quantile map, its log-derivative by finite differences
        g = pre.gaussianize

        def gauss_map(v: np.ndarray) -> np.ndarray:
            out = np.empty_like(v)
            for d in range(v.shape[1]):
                k, lv = g.knots[d], g.levels
                lo, hi = (lv[4] - lv[0]) / (k[4] - k[0]), (lv[-1] - lv[-5]) / (k[-1] - k[-5])
                out[:, d] = np.where(v[:, d] < k[0], lv[0] + lo * (v[:, d] - k[0]),
                                     np.where(v[:, d] > k[-1], lv[-1] + hi * (v[:, d] - k[-1]),
                                              np.interp(v[:, d], k, lv)))
            return out

        h = 1e-7
        for d in range(u.shape[1]):
            step = np.zeros_like(u)
            step[:, d] = h
            log_gauss += np.log((gauss_map(u + step)[:, d] - gauss_map(u - step)[:, d]) / (2 * h))
        u = gauss_map(u)
    ctx = ((np.log(energies) - pre.log_energy_mean) / pre.log_energy_scale)[:, None]
    with torch.no_grad():
        flow1 = model.layer_flow.double()
        flow2 = model.voxel_flow.double()
        lp1 = flow1.log_prob(torch.as_tensor(y1), torch.as_tensor(ctx)).numpy()
        lp2 = flow2.log_prob(torch.as_tensor(u), torch.as_tensor(np.concatenate([ctx, y1], axis=1))).numpy()
        flow1.float()
        flow2.float()
    # |d(y1, u)/dx~| = prod 1/(sigma_l E~_l) * prod 1/s_j * prod_l E~_l / prod_i x~_i  (the E~_l cancel)
    jac = -np.log(pre.layer_scale).sum() - np.log(pre.ratio_scale).sum() - np.log(xt).sum(axis=1) + log_gauss
    return lp1 + lp2 + jac


@pytest.mark.parametrize("gaussianize", [True, False])
def test_log_prob_matches_independent_computation(gaussianize: bool) -> None:
    fresh, vox, energies = tiny_surrogate(scale=0.0, gaussianize=gaussianize)
    # untouched flows are permutations: the density is a standard normal in the flow variables
    lp = fresh.log_prob(vox, energies, dtype=torch.float64, device="cpu")
    assert np.allclose(lp, independent_log_prob(fresh, vox, energies), atol=1e-6)
    model, _, _ = tiny_surrogate(scale=0.2, gaussianize=gaussianize)
    lp = model.log_prob(vox, energies, dtype=torch.float64, device="cpu")
    assert np.all(np.isfinite(lp))
    assert np.allclose(lp, independent_log_prob(model, vox, energies), atol=1e-8)
    # float32 agrees with float64, and the parts add up to the full density
    assert np.allclose(model.log_prob(vox, energies, device="cpu"), lp, atol=2e-3 * np.abs(lp).max())
    layers = model.log_prob(vox, energies, part="layers", dtype=torch.float64, device="cpu")
    voxels = model.log_prob(vox, energies, part="voxels", dtype=torch.float64, device="cpu")
    assert np.allclose(layers + voxels, lp, atol=1e-8)
    assert np.allclose(layers, model.log_prob_layers(TINY.layer_energies(vox), energies, dtype=torch.float64,
                                                     device="cpu"), atol=1e-12)


def integrate_layer_density(model: ShowerSurrogate, energy: float, n: int = 301) -> float:
    """Integral of p(E~_1, E~_2 | E) over the layer energies in GeV, on a grid in log E~ (n x n points)."""
    pre = model.preprocessing
    centre = np.log(energy) + pre.layer_mean
    t = [np.linspace(c - 9 * s, c + 9 * s, n) for c, s in zip(centre, pre.layer_scale, strict=True)]
    t1, t2 = np.meshgrid(*t, indexing="ij")
    layer_t = np.stack([np.exp(t1.ravel()), np.exp(t2.ravel())], axis=1)
    recorded = layer_t - 0.5 * pre.dequantization_width * pre.layer_sizes
    lp = model.log_prob_layers(recorded, np.full(len(recorded), energy), dtype=torch.float64, device="cpu")
    # dE~ = E~ dt in each dimension
    integrand = np.exp(lp + t1.ravel() + t2.ravel())
    return float(integrand.sum() * (t[0][1] - t[0][0]) * (t[1][1] - t[1][0]))


def test_layer_density_is_normalized_in_gev_at_every_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, _ = tiny_surrogate(scale=0.1, width=1e-9, zeros=False)
    for energy in (2.0, 20.0, 90.0):
        assert integrate_layer_density(model, energy) == pytest.approx(1.0, abs=5e-3)
    # the check has teeth: without the E-dependent Jacobian of the normalization by E the integral is E^L
    monkeypatch.setattr(preprocessing.ScaleByIncident, "forward",
                        staticmethod(lambda v, e: (v / e[:, None], torch.zeros(len(v), dtype=v.dtype))))
    assert integrate_layer_density(model, 20.0, n=101) == pytest.approx(400.0, rel=0.02)


def importance_normalization(model: ShowerSurrogate, energy: float, n: int, seed: int) -> tuple[float, float]:
    """E_q[p/q] with q an independent log-normal proposal in the 7 voxel energies (GeV); must be 1."""
    rng = np.random.default_rng(seed)
    threshold, model.preprocessing.readout_threshold = model.preprocessing.readout_threshold, 0.0
    ref = model.sample(np.full(4000, energy), seed=seed).voxels.astype(np.float64)  # proposal near x~, not the
    model.preprocessing.readout_threshold = threshold  # read-out's zeros (the density ignores the threshold)
    logs = np.log(ref + model.preprocessing.dequantization_width / 2)
    mean, cov = logs.mean(axis=0), 2.0 * np.cov(logs, rowvar=False)
    z = rng.multivariate_normal(mean, cov, size=n)
    xt = np.exp(z)
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, (z - mean).T).T
    log_q = (-0.5 * (sol**2).sum(axis=1) - np.log(np.diag(chol)).sum() - 0.5 * len(mean) * np.log(2 * np.pi)
             - z.sum(axis=1))
    vox = np.clip(xt - model.preprocessing.dequantization_width / 2, 0.0, None)
    log_p = model.log_prob(vox, np.full(n, energy), dtype=torch.float64, device="cpu")
    w = np.exp(log_p - log_q)
    return float(w.mean()), float(w.std() / np.sqrt(n))


@pytest.mark.parametrize("gaussianize", [True, False])
def test_full_density_is_normalized_in_gev(monkeypatch: pytest.MonkeyPatch, gaussianize: bool) -> None:
    model, _, _ = tiny_surrogate(scale=0.05, width=1e-9, zeros=False, gaussianize=gaussianize)
    for k, energy in enumerate((3.0, 40.0)):
        mean, err = importance_normalization(model, energy, 40_000, seed=k)
        assert err < 0.05
        assert abs(mean - 1.0) < 4 * err + 0.01
    monkeypatch.setattr(preprocessing.ScaleByIncident, "forward",
                        staticmethod(lambda v, e: (v / e[:, None], torch.zeros(len(v), dtype=v.dtype))))
    mean, err = importance_normalization(model, 40.0, 20_000, seed=5)
    assert mean == pytest.approx(1600.0, rel=0.2)


def test_energy_grids_and_batches() -> None:
    model, vox, energies = tiny_surrogate(scale=0.1)
    vox = vox[:7]
    grid = np.array([[2.0, 10.0, 55.0]])
    full = model.log_prob(vox, grid, device="cpu", batch_size=4)
    assert full.shape == (7, 3)
    for g in range(3):
        assert np.allclose(full[:, g], model.log_prob(vox, np.full(7, grid[0, g]), device="cpu"), atol=1e-4)
    per_row = np.outer(np.linspace(1, 2, 7), grid[0])
    assert np.allclose(model.log_prob(vox, per_row, device="cpu", batch_size=5),
                       model.log_prob(vox, per_row, device="cpu", batch_size=1000), atol=1e-4)
    layers = TINY.layer_energies(vox)
    assert np.allclose(model.log_prob_layers(layers, grid, device="cpu", batch_size=2),
                       model.log_prob(vox, grid, part="layers", device="cpu"), atol=1e-5)
    assert model.log_prob(vox, 30.0, device="cpu").shape == (7,)
    with pytest.raises(InputError):
        model.log_prob(vox, np.ones((2, 3)))
    with pytest.raises(InputError):
        model.log_prob(vox, -np.ones(7))
    bad = vox.copy()
    bad[2, 1] = -0.1
    with pytest.raises(InputError, match="entries 2"):
        model.log_prob(bad, energies[:7])
    with pytest.raises(GeometryMismatchError):
        model.log_prob(Showers(np.zeros((2, 504)), get_geometry("calogan")), np.ones(2))


def test_save_load_round_trip_and_refusals(tmp_path) -> None:
    model, vox, energies = tiny_surrogate(scale=0.1)
    model.provenance = {"dataset": "tiny", "seed": 0}
    path = model.save(tmp_path / "m")
    again = ShowerSurrogate.load(path, geometry=TINY)
    assert np.array_equal(again.log_prob(vox, energies, device="cpu"), model.log_prob(vox, energies, device="cpu"))
    assert again.provenance["dataset"] == "tiny" and again.energy_range == model.energy_range
    record = json.loads((path / "surrogate.json").read_text())
    assert record["geometry"]["id"] == TINY.id and "torch" in record["versions"]
    assert record["preprocessing"]["dequantization_width"] == model.preprocessing.dequantization_width
    with pytest.raises(GeometryMismatchError):
        ShowerSurrogate.load(path, geometry="calogan")
    with pytest.raises(ModelError):
        ShowerSurrogate.load(tmp_path / "missing")
    weights = path / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelError, match="corrupt"):
        ShowerSurrogate.load(path)
    (path / "surrogate.json").write_text("{not json")
    with pytest.raises(ModelError):
        ShowerSurrogate.load(path)


def test_sampling_calogan_geometry() -> None:
    from calinfer.simulation import simulate_showers

    train = simulate_showers(300, energy_range=(5, 50), seed=3)
    model = ShowerSurrogate.create("calogan", train.voxels, train.incident_energy, seed=1,
                                   layer_flow={"n_blocks": 2, "hidden": 8},
                                   voxel_flow={"n_blocks": 2, "hidden": 16})
    energies = np.linspace(5, 50, 40)
    sample = model.sample(energies, seed=11, device="cpu")
    assert sample.geometry.id == get_geometry("calogan").id and sample.voxels.shape == (40, 504)
    assert np.all(sample.voxels >= 0) and np.all(np.isfinite(sample.voxels))
    assert np.array_equal(sample.incident_energy, energies)
    # recorded as the read-out would: zero or at least the training showers' smallest non-zero energy
    threshold = model.preprocessing.readout_threshold
    assert threshold == pytest.approx(train.voxels[train.voxels > 0].min())
    assert np.all((sample.voxels == 0) | (sample.voxels >= threshold * (1 - 1e-6)))
    # the layer sums are those of flow I's draw, up to a dequantization cell or the threshold per voxel
    layers = model.sample_layers(energies, seed=11, device="cpu")
    cell = max(model.preprocessing.dequantization_width, threshold)
    tolerance = model.preprocessing.layer_sizes * cell
    assert np.all(np.abs(sample.layer_energies() - layers) <= tolerance + 1e-5 * layers)
    assert np.array_equal(model.sample(energies, seed=11, device="cpu").voxels, sample.voxels)
    assert not np.array_equal(model.sample(energies, seed=12, device="cpu").voxels, sample.voxels)
    assert np.all(np.isfinite(model.log_prob(sample, energies, device="cpu")))


def test_ensemble_combines_in_log_space(tmp_path) -> None:
    a, vox, energies = tiny_surrogate(scale=0.1, seed=0)
    b = perturb(ShowerSurrogate.create(TINY, vox, energies, seed=1, **SMALL_FLOWS), 0.1, seed=1)
    ens = SurrogateEnsemble([a, b])
    grid = np.array([[5.0, 50.0]])
    members = [m.log_prob(vox, grid, device="cpu") for m in (a, b)]
    expected = special.logsumexp(np.stack(members), axis=0) - np.log(2)
    assert np.allclose(ens.log_prob(vox, grid, device="cpu"), expected, atol=1e-9)
    layer_members = [m.log_prob_layers(TINY.layer_energies(vox), grid, device="cpu") for m in (a, b)]
    assert np.allclose(ens.log_prob_layers(TINY.layer_energies(vox), grid, device="cpu"),
                       special.logsumexp(np.stack(layer_members), axis=0) - np.log(2), atol=1e-9)
    # a one-member ensemble is that member, and an ensemble of copies too
    assert np.allclose(SurrogateEnsemble([a, a]).log_prob(vox, grid, device="cpu"), members[0], atol=1e-9)
    loaded = load_model(ens.save(tmp_path / "ens"), geometry=TINY)
    assert isinstance(loaded, SurrogateEnsemble) and len(loaded) == 2
    assert np.allclose(loaded.log_prob(vox, grid, device="cpu"), expected, atol=1e-9)
    sample = ens.sample(energies[:30], seed=2, device="cpu")
    assert sample.voxels.shape == (30, TINY.n_voxels) and np.all(sample.voxels >= 0)
    with pytest.raises(GeometryMismatchError):
        load_model(tmp_path / "ens", geometry="calogan")


def test_pretrained_default_gives_finite_likelihoods() -> None:
    from calinfer import datasets

    model = calinfer.load_default()
    test = datasets.load("photons-test-50")[:50]
    assert model.geometry.id == test.geometry.id
    lp = model.log_prob(test, test.incident_energy, device="cpu")
    assert np.all(np.isfinite(lp))
    grid = model.log_prob_layers(test.layer_energies(), np.linspace(10, 90, 17)[None], device="cpu")
    # the layer likelihood of 50 GeV showers peaks inside the grid, near 50 GeV on average
    assert 35 < np.mean(np.linspace(10, 90, 17)[np.argmax(grid, axis=1)]) < 65


def test_layers_only_model_refuses_the_voxel_density_and_round_trips(tmp_path) -> None:
    from calinfer.errors import ModelError

    model, vox, energies = tiny_surrogate(scale=0.1)
    layers = model.log_prob(vox, energies, part="layers", dtype=torch.float64, device="cpu")
    model.layers_only = True
    model.save(tmp_path / "m")
    again = ShowerSurrogate.load(tmp_path / "m")
    assert again.layers_only
    assert np.allclose(again.log_prob(vox, energies, part="layers", dtype=torch.float64, device="cpu"), layers)
    for call in (lambda: again.log_prob(vox, energies), lambda: again.log_prob(vox, energies, part="voxels"),
                 lambda: again.sample(energies)):
        with pytest.raises(ModelError, match="layer-energy model without a trained voxel flow"):
            call()


@pytest.mark.parametrize("context", ["layers", "estimated"])
def test_layer_context_makes_the_voxel_density_independent_of_the_incident_energy(monkeypatch, context) -> None:
    vox, energies = tiny_data(seed=3, zeros=False)
    model = perturb(ShowerSurrogate.create(TINY, vox, energies, dequantization_width=1e-9, voxel_context=context,
                                           seed=3, **SMALL_FLOWS), 0.05, seed=3)
    assert model.voxel_flow.config.context_dim == TINY.n_layers + (context == "estimated")
    assert not model.voxel_density_depends_on_energy
    grid = np.array([[2.0, 7.5, 30.0, 80.0]])
    voxels = model.log_prob(vox[:20], grid, part="voxels", dtype=torch.float64, device="cpu")
    assert np.ptp(voxels, axis=1).max() < 1e-9  # the full likelihood in E is the layer likelihood + a constant
    full = model.log_prob(vox[:20], grid, dtype=torch.float64, device="cpu")
    layers = model.log_prob(vox[:20], grid, part="layers", dtype=torch.float64, device="cpu")
    assert np.allclose(full - layers, voxels, atol=1e-9)
    again = ShowerSurrogate.from_record(model.record(), model.layer_flow.state_dict(), model.voxel_flow.state_dict())
    assert again.preprocessing.voxel_context == context
    # still a density in GeV at every energy
    for k, energy in enumerate((3.0, 40.0)):
        mean, err = importance_normalization(model, energy, 40_000, seed=10 + k)
        assert err < 0.05 and abs(mean - 1.0) < 4 * err + 0.01


def test_estimated_context_is_the_incident_context_at_the_energy_estimated_from_the_layer_sum() -> None:
    vox, energies = tiny_data(seed=4)
    pre = ShowerSurrogate.create(TINY, vox, energies, voxel_context="estimated", seed=4, **SMALL_FLOWS).preprocessing
    xt = vox + pre.dequantization_width / 2
    layers = np.stack([xt[:, a:b].sum(axis=1) for a, b in pre.layer_slices], axis=1)
    assert pre.energy_response == pytest.approx(np.median(layers.sum(axis=1) / energies), rel=0.02)
    estimate = layers.sum(axis=1) / pre.energy_response
    expected = np.column_stack([(np.log(estimate) - pre.log_energy_mean) / pre.log_energy_scale,
                                (np.log(layers / estimate[:, None]) - pre.layer_mean) / pre.layer_scale])
    for true_energy in (energies, np.full(len(energies), 55.0)):  # whatever E the pair is evaluated at
        e_t = torch.as_tensor(true_energy)
        y1, _ = pre.layers_forward(torch.as_tensor(layers), e_t)
        got = pre.flow2_context(pre.context(e_t), y1).numpy()
        assert np.allclose(got, expected, atol=1e-10)
