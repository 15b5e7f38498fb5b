"""The optimisation steps (fairdarts_core.steps): one implementation shared by the search loop, the chain
experiment and the benchmark; DARTS's steps as written make the same updates."""
import copy

import pytest
import torch

from fairdarts_core import steps
from fairdarts_core.mechanism import ChainConfig, MixedChain
from fairdarts_core.supernet import Supernet, SupernetConfig


def _supernet():
    torch.manual_seed(0)
    return Supernet(SupernetConfig(channels=4, layers=3, in_channels=1, num_classes=10, relaxation="sigmoid",
                                   alpha_init_std=0.1, formulation="reference")).double()


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (6,), generator=g)


def _optimizers(model):
    return (torch.optim.SGD(model.network_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4),
            torch.optim.Adam(model.arch_parameters(), lr=0.01))


def test_the_steps_as_written_make_the_same_updates():
    zero_one = steps.ZeroOne(10.0)
    a, b = _supernet(), None
    b = copy.deepcopy(a)
    (wa, aa), (wb, ab) = _optimizers(a), _optimizers(b)
    for seed in range(2):
        steps.arch_step(a, _batch(seed), aa, zero_one)
        steps.arch_step_as_written(b, _batch(seed), ab, zero_one)
        steps.weight_step(a, _batch(seed + 10), wa, 5.0)
        steps.weight_step_as_written(b, _batch(seed + 10), wb, 5.0)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    assert all(p.grad is None for p in b.arch_parameters())


def test_the_chain_experiment_steps_with_the_search_steps():
    model = MixedChain(ChainConfig(depth=3, channels=4), in_channels=1, num_classes=10)
    w_opt = torch.optim.SGD(model.network_parameters(), lr=0.1)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=0.1)
    before = model.alpha.detach().clone()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    stats = steps.bilevel_step(model, (x, y), (x, y), w_opt, a_opt, steps.ZeroOne(), 5.0)
    assert set(stats) == {"train_loss_sum", "train_correct", "train_n", "val_loss_sum", "val_correct", "val_n"}
    assert not torch.equal(before, model.alpha)
    assert bool(steps.finite_flag(stats))


def test_the_zero_one_term_and_the_mode_are_checked():
    with pytest.raises(ValueError, match="choose l2 or l1"):
        steps.ZeroOne(1.0, "l3")
    with pytest.raises(ValueError, match=">= 0"):
        steps.ZeroOne(-1.0)
    with pytest.raises(ValueError, match="unknown search mode 'trilevel'"):
        steps.search_step("trilevel", None, None, None, None, None)
    assert set(steps.STEPS) == {"bilevel", "single", "second_order"}
