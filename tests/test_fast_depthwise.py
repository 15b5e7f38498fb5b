"""The 5x5 depthwise weight gradients of ``fairdarts_core.fast_depthwise`` (a batched matmul on small images,
a 5x3 and shifted 5x1 gradients on larger ones) are oneDNN's, and the fast path uses them exactly where it should (the cell-level equivalence tests of ``tests/test_fast.py`` then
cover it: their "fused" settings lower ``reorder_min_elements`` to 0)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fairdarts_core import fast_depthwise
from fairdarts_core.fast import FastOptions
from fairdarts_core.fast_depthwise import (WideDepthwise, covers_image, is_wide_same_depthwise, split_weight_gradient,
                                          weight_gradient)

from test_fast import data, forward_backward, twin_models


def onednn_weight_gradient(g, x, k):
    return torch.ops.aten.convolution_backward(g, x, torch.empty(x.shape[1], 1, k, k, dtype=x.dtype), None, [1, 1],
                                               [k // 2] * 2, [1, 1], False, [0, 0], x.shape[1],
                                               [False, True, False])[1]


@pytest.mark.parametrize("shape,k", [((3, 4, 4, 4), 5), ((2, 3, 5, 5), 5), ((2, 3, 3, 4), 5), ((2, 2, 1, 1), 5),
                                     ((2, 3, 7, 7), 7), ((2, 3, 6, 4), 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_weight_gradient_is_the_convolutions(shape, k, channels_last):
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    dy = torch.randn(shape, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    want = onednn_weight_gradient(dy, x, k)
    got = weight_gradient(dy, x, k)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()


def test_weight_gradient_in_float32_rounds_within_tolerance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 64, 4, 4, generator=g).contiguous(memory_format=torch.channels_last)  # the paper shape's case
    dy = torch.randn(256, 64, 4, 4, generator=g).contiguous(memory_format=torch.channels_last)
    want = onednn_weight_gradient(dy.double(), x.double(), 5)
    err = (weight_gradient(dy, x, 5).double() - want).abs().max() / want.abs().max()
    assert err < 1e-5


def test_function_gradients_pass_gradcheck():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 1, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    for shape in ((2, 3, 4, 4), (3, 3, 6, 7)):  # the matmul, the split (channels_last: its views need it)
        x = torch.randn(shape, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        assert torch.autograd.gradcheck(WideDepthwise.apply, (x, w))
        assert torch.equal(WideDepthwise.apply(x, w), F.conv2d(x, w, None, 1, 2, 1, 3))  # the same forward kernel


def test_covers_image_only_where_the_matmul_pays():
    x = torch.randn(2, 3, 4, 4)
    w = torch.randn(3, 1, 5, 5, requires_grad=True)
    assert covers_image(x, w, 1, 2, 1, 3)
    assert not covers_image(x, w.detach(), 1, 2, 1, 3)              # frozen: no weight gradient to compute
    assert not covers_image(x, w, 2, 2, 1, 3)                       # strided
    assert not covers_image(x, w, 1, 4, 2, 3)                       # dilated
    assert not covers_image(x, w, 1, 1, 1, 3)                       # not 'same'
    assert not covers_image(torch.randn(2, 3, 6, 6), w, 1, 2, 1, 3)  # 36 pixels > 25 taps
    assert not covers_image(x, torch.randn(3, 1, 3, 3, requires_grad=True), 1, 1, 1, 3)  # oneDNN's fast kernel
    assert not covers_image(torch.randn(2, 6, 4, 4), torch.randn(6, 2, 5, 5, requires_grad=True), 1, 2, 1, 3)


@pytest.mark.parametrize("shape,k", [((3, 4, 6, 6), 5), ((2, 3, 5, 7), 5), ((4, 2, 8, 3), 5), ((2, 3, 2, 9), 5),
                                     ((3, 2, 9, 9), 7), ((5, 4, 6, 2), 5), ((3, 4, 7, 1), 5), ((2, 1, 6, 6), 5),
                                     ((1, 3, 6, 6), 5), ((2, 3, 6, 6), 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_split_weight_gradient_is_the_convolutions(shape, k, channels_last):
    """Odd sizes, rows narrower than the shift, one image (no view: oneDNN's own), k=7 (four shifted columns),
    k=3 and NCHW (oneDNN's own)."""
    g = torch.Generator().manual_seed(3)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    want = onednn_weight_gradient(dy, x, k)
    got = split_weight_gradient(dy, x, k)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()


def test_split_weight_gradient_reads_no_pixel_outside_its_image():
    """Where a shifted row runs into the next row or image, the share of those columns is subtracted: huge
    values there change nothing (they would if those products were kept)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, 5, 6, generator=g, dtype=torch.float64)
    dy = torch.randn(3, 2, 5, 6, generator=g, dtype=torch.float64)
    want = onednn_weight_gradient(dy, x, 5)
    x[..., :2] *= 1e6   # the columns a shift of -2 would read from the row above
    x[..., -2:] *= 1e6  # and a shift of +2 from the row below
    got = split_weight_gradient(dy, x.contiguous(memory_format=torch.channels_last), 5)
    want = onednn_weight_gradient(dy, x, 5)
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()


def test_split_weight_gradient_in_float32_rounds_within_tolerance():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 16, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)  # the paper shape's
    dy = torch.randn(64, 16, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    want = onednn_weight_gradient(dy.double(), x.double(), 5)
    err = (split_weight_gradient(dy, x, 5).double() - want).abs().max() / want.abs().max()
    assert err < 5e-5  # sums of 65536 products; oneDNN's own float32 gradient is off by ~1e-5 here


def test_is_wide_same_depthwise_takes_any_image_size():
    w = torch.randn(3, 1, 5, 5, requires_grad=True)
    big = torch.randn(2, 3, 16, 16)
    assert is_wide_same_depthwise(big, w, 1, 2, 1, 3) and not covers_image(big, w, 1, 2, 1, 3)
    assert not is_wide_same_depthwise(big, w.detach(), 1, 2, 1, 3)
    assert not is_wide_same_depthwise(big, torch.randn(3, 1, 3, 3, requires_grad=True), 1, 1, 1, 3)


@pytest.mark.parametrize("options,used", [(FastOptions(reorder_min_elements=0), {"matmul", "split"}),
                                          (FastOptions(reorder_min_elements=0, matmul_weight_grad=False), {"split"}),
                                          (FastOptions(reorder_min_elements=0, split_weight_grad=False), {"matmul"}),
                                          (FastOptions(reorder_min_elements=0, matmul_weight_grad=False,
                                                       split_weight_grad=False), set()),
                                          (FastOptions(), set())])  # the tiny cells are below the default size
def test_fast_path_uses_them_in_reordered_cells_only(monkeypatch, options, used):
    calls = []
    apply = WideDepthwise.apply
    monkeypatch.setattr(fast_depthwise.WideDepthwise, "apply", lambda *a: calls.append(a[0].shape) or apply(*a))
    ref, fst = twin_models(options=options)
    x, y = data()
    out_ref, grads_ref, _ = forward_backward(ref, x, y)
    out, grads, _ = forward_backward(fst, x, y)
    # 6x6 input: the 6x6 first stage's sep 5x5 convs (split), then the 3x3 phases of its dilated 5x5 convs and
    # the 3x3 and 2x2 stages' sep 5x5 convs (matmul)
    kinds = {"matmul" if s[-2] * s[-1] <= 25 else "split" for s in calls}
    assert kinds == used
    for a, b in zip(grads, grads_ref):
        assert (a - b).abs().max() <= 1e-9 * max(b.abs().max().item(), 1.0)
