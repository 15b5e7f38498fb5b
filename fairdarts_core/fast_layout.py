"""The reshaping steps of the fast supernet path, each with a backward pass that keeps the cell's layout.

A gradient in another memory layout than the cell's makes every kernel that meets it convert or take a
slow path (mixing layouts made BN's backward 3-4x slower with channels_last), so every reshaping step the
fast path takes (:mod:`fairdarts_core.fast`) has its own backward that returns a compact gradient in the
cell's layout: the polyphase split and interleave (one copy each way), the single phases that stride-2
ops read, and the channel concatenation (``cat``'s own backward hands out strided channel slices).

``layout`` is the cell's memory format, ``torch.channels_last`` or ``torch.contiguous_format``
(:attr:`fairdarts_core.fast.FastOptions.layout`).
"""
from __future__ import annotations

import torch


def space_to_batch(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """(B, C, H, W) with even H, W -> (4B, C, H/2, W/2) in ``layout``: phase (i, j) = ``x[..., i::2, j::2]``
    in batch block 2i + j. One copy, no autograd (see :func:`to_phases`)."""
    B, C, H, W = x.shape
    y = torch.empty((4 * B, C, H // 2, W // 2), dtype=x.dtype, device=x.device, memory_format=layout)
    y.view(2, 2, B, C, H // 2, W // 2).copy_(x.view(B, C, H // 2, 2, W // 2, 2).permute(3, 5, 0, 1, 2, 4))
    return y


def batch_to_space(y: torch.Tensor, batch: int, layout: torch.memory_format) -> torch.Tensor:
    """The inverse of :func:`space_to_batch`, in ``layout``."""
    _, C, h, w = y.shape
    x = torch.empty((batch, C, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=layout)
    x.view(batch, C, h, 2, w, 2).copy_(y.view(2, 2, batch, C, h, w).permute(2, 3, 4, 0, 5, 1))
    return x


class _ToPhases(torch.autograd.Function):
    """Space-to-batch in one copy, in the cell's layout both ways (a reshape-permute-reshape would copy
    twice and hand autograd a channels-first gradient, which makes every later kernel change layout)."""

    @staticmethod
    def forward(ctx, x, layout):
        ctx.batch, ctx.layout = x.shape[0], layout
        return space_to_batch(x, layout)

    @staticmethod
    def backward(ctx, g):
        return _FromPhases.apply(g, ctx.batch, ctx.layout), None


class _FromPhases(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, batch, layout):
        ctx.layout = layout
        return batch_to_space(y, batch, layout)

    @staticmethod
    def backward(ctx, g):
        return _ToPhases.apply(g, ctx.layout), None, None


def to_phases(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """Space-to-batch: (B, C, H, W) with even H, W -> (4B, C, H/2, W/2), phase (i, j) = x[..., i::2, j::2]
    in batch block 2i + j; the gradient comes back in ``layout``."""
    return _ToPhases.apply(x, layout)


def from_phases(y: torch.Tensor, batch: int, layout: torch.memory_format) -> torch.Tensor:
    """Batch-to-space, the inverse of :func:`to_phases`."""
    return _FromPhases.apply(y, batch, layout)


class _Phase(torch.autograd.Function):
    """``x[:, :, i::2, j::2]`` as a compact tensor in the cell's layout; the gradient too (autograd's own
    slice backward would return a channels-first gradient)."""

    @staticmethod
    def forward(ctx, x, i, j, layout):
        ctx.shape, ctx.ij, ctx.layout = x.shape, (i, j), layout
        return x[:, :, i::2, j::2].contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx, g):
        i, j = ctx.ij
        gx = torch.empty(ctx.shape, dtype=g.dtype, device=g.device, memory_format=ctx.layout).zero_()
        gx[:, :, i::2, j::2] = g
        return gx, None, None, None


def phase(x: torch.Tensor, i: int, j: int, layout: torch.memory_format) -> torch.Tensor:
    """Phase ``(i, j)`` of ``x``: what a stride-2 op with a 1x1 footprint per output pixel reads."""
    return _Phase.apply(x, i, j, layout)


class _ConcatChannels(torch.autograd.Function):
    """``torch.cat(states, 1)`` whose gradients come back compact in the cell's layout."""

    @staticmethod
    def forward(ctx, layout, *states):
        ctx.sizes, ctx.layout = [s.shape[1] for s in states], layout
        return torch.cat(states, dim=1)

    @staticmethod
    def backward(ctx, g):
        return (None,) + tuple(part.contiguous(memory_format=ctx.layout) for part in g.split(ctx.sizes, dim=1))


def concat_channels(states, layout: torch.memory_format) -> torch.Tensor:
    """``torch.cat(states, dim=1)``; each input's gradient comes back compact in ``layout``."""
    return _ConcatChannels.apply(layout, *states)
