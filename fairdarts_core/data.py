"""Data sets, the search split, the paper's augmentations, and device-resident batches.

- CIFAR-10 / CIFAR-100 (the paper's data) come through torchvision, downloaded into ``data/`` the first
  time when the machine is online.
- Fashion-MNIST (the offline data set of the CPU presets) is read from its four gzip idx files, found in
  ``data/fashion-mnist/`` or in Debian's ``/usr/share/datasets/fashion-mnist/``; no network, ever.
- Your own images: :func:`register_dataset` (any torchvision-style dataset, in Python) or
  ``dataset="folder:PATH"`` (an image folder with ``train/`` and ``test/``, e.g. on the command line).

All of these are small (CIFAR-10 is 150 MB as uint8), so a data set lives as one uint8 tensor on the
device and batches are cut from it with tensor ops (:class:`TensorLoader`): no DataLoader workers, no
per-image Python, and every epoch's order and augmentation come from a generator seeded with
``(seed, epoch)``, which is what makes a resumed search exactly equal to an uninterrupted one.

Augmentations (DARTS's CIFAR pipeline, Liu et al. 2019, and Fair DARTS's retraining): random crop with
4-pixel zero padding, horizontal flip, optional AutoAugment (Cubuk et al. 2019, torchvision's CIFAR-10
policy), normalisation, cutout (DeVries & Taylor 2017, applied after normalisation as in DARTS).
"""
from __future__ import annotations

import gzip
import numbers
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F


class DataError(ValueError):
    """A data set that cannot be found or read (reported by the CLI as one line)."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


DATASETS = {
    # CIFAR statistics as in the authors' scripts (official_settings.md).
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # Fashion-MNIST: mean and std of its 60k training images.
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)),
}

SPLIT_SIZES = {"cifar10": (50000, 10000), "cifar100": (50000, 10000), "fashion-mnist": (60000, 10000)}
"""Images in the (training, test) split of each data set, as published."""

SYSTEM_DIRS: List[Path] = [Path("/usr/share/datasets/fashion-mnist")]
"""Where a system package may have put Fashion-MNIST (Debian's ``dataset-fashion-mnist``)."""

FASHION_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def dataset_info(name: str) -> DatasetInfo:
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX) and name not in DATASETS:
        register_image_folder(name[len(FOLDER_PREFIX):], name)
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, 'folder:PATH' (an image "
                         f"folder with train/ and test/), or a name given to data.register_dataset") from None


# --- your own data -------------------------------------------------------------------------------------------
FOLDER_PREFIX = "folder:"
"""``dataset="folder:PATH"``: the images under ``PATH/train/CLASS/*`` and ``PATH/test/CLASS/*``
(torchvision's ``ImageFolder`` layout), read when a config names it."""

BUILT_IN = tuple(DATASETS)
_REGISTERED: dict = {}   # name -> {True: (images, labels), False: (images, labels)}


def _as_uint8_image(image, where: str) -> torch.Tensor:
    """One image as uint8 ``(C, H, W)``: a PIL image, an array ``(H, W)`` / ``(H, W, C)``, or a tensor
    ``(C, H, W)`` (uint8, or float in [0, 1] as torchvision's ``ToTensor`` gives)."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if t.is_floating_point():
            if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
                raise DataError(f"{where}: a float image must lie in [0, 1] (torchvision's ToTensor), before any "
                                f"normalisation; got values in [{float(t.min()):.3g}, {float(t.max()):.3g}]")
            t = (t * 255).round()
        return t.to(torch.uint8)
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise DataError(f"{where}: an image must be a PIL image, a uint8 array (H, W) or (H, W, C), or a tensor "
                        f"(C, H, W); got {type(image).__name__} {a.dtype} {a.shape}")
    t = torch.from_numpy(a.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _stack_split(dataset, name: str, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(f"the {split} set of {name!r} must be a torchvision-style dataset (len and ds[i] -> "
                        f"(image, label)); got {type(dataset).__name__}") from None
    if n == 0:
        raise DataError(f"the {split} set of {name!r} holds no image")
    images, labels = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"{split}[{i}] of {name!r} is not an (image, label) pair")
        image = _as_uint8_image(item[0], f"{split}[{i}] of {name!r}")
        if images and image.shape != images[0].shape:
            raise DataError(f"{split}[{i}] of {name!r} is {tuple(image.shape)}, {split}[0] {tuple(images[0].shape)}: "
                            f"every image must have one size (resize them in the dataset's transform)")
        label = item[1]
        if isinstance(label, torch.Tensor) and label.numel() == 1:
            label = label.item()
        if isinstance(label, bool) or not isinstance(label, numbers.Integral) or label < 0:
            raise DataError(f"{split}[{i}] of {name!r} has label {label!r}: labels are class indices 0, 1, 2, ...")
        images.append(image)
        labels.append(int(label))
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def register_dataset(name: str, train, test) -> DatasetInfo:
    """Make a data set of your own searchable and trainable under ``name`` (``dataset=name`` in any config).

    ``train`` and ``test``: torchvision-style datasets (``len(ds)`` and ``ds[i] -> (image, label)``), e.g.
    ``torchvision.datasets.ImageFolder(root)`` or ``torchvision.datasets.SVHN(...)``; every image of one
    size, with 1 or 3 channels, labels 0 .. k-1. They are read once into uint8 tensors, like the built-in
    data sets, the training images interleaved by class (so that the search split's two halves hold every
    class, whatever order ``train`` lists them in); the normalisation is the training images' per-channel
    mean and std. Registering a name again replaces it; the built-in names cannot be replaced. Returns the
    data set's :class:`DatasetInfo`."""
    if not isinstance(name, str) or not name.strip() or name in BUILT_IN:
        raise ValueError(f"a data set of your own needs a new name (not one of {', '.join(BUILT_IN)}); got {name!r}")
    train_images, train_labels = _stack_split(train, name, "train")
    test_images, test_labels = _stack_split(test, name, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(f"the train images of {name!r} are {tuple(train_images.shape[1:])}, the test images "
                        f"{tuple(test_images.shape[1:])}: both splits need one size and one number of channels")
    channels, height, width = train_images.shape[1:]
    if channels not in (1, 3) or height != width:
        raise DataError(f"the images of {name!r} are {channels} x {height} x {width}: they must be square, with 1 or 3 "
                        f"channels (crop or resize them in the dataset's transform)")
    classes = int(train_labels.max()) + 1
    missing = sorted(set(range(classes)) - set(train_labels.tolist()))
    if classes < 2 or missing or int(test_labels.max()) >= classes:
        raise DataError(f"the labels of {name!r} must be 0 .. k-1 with k >= 2, every class in the training set "
                        f"(train has {classes} label values, missing {missing[:5]}; test's largest is "
                        f"{int(test_labels.max())})")
    # An image folder lists its images class by class, and the search split takes the first half of the
    # training images for the weights: interleave the classes (as a class-balanced subset does), so that
    # both halves, and any subset's, hold every class.
    order = balanced_subset(train_labels, len(train_labels), seed=0)
    train_images, train_labels = train_images[order], train_labels[order]
    pixels = train_images.double().div_(255).transpose(0, 1).reshape(channels, -1)
    info = DatasetInfo(name, classes, int(channels), int(height), tuple(pixels.mean(1).tolist()),
                       tuple(pixels.std(1).clamp_min(1e-3).tolist()))
    DATASETS[name] = info
    SPLIT_SIZES[name] = (len(train_labels), len(test_labels))
    _REGISTERED[name] = {True: (train_images, train_labels), False: (test_images, test_labels)}
    return info


def register_image_folder(root: Union[str, Path], name: Optional[str] = None) -> DatasetInfo:
    """Register the images under ``root/train/CLASS/*`` and ``root/test/CLASS/*`` (torchvision's
    ``ImageFolder``: one folder per class, the same class folders in both) as ``name`` (default
    ``"folder:ROOT"``, ROOT as given, ``~`` included), which is what ``--set dataset=folder:ROOT`` on the
    command line does."""
    import torchvision

    name = name if name is not None else FOLDER_PREFIX + str(root)
    root = Path(root).expanduser()
    splits = []
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"{root / split} is not a directory: an image folder data set needs {root}/train/CLASS/* "
                            f"and {root}/test/CLASS/* (one folder per class)")
        try:
            splits.append(torchvision.datasets.ImageFolder(str(root / split)))
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"cannot read {root / split} as an image folder: {str(e).splitlines()[0]}") from None
    if splits[0].classes != splits[1].classes:
        raise DataError(f"{root}/train and {root}/test have different class folders ({', '.join(splits[0].classes)} vs "
                        f"{', '.join(splits[1].classes)})")
    return register_dataset(name, *splits)


def split_size(name: str, train: bool) -> int:
    """How many images the published training (or test) split of data set ``name`` holds."""
    dataset_info(name)
    return SPLIT_SIZES[name][0 if train else 1]


def default_data_dir() -> Path:
    """``$FAIRDARTS_DATA``, else the repository's ``data/`` (an editable install, e.g. the book's
    notebooks run from ``book/``), else ``./data``."""
    if os.environ.get("FAIRDARTS_DATA"):
        return Path(os.environ["FAIRDARTS_DATA"])
    repo_data = Path(__file__).resolve().parents[1] / "data"
    if (repo_data / "README.md").is_file():
        return repo_data
    return Path("data")


# --- reading the raw data sets ------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format: big-endian magic, dims, then raw uint8 data), gzipped or not.

    Every way the file can be damaged (a truncated or corrupt gzip stream, a short header, missing data)
    is one :class:`DataError` line naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip: EOFError when truncated, BadGzipFile, zlib.error
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"cannot read {path}: {reason} (the file is truncated or corrupt: replace it)") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header announces {ndim} dimensions but the file ends at byte {len(raw)}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims, dtype=object))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != expected:
        raise DataError(f"{path} is damaged: its header announces {expected} values, the file holds {data.size} "
                        f"(truncated or corrupt: replace it)")
    return data.reshape(dims)


def _find_fashion_file(dirs: Sequence[Path], stem: str) -> Optional[Path]:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def fashion_mnist_dirs(data_dir: Union[str, Path]) -> List[Path]:
    data_dir = Path(data_dir)
    # our layout, torchvision's layout, then the system package
    return [data_dir / "fashion-mnist", data_dir / "FashionMNIST" / "raw", *SYSTEM_DIRS]


def load_fashion_mnist(data_dir: Union[str, Path], train: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    dirs = fashion_mnist_dirs(data_dir)
    paths = [_find_fashion_file(dirs, stem) for stem in FASHION_FILES[train]]
    if None in paths:
        raise DataError(
            f"Fashion-MNIST not found (looked in {', '.join(str(d) for d in dirs)}): install it with "
            f"'sudo apt-get install dataset-fashion-mnist' or put the four idx .gz files in {Path(data_dir) / 'fashion-mnist'}/")
    images, labels = (_read_idx(p) for p in paths)
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DataError(f"Fashion-MNIST files in {paths[0].parent} have unexpected shapes {images.shape}, {labels.shape}")
    n_classes = DATASETS["fashion-mnist"].num_classes
    if labels.size and int(labels.max()) >= n_classes:  # a damaged labels file: cross-entropy would fail later
        raise DataError(f"{paths[1]} holds label {int(labels.max())}; Fashion-MNIST labels are 0..{n_classes - 1}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_cifar(name: str, data_dir: Union[str, Path], train: bool, download: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    import torchvision  # imported here: only CIFAR needs it

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    label = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    data_dir = Path(data_dir)
    try:
        ds = cls(str(data_dir), train=train, download=download)
    except Exception as e:  # no internet, a half-downloaded archive, a full disk ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{label} not found in {data_dir} and could not be downloaded ({reason}): run once on a "
                        f"machine that is online (torchvision downloads it into {data_dir}/), or place "
                        f"torchvision's CIFAR folder/archive in {data_dir}/") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(ds.targets, dtype=torch.int64)


def load_dataset(name: str, train: bool = True, data_dir: Union[str, Path, None] = None,
                 download: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """All images of one split as a uint8 tensor ``(N, C, H, W)`` and int64 labels ``(N,)``, on the CPU."""
    dataset_info(name)
    if name in _REGISTERED:
        return _REGISTERED[name][bool(train)]
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, train)
    return load_cifar(name, data_dir, train, download)


# --- subsets and the search split ---------------------------------------------------------------------
def balanced_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` indices with (nearly) the same number of images of every class, drawn with ``seed``.

    Classes are interleaved (one image of each class in turn), so any prefix of the result, e.g. the
    weights part of the search split, is class-balanced too.
    """
    if not 1 <= n <= len(labels):  # a negative n would slice from the end and take almost everything
        raise ValueError(f"a subset of {n} images asked from a split of {len(labels)}: "
                         f"a subset holds 1 to {len(labels)} images")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    per_class = [perm[labels[perm] == c] for c in torch.unique(labels).tolist()]
    rank = torch.empty(len(labels), dtype=torch.int64)  # position of an image inside its class
    for members in per_class:
        rank[members] = torch.arange(len(members))
    order = torch.cat(per_class)
    # sort by (rank within class, class): round-robin over the classes
    key = rank[order] * (len(per_class) + 1) + labels[order]
    return order[torch.argsort(key, stable=True)][:n]


def search_split(n_images: int, train_portion: float) -> Tuple[int, int]:
    """``(weights part, architecture part)``: how many of ``n_images`` train the weights and how many the
    architecture parameters in the search split (DARTS, Sec. 3.1)."""
    if not 0 < train_portion < 1:
        raise ValueError(f"train_portion={train_portion!r} is not valid: train_portion must be in (0, 1)")
    n_weights = int(round(train_portion * n_images))
    return n_weights, n_images - n_weights


def resize(images: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Bilinear resize of uint8 images (CPU presets shrink 28x28 Fashion-MNIST to 16x16 for speed)."""
    if size is None or size == images.shape[-1]:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


# --- augmentation on whole batches --------------------------------------------------------------------
def _seed(*keys: int) -> int:
    """One 63-bit seed from several integers (seed, epoch, pass, rank, stream)."""
    s = 0x9E3779B97F4A7C15
    for k in keys:
        s = (s ^ (int(k) + 0x632BE59BD9B4E019 + (s << 6) + (s >> 2))) & ((1 << 63) - 1)
    return s


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Per image: a random ``H x W`` crop of the zero-padded image, then a horizontal flip with p=0.5
    (torchvision's ``RandomCrop(padding=pad)`` + ``RandomHorizontalFlip()``, on a whole batch at once)."""
    B, _, H, W = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=g)
    rows = oy[:, None] + torch.arange(H)
    cols = ox[:, None] + torch.arange(W)
    if flip:
        flipped = torch.rand(B, generator=g) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    rows, cols = rows.to(dev), cols.to(dev)
    out = x[torch.arange(B, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # B, H, W, C
    return out.permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, length: int, g: torch.Generator) -> torch.Tensor:
    """Zero one ``length x length`` square per image, centred anywhere (clipped at the border), as DARTS."""
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B, 1), generator=g)
    cx = torch.randint(0, W, (B, 1), generator=g)
    ys, xs = torch.arange(H)[None], torch.arange(W)[None]
    in_y = (ys >= cy - length // 2) & (ys < cy + length // 2)
    in_x = (xs >= cx - length // 2) & (xs < cx + length // 2)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])
    return x * keep[:, None].to(device=x.device, dtype=x.dtype)


@dataclass
class Augment:
    """What a training batch goes through (an evaluation batch only gets normalised)."""

    crop_pad: int = 4
    flip: bool = True
    cutout: int = 0              # side of the cutout square in pixels, 0 = off
    autoaugment: bool = False    # torchvision's AutoAugment, CIFAR-10 policy


def _autoaugment(x: torch.Tensor) -> torch.Tensor:
    """AutoAugment picks one sub-policy per image, so it runs image by image (uint8 in, uint8 out)."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    aa = AutoAugment(AutoAugmentPolicy.CIFAR10)
    return torch.stack([aa(img) for img in x])


class TensorLoader:
    """Batches from a device-resident uint8 data set: shuffled, augmented and normalised on the device.

    ``loader.epoch(e)`` returns one iterator over the epoch's batches; its order and augmentation depend
    only on ``(seed, e)`` (and the rank), never on what ran before: resuming at epoch ``e`` reproduces
    exactly the batches an uninterrupted run would have drawn. ``epoch(e, n_batches)`` draws exactly
    ``n_batches``, running through the data as many times as needed (the architecture batches of a
    search when that split is smaller than the weights split).

    Under ``torch.distributed`` (``world_size > 1``) each rank gets its share of every epoch from
    :class:`torch.utils.data.DistributedSampler` (same seed on every rank, ``set_epoch`` per epoch).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, info: DatasetInfo,
                 train: bool, augment: Optional[Augment] = None, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, device: Union[str, torch.device] = "cpu"):
        if len(images) == 0:
            raise ValueError("empty data set")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not valid: batch_size must be an integer >= 1")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.train, self.seed, self.drop_last = batch_size, train, seed, drop_last
        self.augment = augment if augment is not None else (Augment() if train else None)
        self.rank, self.world_size = rank, world_size
        self.mean = torch.tensor(info.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, device=self.device).view(1, -1, 1, 1)

    def _indices(self, epoch: int, pass_: int) -> torch.Tensor:
        n = len(self.images)
        if self.world_size > 1:
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(range(n), num_replicas=self.world_size, rank=self.rank,
                                         shuffle=self.train, seed=_seed(self.seed, pass_) % (1 << 31))
            sampler.set_epoch(epoch)
            return torch.as_tensor(list(sampler))
        if not self.train:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.seed, epoch, pass_)))

    def _stop(self, n: int) -> int:
        """How many of an epoch's ``n`` shuffled indices are batched. A training epoch leaves out a last
        batch of one image: BatchNorm in training mode cannot normalise a single value per channel, which
        is what one image gives on the auxiliary head's 1x1 map (the crash would come at the end of an
        epoch, e.g. ``subset=33, batch_size=16``)."""
        if self.drop_last:
            return n - n % self.batch_size
        if self.train and self.batch_size > 1 and n > 1 and n % self.batch_size == 1:
            return n - 1
        return n

    def __len__(self) -> int:
        n = len(self.images)
        n = -(-n // self.world_size) if self.world_size > 1 else n  # DistributedSampler pads to equal shares
        return -(-self._stop(n) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def transform(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 batch -> augmented (training) and normalised float batch."""
        aug = self.augment if self.train else None
        if aug is not None and (aug.crop_pad or aug.flip):
            x = random_crop_flip(x, aug.crop_pad, aug.flip, g)
        if aug is not None and aug.autoaugment:
            x = _autoaugment(x)
        x = (x.float() / 255.0 - self.mean) / self.std
        if aug is not None and aug.cutout:
            x = cutout(x, aug.cutout, g)
        return x

    def epoch(self, epoch: int, n_batches: Optional[int] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(_seed(self.seed, epoch, self.rank, 7))  # augmentation stream
        drawn, pass_ = 0, 0
        while True:
            idx = self._indices(epoch, pass_).to(self.device)
            stop = self._stop(len(idx))
            if stop == 0 and n_batches:  # nothing to draw from: the loop below would never end
                raise ValueError(f"{n_batches} batches asked from {len(idx)} images with drop_last and batch size "
                                 f"{self.batch_size}")
            for start in range(0, stop, self.batch_size):
                if n_batches is not None and drawn == n_batches:
                    return
                b = idx[start:start + self.batch_size]
                yield self.transform(self.images[b], g), self.labels[b]
                drawn += 1
            if n_batches is None or drawn == n_batches:
                return
            pass_ += 1


def search_loaders(dataset: str, data_dir=None, subset: Optional[int] = None, train_portion: float = 0.5,
                   image_size: Optional[int] = None, batch_size: int = 64, seed: int = 0,
                   augment: Optional[Augment] = None, device="cpu") -> Tuple[TensorLoader, TensorLoader, DatasetInfo]:
    """The search split (DARTS, Sec. 3.1): the first ``train_portion`` of the training set (or of a
    class-balanced ``subset`` of it) trains the weights, the rest the architecture parameters.
    Both loaders augment, as in DARTS's search script."""
    info = dataset_info(dataset)
    images, labels = load_dataset(dataset, True, data_dir)
    if subset is not None:
        idx = balanced_subset(labels, subset, seed)
    else:
        idx = torch.arange(len(labels))
    split, rest = search_split(len(idx), train_portion)
    if split < 1 or rest < 1:
        raise ValueError(f"train_portion {train_portion} of {len(idx)} images leaves one part empty")
    images = resize(images[idx], image_size)
    labels = labels[idx]
    size = image_size or info.image_size
    info = DatasetInfo(info.name, info.num_classes, info.in_channels, size, info.mean, info.std)
    aug = augment if augment is not None else Augment()
    train = TensorLoader(images[:split], labels[:split], batch_size, info, True, aug, seed, device=device)
    valid = TensorLoader(images[split:], labels[split:], batch_size, info, True, aug, seed + 1, device=device)
    return train, valid, info


def held_out_batches(dataset: str, n_images: int, data_dir=None, image_size: Optional[int] = None,
                     batch_size: int = 256, seed: int = 0, device="cpu") -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``n_images`` class-balanced images of the test split (drawn with ``seed``), resized, normalised and
    not augmented, as a list of ``(images, labels)`` batches: the same held-out images for every
    measurement (e.g. the discretization gap after every epoch of a search)."""
    info = dataset_info(dataset)
    images, labels = load_dataset(dataset, False, data_dir)
    idx = balanced_subset(labels, n_images, seed)
    images = resize(images[idx], image_size)
    info = DatasetInfo(info.name, info.num_classes, info.in_channels, images.shape[-1], info.mean, info.std)
    loader = TensorLoader(images, labels[idx], batch_size, info, False, device=device)
    return list(loader.epoch(0))
