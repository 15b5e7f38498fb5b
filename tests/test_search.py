"""The search engine: presets, the step functions, smoke searches with both relaxations, the run
directory, exact resume, noise on skip, bad checkpoints."""
import json
import math

import numpy as np
import pytest
import torch

from fairdarts_core import cli, steps
from fairdarts_core.genotype import Genotype
from fairdarts_core.ops import DARTS_OPS, FAIR_DARTS_OPS
from fairdarts_core.presets import SearchConfig, apply_sets, get_search_preset, get_train_preset
from fairdarts_core.search import build_optimizers, build_supernet, run_search, skip_noise_std, zero_one_term
from fairdarts_core.steps import arch_step, bilevel_step, second_order_step, weight_step

DEBIAN_OK = __import__("pathlib").Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()
needs_data = pytest.mark.skipif(not DEBIAN_OK, reason="Fashion-MNIST (dataset-fashion-mnist) is not installed")


def tiny(**kw) -> SearchConfig:
    """The smoke preset at one step per epoch."""
    return get_search_preset("smoke", **{"subset": 32, **kw})


# --- presets --------------------------------------------------------------------------------------------
def test_paper_preset_is_the_published_setting():
    c = get_search_preset("paper")
    assert (c.dataset, c.batch_size, c.epochs, c.channels, c.layers) == ("cifar10", 128, 50, 16, 8)
    assert c.primitives == FAIR_DARTS_OPS and c.relaxation == "sigmoid" and c.alpha_init_std == 0
    assert (c.zero_one_weight, c.zero_one_kind, c.parse_method, c.threshold) == (10.0, "l2", "threshold_sparse", 0.85)
    assert (c.lr, c.lr_min, c.momentum, c.weight_decay, c.grad_clip) == (0.005, 0.001, 0.9, 3e-4, 5.0)
    assert (c.arch_lr, c.arch_betas, c.arch_weight_decay, c.train_portion, c.mode) == (3e-3, (0.9, 0.999), 1e-3, 0.5, "bilevel")
    d = get_search_preset("darts-paper")
    assert d.primitives == DARTS_OPS and d.relaxation == "softmax" and d.parse_method == "darts"
    assert (d.lr, d.batch_size, d.arch_lr, d.arch_betas, d.zero_one_weight) == (0.025, 64, 3e-4, (0.5, 0.999), 0.0)
    t = get_train_preset("paper")
    assert (t.channels, t.layers, t.batch_size, t.epochs, t.cutout, t.drop_path_prob, t.auxiliary_weight) == (36, 20, 96, 600, 16, 0.2, 0.4)
    cpu, dcpu = get_search_preset("cpu"), get_search_preset("darts-cpu")
    differ = {k for k in cpu.to_dict() if cpu.to_dict()[k] != dcpu.to_dict()[k]}
    assert differ == {"relaxation", "alpha_init_std", "parse_method", "zero_one_weight"}
    for short, long in (("cpu", "cpu-long"), ("darts-cpu", "darts-cpu-long")):
        a, b = get_search_preset(short).to_dict(), get_search_preset(long).to_dict()
        assert {k for k in a if a[k] != b[k]} == {"epochs"} and b["epochs"] == 5 * a["epochs"]


def test_unknown_preset_or_field_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown search preset 'nope'"):
        get_search_preset("nope")
    with pytest.raises(ValueError, match="unknown search config field"):
        get_search_preset("smoke", learning_rate=1)
    with pytest.raises(ValueError, match="mode=.trilevel. is not valid: choose one of"):
        get_search_preset("smoke", mode="trilevel")


def test_set_values_are_typed_like_their_fields():
    got = apply_sets(SearchConfig, ["epochs=3", "lr=0.1", "skip_noise=true", "subset=none",
                                    "primitives=skip_connect,sep_conv_3x3", "arch_betas=0.5,0.999"])
    assert got == {"epochs": 3, "lr": 0.1, "skip_noise": True, "subset": None,
                   "primitives": ("skip_connect", "sep_conv_3x3"), "arch_betas": (0.5, 0.999)}
    with pytest.raises(ValueError):
        apply_sets(SearchConfig, ["epochs=three"])


# --- steps ----------------------------------------------------------------------------------------------
def _model_and_batches(config):
    torch.manual_seed(0)
    model = build_supernet(config, 1, 10)
    w_opt, a_opt, _ = build_optimizers(model, config)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    xv, yv = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    return model, w_opt, a_opt, (x, y), (xv, yv)


def _alphas(model):
    return [a.detach().clone() for a in model.arch_parameters()]


def test_arch_step_touches_only_alpha_and_weight_step_only_weights():
    model, w_opt, a_opt, (x, y), (xv, yv) = _model_and_batches(tiny())
    before_w = [p.detach().clone() for p in model.network_parameters()]
    arch_step(model, (xv, yv), a_opt, zero_one_term(tiny()))
    assert all(p.grad is None for p in model.network_parameters())          # no weight-gradient kernels ran
    assert all(torch.equal(a, b) for a, b in zip(before_w, model.network_parameters()))
    alphas = _alphas(model)
    weight_step(model, (x, y), w_opt, tiny().grad_clip)
    assert all(torch.equal(a, b) for a, b in zip(alphas, model.arch_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before_w, model.network_parameters()))


@pytest.mark.parametrize("mode", ["bilevel", "single", "second_order"])
def test_every_mode_steps_and_changes_alpha(mode):
    config = tiny(mode=mode, arch_lr=0.01)
    model, w_opt, a_opt, bt, bv = _model_and_batches(config)
    before = _alphas(model)
    stats = steps.search_step(mode, model, bt, bv, w_opt, a_opt, zero_one_term(config), config.grad_clip)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in stats.values())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.arch_parameters()))
    assert all(torch.isfinite(a).all() for a in model.arch_parameters())


def test_second_order_differs_from_first_order():
    config = tiny(arch_lr=0.01)
    results = []
    for step in (bilevel_step, second_order_step):
        model, w_opt, a_opt, bt, bv = _model_and_batches(config)
        for _ in range(2):  # the second step has a momentum buffer, so the virtual step uses it
            step(model, bt, bv, w_opt, a_opt, zero_one_term(config), config.grad_clip)
        results.append(_alphas(model))
    assert not torch.allclose(results[0][0], results[1][0])


def test_zero_one_loss_pushes_sigmoids_apart():
    """With only the zero-one term (no data signal), sigmoids already off 0.5 move further away."""
    config = tiny(zero_one_weight=1000.0, arch_lr=0.05)
    model, w_opt, a_opt, bt, bv = _model_and_batches(config)
    with torch.no_grad():
        model.alphas_normal.copy_(torch.linspace(-1, 1, model.alphas_normal.numel()).view_as(model.alphas_normal))
    dist_before = (torch.sigmoid(model.alphas_normal) - 0.5).abs().mean()
    arch_step(model, bv, a_opt, zero_one_term(config))
    assert (torch.sigmoid(model.alphas_normal) - 0.5).abs().mean() > dist_before


# --- noise on skip --------------------------------------------------------------------------------------
def test_noise_schedule_is_a_cosine_from_one_to_zero():
    c = tiny(skip_noise=True, noise_epochs=4, epochs=6)
    stds = [skip_noise_std(e, c) for e in range(6)]
    assert stds[0] == 1.0 and stds[4] == 0.0 and stds[5] == 0.0
    assert stds[2] == pytest.approx(0.5) and stds[1] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert all(a > b for a, b in zip(stds[:4], stds[1:5]))
    assert skip_noise_std(0, tiny(skip_noise=False)) == 0.0


@needs_data
def test_noise_is_set_for_the_scheduled_epochs_and_only_in_training(monkeypatch):
    seen = []
    real_step = steps.search_step

    def spy(mode, model, *args):
        seen.append((model.skip_noise_std, model.training))
        return real_step(mode, model, *args)

    monkeypatch.setattr(steps, "search_step", spy)
    result = run_search(tiny(skip_noise=True, noise_epochs=2, epochs=3), progress=False)
    assert [s for s, _ in seen] == [1.0, 0.5, 0.0] and all(t for _, t in seen)
    assert [r["skip_noise_std"] for r in result.history] == [1.0, 0.5, 0.0]
    # the supernet draws it only in training mode
    model = result.model
    model.skip_noise_std = 1.0
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


# --- whole searches -------------------------------------------------------------------------------------
@needs_data
@pytest.mark.parametrize("relaxation", ["sigmoid", "softmax"])
def test_smoke_search_writes_a_parsable_run_directory(tmp_path, relaxation, capsys):
    out = tmp_path / "run"
    records = []
    result = run_search(tiny(relaxation=relaxation), out, progress=False,
                        callback=lambda record, model: records.append(record["epoch"]))
    assert records == [1, 2] and len(result.history) == 2
    for name in ("config.json", "history.json", "normal_weight.npy", "reduce_weight.npy", "genotype.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    r = history[-1]
    for key in ("epoch", "normal_weight", "reduce_weight", "genotype", "train_loss", "train_acc", "val_loss",
                "val_acc", "zero_one_loss", "skip_normal", "skip_reduce", "lr", "seconds"):
        assert key in r, key
    W = np.load(out / "normal_weight.npy")
    assert W.shape == (14, 7) and np.allclose(W, r["normal_weight"], atol=1e-6)
    if relaxation == "softmax":
        assert np.allclose(W.sum(1), 1, atol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["relaxation"] == relaxation and config["primitives"] == list(FAIR_DARTS_OPS)
    assert Genotype.load(out / "genotype.json") == result.genotype
    capsys.readouterr()
    assert cli.main(["parse", str(out), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert {k: parsed[k] for k in ("normal", "reduce")} == result.genotype.to_dict()
    assert parsed["method"] == ("threshold_sparse" if relaxation == "sigmoid" else "darts")


@needs_data
def test_resume_ends_with_exactly_the_same_alphas(tmp_path):
    config = tiny(epochs=3, skip_noise=True, noise_epochs=2)
    full = run_search(config, tmp_path / "full", progress=False)
    stopped = run_search(config, tmp_path / "part", progress=False, callback=lambda r, m: r["epoch"] < 1)
    assert len(stopped.history) == 1
    resumed = run_search(config, tmp_path / "part", resume=True, progress=False)
    assert len(resumed.history) == 3
    for a, b in zip(full.model.arch_parameters(), resumed.model.arch_parameters()):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()  # network weights and BN too
    assert list(full_state) == list(resumed_state)
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
    assert resumed.genotype == full.genotype


@needs_data
def test_resume_refuses_another_config_and_bad_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    run_search(tiny(epochs=1), out, progress=False)
    with pytest.raises(ValueError, match="differs in lr"):
        run_search(tiny(epochs=1, lr=0.5), out, resume=True, progress=False)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        run_search(tiny(epochs=1), out, resume=True, progress=False)
    rc = cli.main(["search", "--preset", "smoke", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    rc = cli.main(["search", "--preset", "smoke", "--out", str(tmp_path / "empty"), "--resume"])
    assert rc == 2 and "nothing to resume" in capsys.readouterr().err


@needs_data
def test_cli_search_json(tmp_path, capsys):
    rc = cli.main(["search", "--preset", "smoke", "--epochs", "1", "--relaxation", "softmax", "--set", "subset=32",
                   "--out", str(tmp_path / "s"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    payload = json.loads(captured.out)
    assert payload["epochs"] == 1 and "genotype" in payload and "epoch   1/1" in captured.err
    assert json.loads((tmp_path / "s" / "config.json").read_text())["parse_method"] is None
