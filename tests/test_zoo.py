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
