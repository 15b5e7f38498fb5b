"""Chapter 4's gap explorer (state, figures, widget) and the weight histograms, on hand-made histories whose
answers are known."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from fairdarts_core.nb201 import NB201_OPS
from fairdarts_core.presets import get_search_preset
from fairdarts_core.search import GAP_THRESHOLDS
from fairdarts_core.viz import plot_weight_histograms
from fairdarts_core.widgets import (ablation_of, gap_explorer, gap_explorer_figure, gap_explorer_state,
                                    gap_explorer_static, recorded_ablations)

OPS = list(NB201_OPS)


def _run(preset: str, seed: int, weights: np.ndarray, relaxed_acc: float, sweep_acc=None, **overrides):
    """A 2-epoch NAS-Bench-201 search whose final cell weights are ``weights``; the recorded sweep gives the
    discretized accuracy ``sweep_acc(t)`` at threshold t (sigmoid only)."""
    config = get_search_preset(preset, seed=seed, track_gap=True, **overrides)
    history = []
    for epoch in (1, 2):
        gap = {"relaxed_acc": relaxed_acc - 0.1 * (2 - epoch), "discrete_acc": 0.3 + 0.1 * epoch,
               "rounded_acc": 0.45,
               "relaxed_loss": 1.0, "discrete_loss": 2.0, "distance_from_binary": 0.2}
        history.append({"epoch": epoch, "cell_weight": weights.tolist(), "gap": gap})
    if config.relaxation == "sigmoid":
        history[-1]["gap_by_threshold"] = {f"{t:.2f}": {"discrete_acc": sweep_acc(t), "discrete_loss": 1.0, "kept": 0,
                                                        "rounded_acc": sweep_acc(t) + 0.1, "rounded_loss": 1.0}
                                           for t in GAP_THRESHOLDS}
    return SimpleNamespace(config=config, history=history, path=None)


def _sigmoid_weights(on: float = 0.9, middle: float = 0.7) -> np.ndarray:
    W = np.full((6, len(OPS)), 0.05)
    W[0, OPS.index("nor_conv_3x3")] = on      # kept at every threshold up to 0.9
    W[1, OPS.index("skip_connect")] = middle  # kept up to 0.7
    return W


def _runs():
    soft = np.full((6, len(OPS)), 0.2)
    soft[:, OPS.index("nor_conv_1x1")] = 0.3
    return [
        _run("nb201-cpu", 1, _sigmoid_weights(), 0.8, lambda t: 0.8 - t / 2),
        _run("nb201-cpu", 0, _sigmoid_weights(0.95, 0.6), 0.7, lambda t: 0.7 - t / 4),
        _run("nb201-cpu", 0, _sigmoid_weights(0.6, 0.55), 0.6, lambda t: 0.5, zero_one_weight=0.0),
        _run("nb201-cpu", 0, _sigmoid_weights(), 0.6, lambda t: 0.5, zero_one_kind="l1"),
        _run("nb201-cpu", 0, _sigmoid_weights(), 0.6, lambda t: 0.5, zero_one_weight=100.0),
        _run("nb201-darts-cpu", 0, soft, 0.75),
        SimpleNamespace(config=get_search_preset("nb201-cpu", zero_one_weight=1.0), history=[], path=None),
    ]


def test_the_settings_are_named_and_ordered_softmax_first():
    runs = _runs()
    assert ablation_of(get_search_preset("nb201-cpu")) == "sigmoid, L2 w=10"
    assert ablation_of(get_search_preset("cpu", zero_one_kind="l1")) == "sigmoid, L1 w=10"
    assert recorded_ablations([r for r in runs if r.history]) == [
        "softmax", "sigmoid, w=0", "sigmoid, L2 w=10", "sigmoid, L2 w=100", "sigmoid, L1 w=10"]


def test_the_state_reads_the_cell_and_the_recorded_sweep_at_the_threshold():
    runs = _runs()
    state = gap_explorer_state(runs, "sigmoid, L2 w=10", 0.65)
    assert state["seeds"] == [0, 1] and state["uses_threshold"]
    assert state["kept"] == [1, 2]  # seed 0's skip (0.6) is below 0.65, seed 1's (0.7) is not
    assert "nor_conv_3x3~0" in state["cells"][0] and "skip_connect" not in state["cells"][0]
    assert state["discrete_acc"] == [pytest.approx(0.7 - 0.65 / 4), pytest.approx(0.8 - 0.65 / 2)]
    assert state["relaxed_acc"] == [0.7, 0.8]
    assert state["epochs"] == [[1, 2], [1, 2]] and state["discrete_series"][0] == [pytest.approx(0.4), 0.5]
    assert len(state["weights"][0]) == 6 * len(OPS)
    # seed 1 keeps its 0.9 and 0.7: 28 weights of 0.05 off by 0.05, those two by 0.1 and 0.3
    assert state["from_cell"][1] == pytest.approx((28 * 0.05 + 0.1 + 0.3) / 30)
    assert state["rounded_acc"] == [pytest.approx(0.8 - 0.65 / 4), pytest.approx(0.9 - 0.65 / 2)]
    assert state["rounded_series"][0] == [0.45, 0.45]
    assert "keeps 1, 2 ops" in state["verdict"] and "0.700 -> 0.63" in state["verdict"]
    high = gap_explorer_state(runs, "sigmoid, L2 w=10", 0.95)
    assert high["kept"] == [1, 0]  # only seed 0's 0.95 conv reaches 0.95
    off_grid = gap_explorer_state(runs, "sigmoid, L2 w=10", 0.62)
    assert off_grid["discrete_acc"] == off_grid["rounded_acc"] == [None, None] and "not recorded" in off_grid["verdict"]


def test_softmax_ignores_the_threshold():
    runs = _runs()
    a, b = (gap_explorer_state(runs, "softmax", t) for t in (0.5, 0.95))
    assert not a["uses_threshold"] and a["kept"] == b["kept"] == [6] and a["discrete_acc"] == [0.5]
    assert a["rounded_acc"] == [0.45]
    assert "no threshold" in a["verdict"]


def test_bad_choices_are_one_line_errors():
    runs = _runs()
    with pytest.raises(ValueError, match="no recorded search with the zero-one setting 'sigmoid, L2 w=1';"):
        gap_explorer_state(runs, "sigmoid, L2 w=1")  # only an empty run has it
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]"):
        gap_explorer_state(runs, "softmax", 1.5)
    with pytest.raises(ValueError, match="groups is empty"):
        plot_weight_histograms({})


def test_the_figures_and_the_widget():
    import matplotlib.pyplot as plt

    runs = _runs()
    fig, axes = gap_explorer_figure(gap_explorer_state(runs, "sigmoid, L2 w=10", 0.85))
    assert len(axes) == 3 and axes[0].lines[0].get_xdata()[0] == 0.85  # the threshold line
    plt.close(fig)
    fig, axes = gap_explorer_static(runs)
    assert axes.shape == (5, 3)
    plt.close(fig)
    fig, axes = plot_weight_histograms({"a": [np.array([0.0, 0.1, 0.5, 0.95])], "b": np.array([0.5, 0.5])})
    assert "25% of 4 in (0.15, 0.85)" in axes[0].get_title() and "100% of 2" in axes[1].get_title()
    plt.close(fig)
    box = gap_explorer(runs, threshold=0.7)
    assert box.setting.value == "softmax" and box.threshold.disabled
    box.setting.value = "sigmoid, L2 w=10"
    assert not box.threshold.disabled and box.state()["kept"] == [1, 2]
    box.threshold.value = 0.9
    assert box.state()["kept"] == [1, 1]


# --- chapter 4's summary of the recorded ablation ----------------------------------------------------------------

def test_the_ablation_summary_of_the_recorded_nb201_searches_and_their_retrainings():
    from pathlib import Path

    from fairdarts_core.runs import finished_runs, load_search_run, load_train_run
    from fairdarts_core.viz import plot_ablation_gaps, plot_ablation_retrained
    from fairdarts_core.widgets import ablation_summary, ablation_table

    runs_dir = Path(__file__).resolve().parent.parent / "data" / "runs"
    searches = [load_search_run(p) for p in finished_runs(runs_dir / "nb201_ablation")]
    retrains = [load_train_run(p) for p in finished_runs(runs_dir / "nb201_ablation_retrain")]
    rows = ablation_summary(searches, retrains)
    assert [r["setting"] for r in rows] == recorded_ablations(searches) and len(rows) == 6
    for r in rows:
        assert r["seeds"] == 2 and len(r["retrained"]) == 2 and all(len(t) == 1 for t in r["retrained"])
        assert r["rounding_gaps"] == [a - b for a, b in zip(r["relaxed"], r["rounded"])]
        assert not any(r["empty"])  # a NAS-Bench-201 cell always has its six edges
    by_setting = {r["setting"]: r for r in rows}
    assert all(acc == pytest.approx(0.1) for t in by_setting["sigmoid, w=0"]["retrained"] for acc in t)  # all `none`
    html = ablation_table(rows)
    assert html.count("<tr>") == 7 and "sigmoid, w=0" in html
    fig, axes = plot_ablation_gaps({"NAS-Bench-201": rows})
    assert len(axes) == 1 and len(axes[0].get_xticklabels()) == 6
    fig, axes, lines = plot_ablation_retrained({"NAS-Bench-201": rows}, {"NAS-Bench-201": [("extra", [[0.5]])]})
    assert len(lines) == 7 and lines[-1].split()[1] == "extra" and "0.500 (1 cells)" in lines[-1]
