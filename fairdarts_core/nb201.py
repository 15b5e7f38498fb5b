"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020): cell, supernet, genotype, derive rules,
evaluation network and drawing, in one module.

The space is small enough to search on a CPU, and DARTS collapses in it: the benchmark reports that
DARTS-V1 and V2 end with ``skip_connect`` on all six edges on CIFAR-10. Everything about the space lives
here, beside the DARTS space (:mod:`fairdarts_core.supernet`, :mod:`fairdarts_core.genotype`).

**The cell** has 4 nodes. Node 0 is the cell input; node ``j`` (1..3) is the sum of one edge from every
earlier node; the cell's output is node 3. Six edges, always in the order of the benchmark's string::

    (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)
    |op~0| + |op~0|op~1| + |op~0|op~1|op~2|

**The candidates** (:data:`NB201_OPS`, the benchmark's order): ``none`` (zero), ``skip_connect``
(identity), ``nor_conv_1x1`` and ``nor_conv_3x3`` (ReLU-Conv-BN), ``avg_pool_3x3`` (stride 1, padding 1,
``count_include_pad=False``, no BN). Every op keeps the shape: reductions happen between cells only.

**The network** (search and evaluation alike): a 3x3 conv stem + BN; three stages of N cells with C, 2C
and 4C channels, separated by residual reduction blocks (:class:`ResNetBasicBlock`, stride 2, channels
doubling); BN + ReLU; global average pooling; a linear classifier. Only the cells are searched: in the
supernet their BNs are non-affine (as in DARTS and in the benchmark's search networks); the stem, the
reduction blocks and the final BN are the same, affine, in both networks.

**The supernet** shares one ``(6, n_ops)`` matrix alpha over all cells (as the benchmark's DARTS does).
A mixed edge computes ``sum_k w_k op_k(x)`` with ``w = softmax(alpha)`` (DARTS Eq. 2) or
``w = sigmoid(alpha)`` (Fair DARTS Eq. 4). :class:`MixedEdge` is that sum, as written; the ``"fast"``
formulation (the default) computes the same sums with the work shared between the edges that leave the
same node (about a fifth less time on a CPU); tests hold the two together.
Noise on skip (``SearchConfig.skip_noise``, the authors' experiment that blurs skip's advantage): in training
mode every skip's output gets N(0, std^2) noise, drawn once per cell for all six edges.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import graphviz
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .relax import RELAXATIONS, relax

SPACE = "nb201"
"""The name of this space in JSON files (``{"space": "nb201", "arch": ...}``) and on the command line."""

NB201_OPS: Tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The 5 candidates, in the benchmark's order (the columns of its alpha matrix)."""

PARAMETER_FREE_OPS = frozenset({"none", "skip_connect", "avg_pool_3x3"})
"""The ops without weights: a collapse is a takeover by these."""

NODES = 4
"""Nodes of a cell: the input (0), two intermediate nodes, the output (3)."""

EDGES: Tuple[Tuple[int, int], ...] = tuple((to, src) for to in range(1, NODES) for src in range(to))
"""``(to, from)`` of every edge, in the order of the rows of alpha and of the benchmark's string."""

NUM_EDGES = len(EDGES)

EDGE_ROW = {edge: row for row, edge in enumerate(EDGES)}
"""Row of alpha (and of the relaxed weights) of the edge ``(to, from)``."""

DERIVE_METHODS = ("darts", "threshold")
DEFAULT_DERIVE = {"softmax": "darts", "sigmoid": "threshold"}
"""The derive rule each relaxation's authors would use (see :func:`derive`)."""

DEFAULT_THRESHOLD = 0.85
"""Fair DARTS's threshold on a sigmoid weight (the authors' ``threshold_sparse`` default)."""

MAX_STRING_CHARS = 256
"""The longest architecture string :meth:`NB201Genotype.from_string` reads (a legal one has < 100)."""

_short = reprlib.Repr()
_short.maxstring, _short.maxother = 60, 60
"""repr for user input inside error messages: bounded, so that a message stays one short line."""


# ==========================================================================================================
# Candidate operations
# ==========================================================================================================

class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k x k, stride) -> BN: the benchmark's ``nor_conv_kxk`` and the halves of its residual
    block. ``affine=False`` in the supernet's cells (the op weight scales the output instead)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int = 1, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """``none``: the edge carries nothing (zeros of the input's shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def nb201_op(name: str, C: int, affine: bool) -> nn.Module:
    """The candidate op ``name`` on ``C`` channels (stride 1: every op keeps the shape)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(C, C, 1, affine=affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(C, C, 3, affine=affine)
    if name == "avg_pool_3x3":
        # count_include_pad=False: border pixels average their real neighbours only; no BN after the pool
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}; choose one of {', '.join(NB201_OPS)}")


class ResNetBasicBlock(nn.Module):
    """The reduction block between stages: ``ReLUConvBN(3x3, stride 2) -> ReLUConvBN(3x3)`` plus a residual
    ``AvgPool(2x2, stride 2) -> Conv 1x1`` that halves the resolution and changes the channels.

    As the benchmark's ``ResNetBasicblock`` with stride 2 (always affine: it is not searched). The pool uses
    ``ceil_mode=True``: identical on even sizes, and odd sizes (7x7) give the main path's shape too.
    """

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride=2)
        self.conv_b = ReLUConvBN(C_out, C_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True),
                                        nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def check_primitives(primitives: Sequence[str]) -> Tuple[str, ...]:
    """``primitives`` as a tuple, or a one-line ValueError: a non-empty list of distinct NAS-Bench-201 ops."""
    if isinstance(primitives, str) or not isinstance(primitives, Sequence):
        raise ValueError(f"primitives must be a list of op names from {', '.join(NB201_OPS)}; "
                         f"got {_short.repr(primitives)}")
    primitives = tuple(primitives)
    unknown = [p for p in primitives if p not in NB201_OPS]
    if unknown:
        raise ValueError(f"unknown NAS-Bench-201 op {_short.repr(unknown[0])}; choose from {', '.join(NB201_OPS)}")
    if len(set(primitives)) != len(primitives) or not set(primitives) - {"none"}:
        raise ValueError(f"primitives must be distinct and include an op other than none; "
                         f"got {', '.join(primitives) or 'nothing'}")
    return primitives


# ==========================================================================================================
# The genotype: one op per edge, in the benchmark's string form
# ==========================================================================================================

@dataclass(frozen=True)
class NB201Genotype:
    """A discrete NAS-Bench-201 cell: ``ops[e]`` is the op of edge ``EDGES[e]`` (``(1<-0), (2<-0), (2<-1),
    (3<-0), (3<-1), (3<-2)``).

    ``str(g)`` and :meth:`to_string` give the benchmark's own form,
    ``|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|``:
    one ``|...|`` group per node 1..3, ``op~i`` meaning "op applied to node i".
    """

    ops: Tuple[str, ...]

    def __post_init__(self):
        if isinstance(self.ops, str) or not isinstance(self.ops, Sequence):
            raise ValueError(f"an NAS-Bench-201 genotype is a list of {NUM_EDGES} op names; got {_short.repr(self.ops)}")
        ops = tuple(self.ops)
        if len(ops) != NUM_EDGES:
            raise ValueError(f"an NAS-Bench-201 genotype has {NUM_EDGES} edges; got {len(ops)} ops")
        for (to, src), op in zip(EDGES, ops):
            if op not in NB201_OPS:
                raise ValueError(f"unknown op {_short.repr(op)} on edge {to}<-{src}; choose one of {', '.join(NB201_OPS)}")
        object.__setattr__(self, "ops", ops)

    # --- the benchmark's string ----------------------------------------------------------------------
    def to_string(self) -> str:
        groups = []
        for to in range(1, NODES):
            groups.append("|" + "|".join(f"{self.op(to, src)}~{src}" for src in range(to)) + "|")
        return "+".join(groups)

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def from_string(cls, text: str) -> "NB201Genotype":
        """Parse the benchmark's string (all 6 edges, inputs of each node in order ``~0, ~1, ...``)."""
        if not isinstance(text, str):
            raise ValueError(f"an NAS-Bench-201 architecture string must be a str; got {type(text).__name__}")
        if len(text) > MAX_STRING_CHARS:
            raise ValueError(f"NAS-Bench-201 architecture string too long ({len(text)} characters; at most "
                             f"{MAX_STRING_CHARS})")
        text = text.strip()
        groups = text.split("+")
        if len(groups) != NODES - 1:
            raise ValueError(f"an NAS-Bench-201 string has {NODES - 1} node groups joined by '+' "
                             f"(|op~0|+|op~0|op~1|+|op~0|op~1|op~2|); got {len(groups)} in {_short.repr(text)}")
        ops: List[str] = []
        for to, group in enumerate(groups, start=1):
            pattern = "|" + "|".join(f"op~{src}" for src in range(to)) + "|"
            entries = group[1:-1].split("|") if len(group) >= 2 and group[0] == group[-1] == "|" else None
            if entries is None or len(entries) != to:
                raise ValueError(f"node {to} must read {pattern}; got {_short.repr(group)}")
            for src, entry in enumerate(entries):
                op, sep, source = entry.partition("~")
                if not sep or source != str(src):
                    raise ValueError(f"node {to} must read {pattern} (inputs from nodes 0..{to - 1} in order); "
                                     f"got {_short.repr(group)}")
                if op not in NB201_OPS:
                    raise ValueError(f"unknown op {_short.repr(op)} on edge {to}<-{src}; "
                                     f"choose one of {', '.join(NB201_OPS)}")
                ops.append(op)
        return cls(tuple(ops))

    # --- JSON ----------------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, str]:
        return {"space": SPACE, "arch": self.to_string()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NB201Genotype":
        if not isinstance(d, Mapping) or d.get("space") != SPACE or not isinstance(d.get("arch"), str):
            raise ValueError(f"an NAS-Bench-201 genotype reads {{\"space\": \"{SPACE}\", \"arch\": \"|...|\"}}; "
                             f"got {_short.repr(d)}")
        return cls.from_string(d["arch"])

    # --- questions -----------------------------------------------------------------------------------
    def op(self, to: int, src: int) -> str:
        """The op of edge ``to <- src``."""
        try:
            return self.ops[EDGES.index((to, src))]
        except ValueError:
            raise ValueError(f"no edge {to}<-{src} in an NAS-Bench-201 cell; edges: "
                             f"{', '.join(f'{t}<-{s}' for t, s in EDGES)}") from None

    @property
    def edges(self) -> Tuple[Tuple[str, int, int], ...]:
        """``(op, to, from)`` of every edge, as the DARTS-space ``Genotype`` lists them."""
        return tuple((op, to, src) for op, (to, src) in zip(self.ops, EDGES))

    def count(self, op: str) -> int:
        """How many of the 6 edges carry ``op``."""
        if op not in NB201_OPS:
            raise ValueError(f"unknown NAS-Bench-201 op {_short.repr(op)}; choose one of {', '.join(NB201_OPS)}")
        return self.ops.count(op)

    def reachable_nodes(self) -> Tuple[int, ...]:
        """The nodes the cell input reaches through edges that are not ``none`` (node 0 included)."""
        reached = {0}
        for (to, src), op in zip(EDGES, self.ops):  # edges come sorted by target: one pass suffices
            if op != "none" and src in reached:
                reached.add(to)
        return tuple(sorted(reached))

    def is_connected(self) -> bool:
        """Whether the output (node 3) depends on the input. If not, the cell carries no information:
        its output is zeros, or a constant where a conv hangs on a dead node (the BN shift)."""
        return NODES - 1 in self.reachable_nodes()

    def describe(self) -> str:
        """Human-readable cell: the string, each node's inputs, the skip and parameter-free counts."""
        free = sum(op in PARAMETER_FREE_OPS for op in self.ops)
        lines = [self.to_string(),
                 f"NAS-Bench-201 cell: {self.count('skip_connect')} of {NUM_EDGES} edges skip_connect, {free} "
                 f"parameter-free" + ("" if self.is_connected() else "; the output does not depend on the input")]
        for node in range(1, NODES):
            inputs = ", ".join(f"{op}({src})" for op, to, src in self.edges if to == node)
            lines.append(f"  node {node} <- {inputs}")
        return "\n".join(lines)


Arch = Union[NB201Genotype, str, Mapping[str, Any]]


def as_genotype(arch: Arch) -> NB201Genotype:
    """A genotype from a genotype, the benchmark's string or its JSON dict."""
    if isinstance(arch, NB201Genotype):
        return arch
    if isinstance(arch, str):
        return NB201Genotype.from_string(arch)
    if isinstance(arch, Mapping):
        return NB201Genotype.from_dict(arch)
    raise ValueError(f"an NAS-Bench-201 architecture is a genotype, its string or its dict; got {type(arch).__name__}")


WEIGHTED_OPS = ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The ops a random cell draws its other edges from (:func:`random_cell`): neither skip nor ``none``."""


def random_cell(skips: int, seed: int) -> NB201Genotype:
    """A random cell with exactly ``skips`` skip_connect edges (chosen uniformly among the 6), every other
    edge drawn uniformly from :data:`WEIGHTED_OPS`. The authors' test of what skips cost: random cells that
    hold a fixed number of skips, retrained (Fair DARTS, the ``darts/`` experiments). No ``none``, so every
    such cell is connected and differs from its neighbours only in its skips."""
    if isinstance(skips, bool) or not isinstance(skips, int) or not 0 <= skips <= NUM_EDGES:
        raise ValueError(f"skips must be an integer in [0, {NUM_EDGES}]; got {_short.repr(skips)}")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(NUM_EDGES, size=skips, replace=False).tolist())
    return NB201Genotype(tuple("skip_connect" if e in chosen else WEIGHTED_OPS[int(rng.integers(len(WEIGHTED_OPS)))]
                               for e in range(NUM_EDGES)))


# ==========================================================================================================
# Derive rules: relaxed weights -> genotype
# ==========================================================================================================

def check_weights(weights, primitives: Sequence[str]) -> np.ndarray:
    """The relaxed weights as a float array, or a one-line ValueError: shape ``(6, len(primitives))``,
    finite, in [0, 1]."""
    if torch.is_tensor(weights):
        weights = weights.detach().cpu().numpy()
    try:
        W = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"relaxed weights must be a ({NUM_EDGES}, n_ops) array of numbers; "
                         f"got {_short.repr(weights)}") from None
    if W.shape != (NUM_EDGES, len(primitives)):
        raise ValueError(f"relaxed weights must have shape ({NUM_EDGES}, {len(primitives)}) "
                         f"(edges x primitives); got {W.shape}")
    if not np.isfinite(W).all():
        raise ValueError("relaxed weights must be finite; got NaN or inf")
    if W.min() < 0 or W.max() > 1:
        raise ValueError(f"relaxed weights must lie in [0, 1] (softmax or sigmoid values); "
                         f"got values in [{W.min():.4g}, {W.max():.4g}]")
    return W


def derive(weights, primitives: Sequence[str] = NB201_OPS, method: str = "darts",
           threshold: float = DEFAULT_THRESHOLD) -> NB201Genotype:
    """Derive the discrete cell from a ``(6, len(primitives))`` matrix of relaxed weights (rows in
    :data:`EDGES` order). Each edge keeps exactly one op; ties go to the earlier op in ``primitives``.

    - ``"darts"``: the strongest op of every edge, ``none`` included. This is how the benchmark's DARTS
      baselines derive a cell (an argmax over all candidates), unlike DARTS in its own space, whose rule
      never keeps ``none`` and keeps two inputs per node. Here every node sums all its inputs, so
      ``none`` is how an edge is dropped. ``threshold`` is not used.
    - ``"threshold"``: Fair DARTS's rule (keep an op only if its sigmoid weight is ``>= threshold``, 0.85
      by default; Sec. 4.3 of the paper) with this space's one op per edge: the strongest op of the edge
      if its weight reaches ``threshold``, else ``none``. Sigmoid weights do not compete, so "no op is
      confident" is itself an answer: the edge is dropped. The result may contain ``none`` even when
      ``none`` is not a candidate.
    """
    primitives = check_primitives(primitives)
    if method not in DERIVE_METHODS:
        raise ValueError(f"unknown derive method {_short.repr(method)}; choose one of {', '.join(DERIVE_METHODS)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1]; got {_short.repr(threshold)}")
    W = check_weights(weights, primitives)
    ops = []
    for row in W:
        k = int(np.argmax(row))  # first maximum: ties go to the earlier primitive
        ops.append(primitives[k] if method == "darts" or row[k] >= threshold else "none")
    return NB201Genotype(tuple(ops))


# ==========================================================================================================
# The supernet
# ==========================================================================================================

def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {_short.repr(value)}")


@dataclass(frozen=True)
class NB201Config:
    """Shape and search space of an NAS-Bench-201 supernet. Defaults: the benchmark's search network
    (C 16, N 5, CIFAR-10, all 5 ops, DARTS's softmax, alpha ~ 1e-3 N(0, 1)).

    Fair DARTS: ``relaxation="sigmoid"``, ``alpha_init_std=0`` (every sigmoid starts at 0.5).
    """

    channels: int = 16                 # C: channels of the first stage (then 2C, 4C)
    cells_per_stage: int = 5           # N: cells in each of the 3 stages
    in_channels: int = 3               # 3 for CIFAR, 1 for Fashion-MNIST
    num_classes: int = 10
    primitives: Tuple[str, ...] = NB201_OPS
    relaxation: str = "softmax"        # "softmax" (DARTS) or "sigmoid" (Fair DARTS)
    alpha_init_std: float = 1e-3       # alpha ~ alpha_init_std * N(0, 1)
    formulation: str = "fast"          # "fast" or "reference": same math (see FORMULATIONS)

    def __post_init__(self):
        _check_count("channels", self.channels, 1)
        _check_count("cells_per_stage", self.cells_per_stage, 1)
        _check_count("in_channels", self.in_channels, 1)
        _check_count("num_classes", self.num_classes, 2)
        object.__setattr__(self, "primitives", check_primitives(self.primitives))
        if self.relaxation not in RELAXATIONS:
            raise ValueError(f"unknown relaxation {_short.repr(self.relaxation)}; choose one of {', '.join(RELAXATIONS)}")
        std = self.alpha_init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not (math.isfinite(std) and std >= 0):
            raise ValueError(f"alpha_init_std must be a finite number >= 0; got {_short.repr(std)}")
        _check_formulation(self.formulation)


class MixedEdge(nn.Module):
    """One mixed edge: ``sum_k w_k * op_k(x)`` over the candidates (DARTS Eq. 2, Fair DARTS Eq. 4).

    ``none`` is left out of the sum: its term ``w * 0`` is zero, and so is its gradient.
    """

    def __init__(self, C: int, primitives: Sequence[str]):
        super().__init__()
        self.ops = nn.ModuleList(nb201_op(name, C, affine=False) for name in primitives)

    def forward(self, x: torch.Tensor, edge_weights: torch.Tensor,
                skip_noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``skip_noise`` (same shape as ``x``, or None) is added to the output of ``skip_connect``."""
        out = 0
        for w, op in zip(edge_weights, self.ops):
            if isinstance(op, Zero):
                continue
            y = op(x)
            if skip_noise is not None and isinstance(op, nn.Identity):
                y = y + skip_noise  # noise on skip: blurs skip's advantage (Fair DARTS Sec. 5, the authors' darts/)
            out = out + w * y
        return out


FORMULATIONS = ("fast", "reference")
"""How a search cell computes its mixed edges: ``"reference"`` (every edge runs every op on its own,
:class:`MixedEdge`) or ``"fast"`` (the edges leaving a node share work); same parameters, same math."""


def _check_formulation(name: str) -> str:
    if name not in FORMULATIONS:
        raise ValueError(f"unknown supernet formulation {_short.repr(name)}; choose one of {', '.join(FORMULATIONS)}")
    return name


class NB201SearchCell(nn.Module):
    """A cell of 6 mixed edges: node j = sum over i < j of ``edges[(j<-i)](node i)``; output = node 3."""

    def __init__(self, C: int, primitives: Sequence[str], formulation: str = "fast"):
        super().__init__()
        self.primitives = tuple(primitives)
        self.formulation = _check_formulation(formulation)
        self.edges = nn.ModuleList(MixedEdge(C, primitives) for _ in EDGES)

    def forward(self, x: torch.Tensor, edge_weights: torch.Tensor, skip_noise_std: float = 0.0) -> torch.Tensor:
        """``edge_weights``: the relaxed ``(6, n_ops)`` matrix, rows in :data:`EDGES` order.
        ``skip_noise_std``: noise on skip, N(0, std^2) added to every skip's output in training mode."""
        noise = self.skip_noise(x, skip_noise_std)
        if self.formulation == "fast":
            return self._forward_shared(x, edge_weights, noise)
        nodes = [x]
        for to in range(1, NODES):
            e = [EDGE_ROW[to, src] for src in range(to)]
            nodes.append(sum(self.edges[r](nodes[src], edge_weights[r], None if noise is None else noise[r])
                             for src, r in enumerate(e)))
        return nodes[-1]

    def skip_noise(self, x: torch.Tensor, std: float) -> Optional[torch.Tensor]:
        """Noise N(0, std^2) for the skip of every edge, ``(6, *x.shape)``, drawn up front in one call (so
        both formulations consume the random stream alike); None in eval mode, at std 0 or without skip.
        Every skip of this space is an identity (its ops keep the shape)."""
        if not (self.training and std > 0 and "skip_connect" in self.primitives):
            return None
        return std * torch.randn(NUM_EDGES, *x.shape, device=x.device, dtype=x.dtype)

    # --- the fast formulation --------------------------------------------------------------------------
    def _forward_shared(self, x: torch.Tensor, edge_weights: torch.Tensor,
                        noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The reference math with less work: the n edges leaving node i all read node i, so node i's
        ReLU, pooling and identity are computed once, its n convolutions of one kernel size run as one
        convolution (the edges' kernels stacked along the output channels) and all its convolutions share
        one BN call (a non-affine BN is per channel: one call over stacked channels is the separate BNs).
        The edges' weighted sums are then formed for all n targets at once. Rounding may differ from the
        reference (the stacked convolution adds in another order)."""
        P = self.primitives
        convs = [k for k, name in enumerate(P) if name.startswith("nor_conv")]
        skip = P.index("skip_connect") if "skip_connect" in P else None
        pool = P.index("avg_pool_3x3") if "avg_pool_3x3" in P else None
        nodes = [x]
        incoming: Dict[int, List[torch.Tensor]] = {to: [] for to in range(1, NODES)}
        for src in range(NODES - 1):
            if src:
                nodes.append(sum(incoming[src]))
            h = nodes[src]
            B, C, H, W = h.shape
            rows = [EDGE_ROW[to, src] for to in range(src + 1, NODES)]
            n = len(rows)
            w = edge_weights[rows]                                     # (n, n_ops)
            terms = []                                                 # each (B, n, C, H, W)
            if convs:
                y = self._stacked_convs(h, rows, convs).view(B, len(convs), n, C, H, W)
                terms.append((w[:, convs].t().reshape(1, len(convs), n, 1, 1, 1) * y).sum(1))
            if skip is not None:
                skipped = h.unsqueeze(1) if noise is None else h.unsqueeze(1) + noise[rows].transpose(0, 1)
                terms.append(w[:, skip].view(1, n, 1, 1, 1) * skipped)
            if pool is not None:
                pooled = self.edges[rows[0]].ops[pool](h)              # the same pool for every edge
                terms.append(w[:, pool].view(1, n, 1, 1, 1) * pooled.unsqueeze(1))
            out = sum(terms)
            for j, to in enumerate(range(src + 1, NODES)):
                incoming[to].append(out[:, j])
        return sum(incoming[NODES - 1])

    def _stacked_convs(self, h: torch.Tensor, rows: Sequence[int], convs: Sequence[int]) -> torch.Tensor:
        """BN(conv(ReLU(h))) of every conv op ``k in convs`` of every edge in ``rows``, stacked along the
        channels in the order (op, edge). The BN's running statistics are read from and written back to
        each edge's own BatchNorm, so the state dict is the reference formulation's."""
        r = torch.relu(h)
        modules = [[self.edges[e].ops[k] for e in rows] for k in convs]   # ReLUConvBN modules
        z = torch.cat([F.conv2d(r, torch.cat([m.op[1].weight for m in group]),
                                padding=group[0].op[1].padding) for group in modules], dim=1)
        bns = [m.op[2] for group in modules for m in group]
        bn = bns[0]
        mean = torch.cat([b.running_mean for b in bns])
        var = torch.cat([b.running_var for b in bns])
        momentum = bn.momentum
        if momentum is None and self.training:  # a cumulative average, as nn.BatchNorm2d keeps it
            momentum = 1.0 / float(bn.num_batches_tracked + 1)
        z = F.batch_norm(z, mean, var, training=self.training, momentum=momentum or 0.0, eps=bn.eps)
        if self.training:  # F.batch_norm updated the stacked copies: write them back to every edge
            with torch.no_grad():
                for b, m_new, v_new in zip(bns, mean.chunk(len(bns)), var.chunk(len(bns))):
                    b.running_mean.copy_(m_new)
                    b.running_var.copy_(v_new)
                    b.num_batches_tracked.add_(1)
        return z


def _skeleton(channels: int, cells_per_stage: int, make_cell) -> nn.ModuleList:
    """The benchmark's layer list: N cells at C, a reduction block, N cells at 2C, a block, N cells at 4C."""
    layers = nn.ModuleList()
    C = channels
    for stage in range(3):
        if stage:
            layers.append(ResNetBasicBlock(C, 2 * C))
            C *= 2
        layers.extend(make_cell(C) for _ in range(cells_per_stage))
    return layers


class NB201Supernet(nn.Module):
    """The NAS-Bench-201 search network; one alpha matrix ``(6, n_ops)`` shared by every cell.

    ``NB201Supernet(config)`` or ``NB201Supernet(channels=8, ...)`` (keywords override ``config``).
    Module names: ``stem``, ``cells.i`` (the search cells and, at positions N and 2N+1, the reduction
    blocks), ``lastact``, ``classifier``; a cell's op k of edge e is ``cells.i.edges.e.ops.k``.
    """

    def __init__(self, config: Optional[NB201Config] = None, **overrides):
        super().__init__()
        config = NB201Config() if config is None else config
        if not isinstance(config, NB201Config):
            raise ValueError(f"config must be an NB201Config; got {type(config).__name__}")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(NB201Config)})
        if unknown:
            raise ValueError(f"unknown NB201Config field {unknown[0]!r}; fields: "
                             f"{', '.join(f.name for f in dataclasses.fields(NB201Config))}")
        self.config = cfg = dataclasses.replace(config, **overrides) if overrides else config
        C = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = _skeleton(C, cfg.cells_per_stage, lambda c: NB201SearchCell(c, cfg.primitives, cfg.formulation))
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, cfg.num_classes)
        self.alpha = nn.Parameter(cfg.alpha_init_std * torch.randn(NUM_EDGES, len(cfg.primitives)))
        self.skip_noise_std = 0.0  # set by the search loop when noise on skip is on (training mode only)

    # --- parameters ----------------------------------------------------------------------------------
    def arch_parameters(self) -> List[nn.Parameter]:
        """The architecture parameters: ``[alpha]``, one ``(6, n_ops)`` matrix."""
        return [self.alpha]

    def network_parameters(self) -> List[nn.Parameter]:
        """Every network weight (everything but alpha)."""
        return [p for p in self.parameters() if p is not self.alpha]

    def relaxed_weights(self) -> Tuple[torch.Tensor]:
        """``(w,)``: the relaxed ``(6, n_ops)`` weights, differentiable w.r.t. alpha. A tuple of one, so that
        code written for the DARTS space's (normal, reduce) pair iterates over it unchanged."""
        return (relax(self.alpha, self.config.relaxation),)

    def set_formulation(self, name: str) -> None:
        """Switch between the ``"fast"`` and the ``"reference"`` formulation (same parameters, same math)."""
        self.config = dataclasses.replace(self.config, formulation=_check_formulation(name))
        for layer in self.cells:
            if isinstance(layer, NB201SearchCell):
                layer.formulation = name

    # --- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, weights: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Logits of ``x``. ``weights``: ``(w,)``, the edge weights to use instead of the relaxed ones, e.g.
        a derived cell's 0/1 weights (:func:`fairdarts_core.analysis.discretization_gap`)."""
        (w,) = self.relaxed_weights() if weights is None else weights
        h = self.stem(x)
        for layer in self.cells:
            h = layer(h, w, self.skip_noise_std) if isinstance(layer, NB201SearchCell) else layer(h)
        return self.classifier(self.global_pooling(self.lastact(h)).flatten(1))

    # --- discretisation ------------------------------------------------------------------------------
    def genotype(self, method: Optional[str] = None, threshold: float = DEFAULT_THRESHOLD) -> NB201Genotype:
        """Derive the cell (default rule: :data:`DEFAULT_DERIVE` of the relaxation)."""
        (w,) = self.relaxed_weights()
        return derive(w, self.config.primitives, method or DEFAULT_DERIVE[self.config.relaxation], threshold)


# ==========================================================================================================
# The evaluation network
# ==========================================================================================================

class NB201Cell(nn.Module):
    """A discrete cell: edge e applies its one op (``none``: zeros); node j sums its inputs; output node 3."""

    def __init__(self, genotype: NB201Genotype, C: int):
        super().__init__()
        self.edges = nn.ModuleList(nb201_op(op, C, affine=True) for op in genotype.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for to in range(1, NODES):
            nodes.append(sum(self.edges[EDGE_ROW[to, src]](nodes[src]) for src in range(to)))
        return nodes[-1]


class NB201Network(nn.Module):
    """The network that retrains a derived cell: the supernet's skeleton with the discrete cell in every
    position (the benchmark's ``TinyNetwork``; there C 16, N 5 on CIFAR-10).

    ``forward(x) -> (logits, None)``: the second item is the (absent) auxiliary head's logits, so the
    training loop treats this network like the DARTS-space ``NetworkCIFAR``. ``drop_path_prob`` is
    accepted and ignored: the benchmark trains its networks without drop-path.

    Module names match :class:`NB201Supernet`'s (``stem``, ``cells.i``, ``lastact``, ``classifier``); a
    cell's edge e is ``cells.i.edges.e`` (see :func:`inherit_weights`).
    """

    def __init__(self, genotype: Arch, channels: int = 16, cells_per_stage: int = 5, in_channels: int = 3,
                 num_classes: int = 10):
        super().__init__()
        self.genotype = genotype = as_genotype(genotype)
        _check_count("channels", channels, 1)
        _check_count("cells_per_stage", cells_per_stage, 1)
        _check_count("in_channels", in_channels, 1)
        _check_count("num_classes", num_classes, 2)
        self.drop_path_prob = 0.0  # set by the training loop; not used here (see the class docstring)
        C = channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = _skeleton(C, cells_per_stage, lambda c: NB201Cell(genotype, c))
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, None]:
        h = self.stem(x)
        for layer in self.cells:
            h = layer(h)
        return self.classifier(self.global_pooling(self.lastact(h)).flatten(1)), None


def inherit_weights(network: NB201Network, supernet: NB201Supernet) -> None:
    """Copy into ``network`` the supernet's weights of the ops its genotype kept (and the stem, reduction
    blocks, final BN and classifier): supernet ``cells.i.edges.e.ops.k.*`` -> network ``cells.i.edges.e.*``
    with k the index of the kept op. The network's cell BNs are affine where the supernet's are not: their
    scale and shift are reset to 1 and 0, so that the network computes what the supernet's kept ops do.

    This is the discretization step of a search made literal: compare the two networks' outputs to see
    what deriving the cell costs.
    """
    cfg = supernet.config
    missing = [op for op in network.genotype.ops if op != "none" and op not in cfg.primitives]
    if missing:
        raise ValueError(f"the genotype uses {missing[0]}, which the supernet does not have "
                         f"(primitives: {', '.join(cfg.primitives)})")
    kept = {e: cfg.primitives.index(op) for e, op in enumerate(network.genotype.ops) if op != "none"}
    source = supernet.state_dict()
    state = network.state_dict()
    for name, tensor in state.items():
        parts = name.split(".")
        key = name
        if parts[0] == "cells" and len(parts) > 4 and parts[2] == "edges":  # cells.i.edges.e.<rest>
            key = ".".join(parts[:4] + ["ops", str(kept[int(parts[3])])] + parts[4:])
            if key not in source and parts[-1] in ("weight", "bias"):  # a BN scale/shift the supernet lacks
                state[name] = torch.ones_like(tensor) if parts[-1] == "weight" else torch.zeros_like(tensor)
                continue
        if key not in source or source[key].shape != tensor.shape:
            raise ValueError("the network and the supernet differ in shape (channels, cells per stage, "
                             f"in_channels or num_classes): no match for {name}")
        state[name] = source[key]
    network.load_state_dict(state)


# ==========================================================================================================
# Drawing
# ==========================================================================================================

INPUT_COLOR = "darkseagreen2"
NODE_COLOR = "lightblue"
OUTPUT_COLOR = "palegoldenrod"
DEAD_FILL = "gray92"
DEAD_LINE = "gray60"


def cell_graph(genotype: Arch, title: Optional[str] = None) -> graphviz.Digraph:
    """A graphviz drawing of the cell: nodes 0 (input) .. 3 (output), one edge per op that is not
    ``none``, labelled by the op. Nodes the input does not reach, and the edges leaving them, are grey
    and dashed; if the output is unreachable it is labelled so: the cell carries no information."""
    genotype = as_genotype(genotype)
    reached = set(genotype.reachable_nodes())
    g = graphviz.Digraph(format="svg")
    g.attr(rankdir="LR")
    g.attr("node", style="filled", shape="rect", fontsize="18", height="0.5", width="0.5", penwidth="2",
           fontname="helvetica")
    g.attr("edge", fontsize="14", fontname="helvetica")
    if title:
        g.attr(label=title, labelloc="t", fontsize="20", fontname="helvetica")
    out = NODES - 1
    for node in range(NODES):
        label = {0: "0: input", out: f"{out}: output"}.get(node, str(node))
        fill = {0: INPUT_COLOR, out: OUTPUT_COLOR}.get(node, NODE_COLOR)
        if node in reached:
            g.node(str(node), label, fillcolor=fill)
        else:
            if node == out:
                label = f"{out}: output, not reached"
            g.node(str(node), label, fillcolor=DEAD_FILL, color=DEAD_LINE, fontcolor=DEAD_LINE,
                   style="filled,dashed", tooltip="not reached from the input")
    for op, to, src in genotype.edges:
        if op == "none":
            continue
        if src in reached:
            g.edge(str(src), str(to), label=op)
        else:
            g.edge(str(src), str(to), label=op, color=DEAD_LINE, fontcolor=DEAD_LINE, style="dashed")
    for node in range(NODES - 1):  # invisible chain: nodes 0, 1, 2, 3 left to right in every drawing
        g.edge(str(node), str(node + 1), style="invis")
    return g
