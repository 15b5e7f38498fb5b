"""The fast path's batch norm with wide reductions (``fairdarts_core.fast_norm``): the statistics, the output
and the gradients of a training-mode BN, and the cells that use it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fairdarts_core import fast_norm
from fairdarts_core.fast import FastOptions
from fairdarts_core.fast_norm import batch_moments, batch_norm_backward, normalize, wide_norm_applies

from test_fast import assert_same, forward_backward, twin_models


def activation(channels: int, dtype=torch.float64, shape=(4, 6, 8), offset: float = 3.0) -> torch.Tensor:
    """A channels_last activation whose channels have means of the order of their spread (as a cell's)."""
    g = torch.Generator().manual_seed(channels)
    n, h, w = shape
    x = torch.randn(n, channels, h, w, generator=g, dtype=dtype) * torch.rand(1, channels, 1, 1, generator=g,
                                                                                dtype=dtype).add(0.5)
    x = x + offset * torch.randn(1, channels, 1, 1, generator=g, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels", [1, 2, 4, 8, 16])
def test_batch_moments_are_the_mean_and_biased_variance_of_each_channel(channels):
    x = activation(channels)
    mean, var = batch_moments(x)
    want_var, want_mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, want_mean, rtol=0, atol=1e-12)
    assert torch.allclose(var, want_var, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("channels", [4, 16])
def test_normalize_computes_training_mode_batch_norm_and_its_gradient(dtype, tol, channels):
    x = activation(channels, dtype, shape=(8, 16, 16)).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    g = activation(channels, dtype, shape=(8, 16, 16), offset=0.5).flip(0)
    y, mean, var = normalize(x, 1e-5)
    want = F.batch_norm(ref, None, None, training=True, eps=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_same(y.detach(), want.detach(), tol, "output")
    assert_same(mean, ref.detach().mean((0, 2, 3)), tol, "mean")
    assert_same(var, ref.detach().var((0, 2, 3), correction=0), tol, "variance")
    (gx,), (want_gx,) = torch.autograd.grad(y, x, g), torch.autograd.grad(want, ref, g)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    assert_same(gx, want_gx, tol, "input gradient")


def test_batch_norm_backward_with_a_scale_matches_aten():
    x, g = activation(8), activation(8, offset=1.0).flip(2)
    gamma = torch.rand(8, dtype=x.dtype) + 0.5
    mean, var = batch_moments(x)
    invstd = (var + 1e-5).rsqrt()
    gx, g_gamma = batch_norm_backward(g, x, gamma, mean, invstd, True, True)
    want_gx, want_gamma, _ = torch.ops.aten.native_batch_norm_backward(
        g, x, gamma, None, None, mean, invstd, True, 1e-5, [True, True, False])
    assert_same(gx, want_gx, 1e-10, "input gradient")
    assert_same(g_gamma, want_gamma, 1e-10, "scale gradient")
    none_gx, only_gamma = batch_norm_backward(g, x, gamma, mean, invstd, False, True)
    assert none_gx is None and torch.equal(only_gamma, g_gamma)


def test_wide_norm_applies_to_narrow_channels_last_float_tensors_only():
    x = activation(16, torch.float32)
    assert wide_norm_applies(x)
    assert not wide_norm_applies(x.contiguous())                        # NCHW
    assert not wide_norm_applies(activation(32, torch.float32))         # wider than MAX_CHANNELS
    assert not wide_norm_applies(activation(3, torch.float32))          # 3 does not divide the 64 lanes
    assert not wide_norm_applies(activation(16, shape=(1, 1, 1)))       # 16 values: no whole row of 64
    assert not wide_norm_applies(x.to(torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not wide_norm_applies(x)


def count_calls(monkeypatch) -> list:
    calls = []
    moments = fast_norm.batch_moments
    for module in ("fairdarts_core.fast_norm", "fairdarts_core.fast_sum"):
        monkeypatch.setattr(f"{module}.batch_moments", lambda x: calls.append(x.shape) or moments(x))
    return calls


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("rebuild", [False, True])
def test_reordered_cells_use_it_and_compute_the_reference_function(monkeypatch, dtype, tol, rebuild):
    """8x8 inputs of 4 channels: every cell's activations fill rows of 64 values (the tiny 6x6 inputs of
    ``test_fast`` do not), so the wide BN runs in the fused sums, the SepConvs' middle BN and the pools' BN."""
    calls = count_calls(monkeypatch)
    options = FastOptions(reorder_min_elements=0, rebuild_cheap=rebuild, memory_min_elements=0)
    ref, fst = twin_models(dtype=dtype, noise=0.5, options=options)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (4,), generator=g)
    out_ref, grads_ref, buffers_ref = forward_backward(ref, x, y)
    out, grads, buffers = forward_backward(fst, x, y)
    assert {s[1] for s in calls} == {4, 8, 16}
    assert_same(out, out_ref, tol, "output")
    for i, (a, b) in enumerate(zip(grads, grads_ref)):
        assert_same(a, b, tol, f"gradient {i}")
    for a, b in zip(buffers, buffers_ref):
        assert_same(a.double(), b.double(), tol, "BN buffer", floor=1.0)


def test_cells_below_the_reorder_size_keep_atens_batch_norm(monkeypatch):
    calls = count_calls(monkeypatch)
    ref, fst = twin_models()
    g = torch.Generator().manual_seed(3)
    forward_backward(fst, torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3]))
    assert calls == []


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_wide_norm_off_keeps_atens_batch_norm_in_reordered_cells(monkeypatch, dtype, tol):
    """``FastOptions.wide_norm=False`` (on CPUs where ATen's 2-d kernels gain nothing from a second thread):
    the reordered cells of the test above compute every BN with ATen's own kernels, statistics, output and
    backward sums alike, and still the reference function; with it on, all three wide functions run."""
    used = []
    for module, name in (("fast_sum", "batch_moments"), ("fast", "normalize"), ("fast_sum", "batch_norm_backward")):
        wrapped = getattr(fast_norm, name)
        monkeypatch.setattr(f"fairdarts_core.{module}.{name}",
                            lambda *a, _f=wrapped, _n=name, **k: used.append(_n) or _f(*a, **k))
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (4,), generator=g)
    for wide in (True, False):
        used.clear()
        options = FastOptions(reorder_min_elements=0, memory_min_elements=0, wide_norm=wide)
        ref, fst = twin_models(dtype=dtype, noise=0.5, options=options)
        out_ref, grads_ref, buffers_ref = forward_backward(ref, x, y)
        out, grads, buffers = forward_backward(fst, x, y)
        assert set(used) == ({"batch_moments", "normalize", "batch_norm_backward"} if wide else set())
        assert_same(out, out_ref, tol, "output")
        for i, (a, b) in enumerate(zip(grads, grads_ref)):
            assert_same(a, b, tol, f"gradient {i}")
        for a, b in zip(buffers, buffers_ref):
            assert_same(a.double(), b.double(), tol, "BN buffer", floor=1.0)
