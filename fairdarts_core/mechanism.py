"""The collapse mechanism in minutes: a deep chain of mixed edges, skip against a convolution.

Fair DARTS (Sec. 3) explains the collapse of DARTS as an *unfair advantage in an exclusive
competition*: a skip connection makes a deep supernet easier to train, like a residual path, so
gradient descent on the architecture weights favours it; under softmax every gain of skip is a loss
of the other ops. This experiment isolates that claim: ``depth`` mixed edges in a chain (no cells, no
reduction), each choosing between ``skip_connect`` and a convolution, trained bi-level on real data.
If the residual-path explanation holds, skip's weight should grow with depth under softmax, while
under sigmoid both ops can keep high weights.

Noise on skip (``skip_noise``): the authors' cheap way to break the unfair advantage (Fair DARTS Sec. 5,
their noisy DARTS experiment). In training mode, Gaussian noise N(0, std^2) is added to the output of
``skip_connect`` on every layer before its relaxed weight multiplies it, as the supernet's ``MixedOp`` does;
std decays along a cosine from 1 at the first step to 0 at ``noise_steps`` (:func:`skip_noise_std`). A
noisy skip is no longer a clean residual path, so its advantage blurs.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .data import Augment, search_loaders
from .ops import check_op_names, search_op
from .relax import relax
from .steps import DivergedError, arch_step, check_finite, finite_flag, weight_step


@dataclass
class ChainConfig:
    """One run of the mechanism experiment (defaults: minutes on 2 CPU cores)."""

    depth: int = 16
    ops: Tuple[str, ...] = ("skip_connect", "conv_3x3")
    relaxation: str = "softmax"
    channels: int = 16
    steps: int = 500                 # bi-level steps (one architecture + one weight step each)
    batch_size: int = 64
    subset: int = 4000               # Fashion-MNIST images, half for weights, half for alpha
    lr: float = 0.025                # weights: SGD momentum 0.9, wd 3e-4, cosine to lr_min
    lr_min: float = 0.001
    arch_lr: float = 3e-3            # alpha: Adam (DARTS's betas)
    arch_betas: Tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    record_every: int = 25
    seed: int = 0
    data_dir: Optional[str] = None
    skip_noise: bool = False         # noise on skip (Fair DARTS Sec. 5): N(0, std^2) on skip's output
    noise_steps: Optional[int] = None  # std cosine-decays 1 -> 0 over these steps (None: all ``steps``)

    def __post_init__(self):
        self.ops = tuple(self.ops)
        self.arch_betas = tuple(float(b) for b in self.arch_betas)
        check_op_names(self.ops)
        if "skip_connect" not in self.ops:
            raise ValueError("the mechanism experiment needs 'skip_connect' among its ops")
        relax(torch.zeros(1, 1), self.relaxation)
        for name in ("depth", "channels", "steps", "batch_size", "record_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.subset < 2 * 10:
            raise ValueError(f"subset must hold at least 20 images (two halves with every one of the 10 classes); "
                             f"got {self.subset}")
        for name in ("lr", "arch_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        for name in ("lr_min", "arch_weight_decay", "grad_clip", "seed"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if len(self.arch_betas) != 2 or not all(0 <= b < 1 for b in self.arch_betas):
            raise ValueError(f"arch_betas must be two numbers in [0, 1); got {self.arch_betas}")
        if not isinstance(self.skip_noise, bool):
            raise ValueError(f"skip_noise must be true or false; got {self.skip_noise!r}")
        if self.noise_steps is not None and (isinstance(self.noise_steps, bool) or not isinstance(self.noise_steps, int)
                                             or self.noise_steps < 1):
            raise ValueError(f"noise_steps must be an integer >= 1, or None (all steps); got {self.noise_steps!r}")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ChainConfig":
        """A config from its ``asdict`` form (e.g. a recorded run's ``config``); unknown fields refused,
        missing ones take their defaults (runs recorded before noise on skip existed have no noise)."""
        if not isinstance(d, dict):
            raise ValueError(f"a chain config must be a JSON object; got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown chain config field(s): {', '.join(unknown)}")
        return cls(**d)


def skip_noise_std(step: int, cfg: ChainConfig) -> float:
    """Std of the noise on skip at bi-level step ``step`` (0-based): cosine from 1 at step 0 to 0 at
    ``noise_steps`` (default: ``steps``), 0 afterwards, and 0 whenever ``skip_noise`` is off. The rule of
    the search's per-epoch schedule (:func:`fairdarts_core.search.skip_noise_std`), applied per step."""
    horizon = cfg.steps if cfg.noise_steps is None else cfg.noise_steps
    if not cfg.skip_noise or step >= horizon:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * step / horizon))


class MixedChain(nn.Module):
    """stem (stride 2) -> ``depth`` mixed edges -> global pool -> classifier.

    ``skip_noise_std`` (0: none; set by the training loop every step): the std of the noise added to skip's
    output on every layer in training mode, before skip's relaxed weight multiplies it."""

    def __init__(self, cfg: ChainConfig, in_channels: int, num_classes: int):
        super().__init__()
        self.cfg = cfg
        C = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.edges = nn.ModuleList(nn.ModuleList(search_op(name, C, 1) for name in cfg.ops) for _ in range(cfg.depth))
        self.classifier = nn.Linear(C, num_classes)
        self.alpha = nn.Parameter(torch.zeros(cfg.depth, len(cfg.ops)))
        self.skip_index = cfg.ops.index("skip_connect")
        self.skip_noise_std = 0.0

    def relaxed_weights(self) -> torch.Tensor:
        return relax(self.alpha, self.cfg.relaxation)

    def arch_parameters(self) -> List[nn.Parameter]:
        return [self.alpha]

    def network_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.parameters() if p is not self.alpha]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edge_weights = self.relaxed_weights()
        x = self.stem(x)
        for layer, ops in enumerate(self.edges):
            noise = self.skip_noise(x)
            if noise is None:
                x = sum(edge_weights[layer, k] * op(x) for k, op in enumerate(ops))
            else:  # the noise joins skip's output, then skip's weight multiplies both (as MixedOp does)
                x = sum(edge_weights[layer, k] * (op(x) + noise if k == self.skip_index else op(x))
                        for k, op in enumerate(ops))
        return self.classifier(x.mean((2, 3)))

    def skip_noise(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Noise N(0, skip_noise_std^2) shaped like skip's output on input ``x`` (skip is the identity), or
        None in eval mode or at std 0: then no random number is drawn, so a run without noise is the run
        recorded before noise on skip existed, bit for bit."""
        if not (self.training and self.skip_noise_std > 0):
            return None
        return self.skip_noise_std * torch.randn_like(x)


def run_chain(cfg: ChainConfig, callback: Optional[Callable[[dict], None]] = None,
              max_steps: Optional[int] = None, out: Union[str, Path, None] = None,
              command: Optional[Sequence[str]] = None) -> Dict:
    """Train one chain bi-level with the search's own first-order steps (:mod:`fairdarts_core.steps`: an
    alpha step on an architecture batch, then a weight step on a training batch) and return its
    trajectory: every ``record_every`` steps, the relaxed weights of every layer and the training accuracy
    of the recent batches (with ``cfg.skip_noise``, also ``skip_noise_std``: the std of the noise on skip at
    that step); ``summary`` (:func:`skip_summary`) of the last record.

    ``max_steps``: stop after that many steps (the learning-rate schedule stays the one of the full
    ``cfg.steps`` run, so the records are the first records of the full run; tests re-run recorded
    runs this way). ``out``: also write the result and its provenance (``command``, default ``sys.argv``)
    as JSON there, atomically, holding the file's one-writer lock; an existing file is not overwritten.
    A non-finite loss or weight stops the run with :class:`DivergedError`.
    """
    if out is None:
        return _chain(cfg, callback, max_steps)
    from .runs import atomic_write_json, lock_file, provenance

    out = Path(out)
    with lock_file(out, command):
        if out.exists():
            raise ValueError(f"{out} already exists: choose another --out, or remove it first")
        start = time.time()
        result = _chain(cfg, callback, max_steps)
        result["provenance"] = provenance(command, time.time() - start)
        atomic_write_json(out, result)
    return result


def _chain(cfg: ChainConfig, callback: Optional[Callable[[dict], None]], max_steps: Optional[int]) -> Dict:
    torch.manual_seed(cfg.seed)
    train, valid, info = search_loaders("fashion-mnist", cfg.data_dir, subset=cfg.subset, train_portion=0.5,
                                        batch_size=cfg.batch_size, seed=cfg.seed,
                                        augment=Augment(crop_pad=0, flip=False))
    model = MixedChain(cfg, info.in_channels, info.num_classes)
    w_opt = torch.optim.SGD(model.network_parameters(), cfg.lr, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam([model.alpha], cfg.arch_lr, betas=cfg.arch_betas, weight_decay=cfg.arch_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, cfg.steps, eta_min=cfg.lr_min)

    def batches(loader):
        epoch = 0
        while True:  # one persistent stream of batches, epoch after epoch
            yield from loader.epoch(epoch)
            epoch += 1

    train_it, valid_it = batches(train), batches(valid)
    records, correct, seen, finite, start = [], 0, 0, [], time.time()
    last = cfg.steps if max_steps is None else max(0, min(cfg.steps, int(max_steps)))
    for step in range(1, last + 1):
        model.skip_noise_std = skip_noise_std(step - 1, cfg)  # both steps of this bi-level step see it
        stats = arch_step(model, next(valid_it), a_opt)
        stats.update(weight_step(model, next(train_it), w_opt, cfg.grad_clip))
        sched.step()
        finite.append(finite_flag(stats))
        correct += stats["train_correct"].item()
        seen += stats["train_n"]

        if step % cfg.record_every == 0 or step == cfg.steps:
            check_finite(finite, model, "chain experiment", first_step=step - len(finite) + 1)
            rec = {"step": step, "weights": model.relaxed_weights().detach().tolist(),
                   "train_acc": correct / seen, "seconds": round(time.time() - start, 2)}
            if cfg.skip_noise:
                rec["skip_noise_std"] = model.skip_noise_std
            correct = seen = 0
            finite = []
            records.append(rec)
            if callback is not None:
                callback(rec)
    result = {"config": asdict(cfg), "records": records}
    if records:
        result["summary"] = skip_summary(result)
    return result


def skip_summary(result: Dict) -> Dict[str, float]:
    """The final state of one run: mean skip weight, mean weight of the best other op, and on how many
    layers skip's weight exceeds every other op's."""
    ops = list(result["config"]["ops"])
    w = np.asarray(result["records"][-1]["weights"])
    s = ops.index("skip_connect")
    others = np.delete(w, s, axis=1)
    return {"depth": w.shape[0], "skip_weight": float(w[:, s].mean()), "other_weight": float(others.max(1).mean()),
            "skip_wins": int((w[:, s] > others.max(1)).sum()), "train_acc": result["records"][-1]["train_acc"]}
