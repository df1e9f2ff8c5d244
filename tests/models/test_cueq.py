"""The cuequivariance path (its PyTorch fallback on the CPU) gives the plain path's numbers."""

import importlib.util

import pytest
import torch
from torch_geometric.data import Batch

from molnet.data import AtomicGraph
from molnet.errors import ConfigError
from molnet.models import build_model
from tests.battery import acac, evaluate, periodic_cell

needs_cueq = pytest.mark.skipif(
    importlib.util.find_spec("cuequivariance_torch") is None, reason="cuequivariance-torch not installed"
)

CONFIG = {
    "name": "mace",
    "elements": ["H", "C", "O"],
    "r_max": 4.0,
    "num_channels": 4,
    "max_L": 1,
    "max_ell": 2,
    "correlation": 3,
    "num_interactions": 2,
    "radial_MLP": [8],
}


def _assert_close(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=tol, rtol=tol), (key, (a[key] - b[key]).abs().max())


@needs_cueq
@pytest.mark.parametrize(
    "overrides",
    [{}, {"max_L": 2, "correlation": 2, "max_ell": 3}, {"contraction_basis": "coupled", "first_layer_residual": False}],
    ids=["default", "L2-nu2-ell3", "coupled-plain-first"],
)
def test_cueq_equals_plain_energy_forces_stress(overrides):
    torch.manual_seed(0)
    model = build_model({**CONFIG, **overrides}, dtype=torch.float64).eval()
    structures = [acac(), periodic_cell(seed=3)]
    plain = evaluate(model, structures, stress=False), evaluate(model, structures[1:], stress=True)
    keys_before = {k: v.clone() for k, v in model.state_dict().items()}
    model.use_cueq()
    accelerated = evaluate(model, structures, stress=False), evaluate(model, structures[1:], stress=True)
    for a, b in zip(plain, accelerated):
        _assert_close(a, b, 1e-10)
    state = model.state_dict()  # model files are unchanged by the backend
    assert state.keys() == keys_before.keys() and all(torch.equal(state[k], keys_before[k]) for k in state)
    model.use_cueq(False)
    _assert_close(evaluate(model, structures, stress=False), plain[0], 0.0)


@needs_cueq
def test_cueq_training_gradients_equal_plain():
    """Parameter gradients of a force loss (double backward) agree, so training may use either path."""
    torch.manual_seed(0)
    model = build_model(CONFIG, dtype=torch.float64)
    batch = Batch.from_data_list(
        [AtomicGraph.from_atoms(a, model.r_max, dtype=torch.float64) for a in (acac(), periodic_cell(seed=3))]
    )

    def gradients():
        model.zero_grad()
        out = model(batch, compute_forces=True, training=True)
        (out["energy"].sum() + (out["forces"] ** 2).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.use_cueq()
    accelerated = gradients()
    assert plain.keys() == accelerated.keys() and len(plain) > 0
    _assert_close(plain, accelerated, 1e-9)


@needs_cueq
def test_cueq_survives_a_dtype_move_and_copies():
    """.float() after use_cueq converts the kernels' constants too; a deep copy (EMA) keeps the path."""
    import copy

    torch.manual_seed(0)
    model = build_model(CONFIG, dtype=torch.float64).eval()
    reference = evaluate(model, [acac()])
    model.use_cueq()
    clone = copy.deepcopy(model)
    assert clone.body.products[0].accelerated is not None
    _assert_close(evaluate(clone, [acac()]), reference, 1e-10)
    model32 = model.float()
    graph = AtomicGraph.from_atoms(acac(), model32.r_max, dtype=torch.float32)
    out = model32(Batch.from_data_list([graph]), compute_forces=True)
    assert torch.allclose(out["energy"].double(), reference["energy"], atol=1e-4, rtol=1e-5)
    assert torch.allclose(out["forces"].double(), reference["forces"], atol=1e-4)


def test_cueq_refused_for_other_families():  # needs no cuequivariance: refused before importing it
    model = build_model({"name": "mpnn", "elements": ["H", "C", "O"], "r_max": 4.0})
    with pytest.raises(ConfigError, match="mace family only"):
        model.use_cueq()
