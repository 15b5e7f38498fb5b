"""Checkers for the book's exercises.

A checker runs the reader's function on random inputs, compares it with the library, and returns a
:class:`CheckResult`: ``ok`` plus a message that says what is wrong (in Jupyter it displays as a short
coloured note). Checkers never raise because of the reader's code: an exception inside the reader's
function is reported in the message.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn

from .ops import FAIR_DARTS_OPS
from .supernet import MixedOp


@dataclass
class CheckResult:
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return ("correct: " if self.ok else "not yet: ") + self.message

    def _repr_html_(self) -> str:
        color, mark = ("#1a7f37", "&#10004; correct") if self.ok else ("#b35900", "&#10008; not yet")
        text = self.message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return (f"<div style='border-left:4px solid {color};padding:4px 10px'>"
                f"<b style='color:{color}'>{mark}</b>: {text}</div>")


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=tol, rtol=1e-4))


def _mixed_edge_variants(x: torch.Tensor, alpha: torch.Tensor, ops: nn.ModuleList) -> Dict[str, torch.Tensor]:
    """Outputs of the usual mistakes, each with the hint the reader gets when theirs matches it."""
    outs = [op(x) for op in ops]
    stack = torch.stack(outs)                       # (n_ops, B, C, H, W)
    shape = (-1,) + (1,) * (stack.dim() - 1)
    soft = torch.softmax(alpha, dim=0)
    k = int(torch.argmax(alpha))
    return {
        "it weights the ops with sigmoid(alpha): that is Fair DARTS's relaxation; DARTS uses softmax(alpha), "
        "whose weights sum to 1 over the ops of the edge": (torch.sigmoid(alpha).view(shape) * stack).sum(0),
        "it weights the ops with alpha itself: turn the alphas into weights with a softmax first":
            (alpha.view(shape) * stack).sum(0),
        "it sums the op outputs without weights: multiply each op's output by its softmax weight":
            stack.sum(0),
        "it averages the op outputs with equal weights: the weights must come from softmax(alpha)":
            stack.mean(0),
        "it returns only the strongest op's output: that is the discrete cell after parsing; during the search "
        "every op contributes, weighted by softmax(alpha)": outs[k],
        "it returns only the strongest op's output times its weight: sum over *all* ops":
            soft[k] * outs[k],
        "the weights are paired with the wrong ops (reversed order): weight k belongs to ops[k]":
            (soft.flip(0).view(shape) * stack).sum(0),
    }


def check_mixed_edge(fn: Callable, primitives: Sequence[str] = FAIR_DARTS_OPS, trials: int = 3,
                     seed: int = 0) -> CheckResult:
    """Check ``fn(x, alpha, ops)``, the reader's DARTS mixed edge:
    ``sum_k softmax(alpha)_k * ops[k](x)``.

    ``x``: a batch of feature maps ``(B, C, H, W)``; ``alpha``: the edge's architecture parameters, shape
    ``(len(ops),)``; ``ops``: the edge's candidate ops (an ``nn.ModuleList``). The reference is the
    library's :class:`fairdarts_core.supernet.MixedOp` with softmax weights, on ``trials`` random inputs.
    The gradient with respect to ``alpha`` is checked too (the search needs it).
    """
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        edge = MixedOp(4, 1, list(primitives)).eval()  # eval: batch norms use fixed statistics
    finally:
        torch.random.set_rng_state(torch_state)
    for trial in range(trials):
        x = torch.randn(2, 4, 6, 6, generator=g)
        alpha = (1.5 * torch.randn(len(primitives), generator=g)).requires_grad_(True)
        with torch.no_grad():
            expected = edge(x, torch.softmax(alpha, dim=0))
        try:
            got = fn(x, alpha, edge.ops)
        except NotImplementedError:
            return CheckResult(False, "the function is not written yet (it raises NotImplementedError): "
                                      "replace the `raise` line with your code and run both cells again.")
        except Exception as e:  # the reader's code: report it, never crash the notebook
            last = traceback.extract_tb(e.__traceback__)[-1]
            return CheckResult(False, f"your function raised {type(e).__name__}: {e} (line {last.lineno}: "
                                      f"{(last.line or '').strip()})")
        if not isinstance(got, torch.Tensor):
            return CheckResult(False, f"it returned a {type(got).__name__}; return a torch.Tensor of the same "
                                      f"shape as one op's output, {tuple(expected.shape)}")
        if got.shape != expected.shape:
            return CheckResult(False, f"it returned shape {tuple(got.shape)}, expected {tuple(expected.shape)} "
                                      f"(the weighted sum of the op outputs has the shape of one op's output)")
        if not _close(got.detach(), expected):
            with torch.no_grad():
                for hint, wrong in _mixed_edge_variants(x, alpha.detach(), edge.ops).items():
                    if _close(got.detach(), wrong):
                        return CheckResult(False, hint)
            err = float((got.detach() - expected).abs().max())
            return CheckResult(False, f"its output differs from the library's mixed edge by up to {err:.3g} on "
                                      f"random input {trial + 1}; compute sum_k softmax(alpha)_k * ops[k](x)")
        if not got.requires_grad:
            return CheckResult(False, "the output is right but does not depend on alpha differentiably (no "
                                      "gradient reaches alpha): keep everything in torch, no .item(), numpy "
                                      "or torch.no_grad()")
        (grad,) = torch.autograd.grad(got.sum(), alpha, allow_unused=True)
        if grad is None:
            return CheckResult(False, "no gradient reaches alpha: compute the weights from alpha with torch ops")
        ref_alpha = alpha.detach().clone().requires_grad_(True)
        (ref_grad,) = torch.autograd.grad(edge(x, torch.softmax(ref_alpha, dim=0)).sum(), ref_alpha)
        if not _close(grad, ref_grad, tol=1e-4):
            return CheckResult(False, "the output is right but the gradient with respect to alpha is not: "
                                      "compute the weights from alpha with torch.softmax inside the function")
    return CheckResult(True, f"your mixed edge matches the library on {trials} random inputs, gradient "
                             f"with respect to alpha included.")


__all__: List[str] = ["CheckResult", "check_mixed_edge"]
