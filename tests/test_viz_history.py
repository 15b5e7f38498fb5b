"""Chapter 2's plots, epoch explorer and exercise checkers, on hand-made histories and mechanism runs."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from fairdarts_core import viz, widgets
from fairdarts_core.exercises import check_dominant_counts, check_skip_share_per_epoch
from fairdarts_core.genotype import parse_cell
from fairdarts_core.ops import DARTS_OPS, FAIR_DARTS_OPS

OPS = list(FAIR_DARTS_OPS)  # max, avg, skip, sep3, sep5, dil3, dil5


def matrix(winners, ops=OPS, high=0.6, low=0.4 / 6):
    W = np.full((len(winners), len(ops)), low)
    for i, op in enumerate(winners):
        W[i, ops.index(op)] = high
    return W


def collapsing_history():
    """Three epochs: sep_conv_3x3 everywhere, then skip on 6 edges, then on 12 edges."""
    hist = []
    for e, n_skip in enumerate((0, 6, 12)):
        W = matrix(["skip_connect"] * n_skip + ["sep_conv_3x3"] * (14 - n_skip))
        cell = parse_cell(W, OPS, method="darts")
        hist.append({"epoch": e + 1, "normal_weight": W.tolist(), "reduce_weight": W.tolist(),
                     "genotype": {"normal": [list(x) for x in cell], "reduce": [list(x) for x in cell]},
                     "train_acc": 0.5 + 0.1 * e, "val_acc": 0.4 + 0.1 * e})
    return hist


def mechanism_run(depth, relaxation, seed, skip_final):
    records = []
    for step in (25, 50):
        w = np.full((depth, 2), 0.5)
        if step == 50:
            w[:, 0] = skip_final
            w[:, 1] = 1 - skip_final if relaxation == "softmax" else 0.6
        records.append({"step": step, "weights": w.tolist(), "train_acc": 0.7, "seconds": 1.0})
    return {"config": {"depth": depth, "ops": ["skip_connect", "conv_3x3"], "relaxation": relaxation, "seed": seed},
            "records": records}


def test_dominant_ops_stacked_area():
    hist = collapsing_history()
    fig, ax = viz.plot_dominant_ops(hist, OPS)
    polys = ax.collections
    assert len(polys) == len(OPS)  # one band per op (no 'none' in this op set)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(labels) == set(OPS)
    assert ax.get_ylim() == (0, 14)
    plt.close(fig)
    with pytest.raises(ValueError, match="empty"):
        viz.plot_dominant_ops([], OPS)


def test_dominant_ops_leaves_none_out():
    W = np.zeros((14, 8))
    W[:, 0] = 0.9  # 'none' largest everywhere
    W[:, 3] = 0.1  # then skip
    fig, ax = viz.plot_dominant_ops([{"epoch": 1, "normal_weight": W.tolist()}], DARTS_OPS)
    assert "none" not in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)


def test_edge_trajectories_numbers_and_plot():
    hist = collapsing_history()
    t = viz.edge_trajectories(hist, OPS)
    assert t["epoch"] == [1, 2, 3] and len(t["edges"]) == 14 and t["edges"][0] == "2<-0"
    assert t["skip"].shape == (3, 14) and t["conv"].shape == (3, 14)
    assert t["skip"][2, 0] == pytest.approx(0.6) and t["conv"][0, 0] == pytest.approx(0.6)
    assert t["conv_op"][0][0] == "sep_conv_3x3"
    fig, axes = viz.plot_edge_trajectories(hist, OPS)
    assert axes.size == 14
    shaded = [ax for ax in axes.flat if ax.get_facecolor()[:3] != (1.0, 1.0, 1.0)]
    assert len(shaded) == 12  # skip ahead at the end on 12 edges
    plt.close(fig)
    with pytest.raises(ValueError, match="skip_connect"):
        viz.edge_trajectories(hist, ["sep_conv_3x3"] * 7)
    with pytest.raises(ValueError, match="cell must be"):  # a ValueError, never a KeyError
        viz.edge_trajectories(hist, OPS, cell="middle")
    with pytest.raises(ValueError, match="record 1 has no 'reduce_weight'"):
        viz.edge_trajectories([{k: v for k, v in r.items() if k != "reduce_weight"} for r in hist], OPS, cell="reduce")


def test_weight_bars():
    W = matrix(["skip_connect"] * 14)
    fig, ax = viz.plot_weight_bars(W, OPS, title="t")
    assert len(ax.patches) == 14 * len(OPS)
    widths = np.array([p.get_width() for p in ax.patches]).reshape(len(OPS), 14)
    assert widths.sum(0) == pytest.approx(W.sum(1))
    plt.close(fig)
    with pytest.raises(ValueError, match="shape"):
        viz.plot_weight_bars(np.zeros((14, 3)), OPS)


def test_cells_side_by_side_with_skip_counts():
    hist = collapsing_history()
    cells = [r["genotype"]["normal"] for r in hist]
    g = viz.plot_cells(cells, ["start", "middle", "end"])
    src = g.source
    assert src.count("subgraph cluster_") == 3
    assert "0 skip_connect" in src and "start" in src and "end" in src
    n_end = sum(op == "skip_connect" for op, _, _ in cells[-1])
    assert f"{n_end} skip_connect" in src
    with pytest.raises(ValueError, match="titles"):
        viz.plot_cells(cells, ["one"])


def test_mechanism_plots():
    runs = [mechanism_run(d, rel, s, 0.3 + 0.01 * d + 0.01 * s) for d in (4, 16) for rel in ("softmax", "sigmoid")
            for s in (0, 1)]
    fig, ax = viz.plot_mechanism_depth(runs)
    lines = [l for l in ax.get_lines() if l.get_label().endswith("(mean over seeds)")]
    assert len(lines) == 2
    soft = [l for l in lines if l.get_label().startswith("softmax")][0]
    assert list(soft.get_xdata()) == [4, 16]
    assert soft.get_ydata()[1] == pytest.approx(0.3 + 0.16 + 0.005)  # mean of seeds 0 and 1
    plt.close(fig)
    fig, ax = viz.plot_mechanism_depth(runs, what="skip_share")
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.plot_mechanism_depth(runs, what="nonsense")
    fig, axes = viz.plot_mechanism_layers(runs[0])
    assert len(axes[0].get_lines()) == 4  # one line per layer
    assert len(axes[1].patches) == 2 * 4  # skip and conv bar per layer
    plt.close(fig)


def test_epoch_explorer_state_and_text():
    hist = collapsing_history()
    st = widgets.epoch_explorer_state(hist, OPS, 3)
    assert st["epoch"] == 3 and st["epochs"] == [1, 2, 3]
    assert st["dominant"]["skip_connect"] == 12 and st["dominant"]["sep_conv_3x3"] == 2
    assert st["skip_share"] == pytest.approx(12 / 14)
    assert st["skip_count"] == sum(op == "skip_connect" for op, _, _ in hist[2]["genotype"]["normal"])
    assert "epoch 3" in widgets.epoch_explorer_text(st)
    with pytest.raises(ValueError, match="not in the history"):
        widgets.epoch_explorer_state(hist, OPS, 7)
    with pytest.raises(ValueError, match="empty"):
        widgets.epoch_explorer_state([], OPS, 1)


def test_epoch_explorer_widget_redraws():
    hist = collapsing_history()
    box = widgets.epoch_explorer(hist, OPS)
    assert box.state()["epoch"] == 3  # starts at the last epoch
    drawing = box.children[-1].children[0]
    bars = box.children[-1].children[1]
    before_svg, before_png = drawing.value, bars.value
    assert before_svg.startswith("<svg") and bars.value[:4] == b"\x89PNG"
    box.slider.value = 1
    assert box.state()["epoch"] == 1
    assert drawing.value != before_svg and bars.value != before_png
    fig, axes = widgets.epoch_explorer_static(hist, OPS, [1, 3])
    assert len(axes) == 2
    plt.close(fig)


def _counts_ok(W, p):
    from fairdarts_core.analysis import dominant_ops
    w = dominant_ops(W, p)
    return {o: w.count(o) for o in p if o != "none"}


def _counts_with_none(W, p):
    k = np.argmax(W, axis=1)
    return {o: int((k == i).sum()) for i, o in enumerate(p)}


def _counts_fractions(W, p):
    return {o: v / 14 for o, v in _counts_ok(W, p).items()}


def _counts_wrong_axis(W, p):
    k = np.argmax(np.asarray(W)[:, [i for i, o in enumerate(p) if o != "none"]], axis=0)
    ops = [o for o in p if o != "none"]
    return {o: int((k == i).sum()) for i, o in enumerate(ops)}


def _not_written(W, p):
    raise NotImplementedError


def test_dominant_counts_checker():
    assert check_dominant_counts(_counts_ok).ok
    for fn, words in ((_counts_with_none, "'none'"), (_counts_fractions, "whole numbers"),
                      (_counts_wrong_axis, "add up"), (_not_written, "not written yet"),
                      (lambda W, p: [1, 2], "dict")):
        r = check_dominant_counts(fn)
        assert not r.ok and words in r.message, (fn, r.message)


def _share_ok(h, p):
    from fairdarts_core.analysis import history_series
    return history_series(h, p)["skip_share"]


def test_skip_share_checker():
    from fairdarts_core.analysis import history_series, op_weight
    assert check_skip_share_per_epoch(_share_ok).ok
    cases = [
        (lambda h, p: [14 * s for s in _share_ok(h, p)], "counts"),
        (lambda h, p: history_series(h, p, cell="reduce")["skip_share"], "reduction cell"),
        (lambda h, p: [float(op_weight(r["normal_weight"], p, "skip_connect").mean()) for r in h], "mean weight"),
        (lambda h, p: [float(np.mean(np.argmax(np.asarray(r["normal_weight"]), 1) == p.index("skip_connect")))
                       for r in h], "'none'"),
        (lambda h, p: _share_ok(h, p)[:-1], "numbers for a history"),
        (lambda h, p: 1 / 0, "ZeroDivisionError"),
    ]
    for fn, words in cases:
        r = check_skip_share_per_epoch(fn)
        assert not r.ok and words in r.message, (words, r.message)
    assert "&#10004;" in check_skip_share_per_epoch(_share_ok)._repr_html_()


def nb201_history():
    """Two NAS-Bench-201 epochs: convolutions and `none`, then skip on 5 of the 6 edges."""
    from fairdarts_core.nb201 import NB201_OPS, derive

    ops = list(NB201_OPS)
    hist = []
    for e, winners in enumerate((["nor_conv_3x3", "none", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "none"],
                                 ["skip_connect"] * 5 + ["none"])):
        W = matrix(winners, ops, high=0.5, low=0.125)
        g = derive(W, ops, "darts")
        hist.append({"epoch": e + 1, "cell_weight": W.tolist(), "genotype": g.to_dict(),
                     "skips": g.count("skip_connect"), "train_acc": 0.5, "val_acc": 0.5})
    return ops, hist


def test_nb201_history_plots_and_explorer():
    ops, hist = nb201_history()
    fig, ax = viz.plot_dominant_ops(hist, ops, cell="cell")
    assert ax.get_ylim() == (0, 6) and "NAS-Bench-201 cell" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "none"  # none is stacked too
    plt.close(fig)
    st = widgets.epoch_explorer_state(hist, ops, 2, cell="cell")
    assert st["skip_count"] == 5 and st["dominant"]["skip_connect"] == 5 and st["dominant"]["none"] == 1
    assert st["arch"] == "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|none~2|"
    assert "5 skip_connect of 6 edges" in widgets.epoch_explorer_text(st)
    svg = widgets.epoch_explorer_cell(st).pipe(format="svg").decode()
    assert svg.count(">skip_connect<") == 5 and "output" in svg
    fig, ax = widgets.epoch_explorer_figure(st)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    plt.close(fig)
    fig, axes = viz.plot_edge_trajectories(hist, ops, cell="cell", ncols=3)
    assert axes.shape == (2, 3) and axes[0, 0].get_title() == "1<-0"
    plt.close(fig)
    box = widgets.epoch_explorer(hist, ops, cell="cell")
    box.slider.value = 1
    assert box.state()["skip_count"] == 0


def test_op_weights_plot_draws_the_mean_and_the_band_of_every_op():
    hist = collapsing_history()
    fig, ax = viz.plot_op_weights(hist, OPS, threshold=0.85)
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == set(OPS)
    skip = np.asarray(lines["skip_connect"].get_ydata())
    assert skip == pytest.approx([0.4 / 6, (6 * 0.6 + 8 * 0.4 / 6) / 14, (12 * 0.6 + 2 * 0.4 / 6) / 14])
    band = ax.collections[OPS.index("skip_connect")].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.4 / 6) and band.max() == pytest.approx(0.6)  # weakest .. strongest edge
    assert any(line.get_ydata()[0] == 0.85 for line in ax.get_lines() if line.get_label().startswith("_"))
    plt.close(fig)
    with pytest.raises(ValueError, match="empty"):
        viz.plot_op_weights([], OPS)
    with pytest.raises(ValueError, match="do not have 3 columns"):
        viz.plot_op_weights(hist, OPS[:3])


def test_live_plot_keeps_the_records_redraws_in_place_and_stops_when_asked(monkeypatch):
    shown = []

    class Handle:
        def update(self, fig):
            shown.append(("update", fig))

    def display(fig, display_id=False):
        shown.append(("display", fig))
        return Handle()

    import IPython.display

    monkeypatch.setattr(IPython.display, "display", display)
    live = widgets.LivePlot(OPS, threshold=0.85, stop_after=2)
    hist = collapsing_history()
    assert live(hist[0], None) is None
    assert live(hist[1], None) is False  # stop after epoch 2
    assert live.history == hist[:2] and [kind for kind, _ in shown] == ["display", "update"]
    quiet = widgets.LivePlot(OPS, show=False)
    assert all(quiet(r) is None for r in hist) and len(shown) == 2
    assert quiet.figure()[1].get_lines()[0].get_xdata().tolist() == [1, 2, 3]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="stop_after must be a number of epochs >= 1"):
            widgets.LivePlot(OPS, stop_after=bad)
