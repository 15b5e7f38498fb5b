"""Interactive explorers for the book's chapters (ipywidgets), with pure functions underneath.

Every explorer is split in three layers so that it can be tested without a browser and still be useful
in a static page:

- a pure *state* function (numbers in, a plain dict out), e.g. :func:`edge_explorer_state`;
- a static matplotlib *figure* of a state, e.g. :func:`edge_explorer_figure` (the built book shows it
  even where no kernel runs);
- the *widget*, e.g. :func:`edge_explorer`, which only wires sliders to the two functions above.

ipywidgets and matplotlib are imported inside the functions that need them, so importing this module
is cheap and picks no matplotlib backend.
"""
from __future__ import annotations

import io
from typing import Dict, List, Optional, Sequence

import numpy as np

from .ops import FAIR_DARTS_OPS

SOFTMAX_COLOR = "#4c72b0"   # DARTS
SIGMOID_COLOR = "#dd8452"   # Fair DARTS


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max())
    return e / e.sum()


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def edge_explorer_state(alphas, primitives: Sequence[str] = FAIR_DARTS_OPS, threshold: float = 0.85) -> Dict:
    """What the two relaxations make of the architecture parameters ``alphas`` of one edge.

    Returns a dict with

    - ``primitives``, ``alphas`` (lists, in the order given), ``threshold``;
    - ``softmax``: DARTS's weights (they sum to 1: the ops share one budget);
    - ``sigmoid``: Fair DARTS's weights (each in (0, 1), independent of the others);
    - ``darts_keeps``: the op the DARTS rule keeps on this edge, the strongest one (never ``none``);
    - ``fair_keeps``: the op the Fair DARTS rule (``threshold_sparse``) keeps, the strongest one if its
      sigmoid reaches ``threshold``, else ``None`` (the edge is dropped);
    - ``above_threshold``: every op whose sigmoid reaches ``threshold`` (with sigmoids, several ops can be
      "on" at once; the ``threshold_edge`` rule keeps up to two of them);
    - ``softmax_sum`` and ``sigmoid_sum``.

    Only this one edge is looked at: on a whole cell both rules also keep just the two strongest
    incoming edges of each node (see :func:`fairdarts_core.parse_cell`).
    """
    names = [str(p) for p in primitives]
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if a.shape[0] != len(names):
        raise ValueError(f"{a.shape[0]} alphas for {len(names)} ops ({', '.join(names)}); give one alpha per op")
    if not np.all(np.isfinite(a)):
        raise ValueError("alphas must be finite numbers")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    soft, sig = _softmax(a), _sigmoid(a)
    candidates = [k for k, p in enumerate(names) if p != "none"]
    if not candidates:
        raise ValueError("the op set has no op other than 'none'")
    # Both relaxations are increasing in alpha: the strongest candidate is the same for both.
    best = candidates[int(np.argmax(a[candidates]))]
    return {
        "primitives": names,
        "alphas": a.tolist(),
        "threshold": float(threshold),
        "softmax": soft.tolist(),
        "sigmoid": sig.tolist(),
        "softmax_sum": float(soft.sum()),
        "sigmoid_sum": float(sig.sum()),
        "darts_keeps": names[best],
        "fair_keeps": names[best] if sig[best] >= threshold else None,
        "above_threshold": [names[k] for k in candidates if sig[k] >= threshold],
    }


def edge_explorer_text(state: Dict) -> str:
    """One-paragraph plain-text verdict of a state (what each rule keeps)."""
    fair = state["fair_keeps"]
    above = state["above_threshold"]
    parts = [f"DARTS (softmax) keeps {state['darts_keeps']} "
             f"(weight {state['softmax'][state['primitives'].index(state['darts_keeps'])]:.2f} of a total of 1)."]
    if fair is None:
        parts.append(f"Fair DARTS (sigmoid >= {state['threshold']:.2f}) keeps nothing: the edge is dropped.")
    else:
        parts.append(f"Fair DARTS (sigmoid >= {state['threshold']:.2f}) keeps {fair}.")
    if len(above) > 1:
        parts.append(f"{len(above)} ops are above the threshold at once: {', '.join(above)}.")
    return " ".join(parts)


def edge_explorer_figure(state: Dict, ax=None, title: Optional[str] = None):
    """Bar plot of a state: softmax and sigmoid weight of every op side by side, the threshold as a line,
    the kept ops marked. Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    names = state["primitives"]
    x = np.arange(len(names))
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
    else:
        fig = ax.figure
    width = 0.38
    ax.bar(x - width / 2, state["softmax"], width, color=SOFTMAX_COLOR, label="softmax (DARTS)")
    ax.bar(x + width / 2, state["sigmoid"], width, color=SIGMOID_COLOR, label="sigmoid (Fair DARTS)")
    ax.axhline(state["threshold"], color="gray", linestyle="--", linewidth=1)
    ax.text(len(names) - 0.5, state["threshold"] + 0.02, f"threshold {state['threshold']:.2f}",
            ha="right", va="bottom", fontsize=8, color="gray")
    k = names.index(state["darts_keeps"])
    ax.text(k - width / 2, state["softmax"][k] + 0.03, "D", ha="center", fontsize=9, color=SOFTMAX_COLOR,
            fontweight="bold")
    for name in state["above_threshold"]:
        k = names.index(name)
        ax.text(k + width / 2, state["sigmoid"][k] + 0.03, "F", ha="center", fontsize=9, color=SIGMOID_COLOR,
                fontweight="bold")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("weight of the op")
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncol=2)
    ax.set_title(title or "one edge: D = DARTS keeps it, F = above the Fair DARTS threshold", fontsize=10)
    fig.tight_layout()
    return fig, ax


def _figure_png(state: Dict) -> bytes:
    import matplotlib.pyplot as plt

    fig, _ = edge_explorer_figure(state)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _verdict_html(state: Dict) -> str:
    rows = "".join(
        f"<tr><td style='padding:0 8px'>{p}</td><td style='padding:0 8px'>{a:+.2f}</td>"
        f"<td style='padding:0 8px;color:{SOFTMAX_COLOR}'>{s:.3f}</td>"
        f"<td style='padding:0 8px;color:{SIGMOID_COLOR}'>{g:.3f}</td></tr>"
        for p, a, s, g in zip(state["primitives"], state["alphas"], state["softmax"], state["sigmoid"]))
    table = ("<table style='font-size:90%'><tr><th>op</th><th>alpha</th><th>softmax</th><th>sigmoid</th></tr>"
             f"{rows}<tr><td style='padding:0 8px'><i>sum</i></td><td></td>"
             f"<td style='padding:0 8px'>{state['softmax_sum']:.3f}</td>"
             f"<td style='padding:0 8px'>{state['sigmoid_sum']:.3f}</td></tr></table>")
    return f"<p>{edge_explorer_text(state)}</p>{table}"


def edge_explorer(alphas=None, primitives: Sequence[str] = FAIR_DARTS_OPS, threshold: float = 0.85,
                  title: str = "The alphas of one edge"):
    """Sliders for the alphas of one edge (and the threshold), a bar plot of the softmax and sigmoid
    weights they give, and which op each rule keeps. Returns an ``ipywidgets.VBox``.

    The bar plot is an image widget, so the view saved with the notebook (and the built book) shows it.
    """
    import ipywidgets as W

    names = list(primitives)
    start = np.zeros(len(names)) if alphas is None else np.asarray(alphas, dtype=np.float64).reshape(-1)
    edge_explorer_state(start, names, threshold)  # validates the arguments once, with a clear message

    style = {"description_width": "110px"}
    layout = W.Layout(width="360px")
    sliders = [W.FloatSlider(value=float(np.clip(a, -6, 6)), min=-6.0, max=6.0, step=0.1, description=name,
                             continuous_update=False, readout_format="+.1f", style=style, layout=layout)
               for name, a in zip(names, start)]
    thr = W.FloatSlider(value=threshold, min=0.05, max=0.95, step=0.05, description="threshold",
                        continuous_update=False, readout_format=".2f", style=style, layout=layout)
    reset = W.Button(description="all alphas to 0", layout=W.Layout(width="160px"))
    plot = W.Image(format="png", layout=W.Layout(width="600px"))
    verdict = W.HTML()

    def current() -> Dict:
        return edge_explorer_state([s.value for s in sliders], names, thr.value)

    def update(_=None) -> None:
        state = current()
        plot.value = _figure_png(state)
        verdict.value = _verdict_html(state)

    def zero(_=None) -> None:
        for s in sliders:
            s.unobserve(update, "value")
            s.value = 0.0
            s.observe(update, "value")
        update()

    for s in sliders + [thr]:
        s.observe(update, "value")
    reset.on_click(zero)
    update()

    controls = W.VBox([W.HTML(f"<b>{title}</b>"), *sliders, thr, reset], layout=W.Layout(min_width="380px"))
    box = W.VBox([W.HBox([controls, verdict]), plot])
    box.state = current  # for tests and for readers who want the numbers: box.state()
    box.sliders, box.threshold_slider = sliders, thr
    return box


def strongest_edge(weights, primitives: Sequence[str] = FAIR_DARTS_OPS) -> int:
    """Row index of the edge whose strongest (non-``none``) op is strongest: a natural edge to explore."""
    W = np.asarray(weights.detach().cpu().numpy() if hasattr(weights, "detach") else weights, dtype=np.float64)
    keep = [k for k, p in enumerate(primitives) if p != "none"]
    return int(np.argmax(W[:, keep].max(axis=1)))


# --- the epoch explorer (chapter 2): a recorded search, epoch by epoch -----------------------------------

def epoch_explorer_state(history: Sequence[Dict], primitives: Sequence[str], epoch: int, cell: str = "normal") -> Dict:
    """Everything the epoch explorer shows for one epoch (1-based, as in the history) of a search.

    ``cell``: ``"normal"`` or ``"reduce"`` (DARTS space) or ``"cell"`` (NAS-Bench-201). Returns ``epoch``,
    ``weights`` (the relaxed matrix of ``cell``), ``edges`` (the derived cell as ``(op, to, from)``
    tuples, from the record's genotype), ``arch`` (NAS-Bench-201: the benchmark's string of the derived
    cell; else None), ``skip_count`` (skips the derived cell computes), ``dominant`` (op -> number of
    edges it dominates), ``skip_share`` (fraction of edges skip dominates), ``skip_weight`` (skip's mean
    relaxed weight), ``train_acc`` / ``val_acc`` and ``epochs`` (all recorded epoch numbers)."""
    from .analysis import dominant_ops, keeps_none, op_weight, skip_share

    if not history:
        raise ValueError("the history is empty")
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    if epoch not in epochs:
        raise ValueError(f"epoch {epoch} is not in the history (recorded: {epochs[0]}..{epochs[-1]})")
    record = history[epochs.index(epoch)]
    key = f"{cell}_weight"
    if key not in record:
        raise ValueError(f"the history has no {key!r} (cell must be 'normal' or 'reduce' in the DARTS space, "
                         f"'cell' in NAS-Bench-201's)")
    W = np.asarray(record[key], dtype=np.float64)
    names = [str(p) for p in primitives]
    keep = keeps_none(cell)
    winners = dominant_ops(W, names, keep)
    edges, arch, skips = _derived_cell(record, cell, len(W))
    has_skip = "skip_connect" in names
    return {
        "epoch": epoch, "epochs": epochs, "cell": cell, "primitives": names, "weights": W.tolist(),
        "edges": edges, "arch": arch, "skip_count": skips,
        "dominant": {op: winners.count(op) for op in names if keep or op != "none"},
        "skip_share": skip_share(W, names, keep) if has_skip else 0.0,
        "skip_weight": float(op_weight(W, names, "skip_connect").mean()) if has_skip else 0.0,
        "train_acc": record.get("train_acc"), "val_acc": record.get("val_acc"),
    }


def _derived_cell(record: Dict, cell: str, n_edges: int):
    """The record's derived cell: its ``(op, to, from)`` edges, its NAS-Bench-201 string (or None), and the
    skips the network computes (DARTS: isolated nodes dropped, as ``Genotype.count``)."""
    if "genotype" not in record:
        return [], None, 0
    if cell == "cell":
        from .nb201 import NB201Genotype

        g = NB201Genotype.from_dict(record["genotype"])
        return [(op, to, src) for op, to, src in g.edges], g.to_string(), g.count("skip_connect")
    edges = [(str(op), int(to), int(src)) for op, to, src in record["genotype"][cell]]
    return edges, None, _live_count(edges, "skip_connect", n_edges)


def _live_count(edges, op: str, n_edges: int) -> int:
    """Edges of ``op`` that the network computes (isolated nodes dropped), as ``Genotype.count``."""
    from .genotype import prune_isolated, steps_for

    return sum(name == op for name, _, _ in prune_isolated(edges, steps_for(n_edges)))


def epoch_explorer_text(state: Dict) -> str:
    """One line about an epoch: skips in the derived cell, skip's share of the dominant ops, its weight."""
    from .viz import cell_label

    acc = "" if state["train_acc"] is None else f"; supernet training accuracy {state['train_acc']:.3f}"
    arch = f" ({state['arch']})" if state.get("arch") else ""
    return (f"epoch {state['epoch']}: the derived {cell_label(state['cell'])} has {state['skip_count']} "
            f"skip_connect of {len(state['edges'])} edges{arch}; skip dominates "
            f"{round(state['skip_share'] * len(state['weights']))} of {len(state['weights'])} edges "
            f"(mean weight {state['skip_weight']:.3f}){acc}")


def epoch_explorer_figure(state: Dict, ax=None, title: Optional[str] = None):
    """The weight bars of one epoch (every edge a stacked bar of its relaxed weights). Returns
    ``(figure, axes)``."""
    from .viz import cell_label, plot_weight_bars

    fig, ax = plot_weight_bars(state["weights"], state["primitives"], ax=ax,
                               title=title or f"{cell_label(state['cell'])}, epoch {state['epoch']}: relaxed weights")
    fig.tight_layout()
    return fig, ax


def epoch_explorer_cell(state: Dict):
    """The derived cell of one epoch as a graphviz drawing, titled with its skip count."""
    title = f"epoch {state['epoch']}: {state['skip_count']} skip_connect"
    if state.get("arch"):
        from .nb201 import cell_graph

        return cell_graph(state["arch"], title=title)
    from .viz import plot_cell

    return plot_cell(state["edges"], title=title)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _scalable_svg(svg: str, max_width: str = "640px") -> str:
    """graphviz's SVG without the XML prologue and with its fixed size replaced by one that fits the page
    (the viewBox keeps the proportions)."""
    import re

    svg = svg[svg.find("<svg"):]
    head, rest = svg.split(">", 1)
    head = re.sub(r'\s(width|height)="[^"]*"', "", head)
    return f'{head} style="width:100%;max-width:{max_width};height:auto">{rest}'


def epoch_explorer(history: Sequence[Dict], primitives: Sequence[str], cell: str = "normal",
                   title: str = "A recorded search, epoch by epoch", epoch: Optional[int] = None):
    """An epoch slider over a recorded ``history`` that redraws the derived cell (graphviz SVG) and the
    weight bars of the chosen epoch. Returns an ``ipywidgets.VBox`` (``box.state()`` gives the numbers).

    The drawings are an HTML widget (SVG) and an image widget, so the view saved with the notebook (and
    the built book) shows the starting epoch."""
    import ipywidgets as W

    first = epoch_explorer_state(history, primitives, history[-1].get("epoch", len(history)) if epoch is None else epoch,
                                 cell)
    slider = W.SelectionSlider(options=first["epochs"], value=first["epoch"], description="epoch",
                               continuous_update=False, layout=W.Layout(width="420px"))
    info = W.HTML()
    drawing = W.HTML(layout=W.Layout(width="100%"))
    bars = W.Image(format="png", layout=W.Layout(width="560px", max_width="100%"))

    def current() -> Dict:
        return epoch_explorer_state(history, primitives, slider.value, cell)

    def update(_=None) -> None:
        state = current()
        info.value = f"<p>{epoch_explorer_text(state)}</p>"
        drawing.value = _scalable_svg(epoch_explorer_cell(state).pipe(format="svg").decode("utf-8"))
        bars.value = _png(epoch_explorer_figure(state)[0])

    slider.observe(update, "value")
    update()
    box = W.VBox([W.HTML(f"<b>{title}</b>"), slider, info, W.VBox([drawing, bars])])
    box.state, box.slider = current, slider
    return box


def epoch_explorer_static(history: Sequence[Dict], primitives: Sequence[str], epochs: Sequence[int],
                          cell: str = "normal"):
    """The static fallback of the explorer: the weight bars of a few epochs side by side (a figure the
    built book shows where no kernel runs). Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(epochs), figsize=(4.2 * len(epochs), 4.2), sharey=True, squeeze=False)
    for ax, e in zip(axes[0], epochs):
        state = epoch_explorer_state(history, primitives, e, cell)
        epoch_explorer_figure(state, ax=ax, title=f"epoch {e}: {state['skip_count']} skip in the cell")
        if ax is not axes[0, -1]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig, axes[0]


__all__: List[str] = ["edge_explorer_state", "edge_explorer_text", "edge_explorer_figure", "edge_explorer",
                      "strongest_edge", "epoch_explorer_state", "epoch_explorer_text", "epoch_explorer_figure",
                      "epoch_explorer_cell", "epoch_explorer", "epoch_explorer_static"]
