"""A run on disk: one home for everything a search, a retraining or a chain experiment writes and reads.

A run directory (search, train) holds ``config.json``, ``history.json``, ``genotype.json``, the
relaxed weights of a search (``normal_weight.npy`` / ``reduce_weight.npy``, the authors' format),
``checkpoint.pt`` after every epoch and ``provenance.json`` (command, commit, date, machine, numerics,
wall time of every process that wrote it). A chain experiment (:mod:`fairdarts_core.mechanism`) is a
single JSON file. This module:

- **locks** a run for one writer (:func:`open_run`, :func:`lock_file`): an OS-level ``fcntl.flock`` on a
  lock file, so a second process on the same run is refused at once with one line naming the holder, and
  a dead holder never blocks (the kernel drops its lock);
- **writes atomically**: every file goes to a temporary file in the same directory and is renamed over the
  old one, so a kill never leaves half a file; a failed write (disk full) removes its temporary file and
  keeps the previous file; temporary files of a killed process are removed when the run is opened again;
- saves and loads **checkpoints** (``weights_only=True``: tensors and plain data, never code), with the
  RNG state of torch, numpy and Python, and checks the config when a run is resumed;
- records **provenance**, including the numerics signature (torch version, CPU kernels) that decides
  whether a re-run can be bit-exact (README, "Reproducible");
- **loads a finished run without its checkpoint** (recorded runs in ``data/runs/`` commit none):
  :func:`load_search_run`, :func:`load_train_run`, :func:`load_mechanism_run`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch


PathLike = Union[str, Path]
CHECKPOINT_VERSION = 1
LOCK_NAME = ".lock"
TMP_MARK = ".tmp"

CHECKPOINT_KEYS = {
    "search": ("epoch", "config", "model", "w_optimizer", "a_optimizer", "scheduler", "history", "rng"),
    "train": ("epoch", "config", "genotype", "model", "optimizer", "scheduler", "history", "rng"),
}
"""What each kind of checkpoint must hold (besides ``kind`` and ``version``)."""


class RunBusyError(ValueError):
    """Another live process writes this run."""


# --- atomic writes ------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _atomic(path: PathLike, write: Callable[[Path], None], suffix: str = "") -> None:
    """Write through ``write(tmp_path)`` to a temporary file beside ``path``, then rename it over ``path``.

    A kill never leaves half a file; a failed write (e.g. disk full) removes the temporary file, keeps the
    previous ``path`` and raises one line.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and "write" in str(e).lower()):
            reason = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else _first_line(e)
            kept = "the previous file is kept" if path.exists() else "nothing was written"
            raise OSError(f"cannot write {path}: {reason}; {kept}") from None
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: PathLike, obj: Any, indent: Optional[int] = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` atomically."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_npy(path: PathLike, array: np.ndarray) -> None:
    """``np.save`` atomically."""
    _atomic(path, lambda tmp: np.save(tmp, array), suffix=".npy")  # np.save would append .npy itself


def remove_temp_files(directory: PathLike) -> List[Path]:
    """Remove the temporary files that killed writers left in ``directory``; returns them."""
    left = [p for p in Path(directory).glob(f".*{TMP_MARK}*") if p.is_file()]
    for p in left:
        with contextlib.suppress(OSError):
            p.unlink()
    return left


# --- one writer per run ---------------------------------------------------------------------------------
def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"process {info.get('pid')} ({info.get('command', '?')}, since {info.get('since', '?')})"


@contextlib.contextmanager
def _flock(lock_path: Path, what: str, command: Optional[Sequence[str]]) -> Iterator[None]:
    import fcntl

    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusyError(f"{what} is being written by {_holder(lock_path)}; wait for it or choose another "
                               f"--out") from None
        info = {"pid": os.getpid(), "command": _command_line(command),
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing drops the lock (so does the death of the process)


def lock_file(path: PathLike, command: Optional[Sequence[str]] = None):
    """A context manager that holds the one-writer lock of a single-file result ``path`` (a chain
    experiment's JSON): the lock file is ``.NAME.lock`` beside it. Refused at once if held."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: directory {path.parent} does not exist")
    return _flock(path.with_name(f".{path.name}.lock"), str(path), command)


@dataclass
class RunDir:
    """An open run directory, locked for this process (see :func:`open_run`)."""

    path: Path
    kind: str

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def write_json(self, name: str, obj: Any, indent: Optional[int] = None) -> None:
        atomic_write_json(self.path / name, obj, indent)

    def save_npy(self, name: str, array: np.ndarray) -> None:
        atomic_save_npy(self.path / name, array)

    def save_checkpoint(self, state: Dict[str, Any]) -> None:
        """Write the checkpoint (last, after the files it describes: it never claims an epoch whose files
        are not written)."""
        atomic_save({"kind": self.kind, "version": CHECKPOINT_VERSION, **state}, self.checkpoint_path)

    def load_checkpoint(self) -> dict:
        return load_checkpoint_file(self.checkpoint_path, self.kind)


RUN_FILES = ("config.json", "history.json", "checkpoint.pt")


@contextlib.contextmanager
def open_run(path: PathLike, kind: str, resume: bool = False,
             command: Optional[Sequence[str]] = None) -> Iterator[RunDir]:
    """Open run directory ``path`` for writing a ``kind`` run (``"search"`` or ``"train"``).

    Creates it, takes its lock (a second writer is refused with :class:`RunBusyError`), removes temporary
    files of a killed writer, and refuses to start a new run over an existing one (``resume=False``) or
    to resume a run that has no checkpoint. On leaving, the command, machine and wall time of this process
    are appended to ``provenance.json`` if the run has written anything.
    """
    path = Path(path)
    if kind not in CHECKPOINT_KEYS:
        raise ValueError(f"unknown run kind {kind!r}; choose one of {', '.join(CHECKPOINT_KEYS)}")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a run directory")
    if resume and not path.is_dir():
        raise ValueError(f"nothing to resume: {path} does not exist")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    start = time.time()
    try:
        with _flock(path / LOCK_NAME, f"run directory {path}", command):
            run = RunDir(path, kind)
            existing = [name for name in RUN_FILES if (path / name).exists()]
            if resume and not run.has_checkpoint():
                raise ValueError(f"nothing to resume: no checkpoint.pt in {path}")
            if not resume and existing:
                raise ValueError(f"{path} already holds a run ({', '.join(existing)}): add --resume to continue "
                                 f"it, or choose another --out")
            remove_temp_files(path)
            try:
                yield run
            finally:
                if any((path / name).exists() for name in RUN_FILES):
                    record_provenance(path, command, time.time() - start)
    except BaseException:
        if created and all(p.name == LOCK_NAME for p in path.iterdir()):
            with contextlib.suppress(OSError):
                (path / LOCK_NAME).unlink()
                path.rmdir()
        raise


# --- checkpoints ----------------------------------------------------------------------------------------
def load_checkpoint_file(path: PathLike, kind: str) -> dict:
    """Load one of our checkpoints (``kind``: ``"search"`` or ``"train"``) with ``weights_only=True``.

    A missing, corrupt or foreign file, or one that lacks a key, is a one-line ``ValueError``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path} (corrupt or not a checkpoint): {_first_line(e)[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise ValueError(f"{path} is not a fairdarts {kind} checkpoint")
    missing = [k for k in CHECKPOINT_KEYS[kind] if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)} (damaged or edited by hand); "
                         f"it cannot be resumed")
    return ckpt


def load_state(module: torch.nn.Module, state_dict: Any, label: str) -> None:
    """``module.load_state_dict`` with a one-line error when the checkpoint holds another model."""
    from .network import check_state_dict

    if not isinstance(state_dict, dict):
        raise ValueError(f"the checkpoint's {label} is not a state dict")
    check_state_dict(module, state_dict, label)
    module.load_state_dict(state_dict)


def load_optimizer_state(optimizer: Any, state: Any, label: str) -> None:
    """``optimizer.load_state_dict`` (or a scheduler's) with a one-line error for a foreign state."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
        raise ValueError(f"the checkpoint's {label} does not fit this run: {_first_line(e)[:200]}") from None


def check_resume_config(saved: Dict[str, Any], now: Dict[str, Any], free: Sequence[str], where: PathLike) -> None:
    """Refuse to resume ``where`` if the config differs from the saved one in a field outside ``free``
    (fields that do not change the math of the run, e.g. the device)."""
    diff = [k for k in now if k not in free and saved.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise ValueError(f"cannot resume {where}: the config differs in {', '.join(diff)} "
                         f"(e.g. {k}: saved {saved.get(k)!r}, now {now[k]!r})")


# --- random state ---------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def rng_state() -> dict:
    """The state of every random generator a run draws from (torch, numpy, Python; CUDA if present), as
    tensors and lists that ``weights_only`` checkpoints can hold."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
             "python": _to_lists(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`; a damaged state is a one-line ``ValueError``."""
    try:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n[0], n[1].numpy(), *n[2:]))
        random.setstate(_to_tuples(state["python"]))
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as e:
        raise ValueError(f"the checkpoint's random state is damaged: {_first_line(e)[:200]}") from None
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- provenance -----------------------------------------------------------------------------------------
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8")


def _cpu_info() -> Dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"cpu_model": model, "cpu_isa": [f for f in _ISA_FLAGS if f in flags]}


def numerics_signature() -> Dict[str, Any]:
    """What decides how this process rounds: torch's version, the CPU kernels ATen dispatches to
    (``ATEN_CPU_CAPABILITY`` can lower them), the instruction sets oneDNN may use (``ONEDNN_MAX_CPU_ISA``),
    the CPU, and the number of intra-op threads (they change the order of sums).

    Two runs with equal signatures run the same kernels on the same inputs: a recorded search re-runs bit
    for bit. Elsewhere it diverges at the rounding level (README, "Reproducible")."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"), **_cpu_info(),
            "torch_threads": torch.get_num_threads()}


def git_commit(repo: Optional[Path] = None) -> Optional[str]:
    """The commit of the checkout this library runs from (``+dirty`` when it has local changes)."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) if sha else None


def _command_line(argv: Optional[Sequence[str]]) -> str:
    return " ".join(shlex.quote(str(a)) for a in (sys.argv if argv is None else argv))


def provenance(argv: Optional[Sequence[str]] = None, wall_seconds: Optional[float] = None) -> dict:
    """A JSON-serialisable record of how and where a result was produced."""
    from . import __version__

    return {
        "command": _command_line(argv),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "numerics": numerics_signature(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairdarts_core": __version__,
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1),
    }


def record_provenance(run_dir: PathLike, argv: Optional[Sequence[str]] = None,
                      wall_seconds: Optional[float] = None) -> dict:
    """Append this process's provenance to ``run_dir/provenance.json`` (a run resumed by another process
    gets one entry per process, under ``sessions``), atomically. Returns the whole record."""
    path = Path(run_dir) / "provenance.json"
    record = _read_json(path) if path.is_file() else {"sessions": []}
    record["sessions"].append(provenance(argv, wall_seconds))
    record["wall_seconds_total"] = round(sum(s["wall_seconds"] or 0 for s in record["sessions"]), 1)
    atomic_write_json(path, record, indent=1)
    return record


# --- finished runs ----------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON ({_first_line(e)[:200]})") from None


def _run_dir(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"run directory not found: {path}")
    return path


@dataclass
class SearchRun:
    """A search run as it lies on disk (no checkpoint needed)."""

    path: Path
    config: Any                  # SearchConfig
    history: List[dict]          # one record per finished epoch (search.epoch_record)
    genotype: Any                # derived from the latest relaxed weights (Genotype, NB201Genotype)
    provenance: Optional[dict]   # None while the run is unfinished or was written by a notebook
    weights: Dict[str, np.ndarray]  # the latest relaxed weights by name (spaces.SearchSpace.weight_names)

    @property
    def normal_weight(self) -> Optional[np.ndarray]:
        """DARTS space: the latest relaxed weights of the normal cell, (14, n_ops)."""
        return self.weights.get("normal_weight")

    @property
    def reduce_weight(self) -> Optional[np.ndarray]:
        """DARTS space: the latest relaxed weights of the reduction cell, (14, n_ops)."""
        return self.weights.get("reduce_weight")

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def finished(self) -> bool:
        return self.epochs_done == self.config.epochs

    def supernet(self, device: str = "cpu"):
        """The supernet of the latest checkpoint (needs ``checkpoint.pt``, which recorded runs do not keep)."""
        from .data import dataset_info
        from .search import build_supernet

        ckpt = load_checkpoint_file(self.path / "checkpoint.pt", "search")
        info = dataset_info(self.config.dataset)
        model = build_supernet(self.config, info.in_channels, info.num_classes)
        load_state(model, ckpt["model"], f"the supernet of {self.path}")
        return model.to(device)


@dataclass
class TrainRun:
    """A retraining run as it lies on disk (no checkpoint needed)."""

    path: Path
    config: Any                  # TrainConfig
    history: List[dict]
    genotype: Any                # Genotype or NB201Genotype
    provenance: Optional[dict]

    @property
    def test_acc(self) -> Optional[float]:
        return self.history[-1]["test_acc"] if self.history else None

    @property
    def finished(self) -> bool:
        return len(self.history) == self.config.epochs


def _optional_json(path: Path) -> Optional[Any]:
    return _read_json(path) if path.is_file() else None


def _history(path: Path) -> List[dict]:
    history = _read_json(path)
    if not isinstance(history, list) or not all(isinstance(r, dict) and "epoch" in r for r in history):
        raise ValueError(f"{path} is not a run history (a list of epoch records)")
    if [r["epoch"] for r in history] != list(range(1, len(history) + 1)):
        raise ValueError(f"{path}: the epochs are not 1, 2, ... in order")
    return history


def load_search_run(path: PathLike) -> SearchRun:
    """Read a search run directory: config, history, genotype, provenance and the latest relaxed weights."""
    from .presets import SearchConfig
    from .spaces import genotype_from_dict, get_space

    path = _run_dir(path)
    config = SearchConfig.from_dict(_read_json(path / "config.json"))
    history = _history(path / "history.json")
    genotype = genotype_from_dict(_read_json(path / "genotype.json"))
    weights = {}
    for name in get_space(config.space).weight_names:
        file = path / f"{name}.npy"
        if file.is_file():
            weights[name] = np.load(file, allow_pickle=False)
        elif history:
            weights[name] = np.asarray(history[-1][name], dtype=np.float32)
    return SearchRun(path, config, history, genotype, _optional_json(path / "provenance.json"), weights)


def load_train_run(path: PathLike) -> TrainRun:
    """Read a retraining run directory: config, history, genotype and provenance."""
    from .presets import TrainConfig

    path = _run_dir(path)
    from .spaces import genotype_from_dict

    return TrainRun(path, TrainConfig.from_dict(_read_json(path / "config.json")), _history(path / "history.json"),
                    genotype_from_dict(_read_json(path / "genotype.json")), _optional_json(path / "provenance.json"))


def load_mechanism_run(path: PathLike) -> dict:
    """Read a chain experiment's JSON (:func:`fairdarts_core.mechanism.run_chain`): ``config`` (checked by
    building a ``ChainConfig``), ``records``, ``summary`` and ``provenance`` (when written by the CLI)."""
    from .mechanism import ChainConfig

    path = Path(path)
    run = _read_json(path)
    if not isinstance(run, dict) or not isinstance(run.get("records"), list) or "config" not in run:
        raise ValueError(f"{path} is not a chain experiment result (config, records)")
    ChainConfig.from_dict(run["config"])
    return run


def load_run(path: PathLike):
    """A finished or unfinished run of any kind: a chain experiment's JSON file, or a search or train
    run directory (told apart by its config)."""
    path = Path(path)
    if path.is_file():
        return load_mechanism_run(path)
    config = _read_json(_run_dir(path) / "config.json")
    return load_search_run(path) if "relaxation" in config else load_train_run(path)


def finished_runs(directory: PathLike) -> List[Path]:
    """The finished runs under ``directory`` (e.g. ``data/runs/collapse``), sorted: run directories and
    chain-experiment JSON files that carry their provenance (a run still in progress has none yet)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and (p / "provenance.json").is_file()]
    found += [p for p in directory.glob("*.json") if "provenance" in _read_json(p)]
    return sorted(found)


def genotype_source(run: TrainRun) -> Optional[Path]:
    """The genotype file a recorded retraining started from: the ``--genotype FILE`` of the first command in
    its provenance, as written there (relative to where it ran); None for ``--arch`` or no provenance."""
    sessions = (run.provenance or {}).get("sessions") or [{}]
    try:
        words = shlex.split(str(sessions[0].get("command", "")))
    except ValueError:  # unbalanced quotes: not a command this library wrote
        return None
    return Path(words[words.index("--genotype") + 1]) if "--genotype" in words[:-1] else None


def retrained_from(search: SearchRun, retrains: Sequence[TrainRun]) -> List[TrainRun]:
    """The retrainings in ``retrains`` whose genotype file lies in ``search``'s run directory (matched by the
    last two parts of the path, e.g. ``ablation/w100_s0``, so that both may be read from any folder), sorted
    by training seed."""
    key = search.path.parts[-2:]
    found = [r for r in retrains if (src := genotype_source(r)) is not None and src.parent.parts[-2:] == key]
    return sorted(found, key=lambda r: int(r.config.seed))
