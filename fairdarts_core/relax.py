"""Continuous relaxations of the choice of op on an edge, and the zero-one loss.

DARTS (Liu et al., 2019, Eq. 1) weights the ops of an edge by ``softmax(alpha)``: an *exclusive*
competition, one op's gain is the others' loss. Fair DARTS (Chu et al., 2020, Sec. 4, Eq. 4) weights
every op by its own ``sigmoid(alpha)``: ops no longer compete for a fixed budget, so an op with an
unfair advantage (skip connections) cannot suppress the rest. The zero-one loss (Eq. 5) pushes each
sigmoid towards 0 or 1, so that thresholding at the end loses little (the discretization gap).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Union

import torch
import torch.nn.functional as F


def softmax(alpha: torch.Tensor) -> torch.Tensor:
    """DARTS: exclusive weights, each row (edge) sums to 1."""
    return F.softmax(alpha, dim=-1)


def sigmoid(alpha: torch.Tensor) -> torch.Tensor:
    """Fair DARTS: an independent weight in (0, 1) for every op of every edge."""
    return torch.sigmoid(alpha)


RELAXATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"softmax": softmax, "sigmoid": sigmoid}


def relax(alpha: torch.Tensor, relaxation: str) -> torch.Tensor:
    """Apply the relaxation named ``relaxation`` (``"softmax"`` or ``"sigmoid"``) row-wise."""
    try:
        fn = RELAXATIONS[relaxation]
    except KeyError:
        raise ValueError(f"unknown relaxation {relaxation!r}; choose one of {', '.join(RELAXATIONS)}") from None
    return fn(alpha)


Weights = Union[torch.Tensor, Iterable[torch.Tensor]]


def zero_one_loss(weights: Weights, kind: str = "l2") -> torch.Tensor:
    """The zero-one loss of Fair DARTS (Eq. 5): ``-mean((w - 0.5)^2)`` (``kind="l2"``, the default)
    or ``-mean(|w - 0.5|)`` (``kind="l1"``) over all entries of ``weights`` (one tensor, or several,
    e.g. the normal and reduction matrices, pooled into one mean).

    It is lowest when every weight is 0 or 1, highest (0) when all are 0.5.
    """
    w = weights if isinstance(weights, torch.Tensor) else torch.cat([t.reshape(-1) for t in weights])
    d = w - 0.5
    if kind == "l2":
        return -(d * d).mean()
    if kind == "l1":
        return -d.abs().mean()
    raise ValueError(f"unknown zero-one loss kind {kind!r}; choose 'l2' or 'l1'")
