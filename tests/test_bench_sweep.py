"""``fairdarts bench sweep``: the search step at several shapes, its recorded report and the figure drawn from it.
(Correctness of what is reported and drawn; the speed itself is measured, not tested.)"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import List, Tuple

import matplotlib
import pytest

from fairdarts_core import bench, viz
from fairdarts_core.cli import main

matplotlib.use("Agg")

TINY = ((2, 4, 3, 8, 1), (3, 2, 3, 4, 3))
ROOT = Path(__file__).resolve().parent.parent


def test_sweep_measures_every_shape_in_order():
    r = bench.sweep_report(bench.BenchSpec(threads=1), TINY, repeat=1, warmup=0, memory=False)
    assert [tuple(row["shape"][k] for k in ("batch", "channels", "layers", "resolution", "in_channels"))
            for row in r["rows"]] == list(TINY)
    for row in r["rows"]:
        assert row["reference_ms"] > 0 and row["fast_ms"] > 0
        assert row["speedup"] == pytest.approx(row["reference_ms"] / row["fast_ms"], abs=0.01)
        assert "memory_ratio" not in row
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", r["date"]) and r["threads"] == 1 and r["repeat"] == 1
    text = bench.format_sweep_report(r)
    assert "8x8x1" in text and "4x4x3" in text and len(text.splitlines()) == 2 + len(TINY)


def test_sweep_command_writes_one_json_report(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "SWEEP_SHAPES", TINY[:1])
    rc = main(["bench", "sweep", "--repeat", "1", "--warmup", "0", "--threads", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["rows"]) == 1 and r["rows"][0]["shape"]["channels"] == 4
    assert r["rows"][0]["memory_ratio"] == pytest.approx(
        r["rows"][0]["fast_peak_mb"] / r["rows"][0]["reference_peak_mb"], abs=1e-3)
    (tmp_path / "sweep.json").write_text(json.dumps(r))
    assert bench.load_sweep(tmp_path / "sweep.json") == r


def test_load_sweep_refuses_what_is_not_a_sweep(tmp_path):
    with pytest.raises(FileNotFoundError, match="fairdarts bench sweep --json"):
        bench.load_sweep(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not a JSON report"):
        bench.load_sweep(bad)
    bad.write_text(json.dumps({"rows": [{"shape": {}, "fast_ms": 1.0}]}))
    with pytest.raises(ValueError, match="needs rows with shape, reference_ms, fast_ms, speedup"):
        bench.load_sweep(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="is not a report"):
        bench.load_sweep(bad)


def test_the_recorded_cpu_sweep_is_consistent():
    """The report the benchmarks page draws: the sweep's shapes in order, each ratio its two numbers'."""
    r = bench.load_sweep()
    shapes = [tuple(row["shape"][k] for k in ("batch", "channels", "layers", "resolution", "in_channels"))
              for row in r["rows"]]
    assert shapes == list(bench.SWEEP_SHAPES)
    defaults = bench._options(bench.BenchSpec())
    for row in r["rows"]:
        assert row["speedup"] == pytest.approx(row["reference_ms"] / row["fast_ms"], abs=0.01)
        assert row["memory_ratio"] == pytest.approx(row["fast_peak_mb"] / row["reference_peak_mb"], abs=1e-3)
        assert row["repeat"] >= 3 and len(row["fast_all_ms"]) == row["repeat"]
        # the defaults, as far as they existed then (options added since: their first recording is newer)
        assert row["options"] == {k: defaults[k] for k in row["options"]}
        assert set(defaults) - set(row["options"]) <= {"split_grad", "wide_norm"}
    assert r["machine"] and r["date"]


def test_speedup_figure_draws_each_row():
    rows = [{"shape": {"batch": 64, "channels": 16, "layers": 8, "resolution": 32, "in_channels": 3},
             "reference_ms": 300.0, "fast_ms": 100.0, "speedup": 3.0, "memory_ratio": 0.4},
            {"shape": {"batch": 32, "channels": 8, "layers": 5, "resolution": 16, "in_channels": 1},
             "reference_ms": 150.0, "fast_ms": 100.0, "speedup": 1.5}]  # no memory measured
    fig, axes = viz.plot_speedup_by_shape({"rows": rows, "machine": "m", "threads": 2, "date": "2026-01-01"})
    speed = [p.get_width() for p in axes[0].patches]
    assert speed == [3.0, 1.5]
    memory = [p.get_width() for p in axes[1].patches]
    assert memory[0] == 0.4 and memory[1] != memory[1]  # NaN: not measured, no bar
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == ["64 x 16 x 8, 32x32x3", "32 x 8 x 5, 16x16x1"]
    with pytest.raises(ValueError, match="no rows"):
        viz.plot_speedup_by_shape({"rows": []})


def _page_tables() -> Tuple[List[List[str]], List[List[str]]]:
    """The benchmarks page's result rows (date first) and its rows of timed steps (two lists of steps last)."""
    page = json.loads((ROOT / "book" / "benchmarks.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in page["cells"] if c["cell_type"] == "markdown")
    rows = [[c.strip().strip("*") for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ")]
    results = [r for r in rows if re.fullmatch(r"\d{4}-\d\d-\d\d", r[0])]
    steps = [r for r in rows if len(r) >= 3 and all(re.fullmatch(r"[\d.]+(, [\d.]+)+", c) for c in r[-2:])]
    return results, steps


def test_the_benchmarks_pages_ratios_are_those_of_its_numbers():
    """Every CPU result on the benchmarks page: its speedup is its reference over its fast time, its memory
    ratio its fast peak over its reference peak, and every list of timed steps has its median in a row."""
    results, steps = _page_tables()
    assert len(results) >= 10 and len(steps) >= 10
    medians = set()
    for row in results:
        ref, fast, speedup, ref_peak, fast_peak, ratio = (float(c) for c in row[-6:])
        assert speedup == pytest.approx(ref / fast, abs=0.01), row
        assert ratio == pytest.approx(fast_peak / ref_peak, abs=0.01), row
        medians.add((round(ref), round(fast)))
    for row in steps:
        ref, fast = (statistics.median(float(v) for v in c.split(", ")) for c in row[-2:])
        assert any(abs(ref - r) <= 1 and abs(fast - f) <= 1 for r, f in medians), row
