"""The ``fairdarts`` command (also ``python -m fairdarts_core``): argument parsing and calls, nothing else.

Each sub-command is a pair of functions: ``add_<name>(subparsers)`` declares its arguments and
``run_<name>(args) -> int`` calls the library. Human-readable output by default, one JSON object with
``--json``. Bad input (a ``ValueError``, a missing file, a bad argument) ends with a one-line error on
stderr and exit code 2, never a traceback. Where the work is done:

- ``parse``: :mod:`fairdarts_core.genotype` (weight files, op sets, parse rules);
- ``flops``, ``plot``: :mod:`fairdarts_core.analysis`, :mod:`fairdarts_core.viz`;
- ``search``, ``train``, ``mechanism``: the loops, which also own their run directory or result file
  (lock, resume check, atomic writes, provenance; :mod:`fairdarts_core.runs`);
- ``evaluate``, ``export``: :func:`fairdarts_core.train.evaluate_checkpoint`, :func:`~fairdarts_core.train.export_authors_checkpoint`;
  ``bench``: :mod:`fairdarts_core.bench`.

Architectures (``--arch NAME``, ``--genotype FILE``) are resolved by :func:`fairdarts_core.zoo.resolve_arch`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {}
"""``{name: run}`` for every sub-command, filled by the ``add_*`` functions."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error of the command (argparse's own adds a
    usage block; ``--help`` still shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (a library error is one line already; others may not be)."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text or type(e).__name__


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def op_list(text: str) -> tuple:
    """argparse type: comma-separated op names (checked where the config is built)."""
    return tuple(op.strip() for op in text.split(",") if op.strip())


def emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    """Print ``payload`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    print(json.dumps(payload) if getattr(args, "json", False) else text)


def warn(args: argparse.Namespace, message: str) -> None:
    """One warning line on stderr (stdout stays the result, or the one JSON object)."""
    print(f"fairdarts {args.command}: warning: {message}", file=sys.stderr)


# --- options every run-like command shares, declared once -------------------------------------------------

SHARED_OPTIONS: Dict[str, dict] = {
    "out": dict(type=Path, metavar="DIR", help="run directory"),
    "resume": dict(action="store_true", help="continue the run in --out from its last checkpoint"),
    "json": dict(action="store_true", help="print one JSON object instead of text"),
    "set": dict(action="append", default=[], metavar="KEY=VALUE", help="override a config field"),
    "threads": dict(type=positive_int, metavar="N", help="torch intra-op threads (default: the preset's)"),
    "device": dict(metavar="DEVICE", help="auto, cpu, cuda, cuda:1 ... (default: the preset's)"),
}
"""The options of every run-like command, as ``add_argument`` keywords. ``--threads`` and ``--device``
default to ``None``: the config's own value (see :func:`config_overrides`)."""


def add_shared_options(p: argparse.ArgumentParser, names: Sequence[str] = tuple(SHARED_OPTIONS),
                       **changes: dict) -> None:
    """Declare the shared options ``names`` on sub-command ``p``; ``changes`` replaces some keywords of
    one option, e.g. ``out=dict(metavar="FILE", help="...")``."""
    for name in names:
        p.add_argument(f"--{name}", **{**SHARED_OPTIONS[name], **changes.get(name, {})})


def config_overrides(cls, args: argparse.Namespace, flags: Sequence[str] = ()) -> dict:
    """The fields of config dataclass ``cls`` that the command line sets: every ``--set key=value`` (typed
    like its field), then each option in ``flags`` (attribute names equal to field names) that was given,
    then ``--threads`` / ``--device`` where ``cls`` has them. A flag beats ``--set`` for the same field."""
    from dataclasses import fields

    from .presets import apply_sets
    overrides = apply_sets(cls, getattr(args, "set", []))
    names = {f.name for f in fields(cls)}
    for name in list(flags) + ["threads", "device"]:
        if name in names and getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    return overrides


def _command(subparsers, name: str, help: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A sub-command's parser, registered in :data:`COMMANDS`."""
    p = subparsers.add_parser(name, help=help, description=help)
    COMMANDS[name] = run
    return p


def _check_out(path: Path) -> Path:
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: directory {path.parent} does not exist")
    return path


def _run_dir(args: argparse.Namespace, kind: str) -> Path:
    """``--out``, or a new ``runs/KIND-PRESET-TIME`` when it is missing (a new run only)."""
    if args.out:
        return args.out
    if args.resume:
        raise ValueError("--resume needs --out DIR (the run to continue)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each process would pick its own time stamp
        raise ValueError("under torchrun give --out DIR: every process must write to the same run directory")
    return Path("runs") / f"{kind}-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _run_summary(args: argparse.Namespace, out: Path, history: List[dict]) -> dict:
    """The keys every run command's JSON starts with: out, preset, epochs, seconds."""
    return {"out": str(out), "preset": args.preset, "epochs": len(history),
            "seconds": sum(r["seconds"] for r in history)}


def _logger(args: argparse.Namespace):
    """Epoch lines on stdout (stderr with --json, so stdout stays one JSON object); a progress bar on
    an interactive terminal only."""
    stream = sys.stderr if args.json else sys.stdout
    return (lambda line: print(line, file=stream, flush=True)), sys.stderr.isatty() and not args.json


def _add_arch_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    which = p.add_mutually_exclusive_group(required=required)
    which.add_argument("--arch", metavar="NAME", help="a published cell (fairdarts_core.zoo), e.g. FairDARTS_a; random:SEED, a "
                       "random DARTS-space cell; or a NAS-Bench-201 string, e.g. "
                       "'|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...'")
    which.add_argument("--genotype", metavar="FILE", help="a genotype JSON file (e.g. from `fairdarts parse --out`)")


def _arch(args: argparse.Namespace):
    """``(label, genotype)`` from ``--arch`` or ``--genotype``; the label is what the user wrote."""
    from .zoo import resolve_arch
    label = args.arch or args.genotype
    return label, resolve_arch(label)


# --- parse, flops, plot: from relaxed weights to a genotype; what a genotype costs and looks like ---------

def add_parse(sub) -> None:
    from .genotype import PARSE_METHODS
    from .ops import OP_SETS
    p = _command(sub, "parse", "derive a genotype from relaxed weights (.npy matrices or a search run dir)", run_parse)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="a search run directory holding normal_weight.npy and reduce_weight.npy")
    p.add_argument("--normal", metavar="N.npy", help="(14, n_ops) relaxed weights of the normal cell, in [0, 1]")
    p.add_argument("--reduce", metavar="R.npy", help="(14, n_ops) relaxed weights of the reduction cell, in [0, 1]")
    p.add_argument("--method", choices=PARSE_METHODS + ("threshold",),
                   help="parse rule (default: darts for softmax weights, threshold_sparse for sigmoid; "
                        "NAS-Bench-201 runs: darts or threshold)")
    p.add_argument("--threshold", type=float, default=0.85, help="keep an op only if its weight >= this (0.85)")
    p.add_argument("--primitives", choices=tuple(OP_SETS),
                   help="the op set of the columns (default: the run's config.json, else 7 -> fair_darts, 8 -> darts)")
    p.add_argument("--out", metavar="FILE", help="also write the genotype as JSON to FILE")
    add_shared_options(p, ("json",))


def run_parse(args: argparse.Namespace) -> int:
    from .genotype import (Genotype, default_parse_method, load_weight_matrix, read_parse_hints,
                           resolve_op_set)
    hints: dict = {}
    if args.run_dir is not None:
        if args.normal or args.reduce:
            raise ValueError("give either RUN_DIR or --normal/--reduce, not both")
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            raise ValueError(f"run directory not found: {run_dir}")
        hints = read_parse_hints(run_dir)
        if hints.get("space") == "nb201":
            return _parse_nb201(args, run_dir, hints)
        normal_path, reduce_path = run_dir / "normal_weight.npy", run_dir / "reduce_weight.npy"
    elif args.normal and args.reduce:
        normal_path, reduce_path = Path(args.normal), Path(args.reduce)
    else:
        raise ValueError("give a RUN_DIR, or both --normal N.npy and --reduce R.npy")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1] (relaxed weights are); got {args.threshold}")

    normal, reduce = load_weight_matrix(normal_path), load_weight_matrix(reduce_path)
    if normal.shape != reduce.shape:
        raise ValueError(f"{normal_path} has shape {normal.shape} but {reduce_path} has shape {reduce.shape}")
    primitives = resolve_op_set(args.primitives, hints.get("primitives"), normal.shape[1])
    method = args.method or default_parse_method(hints.get("relaxation"), normal, reduce)
    try:
        genotype = Genotype.from_weights(normal, reduce, primitives, method, args.threshold)
    except ValueError as e:
        raise ValueError(f"{normal_path}, {reduce_path}: {e}") from None
    if args.out:
        genotype.save(_check_out(Path(args.out)))

    payload = {**genotype.to_dict(), "method": method, "threshold": args.threshold, "primitives": list(primitives)}
    head = f"genotype by {method}" + ("" if method == "darts" else f" (threshold {args.threshold})")
    emit(args, payload, "\n".join([head, genotype.describe()] + ([f"wrote {args.out}"] if args.out else [])))
    return 0


def _parse_nb201(args: argparse.Namespace, run_dir: Path, hints: dict) -> int:
    """``parse`` of a NAS-Bench-201 search run: its ``cell_weight.npy`` by the run's (or ``--method``'s) rule."""
    from . import nb201
    from .genotype import load_weight_matrix
    primitives = tuple(hints.get("primitives") or nb201.NB201_OPS)
    method = args.method or nb201.DEFAULT_DERIVE.get(hints.get("relaxation"), "darts")
    if method not in nb201.DERIVE_METHODS:
        raise ValueError(f"--method {method} does not apply to the nb201 space; choose one of "
                         f"{', '.join(nb201.DERIVE_METHODS)}")
    genotype = nb201.derive(load_weight_matrix(run_dir / "cell_weight.npy"), primitives, method, args.threshold)
    if args.out:
        from .runs import atomic_write_json
        atomic_write_json(_check_out(Path(args.out)), genotype.to_dict(), indent=1)
    payload = {**genotype.to_dict(), "method": method, "threshold": args.threshold, "primitives": list(primitives)}
    head = f"genotype by {method}" + ("" if method == "darts" else f" (threshold {args.threshold})")
    emit(args, payload, "\n".join([head, genotype.describe()] + ([f"wrote {args.out}"] if args.out else [])))
    return 0


MAX_CHANNELS, MAX_LAYERS = 1024, 100
"""Bounds of ``flops``'s network (the paper's CIFAR network: 36, 20; ImageNet: 48, 14): larger would only
exhaust memory or time before printing anything."""


def add_flops(sub) -> None:
    p = _command(sub, "flops", "FLOPs (thop, BatchNorm excluded) and parameters of an evaluation network", run_flops)
    _add_arch_arguments(p)
    p.add_argument("--channels", type=int, default=36, help=f"initial channels, even, 2..{MAX_CHANNELS} (36)")
    p.add_argument("--layers", type=int, default=20, help=f"cells, 3..{MAX_LAYERS} (20)")
    add_shared_options(p, ("json",))


def _published_beside(ours: dict, published: dict) -> dict:
    """Text beside each of our figures: published FLOPs beside ours; published params beside whichever
    of our two counts (with / without the auxiliary head) it is closer to."""
    notes = {}
    if "flops_M" in published:
        alt = f"; also published: {published['flops_M_alt']}M" if "flops_M_alt" in published else ""
        notes["flops"] = f"published {published['flops_M']}M{alt}"
    if "params_M" in published:
        closest = min(("params", "params_with_aux"), key=lambda k: abs(ours[k] / 1e6 - published["params_M"]))
        notes[closest] = f"published {published['params_M']}M"
    return notes


def run_flops(args: argparse.Namespace) -> int:
    if not (2 <= args.channels <= MAX_CHANNELS and args.channels % 2 == 0):
        raise ValueError(f"--channels must be an even number in [2, {MAX_CHANNELS}]; got {args.channels}")
    if not 3 <= args.layers <= MAX_LAYERS:
        raise ValueError(f"--layers must be in [3, {MAX_LAYERS}]; got {args.layers}")
    label, genotype = _arch(args)
    from . import analysis, zoo
    figures = analysis.profile_genotype(genotype, channels=args.channels, layers=args.layers, num_classes=10,
                                        resolution=32)
    ours = {k: int(figures[k]) for k in ("flops", "params", "params_with_aux")}
    # Published figures are for the 36-channel, 20-cell network: beside any other size they would mislead.
    paper_size = (args.channels, args.layers) == (36, 20)
    published = zoo.published(args.arch) if args.arch in zoo.NAMES and paper_size else {}

    payload = {"arch": label, **ours}
    if published:
        payload["published"] = published
    notes = _published_beside(ours, published)
    rows = [("FLOPs", "flops"), ("params, no aux head", "params"), ("params, with aux head", "params_with_aux")]
    lines = [f"{label}: CIFAR network, {args.channels} channels, {args.layers} cells, one 32x32 image "
             f"(thop, BatchNorm excluded)"]
    for name, key in rows:
        lines.append(f"  {name:<22} {ours[key] / 1e6:9.2f}M" + (f"   ({notes[key]})" if key in notes else ""))
    if published.get("note"):
        lines.append(f"  note: {published['note']}")
    emit(args, payload, "\n".join(lines))
    return 0


def add_plot(sub) -> None:
    p = _command(sub, "plot", "draw a genotype's cells (graphviz) to .svg, .png or .pdf; a cell with no live "
                 "node is drawn with its output marked 'no live node', and a warning says so", run_plot)
    _add_arch_arguments(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output drawing: cell.svg, cell.png or cell.pdf")
    p.add_argument("--cell", choices=("normal", "reduce", "both"), default="both", help="which cell (both)")
    add_shared_options(p, ("json",))


def run_plot(args: argparse.Namespace) -> int:
    """Draws even a cell with no live node (the drawing is how one sees why it is empty), and says so:
    a warning on stderr and, with --json, the key ``no_live_node`` (the cells concerned; absent when every
    drawn cell has a live node)."""
    from .nb201 import NB201Genotype
    from .viz import save_cell
    label, genotype = _arch(args)
    out = _check_out(Path(args.out))
    if isinstance(genotype, NB201Genotype):  # one cell type
        save_cell(genotype, out, title=label)
        payload = {"arch": label, "cell": "cell", "out": str(out)}
        if not genotype.is_connected():
            warn(args, f"the cell of {label} does not connect its input to its output (its output is a "
                       f"constant); drawn anyway in {out}")
            payload["no_live_node"] = ["cell"]
        emit(args, payload, f"wrote {out}")
        return 0
    if args.cell == "both":
        save_cell(genotype, out, title=label)
    else:
        save_cell(genotype.cell(args.cell), out, title=f"{label}: {args.cell} cell", steps=genotype.steps)
    drawn = ("normal", "reduce") if args.cell == "both" else (args.cell,)
    empty = [kind for kind in genotype.cells_without_live_node() if kind in drawn]
    payload = {"arch": label, "cell": args.cell, "out": str(out)}
    if empty:
        names = " and ".join(f"the {'reduction' if k == 'reduce' else 'normal'} cell" for k in empty)
        warn(args, f"{names} of {label} {'has' if len(empty) == 1 else 'have'} no live node (nothing reaches the "
                   f"output; the evaluation network refuses such a cell); drawn anyway in {out}")
        payload["no_live_node"] = empty
    emit(args, payload, f"wrote {out}")
    return 0


# --- mechanism: the deep chain of mixed edges (skip vs a convolution) -------------------------------------

def add_mechanism(sub) -> None:
    p = _command(sub, "mechanism", "Train a deep chain of mixed edges (skip vs a conv) bi-level on Fashion-MNIST "
                 "and report how skip's weight ends up (the collapse mechanism).", run_mechanism)
    # Defaults None: ChainConfig's own defaults apply, and --set can set the same fields.
    p.add_argument("--depth", type=positive_int, metavar="N", help="number of mixed edges in the chain (16)")
    p.add_argument("--relaxation", choices=["softmax", "sigmoid"], help="of the architecture weights (softmax)")
    p.add_argument("--ops", type=op_list, metavar="OP,OP", help="candidate ops, with skip_connect (skip_connect,conv_3x3)")
    p.add_argument("--steps", type=positive_int, metavar="N", help="bi-level steps (500)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (0)")
    p.add_argument("--arch-lr", type=float, metavar="LR", help="Adam learning rate of the architecture weights (3e-3)")
    p.add_argument("--subset", type=positive_int, metavar="N",
                   help="Fashion-MNIST images, half for the weights, half for alpha (4000)")
    p.add_argument("--skip-noise", action="store_true", default=None,
                   help="noise on skip (Fair DARTS Sec. 5): N(0, std^2) on skip's output in training, std "
                        "cosine-decayed from 1 to 0 (off)")
    p.add_argument("--noise-steps", type=positive_int, metavar="N",
                   help="with --skip-noise: the steps over which the std decays to 0 (all --steps)")
    add_shared_options(p, ("out", "json", "set", "threads"),
                       out=dict(metavar="FILE", help="write the trajectory and its provenance to this JSON file"),
                       set=dict(help="override any ChainConfig field, e.g. --set channels=8"),
                       threads=dict(default=1, help="torch threads (1: these tensors are tiny, more threads "
                                                    "only contend)"))


def mechanism_config(args: argparse.Namespace):
    """The :class:`~fairdarts_core.mechanism.ChainConfig` the ``mechanism`` options describe."""
    from .mechanism import ChainConfig
    cfg = ChainConfig(**config_overrides(ChainConfig, args, ("depth", "relaxation", "ops", "steps", "seed",
                                                             "arch_lr", "subset", "skip_noise", "noise_steps")))
    if getattr(args, "noise_steps", None) is not None and not cfg.skip_noise:
        raise ValueError("--noise-steps needs --skip-noise (without noise on skip it changes nothing)")
    return cfg


def run_mechanism(args: argparse.Namespace) -> int:
    from .mechanism import run_chain, skip_summary
    cfg = mechanism_config(args)
    import torch
    torch.set_num_threads(args.threads)
    result = run_chain(cfg, out=args.out, command=args.argv)
    summary = skip_summary(result)
    emit(args, summary, f"depth {summary['depth']}, {cfg.relaxation}: skip weight {summary['skip_weight']:.3f}, "
         f"best other op {summary['other_weight']:.3f}, skip wins {summary['skip_wins']}/{summary['depth']} layers, "
         f"train acc {summary['train_acc']:.3f}")
    return 0


# --- search, train, evaluate: the engine (fairdarts_core.search / .train) ---------------------------------

def _add_preset_options(p: argparse.ArgumentParser, kind: str, presets: dict, config: str, example: str) -> None:
    """``--preset``, ``--epochs`` and the shared run options of ``search`` and ``train``."""
    p.add_argument("--preset", required=True, choices=list(presets), help="named settings (fairdarts_core.presets)")
    p.add_argument("--epochs", type=positive_int, metavar="N", help="override the preset's number of epochs")
    add_shared_options(p, out=dict(help=f"run directory (default: runs/{kind}-PRESET-TIME)"),
                       set=dict(help=f"override any {config} field, e.g. {example}"))


def add_search(sub) -> None:
    from .presets import SEARCH_PRESETS
    p = _command(sub, "search", "Run a DARTS / Fair DARTS search (one line per epoch; history, weights, "
                 "genotype and checkpoints in the run directory).", run_search_cmd)
    _add_preset_options(p, "search", SEARCH_PRESETS, "SearchConfig", "--set subset=2560 --set skip_noise=true")
    p.add_argument("--relaxation", choices=["sigmoid", "softmax"],
                   help="override the preset's relaxation (the parse rule follows unless set with --set parse_method=...)")
    p.add_argument("--zero-one-weight", type=float, metavar="W", help="weight of the zero-one loss (0: off)")


def search_config(args: argparse.Namespace):
    """The :class:`~fairdarts_core.presets.SearchConfig` the ``search`` options describe."""
    from .presets import SearchConfig, get_search_preset
    overrides = config_overrides(SearchConfig, args, ("relaxation", "zero_one_weight", "epochs"))
    if args.relaxation:
        overrides.setdefault("parse_method", None)  # the new relaxation's own rule, unless --set names one
    return get_search_preset(args.preset, **overrides)


def run_search_cmd(args: argparse.Namespace) -> int:
    from .search import run_search
    config = search_config(args)
    out = _run_dir(args, "search")
    log, progress = _logger(args)
    result = run_search(config, out, resume=args.resume, progress=progress, log=log, command=args.argv)
    from .spaces import get_space
    weights = get_space(config.space).weight_names
    last = {k: v for k, v in result.history[-1].items() if k not in weights} if result.history else {}
    payload = {**_run_summary(args, out, result.history), "genotype": result.genotype.to_dict(), "last": last}
    emit(args, payload, f"wrote {out}\n{result.genotype.describe()}\n"
         f"next: fairdarts parse {out}   |   fairdarts train --genotype {out / 'genotype.json'} --preset ...")
    return 0


def add_train(sub) -> None:
    from .presets import TRAIN_PRESETS
    p = _command(sub, "train", "Retrain the evaluation network of a cell (a published one, or a genotype file); "
                 "runs data-parallel under torchrun.", run_train_cmd)
    _add_arch_arguments(p)
    _add_preset_options(p, "train", TRAIN_PRESETS, "TrainConfig", "--set autoaugment=true")


def train_config(args: argparse.Namespace):
    """The :class:`~fairdarts_core.presets.TrainConfig` the ``train`` options describe."""
    from .presets import TrainConfig, get_train_preset
    return get_train_preset(args.preset, **config_overrides(TrainConfig, args, ("epochs",)))


def run_train_cmd(args: argparse.Namespace) -> int:
    from .train import run_train
    config = train_config(args)
    label, genotype = _arch(args)
    out = _run_dir(args, "train")
    log, progress = _logger(args)
    try:
        result = run_train(config, genotype, out, resume=args.resume, progress=progress, log=log, command=args.argv)
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one process reports
        last = result.history[-1] if result.history else {}
        payload = {**_run_summary(args, out, result.history), "arch": label,
                   "world_size": int(os.environ.get("WORLD_SIZE", "1")), "test_acc": last.get("test_acc"),
                   "train_acc": last.get("train_acc")}
        emit(args, payload, f"wrote {out}: test accuracy {last.get('test_acc', float('nan')):.4f} "
             f"after {len(result.history)} epochs")
    return 0


def add_evaluate(sub) -> None:
    p = _command(sub, "evaluate", "Test accuracy of a checkpoint: one from `fairdarts train`, or the authors' "
                 "released .tar files (name the cell with --arch).", run_evaluate_cmd)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="PATH")
    _add_arch_arguments(p, required=False)
    p.add_argument("--dataset", metavar="NAME",
                   help="test set: cifar10, cifar100, fashion-mnist or folder:PATH (an image folder with train/ and "
                        "test/); default: the checkpoint's, CIFAR-10 for the authors' files")
    p.add_argument("--data-dir", metavar="DIR", help="where data sets are (default: data/)")
    p.add_argument("--subset", type=positive_int, metavar="N", help="evaluate on a class-balanced subset of N test images")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="N", help="(256)")
    p.add_argument("--image-size", type=positive_int, metavar="N",
                   help="resize the test images to NxN (default: the training checkpoint's; as stored for the "
                        "authors' layout)")
    add_shared_options(p, ("json", "threads", "device"), threads=dict(help="torch intra-op threads (default: torch's)"),
                       device=dict(default="auto", help="auto, cpu, cuda, cuda:1 ... (auto)"))


def run_evaluate_cmd(args: argparse.Namespace) -> int:
    from .train import evaluate_checkpoint
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    r = evaluate_checkpoint(args.checkpoint, args.arch or args.genotype, args.dataset, args.data_dir,
                            args.subset, args.batch_size, args.device, args.image_size)
    emit(args, r, f"{r['arch']} on {r['dataset']} ({r['n']} test images): accuracy {r['acc']:.4f}, loss {r['loss']:.4f}")
    return 0


def add_export(sub) -> None:
    p = _command(sub, "export", "Write the network of a `fairdarts train` checkpoint in the layout of the authors' "
                 "released .tar files ({'state_dict': ...}, their key names), which `fairdarts evaluate --arch` "
                 "and the authors' own code read.", run_export_cmd)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="PATH", help="RUN_DIR/checkpoint.pt of a retraining")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the file to write, e.g. cell.tar")
    add_shared_options(p, ("json",))


def run_export_cmd(args: argparse.Namespace) -> int:
    from .train import export_authors_checkpoint
    r = export_authors_checkpoint(args.checkpoint, args.out)
    emit(args, {**r, "out": str(args.out)},
         f"wrote {args.out}: NetworkCIFAR(C={r['C']}, classes={r['num_classes']}, layers={r['layers']}, "
         f"auxiliary={r['auxiliary']}, in_channels={r['in_channels']}), trained on {r['dataset']} at "
         f"{r['image_size']}x{r['image_size']}")
    return 0


# --- gap: what deriving the cell costs a trained supernet ---------------------------------------------------

def add_gap(sub) -> None:
    p = _command(sub, "gap", "The discretization gap of a search run (Fair DARTS, Sec. 4, Eq. 5): its supernet with the "
                 "relaxed weights against the same supernet with the derived cell's 0/1 weights, on held-out "
                 "test images (needs RUN_DIR/checkpoint.pt).", run_gap_cmd)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a search run directory with its checkpoint.pt")
    p.add_argument("--images", type=positive_int, default=500, metavar="N", help="held-out test images (500)")
    p.add_argument("--finetune-steps", type=int, default=0, metavar="K",
                   help="also measure the discretized supernet after K SGD steps on its weights (0: no)")
    p.add_argument("--method", help="derive rule (default: the run's)")
    p.add_argument("--threshold", type=float, help="derive threshold (default: the run's)")
    add_shared_options(p, ("json", "threads", "device"), threads=dict(help="torch intra-op threads (default: torch's)"),
                       device=dict(default="cpu", help="cpu, cuda, cuda:1 ... (cpu)"))


def run_gap_cmd(args: argparse.Namespace) -> int:
    from .analysis import gap_of_run
    if args.finetune_steps < 0:
        raise ValueError(f"--finetune-steps must be 0 or more; got {args.finetune_steps}")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    gap, genotype = gap_of_run(args.run_dir, args.images, args.finetune_steps, args.method, args.threshold, args.device)
    cell = str(genotype) if hasattr(genotype, "ops") else "\n" + genotype.describe()
    lines = [f"{args.run_dir}: derived cell {cell}",
             f"  relaxed supernet:    loss {gap.relaxed_loss:.4f}  accuracy {gap.relaxed_acc:.4f}",
             f"  rounded to 0/1:      loss {gap.rounded_loss:.4f}  accuracy {gap.rounded_acc:.4f}  "
             f"(gap {gap.rounding_gap:+.4f})",
             f"  the derived cell:    loss {gap.discrete_loss:.4f}  accuracy {gap.discrete_acc:.4f}  "
             f"(gap {gap.acc_gap:+.4f})",
             f"  mean distance of the relaxed weights from 0/1: {gap.distance_from_binary:.4f}"]
    if gap.finetuned_acc is not None:
        lines.append(f"  {f'after {args.finetune_steps} steps:':<20} loss {gap.finetuned_loss:.4f}  accuracy {gap.finetuned_acc:.4f}")
    emit(args, {"run_dir": str(args.run_dir), "genotype": genotype.to_dict(), **gap.to_dict()}, "\n".join(lines))
    return 0


# --- bench: the fast path against the reference ------------------------------------------------------------

def add_bench(sub) -> None:
    from . import bench
    p = _command(sub, "bench", "Time one first-order bi-level search step of the reference and the fast "
                 "supernet formulation side by side, with the peak memory of each (search-step), or one whole "
                 "CIFAR-sized search epoch on synthetic data (search-epoch).", bench.run)
    bench.add_arguments(p)
    add_shared_options(p, ("json", "threads", "device"), threads=dict(help="torch intra-op threads (default: torch's)"),
                       device=dict(help="cpu, cuda, cuda:N or auto (default: cpu)"))


# --- the command ----------------------------------------------------------------------------------------

ADDERS: List[Callable] = [add_search, add_parse, add_gap, add_flops, add_plot, add_mechanism, add_train, add_evaluate,
                          add_export, add_bench]
"""Functions ``add(subparsers)``, one per sub-command, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fairdarts", description="Fair DARTS, hands-on: search, parse, "
                           "retrain and inspect differentiable architecture search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")  # sub-parsers are OneLineParsers too
    for add in ADDERS:
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument (its one line is printed): a code, in-process too
        return 0 if e.code is None else int(e.code)
    if not args.command:
        parser.print_help()
        return 2
    args.argv = ["fairdarts", *argv]  # what a run records as its command (provenance)
    try:
        return COMMANDS[args.command](args) or 0
    except (ValueError, OSError) as e:  # bad input, missing files or directories, permissions, a busy run
        print(f"fairdarts {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fairdarts {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
