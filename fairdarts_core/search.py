"""The search loop: DARTS and Fair DARTS, with per-epoch history, atomic checkpoints and exact resume.

One epoch alternates, for every training batch (DARTS Alg. 1, first-order approximation):

1. an *architecture step* on the next architecture ("validation") batch: Adam on alpha for
   ``CE + zero_one_weight * L01`` (Fair DARTS Eq. 6; the zero-one loss is 0 for DARTS);
2. a *weight step* on the training batch: SGD on the network weights for ``CE``.

``mode="single"`` updates both on the training batch with one backward (the authors' single-level
option); ``mode="second_order"`` replaces step 1 by DARTS's unrolled step (DARTS Eq. 7-8).

The step functions below do no I/O and hold no state of their own, so benchmarks and the fast supernet
path call them directly. :func:`run_search` is the loop around them: data, optimisers, noise on skip,
history, run directory, checkpoints.

Run directory (``out_dir``): ``config.json``, ``history.json``, ``normal_weight.npy`` / ``reduce_weight.npy``
(the latest relaxed matrices, rows in DARTS edge order: the authors' format, read by
``fairdarts parse RUN_DIR``), ``genotype.json``, ``checkpoint.pt``.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .genotype import Genotype
from .presets import SearchConfig
from .relax import zero_one_loss
from .supernet import DEFAULT_PARSE, Supernet, SupernetConfig

Batch = Tuple[torch.Tensor, torch.Tensor]
CHECKPOINT_VERSION = 1


# --- the steps (no I/O) -------------------------------------------------------------------------------
def _stats(prefix: str, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> Dict[str, torch.Tensor]:
    # Detached tensors, not floats: calling .item() every step would synchronise a GPU.
    n = len(y)
    return {f"{prefix}_loss_sum": loss.detach() * n, f"{prefix}_correct": (logits.detach().argmax(1) == y).sum().float(),
            f"{prefix}_n": n}


def arch_loss(model: Supernet, logits: torch.Tensor, y: torch.Tensor, config: SearchConfig):
    """``CE + zero_one_weight * L01`` over the relaxed weights of both cells; returns (loss, ce, l01)."""
    ce = F.cross_entropy(logits, y)
    l01 = zero_one_loss(model.relaxed_weights(), config.zero_one_kind)
    loss = ce + config.zero_one_weight * l01 if config.zero_one_weight else ce
    return loss, ce, l01


def arch_step(model: Supernet, x_val: torch.Tensor, y_val: torch.Tensor, a_optimizer: torch.optim.Optimizer,
              config: SearchConfig) -> Dict[str, torch.Tensor]:
    """One first-order architecture step: Adam on alpha for the architecture loss on a validation batch.

    ``torch.autograd.grad`` w.r.t. alpha only: autograd then skips every weight-gradient kernel of the
    backward pass (it still needs the gradients w.r.t. the activations to reach alpha).
    """
    alphas = model.arch_parameters()
    logits = model(x_val)
    loss, ce, _ = arch_loss(model, logits, y_val, config)
    grads = torch.autograd.grad(loss, alphas)
    for p, g in zip(alphas, grads):
        p.grad = g
    a_optimizer.step()
    return _stats("val", logits, y_val, ce)


def weight_step(model: Supernet, x: torch.Tensor, y: torch.Tensor, w_optimizer: torch.optim.Optimizer,
                config: SearchConfig) -> Dict[str, torch.Tensor]:
    """One weight step: SGD on the network weights for the cross-entropy of a training batch, with the
    gradient norm clipped to ``config.grad_clip`` (DARTS). Gradients w.r.t. alpha are not computed."""
    weights = model.weights()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    for p, g in zip(weights, grads):
        p.grad = g
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(weights, config.grad_clip)
    w_optimizer.step()
    return _stats("train", logits, y, loss)


def bilevel_step(model: Supernet, batch_train: Batch, batch_val: Batch, w_optimizer, a_optimizer,
                 config: SearchConfig) -> Dict[str, torch.Tensor]:
    """First-order bi-level step (DARTS with xi = 0; Fair DARTS): architecture on the validation batch,
    then weights on the training batch."""
    stats = arch_step(model, *batch_val, a_optimizer, config)
    stats.update(weight_step(model, *batch_train, w_optimizer, config))
    return stats


def single_level_step(model: Supernet, batch_train: Batch, w_optimizer, a_optimizer,
                      config: SearchConfig) -> Dict[str, torch.Tensor]:
    """Single-level step: weights and alpha both descend the training loss of the same batch, from one
    forward and one backward (the zero-one loss only reaches alpha: it does not depend on the weights)."""
    x, y = batch_train
    weights, alphas = model.weights(), model.arch_parameters()
    logits = model(x)
    loss, ce, _ = arch_loss(model, logits, y, config)
    grads = torch.autograd.grad(loss, weights + alphas, allow_unused=True)
    for p, g in zip(weights + alphas, grads):
        p.grad = g
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(weights, config.grad_clip)
    w_optimizer.step()
    a_optimizer.step()
    return _stats("train", logits, y, ce)


def second_order_arch_step(model: Supernet, batch_train: Batch, batch_val: Batch, w_optimizer,
                           a_optimizer, config: SearchConfig) -> Dict[str, torch.Tensor]:
    """DARTS's unrolled architecture step (Liu et al., 2019, Eq. 7-8).

    The gradient of ``L_val(w', alpha)`` with ``w' = w - xi * (SGD step on L_train(w, alpha))`` is
    ``d_alpha L_val(w', alpha) - xi * d2_{alpha,w} L_train(w, alpha) . d_w' L_val(w', alpha)``; the
    second-order term is a finite difference around ``w`` with ``eps = 0.01 / ||d_w' L_val||``.
    ``xi`` is the weights' current learning rate, and the virtual step includes momentum and weight decay
    as the real SGD step would.
    """
    weights, alphas = model.weights(), model.arch_parameters()
    group = w_optimizer.param_groups[0]
    xi, mom, wd = group["lr"], group.get("momentum", 0.0), group.get("weight_decay", 0.0)
    x_t, y_t = batch_train
    x_v, y_v = batch_val
    backup = [p.detach().clone() for p in weights]

    # 1. virtual step w -> w'
    g_train = torch.autograd.grad(F.cross_entropy(model(x_t), y_t), weights, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(weights, g_train):
            if g is None:
                continue
            d = g + wd * p
            buf = w_optimizer.state.get(p, {}).get("momentum_buffer")
            if mom and buf is not None:
                d = d + mom * buf
            p.sub_(xi * d)
    # 2. gradients of the architecture loss at (w', alpha)
    logits = model(x_v)
    loss, ce, _ = arch_loss(model, logits, y_v, config)
    grads = torch.autograd.grad(loss, alphas + weights, allow_unused=True)
    d_alpha, d_w = grads[:len(alphas)], [torch.zeros_like(p) if g is None else g for g in grads[len(alphas):]]
    # 3. Hessian-vector product by central differences at w +- eps * d_w
    eps = 0.01 / torch.sqrt(sum((g * g).sum() for g in d_w)).clamp_min(1e-12)

    def alpha_grad_at(sign: float):
        with torch.no_grad():
            for p, b, g in zip(weights, backup, d_w):
                p.copy_(b + sign * eps * g)
        return torch.autograd.grad(F.cross_entropy(model(x_t), y_t), alphas)

    g_pos, g_neg = alpha_grad_at(+1.0), alpha_grad_at(-1.0)
    with torch.no_grad():
        for p, b in zip(weights, backup):
            p.copy_(b)
    for p, da, gp, gn in zip(alphas, d_alpha, g_pos, g_neg):
        p.grad = da - xi * (gp - gn) / (2 * eps)
    a_optimizer.step()
    return _stats("val", logits, y_v, ce)


def second_order_step(model: Supernet, batch_train: Batch, batch_val: Batch, w_optimizer, a_optimizer,
                      config: SearchConfig) -> Dict[str, torch.Tensor]:
    """DARTS second order: the unrolled architecture step, then the ordinary weight step."""
    stats = second_order_arch_step(model, batch_train, batch_val, w_optimizer, a_optimizer, config)
    stats.update(weight_step(model, *batch_train, w_optimizer, config))
    return stats


def search_step(model, batch_train, batch_val, w_optimizer, a_optimizer, config: SearchConfig):
    """The step of ``config.mode``."""
    if config.mode == "single":
        return single_level_step(model, batch_train, w_optimizer, a_optimizer, config)
    if config.mode == "second_order":
        return second_order_step(model, batch_train, batch_val, w_optimizer, a_optimizer, config)
    return bilevel_step(model, batch_train, batch_val, w_optimizer, a_optimizer, config)


def skip_noise_std(epoch: int, config: SearchConfig) -> float:
    """Std of the noise on skip during epoch ``epoch`` (0-based): cosine from 1 at epoch 0 to 0 at
    ``noise_epochs``, 0 afterwards, and 0 whenever ``skip_noise`` is off (the authors' DARTS experiment)."""
    if not config.skip_noise or epoch >= config.noise_epochs:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * epoch / config.noise_epochs))


# --- building a search --------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return dev


def parse_method(config: SearchConfig) -> str:
    return config.parse_method or DEFAULT_PARSE[config.relaxation]


def build_supernet(config: SearchConfig, in_channels: int, num_classes: int) -> Supernet:
    return Supernet(SupernetConfig(channels=config.channels, layers=config.layers, in_channels=in_channels,
                                   num_classes=num_classes, primitives=config.primitives,
                                   relaxation=config.relaxation, alpha_init_std=config.alpha_init_std,
                                   path=config.path))


def build_optimizers(model: Supernet, config: SearchConfig):
    w_opt = torch.optim.SGD(model.weights(), lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=config.arch_lr, betas=config.arch_betas,
                             weight_decay=config.arch_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=config.epochs, eta_min=config.lr_min)
    return w_opt, a_opt, sched


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# --- checkpoints --------------------------------------------------------------------------------------
def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
             "python": _to_lists(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), *n[2:]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic(path: Union[str, Path], write, suffix: str = "") -> None:
    """Write through ``write(tmp_path)`` to a temporary file in the same directory, then rename it over
    ``path``: a crash or a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    write(tmp)
    os.replace(tmp, path)


def atomic_save(obj, path: Union[str, Path]) -> None:
    """``torch.save`` atomically."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def atomic_save_npy(path: Union[str, Path], array: np.ndarray) -> None:
    _atomic(path, lambda tmp: np.save(tmp, array), suffix=".npy")  # np.save would add .npy itself


def load_checkpoint_file(path: Union[str, Path], kind: str) -> dict:
    """Load one of our checkpoints (``kind``: "search" or "train"); a bad file is a one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot read checkpoint {path} (corrupt or not a checkpoint): {first[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind or "model" not in ckpt:
        raise ValueError(f"{path} is not a fairdarts {kind} checkpoint")
    return ckpt


# Fields that may differ when resuming (they do not change the math of the run).
RESUME_FREE = {"device", "data_dir", "path", "threads"}


# --- the loop -----------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    history: List[dict]
    genotype: Genotype
    model: Supernet
    out_dir: Optional[Path] = None
    config: Optional[SearchConfig] = None


def _record(epoch: int, model: Supernet, config: SearchConfig, sums: Dict[str, torch.Tensor], lr: float,
            seconds: float, noise: float) -> dict:
    normal, reduce = (w.detach().cpu() for w in model.relaxed_weights())
    genotype = Genotype.from_weights(normal.numpy(), reduce.numpy(), config.primitives, parse_method(config),
                                     config.threshold)
    l01 = zero_one_loss([normal, reduce], config.zero_one_kind).item()
    s = {k: float(v.item() if torch.is_tensor(v) else v) for k, v in sums.items()}

    def mean(prefix, what):
        n = s.get(f"{prefix}_n", 0.0)
        return s[f"{prefix}_{what}"] / n if n else None

    return {
        "epoch": epoch + 1,
        "normal_weight": normal.tolist(), "reduce_weight": reduce.tolist(),
        "genotype": genotype.to_dict(),
        "train_loss": mean("train", "loss_sum"), "train_acc": mean("train", "correct"),
        "val_loss": mean("val", "loss_sum"), "val_acc": mean("val", "correct"),
        "zero_one_loss": l01,
        "skip_normal": genotype.count("skip_connect", "normal"),
        "skip_reduce": genotype.count("skip_connect", "reduce"),
        "lr": lr, "skip_noise_std": noise, "seconds": seconds,
    }


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def format_record(r: dict, epochs: int) -> str:
    """One human-readable line per epoch."""
    return (f"epoch {r['epoch']:>3}/{epochs}  train loss {_fmt(r['train_loss'])} acc {_fmt(r['train_acc'])}  "
            f"val loss {_fmt(r['val_loss'])} acc {_fmt(r['val_acc'])}  L01 {r['zero_one_loss']:+.4f}  "
            f"skips {r['skip_normal']}/{r['skip_reduce']}  lr {r['lr']:.4g}  {r['seconds']:.1f}s")


@torch.no_grad()
def evaluate_supernet(model: Supernet, loader, epoch: int) -> Dict[str, torch.Tensor]:
    """Loss and accuracy over one pass of ``loader`` in eval mode (single-level mode has no
    architecture batches to measure on)."""
    was_training = model.training
    model.eval()
    sums: Dict[str, torch.Tensor] = {}
    for x, y in loader.epoch(epoch):
        logits = model(x)
        for k, v in _stats("val", logits, y, F.cross_entropy(logits, y)).items():
            sums[k] = sums.get(k, 0) + v
    model.train(was_training)
    return sums


def run_search(config: SearchConfig, out_dir: Union[str, Path, None] = None, resume: bool = False,
               callback: Optional[Callable[[dict, Supernet], Optional[bool]]] = None, progress: bool = True,
               log: Optional[Callable[[str], None]] = None) -> SearchResult:
    """Run a DARTS / Fair DARTS search as ``config`` says.

    ``out_dir``: the run directory (None: keep nothing on disk). ``resume``: continue from
    ``out_dir/checkpoint.pt`` (the last completed epoch); the result is exactly that of an uninterrupted
    run on the same device. Each epoch's history record has the training loss/accuracy of the weight
    steps and the validation loss/accuracy of the architecture steps (measured on the architecture
    batches as the steps use them, so they cost nothing; single-level mode runs an eval-mode pass). ``callback(record, model)`` runs after every epoch (after the checkpoint is
    written), e.g. to plot in a notebook; returning ``False`` stops the search there (resumable later).
    ``progress``: a tqdm bar per epoch. ``log``: where the one-line epoch summaries go (default: printed
    when ``progress`` is on, else nowhere).
    """
    from tqdm.auto import tqdm

    from .data import Augment, search_loaders

    if log is None:
        log = tqdm.write if progress else (lambda line: None)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = None
    if resume:
        if out is None:
            raise ValueError("resume needs the run directory (out_dir / --out)")
        ckpt = load_checkpoint_file(out / "checkpoint.pt", "search")
        saved = SearchConfig.from_dict(ckpt["config"])
        diff = [k for k, v in config.to_dict().items() if k not in RESUME_FREE and saved.to_dict()[k] != v]
        if diff:
            raise ValueError(f"cannot resume {out}: the config differs in {', '.join(diff)} "
                             f"(e.g. {diff[0]}: saved {saved.to_dict()[diff[0]]!r}, now {config.to_dict()[diff[0]]!r})")

    seed_everything(config.seed)
    train_loader, val_loader, info = search_loaders(
        config.dataset, config.data_dir, config.subset, config.train_portion, config.image_size,
        config.batch_size, config.seed, Augment(crop_pad=4, flip=True, cutout=config.cutout), device)
    model = build_supernet(config, info.in_channels, info.num_classes).to(device)
    w_opt, a_opt, sched = build_optimizers(model, config)
    history: List[dict] = []
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        w_opt.load_state_dict(ckpt["w_optimizer"])
        a_opt.load_state_dict(ckpt["a_optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["history"])
        start = int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])
        log(f"resumed {out} after epoch {start}/{config.epochs}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=1) + "\n")

    steps = len(train_loader)
    for epoch in range(start, config.epochs):
        t0 = time.time()
        model.train()
        lr = sched.get_last_lr()[0]
        noise = skip_noise_std(epoch, config)
        model.skip_noise_std = noise  # the supernet adds it to skip's output in training mode only
        sums: Dict[str, torch.Tensor] = {}
        # One iterator per loader per epoch; the architecture loader draws exactly one batch per step.
        batches = zip(train_loader.epoch(epoch), val_loader.epoch(epoch, steps))
        bar = tqdm(batches, total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not progress, file=sys.stderr)
        for batch_train, batch_val in bar:
            stats = search_step(model, batch_train, batch_val, w_opt, a_opt, config)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v
        bar.close()
        sched.step()
        if config.mode == "single":
            sums.update(evaluate_supernet(model, val_loader, epoch))
        record = _record(epoch, model, config, sums, lr, time.time() - t0, noise)
        history.append(record)
        if out is not None:
            _write_run(out, model, config, history, w_opt, a_opt, sched, epoch + 1)
        log(format_record(record, config.epochs))
        if callback is not None and callback(record, model) is False:
            log(f"stopped by the callback after epoch {epoch + 1}")
            break

    model.skip_noise_std = 0.0
    genotype = model.genotype(parse_method(config), config.threshold)
    return SearchResult(history, genotype, model, out, config)


def _write_run(out: Path, model: Supernet, config: SearchConfig, history: List[dict], w_opt, a_opt, sched,
               epochs_done: int) -> None:
    """Everything a later reader needs after each epoch; the checkpoint last, so that it never claims an
    epoch whose files are not written."""
    last = history[-1]
    atomic_write_text(out / "history.json", json.dumps(history) + "\n")
    atomic_save_npy(out / "normal_weight.npy", np.asarray(last["normal_weight"], dtype=np.float32))
    atomic_save_npy(out / "reduce_weight.npy", np.asarray(last["reduce_weight"], dtype=np.float32))
    atomic_write_text(out / "genotype.json", json.dumps(last["genotype"], indent=1) + "\n")
    atomic_save({
        "kind": "search", "version": CHECKPOINT_VERSION, "epoch": epochs_done, "config": config.to_dict(),
        "model": model.state_dict(), "w_optimizer": w_opt.state_dict(), "a_optimizer": a_opt.state_dict(),
        "scheduler": sched.state_dict(), "history": history, "rng": rng_state(),
    }, out / "checkpoint.pt")


def load_search_run(run_dir: Union[str, Path], device: str = "cpu") -> SearchResult:
    """Rebuild a run's supernet (latest checkpoint), history and genotype, e.g. to inspect it in a notebook."""
    from .data import dataset_info

    run_dir = Path(run_dir)
    ckpt = load_checkpoint_file(run_dir / "checkpoint.pt", "search")
    config = SearchConfig.from_dict(ckpt["config"])
    info = dataset_info(config.dataset)
    model = build_supernet(config, info.in_channels, info.num_classes)
    model.load_state_dict(ckpt["model"])
    model.to(device)
    return SearchResult(list(ckpt["history"]), model.genotype(parse_method(config), config.threshold), model,
                        run_dir, config)
