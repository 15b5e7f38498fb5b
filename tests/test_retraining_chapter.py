"""Chapter 6's library parts: the network's layout (checked against the network itself), the zoo table with
two FLOPs counts, seed statistics, the zoo browser and its static gallery, the drawings, and the two checkers."""
from __future__ import annotations

import shutil

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from fairdarts_core import viz, zoo  # noqa: E402
from fairdarts_core.analysis import compare_seeds, seed_stats, t_critical, zoo_table  # noqa: E402
from fairdarts_core.exercises import check_cell_channels, check_sep_conv_cost  # noqa: E402
from fairdarts_core.genotype import Genotype, random_genotype  # noqa: E402
from fairdarts_core.network import NetworkCIFAR, network_layout  # noqa: E402
from fairdarts_core.widgets import zoo_browser, zoo_browser_state, zoo_gallery_static  # noqa: E402

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
SPARSE = Genotype((("sep_conv_3x3", 2, 0), ("skip_connect", 3, 1)), zoo.get("DARTS_V2").reduce)  # 2 live nodes


# --- the layout is the network's -----------------------------------------------------------------------------

@pytest.mark.parametrize("arch,C,layers,size", [("FairDARTS_a", 8, 6, 32), (SPARSE, 4, 8, 29),
                                                (random_genotype(3), 6, 3, 33), ("DARTS_V2", 4, 20, 32)])
def test_the_layout_is_what_the_network_computes(arch, C, layers, size):
    model = NetworkCIFAR(C, 10, layers, auxiliary=True, genotype=arch).train()
    seen = {}
    for i, cell in enumerate(model.cells):
        cell.register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, (tuple(out.shape[1:]), m.reduction)))
    stem = {}
    model.stem.register_forward_hook(lambda m, inp, out: stem.__setitem__("shape", tuple(out.shape[1:])))
    aux = {}
    model.auxiliary_head.register_forward_hook(lambda m, inp, out: aux.__setitem__("in", tuple(inp[0].shape[1:])))
    model(torch.randn(2, 3, size, size))
    layout = network_layout(arch, C, layers, image_size=size)
    assert layout[0]["stage"] == "stem" and stem["shape"] == (layout[0]["out_channels"], size, size)
    cells = [r for r in layout if r["stage"] == "cell"]
    assert len(cells) == layers
    for r in cells:
        assert seen[r["index"]] == ((r["out_channels"], r["size"], r["size"]), r["kind"] == "reduce")
    head = next(r for r in layout if r["stage"] == "auxiliary head")
    assert aux["in"] == (head["in_channels"], head["size"], head["size"]) and head["after"] == 2 * layers // 3
    assert layout[-1] == {"stage": "classifier", "in_channels": model.classifier.in_features, "size": 1}
    assert not any(r["stage"] == "auxiliary head" for r in network_layout(arch, C, layers, auxiliary=False))


@needs_dot
def test_the_network_drawing_names_every_stage():
    svg = viz.plot_network(network_layout("FairDARTS_a"), "FairDARTS_a").pipe(format="svg").decode()
    for text in ("6 x normal cell (cells 0-5)", "reduction cell (cell 6)", "reduction cell (cell 13)",
                 "6 x normal cell (cells 14-19)", "432 out", "auxiliary head (training only)", "reads 576 channels"):
        assert text in svg.replace("&#45;", "-"), text


# --- the zoo table: ours, torch's, and the published figures ------------------------------------------------

def test_the_zoo_table_counts_twice_and_sets_them_beside_the_published_figures():
    rows = {r["arch"]: r for r in zoo_table(["FairDARTS_a", "DARTS_V2", "SNAS"])}
    for r in rows.values():
        assert r["flops_M"] * (1 - 1e-3) <= r["torch_flops_M"] <= r["flops_M"]  # FlopCounterMode / 2, no pools
        assert r["params_with_aux_M"] > r["params_M"]
    a = rows["FairDARTS_a"]
    assert a["params_match"] == "with_aux" and rows["DARTS_V2"]["params_match"] == "without_aux"  # the mix
    assert (a["normal_edges"], a["normal_skips"]) == (4, 0) and rows["SNAS"]["normal_skips"] == 4
    state = zoo_browser_state(list(rows.values()), "FairDARTS_a")
    assert state["genotype"] == zoo.get("FairDARTS_a")
    assert "2.36M parameters without the auxiliary head, 2.84M with it" in state["verdict"]
    assert "2.83M parameters (our count with the auxiliary head)" in state["verdict"]
    assert "97.46% top-1" in state["verdict"]
    with pytest.raises(ValueError, match="unknown cell 'nope'; the table holds FairDARTS_a, DARTS_V2, SNAS"):
        zoo_browser_state(list(rows.values()), "nope")


@needs_dot
def test_the_zoo_browser_and_its_static_gallery():
    rows = zoo_table(["FairDARTS_c", "GDAS"])
    box = zoo_browser(rows)
    assert box.state()["arch"] == "FairDARTS_c"
    box.choice.value = "GDAS"
    assert box.state()["arch"] == "GDAS" and "GDAS" in box.children[2].value and "<svg" in box.children[2].value
    html = zoo_gallery_static(rows)
    assert html.count("<svg") == 2 and "FairDARTS_c:" in html and "GDAS:" in html


# --- seeds ----------------------------------------------------------------------------------------------------

def test_seed_statistics_and_the_welch_comparison():
    a = seed_stats("a", [0.80, 0.81, 0.79])
    assert (a.n, a.mean, a.std) == (3, pytest.approx(0.80), pytest.approx(0.01))
    assert seed_stats("one", [0.5]).std == 0.0
    far = compare_seeds(a, seed_stats("b", [0.70, 0.71, 0.69]))
    # equal spreads, 3 + 3 seeds: Welch's dof is 4, t = 2.776, se = 0.01 * sqrt(2/3)
    assert far["dof"] == pytest.approx(4.0) and far["margin"] == pytest.approx(2.776 * 0.01 * (2 / 3) ** 0.5)
    assert far["differs"] and far["difference"] == pytest.approx(0.10)
    near = compare_seeds(a, seed_stats("c", [0.80, 0.82, 0.79]))
    assert not near["differs"]
    assert t_critical(4) == 2.776 and t_critical(500) == 1.960 and t_critical(0.5) == float("inf")
    assert 2.571 < t_critical(4.5) < 2.776 and t_critical(1.8) == pytest.approx(12.71 + (1 - 1 / 1.8) / 0.5 * (4.303 - 12.71))
    # Two cells that every seed moves alike, one about 0.01 above the other: unpaired, the seeds' spread hides
    # the difference; paired, it shows.
    low = seed_stats("low", [0.70, 0.76, 0.73], seeds=[0, 1, 2])
    high = seed_stats("high", [0.711, 0.769, 0.741], seeds=[0, 1, 2])
    assert not compare_seeds(high, low)["differs"]
    paired = compare_seeds(high, low, paired=True)
    assert paired["differs"] and paired["dof"] == 2 and paired["difference"] == pytest.approx(0.0103, abs=1e-4)
    with pytest.raises(ValueError, match="needs the same seeds"):
        compare_seeds(high, seed_stats("other", [0.7, 0.7, 0.7], seeds=[3, 4, 5]), paired=True)
    with pytest.raises(ValueError, match="3 accuracies but 2 seeds"):
        seed_stats("bad", [0.1, 0.2, 0.3], seeds=[0, 1])
    with pytest.raises(ValueError, match="needs two seeds of each; got 3 and 1"):
        compare_seeds(a, seed_stats("one", [0.5]))
    with pytest.raises(ValueError, match="need at least one finite accuracy"):
        seed_stats("bad", [float("nan")])
    fig, ax = viz.plot_retrained([a, seed_stats("one", [0.5])], reference=0.1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (n=3)", "one (n=1)"]


# --- the chapter's exercises ------------------------------------------------------------------------------

def _channels(C, layers, normal, reduce, four=False, double=True):
    out, c = [], C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c = c * 2 if reduction and double else c
        out.append((4 if four else (reduce if reduction else normal)) * c)
    return out


def test_the_cell_channels_checker():
    assert check_cell_channels(_channels).ok
    four = check_cell_channels(lambda *a: _channels(*a, four=True))
    assert not four.ok and "live nodes only" in four.message
    flat = check_cell_channels(lambda *a: _channels(*a, double=False))
    assert not flat.ok and "double C" in flat.message
    assert "not written yet" in check_cell_channels(lambda *a: (_ for _ in ()).throw(NotImplementedError)).message


def test_the_sep_conv_cost_checker():
    def cost(C, k, size, blocks=2, depthwise=True, bn=True):
        weights = (C * k * k if depthwise else C * C * k * k) + C * C + (2 * C if bn else 0)
        macs = size * size * ((C * k * k if depthwise else C * C * k * k) + C * C)
        return blocks * weights, blocks * macs
    assert check_sep_conv_cost(cost).ok
    for kw, words in ((dict(blocks=1), "two ReLU-depthwise-pointwise-BN blocks"), (dict(depthwise=False), "depthwise"),
                      (dict(bn=False), "C weights and C biases")):
        result = check_sep_conv_cost(lambda C, k, s, kw=kw: cost(C, k, s, **kw))
        assert not result.ok and words in result.message, (kw, result.message)
    assert "return two numbers" in check_sep_conv_cost(lambda C, k, s: 3).message
