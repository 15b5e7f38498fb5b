"""FLOPs and parameters of the zoo's evaluation networks, against the published figures.

The counting rule is fixed once (thop, one 32x32 image, eval mode, BatchNorm excluded) and never tuned;
these tests record how the count compares with what the authors published.
"""
import pytest
import torch
from torch import nn

from fairdarts_core import zoo
from fairdarts_core.analysis import (compare_with_published, count_flops, count_flops_torch, count_params,
                                     profile_genotype)
from fairdarts_core.network import NetworkCIFAR

WITH_FLOPS = [n for n in zoo.NAMES if zoo.published(n).get("flops_M")]

# Which of our two parameter counts each published params_M is closest to. The authors' table mixes
# them: most Fair DARTS figures include the auxiliary head, FairDARTS_c's and the other searches' do not.
# (This records what the published numbers are; the count itself is the same for every cell.)
PARAMS_MATCH = {
    "FairDARTS_a": "with_aux", "FairDARTS_b": "with_aux", "FairDARTS_c": "without_aux",
    "FairDARTS_d": "with_aux", "FairDARTS_e": "with_aux", "FairDARTS_f": "with_aux",
    "FairDARTS_g": "with_aux", "DARTS_V2": "without_aux", "PC_DARTS": "without_aux",
    "P_DARTS": "without_aux", "GDAS": "without_aux", "SNAS": "without_aux",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # single-image forwards: one thread is fastest on a shared machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def comparisons():
    """One profile per zoo cell, shared by the tests below (about a second each)."""
    return {name: compare_with_published(name) for name in zoo.NAMES}


def test_profile_keys_and_params():
    model = NetworkCIFAR(36, 10, 20, True, "FairDARTS_a")
    prof = profile_genotype(zoo.get("FairDARTS_a"))
    assert set(prof) == {"flops", "params", "params_with_aux"}
    assert all(isinstance(v, int) for v in prof.values())
    aux = sum(p.numel() for p in model.auxiliary_head.parameters())
    assert prof["params"] == count_params(model, with_aux=False) == count_params(model) - aux
    assert prof["params_with_aux"] == count_params(model)


def test_batchnorm_is_not_counted():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    assert count_flops(model, resolution=8) == 4 * 8 * 8 * (3 * 3 * 3)  # the conv's multiply-adds only


def test_counting_leaves_no_trace_in_the_model():
    model = NetworkCIFAR(C=8, layers=5, genotype="FairDARTS_b")
    keys = set(model.state_dict())
    count_flops(model)
    assert set(model.state_dict()) == keys  # no total_ops / total_params buffers left behind
    assert model.training  # mode restored
    assert not any(m._forward_hooks for m in model.modules())


def test_flops_do_not_depend_on_the_auxiliary_head():
    g = zoo.get("FairDARTS_e")
    with_aux = count_flops(NetworkCIFAR(C=8, layers=5, auxiliary=True, genotype=g))
    without = count_flops(NetworkCIFAR(C=8, layers=5, auxiliary=False, genotype=g))
    assert with_aux == without  # eval mode: the head does not run


@pytest.mark.parametrize("name", [n for n in WITH_FLOPS if n != "DARTS_V2"])
def test_flops_within_one_percent_of_published(comparisons, name):
    c = comparisons[name]
    assert abs(c["flops_rel_error"]) < 0.01, c


def test_darts_v2_matches_the_figure_beside_the_genotype(comparisons):
    """DARTS_V2 is published twice: 522M in the authors' README table, 528M in the comment beside the
    genotype in their code. The same counting that matches every other cell gives 528M: the table's 522M
    is the outlier (about 1.2% below the count)."""
    c = comparisons["DARTS_V2"]
    assert c["published_flops_M"] == 522 and c["published_flops_M_alt"] == 528
    assert abs(c["flops_rel_error_alt"]) < 0.01
    assert abs(c["flops_rel_error"]) > 0.01


@pytest.mark.parametrize("name", sorted(PARAMS_MATCH))
def test_published_params_match_one_of_our_counts(comparisons, name):
    c = comparisons[name]
    assert c["params_match"] == PARAMS_MATCH[name]
    assert abs(c["params_rel_error"]) < 0.01, c  # and the match is close, not merely the nearer of two


def test_cell_without_published_figures(comparisons):
    c = comparisons["DARTS_V1"]
    assert c["flops_rel_error"] is None and c["params_match"] is None
    assert c["flops_M"] > 0 and c["params_with_aux_M"] > c["params_M"] > 0


def test_aux_head_params_are_the_same_for_every_cell(comparisons):
    # The head sees 4 * 144 = 576 channels after the second reduction cell in all zoo cells.
    diffs = {round(c["params_with_aux_M"] - c["params_M"], 6) for c in comparisons.values()}
    assert len(diffs) == 1


def test_torch_counts_two_flops_per_multiply_add_and_nothing_else():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2))
    macs = 4 * 8 * 8 * (3 * 3 * 3)
    assert count_flops_torch(conv, resolution=8) == 2 * macs      # BN, ReLU and the pool count nothing
    assert count_flops(conv, resolution=8) == macs + 4 * 4 * 4    # thop: one per pooled output element
    assert conv.training  # mode restored


TORCH_TOLERANCE = 1e-3
"""FlopCounterMode / 2 against thop on the zoo's CIFAR networks: thop also counts the average pools' output
elements (a few hundred thousand of 370 to 560 million), so torch's half count lies just below, within 0.1 %."""


@pytest.mark.parametrize("name", zoo.NAMES)
def test_torch_flop_counter_agrees_with_thop_on_the_zoo(name):
    model = NetworkCIFAR(36, 10, 20, auxiliary=True, genotype=zoo.get(name))
    thop_macs, torch_flops = count_flops(model), count_flops_torch(model)
    assert thop_macs * (1 - TORCH_TOLERANCE) <= torch_flops / 2 <= thop_macs
