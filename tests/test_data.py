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


def _damaged_fashion(tmp_path, monkeypatch, damage) -> Path:
    """A Fashion-MNIST copy in tmp_path whose training-images file ``damage`` rewrites; returns that file."""
    monkeypatch.setattr(data, "SYSTEM_DIRS", [])
    fake_fashion(tmp_path)
    path = tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    return path


@pytest.mark.parametrize("damage, words", [
    (lambda raw: raw[: len(raw) // 2], "Compressed file ended before the end-of-stream marker was reached"),
    (lambda raw: b"not gzip at all" + raw, "Not a gzipped file"),
    (lambda raw: raw[:10] + bytes(b ^ 0xFF for b in raw[10:40]) + raw[40:], "the file is truncated or corrupt"),
    (lambda raw: gzip.compress(b"\x00\x00\x08\x03\x00\x00"), "is truncated: its header announces 3 dimensions"),
    (lambda raw: gzip.compress(gzip.decompress(raw)[:-5]), "is damaged: its header announces 31360 values, the file holds 31355"),
])
def test_a_damaged_gz_is_one_line_naming_the_file(tmp_path, monkeypatch, damage, words):
    path = _damaged_fashion(tmp_path, monkeypatch, damage)
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", True, data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and words in msg


def test_a_labels_file_with_a_label_out_of_range_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIRS", [])
    fake_fashion(tmp_path)
    labels = tmp_path / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.full(40, 12))
    with pytest.raises(DataError, match="holds label 12; Fashion-MNIST labels are 0..9") as e:
        load_dataset("fashion-mnist", True, data_dir=tmp_path)
    assert str(labels) in str(e.value)


def test_an_uncompressed_truncated_idx_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIRS", [])
    d = fake_fashion(tmp_path) / "fashion-mnist"
    raw = gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes())
    (d / "train-images-idx3-ubyte.gz").unlink()
    (d / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is damaged: its header announces"):
        load_dataset("fashion-mnist", True, data_dir=tmp_path)


def test_split_sizes_are_the_published_ones():
    assert data.split_size("cifar10", True) == 50000 and data.split_size("cifar100", False) == 10000
    assert data.split_size("fashion-mnist", True) == 60000
    assert data.search_split(1280, 0.5) == (640, 640) and data.search_split(5, 0.5) == (2, 3)
    with pytest.raises(ValueError, match="train_portion must be in"):
        data.search_split(10, 1.0)


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


def test_a_subset_outside_the_split_is_refused():
    labels = torch.arange(100) % 10
    for n in (-5, 0, 101):
        with pytest.raises(ValueError, match=f"a subset of {n} images asked from a split of 100: a subset holds 1 to 100"):
            balanced_subset(labels, n)


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


def test_a_zero_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size=0 is not valid: batch_size must be an integer >= 1"):
        TensorLoader(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), 0,
                     dataset_info("fashion-mnist"), train=False)


@pytest.mark.parametrize("n, train, sizes", [
    (33, True, [16, 16]),        # a last batch of one image is left out of a training epoch
    (34, True, [16, 16, 2]),
    (33, False, [16, 16, 1]),    # evaluation sees every image
    (1, True, [1]),              # unless it is the only one
])
def test_a_training_epoch_leaves_out_a_last_batch_of_one(n, train, sizes):
    loader = TensorLoader(torch.zeros(n, 1, 8, 8, dtype=torch.uint8), torch.arange(n) % 10, 16,
                          dataset_info("fashion-mnist"), train=train)
    assert [len(y) for _, y in loader.epoch(0)] == sizes and len(loader) == len(sizes)
    assert [len(y) for _, y in loader.epoch(0, n_batches=5)][:len(sizes)] == sizes


def test_a_batch_of_one_image_breaks_the_auxiliary_head():
    # why the rule above exists: BatchNorm in training mode cannot normalise one value per channel
    from fairdarts_core.network import NetworkCIFAR

    model = NetworkCIFAR(4, 10, 3, True, "FairDARTS_a", in_channels=1)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.randn(1, 1, 32, 32))
