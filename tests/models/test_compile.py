"""The torch.compile inference path gives the eager path's numbers; training stays eager."""

import pytest
import torch
from torch_geometric.data import Batch

from molnet.data import AtomicGraph
from molnet.models import build_model
from tests.battery import acac, evaluate, periodic_cell

#: Small enough to compile in well under a minute on one CPU thread.
CONFIG = {
    "name": "mace",
    "elements": ["H", "C", "O"],
    "r_max": 4.0,
    "num_channels": 8,
    "max_L": 1,
    "max_ell": 1,
    "correlation": 2,
    "num_interactions": 1,
    "radial_MLP": [16],
}


def _assert_same(model, structures) -> None:
    eager = [evaluate(model, [s], stress=bool(s.pbc.all())) for s in structures]
    keys_before = list(model.state_dict())
    model.compile_inference()
    for structure, reference in zip(structures, eager):
        compiled = evaluate(model, [structure], stress=bool(structure.pbc.all()))
        assert compiled.keys() == reference.keys()
        for key in reference:
            assert torch.allclose(compiled[key], reference[key], atol=1e-10, rtol=1e-10), key
    assert list(model.state_dict()) == keys_before  # model files are unchanged by compiling


def test_compiled_equals_eager_energy_forces_stress():
    torch.manual_seed(0)
    _assert_same(build_model(CONFIG, dtype=torch.float64).eval(), [periodic_cell(seed=3)])


@pytest.mark.slow
def test_compiled_equals_eager_across_sizes_and_layers():
    """Two layers, a molecule then a periodic cell: dynamic shapes, no stale specialisation."""
    torch.manual_seed(0)
    config = {**CONFIG, "max_ell": 2, "num_interactions": 2}
    _assert_same(build_model(config, dtype=torch.float64).eval(), [acac(), periodic_cell(seed=3)])


def test_training_path_stays_eager_and_differentiable():
    torch.manual_seed(0)
    model = build_model(CONFIG, dtype=torch.float64).compile_inference()
    batch = Batch.from_data_list([AtomicGraph.from_atoms(acac(), model.r_max, dtype=torch.float64)])
    out = model(batch, compute_forces=True, training=True)
    # double backward through the eager body (the energy term reaches the element offsets too)
    (out["energy"].sum() + (out["forces"] ** 2).sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
