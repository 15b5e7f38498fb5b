"""The fast path on a GPU: the same function as the reference path there too (skipped without CUDA).

Run on a machine with a GPU: ``pytest tests/test_fast_cuda.py``. float64 (cuDNN computes it exactly
enough for 1e-9) and float32 with TF32 off (1e-4); then a bf16-autocast weight step stays finite and
close to the float32 one."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fairdarts_core import FAIR_DARTS_OPS, DARTS_OPS, Supernet
from fairdarts_core.fast import FastOptions
from fairdarts_core.steps import weight_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def twins(relaxation, primitives, dtype, options=FastOptions()):
    torch.manual_seed(0)
    ref = Supernet(channels=8, layers=5, in_channels=3, relaxation=relaxation, primitives=primitives,
                   alpha_init_std=0.5, formulation="reference").to("cuda", dtype)
    ref.skip_noise_std = 0.3
    fst = copy.deepcopy(ref)
    fst.set_formulation("fast", options)
    return ref, fst


def grads(model, x, y):
    torch.manual_seed(3)
    out = model(x)
    g = torch.autograd.grad(F.cross_entropy(out, y), model.network_parameters() + model.arch_parameters())
    return [out] + list(g)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


MEMORY = {"defaults": FastOptions(), "recompute_all": FastOptions(recompute="all", memory_min_elements=0),
          "rebuild": FastOptions(recompute="none", memory_min_elements=0)}


@pytest.mark.parametrize("relaxation,primitives", [("sigmoid", FAIR_DARTS_OPS), ("softmax", DARTS_OPS)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("memory", list(MEMORY))
def test_fast_equals_reference_on_cuda(relaxation, primitives, dtype, memory):
    ref, fst = twins(relaxation, primitives, dtype, MEMORY[memory])
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(8, 3, 16, 16, device="cuda", dtype=dtype, generator=g)
    y = torch.randint(0, 10, (8,), device="cuda", generator=g)
    for i, (a, b) in enumerate(zip(grads(fst, x, y), grads(ref, x, y))):
        if b.abs().max() > 0:
            assert rel(a, b) <= TOL[dtype], f"tensor {i}: relative error {rel(a, b):.3g}"


def test_bf16_weight_step_close_to_float32():
    _, fst = twins("sigmoid", FAIR_DARTS_OPS, torch.float32)
    other = copy.deepcopy(fst)
    x = torch.randn(16, 3, 16, 16, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    for model, autocast in ((fst, False), (other, True)):
        w_opt = torch.optim.SGD(model.network_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            weight_step(model, (x, y), w_opt, grad_clip=5.0)
    for a, b in zip(other.network_parameters(), fst.network_parameters()):
        assert torch.isfinite(a).all()
        assert (a - b).abs().max().item() <= 5e-2 * max(b.abs().max().item(), 1e-3)
