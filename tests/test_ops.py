"""Candidate ops: shapes, the supernet's non-affine BNs, and the registry (adding an op is one entry)."""
import pytest
import torch
from torch import nn

from fairdarts_core.ops import (DARTS_OPS, FAIR_DARTS_OPS, OP_SETS, OPS, DilConv, FactorizedReduce, PARAMETER_FREE_OPS,
                                PoolBN, ReLUConvBN, SepConv, check_op_names, make_op, search_op)
from fairdarts_core.supernet import Supernet

ALL_OPS = list(DARTS_OPS)  # the 7 Fair DARTS ops plus 'none'


def test_op_sets():
    assert len(FAIR_DARTS_OPS) == 7 and "none" not in FAIR_DARTS_OPS
    assert DARTS_OPS == ("none",) + FAIR_DARTS_OPS
    assert set(DARTS_OPS) <= set(OPS)
    assert OP_SETS == {"fair_darts": FAIR_DARTS_OPS, "darts": DARTS_OPS}


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("size", [8, 7])  # odd sizes too: reduction cells meet them on small inputs
def test_shapes(name, size):
    C = 4
    x = torch.randn(2, C, size, size)
    half = (size + 1) // 2
    for build in (lambda s: make_op(name, C, s, affine=True), lambda s: search_op(name, C, s)):
        assert build(1)(x).shape == (2, C, size, size)
        assert build(2)(x).shape == (2, C, half, half)


@pytest.mark.parametrize("name", ALL_OPS)
def test_parameter_free_ops(name):
    n_params = sum(p.numel() for p in make_op(name, 4, 1, affine=False).parameters())
    assert (n_params == 0) == (name in PARAMETER_FREE_OPS)


def test_zero_and_identity():
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(make_op("skip_connect", 4, 1, True)(x), x)
    assert not make_op("none", 4, 2, True)(x).any()
    assert isinstance(make_op("skip_connect", 4, 2, True), FactorizedReduce)
    with pytest.raises(ValueError, match="even number"):
        FactorizedReduce(4, 5)


def test_search_ops_have_non_affine_bn_and_pools_get_one():
    for name in ALL_OPS:
        op = search_op(name, 4, 1)
        for bn in (m for m in op.modules() if isinstance(m, nn.BatchNorm2d)):
            assert not bn.affine
        if "pool" in name:
            assert isinstance(op, PoolBN) and isinstance(op, nn.Sequential) and len(op) == 2
            assert isinstance(op.pool, (nn.MaxPool2d, nn.AvgPool2d)) and op.pool is op[0]
            assert isinstance(op.bn, nn.BatchNorm2d) and not op.bn.affine and op.bn is op[1]
            assert list(op.state_dict()) == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    # outside the supernet (evaluation networks) the same ops have affine BNs and bare pools
    assert make_op("sep_conv_3x3", 4, 1, affine=True).op[3].affine
    assert isinstance(make_op("max_pool_3x3", 4, 1, affine=True), nn.MaxPool2d)


def test_ops_name_their_modules():
    """The modules an op is made of, by name (the fast supernet path reads them so); the module layout and
    so the state-dict keys stay the DARTS ones (``op.1``...), which the authors' checkpoints use."""
    sep = SepConv(4, 4, 3, 2, 1)
    assert [sep.depthwise1, sep.pointwise1, sep.bn1, sep.depthwise2, sep.pointwise2, sep.bn2] == \
        [sep.op[i] for i in (1, 2, 3, 5, 6, 7)]
    assert sep.depthwise1.stride == (2, 2) and sep.depthwise2.stride == (1, 1)  # only the first block strides
    assert sep.depthwise1.groups == 4 and sep.pointwise1.kernel_size == (1, 1)
    dil = DilConv(4, 4, 5, 1, 4, 2)
    assert [dil.depthwise, dil.pointwise, dil.bn] == [dil.op[1], dil.op[2], dil.op[3]]
    assert dil.depthwise.dilation == (2, 2)
    rcb = ReLUConvBN(3, 4, 1, 1, 0)
    assert [rcb.conv, rcb.bn] == [rcb.op[1], rcb.op[2]]
    for op, keys in ((sep, ["op.1.weight", "op.2.weight", "op.3.weight", "op.3.bias"]),
                     (dil, ["op.1.weight", "op.2.weight", "op.3.weight", "op.3.bias"]),
                     (rcb, ["op.1.weight", "op.2.weight", "op.2.bias"])):
        assert list(op.state_dict())[:len(keys)] == keys


def test_every_supernet_cell_bn_is_non_affine():
    net = Supernet(channels=4, layers=3, primitives=DARTS_OPS)
    bns = [m for cell in net.cells for m in cell.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(bn.affine for bn in bns)


def test_unknown_op():
    with pytest.raises(ValueError, match="unknown op 'conv_7x7'"):
        check_op_names(["skip_connect", "conv_7x7"])
    with pytest.raises(ValueError, match="unknown op"):
        make_op("conv_7x7", 4, 1, True)
    with pytest.raises(ValueError, match="unknown op"):
        Supernet(channels=4, layers=3, primitives=("skip_connect", "conv_7x7"))


def test_adding_an_op_is_one_registry_entry(monkeypatch):
    # one entry: name -> factory(C, stride, affine)
    monkeypatch.setitem(OPS, "conv_1x1", lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine))
    primitives = FAIR_DARTS_OPS + ("conv_1x1",)
    net = Supernet(channels=4, layers=3, primitives=primitives)
    assert net.alphas_normal.shape == (14, 8)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert net.alphas_normal.grad[:, -1].abs().sum() > 0  # the new op's column learns
    assert search_op("conv_1x1", 4, 2)(torch.randn(1, 4, 8, 8)).shape == (1, 4, 4, 4)
    monkeypatch.undo()  # removed again: the registry is as before
    assert "conv_1x1" not in OPS
