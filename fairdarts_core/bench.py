"""``fairdarts bench search-step``: the reference and the fast supernet formulation, side by side.

One *step* is one full first-order bi-level Fair DARTS step: 7 ops, sigmoid relaxation, zero-one loss
with weight 10, Adam on alpha, SGD with gradient clipping on the weights. The two sides are:

* **reference**: the straightforward formulation as in the original DARTS code: the reference supernet
  formulation (every edge runs every op on its input) and the steps as DARTS writes them
  (:func:`fairdarts_core.steps.arch_step_as_written`, :func:`~fairdarts_core.steps.weight_step_as_written`:
  ``loss.backward()`` on every parameter, like DARTS's ``Architect.step`` and ``train``; the architecture
  step computes the weight gradients too, and discards them);
* **fast**: the fast formulation (:mod:`fairdarts_core.fast`, with the options of the spec) and the search
  engine's own steps (:func:`fairdarts_core.steps.arch_step`, which asks autograd for alpha's gradient
  only, then :func:`~fairdarts_core.steps.weight_step`).

Both sides compute the same update (same alpha, same weights after the step, up to rounding). Both start
from the same weights and see the same synthetic batches, which live on the device from the start (no
host copies inside the timed loop). The steps themselves live in :mod:`fairdarts_core.steps`; this module
only times them.

Timing: both models live in one process and their steps alternate (reference, fast, reference, ...), so
a busy machine slows both alike; after ``warmup`` steps each, the median of ``repeat`` steps is reported.

Peak memory: one fresh child process per side (``python -m fairdarts_core.bench --child ...``) builds
the same model and runs ``warmup + 1`` steps; its peak resident set size is ``VmHWM`` of
``/proc/self/status`` (the whole process: Python, torch, model, data, and the step; ``ru_maxrss`` is not
used because Linux starts it at the parent's peak). On CUDA the
child reports ``torch.cuda.max_memory_allocated`` instead.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
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
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from . import steps
from .fast import RECOMPUTE, FastOptions
from .ops import FAIR_DARTS_OPS
from .presets import SearchConfig
from .search import build_optimizers, zero_one_term
from .supernet import FORMULATIONS, Supernet, SupernetConfig

SIDES = ("reference", "fast")
"""The two sides of the benchmark, named by their supernet formulation."""

_DEFAULTS = FastOptions()


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
    channels_last: bool = _DEFAULTS.channels_last  # the fast side's layout (the reference side keeps NCHW)
    bf16: bool = False             # bf16 autocast for the weight step only (alpha's step stays fp32)
    compile: bool = False          # torch.compile both models
    recompute: str = _DEFAULTS.recompute  # the fast side's FastOptions.recompute: none, first_stage or all
    rebuild: bool = _DEFAULTS.rebuild_cheap  # the fast side's FastOptions.rebuild_cheap
    fused: bool = _DEFAULTS.fused_sums  # the fast side's FastOptions.fused_sums
    matmul_grad: bool = _DEFAULTS.matmul_weight_grad  # the fast side's FastOptions.matmul_weight_grad
    split_grad: bool = _DEFAULTS.split_weight_grad  # the fast side's FastOptions.split_weight_grad
    wide_norm: bool = _DEFAULTS.wide_norm  # the fast side's FastOptions.wide_norm
    threads: Optional[int] = None  # torch intra-op threads; None: torch's default
    seed: int = 0

    def __post_init__(self):
        for name in ("batch", "channels", "resolution", "in_channels", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench {name}={getattr(self, name)} is not valid: it must be at least 1")
        if self.layers < 3:
            raise ValueError(f"bench layers={self.layers} is not valid: at least 3 (two reduction cells)")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"bench threads={self.threads} is not valid: at least 1")
        self.fast_options()  # validates the fast side's options

    def fast_options(self) -> FastOptions:
        """The fast side's options (the switches not in the spec keep their defaults)."""
        return FastOptions(channels_last=self.channels_last, recompute=self.recompute, rebuild_cheap=self.rebuild,
                           fused_sums=self.fused, matmul_weight_grad=self.matmul_grad,
                           split_weight_grad=self.split_grad, wide_norm=self.wide_norm)


@dataclass
class Side:
    """One side, ready to step: the model, what runs it (the model, or its compiled form), the optimisers,
    the architecture loss's zero-one term, the clipping norm and a (train, val) pair of batches."""

    model: Supernet
    runner: torch.nn.Module
    w_optimizer: torch.optim.Optimizer
    a_optimizer: torch.optim.Optimizer
    zero_one: steps.ZeroOne
    grad_clip: float
    batches: List[Tuple[torch.Tensor, torch.Tensor]]


def search_config(spec: BenchSpec) -> SearchConfig:
    """The Fair DARTS step the benchmark times (the engine's defaults: w=10, clip 5, SGD + Adam)."""
    return SearchConfig(primitives=FAIR_DARTS_OPS, relaxation="sigmoid", zero_one_weight=10.0, grad_clip=5.0,
                        mode="bilevel")


def make_model(spec: BenchSpec, formulation: str) -> Supernet:
    torch.manual_seed(spec.seed)
    model = Supernet(SupernetConfig(channels=spec.channels, layers=spec.layers, in_channels=spec.in_channels,
                                    num_classes=spec.num_classes, primitives=FAIR_DARTS_OPS,
                                    relaxation="sigmoid", formulation=formulation,
                                    fast_options=spec.fast_options()))
    return model.to(spec.device)


def make_batches(spec: BenchSpec, n: int = 2) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``n`` synthetic (x, y) batches, created on the device once."""
    g = torch.Generator().manual_seed(spec.seed + 1)
    shape = (spec.batch, spec.in_channels, spec.resolution, spec.resolution)
    return [(torch.randn(shape, generator=g).to(spec.device),
             torch.randint(0, spec.num_classes, (spec.batch,), generator=g).to(spec.device)) for _ in range(n)]


def setup(spec: BenchSpec, formulation: str, model: Optional[Supernet] = None) -> Side:
    """Model (optionally compiled), optimisers, loss terms and batches for one side."""
    model = make_model(spec, formulation) if model is None else model
    config = search_config(spec)
    w_opt, a_opt, _ = build_optimizers(model, config)
    runner = torch.compile(model) if spec.compile else model
    return Side(model, runner, w_opt, a_opt, zero_one_term(config), config.grad_clip, make_batches(spec))


StepPair = Tuple[Callable[..., steps.Stats], Callable[..., steps.Stats]]


def side_steps(side: str) -> StepPair:
    """(architecture step, weight step) of one side: DARTS's steps as written, or the engine's."""
    if side == "reference":
        return steps.arch_step_as_written, steps.weight_step_as_written
    return steps.arch_step, steps.weight_step


def step(s: Side, spec: BenchSpec, side: str = "fast") -> None:
    """One first-order bi-level step: alpha on the validation batch, then the weights on the training one
    (under bf16 autocast with ``spec.bf16``). ``side="reference"``: DARTS's steps as written; ``"fast"``:
    the search engine's."""
    arch_step, weight_step = side_steps(side)
    train, val = s.batches
    arch_step(s.runner, val, s.a_optimizer, s.zero_one)
    autocast = (torch.autocast(torch.device(spec.device).type, dtype=torch.bfloat16) if spec.bf16
                else nullcontext())
    with autocast:
        weight_step(s.runner, train, s.w_optimizer, s.grad_clip)


def _sync(spec: BenchSpec) -> None:
    if torch.device(spec.device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(spec: BenchSpec, repeat: int = 3, warmup: int = 1,
               sides: Tuple[str, ...] = SIDES) -> Dict[str, List[float]]:
    """Milliseconds per step for each side, steps interleaved across sides."""
    base = make_model(spec, sides[0])
    setups = {}
    for side in sides:
        model = copy.deepcopy(base)
        model.set_formulation(side)
        setups[side] = setup(spec, side, model)
    times: Dict[str, List[float]] = {side: [] for side in sides}
    for i in range(warmup + repeat):
        for side in sides:
            _sync(spec)
            t0 = time.perf_counter()
            step(setups[side], spec, side)
            _sync(spec)
            if i >= warmup:
                times[side].append(1000.0 * (time.perf_counter() - t0))
    return times


def peak_memory_mb(spec: BenchSpec, side: str, warmup: int = 1) -> Dict[str, float]:
    """Peak memory of ``warmup + 1`` steps of ``side``, measured in a fresh child process."""
    cmd = [sys.executable, "-m", "fairdarts_core.bench", "--child",
           json.dumps({**asdict(spec), "side": side, "warmup": warmup})]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the {side} memory child failed ({tail})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(payload: str) -> None:
    """Entry point of a memory child: prints {"peak_mb", "baseline_mb"} as one JSON line."""
    d = json.loads(payload)
    side, warmup = d.pop("side"), d.pop("warmup")
    spec = BenchSpec(**d)
    _apply_threads(spec)
    s = setup(spec, side)
    baseline = _maxrss_mb()
    cuda = torch.device(spec.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    for _ in range(warmup + 1):
        step(s, spec, side)
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


def _apply_threads(spec: BenchSpec) -> None:
    if spec.threads:
        torch.set_num_threads(spec.threads)


def _shape(spec: BenchSpec) -> dict:
    return {k: getattr(spec, k) for k in ("batch", "channels", "layers", "resolution", "in_channels")}


def _options(spec: BenchSpec) -> dict:
    keys = ("device", "channels_last", "recompute", "rebuild", "fused", "matmul_grad", "split_grad", "wide_norm",
            "bf16", "compile")
    return {k: getattr(spec, k) for k in keys}


def search_step_report(spec: BenchSpec, repeat: int = 3, warmup: int = 1, memory: bool = True) -> dict:
    """Everything ``fairdarts bench search-step`` reports, as one dict."""
    _apply_threads(spec)
    times = time_steps(spec, repeat, warmup)
    ref, fst = statistics.median(times["reference"]), statistics.median(times["fast"])
    report = {"reference_ms": round(ref, 1), "fast_ms": round(fst, 1), "speedup": round(ref / fst, 2)}
    if memory:
        mem = {side: peak_memory_mb(spec, side, warmup) for side in SIDES}
        report.update(reference_peak_mb=mem["reference"]["peak_mb"], fast_peak_mb=mem["fast"]["peak_mb"],
                      memory_ratio=round(mem["fast"]["peak_mb"] / mem["reference"]["peak_mb"], 3),
                      reference_baseline_mb=mem["reference"]["baseline_mb"],
                      fast_baseline_mb=mem["fast"]["baseline_mb"], memory_method=mem["fast"]["method"])
    report.update(shape=_shape(spec), options=_options(spec),
                  threads=torch.get_num_threads(), repeat=repeat, warmup=warmup,
                  reference_all_ms=[round(t, 1) for t in times["reference"]],
                  fast_all_ms=[round(t, 1) for t in times["fast"]],
                  machine=_machine(spec))
    return report


SWEEP_SHAPES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (64, 16, 8, 32, 3),  # the paper's search shape (CIFAR-10)
    (64, 16, 5, 32, 3),  # fewer cells
    (32, 16, 8, 32, 3),  # half the batch
    (64, 8, 8, 32, 3),   # half the channels
    (64, 16, 8, 16, 3),  # a quarter of the pixels
    (32, 8, 5, 16, 1),   # the cpu search preset (Fashion-MNIST, 16x16)
)
"""The shapes ``fairdarts bench sweep`` measures: ``(batch, channels, cells, resolution, in_channels)``, the
paper's shape first, then one dimension changed at a time, and the shape the book's CPU searches use."""


def sweep_report(base: BenchSpec, shapes: Sequence[Tuple[int, int, int, int, int]] = SWEEP_SHAPES,
                 repeat: int = 3, warmup: int = 1, memory: bool = True) -> dict:
    """:func:`search_step_report` for every shape of ``shapes`` (the other settings from ``base``), in one
    process, one shape after another: the speedup and memory ratio by shape (``viz.plot_speedup_by_shape``)."""
    rows = []
    for batch, channels, layers, resolution, in_channels in tqdm(shapes, desc="shapes", unit="shape"):
        spec = dataclasses.replace(base, batch=batch, channels=channels, layers=layers, resolution=resolution,
                                   in_channels=in_channels)
        rows.append(search_step_report(spec, repeat, warmup, memory))
    return {"date": datetime.date.today().isoformat(), "machine": _machine(base), "threads": rows[0]["threads"],
            "repeat": repeat, "warmup": warmup, "rows": rows}


RECORDED = Path(__file__).resolve().parents[1] / "data" / "bench"
"""The recorded benchmark reports of the repository (``data/bench/``), one JSON file per device and command."""


def load_sweep(path: Union[str, Path, None] = None) -> dict:
    """A recorded ``fairdarts bench sweep --json`` report (default: ``data/bench/cpu_sweep.json``), checked to
    have a row per shape with the numbers the plot and the table read."""
    path = RECORDED / "cpu_sweep.json" if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark report at {path}; write one with "
                                f"`fairdarts bench sweep --json > {path}`")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a JSON report of `fairdarts bench sweep` ({e})") from None
    rows = report.get("rows") if isinstance(report, dict) else None
    needed = ("shape", "reference_ms", "fast_ms", "speedup")
    if not rows or not all(isinstance(r, dict) and all(k in r for k in needed) for r in rows):
        raise ValueError(f"{path} is not a report of `fairdarts bench sweep`: it needs rows with "
                         f"{', '.join(needed)}")
    return report


def format_sweep_report(r: dict) -> str:
    """A :func:`sweep_report` as ``fairdarts bench sweep`` prints it: one line per shape."""
    lines = [f"search step by shape ({r['machine']}, {r['threads']} threads, {r['date']}; median of {r['repeat']} "
             f"after {r['warmup']} warm-up)",
             "  batch  C  cells  image      reference ms   fast ms  speedup  memory ratio"]
    for row in r["rows"]:
        s = row["shape"]
        image = f"{s['resolution']}x{s['resolution']}x{s['in_channels']}"
        mem = f"{row['memory_ratio']:.2f}" if "memory_ratio" in row else "-"
        lines.append(f"  {s['batch']:5d} {s['channels']:2d} {s['layers']:6d}  {image:9s} {row['reference_ms']:12.1f} "
                     f"{row['fast_ms']:9.1f} {row['speedup']:7.2f}x  {mem:>12s}")
    return "\n".join(lines)


def search_epoch_report(spec: BenchSpec, train_size: int = 25000, max_steps: Optional[int] = None,
                        formulation: str = "fast") -> dict:
    """Wall time of one search epoch of one side (``formulation``) on synthetic data of CIFAR-10's search
    split (25k training + 25k validation images, 32x32): ``ceil(train_size / batch)`` bi-level steps, each
    on its own slice of two device-resident tensors (so the numbers exclude data loading and augmentation).
    ``max_steps`` caps the steps (the epoch time is then extrapolated, and said so). One warm-up step first."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}; choose one of {', '.join(FORMULATIONS)}")
    _apply_threads(spec)
    s = setup(spec, formulation)
    per_epoch = math.ceil(train_size / spec.batch)
    n = per_epoch if max_steps is None else min(max_steps, per_epoch)
    g = torch.Generator().manual_seed(spec.seed + 2)
    shape = (n * spec.batch, spec.in_channels, spec.resolution, spec.resolution)
    images = [torch.randn(shape, generator=g).to(spec.device) for _ in range(2)]
    labels = [torch.randint(0, spec.num_classes, (n * spec.batch,), generator=g).to(spec.device) for _ in range(2)]
    step(s, spec, formulation)  # warm-up (and compilation, with --compile)
    _sync(spec)
    t0 = time.perf_counter()
    for i in range(n):
        sl = slice(i * spec.batch, (i + 1) * spec.batch)
        s.batches = [(images[0][sl], labels[0][sl]), (images[1][sl], labels[1][sl])]
        step(s, spec, formulation)
    _sync(spec)
    seconds = time.perf_counter() - t0
    epoch_s = seconds * per_epoch / n
    return {"formulation": formulation, "steps_timed": n, "steps_per_epoch": per_epoch,
            "ms_per_step": round(1000 * seconds / n, 1),
            "epoch_s": round(epoch_s, 1), "extrapolated": n < per_epoch,
            "fifty_epochs_h": round(50 * epoch_s / 3600, 2),
            "shape": _shape(spec), "options": _options(spec),
            "threads": torch.get_num_threads(),
            "machine": _machine(spec)}


def _machine(spec: BenchSpec) -> str:
    if torch.device(spec.device).type == "cuda":
        return f"{torch.cuda.get_device_name(torch.device(spec.device))}, torch {torch.__version__}"
    kernels = torch.backends.cpu.get_cpu_capability()
    return f"{_cpu_name()} ({kernels} kernels), {_cpu_count()} cores, torch {torch.__version__}"


def _cpu_name() -> str:
    """The CPU's model name where Linux says it (``/proc/cpuinfo``), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
             f"{r['options']['recompute']}, rebuild {'on' if r['options']['rebuild'] else 'off'}"
             + ("" if "fused" not in r["options"] else f", fused sums {'on' if r['options']['fused'] else 'off'}")
             + ("" if "matmul_grad" not in r["options"]
                else f", matmul weight gradient {'on' if r['options']['matmul_grad'] else 'off'}")
             + ("" if "split_grad" not in r["options"]
                else f", split weight gradient {'on' if r['options']['split_grad'] else 'off'}")
             + ("" if "wide_norm" not in r["options"]
                else f", wide BN {'on' if r['options']['wide_norm'] else 'off'}")
             + ")"]
    if "fast_peak_mb" in r:
        lines += [f"  peak memory ({r['memory_method']}, one child process per side):",
                  f"    reference {r['reference_peak_mb']:.0f} MB, fast {r['fast_peak_mb']:.0f} MB "
                  f"(ratio {r['memory_ratio']:.2f}; before the first step: {r['reference_baseline_mb']:.0f} / "
                  f"{r['fast_baseline_mb']:.0f} MB)"]
    return "\n".join(lines)


def format_epoch_report(r: dict) -> str:
    s = r["shape"]
    how = f"extrapolated from {r['steps_timed']} steps" if r["extrapolated"] else "measured"
    return (f"search epoch ({r['formulation']} formulation, {r['steps_per_epoch']} first-order bi-level steps of "
            f"batch {s['batch']}, C={s['channels']}, {s['layers']} cells, "
            f"{s['resolution']}x{s['resolution']}x{s['in_channels']}, synthetic data on {r['options']['device']}; "
            f"{r['machine']})\n"
            f"  {r['ms_per_step']:.1f} ms/step, {r['epoch_s']:.1f} s/epoch ({how}), "
            f"50 epochs: {r['fifty_epochs_h']:.2f} h")


# --- the CLI sub-command ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``fairdarts bench`` (its own; the command line adds the shared ``--json``, ``--threads``
    and ``--device``)."""
    p.add_argument("what", choices=["search-step", "search-epoch", "sweep"],
                   help="search-step: reference vs fast, one step; search-epoch: one whole CIFAR-sized search "
                        "epoch (25k + 25k synthetic images) of one formulation; sweep: search-step at the "
                        "paper's shape and five others (the shape arguments are not used)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=3, help="3 for CIFAR, 1 for Fashion-MNIST")
    p.add_argument("--repeat", type=int, default=3, help="timed steps per side (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction,
                   default=_DEFAULTS.channels_last, help="run the fast side in the channels_last layout (default: on)")
    p.add_argument("--recompute", choices=RECOMPUTE, default=_DEFAULTS.recompute,
                   help="which cells of the fast side recompute their mixed edges in the backward pass "
                        f"(default: {_DEFAULTS.recompute})")
    p.add_argument("--rebuild", action=argparse.BooleanOptionalAction, default=_DEFAULTS.rebuild_cheap,
                   help="the fast side drops activations that are cheap to recompute and rebuilds them in the "
                        "backward pass (default: on)")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=_DEFAULTS.fused_sums,
                   help="the fast side adds each node's BN terms in place, on cells of at least "
                        f"{_DEFAULTS.reorder_min_elements} elements (default: on)")
    p.add_argument("--matmul-grad", action=argparse.BooleanOptionalAction, default=_DEFAULTS.matmul_weight_grad,
                   help="the fast side computes the weight gradient of 5x5 depthwise convolutions on images of at "
                        "most 25 pixels as a batched matmul, on the same cells (default: on)")
    p.add_argument("--split-grad", action=argparse.BooleanOptionalAction, default=_DEFAULTS.split_weight_grad,
                   help="the fast side computes the weight gradient of 5x5 depthwise convolutions on larger images "
                        "as a 5x3 and two shifted 5x1 ones, on the same cells (default: on)")
    p.add_argument("--wide-norm", action=argparse.BooleanOptionalAction, default=_DEFAULTS.wide_norm,
                   help="the fast side's batch norms of at most 16 channels reduce 64 lanes wide, on the same cells "
                        "(default: on)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the weight step")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory children")
    p.add_argument("--formulation", choices=FORMULATIONS, default="fast",
                   help="search-epoch: which formulation (side) to time")
    p.add_argument("--steps", type=int, default=None,
                   help="search-epoch: time this many steps and extrapolate to the epoch (default: all)")


def run(args: argparse.Namespace) -> int:
    """``fairdarts bench search-step`` / ``search-epoch`` / ``sweep``."""
    if args.repeat < 1:
        raise ValueError(f"--repeat {args.repeat} is not valid: at least 1")
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} is not valid: 0 or more")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps} is not valid: at least 1")
    from .search import resolve_device
    device = str(resolve_device(getattr(args, "device", None) or "cpu"))
    spec = BenchSpec(batch=args.batch, channels=args.channels, layers=args.layers, resolution=args.resolution,
                     in_channels=args.in_channels, device=device, channels_last=args.channels_last,
                     bf16=args.bf16, compile=args.compile, threads=getattr(args, "threads", None),
                     recompute=args.recompute, rebuild=args.rebuild, fused=args.fused,
                     matmul_grad=args.matmul_grad, split_grad=args.split_grad, wide_norm=args.wide_norm)
    as_json = getattr(args, "json", False)
    if args.what == "search-epoch":
        report = search_epoch_report(spec, max_steps=args.steps, formulation=args.formulation)
        print(json.dumps(report) if as_json else format_epoch_report(report))
        return 0
    if args.what == "sweep":
        report = sweep_report(spec, SWEEP_SHAPES, repeat=args.repeat, warmup=args.warmup, memory=args.memory)
        print(json.dumps(report) if as_json else format_sweep_report(report))
        return 0
    report = search_step_report(spec, args.repeat, args.warmup, args.memory)
    print(json.dumps(report) if as_json else format_report(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        print("usage: fairdarts bench search-step ... (this module's own entry point is for its memory children)",
              file=sys.stderr)
        sys.exit(2)
