"""The `fairdarts` command: parse, flops, plot. Success and error paths.

The first tests run the command as a new user would, in a subprocess (`python -m fairdarts_core`); the
rest call ``cli.main`` in-process (a subprocess costs seconds of torch import each) and check the same
promise: bad input ends with exit code 2 and one line on stderr, never a traceback.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fairdarts_core import cli
from fairdarts_core.genotype import Genotype, edge_index
from fairdarts_core.ops import DARTS_OPS, FAIR_DARTS_OPS

FAIR = list(FAIR_DARTS_OPS)


def run_cli(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}  # tiny work: one thread is fastest
    return subprocess.run([sys.executable, "-m", "fairdarts_core", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_one_line_error(stderr: str, command: str, *words: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"fairdarts {command}: error: "), stderr
    for w in words:
        assert w in lines[0], (w, stderr)


def weights(entries: dict, primitives=FAIR, fill: float = 0.05) -> np.ndarray:
    """(14, n_ops) matrix; ``entries``: {(to, from): {op: weight}}."""
    W = np.full((14, len(primitives)), fill)
    rows = edge_index()
    for (to, src), ops in entries.items():
        for op, w in ops.items():
            W[rows.index((to, src)), list(primitives).index(op)] = w
    return W


# Hand-derived (threshold_sparse, 0.85): normal node 2 <- sep_conv_3x3(1), skip_connect(0); node 3 <- nothing;
# node 4 <- max_pool_3x3(3) only, so it is isolated too; node 5 <- dil_conv_5x5(0) (its 2nd edge is 0.5).
NORMAL = weights({(2, 0): {"skip_connect": 0.9}, (2, 1): {"sep_conv_3x3": 0.97}, (4, 3): {"max_pool_3x3": 0.9},
                  (5, 0): {"dil_conv_5x5": 0.86}, (5, 2): {"avg_pool_3x3": 0.5}})
REDUCE = weights({(2, 0): {"max_pool_3x3": 0.99}, (3, 1): {"sep_conv_5x5": 0.85}})
EXPECTED_NORMAL = [["sep_conv_3x3", 2, 1], ["skip_connect", 2, 0], ["max_pool_3x3", 4, 3], ["dil_conv_5x5", 5, 0]]
EXPECTED_REDUCE = [["max_pool_3x3", 2, 0], ["sep_conv_5x5", 3, 1]]


@pytest.fixture
def npy(tmp_path):
    np.save(tmp_path / "N.npy", NORMAL)
    np.save(tmp_path / "R.npy", REDUCE)
    return tmp_path


def call(capsys, *args):
    """In-process ``fairdarts ARGS``: (exit code, stdout, stderr)."""
    rc = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def refused(capsys, monkeypatch, folder, make, command, args, words) -> None:
    """In ``folder`` (after ``make(folder)``), ``fairdarts COMMAND ARGS`` exits 2 with one line holding ``words``."""
    monkeypatch.chdir(folder)
    if make:
        make(folder)
    rc, out, err = call(capsys, command, *args)
    assert rc == 2 and out == ""
    assert_one_line_error(err, command, *words)


# --- as a user would: subprocesses ------------------------------------------------------------------------

def test_help_lists_the_commands(tmp_path):
    script = Path(sys.executable).parent / "fairdarts"  # the console script of the editable install
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "fairdarts_core"]
    r = subprocess.run(argv + ["--help"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0
    for name in ("parse", "flops", "plot"):
        assert name in r.stdout


def test_flops_json_subprocess(tmp_path):
    pytest.importorskip("fairdarts_core.analysis")
    r = run_cli("flops", "--arch", "FairDARTS_a", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # exactly one JSON object
    assert set(out) == {"arch", "flops", "params", "params_with_aux", "published"}
    assert out["arch"] == "FairDARTS_a" and out["published"]["flops_M"] == 373
    assert all(isinstance(out[k], int) for k in ("flops", "params", "params_with_aux"))
    assert 0 < out["params"] < out["params_with_aux"]
    assert abs(out["flops"] / 1e6 - 373) / 373 < 0.05  # the analysis tests check the 1% claim


def test_plot_and_parse_subprocess(npy):
    r = run_cli("plot", "--arch", "FairDARTS_a", "--out", "a.svg", cwd=npy)
    assert r.returncode == 0, r.stderr
    assert "<svg" in (npy / "a.svg").read_text()
    r = run_cli("parse", "--normal", "N.npy", "--reduce", "R.npy", cwd=npy)
    assert r.returncode == 0, r.stderr
    assert "node 2 <- sep_conv_3x3(1), skip_connect(0)" in r.stdout


@pytest.mark.parametrize("args, command", [
    (("flops", "--arch", "FairDARTS_z"), "flops"),
    (("parse", "--normal", "bad.npy", "--reduce", "R.npy"), "parse"),
])
def test_errors_subprocess(npy, args, command):
    np.save(npy / "bad.npy", np.zeros((13, 7)))  # wrong matrix shape
    r = run_cli(*args, cwd=npy)
    assert r.returncode == 2 and r.stdout == ""
    assert_one_line_error(r.stderr, command)


# --- parse ------------------------------------------------------------------------------------------------

def test_parse_text(npy, capsys):
    rc, out, err = call(capsys, "parse", "--normal", npy / "N.npy", "--reduce", npy / "R.npy")
    assert rc == 0 and err == ""
    assert "genotype by threshold_sparse (threshold 0.85)" in out
    assert "normal cell: 3 live edges, live nodes [2, 5], 1 skip_connect" in out
    assert "node 3 <- nothing   [isolated: dropped]" in out
    assert "node 4 <- max_pool_3x3(3) [from an isolated node: dropped]   [isolated: dropped]" in out
    assert "reduction cell: 2 live edges, live nodes [2, 3], 0 skip_connect" in out


def test_parse_json_and_out(npy, capsys):
    rc, out, _ = call(capsys, "parse", "--normal", npy / "N.npy", "--reduce", npy / "R.npy", "--json",
                      "--out", npy / "g.json")
    assert rc == 0
    payload = json.loads(out)
    assert payload == {"normal": EXPECTED_NORMAL, "reduce": EXPECTED_REDUCE, "method": "threshold_sparse",
                       "threshold": 0.85, "primitives": FAIR}
    assert Genotype.load(npy / "g.json").to_dict() == {"normal": EXPECTED_NORMAL, "reduce": EXPECTED_REDUCE}


def test_parse_method_and_threshold(npy, capsys):
    rc, out, _ = call(capsys, "parse", "--normal", npy / "N.npy", "--reduce", npy / "R.npy", "--json",
                      "--threshold", "0.9")
    assert json.loads(out)["normal"] == [["sep_conv_3x3", 2, 1], ["skip_connect", 2, 0], ["max_pool_3x3", 4, 3]]
    rc, out, _ = call(capsys, "parse", "--normal", npy / "N.npy", "--reduce", npy / "R.npy", "--json",
                      "--method", "darts")
    payload = json.loads(out)
    assert payload["method"] == "darts" and len(payload["normal"]) == 8


def test_parse_run_dir_infers_darts_ops_and_softmax(tmp_path, capsys):
    # 8 columns, rows summing to 1, no config.json: the DARTS op set and the darts rule
    rng = np.random.default_rng(0)
    for kind in ("normal", "reduce"):
        a = rng.normal(size=(14, 8))
        a[:, 0] += 5  # 'none' dominates every edge, as in a collapsed DARTS search; darts never picks it
        np.save(tmp_path / f"{kind}_weight.npy", np.exp(a) / np.exp(a).sum(1, keepdims=True))
    rc, out, _ = call(capsys, "parse", tmp_path, "--json")
    payload = json.loads(out)
    assert rc == 0 and payload["method"] == "darts" and payload["primitives"] == list(DARTS_OPS)
    assert len(payload["normal"]) == 8 and all(op != "none" for op, _, _ in payload["normal"])


def test_parse_run_dir_reads_config(tmp_path, capsys):
    # config.json from the search engine: primitives (possibly nested) and the relaxation
    np.save(tmp_path / "normal_weight.npy", NORMAL)
    np.save(tmp_path / "reduce_weight.npy", REDUCE)
    (tmp_path / "config.json").write_text(json.dumps({"supernet": {"primitives": FAIR, "relaxation": "softmax"}}))
    rc, out, _ = call(capsys, "parse", tmp_path, "--json")
    assert rc == 0 and json.loads(out)["method"] == "darts"  # the softmax relaxation's rule
    (tmp_path / "config.json").write_text(json.dumps({"primitives": "darts"}))
    rc, _, err = call(capsys, "parse", tmp_path)
    assert rc == 2
    assert_one_line_error(err, "parse", "7 columns", "8 ops")


@pytest.mark.parametrize("make, args, words", [
    (None, (), ["RUN_DIR", "--normal"]),
    (None, ("--normal", "N.npy"), ["both --normal"]),
    (None, ("run", "--normal", "N.npy"), ["not both"]),
    (None, ("nowhere",), ["run directory not found"]),
    (lambda d: (d / "empty").mkdir(), ("empty",), ["weight file not found", "normal_weight.npy"]),
    (None, ("--normal", "missing.npy", "--reduce", "R.npy"), ["not found", "missing.npy"]),
    (lambda d: np.save(d / "bad.npy", np.zeros((13, 7))), ("--normal", "bad.npy", "--reduce", "bad.npy"),
     ["bad.npy", "edge count"]),
    (lambda d: np.save(d / "bad.npy", np.zeros((14, 6))), ("--normal", "bad.npy", "--reduce", "bad.npy"),
     ["6 columns", "--primitives"]),
    (lambda d: np.save(d / "bad.npy", np.zeros((14, 8))), ("--normal", "N.npy", "--reduce", "bad.npy"),
     ["shape (14, 7)", "shape (14, 8)"]),
    (None, ("--normal", "N.npy", "--reduce", "R.npy", "--primitives", "darts"), ["7 columns", "8 ops"]),
    (lambda d: (d / "bad.npy").write_text("0.1 0.2\n"), ("--normal", "bad.npy", "--reduce", "R.npy"),
     ["not a .npy array"]),
    (lambda d: np.save(d / "bad.npy", np.zeros(14)), ("--normal", "bad.npy", "--reduce", "R.npy"), ["2-D"]),
    (lambda d: np.save(d / "bad.npy", np.full((14, 7), np.nan)), ("--normal", "bad.npy", "--reduce", "R.npy"),
     ["NaN"]),
    (lambda d: np.savez(d / "bad.npz", a=np.zeros((14, 7))), ("--normal", "bad.npz", "--reduce", "R.npy"),
     [".npz"]),
    (None, ("--normal", "N.npy", "--reduce", "R.npy", "--threshold", "1.5"), ["--threshold"]),
    (None, ("--normal", "N.npy", "--reduce", "R.npy", "--out", "no/dir/g.json"), ["does not exist"]),
    (lambda d: (d / "adir").mkdir(), ("--normal", "N.npy", "--reduce", "R.npy", "--out", "adir"),
     ["Is a directory"]),
    (lambda d: ((d / "run").mkdir(), np.save(d / "run/normal_weight.npy", NORMAL),
                np.save(d / "run/reduce_weight.npy", REDUCE), (d / "run/config.json").write_text("{oops")),
     ("run",), ["config.json", "not valid JSON"]),
    (lambda d: ((d / "run").mkdir(), np.save(d / "run/normal_weight.npy", NORMAL),
                np.save(d / "run/reduce_weight.npy", REDUCE),
                (d / "run/config.json").write_text('{"primitives": ["conv_9x9"]}')),
     ("run",), ["unknown op 'conv_9x9'"]),
])
def test_parse_errors(npy, capsys, monkeypatch, make, args, words):
    refused(capsys, monkeypatch, npy, make, "parse", args, words)


# --- flops ------------------------------------------------------------------------------------------------

@pytest.fixture
def fake_profile(monkeypatch):
    """Skip the real count here (slow on a CPU; tests/test_analysis_flops.py checks it): fixed figures."""
    analysis = pytest.importorskip("fairdarts_core.analysis")
    calls = []

    def profile(genotype, channels, layers, num_classes, resolution):
        calls.append((genotype, channels, layers, num_classes, resolution))
        return {"flops": 371_570_000, "params": 2_360_000, "params_with_aux": 2_840_000}
    monkeypatch.setattr(analysis, "profile_genotype", profile)
    return calls


def test_flops_text_shows_published_side_by_side(capsys, fake_profile):
    from fairdarts_core import zoo
    rc, out, _ = call(capsys, "flops", "--arch", "FairDARTS_a")
    assert rc == 0
    assert fake_profile == [(zoo.get("FairDARTS_a"), 36, 20, 10, 32)]
    lines = out.splitlines()
    assert "36 channels, 20 cells" in lines[0]
    assert "371.57M" in lines[1] and "published 373M" in lines[1]
    assert "2.36M" in lines[2] and "published" not in lines[2]
    assert "2.84M" in lines[3] and "published 2.83M" in lines[3]  # the closer of our two counts


def test_flops_genotype_file_and_sizes(tmp_path, capsys, fake_profile):
    Genotype.from_dict({"normal": EXPECTED_NORMAL, "reduce": EXPECTED_REDUCE}).save(tmp_path / "g.json")
    rc, out, _ = call(capsys, "flops", "--genotype", tmp_path / "g.json", "--channels", "16", "--layers", "8",
                      "--json")
    payload = json.loads(out)
    assert rc == 0 and set(payload) == {"arch", "flops", "params", "params_with_aux"}  # no published figures
    assert fake_profile[0][1:3] == (16, 8)
    # a zoo cell at another size: its published figures (for 36 channels, 20 cells) are not shown
    rc, out, _ = call(capsys, "flops", "--arch", "FairDARTS_a", "--channels", "16", "--json")
    assert "published" not in json.loads(out)
    rc, out, _ = call(capsys, "flops", "--arch", "DARTS_V2")
    assert "also published: 528M" in out and "note:" in out


@pytest.mark.parametrize("make, args, words", [
    (None, ("--arch", "FairDARTS_z"), ["unknown architecture 'FairDARTS_z'", "FairDARTS_a"]),
    (None, ("--genotype", "missing.json"), ["missing.json", "no published cell, file or directory"]),
    (lambda d: (d / "g.json").write_text("{not json"), ("--genotype", "g.json"), ["not valid JSON"]),
    (lambda d: (d / "g.json").write_text('{"normal": [["conv_9x9", 2, 0]], "reduce": []}'),
     ("--genotype", "g.json"), ["unknown op 'conv_9x9'"]),
    (lambda d: (d / "g.json").write_text('{"normal": [["skip_connect", 3, 3]], "reduce": []}'),
     ("--genotype", "g.json"), ["fed by itself"]),
    (None, ("--arch", "FairDARTS_a", "--channels", "3"), ["--channels"]),
])
def test_flops_errors(tmp_path, capsys, monkeypatch, fake_profile, make, args, words):
    refused(capsys, monkeypatch, tmp_path, make, "flops", args, words)
    assert fake_profile == []


# --- plot -------------------------------------------------------------------------------------------------

def test_plot_one_cell(tmp_path, capsys):
    rc, out, _ = call(capsys, "plot", "--arch", "FairDARTS_a", "--cell", "normal", "--out", tmp_path / "n.svg",
                      "--json")
    assert rc == 0 and json.loads(out) == {"arch": "FairDARTS_a", "cell": "normal", "out": str(tmp_path / "n.svg")}
    svg = (tmp_path / "n.svg").read_text()
    assert "FairDARTS_a: normal cell" in svg and "reduction cell" not in svg
    rc, out, _ = call(capsys, "plot", "--arch", "FairDARTS_a", "--out", tmp_path / "both.png")
    assert rc == 0 and out.startswith("wrote ") and (tmp_path / "both.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, words", [
    (("--arch", "FairDARTS_a", "--out", "a.txt"), [".svg, .png or .pdf"]),
    (("--arch", "nope", "--out", "a.svg"), ["unknown architecture"]),
    (("--genotype", "missing.json", "--out", "a.svg"), ["missing.json", "no published cell, file or directory"]),
    (("--arch", "FairDARTS_a", "--out", "no/dir/a.svg"), ["does not exist"]),
])
def test_plot_errors(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    rc, out, err = call(capsys, "plot", *args)
    assert rc == 2 and out == ""
    assert_one_line_error(err, "plot", *words)


def test_plot_without_dot(tmp_path, capsys, monkeypatch):
    from fairdarts_core import viz
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    rc, _, err = call(capsys, "plot", "--arch", "FairDARTS_a", "--out", tmp_path / "a.svg")
    assert rc == 2
    assert_one_line_error(err, "plot", "apt-get install graphviz")


# --- the command's own promises: options declared once, one-line errors, KeyError is a bug ----------------

def options(command: str) -> set:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    return {s for a in sub.choices[command]._actions for s in a.option_strings}


def test_shared_run_options_are_declared_for_every_run_command():
    shared = {"--out", "--resume", "--json", "--set", "--threads", "--device"}
    assert shared <= options("search") and shared <= options("train")
    assert {"--out", "--json", "--set", "--threads"} <= options("mechanism")
    assert {"--json", "--threads", "--device"} <= options("evaluate") and "--resume" not in options("evaluate")
    assert {"--json", "--threads", "--device"} <= options("bench")
    assert {"--json", "--threads", "--device"} <= options("gap") and "--out" not in options("gap")
    for command in ("parse", "flops", "plot", "export"):
        assert "--json" in options(command)
    assert set(cli.COMMANDS) == {"search", "parse", "gap", "flops", "plot", "mechanism", "train", "evaluate", "export",
                                 "bench"}


def test_config_overrides_flags_beat_set_and_unset_flags_leave_the_preset():
    from fairdarts_core.presets import SearchConfig
    ns = cli.argparse.Namespace(set=["epochs=3", "lr=0.5"], epochs=None, threads=2, device=None, relaxation="softmax")
    assert cli.config_overrides(SearchConfig, ns, ("epochs", "relaxation")) == {
        "epochs": 3, "lr": 0.5, "threads": 2, "relaxation": "softmax"}
    ns.epochs = 7
    assert cli.config_overrides(SearchConfig, ns, ("epochs",))["epochs"] == 7


def test_help_in_process_returns_zero(capsys):
    assert cli.main(["--help"]) == 0 and "search" in capsys.readouterr().out
    assert cli.main([]) == 2


def test_key_error_is_a_bug_not_a_user_error(monkeypatch):
    def broken(args):
        raise KeyError("a bug")
    monkeypatch.setattr(cli, "run_parse", broken)
    with pytest.raises(KeyError):
        cli.main(["parse"])


@pytest.mark.parametrize("args, words", [
    (("evaluate", "--checkpoint", "c.pt", "--arch", "FairDARTS_a", "--batch-size", "0"),
     ["--batch-size", "positive integer", "got 0"]),
    (("evaluate", "--checkpoint", "c.pt", "--arch", "FairDARTS_a", "--subset", "-5"),
     ["--subset", "positive integer", "got -5"]),
    (("evaluate", "--checkpoint", "c.pt", "--batch-size", "many"), ["--batch-size", "'many'"]),
    (("mechanism", "--depth", "0", "--out", "m.json"), ["--depth", "got 0"]),
    (("mechanism", "--steps", "0", "--out", "m.json"), ["--steps", "got 0"]),
    (("search", "--preset", "smoke", "--epochs", "0", "--out", "run"), ["--epochs"]),
    (("search", "--preset", "smoke", "--threads", "-1", "--out", "run"), ["--threads"]),
    (("train", "--arch", "FairDARTS_a", "--preset", "nope"), ["--preset", "invalid choice"]),
])
def test_bad_arguments_are_one_line_and_touch_nothing(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.pt").write_bytes(b"checkpoint bytes")
    (tmp_path / "m.json").write_text('{"earlier": "result"}')
    rc, out, err = call(capsys, *args)
    assert rc == 2 and out == ""
    assert_one_line_error(err, args[0], *words)
    assert (tmp_path / "c.pt").read_bytes() == b"checkpoint bytes"
    assert (tmp_path / "m.json").read_text() == '{"earlier": "result"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "m.json"]


def test_set_with_an_empty_primitives_list_is_one_line(tmp_path, capsys):
    rc, out, err = call(capsys, "search", "--preset", "smoke", "--set", "primitives=", "--out", tmp_path / "run")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "search", "primitives")
    assert not (tmp_path / "run").exists()


def test_resume_needs_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = call(capsys, "search", "--preset", "smoke", "--resume")
    assert rc == 2
    assert_one_line_error(err, "search", "--resume needs --out")
    assert list(tmp_path.iterdir()) == []


# --- genotypes that must be refused at once -------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ('{"normal": [], "reduce": [], "steps": 100000000}', ["g.json", "steps", "up to 15", "DARTS has 4"]),
    ("[" * 100000 + "]" * 100000, ["g.json", "nested too deeply"]),
    ('{"normal": [' + "[" * 100000 + "]" * 100000 + '], "reduce": []}', ["g.json", "nested too deeply"]),
])
@pytest.mark.parametrize("command", ["flops", "plot"])
def test_hostile_genotype_files_are_one_line(tmp_path, capsys, monkeypatch, fake_profile, text, words, command):
    import time
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.json").write_text(text)
    extra = ("--out", "g.svg") if command == "plot" else ()
    start = time.perf_counter()
    rc, out, err = call(capsys, command, "--genotype", "g.json", *extra)
    assert time.perf_counter() - start < 10  # refused at once: 10^8 nodes used to hang here
    assert rc == 2 and out == ""
    assert_one_line_error(err, command, *words)
    assert fake_profile == [] and not (tmp_path / "g.svg").exists()
    assert (tmp_path / "g.json").read_text() == text


# --- plot: a cell with no live node ------------------------------------------------------------------------

def test_plot_draws_a_cell_without_live_node_and_says_so(tmp_path, capsys):
    # normal cell: node 2 has no input, node 3 is fed by node 2 only; the reduction cell is fine
    Genotype((("skip_connect", 3, 2),), (("max_pool_3x3", 2, 0),)).save(tmp_path / "g.json")
    rc, out, err = call(capsys, "plot", "--genotype", tmp_path / "g.json", "--out", tmp_path / "g.svg", "--json")
    assert rc == 0
    payload = json.loads(out)
    assert payload["no_live_node"] == ["normal"] and payload["out"] == str(tmp_path / "g.svg")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairdarts plot: warning: the normal cell of ")
    assert "no live node" in lines[0] and "drawn anyway" in lines[0]
    assert "no live node" in (tmp_path / "g.svg").read_text()  # the drawing says so too
    # drawing only the reduction cell: nothing to warn about, and the JSON keys are the usual ones
    rc, out, err = call(capsys, "plot", "--genotype", tmp_path / "g.json", "--out", tmp_path / "r.svg",
                        "--cell", "reduce", "--json")
    assert rc == 0 and err == "" and set(json.loads(out)) == {"arch", "cell", "out"}


# --- parse: weights that are not relaxed weights -------------------------------------------------------------

@pytest.mark.parametrize("matrix, words", [
    (NORMAL + 0.1j, ["bad.npy", "complex"]),
    (NORMAL - 0.5, ["bad.npy", "[0, 1]", "-0.45"]),
    (NORMAL * 2, ["bad.npy", "[0, 1]", "1.94"]),
])
def test_parse_refuses_weights_that_are_not_relaxed(npy, capsys, monkeypatch, matrix, words):
    monkeypatch.chdir(npy)
    np.save(npy / "bad.npy", matrix)
    (npy / "g.json").write_text("earlier genotype")
    rc, out, err = call(capsys, "parse", "--normal", "bad.npy", "--reduce", "R.npy", "--out", "g.json")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "parse", *words)
    assert (npy / "g.json").read_text() == "earlier genotype"


def test_parse_config_json_nested_too_deeply(tmp_path, capsys):
    np.save(tmp_path / "normal_weight.npy", NORMAL)
    np.save(tmp_path / "reduce_weight.npy", REDUCE)
    (tmp_path / "config.json").write_text("[" * 100000 + "]" * 100000)
    rc, out, err = call(capsys, "parse", tmp_path)
    assert rc == 2 and out == ""
    assert_one_line_error(err, "parse", "config.json", "nested too deeply")


def test_flops_bounds_the_network(capsys, fake_profile):
    for args, word in ((("--channels", "100000000"), "--channels"), (("--layers", "100000"), "--layers")):
        rc, _, err = call(capsys, "flops", "--arch", "FairDARTS_a", *args)
        assert rc == 2
        assert_one_line_error(err, "flops", word, "[")
    assert fake_profile == []


def parsed(*argv):
    return cli.build_parser().parse_args([str(a) for a in argv])


def test_run_options_build_the_configs():
    cfg = cli.search_config(parsed("search", "--preset", "smoke", "--relaxation", "softmax", "--epochs", "3",
                                   "--threads", "2", "--device", "cpu", "--set", "lr=0.5"))
    assert (cfg.relaxation, cfg.parse_method, cfg.epochs, cfg.threads, cfg.device, cfg.lr) == (
        "softmax", None, 3, 2, "cpu", 0.5)
    cfg = cli.search_config(parsed("search", "--preset", "smoke", "--relaxation", "softmax",
                                   "--set", "parse_method=threshold_edge"))
    assert cfg.parse_method == "threshold_edge"  # --set names the rule: the relaxation does not reset it
    cfg = cli.train_config(parsed("train", "--arch", "FairDARTS_a", "--preset", "smoke", "--epochs", "2",
                                  "--threads", "3", "--set", "cutout=0"))
    assert (cfg.epochs, cfg.threads, cfg.cutout) == (2, 3, 0)


def test_mechanism_options_build_its_config():
    from fairdarts_core.mechanism import ChainConfig
    assert cli.mechanism_config(parsed("mechanism")) == ChainConfig()  # the flags' defaults are ChainConfig's
    cfg = cli.mechanism_config(parsed("mechanism", "--depth", "4", "--ops", "skip_connect, sep_conv_3x3",
                                      "--set", "channels=8", "--set", "steps=7", "--steps", "9"))
    assert (cfg.depth, cfg.ops, cfg.channels, cfg.steps) == (4, ("skip_connect", "sep_conv_3x3"), 8, 9)
    with pytest.raises(ValueError, match="depth"):
        cli.mechanism_config(parsed("mechanism", "--set", "depth=0"))  # --set is checked by ChainConfig


def test_under_torchrun_a_run_needs_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")  # each process would otherwise pick its own time-stamped directory
    rc, _, err = call(capsys, "train", "--arch", "FairDARTS_a", "--preset", "smoke")
    assert rc == 2
    assert_one_line_error(err, "train", "torchrun", "--out")
    assert list(tmp_path.iterdir()) == []
