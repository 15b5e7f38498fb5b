"""Cell drawings (graphviz) and weight heat maps (matplotlib)."""
import re
import shutil

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")  # no display in tests

from fairdarts_core import viz  # noqa: E402
from fairdarts_core.genotype import Genotype  # noqa: E402
from fairdarts_core.ops import FAIR_DARTS_OPS  # noqa: E402

# node 3 has no input; node 4 is fed only by node 3 (isolated too); node 5 is fed by node 4 and input 0
CELL = [("sep_conv_3x3", 2, 0), ("sep_conv_5x5", 2, 1), ("skip_connect", 4, 3), ("dil_conv_3x3", 5, 4),
        ("max_pool_3x3", 5, 0)]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")


def node_line(source: str, node: str) -> str:
    return next(line for line in source.splitlines() if re.match(rf"\s*{node} \[", line))


def edge_line(source: str, src: str, dst: str) -> str:
    return next(line for line in source.splitlines() if re.match(rf"\s*{src} -> {dst}\b", line))


def test_plot_cell_greys_isolated_nodes_and_their_edges():
    src = viz.plot_cell(CELL, title="test").source
    assert "c_{k-2}" in node_line(src, "0") and "c_{k-1}" in node_line(src, "1")
    assert "c_{k}" in node_line(src, "out")
    for node in ("3", "4"):  # isolated, recursively
        assert "gray" in node_line(src, node) and "dashed" in node_line(src, node)
    for node in ("2", "5"):
        assert "gray" not in node_line(src, node)
    # edges into / out of isolated nodes: grey dashed; live edges are plain and labelled with their op
    assert "dashed" in edge_line(src, "3", "4") and "dashed" in edge_line(src, "4", "5")
    assert "label=max_pool_3x3" in edge_line(src, "0", "5") and "dashed" not in edge_line(src, "0", "5")
    # only live nodes feed the output
    outs = sorted(m.group(1) for m in re.finditer(r"(\w+) -> out", src))
    assert outs == ["2", "5"]
    assert "label=test" in src


def test_plot_genotype_draws_both_cells():
    g = Genotype(tuple(CELL), (("max_pool_3x3", 2, 0), ("skip_connect", 3, 1)))
    src = viz.plot_genotype(g, title="both").source
    assert "cluster_normal" in src and "cluster_reduce" in src
    assert "gray" in node_line(src, "normal_3") and "gray" not in node_line(src, "reduce_3")
    assert "reduce_2 -> reduce_out" in src and "normal_3 -> normal_out" not in src


def test_plot_cell_validates():
    with pytest.raises(ValueError, match="unknown op"):
        viz.plot_cell([("conv_9x9", 2, 0)])


@needs_dot
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<svg"), (".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_save_cell_by_suffix(tmp_path, suffix, magic):
    out = viz.save_cell(CELL, tmp_path / f"cell{suffix}")
    assert magic in out.read_bytes()[:400]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"cell{suffix}"]  # no stray .gv source file


@needs_dot
def test_save_genotype_svg(tmp_path):
    g = Genotype(tuple(CELL), (("max_pool_3x3", 2, 0),))
    text = viz.save_cell(g, tmp_path / "g.svg").read_text()
    assert "<svg" in text and "reduction cell" in text and "sep_conv_5x5" in text


def test_save_cell_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"\.svg, \.png or \.pdf"):
        viz.save_cell(CELL, tmp_path / "cell.txt")
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="apt-get install graphviz") as err:
        viz.save_cell(CELL, tmp_path / "cell.svg")
    assert "\n" not in str(err.value)


def test_weights_heatmap():
    W = np.linspace(0, 1, 14 * 7).reshape(14, 7)
    fig, ax = viz.plot_weights_heatmap(W, FAIR_DARTS_OPS, title="normal")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:3] == ["2<-0", "2<-1", "3<-0"] and labels[-1] == "5<-4" and len(labels) == 14
    assert [t.get_text() for t in ax.get_xticklabels()] == list(FAIR_DARTS_OPS)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 14 * 7 and texts[0] == "0.00" and texts[-1] == "1.00"
    assert ax.get_title() == "normal"
    matplotlib.pyplot.close(fig)


def test_weights_heatmap_on_given_axes_and_tensor():
    fig, axes = matplotlib.pyplot.subplots(1, 2)
    w = torch.sigmoid(torch.zeros(14, 7, requires_grad=True))  # a tensor that needs grad is fine
    out_fig, out_ax = viz.plot_weights_heatmap(w, FAIR_DARTS_OPS, ax=axes[1])
    assert out_fig is fig and out_ax is axes[1] and out_ax.texts[0].get_text() == "0.50"
    with pytest.raises(ValueError, match="shape"):
        viz.plot_weights_heatmap(np.zeros((14, 8)), FAIR_DARTS_OPS)
    with pytest.raises(ValueError, match="edge count"):
        viz.plot_weights_heatmap(np.zeros((13, 7)), FAIR_DARTS_OPS)
    matplotlib.pyplot.close(fig)


def test_a_cell_without_live_node_says_so_in_the_drawing():
    # node 2 has no input; node 3 is fed only by node 2: nothing reaches the output
    src = viz.plot_cell([("skip_connect", 3, 2)]).source
    out = node_line(src, "out")
    assert "no live node" in out and "gray" in out and "dashed" in out
    assert " -> out" not in src
    live = viz.plot_cell(CELL).source
    assert "no live node" not in live and "gray" not in node_line(live, "out")
    g = Genotype((("skip_connect", 3, 2),), (("max_pool_3x3", 2, 0),))
    assert g.cells_without_live_node() == ["normal"]
    src = viz.plot_genotype(g).source
    assert "no live node" in node_line(src, "normal_out") and "no live node" not in node_line(src, "reduce_out")
