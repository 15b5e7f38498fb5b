"""What the book measures: cost of an evaluation network (FLOPs, parameters) and, in other sections,
properties of a search (dominant ops, skip share, the Hessian eigenvalue, the discretization gap).
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .genotype import Genotype
from .ops import PARAMETER_FREE_OPS

# ==========================================================================================================
# FLOPs and parameters of evaluation networks (compared with the published figures of the zoo)
# ==========================================================================================================
#
# How the Fair DARTS authors count (official_settings.md): thop on one 32x32 image, the CIFAR network in
# eval mode (so the auxiliary head does not run), BatchNorm excluded (it folds into the preceding conv at
# inference). thop counts multiply-accumulates of convs and linear layers, plus one op per output element
# of average pools; ReLU, max pool, identity, additions and concatenations count zero. We use exactly that
# and nothing tuned: the tests compare the count with the published figures, they do not fit it.


def _no_ops(module: nn.Module, inputs, output) -> None:
    """thop rule for BatchNorm: zero operations (BN is folded into the conv before it at inference)."""
    module.total_ops += torch.zeros(1, dtype=torch.float64)


def count_params(model: nn.Module, with_aux: bool = True) -> int:
    """Number of parameters of ``model``; ``with_aux=False`` leaves out the auxiliary head (which only
    exists for training and is thrown away afterwards)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if with_aux or not name.startswith("auxiliary_head."))


def count_flops(model: nn.Module, resolution: int = 32, in_channels: int = 3) -> int:
    """thop's count for one ``in_channels x resolution x resolution`` image, eval mode, BatchNorm excluded.

    thop adds ``total_ops``/``total_params`` buffers to every module and removes only some of them, so
    it counts on a copy: ``model`` comes back untouched (same buffers, same mode).
    """
    return _thop_flops(copy.deepcopy(model), resolution, in_channels)


def _thop_flops(scratch: nn.Module, resolution: int, in_channels: int) -> int:
    """thop's count on a model that is thrown away afterwards (thop leaves buffers in it)."""
    with warnings.catch_warnings():  # thop 0.1.1 imports distutils' deprecated LooseVersion
        warnings.simplefilter("ignore", DeprecationWarning)
        import thop
    x = torch.randn(1, in_channels, resolution, resolution)
    custom = {nn.BatchNorm1d: _no_ops, nn.BatchNorm2d: _no_ops}
    flops, _ = thop.profile(scratch.eval(), inputs=(x,), custom_ops=custom, verbose=False)
    return int(round(float(flops)))


def count_flops_torch(model: nn.Module, resolution: int = 32, in_channels: int = 3) -> int:
    """torch's own count (``torch.utils.flop_counter.FlopCounterMode``) for one image, eval mode: a cross-check
    of :func:`count_flops`, which uses thop (unmaintained). FlopCounterMode counts 2 FLOPs per multiply-add
    of convolutions and matrix products and nothing else (no pooling, BatchNorm or elementwise op); thop
    counts one per multiply-add, plus one per output element of an average pool. So on a network whose
    average pools are few, ``count_flops_torch / 2`` is a little below ``count_flops``."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, in_channels, resolution, resolution))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def profile_genotype(genotype: Union[Genotype, str], channels: int = 36, layers: int = 20, num_classes: int = 10,
                     resolution: int = 32, in_channels: int = 3) -> Dict[str, int]:
    """FLOPs and parameters of the CIFAR evaluation network of ``genotype`` (defaults: the paper's 36
    channels, 20 cells, 32x32 CIFAR-10 images).

    Returns ``{"flops", "params", "params_with_aux"}``: thop's count (BN excluded, one image), the
    parameters without the auxiliary head, and with it. A genotype may also be a zoo name.
    """
    from .network import NetworkCIFAR  # imported here: analysis's other sections do not need networks

    model = NetworkCIFAR(channels, num_classes, layers, auxiliary=True, genotype=genotype,
                         in_channels=in_channels)
    params, params_with_aux = count_params(model, with_aux=False), count_params(model, with_aux=True)
    return {"flops": _thop_flops(model, resolution, in_channels), "params": params,
            "params_with_aux": params_with_aux}


def compare_with_published(name: str, measured: Optional[Dict[str, int]] = None) -> dict:
    """Our counts for zoo cell ``name`` beside its published figures.

    Published parameter counts are mixed: some include the auxiliary head, some do not. ``params_match``
    says which of our two counts the published ``params_M`` is closer to (``"with_aux"`` or
    ``"without_aux"``). ``flops_rel_error`` is (measured - published) / published. Where the authors
    published a second FLOPs figure for the same cell (DARTS_V2), it is compared too (``..._alt``).
    Keys whose published figure is missing are ``None``.
    """
    from . import zoo

    pub = zoo.published(name)
    m = measured if measured is not None else profile_genotype(zoo.get(name))
    out = {
        "arch": name,
        "flops_M": m["flops"] / 1e6,
        "params_M": m["params"] / 1e6,
        "params_with_aux_M": m["params_with_aux"] / 1e6,
        "published_flops_M": pub.get("flops_M"),
        "published_params_M": pub.get("params_M"),
        "published_top1": pub.get("top1"),
        "flops_rel_error": None,
        "params_match": None,
        "params_rel_error": None,
        "note": pub.get("note"),
    }
    if pub.get("flops_M"):
        out["flops_rel_error"] = out["flops_M"] / pub["flops_M"] - 1.0
    if pub.get("flops_M_alt"):
        out["published_flops_M_alt"] = pub["flops_M_alt"]
        out["flops_rel_error_alt"] = out["flops_M"] / pub["flops_M_alt"] - 1.0
    if pub.get("params_M"):
        errors = {"without_aux": out["params_M"] / pub["params_M"] - 1.0,
                  "with_aux": out["params_with_aux_M"] / pub["params_M"] - 1.0}
        out["params_match"] = min(errors, key=lambda k: abs(errors[k]))
        out["params_rel_error"] = errors[out["params_match"]]
    return out


def zoo_table(names: Optional[Sequence[str]] = None) -> List[dict]:
    """:func:`compare_with_published` for every published cell (or ``names``), each row with a second FLOPs
    count by torch's ``FlopCounterMode`` (``torch_flops_M``: its count / 2, multiply-adds like thop's; see
    :func:`count_flops_torch`) and the normal cell's edge and skip counts. One network per cell, about two
    seconds each."""
    from . import zoo
    from .network import NetworkCIFAR

    rows = []
    for name in names or zoo.NAMES:
        genotype = zoo.get(name)
        model = NetworkCIFAR(36, 10, 20, auxiliary=True, genotype=genotype)
        measured = {"flops": count_flops(model), "params": count_params(model, with_aux=False),
                    "params_with_aux": count_params(model, with_aux=True)}
        rows.append({**compare_with_published(name, measured), "torch_flops_M": count_flops_torch(model) / 2e6,
                     "normal_edges": len(genotype.normal), "normal_skips": genotype.count("skip_connect")})
    return rows


# ==========================================================================================================
# (end of the FLOPs / parameters section)
# ==========================================================================================================


# ==========================================================================================================
# Retrained accuracies over seeds: mean, spread, and whether two cells differ by more than the seeds do
# ==========================================================================================================

T_975 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}
"""Student's t at 95% two-sided by degrees of freedom (the normal's is 1.960)."""


@dataclass(frozen=True)
class SeedStats:
    """One cell retrained with several training seeds: the final test accuracies (``seeds``: the training seed
    of each, where known), their mean and their sample standard deviation (``ddof=1``; 0 for one seed)."""

    label: str
    accs: Tuple[float, ...]
    seeds: Tuple[int, ...] = ()

    @property
    def n(self) -> int:
        return len(self.accs)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accs))

    @property
    def std(self) -> float:
        return float(np.std(self.accs, ddof=1)) if self.n > 1 else 0.0


def seed_stats(label: str, accs: Sequence[float], seeds: Optional[Sequence[int]] = None) -> SeedStats:
    """A :class:`SeedStats`, refusing an empty or non-finite list (or seeds that do not match it) in one line."""
    values = tuple(float(a) for a in accs)
    if not values or not all(np.isfinite(values)):
        raise ValueError(f"{label}: need at least one finite accuracy; got {list(accs)!r}")
    seeds = tuple(int(x) for x in seeds) if seeds is not None else ()
    if seeds and len(seeds) != len(values):
        raise ValueError(f"{label}: {len(values)} accuracies but {len(seeds)} seeds")
    return SeedStats(label, values, seeds)


def t_critical(dof: float) -> float:
    """Student's t at 95% two-sided for ``dof`` degrees of freedom (Welch's are fractional): :data:`T_975`,
    interpolated linearly in ``1 / dof`` between its entries (the usual rule for t tables); 1.960 beyond 120."""
    if dof < 1:
        return float("inf")
    if dof >= 120:
        return 1.960
    low = max(d for d in T_975 if d <= dof)
    high = min(d for d in T_975 if d >= dof)
    if low == high:
        return T_975[low]
    share = (1 / low - 1 / dof) / (1 / low - 1 / high)
    return T_975[low] + share * (T_975[high] - T_975[low])


def compare_seeds(a: SeedStats, b: SeedStats, paired: bool = False) -> Dict[str, float]:
    """Does the mean accuracy of ``a`` differ from that of ``b`` by more than their training seeds explain?
    ``difference`` (a - b), ``margin`` (the half-width of the 95% interval of the difference), ``dof`` and
    ``differs`` (|difference| > margin). Needs two seeds of each.

    Unpaired (default): Welch's t-test (unequal spreads; Welch-Satterthwaite degrees of freedom); with three
    seeds each, only differences of about three standard deviations count. ``paired``: the seeds are the
    same for both cells and each seed fixes something both runs share (here: the training images and the
    test images it draws), so the per-seed differences are tested (a paired t-test, ``n - 1`` degrees of
    freedom); what the seed moves for both cells alike cancels."""
    if a.n < 2 or b.n < 2:
        raise ValueError(f"comparing {a.label} with {b.label} needs two seeds of each; got {a.n} and {b.n}")
    if paired:
        if a.n != b.n or (a.seeds and b.seeds and a.seeds != b.seeds):
            raise ValueError(f"a paired comparison needs the same seeds for {a.label} and {b.label}; got "
                             f"{a.seeds or a.n} and {b.seeds or b.n}")
        d = np.subtract(a.accs, b.accs)
        margin = float(t_critical(a.n - 1) * np.std(d, ddof=1) / np.sqrt(a.n))
        return {"difference": float(d.mean()), "margin": margin, "dof": float(a.n - 1),
                "differs": bool(abs(d.mean()) > margin)}
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    se = float(np.sqrt(va + vb))
    dof = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1)) if se > 0 else float(a.n + b.n - 2)
    margin = t_critical(dof) * se
    difference = a.mean - b.mean
    return {"difference": difference, "margin": margin, "dof": dof, "differs": bool(abs(difference) > margin)}


# ==========================================================================================================
# What a search did: dominant ops per epoch, skip share, parameter-free share (the collapse, Fair DARTS Fig. 1)
# ==========================================================================================================
#
# An edge's *dominant* op is the one with the largest relaxed weight. In the DARTS space it is never
# ``none``: DARTS excludes it when it derives a cell, and it would dominate nothing in the discrete network.
# In NAS-Bench-201's space ``none`` counts (``keep_none``): its derive rule keeps it, dropping the edge.
# Fair DARTS's Figure 1 stacks, epoch by epoch, how many edges of the normal cell each op dominates.
# A history records the cells ``"normal"`` and ``"reduce"`` (DARTS) or ``"cell"`` (NAS-Bench-201):
# :func:`fairdarts_core.spaces.history_cells`.

CELL_KINDS = ("normal", "reduce", "cell")


def history_weights(history: Sequence[dict], cell: str = "normal") -> list:
    """The relaxed weights of ``cell`` recorded at every epoch of a search history (``record["normal_weight"]``,
    ``record["reduce_weight"]`` or, NAS-Bench-201, ``record["cell_weight"]``). Raises ``ValueError`` (not a
    ``KeyError``) for another cell name or a record without them."""
    if cell not in CELL_KINDS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELL_KINDS))}, got {cell!r}")
    key = f"{cell}_weight"
    out = []
    for i, record in enumerate(history):
        if not isinstance(record, dict) or key not in record:
            raise ValueError(f"history record {i + 1} has no {key!r} (a search history records its cells' weights)")
        out.append(record[key])
    return out


def keeps_none(cell: str) -> bool:
    """Whether the derive rule of ``cell``'s space can keep ``none`` (NAS-Bench-201's ``"cell"``)."""
    from .spaces import space_of_cell

    return space_of_cell(cell).keeps_none


def dominant_ops(weights, primitives: Sequence[str], keep_none: bool = False) -> List[str]:
    """The dominant op of every edge (row) of a relaxed-weight matrix; ties go to the earlier op.
    ``none`` is a candidate only with ``keep_none`` (the NAS-Bench-201 rule)."""
    W = np.asarray(weights, dtype=np.float64)
    candidates = [k for k, p in enumerate(primitives) if keep_none or p != "none"]
    if W.ndim != 2 or W.shape[1] != len(primitives) or not candidates:
        raise ValueError(f"weights must have shape (n_edges, {len(primitives)}), got {W.shape}")
    return [primitives[candidates[int(np.argmax(row[candidates]))]] for row in W]


def dominant_op_counts(history: Sequence[dict], primitives: Sequence[str], cell: str = "normal") -> Dict[str, List[int]]:
    """For every op (``none`` only where the space keeps it), how many edges of ``cell`` it dominates at
    each recorded epoch: ``{op: [count at epoch 1, count at epoch 2, ...]}`` (a stacked area plot's data)."""
    keep = keeps_none(cell)
    ops = [p for p in primitives if keep or p != "none"]
    counts = {op: [] for op in ops}
    for weights in history_weights(history, cell):
        winners = dominant_ops(weights, primitives, keep)
        for op in ops:
            counts[op].append(winners.count(op))
    return counts


def op_share(weights, primitives: Sequence[str], ops, keep_none: bool = False) -> float:
    """Fraction of the edges whose dominant op is one of ``ops``."""
    winners = dominant_ops(weights, primitives, keep_none)
    return sum(w in set(ops) for w in winners) / len(winners)


def skip_share(weights, primitives: Sequence[str], keep_none: bool = False) -> float:
    """Fraction of the edges that ``skip_connect`` dominates (the collapse drives it up)."""
    return op_share(weights, primitives, {"skip_connect"}, keep_none)


def parameter_free_share(weights, primitives: Sequence[str], keep_none: bool = False) -> float:
    """Fraction of the edges dominated by a parameter-free op (skip, max/avg pool; and ``none`` where it
    is kept)."""
    return op_share(weights, primitives, PARAMETER_FREE_OPS if keep_none else PARAMETER_FREE_OPS - {"none"},
                    keep_none)


def op_weight(weights, primitives: Sequence[str], op: str) -> np.ndarray:
    """The relaxed weight of ``op`` on every edge (a column of the matrix)."""
    if op not in primitives:
        raise ValueError(f"op {op!r} is not among the primitives {list(primitives)}")
    return np.asarray(weights, dtype=np.float64)[:, list(primitives).index(op)]


def mean_op_weights(weights, primitives: Sequence[str]) -> Dict[str, float]:
    """The mean relaxed weight of every op over the edges: which op is strongest *on average*."""
    W = np.asarray(weights, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != len(primitives):
        raise ValueError(f"weights must have shape (n_edges, {len(primitives)}), got {W.shape}")
    return {op: float(W[:, k].mean()) for k, op in enumerate(primitives)}


def history_series(history: Sequence[dict], primitives: Sequence[str], cell: str = "normal") -> Dict[str, List[float]]:
    """Per epoch: mean skip weight, skip share, parameter-free share, and the skip count of the derived cell."""
    from .spaces import skip_key

    keep, key = keeps_none(cell), skip_key(cell)
    out: Dict[str, List[float]] = {"epoch": [], "skip_weight": [], "skip_share": [], "parameter_free_share": [],
                                   "skip_count": []}
    for r, W in zip(history, history_weights(history, cell)):
        out["epoch"].append(r.get("epoch", len(out["epoch"]) + 1))
        out["skip_weight"].append(float(op_weight(W, primitives, "skip_connect").mean()) if "skip_connect" in primitives else 0.0)
        out["skip_share"].append(skip_share(W, primitives, keep))
        out["parameter_free_share"].append(parameter_free_share(W, primitives, keep))
        out["skip_count"].append(r.get(key))
    return out


# ==========================================================================================================
# A collapse indicator: the dominant eigenvalue of the Hessian of the validation loss w.r.t. alpha
# ==========================================================================================================
#
# RobustDARTS (Zela et al., ICLR 2020, Sec. 4) tracks the largest eigenvalue of the Hessian of the
# validation loss with respect to the architecture parameters: it grows as a search heads for a collapse (a
# sharp minimum in alpha, where discretising the weights costs much). It is computed without the Hessian:
# power iteration on Hessian-vector products H v = d/d alpha <d L / d alpha, v> (double backward).


def settling(history: Sequence[dict], cell: str = "normal", threshold: float = 0.85) -> Dict[str, List]:
    """When a DARTS-space search settles, epoch by epoch (chapter 5): ``undecided`` (the fraction of the
    cell's relaxed weights strictly between 1 - threshold and threshold), ``edges_changed`` and
    ``ops_changed`` (how many ``to <- from`` pairs, and how many ``(op, to, from)`` edges, of the cell
    derived at that epoch differ from the final one: the symmetric difference) and ``several_on`` (edges
    with more than one op at or above the threshold, among which the derive rule keeps the strongest).
    Also ``epoch``, and ``final_from``: the first epoch from which the derived cell is the final one."""
    if not history:
        raise ValueError("the history is empty")
    if cell not in ("normal", "reduce"):
        raise ValueError(f"cell must be 'normal' or 'reduce' (a DARTS-space search); got {cell!r}")
    weights = [np.asarray(W, dtype=np.float64) for W in history_weights(history, cell)]
    cells = []
    for i, record in enumerate(history):
        if "genotype" not in record:
            raise ValueError(f"history record {i + 1} has no 'genotype' (the cell derived at that epoch)")
        cells.append({tuple(e) for e in record["genotype"][cell]})
    final = cells[-1]
    final_pairs = {(to, src) for _, to, src in final}
    out: Dict[str, List] = {"epoch": [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]}
    out["undecided"] = [float(np.mean((W > 1 - threshold) & (W < threshold))) for W in weights]
    out["ops_changed"] = [len(c ^ final) for c in cells]
    out["edges_changed"] = [len({(to, src) for _, to, src in c} ^ final_pairs) for c in cells]
    out["several_on"] = [int(((W >= threshold).sum(axis=1) > 1).sum()) for W in weights]
    first = len(cells)
    while first > 0 and cells[first - 1] == final:
        first -= 1
    out["final_from"] = out["epoch"][first]
    return out


def hessian_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iterations: int = 20,
                       tol: float = 1e-4, seed: int = 0) -> float:
    """The dominant eigenvalue (largest in magnitude, with its sign) of the Hessian of the cross-entropy
    of ``model(x)`` against ``y`` with respect to ``model.arch_parameters()``.

    Power iteration from a random start (its own generator, ``seed``: the global random stream is not
    touched) for at most ``iterations`` Hessian-vector products, stopped when the Rayleigh quotient
    ``v . H v`` changes by less than ``tol`` relative. One forward pass and one backward pass with its graph
    kept, then one double backward per iteration: about ``2 + iterations`` times a backward pass.
    The model is used in its current mode (a search measures it in training mode, as its architecture step
    sees the loss); its buffers (BN running statistics) are restored afterwards."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1; got {iterations!r}")
    params = list(model.arch_parameters())
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        loss = nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        gen = torch.Generator().manual_seed(seed)
        v = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
        v = _normalized(v)
        eigenvalue = None
        for _ in range(iterations):
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
            quotient = float(sum((h * u).sum() for h, u in zip(hv, v)))
            if not any(bool(h.any()) for h in hv):
                return 0.0  # H v = 0: alpha does not reach the loss (or v lies in H's null space)
            v = _normalized(list(hv))
            converged = eigenvalue is not None and abs(quotient - eigenvalue) <= tol * abs(quotient)
            eigenvalue = quotient
            if converged:
                break
        return eigenvalue
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


def _normalized(vectors: List[torch.Tensor]) -> List[torch.Tensor]:
    norm = torch.sqrt(sum((u * u).sum() for u in vectors))
    return [u / norm for u in vectors]


# ==========================================================================================================
# The discretization gap (Fair DARTS, Sec. 4, Eq. 5): what deriving the cell costs the trained supernet
# ==========================================================================================================
#
# After a search the derived cell keeps one op per kept edge and drops the rest: the network changes. The
# gap compares, on the same held-out images and with the same trained network weights, the supernet with its
# relaxed weights and the same supernet with 0/1 weights: no retraining. Two steps hide in "discretizing":
# *rounding* every weight to 0 or 1 (sigmoid: 1 at or above the threshold; softmax: the strongest op of every
# edge), which the zero-one loss (Eq. 5) makes harmless by driving every sigmoid towards 0 or 1, and the
# derive rule's limits (one op per edge, two inputs per node in the DARTS space), which no loss on the
# weights addresses. ``discretization_gap`` measures both.

Batches = Sequence[Tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DiscretizationGap:
    """The supernet on the same images, mean cross-entropy and accuracy: with its relaxed weights
    (``relaxed_*``), with its weights rounded to 0/1 (``rounded_*``, :func:`rounded_weights`), and with the
    derived cell's 0/1 weights (``discrete_*``); ``finetuned_*`` after a short training of the derived cell's
    network weights (None when not asked for). ``distance_from_binary``: the mean of ``min(w, 1 - w)`` over
    every relaxed weight (0: every weight is 0 or 1; 0.5: all at 0.5)."""

    relaxed_loss: float
    relaxed_acc: float
    discrete_loss: float
    discrete_acc: float
    distance_from_binary: float
    rounded_loss: Optional[float] = None
    rounded_acc: Optional[float] = None
    finetuned_loss: Optional[float] = None
    finetuned_acc: Optional[float] = None

    @property
    def acc_gap(self) -> float:
        """Accuracy lost by discretizing: ``relaxed_acc - discrete_acc``."""
        return self.relaxed_acc - self.discrete_acc

    @property
    def rounding_gap(self) -> Optional[float]:
        """Accuracy lost by rounding alone: ``relaxed_acc - rounded_acc``."""
        return None if self.rounded_acc is None else self.relaxed_acc - self.rounded_acc

    @property
    def loss_gap(self) -> float:
        """Loss added by discretizing: ``discrete_loss - relaxed_loss``."""
        return self.discrete_loss - self.relaxed_loss

    def to_dict(self) -> Dict[str, Optional[float]]:
        return {**dataclasses.asdict(self), "acc_gap": self.acc_gap, "rounding_gap": self.rounding_gap,
                "loss_gap": self.loss_gap}


def distance_from_binary(weights) -> float:
    """Mean of ``min(w, 1 - w)`` over every entry of ``weights`` (one matrix or several, e.g. the normal and
    reduction cells): how far relaxed weights are from a 0/1 choice."""
    mats = [weights] if isinstance(weights, (np.ndarray, torch.Tensor)) else list(weights)
    w = np.concatenate([np.asarray(torch.as_tensor(m).detach().cpu(), dtype=np.float64).reshape(-1) for m in mats])
    return float(np.minimum(w, 1.0 - w).mean())


def distance_from_cell(relaxed, discrete) -> float:
    """Mean of ``|w - d|`` over every entry: how far relaxed weights ``w`` are from the 0/1 weights ``d`` of
    the cell derived from them (matrices, or sequences of matrices, of the same shapes). Unlike
    :func:`distance_from_binary` it sees that softmax weights near ``1 / n_ops`` are far from a choice."""
    pairs = list(zip(*(([m] if isinstance(m, (np.ndarray, torch.Tensor)) else list(m)) for m in (relaxed, discrete))))
    if not pairs:
        raise ValueError("no weights to compare")
    w, d = (np.concatenate([np.asarray(torch.as_tensor(m).detach().cpu(), dtype=np.float64).ravel() for m in ms])
            for ms in zip(*pairs))
    if w.shape != d.shape:
        raise ValueError(f"relaxed and discrete weights differ in size: {w.size} and {d.size} entries")
    return float(np.abs(w - d).mean())


def rounded_weights(relaxed: Sequence[torch.Tensor], relaxation: str, threshold: float = 0.85) -> Tuple[torch.Tensor, ...]:
    """Relaxed weights rounded to 0/1 edge by edge, with no limit on how many ops an edge or a node keeps:
    sigmoid, every op whose weight reaches ``threshold``; softmax, the strongest op of every edge (its row
    sums to 1, so no fixed threshold fits every edge). The first step of discretizing, the one the
    zero-one loss makes harmless; a derive rule then keeps fewer (:func:`discrete_weights`)."""
    if relaxation == "sigmoid":
        return tuple((w >= threshold).to(w.dtype) for w in relaxed)
    if relaxation == "softmax":
        return tuple(nn.functional.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype) for w in relaxed)
    raise ValueError(f"unknown relaxation {relaxation!r}; choose sigmoid or softmax")


def discrete_weights(model: nn.Module, genotype) -> Tuple[torch.Tensor, ...]:
    """The derived cell(s) ``genotype`` as 0/1 weight matrices in ``model``'s layout (its ``forward``'s
    ``weights``): 1 for every op the cell keeps, 0 for every other."""
    from .spaces import space_of

    reference = model.relaxed_weights()[0]
    mats = space_of(genotype).discrete_weights(genotype, model.config.primitives)
    return tuple(torch.as_tensor(m, dtype=reference.dtype, device=reference.device) for m in mats)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, weights: Optional[Sequence[torch.Tensor]] = None) -> Tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``batches`` in eval mode (BN running statistics),
    with its relaxed weights or, given, ``weights`` (``model(x, weights)``). The mode is restored."""
    was_training = model.training
    model.eval()
    loss, correct, n = 0.0, 0, 0
    try:
        for x, y in batches:
            logits = model(x) if weights is None else model(x, weights)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("no images to evaluate on: batches is empty")
    return loss / n, correct / n


def finetune_discrete(model: nn.Module, weights: Sequence[torch.Tensor], batches: Batches, lr: float = 0.01,
                      momentum: float = 0.9, weight_decay: float = 3e-4) -> nn.Module:
    """A copy of ``model`` whose network weights are trained for one pass over ``batches`` (one SGD step
    per batch, training mode, no noise on skip) with the edge weights fixed to ``weights``; ``model`` is
    left as it was."""
    tuned = copy.deepcopy(model)
    tuned.skip_noise_std = 0.0
    tuned.train()
    opt = torch.optim.SGD(tuned.network_parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(tuned(x, weights), y).backward()
        opt.step()
    return tuned


def discretization_gap(model: nn.Module, batches: Batches, genotype=None, threshold: float = 0.85,
                       finetune_batches: Optional[Batches] = None, finetune_lr: float = 0.01) -> DiscretizationGap:
    """The discretization gap of a trained supernet (Fair DARTS, Sec. 4, Eq. 5) on the held-out ``batches``
    (a list of ``(images, labels)``): (a) the supernet with its relaxed weights; (b) the same supernet with
    its weights rounded to 0/1 at ``threshold`` (:func:`rounded_weights`) and (b') with ``genotype``'s 0/1
    weights (default: ``model.genotype()``, the relaxation's own derive rule), no retraining; and, when
    ``finetune_batches`` are given, (c) (b') after one pass of SGD over them (:func:`finetune_discrete`).
    Every measurement is in eval mode; ``model`` is not changed."""
    batches = list(batches)
    genotype = model.genotype() if genotype is None else genotype
    weights = discrete_weights(model, genotype)
    relaxed = [w.detach() for w in model.relaxed_weights()]
    relaxed_loss, relaxed_acc = evaluate(model, batches)
    rounded_loss, rounded_acc = evaluate(model, batches, rounded_weights(relaxed, model.config.relaxation, threshold))
    discrete_loss, discrete_acc = evaluate(model, batches, weights)
    tuned_loss = tuned_acc = None
    if finetune_batches is not None:
        tuned = finetune_discrete(model, weights, finetune_batches, lr=finetune_lr)
        tuned_loss, tuned_acc = evaluate(tuned, batches, weights)
    return DiscretizationGap(relaxed_loss, relaxed_acc, discrete_loss, discrete_acc, distance_from_binary(relaxed),
                             rounded_loss, rounded_acc, tuned_loss, tuned_acc)


def gap_of_run(run_dir, images: int = 500, finetune_steps: int = 0, method: Optional[str] = None,
               threshold: Optional[float] = None, device: str = "cpu") -> Tuple[DiscretizationGap, object]:
    """The discretization gap of a search run's latest checkpoint (``RUN_DIR/checkpoint.pt``) on ``images``
    held-out test images of its data set, with the cell its derive rule (or ``method`` / ``threshold``)
    gives; ``finetune_steps`` > 0 adds (c), that many SGD steps (at the search's initial learning rate) on
    batches of the run's weights split.
    Returns the gap and the genotype it measured."""
    from .data import Augment, held_out_batches, search_loaders
    from .runs import load_search_run
    from .spaces import get_space

    run = load_search_run(run_dir)
    cfg = dataclasses.replace(run.config, **{k: v for k, v in (("parse_method", method), ("threshold", threshold))
                                             if v is not None})
    model = run.supernet(device)
    space = get_space(cfg.space)
    genotype = space.derive([w.detach().cpu().numpy() for w in model.relaxed_weights()], cfg, space.derive_method(cfg))
    batches = held_out_batches(cfg.dataset, images, cfg.data_dir, cfg.image_size, seed=cfg.seed, device=device)
    tune = None
    if finetune_steps:
        train, _, _ = search_loaders(cfg.dataset, cfg.data_dir, cfg.subset, cfg.train_portion, cfg.image_size,
                                     cfg.batch_size, cfg.seed, Augment(crop_pad=cfg.crop_pad, flip=cfg.flip), device)
        tune = list(train.epoch(0, finetune_steps))
    return discretization_gap(model, batches, genotype, cfg.threshold, tune, finetune_lr=cfg.lr), genotype
