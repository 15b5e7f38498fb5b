"""The search network (supernet): a stack of cells whose 14 edges are *mixed* edges.

Each mixed edge runs every candidate op and sums their outputs weighted by the relaxed architecture
weights of that edge (DARTS Eq. 2 with softmax, Fair DARTS Eq. 4 with sigmoid). Normal cells share one
(14, n_ops) matrix of architecture parameters ``alpha``, reduction cells another. The architecture
parameters are kept apart from the network weights (``arch_parameters()`` vs ``network_parameters()``)
because the bi-level search optimises them with different optimisers on different data. Inside cells and
mixed edges the relaxed architecture weights are called ``edge_weights``.

``MixedOp`` below is the readable *reference formulation*: every edge runs every op on its own input, as
in the original DARTS code. The *fast formulation* (:mod:`fairdarts_core.fast`, the default) computes the
same function with less work (see ``SupernetConfig.formulation`` and ``SupernetConfig.fast_options``);
tests compare the two.

Noise on skip (the authors' noisy DARTS experiment): during training, Gaussian noise is added to the output
of every *identity* skip (stride 1) before its weight multiplies it. The stride-2 skips of a reduction
cell's input edges are ``FactorizedReduce`` modules (convolutions and a BN, no identity shortcut) and get
none, as in the authors' search code.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .fast import FastOptions, fast_cell_forward
from .genotype import Genotype, edge_index
from .ops import FAIR_DARTS_OPS, FactorizedReduce, ReLUConvBN, check_op_names, search_op
from .relax import relax

DEFAULT_PARSE = {"sigmoid": "threshold_sparse", "softmax": "darts"}
"""The parse rule each relaxation's authors use to derive the final cell."""

FORMULATIONS = ("fast", "reference")
"""How a supernet computes its cells: ``fast`` (shared computation, :mod:`fairdarts_core.fast`) or
``reference`` (every mixed edge on its own, :class:`MixedOp`); the same math."""


def check_formulation(name: str) -> None:
    if name not in FORMULATIONS:
        raise ValueError(f"unknown supernet formulation {name!r}; choose one of {', '.join(FORMULATIONS)}")


@dataclass
class SupernetConfig:
    """Shape and search space of a supernet. Defaults: the paper's CIFAR-10 search network."""

    channels: int = 16            # initial channels C
    layers: int = 8               # cells; reduction cells at 1/3 and 2/3 of the depth
    steps: int = 4                # intermediate nodes per cell
    multiplier: int = 4           # how many of the last nodes the cell output concatenates
    stem_multiplier: int = 3
    in_channels: int = 3          # 3 for CIFAR, 1 for Fashion-MNIST
    num_classes: int = 10
    primitives: Tuple[str, ...] = field(default_factory=lambda: tuple(FAIR_DARTS_OPS))
    relaxation: str = "sigmoid"   # "sigmoid" (Fair DARTS) or "softmax" (DARTS)
    alpha_init_std: float = 0.0   # Fair DARTS starts every alpha at 0 (sigmoid 0.5); DARTS uses 1e-3
    formulation: str = "fast"     # "fast" (shared computation, fairdarts_core.fast) or "reference" (same math)
    fast_options: FastOptions = field(default_factory=FastOptions)  # the fast formulation's switches

    def __post_init__(self):
        self.primitives = tuple(self.primitives)
        check_op_names(self.primitives)
        relax(torch.zeros(1, 1), self.relaxation)  # validates the name
        check_formulation(self.formulation)
        self.fast_options = as_fast_options(self.fast_options)


def as_fast_options(value: Union[FastOptions, dict, None]) -> FastOptions:
    """``value`` as :class:`FastOptions`: itself, built from a dict of its fields (a config read from JSON), or
    the defaults for ``None``."""
    if value is None:
        return FastOptions()
    if isinstance(value, FastOptions):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(FastOptions.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown fast option {unknown[0]!r}; choose from "
                             f"{', '.join(FastOptions.__dataclass_fields__)}")
        return FastOptions(**value)
    raise ValueError(f"fast_options must be a FastOptions or a dict of its fields; got {type(value).__name__}")


class MixedOp(nn.Module):
    """One mixed edge: ``sum_k w_k * op_k(x)`` over all candidate ops (the reference formulation)."""

    def __init__(self, C: int, stride: int, primitives: Sequence[str]):
        super().__init__()
        self.stride = stride
        self.ops = nn.ModuleList(search_op(name, C, stride) for name in primitives)
        # Noise on skip perturbs the identity skip only: with stride 2 the skip is a FactorizedReduce.
        has_identity_skip = "skip_connect" in primitives and stride == 1
        self.noisy_index: Optional[int] = list(primitives).index("skip_connect") if has_identity_skip else None

    def forward(self, x: torch.Tensor, edge_weights: torch.Tensor,
                skip_noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``sum_k edge_weights[k] * op_k(x)``; ``skip_noise`` (same shape as ``x``) is added to the identity
        skip's output (ignored on a stride-2 edge)."""
        out = 0
        for k, (w, op) in enumerate(zip(edge_weights, self.ops)):
            y = op(x)
            if k == self.noisy_index and skip_noise is not None:
                y = y + skip_noise  # the authors' noise on skip: removes its unfair advantage
            out = out + w * y
        return out


class SearchCell(nn.Module):
    """A cell of mixed edges. Inputs: the outputs of the two previous cells."""

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool, primitives: Sequence[str], formulation: str = "reference",
                 fast_options: FastOptions = FastOptions()):
        super().__init__()
        check_formulation(formulation)
        self.steps, self.multiplier, self.reduction = steps, multiplier, reduction
        self.formulation, self.fast_options = formulation, fast_options
        self.stage = 0  # reduction cells before this one (set by Supernet); 0: the full-resolution stage
        # If the previous cell reduced, s0 is at twice the resolution of s1: reduce it too.
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        # Edges leaving the cell inputs stride 2 in a reduction cell.
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and src < 2 else 1, primitives) for _, src in edge_index(steps))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, edge_weights: torch.Tensor,
                skip_noise_std: float = 0.0) -> torch.Tensor:
        """The cell's output for the two previous cells' outputs, the relaxed architecture weights
        ``edge_weights`` (14, n_ops) and the std of the noise on skip (0: none)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        noise = self.skip_noise(states[1], skip_noise_std)
        if self.formulation == "fast":
            return fast_cell_forward(self, states, edge_weights, noise, self.fast_options)
        e = 0
        for _ in range(self.steps):
            node = sum(self.edges[e + src](h, edge_weights[e + src], None if noise is None else noise[e + src])
                       for src, h in enumerate(states))
            e += len(states)
            states.append(node)
        return torch.cat(states[-self.multiplier:], dim=1)

    def skip_noise(self, s1: torch.Tensor, std: float) -> Optional[torch.Tensor]:
        """Gaussian noise N(0, std^2) for the skip op of every edge, drawn up front in one call, so any
        formulation of the cell consumes the random stream identically. Only in training mode.

        One draw per edge, at the cell's output resolution; the draws of a reduction cell's stride-2 edges
        (those from the two cell inputs) are not used: only identity skips get noise."""
        if not (self.training and std > 0):
            return None
        B, C, H, W = s1.shape
        if self.reduction:
            H, W = (H + 1) // 2, (W + 1) // 2
        return std * torch.randn(len(self.edges), B, C, H, W, device=s1.device, dtype=s1.dtype)


class Supernet(nn.Module):
    """The DARTS / Fair DARTS search network (the relaxation and op set come from the config)."""

    def __init__(self, config: Optional[SupernetConfig] = None, **overrides):
        super().__init__()
        if config is None:
            config = SupernetConfig(**overrides)
        elif overrides:
            config = SupernetConfig(**{**config.__dict__, **overrides})
        else:
            config = replace(config)  # a copy: set_formulation must not change the caller's config
        self.config = cfg = config
        self.skip_noise_std = 0.0  # set by the search loop when noise on skip is on

        C_curr = cfg.stem_multiplier * cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, cfg.channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(cfg.layers):
            reduction = i in (cfg.layers // 3, 2 * cfg.layers // 3)
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(cfg.steps, cfg.multiplier, C_prev_prev, C_prev, C_curr,
                                         reduction, reduction_prev, cfg.primitives, cfg.formulation,
                                         cfg.fast_options))
            self.cells[-1].stage = sum(c.reduction for c in self.cells[:-1])
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cfg.multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, cfg.num_classes)

        shape = (len(edge_index(cfg.steps)), len(cfg.primitives))
        self.alphas_normal = nn.Parameter(cfg.alpha_init_std * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(cfg.alpha_init_std * torch.randn(shape))

    # --- parameters ----------------------------------------------------------------------------------
    def arch_parameters(self) -> List[nn.Parameter]:
        """The architecture parameters alpha: [normal (14, n_ops), reduce (14, n_ops)]."""
        return [self.alphas_normal, self.alphas_reduce]

    def network_parameters(self) -> List[nn.Parameter]:
        """The network weights w: every parameter but alpha."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def relaxed_weights(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(normal, reduce) relaxed weights, differentiable w.r.t. alpha."""
        return relax(self.alphas_normal, self.config.relaxation), relax(self.alphas_reduce, self.config.relaxation)

    def set_formulation(self, formulation: str, fast_options: Optional[FastOptions] = None) -> None:
        """Switch between the reference and the fast formulation (same parameters, same math), and, when
        given, the fast formulation's options."""
        check_formulation(formulation)
        self.config.formulation = formulation
        if fast_options is not None:
            self.config.fast_options = as_fast_options(fast_options)
        for cell in self.cells:
            cell.formulation, cell.fast_options = formulation, self.config.fast_options

    # --- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, weights: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Logits of ``x``. ``weights``: the (normal, reduce) edge weights to use instead of the relaxed
        ones, e.g. a derived cell's 0/1 weights (:func:`fairdarts_core.analysis.discretization_gap`)."""
        w_normal, w_reduce = self.relaxed_weights() if weights is None else weights
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal, self.skip_noise_std)
        return self.classifier(self.global_pooling(s1).flatten(1))

    # --- discretisation ------------------------------------------------------------------------------
    def genotype(self, method: Optional[str] = None, threshold: float = 0.85) -> Genotype:
        """Derive the discrete cells (default rule: ``threshold_sparse`` for sigmoid, ``darts`` for softmax)."""
        method = method or DEFAULT_PARSE[self.config.relaxation]
        normal, reduce = (w.detach().cpu().numpy() for w in self.relaxed_weights())
        return Genotype.from_weights(normal, reduce, self.config.primitives, method, threshold)
