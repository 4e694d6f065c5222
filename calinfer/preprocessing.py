"""Invertible preprocessing of showers for the two-step surrogate, every step with its log-Jacobian.

Notation: ``x`` are the recorded voxel energies (GeV, ``n`` voxels, ``L`` layers), ``E`` the
incident energy (GeV).

1. **Dequantization** (zero voxels). Recorded showers have exact zeros, so ``x`` has no density.
   The surrogate models the *dequantized* voxels ``x~ = x + u`` with ``u_i ~ U(0, delta)``
   independent (``delta`` a fixed width in GeV, stored in the checkpoint). Training draws ``u``;
   evaluation uses the cell midpoint ``u_i = delta / 2``, so ``log_prob`` is deterministic and
   returns ``log p(x~ | E)`` at ``x~ = x + delta/2``, a density in GeV^-n. The shift has unit
   Jacobian. Layer energies are those of ``x~``: ``E~_l = E_l + n_l delta / 2`` (so an empty layer
   has the finite ``log E~_l = log(n_l delta / 2)``).
2. **Layer log-ratio** (normalization by the layer energy, exact). Inside layer ``l`` the voxels
   ``x~_i`` are mapped to the layer energy ``E~_l = sum_i x~_i`` and the ``n_l - 1`` log-ratios
   ``w_i = log x~_i - log x~_r`` to a reference voxel ``r`` (the hottest voxel on average). This
   is a bijection from ``(0, inf)^n_l`` onto ``(0, inf) x R^(n_l - 1)`` (the layer sum is not a
   free coordinate, so no density is spent off the constraint), with
   ``log |det d(E~_l, w) / d x~| = log E~_l - sum_i log x~_i``.
3. **Normalization by the incident energy** ``r_l = E~_l / E`` with ``log|det| = -L log E``
   (this is the term that depends on ``E``), then **log** ``log r_l`` with ``log|det| = -sum log r_l``.
4. **Standardization** of each coordinate by fixed constants ``(v - m) / s``, ``log|det| = -sum log s``.
5. **Marginal Gaussianization** of the flow-II coordinates (optional, on by default for new models): a
   fixed monotone piecewise-linear map per coordinate from the empirical quantiles of the training data to
   the normal quantiles (linear beyond the outer knots), ``log|det| = sum log slope``. The empty-voxel
   spike and the threshold edge of sparse voxels become smooth, nearly normal marginals, so flow II only
   has to learn the dependence between voxels and on the context.

Flow I models the standardized ``log(E~_l / E)`` given the standardized ``log E``; flow II models
the standardized log-ratios given ``log E`` and flow I's variables. Summing all log-Jacobians with
the two flow densities gives ``log p(x~ | E)`` exactly. Every transform below returns
``(output, log|det J|)`` and has an inverse returning the inverse map's log-determinant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from calinfer.geometry import Geometry

__all__ = [
    "VOXEL_CONTEXTS",
    "LayerLogRatio",
    "Log",
    "MarginalGaussianize",
    "ScaleByIncident",
    "ShowerPreprocessing",
    "Standardize",
    "auto_dequantization_width",
    "dequantize",
    "quantize",
    "readout_constants",
]


VOXEL_CONTEXTS = ("incident", "layers", "estimated")
"""What flow II can be conditioned on (:attr:`ShowerPreprocessing.voxel_context`)."""


def dequantize(
    voxels: torch.Tensor, width: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add dequantization noise ``U(0, width)`` (GeV) to every voxel, or ``width / 2`` without a generator.

    Returns ``(x~, log|det|)``; a shift has zero log-determinant.
    """
    if generator is None:
        shifted = voxels + 0.5 * width
    else:
        noise = torch.rand(voxels.shape, generator=generator, dtype=voxels.dtype, device=generator.device)
        shifted = voxels + width * noise.to(voxels.device)
    return shifted, torch.zeros(len(voxels), dtype=voxels.dtype, device=voxels.device)


def quantize(
    dequantized: torch.Tensor, width: float, threshold: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Map dequantized voxels ``x~`` back to recorded ones ``x`` (GeV).

    ``x~`` below ``max(width, threshold)`` is a zero voxel (the read-out ``threshold`` is the smallest
    recorded non-zero energy; a model's mass between the zero cell and the threshold is where no
    recorded voxel lies). Above it, ``x`` is drawn from the cell ``[x~ - width, x~]`` cut at the
    threshold, uniformly (the conditional of ``x`` given ``x~`` for a density flat within a cell), or
    the cell's midpoint (cut at the threshold) without a generator.
    """
    lower = torch.clamp(dequantized - width, min=threshold)
    if generator is None:
        x = torch.maximum(dequantized - 0.5 * width, lower)
    else:
        u = torch.rand(dequantized.shape, generator=generator, dtype=dequantized.dtype, device=generator.device)
        x = lower + (dequantized - lower) * u.to(dequantized.device)
    return torch.where(dequantized < max(width, threshold), torch.zeros_like(dequantized), x)


class ScaleByIncident:
    """``v -> v / E`` for every coordinate, ``log|det| = -d log E`` (depends on the incident energy)."""

    @staticmethod
    def forward(v: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return v / energy[:, None], -v.shape[1] * torch.log(energy)

    @staticmethod
    def inverse(r: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return r * energy[:, None], r.shape[1] * torch.log(energy)


class Log:
    """``v -> log v`` elementwise, ``log|det| = -sum log v``."""

    @staticmethod
    def forward(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.log(v)
        return y, -y.sum(dim=1)

    @staticmethod
    def inverse(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(y), y.sum(dim=1)


class Standardize:
    """``v -> (v - mean) / scale`` per coordinate, ``log|det| = -sum log scale``."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.log_det = -float(np.log(self.scale).sum())

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.as_tensor(self.mean, dtype=v.dtype, device=v.device)
        scale = torch.as_tensor(self.scale, dtype=v.dtype, device=v.device)
        return (v - mean) / scale, torch.full((len(v),), self.log_det, dtype=v.dtype, device=v.device)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.as_tensor(self.mean, dtype=y.dtype, device=y.device)
        scale = torch.as_tensor(self.scale, dtype=y.dtype, device=y.device)
        return y * scale + mean, torch.full((len(y),), -self.log_det, dtype=y.dtype, device=y.device)


class LayerLogRatio:
    """Per-layer bijection ``x~ -> (E~_1..E~_L, w)`` with ``w`` the log-ratios to one reference voxel per layer.

    ``forward`` returns ``cat([E~ (N, L), w (N, n - L)])``; ``w`` lists, layer after layer, the
    voxels other than the reference in flat order. ``log|det| = sum_l log E~_l - sum_i log x~_i``.
    """

    def __init__(self, layer_slices: Sequence[tuple[int, int]], reference: Sequence[int]) -> None:
        self.layer_slices = [(int(a), int(b)) for a, b in layer_slices]
        self.reference = [int(r) for r in reference]
        if len(self.reference) != len(self.layer_slices):
            raise ValueError("one reference voxel per layer is needed")
        for (a, b), r in zip(self.layer_slices, self.reference, strict=True):
            if not a <= r < b:
                raise ValueError(f"reference voxel {r} is not inside its layer [{a}, {b})")
        self.n_voxels = self.layer_slices[-1][1]
        self.n_layers = len(self.layer_slices)
        ref_set = set(self.reference)
        self.keep = np.array([i for i in range(self.n_voxels) if i not in ref_set], dtype=np.int64)
        layer_of = np.concatenate([np.full(b - a, k) for k, (a, b) in enumerate(self.layer_slices)])
        self.ref_of_keep = np.asarray(self.reference, dtype=np.int64)[layer_of[self.keep]]

    def forward(self, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logx = torch.log(xt)
        energies = torch.stack([xt[:, a:b].sum(dim=1) for a, b in self.layer_slices], dim=1)
        keep = torch.as_tensor(self.keep, device=xt.device)
        ref = torch.as_tensor(self.ref_of_keep, device=xt.device)
        w = logx[:, keep] - logx[:, ref]
        log_det = torch.log(energies).sum(dim=1) - logx.sum(dim=1)
        return torch.cat([energies, w], dim=1), log_det

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        energies, w = y[:, : self.n_layers], y[:, self.n_layers :]
        logits = torch.zeros(len(y), self.n_voxels, dtype=y.dtype, device=y.device)
        logits[:, torch.as_tensor(self.keep, device=y.device)] = w
        parts = [energies[:, [k]] * torch.softmax(logits[:, a:b], dim=1) for k, (a, b) in enumerate(self.layer_slices)]
        xt = torch.cat(parts, dim=1)
        log_det = torch.log(xt).sum(dim=1) - torch.log(energies).sum(dim=1)
        return xt, log_det


class MarginalGaussianize:
    """Per-coordinate monotone piecewise-linear map ``v_d -> z_d`` sending knots ``knots[d, k]`` to ``levels[k]``.

    ``levels`` are normal quantiles shared by all coordinates, ``knots`` the matching empirical quantiles of
    each coordinate; beyond the outer knots the map continues linearly with the slope of the outer
    ``tail`` segments combined. ``log|det| = sum_d log slope_d(v_d)`` (piecewise constant).
    """

    def __init__(self, knots: np.ndarray, levels: np.ndarray, tail: int = 4) -> None:
        self.knots = np.asarray(knots, dtype=np.float64)
        self.levels = np.asarray(levels, dtype=np.float64)
        if self.knots.ndim != 2 or self.knots.shape[1] != len(self.levels) or len(self.levels) < 2 * tail + 2:
            raise ValueError("knots must have shape (D, K) with K = len(levels) > 2 tail + 1")
        if np.any(np.diff(self.knots, axis=1) <= 0) or np.any(np.diff(self.levels) <= 0):
            raise ValueError("knots and levels must be strictly increasing")
        k, lv = self.knots, self.levels
        self.slope_lo = (lv[tail] - lv[0]) / (k[:, tail] - k[:, 0])
        self.slope_hi = (lv[-1] - lv[-1 - tail]) / (k[:, -1] - k[:, -1 - tail])
        self.slopes = np.diff(lv)[None, :] / np.diff(k, axis=1)  # (D, K - 1)
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}

    @classmethod
    def fit(cls, values: np.ndarray, n_knots: int = 96, z_max: float = 3.5) -> MarginalGaussianize:
        """Knots at the empirical quantiles of ``values`` (N, D) for normal levels evenly spaced in ±``z_max``."""
        from scipy.special import ndtr

        levels = np.linspace(-z_max, z_max, n_knots)
        knots = np.quantile(values, ndtr(levels), axis=0).T.copy()  # (D, K)
        spread = np.maximum(knots[:, -1] - knots[:, 0], 1e-6)
        min_gap = 1e-6 * spread
        for j in range(1, n_knots):  # strictly increasing even where quantiles coincide
            knots[:, j] = np.maximum(knots[:, j], knots[:, j - 1] + min_gap)
        return cls(knots, levels)

    def _tensors(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = tuple(torch.as_tensor(a, dtype=dtype, device=device).contiguous() for a in (
                self.knots, self.levels, self.slopes, self.slope_lo, self.slope_hi))
        return self._cache[key]

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        knots, levels, slopes, lo, hi = self._tensors(v.dtype, v.device)
        n_k = knots.shape[1]
        vt = v.T.contiguous()  # (D, N)
        seg = (torch.searchsorted(knots, vt) - 1).clamp(0, n_k - 2)  # (D, N)
        above = vt > knots[:, -1:]
        slope = torch.gather(slopes, 1, seg)
        slope = torch.where(vt < knots[:, :1], lo[:, None], torch.where(above, hi[:, None], slope))
        anchor = torch.where(above, n_k - 1, seg)  # the knot the linear piece starts from
        z = levels[anchor] + slope * (vt - torch.gather(knots, 1, anchor))
        return z.T, torch.log(slope).sum(dim=0)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        knots, levels, slopes, lo, hi = self._tensors(z.dtype, z.device)
        n_k = knots.shape[1]
        zt = z.T.contiguous()
        seg = (torch.searchsorted(levels, zt) - 1).clamp(0, n_k - 2)
        above = zt > levels[-1]
        slope = torch.gather(slopes, 1, seg)
        slope = torch.where(zt < levels[0], lo[:, None], torch.where(above, hi[:, None], slope))
        anchor = torch.where(above, n_k - 1, seg)
        v = torch.gather(knots, 1, anchor) + (zt - levels[anchor]) / slope
        return v.T, -torch.log(slope).sum(dim=0)

    def to_dict(self) -> dict:
        return {"knots": self.knots.tolist(), "levels": self.levels.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> MarginalGaussianize:
        return cls(np.asarray(data["knots"]), np.asarray(data["levels"]))


def auto_dequantization_width(voxels: np.ndarray) -> float:
    """Dequantization width (GeV) for showers with exact zeros: the smallest positive voxel energy rounded
    down to a power of ten; a thousandth of that when there are no zeros; 1e-6 when nothing is positive.

    With this width the cells ``[0, delta)`` of zero voxels never overlap the dequantized non-zero
    voxels, and with a read-out threshold the two regions are adjacent. The width is never below a
    millionth of the median positive voxel energy (rounded down to a power of ten): data without a
    threshold (continuous shares that underflow to tiny or denormal float32 values) would otherwise get a
    width whose logarithm overflows float32 arithmetic; any width gives a valid density of ``x + u``.
    """
    voxels = np.asarray(voxels)
    positive = voxels[voxels > 0]
    if positive.size == 0:
        return 1e-6
    width = 10.0 ** math.floor(math.log10(float(positive.min())) + 1e-9)
    if not np.any(voxels == 0):
        width *= 1e-3
    floor = 10.0 ** math.floor(math.log10(1e-6 * float(np.median(positive))) + 1e-9)
    return float(max(width, floor))


def readout_constants(voxels: np.ndarray, energies: np.ndarray, width: float) -> tuple[float, float]:
    """``(energy_response, readout_threshold)`` of showers (voxels ``(N, n)``, energies ``(N,)``, GeV).

    The response is the median of ``sum_i x~_i / E`` (midpoint-dequantized, width ``width``), the
    threshold the smallest non-zero voxel energy (0 without any).
    """
    voxels = np.asarray(voxels, dtype=np.float64)
    positive = voxels[voxels > 0]
    response = np.median((voxels.sum(axis=1) + 0.5 * width * voxels.shape[1]) / np.asarray(energies, dtype=np.float64))
    return float(response), float(positive.min()) if positive.size else 0.0


def _robust_scale(values: np.ndarray, tail: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and scale: the standard deviation, widened so the 0.1% and 99.9% quantiles land in ``±tail``."""
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    lo, hi = np.quantile(values, [0.001, 0.999], axis=0)
    scale = np.maximum.reduce([std, (hi - mean) / tail, (mean - lo) / tail, np.full_like(std, 1e-6)])
    return mean, scale


@dataclass
class ShowerPreprocessing:
    """The fitted preprocessing chain of a surrogate (all constants are stored in checkpoints).

    Attributes
    ----------
    layer_slices: ``[(start, stop), ...]`` of each layer in the flat voxel vector.
    reference: flat index of the reference voxel of each layer.
    dequantization_width: ``delta`` in GeV.
    log_energy_mean, log_energy_scale: standardization of ``log(E / GeV)`` for the context.
    layer_mean, layer_scale: standardization of ``log(E~_l / E)`` (flow I variables).
    ratio_mean, ratio_scale: standardization of the log-ratios ``w``.
    gaussianize: marginal Gaussianization of the standardized ``w`` (flow II variables), or ``None``.
    voxel_context: what flow II is conditioned on: ``"incident"`` (standardized ``log E`` and flow I's
        variables), ``"layers"`` (the standardized ``log E~_l`` only) or ``"estimated"`` (the ``"incident"``
        context with ``E`` replaced by the estimate ``E^ = sum_l E~_l / energy_response`` from the layer
        energies). With ``"layers"`` and ``"estimated"`` the voxel density given the layer energies does not
        depend on ``E``, and the full likelihood in ``E`` is the layer likelihood plus a constant.
    energy_response: median of ``sum_l E~_l / E`` over the training showers (for ``"estimated"``).
    readout_threshold: smallest non-zero recorded voxel energy of the training showers (GeV); sampled
        voxels below it are recorded as zero (:func:`quantize`).
    """

    layer_slices: list[tuple[int, int]]
    reference: list[int]
    dequantization_width: float
    log_energy_mean: float
    log_energy_scale: float
    layer_mean: np.ndarray
    layer_scale: np.ndarray
    ratio_mean: np.ndarray
    ratio_scale: np.ndarray
    gaussianize: MarginalGaussianize | None = None
    voxel_context: str = "incident"
    energy_response: float = 1.0
    readout_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.voxel_context not in VOXEL_CONTEXTS:
            raise ValueError(f"voxel_context must be one of {VOXEL_CONTEXTS}, not {self.voxel_context!r}")
        if not (self.energy_response > 0 and math.isfinite(self.energy_response)) or not self.readout_threshold >= 0:
            raise ValueError("energy_response must be positive and readout_threshold non-negative")
        self.ratio = LayerLogRatio(self.layer_slices, self.reference)
        self.layer_std = Standardize(self.layer_mean, self.layer_scale)
        self.ratio_std = Standardize(self.ratio_mean, self.ratio_scale)
        self.layer_sizes = np.array([b - a for a, b in self.layer_slices], dtype=np.float64)

    @property
    def n_layers(self) -> int:
        return len(self.layer_slices)

    @property
    def n_voxels(self) -> int:
        return self.ratio.n_voxels

    @property
    def context_dim(self) -> int:
        """Context size of flow I."""
        return 1

    @property
    def voxel_context_dim(self) -> int:
        """Context size of flow II."""
        return self.n_layers + (self.voxel_context != "layers")

    def flow2_context(self, context: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        """Flow II's context from flow I's context (standardized ``log E``) and variables ``y1``.

        ``"layers"``: ``(log E~_l - m_l - m_E) / hypot(s_l, s_E)`` = ``(y1 s_l + c s_E) / hypot(s_l, s_E)``;
        ``"estimated"``: ``[c^, y1^]``, the ``"incident"`` context at ``E^ = sum_l E~_l / energy_response``.
        Neither depends on ``E``.
        """
        if self.voxel_context == "incident":
            return torch.cat([context, y1], dim=1)
        s_l = torch.as_tensor(self.layer_scale, dtype=y1.dtype, device=y1.device)
        if self.voxel_context == "layers":
            return (y1 * s_l + context * self.log_energy_scale) / torch.sqrt(s_l**2 + self.log_energy_scale**2)
        m_l = torch.as_tensor(self.layer_mean, dtype=y1.dtype, device=y1.device)
        log_layers = y1 * s_l + m_l + (context * self.log_energy_scale + self.log_energy_mean)  # log E~_l
        log_estimate = torch.logsumexp(log_layers, dim=1, keepdim=True) - math.log(self.energy_response)
        context_hat = (log_estimate - self.log_energy_mean) / self.log_energy_scale
        return torch.cat([context_hat, (log_layers - log_estimate - m_l) / s_l], dim=1)

    @classmethod
    def fit(
        cls,
        geometry: Geometry,
        voxels: np.ndarray,
        energies: np.ndarray,
        *,
        dequantization_width: float | None = None,
        tail: float = 4.0,
        seed: int = 0,
        max_showers: int = 200_000,
        gaussianize: bool = True,
        voxel_context: str = "incident",
    ) -> ShowerPreprocessing:
        """Fit the constants on training showers (voxels ``(N, n)`` and incident energies ``(N,)`` in GeV).

        ``dequantization_width`` (GeV) defaults to :func:`auto_dequantization_width` of ``voxels``;
        ``gaussianize`` adds the marginal Gaussianization of the flow-II coordinates (step 5);
        ``voxel_context`` chooses flow II's conditioning (see the class attributes).
        """
        if dequantization_width is None:
            dequantization_width = auto_dequantization_width(voxels)
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(voxels), size=min(len(voxels), max_showers), replace=False))
        vox = np.asarray(voxels[idx], dtype=np.float64)
        e = np.asarray(energies[idx], dtype=np.float64)
        slices = [(s.start, s.stop) for s in geometry.layer_slices]
        mean_vox = vox.mean(axis=0)
        reference = [a + int(np.argmax(mean_vox[a:b])) for a, b in slices]
        gen = torch.Generator().manual_seed(seed)
        xt, _ = dequantize(torch.as_tensor(vox), dequantization_width, gen)
        y, _ = LayerLogRatio(slices, reference).forward(xt)
        y = y.numpy()
        n_l = len(slices)
        log_frac = np.log(y[:, :n_l] / e[:, None])
        layer_mean, layer_scale = _robust_scale(log_frac, tail)
        ratio_mean, ratio_scale = _robust_scale(y[:, n_l:], tail)
        gauss = MarginalGaussianize.fit((y[:, n_l:] - ratio_mean) / ratio_scale) if gaussianize else None
        log_e = np.log(e)
        response, threshold = readout_constants(vox, e, dequantization_width)
        return cls(
            layer_slices=slices,
            reference=reference,
            dequantization_width=float(dequantization_width),
            log_energy_mean=float(log_e.mean()),
            log_energy_scale=float(max(log_e.std(), 1e-3)),
            layer_mean=layer_mean,
            layer_scale=layer_scale,
            ratio_mean=ratio_mean,
            ratio_scale=ratio_scale,
            gaussianize=gauss,
            voxel_context=voxel_context,
            energy_response=response,
            readout_threshold=threshold,
        )

    # --- pieces of the chain -------------------------------------------------------------
    def context(self, energies: torch.Tensor) -> torch.Tensor:
        """Flow-I context: standardized ``log E`` as a column, shape (N, 1)."""
        return ((torch.log(energies) - self.log_energy_mean) / self.log_energy_scale)[:, None]

    def shower_forward(self, voxels: torch.Tensor, generator: torch.Generator | None = None):
        """E-independent part: voxels (GeV) -> ``(E~ (N, L), flow-II variables (N, n - L), log|det|)``.

        ``log|det|`` is that of ``x~ -> (E~, standardized w)``; it belongs to ``p(voxels | layers)``.
        """
        xt, ld0 = dequantize(voxels, self.dequantization_width, generator)
        y, ld1 = self.ratio.forward(xt)
        u, ld2 = self.ratio_std.forward(y[:, self.n_layers :])
        if self.gaussianize is not None:
            u, ld3 = self.gaussianize.forward(u)
            ld2 = ld2 + ld3
        return y[:, : self.n_layers], u, ld0 + ld1 + ld2

    def layers_forward(self, layer_energies: torch.Tensor, energies: torch.Tensor):
        """E-dependent part: dequantized layer energies ``E~`` (GeV) -> (flow-I variables, log|det|)."""
        r, ld0 = ScaleByIncident.forward(layer_energies, energies)
        v, ld1 = Log.forward(r)
        y, ld2 = self.layer_std.forward(v)
        return y, ld0 + ld1 + ld2

    def layers_inverse(self, y: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
        """Flow-I variables -> dequantized layer energies ``E~`` (GeV)."""
        v, _ = self.layer_std.inverse(y)
        r, _ = Log.inverse(v)
        layer_energies, _ = ScaleByIncident.inverse(r, energies)
        return layer_energies

    def shower_inverse(
        self, layer_energies: torch.Tensor, u: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(E~, flow-II variables)`` -> recorded voxels (GeV; :func:`quantize`, ``generator`` draws in the cell)."""
        if self.gaussianize is not None:
            u, _ = self.gaussianize.inverse(u)
        w, _ = self.ratio_std.inverse(u)
        xt, _ = self.ratio.inverse(torch.cat([layer_energies, w], dim=1))
        return quantize(xt, self.dequantization_width, self.readout_threshold, generator)

    def dequantized_layer_energies(self, layer_energies: torch.Tensor) -> torch.Tensor:
        """Layer sums of the recorded voxels -> those of the midpoint-dequantized voxels: ``E_l + n_l delta / 2``."""
        sizes = torch.as_tensor(self.layer_sizes, dtype=layer_energies.dtype, device=layer_energies.device)
        return layer_energies + 0.5 * self.dequantization_width * sizes

    # --- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "layer_slices": [list(s) for s in self.layer_slices],
            "reference": list(self.reference),
            "dequantization_width": self.dequantization_width,
            "log_energy_mean": self.log_energy_mean,
            "log_energy_scale": self.log_energy_scale,
            "layer_mean": self.layer_mean.tolist(),
            "layer_scale": self.layer_scale.tolist(),
            "ratio_mean": self.ratio_mean.tolist(),
            "ratio_scale": self.ratio_scale.tolist(),
            "gaussianize": None if self.gaussianize is None else self.gaussianize.to_dict(),
            "voxel_context": self.voxel_context,
            "energy_response": self.energy_response,
            "readout_threshold": self.readout_threshold,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ShowerPreprocessing:
        names = ("layer_mean", "layer_scale", "ratio_mean", "ratio_scale")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in names}
        bad_scale = np.any(arrays["ratio_scale"] <= 0) or np.any(arrays["layer_scale"] <= 0)
        if not all(np.all(np.isfinite(a)) for a in arrays.values()) or bad_scale:
            raise ValueError("non-finite or non-positive preprocessing constants")
        return cls(
            layer_slices=[(int(a), int(b)) for a, b in data["layer_slices"]],
            reference=[int(r) for r in data["reference"]],
            gaussianize=None if data.get("gaussianize") is None else MarginalGaussianize.from_dict(data["gaussianize"]),
            voxel_context=data.get("voxel_context", "incident"),
            energy_response=float(data.get("energy_response", 1.0)),
            readout_threshold=float(data.get("readout_threshold", 0.0)),
            dequantization_width=float(data["dequantization_width"]),
            log_energy_mean=float(data["log_energy_mean"]),
            log_energy_scale=float(data["log_energy_scale"]),
            **arrays,
        )

