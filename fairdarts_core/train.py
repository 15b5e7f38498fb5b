"""Retraining the evaluation network of a derived cell, and evaluating checkpoints.

The recipe of DARTS (Liu et al., 2019, Sec. 3.2) that Fair DARTS (Chu et al., 2020, Sec. 5) keeps:
the cell stacked into ``NetworkCIFAR`` (20 cells, 36 channels on CIFAR-10), SGD with a cosine learning
rate, the auxiliary classifier's loss added with weight 0.4, drop-path whose probability grows linearly
from 0 to ``drop_path_prob`` over the epochs, gradient clipping at 5, cutout, optionally AutoAugment.

Multi-process data parallel: launched by ``torchrun`` (``python -m torch.distributed.run
--nproc_per_node N -m fairdarts_core train ...``), each process trains a replica on its share of every
batch under ``DistributedDataParallel`` (gloo on a CPU, nccl on GPUs); ``batch_size`` stays the global
batch. Only rank 0 writes files and logs.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .genotype import Genotype
from .precision import Precision, full_precision
from .presets import TrainConfig
from .runs import (RunDir, check_resume_config, load_optimizer_state, load_state, open_run, rng_state,
                   seed_everything, set_rng_state)
from .search import resolve_device
from .spaces import genotype_from_dict, space_of
from .steps import DivergedError, check_finite
from .zoo import resolve_arch

# Fields that may differ when resuming (they do not change the math of the run).
RESUME_FREE = ("device", "data_dir", "threads", "eval_batch_size")


# --- distributed ---------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False                   # this process joined a process group (torchrun)

    @property
    def enabled(self) -> bool:
        return self.joined

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join the process group when started by torchrun (``TORCHELASTIC_RUN_ID`` or ``WORLD_SIZE > 1`` in the
    environment), also with one process (``--nproc_per_node 1``: the same DDP code path on one device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Dist()
    import torch.distributed as dist

    d = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")), joined=True)
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return d


def _all_reduce(values: Dict[str, torch.Tensor], dist_info: Dist) -> Dict[str, float]:
    """Sum per-process sums over all processes (losses, correct counts, sample counts)."""
    keys = sorted(values)
    t = torch.stack([values[k].detach().float() for k in keys])
    if dist_info.enabled:
        import torch.distributed as dist

        dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


# --- data and model ------------------------------------------------------------------------------------
def build_loaders(config: TrainConfig, device, dist_info: Dist = Dist()):
    """Training loader (augmented, each process its share) and test loader (each process a slice)."""
    from .data import Augment, DatasetInfo, TensorLoader, balanced_subset, dataset_info, load_dataset, resize

    info = dataset_info(config.dataset)
    x, y = load_dataset(config.dataset, True, config.data_dir)
    if config.subset is not None:
        idx = balanced_subset(y, config.subset, config.seed)
        x, y = x[idx], y[idx]
    xt, yt = load_dataset(config.dataset, False, config.data_dir)
    if config.test_subset is not None:
        idx = balanced_subset(yt, config.test_subset, config.seed)
        xt, yt = xt[idx], yt[idx]
    x, xt = resize(x, config.image_size), resize(xt, config.image_size)
    info = DatasetInfo(info.name, info.num_classes, info.in_channels, x.shape[-1], info.mean, info.std)
    if config.batch_size % dist_info.world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {dist_info.world_size} processes")
    if config.auxiliary and config.batch_size // dist_info.world_size < 2:
        raise ValueError(f"batch_size {config.batch_size} leaves fewer than 2 images per process for "
                         f"{dist_info.world_size} processes; the auxiliary head's BatchNorm needs at least 2")
    aug = Augment(crop_pad=config.crop_pad, flip=config.flip, cutout=config.cutout, autoaugment=config.autoaugment)
    train = TensorLoader(x, y, config.batch_size // dist_info.world_size, info, True, aug, config.seed,
                         rank=dist_info.rank, world_size=dist_info.world_size, device=device)
    r, w = dist_info.rank, dist_info.world_size
    test = TensorLoader(xt[r::w], yt[r::w], config.eval_batch_size, info, False, device=device)
    return train, test, info


def build_network(config: TrainConfig, genotype, in_channels: int, num_classes: int):
    """The evaluation network of ``genotype``'s search space (DARTS: ``NetworkCIFAR``; NAS-Bench-201:
    ``NB201Network``), shaped by ``config``."""
    return space_of(genotype).build_network(config, genotype, in_channels, num_classes)


@torch.no_grad()
def evaluate(model, loader, dist_info: Dist = Dist()) -> Dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` (eval mode) over ``loader``."""
    was_training = model.training
    model.eval()
    dev = loader.device
    sums = {"loss": torch.zeros((), device=dev), "correct": torch.zeros((), device=dev), "n": torch.zeros((), device=dev)}
    for x, y in loader.epoch(0):
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        sums["loss"] += F.cross_entropy(logits, y, reduction="sum")
        sums["correct"] += (logits.argmax(1) == y).sum()
        sums["n"] += len(y)
    model.train(was_training)
    s = _all_reduce(sums, dist_info)
    return {"loss": s["loss"] / s["n"], "acc": s["correct"] / s["n"], "n": int(s["n"])}


# --- the loop ------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    history: List[dict]
    model: torch.nn.Module
    genotype: Genotype
    out_dir: Optional[Path] = None
    config: Optional[TrainConfig] = None

    @property
    def test_acc(self) -> Optional[float]:
        return self.history[-1]["test_acc"] if self.history else None


def format_record(r: dict, epochs: int) -> str:
    return (f"epoch {r['epoch']:>3}/{epochs}  train loss {r['train_loss']:.3f} acc {r['train_acc']:.3f}  "
            f"test loss {r['test_loss']:.3f} acc {r['test_acc']:.4f}  lr {r['lr']:.4g}  "
            f"drop-path {r['drop_path_prob']:.3f}  {r['seconds']:.1f}s")


def run_train(config: TrainConfig, arch: Union[str, Genotype, Path], out_dir: Union[str, Path, None] = None,
              resume: bool = False, callback: Optional[Callable[[dict, torch.nn.Module], Optional[bool]]] = None,
              progress: bool = True, log: Optional[Callable[[str], None]] = None,
              command: Optional[Sequence[str]] = None) -> TrainResult:
    """Retrain the network of ``arch`` (a Genotype, a zoo name, a genotype file or a search run dir).

    ``out_dir`` receives ``config.json``, ``genotype.json``, ``history.json``, ``checkpoint.pt`` after
    every epoch (atomic writes) and ``provenance.json``; it is locked for this process while it runs.
    ``resume`` continues from that checkpoint (a changed config or genotype is refused).
    ``callback(record, model)`` runs after every epoch; returning ``False`` stops. A non-finite loss,
    weight or buffer stops the run with :class:`DivergedError`. Under torchrun every process calls this
    function; only rank 0 writes.
    """
    genotype = resolve_arch(arch)
    space_of(genotype).check_train_config(config)
    dist_info = init_distributed(config.device)
    if out_dir is None or not dist_info.main:
        if resume and out_dir is None:
            raise ValueError("resume needs the run directory (out_dir / --out)")
        ckpt = None
        if resume:  # other ranks read rank 0's checkpoint (not locked: only rank 0 writes)
            from .runs import load_checkpoint_file
            ckpt = load_checkpoint_file(Path(out_dir) / "checkpoint.pt", "train")
        return _train(config, genotype, None, ckpt, dist_info, callback, progress, log)
    with open_run(out_dir, "train", resume, command) as run:
        ckpt = run.load_checkpoint() if resume else None
        if ckpt is not None:
            if genotype_from_dict(ckpt["genotype"]) != genotype:
                raise ValueError(f"cannot resume {run.path}: it was trained with another genotype")
            check_resume_config(TrainConfig.from_dict(ckpt["config"]).to_dict(), config.to_dict(), RESUME_FREE,
                                run.path)
        return _train(config, genotype, run, ckpt, dist_info, callback, progress, log)


def _train(config: TrainConfig, genotype: Genotype, run: Optional[RunDir], ckpt: Optional[dict], dist_info: Dist,
           callback, progress: bool, log) -> TrainResult:
    from tqdm.auto import tqdm

    if log is None:
        log = tqdm.write if progress else (lambda line: None)
    if not dist_info.main:
        log, progress = (lambda line: None), False
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)

    seed_everything(config.seed)
    train_loader, test_loader, info = build_loaders(config, device, dist_info)
    net = build_network(config, genotype, info.in_channels, info.num_classes).to(device)
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    precision = Precision(config.amp, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr_min)
    history: List[dict] = []
    start = 0
    if ckpt is not None:
        load_state(net, ckpt["model"], "the evaluation network")
        load_optimizer_state(optimizer, ckpt["optimizer"], "optimizer")
        load_optimizer_state(scheduler, ckpt["scheduler"], "learning-rate schedule")
        precision.load_state_dict(ckpt.get("precision"))
        history, start = list(ckpt["history"]), int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])
        log(f"resumed after epoch {start}/{config.epochs}")
    if dist_info.enabled:
        # Every process starts from rank 0's weights (DDP broadcasts them); drop-path masks differ per rank.
        torch.manual_seed(config.seed + 1000 * dist_info.rank + start)
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        model = net
    if run is not None:
        run.write_json("config.json", config.to_dict(), indent=1)
        run.write_json("genotype.json", genotype.to_dict(), indent=1)

    for epoch in range(start, config.epochs):
        t0 = time.time()
        model.train()
        lr = scheduler.get_last_lr()[0]
        net.drop_path_prob = config.drop_path_prob * epoch / config.epochs  # linear ramp, as DARTS
        sums = {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device),
                "n": torch.zeros((), device=device)}
        finite = []
        bar = tqdm(train_loader.epoch(epoch), total=len(train_loader), desc=f"epoch {epoch + 1}/{config.epochs}",
                   leave=False, disable=not progress, file=sys.stderr)
        for x, y in bar:
            with precision.autocast():
                logits, logits_aux = model(x.contiguous(memory_format=layout))
            loss = F.cross_entropy(full_precision(logits), y)
            total = (loss + config.auxiliary_weight * F.cross_entropy(full_precision(logits_aux), y)
                     if logits_aux is not None else loss)
            optimizer.zero_grad(set_to_none=True)
            precision.scale(total).backward()
            precision.unscale(optimizer)
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            precision.step(optimizer)
            precision.update()
            finite.append(torch.isfinite(total.detach()))
            sums["loss"] += loss.detach() * len(y)
            sums["correct"] += (logits.detach().argmax(1) == y).sum()
            sums["n"] += len(y)
        bar.close()
        check_finite(finite, net, "training", epoch, kept=
                     f"{run.checkpoint_path} keeps epoch {epoch}" if run is not None and epoch else "")
        scheduler.step()
        s = _all_reduce(sums, dist_info)
        test = evaluate(net, test_loader, dist_info)
        record = {"epoch": epoch + 1, "train_loss": s["loss"] / s["n"], "train_acc": s["correct"] / s["n"],
                  "test_loss": test["loss"], "test_acc": test["acc"], "lr": lr,
                  "drop_path_prob": net.drop_path_prob, "seconds": time.time() - t0}
        history.append(record)
        if run is not None:
            run.write_json("history.json", history)
            run.save_checkpoint({"epoch": epoch + 1, "config": config.to_dict(), "genotype": genotype.to_dict(),
                                 "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "history": history, "rng": rng_state(),
                                 "precision": precision.state_dict()})
        log(format_record(record, config.epochs))
        if callback is not None and callback(record, net) is False:
            log(f"stopped by the callback after epoch {epoch + 1}")
            break
    return TrainResult(history, net.eval(), genotype, None if run is None else run.path, config)


# --- evaluating a checkpoint ---------------------------------------------------------------------------
def evaluate_checkpoint(path: Union[str, Path], arch: Union[str, Genotype, Path, None] = None,
                        dataset: Optional[str] = None, data_dir=None, test_subset: Optional[int] = None,
                        batch_size: int = 256, device: str = "auto",
                        image_size: Optional[int] = None) -> Dict[str, object]:
    """Test accuracy of a checkpoint: one written by :func:`run_train` (the genotype, the network's shape and
    the image size come from it), or a file in the authors' layout (their released ``.tar`` files:
    ``arch`` names the cell, the network's shape is read off the weights, CIFAR-10 by default;
    ``image_size`` resizes the test images, default: as stored)."""
    from . import network
    from .data import TensorLoader, balanced_subset, dataset_info, load_dataset, resize

    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1; got {batch_size}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"the image size must be a positive integer (None: as stored); got {image_size!r}")
    if test_subset is not None and test_subset < 1:
        raise ValueError(f"the test subset must hold at least 1 image (None: the whole test set); got {test_subset}")
    dev = resolve_device(device)
    raw = network.load_checkpoint(path)
    if isinstance(raw, dict) and raw.get("kind") == "train":
        missing = [k for k in ("config", "genotype", "model") if k not in raw]
        if missing:
            raise ValueError(f"checkpoint {path} lacks {', '.join(missing)} (damaged or edited by hand)")
        config = TrainConfig.from_dict(raw["config"])
        genotype = genotype_from_dict(raw["genotype"])
        if arch is not None and resolve_arch(arch) != genotype:
            raise ValueError(f"{path} holds another architecture than {arch}")
        dataset = dataset or config.dataset
        info = dataset_info(dataset)
        net = build_network(config, genotype, info.in_channels, info.num_classes)
        network.check_state_dict(net, raw["model"], f"the network in {path}")
        net.load_state_dict(raw["model"])
        image_size, label = image_size or config.image_size, str(arch or "checkpoint genotype")
    else:
        if arch is None:
            raise ValueError(f"{path} is not a fairdarts training checkpoint: name its cell with --arch")
        genotype = resolve_arch(arch)
        shape = network.authors_layout_shape(raw)
        net = network.from_authors_state_dict(arch if isinstance(arch, str) else genotype, raw, shape)
        dataset, label = dataset or "cifar10", str(arch)
        if dataset_info(dataset).in_channels != shape["in_channels"]:
            raise ValueError(f"{path} holds a network for {shape['in_channels']}-channel images; {dataset} has "
                             f"{dataset_info(dataset).in_channels} (name its data set with --dataset)")
    info = dataset_info(dataset)
    x, y = load_dataset(dataset, False, data_dir)
    if test_subset is not None:
        idx = balanced_subset(y, test_subset, 0)
        x, y = x[idx], y[idx]
    loader = TensorLoader(resize(x, image_size), y, batch_size, info, False, device=dev)
    result = evaluate(net.to(dev), loader)
    return {"checkpoint": str(path), "arch": label, "dataset": dataset, **result}


def export_authors_checkpoint(path: Union[str, Path], out: Union[str, Path]) -> Dict[str, object]:
    """Write the network of a :func:`run_train` checkpoint in the authors' layout (``{"state_dict": ...}``,
    their key names: :func:`fairdarts_core.network.save_authors_checkpoint`), so that the code that reads
    their released files reads it too. Returns the network's shape and the image size it was trained at."""
    from . import network
    from .data import dataset_info

    raw = network.load_checkpoint(path)
    if not (isinstance(raw, dict) and raw.get("kind") == "train" and all(k in raw for k in ("config", "genotype", "model"))):
        raise ValueError(f"{path} is not a fairdarts training checkpoint (written by `fairdarts train`)")
    config = TrainConfig.from_dict(raw["config"])
    info = dataset_info(config.dataset)
    net = build_network(config, genotype_from_dict(raw["genotype"]), info.in_channels, info.num_classes)
    network.check_state_dict(net, raw["model"], f"the network in {path}")
    net.load_state_dict(raw["model"])
    shape = network.save_authors_checkpoint(net, out)
    return {**shape, "image_size": config.image_size, "dataset": config.dataset}
