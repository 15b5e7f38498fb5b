"""The fast supernet path: the same cell as the reference ``MixedOp`` formulation, computed with less work.

``SearchCell.forward`` calls :func:`fast_cell_forward` when the cell's ``path`` is ``"fast"``. It reads the
parameters and BN buffers of the very modules the reference path uses (``cell.edges[e].ops[k]``), so
``Supernet.set_path`` switches formulation on one model, and both paths compute the same function (same
outputs, same gradients, same BN running statistics) up to floating-point rounding.

Where the time goes (measured with ``torch.profiler`` on a 2-core CPU, see ``book/benchmarks.md``): the
reference step is dominated by the backward pass of the depthwise convolutions, above all the dilated
ones, for which oneDNN has no fast kernel, and by pools/BN in the NCHW layout. What this path changes:

* **Shared per-source work.** Every edge leaving one source node sees the same input. Its max/avg pools
  and the BN after them (training mode: batch statistics, non-affine) give the same tensor on every edge:
  computed once per source; each edge's BN still gets its running statistics updated. The ReLU in front
  of every convolution (and of the factorized-reduce skip) is computed once per source.
* **Weights folded into the last BN.** ``w * BN(z)`` with a non-affine BN is ``BN(z)`` with ``gamma = w``:
  one fused kernel, and autograd keeps one tensor fewer per op alive for the backward pass.
* **Dilated depthwise convolutions as undilated ones** on the four polyphase sub-images (space-to-batch):
  a dilation-2 convolution of an image is an ordinary convolution of each of its 2x2 phases. The 1x1
  conv and the BN after it treat every pixel alike, so a whole ``dil_conv`` runs in phase space: each
  source splits its ReLU output into phases once, and each edge interleaves the sum of its dilated ops
  back once (even-sized inputs; odd ones split and interleave per op).
* **channels_last** memory layout (optional, on by default): pools, BN and convolutions all run faster,
  as long as the *gradients* are channels_last too. A gradient in another layout makes every kernel that
  meets it convert or take a slow path (mixing layouts made BN's backward 3-4x slower), so every
  reshaping step here has its own backward that returns a compact channels_last gradient: the phase
  split and interleave (one copy each way), the single phases that stride-2 ops read, and the cell's
  output concatenation (``cat``'s own backward hands out strided channel slices).
* The ``none`` op contributes exactly zero: it is skipped. Each edge and node keeps one running sum.

Memory (``OPTIONS["recompute"]``, ``OPTIONS["rebuild_cheap"]``); neither changes a single bit of the
results (the same kernels run on the same inputs; ``tests/test_fast.py`` checks three whole steps for
bitwise equality):

* **Recomputation** of whole cells: the mixed edges of a cell run under ``torch.utils.checkpoint``
  (non-reentrant), so autograd keeps only the cell's two preprocessed inputs and recomputes the cell's
  activations in the backward pass, one cell at a time. The recomputation uses the same batch
  statistics and the same skip noise (drawn before the checkpoint) and does not update the BN running
  statistics a second time. It costs one more forward pass of the cell, so by default
  (``"first_stage"``) only the normal cells before the first reduction, at full resolution, are
  recomputed: they hold the largest activations. ``"all"`` recomputes every cell, ``"none"`` none.
* **Rebuilding cheap activations** (the other cells): under :func:`torch.autograd.graph.saved_tensors_hooks`
  autograd stores a recipe instead of a tensor for activations that are cheap to compute again from
  tensors it keeps anyway: every 1x1 convolution's output (from the convolution's input, which its
  weight gradient needs), the ReLU inside every SepConv (BN + ReLU of the rebuilt 1x1 output), and the
  per-source ReLU, phases, pools and pool BN. The backward pass rebuilds each once; the expensive
  depthwise convolution outputs are kept. (The hooks do not support double backward; nothing here
  uses it: the second-order step takes finite differences.)

Both apply only to cells whose input has at least ``OPTIONS["memory_min_elements"]`` elements (batch x
channels x height x width; 2**19 by default, e.g. the paper shape's cells up to the second reduction): for
small activations memory is no concern, and the extra work is mostly per-call overhead.

Options live in :data:`OPTIONS` (``channels_last``, ``dilated_as_phases``, ``recompute``,
``rebuild_cheap``, ``memory_min_elements``) so benchmarks and tests can turn each idea on or off.
"""
from __future__ import annotations

import weakref
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .genotype import edge_index
from .ops import DilConv, FactorizedReduce, Identity, SepConv, Zero

OPTIONS: Dict[str, bool] = {
    "channels_last": True,       # run the cell in the channels_last memory layout
    "dilated_as_phases": True,   # dilation-2 depthwise convs as undilated convs on 2x2 polyphase images
    "recompute": "first_stage",  # which cells keep only their inputs and recompute their mixed edges
    "rebuild_cheap": True,       # other cells: drop cheap activations (1x1 conv outputs...), rebuild them
    "memory_min_elements": 2 ** 19,  # cells with smaller inputs (batch x C x H x W) use neither of the two
}
"""Switches for the ideas above (all on by default; the math is the same either way)."""


# --- small building blocks ----------------------------------------------------------------------------
_STATE = {"update_stats": True,  # False while a checkpointed cell is recomputed in the backward pass
          "rebuilding": False}   # True while a cell runs under the rebuild hooks (OPTIONS["rebuild_cheap"])


# --- rebuilding cheap activations in the backward pass ---------------------------------------------------
class _Rebuild:
    """Stands in for an activation autograd would keep for the backward pass: how to compute it again from
    tensors autograd keeps anyway (a 1x1 conv output from the conv's saved input). Built once, on first use
    in the backward pass, then shared by every node that saved it."""

    __slots__ = ("ref", "make", "value")

    def __init__(self, t: torch.Tensor, make: Callable[[], torch.Tensor]):
        self.ref, self.make, self.value = weakref.ref(t), make, None

    def get(self) -> torch.Tensor:
        if self.value is None:
            self.value = self.make()
        return self.value


_REBUILDS: Dict[int, _Rebuild] = {}  # id(activation) -> its recipe, for the cell being computed


def _recipe(x: torch.Tensor) -> Optional[_Rebuild]:
    r = _REBUILDS.get(id(x))
    return r if r is not None and r.ref() is x else None  # (the weakref rules out a reused id)


def rebuildable(y: torch.Tensor, fn: Callable[..., torch.Tensor], *inputs) -> torch.Tensor:
    """Mark ``y = fn(*inputs)`` (just computed) as an activation autograd may drop and rebuild: while a
    cell runs under the rebuild hooks, autograd stores this recipe instead of ``y``. ``fn`` must compute
    ``y`` bit for bit again. An input that is itself rebuildable is referenced through its recipe, so the
    recipe does not keep that input alive; other inputs are kept (autograd keeps them anyway)."""
    if _STATE["rebuilding"]:
        args = [_recipe(x) or x if isinstance(x, torch.Tensor) else x for x in inputs]
        _REBUILDS[id(y)] = _Rebuild(y, lambda: fn(*[a.get() if isinstance(a, _Rebuild) else a for a in args]))
    return y


def _pack(t: torch.Tensor):
    r = _recipe(t)
    if r is not None:
        return r
    # Detached: an op's own output, returned as is, would hold its graph node, which holds it (a reference
    # cycle that only a backward pass breaks). First-order gradients never need the saved tensor's history.
    return t.detach()


def _unpack(x):
    return x.get() if isinstance(x, _Rebuild) else x


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``scale * bn(x)`` in one ``F.batch_norm`` call, updating ``bn``'s buffers exactly as ``bn(x)`` does.

    ``scale`` is a 0-d tensor (an op's relaxed weight); autograd carries its gradient."""
    factor = _update_counter(bn)
    use_batch_stats = bn.training or bn.running_mean is None
    track = not bn.training or bn.track_running_stats
    running_mean, running_var = (bn.running_mean, bn.running_var) if track else (None, None)
    if track and bn.training and not _STATE["update_stats"] and running_mean is not None:
        # a checkpoint's recomputation: throwaway copies take the update (same autograd graph, same values)
        running_mean, running_var = running_mean.clone(), running_var.clone()
    weight, bias = bn.weight, bn.bias
    if scale is not None:
        s = scale.expand(x.shape[1]).contiguous()  # (the channels_last BN kernels misread a stride-0 weight)
        weight = s if weight is None else weight * s
        bias = None if bias is None else bias * s
    return F.batch_norm(x, running_mean, running_var,
                        weight, bias, use_batch_stats, factor, bn.eps)


def _update_counter(bn: nn.BatchNorm2d) -> float:
    """What ``_BatchNorm.forward`` does before normalising: count the batch, return the momentum."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if (bn.training and bn.track_running_stats and bn.num_batches_tracked is not None
            and _STATE["update_stats"]):
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    return factor


def shared_batch_norm(bns: Sequence[nn.BatchNorm2d], x: torch.Tensor) -> Optional[torch.Tensor]:
    """Training mode: ``bn_e(x)`` for several non-affine BNs that all see the same ``x`` is one tensor
    (batch statistics). Computes it once and updates every BN's running statistics from the one batch
    statistic. Returns ``None`` when the BNs cannot share (eval mode, affine BNs...)."""
    if not all(bn.training and bn.track_running_stats and not bn.affine for bn in bns):
        return None
    eps = {bn.eps for bn in bns}
    if len(eps) != 1:
        return None
    # One pass: with momentum 1, F.batch_norm leaves the batch mean and the unbiased batch variance in the
    # two scratch buffers (what BatchNorm2d blends into its running statistics), then each BN blends them.
    # (A checkpoint's recomputation makes the same call, so autograd saves the same tensors, and blends nothing.)
    mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    var = torch.ones_like(mean)
    eps = eps.pop()
    y = rebuildable(F.batch_norm(x, mean, var, None, None, True, 1.0, eps),
                    lambda z: _batch_stats_norm(z, None, None, eps, 1.0), x)
    if not _STATE["update_stats"]:
        return y
    with torch.no_grad():
        for bn in bns:
            factor = _update_counter(bn)
            bn.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
            bn.running_var.mul_(1.0 - factor).add_(var, alpha=factor)
    return y


def depthwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a depthwise convolution; stride-1 dilation-2 ones via the polyphase trick (see
    module doc). (The cell itself routes whole dilated ops into phase space; this covers the rest.)"""
    k = conv.kernel_size[0]
    if (conv.dilation != (2, 2) or conv.stride != (1, 1) or conv.padding != (k - 1, k - 1) or k % 2 == 0
            or not OPTIONS["dilated_as_phases"]):
        return conv(x)
    return _dilated_by_phases(x, conv.weight, conv.groups)


def _reads_even_phase(conv: nn.Conv2d) -> bool:
    """Stride 2 and dilation 2 with 'same' padding only ever read phase (0, 0) of the input: the conv is
    an undilated stride-1 conv of that phase with half the padding."""
    k = conv.kernel_size[0]
    return (OPTIONS["dilated_as_phases"] and conv.stride == (2, 2) and conv.dilation == (2, 2)
            and conv.padding == (k - 1, k - 1) and k % 2 == 1)


def _dilated_by_phases(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A stride-1 dilation-2 'same' convolution as an undilated one on the four 2x2 phases of ``x``,
    stacked along the batch (space-to-batch), then interleaved back (batch-to-space)."""
    H, W = x.shape[-2:]
    if H % 2 or W % 2:  # zeros at the end act like the zero padding they replace; cropped below
        x = F.pad(x, (0, W % 2, 0, H % 2))
    k = weight.shape[-1]
    y = F.conv2d(to_phases(x), weight, None, 1, (k - 1) // 2, 1, groups)
    return from_phases(y, x.shape[0])[:, :, :H, :W]


def _layout() -> torch.memory_format:
    return torch.channels_last if OPTIONS["channels_last"] else torch.contiguous_format


def _space_to_batch(x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    y = torch.empty((4 * B, C, H // 2, W // 2), dtype=x.dtype, device=x.device, memory_format=_layout())
    y.view(2, 2, B, C, H // 2, W // 2).copy_(x.view(B, C, H // 2, 2, W // 2, 2).permute(3, 5, 0, 1, 2, 4))
    return y


def _batch_to_space(y: torch.Tensor, batch: int) -> torch.Tensor:
    _, C, h, w = y.shape
    x = torch.empty((batch, C, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=_layout())
    x.view(batch, C, h, 2, w, 2).copy_(y.view(2, 2, batch, C, h, w).permute(2, 3, 4, 0, 5, 1))
    return x


class _ToPhases(torch.autograd.Function):
    """Space-to-batch in one copy, in the cell's layout both ways (a reshape-permute-reshape would copy
    twice and hand autograd a channels-first gradient, which makes every later kernel change layout)."""

    @staticmethod
    def forward(ctx, x):
        ctx.batch = x.shape[0]
        return _space_to_batch(x)

    @staticmethod
    def backward(ctx, g):
        return _FromPhases.apply(g, ctx.batch), None


class _FromPhases(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, batch):
        return _batch_to_space(y, batch)

    @staticmethod
    def backward(ctx, g):
        return _ToPhases.apply(g), None


def to_phases(x: torch.Tensor) -> torch.Tensor:
    """Space-to-batch: (B, C, H, W) with even H, W -> (4B, C, H/2, W/2), phase (i, j) = x[..., i::2, j::2]
    in batch block 2i + j."""
    return _ToPhases.apply(x)


def from_phases(y: torch.Tensor, batch: int) -> torch.Tensor:
    """Batch-to-space, the inverse of :func:`to_phases`."""
    return _FromPhases.apply(y, batch)


class _Phase(torch.autograd.Function):
    """``x[:, :, i::2, j::2]`` as a compact tensor in the cell's layout; the gradient too (autograd's own
    slice backward would return a channels-first gradient)."""

    @staticmethod
    def forward(ctx, x, i, j):
        ctx.shape, ctx.ij = x.shape, (i, j)
        return x[:, :, i::2, j::2].contiguous(memory_format=_layout())

    @staticmethod
    def backward(ctx, g):
        i, j = ctx.ij
        gx = torch.empty(ctx.shape, dtype=g.dtype, device=g.device, memory_format=_layout()).zero_()
        gx[:, :, i::2, j::2] = g
        return gx, None, None


def phase(x: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """Phase ``(i, j)`` of ``x``: what a stride-2 op with a 1x1 footprint per output pixel reads."""
    return _Phase.apply(x, i, j)


class _ConcatChannels(torch.autograd.Function):
    """``torch.cat(states, 1)`` whose gradients come back compact in the cell's layout (``cat``'s own
    backward hands each input a strided channel slice of the gradient)."""

    @staticmethod
    def forward(ctx, *states):
        ctx.sizes = [s.shape[1] for s in states]
        return torch.cat(states, dim=1)

    @staticmethod
    def backward(ctx, g):
        return tuple(part.contiguous(memory_format=_layout()) for part in g.split(ctx.sizes, dim=1))


def _phase_eligible(op: "DilConv", h: torch.Tensor) -> bool:
    """Can this DilConv run entirely in phase space? Stride 1, dilation 2, 'same' padding, odd kernel and
    an even-sized input (odd sizes would put the padding zeros into the batch statistics of its BN)."""
    dw = op.op[1]
    k = dw.kernel_size[0]
    return (OPTIONS["dilated_as_phases"] and dw.stride == (1, 1) and dw.dilation == (2, 2)
            and dw.padding == (k - 1, k - 1) and k % 2 == 1 and h.shape[-1] % 2 == 0 and h.shape[-2] % 2 == 0)


def pointwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 (or any plain) convolution whose output autograd may drop and rebuild from ``x``, which the
    convolution keeps for its weight gradient anyway."""
    args = (conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return rebuildable(F.conv2d(x, *args), F.conv2d, x, *args)


def _batch_stats_norm(x: torch.Tensor, weight, bias, eps: float, momentum: float) -> torch.Tensor:
    """Training-mode BN of ``x`` with throwaway running statistics: the forward's own kernel, so a rebuild
    gives the same bits."""
    mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    return F.batch_norm(x, mean, torch.ones_like(mean), weight, bias, True, momentum, eps)


def relu_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(bn(x))``. In training mode autograd may drop the result and rebuild it from ``x`` (itself
    rebuilt from the conv before it): one more pass of BN and ReLU instead of a stored activation."""
    y = F.relu(batch_norm(bn, x))
    if bn.training:
        rebuildable(y, lambda z: F.relu(_batch_stats_norm(z, bn.weight, bn.bias, bn.eps, 0.0)), x)
    return y


# --- the ops of one edge, given what its source shares --------------------------------------------------
def sep_conv(op: SepConv, r: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``w * op(x)`` for a SepConv, given ``r = relu(x)`` (shared by the source)."""
    _, dw1, pw1, bn1, _, dw2, pw2, bn2 = op.op
    t = relu_batch_norm(bn1, pointwise(depthwise(r, dw1), pw1))
    return batch_norm(bn2, pointwise(depthwise(t, dw2), pw2), w)


def dil_conv(op: DilConv, src: "_Shared", w: torch.Tensor) -> torch.Tensor:
    """``w * op(x)`` for a DilConv outside phase space (strided, or odd-sized input)."""
    _, dw, pw, bn = op.op
    if _reads_even_phase(dw):
        k = dw.kernel_size[0]
        y = F.conv2d(src.phase(0, 0), dw.weight, None, 1, (k - 1) // 2, 1, dw.groups)
    else:
        y = depthwise(src.relu, dw)
    return batch_norm(bn, pointwise(y, pw), w)


def dil_conv_in_phases(op: DilConv, phases: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``w * op(x)`` in phase space, given ``phases = to_phases(relu(x))`` (shared by the source): the
    undilated depthwise conv of the phases, then the 1x1 conv and the BN, which act on every pixel alike
    (the BN's batch statistics run over the same pixels, only in another order). The caller sums an
    edge's dilated ops in phase space and interleaves the sum back once."""
    _, dw, pw, bn = op.op
    k = dw.kernel_size[0]
    y = F.conv2d(phases, dw.weight, None, 1, (k - 1) // 2, 1, dw.groups)
    return batch_norm(bn, pointwise(y, pw), w)


def factorized_reduce(op: FactorizedReduce, src: "_Shared", w: torch.Tensor) -> torch.Tensor:
    """``w * op(x)`` for the skip of a reduction edge. Its two stride-2 1x1 convs read phases (0, 0) and
    (1, 1) of ``relu(x)`` (shared by the source; odd sizes shift and pad as the module does)."""
    r = src.relu
    a = F.conv2d(src.phase(0, 0), op.conv_1.weight, op.conv_1.bias)
    if r.shape[-1] % 2 or r.shape[-2] % 2:
        b = pointwise(F.pad(r[:, :, 1:, 1:], (0, 1, 0, 1)), op.conv_2)
    else:
        b = F.conv2d(src.phase(1, 1), op.conv_2.weight, op.conv_2.bias)
    return batch_norm(op.bn, _ConcatChannels.apply(a, b), w)


def pool_bn(op: nn.Sequential, pooled: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``w * op(x)`` for a pool + BN op, given the (shared) pooled input."""
    return batch_norm(op[1], pooled, w)


# --- the cell -------------------------------------------------------------------------------------------
def _kind(op: nn.Module) -> str:
    """Classify a candidate op module by what it computes."""
    if isinstance(op, Zero):
        return "zero"
    if isinstance(op, Identity):
        return "identity"
    if isinstance(op, FactorizedReduce):
        return "factorized_reduce"
    if isinstance(op, SepConv):
        return "sep"
    if isinstance(op, DilConv):
        return "dil"
    if isinstance(op, nn.Sequential) and isinstance(op[0], (nn.MaxPool2d, nn.AvgPool2d)):
        return "pool"
    return "generic"  # an op added to the registry later: run as the reference path does


def _pool_key(pool: nn.Module) -> Tuple:
    """Two pools with equal keys compute the same function."""
    return (type(pool).__name__, pool.kernel_size, pool.stride, pool.padding,
            getattr(pool, "count_include_pad", None), getattr(pool, "ceil_mode", None))


class _Shared:
    """What every edge leaving one source node can share, computed on first use: ``relu(h)``, its four
    phases stacked along the batch, single phases of it (stride-2 ops), and each kind of pool of ``h``."""

    def __init__(self, h: torch.Tensor):
        self.h = h
        self._cache: Dict[Tuple, torch.Tensor] = {}

    def _get(self, key: Tuple, make) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # Each is cheap to compute again from h, so autograd may drop it and rebuild it in the backward pass.
    @property
    def relu(self) -> torch.Tensor:
        return self._get(("relu",), lambda: rebuildable(F.relu(self.h), F.relu, self.h))

    @property
    def phases(self) -> torch.Tensor:
        return self._get(("phases",), lambda: rebuildable(to_phases(self.relu), _space_to_batch, self.relu))

    def phase(self, i: int, j: int) -> torch.Tensor:
        return self._get(("phase", i, j), lambda: phase(self.relu, i, j))

    def pooled(self, pool: nn.Module) -> torch.Tensor:
        return self._get(("pool",) + _pool_key(pool), lambda: rebuildable(pool(self.h), pool, self.h))


def _source_contributions(cell, h: torch.Tensor, edges: Sequence[int], weights: torch.Tensor,
                          noise: Optional[torch.Tensor]) -> Dict[int, torch.Tensor]:
    """``{e: sum_k w[e, k] * op_ek(h)}`` for every edge ``e`` leaving the source whose value is ``h``."""
    # Running sums, one per edge (terms in op order, as a list's left fold would add them): only these stay
    # alive, not every op's output until the source is done.
    out: Dict[int, torch.Tensor] = {}
    in_phases: Dict[int, torch.Tensor] = {}  # the dilated ops of each edge, summed in phase space
    src = _Shared(h)
    for k in range(len(cell.edges[edges[0]].ops)):
        ops = [cell.edges[e].ops[k] for e in edges]
        kind = _kind(ops[0])
        if kind == "zero":
            continue  # w * 0 adds nothing, and its weight gets a zero gradient either way
        if kind == "pool":
            pooled = src.pooled(ops[0][0])
            shared = shared_batch_norm([op[1] for op in ops], pooled)
            for e, op in zip(edges, ops):
                _add(out, e, pool_bn(op, pooled, weights[e, k]) if shared is None else weights[e, k] * shared)
            continue
        for e, op in zip(edges, ops):
            w = weights[e, k]
            if kind == "identity":
                _add(out, e, w * (h if noise is None else h + noise[e]))
            elif kind == "factorized_reduce":
                y = factorized_reduce(op, src, w)
                _add(out, e, y if noise is None else y + w * noise[e])
            elif kind == "sep":
                _add(out, e, sep_conv(op, src.relu, w))
            elif kind == "dil" and _phase_eligible(op, h):
                _add(in_phases, e, dil_conv_in_phases(op, src.phases, w))
            elif kind == "dil":
                _add(out, e, dil_conv(op, src, w))
            else:
                _add(out, e, w * op(h))
    for e, total in in_phases.items():
        _add(out, e, from_phases(total, h.shape[0]))
    return out


def _add(totals: Dict[int, torch.Tensor], key: int, term: torch.Tensor) -> None:
    """``totals[key] += term`` out of place (autograd), starting from the first term itself."""
    totals[key] = term if key not in totals else totals[key] + term


RECOMPUTE = ("none", "first_stage", "all")
"""Values of ``OPTIONS["recompute"]``: no cell, the normal cells before the first reduction (full
resolution: they hold the largest activations), every cell."""


def _recomputes(cell) -> bool:
    mode = OPTIONS["recompute"]
    if mode not in RECOMPUTE:
        raise ValueError(f"fast.OPTIONS['recompute'] = {mode!r}; choose one of {', '.join(RECOMPUTE)}")
    return mode == "all" or (mode == "first_stage" and not cell.reduction and getattr(cell, "stage", 0) == 0)


def fast_cell_forward(cell, states: List[torch.Tensor], weights: torch.Tensor,
                      noise: Optional[torch.Tensor]) -> torch.Tensor:
    """The output of ``cell`` (a ``SearchCell``) for the preprocessed inputs ``states = [s0, s1]``, relaxed
    weights ``weights`` (14, n_ops) and per-edge skip noise ``noise`` (or ``None``): the reference
    formulation's value, computed source by source (each node's outgoing edges together)."""
    if OPTIONS["channels_last"]:
        states = [s.contiguous(memory_format=torch.channels_last) for s in states]
    # Small activations: memory is no concern and the extra work is mostly per-call overhead (both options
    # together cost ~40% of a step at the cpu preset's shape), so they run as they are.
    large = states[1].numel() >= OPTIONS["memory_min_elements"]
    checkpointed = large and _recomputes(cell)
    if large and OPTIONS["rebuild_cheap"] and torch.is_grad_enabled() and not checkpointed:
        _STATE["rebuilding"] = True
        try:
            with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
                return _cell_body(cell, states, weights, noise)
        finally:
            _STATE["rebuilding"] = False
            _REBUILDS.clear()
    if checkpointed and torch.is_grad_enabled():
        calls = [0]

        def body(s0, s1, w, *nz):
            first = calls[0] == 0  # later calls are autograd's recomputation: no second stats update
            calls[0] += 1
            previous = _STATE["update_stats"]
            _STATE["update_stats"] = previous and first
            try:
                return _cell_body(cell, [s0, s1], w, nz[0] if nz else None)
            finally:
                _STATE["update_stats"] = previous

        args = (states[0], states[1], weights) + (() if noise is None else (noise,))
        return checkpoint(body, *args, use_reentrant=False, preserve_rng_state=False)
    return _cell_body(cell, states, weights, noise)


def _cell_body(cell, states: List[torch.Tensor], weights: torch.Tensor,
               noise: Optional[torch.Tensor]) -> torch.Tensor:
    rows = edge_index(cell.steps)
    pending: Dict[int, torch.Tensor] = {}  # running sum of each node's incoming edges, in source order
    states = list(states)
    for src in range(cell.steps + 2):
        if src >= 2:
            states.append(pending.pop(src))
        edges = [e for e, (_, s) in enumerate(rows) if s == src]
        if not edges:
            continue
        for e, y in _source_contributions(cell, states[src], edges, weights, noise).items():
            _add(pending, rows[e][0], y)
    return _ConcatChannels.apply(*states[-cell.multiplier:])
