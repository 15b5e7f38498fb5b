"""The NAS-Bench-201 space: supernet and network shapes, parameter split, genotype strings, derive rules,
the evaluation network, the two supernet formulations, weight inheritance and the drawing."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairdarts_core.nb201 import (DEFAULT_DERIVE, EDGES, NB201_OPS, NB201Config, NB201Genotype, NB201Network,
                                  NB201Supernet, ResNetBasicBlock, as_genotype, cell_graph, derive,
                                  inherit_weights, nb201_op)
from fairdarts_core.relax import zero_one_loss

# Strings as the benchmark writes them (its README's example, its best CIFAR-10 cell, DARTS's collapse).
BENCHMARK_STRINGS = [
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
]
ALL_SKIP = NB201Genotype(("skip_connect",) * 6)


def tiny(relaxation="softmax", N=1, **kw):
    return NB201Supernet(NB201Config(channels=4, cells_per_stage=N, in_channels=1, num_classes=3,
                                     relaxation=relaxation, **kw))


def batch(n=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)


# --- ops and skeleton -----------------------------------------------------------------------------------

def test_ops_in_the_benchmark_order_keep_the_shape():
    assert NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    x = torch.randn(2, 4, 5, 5)
    for name in NB201_OPS:
        assert nb201_op(name, 4, affine=False)(x).shape == x.shape
    assert torch.equal(nb201_op("none", 4, False)(x), torch.zeros_like(x))
    # count_include_pad=False: a constant image stays constant at the borders too
    assert torch.allclose(nb201_op("avg_pool_3x3", 4, False)(torch.ones(1, 4, 5, 5)), torch.ones(1, 4, 5, 5))
    conv = nb201_op("nor_conv_3x3", 4, affine=False)
    assert not conv.op[2].affine and nb201_op("nor_conv_3x3", 4, affine=True).op[2].affine
    with pytest.raises(ValueError, match="unknown NAS-Bench-201 op 'sep_conv_3x3'; choose one of none"):
        nb201_op("sep_conv_3x3", 4, False)


def test_reduction_block_halves_and_doubles():
    for size, out in ((8, 4), (7, 4), (2, 1)):
        assert ResNetBasicBlock(4, 8)(torch.randn(2, 4, size, size)).shape == (2, 8, out, out)


# --- supernet --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("relaxation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("N", [1, 2])
def test_supernet_shapes(relaxation, N):
    net = tiny(relaxation, N)
    x, _ = batch()
    assert net(x).shape == (6, 3)
    assert len(net.cells) == 3 * N + 2
    (w,) = net.relaxed_weights()
    assert w.shape == (6, 5)
    if relaxation == "softmax":
        assert torch.allclose(w.sum(1), torch.ones(6))
    assert net.genotype().to_string().count("~") == 6


def test_parameter_split_is_disjoint_and_complete():
    net = tiny(N=2)
    arch, weights = net.arch_parameters(), net.network_parameters()
    assert len(arch) == 1 and arch[0].shape == (6, 5)
    ids_a, ids_w = {id(p) for p in arch}, {id(p) for p in weights}
    assert not ids_a & ids_w
    assert ids_a | ids_w == {id(p) for p in net.parameters()}
    assert len(ids_w) == len(weights)


@pytest.mark.parametrize("relaxation", ["softmax", "sigmoid"])
def test_loss_and_zero_one_gradients_reach_alpha(relaxation):
    net = tiny(relaxation, alpha_init_std=0.5)
    x, y = batch()
    loss = F.cross_entropy(net(x), y) + 10 * zero_one_loss(net.relaxed_weights())
    (g,) = torch.autograd.grad(loss, net.arch_parameters())
    assert g.shape == (6, 5) and torch.isfinite(g).all() and g.abs().sum() > 0


def test_config_validation_is_one_line():
    for bad, match in [(dict(channels=0), "channels must be an integer >= 1"),
                       (dict(cells_per_stage=True), "cells_per_stage must be an integer"),
                       (dict(primitives=("none", "sep_conv_3x3")), "unknown NAS-Bench-201 op 'sep_conv_3x3'"),
                       (dict(primitives=("none",)), "include an op other than none"),
                       (dict(primitives="skip_connect"), "primitives must be a list"),
                       (dict(relaxation="gumbel"), "unknown relaxation 'gumbel'"),
                       (dict(alpha_init_std=float("nan")), "alpha_init_std must be a finite number"),
                       (dict(formulation="quick"), "unknown supernet formulation 'quick'")]:
        with pytest.raises(ValueError, match=match) as info:
            NB201Config(**bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown NB201Config field 'layers'"):
        NB201Supernet(layers=3)
    assert NB201Config(primitives=["skip_connect", "nor_conv_3x3"]).primitives == ("skip_connect", "nor_conv_3x3")


def test_subset_of_primitives():
    net = tiny(primitives=("skip_connect", "nor_conv_3x3"))
    x, _ = batch()
    assert net(x).shape == (6, 3) and net.alpha.shape == (6, 2)
    assert set(net.genotype().ops) <= {"skip_connect", "nor_conv_3x3"}


@pytest.mark.parametrize("primitives", [NB201_OPS, ("none", "skip_connect", "avg_pool_3x3"),
                                        ("nor_conv_1x1", "nor_conv_3x3")])
def test_fast_and_reference_formulations_agree(primitives):
    """Same parameters, same outputs, gradients and running statistics (up to rounding)."""
    torch.manual_seed(0)
    fast = tiny("softmax", N=2, primitives=primitives, alpha_init_std=1.0)
    ref = copy.deepcopy(fast)
    ref.set_formulation("reference")
    assert fast.config.formulation == "fast" and ref.config.formulation == "reference"
    x, y = batch(8)
    out_f, out_r = fast(x), ref(x)
    assert torch.allclose(out_f, out_r, atol=1e-5)
    g_f = torch.autograd.grad(F.cross_entropy(out_f, y), list(fast.parameters()))
    g_r = torch.autograd.grad(F.cross_entropy(out_r, y), list(ref.parameters()))
    for a, b in zip(g_f, g_r):
        assert torch.allclose(a, b, atol=1e-5)
    s_f, s_r = fast.state_dict(), ref.state_dict()
    assert list(s_f) == list(s_r)
    for k in s_f:
        assert torch.allclose(s_f[k].float(), s_r[k].float(), atol=1e-6), k
    fast.eval(), ref.eval()
    assert torch.allclose(fast(x), ref(x), atol=1e-5)


def test_fast_formulation_keeps_a_cumulative_average_when_momentum_is_none():
    """nn.BatchNorm2d(momentum=None) averages every batch so far; the fast path's stacked BN must too."""
    torch.manual_seed(0)
    fast = tiny("softmax", N=1, alpha_init_std=1.0)
    for m in fast.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    ref = copy.deepcopy(fast)
    ref.set_formulation("reference")
    for step in range(3):
        x, _ = batch(8, seed=step)
        assert torch.allclose(fast(x), ref(x), atol=1e-5)
    s_f, s_r = fast.state_dict(), ref.state_dict()
    for k in s_f:
        assert torch.allclose(s_f[k].float(), s_r[k].float(), atol=1e-6), k


def test_state_dict_names():
    keys = tiny(N=1).state_dict().keys()
    assert "cells.0.edges.5.ops.3.op.1.weight" in keys        # cell 0, edge 3<-2, nor_conv_3x3's conv
    assert "cells.1.conv_a.op.1.weight" in keys                # the first reduction block
    assert {"alpha", "stem.0.weight", "lastact.0.weight", "classifier.weight"} <= set(keys)


# --- genotype --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", BENCHMARK_STRINGS)
def test_string_round_trip(text):
    g = NB201Genotype.from_string(text)
    assert g.to_string() == str(g) == text
    assert NB201Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert g.to_dict() == {"space": "nb201", "arch": text}
    assert as_genotype(text) == as_genotype(g.to_dict()) == g


def test_genotype_edges_and_counts():
    g = NB201Genotype.from_string(BENCHMARK_STRINGS[3])
    assert g.ops == ("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "skip_connect", "none", "avg_pool_3x3")
    assert g.edges[2] == ("nor_conv_1x1", 2, 1) and [e[1:] for e in g.edges] == list(EDGES)
    assert g.op(3, 2) == "avg_pool_3x3"
    assert g.count("skip_connect") == 2 and g.count("none") == 1 and ALL_SKIP.count("skip_connect") == 6
    with pytest.raises(ValueError, match="unknown NAS-Bench-201 op 'skip'"):
        g.count("skip")
    with pytest.raises(ValueError, match="no edge 1<-2"):
        g.op(1, 2)


@pytest.mark.parametrize("text, match", [
    ("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|", "3 node groups joined by '\\+'"),
    ("|conv~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
     "unknown op 'conv' on edge 1<-0"),
    ("|nor_conv_3x3~0|+|skip_connect~1|nor_conv_1x1~0|+|skip_connect~0|none~1|avg_pool_3x3~2|",
     "node 2 must read \\|op~0\\|op~1\\|"),
    ("|nor_conv_3x3~0|+|skip_connect~0|+|skip_connect~0|none~1|avg_pool_3x3~2|", "node 2 must read"),
    ("nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|", "node 1 must read"),
    ("|nor_conv_3x3|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|", "node 1 must read"),
    ("|skip_connect~0|" * 40, "too long"),
    ("", "3 node groups"),
])
def test_malformed_strings_refused_in_one_line(text, match):
    with pytest.raises(ValueError, match=match) as info:
        NB201Genotype.from_string(text)
    assert "\n" not in str(info.value) and len(str(info.value)) < 250


def test_malformed_genotypes_refused():
    with pytest.raises(ValueError, match="must be a str"):
        NB201Genotype.from_string(42)
    with pytest.raises(ValueError, match="has 6 edges; got 5"):
        NB201Genotype(("skip_connect",) * 5)
    with pytest.raises(ValueError, match="unknown op 'conv_3x3' on edge 3<-2"):
        NB201Genotype(("skip_connect",) * 5 + ("conv_3x3",))
    with pytest.raises(ValueError, match='"space": "nb201"'):
        NB201Genotype.from_dict({"space": "darts", "arch": BENCHMARK_STRINGS[0]})
    with pytest.raises(ValueError, match="genotype, its string or its dict"):
        as_genotype(3)
    assert NB201Genotype.from_string("  " + BENCHMARK_STRINGS[0] + "\n").to_string() == BENCHMARK_STRINGS[0]


def test_is_connected():
    assert ALL_SKIP.is_connected()
    assert not NB201Genotype(("none",) * 6).is_connected()
    # node 1 fed, but nothing from 0 or 1 reaches node 3 except through node 2, whose inputs are none
    cut = NB201Genotype(("skip_connect", "none", "none", "none", "none", "nor_conv_3x3"))
    assert not cut.is_connected() and cut.reachable_nodes() == (0, 1)
    assert NB201Genotype(("none", "none", "none", "avg_pool_3x3", "none", "none")).is_connected()
    assert NB201Genotype.from_string(BENCHMARK_STRINGS[3]).is_connected()


# --- derive rules ----------------------------------------------------------------------------------------

# rows: edges (1<-0) .. (3<-2); columns: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
W_SOFTMAX = np.array([[0.10, 0.20, 0.20, 0.40, 0.10],
                      [0.10, 0.50, 0.10, 0.20, 0.10],
                      [0.10, 0.10, 0.45, 0.25, 0.10],
                      [0.05, 0.60, 0.05, 0.20, 0.10],
                      [0.40, 0.15, 0.15, 0.15, 0.15],    # none is the strongest: darts keeps it
                      [0.10, 0.10, 0.10, 0.10, 0.60]])
W_SIGMOID = np.array([[0.10, 0.20, 0.30, 0.95, 0.10],
                      [0.10, 0.90, 0.10, 0.20, 0.10],
                      [0.10, 0.10, 0.86, 0.84, 0.10],
                      [0.05, 0.84, 0.05, 0.20, 0.10],    # strongest below 0.85: none
                      [0.10, 0.15, 0.15, 0.15, 0.15],
                      [0.10, 0.10, 0.10, 0.10, 0.85]])  # exactly the threshold: kept


def test_derive_darts_keeps_none():
    g = derive(W_SOFTMAX, NB201_OPS, "darts")
    assert g.to_string() == BENCHMARK_STRINGS[3]
    assert derive(torch.tensor(W_SOFTMAX), NB201_OPS, "darts") == g  # a tensor works too


def test_derive_threshold_gives_none_below_it():
    g = derive(W_SIGMOID, NB201_OPS, "threshold", 0.85)
    assert g.to_string() == ("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|"
                             "+|none~0|none~1|avg_pool_3x3~2|")
    assert derive(W_SIGMOID, NB201_OPS, "threshold", 0.8).op(3, 0) == "skip_connect"
    assert derive(W_SIGMOID, NB201_OPS, "threshold", 0.99) == NB201Genotype(("none",) * 6)
    # without none among the candidates, the threshold rule still drops an edge
    g3 = derive(W_SIGMOID[:, 1:], NB201_OPS[1:], "threshold")
    assert g3.op(3, 0) == "none" and g3.op(1, 0) == "nor_conv_3x3"
    assert DEFAULT_DERIVE == {"softmax": "darts", "sigmoid": "threshold"}


def test_derive_ties_go_to_the_earlier_op():
    assert derive(np.full((6, 5), 0.2), NB201_OPS, "darts") == NB201Genotype(("none",) * 6)
    assert derive(np.full((6, 2), 0.5), ("nor_conv_3x3", "skip_connect"), "darts").count("nor_conv_3x3") == 6


@pytest.mark.parametrize("weights, kw, match", [
    (np.zeros((6, 4)), {}, "shape \\(6, 5\\)"),
    (np.full((6, 5), np.nan), {}, "finite"),
    (np.full((6, 5), 1.5), {}, "in \\[0, 1\\]"),
    ([["a"] * 5] * 6, {}, "array of numbers"),
    (W_SIGMOID, dict(method="argmax"), "unknown derive method 'argmax'"),
    (W_SIGMOID, dict(method="threshold", threshold=2.0), "threshold must be a number in \\[0, 1\\]"),
    (W_SIGMOID, dict(primitives=("skip_connect",) * 5), "distinct"),
])
def test_derive_validation(weights, kw, match):
    kw = {"primitives": NB201_OPS, **kw}
    with pytest.raises(ValueError, match=match) as info:
        derive(weights, **kw)
    assert "\n" not in str(info.value)


def test_supernet_genotype_follows_its_relaxation():
    dark = tiny("softmax")
    with torch.no_grad():
        dark.alpha.zero_()
        dark.alpha[:, NB201_OPS.index("skip_connect")] = 5.0
    assert dark.genotype() == ALL_SKIP
    fair = tiny("sigmoid", alpha_init_std=0.0)                   # every sigmoid 0.5 < 0.85
    assert fair.genotype() == NB201Genotype(("none",) * 6)
    assert fair.genotype(method="darts") == NB201Genotype(("none",) * 6)  # ties: the first op


# --- evaluation network ----------------------------------------------------------------------------------

@pytest.mark.parametrize("N", [1, 2])
def test_network_shapes_and_interface(N):
    net = NB201Network(BENCHMARK_STRINGS[3], 4, N, 1, 3)
    logits, aux = net(batch()[0])
    assert logits.shape == (6, 3) and aux is None
    assert net.drop_path_prob == 0.0
    net.drop_path_prob = 0.2                                      # the training loop may set it
    assert net(batch()[0])[0].shape == (6, 3)
    assert len(net.cells) == 3 * N + 2
    assert sum(p.numel() for p in NB201Network(NB201Genotype(("none",) * 6), 4, N, 1, 3).cells[0].parameters()) == 0
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        NB201Network(ALL_SKIP, 0)


def test_network_trains_a_few_steps():
    torch.manual_seed(0)
    net = NB201Network(BENCHMARK_STRINGS[1], 4, 1, 1, 3)
    x, y = batch(16)
    losses = []
    for _ in range(8):  # plain SGD by hand (torch.optim's first use imports the compiler: seconds)
        loss = F.cross_entropy(net(x)[0], y)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        with torch.no_grad():
            for p, g in zip(net.parameters(), grads):
                p.sub_(0.2 * g)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_disconnected_cell_ignores_its_input():
    net = NB201Network(NB201Genotype(("none",) * 6), 4, 1, 1, 3)
    cell = net.cells[0]
    assert torch.equal(cell(torch.randn(2, 4, 8, 8)), torch.zeros(2, 4, 8, 8))


@pytest.mark.parametrize("text", [BENCHMARK_STRINGS[2], BENCHMARK_STRINGS[3], BENCHMARK_STRINGS[1]])
def test_dominant_supernet_computes_the_derived_network(text):
    """alpha = 100 on one op per edge: softmax puts weight 1 on it (the others get ~e^-100), so the supernet
    computes the discrete network with the inherited weights."""
    torch.manual_seed(0)
    genotype = NB201Genotype.from_string(text)
    supernet = tiny("softmax", N=2, formulation="reference")
    with torch.no_grad():
        supernet.alpha.zero_()
        for e, op in enumerate(genotype.ops):
            supernet.alpha[e, NB201_OPS.index(op)] = 100.0
    assert supernet.genotype() == genotype
    network = NB201Network(genotype, 4, 2, 1, 3)
    inherit_weights(network, supernet)
    x, _ = batch(8)
    assert torch.allclose(supernet(x), network(x)[0], atol=1e-5)
    supernet.set_formulation("fast")
    assert torch.allclose(supernet(x), network(x)[0], atol=1e-5)


def test_inherit_weights_refuses_mismatches():
    with pytest.raises(ValueError, match="differ in shape"):
        inherit_weights(NB201Network(ALL_SKIP, 8, 1, 1, 3), tiny())
    with pytest.raises(ValueError, match="uses nor_conv_3x3, which the supernet does not have"):
        inherit_weights(NB201Network(BENCHMARK_STRINGS[1], 4, 1, 1, 3), tiny(primitives=("none", "skip_connect")))


# --- drawing ---------------------------------------------------------------------------------------------

def test_cell_graph():
    src = cell_graph(BENCHMARK_STRINGS[3], title="a cell").source
    assert src.count(" -> ") == 5 + 3                              # 5 drawn edges (none omitted) + layout chain
    assert 'label="none"' not in src and 'label=avg_pool_3x3' in src.replace('"', "")
    assert "not reached" not in src
    dead = cell_graph(NB201Genotype(("skip_connect", "none", "none", "none", "none", "nor_conv_3x3"))).source
    assert "3: output, not reached" in dead and "dashed" in dead


@pytest.mark.parametrize("primitives", [NB201_OPS, ("skip_connect", "nor_conv_3x3")])
def test_noise_on_skip_is_the_same_in_both_formulations(primitives):
    """The noise is drawn once per cell, so both formulations add the same draws to the same skips."""
    torch.manual_seed(0)
    fast = tiny("sigmoid", N=2, primitives=primitives, alpha_init_std=1.0)
    ref = copy.deepcopy(fast)
    ref.set_formulation("reference")
    fast.skip_noise_std = ref.skip_noise_std = 0.7
    x, y = batch(8)
    torch.manual_seed(1)
    out_f = fast(x)
    torch.manual_seed(1)
    out_r = ref(x)
    assert torch.allclose(out_f, out_r, atol=1e-5)
    g_f = torch.autograd.grad(F.cross_entropy(out_f, y), fast.alpha)[0]
    g_r = torch.autograd.grad(F.cross_entropy(out_r, y), ref.alpha)[0]
    assert torch.allclose(g_f, g_r, atol=1e-5)
    torch.manual_seed(1)
    quiet = copy.deepcopy(fast)
    quiet.skip_noise_std = 0.0
    assert not torch.allclose(quiet(x), out_f, atol=1e-3)  # the noise changes the output in training mode
    fast.eval()
    noisy_eval = fast(x)
    fast.skip_noise_std = 0.0
    assert torch.equal(fast(x), noisy_eval)  # and never in eval mode


def test_noise_on_skip_reaches_only_skip():
    """Without skip_connect among the candidates the noise has nothing to perturb."""
    torch.manual_seed(0)
    net = tiny("softmax", N=1, primitives=("nor_conv_1x1", "avg_pool_3x3"), alpha_init_std=1.0)
    x, _ = batch(4)
    torch.manual_seed(2)
    quiet = net(x)
    net.skip_noise_std = 1.0
    torch.manual_seed(2)
    assert torch.equal(net(x), quiet)


def test_random_cells_hold_exactly_their_skips():
    from fairdarts_core.nb201 import WEIGHTED_OPS, random_cell

    for k in range(7):
        cells = [random_cell(k, seed) for seed in range(5)]
        for g in cells:
            assert g.count("skip_connect") == k and g.is_connected()
            assert all(op in WEIGHTED_OPS for op in g.ops if op != "skip_connect")
        assert random_cell(k, 0) == random_cell(k, 0)  # a seed names one cell
    assert len({random_cell(2, seed) for seed in range(10)}) > 1
    for bad in (-1, 7, 2.0, True):
        with pytest.raises(ValueError, match=r"skips must be an integer in \[0, 6\]"):
            random_cell(bad, 0)
