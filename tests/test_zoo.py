"""The zoo: 13 published cells, transcribed without error, with their published figures."""
import json
from pathlib import Path

import pytest

from fairdarts_core import zoo
from fairdarts_core.genotype import Genotype

# A copy of the reference file the zoo was transcribed from (the project never reads ../shared).
PUBLISHED = json.loads((Path(__file__).parent / "data" / "published_cells.json").read_text())["cells"]

EXPECTED_NAMES = ("FairDARTS_a", "FairDARTS_b", "FairDARTS_c", "FairDARTS_d", "FairDARTS_e", "FairDARTS_f",
                  "FairDARTS_g", "DARTS_V1", "DARTS_V2", "PC_DARTS", "P_DARTS", "GDAS", "SNAS")


def test_names():
    assert zoo.NAMES == EXPECTED_NAMES
    assert set(zoo.NAMES) == set(PUBLISHED)
    assert zoo.fair_darts_names() == list(EXPECTED_NAMES[:7])


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_cells_match_the_reference_file(name):
    ref = PUBLISHED[name]
    g = zoo.get(name)
    assert isinstance(g, Genotype)
    for kind in ("normal", "reduce"):
        if ref["format"] == "triples":
            expected = [tuple(e) for e in ref[kind]]
        else:  # two (op, from) entries per node 2..5, in node order
            expected = [(op, 2 + i // 2, src) for i, (op, src) in enumerate(ref[kind])]
        assert list(g.cell(kind)) == expected


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_published_figures(name):
    ref = PUBLISHED[name]["published"]
    pub = zoo.published(name)
    for key in ("flops_M", "params_M", "top1"):
        assert pub.get(key) == ref.get(key)
    if "note" in ref:
        assert ref["note"] in pub["note"]


def test_darts_v2_has_two_published_flops_figures():
    pub = zoo.published("DARTS_V2")
    assert pub["flops_M"] == 522 and pub["flops_M_alt"] == 528
    assert "522" in pub["note"] and "528" in pub["note"]


def test_darts_v1_has_no_figures():
    assert zoo.published("DARTS_V1") == {}


def test_published_returns_a_copy():
    zoo.published("FairDARTS_a")["flops_M"] = 0
    assert zoo.published("FairDARTS_a")["flops_M"] == 373


def test_isolated_nodes_as_published():
    # FairDARTS_a's normal cell: no entry reaches node 3, so only 2, 4, 5 are concatenated.
    assert zoo.get("FairDARTS_a").concat("normal") == [2, 4, 5]
    assert zoo.get("FairDARTS_a").concat("reduce") == [2, 3, 4, 5]
    # The DARTS-style cells give every node two inputs: nothing is isolated.
    for name in EXPECTED_NAMES[7:]:
        g = zoo.get(name)
        assert g.concat("normal") == g.concat("reduce") == [2, 3, 4, 5]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown architecture 'FairDARTS_z'") as e:
        zoo.get("FairDARTS_z")
    assert all(name in str(e.value) for name in EXPECTED_NAMES)
    with pytest.raises(ValueError, match="FairDARTS_a"):
        zoo.published("nope")


def test_all_genotypes_and_json_round_trip():
    cells = zoo.all_genotypes()
    assert list(cells) == list(EXPECTED_NAMES)
    for g in cells.values():
        assert Genotype.from_json(g.to_json()) == g


# --- resolve_arch: the one way a named architecture becomes a Genotype ----------------------------------

def test_resolve_arch_accepts_a_genotype_a_name_a_file_and_a_run_directory(tmp_path):
    g = zoo.get("FairDARTS_d")
    assert zoo.resolve_arch(g) is g
    assert zoo.resolve_arch("FairDARTS_d") == g
    g.save(tmp_path / "cell.json")
    assert zoo.resolve_arch(tmp_path / "cell.json") == g
    assert zoo.resolve_arch(str(tmp_path / "cell.json")) == g
    run = tmp_path / "run"
    run.mkdir()
    g.save(run / zoo.GENOTYPE_FILE)
    assert zoo.resolve_arch(run) == g and zoo.resolve_arch(str(run)) == g


def test_a_published_name_wins_over_a_file_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zoo.get("GDAS").save(tmp_path / "FairDARTS_a")
    assert zoo.resolve_arch("FairDARTS_a") == zoo.get("FairDARTS_a")
    assert zoo.resolve_arch("./FairDARTS_a") == zoo.get("GDAS")


def _one_line_error(arch) -> str:
    with pytest.raises(ValueError) as e:
        zoo.resolve_arch(arch)
    msg = str(e.value)
    assert "\n" not in msg and "a genotype JSON file, a search run directory" in msg and "NAS-Bench-201 string" in msg
    assert all(name in msg for name in EXPECTED_NAMES)
    return msg


def test_resolve_arch_errors_list_what_is_accepted(tmp_path):
    assert _one_line_error("nope").startswith("unknown architecture 'nope': no published cell, file or directory")
    assert "did you mean FairDARTS_a?" in _one_line_error("FairDarts_a")
    assert _one_line_error(tmp_path).startswith(f"{tmp_path} is a directory without genotype.json")
    assert "got NoneType None" in _one_line_error(None)
    assert "got int 3" in _one_line_error(3)
    assert "File name too long" in _one_line_error("x" * 5000)
    assert len(_one_line_error("y" * 5000)) < 600  # the name is shortened in the message


def test_a_bad_genotype_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": [["sep_conv_3x3", 2, 0]], "reduce": [["warp_drive", 2, 0]]}')
    with pytest.raises(ValueError) as e:
        zoo.resolve_arch(bad)
    assert "\n" not in str(e.value) and "warp_drive" in str(e.value)


def test_cell_overlap_counts_the_live_edges_in_common():
    a, b = zoo.get("FairDARTS_a"), zoo.get("FairDARTS_b")
    # a: sep3 2<-0, sep5 2<-1, max 4<-0, sep3 5<-0;  b: sep3 2<-0, sep3 2<-1, sep3 3<-1, dil3 4<-0, sep5 4<-1, dil5 5<-1
    assert zoo.cell_overlap(a, b) == {"edges": 4, "other_edges": 6, "same_edge": 3, "same_op": 1, "shared_ops": 3}
    assert zoo.cell_overlap(a, a, "reduce") == {"edges": 8, "other_edges": 8, "same_edge": 8, "same_op": 8, "shared_ops": 8}
    # an edge out of an isolated node is not computed, so it is not counted
    dangling = Genotype((("sep_conv_3x3", 2, 0), ("skip_connect", 4, 3)), a.reduce)
    assert zoo.cell_overlap(dangling, a)["edges"] == 1


def test_recurring_edges_and_ops_across_the_fair_darts_cells():
    fair = {name: zoo.get(name) for name in zoo.fair_darts_names()}
    rec = zoo.recurring(fair)
    assert rec["cells"] == 7 and rec["edges"]["2<-0"] == 7 and rec["ops"]["sep_conv_3x3"] == 7
    assert list(rec["edges"].values()) == sorted(rec["edges"].values(), reverse=True)
    assert all(1 <= n <= 7 for n in (*rec["edges"].values(), *rec["ops"].values()))
    assert "skip_connect" not in rec["ops"]  # the one skip of a normal cell (FairDARTS_c's 5<-3) leaves isolated node 3
