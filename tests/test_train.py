"""Retraining and evaluation on Fashion-MNIST (tiny), resume, the CLI, and 2-process DDP under torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairdarts_core import cli
from fairdarts_core.genotype import Genotype
from fairdarts_core.presets import get_train_preset
from fairdarts_core.train import evaluate_checkpoint, run_train
from fairdarts_core.zoo import resolve_arch

DEBIAN_OK = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()
pytestmark = pytest.mark.skipif(not DEBIAN_OK, reason="Fashion-MNIST (dataset-fashion-mnist) is not installed")

CELL = Genotype.from_pairs([("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("dil_conv_3x3", 2),
                            ("sep_conv_3x3", 1), ("skip_connect", 3), ("avg_pool_3x3", 2), ("sep_conv_5x5", 4)],
                           [("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                            ("dil_conv_5x5", 0), ("skip_connect", 2), ("skip_connect", 3), ("avg_pool_3x3", 4)])


def tiny(**kw):
    return get_train_preset("smoke", **{"subset": 32, **kw})


def test_short_retraining_and_evaluation(tmp_path):
    out = tmp_path / "t"
    seen = []
    result = run_train(tiny(epochs=2), CELL, out, progress=False, callback=lambda r, m: seen.append(r["drop_path_prob"]))
    assert seen == [0.0, 0.05]  # drop-path grows linearly from 0 (DARTS)
    r = result.history[-1]
    assert 0 <= r["test_acc"] <= 1 and r["train_loss"] > 0 and r["lr"] == pytest.approx(0.0125)
    for name in ("config.json", "genotype.json", "history.json", "checkpoint.pt"):
        assert (out / name).is_file()
    ev = evaluate_checkpoint(out / "checkpoint.pt", test_subset=32, device="cpu")
    assert ev["n"] == 32 and ev["acc"] == pytest.approx(r["test_acc"])  # same 32 images, same model
    assert ev["dataset"] == "fashion-mnist"


def test_retraining_resumes_exactly(tmp_path):
    full = run_train(tiny(epochs=2), CELL, tmp_path / "a", progress=False)
    run_train(tiny(epochs=2), CELL, tmp_path / "b", progress=False, callback=lambda r, m: False)
    resumed = run_train(tiny(epochs=2), CELL, tmp_path / "b", resume=True, progress=False)
    assert len(resumed.history) == 2
    for p, q in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="another genotype"):
        run_train(tiny(epochs=2), "FairDARTS_a", tmp_path / "b", resume=True, progress=False)


def test_arch_can_be_a_zoo_name_a_file_or_a_run_dir(tmp_path):
    CELL.save(tmp_path / "genotype.json")
    assert resolve_arch(tmp_path) == CELL and resolve_arch(tmp_path / "genotype.json") == CELL
    assert resolve_arch("FairDARTS_a").normal


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.tar")
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "other.tar")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--arch" in err
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "other.tar"), "--arch", "FairDARTS_a"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "bad.pt"), "--arch", "FairDARTS_a"]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_cli_train_and_evaluate(tmp_path, capsys):
    CELL.save(tmp_path / "g.json")
    rc = cli.main(["train", "--genotype", str(tmp_path / "g.json"), "--preset", "smoke", "--set", "subset=32",
                   "--out", str(tmp_path / "t"), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert rc == 0 and payload["epochs"] == 1 and payload["world_size"] == 1
    rc = cli.main(["evaluate", "--checkpoint", str(tmp_path / "t" / "checkpoint.pt"), "--subset", "20", "--json"])
    ev = json.loads(capsys.readouterr().out)
    assert rc == 0 and ev["n"] == 20 and 0 <= ev["acc"] <= 1


def test_a_retraining_exported_in_the_authors_layout_evaluates_as_the_authors_files_do(tmp_path, capsys):
    """The offline stand-in for the released checkpoints: our network written as the authors wrote theirs
    ({"state_dict": ...}, their keys) goes through the same reading path as FairDARTS-a.tar and scores what
    the training checkpoint scores on the same images."""
    run_train(tiny(epochs=1), "FairDARTS_a", tmp_path / "t", progress=False)
    ckpt, tar = tmp_path / "t" / "checkpoint.pt", tmp_path / "FairDARTS-a-cpu.tar"
    assert cli.main(["export", "--checkpoint", str(ckpt), "--out", str(tar), "--json"]) == 0
    shape = json.loads(capsys.readouterr().out)
    assert (shape["C"], shape["layers"], shape["in_channels"], shape["auxiliary"]) == (4, 3, 1, True)
    saved = torch.load(tar, weights_only=True)
    assert list(saved) == ["state_dict"] and "stem.0.weight" in saved["state_dict"]
    ours = evaluate_checkpoint(ckpt, test_subset=40, device="cpu")
    theirs = evaluate_checkpoint(tar, "FairDARTS_a", "fashion-mnist", test_subset=40, device="cpu",
                                 image_size=shape["image_size"])
    assert theirs["n"] == ours["n"] == 40 and theirs["acc"] == ours["acc"]
    assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-6)
    with pytest.raises(ValueError, match="network for 1-channel images; cifar10 has 3"):
        evaluate_checkpoint(tar, "FairDARTS_a")  # the authors' default data set does not fit this file
    with pytest.raises(ValueError, match="does not fit NetworkCIFAR\\(4, 10, 3, auxiliary=True, in_channels=1\\) of FairDARTS_b"):
        evaluate_checkpoint(tar, "FairDARTS_b", "fashion-mnist")
    assert cli.main(["export", "--checkpoint", str(tar), "--out", str(tmp_path / "x.tar")]) == 2
    assert "not a fairdarts training checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.slow
def test_two_process_data_parallel_under_torchrun(tmp_path):
    CELL.save(tmp_path / "g.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fairdarts_core", "train", "--genotype", str(tmp_path / "g.json"), "--preset", "smoke",
           "--set", "subset=32", "--set", "test_subset=20", "--epochs", "2", "--out", str(tmp_path / "ddp"), "--json"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, p.stdout  # only rank 0 reports
    payload = json.loads(lines[0])
    assert payload["world_size"] == 2 and payload["epochs"] == 2
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(history) == 2
    # the test accuracy is over the whole test subset, gathered from both processes
    ev = evaluate_checkpoint(tmp_path / "ddp" / "checkpoint.pt", test_subset=20, device="cpu")
    assert ev["acc"] == pytest.approx(history[-1]["test_acc"])
