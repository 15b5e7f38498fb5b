"""The search loop: DARTS and Fair DARTS, with per-epoch history, atomic checkpoints and exact resume.

One epoch alternates, for every training batch, the step of ``config.mode`` (:mod:`fairdarts_core.steps`):
first order bi-level (DARTS Alg. 1 with xi = 0; Fair DARTS: Adam on alpha for ``CE + w01 * L01``,
Eq. 6, on an architecture batch, then SGD on the weights for ``CE`` on a training batch), single-level,
or DARTS's second-order unrolled step (DARTS Eq. 7-8). :func:`run_search` is the loop around them: data,
optimisers, noise on skip, history, the run directory (:mod:`fairdarts_core.runs`), divergence checks.

The search space (``config.space``, :mod:`fairdarts_core.spaces`) builds the supernet and derives the cell.

Run directory (``out_dir``): ``config.json``, ``history.json``, the latest relaxed matrices (DARTS space:
``normal_weight.npy`` / ``reduce_weight.npy``, rows in DARTS edge order, the authors' format, read by
``fairdarts parse RUN_DIR``; NAS-Bench-201 space: ``cell_weight.npy``), ``genotype.json``,
``checkpoint.pt``, ``provenance.json``.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import steps
from .genotype import Genotype
from .precision import Precision
from .presets import SearchConfig
from .relax import zero_one_loss
from .runs import (RunDir, check_resume_config, load_optimizer_state, load_state, open_run, seed_everything,
                   set_rng_state, rng_state)
from .steps import DivergedError, ZeroOne, batch_stats, check_finite, finite_flag
from .spaces import get_space
from .supernet import Supernet


def zero_one_term(config: SearchConfig) -> ZeroOne:
    """The zero-one term of ``config``'s architecture loss (Fair DARTS Eq. 5-6; weight 0 for DARTS)."""
    return ZeroOne(config.zero_one_weight, config.zero_one_kind)


def arch_loss(model: Supernet, logits: torch.Tensor, y: torch.Tensor, config: SearchConfig):
    """``CE + zero_one_weight * L01`` over the relaxed weights of both cells; returns (loss, ce, l01)
    (:func:`fairdarts_core.steps.arch_loss` with ``config``'s zero-one term)."""
    return steps.arch_loss(model, logits, y, zero_one_term(config))


def skip_noise_std(epoch: int, config: SearchConfig) -> float:
    """Std of the noise on skip during epoch ``epoch`` (0-based): cosine from 1 at epoch 0 to 0 at
    ``noise_epochs``, 0 afterwards, and 0 whenever ``skip_noise`` is off (the authors' DARTS experiment)."""
    if not config.skip_noise or epoch >= config.noise_epochs:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * epoch / config.noise_epochs))


HESSIAN_ITERATIONS = 20
"""Power iterations of the tracked Hessian eigenvalue (``track_hessian``): each costs about one backward
pass of one architecture batch, so the tracking adds about 22 such passes to an epoch."""


def hessian_at(model: torch.nn.Module, batch) -> float:
    """The tracked collapse indicator after an epoch: the dominant eigenvalue of the Hessian of the
    validation loss w.r.t. alpha on one fixed architecture batch (RobustDARTS, Sec. 4;
    :func:`fairdarts_core.analysis.hessian_eigenvalue`), without the noise on skip, in training mode as the
    architecture step sees the loss. The weights, buffers and the random stream are left as they were."""
    from .analysis import hessian_eigenvalue

    noise, model.skip_noise_std = model.skip_noise_std, 0.0
    try:
        return hessian_eigenvalue(model, batch[0], batch[1], iterations=HESSIAN_ITERATIONS)
    finally:
        model.skip_noise_std = noise


def gap_at(model: torch.nn.Module, batches, config: SearchConfig) -> Dict[str, float]:
    """The tracked discretization gap after an epoch (Fair DARTS, Sec. 4, Eq. 5;
    :func:`fairdarts_core.analysis.discretization_gap`): the supernet with its relaxed weights against the
    same supernet with the cell ``config``'s derive rule gives now, on the fixed held-out ``batches``, in
    eval mode (nothing of the search changes: no buffer, no random draw)."""
    from .analysis import discretization_gap

    space = get_space(config.space)
    genotype = space.derive([w.detach().cpu().numpy() for w in model.relaxed_weights()], config, parse_method(config))
    return {k: v for k, v in discretization_gap(model, batches, genotype, config.threshold).to_dict().items()
            if v is not None}


GAP_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
"""The thresholds of the sweep a sigmoid search with ``track_gap`` records after its last epoch
(``gap_by_threshold``): 0.5, 0.55, ..., 0.95 (Fair DARTS derives at 0.85)."""


def gap_by_threshold(model: torch.nn.Module, batches, config: SearchConfig) -> Dict[str, Dict[str, float]]:
    """The discretized supernet at every threshold of :data:`GAP_THRESHOLDS`, on the held-out ``batches``:
    its weights rounded (``rounded_*``) and the cell of ``config``'s derive rule (``discrete_*``, ``kept``:
    the number of ops the cell keeps): ``{"0.85": {...}, ...}``. What a threshold slider redraws without the
    checkpoint."""
    from dataclasses import replace

    from .analysis import discrete_weights, evaluate, rounded_weights

    space = get_space(config.space)
    relaxed = [w.detach() for w in model.relaxed_weights()]
    arrays = [w.cpu().numpy() for w in relaxed]
    out = {}
    for t in GAP_THRESHOLDS:
        genotype = space.derive(arrays, replace(config, threshold=t), parse_method(config))
        weights = discrete_weights(model, genotype)
        loss, acc = evaluate(model, batches, weights)
        r_loss, r_acc = evaluate(model, batches, rounded_weights(relaxed, config.relaxation, t))
        out[f"{t:.2f}"] = {"discrete_loss": loss, "discrete_acc": acc, "kept": int(sum(float(w.sum()) for w in weights)),
                           "rounded_loss": r_loss, "rounded_acc": r_acc}
    return out


# --- building a search --------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return dev


def parse_method(config: SearchConfig) -> str:
    """The derive rule of ``config``: its ``parse_method``, or its relaxation's own in its search space."""
    return get_space(config.space).derive_method(config)


def build_supernet(config: SearchConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    """The supernet ``config`` describes (in its search space), for images of ``in_channels`` channels and
    ``num_classes`` classes."""
    return get_space(config.space).build_supernet(config, in_channels, num_classes)


def build_optimizers(model: Supernet, config: SearchConfig):
    """SGD on the network weights (cosine schedule over the epochs) and Adam on alpha."""
    w_opt = torch.optim.SGD(model.network_parameters(), lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=config.arch_lr, betas=config.arch_betas,
                             weight_decay=config.arch_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=config.epochs, eta_min=config.lr_min)
    return w_opt, a_opt, sched


# Fields that may differ when resuming (they do not change the math of the run).
RESUME_FREE = ("device", "data_dir", "formulation", "threads")


# --- the loop -----------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    history: List[dict]
    genotype: Genotype
    model: Supernet
    out_dir: Optional[Path] = None
    config: Optional[SearchConfig] = None


def epoch_record(epoch: int, model: Supernet, config: SearchConfig, sums: Dict[str, torch.Tensor], lr: float,
                 seconds: float, noise: float) -> dict:
    """The history record of epoch ``epoch`` (0-based): relaxed weights, derived genotype, mean losses and
    accuracies of the epoch's steps, the zero-one loss, skip counts, learning rate, noise, wall time."""
    space = get_space(config.space)
    relaxed = [w.detach().cpu() for w in model.relaxed_weights()]
    genotype = space.derive([w.numpy() for w in relaxed], config, parse_method(config))
    l01 = zero_one_loss(relaxed, config.zero_one_kind).item()
    s = {k: float(v.item() if torch.is_tensor(v) else v) for k, v in sums.items()}

    def mean(prefix, what):
        n = s.get(f"{prefix}_n", 0.0)
        return s[f"{prefix}_{what}"] / n if n else None

    return {
        "epoch": epoch + 1,
        **{name: w.tolist() for name, w in zip(space.weight_names, relaxed)},
        "genotype": genotype.to_dict(),
        "train_loss": mean("train", "loss_sum"), "train_acc": mean("train", "correct"),
        "val_loss": mean("val", "loss_sum"), "val_acc": mean("val", "correct"),
        "zero_one_loss": l01,
        **space.skip_counts(genotype),
        "lr": lr, "skip_noise_std": noise, "seconds": seconds,
    }


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


SKIP_KEYS = ("skip_normal", "skip_reduce", "skips")
"""History keys that count the skip connections of the derived cell (DARTS space: per cell type)."""


def format_record(r: dict, epochs: int) -> str:
    """One human-readable line per epoch."""
    return (f"epoch {r['epoch']:>3}/{epochs}  train loss {_fmt(r['train_loss'])} acc {_fmt(r['train_acc'])}  "
            f"val loss {_fmt(r['val_loss'])} acc {_fmt(r['val_acc'])}  L01 {r['zero_one_loss']:+.4f}  "
            f"skips {'/'.join(str(r[k]) for k in SKIP_KEYS if k in r)}  lr {r['lr']:.4g}  {r['seconds']:.1f}s"
            + (f"  Hessian eigenvalue {r['hessian_eigenvalue']:.4g}" if "hessian_eigenvalue" in r else "")
            + (f"  gap: acc {r['gap']['relaxed_acc']:.3f}, rounded {r['gap']['rounded_acc']:.3f}, cell "
               f"{r['gap']['discrete_acc']:.3f}" if "gap" in r else ""))


@torch.no_grad()
def evaluate_supernet(model: Supernet, loader, epoch: int) -> Dict[str, torch.Tensor]:
    """Loss and accuracy over one pass of ``loader`` in eval mode (single-level mode has no
    architecture batches to measure on)."""
    was_training = model.training
    model.eval()
    sums: Dict[str, torch.Tensor] = {}
    for x, y in loader.epoch(epoch):
        logits = model(x)
        for k, v in batch_stats("val", logits, y, F.cross_entropy(logits, y)).items():
            sums[k] = sums.get(k, 0) + v
    model.train(was_training)
    return sums


def run_search(config: SearchConfig, out_dir: Union[str, Path, None] = None, resume: bool = False,
               callback: Optional[Callable[[dict, Supernet], Optional[bool]]] = None, progress: bool = True,
               log: Optional[Callable[[str], None]] = None, command: Optional[Sequence[str]] = None) -> SearchResult:
    """Run a DARTS / Fair DARTS search as ``config`` says.

    ``out_dir``: the run directory (None: keep nothing on disk), locked for this process while it runs
    (:func:`fairdarts_core.runs.open_run`). ``resume``: continue from ``out_dir/checkpoint.pt`` (the last
    completed epoch); the result is exactly that of an uninterrupted run on the same device, and a config
    that differs from the saved one is refused. Each epoch's history record has the training loss/accuracy
    of the weight steps and the validation loss/accuracy of the architecture steps (measured on the
    architecture batches as the steps use them, so they cost nothing; single-level mode runs an eval-mode
    pass). ``callback(record, model)`` runs after every epoch (after the checkpoint is written), e.g. to
    plot in a notebook; returning ``False`` stops the search there (resumable later). ``progress``: a tqdm
    bar per epoch. ``log``: where the one-line epoch summaries go (default: printed when ``progress`` is
    on, else nowhere). ``command``: the command line ``provenance.json`` records (default ``sys.argv``).
    A loss, weight or buffer that becomes non-finite stops the search with :class:`DivergedError`.
    """
    if out_dir is None:
        if resume:
            raise ValueError("resume needs the run directory (out_dir / --out)")
        return _search(config, None, False, callback, progress, log)
    with open_run(out_dir, "search", resume, command) as run:
        return _search(config, run, resume, callback, progress, log)


def _search(config: SearchConfig, run: Optional[RunDir], resume: bool, callback, progress: bool, log) -> SearchResult:
    from tqdm.auto import tqdm

    from .data import Augment, held_out_batches, search_loaders

    if log is None:
        log = tqdm.write if progress else (lambda line: None)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    ckpt = None
    if resume:
        ckpt = run.load_checkpoint()
        saved = SearchConfig.from_dict(ckpt["config"]).to_dict()
        check_resume_config(saved, config.to_dict(), RESUME_FREE, run.path)

    seed_everything(config.seed)
    train_loader, val_loader, info = search_loaders(
        config.dataset, config.data_dir, config.subset, config.train_portion, config.image_size,
        config.batch_size, config.seed, Augment(crop_pad=config.crop_pad, flip=config.flip, cutout=config.cutout), device)
    model = build_supernet(config, info.in_channels, info.num_classes).to(device)
    w_opt, a_opt, sched = build_optimizers(model, config)
    precision = Precision(config.amp, device)
    history: List[dict] = []
    start = 0
    if ckpt is not None:
        load_state(model, ckpt["model"], f"the supernet of {run.path}")
        load_optimizer_state(w_opt, ckpt["w_optimizer"], "weights optimizer")
        load_optimizer_state(a_opt, ckpt["a_optimizer"], "architecture optimizer")
        load_optimizer_state(sched, ckpt["scheduler"], "learning-rate schedule")
        precision.load_state_dict(ckpt.get("precision"))
        history = list(ckpt["history"])
        start = int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])
        log(f"resumed {run.path} after epoch {start}/{config.epochs}")
    if run is not None:
        run.write_json("config.json", config.to_dict(), indent=1)

    n_steps = len(train_loader)
    zero_one = zero_one_term(config)
    hessian_batch = next(val_loader.epoch(0, 1)) if config.track_hessian else None
    gap_batches = (held_out_batches(config.dataset, config.gap_images, config.data_dir, config.image_size,
                                    seed=config.seed, device=device) if config.track_gap else None)
    for epoch in range(start, config.epochs):
        t0 = time.time()
        model.train()
        lr = sched.get_last_lr()[0]
        noise = skip_noise_std(epoch, config)
        model.skip_noise_std = noise  # the supernet adds it to skip's output in training mode only
        sums: Dict[str, torch.Tensor] = {}
        finite = []
        # One iterator per loader per epoch; the architecture loader draws exactly one batch per step.
        batches = zip(train_loader.epoch(epoch), val_loader.epoch(epoch, n_steps))
        bar = tqdm(batches, total=n_steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not progress, file=sys.stderr)
        for batch_train, batch_val in bar:
            stats = steps.search_step(config.mode, model, batch_train, batch_val, w_opt, a_opt, zero_one,
                                      config.grad_clip, precision)
            finite.append(finite_flag(stats))
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v
        bar.close()
        check_finite(finite, model, "search", epoch, kept=
                     f"{run.checkpoint_path} keeps epoch {epoch}" if run is not None and epoch else "")
        sched.step()
        if config.mode == "single":
            sums.update(evaluate_supernet(model, val_loader, epoch))
        record = epoch_record(epoch, model, config, sums, lr, time.time() - t0, noise)
        if hessian_batch is not None:
            record["hessian_eigenvalue"] = hessian_at(model, hessian_batch)
        if gap_batches is not None:
            record["gap"] = gap_at(model, gap_batches, config)
            if config.relaxation == "sigmoid" and epoch == config.epochs - 1:
                record["gap_by_threshold"] = gap_by_threshold(model, gap_batches, config)
        history.append(record)
        if run is not None:
            _write_epoch(run, model, config, history, w_opt, a_opt, sched, precision)
        log(format_record(record, config.epochs))
        if callback is not None and callback(record, model) is False:
            log(f"stopped by the callback after epoch {epoch + 1}")
            break

    model.skip_noise_std = 0.0
    genotype = get_space(config.space).derive([w.detach().cpu().numpy() for w in model.relaxed_weights()], config,
                                              parse_method(config))
    return SearchResult(history, genotype, model, None if run is None else run.path, config)


def _write_epoch(run: RunDir, model: Supernet, config: SearchConfig, history: List[dict], w_opt, a_opt,
                 sched, precision: Precision) -> None:
    """Everything a later reader needs after each epoch; the checkpoint last, so that it never claims an
    epoch whose files are not written."""
    last = history[-1]
    run.write_json("history.json", history)
    for name in get_space(config.space).weight_names:
        run.save_npy(f"{name}.npy", np.asarray(last[name], dtype=np.float32))
    run.write_json("genotype.json", last["genotype"], indent=1)
    run.save_checkpoint({
        "epoch": len(history), "config": config.to_dict(), "model": model.state_dict(),
        "w_optimizer": w_opt.state_dict(), "a_optimizer": a_opt.state_dict(), "scheduler": sched.state_dict(),
        "history": history, "rng": rng_state(), "precision": precision.state_dict(),
    })
