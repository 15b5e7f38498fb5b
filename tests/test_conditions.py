"""Chapter 3: the condition explorer (state, figures, widget) and the checkers of the noise schedule and of
power iteration."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fairdarts_core.exercises import CheckResult, check_noise_schedule, check_power_iteration
from fairdarts_core.nb201 import NB201_OPS
from fairdarts_core.presets import get_search_preset
from fairdarts_core.search import skip_noise_std
from fairdarts_core.widgets import (condition_explorer, condition_explorer_figure, condition_explorer_state,
                                    condition_explorer_static, condition_label, condition_of, recorded_conditions)

NOSKIP_OPS = ("none", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
CONDITIONS = {
    "darts": ("nb201-darts-cpu", {}),
    "fairdarts": ("nb201-cpu", {}),
    "sigmoid_w0": ("nb201-cpu", {"zero_one_weight": 0.0}),
    "noise": ("nb201-darts-cpu", {"skip_noise": True}),
    "noskip": ("nb201-darts-cpu", {"primitives": NOSKIP_OPS}),
}
RUN_DIR = Path(__file__).resolve().parents[1] / "data" / "runs" / "nb201"


def _history(primitives, skips_per_epoch, hessian=None):
    """A 3-epoch NAS-Bench-201 history whose skip_connect dominates the first ``skips_per_epoch[e]`` edges
    at epoch e (and nor_conv_3x3 the others), recorded skip count and Hessian eigenvalue included."""
    ops = list(primitives)
    history = []
    for e, n_skip in enumerate(skips_per_epoch):
        W = np.full((6, len(ops)), 0.1)
        W[:, ops.index("nor_conv_3x3")] = 0.5
        if "skip_connect" in ops:
            W[:n_skip, ops.index("skip_connect")] = 0.9
        record = {"epoch": e + 1, "cell_weight": W.tolist(), "skips": n_skip if "skip_connect" in ops else 0}
        if hessian is not None:
            record["hessian_eigenvalue"] = hessian[e]
        history.append(record)
    return history


def _run(name, seed, skips=(1, 3, 5), hessian=(0.1, 0.2, 0.4)):
    preset, overrides = CONDITIONS[name]
    config = get_search_preset(preset, seed=seed, epochs=3, track_hessian=hessian is not None, **overrides)
    return SimpleNamespace(config=config, history=_history(config.primitives, skips, hessian),
                           path=Path(f"/tmp/{name}_s{seed}"))


@pytest.fixture(scope="module")
def runs():
    out = []
    for seed in (2, 0, 1):  # out of order: the state sorts by seed
        out.append(_run("darts", seed, skips=(2, 4, 6), hessian=(0.1, 0.3, 0.9 + seed)))
        out.append(_run("fairdarts", seed, skips=(0, 1, 1), hessian=(0.1, 0.1, 0.2)))
        out.append(_run("noise", seed, skips=(0, 1, 2), hessian=(0.1, 0.15, 0.3)))
        out.append(_run("noskip", seed, hessian=(0.1, 0.2, 0.5)))
    return out


# --- conditions --------------------------------------------------------------------------------------------

def test_condition_of_and_labels():
    cases = {
        "darts": ({"relaxation": "softmax", "zero_one": False, "noise": False, "skip_in_set": True}, "softmax"),
        "fairdarts": ({"relaxation": "sigmoid", "zero_one": True, "noise": False, "skip_in_set": True},
                      "sigmoid + zero-one loss"),
        "sigmoid_w0": ({"relaxation": "sigmoid", "zero_one": False, "noise": False, "skip_in_set": True},
                       "sigmoid, no zero-one loss"),
        "noise": ({"relaxation": "softmax", "zero_one": False, "noise": True, "skip_in_set": True},
                  "softmax + noise on skip"),
        "noskip": ({"relaxation": "softmax", "zero_one": False, "noise": False, "skip_in_set": False},
                   "softmax, no skip in the set"),
    }
    for name, (condition, label) in cases.items():
        preset, overrides = CONDITIONS[name]
        assert condition_of(get_search_preset(preset, **overrides)) == condition
        assert condition_label(condition) == label


def test_recorded_conditions_in_chapter_order(runs):
    assert [condition_label(c) for c in recorded_conditions(runs)] == [
        "softmax", "sigmoid + zero-one loss", "softmax + noise on skip", "softmax, no skip in the set"]


# --- the state ---------------------------------------------------------------------------------------------

def test_state_of_a_recorded_condition(runs):
    s = condition_explorer_state(runs, "softmax", noise=False, skip_in_set=True)
    assert s["recorded"] and s["label"] == "softmax" and s["seeds"] == [0, 1, 2]
    assert s["paths"] == ["/tmp/darts_s0", "/tmp/darts_s1", "/tmp/darts_s2"]
    assert s["epochs"] == [[1, 2, 3]] * 3 and s["skips"] == [[2, 4, 6]] * 3 and s["final_skips"] == [6, 6, 6]
    assert s["hessian"][2] == [0.1, 0.3, 2.9] and s["hessian_recorded"]
    assert s["n_edges"] == 6 and s["primitives"] == list(NB201_OPS)
    assert s["dominant"][0]["skip_connect"] == [2, 4, 6] and s["dominant"][0]["nor_conv_3x3"] == [4, 2, 0]
    assert "none" in s["dominant"][0]  # NAS-Bench-201 keeps none among the candidates
    assert "6, 6, 6 skip edges of 6" in s["verdict"] and "skip takes over" in s["verdict"]
    assert "from 0.1 to 1.9" in s["verdict"]  # the Hessian eigenvalue, mean over the seeds


def test_state_noise_noskip_and_sigmoid(runs):
    noise = condition_explorer_state(runs, "softmax", True, True)
    assert noise["label"] == "softmax + noise on skip" and noise["final_skips"] == [2, 2, 2]
    assert "skip stays a minority" in noise["verdict"]
    noskip = condition_explorer_state(runs, "softmax", False, False)
    assert noskip["final_skips"] == [0, 0, 0] and noskip["primitives"] == list(NOSKIP_OPS)
    assert "skip_connect" not in noskip["dominant"][0] and "not a candidate" in noskip["verdict"]
    fair = condition_explorer_state(runs, "sigmoid", False, True)  # zero_one=None: the recorded w > 0
    assert fair["condition"]["zero_one"] and fair["label"] == "sigmoid + zero-one loss"
    assert fair["final_skips"] == [1, 1, 1] and "1, 1, 1 skip edges" in fair["verdict"]


def test_state_zero_one_choice_and_preference(runs):
    w0 = _run("sigmoid_w0", 0, skips=(3, 5, 6))
    assert not condition_explorer_state(runs, "sigmoid", False, True, zero_one=False)["recorded"]
    with_w0 = runs + [w0]
    assert condition_explorer_state(with_w0, "sigmoid", False, True, zero_one=False)["final_skips"] == [6]
    assert condition_explorer_state(with_w0, "sigmoid", False, True)["condition"]["zero_one"]  # prefers w > 0
    only_w0 = [r for r in with_w0 if not condition_of(r.config)["zero_one"] or r.config.relaxation == "softmax"]
    s = condition_explorer_state(only_w0, "sigmoid", False, True)  # w > 0 missing: whichever is recorded
    assert s["recorded"] and not s["condition"]["zero_one"] and s["label"] == "sigmoid, no zero-one loss"


def test_unrecorded_combinations_do_not_raise(runs):
    s = condition_explorer_state(runs, "sigmoid", True, True)
    assert not s["recorded"] and s["seeds"] == [] and s["skips"] == [] and not s["hessian_recorded"]
    assert s["verdict"].startswith("no recorded search for 'sigmoid + zero-one loss + noise on skip'")
    assert "recorded conditions: softmax, sigmoid + zero-one loss, softmax + noise on skip" in s["verdict"]
    impossible = condition_explorer_state(runs, "softmax", True, False)
    assert not impossible["recorded"] and "needs skip_connect" in impossible["verdict"]
    empty = condition_explorer_state([], "softmax", False, True)
    assert not empty["recorded"] and "none yet" in empty["verdict"]
    unfinished = SimpleNamespace(config=runs[0].config, history=[])
    assert not condition_explorer_state([unfinished], "softmax", False, True)["recorded"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(relaxation="relu", noise=False, skip_in_set=True), "relaxation must be one of"),
    (dict(relaxation="softmax", noise="yes", skip_in_set=True), "noise must be True or False"),
    (dict(relaxation="softmax", noise=False, skip_in_set=1), "skip_in_set must be True or False"),
    (dict(relaxation="sigmoid", noise=False, skip_in_set=True, zero_one=10.0), "zero_one must be"),
])
def test_invalid_toggles_are_refused(runs, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        condition_explorer_state(runs, **kwargs)
    assert "\n" not in str(info.value)


def test_state_without_hessian():
    runs = [_run("darts", 0, hessian=None)]
    s = condition_explorer_state(runs, "softmax", False, True)
    assert s["hessian"] == [[None, None, None]] and not s["hessian_recorded"]
    assert "was not recorded" in s["verdict"]


@pytest.mark.skipif(not (RUN_DIR / "darts_s0" / "history.json").is_file(), reason="recorded runs not present")
def test_recorded_nb201_runs():
    from fairdarts_core.runs import load_search_run

    runs = [load_search_run(RUN_DIR / name) for name in ("darts_s0", "fairdarts_s0")]
    darts = condition_explorer_state(runs, "softmax", False, True)
    fair = condition_explorer_state(runs, "sigmoid", False, True)
    assert darts["seeds"] == [0] and fair["seeds"] == [0]
    assert darts["final_skips"] == [runs[0].history[-1]["skips"]]
    assert len(darts["skips"][0]) == len(runs[0].history) and not darts["hessian_recorded"]


# --- figures and widget ------------------------------------------------------------------------------------

def _lines(ax):
    return len(ax.get_lines())


def test_figure_lines(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = condition_explorer_figure(condition_explorer_state(runs, "softmax", False, True))
    assert _lines(a) == 3 and _lines(b) == 3
    plt.close(fig)
    fig, (a, b) = condition_explorer_figure(condition_explorer_state([_run("darts", 0, hessian=None)],
                                                                     "softmax", False, True))
    assert _lines(a) == 1 and _lines(b) == 0
    assert any("not recorded" in t.get_text() for t in b.texts)
    plt.close(fig)
    fig, (a, b) = condition_explorer_figure(condition_explorer_state(runs, "sigmoid", True, True))
    assert _lines(a) == 0 and _lines(b) == 0 and any("no recorded search" in t.get_text() for t in a.texts)
    plt.close(fig)


def test_static_figure(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = condition_explorer_static(runs)
    assert axes.shape == (4, 2)
    assert [_lines(ax) for ax in axes[:, 0]] == [3, 3, 3, 3] and [_lines(ax) for ax in axes[:, 1]] == [3, 3, 3, 3]
    assert axes[0, 0].get_title() == "softmax" and axes[3, 0].get_title() == "softmax, no skip in the set"
    assert axes[0, 1].get_ylim() == axes[3, 1].get_ylim()  # the Hessian panels compare on one scale
    assert axes[0, 1].get_title() and not axes[1, 1].get_title()
    assert axes[3, 0].get_xlabel() == "epoch" and axes[0, 0].get_xlabel() == ""
    plt.close(fig)
    fig, axes = condition_explorer_static([])
    assert axes.shape == (1, 2) and any("no recorded" in t.get_text() for t in axes[0, 0].texts)
    plt.close(fig)


def test_widget_toggles_change_the_state(runs):
    import matplotlib
    matplotlib.use("Agg")

    box = condition_explorer(runs)
    assert box.state()["label"] == "softmax" and box.state()["final_skips"] == [6, 6, 6]
    png = box.children[-1].value
    assert bytes(png[:4]) == b"\x89PNG"
    box.noise.value = True
    assert box.state()["label"] == "softmax + noise on skip" and box.children[-1].value != png
    assert "softmax + noise on skip" in box.children[-2].value
    box.noise.value = False
    box.skip.value = False
    assert box.state()["label"] == "softmax, no skip in the set"
    box.skip.value = True
    box.relaxation.value = "sigmoid + zero-one"
    assert box.state()["label"] == "sigmoid + zero-one loss" and box.state()["final_skips"] == [1, 1, 1]
    box.relaxation.value = "sigmoid, w=0"
    assert not box.state()["recorded"] and "no recorded search" in box.children[-2].value
    with pytest.raises(ValueError, match="relaxation must be one of"):
        condition_explorer(runs, relaxation="tanh")


# --- the noise schedule checker ----------------------------------------------------------------------------

def _noise_std(epoch, noise_epochs):
    if epoch >= noise_epochs:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * epoch / noise_epochs))


def test_reference_formula_is_the_library_schedule():
    for n in (1, 7, 30):
        config = get_search_preset("nb201-darts-cpu", skip_noise=True, noise_epochs=n)
        assert [skip_noise_std(e, config) for e in range(n + 3)] == [_noise_std(e, n) for e in range(n + 3)]


def test_noise_checker_accepts_correct_solutions():
    result = check_noise_schedule(_noise_std)
    assert isinstance(result, CheckResult) and result.ok, result.message
    assert check_noise_schedule(lambda e, n: np.float32(_noise_std(e, n))).ok
    assert check_noise_schedule(lambda e, n: torch.tensor(_noise_std(e, n))).ok


@pytest.mark.parametrize("wrong, message", [
    (lambda e, n: max(0.0, 1.0 - e / n), "decays linearly"),
    (lambda e, n: _noise_std(e + 1, n), "shifted by one epoch"),
    (lambda e, n: _noise_std(e - 1, n), "shifted by one epoch"),
    (lambda e, n: _noise_std(e, n) ** 2, "variance"),
    (lambda e, n: 0.5 * (1.0 + math.cos(math.pi * e / n)), "rises again"),
    (lambda e, n: math.cos(math.pi * e / n) if e < n else 0.0, "goes negative"),
    (lambda e, n: math.cos(math.pi * e / n), "never negative"),
    (lambda e, n: _noise_std(e, n) if e < n else 0.05, "never reaches 0"),
    (lambda e, n: 0.9 * _noise_std(e, n), "starts at exactly 1"),
    (lambda e, n: 0.5 * (1.0 + math.cos(math.pi * e / (n + 2))) if e < n else 0.0, "expected"),
    (lambda e, n: None, "return one number"),
])
def test_noise_checker_diagnoses(wrong, message):
    result = check_noise_schedule(wrong)
    assert not result.ok and message in result.message, result.message


def test_noise_checker_survives_raising_code():
    def broken(epoch, noise_epochs):
        return 1 / (epoch - epoch)

    result = check_noise_schedule(broken)
    assert not result.ok and "ZeroDivisionError" in result.message

    def todo(epoch, noise_epochs):
        raise NotImplementedError

    assert "not written yet" in check_noise_schedule(todo).message


# --- the power iteration checker ---------------------------------------------------------------------------

def _power(hvp, dim, iterations=100):
    v = torch.randn(dim, dtype=torch.float64)
    v = v / v.norm()
    for _ in range(iterations):
        w = hvp(v)
        v = w / w.norm()
    return float(v @ hvp(v))


def _norm_of_hv(hvp, dim, iterations=100):
    v = torch.randn(dim, dtype=torch.float64)
    v = v / v.norm()
    for _ in range(iterations):
        w = hvp(v)
        v = w / w.norm()
    return float(hvp(v).norm())


def _eigenvector(hvp, dim, iterations=100):
    v = torch.randn(dim, dtype=torch.float64)
    for _ in range(iterations):
        w = hvp(v)
        v = w / w.norm()
    return v


def _unnormalised(hvp, dim, iterations=100):
    v = torch.randn(dim, dtype=torch.float64)
    for _ in range(iterations):
        v = hvp(v)
    return float(v @ hvp(v) / (v @ v))


def _largest_algebraic(hvp, dim, iterations=100):
    H = torch.stack([hvp(e) for e in torch.eye(dim, dtype=torch.float64)])
    return float(torch.linalg.eigvalsh(H)[-1])


def test_power_checker_accepts_correct_solutions():
    torch.manual_seed(0)
    result = check_power_iteration(_power)
    assert isinstance(result, CheckResult) and result.ok, result.message
    assert check_power_iteration(lambda hvp, dim, iterations=100: torch.tensor(_power(hvp, dim, iterations))).ok


@pytest.mark.parametrize("wrong, message", [
    (_norm_of_hv, "loses the sign"),
    (lambda hvp, dim, iterations=100: -_power(hvp, dim, iterations), "sign is flipped"),
    (_eigenvector, "returned a vector"),
    (lambda hvp, dim, iterations=100: _power(hvp, dim, 5), "close but loose"),
    (_unnormalised, "grows without bound"),
    (_largest_algebraic, "not the one of largest magnitude"),
    (lambda hvp, dim, iterations=100: hvp(np.ones(dim)), "torch tensor"),
    (lambda hvp, dim, iterations=100: float(hvp(torch.ones(dim + 1, dtype=torch.float64)).sum()), "shape"),
    (lambda hvp, dim, iterations=100: 5.0, "never calls hvp"),
    (lambda hvp, dim, iterations=100: 2.0 * _power(hvp, dim, iterations), "expected"),
    (lambda hvp, dim, iterations=100: "five", "return the eigenvalue as one number"),
])
def test_power_checker_diagnoses(wrong, message):
    torch.manual_seed(0)
    result = check_power_iteration(wrong)
    assert not result.ok and message in result.message, result.message


def test_power_checker_survives_raising_code():
    def broken(hvp, dim, iterations=100):
        raise RuntimeError("boom")

    result = check_power_iteration(broken)
    assert not result.ok and "RuntimeError: boom" in result.message

    def wrong_signature(hvp, dim):
        return 1.0

    result = check_power_iteration(wrong_signature)
    assert not result.ok and "TypeError" in result.message
