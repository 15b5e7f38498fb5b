"""Genotypes: the three parse rules on hand-built matrices, isolated-node pruning, pairs, JSON, validation.

Every expected cell below is derived by hand from the matrix built next to it (see the comments).
"""
import numpy as np
import pytest

from fairdarts_core.genotype import (MAX_STEPS, Genotype, default_parse_method, edge_index, live_nodes,
                                     load_weight_matrix, num_edges, parse_cell, prune_isolated, read_parse_hints,
                                     resolve_op_set, steps_for, validate_cell)
from fairdarts_core.ops import DARTS_OPS, FAIR_DARTS_OPS

FAIR = list(FAIR_DARTS_OPS)  # max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5
DARTS = list(DARTS_OPS)      # none + the above


def matrix(entries: dict, primitives=FAIR, fill: float = 0.0) -> np.ndarray:
    """A (14, n_ops) matrix filled with ``fill``; ``entries``: {(to, from): {op: weight}}."""
    W = np.full((num_edges(), len(primitives)), fill)
    rows = edge_index()
    for (to, src), ops in entries.items():
        for op, w in ops.items():
            W[rows.index((to, src)), primitives.index(op)] = w
    return W


# --- edge order --------------------------------------------------------------------------------------

def test_edge_index_is_darts_order():
    assert edge_index() == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (4, 2), (4, 3),
                            (5, 0), (5, 1), (5, 2), (5, 3), (5, 4)]
    assert [steps_for(n) for n in (2, 5, 9, 14, 20)] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="edge count"):
        steps_for(13)


# --- threshold_sparse ----------------------------------------------------------------------------------

def test_threshold_sparse_nodes_with_two_one_and_zero_inputs():
    W = matrix({
        (2, 0): {"sep_conv_3x3": 0.90},
        (2, 1): {"skip_connect": 0.95},       # node 2: both edges >= 0.85 -> 2 inputs, strongest first
        (3, 0): {"max_pool_3x3": 0.30},
        (3, 1): {"avg_pool_3x3": 0.86},
        (3, 2): {"dil_conv_3x3": 0.84},       # node 3: top-2 edges are 1 (0.86) and 2 (0.84 < 0.85) -> 1 input
        (4, 0): {"sep_conv_5x5": 0.50},
        (4, 3): {"dil_conv_5x5": 0.60},       # node 4: nothing reaches the threshold -> 0 inputs
        (5, 4): {"sep_conv_3x3": 0.85},       # exactly at the threshold: kept (>=)
        (5, 0): {"dil_conv_5x5": 0.8499999},  # just below: dropped
    })
    cell = parse_cell(W, FAIR, "threshold_sparse", 0.85)
    assert cell == [("skip_connect", 2, 1), ("sep_conv_3x3", 2, 0),
                    ("avg_pool_3x3", 3, 1),
                    ("sep_conv_3x3", 5, 4)]
    # node 4 has no input, so it is isolated, and node 5's only input comes from it: isolated too.
    assert live_nodes(cell) == [2, 3]
    assert prune_isolated(cell) == cell[:3]


def test_threshold_sparse_ranks_edges_before_thresholding():
    # Three edges into node 3 pass the threshold, but only the 2 strongest edges are candidates.
    W = matrix({(3, 0): {"sep_conv_3x3": 0.90}, (3, 1): {"sep_conv_5x5": 0.99}, (3, 2): {"skip_connect": 0.95}})
    cell = parse_cell(W, FAIR, "threshold_sparse")
    assert cell == [("sep_conv_5x5", 3, 1), ("skip_connect", 3, 2)]


def test_threshold_sparse_takes_one_op_per_edge():
    # Two ops above threshold on one edge: threshold_sparse keeps only the strongest.
    W = matrix({(2, 0): {"sep_conv_3x3": 0.90, "dil_conv_3x3": 0.95}})
    assert parse_cell(W, FAIR, "threshold_sparse") == [("dil_conv_3x3", 2, 0)]


def test_threshold_is_configurable_and_float32_at_threshold_is_kept():
    W = matrix({(2, 0): {"skip_connect": 0.6}}).astype(np.float32)
    assert parse_cell(W, FAIR, "threshold_sparse", 0.6) == [("skip_connect", 2, 0)]
    assert parse_cell(W, FAIR, "threshold_sparse", 0.61) == []


def test_ties_lower_index_wins():
    W = matrix({
        # node 2: both edges tie -> edge 0 listed first; on edge (2,0) three ops tie -> the first op wins
        (2, 0): {"max_pool_3x3": 0.9, "sep_conv_3x3": 0.9, "dil_conv_5x5": 0.9},
        (2, 1): {"sep_conv_5x5": 0.9, "skip_connect": 0.9},   # skip_connect (index 2) before sep_conv_5x5 (4)
        # node 3: a three-way edge tie -> edges 0 and 1 are kept, edge 2 is not
        (3, 0): {"avg_pool_3x3": 0.9}, (3, 1): {"avg_pool_3x3": 0.9}, (3, 2): {"avg_pool_3x3": 0.9},
    })
    expected = [("max_pool_3x3", 2, 0), ("skip_connect", 2, 1), ("avg_pool_3x3", 3, 0), ("avg_pool_3x3", 3, 1)]
    assert parse_cell(W, FAIR, "threshold_sparse") == expected
    # darts breaks ties the same way; nodes 4 and 5 (all zeros) tie everywhere -> edges 0, 1 and op 0
    assert parse_cell(W, FAIR, "darts") == expected + [("max_pool_3x3", 4, 0), ("max_pool_3x3", 4, 1),
                                                      ("max_pool_3x3", 5, 0), ("max_pool_3x3", 5, 1)]
    # threshold_edge: the two lowest-index ops of a three-way tie; every edge of node 3
    assert parse_cell(W, FAIR, "threshold_edge") == [
        ("max_pool_3x3", 2, 0), ("sep_conv_3x3", 2, 0), ("skip_connect", 2, 1), ("sep_conv_5x5", 2, 1),
        ("avg_pool_3x3", 3, 0), ("avg_pool_3x3", 3, 1), ("avg_pool_3x3", 3, 2)]


# --- darts -----------------------------------------------------------------------------------------------

def test_darts_excludes_none_even_when_largest():
    W = matrix({
        (2, 0): {"none": 0.90, "sep_conv_3x3": 0.06, "skip_connect": 0.04},  # none largest: take sep_conv_3x3
        (2, 1): {"none": 0.50, "dil_conv_3x3": 0.30},
        (3, 0): {"none": 0.99, "max_pool_3x3": 0.01},  # strongest *non-none* op is weak: edge not chosen
        (3, 1): {"sep_conv_5x5": 0.40},
        (3, 2): {"skip_connect": 0.30},
        (4, 2): {"avg_pool_3x3": 0.20}, (4, 3): {"dil_conv_5x5": 0.25},
        (5, 1): {"sep_conv_3x3": 0.10}, (5, 4): {"sep_conv_3x3": 0.15},
    }, primitives=DARTS)
    cell = parse_cell(W, DARTS, "darts")
    assert cell == [("dil_conv_3x3", 2, 1), ("sep_conv_3x3", 2, 0),
                    ("sep_conv_5x5", 3, 1), ("skip_connect", 3, 2),
                    ("dil_conv_5x5", 4, 3), ("avg_pool_3x3", 4, 2),
                    ("sep_conv_3x3", 5, 4), ("sep_conv_3x3", 5, 1)]
    assert all(op != "none" for op, _, _ in cell)
    # every node gets exactly two inputs, whatever the weights
    assert [to for _, to, _ in cell] == [2, 2, 3, 3, 4, 4, 5, 5]
    # the threshold rules skip 'none' as well (and nothing here reaches 0.85)
    assert parse_cell(W, DARTS, "threshold_sparse") == []
    assert parse_cell(W, DARTS, "threshold_edge") == []


# --- threshold_edge --------------------------------------------------------------------------------------

def test_threshold_edge_keeps_up_to_two_ops_per_edge_on_every_edge():
    W = matrix({
        (2, 0): {"sep_conv_3x3": 0.90, "dil_conv_3x3": 0.88, "skip_connect": 0.86},  # three pass: two strongest
        (2, 1): {"max_pool_3x3": 0.85, "avg_pool_3x3": 0.50},                        # one passes (at 0.85)
        (4, 0): {"sep_conv_5x5": 0.95}, (4, 1): {"sep_conv_5x5": 0.95}, (4, 3): {"sep_conv_5x5": 0.95},
        (5, 2): {"skip_connect": 0.849, "dil_conv_5x5": 0.2},                       # none pass
    })
    cell = parse_cell(W, FAIR, "threshold_edge")
    assert cell == [("sep_conv_3x3", 2, 0), ("dil_conv_3x3", 2, 0), ("max_pool_3x3", 2, 1),
                    ("sep_conv_5x5", 4, 0), ("sep_conv_5x5", 4, 1), ("sep_conv_5x5", 4, 3)]
    g = Genotype(tuple(cell), ())
    assert g.concat("normal") == [2, 4]   # node 3 has no input; (4, 3) is dropped with it
    assert g.count("sep_conv_5x5") == 2


def test_parse_rejects_bad_method_and_shape():
    W = matrix({})
    with pytest.raises(ValueError, match="NaN"):
        parse_cell(matrix({(2, 0): {"skip_connect": np.nan}}), FAIR)
    with pytest.raises(ValueError, match="unknown parse method"):
        parse_cell(W, FAIR, "greedy")
    with pytest.raises(ValueError, match="shape"):
        parse_cell(W, DARTS)  # 7 columns, 8 ops
    with pytest.raises(ValueError, match="edge count"):
        parse_cell(np.zeros((13, 7)), FAIR)
    with pytest.raises(ValueError, match="shape"):
        parse_cell(np.zeros(14), FAIR)


def test_from_weights_parses_both_cells():
    normal = matrix({(2, 0): {"skip_connect": 0.9}, (2, 1): {"sep_conv_3x3": 0.95}})
    reduce = matrix({(3, 0): {"max_pool_3x3": 0.9}})
    g = Genotype.from_weights(normal, reduce, FAIR)
    assert g.normal == (("sep_conv_3x3", 2, 1), ("skip_connect", 2, 0))
    assert g.reduce == (("max_pool_3x3", 3, 0),)
    assert g.concat("reduce") == [3]   # node 3 reads a cell input; nodes 2, 4, 5 have no input
    assert g.concat("normal") == [2]


# --- isolated nodes ----------------------------------------------------------------------------------------

def test_pruning_is_recursive():
    # node 3 has no input; node 4 is fed only by node 3; node 5 by node 4 and by input 1.
    cell = [("sep_conv_3x3", 2, 0), ("skip_connect", 4, 3), ("dil_conv_3x3", 5, 4), ("max_pool_3x3", 5, 1)]
    assert live_nodes(cell) == [2, 5]
    assert prune_isolated(cell) == [("sep_conv_3x3", 2, 0), ("max_pool_3x3", 5, 1)]
    g = Genotype(tuple(cell), tuple(cell))
    assert g.concat("normal") == [2, 5]
    assert g.count("skip_connect") == 0  # the skip leaves an isolated node: not counted
    # fed by a live node keeps a node alive: a chain 0 -> 2 -> 3 -> 4 -> 5
    chain = [("skip_connect", 2, 0), ("skip_connect", 3, 2), ("skip_connect", 4, 3), ("skip_connect", 5, 4)]
    assert live_nodes(chain) == [2, 3, 4, 5]
    assert Genotype(tuple(chain), ()).count("skip_connect") == 4
    assert live_nodes([]) == []


# --- from_pairs --------------------------------------------------------------------------------------------

def test_from_pairs_converts_darts_style():
    normal = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
              ("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 2)]
    reduce = [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
              ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]
    g = Genotype.from_pairs(normal, reduce)
    assert g.normal[:3] == (("sep_conv_3x3", 2, 0), ("sep_conv_3x3", 2, 1), ("skip_connect", 3, 0))
    assert g.normal[-1] == ("dil_conv_3x3", 5, 2)
    assert g.reduce[2] == ("skip_connect", 3, 2)
    assert g.concat("normal") == [2, 3, 4, 5]
    assert g.count("skip_connect") == 3
    # lists (as in JSON) work too
    assert Genotype.from_pairs([list(p) for p in normal], [list(p) for p in reduce]) == g
    with pytest.raises(ValueError, match="8 .op, from. entries"):
        Genotype.from_pairs(normal[:7], reduce)
    with pytest.raises(ValueError, match="node 3 is fed by itself"):
        Genotype.from_pairs(normal[:2] + [("skip_connect", 3)] + normal[3:], reduce)
    with pytest.raises(ValueError, match="malformed DARTS pair .sep_conv_3x3."):
        Genotype.from_pairs(["sep_conv_3x3", 0] * 4, reduce)  # flattened by mistake
    with pytest.raises(ValueError, match="malformed DARTS pair"):
        Genotype.from_pairs([("sep_conv_3x3", 2, 0)] * 8, reduce)  # triples given as pairs


# --- JSON ------------------------------------------------------------------------------------------------

GENO = Genotype((("sep_conv_3x3", 2, 0), ("skip_connect", 2, 1), ("dil_conv_5x5", 5, 2)),
                (("max_pool_3x3", 2, 0), ("avg_pool_3x3", 3, 2)))


def test_json_round_trip(tmp_path):
    assert Genotype.from_json(GENO.to_json()) == GENO
    assert GENO.to_dict() == {"normal": [["sep_conv_3x3", 2, 0], ["skip_connect", 2, 1], ["dil_conv_5x5", 5, 2]],
                              "reduce": [["max_pool_3x3", 2, 0], ["avg_pool_3x3", 3, 2]]}
    path = tmp_path / "g.json"
    GENO.save(path)
    assert Genotype.load(path) == GENO
    small = Genotype((("skip_connect", 2, 0), ("skip_connect", 3, 2)), (), steps=2)
    assert small.to_dict()["steps"] == 2
    assert Genotype.from_json(small.to_json()) == small


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "needs the keys"),
    ('{"normal": []}', "needs the keys"),
    ('{"normal": [], "reduce": [], "concat": [2]}', "unknown genotype keys: concat"),
    ('{"normal": "sep_conv_3x3", "reduce": []}', "must be a list"),
    ('{"normal": [["sep_conv_3x3", 2]], "reduce": []}', "malformed edge"),
    ('{"normal": [["conv_7x7", 2, 0]], "reduce": []}', "unknown op 'conv_7x7'"),
    ('{"normal": [], "reduce": [], "steps": null}', "steps must be a positive integer"),
    ('{"normal": [], "reduce": [], "steps": 4.5}', "steps must be a positive integer"),
    ('{"normal": [], "reduce": [], "steps": 0}', "steps must be a positive integer"),
    ('{"normal": [], "reduce": [], "steps": 16}', "steps must be a positive integer up to 15"),
    ('{"normal": [], "reduce": [], "steps": 100000000}', "up to 15 .intermediate nodes per cell; DARTS has 4"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"normal": ' + "[" * 100000 + "]" * 100000 + ', "reduce": []}', "nested too deeply"),
    ('{"normal": [], "reduce": [], "steps": ' + "9" * 5000 + "}", "not valid JSON"),
])
def test_from_json_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Genotype.from_json(text)


def test_from_json_errors_are_one_short_line():
    for text in ("[" * 100000 + "]" * 100000, '{"normal": [' + "[" * 500 + "]" * 500 + '], "reduce": []}',
                 '{"normal": [[' + ", ".join(["1"] * 100000) + ']], "reduce": []}'):
        with pytest.raises(ValueError) as err:
            Genotype.from_json(text)
        assert "\n" not in str(err.value) and len(str(err.value)) < 300, str(err.value)[:300]


def test_the_cell_size_is_bounded():
    assert MAX_STEPS == steps_for(num_edges(MAX_STEPS)) == 15
    assert Genotype((), (), steps=MAX_STEPS).steps == MAX_STEPS
    with pytest.raises(ValueError, match="up to 15"):
        Genotype((), (), steps=MAX_STEPS + 1)
    with pytest.raises(ValueError, match="edge count"):
        steps_for(num_edges(MAX_STEPS + 1))


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        Genotype.load(tmp_path / "nope.json")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "g.json"
    GENO.save(path)
    before = path.read_text()
    real = type(path).write_text

    def disk_full(self, *args, **kwargs):
        real(self, "{half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(type(path), "write_text", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        Genotype((("skip_connect", 2, 0),), ()).save(path)
    monkeypatch.undo()
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["g.json"]


def test_load_names_the_file(tmp_path):
    (tmp_path / "g.json").write_text('{"normal": [], "reduce": [], "steps": 100000000}')
    with pytest.raises(ValueError, match=r"g\.json: genotype steps"):
        Genotype.load(tmp_path / "g.json")
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match="not a text file"):
        Genotype.load(tmp_path / "b.json")


def test_describe_lists_nodes_live_and_isolated():
    text = GENO.describe()
    assert "normal cell: 3 live edges, live nodes [2, 5], 1 skip_connect" in text
    assert "  node 2 <- sep_conv_3x3(0), skip_connect(1)" in text
    assert "  node 5 <- dil_conv_5x5(2)" in text and "  node 3 <- nothing   [isolated: dropped]" in text
    assert "reduction cell: 2 live edges, live nodes [2, 3], 0 skip_connect" in text
    assert GENO.cells_without_live_node() == []
    assert Genotype((("skip_connect", 3, 2),), ()).cells_without_live_node() == ["normal", "reduce"]


# --- weight files (what `fairdarts parse` reads) ----------------------------------------------------------

def test_load_weight_matrix_accepts_relaxed_weights(tmp_path):
    W = np.linspace(0, 1, 14 * 7).reshape(14, 7).astype(np.float32)
    np.save(tmp_path / "w.npy", W)
    out = load_weight_matrix(tmp_path / "w.npy")
    assert out.dtype == np.float64 and np.array_equal(out, W.astype(np.float64))


@pytest.mark.parametrize("array, message", [
    (np.full((14, 7), 0.5 + 0.1j), "complex numbers"),
    (np.full((14, 7), -0.25), r"in \[-0\.25, -0\.25\]; relaxed weights .* are in \[0, 1\]"),
    (np.full((14, 7), 1.5), r"\[0, 1\]"),
    (np.full((14, 7), np.inf), "NaN or infinite"),
    (np.zeros((14, 7), dtype=bool), "2-D numeric"),
    (np.zeros((2, 14, 7)), "2-D numeric"),
    (np.array(["a", "b"]), "2-D numeric"),
])
def test_load_weight_matrix_refuses(tmp_path, array, message):
    np.save(tmp_path / "w.npy", array)
    with pytest.raises(ValueError, match=message) as err:
        load_weight_matrix(tmp_path / "w.npy")
    assert "w.npy" in str(err.value) and "\n" not in str(err.value)


def test_load_weight_matrix_never_unpickles(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a .npy array"):
        load_weight_matrix(tmp_path / "obj.npy")


def test_read_parse_hints(tmp_path):
    assert read_parse_hints(tmp_path) == {}
    (tmp_path / "config.json").write_text('{"supernet": {"primitives": "darts"}, "relaxation": "softmax"}')
    assert read_parse_hints(tmp_path) == {"primitives": "darts", "relaxation": "softmax"}
    (tmp_path / "config.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_parse_hints(tmp_path)
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        read_parse_hints(tmp_path)


def test_resolve_op_set():
    assert resolve_op_set("darts", None, 8) == tuple(DARTS_OPS)
    assert resolve_op_set(None, "fair_darts", 7) == tuple(FAIR_DARTS_OPS)
    assert resolve_op_set(None, ["skip_connect", "sep_conv_3x3"], 2) == ("skip_connect", "sep_conv_3x3")
    assert resolve_op_set(None, None, 7) == tuple(FAIR_DARTS_OPS) and resolve_op_set(None, None, 8) == tuple(DARTS_OPS)
    for args, message in [(("darts", None, 7), "7 columns but the op set .--primitives darts. has 8 ops"),
                          (("bogus", None, 7), "unknown op set 'bogus'"),
                          ((None, None, 6), "6 columns .7: fair_darts, 8: darts.; pass --primitives"),
                          ((None, 3, 7), "list of op names"),
                          ((None, ["conv_9x9"], 1), "unknown op 'conv_9x9'")]:
        with pytest.raises(ValueError, match=message):
            resolve_op_set(*args)


def test_default_parse_method():
    soft = np.full((14, 8), 1 / 8)
    sig = np.full((14, 7), 0.5)
    assert default_parse_method("sigmoid", soft, soft) == "threshold_sparse"  # the relaxation, when known, decides
    assert default_parse_method("softmax", sig, sig) == "darts"
    assert default_parse_method(None, soft, soft) == "darts"
    assert default_parse_method(None, sig, sig) == "threshold_sparse"
    assert default_parse_method(["not", "a", "name"], sig, sig) == "threshold_sparse"


# --- validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edge, message", [
    (("conv_7x7", 2, 0), "unknown op 'conv_7x7'"),
    (("none", 2, 0), "'none' op cannot be an edge"),
    (("sep_conv_3x3", 6, 0), "bad node index 6"),
    (("sep_conv_3x3", 1, 0), "bad node index 1"),
    (("sep_conv_3x3", 3, -1), "bad node index -1"),
    (("sep_conv_3x3", 3, 3), "node 3 is fed by itself"),
    (("sep_conv_3x3", 3, 4), "node 3 is fed by a later node"),
    (("sep_conv_3x3", 2), "malformed edge"),
    ("sep_conv_3x3", "malformed edge"),
    (("sep_conv_3x3", "2", 0), "must be integers"),
    (("sep_conv_3x3", 2.0, 0), "must be integers"),
    ((3, 2, 0), "unknown op 3"),
])
def test_validation_errors_name_the_problem(edge, message):
    with pytest.raises(ValueError, match=message):
        validate_cell([edge])
    with pytest.raises(ValueError, match="reduction cell: "):
        Genotype((), (edge,))


def test_validation_messages_stay_short():
    for edge in (list(range(100000)), ("x" * 100000, 2, 0), ("skip_connect", [[[[[1]]]]], 0)):
        with pytest.raises(ValueError) as err:
            validate_cell([edge])
        assert len(str(err.value)) < 400 and "\n" not in str(err.value)


def test_validation_rejects_duplicates_and_accepts_numpy_ints():
    with pytest.raises(ValueError, match="duplicate edge"):
        validate_cell([("skip_connect", 2, 0), ("skip_connect", 2, 0)])
    assert validate_cell([("skip_connect", np.int64(2), np.int64(0))]) == [("skip_connect", 2, 0)]
    with pytest.raises(ValueError, match="kind must be"):
        GENO.cell("other")


def test_a_random_cell_is_drawn_as_darts_draws_its_baseline():
    from fairdarts_core.genotype import random_genotype
    from fairdarts_core.ops import FAIR_DARTS_OPS
    from fairdarts_core.zoo import resolve_arch
    seen = set()
    for seed in range(20):
        g = random_genotype(seed)
        assert resolve_arch(f"random:{seed}") == g == random_genotype(seed)  # the seed names the cell
        for kind in ("normal", "reduce"):
            cell = g.cell(kind)
            assert [to for _, to, _ in cell] == [2, 2, 3, 3, 4, 4, 5, 5]  # two inputs per node
            assert all(src < to for _, to, src in cell) and all(op in FAIR_DARTS_OPS for op, _, _ in cell)
            assert all(cell[i][2] != cell[i + 1][2] for i in range(0, 8, 2))  # from two distinct nodes
        seen.add(g)
    assert len(seen) == 20
    for bad in ("random:", "random:-1", "random:1.5"):
        with pytest.raises(ValueError, match="random:SEED with SEED an integer >= 0"):
            resolve_arch(bad)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        random_genotype(-1)
