"""Searching and retraining on a data set of one's own: a torchvision-style dataset registered by name, and
an image folder named on the command line (``--set dataset=folder:PATH``)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fairdarts_core import cli, data
from fairdarts_core.data import DataError, dataset_info, load_dataset, register_dataset
from fairdarts_core.presets import get_search_preset, get_train_preset
from fairdarts_core.search import run_search
from fairdarts_core.train import run_train


def images(n, classes=3, size=12, channels=3, seed=0):
    """``n`` (PIL image, label) pairs: class c is brighter in channel c % channels, so the classes differ."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % classes
        a = rng.integers(0, 100, (size, size, channels), dtype=np.uint8)
        a[:, :, label % channels] += np.uint8(60 * (1 + label // channels))
        out.append((Image.fromarray(a if channels == 3 else a[:, :, 0]), label))
    return out


@pytest.fixture
def forget():
    """``forget(name)``: remove data set ``name`` from the module's tables when the test ends (only names a test
    registered: a refused name, e.g. a built-in one, stays)."""
    names = []
    yield names.append
    for name in names:
        data.DATASETS.pop(name, None), data.SPLIT_SIZES.pop(name, None), data._REGISTERED.pop(name, None)


@pytest.fixture
def registered(forget):
    def register(name, *args):
        info = register_dataset(name, *args)
        forget(name)
        return info

    return register


def test_a_registered_dataset_is_read_once_with_its_statistics(registered):
    train, test = images(30), images(9, seed=1)
    info = registered("tiles", train, test)
    assert (info.num_classes, info.in_channels, info.image_size) == (3, 3, 12)
    x, y = load_dataset("tiles", train=True)
    assert x.dtype == torch.uint8 and x.shape == (30, 3, 12, 12) and sorted(y.tolist()) == sorted(i % 3 for i in range(30))
    originals = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im, _ in train]
    for image, label in zip(x, y):  # every image kept, with its own label
        assert sum(torch.equal(image, o) and label == lab for o, (_, lab) in zip(originals, train)) == 1
    mean = np.stack([np.asarray(im) for im, _ in train]).reshape(-1, 3).mean(0) / 255
    assert info.mean == pytest.approx(mean.tolist()) and dataset_info("tiles") is info
    assert load_dataset("tiles", train=False)[0].shape == (9, 3, 12, 12)
    gray = registered("gray", [(torch.rand(1, 8, 8), i % 2) for i in range(4)], [(torch.rand(8, 8), 1)])
    assert gray.in_channels == 1 and load_dataset("gray", False)[0].dtype == torch.uint8


def test_a_dataset_listed_class_by_class_is_interleaved_so_both_search_halves_hold_every_class(registered):
    by_class = sorted(images(30), key=lambda pair: pair[1])  # as an ImageFolder lists them
    registered("sorted", by_class, images(3))
    _, y = load_dataset("sorted", train=True)
    assert set(y[:15].tolist()) == set(y[15:].tolist()) == {0, 1, 2}
    assert y[:6].tolist() == [0, 1, 2, 0, 1, 2]


def test_a_search_and_a_retraining_run_on_it(registered, tmp_path):
    registered("tiles", images(48), images(12, seed=1))
    config = get_search_preset("smoke", dataset="tiles", subset=24, image_size=12, batch_size=8)
    result = run_search(config, tmp_path / "search", progress=False)
    assert len(result.history) == config.epochs and result.model.classifier.out_features == 3
    trained = run_train(get_train_preset("smoke", dataset="tiles", subset=24, test_subset=6, image_size=12, auxiliary=False,
                                         batch_size=8),
                        result.genotype if result.genotype.normal else None, tmp_path / "train", progress=False)
    assert 0 <= trained.history[-1]["test_acc"] <= 1


def test_bad_data_is_refused_in_one_line(registered):
    cases = [
        (("cifar10", images(4), images(2)), ValueError, "needs a new name"),
        (("x", [], images(2)), DataError, "the train set of 'x' holds no image"),
        (("x", 5, images(2)), DataError, "must be a torchvision-style dataset"),
        (("x", images(4) + images(1, size=10), images(2)), DataError, "every image must have one size"),
        (("x", images(4), images(2, size=10)), DataError, "both splits need one size"),
        (("x", [(torch.full((3, 8, 8), 2.0), 0)], images(2)), DataError, "a float image must lie in \\[0, 1\\]"),
        (("x", [(im, -1) for im, _ in images(4)], images(2)), DataError, "labels are class indices"),
        (("x", [(im, 0) for im, _ in images(4)], images(2)), DataError, "must be 0 .. k-1 with k >= 2"),
        (("x", [(im, 2 * lab) for im, lab in images(4)], images(2)), DataError, "missing \\[1, 3\\]"),
        (("x", [(np.zeros((8, 6), np.uint8), i % 2) for i in range(4)], [(np.zeros((8, 6), np.uint8), 0)]), DataError,
         "must be square"),
        (("x", [(np.zeros((8, 8), np.float64), 0)], images(2)), DataError, "an image must be a PIL image"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match) as info:
            registered(*args)
        assert "\n" not in str(info.value)
    assert "x" not in data.DATASETS  # nothing half-registered
    with pytest.raises(ValueError, match="unknown dataset 'nowhere'; choose one of .* a name given to data.register_dataset"):
        dataset_info("nowhere")


def _write_folder(root, classes=("ants", "bees"), per_class=(6, 2), size=12):
    for split, n in zip(("train", "test"), per_class):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i, (im, _) in enumerate(images(n, classes=1, size=size, seed=10 * c + len(split))):
                im.save(root / split / name / f"{i}.png")
    return root


def test_an_image_folder_is_searched_from_the_command_line(tmp_path, capsys, forget):
    root = _write_folder(tmp_path / "my images")
    forget(f"folder:{root}")
    out = tmp_path / "run"
    rc = cli.main(["search", "--preset", "smoke", "--set", f"dataset=folder:{root}", "--set", "subset=12",
                   "--set", "image_size=12", "--set", "batch_size=4", "--out", str(out), "--json"])
    assert rc == 0, capsys.readouterr()
    saved = json.loads((out / "config.json").read_text())
    assert saved["dataset"] == f"folder:{root}"
    info = dataset_info(f"folder:{root}")
    assert (info.num_classes, info.in_channels, info.image_size) == (2, 3, 12)
    assert data.SPLIT_SIZES[f"folder:{root}"] == (12, 4)


def test_a_bad_image_folder_is_refused_when_the_config_is_built(tmp_path, capsys):
    with pytest.raises(DataError, match="is not a directory: an image folder data set needs"):
        get_search_preset("smoke", dataset=f"folder:{tmp_path / 'missing'}")
    root = tmp_path / "uneven"
    _write_folder(root)
    (root / "test" / "wasps").mkdir()
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "test" / "wasps" / "0.png")
    rc = cli.main(["search", "--preset", "smoke", "--set", f"dataset=folder:{root}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "different class folders" in err[0]
    assert not (tmp_path / "r").exists()


def test_a_network_trained_on_an_image_folder_is_evaluated_on_it(tmp_path, capsys, forget):
    root = _write_folder(tmp_path / "imgs")
    name = f"folder:{root}"
    forget(name)
    out = tmp_path / "net"
    assert cli.main(["train", "--arch", "FairDARTS_a", "--preset", "smoke", "--set", f"dataset={name}",
                     "--set", "subset=12", "--set", "test_subset=4", "--set", "batch_size=4", "--set", "image_size=32",
                     "--out", str(out), "--json"]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == name and 0 <= result["acc"] <= 1, result
    assert cli.main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--dataset", "nowhere"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown dataset 'nowhere'" in err[0]


def test_an_image_folder_under_the_home_directory_keeps_the_name_it_was_given(tmp_path, monkeypatch, forget):
    monkeypatch.setenv("HOME", str(tmp_path))
    _write_folder(tmp_path / "imgs")
    name = "folder:~/imgs"
    forget(name)
    info = dataset_info(name)
    assert info.name == name and info.num_classes == 2
    assert get_search_preset("smoke", dataset=name, subset=12, batch_size=4).dataset == name
