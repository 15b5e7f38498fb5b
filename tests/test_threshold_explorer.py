"""Chapter 5's threshold explorer: which edges of a finished Fair DARTS search survive a threshold, on a
hand-made search whose answer is known and on a recorded one."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fairdarts_core.genotype import edge_index
from fairdarts_core.ops import FAIR_DARTS_OPS
from fairdarts_core.presets import get_search_preset
from fairdarts_core.runs import load_search_run
from fairdarts_core.widgets import (threshold_explorer, threshold_explorer_state, threshold_explorer_static,
                                    threshold_explorer_text)

ROOT = Path(__file__).resolve().parent.parent
ROWS = {edge: r for r, edge in enumerate(edge_index())}


def _search(normal_on, reduce_on=(), relaxation="sigmoid"):
    """A finished search of the DARTS space whose sigmoids are 0.1 except ``{(op, to, from): weight}``."""
    weights = {}
    for name, on in (("normal_weight", normal_on), ("reduce_weight", reduce_on)):
        w = np.full((len(ROWS), len(FAIR_DARTS_OPS)), 0.1, dtype=np.float32)
        for (op, to, src), value in dict(on).items():
            w[ROWS[(to, src)], FAIR_DARTS_OPS.index(op)] = value
        weights[name] = w
    config = get_search_preset("cpu", relaxation=relaxation)
    return SimpleNamespace(config=config, weights=weights, path=Path("hand-made"))


NORMAL = {("sep_conv_3x3", 2, 0): 0.92, ("skip_connect", 2, 1): 0.86, ("max_pool_3x3", 2, 1): 0.87,
          ("dil_conv_3x3", 3, 2): 0.97, ("sep_conv_5x5", 4, 0): 0.5}


def test_the_kept_edges_live_and_isolated_nodes_follow_the_threshold():
    run = _search(NORMAL, {("avg_pool_3x3", 2, 0): 0.99})
    at_85 = threshold_explorer_state(run, 0.85)
    assert sorted(at_85["normal"]["edges"]) == sorted([("sep_conv_3x3", 2, 0), ("max_pool_3x3", 2, 1),
                                                       ("dil_conv_3x3", 3, 2)])  # the stronger op of edge 2<-1
    assert at_85["normal"]["live"] == [2, 3] and at_85["normal"]["isolated"] == [4, 5]
    assert at_85["normal"]["edges_above"] == 3 and at_85["normal"]["ops_above"] == 4
    assert at_85["reduce"]["edges"] == [("avg_pool_3x3", 2, 0)] and at_85["reduce"]["live"] == [2]
    at_90 = threshold_explorer_state(run, 0.9)
    assert sorted(at_90["normal"]["edges"]) == [("dil_conv_3x3", 3, 2), ("sep_conv_3x3", 2, 0)]
    # at 0.95 only the edge 3 <- 2 stays, and node 2 has no input left: node 3 is isolated too
    at_95 = threshold_explorer_state(run, 0.95)
    assert at_95["normal"]["edges"] == [("dil_conv_3x3", 3, 2)] and at_95["normal"]["live"] == []
    assert "no live node; isolated 2, 3, 4, 5" in at_95["verdict"]
    at_50 = threshold_explorer_state(run, 0.5)
    assert at_50["normal"]["live"] == [2, 3, 4] and at_50["normal"]["edges_above"] == 4


def test_the_verdict_has_one_line_per_cell():
    text = threshold_explorer_text(threshold_explorer_state(_search(NORMAL), 0.85))
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0] == ("At 0.85 the normal cell keeps 3 edges (live nodes 2, 3; isolated 4, 5); 3 edges have an op "
                        "at or above the threshold (4 ops).")
    assert lines[1].startswith("At 0.85 the reduction cell keeps 0 edges (no live node; isolated 2, 3, 4, 5)")


def test_a_recorded_search_is_derived_at_its_own_threshold_as_recorded():
    run = load_search_run(ROOT / "data" / "runs" / "ablation" / "w100_s0")
    state = threshold_explorer_state(run, run.config.threshold)
    assert state["genotype"] == run.genotype
    assert len(state["normal"]["edges"]) == len(run.genotype.normal)


def test_bad_input_is_refused_in_one_line():
    for bad in (0, 1, 1.5, "0.8", True, float("nan")):
        with pytest.raises(ValueError, match="threshold must be a number in") as info:
            threshold_explorer_state(_search(NORMAL), bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="reads Fair DARTS searches of the DARTS space; hand-made is a softmax search"):
        threshold_explorer_state(_search(NORMAL, relaxation="softmax"), 0.85)
    with pytest.raises(ValueError, match="cell must be 'normal' or 'reduce'"):
        threshold_explorer_static(_search(NORMAL), cell="both")


def test_the_static_drawing_has_one_box_per_threshold():
    source = threshold_explorer_static(_search(NORMAL), (0.85, 0.95)).source
    assert "threshold 0.85: 3 edges, 2 live nodes" in source and "threshold 0.95: 1 edges, 0 live nodes" in source
    assert source.count("cluster_") == 2


def test_the_widget_redraws_when_the_threshold_moves():
    box = threshold_explorer(_search(NORMAL), 0.85)
    verdict, drawing = box.children[2], box.children[3]
    assert "keeps 3 edges" in verdict.value and "<svg" in drawing.value
    before = drawing.value
    box.threshold.value = 0.95
    assert box.state()["threshold"] == 0.95 and "keeps 1 edges" in verdict.value and drawing.value != before


# --- the edge history explorer ---------------------------------------------------------------------------------
def _history(epochs=4):
    """Edge 3<-1 (row 3): sep_conv_3x3 rises 0.5, 0.7, 0.9, 0.95; skip 0.9, 0.9, 0.6, 0.9 (on, off, on again)."""
    sep = [0.5, 0.7, 0.9, 0.95]
    skip = [0.9, 0.9, 0.6, 0.9]
    history = []
    for e in range(epochs):
        w = np.full((14, len(FAIR_DARTS_OPS)), 0.2)
        w[3, FAIR_DARTS_OPS.index("sep_conv_3x3")] = sep[e]
        w[3, FAIR_DARTS_OPS.index("skip_connect")] = skip[e]
        history.append({"epoch": e + 1, "normal_weight": w.tolist(), "reduce_weight": w.tolist(),
                        "genotype": {"normal": [["sep_conv_3x3", 3, 1]], "reduce": []}})
    return history


def test_edge_history_follows_one_edge_and_knows_since_when_an_op_is_on():
    from fairdarts_core.widgets import edge_history_state

    state = edge_history_state(_history(), FAIR_DARTS_OPS, "3<-1")
    assert state["epochs"] == [1, 2, 3, 4] and state["series"]["sep_conv_3x3"] == [0.5, 0.7, 0.9, 0.95]
    assert state["crossed"]["sep_conv_3x3"] == 3 and state["crossed"]["skip_connect"] == 4  # on again at 4
    assert state["crossed"]["max_pool_3x3"] is None and state["strongest"] == "sep_conv_3x3"
    assert state["verdict"] == ("Edge 3<-1: sep_conv_3x3 ends strongest (0.95); 2 ops end at or above 0.85: "
                                "sep_conv_3x3 (from epoch 3), skip_connect (from epoch 4).")
    assert len(state["edges"]) == 14 and state["edges"][3] == "3<-1"
    quiet = edge_history_state(_history(), FAIR_DARTS_OPS, "2<-0")
    assert quiet["verdict"].endswith("no op ends at or above 0.85.")
    with pytest.raises(ValueError, match="no edge '6<-0' in the normal cell; its edges are 2<-0, 2<-1"):
        edge_history_state(_history(), FAIR_DARTS_OPS, "6<-0")
    with pytest.raises(ValueError, match="the history is empty"):
        edge_history_state([], FAIR_DARTS_OPS, "2<-0")


def test_edge_history_widget_and_static_figure():
    import matplotlib.pyplot as plt

    from fairdarts_core.widgets import edge_history_explorer, edge_history_static

    box = edge_history_explorer(_history(), FAIR_DARTS_OPS, edge="3<-1")
    verdict, image, drawing = box.children[2], box.children[3], box.children[4]
    assert "sep_conv_3x3 ends strongest" in verdict.value and image.value and "<svg" in drawing.value
    box.edge.value = "2<-0"
    assert box.state()["edge"] == "2<-0" and "no op ends" in verdict.value
    box.epoch.value = 1
    assert "derived at epoch 1" in drawing.value
    fig, axes = edge_history_static(_history(), FAIR_DARTS_OPS)
    titles = [ax.get_title() for ax in axes.flat]
    assert titles[3] == "3<-1: sep_conv_3x3" and titles[0] == "2<-0: (none kept)" and len(titles) == 14
    plt.close(fig)
