"""Search spaces (fairdarts_core.spaces): the loops, the run directory, the CLI and the architecture
resolver work alike in the DARTS space and in NAS-Bench-201's."""
import json
from pathlib import Path

import numpy as np
import pytest

from fairdarts_core import cli, runs, spaces, zoo
from fairdarts_core.genotype import Genotype
from fairdarts_core.nb201 import NB201_OPS, NB201Genotype, NB201Network, NB201Supernet
from fairdarts_core.presets import get_search_preset, get_train_preset
from fairdarts_core.search import build_supernet, run_search
from fairdarts_core.train import run_train

DEBIAN_OK = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()
needs_data = pytest.mark.skipif(not DEBIAN_OK, reason="Fashion-MNIST (dataset-fashion-mnist) is not installed")
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"


def tiny_nb201(**kw):
    """The nb201-darts-cpu preset at smoke size (1 cell per stage, 2 epochs of 2 steps)."""
    return get_search_preset("nb201-darts-cpu", **{"subset": 64, "batch_size": 16, "epochs": 2, "layers": 3,
                                                   "channels": 4, **kw})


def test_the_nb201_presets_differ_only_in_the_relaxation_and_its_rules():
    darts, fair = get_search_preset("nb201-darts-cpu").to_dict(), get_search_preset("nb201-cpu").to_dict()
    assert {k for k in darts if darts[k] != fair[k]} == {"relaxation", "alpha_init_std", "parse_method",
                                                         "zero_one_weight"}
    assert darts["space"] == "nb201" and darts["primitives"] == list(NB201_OPS) and darts["layers"] == 24
    assert isinstance(build_supernet(get_search_preset("nb201-cpu", layers=3), 1, 10), NB201Supernet)
    paper, fair_paper = get_search_preset("nb201-darts-paper").to_dict(), get_search_preset("nb201-paper").to_dict()
    assert {k for k in paper if paper[k] != fair_paper[k]} == {"relaxation", "alpha_init_std", "parse_method",
                                                               "zero_one_weight"}
    assert (paper["dataset"], paper["layers"], paper["channels"], paper["epochs"], paper["arch_lr"]) == \
        ("cifar10", 15, 16, 50, 3e-4)  # NAS-Bench-201's DARTS-V1: N = 5, C = 16, 50 epochs


@needs_data
def test_an_nb201_search_with_noise_on_skip_records_its_schedule(tmp_path):
    result = run_search(tiny_nb201(skip_noise=True, noise_epochs=2), None, progress=False)
    assert [r["skip_noise_std"] for r in result.history] == pytest.approx([1.0, 0.5])
    quiet = run_search(tiny_nb201(), None, progress=False)
    assert not np.allclose(result.history[-1]["cell_weight"], quiet.history[-1]["cell_weight"])


def test_the_space_checks_its_own_settings():
    with pytest.raises(ValueError, match="unknown op 'sep_conv_3x3' in the nb201 space"):
        tiny_nb201(primitives=("skip_connect", "sep_conv_3x3"))
    with pytest.raises(ValueError, match="layers=4 is not valid in the nb201 space: .* multiple of 3"):
        tiny_nb201(layers=4)
    with pytest.raises(ValueError, match="parse_method='threshold_sparse' is not valid"):
        tiny_nb201(parse_method="threshold_sparse")
    with pytest.raises(ValueError, match="unknown op 'nor_conv_3x3' in the darts space"):
        get_search_preset("smoke", primitives=("skip_connect", "nor_conv_3x3"))
    with pytest.raises(ValueError, match="no auxiliary head"):
        run_train(get_train_preset("smoke"), ARCH, None, progress=False)
    with pytest.raises(ValueError, match="unknown search space 'nope'"):
        spaces.get_space("nope")


def test_genotypes_of_either_space_resolve_and_load(tmp_path):
    g = zoo.resolve_arch(ARCH)
    assert isinstance(g, NB201Genotype) and g.to_string() == ARCH
    (tmp_path / "g.json").write_text(json.dumps(g.to_dict()))
    assert zoo.resolve_arch(tmp_path / "g.json") == g == spaces.genotype_from_dict(g.to_dict())
    assert spaces.space_of(g) is spaces.NB201 and spaces.space_of(zoo.get("FairDARTS_a")) is spaces.DARTS
    assert isinstance(spaces.genotype_from_dict(zoo.get("FairDARTS_a").to_dict()), Genotype)
    (tmp_path / "bad.json").write_text(json.dumps({"space": "nb201", "arch": "|warp~0|"}))
    with pytest.raises(ValueError, match="bad.json"):
        zoo.resolve_arch(tmp_path / "bad.json")


@needs_data
@pytest.mark.parametrize("preset", ["nb201-darts-cpu", "nb201-cpu"])
def test_an_nb201_search_writes_a_run_that_parses_loads_and_retrains(tmp_path, preset, capsys):
    out = tmp_path / "run"
    config = tiny_nb201() if preset == "nb201-darts-cpu" else get_search_preset(
        preset, subset=64, batch_size=16, epochs=2, layers=3, channels=4)
    result = run_search(config, out, progress=False)
    record = result.history[-1]
    assert np.asarray(record["cell_weight"]).shape == (6, 5) and "normal_weight" not in record
    assert record["skips"] == result.genotype.count("skip_connect")
    assert (out / "cell_weight.npy").is_file() and not (out / "normal_weight.npy").exists()
    run = runs.load_search_run(out)
    assert run.genotype == result.genotype and set(run.weights) == {"cell_weight"} and run.normal_weight is None
    assert cli.main(["parse", str(out), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["arch"] == result.genotype.to_string()
    assert parsed["method"] == ("darts" if preset == "nb201-darts-cpu" else "threshold")
    # retrain the derived cell (a cell cut off from its input still trains: its head learns the prior)
    trained = run_train(get_train_preset("smoke", layers=3, auxiliary=False, image_size=8), out, tmp_path / "t",
                        progress=False)
    assert isinstance(trained.model, NB201Network) and 0 <= trained.test_acc <= 1
    assert runs.load_train_run(tmp_path / "t").genotype == result.genotype


@needs_data
def test_the_cli_searches_and_plots_the_nb201_space(tmp_path, capsys):
    rc = cli.main(["search", "--preset", "nb201-darts-cpu", "--set", "subset=64", "--set", "batch_size=16",
                   "--set", "layers=3", "--set", "channels=4", "--epochs", "1", "--out", str(tmp_path / "s"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and "skips " in captured.err
    payload = json.loads(captured.out)
    assert payload["genotype"]["space"] == "nb201" and "cell_weight" not in payload["last"]
    assert cli.main(["plot", "--genotype", str(tmp_path / "s" / "genotype.json"), "--out", str(tmp_path / "c.svg"),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cell"] == "cell" and (tmp_path / "c.svg").stat().st_size > 0
    empty = "|none~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|"
    (tmp_path / "e.json").write_text(json.dumps({"space": "nb201", "arch": empty}))
    assert cli.main(["plot", "--genotype", str(tmp_path / "e.json"), "--out", str(tmp_path / "e.svg"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["no_live_node"] == ["cell"] and "does not connect" in captured.err


def test_cells_of_a_history_name_their_space():
    from fairdarts_core.spaces import DARTS, NB201, history_cells, skip_key, space_of_cell

    assert space_of_cell("normal") is DARTS and space_of_cell("cell") is NB201
    assert skip_key("reduce") == "skip_reduce" and skip_key("cell") == "skips"
    assert history_cells([{"normal_weight": [], "reduce_weight": []}]) == ("normal", "reduce")
    assert history_cells([{"cell_weight": []}]) == ("cell",)
    with pytest.raises(ValueError, match="unknown cell 'middle'"):
        space_of_cell("middle")
    with pytest.raises(ValueError, match="empty"):
        history_cells([])
