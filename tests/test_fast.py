"""The fast supernet path computes the reference path's function: outputs, gradients, BN running stats,
whole search steps. (Correctness only; speed is measured by ``fairdarts bench search-step``.)"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from fairdarts_core import DARTS_OPS, FAIR_DARTS_OPS, Supernet
from fairdarts_core import fast
from fairdarts_core.cli import main
from fairdarts_core.presets import SearchConfig
from fairdarts_core.search import bilevel_step, build_optimizers

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
OP_SETS = {"fair_darts": FAIR_DARTS_OPS, "darts": DARTS_OPS}


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """max |a - b| relative to max(max |b|, floor)."""
    scale = max(b.abs().max().item(), floor)
    return (a - b).abs().max().item() / scale if scale else (a - b).abs().max().item()


def twin_models(relaxation="sigmoid", op_set="fair_darts", dtype=torch.float64, noise=0.0, **kw):
    """A reference-path supernet and a fast-path copy of it (same parameters and buffers)."""
    torch.manual_seed(0)
    cfg = dict(channels=4, layers=5, in_channels=1, relaxation=relaxation, primitives=OP_SETS[op_set],
               alpha_init_std=0.5, path="reference")
    cfg.update(kw)
    ref = Supernet(**cfg).to(dtype)
    ref.skip_noise_std = noise
    fst = copy.deepcopy(ref)
    fst.set_path("fast")
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
    grads = torch.autograd.grad(loss, model.weights() + model.arch_parameters())
    return out, grads, [b.clone() for b in model.buffers()]


def assert_same(a, b, tol, what, floor=0.0):
    err = rel_err(a.double(), b.double(), floor)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


# The tiny test cells are below the default memory_min_elements: force the memory options on.
MEMORY_SETTINGS = {
    "plain": {"recompute": "none", "rebuild_cheap": False},
    "recompute_all": {"recompute": "all", "memory_min_elements": 0},
    "rebuild": {"recompute": "none", "rebuild_cheap": True, "memory_min_elements": 0},
}


@pytest.mark.parametrize("op_set", ["fair_darts", "darts"])
@pytest.mark.parametrize("relaxation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("dtype,noise", [(torch.float64, 0.0), (torch.float64, 0.7), (torch.float32, 0.7)])
@pytest.mark.parametrize("memory", list(MEMORY_SETTINGS))
def test_train_mode_outputs_gradients_and_running_stats(op_set, relaxation, dtype, noise, memory, monkeypatch):
    """Same output, weight and alpha gradients and BN buffers (updated exactly once, also when a
    checkpointed cell is recomputed), with each memory setting of the fast path."""
    for key, value in MEMORY_SETTINGS[memory].items():
        monkeypatch.setitem(fast.OPTIONS, key, value)
    ref, fst = twin_models(relaxation, op_set, dtype, noise)
    # float32: a larger input, so that BN over a handful of values does not amplify rounding past 1e-4
    x, y = data(dtype) if dtype == torch.float64 else data(dtype, batch=3, res=10)
    o_ref, g_ref, b_ref = forward_backward(ref, x, y)
    o_fst, g_fst, b_fst = forward_backward(fst, x, y)
    tol = TOL[dtype]
    assert_same(o_fst, o_ref, tol, "output")
    n_w = len(ref.weights())
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
    C_pp = cell.preprocess0.bn.num_features if hasattr(cell.preprocess0, "bn") else None
    in0 = (cell.preprocess0.conv_1.in_channels if C_pp is not None else cell.preprocess0.op[1].in_channels)
    in1 = cell.preprocess1.op[1].in_channels
    res1 = 6
    res0 = 2 * res1 if C_pp is not None else res1
    g = torch.Generator().manual_seed(3)
    s0 = torch.randn(2, in0, res0, res0, generator=g, dtype=torch.float64, requires_grad=True)
    s1 = torch.randn(2, in1, res1, res1, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(14, len(OP_SETS[op_set]), generator=g, dtype=torch.float64, requires_grad=True)
    results = []
    for path in ("reference", "fast"):
        c = copy.deepcopy(cell)
        c.path = path
        torch.manual_seed(5)
        out = c(s0, s1, w, skip_noise_std=0.3)
        grads = torch.autograd.grad(out.square().sum(), [s0, s1, w] + list(c.parameters()))
        results.append((out, grads))
    (o_ref, g_ref), (o_fst, g_fst) = results
    assert_same(o_fst, o_ref, 1e-9, "cell output")
    for i, (a, b) in enumerate(zip(g_fst, g_ref)):
        assert_same(a, b, 1e-9, f"cell gradient {i}")


@pytest.mark.parametrize("option", ["channels_last", "dilated_as_phases"])
def test_each_idea_can_be_switched_off(option, monkeypatch):
    """With channels_last off (NCHW) or the polyphase trick off, the fast path is still the same function."""
    monkeypatch.setitem(fast.OPTIONS, option, False)
    ref, fst = twin_models("sigmoid", "darts", torch.float64, noise=0.4)
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
    config = SearchConfig(channels=4, layers=5, relaxation=model.config.relaxation,
                          primitives=model.config.primitives, zero_one_weight=10.0, grad_clip=5.0)
    w_opt, a_opt, _ = build_optimizers(model, config)
    for i in range(3):
        bilevel_step(model, (x, y), (x.flip(0), y.flip(0)), w_opt, a_opt, config)
    return [a.detach().clone() for a in model.arch_parameters()], [p.detach().clone() for p in model.weights()]


@pytest.mark.parametrize("relaxation,op_set", [("sigmoid", "fair_darts"), ("softmax", "darts")])
def test_three_bilevel_steps_give_the_same_alpha(relaxation, op_set):
    ref, fst = twin_models(relaxation, op_set, torch.float64, alpha_init_std=1e-3, layers=3)
    x, y = data()
    a_ref, w_ref = three_steps(ref, x, y)
    a_fst, w_fst = three_steps(fst, x, y)
    for a, b in zip(a_fst, a_ref):
        assert_same(a, b, 1e-9, "alpha after three steps")
    for a, b in zip(w_fst, w_ref):
        assert_same(a, b, 1e-9, "weights after three steps")


def test_fast_is_the_default_and_reference_stays_selectable():
    assert Supernet(channels=4, layers=3).config.path == "fast"
    m = Supernet(channels=4, layers=3, path="reference")
    assert all(c.path == "reference" for c in m.cells)
    m.set_path("fast")
    assert all(c.path == "fast" for c in m.cells)


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
    assert "--batch" in capsys.readouterr().err
    assert main(["bench", "search-epoch", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_bench_search_epoch_extrapolates_from_the_steps_it_times(capsys, path):
    rc = main(["bench", "search-epoch", "--batch", "500", "--channels", "2", "--layers", "3", "--resolution", "4",
               "--in-channels", "1", "--steps", "2", "--threads", "1", "--path", path, "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["path"] == path and r["steps_per_epoch"] == 50 and r["steps_timed"] == 2 and r["extrapolated"]
    assert r["epoch_s"] == pytest.approx(r["ms_per_step"] * 50 / 1000, rel=0.02)


def test_phase_space_round_trip():
    x = torch.randn(3, 5, 6, 4)
    assert torch.equal(fast.from_phases(fast.to_phases(x), 3), x)
    assert torch.equal(fast.to_phases(x)[3 * 1:3 * 2], x[:, :, 0::2, 1::2])  # phase (0, 1) is block 1


@pytest.mark.parametrize("what", ["to_phases", "from_phases", "phase", "concat"])
def test_reshaping_steps_give_channels_last_gradients(what):
    """The phase split and interleave, single phases and the cell's concat return the gradient autograd's
    own ops would (same values), in the channels_last layout (which keeps every later kernel fast)."""
    cl = torch.channels_last
    x = torch.randn(4, 3, 6, 4, dtype=torch.float64).contiguous(memory_format=cl).requires_grad_()
    fns = {"to_phases": (fast.to_phases, lambda t: t.reshape(4, 3, 3, 2, 2, 2).permute(3, 5, 0, 1, 2, 4)
                         .reshape(16, 3, 3, 2)),
           "from_phases": (lambda t: fast.from_phases(t, 1), lambda t: t.reshape(2, 2, 1, 3, 6, 4)
                           .permute(2, 3, 4, 0, 5, 1).reshape(1, 3, 12, 8)),
           "phase": (lambda t: fast.phase(t, 1, 0), lambda t: t[:, :, 1::2, 0::2]),
           "concat": (lambda t: fast._ConcatChannels.apply(t, 2 * t), lambda t: torch.cat([t, 2 * t], 1))}
    fast_fn, plain_fn = fns[what]
    y = fast_fn(x)
    assert torch.equal(y, plain_fn(x))
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.equal(gx, torch.autograd.grad(plain_fn(x), x, g)[0])
    assert gx.is_contiguous(memory_format=cl)


# --- recomputation (fast.OPTIONS["recompute"]) -------------------------------------------------------------
def test_recompute_alpha_only_gradient_and_eval_mode(monkeypatch):
    """autograd.grad w.r.t. alpha alone (the engine's arch step) through checkpointed cells; eval mode and
    no_grad run without a checkpoint."""
    monkeypatch.setitem(fast.OPTIONS, "recompute", "all")
    monkeypatch.setitem(fast.OPTIONS, "memory_min_elements", 0)
    ref, fst = twin_models("sigmoid", "fair_darts", torch.float64, noise=0.5)
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
def test_recompute_three_bilevel_steps(relaxation, op_set, monkeypatch):
    monkeypatch.setitem(fast.OPTIONS, "recompute", "all")
    monkeypatch.setitem(fast.OPTIONS, "memory_min_elements", 0)
    ref, fst = twin_models(relaxation, op_set, torch.float64, alpha_init_std=1e-3, layers=3, noise=0.3)
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
    for path in ("reference", "fast"):
        model = copy.deepcopy(base)
        model.set_path(path)
        s = list(bench.setup(spec, path, model))
        s[4] = [(x.double(), y) for x, y in s[4]]
        for _ in range(2):
            bench.step(tuple(s), spec, path)
        out[path] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(out["fast"], out["reference"]):
        assert_same(a, b, 1e-9, "parameter after two benchmark steps")


# --- memory options change no bit (fast.OPTIONS["recompute"], fast.OPTIONS["rebuild_cheap"]) ----------------
MEMORY_OPTIONS = [("none", False), ("none", True), ("first_stage", True), ("first_stage", False), ("all", True)]


@pytest.mark.parametrize("relaxation,op_set", [("sigmoid", "fair_darts"), ("softmax", "darts")])
def test_memory_options_give_bit_identical_steps(relaxation, op_set, monkeypatch):
    """Recomputing cells and rebuilding dropped activations recompute the very same numbers (same kernels,
    same inputs), so three float32 bi-level steps end bit for bit equal under every setting: a recorded
    search re-runs identically whatever memory setting it runs with."""
    x, y = data(torch.float32, batch=4, res=8)
    monkeypatch.setitem(fast.OPTIONS, "memory_min_elements", 0)  # the tiny test cells too
    results = []
    for recompute, rebuild in MEMORY_OPTIONS:
        monkeypatch.setitem(fast.OPTIONS, "recompute", recompute)
        monkeypatch.setitem(fast.OPTIONS, "rebuild_cheap", rebuild)
        _, fst = twin_models(relaxation, op_set, torch.float32, alpha_init_std=1e-3, noise=0.3)
        torch.manual_seed(11)
        alphas, weights = three_steps(fst, x, y)
        results.append((alphas + weights, [b.clone() for b in fst.buffers()]))
    (params0, buffers0), rest = results[0], results[1:]
    for (recompute, rebuild), (params, buffers) in zip(MEMORY_OPTIONS[1:], rest):
        assert all(torch.equal(a, b) for a, b in zip(params, params0)), (recompute, rebuild)
        assert all(torch.equal(a, b) for a, b in zip(buffers, buffers0)), (recompute, rebuild)


def test_rebuild_drops_the_cheap_activations(monkeypatch):
    """Under the rebuild hooks autograd stores recipes, not tensors, for every 1x1 conv output, the inner
    ReLU of every SepConv and the shared per-source tensors; the backward pass rebuilds each once."""
    monkeypatch.setitem(fast.OPTIONS, "recompute", "none")
    monkeypatch.setitem(fast.OPTIONS, "memory_min_elements", 0)
    _, fst = twin_models("sigmoid", "fair_darts", torch.float32)
    x, y = data(torch.float32, batch=4, res=8)
    packed, built = [], []
    pack, build = fast._pack, fast._Rebuild.get

    def counting_pack(t):
        packed.append(pack(t))
        return packed[-1]

    def counting_get(self):
        built.append(self.value is None)
        return build(self)

    monkeypatch.setattr(fast, "_pack", counting_pack)
    monkeypatch.setattr(fast._Rebuild, "get", counting_get)
    torch.autograd.grad(F.cross_entropy(fst(x), y), fst.weights())
    recipes = {id(r) for r in packed if isinstance(r, fast._Rebuild)}
    sep_convs = sum(isinstance(op, fast.SepConv) for cell in fst.cells for edge in cell.edges for op in edge.ops)
    assert len(recipes) >= 3 * sep_convs  # two 1x1 outputs and one inner ReLU per SepConv, at least
    assert sum(built) == len(recipes)  # each recipe computed once, however many nodes saved it


def test_small_cells_skip_the_memory_options(monkeypatch):
    """Below ``memory_min_elements`` a cell is neither checkpointed nor run under the rebuild hooks."""
    calls = []
    monkeypatch.setattr(fast, "checkpoint", lambda *a, **k: calls.append("checkpoint"))
    monkeypatch.setattr(fast, "_pack", lambda t: calls.append("pack") or t)
    monkeypatch.setitem(fast.OPTIONS, "recompute", "all")
    _, fst = twin_models("sigmoid", "fair_darts", torch.float32)
    x, y = data(torch.float32, batch=4, res=8)
    monkeypatch.setitem(fast.OPTIONS, "memory_min_elements", 4 * 8 * 8 * 8 + 1)  # above every cell's input
    fst(x).sum().backward()
    assert calls == []
    monkeypatch.setitem(fast.OPTIONS, "memory_min_elements", 4 * 8 * 8 * 8)  # the first reduction cell's
    monkeypatch.setitem(fast.OPTIONS, "recompute", "none")
    fst(x).sum().backward()
    assert "pack" in calls and "checkpoint" not in calls
