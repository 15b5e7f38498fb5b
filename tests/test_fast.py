"""The fast supernet path computes the reference path's function: outputs, gradients, BN running stats,
whole search steps. (Correctness only; speed is measured by ``fairdarts bench search-step``.)"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from fairdarts_core import Supernet, fast, fast_layout, fast_memory, fast_sum, steps
from fairdarts_core.cli import main
from fairdarts_core.fast import FastOptions
from fairdarts_core.ops import OP_SETS, DilConv, FactorizedReduce, SepConv
from fairdarts_core.steps import ZeroOne, bilevel_step

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """max |a - b| relative to max(max |b|, floor)."""
    scale = max(b.abs().max().item(), floor)
    return (a - b).abs().max().item() / scale if scale else (a - b).abs().max().item()


def twin_models(relaxation="sigmoid", op_set="fair_darts", dtype=torch.float64, noise=0.0,
                options: FastOptions = FastOptions(), **kw):
    """A reference-formulation supernet and a fast-formulation copy of it with ``options`` (same parameters
    and buffers)."""
    torch.manual_seed(0)
    cfg = dict(channels=4, layers=5, in_channels=1, relaxation=relaxation, primitives=OP_SETS[op_set],
               alpha_init_std=0.5, formulation="reference")
    cfg.update(kw)
    ref = Supernet(**cfg).to(dtype)
    ref.skip_noise_std = noise
    fst = copy.deepcopy(ref)
    fst.set_formulation("fast", options)
    return ref, fst


def data(dtype=torch.float64, batch=2, res=6):
    """Odd sizes after the reductions (6 -> 3 -> 2) exercise the padding branches."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, res, res, generator=g, dtype=dtype), torch.randint(0, 10, (batch,), generator=g)


def forward_backward(model, x, y, seed=7):
    """Output, gradients of (weights, alphas) and buffers after one train-mode forward/backward."""
    torch.manual_seed(seed)  # noise on skip: the same draws for both paths
    out = model(x)
    loss = F.cross_entropy(out, y)
    grads = torch.autograd.grad(loss, model.network_parameters() + model.arch_parameters())
    return out, grads, [b.clone() for b in model.buffers()]


def assert_same(a, b, tol, what, floor=0.0):
    err = rel_err(a.double(), b.double(), floor)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


# The tiny test cells are below the default memory_min_elements and reorder_min_elements: force the memory
# options and the fused sums on.
MEMORY_SETTINGS = {
    "plain": FastOptions(recompute="none", rebuild_cheap=False),
    "recompute_all": FastOptions(recompute="all", memory_min_elements=0),
    "rebuild": FastOptions(recompute="none", rebuild_cheap=True, memory_min_elements=0),
    "fused": FastOptions(recompute="none", rebuild_cheap=False, reorder_min_elements=0),
    "fused_recompute_all": FastOptions(recompute="all", memory_min_elements=0, reorder_min_elements=0),
    "fused_rebuild": FastOptions(recompute="none", rebuild_cheap=True, memory_min_elements=0, reorder_min_elements=0),
}


@pytest.mark.parametrize("op_set", ["fair_darts", "darts"])
@pytest.mark.parametrize("relaxation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("dtype,noise", [(torch.float64, 0.0), (torch.float64, 0.7), (torch.float32, 0.7)])
@pytest.mark.parametrize("memory", list(MEMORY_SETTINGS))
def test_train_mode_outputs_gradients_and_running_stats(op_set, relaxation, dtype, noise, memory):
    """Same output, weight and alpha gradients and BN buffers (updated exactly once, also when a
    checkpointed cell is recomputed), with each memory setting of the fast path."""
    ref, fst = twin_models(relaxation, op_set, dtype, noise, MEMORY_SETTINGS[memory])
    # float32: a larger input, so that BN over a handful of values does not amplify rounding past 1e-4
    x, y = data(dtype) if dtype == torch.float64 else data(dtype, batch=3, res=10)
    o_ref, g_ref, b_ref = forward_backward(ref, x, y)
    o_fst, g_fst, b_fst = forward_backward(fst, x, y)
    tol = TOL[dtype]
    assert_same(o_fst, o_ref, tol, "output")
    n_w = len(ref.network_parameters())
    for name, a, b in zip([n for n, p in ref.named_parameters() if p is not ref.alphas_normal
                           and p is not ref.alphas_reduce], g_fst[:n_w], g_ref[:n_w]):
        assert_same(a, b, tol, f"weight gradient {name}")
    assert_same(g_fst[n_w], g_ref[n_w], tol, "alpha (normal) gradient")
    assert_same(g_fst[n_w + 1], g_ref[n_w + 1], tol, "alpha (reduce) gradient")
    for (name, _), a, b in zip(ref.named_buffers(), b_fst, b_ref):
        if name.endswith("num_batches_tracked"):
            assert torch.equal(a, b), name
        else:
            # A running mean can be ~0 (a node is a sum of zero-mean BN outputs): compare on the O(1) scale
            # of the running statistics.
            assert_same(a, b, tol, f"buffer {name}", floor=1.0)


@pytest.mark.parametrize("op_set", ["fair_darts", "darts"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_eval_mode_after_training_forward(op_set, dtype):
    ref, fst = twin_models("sigmoid", op_set, dtype, noise=0.5)
    x, y = data(dtype)
    forward_backward(ref, x, y)
    forward_backward(fst, x, y)  # running stats now differ from their initial values
    ref.eval(), fst.eval()
    with torch.no_grad():
        assert_same(fst(x), ref(x), TOL[dtype], "eval-mode output")  # (no noise in eval mode)


@pytest.mark.parametrize("reduction", [False, True])
@pytest.mark.parametrize("op_set", ["fair_darts", "darts"])
def test_single_cell_normal_and_reduction(reduction, op_set):
    ref, _ = twin_models("softmax", op_set)
    cell = next(c for c in ref.cells if c.reduction == reduction)
    after_reduction = isinstance(cell.preprocess0, FactorizedReduce)  # s0 at twice s1's resolution
    in0 = cell.preprocess0.conv_1.in_channels if after_reduction else cell.preprocess0.conv.in_channels
    in1 = cell.preprocess1.conv.in_channels
    res1 = 6
    res0 = 2 * res1 if after_reduction else res1
    g = torch.Generator().manual_seed(3)
    s0 = torch.randn(2, in0, res0, res0, generator=g, dtype=torch.float64, requires_grad=True)
    s1 = torch.randn(2, in1, res1, res1, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(14, len(OP_SETS[op_set]), generator=g, dtype=torch.float64, requires_grad=True)
    results = []
    for formulation in ("reference", "fast"):
        c = copy.deepcopy(cell)
        c.formulation = formulation
        torch.manual_seed(5)
        out = c(s0, s1, w, skip_noise_std=0.3)
        grads = torch.autograd.grad(out.square().sum(), [s0, s1, w] + list(c.parameters()))
        results.append((out, grads))
    (o_ref, g_ref), (o_fst, g_fst) = results
    assert_same(o_fst, o_ref, 1e-9, "cell output")
    for i, (a, b) in enumerate(zip(g_fst, g_ref)):
        assert_same(a, b, 1e-9, f"cell gradient {i}")


@pytest.mark.parametrize("option", ["channels_last", "dilated_as_phases"])
def test_each_idea_can_be_switched_off(option):
    """With channels_last off (NCHW) or the polyphase trick off, the fast path is still the same function."""
    ref, fst = twin_models("sigmoid", "darts", torch.float64, noise=0.4, options=FastOptions(**{option: False}))
    x, y = data()
    (o_ref, g_ref, _), (o_fst, g_fst, _) = forward_backward(ref, x, y), forward_backward(fst, x, y)
    assert_same(o_fst, o_ref, 1e-9, "output")
    for a, b in zip(g_fst, g_ref):
        assert_same(a, b, 1e-9, "gradient")


def test_channels_last_input_and_output_layout():
    """channels_last inputs give the same values; the fast cell hands channels_last on to the next cell."""
    ref, fst = twin_models()
    x, y = data()
    o1 = fst(x)
    o2 = fst(x.contiguous(memory_format=torch.channels_last))
    assert_same(o2, o1, 1e-12, "channels_last input")
    s = fst.stem(x)
    cell = fst.cells[0]
    out = cell(s, s, torch.rand(14, 7, dtype=torch.float64))
    assert out.is_contiguous(memory_format=torch.channels_last)


def three_steps(model, x, y):
    """Three first-order bi-level steps (the search engine's step, DARTS's optimiser settings)."""
    w_opt = torch.optim.SGD(model.network_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    for i in range(3):
        bilevel_step(model, (x, y), (x.flip(0), y.flip(0)), w_opt, a_opt, ZeroOne(10.0), grad_clip=5.0)
    return ([a.detach().clone() for a in model.arch_parameters()],
            [p.detach().clone() for p in model.network_parameters()])


@pytest.mark.parametrize("relaxation,op_set", [("sigmoid", "fair_darts"), ("softmax", "darts")])
@pytest.mark.parametrize("reorder_min_elements", [FastOptions().reorder_min_elements, 0])
def test_three_bilevel_steps_give_the_same_alpha(relaxation, op_set, reorder_min_elements):
    ref, fst = twin_models(relaxation, op_set, torch.float64, alpha_init_std=1e-3, layers=3,
                           options=FastOptions(reorder_min_elements=reorder_min_elements))
    x, y = data()
    a_ref, w_ref = three_steps(ref, x, y)
    a_fst, w_fst = three_steps(fst, x, y)
    for a, b in zip(a_fst, a_ref):
        assert_same(a, b, 1e-9, "alpha after three steps")
    for a, b in zip(w_fst, w_ref):
        assert_same(a, b, 1e-9, "weights after three steps")


def test_fast_is_the_default_and_reference_stays_selectable():
    assert Supernet(channels=4, layers=3).config.formulation == "fast"
    m = Supernet(channels=4, layers=3, formulation="reference")
    assert all(c.formulation == "reference" for c in m.cells)
    options = FastOptions(recompute="all")
    m.set_formulation("fast", options)
    assert all(c.formulation == "fast" and c.fast_options is options for c in m.cells)
    assert m.config.fast_options is options
    m.set_formulation("reference")  # the options stay
    assert all(c.formulation == "reference" and c.fast_options is options for c in m.cells)
    assert not hasattr(m, "set_path") and not hasattr(m, "weights")


def test_fast_options_are_a_validated_frozen_value():
    assert FastOptions() == FastOptions(channels_last=True, dilated_as_phases=True, recompute="none",
                                        rebuild_cheap=True, memory_min_elements=2 ** 20, fused_sums=True,
                                        reorder_min_elements=2 ** 18)
    with pytest.raises(ValueError, match="recompute='some'; choose one of none, first_stage, all"):
        FastOptions(recompute="some")
    with pytest.raises(ValueError, match="channels_last must be true or false"):
        FastOptions(channels_last="yes")
    with pytest.raises(ValueError, match="fused_sums must be true or false"):
        FastOptions(fused_sums=1)
    with pytest.raises(ValueError, match="wide_norm must be true or false"):
        FastOptions(wide_norm="off")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="memory_min_elements must be an integer >= 0"):
            FastOptions(memory_min_elements=bad)
        with pytest.raises(ValueError, match="reorder_min_elements must be an integer >= 0"):
            FastOptions(reorder_min_elements=bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        FastOptions().recompute = "all"
    for module in (fast, fast_layout, fast_memory, fast_sum):  # nothing a caller could flip process-wide
        assert not {"OPTIONS", "_STATE", "_REBUILDS"} & set(vars(module)), module.__name__


def test_options_belong_to_each_model(monkeypatch):
    """Two supernets with different options in one process: each runs with its own (no shared state)."""
    calls = []
    real = fast.recompute_in_backward
    monkeypatch.setattr(fast, "recompute_in_backward", lambda *a: calls.append(1) or real(*a))
    _, every = twin_models(options=FastOptions(recompute="all", memory_min_elements=0))
    _, none = twin_models(options=FastOptions(recompute="none", rebuild_cheap=False, memory_min_elements=0))
    x, y = data()
    for model, expected in ((every, len(every.cells)), (none, 0), (every, len(every.cells))):
        calls.clear()
        F.cross_entropy(model(x), y).backward()
        assert len(calls) == expected


def test_bench_command_json(capsys):
    rc = main(["bench", "search-step", "--batch", "2", "--channels", "4", "--layers", "3", "--resolution", "8",
               "--in-channels", "1", "--repeat", "1", "--warmup", "0", "--threads", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("reference_ms", "fast_ms", "speedup", "reference_peak_mb", "fast_peak_mb"):
        assert r[key] > 0, key
    assert r["shape"]["channels"] == 4


def test_bench_command_bad_input(capsys):
    assert main(["bench", "search-step", "--batch", "0"]) == 2
    assert "batch=0 is not valid" in capsys.readouterr().err
    assert main(["bench", "search-step", "--layers", "2"]) == 2
    assert "layers=2 is not valid" in capsys.readouterr().err
    assert main(["bench", "search-epoch", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.parametrize("formulation", ["fast", "reference"])
def test_bench_search_epoch_extrapolates_from_the_steps_it_times(capsys, formulation):
    rc = main(["bench", "search-epoch", "--batch", "500", "--channels", "2", "--layers", "3", "--resolution", "4",
               "--in-channels", "1", "--steps", "2", "--threads", "1", "--formulation", formulation, "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["formulation"] == formulation and r["steps_per_epoch"] == 50 and r["steps_timed"] == 2
    assert r["extrapolated"]
    assert r["epoch_s"] == pytest.approx(r["ms_per_step"] * 50 / 1000, rel=0.02)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_phase_space_round_trip(layout):
    x = torch.randn(3, 5, 6, 4)
    phases = fast_layout.to_phases(x, layout)
    assert phases.is_contiguous(memory_format=layout)
    assert torch.equal(fast_layout.from_phases(phases, 3, layout), x)
    assert torch.equal(phases[3 * 1:3 * 2], x[:, :, 0::2, 1::2])  # phase (0, 1) is block 1


@pytest.mark.parametrize("what", ["to_phases", "from_phases", "phase", "concat"])
def test_reshaping_steps_give_channels_last_gradients(what):
    """The phase split and interleave, single phases and the cell's concat return the gradient autograd's
    own ops would (same values), in the channels_last layout (which keeps every later kernel fast)."""
    cl = torch.channels_last
    x = torch.randn(4, 3, 6, 4, dtype=torch.float64).contiguous(memory_format=cl).requires_grad_()
    fns = {"to_phases": (lambda t: fast_layout.to_phases(t, cl), lambda t: t.reshape(4, 3, 3, 2, 2, 2)
                         .permute(3, 5, 0, 1, 2, 4).reshape(16, 3, 3, 2)),
           "from_phases": (lambda t: fast_layout.from_phases(t, 1, cl), lambda t: t.reshape(2, 2, 1, 3, 6, 4)
                           .permute(2, 3, 4, 0, 5, 1).reshape(1, 3, 12, 8)),
           "phase": (lambda t: fast_layout.phase(t, 1, 0, cl), lambda t: t[:, :, 1::2, 0::2]),
           "concat": (lambda t: fast_layout.concat_channels((t, 2 * t), cl), lambda t: torch.cat([t, 2 * t], 1))}
    fast_fn, plain_fn = fns[what]
    y = fast_fn(x)
    assert torch.equal(y, plain_fn(x))
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.equal(gx, torch.autograd.grad(plain_fn(x), x, g)[0])
    assert gx.is_contiguous(memory_format=cl)


# --- recomputation (FastOptions.recompute) ----------------------------------------------------------------
RECOMPUTE_ALL = FastOptions(recompute="all", memory_min_elements=0)


def test_recompute_alpha_only_gradient_and_eval_mode():
    """autograd.grad w.r.t. alpha alone (the engine's arch step) through checkpointed cells; eval mode and
    no_grad run without a checkpoint."""
    ref, fst = twin_models("sigmoid", "fair_darts", torch.float64, noise=0.5, options=RECOMPUTE_ALL)
    x, y = data()
    for m in (ref, fst):
        torch.manual_seed(2)
        m.grads = torch.autograd.grad(F.cross_entropy(m(x), y), m.arch_parameters())
    for a, b in zip(fst.grads, ref.grads):
        assert_same(a, b, 1e-9, "alpha-only gradient")
    ref.eval(), fst.eval()
    with torch.no_grad():
        assert_same(fst(x), ref(x), 1e-9, "eval-mode output")


@pytest.mark.parametrize("relaxation,op_set", [("sigmoid", "fair_darts"), ("softmax", "darts")])
def test_recompute_three_bilevel_steps(relaxation, op_set):
    ref, fst = twin_models(relaxation, op_set, torch.float64, alpha_init_std=1e-3, layers=3, noise=0.3,
                           options=RECOMPUTE_ALL)
    x, y = data()
    torch.manual_seed(11)
    a_ref, w_ref = three_steps(ref, x, y)
    torch.manual_seed(11)
    a_fst, w_fst = three_steps(fst, x, y)
    for a, b in zip(a_fst + w_fst, a_ref + w_ref):
        assert_same(a, b, 1e-9, "parameters after three steps")
    for (name, a), b in zip(fst.named_buffers(), ref.buffers()):
        assert torch.equal(a, b) if name.endswith("num_batches_tracked") else rel_err(a, b, 1.0) <= 1e-9, name


# --- the benchmark's two sides compute the same update ------------------------------------------------------
def test_bench_reference_step_is_the_same_update_as_the_engine_step():
    """The benchmark's reference side (reference path, DARTS-style ``loss.backward()`` steps) and its fast
    side (fast path, the engine's alpha-only arch step) give the same alpha and weights after a step."""
    from fairdarts_core import bench
    spec = bench.BenchSpec(batch=2, channels=4, layers=3, resolution=8, in_channels=1)
    base = bench.make_model(spec, "reference").double()
    out = {}
    for side in bench.SIDES:
        model = copy.deepcopy(base)
        model.set_formulation(side)
        s = bench.setup(spec, side, model)
        s.batches = [(x.double(), y) for x, y in s.batches]
        for _ in range(2):
            bench.step(s, spec, side)
        out[side] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(out["fast"], out["reference"]):
        assert_same(a, b, 1e-9, "parameter after two benchmark steps")


# --- memory options change no bit (FastOptions.recompute, FastOptions.rebuild_cheap) -----------------------
MEMORY_OPTIONS = [("none", False), ("none", True), ("first_stage", True), ("first_stage", False), ("all", True)]


@pytest.mark.parametrize("relaxation,op_set", [("sigmoid", "fair_darts"), ("softmax", "darts")])
@pytest.mark.parametrize("fused", [False, True])
def test_memory_options_give_bit_identical_steps(relaxation, op_set, fused):
    """Recomputing cells and rebuilding dropped activations recompute the very same numbers (same kernels,
    same inputs), so three float32 bi-level steps end bit for bit equal under every setting, with the exact
    sums and with the fused ones: a recorded search re-runs identically whatever memory setting it runs with."""
    x, y = data(torch.float32, batch=4, res=8)
    results = []
    for recompute, rebuild in MEMORY_OPTIONS:
        # memory_min_elements 0: the tiny test cells use the memory options too (and the fused sums, if asked)
        options = FastOptions(recompute=recompute, rebuild_cheap=rebuild, memory_min_elements=0,
                              fused_sums=fused, reorder_min_elements=0)
        _, fst = twin_models(relaxation, op_set, torch.float32, alpha_init_std=1e-3, noise=0.3, options=options)
        torch.manual_seed(11)
        alphas, weights = three_steps(fst, x, y)
        results.append((alphas + weights, [b.clone() for b in fst.buffers()]))
    (params0, buffers0), rest = results[0], results[1:]
    for (recompute, rebuild), (params, buffers) in zip(MEMORY_OPTIONS[1:], rest):
        assert all(torch.equal(a, b) for a, b in zip(params, params0)), (recompute, rebuild)
        assert all(torch.equal(a, b) for a, b in zip(buffers, buffers0)), (recompute, rebuild)


def test_rebuild_drops_the_cheap_activations(monkeypatch):
    """Under the rebuild hooks autograd stores recipes, not tensors, for every depthwise and 1x1 conv output,
    the inner ReLU of every SepConv and the shared per-source tensors; the backward pass rebuilds each once."""
    _, fst = twin_models("sigmoid", "fair_darts", torch.float32,
                         options=FastOptions(recompute="none", memory_min_elements=0))
    x, y = data(torch.float32, batch=4, res=8)
    packed, built = [], []
    pack, build = fast_memory.Rebuilds.pack, fast_memory._Rebuild.get

    def counting_pack(self, t):
        packed.append(pack(self, t))
        return packed[-1]

    def counting_get(self):
        built.append(self.value is None)
        return build(self)

    monkeypatch.setattr(fast_memory.Rebuilds, "pack", counting_pack)
    monkeypatch.setattr(fast_memory._Rebuild, "get", counting_get)
    torch.autograd.grad(F.cross_entropy(fst(x), y), fst.network_parameters())
    recipes = {id(r) for r in packed if isinstance(r, fast_memory._Rebuild)}
    ops = [op for cell in fst.cells for edge in cell.edges for op in edge.ops]
    sep_convs, dil_convs = sum(isinstance(op, SepConv) for op in ops), sum(isinstance(op, DilConv) for op in ops)
    # two depthwise and two 1x1 outputs and one inner ReLU per SepConv, a depthwise and a 1x1 output per DilConv
    assert len(recipes) >= 5 * sep_convs + 2 * dil_convs
    assert sum(built) == len(recipes)  # each recipe computed once, however many nodes saved it


def test_small_cells_skip_the_memory_options(monkeypatch):
    """Below ``memory_min_elements`` a cell is neither checkpointed nor run under the rebuild hooks."""
    calls = []
    monkeypatch.setattr(fast, "recompute_in_backward", lambda *a: calls.append("checkpoint"))
    monkeypatch.setattr(fast_memory.Rebuilds, "pack", lambda self, t: calls.append("pack") or t)
    _, fst = twin_models("sigmoid", "fair_darts", torch.float32)
    x, y = data(torch.float32, batch=4, res=8)
    above_every_cell = 4 * 8 * 8 * 8 + 1
    fst.set_formulation("fast", FastOptions(recompute="all", memory_min_elements=above_every_cell))
    fst(x).sum().backward()
    assert calls == []
    first_reduction_cell = 4 * 8 * 8 * 8
    fst.set_formulation("fast", FastOptions(recompute="none", memory_min_elements=first_reduction_cell))
    fst(x).sum().backward()
    assert "pack" in calls and "checkpoint" not in calls


# --- the architecture step's frozen weights (steps.frozen, fast.conv2d) ---------------------------------------
CONV_CASES = [  # (input shape, weight shape, stride, padding, dilation, groups)
    ((2, 6, 9, 9), (6, 6, 1, 1), 1, 0, 1, 1),
    ((2, 6, 9, 9), (6, 1, 3, 3), 1, 1, 1, 6),
    ((2, 6, 9, 9), (6, 1, 5, 5), 2, 4, 2, 6),
    ((2, 6, 8, 8), (3, 6, 1, 1), 2, 0, 1, 1),
]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("case", CONV_CASES)
def test_a_frozen_convolution_keeps_its_weight_and_gives_the_same_input_gradient(case, layout):
    shape, w_shape, stride, padding, dilation, groups = case
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g).contiguous(memory_format=layout).requires_grad_()
    weight = torch.randn(w_shape, generator=g)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = fast.conv2d(x, weight, None, stride, padding, dilation, groups)
    assert len(saved) == 1 and saved[0] is weight  # the input is not kept
    y_ref = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    assert torch.equal(y, y_ref)
    g_out = torch.randn(y.shape, generator=g).contiguous(memory_format=layout)
    (gx,) = torch.autograd.grad(y, x, g_out)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g_out)
    assert torch.equal(gx, gx_ref)  # the same kernel: bit for bit
    weight.requires_grad_()  # a trained weight: autograd's own node (it keeps both)
    assert fast.conv2d(x, weight, None, stride, padding, dilation, groups).grad_fn.name() == "ConvolutionBackward0"


@pytest.mark.parametrize("case", CONV_CASES)
def test_a_frozen_convolution_under_bf16_autocast_is_autocasts_convolution(case):
    """Under autocast the convolution runs in bf16 on a float32 weight; the backward pass uses that weight in
    bf16 too (oneDNN builds without bf16 kernels refuse mixed dtypes), and gives autograd's own gradient."""
    shape, w_shape, stride, padding, dilation, groups = case
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(w_shape, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast.conv2d(x, weight, None, stride, padding, dilation, groups)
        y_ref = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_ref)
    g_out = torch.randn(y.shape, generator=g).to(torch.bfloat16)
    (gx,), (gx_ref,) = torch.autograd.grad(y, x, g_out), torch.autograd.grad(y_ref, x, g_out)
    assert gx.dtype == x.dtype and torch.equal(gx, gx_ref)


def test_a_frozen_convolution_on_1x1_images_keeps_the_inputs_layout():
    """On a 1x1 image both layouts fit a tensor's strides; the frozen convolution's input gradient must come from
    the input's own strides, as autograd's does (another pick rounded differently on oneDNN's SSE4.1 kernels)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, 16, 1, 1, generator=g).as_strided((16, 16, 1, 1), (16, 1, 16, 16)).requires_grad_()
    weight = torch.randn(16, 16, 1, 1, generator=g)
    y, y_ref = fast.conv2d(x, weight), F.conv2d(x, weight.clone().requires_grad_())
    g_out = torch.randn(y.shape, generator=g)
    (gx,), (gx_ref,) = torch.autograd.grad(y, x, g_out), torch.autograd.grad(y_ref, x, g_out)
    assert gx.stride() == gx_ref.stride() and torch.equal(gx, gx_ref)


@pytest.mark.parametrize("fused", [False, True])
def test_the_frozen_architecture_step_changes_no_bit(monkeypatch, fused):
    """Three bi-level steps with the weights frozen in the architecture step, and with them left trainable (the
    gradient asked for alpha alone either way): bit for bit the same, with every memory option on."""
    x, y = data(torch.float32, batch=4, res=8)
    options = FastOptions(recompute="first_stage", memory_min_elements=0, fused_sums=fused, reorder_min_elements=0)
    results = []
    for freeze in (True, False):
        if not freeze:
            monkeypatch.setattr(steps, "frozen", lambda params: contextlib.nullcontext())
        _, fst = twin_models("sigmoid", "fair_darts", torch.float32, alpha_init_std=1e-3, noise=0.3,
                             options=options)
        torch.manual_seed(11)
        alphas, weights = three_steps(fst, x, y)
        assert all(p.requires_grad for p in fst.network_parameters())  # restored after each step
        results.append(alphas + weights + [b.clone() for b in fst.buffers()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_frozen_restores_the_flags_after_an_error():
    params = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2), requires_grad=False)]
    with pytest.raises(RuntimeError):
        with steps.frozen(params):
            assert not any(p.requires_grad for p in params)
            raise RuntimeError
    assert [p.requires_grad for p in params] == [True, False]


def test_first_stage_recomputes_in_weight_steps_only(monkeypatch):
    """``recompute="first_stage"`` checkpoints the full-resolution cells when their weights train; an
    architecture step (weights frozen, no convolution inputs kept) recomputes nothing; ``"all"`` recomputes
    in both."""
    calls = []
    real = fast.recompute_in_backward
    monkeypatch.setattr(fast, "recompute_in_backward", lambda *a: calls.append(1) or real(*a))
    _, fst = twin_models("sigmoid", "fair_darts", torch.float32, layers=3)
    x, y = data(torch.float32, batch=4, res=8)
    w_opt = torch.optim.SGD(fst.network_parameters(), lr=0.01)
    a_opt = torch.optim.Adam(fst.arch_parameters(), lr=1e-3)
    full_resolution_cells = sum(not c.reduction and c.stage == 0 for c in fst.cells)
    for mode, arch_calls, weight_calls in (("first_stage", 0, full_resolution_cells), ("all", 3, 3)):
        fst.set_formulation("fast", FastOptions(recompute=mode, memory_min_elements=0))
        calls.clear()
        steps.arch_step(fst, (x, y), a_opt)
        assert len(calls) == arch_calls, mode
        calls.clear()
        steps.weight_step(fst, (x, y), w_opt, grad_clip=5.0)
        assert len(calls) == weight_calls, mode


# --- the fused node sums (FastOptions.fused_sums) ------------------------------------------------------------
def test_small_cells_sum_exactly_and_large_ones_fused(monkeypatch):
    """Below ``reorder_min_elements`` a cell adds its terms exactly (the order the recorded searches used);
    at or above it every node of the cell is one in-place sum; ``fused_sums=False`` turns it off."""
    made = []
    for cls in (fast_sum.RunningSum, fast_sum.InPlaceSum):
        init = cls.__init__
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _init=init, **k: made.append(type(self)) or _init(self, *a, **k))
    _, fst = twin_models("sigmoid", "fair_darts", torch.float32)
    x, y = data(torch.float32, batch=4, res=8)
    first_reduction_cell = 4 * 8 * 8 * 8  # the largest cell input: batch x C x H x W
    for options, fused in ((FastOptions(reorder_min_elements=first_reduction_cell + 1), False),
                           (FastOptions(reorder_min_elements=first_reduction_cell, fused_sums=False), False),
                           (FastOptions(reorder_min_elements=first_reduction_cell), True)):
        fst.set_formulation("fast", options)
        made.clear()
        fst(x).sum().backward()
        assert (fast_sum.InPlaceSum in made) == fused, options
        assert fast_sum.RunningSum in made  # the smaller cells sum exactly


def test_a_fused_sum_is_the_bn_outputs_added_up_in_place_with_bns_gradients():
    """``InPlaceSum``: sum_k w_k * bn_k(z_k) + v * x, built in place (the first term's tensor is the sum),
    equals the BN outputs added up; gradients of z_k, w_k, x, v and the running statistics are BN's."""
    torch.manual_seed(3)
    bns = [torch.nn.BatchNorm2d(5, affine=False).double() for _ in range(3)]
    zs = [torch.randn(4, 5, 6, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
          .requires_grad_() for _ in range(3)]
    x = torch.randn(4, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    ws = torch.rand(4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 5, 6, 6, dtype=torch.float64)
    expected_bns = copy.deepcopy(bns)
    expected = sum(w * bn(z) for w, bn, z in zip(ws, expected_bns, zs)) + ws[3] * x
    total = fast_sum.InPlaceSum()
    for w, bn, z in zip(ws, bns, zs):
        total.add_batch_norm(bn, z, w)
        first = total.total if bn is bns[0] else first  # every later term is added into this tensor
    total.add_scaled(x, ws[3])
    got = total.value(from_phases=None)
    assert got is first and got.is_contiguous(memory_format=torch.channels_last)
    assert_same(got, expected, 1e-12, "fused sum")
    for a, b in zip(torch.autograd.grad(got, zs + [x, ws], g), torch.autograd.grad(expected, zs + [x, ws], g)):
        assert_same(a, b, 1e-12, "gradient")
    for bn, ref in zip(bns, expected_bns):
        for a, b in zip(bn.buffers(), ref.buffers()):
            assert torch.equal(a, b) if a.dtype == torch.long else rel_err(a, b) <= 1e-12
    assert not fast_sum.fusable(bns[0].eval(), zs[0]) and not fast_sum.fusable(bns[1], zs[1].float())
