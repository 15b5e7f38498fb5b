"""The weight gradient of a depthwise convolution wider than 3 columns, by oneDNN's fast kernels' means.

oneDNN's fast depthwise kernel (``jit_dw``) computes the weight gradient for kernels up to 3 columns wide
(any height); a 5x5 depthwise convolution falls back to a generic grouped-convolution kernel, ~10x slower than a
3x3 one, and on the smallest images to a gemm-based one (at the paper shape: the 2x2 phases of the last stage's
dilated 5x5 convolutions, 5x5 kernels on 4x4 images, ~15 ms a call for 262k elements; the forward: 0.4 ms).
Two exact rewrites of ``dL/dw[c, i, j] = sum_{n, h, w} g[n, c, h, w] * x[n, c, h + i - p, w + j - p]``
(``p = k // 2``, ``x`` zero outside the image) avoid those kernels:

* **On an image of at most ``k * k`` pixels** (:func:`weight_gradient`) the kernel reaches (almost) every pixel
  from every pixel, so the convolution of channel ``c`` is a dense ``P x P`` matrix acting on the image's
  ``P = H * W`` pixels, and its weight gradient gathers the entries of one small matrix per channel (``g`` and
  ``x`` of one channel as ``N x P`` matrices, ``N`` the batch)::

      M_c = g_c^T x_c,        dL/dw[c, i, j] = sum_p M_c[p, p + (i - p, j - p)]   (pairs inside the image).

  The first is one ``bmm`` over the channels (``C * P * P * N`` multiply-adds, fewer than the ``C * k * k * N * P``
  of the convolution itself when ``P <= k * k``), the second a matmul with a fixed 0/1 matrix.
* **On larger images** (:func:`split_weight_gradient`) the columns ``j`` of the kernel are split: the middle
  three are the weight gradient of a ``k x 3`` convolution with padding ``(p, 1)`` on the same ``x`` and ``g``,
  and each outer column ``j = p + d`` (``|d| >= 2``) that of a ``k x 1`` convolution of the input shifted by
  ``d`` columns, ``x[n, c, h, w + d]``. In the channels_last layout that shifted image is ``x`` itself read
  ``d`` pixels further on (a view with another storage offset, no copy): where ``w + d`` leaves the row it
  reads the neighbouring row's pixels, so the share of those columns (the same gradient on them alone) is
  subtracted, and the view covers all images but one (which would run past the tensor's end or start), done
  on its own. All these are ``jit_dw`` calls.

Both are the same sums in another order: the result rounds differently from oneDNN's, so the fast path uses them
only on cells at least ``FastOptions.reorder_min_elements`` large (see :mod:`fairdarts_core.fast`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import List

import torch
import torch.nn.functional as F


def is_wide_same_depthwise(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """Is ``conv2d(x, weight, ...)`` a stride-1 'same' depthwise convolution with an odd kernel wider than 3
    (oneDNN's fast kernels' limit) whose weight needs a gradient?"""
    k = weight.shape[-1]
    return (x.dim() == 4 and weight.requires_grad and weight.shape[1] == 1 and groups == x.shape[1] == weight.shape[0]
            and weight.shape[-2] == k > 3 and k % 2 == 1 and _pair(stride) == [1, 1] and _pair(dilation) == [1, 1]
            and _pair(padding) == [k // 2, k // 2])


def covers_image(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """:func:`is_wide_same_depthwise` on an image of at most ``k * k`` pixels (:func:`weight_gradient`'s case)."""
    k = weight.shape[-1]
    return (is_wide_same_depthwise(x, weight, stride, padding, dilation, groups)
            and x.shape[-2] * x.shape[-1] <= k * k)


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
    c, height, width = x.shape[1:]
    pixels = height * width
    pairs = torch.bmm(_by_channel(g).transpose(1, 2), _by_channel(x)).view(c, pixels * pixels)  # M_c[p, q], flattened
    taps = _taps(height, width, k).to(device=x.device, dtype=x.dtype)
    return (pairs @ taps).view(c, 1, k, k)


def _by_channel(t: torch.Tensor) -> torch.Tensor:
    """``t`` (N, C, H, W) as C matrices of shape (N, H * W), each a plain (strided) matrix for ``bmm``. A
    channels_last ``t`` is one (N * H * W, C) matrix in memory: it is transposed as such (a 2-D copy), since
    ``bmm`` on matrices one element apart copies each matrix on its own, and a 4-D permuted copy is ~4x slower."""
    n, c, height, width = t.shape
    if _dense_channels_last(t):
        return t.permute(0, 2, 3, 1).reshape(n * height * width, c).t().contiguous().view(c, n, height * width)
    return t.permute(1, 0, 2, 3).reshape(c, n, height * width)


def split_weight_gradient(g: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """``dL/dw`` (shape ``(C, 1, k, k)``) of ``conv2d(x, w, padding=k // 2, groups=C)`` given ``g = dL/dy``: the
    middle three columns as a ``k x 3`` weight gradient, each outer column as a ``k x 1`` one on ``x`` shifted by
    its offset (module doc). Needs ``x`` channels_last-contiguous and at least two images; otherwise (and for
    ``k <= 3``) it is oneDNN's own ``k x k`` weight gradient."""
    n, c, height, width = x.shape
    p = k // 2
    if k <= 3 or n < 2 or not _dense_channels_last(x):
        return _weight_gradient_of(g, x, (k, k), (p, p))
    grad = x.new_zeros(c, 1, k, k)
    grad[..., p - 1:p + 2] = _weight_gradient_of(g, x, (k, 3), (p, 1))
    for d in (*range(-p, -1), *range(2, p + 1)):
        if abs(d) < width:
            grad[..., p + d] = _shifted_column_gradient(g, x, k, d)[..., 0]
    return grad


def _dense_channels_last(x: torch.Tensor) -> bool:
    n, c, height, width = x.shape
    return x.stride() == (height * width * c, 1, width * c, c)


def _weight_gradient_of(g: torch.Tensor, x: torch.Tensor, kernel, padding) -> torch.Tensor:
    """oneDNN's weight gradient of a depthwise convolution of ``x`` with a ``kernel``-sized weight."""
    c = x.shape[1]
    return torch.nn.grad.conv2d_weight(x, (c, 1, *kernel), g, 1, padding, 1, c)


def _shifted_column_gradient(g: torch.Tensor, x: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """``sum_{n, h, w} g[n, c, h, w] * x[n, c, h + i - k // 2, w + d]`` (zero outside the image), shape
    ``(C, 1, k, 1)``: a ``k x 1`` weight gradient of ``x`` read ``d`` pixels further on (a view), less that of
    the ``|d|`` columns where ``w + d`` leaves the row (the view reads the neighbouring row there; a ``k x 1``
    kernel keeps columns apart, so their share is the same gradient on those columns alone), over all images but
    the one the view cannot reach (the last for ``d > 0``, the first for ``d < 0``), plus that image's own, on a
    shifted copy of it."""
    n, c, height, width = x.shape
    kernel, padding = (k, 1), (k // 2, 0)
    outside = slice(width - d, None) if d > 0 else slice(None, -d)
    inside = slice(d, None) if d > 0 else slice(None, width + d)
    lone = n - 1 if d > 0 else 0
    lone_x = torch.zeros_like(x[lone:lone + 1])
    lone_x[..., slice(None, width - d) if d > 0 else slice(-d, None)] = x[lone:lone + 1, ..., inside]
    first = 0 if d > 0 else 1
    shifted = x.as_strided((n - 1, c, height, width), x.stride(), x.storage_offset() + first * x.stride(0) + d * c)
    g_rest = g[slice(0, n - 1) if d > 0 else slice(1, n)]
    across_rows = _weight_gradient_of(g_rest[..., outside], shifted[..., outside], kernel, padding)
    return (_weight_gradient_of(g_rest, shifted, kernel, padding) - across_rows
            + _weight_gradient_of(g[lone:lone + 1], lone_x, kernel, padding))


class WideDepthwise(torch.autograd.Function):
    """``F.conv2d(x, weight, None, 1, k // 2, 1, groups)`` for a depthwise convolution that
    :func:`is_wide_same_depthwise`: oneDNN's forward and input gradient, the weight gradient by
    :func:`weight_gradient` on an image of at most ``k * k`` pixels, else by :func:`split_weight_gradient`."""

    @staticmethod
    def forward(ctx, x, weight):
        k = weight.shape[-1]
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, k // 2, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        k = weight.shape[-1]
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(g, x, weight, None, [1, 1], [k // 2, k // 2], [1, 1], False,
                                                     [0, 0], weight.shape[0], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            small = x.shape[-2] * x.shape[-1] <= k * k
            gw = weight_gradient(g, x, k) if small else split_weight_gradient(g, x, k)
        return gx, gw
