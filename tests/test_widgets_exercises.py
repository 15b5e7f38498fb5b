"""The chapter explorers' pure functions, the widget itself, and the exercise checkers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fairdarts_core import DARTS_OPS, FAIR_DARTS_OPS
from fairdarts_core.exercises import check_mixed_edge
from fairdarts_core.widgets import edge_explorer, edge_explorer_figure, edge_explorer_state, strongest_edge


def test_state_all_zero_alphas():
    s = edge_explorer_state(np.zeros(7), FAIR_DARTS_OPS, threshold=0.85)
    assert np.allclose(s["softmax"], 1 / 7) and np.allclose(s["sigmoid"], 0.5)
    assert s["softmax_sum"] == pytest.approx(1.0) and s["sigmoid_sum"] == pytest.approx(3.5)
    assert s["darts_keeps"] == FAIR_DARTS_OPS[0]   # a tie goes to the first op, as in parse_cell
    assert s["fair_keeps"] is None and s["above_threshold"] == []


def test_state_two_strong_ops():
    alphas = [0, 0, 3.0, 2.5, 0, 0, 0]  # skip and sep_conv_3x3 both strong
    s = edge_explorer_state(alphas, FAIR_DARTS_OPS, 0.85)
    assert s["darts_keeps"] == "skip_connect" and s["fair_keeps"] == "skip_connect"
    assert s["above_threshold"] == ["skip_connect", "sep_conv_3x3"]
    # exclusive competition: raising skip lowers the conv's softmax weight, not its sigmoid
    t = edge_explorer_state([0, 0, 5.0, 2.5, 0, 0, 0], FAIR_DARTS_OPS, 0.85)
    assert t["softmax"][3] < s["softmax"][3] and t["sigmoid"][3] == pytest.approx(s["sigmoid"][3])
    assert sum(s["softmax"]) == pytest.approx(1.0)


def test_state_never_keeps_none_and_validates():
    s = edge_explorer_state([5.0, 1, 0, 0, 0, 0, 0, 0], DARTS_OPS, 0.5)
    assert s["darts_keeps"] == "max_pool_3x3" and "none" not in s["above_threshold"]
    with pytest.raises(ValueError, match="one alpha per op"):
        edge_explorer_state([0, 1], FAIR_DARTS_OPS)
    with pytest.raises(ValueError, match="threshold"):
        edge_explorer_state(np.zeros(7), FAIR_DARTS_OPS, 1.5)


def test_figure_and_widget():
    import matplotlib
    matplotlib.use("Agg")
    fig, ax = edge_explorer_figure(edge_explorer_state([0, 0, 3.0, 2.5, 0, 0, 0]))
    assert len(ax.patches) == 14
    box = edge_explorer([0, 0, 1.0, 0, 0, 0, 0])
    assert box.state()["darts_keeps"] == "skip_connect"
    box.sliders[3].value = 2.0
    assert box.state()["darts_keeps"] == "sep_conv_3x3"
    assert box.state()["alphas"][3] == pytest.approx(2.0)
    box.threshold_slider.value = 0.5
    assert "sep_conv_3x3" in box.state()["above_threshold"]


def test_strongest_edge():
    w = np.full((14, 7), 0.5)
    w[9, 4] = 0.99
    assert strongest_edge(w) == 9
    assert strongest_edge(torch.tensor(w)) == 9


# --- the mixed-edge checker: one correct and several wrong implementations ---------------------------
def correct(x, alpha, ops):
    w = torch.softmax(alpha, dim=0)
    return sum(w[k] * op(x) for k, op in enumerate(ops))


def with_sigmoid(x, alpha, ops):
    w = torch.sigmoid(alpha)
    return sum(w[k] * op(x) for k, op in enumerate(ops))


def unweighted(x, alpha, ops):
    return sum(op(x) for op in ops)


def detached(x, alpha, ops):
    w = torch.softmax(alpha.detach(), dim=0)
    return sum(w[k] * op(x) for k, op in enumerate(ops))


def crashes(x, alpha, ops):
    return ops[0](x) + x[:, :1, :3]


def test_checker_accepts_the_correct_edge():
    r = check_mixed_edge(correct)
    assert r.ok and bool(r) and "matches" in r.message
    assert "correct" in r._repr_html_()


@pytest.mark.parametrize("fn, words", [
    (with_sigmoid, "sigmoid"),
    (unweighted, "without weights"),
    (detached, "gradient"),
    (crashes, "raised RuntimeError"),
    (lambda x, a, ops: (_ for _ in ()).throw(NotImplementedError()), "not written yet"),
    (lambda x, a, ops: 1.0, "returned a float"),
])
def test_checker_says_what_is_wrong(fn, words):
    r = check_mixed_edge(fn)
    assert not r.ok and words in r.message, r.message


def test_checker_uses_darts_ops_too():
    assert check_mixed_edge(correct, DARTS_OPS).ok



def _arch_string(weights, primitives):
    from fairdarts_core.nb201 import EDGES

    winners = [primitives[int(np.argmax(row))] for row in np.asarray(weights)]
    return "+".join("|" + "|".join(f"{winners[EDGES.index((to, src))]}~{src}" for src in range(to)) + "|"
                    for to in range(1, 4))


def test_nb201_arch_string_checker_accepts_a_right_answer_and_explains_wrong_ones():
    from fairdarts_core.exercises import check_nb201_arch_string
    from fairdarts_core.nb201 import EDGES

    assert check_nb201_arch_string(_arch_string).ok

    def without_none(weights, primitives):
        W = np.array(weights)
        W[:, 0] = -1
        return _arch_string(W, primitives)

    def wrong_order(weights, primitives):
        by_node = [(to, src) for src in range(3) for to in range(src + 1, 4)]
        W = np.asarray(weights)[[by_node.index(e) for e in EDGES]]
        return _arch_string(W, primitives)

    def unwritten(weights, primitives):
        raise NotImplementedError

    for fn, words in ((without_none, "'none' must stay"), (wrong_order, "wrong order"),
                      (lambda w, p: "|skip~0|", "cannot read"), (lambda w, p: 3, "returned a int"),
                      (unwritten, "not written yet")):
        result = check_nb201_arch_string(fn)
        assert not result.ok and words in result.message, (words, result.message)
