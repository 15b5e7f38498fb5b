"""The discretization gap (Fair DARTS, Sec. 4, Eq. 5): the relaxed supernet against the same supernet with the
derived cell's 0/1 weights, on cases whose answer is known."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairdarts_core.analysis import (DiscretizationGap, discrete_weights, discretization_gap, distance_from_binary,
                                     evaluate, finetune_discrete)
from fairdarts_core.genotype import Genotype
from fairdarts_core.nb201 import NB201Config, NB201Genotype, NB201Supernet
from fairdarts_core.supernet import Supernet, SupernetConfig

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def tiny(space: str, relaxation: str = "sigmoid"):
    torch.manual_seed(0)
    if space == "nb201":
        return NB201Supernet(NB201Config(channels=4, cells_per_stage=1, in_channels=1, num_classes=3,
                                         relaxation=relaxation, alpha_init_std=1.0))
    return Supernet(SupernetConfig(channels=4, layers=3, in_channels=1, num_classes=3, relaxation=relaxation,
                                   alpha_init_std=1.0))


def batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def set_alpha_to(model, weights):
    """Alphas whose sigmoids are exactly ``weights`` (0/1 matrices): +-1000 (sigmoid gives 1.0 and 0.0)."""
    with torch.no_grad():
        for a, w in zip(model.arch_parameters(), weights):
            a.copy_(1000.0 * (2 * torch.as_tensor(w) - 1))


def test_the_cells_weights_land_on_their_edges_and_ops():
    darts = tiny("darts")
    P = list(darts.config.primitives)
    g = Genotype(normal=(("sep_conv_3x3", 2, 0), ("skip_connect", 2, 1), ("max_pool_3x3", 3, 2),
                         ("dil_conv_5x5", 5, 4)),
                 reduce=(("avg_pool_3x3", 4, 1),))
    normal, reduce = discrete_weights(darts, g)
    assert normal.shape == reduce.shape == (14, len(P))
    # DARTS row order: node 2 <- 0, 1 (rows 0, 1); node 3 <- 0, 1, 2 (rows 2-4); node 4 <- 0..3 (5-8); node 5 (9-13)
    want = {(0, "sep_conv_3x3"), (1, "skip_connect"), (4, "max_pool_3x3"), (13, "dil_conv_5x5")}
    assert {(int(r), P[int(k)]) for r, k in normal.nonzero()} == want
    assert {(int(r), P[int(k)]) for r, k in reduce.nonzero()} == {(6, "avg_pool_3x3")}
    nb = tiny("nb201")
    cell = NB201Genotype(("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "none", "nor_conv_1x1"))
    (m,) = discrete_weights(nb, cell)
    Q = list(nb.config.primitives)
    assert [Q[int(k)] for k in m.argmax(1)] == ["nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "none",
                                                 "nor_conv_1x1"]
    assert m.sum(1).tolist() == [1, 0, 1, 1, 0, 1]  # `none` adds nothing: a row of zeros
    narrow = NB201Supernet(NB201Config(channels=4, cells_per_stage=1, in_channels=1, num_classes=3,
                                       primitives=("none", "skip_connect", "nor_conv_3x3")))
    with pytest.raises(ValueError, match="'avg_pool_3x3', which is not among the supernet's ops"):
        discrete_weights(narrow, cell)


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_weights_already_zero_or_one_have_no_gap(space):
    model = tiny(space)
    derived = model.genotype(method="darts")
    set_alpha_to(model, [w.numpy() for w in discrete_weights(model, derived)])
    again = model.genotype(method="darts")  # the same edges (their order within a node follows the weights)
    assert [sorted(map(str, getattr(again, c, ()) or again.ops)) for c in ("normal", "reduce")] == \
        [sorted(map(str, getattr(derived, c, ()) or derived.ops)) for c in ("normal", "reduce")]
    gap = discretization_gap(model, batches(), derived)
    assert gap.relaxed_loss == gap.discrete_loss and gap.relaxed_acc == gap.discrete_acc
    assert gap.acc_gap == gap.loss_gap == 0.0 and gap.distance_from_binary == 0.0
    if space == "nb201":  # one op per edge: rounding is the cell (the DARTS cell also limits a node's inputs)
        assert gap.rounded_loss == gap.relaxed_loss and gap.rounding_gap == 0.0


@pytest.mark.parametrize("space, relaxation", [("darts", "sigmoid"), ("nb201", "sigmoid"), ("nb201", "softmax")])
def test_the_discretized_supernet_is_the_supernet_whose_alphas_pick_the_cell(space, relaxation):
    model = tiny(space, relaxation)
    derived = model.genotype(method="darts")
    data = batches()
    gap = discretization_gap(model, data, derived)
    picked = tiny(space, relaxation)
    picked.load_state_dict(model.state_dict())
    if relaxation == "softmax":  # softmax of a row of +-1000 is one-hot exactly
        hot = [w.numpy() for w in discrete_weights(model, derived)]
        with torch.no_grad():
            for a, w in zip(picked.arch_parameters(), hot):
                a.copy_(torch.where(torch.as_tensor(w) > 0, 1000.0, -1000.0))
        assert all((w.sum(1) == 1).all() for w in hot)  # NAS-Bench-201's argmax keeps one op on every edge
    else:
        set_alpha_to(picked, [w.numpy() for w in discrete_weights(model, derived)])
    loss, acc = evaluate(picked, data)
    assert gap.discrete_loss == pytest.approx(loss, rel=1e-6) and gap.discrete_acc == acc
    assert gap.relaxed_loss == pytest.approx(evaluate(model, data)[0], rel=1e-6)
    assert gap.discrete_loss != pytest.approx(gap.relaxed_loss, rel=1e-3)  # random alphas: a real gap


def test_rounding_keeps_every_op_at_the_threshold_or_the_strongest_of_a_softmax_row():
    from fairdarts_core.analysis import rounded_weights

    w = torch.tensor([[0.9, 0.86, 0.2], [0.85, 0.1, 0.84]])
    (r,) = rounded_weights([w], "sigmoid", 0.85)
    assert r.tolist() == [[1, 1, 0], [1, 0, 0]]  # two ops on one edge: no per-edge limit
    (r,) = rounded_weights([torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.3, 0.3]])], "softmax", 0.85)
    assert r.tolist() == [[0, 1, 0], [1, 0, 0]]  # the threshold plays no part
    with pytest.raises(ValueError, match="unknown relaxation"):
        rounded_weights([w], "tanh")
    model = tiny("darts")
    with torch.no_grad():
        model.alphas_normal.copy_(torch.randn(14, 7) * 3)
    gap = discretization_gap(model, batches(), model.genotype(), threshold=0.5)
    normal = torch.sigmoid(model.alphas_normal.detach()) >= 0.5
    assert normal.sum() > 14  # more ops than a cell keeps: rounding and the cell differ
    assert gap.rounded_acc is not None and gap.rounded_loss != gap.discrete_loss


def test_evaluate_is_the_mean_cross_entropy_and_accuracy_in_eval_mode():
    model = tiny("nb201").train()
    data = batches(2)
    loss, acc = evaluate(model, data)
    assert model.training  # the mode comes back
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in data])
    y = torch.cat([y for _, y in data])
    assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert acc == float((logits.argmax(1) == y).float().mean())
    with pytest.raises(ValueError, match="batches is empty"):
        evaluate(model, [])


def test_the_distance_from_zero_or_one_and_the_gaps_arithmetic():
    assert distance_from_binary(np.array([[0.0, 1.0, 0.5], [0.25, 0.9, 0.1]])) == pytest.approx(0.95 / 6)
    assert distance_from_binary([np.full((2, 2), 0.5), torch.zeros(3, 2)]) == pytest.approx(2.0 / 10)
    from fairdarts_core.analysis import distance_from_cell

    softmax_row = np.full((1, 8), 1 / 8)  # near 0 everywhere, yet far from any choice
    assert distance_from_binary(softmax_row) == pytest.approx(1 / 8)
    assert distance_from_cell(softmax_row, np.eye(8)[:1]) == pytest.approx((7 / 8 + 7 / 8) / 8)
    assert distance_from_cell([np.array([0.9, 0.2])], [np.array([1.0, 0.0])]) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="differ in size"):
        distance_from_cell(np.zeros(3), np.zeros(4))
    g = DiscretizationGap(relaxed_loss=0.5, relaxed_acc=0.8, discrete_loss=1.25, discrete_acc=0.55,
                          distance_from_binary=0.1)
    assert g.acc_gap == pytest.approx(0.25) and g.loss_gap == pytest.approx(0.75)
    assert g.to_dict()["acc_gap"] == pytest.approx(0.25) and g.to_dict()["finetuned_acc"] is None


def test_a_fine_tune_trains_a_copy_and_leaves_the_supernet_alone():
    model = tiny("nb201")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = batches(4)
    weights = discrete_weights(model, model.genotype(method="darts"))
    tuned = finetune_discrete(model, weights, data * 5, lr=0.05)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(tuned.alpha, model.alpha)  # alpha is not trained
    gap = discretization_gap(model, data, model.genotype(method="darts"), finetune_batches=data * 5, finetune_lr=0.05)
    assert gap.finetuned_loss == pytest.approx(evaluate(tuned, data, weights)[0], rel=1e-6)
    assert gap.finetuned_loss < gap.discrete_loss  # 20 steps on these very images lower their loss


@pytest.mark.skipif(not FASHION.is_file(), reason="Fashion-MNIST (dataset-fashion-mnist) is not installed")
def test_a_search_tracks_the_gap_without_changing_its_course(tmp_path):
    from fairdarts_core.analysis import gap_of_run
    from fairdarts_core.presets import get_search_preset
    from fairdarts_core.search import run_search

    small = dict(subset=64, batch_size=16, epochs=2, layers=3, channels=4, gap_images=50)
    tracked = run_search(get_search_preset("nb201-cpu", track_gap=True, **small), tmp_path / "run", progress=False)
    plain = run_search(get_search_preset("nb201-cpu", **small), None, progress=False)
    assert "gap" not in plain.history[-1]
    for a, b in zip(tracked.history, plain.history):  # the measurement changes nothing of the search
        assert a["cell_weight"] == b["cell_weight"] and a["train_loss"] == b["train_loss"]
    last = tracked.history[-1]["gap"]
    assert set(last) == {"relaxed_loss", "relaxed_acc", "rounded_loss", "rounded_acc", "discrete_loss",
                         "discrete_acc", "distance_from_binary", "acc_gap", "rounding_gap", "loss_gap"}
    # after the last epoch, the threshold sweep; at the run's own threshold it is the record's gap
    sweep = tracked.history[-1]["gap_by_threshold"]
    assert "gap_by_threshold" not in tracked.history[0] and list(sweep)[0] == "0.50" and len(sweep) == 10
    assert sweep["0.85"]["discrete_acc"] == last["discrete_acc"] and sweep["0.85"]["discrete_loss"] == last["discrete_loss"]
    assert sweep["0.85"]["rounded_acc"] == last["rounded_acc"]
    kept = [v["kept"] for v in sweep.values()]
    assert kept == sorted(kept, reverse=True)  # a higher threshold keeps fewer ops
    # the recorded files are consistent, and an edited gap is seen
    from fairdarts_core import reproduce, runs

    run = runs.load_search_run(tmp_path / "run")
    assert [p for p in reproduce.check_search_files(run) if "command" not in p] == []  # (run by pytest, not the CLI)
    run.history[0]["gap"]["discrete_acc"] += 0.01
    run.history[1]["gap"]["distance_from_binary"] *= 0.9
    run.history[1]["gap_by_threshold"]["0.85"]["discrete_acc"] += 0.02
    problems = reproduce.check_search_files(run)
    assert any("epoch 1: acc_gap is not relaxed_acc - discrete_acc" in p for p in problems), problems
    assert any("epoch 2: distance_from_binary" in p for p in problems), problems
    assert any("epoch 2: the threshold sweep at 0.85" in p for p in problems), problems
    # the same measurement from the run's checkpoint afterwards
    gap, genotype = gap_of_run(tmp_path / "run", images=50)
    assert genotype == tracked.genotype
    assert gap.to_dict()["discrete_acc"] == last["discrete_acc"]
    assert gap.relaxed_loss == pytest.approx(last["relaxed_loss"], rel=1e-6)


def test_the_config_refuses_a_held_out_set_the_test_split_cannot_hold():
    from fairdarts_core.presets import get_search_preset

    for bad in (0, 10001, 2.5, True):
        with pytest.raises(ValueError, match=r"gap_images must be an integer in \[1, 10000\]"):
            get_search_preset("nb201-cpu", gap_images=bad, track_gap=True)
    # the test split bounds it only where the gap is measured (a small data set of one's own keeps the default)
    assert get_search_preset("nb201-cpu", gap_images=10001).gap_images == 10001
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=r"gap_images must be an integer >= 1"):
            get_search_preset("nb201-cpu", gap_images=bad)


def test_the_gap_command_needs_the_runs_checkpoint(tmp_path, capsys):
    from fairdarts_core.cli import main

    import shutil

    recorded = Path(__file__).resolve().parents[1] / "data" / "runs" / "nb201" / "darts_s0"
    run = shutil.copytree(recorded, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint.pt"))
    assert main(["gap", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fairdarts gap: error:") and "checkpoint.pt" in err and "\n" not in err
    assert main(["gap", str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["gap", str(run), "--finetune-steps", "-1"]) == 2
    assert "--finetune-steps must be 0 or more" in capsys.readouterr().err


# --- the authors' final weights and chapter 4's exercises -------------------------------------------------

def test_the_authors_final_weights_are_zero_or_one_almost_everywhere():
    from fairdarts_core import FAIR_DARTS_OPS
    from fairdarts_core.published_weights import PRIMITIVES, authors_final_weights

    runs = authors_final_weights()
    assert PRIMITIVES == tuple(FAIR_DARTS_OPS) and len(runs) == 8
    for run in runs:
        assert set(run) == {"normal_weight", "reduce_weight"}
        for W in run.values():
            assert W.shape == (14, 7) and 0 < W.min() and W.max() < 1
        # every published search derives a cell with the paper's rule (what chapter 4 draws)
        Genotype.from_weights(run["normal_weight"], run["reduce_weight"], PRIMITIVES, "threshold_sparse", 0.85)
    every = np.concatenate([W.ravel() for run in runs for W in run.values()])
    assert np.mean((every > 0.15) & (every < 0.85)) < 0.05  # the zero-one loss's mark: bimodal
    assert distance_from_binary([W for run in runs for W in run.values()]) < 0.1
    runs[0]["normal_weight"][:] = 0  # a copy: the published numbers stay
    assert authors_final_weights()[0]["normal_weight"].max() > 0.9


def _zero_one(w, kind="l2"):
    d = w - 0.5
    return -(d * d).mean() if kind == "l2" else -d.abs().mean()


@pytest.mark.parametrize("fn, words", [
    (lambda w, kind="l2": -_zero_one(w, kind), "sign is flipped"),
    (lambda w, kind="l2": _zero_one(w, kind) * w.numel(), "sums over the weights"),
    (lambda w, kind="l2": _zero_one(w, "l2"), "that is the L2 form"),
    (lambda w, kind="l2": -(w * w).mean() if kind == "l2" else -w.abs().mean(), "measured from 0, not from 0.5"),
    (lambda w, kind="l2": _zero_one(torch.sigmoid(w), kind), "applies the sigmoid again"),
    (lambda w, kind="l2": torch.tensor(_zero_one(w, kind).item()), "carries no gradient"),
    (lambda w, kind="l2": _zero_one(w, kind).item(), "return a torch tensor"),
    (lambda w, kind="l2": (w - 0.5) ** 2, "the loss is one number"),
])
def test_the_zero_one_loss_checker_accepts_eq5_and_names_each_mistake(fn, words):
    from fairdarts_core.exercises import check_zero_one_loss

    assert check_zero_one_loss(_zero_one).ok
    result = check_zero_one_loss(fn)
    assert not result.ok and words in result.message, result.message


def _gap(model, batches, train=False):
    model.train(train)
    (w,) = model.relaxed_weights()
    hot = (F.one_hot(w.argmax(1), w.shape[1]).to(w.dtype),)
    n = sum(len(y) for _, y in batches)
    with torch.no_grad():
        relaxed = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches) / n
        discrete = sum(int((model(x, hot).argmax(1) == y).sum()) for x, y in batches) / n
    return relaxed - discrete


def test_the_gap_checker_accepts_a_right_gap_and_names_each_mistake():
    from fairdarts_core.exercises import _gap_cases, check_discretization_gap

    torch.set_num_threads(1)
    gaps = [discretization_gap(m, b, m.genotype("darts")).acc_gap for m, b in _gap_cases(0)]
    assert min(gaps) > 0.05  # trained a little, every case has a real gap: a flipped sign cannot pass
    assert check_discretization_gap(_gap).ok
    for fn, words in [(lambda m, b: -_gap(m, b), "sign is flipped"),
                      (lambda m, b: _gap(m, b, train=True), "changed the model"),
                      (lambda m, b: [_gap(m, b)], "return one number"),
                      (lambda m, b: 0.0, "expected a gap of")]:
        result = check_discretization_gap(fn)
        assert not result.ok and words in result.message, result.message
