"""Checkers for the book's exercises.

A checker runs the reader's function on random inputs, compares it with the library, and returns a
:class:`CheckResult`: ``ok`` plus a message that says what is wrong (in Jupyter it displays as a short
coloured note). Checkers never raise because of the reader's code: an exception inside the reader's
function is reported in the message.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

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


# --- chapter 2: reading a search history ------------------------------------------------------------------

def _random_history(rng, primitives: Sequence[str], epochs: int, relaxation: str) -> List[dict]:
    """A hand-made history: per epoch a random (14, n_ops) matrix for each cell, skip pushed up over time
    (so the answer changes from epoch to epoch), and ``none`` sometimes the largest entry of a row."""
    import numpy as np

    ops = list(primitives)
    history = []
    for e in range(epochs):
        rec = {"epoch": e + 1}
        for cell in ("normal", "reduce"):
            a = rng.normal(0.0, 1.0, (14, len(ops)))
            if "skip_connect" in ops:
                a[:, ops.index("skip_connect")] += 0.6 * e
            if "none" in ops:
                a[rng.random(14) < 0.3, ops.index("none")] += 3.0
            w = np.exp(a) / np.exp(a).sum(1, keepdims=True) if relaxation == "softmax" else 1 / (1 + np.exp(-a))
            rec[f"{cell}_weight"] = w.tolist()
        history.append(rec)
    return history


def _call(fn, *args):
    """(result, None) or (None, CheckResult describing the reader's exception)."""
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, CheckResult(False, "the function is not written yet (it raises NotImplementedError): "
                                        "replace the `raise` line with your code and run both cells again.")
    except Exception as e:  # the reader's code: report it, never crash the notebook
        last = traceback.extract_tb(e.__traceback__)[-1]
        return None, CheckResult(False, f"your function raised {type(e).__name__}: {e} (line {last.lineno}: "
                                        f"{(last.line or '').strip()})")


def _cases(seed: int):
    import numpy as np

    from .ops import DARTS_OPS

    rng = np.random.default_rng(seed)
    return [(list(DARTS_OPS), _random_history(rng, DARTS_OPS, 4, "softmax")),
            (list(FAIR_DARTS_OPS), _random_history(rng, FAIR_DARTS_OPS, 3, "sigmoid")),
            (list(FAIR_DARTS_OPS), _random_history(rng, FAIR_DARTS_OPS, 5, "softmax"))]


def check_dominant_counts(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``fn(weights, primitives) -> {op: count}``: for one (14, n_ops) relaxed-weight matrix, how
    many edges each op dominates (largest weight of the row; ``none`` never counts and gets no key).
    The reference is :func:`fairdarts_core.analysis.dominant_ops`, on DARTS (with ``none``) and Fair
    DARTS op sets."""
    import numpy as np

    from .analysis import dominant_ops

    for primitives, history in _cases(seed):
        for rec in history:
            W = np.asarray(rec["normal_weight"])
            winners = dominant_ops(W, primitives)
            expected = {op: winners.count(op) for op in primitives if op != "none"}
            got, err = _call(fn, W.copy(), list(primitives))
            if err is not None:
                return err
            if not isinstance(got, dict):
                return CheckResult(False, f"it returned a {type(got).__name__}; return a dict {{op name: number of edges}}")
            got = {k: v for k, v in got.items()}
            if "none" in got and got["none"]:
                return CheckResult(False, "'none' dominates some edges in your count: DARTS never keeps 'none', so "
                                          "take the largest weight among the other ops (and give 'none' no key)")
            got.pop("none", None)
            if any(isinstance(v, float) and not float(v).is_integer() for v in got.values()):
                return CheckResult(False, "the values are not whole numbers: count edges (how many rows each op wins), "
                                          "not weights or fractions")
            missing = [op for op in expected if op not in got]
            if set(got) - set(expected):
                return CheckResult(False, f"unknown keys {sorted(set(got) - set(expected))}: use the op names of "
                                          f"`primitives` as keys")
            if missing and any(expected[op] for op in missing):
                return CheckResult(False, f"ops missing from the dict: {missing}; give every op (not 'none') a key, "
                                          f"0 where it wins no edge")
            if {op: int(got.get(op, 0)) for op in expected} != expected:
                if sum(int(v) for v in got.values()) != W.shape[0]:
                    return CheckResult(False, f"your counts add up to {sum(int(v) for v in got.values())}, not to the "
                                              f"{W.shape[0]} edges: every edge has exactly one dominant op")
                by_col = {op: int(np.argmax(W, axis=0).tolist().count(k)) for k, op in enumerate(primitives)}
                return CheckResult(False, "the counts differ from the library's: for every edge (a row), find the op "
                                          "with the largest weight (argmax along axis 1, 'none' left out)"
                                   + (" -- it looks like you took the argmax along the wrong axis"
                                      if {op: by_col.get(op, 0) for op in expected} == got else ""))
    return CheckResult(True, "your counts match the library's on DARTS (with 'none') and Fair DARTS matrices.")


def check_skip_share_per_epoch(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``fn(history, primitives) -> [share at epoch 1, ...]``: for every record of a search history,
    the fraction of the 14 edges of the **normal** cell whose dominant op is ``skip_connect`` (``none``
    never dominates). The reference is :func:`fairdarts_core.analysis.history_series`."""
    import numpy as np

    from .analysis import history_series, op_weight

    for primitives, history in _cases(seed + 1):
        expected = history_series(history, primitives)["skip_share"]
        got, err = _call(fn, [dict(r) for r in history], list(primitives))
        if err is not None:
            return err
        try:
            got = [float(v) for v in got]
        except (TypeError, ValueError):
            return CheckResult(False, f"it returned {type(got).__name__}; return a list with one number per epoch")
        if len(got) != len(history):
            return CheckResult(False, f"it returned {len(got)} numbers for a history of {len(history)} epochs: "
                                      f"one number per record")
        if np.allclose(got, expected, atol=1e-9):
            continue
        if np.allclose(got, [e * 14 for e in expected]):
            return CheckResult(False, "these are counts of edges; divide by the number of edges (14) to get a share")
        if np.allclose(got, history_series(history, primitives, cell="reduce")["skip_share"]):
            return CheckResult(False, "that is the reduction cell: use each record's 'normal_weight'")
        if np.allclose(got, [float(op_weight(r["normal_weight"], primitives, "skip_connect").mean()) for r in history]):
            return CheckResult(False, "that is skip's mean weight; the share counts the edges where skip's weight is the "
                                      "largest of the row")
        if "none" in primitives:
            k = primitives.index("skip_connect")
            naive = [float(np.mean(np.argmax(np.asarray(r["normal_weight"]), axis=1) == k)) for r in history]
            if np.allclose(got, naive):
                return CheckResult(False, "with DARTS's ops, 'none' must be left out "
                                          "before taking the largest weight of an edge")
        return CheckResult(False, f"the shares differ from the library's (expected {np.round(expected, 3).tolist()}, "
                                  f"got {np.round(got, 3).tolist()})")
    return CheckResult(True, "your skip shares match the library's on softmax and sigmoid histories, "
                             "with and without 'none'.")


def _nb201_cases(seed: int):
    """Relaxed weights of NAS-Bench-201 cells: softmax and sigmoid rows, with rows ``none`` wins and rows
    whose second op would win where ``none`` is left out."""
    import numpy as np

    from .nb201 import NB201_OPS, NUM_EDGES

    rng = np.random.default_rng(seed)
    cases = []
    for relaxation in ("softmax", "sigmoid", "softmax"):
        alpha = rng.normal(0.0, 1.5, size=(NUM_EDGES, len(NB201_OPS)))
        alpha[rng.integers(NUM_EDGES), 0] += 4.0  # one edge that `none` wins
        W = np.exp(alpha) / np.exp(alpha).sum(1, keepdims=True) if relaxation == "softmax" else 1 / (1 + np.exp(-alpha))
        cases.append(W)
    return list(NB201_OPS), cases


def check_nb201_arch_string(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``fn(weights, primitives) -> str``: the NAS-Bench-201 string of the cell that DARTS's rule
    derives from a (6, n_ops) relaxed-weight matrix (rows in the edge order ``1<-0, 2<-0, 2<-1, 3<-0,
    3<-1, 3<-2``; the strongest op of every edge, ``none`` included, as the benchmark's DARTS baselines
    derive). The reference is :func:`fairdarts_core.nb201.derive`."""
    import numpy as np

    from .nb201 import EDGES, NB201Genotype, derive

    primitives, cases = _nb201_cases(seed)
    for W in cases:
        expected = derive(W, primitives, "darts").to_string()
        got, err = _call(fn, W.copy(), list(primitives))
        if err is not None:
            return err
        if not isinstance(got, str):
            return CheckResult(False, f"it returned a {type(got).__name__}; return the string, e.g. "
                                      f"'|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...~0|...~1|...~2|'")
        if got.strip() == expected:
            continue
        try:
            parsed = NB201Genotype.from_string(got)
        except ValueError as e:
            return CheckResult(False, f"the benchmark cannot read it: {e}")
        no_none = [primitives[1 + int(np.argmax(row[1:]))] for row in W]
        by_node = [primitives[int(np.argmax(W[EDGES.index((to, src))]))] for src in range(3) for to in range(src + 1, 4)]
        if list(parsed.ops) == no_none:
            return CheckResult(False, "'none' must stay a candidate here: in NAS-Bench-201 every node sums all its "
                                      "inputs, and an edge whose strongest op is 'none' is dropped that way")
        if list(parsed.ops) == by_node:
            return CheckResult(False, "the edges are in the wrong order: row e of the matrix is EDGES[e] "
                                      "(1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2), one '|...|' group per target node")
        return CheckResult(False, f"expected {expected}, got {got.strip()}: take the op with the largest weight of "
                                  f"every row")
    return CheckResult(True, "your strings match the library's derive rule on softmax and sigmoid cells.")


# --- chapter 3: noise on skip and the Hessian collapse indicator -------------------------------------------

def _reference_noise_std(epoch: int, noise_epochs: int) -> float:
    """The library's schedule (:func:`fairdarts_core.search.skip_noise_std`) with the noise switched on."""
    from types import SimpleNamespace

    from .search import skip_noise_std

    return skip_noise_std(epoch, SimpleNamespace(skip_noise=True, noise_epochs=noise_epochs))


def _noise_variants(n: int, epochs: Sequence[int]) -> Dict[str, List[float]]:
    """The usual mistakes in the noise schedule over ``epochs``, each with the hint its author gets."""
    import math

    ref = [_reference_noise_std(e, n) for e in epochs]
    half = [0.5 * (1.0 + math.cos(math.pi * e / n)) for e in epochs]
    return {
        "it decays linearly (1 - epoch / noise_epochs); the authors' schedule is a cosine: "
        "0.5 * (1 + cos(pi * epoch / noise_epochs)), flat near 1 at the start and near 0 at the end":
            [max(0.0, 1.0 - e / n) for e in epochs],
        "it is shifted by one epoch (1-based epochs?): epoch is 0-based here, and the std is exactly 1 at "
        "epoch 0": [_reference_noise_std(e + 1, n) for e in epochs],
        "it is shifted by one epoch (it lags one epoch behind): epoch is 0-based here, the std is 1 at epoch 0 "
        "and reaches 0 exactly at epoch noise_epochs": [_reference_noise_std(e - 1, n) for e in epochs],
        "it returns the variance (the std squared): the schedule gives the standard deviation of the noise, "
        "0.5 * (1 + cos(pi * epoch / noise_epochs))": [v * v for v in ref],
        "the cosine keeps going after noise_epochs and rises again: from epoch noise_epochs on the std must "
        "stay 0": half,
        "it goes negative: cos(pi * epoch / noise_epochs) alone runs from 1 to -1; shift and halve it, "
        "0.5 * (1 + cos(...)), so that it runs from 1 to 0": [math.cos(math.pi * e / n) if e < n else 0.0
                                                               for e in epochs],
        "that is a quarter cosine, cos(pi / 2 * epoch / noise_epochs); the authors use half a period: "
        "0.5 * (1 + cos(pi * epoch / noise_epochs))": [math.cos(0.5 * math.pi * e / n) if e < n else 0.0
                                                        for e in epochs],
    }


def check_noise_schedule(fn: Callable, noise_epochs: Sequence[int] = (30, 10, 7, 1)) -> CheckResult:
    """Check ``fn(epoch, noise_epochs) -> float``: the standard deviation of Fair DARTS's noise on skip
    during epoch ``epoch`` (0-based). Gaussian noise added to skip's output blurs the unfair advantage that
    skip, a shortcut for the gradient, has over the other ops early in the search; the authors decay its std
    with a cosine from 1 at epoch 0 to 0 at ``noise_epochs``, and keep it at 0 from then on. The reference is
    :func:`fairdarts_core.search.skip_noise_std`, on every epoch from 0 to a few past ``noise_epochs``."""
    import numpy as np

    for n in noise_epochs:
        epochs = list(range(0, n + 4))
        expected = [_reference_noise_std(e, n) for e in epochs]
        got = []
        for e in epochs:
            value, err = _call(fn, e, n)
            if err is not None:
                return err
            try:
                value = float(value)
            except (TypeError, ValueError):
                return CheckResult(False, f"fn({e}, {n}) returned {type(value).__name__}; return one number, the "
                                          f"std of the noise during that epoch")
            got.append(value)
        if np.allclose(got, expected, rtol=0, atol=1e-6):  # 1e-6: float32 answers pass too
            continue
        for hint, wrong in _noise_variants(n, epochs).items():
            if np.allclose(got, wrong, rtol=0, atol=1e-6):
                return CheckResult(False, hint)
        if not np.all(np.isfinite(got)):
            return CheckResult(False, f"it returns nan or inf (noise_epochs={n}): {np.round(got, 3).tolist()}")
        if min(got) < 0:
            e = int(np.argmin(got))
            return CheckResult(False, f"fn({e}, {n}) = {got[e]:.3g}: a standard deviation is never negative; the "
                                      f"schedule runs from 1 down to 0")
        late = [e for e in epochs if e >= n and abs(got[e]) > 1e-6]
        if late:
            return CheckResult(False, f"fn({late[0]}, {n}) = {got[late[0]]:.3g}: the noise is off from epoch "
                                      f"noise_epochs on, so the std must be 0 there (it never reaches 0 in yours)")
        if abs(got[0] - 1.0) > 1e-6:
            return CheckResult(False, f"fn(0, {n}) = {got[0]:.3g}: the std starts at exactly 1 at epoch 0")
        e = int(np.argmax(np.abs(np.asarray(got) - np.asarray(expected))))
        return CheckResult(False, f"with noise_epochs={n}, fn({e}, {n}) = {got[e]:.4g}, expected {expected[e]:.4g}: "
                                  f"the std is 0.5 * (1 + cos(pi * epoch / noise_epochs)) before noise_epochs, "
                                  f"0 from then on")
    return CheckResult(True, f"your schedule matches the authors' (cosine from 1 to 0, then 0) for noise_epochs in "
                             f"{list(noise_epochs)}, every epoch from 0 to 3 past the end of the noise.")


class _HessianOracle:
    """``hvp(v) = H @ v`` for a hidden symmetric ``H`` (float64 torch tensors of shape ``(dim,)``), which
    notes how it is used: calls, the largest input norm, the first misuse (wrong type or shape)."""

    def __init__(self, H: torch.Tensor):
        self.H, self.dim = H, H.shape[0]
        self.calls, self.max_norm, self.misuse = 0, 0.0, None

    def __call__(self, v):
        import math

        self.calls += 1
        if not isinstance(v, torch.Tensor):
            self.misuse = (f"hvp was called with a value of type {type(v).__name__}: it takes (and returns) a "
                           f"torch tensor of shape ({self.dim},), dtype float64, e.g. "
                           f"torch.randn(dim, dtype=torch.float64)")
            raise TypeError(self.misuse)
        if tuple(v.shape) != (self.dim,):
            self.misuse = (f"hvp was called with shape {tuple(v.shape)}: it takes a vector of shape ({self.dim},), "
                           f"one entry per architecture parameter")
            raise ValueError(self.misuse)
        v = v.detach().to(torch.float64)
        norm = float(torch.linalg.vector_norm(v))
        if not math.isfinite(norm) or norm > self.max_norm:  # once inf or nan, it stays so
            self.max_norm = norm
        return self.H @ v


def _symmetric(eigenvalues: Sequence[float], seed: int) -> torch.Tensor:
    """A random symmetric matrix with the given eigenvalues (a random orthogonal basis)."""
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return Q @ torch.diag(torch.tensor(list(eigenvalues), dtype=torch.float64)) @ Q.T


def _power_cases() -> List[tuple]:
    """(eigenvalues, what the case tests): a clear gap, a negative dominant eigenvalue, a slow gap
    (ratio 0.8: a few iterations are not enough), and a large scale (an unnormalised vector overflows)."""
    return [
        ([5.0, 2.5, -2.0, 1.0, 0.5, -0.3], "positive dominant eigenvalue"),
        ([-4.0, 2.0, 1.5, -1.0, 0.7, 0.2, -0.1, 0.05], "negative dominant eigenvalue"),
        ([3.0, 2.4, -2.0, 1.2, -0.8, 0.6, 0.3, -0.2, 0.1, 0.0], "second eigenvalue 0.8 times the first"),
        ([2e4, -1e4, 8e3, 5e3, -3e3, 1e3, 500.0, -100.0, 50.0, 10.0, -5.0, 1.0], "eigenvalues of order 1e4"),
    ]


def check_power_iteration(fn: Callable, iterations: int = 100, seed: int = 0, rtol: float = 1e-4) -> CheckResult:
    """Check ``fn(hvp, dim, iterations=100) -> float``: the eigenvalue of largest magnitude, with its sign,
    of a hidden symmetric ``dim x dim`` matrix ``H`` that the reader reaches only through ``hvp(v) = H @ v``
    (``v`` and ``hvp(v)``: float64 torch tensors of shape ``(dim,)``). This is how the collapse
    indicator of RobustDARTS (Zela et al., ICLR 2020) is measured: the Hessian of the validation loss w.r.t.
    alpha is never formed, only Hessian-vector products (:func:`fairdarts_core.analysis.hessian_eigenvalue`).
    Power iteration: ``v <- H v / |H v|``, then the Rayleigh quotient ``v . H v``. Accepted within ``rtol``
    relative on four random matrices, one of them with a negative dominant eigenvalue."""
    import math

    import numpy as np

    for k, (eigenvalues, what) in enumerate(_power_cases()):
        H = _symmetric(eigenvalues, seed + k)
        hvp = _HessianOracle(H)
        dim = H.shape[0]
        expected = max(eigenvalues, key=abs)
        got, err = _call(lambda: fn(hvp, dim, iterations=iterations))
        if hvp.misuse is not None:
            return CheckResult(False, hvp.misuse)
        if err is not None:
            return err
        value = _as_number(got)
        if value is None:
            shape = (tuple(got.shape) if isinstance(got, (torch.Tensor, np.ndarray))
                     else (len(got),) if isinstance(got, (list, tuple)) else None)
            if shape is not None and shape != () and int(np.prod(shape)) > 1:
                return CheckResult(False, f"it returned a vector (shape {shape}), probably the eigenvector; return "
                                          f"the eigenvalue, one number: the Rayleigh quotient v . H v of the "
                                          f"normalised vector v")
            return CheckResult(False, f"it returned a {type(got).__name__}; return the eigenvalue as one number")
        if hvp.calls == 0:
            return CheckResult(False, "it never calls hvp: the matrix is hidden, every product H v must come from "
                                      "hvp(v)")
        if abs(value - expected) <= rtol * abs(expected):
            continue
        if not np.isfinite(value) or hvp.max_norm > 1e100 or not np.isfinite(hvp.max_norm):
            if hvp.max_norm > 1e6 or not np.isfinite(hvp.max_norm):
                reached = (f"its norm reached {hvp.max_norm:.3g}" if math.isfinite(hvp.max_norm)
                           else "its norm overflowed to inf")
                return CheckResult(False, f"the vector given to hvp grows without bound ({reached} on a matrix with "
                                          f"eigenvalues of order 1e4): divide v by its norm after every product")
            return CheckResult(False, f"it returned {value} ({what})")
        if abs(abs(value) - abs(expected)) <= rtol * abs(expected):
            why = ("the norm |H v| loses the sign" if value > 0 else "the sign is flipped somewhere")
            return CheckResult(False, f"the size is right but the sign is not (expected {expected:+.4g}, got "
                                      f"{value:+.4g}; {what}): {why}; return the Rayleigh quotient v . H v of the "
                                      f"normalised v")
        others = sorted(eigenvalues)
        if abs(value - others[-1]) <= rtol * abs(others[-1]) and others[-1] != expected:
            return CheckResult(False, f"that is the largest eigenvalue ({others[-1]:+.4g}), not the one of largest "
                                      f"magnitude ({expected:+.4g}): power iteration finds the largest |eigenvalue|, "
                                      f"keep its sign")
        rel = abs(value - expected) / abs(expected)
        if rel < 0.05:
            return CheckResult(False, f"close but loose: {value:.6g} against {expected:.6g} (relative error "
                                      f"{rel:.1e}, {what}); power iteration converges like |lambda2 / "
                                      f"lambda1|^k, so run all `iterations` products ({iterations} here) and "
                                      f"return the Rayleigh quotient v . H v")
        return CheckResult(False, f"expected {expected:+.6g} ({what}), got {value:+.6g}: repeat v <- H v / |H v| "
                                  f"`iterations` times from a random start, then return v . H v")
    return CheckResult(True, f"your power iteration finds the dominant eigenvalue, sign included, on "
                             f"{len(_power_cases())} random symmetric matrices (within {rtol:g} relative).")


def _zero_one_variants(w: torch.Tensor, kind: str) -> Dict[str, torch.Tensor]:
    """The usual mistakes in the zero-one loss, each with the hint its author gets."""
    d = w - 0.5
    right = -(d * d).mean() if kind == "l2" else -d.abs().mean()
    other = -d.abs().mean() if kind == "l2" else -(d * d).mean()
    total = -(d * d).sum() if kind == "l2" else -d.abs().sum()
    return {
        "the sign is flipped: the loss must be lowest (most negative) when every weight is 0 or 1, so it is "
        "minus the mean distance from 0.5": -right,
        "it sums over the weights; the paper takes the mean (so the weight w = 10 does not depend on the number "
        "of edges and ops)": total,
        f"that is the {'L1' if kind == 'l2' else 'L2'} form; kind={kind!r} asks for "
        + ("-mean((w - 0.5) ** 2)" if kind == "l2" else "-mean(|w - 0.5|)"): other,
        "the distance is measured from 0, not from 0.5: L01 rewards weights far from 0.5 in either direction":
            -(w * w).mean() if kind == "l2" else -w.abs().mean(),
        "it applies the sigmoid again: the function receives the weights sigma(alpha), already in [0, 1]":
            -((torch.sigmoid(w) - 0.5) ** 2).mean() if kind == "l2" else -(torch.sigmoid(w) - 0.5).abs().mean(),
    }


def check_zero_one_loss(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``fn(weights, kind="l2") -> scalar tensor``: Fair DARTS's zero-one loss (Eq. 5) of a tensor of
    sigmoid weights, ``-mean((w - 0.5)^2)`` (``kind="l2"``, the paper's) or ``-mean(|w - 0.5|)``
    (``kind="l1"``). It must stay differentiable: the search adds ``w01 * L01`` to the architecture loss and
    back-propagates through it. The reference is :func:`fairdarts_core.relax.zero_one_loss`."""
    from .relax import zero_one_loss

    g = torch.Generator().manual_seed(seed)
    shapes = [(14, 7), (6, 5), (3, 2, 4)]
    for kind in ("l2", "l1"):
        for shape in shapes:
            alpha = torch.randn(shape, generator=g, dtype=torch.float64) * 2
            w = torch.sigmoid(alpha).requires_grad_(True)
            got, err = _call(fn, w, kind)
            if err is not None:
                return err
            if not isinstance(got, torch.Tensor):
                return CheckResult(False, f"it returned a {type(got).__name__}; return a torch tensor (one number), "
                                          f"so that the search can back-propagate through it")
            if got.numel() != 1:
                return CheckResult(False, f"it returned a tensor of shape {tuple(got.shape)}; the loss is one "
                                          f"number, the mean over every weight")
            expected = zero_one_loss(w.detach(), kind)
            if not _close(got.detach().reshape(()).to(expected.dtype), expected, tol=1e-6):
                for hint, wrong in _zero_one_variants(w.detach(), kind).items():
                    if _close(got.detach().reshape(()).to(wrong.dtype), wrong, tol=1e-6):
                        return CheckResult(False, hint)
                return CheckResult(False, f"kind={kind!r}, weights of shape {shape}: expected {float(expected):.6f}, "
                                          f"got {float(got):.6f}")
            if not got.requires_grad:
                return CheckResult(False, "the result carries no gradient (a .item(), numpy or torch.no_grad() "
                                          "inside?): the search back-propagates through the loss to alpha")
            (grad,) = torch.autograd.grad(got.reshape(()), w)
            d = w.detach() - 0.5
            want = -2 * d / d.numel() if kind == "l2" else -torch.sign(d) / d.numel()
            if not _close(grad, want, tol=1e-8):
                return CheckResult(False, "the value is right but its gradient is not: build it from torch "
                                          "operations on the tensor you were given")
    return CheckResult(True, "your zero-one loss matches Eq. 5 in both forms (L2 and L1), values and gradients, "
                             f"on {len(shapes)} shapes each.")


def _gap_cases(seed: int) -> list:
    """Tiny NAS-Bench-201 supernets (sigmoid and softmax, random alphas) whose network weights are trained
    for a few steps with their relaxed weights on a learnable task (the label is the brightest quadrant of
    the image), and those images: the relaxed supernet fits them, the discretized one less so."""
    from .nb201 import NB201Config, NB201Supernet

    cases = []
    for k, relaxation in enumerate(("sigmoid", "softmax", "sigmoid")):
        torch.manual_seed(seed + k)
        model = NB201Supernet(NB201Config(channels=4, cells_per_stage=1, in_channels=1, num_classes=4,
                                          relaxation=relaxation, alpha_init_std=1.5))
        g = torch.Generator().manual_seed(seed + 10 + k)
        batches = []
        for _ in range(3):
            x = torch.randn(32, 1, 8, 8, generator=g)
            quadrants = x.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)).reshape(32, 4)
            batches.append((x, quadrants.argmax(1)))
        opt = torch.optim.SGD(model.network_parameters(), lr=0.02, momentum=0.9)
        for _ in range(10):
            for x, y in batches:
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        cases.append((model.eval(), batches))
    return cases


def _accuracy(model: nn.Module, batches, weights=None, train: bool = False) -> float:
    model.train(train)
    with torch.no_grad():
        hits = sum(int((model(x, weights).argmax(1) == y).sum()) for x, y in batches)
    return hits / sum(len(y) for _, y in batches)


def check_discretization_gap(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``fn(model, batches) -> float``: the accuracy gap ``relaxed - discretized`` of a NAS-Bench-201
    supernet on ``batches`` (a list of ``(images, labels)``), where the discretized supernet keeps on every
    edge only its strongest op (weight 1, the others 0: ``model(x, weights)`` with ``weights = (w,)``, a
    ``(6, n_ops)`` 0/1 matrix), both in eval mode, with the same network weights. The reference is
    :func:`fairdarts_core.analysis.discretization_gap` with the argmax rule (``model.genotype("darts")``)."""
    from .analysis import discretization_gap

    for k, (model, batches) in enumerate(_gap_cases(seed)):
        model.eval()
        state = {name: t.clone() for name, t in model.state_dict().items()}
        expected = discretization_gap(model, batches, model.genotype("darts"))
        got, err = _call(fn, model, batches)
        if err is not None:
            return err
        changed = [name for name, t in model.state_dict().items() if not torch.equal(t, state[name])]
        if changed:
            return CheckResult(False, f"your function changed the model ({changed[0]}): measure the discretized "
                                      f"network by passing weights to model(x, weights), not by editing alpha or "
                                      f"running it in training mode (which updates the BN statistics)")
        value = _as_number(got)
        if value is None:
            return CheckResult(False, f"it returned a {type(got).__name__}; return one number, the accuracy of the "
                                      f"relaxed supernet minus that of the discretized one")
        if abs(value - expected.acc_gap) < 1e-9:
            continue
        (w,) = model.relaxed_weights()
        hot = (torch.nn.functional.one_hot(w.argmax(1), w.shape[1]).to(w.dtype),)
        hints = {
            "the sign is flipped: the gap is relaxed accuracy minus discretized accuracy (what deriving the cell "
            "costs)": -expected.acc_gap,
            "that is the loss gap; the exercise asks for the accuracy gap": expected.loss_gap,
            "those numbers come from training mode (BN with the batch's statistics); measure both networks with "
            "model.eval(), as a trained network is used": _accuracy(model, batches, train=True)
            - _accuracy(model, batches, hot, train=True),
            "that is the discretized network's accuracy alone; return relaxed minus discretized":
                expected.discrete_acc,
        }
        model.load_state_dict(state)
        for hint, wrong in hints.items():
            if abs(value - wrong) < 1e-9:
                return CheckResult(False, hint)
        return CheckResult(False, f"case {k + 1} ({model.config.relaxation}): expected a gap of "
                                  f"{expected.acc_gap:+.4f} (relaxed {expected.relaxed_acc:.4f}, discretized "
                                  f"{expected.discrete_acc:.4f}), got {value:+.4f}")
    return CheckResult(True, "your gap matches the library's on three small trained supernets (sigmoid and softmax).")


# --- chapter 5: reading a derived cell ---------------------------------------------------------------------

def _live_cases(seed: int) -> List[list]:
    """Cells with known live nodes: a full DARTS cell, chains that break, and random sparse cells."""
    import numpy as np

    from .genotype import edge_index

    cases = [[("sep_conv_3x3", 2, 0), ("skip_connect", 2, 1), ("sep_conv_3x3", 3, 2), ("max_pool_3x3", 4, 3),
              ("dil_conv_3x3", 5, 4)],
             [("sep_conv_3x3", 3, 2), ("skip_connect", 4, 3), ("max_pool_3x3", 5, 1)],   # 2 gets nothing: 3, 4 die
             [("sep_conv_3x3", 2, 0), ("skip_connect", 4, 3), ("dil_conv_5x5", 5, 4)],   # 3 gets nothing: 4, 5 die
             []]
    rng = np.random.default_rng(seed)
    pairs = edge_index()
    for _ in range(12):
        keep = rng.random(len(pairs)) < 0.25
        cases.append([(str(rng.choice(FAIR_DARTS_OPS)), to, src) for (to, src), k in zip(pairs, keep) if k])
    return cases


def check_live_nodes(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``fn(edges) -> list of nodes``: the live intermediate nodes (2..5) of a DARTS-space cell given as
    ``(op, to, from)`` edges, sorted: a node is live when an edge reaches it from a cell input (0, 1) or from
    a live node. The reference is :func:`fairdarts_core.genotype.live_nodes`."""
    from .genotype import live_nodes

    for edges in _live_cases(seed):
        expected = live_nodes(edges)
        got, err = _call(fn, [tuple(e) for e in edges])
        if err is not None:
            return err
        try:
            got = sorted(int(n) for n in got)
        except (TypeError, ValueError):
            return CheckResult(False, f"it returned {got!r}; return a list of node numbers, e.g. [2, 3, 5]")
        if got == expected:
            continue
        if {0, 1} & set(got):
            return CheckResult(False, "your list contains node 0 or 1: those are the cell's inputs; list the "
                                      "intermediate nodes (2 to 5) only")
        with_input = sorted({to for _, to, _ in edges})
        if got == with_input:
            return CheckResult(False, f"for the cell {edges} you listed every node that has an incoming edge "
                                      f"({got}), but an edge from an isolated node carries nothing: a node is live "
                                      f"only if an edge reaches it from 0, 1 or a live node ({expected})")
        return CheckResult(False, f"for the cell {edges} the live nodes are {expected}; you gave {got}")
    return CheckResult(True, "your live nodes match the library's on full, broken and random sparse cells.")


def _derive_cases(seed: int) -> list:
    """Sigmoid matrices with every case of the rule: edges above the threshold beyond two per node, a
    strong op below it on a top-two edge, ties, and random ones."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(FAIR_DARTS_OPS)
    crafted = np.full((14, n), 0.1)
    crafted[0, 3], crafted[1, 4] = 0.9, 0.8            # node 2: a kept edge and a top-two edge below 0.85
    crafted[2:5, 5] = [0.95, 0.9, 0.88]                  # node 3: three edges above, only two kept
    crafted[5, 2], crafted[5, 6] = 0.99, 0.97            # node 4: two ops above on one edge, one kept
    cases = [(crafted, 0.85), (crafted, 0.9), (crafted, 0.5)]
    for threshold in (0.85, 0.7, 0.85):
        w = 1 / (1 + np.exp(-rng.normal(0, 3, (14, n))))
        cases.append((w, threshold))
    return cases


def check_fair_derive(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``fn(weights, primitives, threshold) -> list of (op, to, from)``: Fair DARTS's derive rule
    (``threshold_sparse``, Sec. 4.3) on one (14, n_ops) matrix of sigmoids: per node 2..5, the two incoming
    edges whose strongest op is strongest; on each, that op, kept only if its sigmoid reaches the threshold.
    The order of the edges does not matter. The reference is :func:`fairdarts_core.genotype.parse_cell`."""
    from .genotype import parse_cell

    for weights, threshold in _derive_cases(seed):
        expected = parse_cell(weights, FAIR_DARTS_OPS, "threshold_sparse", threshold)
        got, err = _call(fn, weights.copy(), list(FAIR_DARTS_OPS), threshold)
        if err is not None:
            return err
        try:
            got_set = {(str(op), int(to), int(src)) for op, to, src in got}
        except (TypeError, ValueError):
            return CheckResult(False, f"it returned {got!r}; return a list of (op, to, from) triples")
        if got_set == set(expected):
            continue
        low = [e for e in got_set if weights[sum(range(2, e[1])) + e[2], FAIR_DARTS_OPS.index(e[0])] < threshold]
        if low:
            return CheckResult(False, f"you kept {sorted(low)[0]}, whose sigmoid is below the threshold {threshold}")
        if len(got_set) > len(expected):
            return CheckResult(False, f"you kept {len(got_set)} edges where the rule keeps {len(expected)}: at most "
                                      f"two edges per node, one op per edge (the strongest)")
        return CheckResult(False, f"at threshold {threshold} the rule keeps {sorted(expected)}; you kept "
                                  f"{sorted(got_set)}")
    return CheckResult(True, "your rule derives the library's cells on crafted and random sigmoids at three thresholds.")


def _as_number(x) -> Optional[float]:
    """``x`` as a float if it is one number (a Python or numpy number, a 0-d or one-element tensor/array),
    else None."""
    import numpy as np

    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float, np.floating, np.integer)):
        return float(x)
    if isinstance(x, torch.Tensor):
        return float(x.detach().reshape(-1)[0]) if x.numel() == 1 else None
    if isinstance(x, np.ndarray):
        return float(x.reshape(-1)[0]) if x.size == 1 else None
    return None


__all__: List[str] = ["CheckResult", "check_mixed_edge", "check_dominant_counts", "check_skip_share_per_epoch",
                      "check_nb201_arch_string", "check_noise_schedule", "check_power_iteration",
                      "check_zero_one_loss", "check_discretization_gap", "check_live_nodes", "check_fair_derive"]


# --- chapter 6: from a cell to a network, and what it costs -----------------------------------------------

def _channel_cases() -> list:
    """(C, layers, genotype) with 2, 3 and 4 live nodes per cell and depths whose reductions fall differently."""
    from .genotype import Genotype
    from .zoo import get

    two = Genotype((("sep_conv_3x3", 2, 0), ("skip_connect", 3, 1)), get("DARTS_V2").reduce)
    return [(36, 20, get("FairDARTS_a")), (8, 6, get("DARTS_V2")), (16, 8, two), (4, 3, get("FairDARTS_c")),
            (12, 14, get("FairDARTS_b"))]


def check_cell_channels(fn: Callable) -> CheckResult:
    """Check ``fn(C, layers, normal_nodes, reduce_nodes) -> list``: the channels each of the ``layers`` cells
    of the evaluation network outputs, given the initial channels ``C`` and the live nodes of the normal and
    the reduction cell. The reference is :func:`fairdarts_core.network.network_layout` (tested against the
    network itself)."""
    from .genotype import live_nodes
    from .network import network_layout

    for C, layers, genotype in _channel_cases():
        normal, reduce = len(live_nodes(genotype.normal)), len(live_nodes(genotype.reduce))
        expected = [r["out_channels"] for r in network_layout(genotype, C, layers) if r["stage"] == "cell"]
        got, err = _call(fn, C, layers, normal, reduce)
        if err is not None:
            return err
        try:
            got = [int(c) for c in got]
        except (TypeError, ValueError):
            return CheckResult(False, f"it returned {got!r}; return a list of {layers} channel counts")
        if got == expected:
            continue
        case = f"C={C}, {layers} cells, {normal} live nodes in the normal cell and {reduce} in the reduction cell"
        if len(got) != layers:
            return CheckResult(False, f"for {case} you returned {len(got)} numbers; the network has {layers} cells")
        if got == [4 * c // n if n else c for c, n in zip(expected, [normal if (i not in (layers // 3, 2 * layers // 3))
                                                                     else reduce for i in range(layers)])]:
            return CheckResult(False, f"for {case} you assumed four live nodes per cell: a cell concatenates its "
                                      f"live nodes only, so it outputs live nodes x C channels")
        first = next(i for i, (g, e) in enumerate(zip(got, expected)) if g != e)
        return CheckResult(False, f"for {case} cell {first} outputs {expected[first]} channels, you said {got[first]} "
                                  f"(the reduction cells sit at cells layers // 3 and 2 * layers // 3 and double C)")
    return CheckResult(True, "your channel counts match the network's for 2, 3 and 4 live nodes and five depths.")


def _sep_conv_reference(C: int, k: int, size: int) -> tuple:
    from .analysis import count_flops, count_params
    from .ops import make_op

    op = make_op(f"sep_conv_{k}x{k}", C, 1, affine=True)
    return count_params(op), count_flops(op, resolution=size, in_channels=C)


def check_sep_conv_cost(fn: Callable) -> CheckResult:
    """Check ``fn(C, k, size) -> (params, macs)``: the parameters and multiply-adds of one ``sep_conv_kxk`` of the
    evaluation network on ``C`` channels of ``size x size`` maps at stride 1 (two blocks of ReLU, depthwise
    k x k conv, pointwise 1x1 conv, BN with affine weights), multiply-adds counted as thop counts them (BN
    folded away). The reference counts the op itself (:func:`fairdarts_core.analysis.count_params`,
    :func:`~fairdarts_core.analysis.count_flops`)."""
    for C, k, size in ((36, 3, 32), (72, 5, 16), (8, 3, 7), (144, 5, 8)):
        params, macs = _sep_conv_reference(C, k, size)
        got, err = _call(fn, C, k, size)
        if err is not None:
            return err
        try:
            got_params, got_macs = (int(v) for v in got)
        except (TypeError, ValueError):
            return CheckResult(False, f"it returned {got!r}; return two numbers: (params, macs)")
        case = f"sep_conv_{k}x{k} on {C} channels at {size}x{size}"
        if got_params != params:
            hint = ""
            if got_params * 2 == params or got_params * 2 == params - 4 * C:
                hint = ": the op is two ReLU-depthwise-pointwise-BN blocks, not one"
            elif got_params == params - 4 * C:
                hint = ": each BN has C weights and C biases"
            elif got_params == 2 * (C * C * k * k + C * C + 2 * C):
                hint = ": the k x k conv is depthwise (groups=C), one k x k filter per channel"
            return CheckResult(False, f"{case} has {params} parameters, you said {got_params}{hint}")
        if got_macs != macs:
            hint = ""
            if got_macs * 2 == macs:
                hint = ": the op is two blocks, not one"
            elif got_macs == macs + 4 * C * size * size:
                hint = ": BN counts nothing here (at inference it folds into the conv before it)"
            return CheckResult(False, f"{case} takes {macs} multiply-adds, you said {got_macs}{hint}")
    return CheckResult(True, "your counts match the op's own on four channel widths, two kernels and four map sizes.")
