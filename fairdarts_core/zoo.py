"""The published CIFAR-10 cells, with the figures their authors published.

Seven Fair DARTS cells (Chu et al., ECCV 2020, Fig. 10 and Table 1: FairDARTS_a .. FairDARTS_g) and six
cells of other differentiable searches the paper compares with (DARTS first and second order, PC-DARTS,
P-DARTS, GDAS, SNAS). All figures are for the CIFAR-10 evaluation network: 36 initial channels, 20 cells,
one 32x32 image. The Fair DARTS authors count FLOPs with thop, BatchNorm excluded; see
:func:`fairdarts_core.analysis.compare_with_published` for what our own count says.

The Fair DARTS cells are written as ``(op, to_node, from_node)`` triples, exactly as published: a node
that no entry reaches is isolated (FairDARTS_a's node 3 in the normal cell), and the evaluation network
drops it. The other cells are in the DARTS style, two ``(op, from_node)`` entries per node 2..5 in order,
converted with :meth:`Genotype.from_pairs`.

    >>> from fairdarts_core import zoo
    >>> zoo.get("FairDARTS_a").concat("normal")
    [2, 4, 5]

:func:`resolve_arch` is the one way the library turns what a user names (a Genotype, a published cell, a
genotype JSON file, a search run directory) into a :class:`Genotype`.
"""
from __future__ import annotations

import difflib
import os
import reprlib
from pathlib import Path
from typing import Dict, List, Tuple, Union

from .genotype import Genotype, random_genotype

# --- Fair DARTS cells (triples: op, to, from) ---------------------------------------------------------

_TRIPLES: Dict[str, Tuple[list, list]] = {
    "FairDARTS_a": (
        [("sep_conv_3x3", 2, 0), ("sep_conv_5x5", 2, 1), ("max_pool_3x3", 4, 0), ("sep_conv_3x3", 5, 0)],
        [("max_pool_3x3", 2, 0), ("avg_pool_3x3", 2, 1), ("avg_pool_3x3", 3, 0), ("dil_conv_5x5", 3, 1),
         ("avg_pool_3x3", 4, 0), ("sep_conv_5x5", 4, 1), ("skip_connect", 5, 0), ("skip_connect", 5, 1)],
    ),
    "FairDARTS_b": (
        [("sep_conv_3x3", 2, 0), ("sep_conv_3x3", 2, 1), ("sep_conv_3x3", 3, 1), ("dil_conv_3x3", 4, 0),
         ("sep_conv_5x5", 4, 1), ("dil_conv_5x5", 5, 1)],
        [("skip_connect", 2, 0), ("dil_conv_3x3", 2, 1), ("skip_connect", 3, 0), ("dil_conv_3x3", 3, 1),
         ("max_pool_3x3", 4, 0), ("sep_conv_3x3", 4, 1), ("skip_connect", 5, 2), ("max_pool_3x3", 5, 0)],
    ),
    "FairDARTS_c": (
        [("max_pool_3x3", 2, 0), ("sep_conv_5x5", 2, 1), ("dil_conv_3x3", 4, 0), ("dil_conv_5x5", 4, 2),
         ("skip_connect", 5, 3), ("sep_conv_3x3", 5, 0)],
        [("dil_conv_3x3", 2, 1), ("dil_conv_5x5", 2, 0), ("dil_conv_3x3", 3, 0), ("sep_conv_3x3", 3, 1),
         ("sep_conv_5x5", 4, 0), ("sep_conv_5x5", 4, 3), ("sep_conv_5x5", 5, 0), ("skip_connect", 5, 1)],
    ),
    "FairDARTS_d": (
        [("sep_conv_3x3", 2, 0), ("sep_conv_5x5", 2, 1), ("dil_conv_3x3", 3, 1), ("max_pool_3x3", 3, 0),
         ("dil_conv_3x3", 4, 0), ("dil_conv_3x3", 4, 1), ("sep_conv_3x3", 5, 0), ("dil_conv_5x5", 5, 1)],
        [("max_pool_3x3", 2, 0), ("sep_conv_5x5", 2, 1), ("avg_pool_3x3", 3, 0), ("dil_conv_5x5", 3, 2),
         ("dil_conv_3x3", 4, 3), ("avg_pool_3x3", 4, 0), ("avg_pool_3x3", 5, 0), ("skip_connect", 5, 3)],
    ),
    "FairDARTS_e": (
        [("sep_conv_3x3", 2, 0), ("sep_conv_3x3", 2, 1), ("dil_conv_3x3", 4, 1), ("dil_conv_3x3", 4, 2),
         ("dil_conv_3x3", 5, 0), ("dil_conv_5x5", 5, 1)],
        [("max_pool_3x3", 2, 1), ("max_pool_3x3", 2, 0), ("max_pool_3x3", 3, 1), ("max_pool_3x3", 3, 0),
         ("sep_conv_5x5", 4, 1), ("max_pool_3x3", 4, 0), ("avg_pool_3x3", 5, 0), ("dil_conv_5x5", 5, 1)],
    ),
    "FairDARTS_f": (
        [("max_pool_3x3", 2, 0), ("sep_conv_3x3", 2, 1), ("dil_conv_3x3", 3, 1), ("sep_conv_5x5", 4, 1),
         ("sep_conv_3x3", 5, 0), ("sep_conv_3x3", 5, 1)],
        [("max_pool_3x3", 2, 0), ("max_pool_3x3", 2, 1), ("max_pool_3x3", 3, 0), ("dil_conv_3x3", 3, 1),
         ("dil_conv_3x3", 4, 2), ("max_pool_3x3", 4, 0), ("max_pool_3x3", 5, 0), ("sep_conv_3x3", 5, 1)],
    ),
    "FairDARTS_g": (
        [("sep_conv_3x3", 2, 0), ("sep_conv_3x3", 2, 1), ("skip_connect", 4, 3), ("sep_conv_5x5", 4, 1),
         ("dil_conv_3x3", 5, 0), ("sep_conv_3x3", 5, 1)],
        [("avg_pool_3x3", 2, 1), ("skip_connect", 2, 0), ("skip_connect", 3, 2), ("max_pool_3x3", 3, 1),
         ("sep_conv_5x5", 4, 3), ("max_pool_3x3", 4, 0), ("dil_conv_3x3", 5, 1), ("dil_conv_3x3", 5, 4)],
    ),
}

# --- cells of the other searches (DARTS pairs: two (op, from) per node 2..5) --------------------------

_PAIRS: Dict[str, Tuple[list, list]] = {
    # DARTS (Liu et al., ICLR 2019), first-order search.
    "DARTS_V1": (
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    ),
    # DARTS, second-order search: the cell of the DARTS paper.
    "DARTS_V2": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    ),
    # PC-DARTS (Xu et al., ICLR 2020).
    "PC_DARTS": (
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ),
    # P-DARTS (Chen et al., ICCV 2019).
    "P_DARTS": (
        [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
    ),
    # GDAS (Dong & Yang, CVPR 2019).
    "GDAS": (
        [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_5x5", 4), ("sep_conv_3x3", 3)],
        [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 2)],
    ),
    # SNAS (Xie et al., ICLR 2019), mild constraint.
    "SNAS": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 1),
         ("skip_connect", 1), ("skip_connect", 0), ("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 1), ("skip_connect", 2),
         ("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("dil_conv_5x5", 2)],
    ),
}

# --- published figures ----------------------------------------------------------------------------------
# flops_M: millions of multiply-adds (thop, BN excluded); params_M: millions of parameters (whether the
# auxiliary head is included is not stated, and differs between cells: see analysis.compare_with_published);
# top1: CIFAR-10 test accuracy (%). The Fair DARTS figures are from the authors' README / Table 1.

_RETRAINED = "top1 as retrained by the Fair DARTS authors"

_PUBLISHED: Dict[str, dict] = {
    "FairDARTS_a": {"flops_M": 373, "params_M": 2.83, "top1": 97.46},
    "FairDARTS_b": {"flops_M": 536, "params_M": 3.88, "top1": 97.49},
    "FairDARTS_c": {"flops_M": 400, "params_M": 2.59, "top1": 97.50},
    "FairDARTS_d": {"flops_M": 532, "params_M": 3.84, "top1": 97.51},
    "FairDARTS_e": {"flops_M": 414, "params_M": 3.12, "top1": 97.47},
    "FairDARTS_f": {"flops_M": 497, "params_M": 3.62, "top1": 97.35},
    "FairDARTS_g": {"flops_M": 453, "params_M": 3.38, "top1": 97.46},
    "DARTS_V1": {},  # no figures published beside this cell
    # The authors publish two FLOPs figures for this one cell: 522M in their README's table and 528M in the
    # comment beside the genotype in their code. We keep the table's figure as flops_M and the other as
    # flops_M_alt; tests/test_analysis_flops.py documents which of the two our thop count matches.
    "DARTS_V2": {"flops_M": 522, "flops_M_alt": 528, "params_M": 3.36, "top1": 96.94,
                 "note": _RETRAINED + "; FLOPs published twice: 522M (README table) and 528M (beside the genotype)"},
    "PC_DARTS": {"flops_M": 558, "params_M": 3.63, "top1": 97.31, "note": _RETRAINED},
    "P_DARTS": {"flops_M": 532, "params_M": 3.43, "top1": 97.53, "note": _RETRAINED},
    "GDAS": {"flops_M": 519, "params_M": 3.36},
    "SNAS": {"flops_M": 422, "params_M": 2.66},
}

NAMES: Tuple[str, ...] = tuple(_TRIPLES) + tuple(_PAIRS)
"""Every zoo name: FairDARTS_a .. FairDARTS_g, then DARTS_V1, DARTS_V2, PC_DARTS, P_DARTS, GDAS, SNAS."""


def _check(name: str) -> None:
    if name not in _PUBLISHED:
        raise ValueError(f"unknown architecture {name!r}; the zoo has: {', '.join(NAMES)}")


def get(name: str) -> Genotype:
    """The published cell ``name`` as a :class:`Genotype` (a new, immutable value on every call)."""
    _check(name)
    if name in _TRIPLES:
        normal, reduce = _TRIPLES[name]
        return Genotype(tuple(normal), tuple(reduce))
    normal, reduce = _PAIRS[name]
    return Genotype.from_pairs(normal, reduce)


def published(name: str) -> dict:
    """The published figures of ``name`` (a copy): ``flops_M``, ``params_M``, ``top1`` and ``note`` where
    given; empty for a cell published without figures (DARTS_V1)."""
    _check(name)
    return dict(_PUBLISHED[name])


def all_genotypes() -> Dict[str, Genotype]:
    """``{name: Genotype}`` for the whole zoo, in :data:`NAMES` order."""
    return {name: get(name) for name in NAMES}


def fair_darts_names() -> List[str]:
    """The seven Fair DARTS cells."""
    return [n for n in NAMES if n.startswith("FairDARTS_")]


GENOTYPE_FILE = "genotype.json"
"""The file a search run directory keeps its derived cells in."""

RANDOM_PREFIX = "random:"
"""``random:SEED`` names the random DARTS-space architecture :func:`~fairdarts_core.genotype.random_genotype`
draws from that seed (the random-search baseline)."""

ACCEPTED = (f"a published cell ({', '.join(NAMES)}), {RANDOM_PREFIX}SEED (a random cell), a genotype JSON file, "
            f"a search run directory holding {GENOTYPE_FILE}, or a NAS-Bench-201 string (|op~0|+|op~0|op~1|+|op~0|op~1|op~2|)")
"""What :func:`resolve_arch` accepts, in words (its error messages list it)."""


def resolve_arch(arch: Union[Genotype, str, "os.PathLike[str]"]) -> Genotype:
    """The architecture ``arch`` names, as a :class:`Genotype`.

    ``arch`` is a Genotype (returned as it is), the name of a published cell (``"FairDARTS_a"``; a name
    wins over a file of the same name: write ``./FairDARTS_a`` for the file), a genotype JSON file (as
    written by :meth:`Genotype.save`), or a search run directory (its ``genotype.json``). Anything else is
    one ``ValueError`` line that lists what is accepted.
    """
    from .nb201 import NB201Genotype
    from .spaces import load_genotype

    if isinstance(arch, (Genotype, NB201Genotype)):
        return arch
    if isinstance(arch, str) and arch in _PUBLISHED:
        return get(arch)
    if isinstance(arch, str) and arch.startswith("|"):  # a NAS-Bench-201 architecture string
        return NB201Genotype.from_string(arch)
    if isinstance(arch, str) and arch.startswith(RANDOM_PREFIX):
        seed = arch[len(RANDOM_PREFIX):]
        if not seed.isdigit():
            raise ValueError(f"a random cell is {RANDOM_PREFIX}SEED with SEED an integer >= 0; got {reprlib.repr(arch)}")
        return random_genotype(int(seed))
    if not isinstance(arch, (str, os.PathLike)) or str(arch) == "":
        raise ValueError(f"an architecture is {ACCEPTED}; got {type(arch).__name__} {reprlib.repr(arch)}")
    path = Path(arch)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as e:  # a name too long for the file system, a directory we may not read
        raise ValueError(f"cannot look up architecture {reprlib.repr(str(arch))}: {e.strerror}; "
                         f"an architecture is {ACCEPTED}") from None
    if is_dir:
        if not (path / GENOTYPE_FILE).is_file():
            raise ValueError(f"{path} is a directory without {GENOTYPE_FILE} (not a finished search run); "
                             f"an architecture is {ACCEPTED}")
        return load_genotype(path / GENOTYPE_FILE)
    if is_file:
        return load_genotype(path)
    close = difflib.get_close_matches(str(arch), NAMES, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(f"unknown architecture {reprlib.repr(str(arch))}{guess}: no published cell, file or directory "
                     f"of that name; an architecture is {ACCEPTED}")


# --- a derived cell beside the published ones ------------------------------------------------------------------

def cell_overlap(genotype: Genotype, other: Genotype, kind: str = "normal") -> Dict[str, int]:
    """What one cell (``kind``) of ``genotype`` has in common with ``other``'s, counting the edges the
    evaluation network computes (isolated nodes dropped, :func:`fairdarts_core.genotype.prune_isolated`):
    ``edges`` (its live edges), ``other_edges``, ``same_edge`` (the same ``to <- from`` pair, any op),
    ``same_op`` (the same pair and op) and ``shared_ops`` (ops in common counted with multiplicity,
    wherever they sit: ``sum over ops of min(count here, count there)``)."""
    from collections import Counter

    from .genotype import prune_isolated

    mine, theirs = (prune_isolated(g.cell(kind), g.steps) for g in (genotype, other))
    pairs = {(to, src) for _, to, src in theirs}
    ops_here, ops_there = Counter(op for op, _, _ in mine), Counter(op for op, _, _ in theirs)
    return {"edges": len(mine), "other_edges": len(theirs),
            "same_edge": sum((to, src) in pairs for _, to, src in mine),
            "same_op": len(set(mine) & set(theirs)),
            "shared_ops": sum((ops_here & ops_there).values())}


def recurring(genotypes: Dict[str, Genotype], kind: str = "normal") -> Dict[str, Dict]:
    """Across several cells (e.g. :func:`all_genotypes` restricted to :func:`fair_darts_names`): in how
    many of them each ``to <- from`` pair (``"edges"``, keys like ``"2<-0"``) and each op (``"ops"``) is
    used by a live edge, most frequent first."""
    from collections import Counter

    from .genotype import prune_isolated

    edges, ops = Counter(), Counter()
    for g in genotypes.values():
        live = prune_isolated(g.cell(kind), g.steps)
        edges.update({f"{to}<-{src}" for _, to, src in live})
        ops.update({op for op, _, _ in live})
    return {"edges": dict(edges.most_common()), "ops": dict(ops.most_common()), "cells": len(genotypes)}
