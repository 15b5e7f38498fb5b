"""Relaxations (softmax, sigmoid) and the zero-one loss, on hand-computed inputs."""
import pytest
import torch

from fairdarts_core.relax import RELAXATIONS, relax, sigmoid, softmax, zero_one_loss


def test_softmax_rows_sum_to_one():
    alpha = torch.randn(14, 8)
    w = softmax(alpha)
    assert w.shape == (14, 8)
    assert torch.allclose(w.sum(dim=1), torch.ones(14))
    assert torch.equal(relax(alpha, "softmax"), w)


def test_sigmoid_is_independent_per_op():
    alpha = torch.zeros(14, 7)
    w0 = sigmoid(alpha)
    assert torch.equal(w0, torch.full((14, 7), 0.5))  # alpha = 0: every op starts at 0.5
    alpha[3, 2] = 4.0
    w1 = relax(alpha, "sigmoid")
    changed = (w1 != w0).nonzero().tolist()
    assert changed == [[3, 2]]  # raising one op's alpha leaves every other weight alone
    assert w1[3, 2] == pytest.approx(1 / (1 + torch.exp(torch.tensor(-4.0)).item()))
    # softmax, in contrast, takes the same gain from the row's other ops: an exclusive competition
    s0, s1 = softmax(torch.zeros(14, 7)), softmax(alpha)
    assert (s1[3] < s0[3]).sum() == 6 and (s1[[0, 1, 2]] == s0[[0, 1, 2]]).all()


def test_unknown_relaxation():
    assert set(RELAXATIONS) == {"softmax", "sigmoid"}
    with pytest.raises(ValueError, match="unknown relaxation 'gumbel'"):
        relax(torch.zeros(2, 2), "gumbel")


@pytest.mark.parametrize("kind, all_binary", [("l2", -0.25), ("l1", -0.5)])
def test_zero_one_loss_extremes(kind, all_binary):
    assert zero_one_loss(torch.full((14, 7), 0.5), kind).item() == 0.0  # its maximum
    binary = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    assert zero_one_loss(binary, kind).item() == pytest.approx(all_binary)  # its minimum


def test_zero_one_loss_hand_computed():
    w = torch.tensor([0.1, 0.5, 0.9, 1.0])  # w - 0.5 = -0.4, 0, 0.4, 0.5
    assert zero_one_loss(w).item() == pytest.approx(-(0.16 + 0 + 0.16 + 0.25) / 4)  # default: l2
    assert zero_one_loss(w, "l1").item() == pytest.approx(-(0.4 + 0 + 0.4 + 0.5) / 4)


def test_zero_one_loss_pools_a_list_into_one_mean():
    a = torch.zeros(2, 2)        # 4 entries, (w - 0.5)^2 = 0.25 each
    b = torch.full((1, 2), 0.5)  # 2 entries, 0 each
    # one mean over all 6 entries (-1/6), not the mean of the two means (-0.125)
    assert zero_one_loss([a, b]).item() == pytest.approx(-1 / 6)
    assert zero_one_loss((a, b), "l1").item() == pytest.approx(-2 / 6)


def test_zero_one_loss_gradient_pushes_away_from_half():
    alpha = torch.tensor([0.3, -0.3], requires_grad=True)  # sigmoid just above / below 0.5
    zero_one_loss(sigmoid(alpha)).backward()
    # gradient descent moves alpha against its gradient: up for the first, down for the second
    assert alpha.grad[0] < 0 < alpha.grad[1]


def test_zero_one_loss_bad_kind():
    with pytest.raises(ValueError, match="unknown zero-one loss kind 'l3'"):
        zero_one_loss(torch.zeros(3), "l3")
