"""Noise on skip in the chain experiment (fairdarts_core.mechanism): the authors' way to blur skip's unfair
advantage (Fair DARTS Sec. 5). Its per-step schedule, that it changes a run only when on, never in eval
mode, that bad values fail in one line, that configs recorded before it existed still load, and the CLI."""
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fairdarts_core import cli, runs
from fairdarts_core.mechanism import ChainConfig, MixedChain, run_chain, skip_noise_std

DEBIAN_OK = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()
needs_data = pytest.mark.skipif(not DEBIAN_OK, reason="Fashion-MNIST (dataset-fashion-mnist) is not installed")

TINY = dict(depth=2, channels=4, steps=6, record_every=2, subset=200, batch_size=16)


def tiny(**kw) -> ChainConfig:
    return ChainConfig(**{**TINY, **kw})


# --- the schedule -------------------------------------------------------------------------------------------------
def test_the_std_decays_along_a_cosine_from_1_to_0_at_noise_steps():
    cfg = ChainConfig(steps=500, skip_noise=True, noise_steps=100)
    assert skip_noise_std(0, cfg) == 1.0
    assert math.isclose(skip_noise_std(50, cfg), 0.5, abs_tol=1e-12)
    assert math.isclose(skip_noise_std(25, cfg), 0.5 * (1 + math.cos(math.pi / 4)))
    assert skip_noise_std(100, cfg) == 0.0 and skip_noise_std(499, cfg) == 0.0
    stds = [skip_noise_std(t, cfg) for t in range(100)]
    assert all(a > b > 0 for a, b in zip(stds, stds[1:]))


def test_the_std_decays_over_the_whole_run_by_default_and_is_0_when_off():
    cfg = ChainConfig(steps=40, skip_noise=True)
    assert (skip_noise_std(0, cfg), skip_noise_std(40, cfg)) == (1.0, 0.0)
    assert math.isclose(skip_noise_std(20, cfg), 0.5, abs_tol=1e-12)
    off = ChainConfig(steps=40, noise_steps=10)
    assert [skip_noise_std(t, off) for t in (0, 5, 10, 39)] == [0.0] * 4


# --- the model ----------------------------------------------------------------------------------------------------
def _chain_model(std: float) -> MixedChain:
    torch.manual_seed(0)
    model = MixedChain(ChainConfig(depth=3, channels=4), in_channels=1, num_classes=10)
    model.skip_noise_std = std
    return model


def test_the_noise_reaches_the_output_in_training_mode_only():
    x = torch.randn(4, 1, 8, 8)
    clean, noisy = _chain_model(0.0), _chain_model(1.0)
    clean.eval(), noisy.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        assert torch.equal(clean(x), noisy(x))  # eval mode: never noise
        state = torch.get_rng_state()
        noisy(x)
        assert torch.equal(torch.get_rng_state(), state)  # ... and no random number drawn
    clean.train(), noisy.train()
    with torch.no_grad():
        torch.manual_seed(2)
        a = clean(x)
        torch.manual_seed(2)
        b = noisy(x)
    assert not torch.allclose(a, b)


def test_the_noise_is_added_to_skip_before_its_weight_multiplies_it():
    """With skip's weight 0 (sigmoid of a very negative alpha) the noise cannot reach the output."""
    torch.manual_seed(0)
    model = MixedChain(ChainConfig(depth=2, channels=4, relaxation="sigmoid"), in_channels=1, num_classes=10)
    with torch.no_grad():
        model.alpha[:, 0] = -1e4  # skip_connect's column
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        clean = model(x)
        model.skip_noise_std = 5.0
        assert torch.equal(model(x), clean)


# --- runs ---------------------------------------------------------------------------------------------------------
@needs_data
def test_noise_changes_a_run_only_when_on():
    base = run_chain(tiny())
    again = run_chain(tiny(noise_steps=3))  # noise_steps without skip_noise: no noise, no random number drawn
    noisy = run_chain(tiny(skip_noise=True))
    strip = lambda r: [{k: v for k, v in rec.items() if k != "seconds"} for rec in r["records"]]
    assert strip(again) == strip(base)
    assert "skip_noise_std" not in base["records"][0]
    assert not np.allclose(noisy["records"][-1]["weights"], base["records"][-1]["weights"], atol=1e-7)
    cfg = tiny(skip_noise=True)
    assert [r["skip_noise_std"] for r in noisy["records"]] == [skip_noise_std(r["step"] - 1, cfg)
                                                               for r in noisy["records"]]
    assert noisy["config"]["skip_noise"] is True and noisy["config"]["noise_steps"] is None


@needs_data
def test_a_noisy_run_is_reproducible():
    cfg = tiny(skip_noise=True, noise_steps=4, steps=4)
    a, b = run_chain(cfg), run_chain(cfg)
    assert [r["weights"] for r in a["records"]] == [r["weights"] for r in b["records"]]


# --- configs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, message", [(dict(skip_noise="yes"), "skip_noise must be true or false"),
                                         (dict(skip_noise=1), "skip_noise must be true or false"),
                                         (dict(noise_steps=0), "noise_steps must be an integer >= 1"),
                                         (dict(noise_steps=2.5), "noise_steps must be an integer >= 1"),
                                         (dict(noise_steps=True), "noise_steps must be an integer >= 1")])
def test_bad_noise_values_are_refused_in_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        ChainConfig(**kw)
    assert "\n" not in str(e.value)


def test_a_config_recorded_before_noise_on_skip_loads_without_noise():
    recorded = asdict(ChainConfig(depth=4))
    del recorded["skip_noise"], recorded["noise_steps"]
    cfg = ChainConfig.from_dict(recorded)
    assert (cfg.skip_noise, cfg.noise_steps) == (False, None) and cfg == ChainConfig(depth=4)
    assert ChainConfig.from_dict(asdict(replace(cfg, skip_noise=True, noise_steps=7))).noise_steps == 7


def test_the_recorded_grid_still_loads():
    path = Path(__file__).resolve().parent.parent / "data" / "runs" / "mechanism" / "d4_softmax_s0.json"
    if not path.is_file():
        pytest.skip("the recorded mechanism grid is not in this checkout")
    cfg = ChainConfig.from_dict(runs.load_mechanism_run(path)["config"])
    assert cfg.skip_noise is False and cfg.noise_steps is None


# --- the command line ---------------------------------------------------------------------------------------------
def _parsed(*argv):
    return cli.build_parser().parse_args([str(a) for a in argv])


def test_the_cli_flags_build_the_config():
    assert cli.mechanism_config(_parsed("mechanism")).skip_noise is False
    cfg = cli.mechanism_config(_parsed("mechanism", "--skip-noise", "--noise-steps", "200"))
    assert (cfg.skip_noise, cfg.noise_steps) == (True, 200)
    assert cli.mechanism_config(_parsed("mechanism", "--set", "skip_noise=true")).skip_noise is True
    with pytest.raises(ValueError, match="--noise-steps needs --skip-noise"):
        cli.mechanism_config(_parsed("mechanism", "--noise-steps", "200"))


@needs_data
def test_the_cli_records_noise_on_skip(tmp_path, capsys):
    out = tmp_path / "chain.json"
    threads = torch.get_num_threads()
    try:
        rc = cli.main(["mechanism", "--depth", "2", "--steps", "4", "--subset", "200", "--skip-noise",
                       "--noise-steps", "3", "--set", "channels=4", "--set", "batch_size=16", "--set",
                       "record_every=2", "--out", str(out), "--json"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["depth"] == 2
    run = json.loads(out.read_text())
    assert run["config"]["skip_noise"] is True and run["config"]["noise_steps"] == 3
    assert "--skip-noise" in run["provenance"]["command"]
    assert np.allclose([r["skip_noise_std"] for r in run["records"]], [0.75, 0.0], rtol=0, atol=1e-12)
