"""Preprocessing transforms: every log-Jacobian against torch.autograd, inverses, zero voxels, empty layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calinfer.geometry import Geometry, Layer
from calinfer.preprocessing import (
    LayerLogRatio,
    Log,
    ScaleByIncident,
    ShowerPreprocessing,
    Standardize,
    auto_dequantization_width,
    dequantize,
    quantize,
)

TINY = Geometry(name="tiny", layers=(Layer("a", (1, 3), cell_size_mm=(1.0, 1.0)),
                                     Layer("b", (2, 2), cell_size_mm=(1.0, 1.0))))


def autograd_log_det(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of a map R^d -> R^d at every row of x, by autograd."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda r: fn(r[None])[0], row)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def positive(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.exp(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


def test_elementwise_transforms() -> None:
    x = positive(5, 3)
    energy = torch.tensor([1.0, 3.0, 10.0, 50.0, 99.0], dtype=torch.float64)
    std = Standardize(np.array([0.5, -1.0, 2.0]), np.array([0.3, 2.0, 1.5]))
    cases = [
        (lambda v: Log.forward(v), Log.inverse),
        (lambda v: std.forward(v), std.inverse),
    ]
    for forward, inverse in cases:
        y, ld = forward(x)
        assert torch.allclose(ld, autograd_log_det(lambda v, f=forward: f(v)[0], x), atol=1e-12)
        back, ld_inv = inverse(y)
        assert torch.allclose(back, x, atol=1e-12) and torch.allclose(ld_inv, -ld, atol=1e-12)
    # the normalization by the incident energy: log|det| = -d log E, row by row
    y, ld = ScaleByIncident.forward(x, energy)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda r, i=i: ScaleByIncident.forward(r[None], energy[i:i + 1])[0][0],
                                                 x[i])
        assert torch.allclose(ld[i], torch.linalg.slogdet(jac)[1], atol=1e-12)
    assert torch.allclose(ld, -3 * torch.log(energy))
    back, ld_inv = ScaleByIncident.inverse(y, energy)
    assert torch.allclose(back, x) and torch.allclose(ld_inv, -ld)


def test_layer_log_ratio_jacobian_and_inverse() -> None:
    slices = [(s.start, s.stop) for s in TINY.layer_slices]
    t = LayerLogRatio(slices, reference=[1, 5])
    x = positive(6, TINY.n_voxels, seed=1)
    y, ld = t.forward(x)
    assert y.shape == (6, TINY.n_voxels)
    # log|det d(E, w)/dx| = sum_l log E_l - sum_i log x_i, checked against autograd
    assert torch.allclose(ld, autograd_log_det(lambda v: t.forward(v)[0], x), atol=1e-10)
    assert torch.allclose(y[:, 0], x[:, :3].sum(dim=1)) and torch.allclose(y[:, 1], x[:, 3:].sum(dim=1))
    assert torch.allclose(y[:, 2], torch.log(x[:, 0] / x[:, 1]))  # voxel 0 against reference voxel 1
    back, ld_inv = t.inverse(y)
    assert torch.allclose(back, x, atol=1e-12) and torch.allclose(ld_inv, -ld, atol=1e-10)
    with pytest.raises(ValueError):
        LayerLogRatio(slices, reference=[3, 5])


def test_zero_voxels_and_empty_layers() -> None:
    width = 1e-4
    x = torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # layer b empty
                      [0.5, 0.0, 1e-4, 3.0, 0.0, 0.25, 0.0]], dtype=torch.float64)
    xt, ld = dequantize(x, width)
    assert torch.all(xt > 0) and torch.equal(ld, torch.zeros(2))
    assert torch.allclose(xt - x, torch.full_like(x, width / 2))
    t = LayerLogRatio([(0, 3), (3, 7)], reference=[1, 3])
    y, ld = t.forward(xt)
    assert torch.all(torch.isfinite(y)) and torch.all(torch.isfinite(ld))
    assert y[0, 1] == pytest.approx(4 * width / 2)  # an empty layer has E~ = n_l delta / 2
    back, _ = t.inverse(y)
    assert torch.allclose(quantize(back, width), x, atol=1e-12)
    # random dequantization noise lies in [0, width) and averages to width / 2
    noisy, _ = dequantize(torch.zeros(20000, 7, dtype=torch.float64), width, torch.Generator().manual_seed(0))
    assert float(noisy.min()) >= 0 and float(noisy.max()) < width
    assert float(noisy.mean()) == pytest.approx(width / 2, rel=0.01)


def test_quantize_records_the_readout_threshold_and_undoes_the_dequantization_in_distribution() -> None:
    from scipy import stats

    width, threshold, n = 1e-4, 1.2e-4, 40_000
    rng = np.random.default_rng(5)
    recorded = np.where(rng.random(n) < 0.3, 0.0, threshold + rng.uniform(0, 60 * width, n))  # flat above t
    xt, _ = dequantize(torch.as_tensor(recorded), width, torch.Generator().manual_seed(1))
    # a model's mass between the zero cell and the threshold (where no recorded voxel lies)
    xt = torch.cat([xt, torch.full((500,), 1.1e-4, dtype=torch.float64)])
    back = quantize(xt, width, threshold, torch.Generator().manual_seed(2)).numpy()
    assert np.array_equal(back[:n] == 0, recorded == 0) and np.all(back[n:] == 0)
    assert back[back > 0].min() >= threshold
    assert stats.ks_2samp(back[:n][back[:n] > 0], recorded[recorded > 0]).statistic < 0.015
    midpoint = quantize(xt, width, threshold).numpy()  # deterministic: the cell midpoint cut at the threshold
    assert np.all((midpoint == 0) == (back == 0)) and np.all(np.abs(midpoint - back) <= width / 2 + 1e-15)


def test_auto_dequantization_width() -> None:
    assert auto_dequantization_width(np.array([[0.0, 1.0065e-4, 0.3]])) == pytest.approx(1e-4)
    assert auto_dequantization_width(np.array([[0.0, 3e-6], [2.0, 0.0]])) == pytest.approx(1e-6)
    assert auto_dequantization_width(np.array([[0.02, 3.0]])) == pytest.approx(1e-5)  # no zeros
    assert auto_dequantization_width(np.zeros((2, 3))) == pytest.approx(1e-6)


def fitted(seed: int = 0) -> tuple[ShowerPreprocessing, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    energies = rng.uniform(1, 100, 500)
    vox = rng.exponential(1.0, (500, TINY.n_voxels)) * (rng.random((500, TINY.n_voxels)) < 0.7)
    vox = vox * energies[:, None] / 5
    vox[vox < 1e-3] = 0.0
    return ShowerPreprocessing.fit(TINY, vox, energies, seed=seed), vox, energies


def test_full_chain_jacobian_is_sum_of_parts_and_energy_terms_cancel() -> None:
    pre, vox, _ = fitted()
    assert pre.dequantization_width == pytest.approx(1e-3)
    x = torch.as_tensor(vox[:4])
    results = []
    for energy in (2.0, 60.0):
        e = torch.full((len(x),), energy, dtype=torch.float64)

        def chain(v: torch.Tensor, e=e) -> torch.Tensor:
            layers, u, _ = pre.shower_forward(v)
            y1, _ = pre.layers_forward(layers, e[: len(v)])
            return torch.cat([y1, u], dim=1)

        layers, _, ld_shower = pre.shower_forward(x)
        _, ld_layers = pre.layers_forward(layers, e)
        total = ld_shower + ld_layers
        assert torch.allclose(total, autograd_log_det(chain, x), atol=1e-9)
        results.append(total)
        # the inverse chain reproduces the showers
        y = chain(x)
        back = pre.shower_inverse(pre.layers_inverse(y[:, :2], e), y[:, 2:])
        assert torch.allclose(back, x, atol=1e-10)
    # the E-dependent Jacobian of the normalization by E (-L log E) cancels against that of the log
    assert torch.allclose(results[0], results[1], atol=1e-10)
    _, ld_scale_lo = ScaleByIncident.forward(layers, torch.full((4,), 2.0, dtype=torch.float64))
    _, ld_scale_hi = ScaleByIncident.forward(layers, torch.full((4,), 60.0, dtype=torch.float64))
    assert torch.allclose(ld_scale_lo - ld_scale_hi, torch.full((4,), 2 * np.log(30.0), dtype=torch.float64))


def test_serialization_round_trip() -> None:
    pre, _, _ = fitted(1)
    assert pre.readout_threshold == pytest.approx(fitted(1)[1][fitted(1)[1] > 0].min())
    again = ShowerPreprocessing.from_dict(pre.to_dict())
    assert (again.readout_threshold, again.energy_response) == (pre.readout_threshold, pre.energy_response)
    x = torch.as_tensor(fitted(2)[1][:5])
    assert all(torch.equal(a, b) for a, b in zip(pre.shower_forward(x), again.shower_forward(x), strict=True))
    bad = pre.to_dict() | {"ratio_scale": [0.0] * len(pre.ratio_scale)}
    with pytest.raises(ValueError):
        ShowerPreprocessing.from_dict(bad)


def test_marginal_gaussianization_matches_the_closed_form_quantile_map() -> None:
    from scipy import special

    from calinfer.preprocessing import MarginalGaussianize

    rng = np.random.default_rng(3)
    values = np.column_stack([rng.exponential(size=200_000), np.log(rng.uniform(size=200_000)),
                              np.full(200_000, 0.25)])  # a spike: every value equal
    g = MarginalGaussianize.fit(values)
    v = torch.as_tensor(np.array([[0.05, -3.0, 0.25], [1.0, -0.7, 0.25], [3.0, -0.01, 0.25], [12.0, -20.0, 0.25]]))
    z, log_det = g.forward(v)
    # exponential: F(v) = 1 - exp(-v); log-uniform: F(t) = exp(t); both to normal quantiles inside the knots
    truth = np.column_stack([special.ndtri(1 - np.exp(-v[:3, 0].numpy())), special.ndtri(np.exp(v[:3, 1].numpy()))])
    assert np.allclose(z[:3, :2].numpy(), truth, atol=0.03)
    # beyond the outer knots the map continues linearly, and it stays invertible with the opposite log-det
    assert z[3, 0] > 3.5 and z[3, 1] < -3.5
    back, log_det_inv = g.inverse(z)
    assert torch.allclose(back, v, atol=1e-9)
    assert torch.allclose(log_det + log_det_inv, torch.zeros(4, dtype=torch.float64), atol=1e-12)
    x = v.clone().requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda a: g.forward(a)[0], x)
    diag = torch.stack([torch.diagonal(jac[i, :, i, :]) for i in range(len(x))])
    assert torch.allclose(torch.log(diag).sum(dim=1), log_det, atol=1e-9)
    again = MarginalGaussianize.from_dict(g.to_dict())
    assert torch.equal(again.forward(v)[0], z)
