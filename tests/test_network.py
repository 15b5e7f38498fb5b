"""Evaluation networks: shapes, isolated nodes, drop-path, and the authors' checkpoint layout."""
import argparse
import json
from pathlib import Path

import pytest
import torch

from fairdarts_core import zoo
from fairdarts_core.genotype import Genotype
from fairdarts_core.network import (AUX_MIN_IMAGE_SIZE, MIN_IMAGE_SIZE, NetworkCIFAR, NetworkImageNet,
                                    check_state_dict, drop_path, fetch_authors_checkpoint, from_authors_state_dict,
                                    load_authors_checkpoint, load_checkpoint, min_image_size)

# The state-dict layout of the authors' released FairDARTS-a/-b checkpoints (key, shape), copied from the
# project's reference notes; the checkpoints themselves are not needed.
AUTHORS = json.loads((Path(__file__).parent / "data" / "authors_checkpoint_keys.json").read_text())["models"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are small: one thread is fastest and does not fight other processes for the cores.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(genotype="FairDARTS_a", **kw) -> NetworkCIFAR:
    return NetworkCIFAR(C=8, num_classes=10, layers=kw.pop("layers", 5), genotype=genotype, **kw)


def synthetic_state_dict(name: str, seed: int) -> dict:
    """Random tensors in the authors' layout (BN variances positive, counters integers)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in AUTHORS[name]:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1
    return sd


# --- the network itself ------------------------------------------------------------------------------

def test_forward_train_and_eval():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 10)
    (logits.sum() + aux.sum()).backward()
    model.eval()
    logits, aux = model(x)
    assert logits.shape == (2, 10) and aux is None


def test_without_auxiliary_head():
    model = tiny(auxiliary=False)
    assert not hasattr(model, "auxiliary_head")
    assert model(torch.randn(2, 3, 32, 32))[1] is None


def test_reduction_cells_and_aux_position():
    model = NetworkCIFAR(genotype="DARTS_V2")
    assert [i for i, c in enumerate(model.cells) if c.reduction] == [6, 13]
    assert model.aux_position == 13
    assert model.stem[0].out_channels == 108  # stem multiplier 3


def test_isolated_nodes_are_not_computed_nor_concatenated():
    # FairDARTS_a's normal cell has 3 live nodes: the last cell outputs 3 * 144 channels.
    model = NetworkCIFAR(genotype="FairDARTS_a")
    assert model.cells[0].concat == [2, 4, 5] and "3" not in model.cells[0]._ops
    assert model.classifier.in_features == 432
    assert model.cells[1].preprocess1.op[1].in_channels == 3 * 36  # the next cell follows
    assert NetworkCIFAR(genotype="FairDARTS_b").classifier.in_features == 576


def test_node_fed_only_by_an_isolated_node_is_dropped_too():
    # Node 2 has no input; node 3 only reads node 2: both isolated. Node 4 is live.
    normal = (("sep_conv_3x3", 3, 2), ("skip_connect", 4, 0), ("dil_conv_3x3", 4, 3))
    g = Genotype(normal, zoo.get("FairDARTS_b").reduce)
    model = tiny(g)
    cell = model.cells[0]
    assert cell.concat == [4] and list(cell._ops["4"]) == ["0"]
    assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 10)


def test_a_cell_without_live_node_is_an_error_naming_it():
    dead = (("sep_conv_3x3", 3, 2),)
    ok = zoo.get("FairDARTS_b")
    with pytest.raises(ValueError, match="normal cell has no live"):
        tiny(Genotype(dead, ok.reduce))
    with pytest.raises(ValueError, match="reduction cell has no live"):
        tiny(Genotype(ok.normal, dead))


def test_multi_hot_edge_runs_both_ops():
    normal = (("sep_conv_3x3", 2, 0), ("dil_conv_3x3", 2, 0), ("skip_connect", 3, 1), ("max_pool_3x3", 3, 2))
    model = tiny(Genotype(normal, normal), layers=3)
    assert len(model.cells[0]._ops["2"]["0"]) == 2
    assert "cells.0._ops.2.0.1.op.1.weight" in model.state_dict()
    assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 10)


def test_genotype_is_required_and_checked():
    with pytest.raises(ValueError, match="needs a genotype"):
        NetworkCIFAR()
    with pytest.raises(ValueError, match="unknown architecture"):
        NetworkCIFAR(genotype="nope")


def test_one_channel_input_and_too_small_aux_map():
    model = tiny(in_channels=1, layers=3)
    assert model(torch.randn(2, 1, 32, 32))[0].shape == (2, 10)
    with pytest.raises(ValueError, match="auxiliary head needs at least"):
        model(torch.randn(2, 1, 28, 28))  # 28 -> 7x7 at the head: too small for DARTS's head
    model.eval()
    assert model(torch.randn(2, 1, 28, 28))[0].shape == (2, 10)  # eval: the head does not run


def test_imagenet_network():
    model = NetworkImageNet(C=8, num_classes=5, layers=3, genotype="FairDARTS_b")
    logits, aux = model(torch.randn(2, 3, 224, 224))
    assert logits.shape == aux.shape == (2, 5)
    assert isinstance(model.cells[0].preprocess0, type(model.cells[2].preprocess0))  # both after a reduction
    model.eval()
    assert model(torch.randn(1, 3, 224, 224))[1] is None


# --- drop-path -----------------------------------------------------------------------------------------

def test_drop_path_zeroes_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    values = per_sample.unique()
    assert len(values) == 2 and values[0] == 0 and torch.isclose(values[1], torch.tensor(1 / 0.75))
    assert (per_sample.min(1).values == per_sample.max(1).values).all()  # a sample is dropped whole
    assert abs(y.mean().item() - 1.0) < 0.05
    assert drop_path(x, 0.0) is x


def test_drop_path_only_in_training():
    model = tiny(drop_path_prob=0.5)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])
    model.train()
    torch.manual_seed(1)
    a = model(x)[0]
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x)[0])


# --- the authors' checkpoint layout --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["FairDARTS_a", "FairDARTS_b"])
def test_module_names_reproduce_the_authors_layout(name):
    ours = [(k, list(v.shape)) for k, v in NetworkCIFAR(36, 10, 20, True, name).state_dict().items()]
    assert dict(ours) == {k: s for k, s in AUTHORS[name]}
    assert [k for k, _ in ours] == [k for k, _ in AUTHORS[name]]  # same order too


def test_synthetic_checkpoint_loads_and_drives_the_outputs(tmp_path):
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for seed in (0, 1):
        sd = synthetic_state_dict("FairDARTS_a", seed)
        path = tmp_path / f"FairDARTS-a-{seed}.tar"
        torch.save({"state_dict": sd, "epoch": 599}, path)
        model = load_authors_checkpoint("FairDARTS_a", path)
        assert not model.training
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in sd.items())
        with torch.no_grad():
            outputs.append(model(x)[0])
    assert not torch.allclose(outputs[0], outputs[1])  # different weights, different outputs
    # A DataParallel checkpoint ("module." prefix) and a bare state dict load the same.
    sd = synthetic_state_dict("FairDARTS_a", 0)
    model = from_authors_state_dict(zoo.get("FairDARTS_a"), {"module." + k: v for k, v in sd.items()})
    with torch.no_grad():
        assert torch.allclose(model(x)[0], outputs[0])


@pytest.fixture(scope="module")
def authors_b():
    return synthetic_state_dict("FairDARTS_b", 3)


def _error(arch, sd) -> str:
    with pytest.raises(ValueError) as e:
        from_authors_state_dict(arch, {"state_dict": sd})
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_key_is_named(authors_b):
    sd = dict(authors_b)
    del sd["classifier.bias"], sd["cells.3._ops.2.0.0.op.1.weight"]
    msg = _error("FairDARTS_b", sd)
    assert "2 missing" in msg and "classifier.bias" in msg and "cells.3._ops.2.0.0.op.1.weight" in msg


def test_unexpected_key_is_named(authors_b):
    sd = dict(authors_b, **{"cells.0._ops.3.0.0.op.1.weight": torch.zeros(36, 1, 3, 3)})
    msg = _error("FairDARTS_b", sd)
    assert "1 unexpected (cells.0._ops.3.0.0.op.1.weight)" in msg and "missing" not in msg


def test_wrong_shape_is_named(authors_b):
    sd = dict(authors_b, **{"classifier.weight": torch.zeros(10, 432)})
    msg = _error("FairDARTS_b", sd)
    assert "1 wrong (classifier.weight: [10, 432] in the checkpoint, [10, 576] in the model)" in msg
    assert "another channel count" in msg


def test_wrong_architecture_lists_counts_briefly(authors_b):
    msg = _error("FairDARTS_a", authors_b)  # b's weights into a's network
    assert "FairDARTS_a" in msg and "missing" in msg and "unexpected" in msg and "..." in msg
    assert len(msg) < 1000


def test_checkpoint_of_another_genotype_or_size_is_one_line_naming_the_first_mismatches():
    model = tiny("FairDARTS_a", layers=3)
    other_cells = tiny("FairDARTS_b", layers=3).state_dict()
    with pytest.raises(ValueError) as e:
        check_state_dict(model, other_cells, "the network")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("the checkpoint does not fit the network: ")
    assert "missing (cells." in msg and "unexpected (cells." in msg and "another genotype?" in msg
    wider = NetworkCIFAR(C=10, num_classes=10, layers=3, genotype="FairDARTS_a").state_dict()
    with pytest.raises(ValueError) as e:
        check_state_dict(model, wider, "the network")
    msg = str(e.value)
    assert "\n" not in msg and "wrong (stem.0.weight: [30, 3, 3, 3] in the checkpoint, [24, 3, 3, 3] in the model" in msg
    assert "missing" not in msg and "another channel count" in msg


def test_hand_edited_entries_are_named():
    model = tiny(layers=3)
    sd = model.state_dict()
    for edit, words in ((lambda d: d.update({"classifier.bias": [0.0] * 10}), "classifier.bias: list, not a tensor"),
                        (lambda d: d.update({"classifier.bias": torch.zeros(10, dtype=torch.long)}),
                         "classifier.bias: torch.int64 in the checkpoint, torch.float32 in the model"),
                        (lambda d: d.update({"classifier.bias": torch.full((10,), float("nan"))}),
                         "classifier.bias: holds NaN or infinite values"),
                        (lambda d: d.update({7: torch.zeros(1)}), "1 unexpected (7)")):
        edited = dict(sd)
        edit(edited)
        with pytest.raises(ValueError) as e:
            check_state_dict(model, edited, "the network")
        assert "\n" not in str(e.value) and words in str(e.value)
    with pytest.raises(ValueError, match="it holds a list, not a state dict"):
        check_state_dict(model, [1, 2], "the network")
    check_state_dict(model, sd, "the network")  # its own state dict fits


def test_architecture_from_a_genotype_file_or_a_run_directory(tmp_path):
    g = zoo.get("FairDARTS_c")
    g.save(tmp_path / "genotype.json")
    for arch in (tmp_path / "genotype.json", str(tmp_path), tmp_path):
        assert tiny(arch, layers=3).genotype == g
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        tiny("nope")


def test_too_few_cells_or_channels_are_refused():
    for kw, words in ((dict(layers=2), "layers=2 is not valid: layers must be an integer >= 3"),
                      (dict(num_classes=0), "num_classes=0 is not valid"),
                      (dict(layers=0), "layers=0 is not valid"),
                      (dict(C=0), "C=0 is not valid: C must be an integer >= 1")):
        with pytest.raises(ValueError, match=words):
            NetworkCIFAR(**{"C": 8, "genotype": "FairDARTS_a", **kw})


@pytest.mark.parametrize("size", [MIN_IMAGE_SIZE, MIN_IMAGE_SIZE + 1])
def test_smallest_image_trains_on_a_batch_of_one(size):
    model = tiny(auxiliary=False, layers=3, in_channels=1)
    model(torch.randn(1, 1, size, size))[0].sum().backward()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):  # why the minimum is what it is
        model(torch.randn(1, 1, MIN_IMAGE_SIZE - 1, MIN_IMAGE_SIZE - 1))


def test_smallest_image_for_the_auxiliary_head():
    assert AUX_MIN_IMAGE_SIZE == 29 and min_image_size(True) == 29 and min_image_size(False) == MIN_IMAGE_SIZE
    model = tiny(layers=3, in_channels=1)
    logits, aux = model(torch.randn(2, 1, AUX_MIN_IMAGE_SIZE, AUX_MIN_IMAGE_SIZE))
    assert aux.shape == (2, 10)
    with pytest.raises(ValueError, match="images of at least 29x29"):
        model(torch.randn(2, 1, AUX_MIN_IMAGE_SIZE - 1, AUX_MIN_IMAGE_SIZE - 1))


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.tar")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    unsafe = tmp_path / "unsafe.tar"
    torch.save({"args": argparse.Namespace(lr=0.1)}, unsafe)  # arbitrary objects: refused by weights_only
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(unsafe)


def test_fetching_a_released_checkpoint_keeps_it_and_says_why_when_it_cannot(tmp_path):
    source = tmp_path / "release"
    source.mkdir()
    torch.save({"state_dict": synthetic_state_dict("FairDARTS_a", 0)}, source / "FairDARTS-a.tar")
    got = fetch_authors_checkpoint("FairDARTS_a", tmp_path / "cache", url=source.as_uri() + "/{file}")
    assert got == tmp_path / "cache" / "FairDARTS-a.tar" and load_authors_checkpoint("FairDARTS_a", got)
    # kept: a second call reads the file and does not download (the address now refuses)
    assert fetch_authors_checkpoint("FairDARTS_a", tmp_path / "cache", url="http://127.0.0.1:9/{file}") == got
    with pytest.raises(ValueError) as e:
        fetch_authors_checkpoint("FairDARTS_b", tmp_path / "cache", url="http://127.0.0.1:9/{file}", timeout=5)
    assert str(e.value).startswith("cannot download http://127.0.0.1:9/FairDARTS-b.tar: ") and "\n" not in str(e.value)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["FairDARTS-a.tar"]  # nothing half-written
    with pytest.raises(ValueError, match="released checkpoints of FairDARTS_a, FairDARTS_b only; got 'DARTS_V2'"):
        fetch_authors_checkpoint("DARTS_V2", tmp_path)
