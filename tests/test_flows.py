"""Conditional spline flows: exact log-determinants, invertibility, normalization and a closure test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from calinfer.flows import ConditionalFlow, FlowConfig


def random_flow(
    kind: str, dim: int = 3, context_dim: int = 2, seed: int = 0, scale: float = 0.3, dropout: float = 0.0
) -> ConditionalFlow:
    """A small flow whose weights are pushed away from the identity initialisation (in eval mode)."""
    config = FlowConfig(dim=dim, context_dim=context_dim, kind=kind, n_blocks=3, hidden=16, dropout=dropout, seed=seed)
    flow = ConditionalFlow(config)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return flow.double().eval()


def plane_grid() -> tuple[torch.Tensor, float]:
    """Points of a 301 x 301 grid on [-10, 10]^2 (float64) and the area of one cell."""
    t = torch.linspace(-10, 10, 301, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.ravel(), yy.ravel()], dim=1), float(t[1] - t[0]) ** 2


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_log_det_matches_autograd_jacobian(kind: str) -> None:
    flow = random_flow(kind, dim=4)
    gen = torch.Generator().manual_seed(1)
    x = 1.5 * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    c = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    _, log_det = flow.to_base(x, c)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda xi, i=i: flow.to_base(xi[None], c[i : i + 1])[0][0], x[i])
        assert torch.allclose(log_det[i], torch.linalg.slogdet(jac)[1], atol=1e-9)
    # the density is that of a standard normal pushed through the map
    z, _ = flow.to_base(x, c)
    expected = log_det + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=1)
    assert torch.allclose(flow.log_prob(x, c), expected, atol=1e-10)


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_sampling_inverts_density_map(kind: str) -> None:
    flow = random_flow(kind, dim=5)
    c = torch.randn(50, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z = torch.randn(50, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = flow.from_base(z, c)
    z_back, _ = flow.to_base(x, c)
    assert torch.allclose(z, z_back, atol=1e-7)
    s1 = flow.sample(c, torch.Generator().manual_seed(4))
    s2 = flow.sample(c, torch.Generator().manual_seed(4))
    assert torch.equal(s1, s2) and not torch.equal(s1, flow.sample(c, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize(("kind", "scale"), [("autoregressive", 0.06), ("coupling", 0.15)])
def test_density_integrates_to_one(kind: str, scale: float) -> None:
    flow = random_flow(kind, dim=2, context_dim=1, seed=7, scale=scale)
    grid, cell = plane_grid()
    base = -0.5 * (grid**2).sum(dim=1) - np.log(2 * np.pi)
    for c in (-1.5, 2.0):
        ctx = torch.full((len(grid), 1), c, dtype=torch.float64)
        with torch.no_grad():
            log_p = flow.log_prob(grid, ctx)
        assert float(torch.exp(log_p).sum()) * cell == pytest.approx(1.0, abs=3e-3)
        # and the flow is far from its standard normal base near the origin
        assert float((log_p - base)[grid.norm(dim=1) < 2].abs().max()) > 0.5


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_dropout_acts_only_while_training(kind: str) -> None:
    flow = random_flow(kind, dim=2, context_dim=1, seed=3, scale=0.1, dropout=0.3)
    grid, cell = plane_grid()
    ctx = torch.full((len(grid), 1), 0.7, dtype=torch.float64)
    with torch.no_grad():
        flow.train()  # dropout masks: a different network per call
        inner = grid[grid.norm(dim=1) < 2][:50]  # inside the tail bound, where the networks act
        assert not torch.allclose(flow.log_prob(inner, ctx[:50]), flow.log_prob(inner, ctx[:50]))
        flow.eval()  # the fitted density: deterministic and normalised
        log_p = flow.log_prob(grid, ctx)
        assert torch.equal(log_p, flow.log_prob(grid, ctx))
    assert float(torch.exp(log_p).sum()) * cell == pytest.approx(1.0, abs=3e-3)
    with pytest.raises(ValueError):
        FlowConfig(dim=2, context_dim=1, dropout=1.0)


def test_identity_initialisation_and_float64() -> None:
    for kind in ("autoregressive", "coupling"):
        flow = ConditionalFlow(FlowConfig(dim=3, context_dim=1, kind=kind, n_blocks=2, hidden=8))
        x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
        z, log_det = flow.to_base(x, torch.zeros(10, 1))
        # a fresh flow is a permutation of the coordinates: volume preserving, same values per row
        assert torch.allclose(z.sort(dim=1).values, x.sort(dim=1).values, atol=1e-5)
        assert torch.allclose(log_det, torch.zeros(10), atol=1e-5)
    with pytest.raises(ValueError):
        FlowConfig(dim=1, context_dim=1, kind="coupling")


def test_closure_conditional_gaussian_is_recovered() -> None:
    """Train on x | c ~ N(m(c), S(c)) (2-D, correlated, c-dependent); the flow must reach the true log-likelihood."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = rng.uniform(-1, 1, n)
        e1 = rng.normal(size=n)
        e2 = rng.normal(size=n)
        x1 = c + (0.5 + 0.25 * c) * e1
        x2 = -0.5 * c + 0.6 * x1 + 0.4 * e2
        # exact log density: p(x1 | c) p(x2 | x1, c)
        logp = stats.norm.logpdf(x1, c, 0.5 + 0.25 * c) + stats.norm.logpdf(x2, -0.5 * c + 0.6 * x1, 0.4)
        return np.stack([x1, x2], axis=1), c[:, None], logp

    x, c, _ = draw(6000)
    flow = ConditionalFlow(FlowConfig(dim=2, context_dim=1, kind="autoregressive", n_blocks=2, hidden=32, seed=0))
    xt, ct = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(c, dtype=torch.float32)
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(300):
        idx = torch.randint(len(xt), (256,), generator=gen)
        loss = -flow.log_prob(xt[idx], ct[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 200:
            opt.param_groups[0]["lr"] = 1e-3
    x_test, c_test, logp_true = draw(4000)
    with torch.no_grad():
        logp_flow = (
            flow.log_prob(torch.as_tensor(x_test, dtype=torch.float32), torch.as_tensor(c_test, dtype=torch.float32))
            .double()
            .numpy()
        )
        samples = flow.sample(torch.as_tensor(c_test, dtype=torch.float32), torch.Generator().manual_seed(1)).numpy()
    # mean log-likelihood within 0.05 nats of the truth (KL(p||q) >= 0 bounds it from above)
    gap = logp_true.mean() - logp_flow.mean()
    assert -0.03 < gap < 0.05
    # samples at the test contexts reproduce the true conditional: standardized residuals are N(0, 1)
    # (KS distance below 0.035; a 15% error of the widths alone gives about 0.04)
    r1 = (samples[:, 0] - c_test[:, 0]) / (0.5 + 0.25 * c_test[:, 0])
    r2 = (samples[:, 1] + 0.5 * c_test[:, 0] - 0.6 * samples[:, 0]) / 0.4
    assert stats.kstest(r1, "norm").statistic < 0.035
    assert stats.kstest(r2, "norm").statistic < 0.035


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_spline_softmax_replacement_matches_torch_softmax(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """normflows' splines run with calinfer's bin softmax; density and gradients equal torch.softmax's."""
    import normflows.utils.splines as splines

    from calinfer.flows import bin_softmax

    logits = torch.randn(500, 7, 8, dtype=torch.float64) * 30  # large logits: the max subtraction matters
    assert torch.allclose(bin_softmax(logits), torch.softmax(logits, -1), rtol=1e-12, atol=1e-15)
    assert splines.F.softmax is bin_softmax

    torch.manual_seed(3)
    flow = ConditionalFlow(FlowConfig(dim=6, context_dim=2, kind=kind, n_blocks=2, hidden=16)).double()
    for p in flow.parameters():  # move away from the identity initialisation
        p.data.add_(0.3 * torch.randn_like(p))
    x, c = torch.randn(300, 6, dtype=torch.float64) * 2, torch.randn(300, 2, dtype=torch.float64)

    def density_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        xg = x.clone().requires_grad_(True)
        lp = flow.log_prob(xg, c)
        (grad,) = torch.autograd.grad(lp.sum(), xg)
        return lp.detach(), grad

    ours = density_and_grad()
    monkeypatch.setattr(splines, "F", torch.nn.functional)
    reference = density_and_grad()
    assert torch.allclose(ours[0], reference[0], rtol=0, atol=1e-10)
    assert torch.allclose(ours[1], reference[1], rtol=0, atol=1e-9)
