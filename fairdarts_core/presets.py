"""Named settings for searching (:class:`SearchConfig`) and retraining (:class:`TrainConfig`).

A preset is a dataclass instance; every field can be overridden from Python
(``get_search_preset("cpu", epochs=3)``) and from the command line (``--set epochs=3``).

Search presets
    ``paper``        Fair DARTS on CIFAR-10 exactly as published (Chu et al., 2020; the authors' scripts:
                     see shared/reference/official_settings.md).
    ``darts-paper``  first-order DARTS on CIFAR-10 as published (Liu et al., 2019): 8 ops with ``none``,
                     softmax, its optimisers.
    ``cpu``          Fair DARTS on Fashion-MNIST at a size that searches in minutes on a laptop CPU.
    ``darts-cpu``    the same search with DARTS's softmax (only the relaxation, the zero-one loss and the
                     parse rule differ, so the two runs compare the relaxations and nothing else).
    ``cpu-long``     ``cpu`` searched five times longer (50 epochs, 1000 architecture steps, about 20 minutes
                     on one core): what chapter 2's levers showed a Fair DARTS CPU search needs to push
                     several sigmoids past the 0.85 threshold (the 10-epoch ``cpu`` search keeps only a
                     normal edge or two; recorded as ``data/runs/levers/long_*``).
    ``darts-cpu-long`` its DARTS counterpart.
    ``smoke``        seconds, for tests.

Train presets: ``paper`` (CIFAR-10, 600 epochs), ``cpu`` (Fashion-MNIST, minutes), ``smoke``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

from .ops import DARTS_OPS, FAIR_DARTS_OPS

MODES = ("bilevel", "single", "second_order")


@dataclass
class SearchConfig:
    """Everything a search run depends on (saved as ``config.json`` in the run directory)."""

    # data
    dataset: str = "cifar10"
    data_dir: Optional[str] = None         # None: $FAIRDARTS_DATA, the repository's data/, or ./data
    subset: Optional[int] = None           # class-balanced subset of the training set; None = all of it
    train_portion: float = 0.5             # weights part of the split; the rest trains alpha
    image_size: Optional[int] = None       # resize (CPU presets); None = native size
    batch_size: int = 64
    cutout: int = 0                        # the search does not use cutout (DARTS, Fair DARTS)
    # supernet
    channels: int = 16
    layers: int = 8
    primitives: Tuple[str, ...] = FAIR_DARTS_OPS
    relaxation: str = "sigmoid"
    alpha_init_std: float = 0.0            # Fair DARTS: alpha = 0 (all sigmoids 0.5); DARTS: 1e-3 * N(0, 1)
    path: str = "fast"                     # supernet formulation: "fast" or "reference" (same math)
    # deriving the cell
    parse_method: Optional[str] = None     # None: threshold_sparse for sigmoid, darts for softmax
    threshold: float = 0.85
    # architecture loss: CE + zero_one_weight * L01 (Fair DARTS Eq. 5)
    zero_one_weight: float = 10.0
    zero_one_kind: str = "l2"
    # optimisation
    mode: str = "bilevel"                  # "bilevel" (first order), "single" (one level), "second_order"
    epochs: int = 50
    lr: float = 0.005                      # weights: SGD, cosine from lr to lr_min over the epochs
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-3                  # architecture: Adam
    arch_betas: Tuple[float, float] = (0.9, 0.999)
    arch_weight_decay: float = 1e-3
    # noise on skip (the authors' DARTS experiment): N(0, s^2), s cosine-decayed 1 -> 0 over noise_epochs
    skip_noise: bool = False
    noise_epochs: int = 30
    # run
    seed: int = 2
    device: str = "auto"                   # "auto": cuda when available, else cpu
    threads: Optional[int] = None          # torch intra-op threads (None: torch's default); tiny
                                           # tensors on a busy CPU run much faster with 1

    def __post_init__(self):
        self.primitives = tuple(self.primitives)
        self.arch_betas = tuple(float(b) for b in self.arch_betas)
        if self.mode not in MODES:
            raise ValueError(f"unknown search mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.relaxation not in ("sigmoid", "softmax"):
            raise ValueError(f"unknown relaxation {self.relaxation!r}; choose sigmoid or softmax")
        if self.zero_one_kind not in ("l2", "l1"):
            raise ValueError(f"unknown zero-one loss kind {self.zero_one_kind!r}; choose l2 or l1")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["primitives"], d["arch_betas"] = list(self.primitives), list(self.arch_betas)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SearchConfig":
        return _build(cls, d, "search config")


@dataclass
class TrainConfig:
    """Retraining of the evaluation network from a genotype (DARTS Sec. 3.2, Fair DARTS Sec. 5)."""

    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    subset: Optional[int] = None           # class-balanced subset of the training set; None = all
    test_subset: Optional[int] = None      # class-balanced subset of the test set; None = all
    image_size: Optional[int] = None
    batch_size: int = 96                   # the global batch: split over the processes under torchrun
    eval_batch_size: int = 256
    channels: int = 36
    layers: int = 20
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2            # reached at the end; grows linearly from 0 (DARTS)
    epochs: int = 600
    lr: float = 0.025                      # SGD, cosine to lr_min
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    crop_pad: int = 4
    flip: bool = True
    cutout: int = 16
    autoaugment: bool = False
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        return _build(cls, d, "train config")


def _build(cls, d: Dict[str, Any], what: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**d)


# --- presets -----------------------------------------------------------------------------------------
SEARCH_PRESETS: Dict[str, Dict[str, Any]] = {
    # official_settings.md, "Fair DARTS search"
    "paper": dict(dataset="cifar10", train_portion=0.5, batch_size=128, epochs=50, channels=16, layers=8,
                  primitives=FAIR_DARTS_OPS, relaxation="sigmoid", alpha_init_std=0.0,
                  parse_method="threshold_sparse", threshold=0.85, zero_one_weight=10.0, zero_one_kind="l2",
                  mode="bilevel", lr=0.005, lr_min=0.001, momentum=0.9, weight_decay=3e-4, grad_clip=5.0,
                  arch_lr=3e-3, arch_betas=(0.9, 0.999), arch_weight_decay=1e-3),
    # official_settings.md, "DARTS (the baseline)", first order
    "darts-paper": dict(dataset="cifar10", train_portion=0.5, batch_size=64, epochs=50, channels=16, layers=8,
                        primitives=DARTS_OPS, relaxation="softmax", alpha_init_std=1e-3, parse_method="darts",
                        zero_one_weight=0.0, mode="bilevel", lr=0.025, lr_min=0.001, momentum=0.9,
                        weight_decay=3e-4, grad_clip=5.0, arch_lr=3e-4, arch_betas=(0.5, 0.999),
                        arch_weight_decay=1e-3),
    # Fashion-MNIST, 640 + 640 images at 16x16, 5 cells of 8 channels: minutes on 2 CPU cores.
    # The weights get DARTS's larger lr (a short search must train its supernet quickly), and the
    # architecture Adam 10x the paper's 3e-3: with ~200 architecture steps instead of the paper's ~10k,
    # 3e-3 leaves every sigmoid near 0.5 and the 0.85 threshold keeps no edge. The chapter on the
    # collapse tunes the size.
    "cpu": dict(dataset="fashion-mnist", subset=1280, train_portion=0.5, image_size=16, batch_size=32,
                epochs=10, channels=8, layers=5, primitives=FAIR_DARTS_OPS, relaxation="sigmoid",
                alpha_init_std=0.0, parse_method="threshold_sparse", zero_one_weight=10.0, mode="bilevel",
                lr=0.025, lr_min=0.001, arch_lr=3e-2, arch_betas=(0.9, 0.999), arch_weight_decay=1e-3,
                device="cpu", threads=1),  # 1 thread: tiny tensors, often a busy machine
    "smoke": dict(dataset="fashion-mnist", subset=64, train_portion=0.5, image_size=8, batch_size=16,
                  epochs=2, channels=4, layers=3, primitives=FAIR_DARTS_OPS, relaxation="sigmoid",
                  zero_one_weight=10.0, lr=0.025, lr_min=0.001, device="cpu", threads=1,
                  # a huge architecture lr, so that 4 steps already push some sigmoids past the 0.85
                  # threshold and the smoke run derives a cell that can be retrained
                  arch_lr=1.0),
}
SEARCH_PRESETS["darts-cpu"] = {**SEARCH_PRESETS["cpu"], "relaxation": "softmax", "alpha_init_std": 1e-3,
                               "parse_method": "darts", "zero_one_weight": 0.0}
SEARCH_PRESETS["cpu-long"] = {**SEARCH_PRESETS["cpu"], "epochs": 50}
SEARCH_PRESETS["darts-cpu-long"] = {**SEARCH_PRESETS["darts-cpu"], "epochs": 50}

TRAIN_PRESETS: Dict[str, Dict[str, Any]] = {
    # official_settings.md, "Retraining"
    "paper": dict(dataset="cifar10", batch_size=96, epochs=600, channels=36, layers=20, auxiliary=True,
                  auxiliary_weight=0.4, drop_path_prob=0.2, lr=0.025, lr_min=0.0, momentum=0.9,
                  weight_decay=3e-4, grad_clip=5.0, crop_pad=4, flip=True, cutout=16, autoaugment=False),
    # Fashion-MNIST resized 28 -> 32: the auxiliary head needs the 8x8 maps of a 32x32 input.
    "cpu": dict(dataset="fashion-mnist", subset=5000, test_subset=2000, image_size=32, batch_size=64,
                epochs=5, channels=8, layers=6, auxiliary=True, drop_path_prob=0.1, lr=0.05, cutout=8,
                device="cpu", threads=1),
    "smoke": dict(dataset="fashion-mnist", subset=64, test_subset=32, image_size=32, batch_size=16,
                  eval_batch_size=32, epochs=1, channels=4, layers=3, auxiliary=True, drop_path_prob=0.1,
                  cutout=8, device="cpu", threads=1),
}


def _preset(table: Dict[str, Dict[str, Any]], cls, name: str, overrides: Dict[str, Any], what: str):
    if name not in table:
        raise ValueError(f"unknown {what} preset {name!r}; choose one of {', '.join(table)}")
    return _build(cls, {**table[name], **overrides}, what + " config")


def get_search_preset(name: str, **overrides) -> SearchConfig:
    """The search preset ``name`` with some fields replaced, e.g. ``get_search_preset("cpu", epochs=3)``."""
    return _preset(SEARCH_PRESETS, SearchConfig, name, overrides, "search")


def get_train_preset(name: str, **overrides) -> TrainConfig:
    """The retraining preset ``name`` with some fields replaced."""
    return _preset(TRAIN_PRESETS, TrainConfig, name, overrides, "train")


def parse_value(cls, key: str, text: str) -> Any:
    """Convert ``--set key=value`` text to the type of field ``key`` of ``cls`` (a config dataclass)."""
    by_name = {f.name: f for f in fields(cls)}
    if key not in by_name:
        raise ValueError(f"unknown {cls.__name__} field {key!r}; known: {', '.join(sorted(by_name))}")
    default = by_name[key].default
    if text.lower() in ("none", "null"):
        return None
    if key in ("primitives", "arch_betas"):
        parts = [p.strip() for p in text.strip("()[]").split(",") if p.strip()]
        return tuple(float(p) for p in parts) if key == "arch_betas" else tuple(parts)
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} must be true or false, got {text!r}")
    try:
        if isinstance(default, int) or key in ("subset", "test_subset", "image_size", "threads"):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {text!r}") from None
    return text


def apply_sets(cls, pairs) -> Dict[str, Any]:
    """``["epochs=3", "lr=0.1"]`` -> ``{"epochs": 3, "lr": 0.1}`` with each value typed like its field."""
    out: Dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        out[key.strip()] = parse_value(cls, key.strip(), text.strip())
    return out
