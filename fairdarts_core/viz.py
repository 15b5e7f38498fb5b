"""Drawings: a discrete cell as a graph (graphviz), a relaxed-weight matrix as a heat map (matplotlib).

A cell drawing shows the two inputs ``c_{k-2}``, ``c_{k-1}`` (nodes 0 and 1), the intermediate nodes
2..5 and the output ``c_{k}``, which concatenates the *live* intermediate nodes. Isolated nodes (no
input from a cell input or a live node, see :func:`fairdarts_core.genotype.live_nodes`) are drawn grey,
with grey dashed edges and no edge to the output: the evaluation network never computes them.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import graphviz
import numpy as np

from .genotype import STEPS, Edge, Genotype, edge_index, live_nodes, steps_for, validate_cell

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
    g.node(ids["out"], "c_{k}", fillcolor=OUTPUT_COLOR)

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
    """Draw a genotype (both cells), one cell's edges, or an existing drawing, and write it to ``path``;
    the format comes from the suffix (.svg, .png, .pdf). Returns the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"cannot save a drawing as {path.name!r}: use a .svg, .png or .pdf file name")
    if shutil.which("dot") is None:
        raise ValueError("graphviz's `dot` program is missing: apt-get install graphviz (or conda install graphviz)")
    if isinstance(cell, graphviz.Digraph):
        g = cell
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
