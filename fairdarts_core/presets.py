"""Named settings for searching (:class:`SearchConfig`) and retraining (:class:`TrainConfig`).

A preset is a dataclass instance; every field can be overridden from Python
(``get_search_preset("cpu", epochs=3)``) and from the command line (``--set epochs=3``). Every field is
checked when a config is built, so a bad value stops a run before it starts, with one line that names the
field, the value and what is valid (``grad_clip=-1.0 is not valid: grad_clip must be a number >= 0 ...``).

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
    ``cpu-cell``     a whole Fair DARTS cell in about 6 minutes on one core (chapter 5): ``cpu`` with 1.5x the
                     images and an architecture Adam at 0.1; recorded in ``data/runs/cpu_cell/``.
    ``darts-cpu-cell`` its DARTS counterpart.
    ``smoke``        seconds, for tests.

Train presets: ``paper`` (CIFAR-10, 600 epochs), ``cpu`` (Fashion-MNIST, minutes), ``smoke``.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import reprlib
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple, Union, get_args, get_origin, get_type_hints

import numpy as np
import torch

from .data import DATASETS, FOLDER_PREFIX, dataset_info, search_split, split_size
from .network import AUX_MIN_IMAGE_SIZE, MIN_IMAGE_SIZE, MIN_LAYERS
from .nb201 import NB201_OPS
from .ops import DARTS_OPS, FAIR_DARTS_OPS, OPS
from .precision import AMP_MODES
from .spaces import SPACES
from .supernet import FORMULATIONS

MODES = ("bilevel", "single", "second_order")
RELAXATIONS = ("sigmoid", "softmax")
ZERO_ONE_KINDS = ("l2", "l1")
DEVICE_TYPES = ("cpu", "cuda", "mps")
MAX_SEED = 2 ** 32 - 1


# --- validation: every field checked when a config is built -----------------------------------------------
# Each refusal is one ValueError line "FIELD=VALUE is not valid: FIELD must be ... (why)", so that the CLI
# shows it as it is and a user sees at once what to change.

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxtuple = 60, 60, 8, 8


def _refuse(name: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"{name}={_short.repr(value)} is not valid: {rule}")


def _bounds(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


class _Fields:
    """Checks the fields of one config object in place (and normalises their types: numpy numbers become
    Python numbers, integers in a float field become floats, sequences become tuples)."""

    def __init__(self, config: Any):
        self.config = config

    def number(self, name: str, low: Optional[float] = None, high: Optional[float] = None, *,
               integer: bool = False, low_open: bool = False, high_open: bool = False,
               optional: bool = False, why: str = "") -> None:
        value = getattr(self.config, name)
        if value is None and optional:
            return
        ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
        if ok:
            try:
                value = int(value) if integer else float(value)
            except OverflowError:  # an integer too large for a float field
                ok = False
        if ok:
            ok = ((integer or math.isfinite(value))
                  and (low is None or (value > low if low_open else value >= low))
                  and (high is None or (value < high if high_open else value <= high)))
        if not ok:
            what = "an integer" if integer else "a number"
            rule = f"{name} must be {what} {_bounds(low, high, low_open, high_open)}".rstrip()
            rule += " or none" if optional else ""
            raise _refuse(name, getattr(self.config, name), rule + (f" ({why})" if why else ""))
        setattr(self.config, name, value)

    def choice(self, name: str, choices: Sequence[str], optional: bool = False, why: str = "") -> None:
        value = getattr(self.config, name)
        if value is None and optional:
            return
        if not isinstance(value, str) or value not in choices:
            rule = f"choose one of {', '.join(choices)}" + (" or none" if optional else "")
            raise _refuse(name, value, rule + (f" ({why})" if why else ""))

    def flag(self, name: str) -> None:
        value = getattr(self.config, name)
        if not isinstance(value, (bool, np.bool_)):
            raise _refuse(name, value, f"{name} must be true or false")
        setattr(self.config, name, bool(value))

    def directory(self, name: str) -> None:
        value = getattr(self.config, name)
        if value is None:
            return
        if not isinstance(value, (str, os.PathLike)) or str(value) == "":
            raise _refuse(name, value, f"{name} must be a directory path or none")
        setattr(self.config, name, str(value))  # a str, so that config.json can hold it

    def device(self, name: str = "device") -> None:
        value = getattr(self.config, name)
        rule = "choose auto, cpu, cuda, cuda:N (N: a GPU's index) or mps"
        if not isinstance(value, str):
            raise _refuse(name, value, rule)
        if value == "auto":
            return
        try:
            parsed = torch.device(value)
        except (RuntimeError, ValueError, TypeError):  # torch's words for an unparseable device string
            raise _refuse(name, value, rule) from None
        if parsed.type not in DEVICE_TYPES:
            raise _refuse(name, value, rule)

    def op_names(self, name: str, ops: Sequence[str] = tuple(OPS), space: str = "darts") -> None:
        value = getattr(self.config, name)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise _refuse(name, value, f"{name} must be a list of op names, e.g. {','.join(ops[:2])}")
        value = tuple(value)
        known = ", ".join(sorted(ops))
        if not value:
            raise _refuse(name, value, f"{name} must name at least one op; known ops: {known}")
        for op in value:
            if not isinstance(op, str) or op not in ops:
                raise _refuse(name, value, f"unknown op {_short.repr(op)} in the {space} space; known ops: {known}")
        repeated = sorted({op for op in value if value.count(op) > 1})
        if repeated:
            raise _refuse(name, value, f"{name} lists {', '.join(repeated)} more than once")
        if set(value) == {"none"}:
            raise _refuse(name, value, f"{name} needs an op besides none (a derived cell never keeps none)")
        setattr(self.config, name, value)

    def betas(self, name: str) -> None:
        value = getattr(self.config, name)
        rule = f"{name} must be two numbers in [0, 1) (Adam's beta1, beta2), e.g. 0.9,0.999"
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise _refuse(name, value, rule)
        if not all(isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1 for b in value):
            raise _refuse(name, value, rule)
        setattr(self.config, name, tuple(float(b) for b in value))


def _training_images(config: Any) -> int:
    """Images the run trains on: ``subset``, or the whole published training split."""
    return config.subset if config.subset is not None else split_size(config.dataset, True)


def _check_data(f: _Fields) -> None:
    """Fields shared by both configs: the data set, its subsets, the image size, the batch and the run."""
    c = f.config
    if isinstance(c.dataset, str) and c.dataset.startswith(FOLDER_PREFIX):
        dataset_info(c.dataset)  # reads and registers the image folder, or refuses it in one line
    f.choice("dataset", tuple(DATASETS), why="or 'folder:PATH', an image folder with train/ and test/, or a "
                                              "name given to data.register_dataset")
    f.directory("data_dir")
    classes = DATASETS[c.dataset].num_classes
    f.number("subset", classes, split_size(c.dataset, True), integer=True, optional=True,
             why=f"a class-balanced subset holds every one of {c.dataset}'s {classes} classes, and the "
                 f"training split has {split_size(c.dataset, True)} images")
    f.number("image_size", MIN_IMAGE_SIZE, integer=True, optional=True,
             why=f"none: the data set's own size; after the two reduction cells the feature maps must still be "
                 f"at least 2x2 ({MIN_IMAGE_SIZE} -> 3 -> 2) for BatchNorm to train on a batch of one image")
    f.number("batch_size", 1, integer=True)
    f.number("cutout", 0, integer=True, why="the side of the cut-out square in pixels; 0: no cutout")
    f.number("crop_pad", 0, integer=True, why="the zero padding of the random crop; 0: no crop")
    f.flag("flip")
    f.number("channels", 1, integer=True, why="the initial channels C")
    f.number("layers", MIN_LAYERS, integer=True,
             why="the cells: reduction cells at 1/3 and 2/3 of the depth and a normal cell need 3 at least")
    f.number("epochs", 1, integer=True)
    f.number("lr", 0, low_open=True)
    f.number("lr_min", 0, why="the learning rate the cosine schedule ends at")
    f.number("momentum", 0, 1, high_open=True)
    f.number("weight_decay", 0)
    f.number("grad_clip", 0, why="the largest gradient norm; 0: no clipping")
    f.number("seed", 0, MAX_SEED, integer=True)
    f.device()
    f.number("threads", 1, integer=True, optional=True, why="torch's intra-op threads; none: torch's default")


@dataclass
class SearchConfig:
    """Everything a search run depends on (saved as ``config.json`` in the run directory).

    Every field is checked when the config is built: a bad value is one ``ValueError`` line naming the field,
    the value and what is valid. ``from_dict`` also reads configs recorded before ``formulation`` was
    called ``path``.
    """

    # data
    dataset: str = "cifar10"
    data_dir: Optional[str] = None         # None: $FAIRDARTS_DATA, the repository's data/, or ./data
    subset: Optional[int] = None           # class-balanced subset of the training set; None = all of it
    train_portion: float = 0.5             # weights part of the split; the rest trains alpha
    image_size: Optional[int] = None       # resize (CPU presets); None = native size
    batch_size: int = 64
    cutout: int = 0                        # the search does not use cutout (DARTS, Fair DARTS)
    crop_pad: int = 4                      # random crop after padding by this many pixels (0: none)
    flip: bool = True                      # random horizontal flips
    # supernet
    space: str = "darts"                   # the search space (fairdarts_core.spaces): "darts" or "nb201"
    channels: int = 16
    layers: int = 8
    primitives: Tuple[str, ...] = FAIR_DARTS_OPS
    relaxation: str = "sigmoid"
    alpha_init_std: float = 0.0            # Fair DARTS: alpha = 0 (all sigmoids 0.5); DARTS: 1e-3 * N(0, 1)
    formulation: str = "fast"              # how the supernet is computed: "fast" or "reference" (same math)
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
    grad_clip: float = 5.0                 # 0: no clipping
    arch_lr: float = 3e-3                  # architecture: Adam
    arch_betas: Tuple[float, float] = (0.9, 0.999)
    arch_weight_decay: float = 1e-3
    # noise on skip (the authors' DARTS experiment): N(0, s^2), s cosine-decayed 1 -> 0 over noise_epochs
    skip_noise: bool = False
    noise_epochs: int = 30
    # a collapse indicator (RobustDARTS): the dominant Hessian eigenvalue of the validation loss w.r.t. alpha,
    # measured after every epoch on one fixed architecture batch (analysis.hessian_eigenvalue)
    track_hessian: bool = False
    # the discretization gap (Fair DARTS, Sec. 4, Eq. 5): the supernet with its relaxed weights against the same
    # supernet with the derived cell's 0/1 weights, after every epoch, on gap_images held-out test images
    # (analysis.discretization_gap); a sigmoid search also sweeps the threshold after its last epoch
    track_gap: bool = False
    gap_images: int = 500
    # run
    seed: int = 2
    device: str = "auto"                   # "auto": cuda when available, else cpu
    threads: Optional[int] = None          # torch intra-op threads (None: torch's default); tiny
                                           # tensors on a busy CPU run much faster with 1
    amp: str = "off"                       # mixed precision of the forward pass: off, bf16, fp16 (CUDA);
                                           # alpha and the losses stay float32 (fairdarts_core.precision)

    LEGACY_KEYS: ClassVar[Dict[str, str]] = {"path": "formulation"}  # old name -> field, for old config.json

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field; raise one ``ValueError`` line for the first bad one. Called on construction."""
        f = _Fields(self)
        _check_data(f)
        f.number("train_portion", 0, 1, low_open=True, high_open=True,
                 why="the share of the images that trains the weights; the rest trains the architecture")
        f.choice("space", tuple(SPACES))
        space = SPACES[self.space]
        f.op_names("primitives", space.ops, space.name)
        f.choice("relaxation", RELAXATIONS)
        f.number("alpha_init_std", 0)
        f.choice("formulation", FORMULATIONS)
        f.choice("parse_method", space.derive_methods, optional=True,
                 why=f"none: {space.default_derive['sigmoid']} for sigmoid, {space.default_derive['softmax']} "
                     f"for softmax")
        f.number("threshold", 0, 1, why="a relaxed weight is kept when it reaches the threshold")
        f.number("zero_one_weight", 0)
        f.choice("zero_one_kind", ZERO_ONE_KINDS)
        f.choice("mode", MODES)
        f.choice("amp", AMP_MODES, why="mixed precision of the forward pass; fp16 needs a CUDA device")
        if self.amp != "off" and self.mode == "second_order":
            raise _refuse("amp", self.amp, "mode=second_order needs float32 (its finite difference of "
                          "gradients drowns in half-precision rounding): use amp=off")
        f.number("arch_lr", 0, low_open=True)
        f.betas("arch_betas")
        f.number("arch_weight_decay", 0)
        f.flag("skip_noise")
        f.number("noise_epochs", 1, integer=True, why="the epochs over which the noise decays to 0")
        f.flag("track_hessian")
        f.flag("track_gap")
        test_images = split_size(self.dataset, False)  # the bound matters only where the gap is measured
        f.number("gap_images", 1, test_images if self.track_gap else None, integer=True,
                 why=f"the held-out images the gap is measured on, from the {test_images} of the test split")
        if self.skip_noise and "skip_connect" not in self.primitives:
            raise _refuse("skip_noise", True, "noise on skip needs skip_connect among the primitives")
        space.check_search_config(self)
        # The search split (DARTS, Sec. 3.1): each part must hold a whole batch, or every step of it would
        # silently run on fewer images than batch_size.
        n = _training_images(self)
        weights, arch = search_split(n, self.train_portion)
        if min(weights, arch) < self.batch_size:
            raise _refuse("subset", self.subset,
                          f"with train_portion={self.train_portion} and batch_size={self.batch_size}, the "
                          f"{n} images split into {weights} for the weights and {arch} for the architecture, "
                          f"and each part must hold at least one batch: raise subset or lower batch_size")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["primitives"], d["arch_betas"] = list(self.primitives), list(self.arch_betas)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SearchConfig":
        """A config from its ``to_dict`` form (e.g. a run's ``config.json``, old ones included)."""
        return _build(cls, d, "search config")


@dataclass
class TrainConfig:
    """Retraining of the evaluation network from a genotype (DARTS Sec. 3.2, Fair DARTS Sec. 5).

    Every field is checked when the config is built (one ``ValueError`` line naming the field, the value and
    what is valid)."""

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
    grad_clip: float = 5.0                 # 0: no clipping
    crop_pad: int = 4
    flip: bool = True
    cutout: int = 16
    autoaugment: bool = False
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    amp: str = "off"                       # mixed precision of the forward pass: off, bf16, fp16 (CUDA)
    channels_last: bool = False            # NHWC memory layout for the network and its inputs

    LEGACY_KEYS: ClassVar[Dict[str, str]] = {}

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field; raise one ``ValueError`` line for the first bad one. Called on construction."""
        f = _Fields(self)
        _check_data(f)
        classes = DATASETS[self.dataset].num_classes
        f.number("test_subset", classes, split_size(self.dataset, False), integer=True, optional=True,
                 why=f"a class-balanced subset holds every one of {self.dataset}'s {classes} classes, and the "
                     f"test split has {split_size(self.dataset, False)} images")
        f.number("eval_batch_size", 1, integer=True)
        f.flag("auxiliary")
        f.number("auxiliary_weight", 0)
        f.number("drop_path_prob", 0, 1, high_open=True, why="the drop-path probability reached at the end")
        f.flag("autoaugment")
        f.choice("amp", AMP_MODES, why="mixed precision of the forward pass; fp16 needs a CUDA device")
        f.flag("channels_last")
        if _training_images(self) < self.batch_size:
            raise _refuse("subset", self.subset, f"the training images must hold at least one batch of "
                                                 f"batch_size={self.batch_size}: raise subset or lower batch_size")
        if self.auxiliary:
            size = self.image_size or DATASETS[self.dataset].image_size
            if size < AUX_MIN_IMAGE_SIZE:
                shown = self.image_size if self.image_size is not None else f"none ({self.dataset}: {size}x{size})"
                raise ValueError(f"image_size={shown} is not valid with auxiliary=true: the auxiliary head needs "
                                 f"images of at least {AUX_MIN_IMAGE_SIZE}x{AUX_MIN_IMAGE_SIZE} (an 8x8 map after "
                                 f"the two reduction cells): set image_size=32 or auxiliary=false")
            if self.batch_size < 2:
                raise _refuse("batch_size", self.batch_size, "with auxiliary=true the batch must hold at least 2 "
                              "images (the head's BatchNorm sees a 1x1 map per image)")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """A config from its ``to_dict`` form (e.g. a run's ``config.json``)."""
        return _build(cls, d, "train config")


def _build(cls, d: Dict[str, Any], what: str):
    """``cls(**d)`` with one-line errors: ``d`` must be a dict of known fields (old names are renamed)."""
    if not isinstance(d, dict):
        raise ValueError(f"a {what} is a dict of fields, got {type(d).__name__}")
    d = dict(d)
    for old, new in getattr(cls, "LEGACY_KEYS", {}).items():
        if old in d:
            if new in d and d[new] != d[old]:
                raise ValueError(f"{what}: both {old} (the old name) and {new} are given, and they differ")
            d[new] = d.pop(old)
    names = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in set(d) - names)
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
# A whole Fair DARTS cell in minutes (chapter 5): ``cpu`` with 1.5x the images (960 + 960: 300 architecture
# steps in 10 epochs) and an architecture Adam at 0.1 (chapter 2's levers saw a search at 0.3 keep all eight
# normal edges in 10 epochs, data/runs/levers/archlr_fairdarts_s0). Measured (data/runs/cpu_cell/, one core
# each, two searches side by side): seeds 0, 1, 2 keep 8, 6 and 8 normal edges, all four nodes live, in
# 5.6 to 5.7 minutes. The sigmoids settle near 0 and 1 within 5-7 epochs; which of the ops that are on the
# derive rule keeps still moves until epoch 9 or 10 (analysis.settling).
SEARCH_PRESETS["cpu-cell"] = {**SEARCH_PRESETS["cpu"], "subset": 1920, "arch_lr": 0.1}
SEARCH_PRESETS["darts-cpu-cell"] = {**SEARCH_PRESETS["darts-cpu"], "subset": 1920, "arch_lr": 0.1}
# The NAS-Bench-201 space on a CPU, where DARTS collapses in minutes: Fashion-MNIST at 8x8, 2500 + 2500
# images, 3 stages of 8 cells with 8, 16, 32 channels, first order, 30 epochs of 40 steps, the benchmark's
# weight optimiser (SGD 0.025, cosine to 0, weight decay 5e-4) and DARTS's architecture Adam (betas 0.5,
# 0.999) at 3e-3 (the published 3e-4 barely moves alpha in 1200 steps). No augmentation: the images are 8
# pixels wide. About 11 minutes on one core (two searches side by side on 2 cores).
SEARCH_PRESETS["nb201-darts-cpu"] = dict(
    space="nb201", dataset="fashion-mnist", subset=5000, train_portion=0.5, image_size=8, batch_size=64,
    crop_pad=0, flip=False, epochs=30, channels=8, layers=24, primitives=NB201_OPS, relaxation="softmax",
    alpha_init_std=1e-3, parse_method="darts", zero_one_weight=0.0, mode="bilevel", lr=0.025, lr_min=0.0,
    momentum=0.9, weight_decay=5e-4, grad_clip=5.0, arch_lr=3e-3, arch_betas=(0.5, 0.999), arch_weight_decay=1e-3,
    device="cpu", threads=1)
# Its Fair DARTS counterpart: only the relaxation, its initialisation, the zero-one loss and the derive rule differ.
SEARCH_PRESETS["nb201-cpu"] = {**SEARCH_PRESETS["nb201-darts-cpu"], "relaxation": "sigmoid", "alpha_init_std": 0.0,
                               "parse_method": "threshold", "zero_one_weight": 10.0}
# NAS-Bench-201's own DARTS search (its DARTS-V1 baseline: CIFAR-10 half and half, 3 stages of 5 cells with
# 16 channels, 50 epochs, batch 64, SGD 0.025 cosine to 0.001, weight decay 5e-4; architecture Adam 3e-4,
# betas (0.5, 0.999), weight decay 1e-3), where the benchmark reports six skip edges of six. A GPU setting.
# One difference: the benchmark's SGD uses Nesterov momentum, this library's plain momentum 0.9.
SEARCH_PRESETS["nb201-darts-paper"] = dict(
    space="nb201", dataset="cifar10", train_portion=0.5, batch_size=64, epochs=50, channels=16, layers=15,
    primitives=NB201_OPS, relaxation="softmax", alpha_init_std=1e-3, parse_method="darts", zero_one_weight=0.0,
    mode="bilevel", lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=5e-4, grad_clip=5.0, arch_lr=3e-4,
    arch_betas=(0.5, 0.999), arch_weight_decay=1e-3)
# Its Fair DARTS counterpart, as for the CPU pair: only the relaxation, its initialisation, the zero-one loss
# and the derive rule differ.
SEARCH_PRESETS["nb201-paper"] = {**SEARCH_PRESETS["nb201-darts-paper"], "relaxation": "sigmoid",
                                 "alpha_init_std": 0.0, "parse_method": "threshold", "zero_one_weight": 10.0}

PAPER_SEARCH_GPU_DAYS = 0.25
"""The search cost the authors published for the ``paper`` setting on CIFAR-10 (Chu et al., 2020), in
GPU-days: their figure, not a measurement of this library."""

TRAIN_PRESETS: Dict[str, Dict[str, Any]] = {
    # official_settings.md, "Retraining"
    "paper": dict(dataset="cifar10", batch_size=96, epochs=600, channels=36, layers=20, auxiliary=True,
                  auxiliary_weight=0.4, drop_path_prob=0.2, lr=0.025, lr_min=0.0, momentum=0.9,
                  weight_decay=3e-4, grad_clip=5.0, crop_pad=4, flip=True, cutout=16, autoaugment=False),
    # Fashion-MNIST resized 28 -> 32: the auxiliary head needs the 8x8 maps of a 32x32 input.
    "cpu": dict(dataset="fashion-mnist", subset=5000, test_subset=2000, image_size=32, batch_size=64,
                epochs=5, channels=8, layers=6, auxiliary=True, drop_path_prob=0.1, lr=0.05, cutout=8,
                device="cpu", threads=1),
    # NAS-Bench-201's evaluation network (3 stages of 5 cells, 16 channels) on the nb201 searches' images
    # (Fashion-MNIST at 8x8): minutes on one core, to compare derived cells with each other.
    "nb201-cpu": dict(dataset="fashion-mnist", subset=5000, test_subset=2000, image_size=8, batch_size=64,
                      epochs=10, channels=16, layers=15, auxiliary=False, drop_path_prob=0.0, lr=0.05,
                      weight_decay=5e-4, crop_pad=1, flip=True, cutout=0, device="cpu", threads=1),
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


def _field_type(cls, key: str) -> Tuple[Any, bool]:
    """``(type, optional)`` of field ``key`` of the config class ``cls``."""
    names = [f.name for f in fields(cls)]
    if key not in names:
        raise ValueError(f"unknown {cls.__name__} field {key!r}; known: {', '.join(sorted(names))}")
    hint = get_type_hints(cls)[key]
    if get_origin(hint) is Union and type(None) in get_args(hint):
        return next(a for a in get_args(hint) if a is not type(None)), True
    return hint, False


def parse_value(cls, key: str, text: str) -> Any:
    """Convert ``--set key=value`` text to the type of field ``key`` of ``cls`` (a config dataclass).

    ``none`` (or ``null``) is ``None`` for the fields that may be ``None``; lists are comma-separated
    (``primitives=skip_connect,sep_conv_3x3``, ``arch_betas=0.5,0.999``). Every failure is one
    ``ValueError`` line; the value's range is checked when the config is built.
    """
    kind, optional = _field_type(cls, key)
    if text.lower() in ("none", "null"):
        if optional:
            return None
        raise ValueError(f"{key}={text} is not valid: {key} cannot be none")
    if get_origin(kind) is tuple:
        parts = [p.strip() for p in text.strip("()[]").split(",") if p.strip()]
        if get_args(kind)[0] is float:
            try:
                return tuple(float(p) for p in parts)
            except ValueError:
                raise ValueError(f"{key}={text!r} is not valid: {key} must be numbers separated by commas, "
                                 f"e.g. {key}=0.9,0.999") from None
        if not parts:
            raise ValueError(f"{key}={text!r} is not valid: {key} must name at least one op, separated by "
                             f"commas, e.g. {key}={','.join(FAIR_DARTS_OPS[:2])}")
        return tuple(parts)
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={text!r} is not valid: {key} must be true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not valid: {key} must be an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not valid: {key} must be a number") from None
    return text


def apply_sets(cls, pairs) -> Dict[str, Any]:
    """``["epochs=3", "lr=0.1"]`` -> ``{"epochs": 3, "lr": 0.1}`` with each value typed like its field."""
    out: Dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        key = getattr(cls, "LEGACY_KEYS", {}).get(key.strip(), key.strip())
        out[key] = parse_value(cls, key, text.strip())
    return out
