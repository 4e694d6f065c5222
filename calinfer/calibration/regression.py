"""MSE regression baseline: a small MLP that predicts the incident energy from the same inputs as the likelihood.

A network trained with a squared-error loss estimates the posterior mean of E under the training
sample's energy prior, so its calibration shifts when the prior changes (uniform vs log-uniform);
this is the comparison the maximum-likelihood calibration is measured against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from calinfer.errors import InputError
from calinfer.showers import Showers

__all__ = ["EnergyRegressor", "regression_features", "train_regressor"]

_FLOOR = 1e-3  # GeV added before the logarithm so empty layers stay finite


def regression_features(data: Showers | np.ndarray) -> np.ndarray:
    """Network inputs ``(N, L + 1)``: ``ln(E_layer + 1 MeV)`` per layer and ``ln`` of the total (GeV).

    ``data`` is a :class:`Showers` or an ``(N, L)`` array of layer energies.
    """
    x = data.layer_energies() if isinstance(data, Showers) else np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"expected a non-empty (N, n_layers) array of layer energies, got shape {x.shape}")
    total = x.sum(axis=1, keepdims=True)
    return np.log(np.concatenate([x, total], axis=1).clip(0) + _FLOOR)


@dataclass
class EnergyRegressor:
    """A trained regressor: standardized features -> MLP -> ``E / scale`` (GeV after rescaling)."""

    net: torch.nn.Module
    mean: np.ndarray
    std: np.ndarray
    scale: float
    history: list[tuple[float, float]]

    def predict(self, data: Showers | np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
        """Predicted incident energies (GeV), shape ``(N,)``."""
        z = (regression_features(data) - self.mean) / self.std
        self.net.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(z), batch_size):
                chunk = torch.as_tensor(z[start : start + batch_size], dtype=torch.float32)
                out.append(self.net(chunk).squeeze(1).double().numpy())
        return np.concatenate(out) * self.scale


def _mlp(n_in: int, hidden: tuple[int, ...]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for width in hidden:
        layers += [torch.nn.Linear(n_in, width), torch.nn.SiLU()]
        n_in = width
    layers.append(torch.nn.Linear(n_in, 1))
    return torch.nn.Sequential(*layers)


def train_regressor(
    data: Showers | np.ndarray,
    energies: np.ndarray | None = None,
    *,
    hidden: tuple[int, ...] = (64, 64),
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 2e-3,
    val_fraction: float = 0.15,
    patience: int = 10,
    seed: int = 0,
) -> EnergyRegressor:
    """Fit an MLP to the incident energies with a mean-squared-error loss (on ``E / mean(E)``).

    ``data``: training showers (their ``incident_energy`` is the target unless ``energies`` is given) or an
    ``(N, L)`` array of layer energies with ``energies`` (GeV). The energy prior of the training sample is
    whatever distribution these energies follow. A random ``val_fraction`` is held out; training stops
    when its loss has not improved for ``patience`` epochs, and the best network is kept.
    """
    if energies is None:
        if not isinstance(data, Showers) or data.incident_energy is None:
            raise InputError("train_regressor needs the true incident energies (showers with truth or `energies`)")
        energies = data.incident_energy
    feats = regression_features(data)
    target = np.asarray(energies, dtype=np.float64).reshape(-1)
    if len(target) != len(feats):
        raise InputError(f"train_regressor: {len(target)} energies for {len(feats)} showers")
    if len(target) < 20:
        raise InputError(f"train_regressor: {len(target)} showers are too few to train on")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    order = rng.permutation(len(target))
    n_val = max(1, int(val_fraction * len(target)))
    val, train = order[:n_val], order[n_val:]
    mean, std = feats[train].mean(axis=0), feats[train].std(axis=0) + 1e-8
    scale = float(target[train].mean())
    z = torch.as_tensor((feats - mean) / std, dtype=torch.float32)
    y = torch.as_tensor(target / scale, dtype=torch.float32)

    net = _mlp(z.shape[1], hidden)
    with torch.no_grad():  # deterministic initialisation from the seed
        for p in net.parameters():
            bound = 1.0 / np.sqrt(p.shape[-1]) if p.ndim > 1 else 0.05
            p.uniform_(-bound, bound, generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    z_train, y_train, z_val, y_val = z[train], y[train], z[val], y[val]
    best, best_state, stale, history = np.inf, copy.deepcopy(net.state_dict()), 0, []
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(train), generator=gen)
        total = 0.0
        for start in range(0, len(train), batch_size):
            idx = perm[start : start + batch_size]
            loss = torch.mean((net(z_train[idx]).squeeze(1) - y_train[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        net.eval()
        with torch.no_grad():
            val_loss = float(torch.mean((net(z_val).squeeze(1) - y_val) ** 2))
        history.append((total / len(train), val_loss))
        if val_loss < best:
            best, best_state, stale = val_loss, copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    net.load_state_dict(best_state)
    return EnergyRegressor(net=net, mean=mean, std=std, scale=scale, history=history)
