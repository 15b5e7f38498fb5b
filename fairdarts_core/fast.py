"""The fast supernet path: the same cell as the reference ``MixedOp`` formulation, computed with less work.

``SearchCell.forward`` calls :func:`fast_cell_forward` when the cell's ``formulation`` is ``"fast"``. It reads the
parameters and BN buffers of the very modules the reference path uses (``cell.edges[e].ops[k]``), so
``Supernet.set_formulation`` switches formulation on one model, and both paths compute the same function (same
outputs, same gradients, same BN running statistics) up to floating-point rounding.

Where the time goes (measured with ``torch.profiler`` on a 2-core CPU, see ``book/benchmarks.ipynb``): the
reference step is dominated by the backward pass of the depthwise convolutions, above all the dilated
ones, for which oneDNN has no fast kernel, and by pools/BN in the NCHW layout. What this path changes:

* **Shared per-source work.** Every edge leaving one source node sees the same input. Its max/avg pools
  and the BN after them (training mode: batch statistics, non-affine) give the same tensor on every edge:
  computed once per source; each edge's BN still gets its running statistics updated. The ReLU in front
  of every convolution (and of the factorized-reduce skip) is computed once per source.
* **Weights folded into the last BN.** ``w * BN(z)`` with a non-affine BN is ``BN(z)`` with ``gamma = w``:
  one fused kernel, and autograd keeps one tensor fewer per op alive for the backward pass.
* **Fused node sums** (``fused_sums``, in training mode, on cells whose input has at least
  ``reorder_min_elements`` elements): with batch statistics ``w * BN(z) = a * z + b`` per channel, so a node
  adds ``a * z`` of each term in place into one tensor and the offsets ``b`` once at the end; no BN output
  is written and nothing is allocated per term. BN's own backward pass gives the gradients
  (:mod:`fairdarts_core.fast_sum`). This sum rounds differently from the exact one (terms computed, then
  added edge by edge), which smaller cells keep: the recorded searches ran at those sizes, and there the
  extra small operations per term cost more than they save.
* **The weight gradient of a 5x5 depthwise convolution** (on the same cells as the fused sums; on the CPU,
  outside autocast; :mod:`fairdarts_core.fast_depthwise`), which oneDNN computes with a slow generic kernel:
  on an image of at most 25 pixels as a batched matmul (``matmul_weight_grad``; the last stage's dilated 5x5
  convolutions run on 4x4 phases), on larger ones as a 5x3 and two shifted 5x1 weight gradients, which
  oneDNN's fast depthwise kernel computes (``split_weight_grad``).
* **Batch norm with wide reductions** (the same cells, on the CPU, at most 16 channels;
  :mod:`fairdarts_core.fast_norm`): the statistics and the backward sums read a channels_last activation as
  rows of 64 lanes, where ATen's kernels run 16 lanes wide at the paper's first cells (``wide_norm``: on some
  CPUs ATen's kernels for those rows gain nothing from a second thread, and the step is faster without it).
* **Dilated depthwise convolutions as undilated ones** on the four polyphase sub-images (space-to-batch):
  a dilation-2 convolution of an image is an ordinary convolution of each of its 2x2 phases. The 1x1
  conv and the BN after it treat every pixel alike, so a whole ``dil_conv`` runs in phase space: each
  source splits its ReLU output into phases once, and each edge interleaves the sum of its dilated ops
  back once (even-sized inputs; odd ones split and interleave per op).
* **channels_last** memory layout (optional, on by default): pools, BN and convolutions all run faster,
  as long as the *gradients* are channels_last too. A gradient in another layout makes every kernel that
  meets it convert or take a slow path (mixing layouts made BN's backward 3-4x slower), so every
  reshaping step has its own backward that returns a compact channels_last gradient
  (:mod:`fairdarts_core.fast_layout`): the phase split and interleave (one copy each way), the single
  phases that stride-2 ops read, and the cell's output concatenation (``cat``'s own backward hands out
  strided channel slices).
* **Frozen weights in the architecture step** (:func:`fairdarts_core.steps.arch_step` freezes them): a
  convolution whose weight needs no gradient keeps its weight, not its input (:func:`conv2d`), so such a
  pass keeps about half the activations of a weight step.
* The ``none`` op contributes exactly zero: it is skipped. Each edge and node keeps one running sum (or, fused,
  each node one).
* **Noise on skip** (Fair DARTS's DARTS experiment): as in the reference ``MixedOp``, only identity skips
  (stride 1) get the noise; the stride-2 ``FactorizedReduce`` skips of a reduction cell get none.

Memory (:mod:`fairdarts_core.fast_memory`; neither option changes a single bit of the results, the same
kernels run on the same inputs, and ``tests/test_fast.py`` checks three whole steps for bitwise equality):

* **Recomputation** of whole cells (``recompute``): the mixed edges of a cell keep only the cell's two
  preprocessed inputs and are recomputed in the backward pass, with the same batch statistics and skip
  noise and without a second update of the BN running statistics. It costs one more forward pass of the
  cell. ``"first_stage"`` recomputes the normal cells before the first reduction, at full resolution
  (the largest activations), in passes that train the weights; ``"all"`` every cell in every pass;
  ``"none"`` (the default) none: rebuilding (next) keeps about as little for less work.
* **Rebuilding activations** (``rebuild_cheap``, the cells not recomputed): autograd stores a recipe instead
  of a tensor for every activation one op computes from another, each as cheap as a pass over memory: the
  depthwise and 1x1 convolution outputs, the ReLU inside every SepConv (BN + ReLU of the rebuilt 1x1
  output), the per-source ReLU, phases, pools and pool BN. A cell then keeps little more than its node
  values; the backward pass rebuilds each activation once, when it first needs it, which costs a fraction
  of recomputing the whole cell (its BN statistics and sums too), and never holds a whole cell's activations
  at once. (In the architecture step, whose frozen convolutions keep no inputs, the 1x1 outputs stay: BN
  keeps them, and a recipe would keep the convolution's input instead.)

Both apply only to cells whose input has at least ``memory_min_elements`` elements (batch x channels x
height x width; 2**20 by default: at the paper shape, the two normal cells before the first reduction and
the two reduction cells): for small activations memory is no concern, and the extra work is mostly
per-call overhead. (``book/benchmarks.ipynb`` has the measured time and peak memory of each setting.)

The switches are a value, :class:`FastOptions`, given to the supernet (``SupernetConfig.fast_options``);
what one call of a cell needs besides (whether BN statistics may be updated, its rebuild recipes) lives in
a :class:`CellPass` made for that call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .fast_depthwise import WideDepthwise, is_wide_same_depthwise
from .fast_layout import concat_channels, from_phases, phase, space_to_batch, to_phases
from .fast_memory import Rebuilds, recompute_in_backward
from .fast_norm import normalize, unbiased, update_running, wide_norm_applies
from .fast_sum import InPlaceSum, RunningSum, batch_norm, update_counter
from .genotype import edge_index
from .ops import DilConv, FactorizedReduce, Identity, PoolBN, SepConv, Zero

Sum = Union[RunningSum, InPlaceSum]

RECOMPUTE = ("none", "first_stage", "all")
"""Values of ``FastOptions.recompute``: no cell, the normal cells before the first reduction (full
resolution: they hold the largest activations), every cell."""


@dataclass(frozen=True)
class FastOptions:
    """Switches of the fast path (all ideas on by default; the math is the same either way, and the memory
    options change no bit of the results)."""

    channels_last: bool = True          # run the cell in the channels_last memory layout
    dilated_as_phases: bool = True      # dilation-2 depthwise convs as undilated convs on 2x2 polyphase images
    recompute: str = "none"             # which cells keep only their inputs and recompute their mixed edges
    rebuild_cheap: bool = True          # other cells: drop the activations of each op (conv outputs...), rebuild them
    memory_min_elements: int = 2 ** 20  # cells with smaller inputs (batch x C x H x W) use neither of the two
    fused_sums: bool = True             # add each node's BN terms in place, without writing each BN output
    matmul_weight_grad: bool = True     # 5x5 depthwise convs on images of <= 25 pixels: weight gradient by bmm
    split_weight_grad: bool = True      # 5x5 depthwise convs on larger images: weight gradient as 5x3 + 2 x 5x1
    wide_norm: bool = True              # BN of <= 16 channels on the CPU: reductions 64 lanes wide (fast_norm)
    reorder_min_elements: int = 2 ** 18  # smaller cells (input elements) use none of these four: they keep the
    #                                      order of the exact formulation, bit for bit (the recorded searches)

    def __post_init__(self):
        for name in ("channels_last", "dilated_as_phases", "rebuild_cheap", "fused_sums", "matmul_weight_grad",
                     "split_weight_grad", "wide_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"fast option {name} must be true or false; got {getattr(self, name)!r}")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"fast option recompute={self.recompute!r}; choose one of {', '.join(RECOMPUTE)}")
        for name in ("memory_min_elements", "reorder_min_elements"):
            m = getattr(self, name)
            if isinstance(m, bool) or not isinstance(m, int) or m < 0:
                raise ValueError(f"fast option {name} must be an integer >= 0; got {m!r}")

    @property
    def layout(self) -> torch.memory_format:
        """The memory format the cell runs in."""
        return torch.channels_last if self.channels_last else torch.contiguous_format


@dataclass
class CellPass:
    """One call of one cell: its options and the state that call alone needs.

    ``update_stats`` is False while a checkpointed cell is recomputed in the backward pass (its BN running
    statistics were updated by the first call); ``rebuilds`` holds the rebuild recipes while the cell runs
    under the rebuild hooks (``None``: nothing is rebuilt); ``reordered``: the cell is large enough
    (``options.reorder_min_elements``) for the ideas that round differently from the exact formulation."""

    options: FastOptions
    update_stats: bool = True
    rebuilds: Optional[Rebuilds] = None
    reordered: bool = False

    @property
    def layout(self) -> torch.memory_format:
        return self.options.layout

    def wide_norm(self, x: torch.Tensor) -> bool:
        """Does batch norm of ``x`` reduce 64 lanes wide here (:mod:`fairdarts_core.fast_norm`)? In reordered cells
        with ``wide_norm`` on, for the tensors :func:`~fairdarts_core.fast_norm.wide_norm_applies` accepts."""
        return self.reordered and self.options.wide_norm and wide_norm_applies(x)

    def rebuildable(self, y: torch.Tensor, fn: Callable[..., torch.Tensor], *inputs) -> torch.Tensor:
        """``y = fn(*inputs)``, marked as an activation autograd may drop and rebuild (see
        :meth:`fairdarts_core.fast_memory.Rebuilds.mark`); unchanged when nothing is rebuilt."""
        return y if self.rebuilds is None else self.rebuilds.mark(y, fn, *inputs)


# --- small building blocks ----------------------------------------------------------------------------
def shared_batch_norm(run: CellPass, bns: Sequence[nn.BatchNorm2d], x: torch.Tensor) -> Optional[torch.Tensor]:
    """Training mode: ``bn_e(x)`` for several non-affine BNs that all see the same ``x`` is one tensor
    (batch statistics). Computes it once and updates every BN's running statistics from the one batch
    statistic. Returns ``None`` when the BNs cannot share (eval mode, affine BNs...)."""
    if not all(bn.training and bn.track_running_stats and not bn.affine for bn in bns):
        return None
    eps = {bn.eps for bn in bns}
    if len(eps) != 1:
        return None
    eps = eps.pop()
    if run.wide_norm(x):
        y, mean, var = normalize(x, eps)
        y, var = run.rebuildable(y, lambda z: normalize(z, eps)[0], x), unbiased(var, x)
    else:
        # One pass: with momentum 1, F.batch_norm leaves the batch mean and the unbiased batch variance in the
        # two scratch buffers (what BatchNorm2d blends into its running statistics), then each BN blends them.
        # (A checkpoint's recomputation makes the same call, so autograd saves the same tensors, and blends
        # nothing.)
        mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        var = torch.ones_like(mean)
        y = run.rebuildable(F.batch_norm(x, mean, var, None, None, True, 1.0, eps),
                            lambda z: _batch_stats_norm(z, None, None, eps, 1.0), x)
    if not run.update_stats:
        return y
    with torch.no_grad():
        for bn in bns:
            update_running(bn, mean, var, update_counter(bn, run.update_stats))
    return y


class _ConvInputGradient(torch.autograd.Function):
    """``F.conv2d`` with a frozen weight (and bias): its backward pass computes the input's gradient alone, so
    it keeps the weight, not the input. (Autograd's own convolution node keeps both whenever anything needs
    a gradient; the kernels are the same, so are the results, bit for bit.)"""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.conf = (stride, padding, dilation, groups)
        ctx.x_shape, ctx.x_stride = x.shape, x.stride()
        ctx.x_layout = torch.channels_last if (x.dim() == 4 and not x.is_contiguous()
                                               and x.is_contiguous(memory_format=torch.channels_last)) \
            else torch.contiguous_format
        ctx.save_for_backward(weight)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        weight, = ctx.saved_tensors
        # Under autocast the forward's convolution ran on the weight cast to the autocast dtype, the gradient's
        # dtype: the same cast gives the same bits (and oneDNN builds without bf16 refuse mixed dtypes).
        weight = weight.to(g.dtype)
        stride, padding, dilation, groups = ctx.conf
        # A stand-in for x with x's strides where x is dense: the kernel picks its layout from them, and where
        # both layouts fit (1x1 images) another pick rounds differently on some CPUs (oneDNN's SSE4.1 kernels)
        if _is_dense(ctx.x_shape, ctx.x_stride):
            shape_only = torch.empty_strided(ctx.x_shape, ctx.x_stride, dtype=g.dtype, device=g.device)
        else:
            shape_only = torch.empty(ctx.x_shape, dtype=g.dtype, device=g.device, memory_format=ctx.x_layout)
        gx = torch.ops.aten.convolution_backward(g, shape_only, weight, None, _pair(stride), _pair(padding),
                                                 _pair(dilation), False, [0, 0], groups, [True, False, False])[0]
        return gx, None, None, None, None, None, None


def _is_dense(shape: Sequence[int], stride: Sequence[int]) -> bool:
    """Do a tensor's elements fill its span of memory exactly (no gaps, no overlaps)?"""
    if 0 in shape:
        return True
    dims = sorted((st, n) for n, st in zip(shape, stride) if n > 1)
    expected = 1
    for st, n in dims:
        if st != expected:
            return False
        expected *= n
    return True


def _pair(v) -> List[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.conv2d``; with a frozen weight and bias (an architecture step:
    :func:`fairdarts_core.steps.arch_step`), through :class:`_ConvInputGradient`."""
    frozen = not weight.requires_grad and (bias is None or not bias.requires_grad)
    if not (frozen and x.requires_grad and torch.is_grad_enabled()):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return _ConvInputGradient.apply(x, weight, bias, stride, padding, dilation, groups)


def cell_conv2d(run: CellPass, x: torch.Tensor, weight: torch.Tensor, padding=0, groups: int = 1) -> torch.Tensor:
    """A stride-1 convolution without bias inside a cell: :func:`conv2d`, or, in a reordered cell on the CPU
    (oneDNN's kernels) outside autocast, for a 'same' depthwise convolution wider than 3x3,
    :class:`~fairdarts_core.fast_depthwise.WideDepthwise` (same forward kernel, so the same output bits;
    its weight gradient rounds differently): on images of at most ``k * k`` pixels with ``matmul_weight_grad``,
    on larger ones with ``split_weight_grad``."""
    if (run.reordered and torch.is_grad_enabled() and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and is_wide_same_depthwise(x, weight, 1, padding, 1, groups)):
        k = weight.shape[-1]
        small = x.shape[-2] * x.shape[-1] <= k * k
        chosen = run.options.matmul_weight_grad if small else run.options.split_weight_grad
        if chosen:
            return WideDepthwise.apply(x, weight)
    return conv2d(x, weight, None, 1, padding, 1, groups)


def module_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a zero-padded ``nn.Conv2d``, through :func:`conv2d`."""
    return conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def depthwise(run: CellPass, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a depthwise convolution; stride-1 dilation-2 ones via the polyphase trick (see
    module doc). (The cell itself routes whole dilated ops into phase space; this covers the rest.) Autograd
    may drop the output and rebuild it from ``x``, itself kept or rebuilt."""
    k = conv.kernel_size[0]
    if conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.bias is None:
        return run.rebuildable(cell_conv2d(run, x, conv.weight, conv.padding, conv.groups), module_conv, x, conv)
    if (conv.dilation != (2, 2) or conv.stride != (1, 1) or conv.padding != (k - 1, k - 1) or k % 2 == 0
            or not run.options.dilated_as_phases):
        return run.rebuildable(module_conv(x, conv), module_conv, x, conv)
    return _dilated_by_phases(x, conv.weight, conv.groups, run.layout)


def _reads_even_phase(run: CellPass, conv: nn.Conv2d) -> bool:
    """Stride 2 and dilation 2 with 'same' padding only ever read phase (0, 0) of the input: the conv is
    an undilated stride-1 conv of that phase with half the padding."""
    k = conv.kernel_size[0]
    return (run.options.dilated_as_phases and conv.stride == (2, 2) and conv.dilation == (2, 2)
            and conv.padding == (k - 1, k - 1) and k % 2 == 1)


def _dilated_by_phases(x: torch.Tensor, weight: torch.Tensor, groups: int,
                       layout: torch.memory_format) -> torch.Tensor:
    """A stride-1 dilation-2 'same' convolution as an undilated one on the four 2x2 phases of ``x``,
    stacked along the batch (space-to-batch), then interleaved back (batch-to-space)."""
    H, W = x.shape[-2:]
    if H % 2 or W % 2:  # zeros at the end act like the zero padding they replace; cropped below
        x = F.pad(x, (0, W % 2, 0, H % 2))
    k = weight.shape[-1]
    y = conv2d(to_phases(x, layout), weight, None, 1, (k - 1) // 2, 1, groups)
    return from_phases(y, x.shape[0], layout)[:, :, :H, :W]


def _phase_eligible(run: CellPass, op: DilConv, h: torch.Tensor) -> bool:
    """Can this DilConv run entirely in phase space? Stride 1, dilation 2, 'same' padding, odd kernel and
    an even-sized input (odd sizes would put the padding zeros into the batch statistics of its BN)."""
    dw = op.depthwise
    k = dw.kernel_size[0]
    return (run.options.dilated_as_phases and dw.stride == (1, 1) and dw.dilation == (2, 2)
            and dw.padding == (k - 1, k - 1) and k % 2 == 1 and h.shape[-1] % 2 == 0 and h.shape[-2] % 2 == 0)


def pointwise(run: CellPass, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 (or any plain) convolution whose output autograd may drop and rebuild from ``x``, which the
    convolution keeps for its weight gradient anyway (unless the weight is frozen)."""
    y = module_conv(x, conv)
    if not conv.weight.requires_grad:  # a frozen conv keeps no input: a recipe would keep it alive instead
        return y
    return run.rebuildable(y, module_conv, x, conv)


def _batch_stats_norm(x: torch.Tensor, weight, bias, eps: float, momentum: float) -> torch.Tensor:
    """Training-mode BN of ``x`` with throwaway running statistics: the forward's own kernel, so a rebuild
    gives the same bits."""
    mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    return F.batch_norm(x, mean, torch.ones_like(mean), weight, bias, True, momentum, eps)


def relu_batch_norm(run: CellPass, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(bn(x))``. In training mode autograd may drop the result and rebuild it from ``x`` (itself
    rebuilt from the conv before it): one more pass of BN and ReLU instead of a stored activation."""
    if bn.training and not bn.affine and run.wide_norm(x):
        y, mean, var = normalize(x, bn.eps)
        factor = update_counter(bn, run.update_stats)
        if bn.track_running_stats and run.update_stats:
            with torch.no_grad():
                update_running(bn, mean, unbiased(var, x), factor)
        return run.rebuildable(y.relu_(), lambda z: F.relu(normalize(z, bn.eps)[0]), x)
    y = batch_norm(bn, x, update_stats=run.update_stats).relu_()  # (BN keeps its input, not its output)
    if bn.training:
        run.rebuildable(y, lambda z: F.relu(_batch_stats_norm(z, bn.weight, bn.bias, bn.eps, 0.0)), x)
    return y


# --- the ops of one edge, given what its source shares --------------------------------------------------
# Each returns ``z``, the input of the op's last BN: ``w * op(x)`` is ``w * bn(z)``, which the node's sum adds
# (:mod:`fairdarts_core.fast_sum`).
def sep_conv(run: CellPass, op: SepConv, r: torch.Tensor) -> torch.Tensor:
    """A SepConv up to its last BN (``op.bn2``), given ``r = relu(x)`` (shared by the source)."""
    t = relu_batch_norm(run, op.bn1, pointwise(run, depthwise(run, r, op.depthwise1), op.pointwise1))
    return pointwise(run, depthwise(run, t, op.depthwise2), op.pointwise2)


def dil_conv(run: CellPass, op: DilConv, src: "_Shared") -> torch.Tensor:
    """A DilConv outside phase space (strided, or odd-sized input) up to its BN."""
    dw = op.depthwise
    if _reads_even_phase(run, dw):
        k = dw.kernel_size[0]
        y = conv2d(src.phase(0, 0), dw.weight, None, 1, (k - 1) // 2, 1, dw.groups)
    else:
        y = depthwise(run, src.relu, dw)
    return pointwise(run, y, op.pointwise)


def dil_conv_in_phases(run: CellPass, op: DilConv, phases: torch.Tensor) -> torch.Tensor:
    """A DilConv in phase space up to its BN, given ``phases = to_phases(relu(x))`` (shared by the source):
    the undilated depthwise conv of the phases, then the 1x1 conv; the 1x1 conv and the BN act on every pixel
    alike (the BN's batch statistics run over the same pixels, only in another order). The dilated ops add up
    in phase space, and their sum is interleaved back once."""
    dw = op.depthwise
    k = dw.kernel_size[0]
    conf = (dw.weight, None, 1, (k - 1) // 2, 1, dw.groups)
    y = run.rebuildable(cell_conv2d(run, phases, dw.weight, (k - 1) // 2, dw.groups), conv2d, phases, *conf)
    return pointwise(run, y, op.pointwise)


def factorized_reduce(run: CellPass, op: FactorizedReduce, src: "_Shared") -> torch.Tensor:
    """The skip of a reduction edge up to its BN. Its two stride-2 1x1 convs read phases (0, 0) and (1, 1)
    of ``relu(x)`` (shared by the source; odd sizes shift and pad as the module does)."""
    r = src.relu
    a = conv2d(src.phase(0, 0), op.conv_1.weight, op.conv_1.bias)
    if r.shape[-1] % 2 or r.shape[-2] % 2:
        b = pointwise(run, F.pad(r[:, :, 1:, 1:], (0, 1, 0, 1)), op.conv_2)
    else:
        b = conv2d(src.phase(1, 1), op.conv_2.weight, op.conv_2.bias)
    return concat_channels((a, b), run.layout)


# --- the cell -------------------------------------------------------------------------------------------
def _kind(op: nn.Module) -> str:
    """Classify a candidate op module by what it computes."""
    if isinstance(op, Zero):
        return "zero"
    if isinstance(op, Identity):
        return "identity"
    if isinstance(op, FactorizedReduce):
        return "factorized_reduce"
    if isinstance(op, SepConv):
        return "sep"
    if isinstance(op, DilConv):
        return "dil"
    if isinstance(op, PoolBN) and isinstance(op.pool, (nn.MaxPool2d, nn.AvgPool2d)):
        return "pool"
    return "generic"  # an op added to the registry later: run as the reference path does


def _pool_key(pool: nn.Module) -> Tuple:
    """Two pools with equal keys compute the same function."""
    return (type(pool).__name__, pool.kernel_size, pool.stride, pool.padding,
            getattr(pool, "count_include_pad", None), getattr(pool, "ceil_mode", None))


class _Shared:
    """What every edge leaving one source node can share, computed on first use: ``relu(h)``, its four
    phases stacked along the batch, single phases of it (stride-2 ops), and each kind of pool of ``h``."""

    def __init__(self, run: CellPass, h: torch.Tensor):
        self.run, self.h = run, h
        self._cache: Dict[Tuple, torch.Tensor] = {}

    def _get(self, key: Tuple, make) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # Each is cheap to compute again from h, so autograd may drop it and rebuild it in the backward pass.
    @property
    def relu(self) -> torch.Tensor:
        return self._get(("relu",), lambda: self.run.rebuildable(F.relu(self.h), F.relu, self.h))

    @property
    def phases(self) -> torch.Tensor:
        layout = self.run.layout
        return self._get(("phases",), lambda: self.run.rebuildable(to_phases(self.relu, layout), space_to_batch,
                                                                   self.relu, layout))

    def phase(self, i: int, j: int) -> torch.Tensor:
        return self._get(("phase", i, j), lambda: phase(self.relu, i, j, self.run.layout))

    def pooled(self, pool: nn.Module) -> torch.Tensor:
        return self._get(("pool",) + _pool_key(pool), lambda: self.run.rebuildable(pool(self.h), pool, self.h))


def _source_contributions(run: CellPass, cell, h: torch.Tensor, edges: Sequence[int],
                          edge_weights: Sequence[Sequence[torch.Tensor]], noise: Optional[torch.Tensor],
                          sums: Dict[int, Sum]) -> None:
    """Adds ``w[e, k] * op_ek(h)`` to ``sums[e]`` for every edge ``e`` leaving the source whose value is ``h``
    (ops in order; the dilated ops in phase space to ``sums[e].phases``); ``edge_weights[e][k]`` is ``w[e, k]``."""
    src = _Shared(run, h)
    for k in range(len(cell.edges[edges[0]].ops)):
        ops = [cell.edges[e].ops[k] for e in edges]
        kind = _kind(ops[0])
        if kind == "zero":
            continue  # w * 0 adds nothing, and its weight gets a zero gradient either way
        if kind == "pool":
            pooled = src.pooled(ops[0].pool)
            shared = shared_batch_norm(run, [op.bn for op in ops], pooled)
            for e, op in zip(edges, ops):
                if shared is None:
                    sums[e].add_batch_norm(op.bn, pooled, edge_weights[e][k])
                else:
                    sums[e].add_scaled(shared, edge_weights[e][k])
            continue
        for e, op in zip(edges, ops):
            w, total = edge_weights[e][k], sums[e]
            if kind == "identity":  # noise on skip: identity skips only (see SearchCell.skip_noise)
                total.add_scaled(h if noise is None else h + noise[e], w)
            elif kind == "factorized_reduce":  # a stride-2 skip: no noise
                total.add_batch_norm(op.bn, factorized_reduce(run, op, src), w)
            elif kind == "sep":
                total.add_batch_norm(op.bn2, sep_conv(run, op, src.relu), w)
            elif kind == "dil" and _phase_eligible(run, op, h):
                total.phases.add_batch_norm(op.bn, dil_conv_in_phases(run, op, src.phases), w)
            elif kind == "dil":
                total.add_batch_norm(op.bn, dil_conv(run, op, src), w)
            else:
                total.add_scaled(op(h), w)


def _recomputes(options: FastOptions, cell) -> bool:
    """Is ``cell`` recomputed in this pass? ``"first_stage"`` recomputes only in passes that train the cell's
    weights: with them frozen (an architecture step) no convolution keeps its input, and the cell keeps
    about half as much."""
    mode = options.recompute
    if mode == "all":
        return True
    return (mode == "first_stage" and not cell.reduction and getattr(cell, "stage", 0) == 0
            and any(p.requires_grad for p in cell.parameters()))


def fast_cell_forward(cell, states: List[torch.Tensor], edge_weights: torch.Tensor,
                      noise: Optional[torch.Tensor], options: FastOptions = FastOptions()) -> torch.Tensor:
    """The output of ``cell`` (a ``SearchCell``) for the preprocessed inputs ``states = [s0, s1]``, relaxed
    architecture weights ``edge_weights`` (14, n_ops) and per-edge skip noise ``noise`` (or ``None``): the
    reference formulation's value, computed source by source (each node's outgoing edges together)."""
    if options.channels_last:
        states = [s.contiguous(memory_format=torch.channels_last) for s in states]
    # Small activations: memory is no concern and the extra work is mostly per-call overhead (both options
    # together cost ~40% of a step at the cpu preset's shape), so they run as they are.
    large = states[1].numel() >= options.memory_min_elements
    reordered = states[1].numel() >= options.reorder_min_elements
    checkpointed = large and _recomputes(options, cell)
    if large and options.rebuild_cheap and torch.is_grad_enabled() and not checkpointed:
        rebuilds = Rebuilds()
        with rebuilds.hooks():
            run = CellPass(options, rebuilds=rebuilds, reordered=reordered)
            return _cell_body(run, cell, states, edge_weights, noise)
    if checkpointed and torch.is_grad_enabled():
        def body(first: bool, s0, s1, w, *nz):  # later calls are autograd's recomputation: no stats update
            run = CellPass(options, update_stats=first, reordered=reordered)
            return _cell_body(run, cell, [s0, s1], w, nz[0] if nz else None)

        return recompute_in_backward(body, states[0], states[1], edge_weights, *(() if noise is None else (noise,)))
    return _cell_body(CellPass(options, reordered=reordered), cell, states, edge_weights, noise)


def _cell_body(run: CellPass, cell, states: List[torch.Tensor], edge_weights: torch.Tensor,
               noise: Optional[torch.Tensor]) -> torch.Tensor:
    rows = edge_index(cell.steps)
    states = list(states)
    batch = states[0].shape[0]

    def interleave(y: torch.Tensor) -> torch.Tensor:
        return from_phases(y, batch, run.layout)

    # (eval mode: the BNs use their running statistics, so there is nothing to fuse; the exact order stays)
    fused = run.options.fused_sums and cell.training and run.reordered
    # w[e, k] for every term: one view each from two unbinds (and one backward node each), not a select per term
    weights = [row.unbind(0) for row in edge_weights.unbind(0)]
    nodes: Dict[int, Sum] = {}  # the sum of each node's incoming edges, in source order
    for src in range(cell.steps + 2):
        if src >= 2:
            states.append(nodes.pop(src).value(interleave))
        edges = [e for e, (_, s) in enumerate(rows) if s == src]
        if not edges:
            continue
        if fused:  # every term goes straight into its node's sum
            sums = {e: nodes.setdefault(rows[e][0], InPlaceSum(run.update_stats, run.wide_norm)) for e in edges}
            _source_contributions(run, cell, states[src], edges, weights, noise, sums)
            continue
        # exact order: each edge's terms add up first (only these sums stay alive, not every op's output),
        # then each edge's sum is added to its node
        sums = {e: RunningSum(run.update_stats) for e in edges}
        _source_contributions(run, cell, states[src], edges, weights, noise, sums)
        for e in edges:
            y = sums[e].value(interleave)
            if y is not None:
                nodes.setdefault(rows[e][0], RunningSum(run.update_stats)).add(y)
    return concat_channels(states[-cell.multiplier:], run.layout)
