"""The supernet: forward/backward for both relaxations and both op sets, parameter split, parse defaults,
noise on skip (identity skips only), the authors' state-dict layout."""
import copy

import pytest
import torch

from fairdarts_core.fast import FastOptions
from fairdarts_core.genotype import parse_cell
from fairdarts_core.ops import DARTS_OPS, FAIR_DARTS_OPS
from fairdarts_core.supernet import DEFAULT_PARSE, MixedOp, Supernet, SupernetConfig

SMALL = dict(channels=4, layers=5, num_classes=10)


def small_net(**kw) -> Supernet:
    torch.manual_seed(0)
    return Supernet(**{**SMALL, **kw})


@pytest.mark.parametrize("relaxation, primitives, in_channels", [
    ("sigmoid", FAIR_DARTS_OPS, 1),
    ("sigmoid", DARTS_OPS, 3),
    ("softmax", DARTS_OPS, 1),
    ("softmax", FAIR_DARTS_OPS, 3),
])
def test_forward_backward(relaxation, primitives, in_channels):
    net = small_net(relaxation=relaxation, primitives=primitives, in_channels=in_channels, alpha_init_std=1e-3)
    x, y = torch.randn(2, in_channels, 16, 16), torch.tensor([1, 7])
    logits = net(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, y).backward()
    for alpha in net.arch_parameters():
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0  # gradients reach alpha
    assert all(p.grad is not None for p in net.network_parameters())
    # reduction cells at 1/3 and 2/3 of the depth
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]


def test_arch_parameters_and_network_parameters_are_disjoint_and_cover_everything():
    net = small_net()
    arch, weights = {id(p) for p in net.arch_parameters()}, {id(p) for p in net.network_parameters()}
    assert len(arch) == 2 and not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert net.alphas_normal.shape == net.alphas_reduce.shape == (14, 7)


@pytest.mark.parametrize("relaxation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("primitives", [FAIR_DARTS_OPS, DARTS_OPS])
def test_relaxed_weights(relaxation, primitives):
    net = Supernet(channels=4, layers=3, relaxation=relaxation, primitives=primitives)
    normal, reduce = net.relaxed_weights()
    n = len(primitives)
    assert normal.shape == reduce.shape == (14, n)
    assert normal.requires_grad  # differentiable w.r.t. alpha
    # alpha starts at 0: sigmoid 0.5 everywhere (Fair DARTS), uniform 1/n (DARTS)
    assert torch.allclose(normal, torch.full((14, n), 0.5 if relaxation == "sigmoid" else 1 / n))


def test_genotype_default_rule_follows_the_relaxation():
    assert DEFAULT_PARSE == {"sigmoid": "threshold_sparse", "softmax": "darts"}
    # sigmoid at alpha = 0: every weight is 0.5 < 0.85, so threshold_sparse keeps nothing
    sig = Supernet(channels=4, layers=3, relaxation="sigmoid")
    assert sig.genotype().normal == () and sig.genotype().reduce == ()
    assert len(sig.genotype("darts").normal) == 8  # the darts rule always keeps 2 inputs per node
    # softmax: the darts rule, 2 inputs per node
    soft = Supernet(channels=4, layers=3, relaxation="softmax", primitives=DARTS_OPS)
    with torch.no_grad():
        soft.alphas_normal.normal_()
        soft.alphas_reduce.normal_()
    g = soft.genotype()
    normal, reduce = (w.detach().numpy() for w in soft.relaxed_weights())
    assert list(g.normal) == parse_cell(normal, DARTS_OPS, "darts")
    assert list(g.reduce) == parse_cell(reduce, DARTS_OPS, "darts")
    assert len(g.normal) == len(g.reduce) == 8


def test_genotype_thresholds_sigmoid_weights():
    net = Supernet(channels=4, layers=3, relaxation="sigmoid")
    with torch.no_grad():
        net.alphas_normal[0, 3] = 3.0   # sigmoid 0.95: sep_conv_3x3 on edge 2 <- 0
        net.alphas_reduce[1, 0] = 1.0   # sigmoid 0.73: below 0.85
    g = net.genotype()
    assert g.normal == (("sep_conv_3x3", 2, 0),) and g.reduce == ()
    assert net.genotype(threshold=0.7).reduce == (("max_pool_3x3", 2, 1),)


def test_skip_noise_only_in_training_mode():
    net = small_net(layers=3)
    x = torch.randn(2, 3, 16, 16)
    net.eval()
    clean = net(x)
    net.skip_noise_std = 1.0
    assert torch.equal(net(x), clean)  # eval: no noise
    cell = net.cells[1]  # a reduction cell: its noise is at half resolution
    s1 = torch.randn(2, 4, 8, 8)
    assert cell.skip_noise(s1, 1.0) is None
    net.train()
    assert cell.skip_noise(s1, 1.0).shape == (14, 2, 4, 4, 4)
    assert net.cells[0].skip_noise(s1, 1.0).shape == (14, 2, 4, 8, 8)
    assert cell.skip_noise(s1, 0.0) is None
    # training: noise changes the output; without noise two passes agree
    noisy_a, noisy_b = net(x), net(x)
    assert not torch.allclose(noisy_a, noisy_b)
    net.skip_noise_std = 0.0
    assert torch.allclose(net(x), net(x))


def test_config_validation_and_overrides():
    with pytest.raises(ValueError, match="unknown relaxation"):
        SupernetConfig(relaxation="gumbel")
    with pytest.raises(ValueError, match="unknown supernet formulation 'slow'; choose one of fast, reference"):
        SupernetConfig(formulation="slow")
    with pytest.raises(ValueError, match="unknown op"):
        SupernetConfig(primitives=("sep_conv_3x3", "conv_9x9"))
    with pytest.raises(ValueError, match="recompute='some'; choose one of"):
        SupernetConfig(fast_options={"recompute": "some"})
    with pytest.raises(ValueError, match="unknown fast option 'speed'"):
        SupernetConfig(fast_options={"speed": 2})
    with pytest.raises(ValueError, match="fast_options must be a FastOptions"):
        SupernetConfig(fast_options=3)
    assert SupernetConfig(fast_options={"recompute": "all"}).fast_options == FastOptions(recompute="all")
    cfg = SupernetConfig(channels=4, layers=3)
    net = Supernet(cfg, relaxation="softmax")
    assert net.config.relaxation == "softmax" and net.config.channels == 4
    assert cfg.relaxation == "sigmoid"  # the given config is not modified
    with pytest.raises(ValueError, match="unknown supernet formulation"):
        net.set_formulation("slow")
    plain = Supernet(cfg)
    plain.set_formulation("reference")
    assert plain.config.formulation == "reference" and cfg.formulation == "fast"  # nor by set_formulation


# --- noise on skip: identity skips only (the authors' search code) ------------------------------------------
def test_mixed_op_adds_noise_to_the_identity_skip_only():
    """A stride-1 edge's skip is an identity and gets the noise; a stride-2 edge's skip (FactorizedReduce)
    gets none."""
    torch.manual_seed(0)
    w = torch.rand(len(FAIR_DARTS_OPS))
    for stride, changes in ((1, True), (2, False)):
        edge = MixedOp(4, stride, FAIR_DARTS_OPS)
        x = torch.randn(2, 4, 8, 8)
        noise = torch.randn(2, 4, 8 // stride, 8 // stride)
        clean, noisy = edge(x, w), edge(x, w, noise)
        assert torch.equal(clean, noisy) != changes, stride
        if changes:
            skip = FAIR_DARTS_OPS.index("skip_connect")
            torch.testing.assert_close(noisy - clean, w[skip] * noise)


def skip_only_cell_outputs(formulation: str, reduction: bool, std: float):
    """A cell whose every edge is a pure skip (weight 1 on skip_connect): its output with noise ``std``."""
    torch.manual_seed(0)
    net = Supernet(channels=4, layers=3, formulation=formulation, fast_options=FastOptions(memory_min_elements=0))
    cell = next(c for c in net.cells if c.reduction == reduction)
    s0 = torch.randn(2, cell.preprocess0.conv.in_channels, 8, 8)
    s1 = torch.randn(2, cell.preprocess1.conv.in_channels, 8, 8)
    w = torch.zeros(14, len(FAIR_DARTS_OPS))
    w[:, FAIR_DARTS_OPS.index("skip_connect")] = 1.0
    torch.manual_seed(5)  # the same noise for each call
    return cell(s0, s1, w, std).chunk(4, dim=1)  # nodes 2, 3, 4, 5


@pytest.mark.parametrize("formulation", ["reference", "fast"])
def test_noise_on_skip_spares_the_stride_2_edges_of_a_reduction_cell(formulation):
    """Node 2 of a cell sums the skips of the two cell inputs. In a reduction cell those skips stride 2
    (FactorizedReduce): the noise leaves node 2 exactly as it is; the later nodes have identity skips from
    intermediate nodes, so they change. In a normal cell every skip is an identity: node 2 changes too."""
    clean = skip_only_cell_outputs(formulation, reduction=True, std=0.0)
    noisy = skip_only_cell_outputs(formulation, reduction=True, std=1.0)
    assert torch.equal(noisy[0], clean[0])
    assert all(not torch.allclose(a, b) for a, b in zip(noisy[1:], clean[1:]))
    clean = skip_only_cell_outputs(formulation, reduction=False, std=0.0)
    noisy = skip_only_cell_outputs(formulation, reduction=False, std=1.0)
    assert all(not torch.allclose(a, b) for a, b in zip(noisy, clean))


@pytest.mark.parametrize("options", [FastOptions(), FastOptions(recompute="all", memory_min_elements=0),
                                     FastOptions(recompute="none", memory_min_elements=0)])
def test_noise_on_skip_is_the_same_in_both_formulations(options):
    """With noise on, the fast formulation (each memory option) equals the reference in normal and
    reduction cells: the same draws, applied to the same (identity) skips."""
    torch.manual_seed(0)
    ref = Supernet(channels=4, layers=5, in_channels=1, alpha_init_std=0.5, formulation="reference").double()
    fst = copy.deepcopy(ref)
    fst.set_formulation("fast", options)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    outputs = []
    for model in (ref, fst):
        model.skip_noise_std = 0.8
        torch.manual_seed(3)
        out = model(x)
        outputs.append((out, torch.autograd.grad(out.square().sum(), model.arch_parameters())))
    (o_ref, g_ref), (o_fst, g_fst) = outputs
    torch.testing.assert_close(o_fst, o_ref, rtol=1e-9, atol=1e-9)
    for a, b in zip(g_fst, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# --- the authors' state-dict layout ---------------------------------------------------------------------------
def test_state_dict_keys_follow_the_authors_layout():
    """The supernet's tensors are named as in the authors' search network (``cells.i._ops.e._ops.k.*`` there,
    ``cells.i.edges.e.ops.k.*`` here): the named properties of the ops add no key."""
    net = Supernet(channels=4, layers=3, primitives=DARTS_OPS)
    keys = [k for k in net.state_dict() if k.startswith("cells.1.edges.0.")]  # a stride-2 edge
    ops = {k.split(".")[5] for k in keys}
    assert ops == {"1", "2", "3", "4", "5", "6", "7"}  # none has no tensors
    expected = {
        "1": ["1.running_mean", "1.running_var", "1.num_batches_tracked"],  # max pool + BN
        "3": ["conv_1.weight", "conv_2.weight", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"],
        "4": ["op.1.weight", "op.2.weight", "op.3.running_mean", "op.3.running_var", "op.3.num_batches_tracked",
              "op.5.weight", "op.6.weight", "op.7.running_mean", "op.7.running_var", "op.7.num_batches_tracked"],
        "6": ["op.1.weight", "op.2.weight", "op.3.running_mean", "op.3.running_var", "op.3.num_batches_tracked"],
    }
    for k, names in expected.items():
        assert [key.split(".", 6)[6] for key in keys if key.split(".")[5] == k] == names, k
    pre = [k for k in net.state_dict() if k.startswith("cells.0.preprocess0.")]
    assert pre == ["cells.0.preprocess0.op.1.weight", "cells.0.preprocess0.op.2.running_mean",
                   "cells.0.preprocess0.op.2.running_var", "cells.0.preprocess0.op.2.num_batches_tracked"]
