"""The weight gradient of a depthwise convolution on an image no larger than its kernel, as a batched matmul.

oneDNN's fast depthwise kernels compute the weight gradient for kernels up to 3 columns wide; a 5x5 depthwise
convolution falls back to a generic grouped-convolution kernel, and on the smallest images to a gemm-based one.
At the paper shape the worst case is the last stage's dilated 5x5 convolutions, which the fast path runs on the
2x2 phases of an 8x8 image: 5x5 kernels on 4x4 images, where that fallback takes ~15 ms per call for 262k
elements (its forward pass: 0.4 ms).

On such an image the kernel reaches (almost) every pixel from every pixel, so the convolution of channel ``c`` is
a dense ``P x P`` matrix acting on the image's ``P = H * W`` pixels, and its weight gradient gathers the entries
of one small matrix per channel (``g`` and ``x`` of one channel as ``N x P`` matrices, ``N`` the batch):

    M_c = g_c^T x_c,        dL/dw[c, i, j] = sum_p M_c[p, p + (i - pad, j - pad)]   (pairs inside the image).

The first is one ``bmm`` over the channels (``C * P * P * N`` multiply-adds, fewer than the ``C * k * k * N * P``
of the convolution itself when ``P <= k * k``), the second a matmul with a fixed 0/1 matrix. The same sums, in
another order: the result rounds differently from oneDNN's, so the fast path uses it only on cells at least
``FastOptions.reorder_min_elements`` large (see :mod:`fairdarts_core.fast`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import List

import torch
import torch.nn.functional as F


def covers_image(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """Is ``conv2d(x, weight, ...)`` a stride-1 'same' depthwise convolution wider than 3 (oneDNN's fast
    kernels' limit) on an image of at most ``k * k`` pixels, whose weight needs a gradient?"""
    k = weight.shape[-1]
    return (x.dim() == 4 and weight.requires_grad and weight.shape[1] == 1 and groups == x.shape[1] == weight.shape[0]
            and weight.shape[-2] == k > 3 and k % 2 == 1 and _pair(stride) == [1, 1] and _pair(dilation) == [1, 1]
            and _pair(padding) == [k // 2, k // 2] and x.shape[-2] * x.shape[-1] <= k * k)


def _pair(v) -> List[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


@lru_cache(maxsize=None)
def _taps(height: int, width: int, k: int) -> torch.Tensor:
    """The 0/1 matrix ``S`` of shape ``(P * P, k * k)``: ``S[p * P + q, i * k + j] = 1`` where pixel ``q`` is
    pixel ``p`` moved by the tap ``(i - k // 2, j - k // 2)`` and lies inside the image."""
    pad = k // 2
    h, w, i, j = torch.meshgrid(*(torch.arange(n) for n in (height, width, k, k)), indexing="ij")
    hq, wq = h + i - pad, w + j - pad
    inside = (hq >= 0) & (hq < height) & (wq >= 0) & (wq < width)
    pixels = height * width
    rows = ((h * width + w) * pixels + hq * width + wq)[inside]
    taps = torch.zeros(pixels * pixels, k * k, dtype=torch.float64)
    taps[rows, (i * k + j)[inside]] = 1.0
    return taps


def weight_gradient(g: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """``dL/dw`` (shape ``(C, 1, k, k)``) of ``conv2d(x, w, padding=k // 2, groups=C)`` given ``g = dL/dy``."""
    n, c, height, width = x.shape
    pixels = height * width
    g_cpn = g.permute(1, 2, 3, 0).reshape(c, pixels, n)
    x_cnp = x.permute(1, 0, 2, 3).reshape(c, n, pixels)
    pairs = torch.bmm(g_cpn, x_cnp).view(c, pixels * pixels)   # M_c[p, q], flattened
    taps = _taps(height, width, k).to(device=x.device, dtype=x.dtype)
    return (pairs @ taps).view(c, 1, k, k)


class SmallImageDepthwise(torch.autograd.Function):
    """``F.conv2d(x, weight, None, 1, k // 2, 1, groups)`` for a depthwise convolution that
    :func:`covers_image`: oneDNN's forward and input gradient, the weight gradient by :func:`weight_gradient`."""

    @staticmethod
    def forward(ctx, x, weight):
        k = weight.shape[-1]
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, k // 2, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        k = weight.shape[-1]
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(g, x, weight, None, [1, 1], [k // 2, k // 2], [1, 1], False,
                                                     [0, 0], weight.shape[0], [True, False, False])[0]
        gw = weight_gradient(g, x, k) if ctx.needs_input_grad[1] else None
        return gx, gw
