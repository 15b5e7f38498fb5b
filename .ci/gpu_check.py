"""The parts of `bash .ci/gpu`, each in its own process with a time limit; prints one JSON summary.

Parts: the CUDA tests (tests/test_fast_cuda.py: fast == reference on CUDA, a bf16 weight step); one
training step of the paper's evaluation network data-parallel under torchrun (one process, nccl); the
search step at the paper shape, reference against fast, float32 and bf16 (and compiled); one search epoch
timed over some steps and extrapolated to the paper's 50 epochs; one retraining epoch of the paper network
(bf16 and float32), extrapolated to 600 epochs. Synthetic images throughout (no downloads).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 8 * 60
SYNTHETIC = "synthetic-cifar"


def _fairdarts(*args: str) -> list:
    return [sys.executable, "-m", "fairdarts_core", *args]


def plan(dry: bool) -> list:
    """``(name, command, timeout_s, needs_cuda)`` of every part, in order."""
    device = "cpu" if dry else "cuda"
    worker = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
              str(Path(__file__).resolve()), "--worker", "ddp", "--device", device]
    return [
        ("cuda_tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fast_cuda.py"], 120, True),
        ("ddp_one_process", worker, 120 if not dry else 180, False),
        ("search_step_fp32", _fairdarts("bench", "search-step", "--device", "cuda", "--repeat", "5", "--json"), 90, True),
        ("search_step_bf16", _fairdarts("bench", "search-step", "--device", "cuda", "--repeat", "5", "--bf16", "--json"), 90, True),
        ("search_step_compiled", _fairdarts("bench", "search-step", "--device", "cuda", "--repeat", "5", "--compile",
                                            "--no-memory", "--json"), 150, True),
        ("search_epoch", _fairdarts("bench", "search-epoch", "--device", "cuda", "--steps", "40", "--json"), 90, True),
        ("retrain_epoch", [sys.executable, str(Path(__file__).resolve()), "--worker", "retrain", "--device", device],
         120, True),
    ]


def _register_synthetic(n_train: int, n_test: int) -> None:
    import torch

    from fairdarts_core.data import register_dataset

    g = torch.Generator().manual_seed(0)
    train = [(torch.rand(3, 32, 32, generator=g), i % 10) for i in range(n_train)]
    test = [(torch.rand(3, 32, 32, generator=g), i % 10) for i in range(n_test)]
    register_dataset(SYNTHETIC, train, test)


def worker_ddp(device: str) -> dict:
    """One epoch of a few steps of the paper's evaluation network under torchrun (nccl on CUDA, gloo on a CPU)."""
    import tempfile

    from fairdarts_core.presets import get_train_preset
    from fairdarts_core.train import run_train

    _register_synthetic(192 if device == "cuda" else 32, 96 if device == "cuda" else 16)
    shape = {} if device == "cuda" else dict(channels=4, layers=3, batch_size=16)
    config = get_train_preset("paper", dataset=SYNTHETIC, epochs=1, device=device, **shape)
    t0 = time.time()
    result = run_train(config, "FairDARTS_a", Path(tempfile.mkdtemp()) / "ddp", progress=False)
    import torch.distributed as dist

    backend = dist.get_backend() if dist.is_initialized() else None
    return {"backend": backend, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "train_loss": result.history[-1]["train_loss"], "seconds": round(time.time() - t0, 2)}


def worker_retrain(device: str, small: bool = False) -> dict:
    """One epoch of the paper's retraining on 9600 synthetic images (a fifth of CIFAR-10's 50000), float32 and
    bf16, extrapolated to 600 epochs of 50000. ``small``: a tiny network on 64 images (the CPU test)."""
    from fairdarts_core.presets import get_train_preset
    from fairdarts_core.train import run_train

    n = 64 if small else 9600
    _register_synthetic(n, n // 10)
    shape = dict(channels=4, layers=3, batch_size=16) if small else {}
    out = {}
    for amp in ("off", "bf16"):
        config = get_train_preset("paper", dataset=SYNTHETIC, epochs=1, device=device, amp=amp, channels_last=True,
                                  **shape)
        t0 = time.time()
        result = run_train(config, "FairDARTS_a", None, progress=False)
        seconds = time.time() - t0
        out[amp] = {"images": n, "seconds": round(seconds, 2), "train_loss": result.history[-1]["train_loss"],
                    "hours_600_epochs_of_50000": round(seconds * 50000 / n * 600 / 3600, 2)}
    return out


def _last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_part(name: str, command: list, timeout: float) -> dict:
    t0 = time.time()
    try:
        p = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": round(time.time() - t0, 1)}
    out = {"status": "ok" if p.returncode == 0 else "failed", "seconds": round(time.time() - t0, 1)}
    if name == "cuda_tests":
        out["summary"] = (p.stdout.strip().splitlines() or [""])[-1]
    else:
        out["result"] = _last_json(p.stdout)
    if p.returncode != 0:
        out["error"] = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or [""])[-1][:500]
    return out


def check_parses(command: list) -> None:
    """A fairdarts command of the plan must parse (dry mode)."""
    if command[1:3] == ["-m", "fairdarts_core"]:
        from fairdarts_core.cli import build_parser

        build_parser().parse_args(command[3:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="check the plan, run the DDP part on the CPU, skip CUDA")
    p.add_argument("--worker", choices=("ddp", "retrain"), help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--small", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = worker_ddp(args.device) if args.worker == "ddp" else worker_retrain(args.device, args.small)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result))
        return 0

    import torch

    cuda = torch.cuda.is_available()
    summary = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "dry": args.dry, "parts": {}}
    if not args.dry and not cuda:
        summary["error"] = "no CUDA device: run `bash .ci/gpu --dry` to check the script on a CPU"
        print(json.dumps(summary, indent=1))
        return 1
    start = time.time()
    for name, command, timeout, needs_cuda in plan(args.dry):
        entry = {"command": " ".join(shlex.quote(c) for c in command[1:])}
        if args.dry:
            check_parses(command)
        if args.dry and needs_cuda:
            entry["status"] = "skipped (dry run: needs CUDA)"
        elif time.time() - start + timeout > BUDGET_S:
            entry["status"] = "skipped (out of the 8-minute budget)"
        else:
            entry.update(run_part(name, command, timeout))
        summary["parts"][name] = entry
    summary["seconds"] = round(time.time() - start, 1)
    print(json.dumps(summary, indent=1))
    return 0 if all(e["status"] == "ok" or e["status"].startswith("skipped") for e in summary["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
