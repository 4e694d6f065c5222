"""Baselines for shower anomaly detection, with the same ``fit``/``evaluate`` interface as the likelihood scores.

* :class:`PhysicsScore`: one physics variable, no training: the longitudinal shower depth (late showers), the
  transverse width (split showers), or the calorimeter response ``|ln(E_dep / (lambda E_inc))|`` (needs the true
  incident energy, as in a test beam; lambda is fitted on background).
* :class:`AutoencoderScore`: reconstruction error of a small torch autoencoder trained on background showers
  (unsupervised).
* :class:`SupervisedClassifier`: an MLP trained on labelled signal against background (the upper bound a
  signal-model-independent method can hope to approach); its ``fit`` takes both classes.

:func:`shower_features` gives the high-level variables they share (GeV, mm).
"""

from __future__ import annotations

import itertools

import numpy as np

from calinfer.anomaly.scores import EnergyScale
from calinfer.errors import InputError
from calinfer.showers import Showers

__all__ = [
    "PHYSICS_VARIABLES",
    "AutoencoderScore",
    "PhysicsScore",
    "SupervisedClassifier",
    "layer_depths_mm",
    "shower_features",
    "voxel_inputs",
]

PHYSICS_VARIABLES = ("depth", "width", "response")


def layer_depths_mm(showers: Showers) -> np.ndarray:
    """Longitudinal position of every layer: mid-depth in mm if the geometry knows it, else the layer index."""
    layers = showers.geometry.layers
    if all(layer.depth_mm is not None for layer in layers):
        return np.array([0.5 * (layer.depth_mm[0] + layer.depth_mm[1]) for layer in layers])  # type: ignore[index]
    return np.arange(len(layers), dtype=np.float64)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast_shapes(a.shape, b.shape)), where=b > 0)


def shower_features(showers: Showers) -> tuple[np.ndarray, list[str]]:
    """High-level variables per shower, ``(N, F)`` float64, and their names.

    ``log_edep`` (ln GeV), per layer ``frac_<layer>`` (energy fraction), ``depth`` (energy-weighted layer
    position, mm), and per layer the energy-weighted transverse centroid ``x_``/``y_`` and RMS ``width_`` (mm),
    the fraction ``maxfrac_`` of the layer energy in its hottest cell and the fraction ``occupancy_`` of cells hit.
    Empty layers give zeros.
    """
    geometry = showers.geometry
    v = showers.voxels.astype(np.float64)
    e_layer = showers.layer_energies().astype(np.float64)
    e_dep = e_layer.sum(axis=1)
    cols = [np.log(np.maximum(e_dep, 1e-6))]
    names = ["log_edep"]
    frac = _safe_div(e_layer, e_dep[:, None])
    cols += list(frac.T)
    names += [f"frac_{layer.name}" for layer in geometry.layers]
    cols.append(frac @ layer_depths_mm(showers))
    names.append("depth")
    for layer, sl, e in zip(geometry.layers, geometry.layer_slices, e_layer.T, strict=True):
        x, y = layer.cell_centers_mm()
        w = _safe_div(v[:, sl], e[:, None])
        mx, my = w @ x, w @ y
        var = np.maximum(w @ (x * x + y * y) - mx * mx - my * my, 0.0)
        cols += [mx, my, np.sqrt(var), w.max(axis=1), (v[:, sl] > 0).mean(axis=1)]
        names += [f"{k}_{layer.name}" for k in ("x", "y", "width", "maxfrac", "occupancy")]
    return np.stack(cols, axis=1), names


def voxel_inputs(showers: Showers) -> np.ndarray:
    """``sqrt(voxel / E_dep)``: the shower shape with the energy divided out, variance-stabilized, ``(N, n_vox)``."""
    v = showers.voxels.astype(np.float64)
    return np.sqrt(_safe_div(v, v.sum(axis=1, keepdims=True)))


class PhysicsScore:
    """A single physics variable as anomaly score (higher = more anomalous).

    ``"depth"``: energy-weighted longitudinal position (mm), large for showers that start late;
    ``"width"``: energy-weighted mean of the per-layer transverse RMS widths (mm), large for split showers;
    ``"response"``: ``|ln(E_dep / (lambda E_inc))|`` with lambda fitted on background; needs ``incident_energy``.
    """

    def __init__(self, variable: str = "depth", *, scale: EnergyScale | None = None) -> None:
        if variable not in PHYSICS_VARIABLES:
            raise InputError(f"unknown physics variable {variable!r}; use one of {PHYSICS_VARIABLES}")
        self.variable = variable
        self.name = variable
        self.scale = scale

    def fit(self, background: Showers) -> PhysicsScore:
        """Fit lambda for ``"response"``; the other variables need no calibration."""
        if self.variable == "response":
            self.scale = EnergyScale.fit(background)
        return self

    def evaluate(self, showers: Showers) -> dict[str, np.ndarray]:
        feats, names = shower_features(showers)
        col = {n: feats[:, i] for i, n in enumerate(names)}
        if self.variable == "depth":
            return {"score": col["depth"]}
        if self.variable == "width":
            e_layer = showers.layer_energies().astype(np.float64)
            widths = np.stack([col[f"width_{layer.name}"] for layer in showers.geometry.layers], axis=1)
            return {"score": _safe_div((widths * e_layer).sum(axis=1), e_layer.sum(axis=1))}
        if self.scale is None:
            raise InputError("the 'response' score needs the energy scale: call fit(background) first")
        if showers.incident_energy is None:
            raise InputError(f"{showers.source}: the 'response' score needs the incident energy of every shower")
        ratio = showers.deposited_energy() / (self.scale.value * showers.incident_energy)
        return {"score": np.abs(np.log(np.maximum(ratio, 1e-12))), "response": ratio}


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class AutoencoderScore:
    """Mean squared reconstruction error of :func:`voxel_inputs` under a small dense autoencoder.

    Trained on background only with Adam; ``validation`` of the training showers are held out and the weights
    of the epoch with the lowest validation loss are kept. Initialisation and shuffling follow ``seed``.
    """

    name = "autoencoder"

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (128, 32),
        latent: int = 8,
        epochs: int = 30,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        validation: float = 0.1,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        self.hidden, self.latent = tuple(hidden), int(latent)
        self.epochs, self.batch_size, self.learning_rate = int(epochs), int(batch_size), float(learning_rate)
        self.validation, self.seed, self.device = float(validation), int(seed), device
        self.model = None
        self.history: list[tuple[float, float]] = []

    def _build(self, n_in: int):
        import torch
        from torch import nn

        sizes = [n_in, *self.hidden, self.latent]
        rev = sizes[::-1]
        with torch.random.fork_rng(devices=[]):  # weights drawn from `seed`, global RNG state untouched
            torch.manual_seed(self.seed)
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(sizes):
                layers += [nn.Linear(a, b), nn.SiLU()]
            for j, (a, b) in enumerate(itertools.pairwise(rev)):
                layers.append(nn.Linear(a, b))
                if j < len(rev) - 2:
                    layers.append(nn.SiLU())
            return nn.Sequential(*layers)

    def fit(self, background: Showers) -> AutoencoderScore:
        import torch

        device = _device(self.device)
        x = torch.as_tensor(voxel_inputs(background), dtype=torch.float32)
        if len(x) < 20:
            raise InputError(f"{background.source}: {len(x)} showers are too few to train the autoencoder")
        gen = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(x), generator=gen)
        n_val = max(1, int(self.validation * len(x)))
        x_val, x_train = x[perm[:n_val]].to(device), x[perm[n_val:]].to(device)
        model = self._build(x.shape[1]).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        best, best_state = np.inf, None
        self.history = []
        for _ in range(self.epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=gen).to(device)
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                batch = x_train[order[start : start + self.batch_size]]
                loss = ((model(batch) - batch) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
            model.eval()
            with torch.no_grad():
                val = float(((model(x_val) - x_val) ** 2).mean())
            self.history.append((total / len(x_train), val))
            if val < best:
                best, best_state = val, {k: t.detach().clone() for k, t in model.state_dict().items()}
        model.load_state_dict(best_state)
        self.model = model.eval()
        return self

    def evaluate(self, showers: Showers, *, batch_size: int = 8192) -> dict[str, np.ndarray]:
        import torch

        if self.model is None:
            raise InputError("the autoencoder is not trained: call fit(background) first")
        device = next(self.model.parameters()).device
        x = voxel_inputs(showers)
        out = np.empty(len(x))
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32, device=device)
                out[start : start + len(xb)] = ((self.model(xb) - xb) ** 2).mean(dim=1).cpu().numpy()
        return {"score": out}


class SupervisedClassifier:
    """A scikit-learn MLP separating labelled signal from background; ``score`` is the logit of P(signal).

    ``features``: ``"high-level"`` (:func:`shower_features`), ``"voxels"`` (:func:`voxel_inputs` plus the
    high-level variables). The classes are not reweighted (the ranking, hence ROC and SIC, does not depend on
    the class proportions of an ideal classifier); 10% of the training set is held out for early stopping.
    """

    name = "supervised"

    def __init__(
        self,
        *,
        features: str = "high-level",
        hidden: tuple[int, ...] = (64, 64),
        max_iter: int = 300,
        seed: int = 0,
    ) -> None:
        if features not in ("high-level", "voxels"):
            raise InputError(f"features must be 'high-level' or 'voxels', not {features!r}")
        self.features, self.hidden, self.max_iter, self.seed = features, tuple(hidden), int(max_iter), int(seed)
        self.pipeline = None

    def _inputs(self, showers: Showers) -> np.ndarray:
        feats, _ = shower_features(showers)
        return feats if self.features == "high-level" else np.concatenate([feats, voxel_inputs(showers)], axis=1)

    def fit(self, signal: Showers, background: Showers) -> SupervisedClassifier:
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        xs, xb = self._inputs(signal), self._inputs(background)
        if len(xs) < 5 or len(xb) < 5:
            raise InputError(
                f"supervised training needs labelled showers of both classes ({len(xs)} signal, "
                f"{len(xb)} background given)"
            )
        x = np.concatenate([xs, xb])
        y = np.concatenate([np.ones(len(xs)), np.zeros(len(xb))])
        self.pipeline = make_pipeline(
            StandardScaler(),
            MLPClassifier(
                hidden_layer_sizes=self.hidden,
                early_stopping=True,
                validation_fraction=0.1,
                max_iter=self.max_iter,
                random_state=self.seed,
            ),
        ).fit(x, y)
        return self

    def evaluate(self, showers: Showers) -> dict[str, np.ndarray]:
        if self.pipeline is None:
            raise InputError("the supervised classifier is not trained: call fit(signal, background) first")
        p = np.clip(self.pipeline.predict_proba(self._inputs(showers))[:, 1], 1e-15, 1 - 1e-15)
        return {"score": np.log(p) - np.log1p(-p), "probability": p}
