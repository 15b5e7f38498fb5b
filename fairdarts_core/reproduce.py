"""Re-checking a recorded run: bit for bit where the numerics are the recorder's, by its conclusions elsewhere.

A recorded run (a search directory, a chain experiment's JSON) is re-run from its recorded config for its
first epochs or steps and compared with what it recorded. How it is compared depends on where it runs:

- **exact**: when this process's numerics signature (:func:`fairdarts_core.runs.numerics_signature`:
  torch version, the CPU kernels of ATen and oneDNN, the CPU, the thread count) equals the one the run
  recorded, the same code runs the same kernels on the same inputs, and every recorded number (relaxed
  weights, losses, accuracies, genotype) must come back **bit for bit**.
- **statistical**: on any other machine the re-run diverges from the record at the rounding level, and
  Adam turns rounding-level differences of near-zero architecture gradients into full-size steps (DARTS
  Alg. 1 with Adam on alpha; measured: relaxed weights off by up to 0.47 after two epochs). The re-run
  then has to agree with the record on the statistics the run's conclusions rest on
  (:func:`search_statistics`, :func:`chain_statistics`: mean weight of every op, largest weight, skip
  share, losses, accuracies) within ``K`` times their seed-to-seed spread, measured from the recorded
  runs themselves (:func:`seed_spread`).

``mode="auto"`` picks exact where the signatures are equal, statistical elsewhere. Both modes first check
the run's files against each other (:func:`check_search_files`, :func:`check_chain_file`). Every check
returns a list of problems, one line each; an empty list means the run holds.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import runs as _runs
from .analysis import skip_share
from .genotype import Genotype

PathLike = Union[str, Path]

RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"
"""The repository's recorded runs (present in a checkout; an installed package has none)."""
SEARCH_DIRS = ("collapse", "levers")
CHAIN_DIRS = ("mechanism", "mechanism_long")

MODES = ("auto", "exact", "statistical")
NUMERICS_FIELDS = ("torch", "cpu_capability", "onednn_max_isa", "cpu_isa", "cpu_model", "torch_threads")
"""The fields of a numerics signature that decide how a process rounds (a note added to a recorded
signature, e.g. how it was established, is not one of them)."""

K = 6.0
"""Tolerance of the statistical check, in seed-to-seed standard deviations (see README, "Reproducible",
for the measurements behind it)."""

DISCRETE_UNITS = {"skip share": "edges", "above threshold": "count", "skip wins": "layers"}
"""Statistics that move in whole steps (an edge, a weight, a layer): their spread is never taken below
half a step, which three seeds that happen to agree cannot resolve."""


# --- numerics --------------------------------------------------------------------------------------------
def same_numerics(recorded: Optional[Mapping[str, Any]], current: Mapping[str, Any]) -> bool:
    """Whether two numerics signatures round alike (every field of :data:`NUMERICS_FIELDS` equal).

    A missing signature (runs recorded before signatures were kept) or field never matches."""
    if not recorded:
        return False
    return all(f in recorded and f in current and recorded[f] == current[f] for f in NUMERICS_FIELDS)


def recorded_numerics(provenance: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The numerics signature a run was recorded with: of a chain experiment's provenance, or the one all
    sessions of a run directory share; None when a session has none or two sessions differ."""
    if not provenance:
        return None
    sessions = provenance.get("sessions", [provenance])
    found = [s.get("numerics") for s in sessions]
    if not found or any(not n for n in found):
        return None
    first = {f: found[0].get(f) for f in NUMERICS_FIELDS}
    return dict(found[0]) if all(same_numerics(first, n) for n in found) else None


def current_numerics(threads: Optional[int] = None) -> Dict[str, Any]:
    """This process's numerics signature, as it will be while running with ``threads`` threads."""
    sig = _runs.numerics_signature()
    if threads:
        sig["torch_threads"] = int(threads)
    return sig


def _mode(mode: str, recorded: Optional[Mapping[str, Any]], current: Mapping[str, Any]) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown re-check mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "exact" if same_numerics(recorded, current) else "statistical"


# --- the statistics a run's conclusions rest on ------------------------------------------------------------
def _family(name: str) -> str:
    return name.split("[", 1)[0]


def search_statistics(record: Mapping[str, Any], config: Any) -> Dict[str, float]:
    """The statistics of one epoch of a search (``record``: a history record) that chapter 2 reads:
    per cell the mean relaxed weight of every op over the edges, the largest weight, the skip share (the
    fraction of edges whose strongest op is ``skip_connect``, Fair DARTS Fig. 1), for sigmoid the number
    of weights at or above the parse threshold (Fair DARTS Sec. 4.3); the mean losses and accuracies."""
    prims = list(config.primitives)
    out: Dict[str, float] = {}
    for cell in ("normal", "reduce"):
        W = np.asarray(record[f"{cell}_weight"], dtype=np.float64)
        for k, op in enumerate(prims):
            out[f"mean weight[{cell}, {op}]"] = float(W[:, k].mean())
        out[f"largest weight[{cell}]"] = float(W.max())
        if "skip_connect" in prims:
            out[f"skip share[{cell}]"] = skip_share(W, prims)
        if config.relaxation == "sigmoid":
            out[f"above threshold[{cell}]"] = float((W >= config.threshold).sum())
    for split in ("train", "val"):
        for what, family in (("loss", "loss"), ("acc", "accuracy")):
            if record.get(f"{split}_{what}") is not None:
                out[f"{family}[{split}]"] = float(record[f"{split}_{what}"])
    return out


def chain_statistics(record: Mapping[str, Any], config: Mapping[str, Any]) -> Dict[str, float]:
    """The statistics of one record of a chain experiment (:mod:`fairdarts_core.mechanism`): the mean
    weight of every op over the layers, the share of layers where skip's weight exceeds every other op's
    (:func:`fairdarts_core.mechanism.skip_summary`), and the training accuracy. (Not the largest weight:
    it grows with the depth, so chains of another depth cannot lend it their spread.)"""
    ops = list(config["ops"])
    W = np.asarray(record["weights"], dtype=np.float64)
    out = {f"mean weight[{op}]": float(W[:, k].mean()) for k, op in enumerate(ops)}
    s = ops.index("skip_connect")
    out["skip wins[layers]"] = float((W[:, s] > np.delete(W, s, axis=1).max(1)).mean())
    out["accuracy[train]"] = float(record["train_acc"])
    return out


def _unit(name: str, shape: Tuple[int, int]) -> float:
    """One step of a discrete statistic of a (rows, ops) weight matrix, 0 for a continuous one."""
    kind = DISCRETE_UNITS.get(_family(name))
    return {"edges": 1.0 / shape[0], "layers": 1.0 / shape[0], "count": 1.0}.get(kind, 0.0)


# --- seed-to-seed spread ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """The statistics of one recorded run, epoch by epoch (or record by record)."""

    path: Path
    setting: Tuple          # everything that changes the run's math except its seed
    relaxation: str
    at: List[int]           # epoch or step of each entry of ``stats``
    stats: List[Dict[str, float]]


@dataclass(frozen=True)
class Spread:
    """Pooled seed-to-seed standard deviation of each family of statistics (``"mean weight"``, ``"loss"``,
    ...), per relaxation and epoch (or step): ``sd[(relaxation, at, family)] = (sd, degrees of freedom)``;
    ``seeded``: the settings recorded with two seeds or more."""

    kind: str
    sd: Dict[Tuple[str, int, str], Tuple[float, int]]
    seeded: FrozenSet[Tuple] = frozenset()

    def of(self, setting: Tuple, relaxation: str, at: int, name: str, unit: float = 0.0) -> Tuple[float, str]:
        """The spread statistic ``name`` of a run of ``setting`` is measured against at ``at``, and what
        it is. A setting with seeds of its own: the pooled spread at the same epoch (step). A setting with
        one seed: the widest pooled spread of its relaxation at any epoch (step); a lever meant to move a
        search faster (a larger architecture learning rate, more data) is further along after two epochs
        than the seeded presets are. The spread of a discrete statistic is at least half its ``unit``.
        A ``ValueError`` when no recorded seeds measure it."""
        family, where = _family(name), "epoch" if self.kind == "search" else "step"
        if setting in self.seeded:
            key = (relaxation, at, family)
            if key not in self.sd:
                raise ValueError(f"the recorded seeds of this {relaxation} {self.kind} do not measure the spread of "
                                 f"{family} at {where} {at}")
            sd, what = self.sd[key][0], "the seed spread"
        else:
            widest = [v[0] for (r, _, f), v in self.sd.items() if r == relaxation and f == family]
            if not widest:
                raise ValueError(f"no recorded {relaxation} {self.kind} with two seeds or more measures the spread "
                                 f"of {family}")
            sd, what = max(widest), f"the widest seed spread of the {relaxation} {self.kind}es (one seed here)"
        return max(sd, unit / 2), what


def seed_spread(samples: Iterable[Sample], kind: str) -> Spread:
    """Pool the seed-to-seed variance of every family of statistics over all settings recorded with two
    seeds or more, per relaxation and epoch (step): sum of squared deviations from each setting's mean,
    over the sum of (seeds - 1).

    Why pooled and not per setting: three seeds give an estimate with two degrees of freedom, which is
    often far too small (measured: at depth 32, a re-run with other kernels landed 7 of its own setting's
    standard deviations from its record, and 1.2 pooled ones).
    """
    groups: Dict[Tuple, List[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.setting].append(s)
    ss: Dict[Tuple[str, int, str], float] = defaultdict(float)
    dof: Dict[Tuple[str, int, str], int] = defaultdict(int)
    seeded = frozenset(key for key, group in groups.items() if len(group) >= 2)
    for key in seeded:
        group = groups[key]
        for at in sorted(set.intersection(*(set(s.at) for s in group))):
            rows = [s.stats[s.at.index(at)] for s in group]
            for name in set.intersection(*(set(r) for r in rows)):
                x = np.array([r[name] for r in rows])
                pooled = (group[0].relaxation, at, _family(name))
                ss[pooled] += float(((x - x.mean()) ** 2).sum())
                dof[pooled] += len(x) - 1
    return Spread(kind, {key: (math.sqrt(ss[key] / dof[key]), dof[key]) for key in ss}, seeded)


def search_setting(config: Any) -> Tuple:
    """What makes two searches the same experiment but for the seed: every config field that changes the
    math (not the seed, device, data directory, formulation or thread count)."""
    from .search import RESUME_FREE

    d = config.to_dict()
    return tuple(sorted((k, repr(v)) for k, v in d.items() if k not in set(RESUME_FREE) | {"seed"}))


def chain_setting(config: Mapping[str, Any]) -> Tuple:
    """What makes two chain experiments the same but for the seed (every field but seed and data_dir)."""
    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in ("seed", "data_dir")))


def search_sample(run: "_runs.SearchRun", epochs: Optional[int] = None) -> Sample:
    """The statistics of a recorded search's first ``epochs`` epochs (all: None)."""
    history = run.history[:epochs] if epochs else run.history
    return Sample(Path(run.path), search_setting(run.config), run.config.relaxation, [r["epoch"] for r in history],
                  [search_statistics(r, run.config) for r in history])


def chain_sample(path: PathLike, run: Mapping[str, Any], steps: Optional[int] = None) -> Sample:
    """The statistics of a recorded chain experiment's records up to step ``steps`` (all: None)."""
    records = [r for r in run["records"] if steps is None or r["step"] <= steps]
    return Sample(Path(path), chain_setting(run["config"]), run["config"]["relaxation"], [r["step"] for r in records],
                  [chain_statistics(r, run["config"]) for r in records])


def recorded_searches(root: PathLike = RUNS) -> List[Path]:
    """The finished recorded searches under ``root`` (its ``collapse/`` and ``levers/``)."""
    return [p for sub in SEARCH_DIRS for p in _runs.finished_runs(Path(root) / sub) if p.is_dir()]


def recorded_chains(root: PathLike = RUNS) -> List[Path]:
    """The finished recorded chain experiments under ``root`` (its ``mechanism/`` and ``mechanism_long/``)."""
    return [p for sub in CHAIN_DIRS for p in _runs.finished_runs(Path(root) / sub) if p.is_file()]


def search_spread(root: PathLike = RUNS, exclude: Optional[PathLike] = None) -> Spread:
    """The seed spread of the recorded searches under ``root``, every epoch, leaving out ``exclude`` (the
    run being checked: an edited number must not widen its own tolerance)."""
    skip = Path(exclude).resolve() if exclude else None
    samples = [search_sample(_runs.load_search_run(p)) for p in recorded_searches(root) if p.resolve() != skip]
    return seed_spread(samples, "search")


def chain_spread(root: PathLike = RUNS, exclude: Optional[PathLike] = None) -> Spread:
    """The seed spread of the recorded chain experiments under ``root``, every record, leaving out
    ``exclude``."""
    skip = Path(exclude).resolve() if exclude else None
    samples = [chain_sample(p, _runs.load_mechanism_run(p)) for p in recorded_chains(root) if p.resolve() != skip]
    return seed_spread(samples, "chain")


# --- the files of a run agree with each other -------------------------------------------------------------------
def check_search_files(run: "_runs.SearchRun") -> List[str]:
    """Internal consistency of a recorded search: every epoch recorded; genotype.json is the last epoch's
    genotype; every epoch's genotype is the parse of its relaxed weights with the config's rule and its
    skip counts are that genotype's; the ``.npy`` weights are the last epoch's; the provenance names
    ``fairdarts search`` with the config's seed."""
    from .search import parse_method

    cfg, history, problems = run.config, run.history, []
    if len(history) != cfg.epochs:
        problems.append(f"{len(history)} of {cfg.epochs} epochs recorded: the run did not finish")
    if not history:
        return problems + ["the history is empty"]
    method = parse_method(cfg)
    for r in history:
        parsed = Genotype.from_weights(r["normal_weight"], r["reduce_weight"], cfg.primitives, method, cfg.threshold)
        if Genotype.from_dict(r["genotype"]) != parsed:
            problems.append(f"epoch {r['epoch']}: the recorded genotype is not the {method} parse of the recorded "
                            f"relaxed weights")
        for cell in ("normal", "reduce"):
            if r.get(f"skip_{cell}") != parsed.count("skip_connect", cell):
                problems.append(f"epoch {r['epoch']}: skip_{cell} is {r.get(f'skip_{cell}')}, the parsed "
                                f"{cell} cell has {parsed.count('skip_connect', cell)}")
    if run.genotype != Genotype.from_dict(history[-1]["genotype"]):
        problems.append("genotype.json is not the last epoch's genotype")
    for cell in ("normal", "reduce"):
        saved = getattr(run, f"{cell}_weight")
        last = np.asarray(history[-1][f"{cell}_weight"], dtype=np.float32)
        if saved is None or saved.shape != last.shape or not np.array_equal(saved, last):
            problems.append(f"{cell}_weight.npy is not the last epoch's {cell} relaxed weights")
    problems += _provenance_problems(run.provenance, "fairdarts search", [f"seed={cfg.seed}"])
    return problems


def check_chain_file(run: Mapping[str, Any]) -> List[str]:
    """Internal consistency of a recorded chain experiment: every record present (every ``record_every``
    steps, and the last step), weights of shape (depth, ops) in [0, 1], ``summary`` equal to
    :func:`fairdarts_core.mechanism.skip_summary`, the provenance names ``fairdarts mechanism`` with the
    config's depth, relaxation and seed."""
    from .mechanism import skip_summary

    cfg, records, problems = run["config"], run["records"], []
    every, steps = cfg["record_every"], cfg["steps"]
    want = list(range(every, steps + 1, every)) + ([] if steps % every == 0 else [steps])
    if [r.get("step") for r in records] != want:
        problems.append(f"the records are at steps {[r.get('step') for r in records][:4]}..., not every "
                        f"{every} steps up to {steps}: the run did not finish or was edited")
    for r in records:
        W = np.asarray(r.get("weights"), dtype=np.float64)
        if W.shape != (cfg["depth"], len(cfg["ops"])) or not (np.isfinite(W).all() and (W >= 0).all() and (W <= 1).all()):
            problems.append(f"step {r.get('step')}: the weights are not {cfg['depth']} x {len(cfg['ops'])} values in [0, 1]")
    if records and not problems:
        summary, want_summary = run.get("summary") or {}, skip_summary(run)
        if set(summary) != set(want_summary) or any(not math.isclose(summary[k], v, rel_tol=1e-12, abs_tol=1e-12)
                                                    for k, v in want_summary.items()):
            problems.append("the summary is not the skip summary of the last record")
    problems += _provenance_problems(run.get("provenance"), "fairdarts mechanism",
                                     [f"--depth {cfg['depth']}", f"--relaxation {cfg['relaxation']}",
                                      f"--seed {cfg['seed']}"])
    return problems


def _provenance_problems(provenance: Optional[Mapping[str, Any]], program: str, first_has: Sequence[str]) -> List[str]:
    if not provenance:
        return ["no provenance: the run is not finished or was not written by the command line"]
    sessions = provenance.get("sessions", [provenance])
    if not sessions:
        return ["the provenance has no session"]
    problems = [f"a session's command is not {program}: {s.get('command', '')[:80]}"
                for s in sessions if not str(s.get("command", "")).startswith(program)]
    missing = [part for part in first_has if part not in str(sessions[0].get("command", ""))]
    if missing:
        problems.append(f"the recorded command does not say {', '.join(missing)} as the config does")
    return problems


# --- re-runs ---------------------------------------------------------------------------------------------------
def _exact_problems(label: str, got: Mapping[str, Any], want: Mapping[str, Any], keys: Sequence[str]) -> List[str]:
    """Bit-for-bit comparison of the recorded fields ``keys`` of one record."""
    problems = []
    for key in keys:
        a, b = got.get(key), want.get(key)
        if key in ("normal_weight", "reduce_weight", "weights"):
            A, B = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if A.shape != B.shape or not np.array_equal(A, B):
                diff = float(np.abs(A - B).max()) if A.shape == B.shape else float("nan")
                problems.append(f"{label}: {key} not bit for bit (largest difference {diff:.3g})")
        elif a != b:
            problems.append(f"{label}: {key} {_fmt(a)} re-run, {_fmt(b)} recorded (not bit for bit)")
    return problems


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else repr(x)[:120]


def compare_statistics(got: Sequence[Dict[str, float]], want: Sequence[Dict[str, float]], at: Sequence[int],
                       spread: Spread, setting: Tuple, relaxation: str, shape: Tuple[int, int],
                       k: float = K) -> Tuple[List[str], Dict[str, float]]:
    """Compare a re-run's statistics with the recorded ones, record by record (``at``: the epochs or
    steps). Returns the problems (a statistic off by more than ``k`` times its spread, :meth:`Spread.of`)
    and, for every statistic, the largest distance ``|re-run - recorded| / spread`` (what ``k`` is chosen
    from: README, "Reproducible")."""
    where = "epoch" if spread.kind == "search" else "step"
    problems: List[str] = []
    distances: Dict[str, float] = {}
    for g, w, a in zip(got, want, at):
        for name, value in w.items():
            if name not in g:
                problems.append(f"{where} {a}: the re-run has no {name}")
                continue
            sd, what = spread.of(setting, relaxation, a, name, _unit(name, shape))
            diff = abs(g[name] - value)
            distance = diff / sd if sd > 0 else (0.0 if diff == 0 else math.inf)
            distances[name] = max(distances.get(name, 0.0), distance)
            if not distance <= k:
                problems.append(f"{where} {a}: {name} {value:.4g} recorded, {g[name]:.4g} re-run: off by {diff:.3g}, "
                                f"more than {k:g} x {what} ({sd:.3g})")
    return problems, distances


@dataclass
class Recheck:
    """What a re-check found: ``problems`` (empty: the run holds), the ``mode`` it ran in, and for
    measurements the re-run's records next to the recorded ones, with the statistical distances."""

    problems: List[str]
    mode: str
    got: List[dict]
    want: List[dict]
    distances: Dict[str, float]


def recheck_search(run_dir: PathLike, epochs: int = 2, mode: str = "auto", spread: Optional[Spread] = None,
                   reference: PathLike = RUNS) -> List[str]:
    """Re-check a recorded search: its files (:func:`check_search_files`), then its config re-run for
    its first ``epochs`` epochs (the full run's learning-rate schedule) against its history, bit for bit
    (``mode="exact"``) or by its statistics (``"statistical"``; ``"auto"``: exact where the numerics
    signature is the recorder's). ``spread``: the seed spread (default: :func:`search_spread` of the runs
    recorded under ``reference``, leaving this run out). Returns the problems, one line each."""
    return recheck_search_details(run_dir, epochs, mode, spread, reference).problems


def recheck_chain(path: PathLike, steps: int = 50, mode: str = "auto", spread: Optional[Spread] = None,
                  reference: PathLike = RUNS, threads: Optional[int] = None) -> List[str]:
    """Re-check a recorded chain experiment: its file (:func:`check_chain_file`), then its config re-run
    for its first ``steps`` steps (``run_chain(max_steps=steps)``, schedule unchanged) against its
    records, bit for bit or by its statistics as in :func:`recheck_search`. ``threads``: torch threads of
    the re-run (default: the recorded count where that makes the numerics the recorder's, else the
    current count)."""
    return recheck_chain_details(path, steps, mode, spread, reference, threads).problems


SEARCH_FIELDS = ("normal_weight", "reduce_weight", "genotype", "train_loss", "train_acc", "val_loss", "val_acc",
                 "zero_one_loss", "skip_normal", "skip_reduce", "lr", "skip_noise_std")
"""What an exact re-check compares bit for bit in every epoch record of a search (all but the wall time)."""
CHAIN_FIELDS = ("weights", "train_acc")


def recheck_search_details(run_dir: PathLike, epochs: int = 2, mode: str = "auto", spread: Optional[Spread] = None,
                           reference: PathLike = RUNS) -> Recheck:
    """:func:`recheck_search`, with the mode it ran in, the re-run's records and its distances."""
    from .search import run_search

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs}")
    run = _runs.load_search_run(run_dir)
    cfg = run.config
    mode = _mode(mode, recorded_numerics(run.provenance), current_numerics(cfg.threads))
    problems = check_search_files(run)
    threads = torch.get_num_threads()
    try:  # the search sets its own thread count (config.threads)
        got = run_search(cfg, out_dir=None, progress=False, callback=lambda record, model: record["epoch"] < epochs).history
    finally:
        torch.set_num_threads(threads)
    want = run.history[:epochs]
    problems += [f"epoch {w['epoch']}: learning rate {g['lr']:.6g} re-run, {w['lr']:.6g} recorded"
                 for g, w in zip(got, want) if not math.isclose(g["lr"], w["lr"], rel_tol=1e-12)]
    return _compare(problems, mode, got, want, SEARCH_FIELDS, lambda r: search_statistics(r, cfg), "epoch",
                    lambda: spread or search_spread(reference, exclude=run_dir), search_setting(cfg), cfg.relaxation,
                    np.asarray(want[0]["normal_weight"]).shape if want else (0, 0))


def recheck_chain_details(path: PathLike, steps: int = 50, mode: str = "auto", spread: Optional[Spread] = None,
                          reference: PathLike = RUNS, threads: Optional[int] = None) -> Recheck:
    """:func:`recheck_chain`, with the mode it ran in, the re-run's records and its distances."""
    from .mechanism import ChainConfig, run_chain

    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    run = _runs.load_mechanism_run(path)
    cfg = run["config"]
    recorded = recorded_numerics(run.get("provenance"))
    if threads is None:
        threads = torch.get_num_threads()
        if recorded and same_numerics(recorded, current_numerics(recorded.get("torch_threads"))):
            threads = recorded["torch_threads"]  # what makes a bit-for-bit re-run possible
    mode = _mode(mode, recorded, current_numerics(threads))
    problems = check_chain_file(run)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = run_chain(ChainConfig.from_dict(cfg), max_steps=steps)["records"]
    finally:
        torch.set_num_threads(before)
    want = [r for r in run["records"] if r["step"] <= steps]
    return _compare(problems, mode, got, want, CHAIN_FIELDS, lambda r: chain_statistics(r, cfg), "step",
                    lambda: spread or chain_spread(reference, exclude=path), chain_setting(cfg), cfg["relaxation"],
                    (cfg["depth"], len(cfg["ops"])))


def _compare(problems: List[str], mode: str, got: List[dict], want: List[dict], fields: Sequence[str],
             statistics, where: str, spread, setting: Tuple, relaxation: str, shape: Tuple[int, int]) -> Recheck:
    """The re-run ``got`` against the record ``want``: bit for bit (``fields``) or by ``statistics``."""
    at = [w[where] for w in want]
    if [g[where] for g in got] != at:
        problems.append(f"the re-run recorded {where}s {[g[where] for g in got]}, the record {at}")
        return Recheck(problems, mode, got, want, {})
    if mode == "exact":
        exact = [p for g, w in zip(got, want) for p in _exact_problems(f"{where} {w[where]}", g, w, fields)]
        if not exact:
            return Recheck(problems, mode, got, want, {})
        # Say whether only the rounding changed (the code now sums in another order) or the conclusions too.
        stat, distances = compare_statistics([statistics(g) for g in got], [statistics(w) for w in want], at,
                                             spread(), setting, relaxation, shape)
        verdict = (f"the statistical re-check fails too ({len(stat)} problems)" if stat else
                   "statistically it agrees: the rounding changed (the code sums in another order, or the numerics "
                   "are not the recorder's), not the conclusions")
        return Recheck(problems + exact + [f"the re-run is not bit for bit; {verdict}"], mode, got, want, distances)
    stat, distances = compare_statistics([statistics(g) for g in got], [statistics(w) for w in want], at, spread(),
                                         setting, relaxation, shape)
    return Recheck(problems + stat, mode, got, want, distances)
