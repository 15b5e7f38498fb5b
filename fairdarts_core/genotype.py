"""Discrete cells: the ``Genotype`` value, the three parse rules, isolated-node pruning; reading relaxed-weight
matrices from ``.npy`` files (their op set, their default parse rule).

A cell has two inputs (nodes 0 and 1: the outputs of the two previous cells) and ``steps`` intermediate
nodes (2 .. steps+1, 4 of them in DARTS). An edge is ``(op, to, from)``: node ``to`` receives
``op(node from)``; a node is the sum of its inputs, the cell's output concatenates its *live* nodes.

The supernet has one mixed edge from every earlier node to every intermediate node: 2+3+4+5 = 14
edges, ordered as in DARTS (node 2 from 0, 1; node 3 from 0, 1, 2; ...). A (14, n_ops) matrix of relaxed
weights in that row order is what the parse rules read.
"""
from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .ops import FAIR_DARTS_OPS, OPS

Edge = Tuple[str, int, int]
"""``(op_name, to_node, from_node)``."""

STEPS = 4
"""Intermediate nodes of a DARTS cell."""

MAX_STEPS = 15
"""The largest cell a :class:`Genotype` accepts (DARTS has 4 intermediate nodes; 15 is the largest cell
:func:`steps_for` recognises, 135 edges). A bound, so that a hand-edited ``"steps": 100000000`` is refused
at once instead of making every loop over the nodes run for hours."""

PARSE_METHODS = ("darts", "threshold_sparse", "threshold_edge")

_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxlist = 3, 40, 40, 6
"""repr for user input inside error messages: bounded in length and depth, so a message stays one short line
whatever was given (a deeply nested or huge entry would otherwise make a huge message, or recurse)."""


def edge_index(steps: int = STEPS) -> List[Tuple[int, int]]:
    """``(to, from)`` of each row of a relaxed-weight matrix, in DARTS order."""
    return [(to, src) for to in range(2, steps + 2) for src in range(to)]


def num_edges(steps: int = STEPS) -> int:
    return len(edge_index(steps))


def steps_for(n_edges: int) -> int:
    """The number of intermediate nodes of a cell with ``n_edges`` mixed edges (14 -> 4)."""
    for steps in range(1, MAX_STEPS + 1):
        if num_edges(steps) == n_edges:
            return steps
    raise ValueError(f"{n_edges} rows is not a cell's edge count (2, 5, 9, 14, 20, ..., {num_edges(MAX_STEPS)})")


def parse_cell(weights, primitives: Sequence[str], method: str = "threshold_sparse",
               threshold: float = 0.85) -> List[Edge]:
    """Derive one discrete cell from its relaxed weights.

    ``weights``: (14, len(primitives)) array of sigmoid or softmax values, rows in DARTS edge order.
    Methods (``none`` is never chosen as an op, in any method):

    - ``"darts"`` (DARTS, Sec. 2.4): for each node keep the 2 incoming edges whose strongest op is
      strongest, and on each its strongest op. Every node gets exactly 2 inputs.
    - ``"threshold_sparse"`` (Fair DARTS default, Sec. 4.3): like ``darts``, but a kept edge's op is kept
      only if its weight is ``>= threshold``; a node may end with 0, 1 or 2 inputs.
    - ``"threshold_edge"``: every incoming edge is considered; on each, its two strongest ops are kept
      when their weight is ``>= threshold`` (multi-hot edges).

    Ties are broken towards the lower index (earlier edge, earlier op in ``primitives``). Entries come
    out node by node; within a node, strongest edge first. Isolated nodes are *not* pruned here (see
    :func:`prune_isolated`), so a drawing can show them.
    """
    if method not in PARSE_METHODS:
        raise ValueError(f"unknown parse method {method!r}; choose one of {', '.join(PARSE_METHODS)}")
    primitives = list(primitives)
    W = np.asarray(weights, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != len(primitives):
        raise ValueError(f"weights must have shape (14, {len(primitives)}) for {len(primitives)} ops; got {tuple(W.shape)}")
    if not np.isfinite(W).all():
        raise ValueError("weights contain NaN or infinite values (did the search diverge?)")
    steps = steps_for(W.shape[0])
    # Candidate ops (never 'none'), and each row's strength restricted to them.
    candidates = [k for k, p in enumerate(primitives) if p != "none"]
    cand = W[:, candidates]

    def best_op(row: int) -> int:
        return candidates[int(np.argmax(cand[row]))]  # argmax: first maximum wins a tie

    cell: List[Edge] = []
    start = 0
    for to in range(2, steps + 2):
        rows = range(start, start + to)  # one row per source node 0 .. to-1
        if method == "threshold_edge":
            for src, row in enumerate(rows):
                order = sorted(candidates, key=lambda k: -W[row, k])[:2]  # stable: ties -> earlier op
                cell += [(primitives[k], to, src) for k in order if W[row, k] >= threshold]
        else:
            ranked = sorted(range(to), key=lambda src: -cand[start + src].max())[:2]
            for src in ranked:
                k = best_op(start + src)
                if method == "darts" or W[start + src, k] >= threshold:
                    cell.append((primitives[k], to, src))
        start += to
    return cell


def live_nodes(cell: Iterable[Edge], steps: int = STEPS) -> List[int]:
    """Intermediate nodes that receive at least one input from a cell input or from a live node."""
    live = {0, 1}
    edges = list(cell)
    for node in range(2, steps + 2):  # edges only go forward, so one pass in node order is enough
        if any(to == node and src in live for _, to, src in edges):
            live.add(node)
    return sorted(n for n in live if n >= 2)


def prune_isolated(cell: Iterable[Edge], steps: int = STEPS) -> List[Edge]:
    """Drop the edges that leave or enter an isolated node (recursively: a node fed only by isolated
    nodes is isolated too). What remains is what the evaluation network computes."""
    alive = set(live_nodes(cell, steps)) | {0, 1}
    return [(op, to, src) for op, to, src in cell if to in alive and src in alive]


def validate_cell(cell: Iterable[Edge], steps: int = STEPS, name: str = "cell") -> List[Edge]:
    """Check every edge; return the edges as tuples. Raises ``ValueError`` naming the first problem."""
    out: List[Edge] = []
    seen = set()  # one pass, however many edges a file lists
    for entry in cell:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise ValueError(f"{name}: malformed edge {_short.repr(entry)}; expected (op, to_node, from_node)")
        op, to, src = entry
        if not isinstance(op, str) or op not in OPS:
            raise ValueError(f"{name}: unknown op {_short.repr(op)} in edge {_short.repr(tuple(entry))}; "
                             f"known ops: {', '.join(sorted(OPS))}")
        if op == "none":
            raise ValueError(f"{name}: the 'none' op cannot be an edge of a discrete cell: {tuple(entry)}")
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (to, src)):
            raise ValueError(f"{name}: node indices must be integers in edge {_short.repr(tuple(entry))}")
        if not 2 <= to <= steps + 1:
            raise ValueError(f"{name}: bad node index {to} in edge {tuple(entry)}; intermediate nodes are 2..{steps + 1}")
        if src < 0:
            raise ValueError(f"{name}: bad node index {src} in edge {tuple(entry)}")
        if src >= to:
            what = "itself" if src == to else "a later node"
            raise ValueError(f"{name}: node {to} is fed by {what} ({src}) in edge {tuple(entry)}")
        edge = (op, int(to), int(src))
        if edge in seen:
            raise ValueError(f"{name}: duplicate edge {edge}")
        seen.add(edge)
        out.append(edge)
    return out


def random_cell(rng: np.random.Generator, steps: int = STEPS,
                ops: Sequence[str] = FAIR_DARTS_OPS) -> List[Edge]:
    """One cell drawn as DARTS draws its random baseline (Liu et al. 2019, Sec. 3.3): every intermediate
    node takes two distinct earlier nodes as inputs, each through an op drawn uniformly from ``ops`` (the
    7 non-zero DARTS ops)."""
    cell: List[Edge] = []
    for to in range(2, steps + 2):
        for src in sorted(rng.choice(to, size=2, replace=False).tolist()):
            cell.append((str(ops[int(rng.integers(len(ops)))]), to, int(src)))
    return cell


def random_genotype(seed: int, steps: int = STEPS) -> "Genotype":
    """A random DARTS-space architecture (normal and reduction cell from one seeded generator): the
    random-search baseline that DARTS and Fair DARTS compare with (``--arch random:SEED``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"a random cell's seed must be an integer >= 0; got {_short.repr(seed)}")
    rng = np.random.default_rng(seed)
    normal = random_cell(rng, steps)
    return Genotype(tuple(normal), tuple(random_cell(rng, steps)), steps)


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture: the edges of the normal cell and of the reduction cell.

    Isolated nodes may appear in the edges (the authors' parse leaves them); the networks and drawings
    use :meth:`concat` / :func:`prune_isolated` to drop them.
    """

    normal: Tuple[Edge, ...]
    reduce: Tuple[Edge, ...]
    steps: int = STEPS

    def __post_init__(self):
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"genotype steps must be a positive integer up to {MAX_STEPS} (intermediate nodes "
                             f"per cell; DARTS has {STEPS}), got {_short.repr(self.steps)}")
        object.__setattr__(self, "normal", tuple(validate_cell(self.normal, self.steps, "normal cell")))
        object.__setattr__(self, "reduce", tuple(validate_cell(self.reduce, self.steps, "reduction cell")))

    def cell(self, kind: str) -> Tuple[Edge, ...]:
        if kind not in ("normal", "reduce"):
            raise ValueError(f"cell kind must be 'normal' or 'reduce', got {kind!r}")
        return getattr(self, kind)

    def concat(self, kind: str) -> List[int]:
        """The live intermediate nodes of a cell: what its output concatenates."""
        return live_nodes(self.cell(kind), self.steps)

    def count(self, op: str, kind: str = "normal") -> int:
        """How many live edges of a cell use ``op`` (e.g. the skip count of the normal cell)."""
        return sum(1 for name, _, _ in prune_isolated(self.cell(kind), self.steps) if name == op)

    @classmethod
    def from_pairs(cls, normal: Sequence[Tuple[str, int]], reduce: Sequence[Tuple[str, int]],
                   steps: int = STEPS) -> "Genotype":
        """From the DARTS style: two ``(op, from)`` entries per intermediate node, nodes 2.. in order."""
        def convert(pairs, name):
            pairs = list(pairs)
            for p in pairs:
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    raise ValueError(f"{name}: malformed DARTS pair {p!r}; expected (op, from_node)")
            if len(pairs) != 2 * steps:
                raise ValueError(f"{name}: DARTS pairs need {2 * steps} (op, from) entries, got {len(pairs)}")
            return [(op, 2 + i // 2, src) for i, (op, src) in enumerate(pairs)]
        return cls(tuple(convert(normal, "normal cell")), tuple(convert(reduce, "reduction cell")), steps)

    @classmethod
    def from_weights(cls, normal_weights, reduce_weights, primitives: Sequence[str],
                     method: str = "threshold_sparse", threshold: float = 0.85) -> "Genotype":
        """Parse both cells from their relaxed-weight matrices (see :func:`parse_cell`)."""
        normal = parse_cell(normal_weights, primitives, method, threshold)
        reduce = parse_cell(reduce_weights, primitives, method, threshold)
        return cls(tuple(normal), tuple(reduce), steps_for(np.asarray(normal_weights).shape[0]))

    # --- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"normal": [list(e) for e in self.normal], "reduce": [list(e) for e in self.reduce]}
        if self.steps != STEPS:
            d["steps"] = self.steps
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Genotype":
        if not isinstance(d, dict) or "normal" not in d or "reduce" not in d:
            raise ValueError("a genotype needs the keys 'normal' and 'reduce'")
        unknown = set(d) - {"normal", "reduce", "steps"}
        if unknown:
            raise ValueError(f"unknown genotype keys: {', '.join(sorted(unknown))}")
        for kind in ("normal", "reduce"):
            if not isinstance(d[kind], list):
                raise ValueError(f"genotype '{kind}' must be a list of [op, to, from] edges")
        return cls(tuple(tuple(e) if isinstance(e, list) else e for e in d["normal"]),
                   tuple(tuple(e) if isinstance(e, list) else e for e in d["reduce"]),
                   d.get("steps", STEPS))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        try:
            d = json.loads(text)
        except RecursionError:  # json recurses once per nesting level: 100000 nested lists exhaust the stack
            raise ValueError("genotype JSON is nested too deeply to be a genotype "
                             "({\"normal\": [[op, to, from], ...], \"reduce\": [...]})") from None
        except ValueError as e:  # JSONDecodeError, or an integer too long to convert
            raise ValueError(f"genotype is not valid JSON: {_first_line(e)}") from None
        return cls.from_dict(d)

    def save(self, path: Union[str, Path]) -> None:
        """Write the genotype as JSON, atomically: a failed write (disk full, a kill) keeps the previous file."""
        from .runs import atomic_write_text  # imported here: runs imports this module

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Genotype":
        """A genotype from a JSON file (as written by :meth:`save`); every problem is one ``ValueError`` line
        that names the file."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"genotype file not found: {p}")
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            raise ValueError(f"{p} is not a text file (a genotype file is JSON)") from None
        try:
            return cls.from_json(text)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None

    # --- text ---------------------------------------------------------------------------------------
    def describe(self) -> str:
        """Human-readable cells: each node's inputs, the live nodes, the skip count (several lines)."""
        lines = ["(nodes 0, 1: the cell inputs c_{k-2}, c_{k-1}; 2..: intermediate nodes)"]
        for kind, label in (("normal", "normal cell"), ("reduce", "reduction cell")):
            edges = self.cell(kind)
            live = self.concat(kind)
            lines.append(f"{label}: {len(prune_isolated(edges, self.steps))} live edges, live nodes {live}, "
                         f"{self.count('skip_connect', kind)} skip_connect")
            for node in range(2, self.steps + 2):
                inputs = ", ".join(f"{op}({src})" + ("" if src < 2 or src in live else " [from an isolated node: dropped]")
                                   for op, to, src in edges if to == node) or "nothing"
                lines.append(f"  node {node} <- {inputs}" + ("" if node in live else "   [isolated: dropped]"))
        return "\n".join(lines)

    def cells_without_live_node(self) -> List[str]:
        """The cell kinds (``"normal"``, ``"reduce"``) with no live intermediate node: such a cell outputs
        nothing, and the evaluation network refuses it."""
        return [kind for kind in ("normal", "reduce") if not self.concat(kind)]


def _first_line(e: BaseException) -> str:
    """Errors from numpy and json can span lines; our messages are one line."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ==========================================================================================================
# Relaxed-weight matrices on disk (what `fairdarts parse` reads): loading, their op set, their parse rule
# ==========================================================================================================

def load_weight_matrix(path: Union[str, Path]) -> np.ndarray:
    """A relaxed-weight matrix from a ``.npy`` file: a finite, real 2-D array with every entry in [0, 1]
    (relaxed weights are softmax or sigmoid outputs), as float64. Raises ``ValueError`` (one line naming
    the file) for anything else. Never unpickles: a ``.npy`` from elsewhere could run code."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weight file not found: {path}")
    try:
        W = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a .npy array ({_first_line(e)})") from None
    if not isinstance(W, np.ndarray):
        raise ValueError(f"{path} is an .npz archive; save each matrix with np.save(...) as its own .npy")
    if np.iscomplexobj(W):
        raise ValueError(f"{path} holds complex numbers; relaxed weights are real, in [0, 1]")
    if W.ndim != 2 or not np.issubdtype(W.dtype, np.number):
        raise ValueError(f"{path} must hold a 2-D numeric (14, n_ops) matrix; got shape {W.shape}, dtype {W.dtype}")
    if not np.isfinite(W).all():
        raise ValueError(f"{path} holds NaN or infinite values")
    W = W.astype(np.float64)
    if W.size and (W.min() < 0.0 or W.max() > 1.0):
        raise ValueError(f"{path} holds values in [{W.min():.4g}, {W.max():.4g}]; relaxed weights (softmax or "
                         f"sigmoid outputs) are in [0, 1] (architecture parameters alpha must be relaxed first)")
    return W


def read_parse_hints(run_dir: Union[str, Path]) -> Dict[str, Any]:
    """``primitives``, ``relaxation`` and ``space`` from a search run directory's ``config.json``, where the search wrote
    one (at the top level or one level down, so a nested ``{"supernet": {...}}`` works too); ``{}`` without
    a config.json. Only these two hints are read: a directory holding just the two weight matrices is enough
    to parse."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a config") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON ({_first_line(e)})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a JSON object")
    found: Dict[str, Any] = {}
    for d in [cfg] + [v for v in cfg.values() if isinstance(v, dict)]:
        for key in ("primitives", "relaxation", "space"):
            if key in d and key not in found:
                found[key] = d[key]
    return found


def resolve_op_set(name: Optional[str], hint: Any, n_cols: int) -> Tuple[str, ...]:
    """The op set of a weight matrix's columns: the op set ``name`` (a key of ``ops.OP_SETS``) if given,
    else ``hint`` (a run's recorded primitives: an op-set name or a list of op names), else the column
    count (7: fair_darts, 8: darts). Raises ``ValueError`` when it cannot tell or the count disagrees."""
    from .ops import OP_SETS, check_op_names

    if name is not None:
        if name not in OP_SETS:
            raise ValueError(f"unknown op set {_short.repr(name)}; choose one of {', '.join(OP_SETS)}")
        prims, source = tuple(OP_SETS[name]), f"--primitives {name}"
    elif hint is not None:
        source = "config.json"
        if isinstance(hint, str) and hint in OP_SETS:
            prims = tuple(OP_SETS[hint])
        elif isinstance(hint, list) and all(isinstance(p, str) for p in hint):
            check_op_names(hint)
            prims = tuple(hint)
        else:
            raise ValueError(f"config.json: 'primitives' must be a list of op names or one of {', '.join(OP_SETS)}")
    else:
        by_count = {len(ops): tuple(ops) for ops in OP_SETS.values()}  # 7 -> fair_darts, 8 -> darts
        if n_cols not in by_count:
            counts = ", ".join(f"{len(ops)}: {n}" for n, ops in OP_SETS.items())
            raise ValueError(f"cannot tell the op set of a matrix with {n_cols} columns ({counts}); pass --primitives")
        prims, source = by_count[n_cols], f"{n_cols} columns"
    if len(prims) != n_cols:
        raise ValueError(f"the weight matrices have {n_cols} columns but the op set ({source}) has {len(prims)} ops")
    return prims


def default_parse_method(relaxation: Optional[str], normal, reduce) -> str:
    """The parse rule the weights' authors use: the relaxation's own (sigmoid: ``threshold_sparse``,
    softmax: ``darts``) when the relaxation is known, else read from the weights: softmax rows sum to 1,
    sigmoid rows practically never do."""
    from .supernet import DEFAULT_PARSE  # imported here: the supernet imports this module

    if isinstance(relaxation, str) and relaxation in DEFAULT_PARSE:
        return DEFAULT_PARSE[relaxation]
    rows_sum_to_one = all(np.allclose(np.asarray(W).sum(axis=1), 1.0, atol=1e-3) for W in (normal, reduce))
    return DEFAULT_PARSE["softmax" if rows_sum_to_one else "sigmoid"]
