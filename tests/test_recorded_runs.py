"""The recorded runs in data/runs/ are what their commands produce: nobody has to trust a figure blindly.

Chapter 2 plots recorded runs (the mechanism grid in data/runs/mechanism/ and its longer and deeper
chains in data/runs/mechanism_long/, the DARTS and Fair DARTS searches in data/runs/collapse/, and the
levers tried in the DARTS space in data/runs/levers/). Each carries its provenance. These tests load them
through :mod:`fairdarts_core.runs` and re-check them with :mod:`fairdarts_core.reproduce`:

- every recorded run is complete and its files agree with each other (genotypes are the parse of the
  recorded weights, the ``.npy`` files are the last epoch's weights, summaries are recomputed, the
  recorded command has the config's seed);
- a search is re-run from its config for its first 2 epochs, a chain experiment for its first 50 steps
  (schedules unchanged), and compared with its record: **bit for bit** where this machine's numerics
  signature (torch version, CPU kernels, CPU, threads) is the one the run recorded, and elsewhere by the
  statistics its conclusions rest on, within ``reproduce.K`` times their seed-to-seed spread measured
  from the recorded runs (README, "Reproducible"). Simulate another CPU with
  ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``;
- a recorded run with one number edited fails the re-check, bit for bit and statistically.

To keep this file to minutes, one run per setting is re-run, the one with the lowest seed. Set
FAIRDARTS_RERUN_ALL=1 to re-run every recorded run (and the first epoch of every recorded retraining,
minutes each). Runs still in progress (no provenance yet) are not checked.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fairdarts_core import reproduce, runs

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "data" / "runs"
ALL = os.environ.get("FAIRDARTS_RERUN_ALL") == "1"


def _sample(paths, setting, seed):
    """All runs, or the lowest-seed one of every setting."""
    if ALL:
        return sorted(paths)
    best = {}
    for p in paths:
        key = setting(p)
        if key not in best or seed(p) < seed(best[key]):
            best[key] = p
    return sorted(best.values())


SEARCHES = reproduce.recorded_searches(RUNS)
CHAINS = reproduce.recorded_chains(RUNS)
SEARCH_SAMPLE = _sample(SEARCHES, lambda p: reproduce.search_setting(runs.load_search_run(p).config),
                        lambda p: runs.load_search_run(p).config.seed)
CHAIN_SAMPLE = _sample(CHAINS, lambda p: reproduce.chain_setting(runs.load_mechanism_run(p)["config"]),
                       lambda p: runs.load_mechanism_run(p)["config"]["seed"])


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _record(record_property, details) -> None:
    """Keep how far a re-run landed from its record, in seed standard deviations per statistic (pytest
    ``--junitxml`` writes them out: that is how ``reproduce.K`` was chosen)."""
    record_property("mode", details.mode)
    for name, distance in sorted(details.distances.items()):
        record_property(name, round(distance, 3))


def test_the_recorded_runs_are_found():
    assert len(SEARCHES) >= 6 and len(CHAINS) >= 24
    assert len(SEARCH_SAMPLE) < len(SEARCHES) or ALL


# --- numerics signatures ----------------------------------------------------------------------------------
def test_same_numerics_compares_every_rounding_field():
    here = reproduce.current_numerics()
    assert reproduce.same_numerics(here, dict(here))
    assert reproduce.same_numerics({**here, "established": "a note"}, here)  # notes are not numerics
    for field in reproduce.NUMERICS_FIELDS:
        other = {**here, field: "something else"}
        assert not reproduce.same_numerics(other, here), field
        missing = {k: v for k, v in here.items() if k != field}
        assert not reproduce.same_numerics(missing, here), field
    assert not reproduce.same_numerics(None, here)
    assert reproduce.current_numerics(threads=7)["torch_threads"] == 7


def test_recorded_numerics_needs_every_session_to_agree():
    sig = reproduce.current_numerics()
    assert reproduce.recorded_numerics({"command": "x", "numerics": sig}) == sig  # a chain experiment
    assert reproduce.recorded_numerics({"sessions": [{"numerics": sig}, {"numerics": dict(sig)}]}) == sig
    assert reproduce.recorded_numerics({"sessions": [{"numerics": sig}, {}]}) is None
    assert reproduce.recorded_numerics({"sessions": [{"numerics": sig}, {"numerics": {**sig, "torch_threads": 99}}]}) is None
    assert reproduce.recorded_numerics(None) is None


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="choose one of auto, exact, statistical"):
        reproduce.recheck_chain(CHAINS[0], mode="bitwise")


# --- the seed spread --------------------------------------------------------------------------------------
def test_the_spread_is_pooled_per_relaxation_and_leaves_the_checked_run_out():
    spread = reproduce.search_spread(RUNS)
    for relaxation in ("softmax", "sigmoid"):
        for epoch in (1, 2):
            sd, dof = spread.sd[(relaxation, epoch, "mean weight")]
            assert 0 < sd < 0.1 and dof >= 20  # 7 ops x 2 cells x (3 seeds - 1)
    darts_s0 = RUNS / "collapse" / "darts_s0"
    fewer = reproduce.search_spread(RUNS, exclude=darts_s0)
    assert fewer.sd[("softmax", 2, "mean weight")][1] == spread.sd[("softmax", 2, "mean weight")][1] - 14
    assert fewer.sd[("sigmoid", 2, "mean weight")] == spread.sd[("sigmoid", 2, "mean weight")]

    seeded = reproduce.search_setting(runs.load_search_run(darts_s0).config)
    assert seeded in spread.seeded
    assert spread.of(seeded, "softmax", 2, "mean weight[normal, skip_connect]") == \
        (spread.sd[("softmax", 2, "mean weight")][0], "the seed spread")
    with pytest.raises(ValueError, match="do not measure the spread of loss at epoch 99"):
        spread.of(seeded, "softmax", 99, "loss[train]")


def test_a_setting_with_one_seed_borrows_the_widest_spread_of_its_relaxation():
    spread = reproduce.search_spread(RUNS)
    lever = reproduce.search_setting(runs.load_search_run(RUNS / "levers" / "archlr_darts_s0").config)
    assert lever not in spread.seeded
    widest = max(sd for (r, _, f), (sd, _) in spread.sd.items() if r == "softmax" and f == "mean weight")
    sd, what = spread.of(lever, "softmax", 2, "mean weight[normal, skip_connect]")
    assert sd == widest > spread.sd[("softmax", 2, "mean weight")][0] and "widest" in what


def test_a_discrete_statistic_is_never_given_a_spread_below_half_a_step():
    spread = reproduce.Spread("search", {("sigmoid", 2, "above threshold"): (0.0, 4), ("sigmoid", 2, "loss"): (0.0, 4)},
                              frozenset({("s",)}))
    assert spread.of(("s",), "sigmoid", 2, "above threshold[normal]", unit=1.0) == (0.5, "the seed spread")
    assert spread.of(("s",), "sigmoid", 2, "loss[train]") == (0.0, "the seed spread")


# --- searches -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("run_dir", SEARCHES, ids=_id)
def test_recorded_search_is_complete_and_consistent(run_dir):
    run = runs.load_search_run(run_dir)
    assert run.finished
    assert reproduce.check_search_files(run) == []


def test_the_long_levers_are_the_long_presets():
    """``cpu-long`` / ``darts-cpu-long`` were tuned from the long lever runs: those runs are their recordings."""
    from fairdarts_core.presets import get_search_preset

    for name, preset in (("long_fairdarts_s0", "cpu-long"), ("long_darts_s0", "darts-cpu-long")):
        run_dir = RUNS / "levers" / name
        if run_dir not in SEARCHES:
            continue
        cfg = runs.load_search_run(run_dir).config
        want = get_search_preset(preset, seed=cfg.seed, formulation=cfg.formulation).to_dict()
        got = cfg.to_dict()
        assert {k for k in want if want[k] != got[k]} == set(), name


@pytest.mark.slow
@pytest.mark.parametrize("run_dir", SEARCH_SAMPLE, ids=_id)
def test_recorded_search_reruns_its_first_two_epochs(run_dir, record_property):
    details = reproduce.recheck_search_details(run_dir, epochs=2, mode="auto")
    _record(record_property, details)
    assert details.problems == [], "\n".join(details.problems)


# --- chain experiments -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CHAINS, ids=_id)
def test_recorded_chain_is_complete_and_consistent(path):
    assert reproduce.check_chain_file(runs.load_mechanism_run(path)) == []


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAIN_SAMPLE, ids=_id)
def test_recorded_chain_reruns_its_first_50_steps(path, record_property):
    details = reproduce.recheck_chain_details(path, steps=50, mode="auto")
    _record(record_property, details)
    assert details.problems == [], "\n".join(details.problems)


def test_max_steps_keeps_the_schedule():
    """``run_chain(max_steps=k)`` is the beginning of the full run, not a shorter run."""
    from fairdarts_core.mechanism import ChainConfig, run_chain

    cfg = ChainConfig(depth=2, channels=4, steps=6, record_every=2, subset=200, batch_size=16)
    full = run_chain(cfg)["records"]
    part = run_chain(cfg, max_steps=4)["records"]
    assert [r["step"] for r in part] == [2, 4]
    for a, b in zip(part, full):
        np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-6)
    short = run_chain(ChainConfig(**{**cfg.__dict__, "steps": 4}))["records"]
    assert not np.allclose(short[-1]["weights"], part[-1]["weights"], atol=1e-7)  # another schedule


# --- a broken record fails ---------------------------------------------------------------------------------------
def _edit_history(run_dir: Path, epoch: int, edit) -> None:
    run = runs.load_search_run(run_dir)
    history = [dict(r) for r in run.history]
    edit(history[epoch - 1])
    runs.atomic_write_json(run_dir / "history.json", history)


def _edit_chain(path: Path, step: int, edit) -> None:
    run = runs.load_mechanism_run(path)
    edit(next(r for r in run["records"] if r["step"] == step))
    runs.atomic_write_json(path, run)


def _raise_weight(key, row=0, col=0, by=0.3):
    def edit(record):
        W = [list(r) for r in record[key]]
        W[row][col] += by
        record[key] = W
    return edit


def _mentions(problems, *words):
    return [p for p in problems if all(w in p for w in words)]


@pytest.fixture(scope="module")
def fresh_search(tmp_path_factory):
    """A small search recorded by this process: its numerics signature is this machine's, so ``auto``
    re-checks it bit for bit (the recorded runs in data/runs may come from another CPU)."""
    from fairdarts_core.presets import get_search_preset
    from fairdarts_core.search import run_search

    out = tmp_path_factory.mktemp("fresh") / "search"
    cfg = get_search_preset("smoke", subset=64, relaxation="softmax", parse_method="darts", zero_one_weight=0.0,
                            arch_lr=0.03, seed=3)
    run_search(cfg, out, progress=False, command=["fairdarts", "search", "--preset", "smoke", "--set", "seed=3"])
    return out


@pytest.fixture(scope="module")
def fresh_chain(tmp_path_factory):
    from fairdarts_core.mechanism import ChainConfig, run_chain

    out = tmp_path_factory.mktemp("fresh") / "chain.json"
    cfg = ChainConfig(depth=3, channels=4, steps=50, record_every=25, subset=256, batch_size=16, seed=2)
    run_chain(cfg, out=out, command=["fairdarts", "mechanism", "--depth", "3", "--relaxation", "softmax",
                                     "--steps", "50", "--seed", "2"])
    return out


def test_a_run_recorded_here_reruns_bit_for_bit(fresh_search, fresh_chain):
    assert reproduce.recheck_search_details(fresh_search).mode == "exact"
    assert reproduce.recheck_search(fresh_search) == []
    assert reproduce.recheck_chain_details(fresh_chain).mode == "exact"
    assert reproduce.recheck_chain(fresh_chain) == []


@pytest.mark.parametrize("edit, field, statistic", [
    (_raise_weight("normal_weight", row=3, col=2), "normal_weight", "largest weight[normal]"),
    (lambda r: r.update(val_loss=r["val_loss"] + 1.0), "val_loss", "loss[val]"),
], ids=["a relaxed weight +0.3", "a loss +1"])
@pytest.mark.parametrize("mode", ["exact", "statistical"])
def test_a_broken_search_fails_its_recheck(fresh_search, tmp_path, edit, field, statistic, mode):
    broken = tmp_path / "search"
    shutil.copytree(fresh_search, broken)
    _edit_history(broken, 2, edit)
    problems = reproduce.recheck_search(broken, mode=mode)
    assert _mentions(problems, "epoch 2", field if mode == "exact" else statistic), problems


@pytest.mark.parametrize("edit, what", [
    (_raise_weight("weights", row=1, col=0), "mean weight[skip_connect]"),
    (lambda r: r.update(train_acc=r["train_acc"] + 0.4), "accuracy[train]"),
], ids=["a skip weight +0.3", "the accuracy +0.4"])
@pytest.mark.parametrize("mode", ["exact", "statistical"])
def test_a_broken_chain_fails_its_recheck(fresh_chain, tmp_path, edit, what, mode):
    broken = tmp_path / "chain.json"
    shutil.copy(fresh_chain, broken)
    _edit_chain(broken, 50, edit)
    problems = reproduce.recheck_chain(broken, mode=mode)
    assert _mentions(problems, "step 50", what if mode == "statistical" else ""), problems


@pytest.mark.slow
def test_a_broken_recorded_search_fails_the_statistical_recheck(tmp_path):
    """What another CPU runs: the first recorded DARTS search, one relaxed weight of epoch 2 raised by 0.3."""
    broken = tmp_path / "darts_s0"
    shutil.copytree(RUNS / "collapse" / "darts_s0", broken)
    _edit_history(broken, 2, _raise_weight("normal_weight", row=5, col=2))
    problems = reproduce.recheck_search(broken, mode="statistical")
    assert _mentions(problems, "epoch 2", "largest weight[normal]"), problems


@pytest.mark.slow
@pytest.mark.parametrize("edit, what", [
    (_raise_weight("weights", row=0, col=0), "mean weight[skip_connect]"),
    (lambda r: r.update(train_acc=r["train_acc"] + 0.4), "accuracy[train]"),
], ids=["a skip weight +0.3", "the accuracy +0.4"])
def test_a_broken_recorded_chain_fails_the_statistical_recheck(tmp_path, edit, what):
    broken = tmp_path / "d4_softmax_s0.json"
    shutil.copy(RUNS / "mechanism" / "d4_softmax_s0.json", broken)
    _edit_chain(broken, 50, edit)
    problems = reproduce.recheck_chain(broken, mode="statistical")
    assert _mentions(problems, "step 50", what), problems


# --- retraining of the searched cells -------------------------------------------------------------------------
RETRAINS = [p for p in runs.finished_runs(RUNS / "retrain") if p.is_dir()]


@pytest.mark.parametrize("run_dir", RETRAINS, ids=_id)
def test_recorded_retrain_is_complete_and_trains_the_searched_cell(run_dir):
    run = runs.load_train_run(run_dir)
    assert run.finished, "the run did not finish"
    cmd = run.provenance["sessions"][0]["command"]
    assert cmd.startswith(("fairdarts train --genotype data/runs/collapse/", "fairdarts train --genotype data/runs/levers/"))
    searched = ROOT / cmd.split("--genotype ", 1)[1].split()[0]
    assert run.genotype.normal == runs.load_search_run(searched.parent).genotype.normal


@pytest.mark.slow
@pytest.mark.skipif(not ALL, reason="one retraining epoch takes minutes here: set FAIRDARTS_RERUN_ALL=1")
@pytest.mark.parametrize("run_dir", RETRAINS, ids=_id)
def test_recorded_retrain_reruns_its_first_epoch(run_dir):
    import torch

    from fairdarts_core.train import run_train

    run = runs.load_train_run(run_dir)
    threads = torch.get_num_threads()
    try:
        got = run_train(run.config, run.genotype, None, progress=False, callback=lambda record, model: False).history[0]
    finally:
        torch.set_num_threads(threads)
    recorded = run.history[0]
    for key in ("train_loss", "test_loss"):
        assert got[key] == pytest.approx(recorded[key], abs=1e-3), key
    for key in ("train_acc", "test_acc"):
        assert got[key] == pytest.approx(recorded[key], abs=2e-3), key
