"""The ``fairdarts`` command (also ``python -m fairdarts_core``).

Each sub-command is a pair of functions: ``add_<name>(subparsers)`` declares its arguments and
``run_<name>(args) -> int`` does the work. Human-readable output by default, one JSON object with
``--json``. Bad input (a ``ValueError``, a missing file) ends with a one-line error on stderr and
exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from .ops import DARTS_OPS, FAIR_DARTS_OPS, check_op_names

COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {}


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    """Print ``payload`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    print(json.dumps(payload) if getattr(args, "json", False) else text)


def _command(subparsers, name: str, help: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help, description=help)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    COMMANDS[name] = run
    return p


# --- sub-commands ------------------------------------------------------------------------------------
# (each module's command is added below by its own add_* function)


# --- parse, flops, plot: from relaxed weights to a genotype; what a genotype costs and looks like ------

OP_SETS = {"fair_darts": FAIR_DARTS_OPS, "darts": DARTS_OPS}
"""``--primitives`` choices: the two published op sets (the columns of a weight matrix)."""


def _first_line(e: Exception) -> str:
    """Errors from numpy / json can span lines; the CLI promises one."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_matrix(path: Path) -> np.ndarray:
    """A relaxed-weight matrix from a .npy file, checked to be a finite 2-D array."""
    if not path.is_file():
        raise UserError(f"weight file not found: {path}")
    try:
        W = np.load(path, allow_pickle=False)  # never unpickle: a .npy from elsewhere may run code
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path} is not a .npy array ({_first_line(e)})") from None
    if not isinstance(W, np.ndarray):
        raise UserError(f"{path} is an .npz archive; save each matrix with np.save(...) as its own .npy")
    if W.ndim != 2 or not np.issubdtype(W.dtype, np.number):
        raise UserError(f"{path} must hold a 2-D numeric (14, n_ops) matrix; got shape {W.shape}, dtype {W.dtype}")
    if not np.isfinite(W).all():
        raise UserError(f"{path} holds NaN or infinite values")
    return W.astype(np.float64)


def _run_config(run_dir: Path) -> dict:
    """``primitives`` and ``relaxation`` from a run dir's config.json, if the search wrote one (at the
    top level or one level down, so a nested ``{"supernet": {...}}`` works too)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({_first_line(e)})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path} must hold a JSON object")
    found: dict = {}
    for d in [cfg] + [v for v in cfg.values() if isinstance(v, dict)]:
        for key in ("primitives", "relaxation"):
            if key in d and key not in found:
                found[key] = d[key]
    return found


def _resolve_primitives(choice: Optional[str], from_config, n_cols: int) -> tuple:
    """The op set (the matrix's columns): ``--primitives``, else config.json, else the column count."""
    if choice:
        prims, source = OP_SETS[choice], f"--primitives {choice}"
    elif from_config is not None:
        source = "config.json"
        if isinstance(from_config, str) and from_config in OP_SETS:
            prims = OP_SETS[from_config]
        elif isinstance(from_config, list) and all(isinstance(p, str) for p in from_config):
            check_op_names(from_config)
            prims = tuple(from_config)
        else:
            raise UserError(f"config.json: 'primitives' must be a list of op names or one of {', '.join(OP_SETS)}")
    else:
        by_count = {len(ops): ops for ops in OP_SETS.values()}  # 7 -> fair_darts, 8 -> darts
        if n_cols not in by_count:
            raise UserError(f"cannot tell the op set of a matrix with {n_cols} columns "
                            f"(7: fair_darts, 8: darts); pass --primitives")
        prims, source = by_count[n_cols], f"{n_cols} columns"
    if len(prims) != n_cols:
        raise UserError(f"the weight matrices have {n_cols} columns but the op set ({source}) has {len(prims)} ops")
    return prims


def _default_method(relaxation, normal, reduce) -> str:
    """The parse rule the weights' authors use: from the run's relaxation if known, else from the weights
    (softmax rows sum to 1; sigmoid rows practically never do)."""
    from .supernet import DEFAULT_PARSE
    if relaxation in DEFAULT_PARSE:
        return DEFAULT_PARSE[relaxation]
    rows_sum_to_one = all(np.allclose(W.sum(axis=1), 1.0, atol=1e-3) for W in (normal, reduce))
    return DEFAULT_PARSE["softmax" if rows_sum_to_one else "sigmoid"]


def describe_genotype(genotype) -> str:
    """Human-readable cells: each node's inputs, the live nodes, the skip count."""
    from .genotype import prune_isolated
    lines = ["(nodes 0, 1: the cell inputs c_{k-2}, c_{k-1}; 2..: intermediate nodes)"]
    for kind, label in (("normal", "normal cell"), ("reduce", "reduction cell")):
        edges = genotype.cell(kind)
        live = genotype.concat(kind)
        lines.append(f"{label}: {len(prune_isolated(edges, genotype.steps))} live edges, live nodes {live}, "
                     f"{genotype.count('skip_connect', kind)} skip_connect")
        for node in range(2, genotype.steps + 2):
            inputs = ", ".join(f"{op}({src})" + ("" if src < 2 or src in live else " [from an isolated node: dropped]")
                               for op, to, src in edges if to == node) or "nothing"
            lines.append(f"  node {node} <- {inputs}" + ("" if node in live else "   [isolated: dropped]"))
    return "\n".join(lines)


def _check_out(path: Path) -> Path:
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: directory {path.parent} does not exist")
    return path


def add_parse(sub) -> None:
    p = _command(sub, "parse", "derive a genotype from relaxed weights (.npy matrices or a search run dir)", run_parse)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="a search run directory holding normal_weight.npy and reduce_weight.npy")
    p.add_argument("--normal", metavar="N.npy", help="(14, n_ops) relaxed weights of the normal cell")
    p.add_argument("--reduce", metavar="R.npy", help="(14, n_ops) relaxed weights of the reduction cell")
    p.add_argument("--method", choices=("darts", "threshold_sparse", "threshold_edge"),
                   help="parse rule (default: darts for softmax weights, threshold_sparse for sigmoid)")
    p.add_argument("--threshold", type=float, default=0.85, help="keep an op only if its weight >= this (0.85)")
    p.add_argument("--primitives", choices=tuple(OP_SETS),
                   help="the op set of the columns (default: the run's config.json, else 7 -> fair_darts, 8 -> darts)")
    p.add_argument("--out", metavar="FILE", help="also write the genotype as JSON to FILE")


def run_parse(args: argparse.Namespace) -> int:
    from .genotype import Genotype
    config: dict = {}
    if args.run_dir is not None:
        if args.normal or args.reduce:
            raise UserError("give either RUN_DIR or --normal/--reduce, not both")
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            raise UserError(f"run directory not found: {run_dir}")
        normal_path, reduce_path = run_dir / "normal_weight.npy", run_dir / "reduce_weight.npy"
        config = _run_config(run_dir)
    elif args.normal and args.reduce:
        normal_path, reduce_path = Path(args.normal), Path(args.reduce)
    else:
        raise UserError("give a RUN_DIR, or both --normal N.npy and --reduce R.npy")
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1] (relaxed weights are); got {args.threshold}")

    normal, reduce = _load_matrix(normal_path), _load_matrix(reduce_path)
    if normal.shape != reduce.shape:
        raise UserError(f"{normal_path} has shape {normal.shape} but {reduce_path} has shape {reduce.shape}")
    primitives = _resolve_primitives(args.primitives, config.get("primitives"), normal.shape[1])
    method = args.method or _default_method(config.get("relaxation"), normal, reduce)
    try:
        genotype = Genotype.from_weights(normal, reduce, primitives, method, args.threshold)
    except ValueError as e:
        raise UserError(f"{normal_path}, {reduce_path}: {e}") from None
    if args.out:
        genotype.save(_check_out(Path(args.out)))

    payload = {**genotype.to_dict(), "method": method, "threshold": args.threshold, "primitives": list(primitives)}
    head = f"genotype by {method}" + ("" if method == "darts" else f" (threshold {args.threshold})")
    text = "\n".join([head, describe_genotype(genotype)] + ([f"wrote {args.out}"] if args.out else []))
    emit(args, payload, text)
    return 0


def _add_arch_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", metavar="NAME", help="a published cell (fairdarts_core.zoo), e.g. FairDARTS_a")
    which.add_argument("--genotype", metavar="FILE", help="a genotype JSON file (e.g. from `fairdarts parse --out`)")


def _load_arch(args: argparse.Namespace):
    """``(label, genotype)`` from ``--arch`` or ``--genotype``."""
    from .genotype import Genotype
    if args.arch:
        from . import zoo
        return args.arch, zoo.get(args.arch)
    return args.genotype, Genotype.load(args.genotype)


def add_flops(sub) -> None:
    p = _command(sub, "flops", "FLOPs (thop, BatchNorm excluded) and parameters of an evaluation network", run_flops)
    _add_arch_arguments(p)
    p.add_argument("--channels", type=int, default=36, help="initial channels (36)")
    p.add_argument("--layers", type=int, default=20, help="cells (20)")


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
    if args.channels < 2 or args.channels % 2 or args.layers < 3:
        raise UserError("--channels must be an even number >= 2 and --layers >= 3")
    label, genotype = _load_arch(args)
    from .analysis import profile_genotype
    from . import zoo
    figures = profile_genotype(genotype, channels=args.channels, layers=args.layers, num_classes=10, resolution=32)
    ours = {k: int(figures[k]) for k in ("flops", "params", "params_with_aux")}
    # Published figures are for the 36-channel, 20-cell network: beside any other size they would mislead.
    published = zoo.published(args.arch) if args.arch and (args.channels, args.layers) == (36, 20) else {}

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
    p = _command(sub, "plot", "draw a genotype's cells (graphviz) to .svg, .png or .pdf", run_plot)
    _add_arch_arguments(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output drawing: cell.svg, cell.png or cell.pdf")
    p.add_argument("--cell", choices=("normal", "reduce", "both"), default="both", help="which cell (both)")


def run_plot(args: argparse.Namespace) -> int:
    from .viz import save_cell
    label, genotype = _load_arch(args)
    out = _check_out(Path(args.out))
    if args.cell == "both":
        save_cell(genotype, out, title=label)
    else:
        save_cell(genotype.cell(args.cell), out, title=f"{label}: {args.cell} cell", steps=genotype.steps)
    emit(args, {"arch": label, "cell": args.cell, "out": str(out)}, f"wrote {out}")
    return 0


# --- mechanism: the deep chain of mixed edges (skip vs a convolution) ----------------------------------

def add_mechanism(sub) -> None:
    p = _command(sub, "mechanism", "Train a deep chain of mixed edges (skip vs a conv) bi-level on Fashion-MNIST "
                 "and report how skip's weight ends up (the collapse mechanism).", run_mechanism)
    p.add_argument("--depth", type=int, default=16, help="number of mixed edges in the chain")
    p.add_argument("--relaxation", choices=["softmax", "sigmoid"], default="softmax")
    p.add_argument("--ops", default="skip_connect,conv_3x3", help="comma-separated candidate ops (with skip_connect)")
    p.add_argument("--steps", type=int, default=500, help="bi-level steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch-lr", type=float, default=3e-3)
    p.add_argument("--subset", type=int, default=4000, help="Fashion-MNIST images (half weights, half alpha)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: these tensors are tiny, more threads only contend)")
    p.add_argument("--out", type=Path, help="write the trajectory and its provenance as JSON")


def run_mechanism(args: argparse.Namespace) -> int:
    import torch

    from .mechanism import ChainConfig, run_chain, skip_summary
    from .search import atomic_write_text
    if args.threads:
        torch.set_num_threads(args.threads)
    from .provenance import provenance
    cfg = ChainConfig(depth=args.depth, relaxation=args.relaxation, ops=tuple(args.ops.split(",")),
                      steps=args.steps, seed=args.seed, arch_lr=args.arch_lr, subset=args.subset)
    start = time.time()
    result = run_chain(cfg)
    result["summary"] = summary = skip_summary(result)
    if args.out:
        result["provenance"] = provenance(["fairdarts"] + sys.argv[1:], time.time() - start)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result) + "\n")  # a killed run never leaves half a file
    emit(args, summary, f"depth {summary['depth']}, {args.relaxation}: skip weight {summary['skip_weight']:.3f}, "
         f"best other op {summary['other_weight']:.3f}, skip wins {summary['skip_wins']}/{summary['depth']} layers, "
         f"train acc {summary['train_acc']:.3f}")
    return 0


# --- search, train, evaluate: the engine (fairdarts_core.search / .train) ------------------------------

def _default_out(kind: str, preset: str) -> Path:
    import time
    return Path("runs") / f"{kind}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_run_dir(out: Path, resume: bool) -> None:
    if resume and not (out / "checkpoint.pt").is_file():
        raise UserError(f"nothing to resume: no checkpoint in {out}")
    if not resume and (out / "checkpoint.pt").is_file():
        raise UserError(f"{out} already holds a run: add --resume to continue it, or choose another --out")


def _logger(args: argparse.Namespace):
    """Epoch lines on stdout (stderr with --json, so stdout stays one JSON object); a progress bar on
    an interactive terminal only."""
    stream = sys.stderr if args.json else sys.stdout
    return (lambda line: print(line, file=stream, flush=True)), sys.stderr.isatty() and not args.json


def add_search(sub) -> None:
    from .presets import SEARCH_PRESETS
    p = _command(sub, "search", "Run a DARTS / Fair DARTS search (one line per epoch; history, weights, "
                 "genotype and checkpoints in the run directory).", run_search_cmd)
    p.add_argument("--preset", required=True, choices=list(SEARCH_PRESETS), help="named settings (fairdarts_core.presets)")
    p.add_argument("--relaxation", choices=["sigmoid", "softmax"],
                   help="override the preset's relaxation (the parse rule follows unless set with --set parse_method=...)")
    p.add_argument("--zero-one-weight", type=float, metavar="W", help="weight of the zero-one loss (0: off)")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--out", type=Path, metavar="DIR", help="run directory (default: runs/search-PRESET-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any SearchConfig field, e.g. --set subset=2560 --set skip_noise=true")


def run_search_cmd(args: argparse.Namespace) -> int:
    from .presets import SearchConfig, apply_sets, get_search_preset
    from .provenance import record_session
    from .search import run_search
    overrides = apply_sets(SearchConfig, args.set)
    if args.relaxation:
        overrides.setdefault("parse_method", None)  # the new relaxation's own rule
        overrides["relaxation"] = args.relaxation
    if args.zero_one_weight is not None:
        overrides["zero_one_weight"] = args.zero_one_weight
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config = get_search_preset(args.preset, **overrides)
    if args.resume and not args.out:
        raise UserError("--resume needs --out DIR (the run to continue)")
    out = args.out or _default_out("search", args.preset)
    _check_run_dir(out, args.resume)
    log, progress = _logger(args)
    start = time.time()
    result = run_search(config, out, resume=args.resume, progress=progress, log=log)
    record_session(out, ["fairdarts"] + sys.argv[1:], time.time() - start)  # command, commit, machine, time
    last = {k: v for k, v in result.history[-1].items() if k not in ("normal_weight", "reduce_weight")} if result.history else {}
    payload = {"out": str(out), "preset": args.preset, "epochs": len(result.history),
               "genotype": result.genotype.to_dict(), "last": last,
               "seconds": sum(r["seconds"] for r in result.history)}
    emit(args, payload, f"wrote {out}\n{describe_genotype(result.genotype)}\n"
         f"next: fairdarts parse {out}   |   fairdarts train --genotype {out / 'genotype.json'} --preset ...")
    return 0


def add_train(sub) -> None:
    from .presets import TRAIN_PRESETS
    p = _command(sub, "train", "Retrain the evaluation network of a cell (a published one, or a genotype file); "
                 "runs data-parallel under torchrun.", run_train_cmd)
    _add_arch_arguments(p)
    p.add_argument("--preset", required=True, choices=list(TRAIN_PRESETS), help="named settings (fairdarts_core.presets)")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--out", type=Path, metavar="DIR", help="run directory (default: runs/train-PRESET-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field, e.g. --set autoaugment=true")


def run_train_cmd(args: argparse.Namespace) -> int:
    import os

    from .presets import TrainConfig, apply_sets, get_train_preset
    from .train import resolve_arch, run_train
    overrides = apply_sets(TrainConfig, args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config = get_train_preset(args.preset, **overrides)
    label, genotype = (args.arch, resolve_arch(args.arch)) if args.arch else (args.genotype, resolve_arch(args.genotype))
    if args.resume and not args.out:
        raise UserError("--resume needs --out DIR (the run to continue)")
    out = args.out or _default_out("train", args.preset)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        _check_run_dir(out, args.resume)
    log, progress = _logger(args)
    start = time.time()
    try:
        result = run_train(config, genotype, out, resume=args.resume, progress=progress, log=log)
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        from .provenance import record_session
        record_session(out, ["fairdarts"] + sys.argv[1:], time.time() - start)  # command, commit, machine, time
        last = result.history[-1] if result.history else {}
        payload = {"out": str(out), "arch": label, "preset": args.preset, "epochs": len(result.history),
                   "world_size": int(os.environ.get("WORLD_SIZE", "1")), "test_acc": last.get("test_acc"),
                   "train_acc": last.get("train_acc"), "seconds": sum(r["seconds"] for r in result.history)}
        emit(args, payload, f"wrote {out}: test accuracy {last.get('test_acc', float('nan')):.4f} "
             f"after {len(result.history)} epochs")
    return 0


def add_evaluate(sub) -> None:
    p = _command(sub, "evaluate", "Test accuracy of a checkpoint: one from `fairdarts train`, or the authors' "
                 "released .tar files (name the cell with --arch).", run_evaluate_cmd)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="PATH")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--arch", metavar="NAME", help="the published cell of the checkpoint, e.g. FairDARTS_a")
    which.add_argument("--genotype", metavar="FILE", help="a genotype JSON file")
    p.add_argument("--dataset", choices=["cifar10", "cifar100", "fashion-mnist"],
                   help="test set (default: the checkpoint's, CIFAR-10 for the authors' files)")
    p.add_argument("--data-dir", metavar="DIR", help="where data sets are (default: data/)")
    p.add_argument("--subset", type=int, metavar="N", help="evaluate on a class-balanced subset of N test images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")


def run_evaluate_cmd(args: argparse.Namespace) -> int:
    from .train import evaluate_checkpoint
    r = evaluate_checkpoint(args.checkpoint, args.arch or args.genotype, args.dataset, args.data_dir,
                            args.subset, args.batch_size, args.device)
    emit(args, r, f"{r['arch']} on {r['dataset']} ({r['n']} test images): accuracy {r['acc']:.4f}, loss {r['loss']:.4f}")
    return 0


def add_bench(sub) -> None:
    p = _command(sub, "bench", "Time one first-order bi-level search step of the reference and the fast "
                 "supernet path side by side, with the peak memory of each (search-step), or one whole "
                 "CIFAR-sized search epoch on synthetic data (search-epoch).", run_bench)
    from .bench import add_arguments
    add_arguments(p)


def run_bench(args: argparse.Namespace) -> int:
    from .bench import run
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairdarts", description="Fair DARTS, hands-on: search, parse, "
                                     "retrain and inspect differentiable architecture search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in ADDERS:
        add(sub)
    return parser


ADDERS: List[Callable] = [add_search, add_parse, add_flops, add_plot, add_mechanism, add_train, add_evaluate, add_bench]
"""Functions ``add(subparsers)``, one per sub-command, in the order ``--help`` lists them."""


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args) or 0
    except (UserError, ValueError, OSError, KeyError) as e:  # OSError: missing files, directories, permissions
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"fairdarts {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fairdarts {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
