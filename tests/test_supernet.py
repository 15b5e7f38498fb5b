"""The supernet: forward/backward for both relaxations and both op sets, parameter split, parse defaults,
noise on skip."""
import numpy as np
import pytest
import torch

from fairdarts_core.genotype import parse_cell
from fairdarts_core.ops import DARTS_OPS, FAIR_DARTS_OPS
from fairdarts_core.supernet import DEFAULT_PARSE, Supernet, SupernetConfig

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
    assert all(p.grad is not None for p in net.weights())
    # reduction cells at 1/3 and 2/3 of the depth
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]


def test_arch_parameters_and_weights_are_disjoint_and_cover_everything():
    net = small_net()
    arch, weights = {id(p) for p in net.arch_parameters()}, {id(p) for p in net.weights()}
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
    with pytest.raises(ValueError, match="unknown supernet path"):
        SupernetConfig(path="slow")
    with pytest.raises(ValueError, match="unknown op"):
        SupernetConfig(primitives=("sep_conv_3x3", "conv_9x9"))
    cfg = SupernetConfig(channels=4, layers=3)
    net = Supernet(cfg, relaxation="softmax")
    assert net.config.relaxation == "softmax" and net.config.channels == 4
    assert cfg.relaxation == "sigmoid"  # the given config is not modified
    with pytest.raises(ValueError, match="unknown supernet path"):
        net.set_path("slow")
