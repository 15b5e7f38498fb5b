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
from typing import Any, Dict, List, Optional, Sequence

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


# --- the condition explorer (chapter 3): the same search under different conditions --------------------
#
# Chapter 3 asks *why* the collapse happens by changing one thing at a time: the relaxation (softmax's
# exclusive competition or Fair DARTS's independent sigmoids), the zero-one loss, noise on skip (Fair
# DARTS: Gaussian noise on skip's output blurs its unfair advantage, the residual shortcut it offers the
# supernet), and whether skip_connect is a candidate at all. Two things are read per epoch: the skip edges of
# the derived cell, and the dominant eigenvalue of the Hessian of the validation loss w.r.t. alpha, which
# RobustDARTS (Zela et al., ICLR 2020) found to grow as a search heads for a collapse.

RELAXATION_CHOICES = ("softmax", "sigmoid")
"""The relaxations the condition explorer can select."""

_CONDITION_COLORS = {
    ("softmax", False, False, True): SOFTMAX_COLOR,       # DARTS
    ("sigmoid", True, False, True): SIGMOID_COLOR,        # Fair DARTS
    ("sigmoid", False, False, True): "#8172b3",           # sigmoid without the zero-one loss
    ("softmax", False, True, True): "#55a868",            # DARTS + noise on skip
    ("softmax", False, False, False): "#937860",          # DARTS without skip in the set
}
_SEED_STYLES = ("-", "--", ":", "-.")
_SEED_MARKERS = ("o", "s", "^", "D", "v")


def condition_of(config) -> Dict[str, Any]:
    """The condition a search config was run under: ``{"relaxation": "softmax" | "sigmoid", "zero_one":
    zero_one_weight > 0, "noise": skip_noise, "skip_in_set": "skip_connect" in primitives}``."""
    return {
        "relaxation": str(config.relaxation),
        "zero_one": float(getattr(config, "zero_one_weight", 0.0)) > 0.0,
        "noise": bool(getattr(config, "skip_noise", False)),
        "skip_in_set": "skip_connect" in tuple(config.primitives),
    }


def condition_label(condition: Dict[str, Any]) -> str:
    """A condition in words: ``"softmax"``, ``"sigmoid + zero-one loss"``, ``"sigmoid, no zero-one loss"``,
    ``"softmax + noise on skip"``, ``"softmax, no skip in the set"`` (and their combinations)."""
    label = str(condition["relaxation"])
    if condition["zero_one"]:
        label += " + zero-one loss"
    elif condition["relaxation"] == "sigmoid":
        label += ", no zero-one loss"
    if condition["noise"]:
        label += " + noise on skip"
    if not condition["skip_in_set"]:
        label += ", no skip in the set"
    return label


def _condition_key(condition: Dict[str, Any]) -> tuple:
    return (condition["relaxation"], bool(condition["zero_one"]), bool(condition["noise"]),
            bool(condition["skip_in_set"]))


def _condition_color(condition: Dict[str, Any]) -> str:
    return _CONDITION_COLORS.get(_condition_key(condition), "#555555")


def _condition_order(condition: Dict[str, Any]) -> tuple:
    """Sort key: the five conditions of chapter 3 in the order the chapter discusses them, then the rest."""
    keys = list(_CONDITION_COLORS)
    key = _condition_key(condition)
    return (keys.index(key), "") if key in keys else (len(keys), condition_label(condition))


def recorded_conditions(runs: Sequence[Any]) -> List[Dict[str, Any]]:
    """The distinct conditions of ``runs`` (objects with ``.config`` and a non-empty ``.history``), in the
    chapter's order."""
    seen: Dict[tuple, Dict[str, Any]] = {}
    for run in runs:
        if run.history:
            c = condition_of(run.config)
            seen.setdefault(_condition_key(c), c)
    return sorted(seen.values(), key=_condition_order)


def _is_flag(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_))


def _check_toggles(relaxation: Any, noise: Any, skip_in_set: Any, zero_one: Any) -> None:
    if relaxation not in RELAXATION_CHOICES:
        raise ValueError(f"relaxation must be one of {', '.join(map(repr, RELAXATION_CHOICES))}, got {relaxation!r}")
    for name, value in (("noise", noise), ("skip_in_set", skip_in_set)):
        if not _is_flag(value):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    if zero_one is not None and not _is_flag(zero_one):
        raise ValueError(f"zero_one must be True, False or None (whichever is recorded), got {zero_one!r}")


def _run_cell(config) -> str:
    """The history cell a run's figures read: NAS-Bench-201's ``"cell"``, or the DARTS normal cell."""
    return "cell" if getattr(config, "space", "darts") == "nb201" else "normal"


def _skip_series(history: Sequence[Dict], counts: Dict[str, List[int]], cell: str) -> List[int]:
    """Skip edges of the derived cell per epoch: the record's own count (``skips`` / ``skip_normal``),
    else the edges skip dominates, 0 where skip is no candidate."""
    from .spaces import skip_key

    key = skip_key(cell)
    fallback = counts.get("skip_connect", [0] * len(history))
    return [int(r[key]) if r.get(key) is not None else int(fallback[i]) for i, r in enumerate(history)]


def _hessian_series(history: Sequence[Dict]) -> List[Optional[float]]:
    return [None if r.get("hessian_eigenvalue") is None else float(r["hessian_eigenvalue"]) for r in history]


def condition_explorer_state(runs: Sequence[Any], relaxation: str, noise: bool, skip_in_set: bool,
                             zero_one: Optional[bool] = None) -> Dict[str, Any]:
    """What the recorded searches of one condition did, seed by seed.

    ``runs``: recorded searches (objects with ``.config``, a :class:`~fairdarts_core.SearchConfig`, and
    ``.history``; e.g. :func:`fairdarts_core.runs.load_search_run` of every directory under
    ``data/runs/conditions``). The toggles select the runs whose :func:`condition_of` matches:
    ``relaxation`` (``"softmax"`` or ``"sigmoid"``), ``noise`` (noise on skip), ``skip_in_set``
    (skip_connect among the candidates) and ``zero_one`` (zero-one loss weight > 0, or = 0; ``None``:
    whichever is recorded, preferring the relaxation's own: w > 0 for sigmoid, as Fair DARTS, w = 0 for
    softmax, as DARTS). Runs with an empty history are left out.

    Returns ``condition`` and ``label`` (the selection), ``recorded`` (whether any run matches),
    ``recorded_conditions`` (labels of every condition in ``runs``), and per matching run, sorted by seed:
    ``seeds``, ``paths``, ``epochs``, ``dominant`` (``{op: [edges it dominates at each epoch]}``,
    :func:`fairdarts_core.analysis.dominant_op_counts`), ``skips`` (skip edges of the derived cell per
    epoch), ``hessian`` (the dominant Hessian eigenvalue per epoch, ``None`` where not recorded) and
    ``final_skips``; plus ``primitives``, ``n_edges``, ``hessian_recorded`` and ``verdict`` (one line).
    A combination that no run recorded gives ``recorded=False`` and a verdict that lists what is recorded;
    only toggle values that name no condition raise ``ValueError``."""
    from .analysis import dominant_op_counts

    _check_toggles(relaxation, noise, skip_in_set, zero_one)
    runs = [r for r in runs if r.history]
    recorded = [condition_label(c) for c in recorded_conditions(runs)]

    def matching(z: bool) -> list:
        want = {"relaxation": relaxation, "zero_one": z, "noise": bool(noise), "skip_in_set": bool(skip_in_set)}
        return [r for r in runs if condition_of(r.config) == want]

    if zero_one is None:
        preferred = relaxation == "sigmoid"
        chosen = preferred if matching(preferred) or not matching(not preferred) else not preferred
    else:
        chosen = bool(zero_one)
    condition = {"relaxation": relaxation, "zero_one": chosen, "noise": bool(noise), "skip_in_set": bool(skip_in_set)}
    selected = sorted(matching(chosen), key=lambda r: int(getattr(r.config, "seed", 0)))
    state: Dict[str, Any] = {
        "condition": condition, "label": condition_label(condition), "recorded": bool(selected),
        "recorded_conditions": recorded, "seeds": [], "paths": [], "epochs": [], "dominant": [], "skips": [],
        "hessian": [], "final_skips": [], "primitives": [], "n_edges": 0, "hessian_recorded": False,
    }
    for run in selected:
        cell = _run_cell(run.config)
        primitives = [str(p) for p in run.config.primitives]
        counts = dominant_op_counts(run.history, primitives, cell)
        skips = _skip_series(run.history, counts, cell)
        state["seeds"].append(int(getattr(run.config, "seed", 0)))
        path = getattr(run, "path", None)
        state["paths"].append(None if path is None else str(path))
        state["epochs"].append([int(r.get("epoch", i + 1)) for i, r in enumerate(run.history)])
        state["dominant"].append(counts)
        state["skips"].append(skips)
        state["hessian"].append(_hessian_series(run.history))
        state["final_skips"].append(skips[-1])
        state["primitives"] = primitives
        state["n_edges"] = max(state["n_edges"], len(run.history[-1][f"{cell}_weight"]))
    state["hessian_recorded"] = any(v is not None for series in state["hessian"] for v in series)
    state["verdict"] = condition_explorer_text(state)
    return state


def _mean_hessian(state: Dict[str, Any], where: int) -> Optional[float]:
    """Mean over the seeds of the first (``where=0``) or last (``-1``) recorded Hessian eigenvalue."""
    values = []
    for series in state["hessian"]:
        known = [v for v in series if v is not None]
        if known:
            values.append(known[where])
    return float(np.mean(values)) if values else None


def condition_explorer_text(state: Dict[str, Any]) -> str:
    """One line about a condition: the skip edges its seeds end with, and how the Hessian eigenvalue moved."""
    label = state["label"]
    if not state["recorded"]:
        why = (" (noise on skip needs skip_connect in the set)"
               if state["condition"]["noise"] and not state["condition"]["skip_in_set"] else "")
        recorded = ", ".join(state["recorded_conditions"]) or "none yet"
        return f"no recorded search for '{label}'{why}; recorded conditions: {recorded}."
    n, seeds = state["n_edges"], state["seeds"]
    finals = ", ".join(map(str, state["final_skips"]))
    plural = "s" if len(seeds) > 1 else ""
    if not state["condition"]["skip_in_set"]:
        skip = "skip_connect is not a candidate, so no derived cell has a skip edge"
    else:
        mean = float(np.mean(state["final_skips"]))
        trend = ("skip takes over" if mean >= n / 2 else "no skip edge" if max(state["final_skips"]) == 0
                 else "skip stays a minority")
        edges = "edge" if state["final_skips"] == [1] else "edges"
        skip = f"the derived cell ends with {finals} skip {edges} of {n} ({trend})"
    first, last = _mean_hessian(state, 0), _mean_hessian(state, -1)
    if first is None:
        hessian = "the Hessian eigenvalue was not recorded"
    else:
        hessian = f"the Hessian eigenvalue goes from {first:.3g} to {last:.3g} (mean over the seeds)"
    return f"{label}, {len(seeds)} seed{plural} ({', '.join(map(str, seeds))}): {skip}; {hessian}."


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="gray", wrap=True)


HESSIAN_LINTHRESH = 1.0
"""The Hessian eigenvalue is drawn on a symmetric log scale, linear within +-1: single-batch estimates span
from large negative values (early, near a saddle) to tens."""


def condition_explorer_figure(state: Dict[str, Any], axes=None, title: Optional[str] = None):
    """Two panels for one condition, one line per seed: (a) the skip edges of the derived cell per epoch
    (lines nudged apart by a few hundredths of an edge so that equal counts stay visible), (b) the dominant
    Hessian eigenvalue per epoch (RobustDARTS's collapse indicator) on a symmetric log scale
    (:data:`HESSIAN_LINTHRESH`), with a note where it was not recorded. ``axes``: two matplotlib axes to draw into (default: a new figure). Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2))
    else:
        fig = axes[0].figure
    ax_skip, ax_hess = axes[0], axes[1]
    color = _condition_color(state["condition"])
    n_seeds = len(state["seeds"])
    for i, seed in enumerate(state["seeds"]):
        style = dict(color=color, linestyle=_SEED_STYLES[i % len(_SEED_STYLES)],
                     marker=_SEED_MARKERS[i % len(_SEED_MARKERS)], markersize=3, linewidth=1.4,
                     label=f"seed {seed}")
        nudge = 0.06 * (i - (n_seeds - 1) / 2)
        ax_skip.plot(state["epochs"][i], [s + nudge for s in state["skips"][i]], **style)
        known = [(e, v) for e, v in zip(state["epochs"][i], state["hessian"][i]) if v is not None]
        if known:
            ax_hess.plot([e for e, _ in known], [v for _, v in known], **style)
    n = state["n_edges"] or 6
    ax_skip.set_ylim(-0.3, n + 0.3)
    ax_skip.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_skip.set_ylabel(f"skip edges (of {n})")
    for ax in (ax_skip, ax_hess):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
    ax_hess.set_ylabel("Hessian eigenvalue")
    if state["hessian_recorded"]:  # symmetric log: early estimates can be large and negative (a saddle)
        ax_hess.set_yscale("symlog", linthresh=HESSIAN_LINTHRESH)
    else:
        ax_hess.tick_params(left=False, labelleft=False)  # per axes: a shared y axis keeps its ticks elsewhere
    if not state["recorded"]:
        _note(ax_skip, f"no recorded search for\n'{state['label']}'")
        _note(ax_hess, "nothing recorded")
    else:
        ax_hess.set_xlim(ax_skip.get_xlim())
        if not state["condition"]["skip_in_set"]:
            ax_skip.text(0.5, 0.6, "skip_connect is not a candidate", transform=ax_skip.transAxes, ha="center",
                         fontsize=8, color="gray")
        if not state["hessian_recorded"]:
            _note(ax_hess, "the Hessian eigenvalue\nwas not recorded for these runs")
        ax_skip.legend(fontsize=7, frameon=False, loc="best")
    ax_skip.set_title(title or f"{state['label']}: skip edges of the derived cell", fontsize=9)
    ax_hess.set_title("dominant Hessian eigenvalue (w.r.t. alpha)", fontsize=9)
    fig.tight_layout()
    return fig, axes


def _condition_verdict_html(state: Dict[str, Any]) -> str:
    text = state["verdict"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<p>{text}</p>"


_RELAXATION_OPTIONS = (("softmax", ("softmax", None)), ("sigmoid + zero-one", ("sigmoid", True)),
                       ("sigmoid, w=0", ("sigmoid", False)))


def condition_explorer(runs: Sequence[Any], relaxation: str = "softmax", noise: bool = False,
                       skip_in_set: bool = True, title: str = "One search, several conditions"):
    """Toggles for the condition (relaxation: softmax, sigmoid with the zero-one loss, or sigmoid with
    weight 0; noise on skip; skip_connect in the set) that redraw :func:`condition_explorer_figure` of the
    recorded runs of that condition and its verdict. Returns an ``ipywidgets.VBox`` (``box.state()``
    gives the numbers; ``box.relaxation``, ``box.noise``, ``box.skip`` are the controls).

    The figure is an image widget, so the view saved with the notebook (and the built book) shows the
    starting condition."""
    import ipywidgets as W

    runs = list(runs)
    options = dict(_RELAXATION_OPTIONS)
    start = {"softmax": "softmax", "sigmoid": "sigmoid + zero-one"}.get(relaxation, relaxation)
    if start not in options:
        names = ", ".join(map(repr, dict.fromkeys(("softmax", "sigmoid", *options))))
        raise ValueError(f"relaxation must be one of {names}, got {relaxation!r}")
    condition_explorer_state(runs, options[start][0], noise, skip_in_set, options[start][1])  # validates once
    choice = W.ToggleButtons(options=[name for name, _ in _RELAXATION_OPTIONS], value=start,
                             description="relaxation", style={"button_width": "140px"})
    noise_box = W.Checkbox(value=bool(noise), description="noise on skip", indent=False)
    skip_box = W.Checkbox(value=bool(skip_in_set), description="skip_connect in the set", indent=False)
    plot = W.Image(format="png", layout=W.Layout(width="720px", max_width="100%"))
    verdict = W.HTML()

    def current() -> Dict[str, Any]:
        relax, zero_one = options[choice.value]
        return condition_explorer_state(runs, relax, noise_box.value, skip_box.value, zero_one)

    def update(_=None) -> None:
        state = current()
        verdict.value = _condition_verdict_html(state)
        plot.value = _png(condition_explorer_figure(state)[0])

    for control in (choice, noise_box, skip_box):
        control.observe(update, "value")
    update()
    box = W.VBox([W.HTML(f"<b>{title}</b>"), choice, W.HBox([noise_box, skip_box]), verdict, plot])
    box.state, box.relaxation, box.noise, box.skip = current, choice, noise_box, skip_box
    return box


def condition_explorer_static(runs: Sequence[Any], conditions: Optional[Sequence[Dict[str, Any]]] = None):
    """The static twin of :func:`condition_explorer`: one row per condition (default: every recorded one,
    in the chapter's order), the skip edges of the derived cell and the Hessian eigenvalue per epoch in two
    columns, every seed a line; the Hessian panels share their y axis, so the growth of the indicator
    compares across conditions. Returns ``(figure, axes)`` (axes: a ``(rows, 2)`` array); with no recorded
    run, one row that says so."""
    import matplotlib.pyplot as plt

    runs = list(runs)
    conditions = list(recorded_conditions(runs) if conditions is None else conditions)
    rows = max(1, len(conditions))
    fig, axes = plt.subplots(rows, 2, figsize=(9.0, 2.4 * rows + 0.4), squeeze=False, sharex="col")
    if not conditions:
        for ax in axes[0]:
            _note(ax, "no recorded search runs yet")
        return fig, axes
    states = [condition_explorer_state(runs, c["relaxation"], c["noise"], c["skip_in_set"], c["zero_one"])
              for c in conditions]
    with_hessian = [row[1] for row, state in zip(axes, states) if state["hessian_recorded"]]
    for ax in with_hessian[1:]:
        ax.sharey(with_hessian[0])
    for i, (row, state) in enumerate(zip(axes, states)):
        condition_explorer_figure(state, axes=row, title=state["label"])
        if i < len(states) - 1:
            for ax in row:
                ax.set_xlabel("")
        if i > 0:
            row[1].set_title("")
    fig.tight_layout()
    return fig, axes



# --- the gap explorer (chapter 4): the zero-one weight and the threshold ----------------------------------

def ablation_of(config) -> str:
    """The zero-one setting of a search, as chapter 4 names it: ``"softmax"`` (DARTS), ``"sigmoid, w=0"``
    (no zero-one loss), or ``"sigmoid, L2 w=10"`` (the paper's) and its variants."""
    if config.relaxation == "softmax":
        return "softmax"
    if not config.zero_one_weight:
        return "sigmoid, w=0"
    return f"sigmoid, {config.zero_one_kind.upper()} w={config.zero_one_weight:g}"


def _ablation_order(config) -> tuple:
    return (config.relaxation != "softmax", config.zero_one_kind != "l2", float(config.zero_one_weight))


def recorded_ablations(runs: Sequence[Any]) -> List[str]:
    """The zero-one settings of ``runs`` (searches with ``.config``), softmax first, then by kind and weight."""
    first = {}
    for run in sorted(runs, key=lambda r: _ablation_order(r.config)):
        first.setdefault(ablation_of(run.config), run)
    return list(first)


def _final_weights(run) -> List[np.ndarray]:
    from .spaces import get_space

    last = run.history[-1]
    return [np.asarray(last[name], dtype=np.float64) for name in get_space(run.config.space).weight_names]


def _derive_at(run, threshold: float):
    """The cell ``run``'s derive rule gives from its final weights at ``threshold`` (softmax: DARTS's rule,
    which has no threshold), the number of ops it keeps, and the mean distance of the final weights from
    the cell's 0/1 weights (:func:`fairdarts_core.analysis.distance_from_cell`)."""
    import dataclasses

    from .analysis import distance_from_cell
    from .spaces import get_space

    space = get_space(run.config.space)
    config = dataclasses.replace(run.config, threshold=float(threshold))
    final = _final_weights(run)
    genotype = space.derive(final, config, space.derive_method(config))
    discrete = space.discrete_weights(genotype, run.config.primitives)
    return genotype, int(sum(m.sum() for m in discrete)), distance_from_cell(final, discrete)


def _threshold_key(threshold: float) -> str:
    return f"{threshold:.2f}"


def gap_explorer_state(runs: Sequence[Any], setting: str, threshold: float = 0.85) -> Dict[str, Any]:
    """What the recorded searches of one zero-one ``setting`` (:func:`ablation_of`) give at ``threshold``.

    ``runs``: recorded searches with ``track_gap`` (``.config``, ``.history``; e.g.
    :func:`fairdarts_core.runs.load_search_run` of ``data/runs/ablation/*``). Per matching run, sorted by
    seed: ``seeds``, ``weights`` (its final relaxed weights, every cell, flattened), ``cells`` (the derived
    cell at ``threshold``, as text), ``kept`` (ops it keeps), ``relaxed_acc``, ``rounded_acc`` and
    ``discrete_acc`` (the held-out accuracy of the trained supernet with its relaxed weights, rounded to 0/1
    at ``threshold``, and with the derived cell's weights: the run's recorded threshold sweep; ``None`` where
    it recorded none at this threshold), ``distance`` (mean
    distance of the final weights from 0/1), ``from_cell`` (their mean distance from the derived cell's
    0/1 weights), ``epochs`` / ``relaxed_series`` / ``rounded_series`` / ``discrete_series`` (after every
    epoch, at the run's own threshold), ``sweep`` / ``rounded_sweep`` (``{threshold: accuracy}`` of the cell
    / of the rounded weights).
    ``uses_threshold`` is False for softmax (DARTS keeps the strongest ops, whatever their weight)."""
    from .analysis import distance_from_binary

    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1]; got {threshold!r}")
    runs = [r for r in runs if r.history and "gap" in r.history[-1]]
    settings = recorded_ablations(runs)
    selected = sorted((r for r in runs if ablation_of(r.config) == setting), key=lambda r: int(r.config.seed))
    if not selected:
        raise ValueError(f"no recorded search with the zero-one setting {setting!r}; recorded: "
                         f"{', '.join(map(repr, settings)) or 'none'}")
    uses_threshold = selected[0].config.relaxation == "sigmoid"
    state: Dict[str, Any] = {"setting": setting, "threshold": float(threshold), "uses_threshold": uses_threshold,
                             "settings": settings, "seeds": [], "weights": [], "cells": [], "kept": [],
                             "relaxed_acc": [], "rounded_acc": [], "discrete_acc": [], "distance": [], "from_cell": [],
                             "epochs": [], "relaxed_series": [], "rounded_series": [], "discrete_series": [],
                             "sweep": [], "rounded_sweep": []}
    for run in selected:
        last = run.history[-1]
        genotype, kept, from_cell = _derive_at(run, threshold)
        recorded = {float(t): v for t, v in last.get("gap_by_threshold", {}).items()}
        sweep = {t: v["discrete_acc"] for t, v in recorded.items()}
        rounded_sweep = {t: v.get("rounded_acc") for t, v in recorded.items()}
        if uses_threshold:
            at = recorded.get(round(float(threshold), 2), {})
            discrete, rounded = at.get("discrete_acc"), at.get("rounded_acc")
            if not at and abs(threshold - run.config.threshold) < 1e-9:
                discrete, rounded = last["gap"]["discrete_acc"], last["gap"].get("rounded_acc")
        else:
            discrete, rounded = last["gap"]["discrete_acc"], last["gap"].get("rounded_acc")
        state["seeds"].append(int(run.config.seed))
        state["weights"].append(np.concatenate([w.ravel() for w in _final_weights(run)]))
        state["cells"].append(str(genotype) if hasattr(genotype, "ops") else genotype.describe())
        state["kept"].append(kept)
        state["relaxed_acc"].append(float(last["gap"]["relaxed_acc"]))
        state["discrete_acc"].append(None if discrete is None else float(discrete))
        state["rounded_acc"].append(None if rounded is None else float(rounded))
        state["distance"].append(distance_from_binary(_final_weights(run)))
        state["from_cell"].append(from_cell)
        state["epochs"].append([int(r["epoch"]) for r in run.history if "gap" in r])
        state["relaxed_series"].append([float(r["gap"]["relaxed_acc"]) for r in run.history if "gap" in r])
        state["discrete_series"].append([float(r["gap"]["discrete_acc"]) for r in run.history if "gap" in r])
        state["rounded_series"].append([r["gap"].get("rounded_acc") for r in run.history if "gap" in r])
        state["sweep"].append(sweep)
        state["rounded_sweep"].append(rounded_sweep)
    state["verdict"] = gap_explorer_text(state)
    return state


def gap_explorer_text(state: Dict[str, Any]) -> str:
    """One line: how far the final weights are from 0/1, what the cell keeps and what discretizing costs."""
    where = f"at threshold {state['threshold']:.2f}" if state["uses_threshold"] else "(DARTS's rule: no threshold)"
    def acc(x: Optional[float]) -> str:
        return "(not recorded)" if x is None else f"{x:.3f}"

    gaps = [f"{acc(r)} -> {acc(o)} -> {acc(d)}"
            for r, o, d in zip(state["relaxed_acc"], state["rounded_acc"], state["discrete_acc"])]
    return (f"{state['setting']}, seeds {', '.join(map(str, state['seeds']))}: {where} the cell keeps "
            f"{', '.join(map(str, state['kept']))} ops, the final weights lie {np.mean(state['from_cell']):.3f} from "
            f"its 0/1 weights on average; held-out accuracy relaxed -> rounded -> cell: {'; '.join(gaps)}.")


def gap_explorer_figure(state: Dict[str, Any], axes=None, title: Optional[str] = None):
    """Three panels: the final weights' histogram (every seed pooled, the threshold dashed), the held-out
    accuracy of the relaxed and of the discretized supernet after every epoch (every seed a line), and the
    discretized accuracy against the threshold (the recorded sweep; softmax: a note). Returns
    ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    from .viz import plot_weight_histograms

    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 2.8))
    fig = axes[0].figure
    plot_weight_histograms({title or state["setting"]: state["weights"]},
                           state["threshold"] if state["uses_threshold"] else None, axes=[axes[0]])
    ax = axes[1]
    for i, seed in enumerate(state["seeds"]):
        style = _SEED_STYLES[i % len(_SEED_STYLES)]
        ax.plot(state["epochs"][i], state["relaxed_series"][i], style, color="#4c72b0",
                label="relaxed" if i == 0 else None)
        rounded = state["rounded_series"][i]
        if any(v is not None for v in rounded):
            ax.plot(state["epochs"][i], [np.nan if v is None else v for v in rounded], style, color="#55a868",
                    label="rounded" if i == 0 else None)
        ax.plot(state["epochs"][i], state["discrete_series"][i], style, color="#c44e52",
                label="derived cell" if i == 0 else None)
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("before and after discretizing", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[2]
    if state["uses_threshold"] and any(state["sweep"]):
        for i, sweep in enumerate(state["sweep"]):
            ts = sorted(sweep)
            style = _SEED_STYLES[i % len(_SEED_STYLES)]
            ax.plot(ts, [sweep[t] for t in ts], style, marker="o", ms=3, color="#c44e52",
                    label=f"cell, seed {state['seeds'][i]}")
            rounded = state["rounded_sweep"][i]
            if any(rounded.get(t) is not None for t in ts):
                ax.plot(ts, [np.nan if rounded.get(t) is None else rounded[t] for t in ts], style, marker="s", ms=3,
                        color="#55a868", label=f"rounded, seed {state['seeds'][i]}")
            ax.axhline(state["relaxed_acc"][i], color="#4c72b0", lw=0.8, ls=_SEED_STYLES[i % len(_SEED_STYLES)])
        ax.axvline(state["threshold"], color="#c44e52", ls="--", lw=1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("threshold")
        ax.set_title("accuracy by threshold (blue: relaxed)", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    else:
        _note(ax, "softmax: DARTS keeps the strongest ops,\nwhatever their weight: no threshold"
              if not state["uses_threshold"] else "no threshold sweep recorded")
        ax.set_axis_off()
    fig.tight_layout()
    return fig, axes


def gap_explorer(runs: Sequence[Any], setting: Optional[str] = None, threshold: float = 0.85,
                 title: str = "The zero-one weight and the threshold"):
    """Buttons for the zero-one setting and a threshold slider (0.5 to 0.95) that redraw
    :func:`gap_explorer_figure` of the recorded searches and its verdict. Returns an ``ipywidgets.VBox``
    (``box.state()`` gives the numbers; ``box.setting`` and ``box.threshold`` are the controls)."""
    import ipywidgets as W

    runs = list(runs)
    settings = recorded_ablations([r for r in runs if r.history and "gap" in r.history[-1]])
    setting = setting if setting is not None else (settings[0] if settings else "softmax")
    gap_explorer_state(runs, setting, threshold)  # validates once
    choice = W.ToggleButtons(options=settings, value=setting, description="zero-one",
                             style={"button_width": "130px"})
    slider = W.FloatSlider(value=round(float(threshold), 2), min=0.5, max=0.95, step=0.05, description="threshold",
                           readout_format=".2f", continuous_update=False)
    plot = W.Image(format="png", layout=W.Layout(width="780px", max_width="100%"))
    verdict = W.HTML()

    def current() -> Dict[str, Any]:
        return gap_explorer_state(runs, choice.value, round(slider.value, 2))

    def update(_=None) -> None:
        state = current()
        slider.disabled = not state["uses_threshold"]
        verdict.value = f"<p>{state['verdict']}</p>".replace("->", "&rarr;")
        plot.value = _png(gap_explorer_figure(state)[0])

    for control in (choice, slider):
        control.observe(update, "value")
    update()
    box = W.VBox([W.HTML(f"<b>{title}</b>"), choice, slider, verdict, plot])
    box.state, box.setting, box.threshold = current, choice, slider
    return box


def gap_explorer_static(runs: Sequence[Any], settings: Optional[Sequence[str]] = None, threshold: float = 0.85):
    """The static twin of :func:`gap_explorer`: one row of :func:`gap_explorer_figure` per zero-one setting
    (default: every recorded one, softmax first) at ``threshold``. Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r.history and "gap" in r.history[-1]]
    settings = list(recorded_ablations(runs) if settings is None else settings)
    if not settings:
        raise ValueError("no recorded search tracked the gap (track_gap)")
    fig, axes = plt.subplots(len(settings), 3, figsize=(10.5, 2.6 * len(settings) + 0.3), squeeze=False)
    for row, setting in zip(axes, settings):
        gap_explorer_figure(gap_explorer_state(runs, setting, threshold), axes=row)
    fig.tight_layout()
    return fig, axes


# --- a live plot for a search in a notebook (chapter 5) ----------------------------------------------------

class LivePlot:
    """A callback for :func:`fairdarts_core.search.run_search` that redraws, after every epoch, the weight of
    every op (:func:`fairdarts_core.viz.plot_op_weights`) in place in the notebook (one output, updated
    through an IPython display handle, so the executed notebook keeps the last drawing).

    ``stop_after``: return ``False`` after that epoch, which stops the search there (resumable with
    ``resume=True``). ``show=False`` draws nothing (tests). ``history`` holds the records seen so far."""

    def __init__(self, primitives: Sequence[str], cell: str = "normal", threshold: Optional[float] = None,
                 stop_after: Optional[int] = None, show: bool = True):
        if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
            raise ValueError(f"stop_after must be a number of epochs >= 1 (or None); got {stop_after!r}")
        self.primitives, self.cell, self.threshold = list(primitives), cell, threshold
        self.stop_after, self.show = stop_after, show
        self.history: List[Dict[str, Any]] = []
        self._handle = None

    def figure(self):
        """The current drawing, ``(figure, axes)``."""
        from .viz import plot_op_weights

        return plot_op_weights(self.history, self.primitives, self.cell, threshold=self.threshold)

    def __call__(self, record: Dict[str, Any], model: Any = None) -> Optional[bool]:
        self.history.append(record)
        if self.show:
            import matplotlib.pyplot as plt
            from IPython.display import display

            fig, _ = self.figure()
            if self._handle is None:
                self._handle = display(fig, display_id=True)
            else:
                self._handle.update(fig)
            plt.close(fig)
        if self.stop_after is not None and int(record["epoch"]) >= self.stop_after:
            return False
        return None


# --- the edge history explorer (chapter 5): one edge's weights over a whole search ---------------------------

def edge_history_state(history: Sequence[Dict], primitives: Sequence[str], edge: str, cell: str = "normal",
                       threshold: float = 0.85) -> Dict[str, Any]:
    """The relaxed weight of every op on one ``edge`` (``"to<-from"``, e.g. ``"3<-1"``) of ``cell`` after
    every recorded epoch. Returns ``epochs``, ``series`` (op -> weights), ``edges`` (every edge name of the
    cell), ``crossed`` (op -> the first epoch at which its weight reached ``threshold`` and stayed there to
    the end; None if it never did), ``final`` (op -> last weight), ``strongest`` (the op with the largest
    final weight, never ``none``), and ``verdict``."""
    from .analysis import history_weights
    from .viz import edge_labels

    if not history:
        raise ValueError("the history is empty")
    W = np.asarray(history_weights(history, cell), dtype=np.float64)  # (epochs, edges, ops)
    names = [str(p) for p in primitives]
    if W.ndim != 3 or W.shape[2] != len(names):
        raise ValueError(f"the history's {cell}_weight matrices do not have {len(names)} columns")
    labels = edge_labels(W.shape[1])
    if edge not in labels:
        raise ValueError(f"no edge {edge!r} in the {cell} cell; its edges are {', '.join(labels)}")
    row = labels.index(edge)
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    series = {op: W[:, row, k].tolist() for k, op in enumerate(names)}
    crossed: Dict[str, Optional[int]] = {}
    for op, ws in series.items():
        above = np.asarray(ws) >= threshold
        first = len(above)  # the start of the last run of epochs at or above the threshold
        while first > 0 and above[first - 1]:
            first -= 1
        crossed[op] = epochs[first] if first < len(above) else None
    final = {op: ws[-1] for op, ws in series.items()}
    candidates = [op for op in names if op != "none"] or names
    strongest = max(candidates, key=lambda op: final[op])
    state = {"edge": edge, "edges": labels, "cell": cell, "epochs": epochs, "series": series, "final": final,
             "crossed": crossed, "strongest": strongest, "threshold": float(threshold)}
    state["verdict"] = edge_history_text(state)
    return state


def edge_history_text(state: Dict[str, Any]) -> str:
    """One line: the edge's strongest op at the end, and which ops end above the threshold since when."""
    on = [f"{op} (from epoch {e})" for op, e in sorted(state["crossed"].items(), key=lambda kv: (kv[1] is None, kv[1]))
          if e is not None]
    return (f"Edge {state['edge']}: {state['strongest']} ends strongest ({state['final'][state['strongest']]:.2f}); "
            + (f"{len(on)} ops end at or above {state['threshold']:.2f}: {', '.join(on)}." if on
               else f"no op ends at or above {state['threshold']:.2f}."))


def edge_history_figure(state: Dict[str, Any], ax=None, epoch: Optional[int] = None):
    """One line per op over the epochs, the threshold dashed, ``epoch`` (if given) marked. Returns
    ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    from .viz import op_color

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.0))
    else:
        fig = ax.figure
    for op, ws in state["series"].items():
        ax.plot(state["epochs"], ws, color=op_color(op), lw=1.6, label=op)
    ax.axhline(state["threshold"], color="grey", ls="--", lw=0.8)
    if epoch is not None:
        ax.axvline(epoch, color="black", lw=0.8, alpha=0.5)
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("relaxed weight")
    ax.set_title(f"edge {state['edge']} of the {state['cell']} cell", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig, ax


def edge_history_explorer(history: Sequence[Dict], primitives: Sequence[str], cell: str = "normal",
                          edge: Optional[str] = None, threshold: float = 0.85,
                          title: str = "One edge over the whole search"):
    """An edge selector and an epoch slider: the weight of every op of the chosen edge over the search
    (:func:`edge_history_figure`, the epoch marked) beside the cell derived at that epoch
    (:func:`epoch_explorer_state`, graphviz). Returns an ``ipywidgets.VBox`` (``box.state()``,
    ``box.edge``, ``box.epoch``)."""
    import ipywidgets as W

    from .viz import plot_cell

    labels = edge_history_state(history, primitives, edge or "2<-0", cell, threshold)["edges"]
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    choice = W.Dropdown(options=labels, value=edge or labels[0], description="edge")
    slider = W.IntSlider(value=epochs[-1], min=epochs[0], max=epochs[-1], description="epoch",
                         continuous_update=False)
    plot = W.Image(format="png", layout=W.Layout(width="620px", max_width="100%"))
    verdict, drawing = W.HTML(), W.HTML()

    def current() -> Dict[str, Any]:
        return edge_history_state(history, primitives, choice.value, cell, threshold)

    def update(_=None) -> None:
        state = current()
        verdict.value = f"<p>{state['verdict']}</p>"
        plot.value = _png(edge_history_figure(state, epoch=slider.value)[0])
        at = epoch_explorer_state(history, primitives, slider.value, cell)
        drawing.value = _scalable_svg(plot_cell(at["edges"], f"derived at epoch {slider.value}").pipe(format="svg").decode(),
                                      max_width="420px")

    for control in (choice, slider):
        control.observe(update, "value")
    update()
    box = W.VBox([W.HTML(f"<b>{title}</b>"), W.HBox([choice, slider]), verdict, plot, drawing])
    box.state, box.edge, box.epoch = current, choice, slider
    return box


def edge_history_static(history: Sequence[Dict], primitives: Sequence[str], cell: str = "normal",
                        threshold: float = 0.85, ncols: int = 7):
    """The static twin of :func:`edge_history_explorer`: one small panel per edge of ``cell``, one line per
    op, the threshold dashed, a panel's title naming the op that ends strongest. Returns ``(figure, axes)``."""
    import matplotlib.pyplot as plt

    from .viz import op_color

    labels = edge_history_state(history, primitives, "2<-0", cell, threshold)["edges"]
    nrows = int(np.ceil(len(labels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 1.5 * nrows + 0.7), sharex=True, sharey=True,
                             squeeze=False)
    for ax, label in zip(axes.flat, labels):
        state = edge_history_state(history, primitives, label, cell, threshold)
        for op, ws in state["series"].items():
            ax.plot(state["epochs"], ws, color=op_color(op), lw=1.2, label=op)
        ax.axhline(threshold, color="grey", ls="--", lw=0.6)
        on = state["final"][state["strongest"]] >= threshold
        ax.set_title(f"{label}: {state['strongest'] if on else '(none kept)'}", fontsize=7, pad=2)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="lower center", ncol=len(names), frameon=False)
    fig.supxlabel("epoch", fontsize=8, y=0.06)
    fig.suptitle(f"every edge of the {cell} cell over the search (dashed: threshold {threshold:.2f})", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig, axes


# --- the threshold explorer (chapter 5): which edges of a finished search survive a threshold ------------

def threshold_explorer_state(run: Any, threshold: float = 0.85) -> Dict[str, Any]:
    """What a finished Fair DARTS search of the DARTS space derives at ``threshold`` instead of its own.

    ``run``: a search with ``.config`` and ``.weights`` (:func:`fairdarts_core.runs.load_search_run`; the
    final relaxed weights). Its derive rule (``threshold_sparse``: the strongest op of an edge if its
    sigmoid reaches the threshold, then the two strongest such edges of a node) at ``threshold``. Per
    cell (``"normal"``, ``"reduce"``): ``edges`` (the kept ``(op, to, from)``), ``live`` (the intermediate
    nodes the inputs reach, :func:`fairdarts_core.genotype.live_nodes`), ``isolated`` (the others: the
    evaluation network drops them), ``edges_above`` (edges with an op other than ``none`` at or above the
    threshold, before the two-per-node rule) and ``ops_above``. Also ``genotype`` and ``verdict``."""
    import dataclasses

    from .genotype import live_nodes

    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a number in (0, 1); got {threshold!r}")
    config = run.config
    if config.space != "darts" or config.relaxation != "sigmoid":
        raise ValueError(f"the threshold explorer reads Fair DARTS searches of the DARTS space; {run.path} is a "
                         f"{config.relaxation} search of the {config.space} space")
    from .spaces import get_space

    space = get_space("darts")
    weights = [np.asarray(run.weights[name], dtype=np.float64) for name in space.weight_names]
    at = dataclasses.replace(config, threshold=float(threshold))
    genotype = space.derive(weights, at, space.derive_method(at))
    candidates = [k for k, op in enumerate(config.primitives) if op != "none"]
    state: Dict[str, Any] = {"threshold": float(threshold), "genotype": genotype, "path": str(run.path)}
    for kind, w in zip(("normal", "reduce"), weights):
        above = w[:, candidates] >= threshold
        live = live_nodes(genotype.cell(kind), genotype.steps)
        state[kind] = {"edges": list(genotype.cell(kind)), "live": live,
                       "isolated": [n for n in range(2, genotype.steps + 2) if n not in live],
                       "edges_above": int(above.any(axis=1).sum()), "ops_above": int(above.sum())}
    state["verdict"] = threshold_explorer_text(state)
    return state


def threshold_explorer_text(state: Dict[str, Any]) -> str:
    """One line per cell: the edges it keeps at the threshold, its live and isolated nodes."""
    lines = []
    for kind, name in (("normal", "normal cell"), ("reduce", "reduction cell")):
        c = state[kind]
        nodes = (f"live nodes {', '.join(map(str, c['live']))}" if c["live"] else "no live node") + (
            f"; isolated {', '.join(map(str, c['isolated']))}" if c["isolated"] else "")
        lines.append(f"At {state['threshold']:.2f} the {name} keeps {len(c['edges'])} edges ({nodes}); "
                     f"{c['edges_above']} edges have an op at or above the threshold ({c['ops_above']} ops).")
    return "\n".join(lines)


def threshold_explorer_static(run: Any, thresholds: Sequence[float] = (0.8, 0.85, 0.9), cell: str = "normal"):
    """The static twin of :func:`threshold_explorer`: one cell (``"normal"`` or ``"reduce"``) as derived at
    each threshold, side by side in one graphviz drawing (isolated nodes grey and dashed)."""
    from .viz import plot_cells

    if cell not in ("normal", "reduce"):
        raise ValueError(f"cell must be 'normal' or 'reduce'; got {cell!r}")
    states = [threshold_explorer_state(run, t) for t in thresholds]
    titles = [f"threshold {s['threshold']:.2f}: {len(s[cell]['edges'])} edges, {len(s[cell]['live'])} live nodes"
              for s in states]
    return plot_cells([s[cell]["edges"] for s in states], titles, steps=states[0]["genotype"].steps)


def threshold_explorer(run: Any, threshold: float = 0.85, title: str = "Which edges survive the threshold"):
    """A threshold slider (0.5 to 0.95) that redraws both derived cells of a finished search (isolated nodes
    grey) and says what each keeps. Returns an ``ipywidgets.VBox`` (``box.state()``; ``box.threshold``)."""
    import ipywidgets as W

    from .viz import plot_genotype

    threshold_explorer_state(run, threshold)  # validates once
    slider = W.FloatSlider(value=round(float(threshold), 2), min=0.5, max=0.95, step=0.05, description="threshold",
                           readout_format=".2f", continuous_update=False)
    verdict, drawing = W.HTML(), W.HTML()

    def current() -> Dict[str, Any]:
        return threshold_explorer_state(run, round(slider.value, 2))

    def update(_=None) -> None:
        state = current()
        verdict.value = "".join(f"<p>{line}</p>" for line in state["verdict"].splitlines())
        drawing.value = _scalable_svg(plot_genotype(state["genotype"]).pipe(format="svg").decode())

    slider.observe(update, "value")
    update()
    box = W.VBox([W.HTML(f"<b>{title}</b>"), slider, verdict, drawing])
    box.state, box.threshold = current, slider
    return box


# --- chapter 4: the ablation at a glance ----------------------------------------------------------------------

def ablation_summary(runs: Sequence[Any], retrains: Sequence[Any] = (), threshold: float = 0.85) -> List[Dict[str, Any]]:
    """One row per zero-one setting of recorded ablation searches (:func:`recorded_ablations`): the seeds,
    the share of weights left undecided (between 0.15 and 0.85), their distance from 0/1, the ops the cell
    keeps, the held-out accuracies (relaxed, rounded, the cell) per seed with the two gaps, and the test
    accuracies of the cells retrained from each search (``retrains``: :class:`~fairdarts_core.runs.TrainRun`
    values, matched by :func:`~fairdarts_core.runs.retrained_from`); ``empty`` marks a search whose normal
    cell keeps no edge (nothing to retrain)."""
    from .runs import retrained_from

    rows = []
    for setting in recorded_ablations(runs):
        s = gap_explorer_state(runs, setting, threshold)
        searches = sorted((r for r in runs if ablation_of(r.config) == setting), key=lambda r: r.config.seed)
        rows.append({
            "setting": setting, "seeds": len(s["seeds"]),
            "middle": float(np.mean([np.mean((w > 0.15) & (w < 0.85)) for w in s["weights"]])),
            "distance": float(np.mean(s["distance"])), "kept": float(np.mean(s["kept"])),
            "relaxed": s["relaxed_acc"], "rounded": s["rounded_acc"], "cell": s["discrete_acc"],
            "rounding_gaps": [r - o for r, o in zip(s["relaxed_acc"], s["rounded_acc"])],
            "cell_gaps": [r - d for r, d in zip(s["relaxed_acc"], s["discrete_acc"])],
            "retrained": [[t.test_acc for t in retrained_from(r, retrains)] for r in searches],
            "empty": [hasattr(r.genotype, "normal") and not r.genotype.normal for r in searches]})
    return rows


def ablation_table(rows: Sequence[Dict[str, Any]]) -> str:
    """:func:`ablation_summary`'s rows as one HTML table (per-seed values separated by ``/``)."""
    head = ["zero-one setting", "seeds", "weights in (0.15, 0.85)", "distance from 0/1", "ops the cell keeps",
            "held-out accuracy: relaxed", "rounded", "the cell", "the cell retrained (test accuracy)"]

    def per_seed(xs) -> str:
        return " / ".join("-" if x is None else f"{x:.3f}" for x in xs)

    def retrained(r) -> str:
        return " / ".join("no cell" if empty else f"{np.mean(t):.3f}" if t else "-"
                          for t, empty in zip(r["retrained"], r["empty"]))

    cell = "<td style='padding:2px 8px'>{}</td>"
    body = "".join("<tr>" + "".join(cell.format(v) for v in (
        r["setting"], r["seeds"], f"{r['middle']:.0%}", f"{r['distance']:.3f}", f"{r['kept']:.1f}",
        per_seed(r["relaxed"]), per_seed(r["rounded"]), per_seed(r["cell"]), retrained(r))) + "</tr>" for r in rows)
    return ("<table><tr>" + "".join(f"<th style='padding:2px 8px'>{h}</th>" for h in head) + "</tr>" + body
            + "</table>")


# --- chapter 6: the published cells ---------------------------------------------------------------------------

def zoo_browser_state(rows: Sequence[Dict[str, Any]], name: str) -> Dict[str, Any]:
    """The zoo row of cell ``name`` (``rows`` from :func:`fairdarts_core.analysis.zoo_table`) with its genotype
    and a ``verdict``: what it costs by our count and by the paper's, and what its authors report."""
    from . import zoo

    by_name = {r["arch"]: r for r in rows}
    if name not in by_name:
        raise ValueError(f"unknown cell {name!r}; the table holds {', '.join(by_name)}")
    r = by_name[name]
    published = []
    if r.get("published_flops_M"):
        published.append(f"{r['published_flops_M']:g}M FLOPs")
    if r.get("published_params_M"):
        counted = {"with_aux": "with", "without_aux": "without"}[r["params_match"]]
        published.append(f"{r['published_params_M']:g}M parameters (our count {counted} the auxiliary head)")
    if r.get("published_top1"):
        published.append(f"{r['published_top1']:.2f}% top-1 on CIFAR-10")
    verdict = (f"{name}: {r['flops_M']:.0f}M FLOPs (thop; FlopCounterMode / 2: {r['torch_flops_M']:.0f}M), "
               f"{r['params_M']:.2f}M parameters without the auxiliary head, {r['params_with_aux_M']:.2f}M with it. "
               + ("Published: " + ", ".join(published) + "." if published else "No published figures.")
               + (f" ({r['note']})" if r.get("note") else ""))
    return {**r, "genotype": zoo.get(name), "verdict": verdict}


def _zoo_card(state: Dict[str, Any]) -> str:
    from .viz import plot_genotype

    svg = _scalable_svg(plot_genotype(state["genotype"]).pipe(format="svg").decode(), "560px")
    return f"<div class='zoo-card'><h4>{state['arch']}</h4><p>{state['verdict']}</p>{svg}</div>"


def zoo_browser(rows: Sequence[Dict[str, Any]], name: Optional[str] = None, title: str = "The published cells"):
    """A drop-down over the published cells that shows the chosen one's drawing (both cells), its FLOPs and
    parameters by our two counts and its published figures. Returns an ``ipywidgets.VBox``
    (``box.state()``; ``box.choice``: the drop-down)."""
    import ipywidgets as W

    names = [r["arch"] for r in rows]
    zoo_browser_state(rows, name or names[0])  # validates once
    choice = W.Dropdown(options=names, value=name or names[0], description="cell")
    card = W.HTML()

    def current() -> Dict[str, Any]:
        return zoo_browser_state(rows, choice.value)

    def update(_=None) -> None:
        card.value = _zoo_card(current())

    choice.observe(update, "value")
    update()
    box = W.VBox([W.HTML(f"<b>{title}</b>"), choice, card])
    box.state, box.choice = current, choice
    return box


def zoo_gallery_static(rows: Sequence[Dict[str, Any]], names: Optional[Sequence[str]] = None) -> str:
    """The static twin of :func:`zoo_browser` for a built page: the card of every cell (or of ``names``), one
    under the other, as one HTML string."""
    names = list(names) if names is not None else [r["arch"] for r in rows]
    return "<div class='zoo-gallery'>" + "".join(_zoo_card(zoo_browser_state(rows, n)) for n in names) + "</div>"


__all__: List[str] = ["edge_explorer_state", "edge_explorer_text", "edge_explorer_figure", "edge_explorer",
                      "strongest_edge", "epoch_explorer_state", "epoch_explorer_text", "epoch_explorer_figure",
                      "epoch_explorer_cell", "epoch_explorer", "epoch_explorer_static",
                      "RELAXATION_CHOICES", "condition_of", "condition_label", "recorded_conditions",
                      "condition_explorer_state", "condition_explorer_text", "condition_explorer_figure",
                      "condition_explorer", "condition_explorer_static", "ablation_of", "recorded_ablations",
                      "gap_explorer_state", "gap_explorer_text", "gap_explorer_figure", "gap_explorer",
                      "gap_explorer_static", "threshold_explorer_state", "threshold_explorer_text",
                      "threshold_explorer_static", "threshold_explorer", "LivePlot", "edge_history_state",
                      "edge_history_text", "edge_history_figure", "edge_history_explorer", "edge_history_static",
                      "zoo_browser_state", "zoo_browser", "zoo_gallery_static", "ablation_summary", "ablation_table"]
