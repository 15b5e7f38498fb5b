"""`bash .ci/gpu`, the one prepared GPU check: its dry mode runs on a CPU (every fairdarts command of the plan
parses, the one-process DDP retraining runs under torchrun with gloo, the CUDA parts are skipped), and its
retraining worker runs on a CPU at a tiny size."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_the_dry_run_checks_the_plan_and_runs_the_ddp_part_on_the_cpu():
    p = subprocess.run(["bash", ".ci/gpu", "--dry"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**ENV, "FAIRDARTS_VENV": str(Path(sys.executable).parent.parent)})
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout)
    assert summary["dry"] is True and summary["device"] == "cpu"
    parts = summary["parts"]
    assert set(parts) == {"cuda_tests", "ddp_one_process", "search_step_fp32", "search_step_bf16",
                          "search_step_compiled", "search_epoch", "retrain_epoch"}
    ddp = parts["ddp_one_process"]
    assert ddp["status"] == "ok" and ddp["result"]["backend"] == "gloo" and ddp["result"]["world_size"] == 1
    assert all(e["status"] == "skipped (dry run: needs CUDA)" for name, e in parts.items() if name != "ddp_one_process")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_and_without_dry_it_says_so_and_fails():
    p = subprocess.run([sys.executable, ".ci/gpu_check.py"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=ENV)
    assert p.returncode == 1 and "no CUDA device" in json.loads(p.stdout)["error"]


@pytest.mark.slow
def test_the_retraining_worker_runs_float32_and_bf16():
    p = subprocess.run([sys.executable, ".ci/gpu_check.py", "--worker", "retrain", "--device", "cpu", "--small"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(result) == {"off", "bf16"} and all(r["images"] == 64 and r["train_loss"] > 0 for r in result.values())
