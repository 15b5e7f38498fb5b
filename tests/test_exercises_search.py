"""Chapter 5's checkers: a right answer passes, each typical mistake gets its own hint."""
from __future__ import annotations

import numpy as np

from fairdarts_core.exercises import check_fair_derive, check_live_nodes
from fairdarts_core.genotype import live_nodes, parse_cell


def test_live_nodes_checker():
    assert check_live_nodes(lambda edges: live_nodes(edges)).ok
    assert check_live_nodes(lambda edges: [str(n) for n in reversed(live_nodes(edges))]).ok  # any order, any ints

    def todo(edges):
        raise NotImplementedError

    assert "not written yet" in check_live_nodes(todo).message
    every_target = check_live_nodes(lambda edges: sorted({to for _, to, _ in edges}))
    assert not every_target.ok and "an edge from an isolated node carries nothing" in every_target.message
    with_inputs = check_live_nodes(lambda edges: [0, 1] + live_nodes(edges))
    assert not with_inputs.ok and "node 0 or 1" in with_inputs.message
    assert "return a list of node numbers" in check_live_nodes(lambda edges: 3).message
    assert "raised ZeroDivisionError" in check_live_nodes(lambda edges: 1 / 0).message


def test_fair_derive_checker():
    assert check_fair_derive(lambda w, p, t: parse_cell(w, p, "threshold_sparse", t)).ok
    assert check_fair_derive(lambda w, p, t: list(reversed(parse_cell(w, p, "threshold_sparse", t)))).ok

    no_threshold = check_fair_derive(lambda w, p, t: parse_cell(w, p, "darts"))
    assert not no_threshold.ok and "below the threshold" in no_threshold.message
    multi_hot = check_fair_derive(lambda w, p, t: parse_cell(w, p, "threshold_edge", t))
    assert not multi_hot.ok and "at most two edges per node" in multi_hot.message
    assert "return a list of (op, to, from) triples" in check_fair_derive(lambda w, p, t: [1, 2]).message
