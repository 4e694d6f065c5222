"""Conditional density estimator p(x | m_jj) on a rational-quadratic spline flow.

The flow is :class:`calinfer.flows.ConditionalFlow` (masked autoregressive spline blocks). The
features ``x`` are preprocessed with :class:`~calinfer.resonant.preprocessing.LogitScaler` (whose
log-Jacobian is added, so :meth:`DensityEstimator.log_prob` is a density in the original feature
units) and the condition ``m_jj`` is standardised. As in CATHODE, the models of the
``n_best_epochs`` epochs with the lowest validation loss are kept; the estimator is their
equal-weight mixture: :meth:`~DensityEstimator.sample` draws from each in equal shares and
:meth:`~DensityEstimator.log_prob` is the log of the mean density; :meth:`~DensityEstimator.latent` maps
events to the base space of the best of them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch

from calinfer.errors import InputError, ModelError
from calinfer.flows import ConditionalFlow, FlowConfig
from calinfer.preprocessing import MarginalGaussianize
from calinfer.resonant.preprocessing import LogitScaler

__all__ = ["DensityEstimator"]


class DensityEstimator:
    """Spline flow for p(x | m), scikit-learn style (``fit``, ``log_prob``, ``sample``, ``latent``).

    Parameters: ``n_blocks`` RQ-spline blocks of ``kind`` ``"autoregressive"`` or ``"coupling"`` (see
    :class:`~calinfer.flows.FlowConfig`; ``n_res_blocks`` residual blocks of ``hidden`` units, ``dropout`` in
    them while training, ``n_bins`` bins on ``[-tail_bound, tail_bound]``) separated by permutations;
    Adam with learning rate ``lr`` and cosine decay over ``epochs``; a random
    ``val_fraction`` of the training events selects the ``n_best_epochs`` kept models.

    ``bootstrap=True`` trains on a bootstrap resample of the events (drawn with replacement, as many as
    there are) and validates on the events never drawn (about 37%). Flows of an ensemble then differ by
    the statistical fluctuations of their training sample as well as by their initialisation, so the
    ensemble spread includes the finite-sample error of the density estimate.

    ``unbounded``: indices of features without a natural bound, only standardised (see
    :class:`~calinfer.resonant.preprocessing.LogitScaler`).

    ``gaussianize``: after the logit scaling, each logit-mapped coordinate (not the ``unbounded`` ones, taken as
    near-normal already) goes through a fixed monotone piecewise-linear map
    of its training quantiles onto normal quantiles (:class:`calinfer.preprocessing.MarginalGaussianize`, its
    log-Jacobian included), so the flow starts from normal marginals and learns the correlations and the m_jj
    dependence. Without it, a heavy-tailed feature (the lighter jet mass: 0.9% of the sideband events beyond 3
    standard deviations after the logit, up to 12) reaches past the splines' ``tail_bound``, where the flow is the
    identity on a normal base, and the flow cannot put enough events there (``analyses/flow_nll_screen.py``).
    ``gaussianize_knots`` normal levels evenly spaced in ±3.5 carry the map: the model is then a quantile histogram
    of the training events refined by the flow, so too many knots imprint their sampling noise (measured best:
    16-24 knots for 4k events, 32-48 for 46k; 32 by default). Like the logit bounds, the map is fitted on all the
    events given to :meth:`fit` (validation ones included; a knot moves by O(1/N) per event). ``gaussianize=False``
    is the recipe before stop 22.

    ``flatten_mass``: exponent ``a`` of training weights ``w(m) ~ p(m)^-a`` (``p`` a histogram of the training
    masses in ``mass_bins`` bins; weights normalised to mean 1, training and validation loss alike). The
    model is of ``p(x | m)``, which reweighting the marginal of ``m`` leaves unchanged, so any ``a`` fits
    the same density; it moves the flow's accuracy from the populous low masses of a falling spectrum
    towards the sparse high ones (``a = 1``: equal weight per unit of m), at the cost of a smaller effective
    sample.

    After :meth:`fit`, ``held_out_x_`` and ``held_out_m_`` hold the validation events (not trained on).
    """

    def __init__(
        self,
        *,
        kind: str = "autoregressive",
        n_blocks: int = 4,
        hidden: int = 128,
        n_res_blocks: int = 2,
        n_bins: int = 8,
        tail_bound: float = 4.0,
        dropout: float = 0.0,
        epochs: int = 50,
        batch_size: int = 1024,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        unbounded: Sequence[int] = (),
        gaussianize: bool = True,
        gaussianize_knots: int = 32,
        flatten_mass: float = 0.0,
        mass_bins: int = 20,
        val_fraction: float = 0.2,
        n_best_epochs: int = 5,
        bootstrap: bool = False,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.n_blocks = n_blocks
        self.hidden = hidden
        self.n_res_blocks = n_res_blocks
        self.n_bins = n_bins
        self.tail_bound = tail_bound
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.unbounded = tuple(unbounded)
        self.gaussianize = gaussianize
        self.gaussianize_knots = gaussianize_knots
        self.flatten_mass = flatten_mass
        self.mass_bins = mass_bins
        self.val_fraction = val_fraction
        self.n_best_epochs = n_best_epochs
        self.bootstrap = bootstrap
        self.seed = seed
        self.models_: list | None = None

    def _new_model(self, n_features: int) -> ConditionalFlow:
        config = FlowConfig(
            dim=n_features,
            context_dim=1,
            kind=self.kind,
            n_blocks=self.n_blocks,
            hidden=self.hidden,
            n_res_blocks=self.n_res_blocks,
            n_bins=self.n_bins,
            tail_bound=self.tail_bound,
            dropout=self.dropout,
            seed=self.seed,
        )
        return ConditionalFlow(config)

    def _context(self, m: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(
            ((np.asarray(m, dtype=np.float64) - self.m_mean_) / self.m_std_)[:, None], dtype=torch.float32
        )

    @staticmethod
    def _check_xm(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        m = np.asarray(m, dtype=np.float64).reshape(-1)
        if x.ndim != 2 or len(x) != len(m):
            raise InputError(f"need x of shape (N, D) and m of shape (N,), got {x.shape} and {m.shape}")
        if not (np.isfinite(x).all() and np.isfinite(m).all()):
            raise InputError("x and m must be finite")
        return x, m

    def fit(self, x: np.ndarray, m: np.ndarray, *, progress: bool = False) -> DensityEstimator:
        """Train on features ``x`` (N, D) and masses ``m`` (N,) (sideband events)."""
        x, m = self._check_xm(x, m)
        if len(x) < 10:
            raise InputError(f"need at least 10 training events, got {len(x)}")
        rng = np.random.default_rng(self.seed)
        torch_gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        self.n_features_ = x.shape[1]
        self.scaler_ = LogitScaler(unbounded=self.unbounded).fit(x)
        # the Gaussianization acts on the logit-mapped features; ``unbounded`` ones are taken as near-normal
        self.gaussianized_ = np.flatnonzero(self.scaler_.logit_ & self.gaussianize)
        self.gaussianizer_ = (
            MarginalGaussianize.fit(self.scaler_.transform(x)[0][:, self.gaussianized_], n_knots=self.gaussianize_knots)
            if len(self.gaussianized_)
            else None
        )
        self.m_mean_, self.m_std_ = float(m.mean()), float(max(m.std(), 1e-12))
        z = torch.as_tensor(self._forward(x)[0], dtype=torch.float32)
        c = self._context(m)
        w = torch.as_tensor(self._mass_weights(m), dtype=torch.float32)
        if self.bootstrap:
            train = rng.integers(0, len(x), size=len(x))
            val = np.setdiff1d(np.arange(len(x)), train)
        else:
            perm = rng.permutation(len(x))
            n_val = max(1, round(self.val_fraction * len(x)))
            val, train = perm[:n_val], perm[n_val:]
        # events this estimator never trained on (they only select the kept epochs): a held-out check
        self.held_out_x_, self.held_out_m_ = x[val], m[val]
        model = self._new_model(self.n_features_)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = math.ceil(len(train) / self.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs * steps_per_epoch))
        best: list[tuple[float, int, dict]] = []
        self.history_: list[dict] = []
        epochs = range(self.epochs)
        if progress:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc="flow", unit="epoch")
        train_t = torch.as_tensor(train)
        for epoch in epochs:
            model.train()
            order = train_t[torch.randperm(len(train_t), generator=torch_gen)]
            total = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                loss = -(w[idx] * model.log_prob(z[idx], c[idx])).sum() / w[idx].sum()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            val_loss = self._nll(model, z[val], c[val], w[val])
            self.history_.append({"epoch": epoch, "train_loss": total / len(train), "val_loss": val_loss})
            if np.isfinite(val_loss):
                best.append((val_loss, epoch, copy.deepcopy(model.state_dict())))
                best = sorted(best, key=lambda t: t[0])[: self.n_best_epochs]
        if not best:
            raise ModelError("the flow never reached a finite validation loss; lower lr or check the inputs")
        self.best_epochs_ = [e for _, e, _ in best]
        self.models_ = []
        for _, _, state in best:
            mdl = self._new_model(self.n_features_)
            mdl.load_state_dict(state)
            mdl.eval()
            self.models_.append(mdl)
        return self

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features ``x`` (N, D) -> the flow's coordinates and ``log|det dz/dx|`` (float64)."""
        z, logdet = self.scaler_.transform(x)
        if self.gaussianizer_ is not None:
            cols = self.gaussianized_
            zt, extra = self.gaussianizer_.forward(torch.as_tensor(z[:, cols]))
            z[:, cols], logdet = zt.numpy(), logdet + extra.numpy()
        return z, logdet

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        """The flow's coordinates (N, D) -> features."""
        if self.gaussianizer_ is not None:
            z = z.copy()
            cols = self.gaussianized_
            z[:, cols] = self.gaussianizer_.inverse(torch.as_tensor(z[:, cols]))[0].numpy()
        return self.scaler_.inverse(z)

    def _mass_weights(self, m: np.ndarray) -> np.ndarray:
        """Training weights ``p(m)^-flatten_mass`` from a histogram of ``m``, mean 1 (all ones for exponent 0)."""
        if self.flatten_mass == 0:
            return np.ones(len(m))
        counts, edges = np.histogram(m, bins=self.mass_bins)
        which = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, len(counts) - 1)
        w = counts[which].astype(np.float64) ** -float(self.flatten_mass)
        return w / w.mean()

    def _nll(self, model, z: torch.Tensor, c: torch.Tensor, w: torch.Tensor, batch: int = 65536) -> float:
        """Weighted mean negative log-likelihood (weights ``w``, see :meth:`_mass_weights`)."""
        model.eval()
        with torch.no_grad():
            lp = torch.cat([model.log_prob(z[i : i + batch], c[i : i + batch]) for i in range(0, len(z), batch)])
        return float(-(w * lp).sum() / w.sum())

    def _fitted(self) -> list:
        if self.models_ is None:
            raise ModelError("DensityEstimator is not fitted; call fit() first")
        return self.models_

    def log_prob(self, x: np.ndarray, m: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
        """``log p(x | m)`` (N,) in the units of ``x``, float64 (mixture of the kept epochs).

        The support is the box of the preprocessing bounds (training range plus margin); events
        outside it get ``-inf``.
        """
        models = self._fitted()
        x, m = self._check_xm(x, m)
        z, logdet = self._forward(x)
        zt = torch.as_tensor(z, dtype=torch.float32)
        c = self._context(m)
        out = np.empty((len(models), len(x)))
        with torch.no_grad():
            for k, mdl in enumerate(models):
                for i in range(0, len(x), batch_size):
                    out[k, i : i + batch_size] = (
                        mdl.log_prob(zt[i : i + batch_size], c[i : i + batch_size]).double().numpy()
                    )
        mix = np.logaddexp.reduce(out, axis=0) - np.log(len(models))
        return np.where(self.scaler_.in_bounds(x), mix + logdet, -np.inf)

    def latent(self, x: np.ndarray, m: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
        """Base-space coordinates ``z`` (N, D) of the events under the best-validation-epoch model.

        Where the flow describes the data, ``z`` is standard normal at every ``m``: a function of ``z`` does
        not depend on ``m`` (the latent space of LaCATHODE, arXiv:2210.14924). Features outside the
        preprocessing bounds are clipped to them first.
        """
        model = self._fitted()[0]
        x, m = self._check_xm(x, m)
        zt = torch.as_tensor(self._forward(x)[0], dtype=torch.float32)
        c = self._context(m)
        with torch.no_grad():
            out = [
                model.to_base(zt[i : i + batch_size], c[i : i + batch_size])[0] for i in range(0, len(x), batch_size)
            ]
        return torch.cat(out).double().numpy() if out else np.empty((0, self.n_features_))

    def sample(self, m: np.ndarray, *, seed: int | np.random.Generator = 0, batch_size: int = 65536) -> np.ndarray:
        """One sample of x for each mass in ``m`` (N,), drawn from the kept epochs in equal shares."""
        models = self._fitted()
        m = np.asarray(m, dtype=np.float64).reshape(-1)
        rng = np.random.default_rng(seed)
        which = rng.permutation(np.arange(len(m)) % len(models))
        c = self._context(m)
        z = torch.empty((len(m), self.n_features_), dtype=torch.float32)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        for k, mdl in enumerate(models):
            idx = np.flatnonzero(which == k)
            for i in range(0, len(idx), batch_size):
                sel = torch.as_tensor(idx[i : i + batch_size])
                z[sel] = mdl.sample(c[sel], generator=gen)
        return self._inverse(z.double().numpy())
