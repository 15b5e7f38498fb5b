"""A run on disk (fairdarts_core.runs): one writer, atomic writes, checkpoints that fail in one line,
divergence that stops a run and keeps its last good checkpoint, finished runs read without a checkpoint."""
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fairdarts_core import cli, runs, steps
from fairdarts_core.genotype import Genotype
from fairdarts_core.mechanism import ChainConfig, run_chain
from fairdarts_core.presets import get_search_preset, get_train_preset
from fairdarts_core.search import run_search
from fairdarts_core.steps import DivergedError
from fairdarts_core.train import run_train

DEBIAN_OK = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()
needs_data = pytest.mark.skipif(not DEBIAN_OK, reason="Fashion-MNIST (dataset-fashion-mnist) is not installed")
ROOT = Path(__file__).resolve().parent.parent

CELL = Genotype.from_pairs([("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("dil_conv_3x3", 2),
                            ("sep_conv_3x3", 1), ("skip_connect", 3), ("avg_pool_3x3", 2), ("sep_conv_5x5", 4)],
                           [("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                            ("dil_conv_5x5", 0), ("skip_connect", 2), ("skip_connect", 3), ("avg_pool_3x3", 4)])


def tiny_search(**kw):
    return get_search_preset("smoke", **{"subset": 32, **kw})


def tiny_train(**kw):
    return get_train_preset("smoke", **{"subset": 32, **kw})


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# --- one writer per run --------------------------------------------------------------------------------
def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    with runs.open_run(tmp_path / "r", "search", command=["fairdarts", "search", "--out", "r"]):
        t0 = time.time()
        with pytest.raises(runs.RunBusyError, match=f"process {os.getpid()} \\(fairdarts search --out r"):
            with runs.open_run(tmp_path / "r", "search"):
                pass
        assert time.time() - t0 < 1  # refused, not waited for
    with runs.open_run(tmp_path / "r", "search"):  # released with the first writer
        pass


def test_a_dead_holder_does_not_block(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    # a lock file left by a process that died while holding it: the kernel dropped its flock
    (run_dir / ".lock").write_text(json.dumps({"pid": 999999, "command": "fairdarts search", "since": "then"}))
    with runs.open_run(run_dir, "search") as run:
        assert run.path == run_dir


def test_a_result_file_has_its_own_lock(tmp_path):
    out = tmp_path / "m.json"
    with runs.lock_file(out):
        with pytest.raises(runs.RunBusyError, match="being written by process"):
            with runs.lock_file(out):
                pass
    with pytest.raises(ValueError, match="does not exist"):
        with runs.lock_file(tmp_path / "missing" / "m.json"):
            pass


@needs_data
def test_two_cli_searches_on_one_out_the_second_is_refused(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fairdarts_core", "search", "--preset", "smoke", "--epochs", "2000",
           "--set", "subset=32", "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not (out / "history.json").is_file():  # the first one is writing epochs
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.2)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert second.returncode == 2
        line = one_line(second.stderr)
        assert f"process {first.pid} (fairdarts search --preset smoke" in line
        assert first.poll() is None  # the first one kept running
    finally:
        first.kill()
        first.wait()
    # killed while writing epochs: its files are whole and its checkpoint resumable
    run = runs.load_search_run(out)  # the checkpoint is written last: the history may be one epoch ahead
    assert run.epochs_done - 1 <= runs.load_checkpoint_file(out / "checkpoint.pt", "search")["epoch"] <= run.epochs_done


def test_a_refused_open_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="nothing to resume"):
        with runs.open_run(tmp_path / "new", "search", resume=True):
            pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a run \\(config.json\\)"):
        with runs.open_run(tmp_path / "old", "search"):
            pass
    assert (tmp_path / "old" / "config.json").read_text() == "{}"


# --- atomic writes ---------------------------------------------------------------------------------------
def test_disk_full_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runs.atomic_save({"a": torch.ones(2)}, path)

    def full_disk(obj, f):
        Path(f).write_bytes(b"half a checkpo")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as e:
        runs.atomic_save({"a": torch.zeros(2)}, path)
    assert one_line(str(e.value)) == f"cannot write {path}: No space left on device; the previous file is kept"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))


@needs_data
def test_disk_full_during_a_search_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    run_search(tiny_search(epochs=2), out, progress=False, callback=lambda r, m: False)
    before = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    rc = cli.main(["search", "--preset", "smoke", "--set", "subset=32", "--out", str(out), "--resume"])
    assert rc == 2 and "No space left on device" in one_line(capsys.readouterr().err)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if runs.TMP_MARK in p.name]


@needs_data
def test_temp_files_of_a_killed_save_are_removed_on_resume(tmp_path):
    out = tmp_path / "run"
    run_search(tiny_search(epochs=2), out, progress=False, callback=lambda r, m: False)
    (out / ".checkpoint.pt.tmp4242").write_bytes(b"half")
    run_search(tiny_search(epochs=2), out, resume=True, progress=False)
    assert not (out / ".checkpoint.pt.tmp4242").exists()


# --- checkpoints -------------------------------------------------------------------------------------------
@needs_data
def test_damaged_checkpoints_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "run"
    run_search(tiny_search(epochs=2), out, progress=False, callback=lambda r, m: False)
    good = torch.load(out / "checkpoint.pt", weights_only=True)
    resume = ["search", "--preset", "smoke", "--set", "subset=32", "--out", str(out), "--resume"]

    torch.save({k: v for k, v in good.items() if k != "rng"}, out / "checkpoint.pt")
    assert cli.main(resume) == 2
    assert "lacks rng" in one_line(capsys.readouterr().err)

    torch.save({**good, "rng": {"torch": torch.zeros(3)}}, out / "checkpoint.pt")
    assert cli.main(resume) == 2
    assert "random state is damaged" in one_line(capsys.readouterr().err)

    other = get_search_preset("smoke", subset=32, channels=6)  # a hand-edited checkpoint of another model
    from fairdarts_core.search import build_supernet
    torch.save({**good, "model": build_supernet(other, 1, 10).state_dict()}, out / "checkpoint.pt")
    assert cli.main(resume) == 2
    assert "does not fit the supernet" in one_line(capsys.readouterr().err)

    torch.save({**good, "w_optimizer": {"state": {}, "param_groups": []}}, out / "checkpoint.pt")
    assert cli.main(resume) == 2
    assert "weights optimizer does not fit" in one_line(capsys.readouterr().err)


# --- a diverging run stops ------------------------------------------------------------------------------------
@needs_data
def test_a_diverging_search_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = tiny_search(epochs=3, subset=64)  # 2 steps per epoch
    run_search(config, out, progress=False, callback=lambda r, m: False)
    real_step = steps.search_step
    calls = []

    def poisoned(mode, model, *args):
        calls.append(1)
        stats = real_step(mode, model, *args)
        if len(calls) == 1:  # the first step of epoch 2 blows a weight up
            with torch.no_grad():
                model.network_parameters()[0].fill_(float("inf"))
        return stats

    monkeypatch.setattr(steps, "search_step", poisoned)
    with pytest.raises(DivergedError) as e:
        run_search(config, out, resume=True, progress=False)
    message = one_line(str(e.value))
    assert "diverged in epoch 2 at step 2: the loss became non-finite" in message
    assert "keeps epoch 1" in message
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert len(json.loads((out / "history.json").read_text())) == 1


@needs_data
def test_a_huge_learning_rate_is_refused_in_one_line_not_saved(tmp_path, capsys):
    rc = cli.main(["search", "--preset", "smoke", "--set", "lr=1e6", "--out", str(tmp_path / "s")])
    assert rc == 2 and "the search diverged in epoch" in one_line(capsys.readouterr().err)
    if (tmp_path / "s" / "checkpoint.pt").exists():  # the last good epoch
        ckpt = torch.load(tmp_path / "s" / "checkpoint.pt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    CELL.save(tmp_path / "g.json")
    rc = cli.main(["train", "--genotype", str(tmp_path / "g.json"), "--preset", "smoke",
                   "--set", "lr=1e6", "--out", str(tmp_path / "t")])
    assert rc == 2 and "the training diverged in epoch 1" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "t" / "checkpoint.pt").exists()


def test_check_finite_names_the_step_or_the_tensor():
    net = torch.nn.Linear(2, 2)
    ok, bad = torch.tensor(True), torch.tensor(False)
    steps.check_finite([ok, ok], net, "search", 0)
    with pytest.raises(DivergedError, match="in epoch 4 at step 12: the loss"):
        steps.check_finite([ok, bad, bad], net, "search", 3, first_step=11)
    with torch.no_grad():
        net.bias[1] = float("nan")
    with pytest.raises(DivergedError, match="the chain experiment diverged: bias became non-finite"):
        steps.check_finite([ok], net, "chain experiment")


# --- train resume ---------------------------------------------------------------------------------------------
@needs_data
def test_train_resume_refuses_a_changed_config(tmp_path, capsys):
    out = tmp_path / "t"
    run_train(tiny_train(epochs=2), CELL, out, progress=False, callback=lambda r, m: False)
    with pytest.raises(ValueError, match="differs in lr"):
        run_train(tiny_train(epochs=2, lr=0.5), CELL, out, resume=True, progress=False)
    CELL.save(tmp_path / "g.json")
    rc = cli.main(["train", "--genotype", str(tmp_path / "g.json"), "--preset", "smoke", "--set", "subset=32",
                   "--epochs", "3", "--out", str(out), "--resume"])
    assert rc == 2 and "differs in epochs" in one_line(capsys.readouterr().err)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1


# --- finished runs without their checkpoints ---------------------------------------------------------------------
@needs_data
def test_a_finished_search_loads_without_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_search(tiny_search(), out, progress=False, command=["fairdarts", "search", "--preset", "smoke"])
    (out / "checkpoint.pt").unlink()
    run = runs.load_search_run(out)
    assert run.finished and run.config == result.config and run.history == json.loads((out / "history.json").read_text())
    assert run.genotype == result.genotype
    np.testing.assert_allclose(run.normal_weight, result.history[-1]["normal_weight"], atol=1e-6)
    assert run.provenance["sessions"][0]["command"] == "fairdarts search --preset smoke"
    assert run.provenance["sessions"][0]["numerics"] == runs.numerics_signature()
    assert runs.finished_runs(tmp_path) == [out]
    with pytest.raises(ValueError, match="no checkpoint"):
        run.supernet()


@needs_data
def test_a_finished_retraining_loads_without_its_checkpoint(tmp_path):
    out = tmp_path / "t"
    result = run_train(tiny_train(), CELL, out, progress=False)
    (out / "checkpoint.pt").unlink()
    run = runs.load_train_run(out)
    assert run.finished and run.genotype == CELL and run.test_acc == result.test_acc
    assert isinstance(runs.load_run(out), runs.TrainRun)


@needs_data
def test_a_chain_experiment_is_locked_recorded_and_loaded(tmp_path):
    cfg = ChainConfig(depth=2, channels=4, steps=4, record_every=2, subset=200, batch_size=16)
    out = tmp_path / "m.json"
    result = run_chain(cfg, out=out, command=["fairdarts", "mechanism", "--depth", "2"])
    loaded = runs.load_mechanism_run(out)
    assert loaded["records"] == result["records"] and loaded["summary"] == result["summary"]
    assert loaded["provenance"]["command"] == "fairdarts mechanism --depth 2"
    with pytest.raises(ValueError, match="already exists"):
        run_chain(cfg, out=out)
    assert runs.load_mechanism_run(out) == loaded


def test_loading_a_broken_run_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="run directory not found"):
        runs.load_search_run(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{not json")
    assert "not valid JSON" in one_line(str(pytest.raises(ValueError, runs.load_search_run, tmp_path / "r").value))


@pytest.mark.parametrize("kw, message", [(dict(depth=0), "depth must be at least 1"),
                                         (dict(steps=0), "steps must be at least 1"),
                                         (dict(subset=5), "subset must hold at least 20")])
def test_chain_config_refuses_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        ChainConfig(**kw)


def _train_run(path: Path, command) -> runs.TrainRun:
    provenance = None if command is None else {"sessions": [{"command": command}]}
    return runs.TrainRun(path, tiny_train(), [], CELL, provenance)


def test_a_retraining_is_matched_to_the_search_whose_genotype_file_it_read(tmp_path):
    search = runs.SearchRun(tmp_path / "data/runs/ablation/w100_s0", tiny_search(), [], CELL, None, {})
    mine = _train_run(tmp_path / "a", "fairdarts train --genotype data/runs/ablation/w100_s0/genotype.json "
                                      "--preset cpu --out data/runs/ablation_retrain/w100_s0_t0")
    other_seed = _train_run(tmp_path / "b", "fairdarts train --genotype data/runs/ablation/w100_s1/genotype.json --preset cpu")
    other_folder = _train_run(tmp_path / "c", "fairdarts train --genotype data/runs/nb201_ablation/w100_s0/genotype.json")
    published = _train_run(tmp_path / "d", "fairdarts train --arch 'FairDARTS_a' --preset cpu")
    unquoted = _train_run(tmp_path / "e", "fairdarts train --arch '|skip_connect~0|+ --preset cpu")
    assert runs.genotype_source(mine) == Path("data/runs/ablation/w100_s0/genotype.json")
    assert runs.genotype_source(published) is None and runs.genotype_source(unquoted) is None
    assert runs.genotype_source(_train_run(tmp_path / "f", None)) is None
    assert runs.genotype_source(_train_run(tmp_path / "g", "fairdarts train --genotype")) is None
    assert runs.retrained_from(search, [other_seed, mine, other_folder, published, unquoted]) == [mine]
