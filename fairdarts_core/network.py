"""Evaluation networks: a discrete cell (a :class:`Genotype`) stacked into the network that is retrained.

As in DARTS (Liu et al., ICLR 2019, Sec. 3.2) and Fair DARTS (Chu et al., ECCV 2020, Sec. 5): a stem, then
``layers`` cells, reduction cells at 1/3 and 2/3 of the depth (they double the channels and halve the
resolution), an auxiliary classifier after the cell at 2/3 depth (training only), global pooling and a
linear classifier. During training each op output may be dropped for a whole sample ("drop-path",
Larsson et al., FractalNet), which regularises the long retraining.

Two Fair DARTS specifics:

- **Isolated nodes are dropped.** The threshold parse can leave an intermediate node with no input (or
  with inputs from isolated nodes only). Such a node is not computed and not concatenated, so a cell's
  output has ``len(live nodes) * C`` channels and the next cells' preprocessing follows.
  FairDARTS_a's normal cell has 3 live nodes: its last cell outputs 3 * 144 = 432 channels.
- **Multi-hot edges.** A ``threshold_edge`` parse may keep two ops on one edge; both run and add up.

Module names follow the layout of the authors' released checkpoints (``stem.0``, ``cells.N.preprocess0``,
``cells.N._ops.<to>.<from>.<k>``, ``auxiliary_head.features.2``, ``classifier``), so
:func:`from_authors_state_dict` loads them by name, key for key.
"""
from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .genotype import Edge, Genotype, live_nodes, prune_isolated
from .ops import FactorizedReduce, Identity, ReLUConvBN, make_op

Arch = Union[str, Path, Genotype]
"""An architecture: a :class:`Genotype`, a zoo name (``"FairDARTS_a"``), a genotype JSON file or a search
run directory (see :func:`fairdarts_core.zoo.resolve_arch`)."""

CELL_NAMES = {"normal": "normal cell", "reduce": "reduction cell"}

MIN_LAYERS = 3
"""Fewest cells of a network (``SearchConfig`` asks the same of the supernet): the two reduction cells sit at 1/3 and 2/3 of the depth
(cells ``layers // 3`` and ``2 * layers // 3``), and only from 3 cells on are they two different cells with
a normal cell before them; with 1 or 2 cells there is no normal cell at all."""


def reduced_size(image_size: int, reductions: int = 2) -> int:
    """The side of the feature maps after ``reductions`` stride-2 cells (each maps ``n`` to ``ceil(n / 2)``:
    the pools and convs pad, :class:`FactorizedReduce` pads odd sizes)."""
    for _ in range(reductions):
        image_size = (image_size + 1) // 2
    return image_size


MIN_IMAGE_SIZE = 5
"""Smallest input side for the CIFAR networks (and, through ``SearchConfig``, the supernet, which reduces the
same way): after the two reduction cells the maps must
still be at least 2x2 (5 -> 3 -> 2), because BatchNorm in training mode needs more than one value per
channel and a batch may hold a single image (below 5 the maps are 1x1 and such a batch fails)."""

AUX_MAP_SIZE = 8
"""The auxiliary head's input side: its 5x5 pool (stride 3) must leave 2x2 for its 2x2 conv."""

AUX_MIN_IMAGE_SIZE = next(n for n in range(1, 64) if reduced_size(n) >= AUX_MAP_SIZE)
"""Smallest input side with an auxiliary head: 29 (29 -> 15 -> 8); 28x28 Fashion-MNIST is too small, the
presets resize it to 32."""


def min_image_size(auxiliary: bool) -> int:
    """The smallest input side a CIFAR evaluation network (``auxiliary``: with its head) can train on."""
    return AUX_MIN_IMAGE_SIZE if auxiliary else MIN_IMAGE_SIZE


def _resolve(arch: Optional[Arch]) -> Genotype:
    from .zoo import resolve_arch  # imported here: the zoo is data, and it is loaded only when named

    return resolve_arch(arch)


def check_live(genotype: Genotype) -> None:
    """Raise ``ValueError`` if a cell has no live intermediate node (nothing would reach its output)."""
    for kind in ("normal", "reduce"):
        if not genotype.concat(kind):
            raise ValueError(f"the {CELL_NAMES[kind]} has no live intermediate node (no node is reached from "
                             f"the cell inputs), so it outputs nothing: {list(genotype.cell(kind))}")


def check_shape(C: int, layers: int, num_classes: int) -> None:
    """Raise one ``ValueError`` line if a network cannot have this many channels, cells or classes."""
    for name, value, low, why in (("C", C, 1, ""), ("num_classes", num_classes, 1, ""),
                                  ("layers", layers, MIN_LAYERS, " (two reduction cells and a normal cell)")):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} is not valid: {name} must be an integer >= {low}{why}")


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero each sample's ``x`` with probability ``drop_prob``; scale survivors by ``1 / keep`` so the
    expectation is unchanged (drop-path, as DARTS uses it on every non-identity op of the eval network)."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    """One discrete cell: preprocess the two inputs, compute the live nodes, concatenate them.

    ``_ops[str(to)][str(from)]`` is the list of ops on edge ``from -> to`` (usually one; two on a
    multi-hot edge), in genotype order. Only edges between live nodes are built.
    """

    def __init__(self, edges: Sequence[Edge], steps: int, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.concat: List[int] = live_nodes(edges, steps)
        if not self.concat:
            kind = CELL_NAMES["reduce" if reduction else "normal"]
            raise ValueError(f"the {kind} has no live intermediate node: {list(edges)}")
        self.multiplier = len(self.concat)  # output channels = multiplier * C
        # If the previous cell reduced, input 0 is at twice the resolution of input 1: reduce it too.
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        kept = prune_isolated(edges, steps)
        self._ops = nn.ModuleDict()
        for to in self.concat:
            by_source = nn.ModuleDict()
            for src in sorted({s for _, t, s in kept if t == to}):
                stride = 2 if reduction and src < 2 else 1  # only edges leaving the cell inputs stride
                by_source[str(src)] = nn.ModuleList(
                    make_op(op, C, stride, affine=True) for op, t, s in kept if t == to and s == src)
            self._ops[str(to)] = by_source

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states: Dict[int, torch.Tensor] = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for to, by_source in self._ops.items():  # node order: every source is computed before its node
            total = 0
            for src, ops in by_source.items():
                for op in ops:
                    h = op(states[int(src)])
                    if self.training and not isinstance(op, Identity):
                        h = drop_path(h, drop_prob)  # DARTS never drops an identity (it has no weights)
                    total = total + h
            states[int(to)] = total
        return torch.cat([states[n] for n in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 output of the cell at 2/3 depth (DARTS; from Inception, Szegedy et
    al.): pool to 2x2, 1x1 conv to 128, 2x2 conv to 768, linear."""

    def __init__(self, C: int, num_classes: int, pool_stride: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # not in place: the head's input also feeds the next two cells
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)
        self.min_size = 5 + pool_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:  # the 5x5 pool must leave at least 2x2 for the 2x2 conv
            raise ValueError(f"the auxiliary head needs at least a {self.min_size}x{self.min_size} feature map "
                             f"(CIFAR networks: images of at least {AUX_MIN_IMAGE_SIZE}x{AUX_MIN_IMAGE_SIZE}), got "
                             f"{tuple(x.shape[-2:])}: resize the images (e.g. 28 -> 32) or use auxiliary=False")
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(AuxiliaryHeadCIFAR):
    """The same head on the 7x7 map of an ImageNet network (pool stride 2: 7x7 -> 2x2)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, pool_stride=2)


class _Network(nn.Module):
    """What the CIFAR and ImageNet networks share: the cell stack, the auxiliary head, the classifier."""

    def _build_cells(self, genotype: Genotype, C: int, layers: int, C_stem: int, reduction_prev: bool,
                     auxiliary: bool, num_classes: int, aux_head: type) -> None:
        check_live(genotype)
        self.genotype = genotype
        self._layers, self._auxiliary = layers, auxiliary
        self.aux_position = 2 * layers // 3
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        self.cells = nn.ModuleList()
        C_aux = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype.reduce if reduction else genotype.normal, genotype.steps,
                        C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_position:
                C_aux = C_prev
        if auxiliary:
            self.auxiliary_head = aux_head(C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def _run_cells(self, s0: torch.Tensor, s1: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux


class NetworkCIFAR(_Network):
    """The CIFAR evaluation network (DARTS / Fair DARTS: C=36, 20 cells, auxiliary head, 32x32 input).

    ``forward`` returns ``(logits, logits_aux)``; ``logits_aux`` is ``None`` in eval mode or without the
    auxiliary head. ``drop_path_prob`` is an attribute the training loop may change every epoch.
    """

    def __init__(self, C: int = 36, num_classes: int = 10, layers: int = 20, auxiliary: bool = True,
                 genotype: Optional[Arch] = None, drop_path_prob: float = 0.0, in_channels: int = 3,
                 stem_multiplier: int = 3):
        super().__init__()
        if genotype is None:
            raise ValueError("NetworkCIFAR needs a genotype (a Genotype or a zoo name such as 'FairDARTS_a')")
        check_shape(C, layers, num_classes)
        self.drop_path_prob = drop_path_prob
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self._build_cells(_resolve(genotype), C, layers, C_stem, False, auxiliary, num_classes,
                          AuxiliaryHeadCIFAR)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        s = self.stem(x)
        return self._run_cells(s, s)


def network_layout(genotype: Arch, C: int = 36, layers: int = 20, auxiliary: bool = True,
                   image_size: int = 32, in_channels: int = 3, stem_multiplier: int = 3) -> List[Dict[str, object]]:
    """How :class:`NetworkCIFAR` stacks a cell (DARTS Sec. 3.2; Fair DARTS Sec. 5), without building it: one
    row per stage, in order: the stem, every cell, the auxiliary head where it branches off, the classifier.

    A cell row holds ``index``, ``kind`` (``"normal"`` / ``"reduce"``: at 1/3 and 2/3 of the depth, where
    the channels double and the maps halve), ``C`` (channels of each node), ``nodes`` (its live nodes),
    ``out_channels`` (``nodes * C``: what it concatenates) and ``size`` (the side of its output maps). The
    auxiliary head reads the output of cell ``2 * layers // 3``.
    """
    genotype = _resolve(genotype)
    check_shape(C, layers, 10)
    rows: List[Dict[str, object]] = [{"stage": "stem", "in_channels": in_channels, "out_channels": stem_multiplier * C,
                                      "size": image_size}]
    C_curr, size, out_channels = C, image_size, stem_multiplier * C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            C_curr, size = 2 * C_curr, (size + 1) // 2
        nodes = len(live_nodes(genotype.reduce if reduction else genotype.normal, genotype.steps))
        out_channels = nodes * C_curr
        rows.append({"stage": "cell", "index": i, "kind": "reduce" if reduction else "normal", "C": C_curr,
                     "nodes": nodes, "out_channels": out_channels, "size": size})
        if auxiliary and i == 2 * layers // 3:
            rows.append({"stage": "auxiliary head", "after": i, "in_channels": out_channels, "size": size})
    rows.append({"stage": "classifier", "in_channels": out_channels, "size": 1})
    return rows


class NetworkImageNet(_Network):
    """The ImageNet (mobile setting) evaluation network of DARTS: C=48, 14 cells, 224x224 input.

    Two stems reduce 224 -> 28 (the second one's output and the first one's feed the first cell, so the
    first cell sees a "previous reduction"); the cells then reduce 28 -> 14 -> 7.
    """

    def __init__(self, C: int = 48, num_classes: int = 1000, layers: int = 14, auxiliary: bool = True,
                 genotype: Optional[Arch] = None, drop_path_prob: float = 0.0, in_channels: int = 3):
        super().__init__()
        if genotype is None:
            raise ValueError("NetworkImageNet needs a genotype (a Genotype or a zoo name such as 'FairDARTS_a')")
        check_shape(C, layers, num_classes)
        if C < 2:  # the first stem conv has C // 2 channels
            raise ValueError(f"C={C!r} is not valid: NetworkImageNet needs C >= 2")
        self.drop_path_prob = drop_path_prob
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),  # not in place: stem0's output is also the first cell's input 0
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self._build_cells(_resolve(genotype), C, layers, C, True, auxiliary, num_classes,
                          AuxiliaryHeadImageNet)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        return self._run_cells(s0, s1)


# --- the authors' released checkpoints ----------------------------------------------------------------

def load_checkpoint(path: Union[str, Path]) -> dict:
    """Read a checkpoint file safely (``weights_only=True``: tensors and plain data, no code)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"checkpoint file not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, not a torch file, or holds more than weights
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot read checkpoint {p}: {first_line}") from None


def unwrap_state_dict(obj) -> Dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: ``{"state_dict": sd}`` or ``sd`` itself; the ``module.`` prefix
    that ``nn.DataParallel`` adds to every key is removed."""
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict):
        raise ValueError(f"a checkpoint must hold a state dict (a dict of tensors), got {type(sd).__name__}")
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _listing(keys: List[str], what: str, limit: int = 3) -> str:
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{len(keys)} {what} ({shown})"


def _key(k: object) -> str:
    """A state-dict key for a message, shortened (a hand-edited file may hold any key)."""
    return reprlib.repr(k) if not isinstance(k, str) or len(k) > 80 else k


def _mismatch(value: object, want: torch.Tensor) -> Optional[Tuple[str, str]]:
    """``(kind, what)``: what is wrong with one checkpoint entry against the model's tensor; ``None`` if it fits.
    Kinds: ``"shape"``, ``"dtype"``, ``"type"``, ``"values"``."""
    if not isinstance(value, torch.Tensor):
        return "type", f"{type(value).__name__}, not a tensor"
    if tuple(value.shape) != tuple(want.shape):
        return "shape", f"{list(value.shape)} in the checkpoint, {list(want.shape)} in the model"
    if value.is_complex() or value.is_floating_point() != want.is_floating_point():
        return "dtype", f"{value.dtype} in the checkpoint, {want.dtype} in the model"
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return "values", "holds NaN or infinite values"
    return None


def check_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor], label: str = "the model") -> None:
    """Raise one ``ValueError`` (one line) if ``state_dict`` is not a state dict of ``model``: the first few
    missing, unexpected and wrong keys (wrong shape, wrong kind of number, not a tensor, non-finite values)
    of each kind, with a hint at the likely cause (a checkpoint of another genotype or of another size)."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"the checkpoint does not fit {label}: it holds a {type(state_dict).__name__}, "
                         f"not a state dict (a dict of tensors)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [_key(k) for k in state_dict if k not in expected]
    wrong = {k: m for k, m in ((k, _mismatch(state_dict[k], v)) for k, v in expected.items() if k in state_dict) if m}
    problems = [_listing(keys, what) for keys, what in
                ((missing, "missing"), (unexpected, "unexpected"), ([f"{k}: {m[1]}" for k, m in wrong.items()], "wrong"))
                if keys]
    if not problems:
        return
    hints = []
    if any("._ops." in k for k in missing + unexpected):
        hints.append("other cells: a checkpoint of another genotype?")
    if any(kind == "shape" for kind, _ in wrong.values()):
        hints.append("other tensor shapes: another channel count, depth or number of classes?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise ValueError(f"the checkpoint does not fit {label}: " + "; ".join(problems) + hint)


PAPER_SHAPE: Dict[str, object] = {"C": 36, "num_classes": 10, "layers": 20, "auxiliary": True, "in_channels": 3}
"""The network of the authors' released CIFAR-10 checkpoints (DARTS / Fair DARTS evaluation setting)."""


def _shape_label(shape: Dict[str, object]) -> str:
    extra = "" if shape["in_channels"] == 3 else f", in_channels={shape['in_channels']}"
    return f"NetworkCIFAR({shape['C']}, {shape['num_classes']}, {shape['layers']}, auxiliary={shape['auxiliary']}{extra})"


def authors_layout_shape(state_dict) -> Dict[str, object]:
    """The shape of the :class:`NetworkCIFAR` a state dict in the authors' layout belongs to, read off its
    tensors: ``C`` (the stem has 3C filters), ``in_channels``, ``layers`` (the highest cell index + 1),
    ``num_classes`` (the classifier's rows) and ``auxiliary`` (whether it holds an auxiliary head).
    The released files all read :data:`PAPER_SHAPE`; a smaller network saved by
    :func:`save_authors_checkpoint` reads its own."""
    sd = unwrap_state_dict(state_dict)
    stem, classifier = sd.get("stem.0.weight"), sd.get("classifier.weight")
    cells = [int(k.split(".")[1]) for k in sd if isinstance(k, str) and k.startswith("cells.")
             and k.split(".")[1].isdigit()]
    if not (isinstance(stem, torch.Tensor) and stem.dim() == 4 and isinstance(classifier, torch.Tensor)
            and classifier.dim() == 2 and cells):
        raise ValueError("not a checkpoint in the authors' layout: it needs stem.0.weight (4-d), cells.N.* and "
                         "classifier.weight (2-d)")
    return {"C": int(stem.shape[0]) // 3, "num_classes": int(classifier.shape[0]), "layers": max(cells) + 1,
            "auxiliary": any(isinstance(k, str) and k.startswith("auxiliary_head.") for k in sd),
            "in_channels": int(stem.shape[1])}


def from_authors_state_dict(arch: Arch, state_dict, shape: Optional[Dict[str, object]] = None) -> NetworkCIFAR:
    """Build the authors' CIFAR-10 evaluation network for ``arch`` and load their weights into it.

    ``state_dict`` is the authors' checkpoint as read by :func:`load_checkpoint` (their files hold
    ``{"state_dict": ...}``), or the state dict itself. ``shape`` is the network's (keys of
    :data:`PAPER_SHAPE`; default: the paper's, which every released file has; pass
    ``authors_layout_shape(state_dict)`` for a file of another size). Every key must be consumed and every
    shape must match, else a ``ValueError`` lists the differences. The network comes back in eval mode.
    """
    genotype = _resolve(arch)
    label = "the genotype" if isinstance(arch, Genotype) else str(arch)
    shape = {**PAPER_SHAPE, **(shape or {})}
    model = NetworkCIFAR(shape["C"], shape["num_classes"], shape["layers"], auxiliary=shape["auxiliary"],
                         genotype=genotype, in_channels=shape["in_channels"])
    sd = unwrap_state_dict(state_dict)
    check_state_dict(model, sd, f"{_shape_label(shape)} of {label}")
    model.load_state_dict(sd, strict=True)
    return model.eval()


def save_authors_checkpoint(model: NetworkCIFAR, path: Union[str, Path]) -> Dict[str, object]:
    """Write ``model`` as the authors wrote their released files: ``{"state_dict": ...}`` with their key names
    (which are ours, see the module docstring), atomically. Returns the network's shape
    (:func:`authors_layout_shape`), which a reader needs besides the cell."""
    from .runs import atomic_save

    if not isinstance(model, NetworkCIFAR):
        raise ValueError(f"only a NetworkCIFAR has the authors' layout; got {type(model).__name__}")
    state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_save({"state_dict": state_dict}, path)
    return authors_layout_shape(state_dict)


def load_authors_checkpoint(arch: Arch, path: Union[str, Path]) -> NetworkCIFAR:
    """:func:`from_authors_state_dict` on a checkpoint file (e.g. the authors' ``FairDARTS-a.tar``)."""
    return from_authors_state_dict(arch, load_checkpoint(path))


RELEASED_CHECKPOINTS = {"FairDARTS_a": "FairDARTS-a.tar", "FairDARTS_b": "FairDARTS-b.tar"}
"""The CIFAR-10 networks the Fair DARTS authors released (their repository's ``best_model/`` folder)."""

RELEASED_URL = "https://github.com/xiaomi-automl/FairDARTS/raw/master/best_model/{file}"


def fetch_authors_checkpoint(arch: str, directory: Union[str, Path], url: str = RELEASED_URL,
                             timeout: float = 60.0) -> Path:
    """Download the authors' released checkpoint of ``arch`` (``FairDARTS_a`` or ``FairDARTS_b``) into
    ``directory`` (kept there: a second call reads the file it finds) and return its path. Offline, or when the
    file is not there, one ``ValueError`` line that says why; nothing half-written is left behind."""
    import urllib.request

    from .runs import _atomic

    if arch not in RELEASED_CHECKPOINTS:
        raise ValueError(f"the authors released checkpoints of {', '.join(RELEASED_CHECKPOINTS)} only; got {arch!r}")
    path = Path(directory).expanduser() / RELEASED_CHECKPOINTS[arch]
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    source = url.format(file=RELEASED_CHECKPOINTS[arch])
    try:
        with urllib.request.urlopen(source, timeout=timeout) as response:
            data = response.read()
    except Exception as e:  # offline, refused, not found, timed out
        reason = getattr(e, "reason", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot download {source}: {reason}") from None
    _atomic(path, lambda tmp: tmp.write_bytes(data))
    return path
