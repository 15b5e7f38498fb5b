"""What a search space is, and the two this library has: the DARTS space and NAS-Bench-201's.

A search space says which candidate ops a mixed edge chooses from, how the supernet is built, how the
relaxed architecture weights are stored (one matrix per cell type), how a discrete cell is derived from
them (each relaxation's own rule), how many skip connections a derived cell has, and which evaluation
network retrains it. The search and training loops ask the space and know nothing else about it, so a
third space (e.g. the paper's MobileNetV2-like S2) is one more :class:`SearchSpace` in :data:`SPACES`.

- ``darts``: the DARTS cell (Liu et al., 2019; Fair DARTS's S1): 2 inputs, 4 intermediate nodes, 14
  edges, a normal and a reduction cell (:mod:`fairdarts_core.supernet`, :mod:`fairdarts_core.genotype`,
  :mod:`fairdarts_core.network`).
- ``nb201``: NAS-Bench-201's cell (Dong & Yang, 2020): 4 nodes, 6 edges, one cell type; stages separated by
  fixed residual blocks (:mod:`fairdarts_core.nb201`). ``layers`` counts its cells, ``layers / 3`` a stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple, Union

import numpy as np
from torch import nn

from . import nb201
from .genotype import Genotype, edge_index
from .ops import DARTS_OPS, OPS

AnyGenotype = Union[Genotype, "nb201.NB201Genotype"]


@dataclass(frozen=True)
class SearchSpace:
    """One search space, as the loops see it.

    ``weight_names``: the relaxed weight matrices, in the order of the supernet's ``relaxed_weights()``
    (history keys and ``NAME.npy`` files of a search run). ``derive_methods`` / ``default_derive``: the
    derive rules and each relaxation's own. ``skip_keys``: the history keys that count skip connections.
    """

    name: str
    ops: Tuple[str, ...]                         # every candidate op name of the space
    default_ops: Tuple[str, ...]                 # the published candidate set
    weight_names: Tuple[str, ...]
    derive_methods: Tuple[str, ...]
    default_derive: Mapping[str, str]
    skip_keys: Tuple[str, ...]
    build_supernet: Callable[[Any, int, int], nn.Module]        # (search config, in_channels, num_classes)
    derive: Callable[[Sequence[np.ndarray], Any, str], AnyGenotype]  # (relaxed weights, config, method)
    skip_counts: Callable[[AnyGenotype], Dict[str, int]]
    build_network: Callable[[Any, AnyGenotype, int, int], nn.Module]  # (train config, genotype, in, classes)
    check_train_config: Callable[[Any], None]
    check_search_config: Callable[[Any], None]
    discrete_weights: Callable[[AnyGenotype, Sequence[str]], Tuple[np.ndarray, ...]]  # (genotype, primitives)
    keeps_none: bool = False                     # whether the derive rule can keep `none` (drop an edge by it)

    def derive_method(self, config) -> str:
        """``config.parse_method``, or the rule of ``config.relaxation``'s authors."""
        return config.parse_method or self.default_derive[config.relaxation]


# --- the DARTS space -------------------------------------------------------------------------------------
def _darts_supernet(config, in_channels: int, num_classes: int) -> nn.Module:
    from .supernet import Supernet, SupernetConfig

    return Supernet(SupernetConfig(channels=config.channels, layers=config.layers, in_channels=in_channels,
                                   num_classes=num_classes, primitives=config.primitives,
                                   relaxation=config.relaxation, alpha_init_std=config.alpha_init_std,
                                   formulation=config.formulation))


def _darts_derive(relaxed: Sequence[np.ndarray], config, method: str) -> Genotype:
    normal, reduce = relaxed
    return Genotype.from_weights(normal, reduce, config.primitives, method, config.threshold)


def _darts_network(config, genotype: Genotype, in_channels: int, num_classes: int) -> nn.Module:
    from .network import NetworkCIFAR

    return NetworkCIFAR(config.channels, num_classes, config.layers, config.auxiliary, genotype,
                        drop_path_prob=0.0, in_channels=in_channels)


def _op_column(op: str, primitives: Sequence[str]) -> int:
    if op not in primitives:
        raise ValueError(f"the derived cell uses {op!r}, which is not among the supernet's ops "
                         f"({', '.join(primitives)})")
    return list(primitives).index(op)


def _darts_discrete(genotype: Genotype, primitives: Sequence[str]) -> Tuple[np.ndarray, ...]:
    """The derived cells as (normal, reduce) 0/1 matrices in the supernet's layout: 1 where the cell keeps
    op k on the edge of row r, 0 elsewhere (a node without kept inputs sums nothing: it outputs zeros)."""
    rows = {edge: r for r, edge in enumerate(edge_index(genotype.steps))}
    matrices = []
    for kind in ("normal", "reduce"):
        m = np.zeros((len(rows), len(primitives)), dtype=np.float32)
        for op, to, src in genotype.cell(kind):
            m[rows[(to, src)], _op_column(op, primitives)] = 1.0
        matrices.append(m)
    return tuple(matrices)


def _no_check(config) -> None:
    return None


DARTS = SearchSpace(
    name="darts", ops=tuple(OPS), default_ops=DARTS_OPS, weight_names=("normal_weight", "reduce_weight"),
    derive_methods=("darts", "threshold_sparse", "threshold_edge"),
    default_derive={"sigmoid": "threshold_sparse", "softmax": "darts"},
    skip_keys=("skip_normal", "skip_reduce"),
    build_supernet=_darts_supernet, derive=_darts_derive,
    skip_counts=lambda g: {"skip_normal": g.count("skip_connect", "normal"),
                           "skip_reduce": g.count("skip_connect", "reduce")},
    build_network=_darts_network, check_train_config=_no_check, check_search_config=_no_check,
    discrete_weights=_darts_discrete)


# --- the NAS-Bench-201 space ------------------------------------------------------------------------------
def _stages(config) -> int:
    return config.layers // 3


def _check_stages(config) -> None:
    if config.layers % 3:
        raise ValueError(f"layers={config.layers} is not valid in the nb201 space: it counts the cells of three "
                         f"equal stages, so it must be a multiple of 3 (e.g. 15: 5 cells per stage)")


def _nb201_check_search(config) -> None:
    _check_stages(config)


def _nb201_check_train(config) -> None:
    _check_stages(config)
    if config.auxiliary:
        raise ValueError("auxiliary=True is not valid for a NAS-Bench-201 network: it has no auxiliary head; "
                         "set auxiliary=false")


def _nb201_supernet(config, in_channels: int, num_classes: int) -> nn.Module:
    return nb201.NB201Supernet(nb201.NB201Config(
        channels=config.channels, cells_per_stage=_stages(config), in_channels=in_channels,
        num_classes=num_classes, primitives=config.primitives, relaxation=config.relaxation,
        alpha_init_std=config.alpha_init_std, formulation=config.formulation))


def _nb201_network(config, genotype, in_channels: int, num_classes: int) -> nn.Module:
    _nb201_check_train(config)
    return nb201.NB201Network(genotype, config.channels, _stages(config), in_channels, num_classes)


def _nb201_discrete(genotype, primitives: Sequence[str]) -> Tuple[np.ndarray, ...]:
    """The derived cell as one (6, n_ops) 0/1 matrix: 1 for the op each edge keeps; a ``none`` edge is a
    row of zeros (the supernet's ``none`` adds nothing either way)."""
    m = np.zeros((nb201.NUM_EDGES, len(primitives)), dtype=np.float32)
    for row, op in enumerate(genotype.ops):
        if op != "none":
            m[row, _op_column(op, primitives)] = 1.0
    return (m,)


NB201 = SearchSpace(
    name=nb201.SPACE, ops=nb201.NB201_OPS, default_ops=nb201.NB201_OPS, weight_names=("cell_weight",),
    derive_methods=nb201.DERIVE_METHODS, default_derive=nb201.DEFAULT_DERIVE, skip_keys=("skips",),
    build_supernet=_nb201_supernet,
    derive=lambda relaxed, config, method: nb201.derive(relaxed[0], config.primitives, method, config.threshold),
    skip_counts=lambda g: {"skips": g.count("skip_connect")},
    build_network=_nb201_network, check_train_config=_nb201_check_train, check_search_config=_nb201_check_search,
    discrete_weights=_nb201_discrete, keeps_none=True)


SPACES: Dict[str, SearchSpace] = {DARTS.name: DARTS, NB201.name: NB201}
"""Every search space by name (``SearchConfig.space``)."""


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}")
    return SPACES[name]


def space_of_cell(cell: str) -> SearchSpace:
    """The space whose search history records the weights of ``cell`` (``"normal"``/``"reduce"``: DARTS;
    ``"cell"``: NAS-Bench-201's one shared cell), or a one-line ``ValueError``."""
    for space in SPACES.values():
        if f"{cell}_weight" in space.weight_names:
            return space
    names = [w[: -len("_weight")] for space in SPACES.values() for w in space.weight_names]
    raise ValueError(f"unknown cell {cell!r}; a search history records the cells {', '.join(map(repr, names))}")


def skip_key(cell: str) -> str:
    """The history key that counts the skip connections of ``cell``'s derived cell."""
    space = space_of_cell(cell)
    return space.skip_keys[space.weight_names.index(f"{cell}_weight")]


def history_cells(history: Sequence[Mapping[str, Any]]) -> Tuple[str, ...]:
    """The cells a search history records (``("normal", "reduce")`` or ``("cell",)``), from its first record."""
    if not history or not isinstance(history[0], Mapping):
        raise ValueError("the history is empty: it records no cell")
    for space in SPACES.values():
        if all(name in history[0] for name in space.weight_names):
            return tuple(name[: -len("_weight")] for name in space.weight_names)
    raise ValueError("the history's first record has no relaxed weights (normal_weight/reduce_weight or cell_weight)")


def space_of(genotype: AnyGenotype) -> SearchSpace:
    """The space a genotype belongs to."""
    return NB201 if isinstance(genotype, nb201.NB201Genotype) else DARTS


def genotype_from_dict(d: Any) -> AnyGenotype:
    """A genotype from its JSON form: ``{"space": "nb201", "arch": ...}`` or the DARTS space's
    ``{"normal": ..., "reduce": ...}``."""
    if isinstance(d, dict) and d.get("space") == nb201.SPACE:
        return nb201.NB201Genotype.from_dict(d)
    return Genotype.from_dict(d)


def load_genotype(path) -> AnyGenotype:
    """A genotype JSON file of either space (one ``ValueError`` line naming the file on any problem)."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError):
        d = None  # Genotype.load says what is wrong, in one line
    if isinstance(d, dict) and d.get("space") == nb201.SPACE:
        try:
            return nb201.NB201Genotype.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
    return Genotype.load(p)
