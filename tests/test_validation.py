"""Every bad setting is refused when the config is built, with one line that names the field, the value and
what is valid; bad data files and checkpoints of another model are one line too; nothing is written."""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fairdarts_core import cli, data
from fairdarts_core.data import DataError
from fairdarts_core.network import NetworkCIFAR, from_authors_state_dict, load_authors_checkpoint
from fairdarts_core.presets import (SEARCH_PRESETS, TRAIN_PRESETS, SearchConfig, TrainConfig, apply_sets,
                                    get_search_preset, get_train_preset, parse_value)

RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"


def refusal(build, **fields) -> str:
    """The message of the ValueError that building a config with ``fields`` raises; it must be one line."""
    with pytest.raises(ValueError) as e:
        build(**fields)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


# --- search settings -------------------------------------------------------------------------------------
SEARCH_REFUSED = [
    # (field, value, the valid range as the message states it)
    ("grad_clip", -1, "grad_clip must be a number >= 0 (the largest gradient norm; 0: no clipping)"),
    ("threshold", 2, "threshold must be a number in [0, 1]"),
    ("momentum", 5, "momentum must be a number in [0, 1)"),
    ("subset", 5, "subset must be an integer in [10, 60000] or none"),       # fewer than the 10 classes
    ("subset", 60001, "subset must be an integer in [10, 60000] or none"),
    ("image_size", 0, "image_size must be an integer >= 5 or none"),
    ("image_size", 2, "image_size must be an integer >= 5 or none"),
    ("layers", 0, "layers must be an integer >= 3"),
    ("layers", 1, "layers must be an integer >= 3"),
    ("layers", 2, "layers must be an integer >= 3"),
    ("channels", 0, "channels must be an integer >= 1"),
    ("threads", -1, "threads must be an integer >= 1 or none"),
    ("threads", 0, "threads must be an integer >= 1 or none"),
    ("device", "bogus", "choose auto, cpu, cuda, cuda:N (N: a GPU's index) or mps"),
    ("device", "cuda:x", "choose auto, cpu, cuda, cuda:N"),
    ("device", "meta", "choose auto, cpu, cuda, cuda:N"),
    ("cutout", -1, "cutout must be an integer >= 0"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("epochs", 0, "epochs must be an integer >= 1"),
    ("epochs", 2.5, "epochs must be an integer >= 1"),
    ("noise_epochs", 0, "noise_epochs must be an integer >= 1"),
    ("lr", 0, "lr must be a number > 0"),
    ("lr", float("nan"), "lr must be a number > 0"),
    ("lr", float("inf"), "lr must be a number > 0"),
    ("lr", "0.1", "lr must be a number > 0"),
    ("arch_lr", -1e-3, "arch_lr must be a number > 0"),
    ("lr_min", -1, "lr_min must be a number >= 0"),
    ("weight_decay", -1, "weight_decay must be a number >= 0"),
    ("arch_weight_decay", -1, "arch_weight_decay must be a number >= 0"),
    ("zero_one_weight", -1, "zero_one_weight must be a number >= 0"),
    ("alpha_init_std", -1, "alpha_init_std must be a number >= 0"),
    ("train_portion", 0, "train_portion must be a number in (0, 1)"),
    ("train_portion", 1, "train_portion must be a number in (0, 1)"),
    ("seed", -1, "seed must be an integer in [0, 4294967295]"),
    ("arch_betas", (0.9,), "arch_betas must be two numbers in [0, 1)"),
    ("arch_betas", (0.9, 1.0), "arch_betas must be two numbers in [0, 1)"),
    ("dataset", "mnist", "choose one of cifar10, cifar100, fashion-mnist"),
    ("relaxation", "tanh", "choose one of sigmoid, softmax"),
    ("zero_one_kind", "l3", "choose one of l2, l1"),
    ("mode", "trilevel", "choose one of bilevel, single, second_order"),
    ("formulation", "slow", "choose one of fast, reference"),
    ("parse_method", "best", "choose one of darts, threshold_sparse, threshold_edge or none"),
    ("primitives", (), "primitives must name at least one op; known ops: "),
    ("primitives", ("skip_connect", "warp"), "unknown op 'warp' in the darts space; known ops: "),
    ("primitives", ("skip_connect", "skip_connect"), "primitives lists skip_connect more than once"),
    ("primitives", ("none",), "primitives needs an op besides none"),
    ("primitives", "skip_connect", "primitives must be a list of op names"),
    ("skip_noise", "false", "skip_noise must be true or false"),
    ("data_dir", 3, "data_dir must be a directory path or none"),
]


@pytest.mark.parametrize("field, value, valid", SEARCH_REFUSED, ids=lambda v: str(v)[:20])
def test_a_bad_search_setting_is_refused_with_its_range(field, value, valid):
    msg = refusal(get_search_preset, name="smoke", **{field: value})
    assert msg.startswith(f"{field}=") and " is not valid: " in msg and valid in msg


def test_each_part_of_the_search_split_must_hold_a_batch():
    msg = refusal(get_search_preset, name="smoke", subset=20, batch_size=16)
    assert msg.startswith("subset=20 is not valid: with train_portion=0.5 and batch_size=16, the 20 images "
                          "split into 10 for the weights and 10 for the architecture, and each part must hold "
                          "at least one batch")
    assert "subset=None" in refusal(get_search_preset, name="cpu", batch_size=40000, subset=None)
    get_search_preset("smoke", subset=32, batch_size=16)  # 16 + 16: just enough


def test_the_smallest_image_size_is_what_a_supernet_trains_on_with_a_batch_of_one():
    from fairdarts_core.search import build_supernet

    torch.manual_seed(0)
    model = build_supernet(get_search_preset("smoke", image_size=5), 1, 10).train()
    model(torch.randn(1, 1, 5, 5)).sum().backward()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):  # 4 -> 2 -> 1: 1x1 maps
        model(torch.randn(1, 1, 4, 4))
    assert "image_size must be an integer >= 5" in refusal(get_search_preset, name="smoke", image_size=4)


def test_noise_on_skip_needs_a_skip():
    msg = refusal(get_search_preset, name="smoke", skip_noise=True, primitives=("sep_conv_3x3", "max_pool_3x3"))
    assert msg == "skip_noise=True is not valid: noise on skip needs skip_connect among the primitives"


# --- retraining settings ---------------------------------------------------------------------------------
TRAIN_REFUSED = [
    ("drop_path_prob", 2, "drop_path_prob must be a number in [0, 1)"),
    ("drop_path_prob", 1, "drop_path_prob must be a number in [0, 1)"),
    ("crop_pad", -1, "crop_pad must be an integer >= 0"),
    ("grad_clip", -1, "grad_clip must be a number >= 0"),
    ("momentum", 5, "momentum must be a number in [0, 1)"),
    ("subset", 9, "subset must be an integer in [10, 60000] or none"),
    ("test_subset", 9, "test_subset must be an integer in [10, 10000] or none"),
    ("test_subset", -5, "test_subset must be an integer in [10, 10000] or none"),
    ("image_size", 0, "image_size must be an integer >= 5 or none"),
    ("image_size", 2, "image_size must be an integer >= 5 or none"),
    ("layers", 1, "layers must be an integer >= 3"),
    ("channels", 0, "channels must be an integer >= 1"),
    ("threads", -1, "threads must be an integer >= 1 or none"),
    ("device", "bogus", "choose auto, cpu, cuda, cuda:N"),
    ("eval_batch_size", 0, "eval_batch_size must be an integer >= 1"),
    ("auxiliary_weight", -0.4, "auxiliary_weight must be a number >= 0"),
    ("auxiliary", "yes", "auxiliary must be true or false"),
    ("cutout", -16, "cutout must be an integer >= 0"),
    ("lr", -0.025, "lr must be a number > 0"),
    ("seed", 2 ** 40, "seed must be an integer in [0, 4294967295]"),
]


@pytest.mark.parametrize("field, value, valid", TRAIN_REFUSED, ids=lambda v: str(v)[:20])
def test_a_bad_train_setting_is_refused_with_its_range(field, value, valid):
    msg = refusal(get_train_preset, name="smoke", **{field: value})
    assert msg.startswith(f"{field}=") and " is not valid: " in msg and valid in msg


def test_the_auxiliary_head_needs_29_pixels_and_two_images():
    msg = refusal(get_train_preset, name="smoke", image_size=28)
    assert msg == ("image_size=28 is not valid with auxiliary=true: the auxiliary head needs images of at least "
                   "29x29 (an 8x8 map after the two reduction cells): set image_size=32 or auxiliary=false")
    assert "image_size=none (fashion-mnist: 28x28)" in refusal(get_train_preset, name="smoke", image_size=None)
    get_train_preset("smoke", image_size=29)
    get_train_preset("smoke", image_size=None, auxiliary=False)  # the head is the only reason
    assert "at least 2 images" in refusal(get_train_preset, name="smoke", batch_size=1)
    assert "at least one batch" in refusal(get_train_preset, name="smoke", subset=32, batch_size=64)


# --- --set text ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pair, words", [
    ("primitives=", "primitives='' is not valid: primitives must name at least one op"),
    ("primitives=,", "primitives=',' is not valid: primitives must name at least one op"),
    ("arch_betas=a,b", "arch_betas='a,b' is not valid: arch_betas must be numbers separated by commas"),
    ("epochs=", "epochs='' is not valid: epochs must be an integer"),
    ("epochs=three", "epochs='three' is not valid: epochs must be an integer"),
    ("lr=fast", "lr='fast' is not valid: lr must be a number"),
    ("skip_noise=maybe", "skip_noise='maybe' is not valid: skip_noise must be true or false"),
    ("epochs=none", "epochs=none is not valid: epochs cannot be none"),
    ("learning_rate=1", "unknown SearchConfig field 'learning_rate'"),
    ("lr", "--set expects key=value, got 'lr'"),
])
def test_set_text_errors_are_one_value_error_line(pair, words):
    with pytest.raises(ValueError) as e:
        apply_sets(SearchConfig, [pair])
    assert "\n" not in str(e.value) and words in str(e.value)


def test_set_types_follow_the_field_annotations():
    got = apply_sets(TrainConfig, ["subset=none", "test_subset=20", "image_size=32", "threads=2", "auxiliary=off",
                                   "drop_path_prob=0.3", "device=cuda:1", "data_dir=none"])
    assert got == {"subset": None, "test_subset": 20, "image_size": 32, "threads": 2, "auxiliary": False,
                   "drop_path_prob": 0.3, "device": "cuda:1", "data_dir": None}
    assert parse_value(SearchConfig, "parse_method", "none") is None
    assert apply_sets(SearchConfig, ["path=reference"]) == {"formulation": "reference"}  # the old name


def test_no_key_error_escapes_for_user_input():
    for bad in (["primitives="], ["arch_betas="], ["=3"], ["subset=x"], ["image_size=1.5"]):
        with pytest.raises(ValueError):
            get_search_preset("smoke", **apply_sets(SearchConfig, bad))
    with pytest.raises(ValueError, match="a search config is a dict of fields, got list"):
        SearchConfig.from_dict([1, 2])


# --- through the command line: exit 2, one line, nothing written -----------------------------------------
def _cli_refuses(argv, out: Path, capsys, words: str) -> None:
    rc = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert words in lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("setting, words", [
    ("grad_clip=-1", "grad_clip=-1.0 is not valid: grad_clip must be a number >= 0"),
    ("threshold=2", "threshold=2.0 is not valid: threshold must be a number in [0, 1]"),
    ("layers=1", "layers=1 is not valid: layers must be an integer >= 3"),
    ("device=bogus", "device='bogus' is not valid"),
    ("primitives=", "primitives='' is not valid: primitives must name at least one op"),
])
def test_the_cli_search_refuses_a_bad_setting_and_writes_nothing(tmp_path, capsys, setting, words):
    out = tmp_path / "run"
    _cli_refuses(["search", "--preset", "smoke", "--set", setting, "--out", str(out)], out, capsys, words)


def test_the_cli_train_refuses_a_bad_setting_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    _cli_refuses(["train", "--arch", "FairDARTS_a", "--preset", "smoke", "--set", "drop_path_prob=2",
                  "--out", str(out)], out, capsys, "drop_path_prob=2.0 is not valid: drop_path_prob must be a number in [0, 1)")


def test_a_truncated_gz_stops_the_cli_with_one_line_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "SYSTEM_DIRS", [])
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 40), ("t10k", 20)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", np.arange(n) % 10)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
            (d / f"{stem}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    truncated = d / "train-images-idx3-ubyte.gz"
    truncated.write_bytes(truncated.read_bytes()[:10000])  # of about 31 kB
    with pytest.raises(DataError) as e:
        data.load_dataset("fashion-mnist", True, data_dir=tmp_path)
    assert "\n" not in str(e.value) and str(truncated) in str(e.value)
    out = tmp_path / "run"
    _cli_refuses(["search", "--preset", "smoke", "--set", f"data_dir={tmp_path}", "--out", str(out)], out, capsys,
                 f"cannot read {truncated}: Compressed file ended before the end-of-stream marker was reached")


# --- checkpoints of another model ------------------------------------------------------------------------
def test_a_checkpoint_of_another_model_is_one_line_naming_the_first_mismatches(tmp_path):
    other = NetworkCIFAR(36, 10, 20, True, "FairDARTS_b").state_dict()  # the size is right, the cells are not
    path = tmp_path / "FairDARTS-b.tar"
    torch.save({"state_dict": other}, path)
    with pytest.raises(ValueError) as e:
        load_authors_checkpoint("FairDARTS_a", path)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 1000
    assert msg.startswith("the checkpoint does not fit NetworkCIFAR(36, 10, 20, auxiliary=True) of FairDARTS_a: ")
    assert "missing (cells.0._ops." in msg and "unexpected (cells.0._ops." in msg and "another genotype?" in msg
    narrow = NetworkCIFAR(16, 10, 20, True, "FairDARTS_a").state_dict()  # the cells are right, the size is not
    with pytest.raises(ValueError) as e:
        from_authors_state_dict("FairDARTS_a", narrow)
    assert "\n" not in str(e.value) and "wrong (stem.0.weight: [48, 3, 3, 3] in the checkpoint, [108, 3, 3, 3]" in str(e.value)


# --- what must keep working ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SEARCH_PRESETS))
def test_every_search_preset_validates(name):
    config = get_search_preset(name)
    assert SearchConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("name", list(TRAIN_PRESETS))
def test_every_train_preset_validates(name):
    config = get_train_preset(name)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


RECORDED = sorted(RUNS.glob("**/config.json"))


def test_there_are_recorded_configs():
    assert len(RECORDED) >= 10


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: str(p.relative_to(RUNS)))
def test_every_recorded_config_loads(path):
    recorded = json.loads(path.read_text())
    cls = SearchConfig if "relaxation" in recorded else TrainConfig
    config = cls.from_dict(recorded)
    if "path" in recorded:  # recorded before the formulation had its own name
        assert config.formulation == recorded["path"] and "path" not in config.to_dict()
    again = config.to_dict()
    assert {k: again.get(SearchConfig.LEGACY_KEYS.get(k, k)) for k in recorded} == recorded


def test_the_old_and_new_name_of_the_formulation_must_agree():
    assert SearchConfig.from_dict({"path": "reference"}).formulation == "reference"
    assert SearchConfig.from_dict({"path": "fast", "formulation": "fast"}).formulation == "fast"
    with pytest.raises(ValueError, match="both path .the old name. and formulation are given, and they differ"):
        SearchConfig.from_dict({"path": "fast", "formulation": "reference"})
