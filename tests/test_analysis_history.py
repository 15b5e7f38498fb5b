"""The search-analysis helpers on hand-made histories (answers derived by hand)."""
import numpy as np
import pytest

from fairdarts_core.analysis import (dominant_op_counts, dominant_ops, history_series, op_weight,
                                     parameter_free_share, skip_share)
from fairdarts_core.ops import DARTS_OPS, FAIR_DARTS_OPS

OPS = list(FAIR_DARTS_OPS)  # max, avg, skip, sep3, sep5, dil3, dil5


def matrix(winners, ops=OPS, high=0.9, low=0.1):
    """14 rows; row i has ``high`` on op ``winners[i]`` and ``low`` elsewhere."""
    W = np.full((len(winners), len(ops)), low)
    for i, op in enumerate(winners):
        W[i, ops.index(op)] = high
    return W


def test_dominant_ops_and_ties():
    W = np.zeros((2, 7))
    W[0, 2] = W[0, 3] = 0.7          # tie between skip and sep3: the earlier op wins
    W[1, 6] = 0.2
    assert dominant_ops(W, OPS) == ["skip_connect", "dil_conv_5x5"]


def test_none_is_never_dominant():
    W = np.zeros((1, 8))
    W[0, 0], W[0, 4] = 0.9, 0.05     # 'none' largest, then sep_conv_3x3
    assert dominant_ops(W, DARTS_OPS) == ["sep_conv_3x3"]
    counts = dominant_op_counts([{"normal_weight": W.tolist()}], DARTS_OPS)
    assert "none" not in counts and counts["sep_conv_3x3"] == [1]


def test_counts_shares_and_series_follow_a_collapse():
    early = matrix(["sep_conv_3x3"] * 10 + ["skip_connect"] * 2 + ["max_pool_3x3"] * 2)
    late = matrix(["sep_conv_3x3"] * 4 + ["skip_connect"] * 8 + ["avg_pool_3x3"] * 2)
    history = [{"epoch": 1, "normal_weight": early.tolist(), "skip_normal": 0},
               {"epoch": 2, "normal_weight": late.tolist(), "skip_normal": 3}]
    counts = dominant_op_counts(history, OPS)
    assert counts["skip_connect"] == [2, 8] and counts["sep_conv_3x3"] == [10, 4]
    assert counts["max_pool_3x3"] == [2, 0] and counts["avg_pool_3x3"] == [0, 2]
    assert all(sum(c[e] for c in counts.values()) == 14 for e in range(2))
    assert skip_share(late, OPS) == pytest.approx(8 / 14)
    assert parameter_free_share(late, OPS) == pytest.approx(10 / 14)
    series = history_series(history, OPS)
    assert series["skip_share"] == pytest.approx([2 / 14, 8 / 14])
    assert series["skip_weight"] == pytest.approx([(2 * 0.9 + 12 * 0.1) / 14, (8 * 0.9 + 6 * 0.1) / 14])
    assert series["skip_count"] == [0, 3]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        dominant_ops(np.zeros((14, 5)), OPS)
    with pytest.raises(ValueError, match="unknown cell 'middle'; a search history records the cells 'normal', 'reduce', 'cell'"):
        dominant_op_counts([{"normal_weight": []}], OPS, cell="middle")
    with pytest.raises(ValueError, match="record 2 has no 'reduce_weight'"):  # a ValueError, never a KeyError
        history_series([{"reduce_weight": np.zeros((14, 7))}, {"normal_weight": []}], OPS, cell="reduce")
    with pytest.raises(ValueError, match="not among"):
        op_weight(np.zeros((14, 7)), OPS, "none")


NB_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _nb201_record(epoch, winners, skips):
    """A NAS-Bench-201 history record whose edge e is dominated by ``winners[e]`` (weight 0.6, others 0.1)."""
    W = np.full((6, 5), 0.1)
    for e, op in enumerate(winners):
        W[e, NB_OPS.index(op)] = 0.6
    return {"epoch": epoch, "cell_weight": W.tolist(), "skips": skips}


def test_nb201_history_counts_none_as_its_derive_rule_keeps_it():
    early = _nb201_record(1, ["none", "nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "none"], 1)
    late = _nb201_record(2, ["skip_connect"] * 5 + ["none"], 5)
    counts = dominant_op_counts([early, late], NB_OPS, cell="cell")
    assert list(counts) == list(NB_OPS)  # none is an op of the plot here
    assert counts["none"] == [2, 1] and counts["skip_connect"] == [1, 5] and counts["nor_conv_3x3"] == [2, 0]
    assert [sum(c[i] for c in counts.values()) for i in range(2)] == [6, 6]
    series = history_series([early, late], NB_OPS, cell="cell")
    assert series["skip_count"] == [1, 5]  # the history's "skips"
    assert series["skip_share"] == pytest.approx([1 / 6, 5 / 6])
    assert series["parameter_free_share"] == pytest.approx([4 / 6, 1.0])  # none, skip and pool are free
    # DARTS's rule never counts none: the same matrix read that way gives the runner-up (all 0.1: the first).
    assert dominant_ops(early["cell_weight"], NB_OPS)[0] == "skip_connect"
    assert dominant_ops(early["cell_weight"], NB_OPS, keep_none=True)[0] == "none"


def test_mean_op_weights():
    from fairdarts_core.analysis import mean_op_weights

    W = np.array([[0.1, 0.5, 0.1, 0.2, 0.1], [0.3, 0.1, 0.1, 0.4, 0.1]])
    assert mean_op_weights(W, NB_OPS) == pytest.approx(
        {"none": 0.2, "skip_connect": 0.3, "nor_conv_1x1": 0.1, "nor_conv_3x3": 0.3, "avg_pool_3x3": 0.1})
    with pytest.raises(ValueError, match="shape"):
        mean_op_weights(W, NB_OPS[:4])


def test_settling_says_when_the_weights_and_the_cell_stop_moving():
    from fairdarts_core.analysis import settling

    def record(epoch, middle, cell, several):
        W = np.full((14, 7), 0.05)
        W[:middle, 0] = 0.5                       # undecided weights
        W[13, 1:1 + several] = 0.95               # several ops on, on the last edge
        return {"epoch": epoch, "normal_weight": W.tolist(), "genotype": {"normal": cell, "reduce": []}}

    a = [["sep_conv_3x3", 2, 0], ["dil_conv_3x3", 2, 1]]
    b = [["sep_conv_5x5", 2, 0], ["dil_conv_3x3", 2, 1]]          # another op on the same edge
    c = [["sep_conv_5x5", 2, 0], ["dil_conv_3x3", 3, 1]]          # another edge
    s = settling([record(1, 7, c, 0), record(2, 2, b, 2), record(3, 0, a, 3), record(4, 0, a, 3)])
    assert s["epoch"] == [1, 2, 3, 4] and s["final_from"] == 3
    assert s["undecided"] == pytest.approx([7 / 98, 2 / 98, 0, 0])
    assert s["ops_changed"] == [4, 2, 0, 0] and s["edges_changed"] == [2, 0, 0, 0]
    assert s["several_on"] == [0, 1, 1, 1]
    assert settling([record(1, 0, a, 0)])["final_from"] == 1
    with pytest.raises(ValueError, match="cell must be 'normal' or 'reduce'"):
        settling([record(1, 0, a, 0)], cell="cell")
    with pytest.raises(ValueError, match="has no 'genotype'"):
        settling([{"epoch": 1, "normal_weight": np.zeros((14, 7)).tolist()}])
