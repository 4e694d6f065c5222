"""Conditional rational-quadratic spline flows: our small interface over ``normflows``.

A :class:`ConditionalFlow` is a bijection ``z = f(x; c)`` built from normflows' neural-spline
blocks (Durkan et al., arXiv:1906.04032), either masked autoregressive or coupling blocks,
separated by fixed permutations, on top of a standard normal base density. It exposes only

* ``log_prob(x, context)``: ``log N(f(x; c); 0, 1) + log |det df/dx|`` per row, and
* ``sample(context, generator)``: one draw per context row,

so that the rest of calinfer never touches the flow library. The networks use a smooth
activation (SiLU by default), which makes ``log_prob`` continuously differentiable in the
context; likelihood fits over the incident energy rely on that.

Importing this module gives normflows' spline code (``normflows.utils.splines``) a ``softmax``
written as ``exp(a - max a) / sum exp(a - max a)``: the same function to float rounding, but
torch's CPU softmax is slow over a last axis as short as the spline bins (8 bins: 4.9x slower on
(1024, 252, 8) float32), which makes a flow-II density evaluation 1.2-1.3x slower
(``benchmarks/bench_spline_softmax.py``). See :func:`bin_softmax`; its test compares both on values
and gradients.
"""

from __future__ import annotations

import math
import types
from dataclasses import asdict, dataclass

import normflows as nf
import normflows.utils.splines as _nf_splines
import torch
from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling
from normflows.nets.resnet import ResidualNet
from normflows.utils.masks import create_alternating_binary_mask
from normflows.utils.splines import DEFAULT_MIN_DERIVATIVE
from torch import nn

__all__ = ["ACTIVATIONS", "ConditionalFlow", "FlowConfig", "bin_softmax"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}
_KINDS = ("autoregressive", "coupling")


def bin_softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax along ``dim`` as ``exp(a - max a) / sum exp(a - max a)`` (fast for short axes on a CPU)."""
    e = torch.exp(logits - logits.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


class _SplineFunctional(types.SimpleNamespace):
    """``torch.nn.functional`` as normflows' spline module sees it, with :func:`bin_softmax` as ``softmax``."""

    def __getattr__(self, name: str):
        return getattr(torch.nn.functional, name)


if not isinstance(_nf_splines.F, _SplineFunctional):
    _nf_splines.F = _SplineFunctional(softmax=bin_softmax)


@dataclass(frozen=True)
class FlowConfig:
    """Architecture of a conditional spline flow.

    Attributes
    ----------
    dim: dimension of the modelled variable.
    context_dim: dimension of the conditioning vector.
    kind: ``"autoregressive"`` (masked autoregressive spline blocks; cheap density, sampling
        needs ``dim`` sequential passes) or ``"coupling"`` (half the coordinates per block;
        density and sampling both one pass).
    n_blocks: number of spline blocks.
    hidden: width of the parameter networks.
    n_res_blocks: residual blocks per parameter network.
    n_bins: spline bins.
    tail_bound: the splines act on ``[-tail_bound, tail_bound]`` and are the identity outside.
    activation: one of :data:`ACTIVATIONS`.
    dropout: dropout probability inside the residual blocks of the parameter networks (training only).
    seed: seed of the weight initialisation and of the permutations between blocks.
    """

    dim: int
    context_dim: int
    kind: str = "autoregressive"
    n_blocks: int = 4
    hidden: int = 32
    n_res_blocks: int = 1
    n_bins: int = 8
    tail_bound: float = 5.0
    activation: str = "silu"
    dropout: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"flow kind must be one of {_KINDS}, not {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, not {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dim < 1 or (self.kind == "coupling" and self.dim < 2):
            raise ValueError(f"a {self.kind} flow needs dim >= {2 if self.kind == 'coupling' else 1}, got {self.dim}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FlowConfig:
        return cls(**data)


class _Permutation(nf.flows.Flow):
    """A fixed permutation of the coordinates (stored as a buffer, so it travels with the weights)."""

    def __init__(self, perm: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return z[:, self.perm], torch.zeros(len(z), dtype=z.dtype, device=z.device)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return z[:, self.inv_perm], torch.zeros(len(z), dtype=z.dtype, device=z.device)


class _Coupling(nf.flows.Flow):
    """One rational-quadratic coupling block, initialised to the identity."""

    def __init__(self, config: FlowConfig, even: bool) -> None:
        super().__init__()
        activation = ACTIVATIONS[config.activation]

        def make_net(in_features: int, out_features: int) -> nn.Module:
            net = ResidualNet(
                in_features=in_features,
                out_features=out_features,
                hidden_features=config.hidden,
                context_features=config.context_dim,
                num_blocks=config.n_res_blocks,
                activation=activation(),
                dropout_probability=config.dropout,
            )
            nn.init.zeros_(net.final_layer.weight)
            # zero widths/heights give equal bins; this bias gives unit derivatives: the identity map
            nn.init.constant_(net.final_layer.bias, math.log(math.expm1(1.0 - DEFAULT_MIN_DERIVATIVE)))
            return net

        self.transform = PiecewiseRationalQuadraticCoupling(
            mask=create_alternating_binary_mask(config.dim, even=even),
            transform_net_create_fn=make_net,
            num_bins=config.n_bins,
            tails="linear",
            tail_bound=config.tail_bound,
            apply_unconditional_transform=False,
        )

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_det = self.transform.inverse(z, context)
        return x, log_det.view(-1)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_det = self.transform(x, context)
        return z, log_det.view(-1)


class ConditionalFlow(nn.Module):
    """A conditional spline flow with a standard normal base density.

    ``log_prob`` maps data to the base space through the blocks in reverse order (one network
    pass per block for both kinds); ``sample`` maps base draws forward.
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        with torch.random.fork_rng(devices=[]):  # deterministic weights without touching the caller's RNG
            torch.manual_seed(config.seed)
            blocks: list[nn.Module] = []
            for i in range(config.n_blocks):
                if config.kind == "autoregressive":
                    blocks.append(
                        nf.flows.AutoregressiveRationalQuadraticSpline(
                            config.dim,
                            config.n_res_blocks,
                            config.hidden,
                            num_context_channels=config.context_dim,
                            num_bins=config.n_bins,
                            tail_bound=config.tail_bound,
                            activation=ACTIVATIONS[config.activation],
                            dropout_probability=config.dropout,
                            permute_mask=False,
                            init_identity=True,
                        )
                    )
                else:
                    blocks.append(_Coupling(config, even=i % 2 == 1))
                if i < config.n_blocks - 1 and config.dim > 1:
                    if config.kind == "autoregressive" and i % 2 == 0:
                        perm = torch.flip(torch.arange(config.dim), (0,))
                    else:
                        perm = torch.randperm(config.dim, generator=gen)
                    blocks.append(_Permutation(perm))
        self.blocks = nn.ModuleList(blocks)

    @property
    def dim(self) -> int:
        return self.config.dim

    def _check(self, x: torch.Tensor | None, context: torch.Tensor) -> None:
        if context.ndim != 2 or context.shape[1] != self.config.context_dim:
            raise ValueError(f"context must have shape (B, {self.config.context_dim}), got {tuple(context.shape)}")
        if x is not None and (x.ndim != 2 or x.shape != (len(context), self.config.dim)):
            raise ValueError(f"x must have shape ({len(context)}, {self.config.dim}), got {tuple(x.shape)}")

    def to_base(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``x`` to the base space: ``(z, log|det dz/dx|)``."""
        self._check(x, context)
        log_det = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        z = x
        for block in reversed(self.blocks):
            z, ld = block.inverse(z, context=context)
            log_det = log_det + ld
        return z, log_det

    def log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Log density of ``x`` (B, dim) given ``context`` (B, context_dim), shape (B,)."""
        z, log_det = self.to_base(x, context)
        return log_det - 0.5 * (z * z).sum(dim=1) - 0.5 * self.config.dim * math.log(2 * math.pi)

    def from_base(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Map base-space points ``z`` (B, dim) to data space (the sampling direction)."""
        self._check(z, context)
        for block in self.blocks:
            z, _ = block(z, context=context)
        return z

    @torch.no_grad()
    def sample(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw per row of ``context``, shape (B, dim); the normal draws come from ``generator``'s device."""
        gen_device = generator.device if generator is not None else context.device
        z = torch.randn(len(context), self.config.dim, generator=generator, dtype=context.dtype, device=gen_device)
        return self.from_base(z.to(context.device), context)
