"""The collapse indicator of RobustDARTS: the dominant Hessian eigenvalue of the validation loss w.r.t.
alpha, by power iteration on Hessian-vector products, against the exact Hessian of tiny supernets."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fairdarts_core.analysis import hessian_eigenvalue
from fairdarts_core.nb201 import NB201Config, NB201Supernet
from fairdarts_core.supernet import Supernet, SupernetConfig


def exact_hessian(model, x, y):
    """The full Hessian of the cross-entropy w.r.t. every architecture matrix, flattened and joined."""
    names = [n for n, p in model.named_parameters() if any(p is a for a in model.arch_parameters())]
    shapes = [p.shape for p in model.arch_parameters()]
    sizes = [int(np.prod(s)) for s in shapes]

    def loss(flat):
        parts = torch.split(flat, sizes)
        params = {n: part.view(s) for n, part, s in zip(names, parts, shapes)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    flat = torch.cat([p.detach().flatten() for p in model.arch_parameters()])
    return torch.autograd.functional.hessian(loss, flat)


def tiny_models():
    torch.manual_seed(0)
    nb = NB201Supernet(NB201Config(channels=4, cells_per_stage=1, in_channels=1, num_classes=3, alpha_init_std=1.0))
    darts = Supernet(SupernetConfig(channels=4, layers=3, steps=2, multiplier=2, stem_multiplier=1, in_channels=1,
                                    num_classes=3, relaxation="softmax", alpha_init_std=1.0))
    return {"nb201": nb, "darts": darts}


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_power_iteration_finds_the_exact_dominant_eigenvalue(space):
    model = tiny_models()[space].double().eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)
    eig = np.linalg.eigvalsh(exact_hessian(model, x, y).numpy())
    dominant = eig[np.argmax(np.abs(eig))]
    got = hessian_eigenvalue(model, x, y, iterations=2000, tol=1e-12)
    assert got == pytest.approx(dominant, rel=1e-6), (got, eig[:3], eig[-3:])


def test_the_model_comes_back_unchanged():
    model = tiny_models()["nb201"].train()
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    value = hessian_eigenvalue(model, x, y, iterations=5)
    assert np.isfinite(value) and model.training
    assert torch.equal(torch.random.get_rng_state(), state)  # the search's random stream is not consumed
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        hessian_eigenvalue(model, x, y, iterations=0)


def test_a_search_tracks_the_eigenvalue_without_changing_its_course():
    from pathlib import Path

    from fairdarts_core.presets import get_search_preset
    from fairdarts_core.search import run_search

    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) is not installed")
    small = dict(subset=64, batch_size=16, epochs=2, layers=3, channels=4)
    tracked = run_search(get_search_preset("nb201-darts-cpu", track_hessian=True, **small), None, progress=False)
    plain = run_search(get_search_preset("nb201-darts-cpu", **small), None, progress=False)
    assert all(np.isfinite(r["hessian_eigenvalue"]) for r in tracked.history)
    assert "hessian_eigenvalue" not in plain.history[-1]
    for a, b in zip(tracked.history, plain.history):  # the measurement changes nothing of the search
        assert a["cell_weight"] == b["cell_weight"] and a["train_loss"] == b["train_loss"]
