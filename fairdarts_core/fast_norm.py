"""Training-mode batch norm of the fast path's reordered cells, for activations of at most 16 channels.

A channels_last activation of ``C`` channels is a ``[pixels, C]`` matrix, and a batch norm reduces it over
the pixels, once per channel: the batch mean and variance forward (Ioffe & Szegedy 2015, Alg. 1), the sums
of ``g`` and ``g * x_hat`` backward. ATen's channels_last kernels run these reductions ``C`` lanes wide; at the
paper's first cells, 16 channels, they take several times as long as they do at 64 (a whole step at the
paper shape spends about 0.5 s in BN). Here the same memory is read as a ``[pixels * C / 64, 64]`` matrix,
lane ``j`` holding channel ``j % C``, and ATen's kernels for 2-d inputs (``BatchNorm1d``'s) reduce it 64 lanes
wide; each channel's statistics are then gathered from its ``64 / C`` lanes, which hold equally many values:
the mean is the lanes' mean, the variance the lanes' mean variance plus the variance of their means.

The math is BN's; the rounding differs from ATen's 4-d kernels (other partial sums). These functions serve
the cells that already round differently from the exact formulation (``CellPass.reordered``), and only the
tensors :func:`wide_norm_applies` accepts, unless ``FastOptions.wide_norm`` is off: on some CPUs (an Intel Xeon,
``book/benchmarks.ipynb``) ATen's kernels for 2-d inputs gain nothing from a second thread, and its 4-d
kernels are then the faster ones.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 64
"""Lanes of the reductions: rows of 64 values, whole pixels of ``C`` channels."""

MAX_CHANNELS = 16
"""Wider activations keep ATen's 4-d kernels: at 32 channels they gain too little to pay for the
gathering (several small operations per call)."""


def wide_norm_applies(x: torch.Tensor) -> bool:
    """Can :func:`batch_moments`, :func:`normalize` and :func:`batch_norm_backward` take ``x``? A channels_last
    4-d float32 or float64 CPU tensor outside autocast, of at most ``MAX_CHANNELS`` channels that divide
    ``WIDTH``."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu") and 0 < x.shape[1] <= MAX_CHANNELS and WIDTH % x.shape[1] == 0
            and x.numel() % WIDTH == 0 and x.is_contiguous(memory_format=torch.channels_last))


def _rows(x: torch.Tensor) -> torch.Tensor:
    """The channels_last ``x`` as rows of ``WIDTH`` values (a view): lane ``j`` holds channel ``j % C``."""
    return x.permute(0, 2, 3, 1).reshape(-1, WIDTH)


def _lanes(v: torch.Tensor) -> torch.Tensor:
    """A per-channel vector repeated for every lane."""
    return v.repeat(WIDTH // v.numel())


def batch_moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The batch mean and the biased batch variance of each channel of ``x`` (:func:`wide_norm_applies`)."""
    lane_mean, lane_var = torch.batch_norm_update_stats(_rows(x), None, None, 0.0)
    lane_mean, lane_var = lane_mean.view(-1, x.shape[1]), lane_var.view(-1, x.shape[1])
    mean = lane_mean.mean(0)
    return mean, (lane_var + (lane_mean - mean).square()).mean(0)


def update_running(bn: nn.BatchNorm2d, mean: torch.Tensor, unbiased_var: torch.Tensor, factor: float) -> None:
    """Blends a batch's mean and unbiased variance into ``bn``'s running statistics as ``BatchNorm2d`` does."""
    if bn.running_mean is not None:
        bn.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1.0 - factor).add_(unbiased_var, alpha=factor)


def unbiased(var: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The biased batch variance ``var`` of ``x``'s channels, unbiased (Bessel's correction, as BN's running
    statistics take it)."""
    count = x.numel() // x.shape[1]
    return var * (count / max(count - 1, 1))


def batch_norm_backward(g: torch.Tensor, x: torch.Tensor, gamma: Optional[torch.Tensor], mean: torch.Tensor,
                        invstd: torch.Tensor, need_x: bool, need_gamma: bool
                        ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The gradients of ``y = gamma * (x - mean) * invstd`` with batch statistics (``mean``, ``invstd`` of
    ``x`` itself) for the output gradient ``g``: ``x``'s (``None`` unless ``need_x``) and ``gamma``'s per
    channel, ``sum(g * x_hat)`` (``None`` unless ``need_gamma``). With ``k = gamma * invstd``:
    ``dx = k * (g - mean(g) - x_hat * mean(g * x_hat))`` (one pass for the two sums, two for ``dx``)."""
    channels = x.shape[1]
    g = g.contiguous(memory_format=torch.channels_last)
    _, lane_g_xhat, lane_g = torch.ops.aten.native_batch_norm_backward(
        _rows(g), _rows(x), torch.ones(WIDTH, dtype=x.dtype), None, None, _lanes(mean), _lanes(invstd), True, 0.0,
        [False, True, True])
    sum_g_xhat = lane_g_xhat.view(-1, channels).sum(0)
    gx = None
    if need_x:
        count = x.numel() // channels
        sum_g = lane_g.view(-1, channels).sum(0)
        k = invstd if gamma is None else gamma * invstd
        slope = -k * invstd * sum_g_xhat / count  # dx = k * g + slope * x + offset
        offset = -k * sum_g / count - slope * mean
        gx = torch.addcmul(offset.view(1, -1, 1, 1), g, k.view(1, -1, 1, 1))
        gx.addcmul_(x, slope.view(1, -1, 1, 1))
    return gx, (sum_g_xhat if need_gamma else None)


class _Normalize(torch.autograd.Function):
    """``(x - mean) * invstd`` with the batch statistics of ``x``; the backward pass is BN's."""

    @staticmethod
    def forward(ctx, x, mean, var, eps):
        invstd = (var + eps).sqrt().reciprocal()
        ctx.save_for_backward(x, mean, invstd)
        y = F.batch_norm(_rows(x), _lanes(mean), _lanes(var), None, None, False, 0.0, eps)
        # (detached: the 4-d view of the rows is then a tensor of its own, which a ReLU may modify in place)
        return y.view(x.shape[0], x.shape[2], x.shape[3], x.shape[1]).permute(0, 3, 1, 2).detach()

    @staticmethod
    def backward(ctx, g):
        x, mean, invstd = ctx.saved_tensors
        gx, _ = batch_norm_backward(g, x, None, mean, invstd, True, False)
        return gx, None, None, None


def normalize(x: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training-mode, non-affine BN of ``x`` (:func:`wide_norm_applies`): the output, and the batch mean and
    biased variance (for the running statistics). The same ``x`` gives the same bits (a rebuild's recipe)."""
    with torch.no_grad():
        mean, var = batch_moments(x)
    return _Normalize.apply(x, mean, var, eps), mean, var
