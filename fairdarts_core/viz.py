"""Drawings: a discrete cell as a graph (graphviz), a relaxed-weight matrix as a heat map (matplotlib).

A cell drawing shows the two inputs ``c_{k-2}``, ``c_{k-1}`` (nodes 0 and 1), the intermediate nodes
2..5 and the output ``c_{k}``, which concatenates the *live* intermediate nodes. Isolated nodes (no
input from a cell input or a live node, see :func:`fairdarts_core.genotype.live_nodes`) are drawn grey,
with grey dashed edges and no edge to the output: the evaluation network never computes them. A cell with
no live node at all is still drawn (the drawing shows why), but its output is drawn grey and labelled
``c_{k}: no live node``, so the picture cannot pass for a working cell.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import graphviz
import numpy as np

from .genotype import STEPS, Edge, Genotype, edge_index, live_nodes, prune_isolated, steps_for, validate_cell

# Colours as in the DARTS drawings; grey for what the network drops.
INPUT_COLOR = "darkseagreen2"
NODE_COLOR = "lightblue"
OUTPUT_COLOR = "palegoldenrod"
ISOLATED_FILL = "gray92"
ISOLATED_LINE = "gray60"

SAVE_FORMATS = ("svg", "png", "pdf")


def _node_ids(prefix: str, steps: int) -> dict:
    """graphviz node id of every node of a cell (prefixed, so two cells can share one graph)."""
    ids = {i: f"{prefix}{i}" for i in range(steps + 2)}
    ids["out"] = f"{prefix}out"
    return ids


def _draw_cell(g: graphviz.Digraph, edges: Sequence[Edge], steps: int, prefix: str = "") -> None:
    """Add the nodes and edges of one cell to ``g``."""
    ids = _node_ids(prefix, steps)
    live = set(live_nodes(edges, steps))
    g.node(ids[0], "c_{k-2}", fillcolor=INPUT_COLOR)
    g.node(ids[1], "c_{k-1}", fillcolor=INPUT_COLOR)
    for node in range(2, steps + 2):
        if node in live:
            g.node(ids[node], str(node), fillcolor=NODE_COLOR)
        else:
            g.node(ids[node], str(node), fillcolor=ISOLATED_FILL, color=ISOLATED_LINE,
                   fontcolor=ISOLATED_LINE, style="filled,dashed", tooltip="isolated: dropped")
    if live:
        g.node(ids["out"], "c_{k}", fillcolor=OUTPUT_COLOR)
    else:  # nothing reaches the output: the evaluation network refuses such a cell
        g.node(ids["out"], "c_{k}: no live node", fillcolor=ISOLATED_FILL, color=ISOLATED_LINE,
               fontcolor=ISOLATED_LINE, style="filled,dashed", tooltip="no live node: the cell outputs nothing")

    alive = live | {0, 1}
    for op, to, src in edges:
        if to in alive and src in alive:
            g.edge(ids[src], ids[to], label=op)
        else:  # an edge into or out of an isolated node: not computed (see prune_isolated)
            g.edge(ids[src], ids[to], label=op, color=ISOLATED_LINE, fontcolor=ISOLATED_LINE, style="dashed")
    for node in sorted(live):  # the output concatenates the live nodes only
        g.edge(ids[node], ids["out"], color="gray30")
    for node in range(2, steps + 1):  # invisible chain: nodes 2, 3, ... left to right, in every drawing
        g.edge(ids[node], ids[node + 1], style="invis")


def _new_graph(title: Optional[str]) -> graphviz.Digraph:
    g = graphviz.Digraph(format="svg")
    g.attr(rankdir="LR")
    g.attr("node", style="filled", shape="rect", align="center", fontsize="18", height="0.5",
           width="0.5", penwidth="2", fontname="helvetica")
    g.attr("edge", fontsize="14", fontname="helvetica")
    if title:
        g.attr(label=title, labelloc="t", fontsize="20", fontname="helvetica")
    return g


def plot_cell(cell_edges: Iterable[Edge], title: Optional[str] = None, steps: int = STEPS) -> graphviz.Digraph:
    """A graphviz drawing of one cell (``(op, to, from)`` edges). Display it in Jupyter, or save it
    with :func:`save_cell`."""
    edges = validate_cell(cell_edges, steps)
    g = _new_graph(title)
    _draw_cell(g, edges, steps)
    return g


def plot_genotype(genotype: Genotype, title: Optional[str] = None) -> graphviz.Digraph:
    """Both cells of a genotype side by side: the normal cell, then the reduction cell."""
    g = _new_graph(title)
    # With rankdir=LR graphviz stacks clusters bottom-up: adding the reduction cell first puts the
    # normal cell on top.
    for kind, label in (("reduce", "reduction cell"), ("normal", "normal cell")):
        with g.subgraph(name=f"cluster_{kind}") as sub:  # 'cluster_' makes graphviz draw a box
            sub.attr(label=label, color="gray70", fontsize="16", fontname="helvetica")
            _draw_cell(sub, genotype.cell(kind), genotype.steps, prefix=f"{kind}_")
    return g


def save_cell(cell: Union[Genotype, Iterable[Edge], graphviz.Digraph], path: Union[str, Path],
              title: Optional[str] = None, steps: int = STEPS) -> Path:
    """Draw a genotype (both cells; a NAS-Bench-201 genotype: its cell), one cell's edges, or an existing
    drawing, and write it to ``path``;
    the format comes from the suffix (.svg, .png, .pdf). Returns the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"cannot save a drawing as {path.name!r}: use a .svg, .png or .pdf file name")
    if shutil.which("dot") is None:
        raise ValueError("graphviz's `dot` program is missing: apt-get install graphviz (or conda install graphviz)")
    from .nb201 import NB201Genotype, cell_graph

    if isinstance(cell, graphviz.Digraph):
        g = cell
    elif isinstance(cell, NB201Genotype):
        g = cell_graph(cell, title)
    elif isinstance(cell, Genotype):
        g = plot_genotype(cell, title)
    else:
        g = plot_cell(cell, title, steps)
    # pipe() returns the bytes without graphviz's render() side files (the .gv source next to the output).
    path.write_bytes(g.pipe(format=fmt))
    return path


def plot_weights_heatmap(weights, primitives: Sequence[str], ax=None, title: Optional[str] = None):
    """A heat map of a (14, n_ops) relaxed-weight matrix (rows ``"to<-from"`` in DARTS edge order,
    columns the ops), every cell annotated with its value. Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt  # here, so importing viz does not pick a matplotlib backend

    if hasattr(weights, "detach"):  # a torch tensor, possibly on a GPU with grad
        weights = weights.detach().cpu().numpy()
    W = np.asarray(weights, dtype=np.float64)
    primitives = list(primitives)
    if W.ndim != 2 or W.shape[1] != len(primitives):
        raise ValueError(f"weights must have shape (14, {len(primitives)}) for {len(primitives)} ops; "
                         f"got {tuple(W.shape)}")
    rows = [f"{to}<-{src}" for to, src in edge_index(steps_for(W.shape[0]))]

    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(primitives), 0.8 + 0.38 * len(rows)))
    else:
        fig = ax.figure
    # Relaxed weights live in [0, 1] (sigmoid and softmax alike): a fixed colour scale keeps plots comparable.
    im = ax.imshow(W, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(primitives)), primitives, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylabel("edge (to <- from)")
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            ax.text(j, i, f"{W[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if W[i, j] > 0.6 else "white")  # readable on viridis' dark and light ends
    fig.colorbar(im, ax=ax, fraction=0.05)
    if title:
        ax.set_title(title)
    return fig, ax


# ==========================================================================================================
# What a search did over time (chapter 2): dominant ops per epoch, per-edge trajectories, weight bars,
# derived cells side by side, and the mechanism experiment (a deep chain of mixed edges)
# ==========================================================================================================

# One colour per op, the same in every plot of the book (parameter-free ops in warm colours, convolutions
# in cool ones; skip_connect the strongest red, so a collapse is easy to see).
OP_COLORS = {
    "none": "#bbbbbb",
    "max_pool_3x3": "#f2b880",
    "avg_pool_3x3": "#e39a5b",
    "skip_connect": "#c0392b",
    "sep_conv_3x3": "#2a6f97",
    "sep_conv_5x5": "#61a5c2",
    "dil_conv_3x3": "#2d6a4f",
    "dil_conv_5x5": "#74c69d",
    "conv_3x3": "#2a6f97",
    "conv_1x1": "#61a5c2",
    "nor_conv_3x3": "#2a6f97",
    "nor_conv_1x1": "#61a5c2",
}
CONV_PREFIXES = ("sep_conv", "dil_conv", "conv", "nor_conv")


def op_color(name: str) -> str:
    return OP_COLORS.get(name, "#888888")


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _history_epochs(history: Sequence[dict]) -> list:
    return [r.get("epoch", i + 1) for i, r in enumerate(history)]


def cell_label(cell: str) -> str:
    """How a figure names a history's cell: ``"normal cell"``, ``"reduce cell"``, ``"NAS-Bench-201 cell"``."""
    return "NAS-Bench-201 cell" if cell == "cell" else f"{cell} cell"


def edge_labels(n_edges: int) -> list:
    """``"to<-from"`` of every row of a relaxed-weight matrix: NAS-Bench-201's 6 edges, or the DARTS
    cell's 14 (any 2 + 3 + ... rows)."""
    from . import nb201

    if n_edges == nb201.NUM_EDGES:
        return [f"{to}<-{src}" for to, src in nb201.EDGES]
    return [f"{to}<-{src}" for to, src in edge_index(steps_for(n_edges))]


def plot_dominant_ops(history: Sequence[dict], primitives: Sequence[str], cell: str = "normal", ax=None,
                      title: Optional[str] = None):
    """Fair DARTS Fig. 1 style: for every recorded epoch, how many edges of ``cell`` each op dominates
    (largest relaxed weight; never ``none`` in the DARTS space, ``none`` too in NAS-Bench-201's ``"cell"``),
    stacked. Returns ``(figure, axes)``."""
    from .analysis import dominant_op_counts

    if not history:
        raise ValueError("the history is empty: nothing to plot")
    counts = dominant_op_counts(history, primitives, cell)
    epochs = _history_epochs(history)
    fig, ax = _axes(ax, (6.0, 3.4))
    ops = list(counts)
    ax.stackplot(epochs, *[counts[op] for op in ops], labels=ops, colors=[op_color(op) for op in ops],
                 alpha=0.9, edgecolor="white", linewidth=0.3)
    n_edges = sum(counts[op][0] for op in ops)
    ax.set_xlim(epochs[0], epochs[-1] if len(epochs) > 1 else epochs[0] + 1)
    ax.set_ylim(0, n_edges)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("edges dominated")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title or f"dominant op per edge, {cell_label(cell)}", fontsize=10)
    return fig, ax


def plot_op_weights(history: Sequence[dict], primitives: Sequence[str], cell: str = "normal", ax=None,
                    threshold: Optional[float] = None, title: Optional[str] = None):
    """One line per op: its relaxed weight averaged over the edges of ``cell`` after every recorded epoch,
    the band from its weakest to its strongest edge shaded (with sigmoids, independent weights move
    together or apart; with a softmax they share one unit per edge). ``threshold``: a dashed line (Fair
    DARTS's 0.85). Returns ``(figure, axes)``."""
    from matplotlib.ticker import MaxNLocator

    from .analysis import history_weights

    if not history:
        raise ValueError("the history is empty: nothing to plot")
    W = np.asarray(history_weights(history, cell), dtype=np.float64)  # (epochs, edges, ops)
    if W.ndim != 3 or W.shape[2] != len(primitives):
        raise ValueError(f"the history's {cell}_weight matrices do not have {len(primitives)} columns")
    epochs = _history_epochs(history)
    fig, ax = _axes(ax, (6.0, 3.2))
    for k, op in enumerate(primitives):
        ax.plot(epochs, W[:, :, k].mean(axis=1), color=op_color(op), lw=1.6, marker="o" if len(epochs) < 3 else None,
                ms=3, label=op)
        ax.fill_between(epochs, W[:, :, k].min(axis=1), W[:, :, k].max(axis=1), color=op_color(op), alpha=0.08,
                        lw=0)
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=0.8)
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("relaxed weight (mean over edges)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title or f"the weight of every op, {cell_label(cell)} (band: weakest to strongest edge)", fontsize=10)
    return fig, ax


def edge_trajectories(history: Sequence[dict], primitives: Sequence[str], cell: str = "normal") -> dict:
    """Per edge and epoch: skip's relaxed weight and that of the strongest convolution.

    Returns ``{"epoch": [...], "edges": ["2<-0", ...], "skip": (epochs, edges) array,
    "conv": (epochs, edges) array, "conv_op": (epochs, edges) list of the op names}``."""
    prims = list(primitives)
    if "skip_connect" not in prims:
        raise ValueError("the op set has no skip_connect")
    conv = [k for k, p in enumerate(prims) if p.startswith(CONV_PREFIXES)]
    if not conv:
        raise ValueError("the op set has no convolution")
    from .analysis import history_weights

    W = np.asarray(history_weights(history, cell), dtype=np.float64)  # (epochs, edges, ops)
    if W.ndim != 3 or W.shape[2] != len(prims):
        raise ValueError(f"the history's {cell}_weight matrices do not have {len(prims)} columns")
    best = np.asarray(conv)[W[:, :, conv].argmax(axis=2)]
    return {"epoch": _history_epochs(history),
            "edges": edge_labels(W.shape[1]),
            "skip": W[:, :, prims.index("skip_connect")],
            "conv": np.take_along_axis(W, best[:, :, None], axis=2)[:, :, 0],
            "conv_op": [[prims[k] for k in row] for row in best]}


def plot_edge_trajectories(history: Sequence[dict], primitives: Sequence[str], cell: str = "normal",
                           title: Optional[str] = None, ncols: int = 7):
    """One small panel per edge of ``cell``: skip's weight (red) against the strongest convolution's
    (blue) over the epochs; a panel is shaded where skip ends up ahead. Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    t = edge_trajectories(history, primitives, cell)
    n = len(t["edges"])
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.45 * nrows + 0.5), sharex=True, sharey=True,
                             squeeze=False)
    top = max(float(t["skip"].max()), float(t["conv"].max()), 0.05) * 1.1
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.plot(t["epoch"], t["skip"][:, i], color=op_color("skip_connect"), lw=1.6, label="skip_connect")
        ax.plot(t["epoch"], t["conv"][:, i], color=op_color("sep_conv_3x3"), lw=1.6, label="best conv")
        if t["skip"][-1, i] > t["conv"][-1, i]:
            ax.set_facecolor("#fbe9e7")
        ax.set_title(t["edges"][i], fontsize=8, pad=2)
        ax.set_ylim(0, top)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    axes[0, 0].legend(fontsize=6, frameon=False, loc="upper left")
    fig.supxlabel("epoch", fontsize=8)
    fig.supylabel("relaxed weight", fontsize=8)
    fig.suptitle(title or f"{cell_label(cell)}: skip_connect vs the strongest convolution, edge by edge "
                 "(shaded: skip ahead at the end)", fontsize=9)
    fig.tight_layout()
    return fig, axes


def plot_weight_bars(weights, primitives: Sequence[str], ax=None, title: Optional[str] = None):
    """The relaxed weights of every edge as one horizontal stacked bar (one segment per op, the colours
    of :data:`OP_COLORS`); softmax rows add up to 1, sigmoid rows need not. Returns ``(figure, axes)``."""
    W = np.asarray(weights.detach().cpu().numpy() if hasattr(weights, "detach") else weights, dtype=np.float64)
    prims = list(primitives)
    if W.ndim != 2 or W.shape[1] != len(prims):
        raise ValueError(f"weights must have shape (n_edges, {len(prims)}), got {tuple(W.shape)}")
    rows = edge_labels(W.shape[0])
    fig, ax = _axes(ax, (6.0, 0.6 + 0.26 * len(rows)))
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for k, op in enumerate(prims):
        ax.barh(y, W[:, k], left=left, color=op_color(op), label=op, edgecolor="white", linewidth=0.3)
        left += W[:, k]
    ax.set_yticks(y, rows, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("relaxed weights, stacked")
    ax.set_xlim(0, max(1.0, float(left.max()) * 1.02))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig, ax


def plot_cells(cells: Sequence[Iterable[Edge]], titles: Sequence[str], steps: int = STEPS,
               title: Optional[str] = None) -> graphviz.Digraph:
    """Several cells side by side in one drawing (e.g. the derived normal cell at the start, middle and
    end of a search), each in a box labelled with its title and its number of skip connections (live
    edges only, as :meth:`Genotype.count`)."""
    cells = [validate_cell(c, steps) for c in cells]
    if len(cells) != len(titles):
        raise ValueError(f"{len(cells)} cells but {len(titles)} titles")
    g = _new_graph(title)
    g.attr(rankdir="TB", nodesep="0.25", ranksep="0.35")
    g.attr("node", fontsize="12", height="0.3", width="0.3")
    g.attr("edge", fontsize="10")
    for i, (edges, label) in enumerate(zip(cells, titles)):
        skips = sum(op == "skip_connect" for op, _, _ in prune_isolated(edges, steps))  # as Genotype.count
        with g.subgraph(name=f"cluster_{i}") as sub:
            sub.attr(label=f"{label}\n{skips} skip_connect", color="gray70", fontsize="13", fontname="helvetica")
            _draw_cell(sub, edges, steps, prefix=f"c{i}_")
    return g


def _mechanism_final(result: dict) -> dict:
    from .mechanism import skip_summary

    s = dict(skip_summary(result))
    s["relaxation"] = result["config"]["relaxation"]
    s["seed"] = result["config"]["seed"]
    s["steps"] = result["records"][-1]["step"]
    return s


def plot_mechanism_depth(results: Sequence[dict], ax=None, what: str = "skip_weight", title: Optional[str] = None):
    """The mechanism experiment over depths: the final ``what`` (``"skip_weight"``: mean relaxed weight of
    skip over the layers; ``"skip_share"``: fraction of layers where skip beats every other op) against
    the depth of the chain, one colour per relaxation, one dot per seed, the line through the seed means.
    Returns ``(figure, axes)``."""
    from .widgets import SIGMOID_COLOR, SOFTMAX_COLOR

    if what not in ("skip_weight", "skip_share"):
        raise ValueError("what must be 'skip_weight' or 'skip_share'")
    if not results:
        raise ValueError("no mechanism runs to plot")
    fig, ax = _axes(ax, (5.2, 3.4))
    finals = [_mechanism_final(r) for r in results]
    colors = {"softmax": SOFTMAX_COLOR, "sigmoid": SIGMOID_COLOR}
    for rel in ("softmax", "sigmoid"):
        rows = [f for f in finals if f["relaxation"] == rel]
        if not rows:
            continue
        value = (lambda f: f["skip_weight"]) if what == "skip_weight" else (lambda f: f["skip_wins"] / f["depth"])
        depths = sorted({f["depth"] for f in rows})
        ax.scatter([f["depth"] for f in rows], [value(f) for f in rows], color=colors[rel], alpha=0.6, s=18)
        means = [np.mean([value(f) for f in rows if f["depth"] == d]) for d in depths]
        ax.plot(depths, means, "-", color=colors[rel], lw=2, label=f"{rel} (mean over seeds)")
    if what == "skip_weight":
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    depths = sorted({f["depth"] for f in finals})
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("depth of the chain (mixed edges)")
    ax.set_ylabel("skip weight at the end" if what == "skip_weight" else "layers where skip wins")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title or ("skip_connect's weight against depth" if what == "skip_weight"
                           else "share of layers skip_connect wins"), fontsize=10)
    return fig, ax


def plot_mechanism_layers(result: dict, axes=None, title: Optional[str] = None):
    """One mechanism run: left, skip's relaxed weight of every layer over the steps (darker = deeper);
    right, the final weight of skip and of the other op(s) layer by layer. Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    ops = list(result["config"]["ops"])
    s = ops.index("skip_connect")
    steps = [r["step"] for r in result["records"]]
    W = np.asarray([r["weights"] for r in result["records"]], dtype=np.float64)  # (records, depth, ops)
    depth = W.shape[1]
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    fig = axes[0].figure
    cmap = plt.get_cmap("viridis")
    for layer in range(depth):
        axes[0].plot(steps, W[:, layer, s], color=cmap(layer / max(1, depth - 1)), lw=1)
    axes[0].set_xlabel("bi-level step")
    axes[0].set_ylabel("skip_connect weight")
    axes[0].set_title("every layer's skip weight (yellow = deepest)", fontsize=9)
    x = np.arange(1, depth + 1)
    width = 0.8 / len(ops)
    for k, op in enumerate(ops):
        axes[1].bar(x + (k - (len(ops) - 1) / 2) * width, W[-1, :, k], width, color=op_color(op), label=op)
    axes[1].set_xlabel("layer (1 = next to the stem)")
    axes[1].set_ylabel(f"weight at step {steps[-1]}")
    axes[1].legend(fontsize=7, frameon=False)
    axes[1].set_title("final weights, layer by layer", fontsize=9)
    cfg = result["config"]
    fig.suptitle(title or f"depth {depth}, {cfg['relaxation']}, seed {cfg['seed']}", fontsize=10)
    fig.tight_layout()
    return fig, axes


def plot_weight_histograms(groups, threshold: Optional[float] = 0.85, axes=None, bins: int = 20):
    """Histograms of relaxed weights side by side, one panel per group (``{label: [matrices]}``, e.g. the
    final weights of DARTS, of Fair DARTS without and with the zero-one loss, and the authors' own): the
    share of weights per bin on [0, 1], the ``threshold`` as a dashed line, and in each title the share of
    weights between 0.15 and 0.85, neither clearly off nor clearly on. Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    groups = dict(groups)
    if not groups:
        raise ValueError("no weights to draw: groups is empty")
    if axes is None:
        fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups) + 0.6, 2.6), sharey=True, squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, (label, mats) in zip(axes, groups.items()):
        mats = [mats] if isinstance(mats, np.ndarray) else list(mats)
        w = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in mats]) if mats else np.zeros(0)
        if w.size:
            ax.hist(w, bins=edges, weights=np.full(w.size, 1.0 / w.size), color="#4c72b0")
            middle = float(np.mean((w > 0.15) & (w < 0.85)))
            ax.set_title(f"{label}\n{middle:.0%} of {w.size} in (0.15, 0.85)", fontsize=9)
        else:
            ax.set_title(f"{label}\n(no weights)", fontsize=9)
        if threshold is not None:
            ax.axvline(threshold, color="#c44e52", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("relaxed weight")
    axes[0].set_ylabel("share of weights")
    fig.tight_layout()
    return fig, axes


# --- from a cell to a network, and what retraining it scores ------------------------------------------------

def _stage_label(row: dict) -> str:
    if row["stage"] == "stem":
        return f"stem: 3x3 conv + BN\n{row['in_channels']} -> {row['out_channels']} channels, {row['size']}x{row['size']}"
    if row["stage"] == "auxiliary head":
        return f"auxiliary head (training only)\nreads {row['in_channels']} channels, {row['size']}x{row['size']}"
    return f"global average pool + linear classifier\nreads {row['in_channels']} channels"


def plot_network(layout: Sequence[dict], title: Optional[str] = None) -> graphviz.Digraph:
    """A graphviz drawing of an evaluation network from :func:`fairdarts_core.network.network_layout`, top
    to bottom: the stem, runs of identical normal cells drawn as one box (``6 x normal cell``), the two
    reduction cells (shaded), the auxiliary head on a side branch, the classifier. Each box gives the channels
    per node, the live nodes, the channels the cell outputs and the size of its maps."""
    g = graphviz.Digraph(format="svg")
    g.attr(rankdir="TB", nodesep="0.4", ranksep="0.25")
    g.attr("node", shape="rect", style="filled,rounded", fontname="helvetica", fontsize="12", penwidth="1.5")
    if title:
        g.attr(label=title, labelloc="t", fontsize="16", fontname="helvetica")
    groups: List[List[dict]] = []
    for row in layout:
        same_run = (groups and row["stage"] == "cell" and groups[-1][0]["stage"] == "cell"
                    and row["kind"] == "normal" == groups[-1][0]["kind"])
        if same_run:
            groups[-1].append(row)
        else:
            groups.append([row])
    previous = None
    for i, group in enumerate(groups):
        row, node = group[0], f"s{i}"
        if row["stage"] == "cell":
            first, last = group[0]["index"], group[-1]["index"]
            where = f"cell {first}" if first == last else f"cells {first}-{last}"
            count = f"{len(group)} x " if len(group) > 1 else ""
            kind = "normal cell" if row["kind"] == "normal" else "reduction cell"
            label = (f"{count}{kind} ({where})\n{row['C']} channels per node x {row['nodes']} live nodes = "
                     f"{row['out_channels']} out, {row['size']}x{row['size']}")
            g.node(node, label, fillcolor="#f6c28b" if row["kind"] == "reduce" else "#cfe2f3")
        elif row["stage"] == "auxiliary head":
            g.node(node, _stage_label(row), fillcolor="#e6e6e6", style="filled,rounded,dashed")
            g.edge(previous, node, style="dashed")
            continue  # a side branch: the main chain goes on from the cell before it
        else:
            g.node(node, _stage_label(row), fillcolor="#d9ead3")
        if previous is not None:
            g.edge(previous, node)
        previous = node
    return g


def plot_retrained(stats: Sequence, ax=None, title: Optional[str] = None, reference: Optional[float] = None):
    """Retrained test accuracy per cell (:class:`fairdarts_core.analysis.SeedStats`): every training seed as a
    dot and the mean with one sample standard deviation as an error bar, one row per cell, top to bottom in
    the given order. ``reference`` draws a vertical line (e.g. chance). Returns ``(figure, axes)``."""
    stats = list(stats)
    if not stats:
        raise ValueError("no retrained cells to draw")
    fig, ax = _axes(ax, (6.4, 0.45 * len(stats) + 1.2))
    for y, s in enumerate(stats):
        ax.errorbar(s.mean, y, xerr=s.std, fmt="o", color="#1f4e79", ms=7, capsize=4, zorder=3)
        ax.scatter(s.accs, [y] * s.n, color="#8fb3d9", s=18, zorder=2)
    ax.set_yticks(range(len(stats)), [f"{s.label} (n={s.n})" for s in stats])
    ax.invert_yaxis()
    if reference is not None:
        ax.axvline(reference, color="gray", ls=":", lw=1)
    ax.set_xlabel("test accuracy after retraining (mean ± std over training seeds; dots: each seed)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig, ax


# --- chapter 4: what discretizing costs, and the cells retrained ----------------------------------------------

def _short_setting(setting: str) -> str:
    return setting.replace("sigmoid, ", "")


def plot_ablation_gaps(summaries, axes=None):
    """Per search space (``{space: rows of widgets.ablation_summary}``), one panel: the held-out accuracy lost
    by rounding the relaxed weights and by deriving the cell, per zero-one setting (bars: the mean; dots:
    each seed). Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, len(summaries), figsize=(5.2 * len(summaries), 3.2), squeeze=False, sharey=True)
        axes = axes[0]
    for ax, (space, rows) in zip(axes, summaries.items()):
        x = np.arange(len(rows))
        for dx, key, color, label in ((-0.18, "rounding_gaps", "#55a868", "rounding"), (0.18, "cell_gaps", "#c44e52", "the cell")):
            ax.bar(x + dx, [np.mean(r[key]) for r in rows], width=0.34, color=color, alpha=0.45, label=label)
            for i, r in enumerate(rows):
                ax.scatter([i + dx] * len(r[key]), r[key], color=color, s=12, zorder=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, [_short_setting(r["setting"]) for r in rows], rotation=30, ha="right")
        ax.set_title(f"{space}: accuracy lost by discretizing", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
    axes[0].set_ylabel("relaxed minus discretized accuracy")
    axes[0].figure.tight_layout()
    return axes[0].figure, axes


def plot_ablation_retrained(summaries, extra=None, axes=None):
    """Per search space, the test accuracy of the derived cells retrained, one column per zero-one setting
    (dots: each retrained cell; a line: their mean; "no cell" where the normal cell kept no edge, "not
    retrained" where no retraining is recorded). ``extra``: ``{space: [(label, accuracies per search), ...]}``,
    further columns (e.g. a longer search). Returns ``(figure, axes, lines)``, ``lines`` one text line per
    column."""
    import matplotlib.pyplot as plt

    extra = extra or {}
    if axes is None:
        fig, axes = plt.subplots(1, len(summaries), figsize=(5.2 * len(summaries), 3.0), squeeze=False)
        axes = axes[0]
    lines = []
    for ax, (space, rows) in zip(axes, summaries.items()):
        groups = [(_short_setting(r["setting"]), r["retrained"], all(r["empty"])) for r in rows]
        groups += [(label, per_search, False) for label, per_search in extra.get(space, [])]
        for i, (label, per_search, empty) in enumerate(groups):
            points = [a for accs in per_search for a in accs]
            if points:
                ax.scatter([i] * len(points), points, color="#4c72b0", s=16, zorder=3)
                ax.plot([i - 0.25, i + 0.25], [np.mean(points)] * 2, color="grey", lw=1.5)
            else:
                ax.text(i, 0.5, "no cell" if empty else "not retrained", transform=ax.get_xaxis_transform(),
                        ha="center", rotation=90, fontsize=8, color="grey")
            lines.append(f"{space:<14} {label:<18} " + (
                f"{' / '.join(f'{a:.3f}' for a in points)} ({len(points)} cells)" if points
                else "no cell to retrain" if empty else "not retrained"))
        ax.set_xticks(range(len(groups)), [g[0] for g in groups], rotation=30, ha="right")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(f"{space}: the derived cells, retrained", fontsize=10)
    axes[0].set_ylabel("test accuracy")
    axes[0].figure.tight_layout()
    return axes[0].figure, axes, lines


# --- the benchmarks page: the search step by shape -------------------------------------------------------------

def shape_label(shape: dict) -> str:
    """``"64 x 16 x 8, 32x32x3"``: batch x channels x cells, then the image, of a benchmark row's shape."""
    return (f"{shape['batch']} x {shape['channels']} x {shape['layers']}, "
            f"{shape['resolution']}x{shape['resolution']}x{shape['in_channels']}")


def plot_speedup_by_shape(sweep: dict, axes=None):
    """A ``fairdarts bench sweep`` report (:func:`fairdarts_core.bench.sweep_report`): per shape, how many
    times faster the fast step is than the reference step (left) and the fast side's peak memory as a
    fraction of the reference side's (right; when measured). Rows top to bottom in the sweep's order.
    Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    rows = list(sweep.get("rows", []))
    if not rows:
        raise ValueError("the sweep has no rows to draw")
    labels = [shape_label(r["shape"]) for r in rows]
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 0.42 * len(rows) + 1.6), sharey=True)
    y = np.arange(len(rows))
    panels = ((axes[0], [r["speedup"] for r in rows], "fast step: times faster than the reference", "{:.2f}x"),
              (axes[1], [r.get("memory_ratio", np.nan) for r in rows], "fast / reference peak memory", "{:.2f}"))
    for ax, values, xlabel, fmt in panels:
        ax.barh(y, values, color="#4c72b0", height=0.6)
        for yi, v in zip(y, values):
            if np.isfinite(v):
                ax.text(v, yi, " " + fmt.format(v), va="center", fontsize=8)
        ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        finite = [v for v in values if np.isfinite(v)]
        ax.set_xlim(0, max(max(finite) * 1.25, 1.1) if finite else 1.1)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("batch x channels x cells, image")
    fig = axes[0].figure
    fig.suptitle(f"search step by shape: {sweep.get('machine', '')}, {sweep.get('threads', '?')} threads, "
                 f"{sweep.get('date', '')}", fontsize=10)
    fig.tight_layout()
    return fig, axes
