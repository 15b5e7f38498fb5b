"""The sums of the fast supernet path: how each weighted op output ``w * op(x)`` enters its node.

A node of a cell is ``sum_e sum_k w[e, k] * op_ek(x_e)`` (DARTS Eq. 2; Fair DARTS Eq. 4 with sigmoid
weights). Most terms end in a non-affine batch norm, and ``w * BN(z)`` is the BN with ``gamma = w``. Two ways
to add them up, with one interface (``add_scaled``, ``add_batch_norm``, ``phases``, ``value``):

* :class:`RunningSum`, exact: every term is computed (one BN kernel with the weight folded in), then added out
  of place, edge by edge, in op order; each edge's sum is then added to its node. This is the order the
  recorded searches were computed in, bit for bit.
* :class:`InPlaceSum`, fused: in training mode ``w * BN(z) = a * z + b`` per channel, with
  ``a = w / sqrt(var(z) + eps)`` and ``b = -mean(z) * a``. A term costs one pass to gather ``mean`` and
  ``var`` and one in-place ``total += a * z``; the per-channel offsets ``b`` of all terms are added once, when
  the node is complete. No term's BN output is ever written, and no tensor is allocated per term. The
  backward pass is BN's own (with the same statistics; :mod:`fairdarts_core.fast_norm`'s wide reductions
  where they apply), so the gradients are the exact path's; the sum itself rounds differently (another order
  of the same additions).

The fused sum pays a few small per-channel operations per term, which cost more than they save on small
activations: it runs only on cells whose input has at least ``FastOptions.reorder_min_elements`` elements
(measured: at [32, 8, 16, 16] six fused terms take 0.56 ms against 0.46 ms; at [32, 16, 16, 16] 0.46 against
0.57 ms; at [64, 16, 16, 16] 1.0 against 1.7 ms; at the paper shape's [64, 16, 32, 32] 3.3 against 7.1 ms;
two threads). The default, 2**18, also keeps every cell of the recorded searches (at most 2**17 elements)
on the exact sums, so they re-run bit for bit.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .fast_norm import batch_moments, batch_norm_backward, unbiased, update_running, wide_norm_applies


# --- batch norm with an op's weight folded in ------------------------------------------------------------
def update_counter(bn: nn.BatchNorm2d, update_stats: bool) -> float:
    """What ``_BatchNorm.forward`` does before normalising: count the batch, return the momentum."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None and update_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    return factor


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, scale: Optional[torch.Tensor] = None,
               update_stats: bool = True) -> torch.Tensor:
    """``scale * bn(x)`` in one ``F.batch_norm`` call, updating ``bn``'s buffers exactly as ``bn(x)`` does
    (unless ``update_stats`` is False: a checkpointed cell's recomputation).

    ``scale`` is a 0-d tensor (an op's relaxed weight); autograd carries its gradient."""
    factor = update_counter(bn, update_stats)
    use_batch_stats = bn.training or bn.running_mean is None
    track = not bn.training or bn.track_running_stats
    running_mean, running_var = (bn.running_mean, bn.running_var) if track else (None, None)
    if track and bn.training and not update_stats and running_mean is not None:
        # a checkpoint's recomputation: throwaway copies take the update (same autograd graph, same values)
        running_mean, running_var = running_mean.clone(), running_var.clone()
    weight, bias = bn.weight, bn.bias
    if scale is not None:
        s = scale.expand(x.shape[1]).contiguous()  # (the channels_last BN kernels misread a stride-0 weight)
        weight = s if weight is None else weight * s
        bias = None if bias is None else bias * s
    return F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats, factor, bn.eps)


# --- the exact sum ----------------------------------------------------------------------------------------
class RunningSum:
    """``total = t1 + t2 + ...`` out of place, terms in the order they come (a list's left fold). The
    dilated ops of an edge add up in phase space first (``phases``); :meth:`value` interleaves that sum back
    and adds it last."""

    def __init__(self, update_stats: bool = True, in_phases: bool = False):
        self.update_stats = update_stats
        self.total: Optional[torch.Tensor] = None
        self.phases = None if in_phases else RunningSum(update_stats, in_phases=True)

    def add(self, term: torch.Tensor) -> None:
        self.total = term if self.total is None else self.total + term

    def add_scaled(self, x: torch.Tensor, w: torch.Tensor) -> None:
        self.add(w * x)

    def add_batch_norm(self, bn: nn.BatchNorm2d, z: torch.Tensor, w: torch.Tensor) -> None:
        self.add(batch_norm(bn, z, w, self.update_stats))

    def value(self, from_phases) -> Optional[torch.Tensor]:
        """The sum (``None`` when nothing was added); ``from_phases`` interleaves the phase-space sum back."""
        if self.phases is not None and self.phases.total is not None:
            self.add(from_phases(self.phases.total))
        return self.total


# --- the fused sum ----------------------------------------------------------------------------------------
class _AddNormalized(torch.autograd.Function):
    """``total + a * z`` in place, ``a = w * invstd`` per channel: a training-mode BN of ``z`` with
    ``gamma = w`` and its offset ``-mean * a`` left out (:class:`InPlaceSum` adds the offsets once). The
    backward pass is BN's, with the statistics of the forward pass (its sums 64 lanes wide with ``wide``:
    :mod:`fairdarts_core.fast_norm`). ``total=None`` starts a new sum."""

    @staticmethod
    def forward(ctx, total, z, w, mean, invstd, eps, wide):
        a = (w * invstd).view(1, -1, 1, 1)
        ctx.eps, ctx.wide = eps, wide
        ctx.save_for_backward(z, w, mean, invstd)
        if total is None:
            return z * a
        ctx.mark_dirty(total)
        return total.addcmul_(z, a)

    @staticmethod
    def backward(ctx, g):
        z, w, mean, invstd = ctx.saved_tensors
        need_z, need_w = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        gz = gw = None
        if need_z or need_w:
            gamma = w.expand(z.shape[1]).contiguous()
            if ctx.wide:
                gz, g_gamma = batch_norm_backward(g, z, gamma, mean, invstd, need_z, need_w)
            else:
                gz, g_gamma, _ = torch.ops.aten.native_batch_norm_backward(
                    g, z, gamma, None, None, mean, invstd, True, ctx.eps, [need_z, need_w, False])
            gw = g_gamma.sum() if need_w else None
        return g if ctx.needs_input_grad[0] else None, gz, gw, None, None, None, None


class InPlaceSum:
    """A node's sum, fused: every term is added in place into one tensor; the BN terms' per-channel offsets
    are gathered in a vector and added once by :meth:`value`. The dilated ops add up in phase space
    (``phases``, which shares the offsets: they are per channel). ``wide_norm(z)``: are a term's statistics and
    backward sums taken 64 lanes wide (:mod:`fairdarts_core.fast_norm`; the fast path passes
    ``CellPass.wide_norm``, which heeds ``FastOptions.wide_norm``)."""

    def __init__(self, update_stats: bool = True, wide_norm: Callable[[torch.Tensor], bool] = wide_norm_applies,
                 offsets: Optional[list] = None):
        self.update_stats, self.wide_norm = update_stats, wide_norm
        self.total: Optional[torch.Tensor] = None
        self._offsets = [] if offsets is None else offsets  # detached per-channel vectors, summed by value()
        self.phases = InPlaceSum(update_stats, wide_norm, self._offsets) if offsets is None else None

    def add(self, term: torch.Tensor) -> None:
        """Adds a tensor nobody else holds (it becomes the sum when it is the first term)."""
        self.total = term if self.total is None else self.total.add_(term)

    def add_scaled(self, x: torch.Tensor, w: torch.Tensor) -> None:
        self.total = w * x if self.total is None else self.total.addcmul_(x, w)

    def add_batch_norm(self, bn: nn.BatchNorm2d, z: torch.Tensor, w: torch.Tensor) -> None:
        if not fusable(bn, z):
            return self.add(batch_norm(bn, z, w, self.update_stats))
        factor = update_counter(bn, self.update_stats)
        running = bn.track_running_stats and self.update_stats
        wide = self.wide_norm(z)
        with torch.no_grad():  # (the backward pass of BN accounts for the statistics)
            if wide:
                mean, var = batch_moments(z)
                if running:
                    update_running(bn, mean, unbiased(var, z), factor)
            else:
                mean, var = torch.batch_norm_update_stats(z, bn.running_mean if running else None,
                                                          bn.running_var if running else None, factor)
            invstd = (var + bn.eps).sqrt().reciprocal()
            self._offsets.append(-mean * invstd * w)
        self.total = _AddNormalized.apply(self.total, z, w, mean, invstd, bn.eps, wide)

    def value(self, from_phases) -> Optional[torch.Tensor]:
        if self.phases is not None and self.phases.total is not None:
            self.add(from_phases(self.phases.total))
        if self._offsets and self.total is not None:
            self.total.add_(torch.stack(self._offsets).sum(0).view(1, -1, 1, 1))
            self._offsets.clear()
        return self.total


def fusable(bn: nn.BatchNorm2d, z: torch.Tensor) -> bool:
    """Can ``w * bn(z)`` join an :class:`InPlaceSum`? A training-mode, non-affine BN (batch statistics) of a
    float32 or float64 tensor of its own dtype (not under autocast)."""
    return (bn.training and not bn.affine and z.dim() == 4 and z.dtype in (torch.float32, torch.float64)
            and (bn.running_mean is None or bn.running_mean.dtype == z.dtype))
