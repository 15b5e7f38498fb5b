"""Candidate operations of the DARTS / Fair DARTS search space (search space S1 of the paper).

Every op maps ``C`` channels to ``C`` channels; ``stride=2`` halves the resolution (reduction cells).
The module layouts (``op.1``, ``conv_1``...) follow the DARTS convention, so the authors' released
checkpoints load by name (see :mod:`fairdarts_core.network`). Code that needs one module of an op (the fast
supernet path) reads it through the named properties below (``SepConv.depthwise1``...), never by position.

Adding an op is one entry in :data:`OPS`: ``name -> factory(C, stride, affine)``.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn

# Published orders (the columns of the authors' weight matrices).
FAIR_DARTS_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""The 7 Fair DARTS candidates (no ``none``: a sigmoid weight already lets an edge switch off)."""

DARTS_OPS: tuple[str, ...] = ("none",) + FAIR_DARTS_OPS
"""The 8 DARTS candidates, with the ``none`` (zero) op first, as in DARTS."""

OP_SETS: Dict[str, tuple[str, ...]] = {"fair_darts": FAIR_DARTS_OPS, "darts": DARTS_OPS}
"""The candidate op sets by name (``--set primitives=darts``)."""

PARAMETER_FREE_OPS = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"})


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k) -> BN, used to preprocess cell inputs."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    @property
    def conv(self) -> nn.Conv2d:
        return self.op[1]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self.op[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    @property
    def depthwise(self) -> nn.Conv2d:
        """The dilated depthwise convolution (``op.1``)."""
        return self.op[1]

    @property
    def pointwise(self) -> nn.Conv2d:
        """The 1x1 convolution (``op.2``)."""
        return self.op[2]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self.op[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked (ReLU -> depthwise conv -> pointwise conv -> BN) blocks; only the first one strides."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    # The two blocks by name: block 1 is op.0-op.3 (it strides), block 2 is op.4-op.7.
    @property
    def depthwise1(self) -> nn.Conv2d:
        return self.op[1]

    @property
    def pointwise1(self) -> nn.Conv2d:
        return self.op[2]

    @property
    def bn1(self) -> nn.BatchNorm2d:
        return self.op[3]

    @property
    def depthwise2(self) -> nn.Conv2d:
        return self.op[5]

    @property
    def pointwise2(self) -> nn.Conv2d:
        return self.op[6]

    @property
    def bn2(self) -> nn.BatchNorm2d:
        return self.op[7]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: outputs zeros (strided like the other ops of its edge)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset stride-2 1x1 convs, concatenated (skip in reduction cells)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # The second conv sees the input shifted by one pixel, so the two halves cover all positions.
        # (Odd resolutions: pad so both halves have the same size.)
        shifted = x[:, :, 1:, 1:]
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            shifted = nn.functional.pad(shifted, (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class PoolBN(nn.Sequential):
    """A pool followed by a non-affine BN: how the supernet uses a pool (see :func:`search_op`). A
    ``Sequential`` (``0`` the pool, ``1`` the BN), so its state-dict keys are the authors' ``k.1.*``."""

    def __init__(self, pool: nn.Module, C: int):
        super().__init__(pool, nn.BatchNorm2d(C, affine=False))

    @property
    def pool(self) -> nn.Module:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]


OpFactory = Callable[[int, int, bool], nn.Module]

OPS: Dict[str, OpFactory] = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine),  # plain conv (mechanism study)
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}
"""The op registry: name -> factory(C, stride, affine)."""


def check_op_names(names) -> None:
    """Raise ``ValueError`` naming the first unknown op."""
    for name in names:
        if name not in OPS:
            raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}")


def make_op(name: str, C: int, stride: int, affine: bool) -> nn.Module:
    """Build op ``name``; pools get no BN here (the supernet adds its own, see ``search_op``)."""
    check_op_names([name])
    return OPS[name](C, stride, affine)


def search_op(name: str, C: int, stride: int) -> nn.Module:
    """An op as it appears inside the supernet: non-affine BNs, pools followed by a non-affine BN
    (so a pool's output scale is comparable to the convs' BN-normalised outputs)."""
    op = make_op(name, C, stride, affine=False)
    if "pool" in name:
        op = PoolBN(op, C)
    return op
