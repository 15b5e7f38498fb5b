"""``fairdarts bench search-step``: the reference and the fast supernet path, side by side.

One *step* is one full first-order bi-level Fair DARTS step: 7 ops, sigmoid relaxation, zero-one loss
with weight 10, Adam on alpha, SGD with gradient clipping on the weights. The two sides are:

* **reference**: the straightforward formulation as in the original DARTS code: the reference supernet
  path (every edge runs every op on its input) and :func:`reference_arch_step` /
  :func:`reference_weight_step`, which call ``loss.backward()`` like DARTS's ``Architect.step`` and
  ``train`` do (the architecture step computes the weight gradients too, and discards them);
* **fast**: the fast supernet path (:mod:`fairdarts_core.fast`) and the search engine's own step
  (:func:`fairdarts_core.search.arch_step`, which asks autograd for alpha's gradient only, then
  :func:`~fairdarts_core.search.weight_step`).

Both sides compute the same update (same alpha, same weights after the step, up to rounding). Both start
from the same weights and see the same synthetic batches, which live on the device from the start (no
host copies inside the timed loop).

Timing: both models live in one process and their steps alternate (reference, fast, reference, ...), so
a busy machine slows both alike; after ``warmup`` steps each, the median of ``repeat`` steps is reported.

Peak memory: one fresh child process per path (``python -m fairdarts_core.bench --child ...``) builds
the same model and runs ``warmup + 1`` steps; its peak resident set size is ``VmHWM`` of
``/proc/self/status`` (the whole process: Python, torch, model, data, and the step; ``ru_maxrss`` is not
used because Linux starts it at the parent's peak). On CUDA the
child reports ``torch.cuda.max_memory_allocated`` instead.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import torch

from . import fast
from .ops import FAIR_DARTS_OPS
from .presets import SearchConfig
from .search import arch_loss, arch_step, build_optimizers, weight_step
from .supernet import Supernet, SupernetConfig

PATHS = ("reference", "fast")


@dataclass
class BenchSpec:
    """What to measure. Defaults: the paper's search shape (CIFAR-10, batch 64, C=16, 8 cells)."""

    batch: int = 64
    channels: int = 16
    layers: int = 8
    resolution: int = 32
    in_channels: int = 3
    num_classes: int = 10
    device: str = "cpu"
    channels_last: bool = True     # the fast path's layout (the reference path keeps NCHW)
    bf16: bool = False             # bf16 autocast for the weight step only (alpha's step stays fp32)
    compile: bool = False          # torch.compile both models
    recompute: str = "first_stage"  # the fast path's OPTIONS["recompute"]: none, first_stage or all
    rebuild: bool = True           # the fast path's OPTIONS["rebuild_cheap"]
    threads: Optional[int] = None  # torch intra-op threads; None: torch's default
    seed: int = 0


Setup = Tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.Optimizer, SearchConfig, list]


def search_config(spec: BenchSpec) -> SearchConfig:
    """The Fair DARTS step the benchmark times (the engine's defaults: w=10, clip 5, SGD + Adam)."""
    return SearchConfig(channels=spec.channels, layers=spec.layers, primitives=FAIR_DARTS_OPS,
                        relaxation="sigmoid", zero_one_weight=10.0, grad_clip=5.0, mode="bilevel",
                        batch_size=spec.batch, device=spec.device)


def make_model(spec: BenchSpec, path: str) -> Supernet:
    torch.manual_seed(spec.seed)
    model = Supernet(SupernetConfig(channels=spec.channels, layers=spec.layers, in_channels=spec.in_channels,
                                    num_classes=spec.num_classes, primitives=FAIR_DARTS_OPS,
                                    relaxation="sigmoid", path=path))
    return model.to(spec.device)


def make_batches(spec: BenchSpec, n: int = 2) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``n`` synthetic (x, y) batches, created on the device once."""
    g = torch.Generator().manual_seed(spec.seed + 1)
    shape = (spec.batch, spec.in_channels, spec.resolution, spec.resolution)
    return [(torch.randn(shape, generator=g).to(spec.device),
             torch.randint(0, spec.num_classes, (spec.batch,), generator=g).to(spec.device)) for _ in range(n)]


def setup(spec: BenchSpec, path: str, model: Optional[Supernet] = None) -> Setup:
    """Model (optionally compiled), optimisers, search config and batches for one path."""
    model = make_model(spec, path) if model is None else model
    config = search_config(spec)
    w_opt, a_opt, _ = build_optimizers(model, config)
    runner = torch.compile(model) if spec.compile else model
    return runner, w_opt, a_opt, config, make_batches(spec)


def reference_arch_step(model, x_val: torch.Tensor, y_val: torch.Tensor, a_optimizer: torch.optim.Optimizer,
                        config: SearchConfig) -> None:
    """The first-order architecture step as DARTS's ``Architect.step`` writes it: ``zero_grad``,
    ``loss.backward()`` (so autograd also computes every weight gradient, which this step then discards:
    DARTS's weight step zeroes them), Adam on alpha. Same alpha update as :func:`search.arch_step`, which
    asks for alpha's gradient only."""
    a_optimizer.zero_grad()
    logits = model(x_val)
    loss, _, _ = arch_loss(model, logits, y_val, config)
    loss.backward()
    a_optimizer.step()
    for p in model.weights():
        p.grad = None  # discarded


def reference_weight_step(model, x: torch.Tensor, y: torch.Tensor, w_optimizer: torch.optim.Optimizer,
                          config: SearchConfig) -> None:
    """The weight step as DARTS's ``train`` writes it: ``zero_grad``, ``loss.backward()`` (alpha's
    gradient comes along, unused), clipping, SGD. Same update as :func:`search.weight_step`."""
    w_optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.weights(), config.grad_clip)
    w_optimizer.step()


def step(s: Setup, spec: BenchSpec, path: str = "fast") -> None:
    """One first-order bi-level step: alpha on the validation batch, then the weights on the training one.
    ``path="reference"``: DARTS's straightforward steps; ``"fast"``: the search engine's."""
    model, w_opt, a_opt, config, (train, val) = s
    a_step, w_step = (reference_arch_step, reference_weight_step) if path == "reference" else (arch_step, weight_step)
    a_step(model, *val, a_opt, config)
    autocast = (torch.autocast(torch.device(spec.device).type, dtype=torch.bfloat16) if spec.bf16
                else nullcontext())
    with autocast:
        w_step(model, *train, w_opt, config)


def _sync(spec: BenchSpec) -> None:
    if torch.device(spec.device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(spec: BenchSpec, repeat: int = 3, warmup: int = 1,
               paths: Tuple[str, ...] = PATHS) -> Dict[str, List[float]]:
    """Milliseconds per step for each path, steps interleaved across paths."""
    _apply_options(spec)
    base = make_model(spec, paths[0])
    setups = {}
    for p in paths:
        model = copy.deepcopy(base)
        model.set_path(p)
        setups[p] = setup(spec, p, model)
    times: Dict[str, List[float]] = {p: [] for p in paths}
    for i in range(warmup + repeat):
        for p in paths:
            _sync(spec)
            t0 = time.perf_counter()
            step(setups[p], spec, p)
            _sync(spec)
            if i >= warmup:
                times[p].append(1000.0 * (time.perf_counter() - t0))
    return times


def peak_memory_mb(spec: BenchSpec, path: str, warmup: int = 1) -> Dict[str, float]:
    """Peak memory of ``warmup + 1`` steps of ``path``, measured in a fresh child process."""
    cmd = [sys.executable, "-m", "fairdarts_core.bench", "--child", json.dumps({**asdict(spec), "path": path,
                                                                                "warmup": warmup})]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the {path} memory child failed ({tail})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(payload: str) -> None:
    """Entry point of a memory child: prints {"peak_mb", "baseline_mb"} as one JSON line."""
    d = json.loads(payload)
    path, warmup = d.pop("path"), d.pop("warmup")
    spec = BenchSpec(**d)
    _apply_threads(spec)
    _apply_options(spec)
    s = setup(spec, path)
    baseline = _maxrss_mb()
    cuda = torch.device(spec.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    for _ in range(warmup + 1):
        step(s, spec, path)
    _sync(spec)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _maxrss_mb()
    print(json.dumps({"peak_mb": round(peak, 1), "baseline_mb": round(baseline, 1),
                      "method": "torch.cuda.max_memory_allocated" if cuda else "VmHWM of /proc/self/status (peak RSS)"}))


def _maxrss_mb() -> float:
    """This process's peak resident set size. ``VmHWM`` where Linux has it: ``ru_maxrss`` would start at
    the parent's size (Linux carries the high-water mark of the forking process across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 2**20)


def _apply_options(spec: BenchSpec) -> None:
    """The fast path's switches from the spec (the reference path reads none of them)."""
    fast.OPTIONS["channels_last"] = spec.channels_last
    fast.OPTIONS["recompute"] = spec.recompute
    fast.OPTIONS["rebuild_cheap"] = spec.rebuild


def _apply_threads(spec: BenchSpec) -> None:
    if spec.threads:
        torch.set_num_threads(spec.threads)


def search_step_report(spec: BenchSpec, repeat: int = 3, warmup: int = 1, memory: bool = True) -> dict:
    """Everything ``fairdarts bench search-step`` reports, as one dict."""
    _apply_threads(spec)
    times = time_steps(spec, repeat, warmup)
    ref, fst = statistics.median(times["reference"]), statistics.median(times["fast"])
    report = {"reference_ms": round(ref, 1), "fast_ms": round(fst, 1), "speedup": round(ref / fst, 2)}
    if memory:
        mem = {p: peak_memory_mb(spec, p, warmup) for p in PATHS}
        report.update(reference_peak_mb=mem["reference"]["peak_mb"], fast_peak_mb=mem["fast"]["peak_mb"],
                      memory_ratio=round(mem["fast"]["peak_mb"] / mem["reference"]["peak_mb"], 3),
                      reference_baseline_mb=mem["reference"]["baseline_mb"],
                      fast_baseline_mb=mem["fast"]["baseline_mb"], memory_method=mem["fast"]["method"])
    report.update(shape={k: getattr(spec, k) for k in ("batch", "channels", "layers", "resolution", "in_channels")},
                  options={k: getattr(spec, k) for k in ("device", "channels_last", "recompute", "rebuild", "bf16", "compile")},
                  threads=torch.get_num_threads(), repeat=repeat, warmup=warmup,
                  reference_all_ms=[round(t, 1) for t in times["reference"]],
                  fast_all_ms=[round(t, 1) for t in times["fast"]],
                  machine=_machine(spec))
    return report


def search_epoch_report(spec: BenchSpec, train_size: int = 25000, steps: Optional[int] = None,
                        path: str = "fast") -> dict:
    """Wall time of one search epoch of ``path`` on synthetic data of CIFAR-10's search split (25k training
    + 25k validation images, 32x32): ``ceil(train_size / batch)`` bi-level steps, each on its own slice of
    two device-resident tensors (so the numbers exclude data loading and augmentation). ``steps`` caps the
    steps (the epoch time is then extrapolated, and said so). One warm-up step first."""
    _apply_threads(spec)
    _apply_options(spec)
    s = setup(spec, path)
    model, w_opt, a_opt, config, _ = s
    per_epoch = math.ceil(train_size / spec.batch)
    n = per_epoch if steps is None else min(steps, per_epoch)
    g = torch.Generator().manual_seed(spec.seed + 2)
    shape = (n * spec.batch, spec.in_channels, spec.resolution, spec.resolution)
    images = [torch.randn(shape, generator=g).to(spec.device) for _ in range(2)]
    labels = [torch.randint(0, spec.num_classes, (n * spec.batch,), generator=g).to(spec.device) for _ in range(2)]
    step(s, spec, path)  # warm-up (and compilation, with --compile)
    _sync(spec)
    t0 = time.perf_counter()
    for i in range(n):
        sl = slice(i * spec.batch, (i + 1) * spec.batch)
        batches = [(images[0][sl], labels[0][sl]), (images[1][sl], labels[1][sl])]
        step((model, w_opt, a_opt, config, batches), spec, path)
    _sync(spec)
    seconds = time.perf_counter() - t0
    epoch_s = seconds * per_epoch / n
    return {"path": path, "steps_timed": n, "steps_per_epoch": per_epoch, "ms_per_step": round(1000 * seconds / n, 1),
            "epoch_s": round(epoch_s, 1), "extrapolated": n < per_epoch,
            "fifty_epochs_h": round(50 * epoch_s / 3600, 2),
            "shape": {k: getattr(spec, k) for k in ("batch", "channels", "layers", "resolution", "in_channels")},
            "options": {k: getattr(spec, k) for k in ("device", "channels_last", "recompute", "rebuild", "bf16", "compile")},
            "threads": torch.get_num_threads(),
            "machine": _machine(spec)}


def _machine(spec: BenchSpec) -> str:
    if torch.device(spec.device).type == "cuda":
        return f"{torch.cuda.get_device_name(torch.device(spec.device))}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {_cpu_count()} cores, torch {torch.__version__}"


def _cpu_count() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def format_report(r: dict) -> str:
    s = r["shape"]
    lines = [f"search step (first-order bi-level Fair DARTS), batch {s['batch']}, C={s['channels']}, "
             f"{s['layers']} cells, {s['resolution']}x{s['resolution']}x{s['in_channels']}, "
             f"{r['options']['device']}, {r['threads']} threads; median of {r['repeat']} after {r['warmup']} warm-up",
             f"  reference: {r['reference_ms']:10.1f} ms/step",
             f"  fast:      {r['fast_ms']:10.1f} ms/step   speedup {r['speedup']:.2f}x   (recompute "
             f"{r['options']['recompute']}, rebuild {'on' if r['options']['rebuild'] else 'off'})"]
    if "fast_peak_mb" in r:
        lines += [f"  peak memory ({r['memory_method']}, one child process per path):",
                  f"    reference {r['reference_peak_mb']:.0f} MB, fast {r['fast_peak_mb']:.0f} MB "
                  f"(ratio {r['memory_ratio']:.2f}; before the first step: {r['reference_baseline_mb']:.0f} / "
                  f"{r['fast_baseline_mb']:.0f} MB)"]
    return "\n".join(lines)


def format_epoch_report(r: dict) -> str:
    s = r["shape"]
    how = f"extrapolated from {r['steps_timed']} steps" if r["extrapolated"] else "measured"
    return (f"search epoch ({r['path']} path, {r['steps_per_epoch']} first-order bi-level steps of batch {s['batch']}, "
            f"C={s['channels']}, {s['layers']} cells, {s['resolution']}x{s['resolution']}x{s['in_channels']}, "
            f"synthetic data on {r['options']['device']}; {r['machine']})\n"
            f"  {r['ms_per_step']:.1f} ms/step, {r['epoch_s']:.1f} s/epoch ({how}), "
            f"50 epochs: {r['fifty_epochs_h']:.2f} h")


# --- the CLI sub-command ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``fairdarts bench``."""
    p.add_argument("what", choices=["search-step", "search-epoch"],
                   help="search-step: reference vs fast, one step; search-epoch: one whole CIFAR-sized search "
                        "epoch (25k + 25k synthetic images) of one path")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=3, help="3 for CIFAR, 1 for Fashion-MNIST")
    p.add_argument("--repeat", type=int, default=3, help="timed steps per path (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per path first")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=True,
                   help="run the fast path in the channels_last layout (default: on)")
    p.add_argument("--recompute", choices=fast.RECOMPUTE, default=None,
                   help="which cells of the fast path recompute their mixed edges in the backward pass "
                        "(default: fast.OPTIONS['recompute'], first_stage)")
    p.add_argument("--rebuild", action=argparse.BooleanOptionalAction, default=None,
                   help="the fast path drops activations that are cheap to recompute and rebuilds them in the "
                        "backward pass (default: fast.OPTIONS['rebuild_cheap'], on)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the weight step")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory children")
    p.add_argument("--path", choices=PATHS, default="fast", help="search-epoch: which path to time")
    p.add_argument("--steps", type=int, default=None,
                   help="search-epoch: time this many steps and extrapolate to the epoch (default: all)")


def run(args: argparse.Namespace) -> int:
    """``fairdarts bench search-step`` / ``search-epoch``."""
    for name in ("batch", "channels", "layers", "resolution", "in_channels", "repeat"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        raise ValueError("--warmup must be 0 or more")
    if args.layers < 3:
        raise ValueError("--layers must be at least 3 (two reduction cells)")
    from .search import resolve_device
    device = str(resolve_device(args.device))
    spec = BenchSpec(batch=args.batch, channels=args.channels, layers=args.layers, resolution=args.resolution,
                     in_channels=args.in_channels, device=device, channels_last=args.channels_last,
                     bf16=args.bf16, compile=args.compile, threads=args.threads,
                     recompute=fast.OPTIONS["recompute"] if args.recompute is None else args.recompute,
                     rebuild=fast.OPTIONS["rebuild_cheap"] if args.rebuild is None else args.rebuild)
    if args.what == "search-epoch":
        if args.steps is not None and args.steps < 1:
            raise ValueError("--steps must be at least 1")
        report = search_epoch_report(spec, steps=args.steps, path=args.path)
        print(json.dumps(report) if args.json else format_epoch_report(report))
        return 0
    report = search_step_report(spec, args.repeat, args.warmup, args.memory)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        print("usage: fairdarts bench search-step ... (this module's own entry point is for its memory children)",
              file=sys.stderr)
        sys.exit(2)
