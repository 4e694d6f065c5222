"""Training: closure on a known conditional density in GeV, resume, time budget, NaN guard, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import special, stats

from calinfer import preprocessing
from calinfer.errors import InputError, TrainingError
from calinfer.flows import ConditionalFlow
from calinfer.geometry import Geometry, Layer
from calinfer.showers import Showers
from calinfer.surrogate import ShowerSurrogate
from calinfer.training import TrainConfig, train_surrogate

PAIRS = Geometry(name="pairs", layers=(Layer("front", (1, 2), cell_size_mm=(1.0, 1.0)),
                                       Layer("back", (1, 2), cell_size_mm=(1.0, 1.0))))
TINY_FLOWS = {"layer_flow": {"n_blocks": 2, "hidden": 16}, "voxel_flow": {"kind": "autoregressive", "n_blocks": 2,
                                                                          "hidden": 16}}
# log(E_l / E) = A_l + B_l log E + S_l eps, logit(first-voxel fraction) = M_l + 0.3 log(E_l) + 0.4 eps
A, B, S, M = np.array([-0.7, -1.2]), np.array([0.08, -0.1]), np.array([0.15, 0.3]), np.array([0.4, -0.6])


def draw(n: int, seed: int, energy: float | None = None) -> tuple[Showers, np.ndarray, np.ndarray]:
    """Showers from the known model, with the exact log density of the voxels (GeV) and of the layer energies."""
    rng = np.random.default_rng(seed)
    e = np.full(n, energy) if energy is not None else rng.uniform(5, 50, n)
    log_r = A + B * np.log(e)[:, None] + S * rng.normal(size=(n, 2))
    layers = e[:, None] * np.exp(log_r)
    eta = M + 0.3 * np.log(layers) + 0.4 * rng.normal(size=(n, 2))
    f = special.expit(eta)
    vox = np.stack([layers[:, 0] * f[:, 0], layers[:, 0] * (1 - f[:, 0]),
                    layers[:, 1] * f[:, 1], layers[:, 1] * (1 - f[:, 1])], axis=1)
    # p(E_l | E) is log-normal; (E_l, f) -> (x1, x2) has Jacobian E_l; logit f is normal
    log_layers = (stats.norm.logpdf(log_r, A + B * np.log(e)[:, None], S) - np.log(layers)).sum(axis=1)
    log_shape = (stats.norm.logpdf(eta, M + 0.3 * np.log(layers), 0.4) - np.log(f * (1 - f)) - np.log(layers))
    return Showers(vox, PAIRS, e), log_layers, log_layers + log_shape.sum(axis=1)


@pytest.fixture(scope="module")
def closure_model(tmp_path_factory) -> ShowerSurrogate:
    train, _, _ = draw(2800, seed=0)
    cfg = TrainConfig(epochs=24, batch_size=250, lr=5e-3, patience=24, layer_epochs=24, layer_batch_size=250,
                      layer_lr=5e-3, layer_patience=24, progress=False, seed=0, device="cpu")
    out = tmp_path_factory.mktemp("closure") / "model"
    return train_surrogate(train, out, config=cfg, dequantization_width=1e-7, provenance={"dataset": "pairs"},
                           **TINY_FLOWS)


def test_closure_recovers_known_density_in_gev(closure_model: ShowerSurrogate, monkeypatch) -> None:
    test, true_layers, true_full = draw(3000, seed=1)
    lp = closure_model.log_prob(test, test.incident_energy, dtype=torch.float64, device="cpu")
    lp_layers = closure_model.log_prob(test, test.incident_energy, part="layers", dtype=torch.float64, device="cpu")
    # the mean log-likelihood gap is KL(p || q) >= 0 (up to noise) and small after training
    assert -0.05 < true_full.mean() - lp.mean() < 0.15
    assert -0.03 < true_layers.mean() - lp_layers.mean() < 0.06
    # per shower the model follows the truth closely
    assert np.corrcoef(lp, true_full)[0, 1] > 0.97
    # the closure fails when the E-dependent Jacobian of the normalization by E is dropped
    monkeypatch.setattr(preprocessing.ScaleByIncident, "forward",
                        staticmethod(lambda v, e: (v / e[:, None], torch.zeros(len(v), dtype=v.dtype))))
    lp_wrong = closure_model.log_prob(test, test.incident_energy, dtype=torch.float64, device="cpu")
    assert true_full.mean() - lp_wrong.mean() < -2.0


def test_closure_samples_and_likelihood_peak(closure_model: ShowerSurrogate) -> None:
    ref, _, _ = draw(2000, seed=2, energy=20.0)
    sample = closure_model.sample(np.full(2000, 20.0), seed=0, device="cpu")
    for layer in range(2):
        assert stats.ks_2samp(sample.layer_energies()[:, layer], ref.layer_energies()[:, layer]).statistic < 0.06
    frac = sample.voxels[:, 0] / sample.layer_energies()[:, 0]
    assert stats.ks_2samp(frac, ref.voxels[:, 0] / ref.layer_energies()[:, 0]).statistic < 0.06
    # the layer likelihood, summed over showers made at 20 GeV, peaks near 20 GeV
    grid = np.linspace(10, 40, 61)
    total = closure_model.log_prob_layers(ref.layer_energies()[:500], grid[None], device="cpu").sum(axis=0)
    assert abs(grid[np.argmax(total)] - 20.0) < 1.5


def test_records_provenance_and_curves(closure_model: ShowerSurrogate, tmp_path) -> None:
    assert closure_model.provenance["dataset"] == "pairs" and closure_model.provenance["n_train"] == 2520
    assert len(closure_model.provenance["data_sha256"]) == 64
    t = closure_model.training
    assert t["layers"]["epochs"] >= 1 and len(t["voxels"]["history"]["val"]) == t["voxels"]["epochs"]
    for part in ("layers", "voxels"):  # the best validation weights are kept
        assert t[part]["best_val_nll"] == min(t[part]["history"]["val"])
    assert t["layers"]["history"]["val"][-1] < t["layers"]["history"]["val"][0]
    path = closure_model.save(tmp_path / "again")
    assert ShowerSurrogate.load(path).training["voxels"]["epochs"] == t["voxels"]["epochs"]


def small_run(tmp_path, **overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 256, "layer_epochs": 2, "layer_batch_size": 256,
                          "progress": False, "device": "cpu", **overrides})


def test_resume_continues_and_checks_data(tmp_path) -> None:
    data, _, _ = draw(1000, seed=3)
    first = train_surrogate(data, tmp_path / "m", config=small_run(tmp_path), **TINY_FLOWS)
    assert (tmp_path / "m" / "loss_curves.png").is_file() and (tmp_path / "m.work" / "checkpoint.pt").is_file()
    more = train_surrogate(data, tmp_path / "m", config=small_run(tmp_path, epochs=4), resume=True, **TINY_FLOWS)
    h1, h2 = first.training["voxels"]["history"], more.training["voxels"]["history"]
    assert len(h1["val"]) == 2 and len(h2["val"]) == 4 and h2["val"][:2] == h1["val"]
    assert more.training["layers"]["history"] == first.training["layers"]["history"]
    other, _, _ = draw(1000, seed=4)
    with pytest.raises(InputError, match="other data"):
        train_surrogate(other, tmp_path / "m", config=small_run(tmp_path), resume=True, **TINY_FLOWS)


def test_time_budget_and_nan_guard(tmp_path, monkeypatch) -> None:
    data, _, _ = draw(1000, seed=5)
    calls = {"n": 0}
    original = ConditionalFlow.log_prob

    def flaky(self, x, context):  # two training batches give a NaN loss
        out = original(self, x, context)
        if not self.training:
            return out
        calls["n"] += 1
        return out * float("nan") if calls["n"] in (2, 5) else out

    monkeypatch.setattr(ConditionalFlow, "log_prob", flaky)
    model = train_surrogate(data, tmp_path / "m", config=small_run(tmp_path), **TINY_FLOWS)
    skipped = model.training["layers"]["skipped_batches"] + model.training["voxels"]["skipped_batches"]
    assert skipped == 2
    assert all(torch.isfinite(p).all() for p in model.voxel_flow.parameters())
    monkeypatch.setattr(ConditionalFlow, "log_prob", original)
    quick = train_surrogate(data, tmp_path / "q", config=small_run(tmp_path, epochs=50, layer_epochs=50,
                                                                   max_minutes=1e-4), **TINY_FLOWS)
    assert quick.training["layers"]["stopped"] == "time" and quick.training["voxels"]["stopped"] == "time"
    assert quick.training["voxels"]["epochs"] <= 1


def test_cli_train(tmp_path) -> None:
    from calinfer.cli import main
    from calinfer.io import write_showers
    from calinfer.simulation import simulate_showers

    path = tmp_path / "train.h5"
    write_showers(path, simulate_showers(300, energy_range=(5, 50), seed=0))
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--geometry", "calogan", "--out", str(out),
                                       "--epochs", "1", "--layer-epochs", "2", "--batch-size", "128",
                                       "--voxel-blocks", "2", "--voxel-hidden", "16", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    model = ShowerSurrogate.load(out, geometry="calogan")
    assert model.provenance["dataset"] == str(path) and model.provenance["n_showers"] == 300
    assert model.voxel_flow.config.n_blocks == 2 and (out / "loss_curves.png").is_file()
    assert model.preprocessing.voxel_context == "estimated" and not model.voxel_density_depends_on_energy


def dirichlet_showers(n: int, seed: int) -> Showers:
    """Another generator: CaloGAN layout, every voxel holds a non-zero share of its layer energy (a Dirichlet around
    a fixed lateral profile), raw energies at sampling fraction 0.2, E uniform in 1-100 GeV; shares of the outer
    cells are tiny and some underflow float32 (no read-out threshold, unlike the built-in simulator)."""
    from calinfer.geometry import get_geometry

    geometry = get_geometry("calogan")
    rng = np.random.default_rng(seed)
    e = rng.uniform(1.0, 100.0, n)
    layer_share = rng.dirichlet([3.0, 10.0, 1.5], size=n)
    parts = []
    for k, sl in enumerate(geometry.layer_slices):
        m = sl.stop - sl.start
        profile = np.exp(-0.5 * ((np.arange(m) - m / 2) / (m / 6)) ** 2) + 0.05
        shares = rng.gamma(30 * profile / profile.sum(), size=(n, m))
        shares /= shares.sum(axis=1, keepdims=True)
        parts.append(shares * (0.2 * e * layer_share[:, k])[:, None])
    return Showers(np.concatenate(parts, axis=1).astype(np.float32), geometry, e, source="<dirichlet generator>")


def test_showers_without_empty_voxels_train_to_a_finite_model(tmp_path) -> None:
    data = dirichlet_showers(600, seed=0)
    assert np.mean(data.voxels > 0) > 0.95
    cfg = small_run(tmp_path, epochs=1, layer_epochs=2)
    model = train_surrogate(data, tmp_path / "m", config=cfg, layer_flow={"n_blocks": 2, "hidden": 16},
                            voxel_flow={"n_blocks": 2, "hidden": 16})
    width = model.preprocessing.dequantization_width
    positive = data.voxels[data.voxels > 0]
    # the width stays far below the typical voxel energy and far above float32 underflow
    assert 1e-30 < width <= 1e-6 * np.median(positive)
    assert all(np.isfinite(model.training[p]["best_val_nll"]) for p in ("layers", "voxels"))
    assert np.all(np.isfinite(model.log_prob(dirichlet_showers(50, seed=1), np.full(50, 30.0))))
    assert ShowerSurrogate.load(tmp_path / "m").training["voxels"]["skipped_batches"] == 0


def test_non_finite_losses_stop_with_the_cause_and_write_nothing(tmp_path, monkeypatch) -> None:
    data, _, _ = draw(600, seed=7)
    original = ConditionalFlow.log_prob

    def broken(self, x, context):  # flow II (context of 1 + 2 variables) always gives NaN while training
        out = original(self, x, context)
        return out * float("nan") if self.training and context.shape[1] == 3 else out

    monkeypatch.setattr(ConditionalFlow, "log_prob", broken)
    with pytest.raises(TrainingError, match=r"voxels flow: 25 consecutive batches .* inputs are finite"):
        train_surrogate(data, tmp_path / "m", config=small_run(tmp_path, batch_size=8), **TINY_FLOWS)
    assert not (tmp_path / "m").exists()


def test_non_finite_flow_inputs_are_named(tmp_path, monkeypatch) -> None:
    data, _, _ = draw(600, seed=8)
    original = preprocessing.ShowerPreprocessing.shower_forward

    def poisoned(self, voxels, generator=None):
        layers, u, ld = original(self, voxels, generator)
        return layers, u * float("inf") if generator is not None else u, ld

    monkeypatch.setattr(preprocessing.ShowerPreprocessing, "shower_forward", poisoned)
    with pytest.raises(TrainingError, match="non-finite flow inputs"):
        train_surrogate(data, tmp_path / "m", config=small_run(tmp_path, batch_size=8), **TINY_FLOWS)
    assert not (tmp_path / "m").exists()


def test_model_with_non_finite_validation_nll_is_not_written(tmp_path, monkeypatch) -> None:
    from calinfer import training

    data, _, _ = draw(600, seed=9)
    monkeypatch.setattr(training._Phase, "_val_loss", lambda self, val: float("nan"))
    with pytest.raises(TrainingError, match=r"validation NLL is not finite.*no model was written"):
        train_surrogate(data, tmp_path / "m", config=small_run(tmp_path), **TINY_FLOWS)
    assert not (tmp_path / "m").exists()
