"""Re-checking a recorded run: bit for bit where the numerics are the recorder's, by its conclusions elsewhere.

A recorded run (a search directory, in the DARTS space or NAS-Bench-201's, or a chain experiment's JSON) is
re-run from its recorded config for its first epochs or steps and compared with what it recorded. A search
is read through its search space (:mod:`fairdarts_core.spaces`): which relaxed weight matrices it records,
how a genotype is derived from them and how its skip connections are counted. How a run is compared
depends on where it runs:

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
  runs themselves and from extra seeds of their first epochs where few seeds were recorded
  (:func:`seed_spread`, :data:`EXTRA_SEEDS`).

``mode="auto"`` picks exact where the signatures are equal, statistical elsewhere. Both modes first check
the run's files against each other (:func:`check_search_files`, :func:`check_chain_file`). Every check
returns a list of problems, one line each; an empty list means the run holds.
"""
from __future__ import annotations

import ast
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import runs as _runs
from .analysis import skip_share
from .spaces import SPACES, SearchSpace, genotype_from_dict, get_space

PathLike = Union[str, Path]

RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"
"""The repository's recorded runs (present in a checkout; an installed package has none)."""
SEARCH_DIRS = ("collapse", "levers", "nb201", "nb201_levers", "conditions", "ablation", "ablation_long",
               "nb201_ablation", "cpu_cell")
"""Where the recorded searches lie: the DARTS space's collapse runs and levers; the NAS-Bench-201 space's
seeded presets, levers and broken conditions (chapter 3); the zero-one ablation of both spaces and the
paper's 50 epochs in the DARTS space (chapter 4); the ``cpu-cell`` preset's searches (chapter 5)."""
CHAIN_DIRS = ("mechanism", "mechanism_long", "mechanism_noise")

MODES = ("auto", "exact", "statistical")
NUMERICS_FIELDS = ("torch", "cpu_capability", "onednn_max_isa", "cpu_isa", "cpu_model", "torch_threads")
"""The fields of a numerics signature that decide how a process rounds (a note added to a recorded
signature, e.g. how it was established, is not one of them)."""

K = 6.0
"""Tolerance of the statistical check, in seed-to-seed standard deviations. Measured: the recorded runs
re-run under four sets of kernels (this machine's AVX-512/AMX ones with the recorder's and the current
code, ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=default``; none of them
the recorder's) landed at most 4.0 standard deviations from their records, while records with one number
edited (a cell's strongest weight +0.3, a loss +1, a chain's accuracy +0.4 or a layer's weight +0.3)
landed 10.7 or more away. The NAS-Bench-201 searches (eight seeds per pool measuring the spread of its
first epoch, :data:`EXTRA_SEEDS`), every one re-run for one epoch with ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2`` and with ``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41``, landed at
most 4.2 and 5.0 away (the asinh Hessian eigenvalue; a softmax search's distance from binary weights,
which one epoch barely moves off uniform)."""

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
def family_of(name: str) -> str:
    """The family of a statistic, its name before the bracket (``"mean weight[normal, skip_connect]"`` ->
    ``"mean weight"``): the members of a family share one spread."""
    return name.split("[", 1)[0]


def cells(space: SearchSpace) -> Tuple[str, ...]:
    """The cells whose relaxed weights a search of ``space`` records: ``("normal", "reduce")`` in the
    DARTS space, ``("cell",)`` in NAS-Bench-201's (its one cell type)."""
    return tuple(name[: -len("_weight")] for name in space.weight_names)


def search_statistics(record: Mapping[str, Any], config: Any) -> Dict[str, float]:
    """The statistics of one epoch of a search (``record``: a history record) that chapter 2 reads:
    per cell of its space (:func:`cells`) the mean relaxed weight of every op over the edges, the largest
    weight, the skip share (the fraction of edges whose strongest op is ``skip_connect``, Fair DARTS
    Fig. 1; in NAS-Bench-201's space ``none`` competes, as its derive rule keeps it), for sigmoid the
    number of weights at or above the parse threshold (Fair DARTS Sec. 4.3); the mean losses and
    accuracies. The dominant Hessian eigenvalue where the search tracked it, on an ``asinh`` scale (signed,
    logarithmic beyond 1): seeds spread it over orders of magnitude (the no-skip condition's first epoch:
    -10.6 to 8.0 over seven seeds, and -265 in an eighth seed's record, which its re-runs under other
    kernels put at 3.6), and on a linear scale one such value either sets the spread or fails every re-run
    on other kernels."""
    space = get_space(config.space)
    prims = list(config.primitives)
    out: Dict[str, float] = {}
    for cell in cells(space):
        W = np.asarray(record[f"{cell}_weight"], dtype=np.float64)
        for k, op in enumerate(prims):
            out[f"mean weight[{cell}, {op}]"] = float(W[:, k].mean())
        out[f"largest weight[{cell}]"] = float(W.max())
        if "skip_connect" in prims:
            out[f"skip share[{cell}]"] = skip_share(W, prims, keep_none=space.keeps_none)
        if config.relaxation == "sigmoid":
            out[f"above threshold[{cell}]"] = float((W >= config.threshold).sum())
    if record.get("hessian_eigenvalue") is not None:  # the collapse indicator chapter 3 reads
        out["asinh hessian eigenvalue[alpha]"] = math.asinh(float(record["hessian_eigenvalue"]))
    if record.get("gap") is not None:  # the discretization gap chapter 4 reads
        for net in ("relaxed", "rounded", "discrete"):
            if f"{net}_acc" in record["gap"]:
                out[f"gap accuracy[{net}]"] = float(record["gap"][f"{net}_acc"])
        out["distance from binary[alpha]"] = float(record["gap"]["distance_from_binary"])
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
    kind = DISCRETE_UNITS.get(family_of(name))
    return {"edges": 1.0 / shape[0], "layers": 1.0 / shape[0], "count": 1.0}.get(kind, 0.0)


# --- seed-to-seed spread ------------------------------------------------------------------------------------
POOL_FREE = {"search": ("epochs",), "chain": ("depth", "steps")}
"""Settings that differ only in these share one pool of seeds: the length of a run changes where it ends,
not how far apart its seeds are after its first epochs (steps), and so does a chain's depth (measured:
chains of depth 4 to 32 pooled, a re-run with other kernels stays within 3.4 pooled standard deviations
of its record; each depth alone, 5.1). A supernet's number of cells is not pooled: 8-cell searches
pooled with the 5-cell presets landed 4.9 standard deviations from their record."""


@dataclass(frozen=True)
class Sample:
    """The statistics of one run, record by record."""

    kind: str               # "search" or "chain"
    setting: Tuple          # everything that changes the run's math except its seed
    seed: int
    relaxation: str
    at: List[int]           # the epoch (search) or step (chain) of each entry of ``stats``
    stats: List[Dict[str, float]]

    @property
    def pool(self) -> Tuple:
        """The setting without its depth and length (:data:`POOL_FREE`)."""
        return tuple(item for item in self.setting if item[0] not in POOL_FREE[self.kind])

    @property
    def space(self) -> str:
        """The search space of a search (``"darts"``, ``"nb201"``), from its setting; ``""`` for a chain."""
        recorded = dict(self.setting).get("space")
        return ast.literal_eval(recorded) if recorded else ""

    @property
    def kin(self) -> Tuple[str, str]:
        """The runs whose spread a pool with one seed borrows (:attr:`Spread.widest`): the same search
        space and relaxation. A NAS-Bench-201 cell (6 edges, 5 ops) spreads otherwise than a DARTS cell
        (14 edges, 8 ops), so neither lends the other its spread."""
        return self.space, self.relaxation


@dataclass(frozen=True)
class Spread:
    """How much the statistics of a run vary from seed to seed, measured on recorded runs.

    ``window[(pool, family)] = (sd, degrees of freedom)``: the standard deviation of a family of
    statistics (``"mean weight"``, ``"loss"``, ...) of the settings of a pool recorded with two seeds or
    more, over the records a re-check compares (the first epochs or steps). ``widest[(space,
    relaxation, family)]``: the largest such deviation of any pool of that search space and relaxation
    (:attr:`Sample.kin`; a chain's space is ``""``) at any single epoch (step), for a run whose pool has
    one seed."""

    kind: str
    window: Dict[Tuple[Tuple, str], Tuple[float, int]]
    widest: Dict[Tuple[str, str, str], float]

    def of(self, sample: Sample, name: str, unit: float = 0.0) -> Tuple[float, str]:
        """The spread statistic ``name`` of a run like ``sample`` is measured in, and what it is.

        The pooled spread of the run's pool over the compared records; for a pool recorded with one seed
        only, the widest spread any pool of its space and relaxation reaches at any epoch (step): a lever
        meant to move a search faster is further along after two epochs than the seeded presets. The spread of a
        discrete statistic is at least half its ``unit`` (one edge, layer or weight), which seeds that
        agree cannot resolve. A ``ValueError`` when no recorded seeds measure it."""
        family = family_of(name)
        if (sample.pool, family) in self.window:
            sd, what = self.window[sample.pool, family][0], "the seed spread"
        elif (*sample.kin, family) in self.widest:
            sd = self.widest[(*sample.kin, family)]
            what = f"the widest seed spread of the {_kin_label(sample, self.kind)} (one seed here)"
        else:
            raise ValueError(f"no recorded {_kin_label(sample, self.kind)} with two seeds or more measures the "
                             f"spread of {family}")
        return max(sd, unit / 2), what

    def dof(self, sample: Sample, name: str) -> Optional[int]:
        """The degrees of freedom of the seed spread :meth:`of` gives for ``name`` (None for a borrowed one)."""
        entry = self.window.get((sample.pool, family_of(name)))
        return None if entry is None else int(entry[1])


T_999 = {1: 636.62, 2: 31.60, 3: 12.92, 4: 8.610, 5: 6.869, 6: 5.959, 7: 5.408, 8: 5.041, 9: 4.781, 10: 4.587,
         12: 4.318, 15: 4.073, 20: 3.850, 30: 3.646, 60: 3.460, 120: 3.373}
"""Student's t at 99.9% two-sided by degrees of freedom (the normal's is 3.291)."""


def few_seeds_factor(dof: Optional[int]) -> float:
    """How much wider a tolerance of ``K`` standard deviations must be when the deviation itself was
    estimated from ``dof`` degrees of freedom (a handful of seeds): Student's t over the normal quantile at
    99.9% two-sided, from the table entry at or below ``dof`` (conservative). 1 for a borrowed spread (its
    widest value is already conservative) and for 120 degrees of freedom or more. Measured: a NAS-Bench-201
    lever re-run with other kernels landed 6.2 seed deviations from its record on its cell's largest
    weight, a spread measured from 4 seeds (3 degrees of freedom: factor 3.9)."""
    if dof is None or dof >= 120:
        return 1.0
    if dof < 1:
        return math.inf
    return T_999[max(d for d in T_999 if d <= dof)] / 3.291


def _kin_label(sample: Sample, kind: str) -> str:
    """``"softmax searches in the nb201 space"``, ``"sigmoid chains"``."""
    return f"{sample.relaxation} {kind}es" + (f" in the {sample.space} space" if sample.space else "")


def seed_spread(samples: Iterable[Sample], kind: str, upto: int) -> Spread:
    """Pool the seed-to-seed variance of every family of statistics: the sum of squared deviations from
    the mean of each setting recorded with two seeds or more, over the sum of (seeds - 1), per pool over
    the records up to ``upto`` (epoch or step) for :attr:`Spread.window`, and per search space and
    relaxation (:attr:`Sample.kin`) at every single record for :attr:`Spread.widest`.

    Pooled over the members of a family (every op's mean weight, every cell), over the compared records
    and over the settings of a pool, because three seeds alone give an estimate with two degrees of
    freedom, often far too small (measured: a re-run with other kernels landed 7 of its own setting's
    standard deviations from its record at depth 32 at one step).
    """
    groups: Dict[Tuple, List[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.setting].append(s)
    ss: Dict[Tuple[Tuple, Tuple[str, str], int, str], float] = defaultdict(float)
    dof: Dict[Tuple[Tuple, Tuple[str, str], int, str], int] = defaultdict(int)
    for group in groups.values():
        if len({s.seed for s in group}) < 2:
            continue
        for at in sorted(set.intersection(*(set(s.at) for s in group))):
            rows = [s.stats[s.at.index(at)] for s in group]
            for name in set.intersection(*(set(r) for r in rows)):
                x = np.array([r[name] for r in rows])
                key = (group[0].pool, group[0].kin, at, family_of(name))
                ss[key] += float(((x - x.mean()) ** 2).sum())
                dof[key] += len(x) - 1
    window_ss: Dict[Tuple[Tuple, str], float] = defaultdict(float)
    window_dof: Dict[Tuple[Tuple, str], int] = defaultdict(int)
    widest: Dict[Tuple[str, str, str], float] = {}
    for (pool, kin, at, family), total in ss.items():
        n = dof[pool, kin, at, family]
        widest[(*kin, family)] = max(widest.get((*kin, family), 0.0), math.sqrt(total / n))
        if at <= upto:
            window_ss[pool, family] += total
            window_dof[pool, family] += n
    window = {key: (math.sqrt(window_ss[key] / window_dof[key]), window_dof[key]) for key in window_ss}
    return Spread(kind, window, widest)


def search_setting(config: Any) -> Tuple:
    """What makes two searches the same experiment but for the seed: every config field that changes the
    math (not the seed, device, data directory, formulation or thread count), its search space included."""
    from .search import RESUME_FREE

    return tuple(sorted((k, repr(v)) for k, v in config.to_dict().items() if k not in set(RESUME_FREE) | {"seed"}))


def chain_setting(config: Mapping[str, Any]) -> Tuple:
    """What makes two chain experiments the same but for the seed: every field but seed and data_dir, a
    field at its default counting as absent (a config recorded before the field existed is the same
    experiment)."""
    from dataclasses import fields

    from .mechanism import ChainConfig

    defaults = {f.name: f.default for f in fields(ChainConfig)}
    return tuple(sorted((k, repr(v)) for k, v in config.items()
                        if k not in ("seed", "data_dir") and not (k in NEW_CHAIN_FIELDS and v == defaults[k])))


NEW_CHAIN_FIELDS = ("skip_noise", "noise_steps")
"""Chain config fields added after the first chains were recorded (noise on skip, off by default)."""


def search_sample(config: Any, history: Sequence[Mapping[str, Any]]) -> Sample:
    """The statistics of a search's history records (:func:`search_statistics`)."""
    return Sample("search", search_setting(config), config.seed, config.relaxation, [r["epoch"] for r in history],
                  [search_statistics(r, config) for r in history])


def chain_sample(config: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Sample:
    """The statistics of a chain experiment's records (:func:`chain_statistics`)."""
    return Sample("chain", chain_setting(config), config["seed"], config["relaxation"], [r["step"] for r in records],
                  [chain_statistics(r, config) for r in records])


def recorded_searches(root: PathLike = RUNS) -> List[Path]:
    """The finished recorded searches under ``root`` (:data:`SEARCH_DIRS`: its ``collapse/`` and
    ``levers/`` in the DARTS space, its ``nb201/`` in NAS-Bench-201's)."""
    return [p for sub in SEARCH_DIRS for p in _runs.finished_runs(Path(root) / sub) if p.is_dir()]


def recorded_chains(root: PathLike = RUNS) -> List[Path]:
    """The finished recorded chain experiments under ``root`` (its ``mechanism/`` and ``mechanism_long/``)."""
    return [p for sub in CHAIN_DIRS for p in _runs.finished_runs(Path(root) / sub) if p.is_file()]


def _stand_in(samples: List[Sample], rerun: Optional[Sample]) -> List[Sample]:
    """``samples`` with ``rerun`` in place of the recorded run of its setting and seed: the spread a run
    is checked against never contains its own record (an edited number must not widen its own
    tolerance), and the re-run is an honest sample of that seed."""
    if rerun is None:
        return samples
    return [s for s in samples if (s.setting, s.seed) != (rerun.setting, rerun.seed)] + [rerun]


def _extra_seeds(root: PathLike) -> Dict[str, list]:
    path = Path(root) / EXTRA_SEEDS
    if not path.is_file():
        return {"searches": [], "chains": []}
    try:
        extra = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(extra, dict) or not all(isinstance(extra.get(k), list) for k in ("searches", "chains")):
        raise ValueError(f"{path} is not a file of extra seeds (searches, chains)")
    return extra


def search_spread(root: PathLike = RUNS, epochs: int = 2, rerun: Optional[Sample] = None) -> Spread:
    """The seed spread of the searches recorded under ``root`` and of the extra seeds measured for them
    (:data:`EXTRA_SEEDS`), over their first ``epochs`` epochs (:func:`seed_spread`), ``rerun`` standing in
    for the recorded run of its setting and seed."""
    from .presets import SearchConfig

    samples = []
    for path in recorded_searches(root):
        run = _runs.load_search_run(path)
        samples.append(search_sample(run.config, run.history))
    for extra in _extra_seeds(root)["searches"]:
        samples.append(search_sample(SearchConfig.from_dict(extra["config"]), extra["history"]))
    return seed_spread(_stand_in(samples, rerun), "search", epochs)


def chain_spread(root: PathLike = RUNS, steps: int = 50, rerun: Optional[Sample] = None) -> Spread:
    """The seed spread of the chain experiments recorded under ``root`` and of their extra seeds, over
    their first ``steps`` steps, ``rerun`` standing in for the recorded run of its setting and seed."""
    from .mechanism import ChainConfig

    samples = []
    for path in recorded_chains(root):
        run = _runs.load_mechanism_run(path)
        samples.append(chain_sample(run["config"], run["records"]))
    for extra in _extra_seeds(root)["chains"]:
        ChainConfig.from_dict(extra["config"])  # refuses a malformed config
        samples.append(chain_sample(extra["config"], extra["records"]))
    return seed_spread(_stand_in(samples, rerun), "chain", steps)


# --- extra seeds for settings recorded with few ------------------------------------------------------------------
EXTRA_SEEDS = "extra_seeds.json"
"""Under the recorded runs' root: the first epochs (steps) of further seeds of the settings whose pool was
recorded with few seeds (every DARTS-space pool to six in its first two epochs, every NAS-Bench-201 pool to
eight in its first epoch), written by :func:`measure_extra_seeds` (``python -m fairdarts_core.reproduce
extra-seeds``).
They are no recorded runs (nothing plots them): they measure the spread those settings are re-checked
against."""


def measure_extra_seeds(root: PathLike = RUNS, seeds: int = 3, epochs: int = 2, steps: int = 50,
                        space: Optional[str] = None, log: Callable[[str], None] = print) -> Dict[str, list]:
    """Run the first ``epochs`` epochs (chains: ``steps`` steps) of further seeds of the recorded settings
    until every pool has a setting with ``seeds`` seeds (the recorded ones and those already in
    ``ROOT/EXTRA_SEEDS`` included), with the full run's schedules, as a re-check runs them. A pool short of
    seeds has its best-seeded settings topped up (every setting of a pool recorded with one seed; the seeded
    preset, not its longer lever). ``space``: only the searches of that search space (``"darts"``,
    ``"nb201"``), no chains. Returns the newly measured ones: ``{"searches": [{"of", "config", "history"}],
    "chains": [{"of", "config", "records"}]}``.

    A few recorded seeds can agree by chance far more closely than seeds do: the four seeds of the
    NAS-Bench-201 DARTS preset ended their first epoch with training losses 1.928 to 1.948, four more
    with 1.81 to 1.96, and a re-run of one of them with ATen's default kernels at 2.07."""
    from .mechanism import ChainConfig, run_chain
    from .presets import SearchConfig

    root = Path(root)
    recorded = {}
    for path in recorded_searches(root):
        run = _runs.load_search_run(path)
        recorded[path] = (run.config, search_sample(run.config, run.history[:epochs]))
    for path in recorded_chains(root):
        run = _runs.load_mechanism_run(path)
        recorded[path] = (run["config"], chain_sample(run["config"], run["records"]))
    extra = _extra_seeds(root)
    have = [s for _, s in recorded.values()]
    have += [search_sample(SearchConfig.from_dict(e["config"]), e["history"]) for e in extra["searches"]]
    have += [chain_sample(e["config"], e["records"]) for e in extra["chains"]]
    seeds_of: Dict[Tuple, set] = defaultdict(set)
    for s in have:
        seeds_of[s.setting].add(s.seed)
    best: Dict[Tuple, int] = defaultdict(int)
    for s in have:
        best[s.pool] = max(best[s.pool], len(seeds_of[s.setting]))
    short = {s.setting for s in have if len(seeds_of[s.setting]) == best[s.pool] < seeds}
    out: Dict[str, list] = {"searches": [], "chains": []}
    for path, (config, sample) in recorded.items():
        if sample.setting not in short or (space is not None and sample.space != space):
            continue
        taken = seeds_of[sample.setting]
        for seed in [n for n in range(len(taken) + seeds) if n not in taken][:max(0, seeds - len(taken))]:
            threads = torch.get_num_threads()
            try:
                if sample.kind == "search":
                    cfg = SearchConfig.from_dict({**config.to_dict(), "seed": seed})
                    history = rerun_search(cfg, epochs)
                    out["searches"].append({"of": str(path.relative_to(root)), "config": cfg.to_dict(),
                                            "history": history})
                else:
                    cfg = {**config, "seed": seed}
                    records = run_chain(ChainConfig.from_dict(cfg), max_steps=steps)["records"]
                    out["chains"].append({"of": str(path.relative_to(root)), "config": cfg, "records": records})
            finally:
                torch.set_num_threads(threads)
            taken.add(seed)
            log(f"{path.relative_to(root)}: seed {seed} measured")
    return out


# --- the files of a run agree with each other -------------------------------------------------------------------
def check_search_files(run: "_runs.SearchRun") -> List[str]:
    """Internal consistency of a recorded search, read through its search space
    (:func:`fairdarts_core.spaces.get_space`): every epoch recorded; every epoch's relaxed weights (each
    matrix of the space) are what the relaxation can give (in [0, 1]; softmax rows summing to 1); every
    epoch's genotype is the cell the space derives from its relaxed weights with the config's rule, and
    its skip counts are that genotype's; genotype.json is the last epoch's genotype; every ``NAME.npy``
    of the space's weights is there and holds the last epoch's weights; the provenance names
    ``fairdarts search`` with the config's seed."""
    cfg, history, problems = run.config, run.history, []
    space = get_space(cfg.space)
    if len(history) != cfg.epochs:
        problems.append(f"{len(history)} of {cfg.epochs} epochs recorded: the run did not finish")
    if not history:
        return problems + ["the history is empty"]
    for r in history:
        problems += _epoch_problems(r, cfg, space)
    if run.genotype != genotype_from_dict(history[-1]["genotype"]):
        problems.append("genotype.json is not the last epoch's genotype")
    problems += _saved_weight_problems(run, space)
    problems += _provenance_problems(run.provenance, "fairdarts search", _seed_said(cfg.seed, run.provenance))
    return problems


def _seed_said(seed: int, provenance: Optional[Mapping[str, Any]]) -> List[str]:
    """What the first recorded command must say about the seed: ``seed=N``, unless the command left the seed
    at :class:`~fairdarts_core.presets.SearchConfig`'s default (no preset sets one)."""
    from dataclasses import fields

    from .presets import SearchConfig

    default = next(f.default for f in fields(SearchConfig) if f.name == "seed")
    sessions = (provenance or {}).get("sessions") or [provenance or {}]
    if seed == default and "seed=" not in str(sessions[0].get("command", "")):
        return []
    return [f"seed={seed}"]


def _cell_label(weight_name: str) -> str:
    """``"normal_weight"`` -> ``"normal cell"``, ``"cell_weight"`` -> ``"cell"``."""
    cell = weight_name[: -len("_weight")]
    return cell if cell == "cell" else f"{cell} cell"


def _epoch_problems(record: Mapping[str, Any], cfg: Any, space: SearchSpace) -> List[str]:
    """What is wrong with one epoch record of a search: relaxed weights the relaxation cannot give, a
    genotype that is not the space's derivation from them, skip counts that are not the genotype's."""
    epoch = record.get("epoch")
    bad = [p for name in space.weight_names for p in
           _relaxed_problems(f"epoch {epoch}: {name}", record.get(name), cfg.relaxation, len(cfg.primitives))]
    if bad:
        return bad
    method = space.derive_method(cfg)
    derived = space.derive([np.asarray(record[name], dtype=np.float64) for name in space.weight_names], cfg, method)
    problems = []
    if genotype_from_dict(record["genotype"]) != derived:
        problems.append(f"epoch {epoch}: the recorded genotype is not the {method} derivation of the recorded "
                        f"relaxed weights")
    counts = space.skip_counts(derived)
    for key, name in zip(space.skip_keys, space.weight_names):
        if record.get(key) != counts[key]:
            problems.append(f"epoch {epoch}: {key} is {record.get(key)}, the derived {_cell_label(name)} has "
                            f"{counts[key]}")
    return problems + _gap_problems(record, cfg, space)


def _gap_problems(record: Mapping[str, Any], cfg: Any, space: SearchSpace) -> List[str]:
    """What is wrong with an epoch's tracked gap (``track_gap``): accuracies outside [0, 1], gaps that are
    not relaxed minus rounded / discretized, a distance from 0/1 that is not the recorded weights', a threshold
    sweep whose entry at the config's threshold is not the epoch's gap."""
    from .analysis import distance_from_binary

    gap, epoch = record.get("gap"), record.get("epoch")
    if not getattr(cfg, "track_gap", False):
        return [f"epoch {epoch}: a gap is recorded but the config does not track it"] if gap is not None else []
    if not isinstance(gap, Mapping):
        return [f"epoch {epoch}: the gap is not recorded (track_gap is on)"]
    problems = [f"epoch {epoch}: gap {k} {gap.get(k)!r} is not an accuracy in [0, 1]"
                for k in ("relaxed_acc", "rounded_acc", "discrete_acc") if not isinstance(gap.get(k), (int, float))
                or not 0 <= gap[k] <= 1]
    if problems:
        return problems
    for name, other in (("acc_gap", "discrete_acc"), ("rounding_gap", "rounded_acc")):
        if not math.isclose(gap.get(name, math.nan), gap["relaxed_acc"] - gap[other], abs_tol=1e-12):
            problems.append(f"epoch {epoch}: {name} is not relaxed_acc - {other}")
    distance = distance_from_binary([np.asarray(record[name]) for name in space.weight_names])
    if not math.isclose(gap.get("distance_from_binary", math.nan), distance, rel_tol=1e-6, abs_tol=1e-9):
        problems.append(f"epoch {epoch}: distance_from_binary is not that of the recorded relaxed weights")
    own = (record.get("gap_by_threshold") or {}).get(f"{cfg.threshold:.2f}")
    if own is not None and (own.get("discrete_acc"), own.get("rounded_acc")) != (gap["discrete_acc"], gap["rounded_acc"]):
        problems.append(f"epoch {epoch}: the threshold sweep at {cfg.threshold:.2f} is not the epoch's gap")
    return problems


def _saved_weight_problems(run: "_runs.SearchRun", space: SearchSpace) -> List[str]:
    """Whether every ``NAME.npy`` of the space's relaxed weights is on disk and holds the last epoch's."""
    problems = []
    for name in space.weight_names:
        saved = run.weights.get(name)
        last = np.asarray(run.history[-1][name], dtype=np.float32)
        if not (Path(run.path) / f"{name}.npy").is_file():
            problems.append(f"{name}.npy is missing")
        elif saved is None or saved.shape != last.shape or not np.array_equal(saved, last):
            problems.append(f"{name}.npy is not the last epoch's {_cell_label(name)} relaxed weights")
    return problems


def check_chain_file(run: Mapping[str, Any]) -> List[str]:
    """Internal consistency of a recorded chain experiment: every record present (every ``record_every``
    steps, and the last step), weights of shape (depth, ops) that the relaxation can give, ``summary`` equal to
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
        problems += _relaxed_problems(f"step {r.get('step')}: the weights", r.get("weights"), cfg["relaxation"],
                                      len(cfg["ops"]), rows=cfg["depth"])
    if records and not problems:
        summary, want_summary = run.get("summary") or {}, skip_summary(run)
        if set(summary) != set(want_summary) or any(not math.isclose(summary[k], v, rel_tol=1e-12, abs_tol=1e-12)
                                                    for k, v in want_summary.items()):
            problems.append("the summary is not the skip summary of the last record")
    problems += _provenance_problems(run.get("provenance"), "fairdarts mechanism",
                                     [f"--depth {cfg['depth']}", f"--relaxation {cfg['relaxation']}",
                                      f"--seed {cfg['seed']}"])
    return problems


SOFTMAX_SUM_TOL = 1e-5
"""How far a recorded softmax row may sum from 1 (float32 rounding of up to 8 ops is ~1e-7)."""


def _relaxed_problems(label: str, weights: Any, relaxation: str, n_ops: int, rows: Optional[int] = None) -> List[str]:
    """What is wrong with a recorded matrix of relaxed weights: its shape, values outside [0, 1] (sigmoid
    and softmax alike), softmax rows that do not sum to 1."""
    try:
        W = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        return [f"{label} are not a matrix of numbers"]
    if W.ndim != 2 or W.shape[1] != n_ops or (rows is not None and W.shape[0] != rows):
        return [f"{label} have shape {W.shape}, not ({rows or 'edges'}, {n_ops})"]
    if not (np.isfinite(W).all() and (W >= 0).all() and (W <= 1).all()):
        return [f"{label} are not all in [0, 1]"]
    if relaxation == "softmax" and np.abs(W.sum(1) - 1).max() > SOFTMAX_SUM_TOL:
        return [f"{label}: a softmax row sums to {W.sum(1)[np.abs(W.sum(1) - 1).argmax()]:.6g}, not 1"]
    return []


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
@dataclass
class Recheck:
    """What a re-check found: ``problems`` (empty: the run holds), the ``mode`` it ran in, the re-run's
    records next to the recorded ones, and for every statistic its largest distance from the record in
    seed spreads (:func:`compare_statistics`; empty when an exact re-check holds)."""

    problems: List[str]
    mode: str
    got: List[dict]
    want: List[dict]
    distances: Dict[str, float]


def _is_matrix(key: str) -> bool:
    """Whether a record's field is a matrix of relaxed weights (a search's ``NAME_weight``, a chain's
    ``weights``), compared as one array."""
    return key == "weights" or key.endswith("_weight")


def _exact_problems(label: str, got: Mapping[str, Any], want: Mapping[str, Any], keys: Sequence[str]) -> List[str]:
    """Bit-for-bit comparison of the recorded fields ``keys`` of one record."""
    problems = []
    for key in keys:
        a, b = got.get(key), want.get(key)
        if _is_matrix(key):
            A, B = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if A.shape != B.shape or not np.array_equal(A, B):
                diff = float(np.abs(A - B).max()) if A.shape == B.shape else float("nan")
                problems.append(f"{label}: {key} not bit for bit (largest difference {diff:.3g})")
        elif a != b:
            problems.append(f"{label}: {key} {_fmt(a)} re-run, {_fmt(b)} recorded (not bit for bit)")
    return problems


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else repr(x)[:120]


def compare_statistics(got: Sample, want: Sample, spread: Spread, shape: Tuple[int, int],
                       k: float = K) -> Tuple[List[str], Dict[str, float]]:
    """Compare a re-run's statistics with the recorded ones, record by record. Returns the problems (a
    statistic off by more than ``k`` times its spread, :meth:`Spread.of`, that tolerance widened where
    few seeds measured the spread: :func:`few_seeds_factor`) and, for every statistic, the
    largest distance ``|re-run - recorded| / spread`` (what ``K`` was chosen from)."""
    where = "epoch" if spread.kind == "search" else "step"
    problems: List[str] = []
    distances: Dict[str, float] = {}
    for at, g, w in zip(want.at, got.stats, want.stats):
        for name, value in w.items():
            if name not in g:
                problems.append(f"{where} {at}: the re-run has no {name}")
                continue
            sd, what = spread.of(want, name, _unit(name, shape))
            limit = k * few_seeds_factor(spread.dof(want, name))
            diff = abs(g[name] - value)
            distance = diff / sd if sd > 0 else (0.0 if diff == 0 else math.inf)
            distances[name] = max(distances.get(name, 0.0), distance)
            if not distance <= limit:
                problems.append(f"{where} {at}: {name} {value:.4g} recorded, {g[name]:.4g} re-run: off by {diff:.3g}, "
                                f"more than {limit:.3g} x {what} ({sd:.3g})")
    return problems, distances


def recheck_search(run_dir: PathLike, epochs: int = 2, mode: str = "auto", reference: PathLike = RUNS,
                   rerun: Optional[Sequence[dict]] = None) -> List[str]:
    """Re-check a recorded search: its files (:func:`check_search_files`), then its config re-run for
    its first ``epochs`` epochs (the full run's learning-rate schedule) against its history, bit for bit
    (``mode="exact"``) or by its statistics against the seed spread of the searches recorded under
    ``reference`` (``"statistical"``); ``"auto"``: exact where the numerics signature is the recorder's.
    Returns the problems, one line each. ``rerun``: see :func:`recheck_search_details`."""
    return recheck_search_details(run_dir, epochs, mode, reference, rerun).problems


def recheck_chain(path: PathLike, steps: int = 50, mode: str = "auto", reference: PathLike = RUNS,
                  threads: Optional[int] = None) -> List[str]:
    """Re-check a recorded chain experiment: its file (:func:`check_chain_file`), then its config re-run
    for its first ``steps`` steps (``run_chain(max_steps=steps)``, schedule unchanged) against its
    records, as :func:`recheck_search` does. ``threads``: torch threads of the re-run (default: the
    recorded count where that makes the numerics the recorder's, else the current count)."""
    return recheck_chain_details(path, steps, mode, reference, threads).problems


SEARCH_FIELDS = ("genotype", "train_loss", "train_acc", "val_loss", "val_acc", "zero_one_loss", "lr", "skip_noise_std")
"""What an exact re-check compares bit for bit in every epoch record of a search besides its space's relaxed
weights and skip counts (:func:`search_fields`); only the wall time is left out."""
CHAIN_FIELDS = ("weights", "train_acc")


def search_fields(config: Any) -> Tuple[str, ...]:
    """Every field of an epoch record of a search with ``config`` that an exact re-check compares bit for
    bit: its space's relaxed weights (``normal_weight``, ``reduce_weight`` or ``cell_weight``), its skip
    counts (``skip_normal``, ``skip_reduce`` or ``skips``), :data:`SEARCH_FIELDS`, and the Hessian
    eigenvalue and the discretization gap where the search tracked them (``track_hessian``, ``track_gap``)."""
    space = get_space(config.space)
    tracked = tuple(key for key, flag in (("hessian_eigenvalue", "track_hessian"), ("gap", "track_gap"))
                    if getattr(config, flag, False))
    return (*space.weight_names, *SEARCH_FIELDS, *space.skip_keys, *tracked)


def rerun_search(config: Any, epochs: int = 2) -> List[dict]:
    """The epoch records of a search with ``config`` run for its first ``epochs`` epochs (the full run's
    learning-rate schedule), in memory: what :func:`recheck_search_details` compares with a record."""
    from .search import run_search

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs}")
    threads = torch.get_num_threads()
    try:  # the search sets its own thread count (config.threads)
        return run_search(config, out_dir=None, progress=False,
                          callback=lambda record, model: record["epoch"] < epochs).history
    finally:
        torch.set_num_threads(threads)


def recheck_search_details(run_dir: PathLike, epochs: int = 2, mode: str = "auto", reference: PathLike = RUNS,
                           rerun: Optional[Sequence[dict]] = None) -> Recheck:
    """:func:`recheck_search`, with the mode it ran in, the re-run's records and its distances. ``rerun``: the
    re-run's records when they are at hand (:func:`rerun_search` of this run's config for ``epochs`` epochs,
    e.g. one re-run checked against a record and against an edited copy of it); by default it runs now."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs}")
    run = _runs.load_search_run(run_dir)
    cfg = run.config
    space = get_space(cfg.space)
    mode = _mode(mode, recorded_numerics(run.provenance), current_numerics(cfg.threads))
    problems = check_search_files(run)
    got = rerun_search(cfg, epochs) if rerun is None else list(rerun)
    want = run.history[:epochs]
    problems += [f"epoch {w['epoch']}: learning rate {g['lr']:.6g} re-run, {w['lr']:.6g} recorded"
                 for g, w in zip(got, want) if not math.isclose(g["lr"], w["lr"], rel_tol=1e-12)]
    rerun = search_sample(cfg, got)
    return _compare(problems, mode, got, want, search_fields(cfg), "epoch", rerun, search_sample(cfg, want),
                    lambda: search_spread(reference, epochs, rerun),
                    np.asarray(want[0][space.weight_names[0]]).shape if want else (0, 0))


def recheck_chain_details(path: PathLike, steps: int = 50, mode: str = "auto", reference: PathLike = RUNS,
                          threads: Optional[int] = None) -> Recheck:
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
    rerun = chain_sample(cfg, got)
    return _compare(problems, mode, got, want, CHAIN_FIELDS, "step", rerun, chain_sample(cfg, want),
                    lambda: chain_spread(reference, steps, rerun), (cfg["depth"], len(cfg["ops"])))


def _compare(problems: List[str], mode: str, got: List[dict], want: List[dict], fields: Sequence[str], where: str,
             rerun: Sample, recorded: Sample, spread: Callable[[], Spread], shape: Tuple[int, int]) -> Recheck:
    """The re-run ``got`` against the record ``want``: bit for bit (``fields``) or by their statistics."""
    if rerun.at != recorded.at:
        problems.append(f"the re-run recorded {where}s {rerun.at}, the record {recorded.at}")
        return Recheck(problems, mode, got, want, {})
    if mode == "exact":
        exact = [p for g, w in zip(got, want) for p in _exact_problems(f"{where} {w[where]}", g, w, fields)]
        if not exact:
            return Recheck(problems, mode, got, want, {})
        # Say whether only the rounding changed (the code sums in another order) or the conclusions too.
        stat, distances = compare_statistics(rerun, recorded, spread(), shape)
        verdict = (f"the statistical re-check fails too ({len(stat)} problems)" if stat else
                   "statistically it agrees: the rounding changed (the code sums in another order, or the numerics "
                   "are not the recorder's), not the conclusions")
        return Recheck(problems + exact + [f"the re-run is not bit for bit; {verdict}"], mode, got, want, distances)
    stat, distances = compare_statistics(rerun, recorded, spread(), shape)
    return Recheck(problems + stat, mode, got, want, distances)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fairdarts_core.reproduce extra-seeds``: measure :data:`EXTRA_SEEDS` (minutes to an hour
    on a CPU) and write it atomically with its provenance."""
    import argparse
    import sys
    import time

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m fairdarts_core.reproduce",
                                     description="Measure what the recorded-run re-check needs.")
    sub = parser.add_subparsers(dest="command", required=True)
    extra = sub.add_parser("extra-seeds", help=f"the first epochs of further seeds of the recorded settings with "
                                               f"few seeds, into ROOT/{EXTRA_SEEDS}")
    extra.add_argument("--root", default=str(RUNS), help="the recorded runs (default: the repository's data/runs)")
    extra.add_argument("--seeds", type=int, default=3, help="seeds per pool, the recorded ones included (3)")
    extra.add_argument("--epochs", type=int, default=2, help="epochs of a search (2; chains: 50 steps)")
    extra.add_argument("--space", choices=sorted(SPACES),
                       help="only the searches of this space (default: all, chains included)")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds must be at least 2; got {args.seeds}")
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1; got {args.epochs}")
    start = time.time()
    measured = measure_extra_seeds(args.root, args.seeds, epochs=args.epochs, space=args.space)
    path = Path(args.root) / EXTRA_SEEDS
    before = json.loads(path.read_text()) if path.is_file() else {"sessions": []}
    record = {"about": "the first epochs (steps) of further seeds of the recorded settings whose pool has few "
                       "seeds: what fairdarts_core.reproduce re-checks those settings against; no recorded runs",
              "searches": before.get("searches", []) + measured["searches"],
              "chains": before.get("chains", []) + measured["chains"],
              "sessions": before.get("sessions", []) + [
                  _runs.provenance(["python", "-m", "fairdarts_core.reproduce", *argv], time.time() - start)]}
    _runs.atomic_write_json(path, record)
    print(f"{path}: {len(measured['searches'])} searches and {len(measured['chains'])} chains measured, "
          f"{len(record['searches'])} and {len(record['chains'])} in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
