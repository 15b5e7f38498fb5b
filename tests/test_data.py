"""Data: Fashion-MNIST offline (Debian path and data/), the one-line error for a missing data set,
class-balanced subsets, the search split, batch augmentations, reproducible device-resident batches."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fairdarts_core import cli, data
from fairdarts_core.data import (DataError, TensorLoader, balanced_subset, cutout, dataset_info, load_dataset,
                                 random_crop_flip, search_loaders)

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                                  reason="dataset-fashion-mnist is not installed")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    d = root / "fashion-mnist"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(d / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(d / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


@needs_debian
def test_fashion_mnist_loads_offline_from_the_debian_path(tmp_path):
    x, y = load_dataset("fashion-mnist", True, data_dir=tmp_path)  # nothing in tmp_path: the system copy
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and set(y.unique().tolist()) == set(range(10))
    xt, yt = load_dataset("fashion-mnist", False, data_dir=tmp_path)
    assert xt.shape == (10000, 1, 28, 28) and yt.shape == (10000,)
    # the mean/std the presets normalise with are this data set's
    info = dataset_info("fashion-mnist")
    assert abs(x.float().mean().item() / 255 - info.mean[0]) < 1e-3
    assert abs(x.float().std().item() / 255 - info.std[0]) < 1e-3


def test_fashion_mnist_from_data_dir_comes_first(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIRS", [])
    x, y = load_dataset("fashion-mnist", True, data_dir=fake_fashion(tmp_path))
    assert x.shape == (40, 1, 28, 28) and y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_missing_fashion_mnist_is_a_one_line_error_naming_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIRS", [tmp_path / "nowhere"])
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", True, data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and "fashion-mnist/" in msg


def test_missing_data_set_from_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "SYSTEM_DIRS", [])
    rc = cli.main(["search", "--preset", "smoke", "--out", str(tmp_path / "run"), "--set", f"data_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "dataset-fashion-mnist" in err


def test_missing_cifar_without_download_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError) as e:
        data.load_dataset("cifar10", True, data_dir=tmp_path, download=False)
    assert "\n" not in str(e.value) and "CIFAR-10" in str(e.value) and "online" in str(e.value)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist3d")


def test_balanced_subset_is_balanced_in_every_prefix():
    labels = torch.arange(1000) % 10
    idx = balanced_subset(labels, 200, seed=1)
    assert len(set(idx.tolist())) == 200
    assert torch.bincount(labels[idx], minlength=10).tolist() == [20] * 10
    assert torch.bincount(labels[idx[:100]], minlength=10).tolist() == [10] * 10  # the weights half
    assert torch.equal(idx, balanced_subset(labels, 200, seed=1))
    assert not torch.equal(idx, balanced_subset(labels, 200, seed=2))


def test_search_split(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIRS", [])
    train, valid, info = search_loaders("fashion-mnist", fake_fashion(tmp_path), subset=30, train_portion=0.5,
                                        image_size=16, batch_size=4)
    assert train.num_samples == 15 and valid.num_samples == 15 and info.image_size == 16
    x, y = next(iter(train.epoch(0)))
    assert x.shape == (4, 1, 16, 16) and x.dtype == torch.float32


def test_crop_flip_and_cutout():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop_flip(x, 0, False, g), x)
    y = random_crop_flip(x, 2, True, g)
    assert y.shape == x.shape
    ones = torch.ones(4, 1, 10, 10)
    z = cutout(ones, 4, torch.Generator().manual_seed(0))
    zeros = (z == 0).sum(dim=(1, 2, 3))
    assert ((zeros > 0) & (zeros <= 16)).all()


def _loader(**kw):
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(50) % 10
    return TensorLoader(images, labels, 8, dataset_info("fashion-mnist"), seed=3, **kw)


def test_tensor_loader_epochs_are_reproducible_and_differ():
    loader = _loader(train=True)
    assert len(loader) == 7
    a, b, c = (list(loader.epoch(e)) for e in (0, 0, 1))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert len(list(loader.epoch(0, n_batches=10))) == 10  # runs through the data again when asked


def test_eval_loader_is_ordered_and_not_augmented():
    loader = _loader(train=False)
    (x, y), = list(loader.epoch(0))[:1]
    expected = (loader.images[:8].float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(x, expected) and torch.equal(y, torch.arange(8) % 10)


def test_distributed_shares_are_disjoint():
    seen = []
    for rank in range(2):
        loader = _loader(train=True, rank=rank, world_size=2)
        seen.append(torch.cat([loader._indices(4, 0)]))
    assert len(set(seen[0].tolist()) & set(seen[1].tolist())) == 0
    assert len(set(seen[0].tolist()) | set(seen[1].tolist())) == 50
