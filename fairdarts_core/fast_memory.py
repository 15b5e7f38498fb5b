"""The memory options of the fast supernet path: recomputing whole cells, rebuilding cheap activations.

Neither changes a single bit of the results: the same kernels run on the same inputs
(``tests/test_fast.py`` checks three whole search steps for bitwise equality).

* **Recomputation** (:func:`recompute_in_backward`): the mixed edges of a cell run under
  ``torch.utils.checkpoint`` (non-reentrant), so autograd keeps only the cell's two preprocessed inputs
  and recomputes the cell's activations in the backward pass, one cell at a time. The body is told whether
  it runs for the first time, so that the recomputation uses the same batch statistics without updating
  the BN running statistics a second time; the skip noise is an input (drawn before), so it is the same.
* **Rebuilding cheap activations** (:class:`Rebuilds`): under
  :func:`torch.autograd.graph.saved_tensors_hooks` autograd stores a recipe instead of a tensor for
  activations that are cheap to compute again from tensors it keeps anyway (a 1x1 convolution's output
  from the convolution's input, which its weight gradient needs). The backward pass rebuilds each once.
  (The hooks do not support double backward; nothing here uses it: the second-order step takes finite
  differences.)

Both hold their state in objects made for one call of one cell, never in module globals.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional

import torch
from torch.utils.checkpoint import checkpoint


class _Rebuild:
    """Stands in for an activation autograd would keep for the backward pass: how to compute it again from
    tensors autograd keeps anyway. Built once, on first use in the backward pass, then shared by every node
    that saved it."""

    __slots__ = ("ref", "make", "value")

    def __init__(self, t: torch.Tensor, make: Callable[[], torch.Tensor]):
        self.ref, self.make, self.value = weakref.ref(t), make, None

    def get(self) -> torch.Tensor:
        if self.value is None:
            self.value = self.make()
        return self.value


class Rebuilds:
    """The rebuild recipes of one cell call: ``id(activation) -> recipe`` while the cell's forward runs.

    ``with rebuilds.hooks(): ...`` runs the forward under the saved-tensor hooks; :meth:`mark` registers an
    activation that the hooks may replace by its recipe. Leaving the block forgets the lookup table (the
    recipes themselves live on in what autograd saved, until its backward pass)."""

    def __init__(self):
        self._recipes: Dict[int, _Rebuild] = {}

    def recipe(self, x: torch.Tensor) -> Optional[_Rebuild]:
        r = self._recipes.get(id(x))
        return r if r is not None and r.ref() is x else None  # (the weakref rules out a reused id)

    def mark(self, y: torch.Tensor, fn: Callable[..., torch.Tensor], *inputs) -> torch.Tensor:
        """Mark ``y = fn(*inputs)`` (just computed) as an activation autograd may drop and rebuild. ``fn``
        must compute ``y`` bit for bit again. An input that is itself rebuildable is referenced through its
        recipe, so the recipe does not keep that input alive; other inputs are kept (autograd keeps them
        anyway)."""
        args = [self.recipe(x) or x if isinstance(x, torch.Tensor) else x for x in inputs]
        self._recipes[id(y)] = _Rebuild(y, lambda: fn(*[a.get() if isinstance(a, _Rebuild) else a for a in args]))
        return y

    def pack(self, t: torch.Tensor):
        r = self.recipe(t)
        if r is not None:
            return r
        # Detached: an op's own output, returned as is, would hold its graph node, which holds it (a reference
        # cycle that only a backward pass breaks). First-order gradients never need the saved tensor's history.
        return t.detach()

    @staticmethod
    def unpack(x):
        return x.get() if isinstance(x, _Rebuild) else x

    @contextmanager
    def hooks(self) -> Iterator["Rebuilds"]:
        try:
            with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
                yield self
        finally:
            self._recipes.clear()


def recompute_in_backward(body: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """``body(True, *inputs)`` under a non-reentrant checkpoint: autograd keeps only ``inputs`` and calls
    ``body(False, *inputs)`` again in the backward pass (the first argument says whether this is the first
    call, which alone may update BN running statistics). No RNG state is saved: the cell draws nothing."""
    calls = 0

    def run(*args):
        nonlocal calls
        first = calls == 0
        calls += 1
        return body(first, *args)

    return checkpoint(run, *inputs, use_reentrant=False, preserve_rng_state=False)
