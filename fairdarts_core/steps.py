"""The optimisation steps of a differentiable architecture search, in one place.

Shared by the search loop (:mod:`fairdarts_core.search`), the skip-vs-conv chain experiment
(:mod:`fairdarts_core.mechanism`) and the benchmark (:mod:`fairdarts_core.bench`). A step takes exactly
what it uses: a model, batches, optimisers, the zero-one term and the clipping norm. It does no I/O and
keeps no state of its own.

``model`` is anything with ``arch_parameters()`` (alpha), ``network_parameters()`` (the network weights
w), ``relaxed_weights()`` (a tensor or a sequence of tensors: alpha after the relaxation) and
``model(x) -> logits``.

- First-order bi-level (DARTS Alg. 1 with xi = 0; Fair DARTS): an architecture step on a validation
  batch, Adam on alpha for ``CE + w01 * L01`` (Fair DARTS Eq. 6), then a weight step on a training batch.
- Single-level: alpha and w descend the training loss of one batch together (the authors' option).
- Second order: DARTS's unrolled architecture step (Liu et al., 2019, Eq. 7-8), then the weight step.

The statistics a step returns are detached tensors, not floats: calling ``.item()`` every step would
synchronise a GPU.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .precision import OFF, Precision, full_precision
from .relax import zero_one_loss

Batch = Tuple[torch.Tensor, torch.Tensor]
Stats = Dict[str, torch.Tensor]


@dataclass(frozen=True)
class ZeroOne:
    """The zero-one term of the architecture loss, ``weight * L01`` (Fair DARTS Eq. 5-6).

    ``weight`` 0 switches it off (DARTS); ``kind``: ``"l2"`` (the paper's) or ``"l1"``.
    """

    weight: float = 0.0
    kind: str = "l2"

    def __post_init__(self):
        if self.kind not in ("l2", "l1"):
            raise ValueError(f"unknown zero-one loss kind {self.kind!r}; choose l2 or l1")
        if not self.weight >= 0:
            raise ValueError(f"the zero-one loss weight must be >= 0; got {self.weight}")


def _relaxed_list(model) -> Sequence[torch.Tensor]:
    relaxed = model.relaxed_weights()
    return [relaxed] if torch.is_tensor(relaxed) else list(relaxed)


def batch_stats(prefix: str, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> Stats:
    """Summed loss, correct predictions and the batch size under ``prefix`` (``train`` or ``val``)."""
    n = len(y)
    return {f"{prefix}_loss_sum": loss.detach() * n,
            f"{prefix}_correct": (logits.detach().argmax(1) == y).sum().float(),
            f"{prefix}_n": n}


def arch_loss(model, logits: torch.Tensor, y: torch.Tensor, zero_one: ZeroOne = ZeroOne()):
    """``CE + zero_one.weight * L01`` over every relaxed weight of ``model``; returns ``(loss, ce, l01)``.
    Called outside any autocast region: autocast's half-precision logits are cast to float32, and the
    relaxation and L01 are computed from the float32 alpha."""
    ce = F.cross_entropy(full_precision(logits), y)
    l01 = zero_one_loss(_relaxed_list(model), zero_one.kind)
    loss = ce + zero_one.weight * l01 if zero_one.weight else ce
    return loss, ce, l01


def _set_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g


@contextmanager
def frozen(params: Sequence[torch.Tensor]) -> Iterator[None]:
    """Within the block, ``params`` require no gradient (their flags are restored on leaving). A forward pass
    run inside builds a graph that reaches alpha alone, and the fast path keeps nothing that only the
    weights' gradients need (:func:`fairdarts_core.fast.conv2d`)."""
    was = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, r in zip(params, was):
            p.requires_grad_(r)


def arch_step(model, batch_val: Batch, a_optimizer: torch.optim.Optimizer, zero_one: ZeroOne = ZeroOne(),
              precision: Precision = OFF) -> Stats:
    """One first-order architecture step on a validation batch.

    The network weights are :func:`frozen` and ``torch.autograd.grad`` asks for alpha's gradient alone:
    autograd skips every weight-gradient kernel of the backward pass (it still needs the gradients w.r.t. the
    activations to reach alpha), and the fast path keeps no convolution inputs. The forward pass runs in
    ``precision``'s autocast; the loss and alpha stay float32 (:mod:`fairdarts_core.precision`).
    """
    x, y = batch_val
    alphas = model.arch_parameters()
    with frozen(model.network_parameters()):
        with precision.autocast():
            logits = model(x)
        loss, ce, _ = arch_loss(model, logits, y, zero_one)
        _set_grads(alphas, torch.autograd.grad(precision.scale(loss), alphas))
    precision.unscale(a_optimizer)
    precision.step(a_optimizer)
    return batch_stats("val", logits, y, ce)


def weight_step(model, batch_train: Batch, w_optimizer: torch.optim.Optimizer, grad_clip: float,
                precision: Precision = OFF) -> Stats:
    """One weight step: SGD on the network weights for the cross-entropy of a training batch, the gradient
    norm clipped to ``grad_clip`` (0: no clipping; DARTS clips at 5). No gradient w.r.t. alpha is computed."""
    x, y = batch_train
    weights = model.network_parameters()
    with precision.autocast():
        logits = model(x)
    loss = F.cross_entropy(full_precision(logits), y)
    _set_grads(weights, torch.autograd.grad(precision.scale(loss), weights, allow_unused=True))
    precision.unscale(w_optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(weights, grad_clip)
    precision.step(w_optimizer)
    return batch_stats("train", logits, y, loss)


def arch_step_as_written(model, batch_val: Batch, a_optimizer: torch.optim.Optimizer,
                         zero_one: ZeroOne = ZeroOne()) -> Stats:
    """:func:`arch_step` as DARTS's ``Architect.step`` writes it: ``loss.backward()``, so autograd also
    computes every weight gradient, which the step then discards. The same alpha update, more work: the
    benchmark's baseline (``fairdarts bench``)."""
    x, y = batch_val
    a_optimizer.zero_grad()
    logits = model(x)
    loss, ce, _ = arch_loss(model, logits, y, zero_one)
    loss.backward()
    a_optimizer.step()
    for p in model.network_parameters():
        p.grad = None  # discarded
    return batch_stats("val", logits, y, ce)


def weight_step_as_written(model, batch_train: Batch, w_optimizer: torch.optim.Optimizer, grad_clip: float) -> Stats:
    """:func:`weight_step` as DARTS's training loop writes it: ``loss.backward()`` (alpha's gradient comes
    along, unused), clipping, SGD. The same update: the benchmark's baseline."""
    x, y = batch_train
    w_optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.network_parameters(), grad_clip)
    w_optimizer.step()
    for p in model.arch_parameters():
        p.grad = None  # unused
    return batch_stats("train", logits, y, loss)


def bilevel_step(model, batch_train: Batch, batch_val: Batch, w_optimizer, a_optimizer,
                 zero_one: ZeroOne = ZeroOne(), grad_clip: float = 0.0, precision: Precision = OFF) -> Stats:
    """First-order bi-level step (DARTS with xi = 0; Fair DARTS): alpha on the validation batch, then the
    weights on the training batch."""
    stats = arch_step(model, batch_val, a_optimizer, zero_one, precision)
    stats.update(weight_step(model, batch_train, w_optimizer, grad_clip, precision))
    precision.update()
    return stats


def single_level_step(model, batch_train: Batch, batch_val: Batch, w_optimizer, a_optimizer,
                      zero_one: ZeroOne = ZeroOne(), grad_clip: float = 0.0, precision: Precision = OFF) -> Stats:
    """Single-level step: weights and alpha both descend the training loss of the same batch, from one
    forward and one backward (the zero-one term only reaches alpha: it does not depend on the weights).
    ``batch_val`` is not used (the argument keeps the signature of the other steps)."""
    x, y = batch_train
    weights, alphas = model.network_parameters(), model.arch_parameters()
    with precision.autocast():
        logits = model(x)
    loss, ce, _ = arch_loss(model, logits, y, zero_one)
    _set_grads(weights + alphas, torch.autograd.grad(precision.scale(loss), weights + alphas, allow_unused=True))
    precision.unscale(w_optimizer)
    precision.unscale(a_optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(weights, grad_clip)
    precision.step(w_optimizer)
    precision.step(a_optimizer)
    precision.update()
    return batch_stats("train", logits, y, ce)


def _virtual_sgd_step(weights, grads, w_optimizer) -> None:
    """``w <- w - xi * (g + wd * w + momentum * buffer)``: the step SGD would take, momentum and weight
    decay included (DARTS Eq. 7's ``w'``), with the optimiser's current learning rate as ``xi``."""
    group = w_optimizer.param_groups[0]
    xi, mom, wd = group["lr"], group.get("momentum", 0.0), group.get("weight_decay", 0.0)
    with torch.no_grad():
        for p, g in zip(weights, grads):
            if g is None:
                continue
            d = g + wd * p
            buf = w_optimizer.state.get(p, {}).get("momentum_buffer")
            if mom and buf is not None:
                d = d + mom * buf
            p.sub_(xi * d)


def second_order_arch_step(model, batch_train: Batch, batch_val: Batch, w_optimizer, a_optimizer,
                           zero_one: ZeroOne = ZeroOne()) -> Stats:
    """DARTS's unrolled architecture step (Liu et al., 2019, Eq. 7-8).

    The gradient of ``L_val(w', alpha)`` with ``w' = w - xi * (SGD step on L_train(w, alpha))`` is
    ``d_alpha L_val(w', alpha) - xi * d2_{alpha,w} L_train(w, alpha) . d_w' L_val(w', alpha)``; the
    second-order term is a finite difference around ``w`` with ``eps = 0.01 / ||d_w' L_val||``.
    """
    weights, alphas = model.network_parameters(), model.arch_parameters()
    xi = w_optimizer.param_groups[0]["lr"]
    x_t, y_t = batch_train
    x_v, y_v = batch_val
    backup = [p.detach().clone() for p in weights]

    # 1. virtual step w -> w'
    g_train = torch.autograd.grad(F.cross_entropy(model(x_t), y_t), weights, allow_unused=True)
    _virtual_sgd_step(weights, g_train, w_optimizer)
    # 2. gradients of the architecture loss at (w', alpha)
    logits = model(x_v)
    loss, ce, _ = arch_loss(model, logits, y_v, zero_one)
    grads = torch.autograd.grad(loss, alphas + weights, allow_unused=True)
    d_alpha = grads[:len(alphas)]
    d_w = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, grads[len(alphas):])]
    # 3. Hessian-vector product by central differences at w +- eps * d_w
    eps = 0.01 / torch.sqrt(sum((g * g).sum() for g in d_w)).clamp_min(1e-12)

    def alpha_grad_at(sign: float):
        with torch.no_grad():
            for p, b, g in zip(weights, backup, d_w):
                p.copy_(b + sign * eps * g)
        return torch.autograd.grad(F.cross_entropy(model(x_t), y_t), alphas)

    g_pos, g_neg = alpha_grad_at(+1.0), alpha_grad_at(-1.0)
    with torch.no_grad():
        for p, b in zip(weights, backup):
            p.copy_(b)
    _set_grads(alphas, [da - xi * (gp - gn) / (2 * eps) for da, gp, gn in zip(d_alpha, g_pos, g_neg)])
    a_optimizer.step()
    return batch_stats("val", logits, y_v, ce)


def second_order_step(model, batch_train: Batch, batch_val: Batch, w_optimizer, a_optimizer,
                      zero_one: ZeroOne = ZeroOne(), grad_clip: float = 0.0, precision: Precision = OFF) -> Stats:
    """DARTS second order: the unrolled architecture step, then the ordinary weight step. float32 only: its
    finite difference of gradients (eps ~ 0.01 / ||g||) drowns in half-precision rounding."""
    if precision.amp != "off":
        raise ValueError(f"amp={precision.amp} is not available with mode=second_order; use amp=off")
    stats = second_order_arch_step(model, batch_train, batch_val, w_optimizer, a_optimizer, zero_one)
    stats.update(weight_step(model, batch_train, w_optimizer, grad_clip))
    return stats


STEPS: Dict[str, Callable[..., Stats]] = {
    "bilevel": bilevel_step,
    "single": single_level_step,
    "second_order": second_order_step,
}
"""The step of each search mode (``SearchConfig.mode``); all take
``(model, batch_train, batch_val, w_optimizer, a_optimizer, zero_one, grad_clip, precision)``."""


def search_step(mode: str, model, batch_train: Batch, batch_val: Batch, w_optimizer, a_optimizer,
                zero_one: ZeroOne = ZeroOne(), grad_clip: float = 0.0, precision: Precision = OFF) -> Stats:
    """The step of search mode ``mode`` (``bilevel``, ``single`` or ``second_order``)."""
    if mode not in STEPS:
        raise ValueError(f"unknown search mode {mode!r}; choose one of {', '.join(STEPS)}")
    return STEPS[mode](model, batch_train, batch_val, w_optimizer, a_optimizer, zero_one, grad_clip, precision)


# --- a run that diverges stops ------------------------------------------------------------------------
class DivergedError(ValueError):
    """A loss, weight or buffer became NaN or infinite: the run stops (its last good checkpoint is kept)."""


def finite_flag(stats: Stats) -> torch.Tensor:
    """A 0-d bool tensor: every loss of one step's ``stats`` is finite (no ``.item()``: no GPU sync)."""
    losses = [v for k, v in stats.items() if k.endswith("_loss_sum")]
    return torch.stack([torch.isfinite(v) for v in losses]).all()


def non_finite_tensors(module: torch.nn.Module) -> list:
    """Names of the parameters and buffers of ``module`` that hold a NaN or an infinity."""
    return [name for name, t in list(module.named_parameters()) + list(module.named_buffers())
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite(flags: Sequence[torch.Tensor], module: torch.nn.Module, what: str, epoch: Optional[int] = None,
                 first_step: int = 1, kept: str = "") -> None:
    """Raise :class:`DivergedError` (one line naming the epoch and step) if one of the steps ``flags``
    describes (:func:`finite_flag` of each, numbered from ``first_step``) had a non-finite loss, or
    ``module`` now holds a non-finite parameter or buffer. ``epoch``: 0-based, or None (no epochs);
    ``kept``: what the message says survives (e.g. the last checkpoint)."""
    bad_steps = (~torch.stack(list(flags))).nonzero().flatten().tolist() if flags else []
    bad_tensors = non_finite_tensors(module)
    if not bad_steps and not bad_tensors:
        return
    when = "" if epoch is None else f" in epoch {epoch + 1}"
    detail = (f"{when} at step {bad_steps[0] + first_step}: the loss became non-finite" if bad_steps
              else f"{when}: {bad_tensors[0]} became non-finite")
    raise DivergedError(f"the {what} diverged{detail} (a learning rate too large?); "
                        f"stopped{'; ' + kept if kept else ''}")
