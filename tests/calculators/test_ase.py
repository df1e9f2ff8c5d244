import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from torch_geometric.loader import DataLoader

from molnet.calculators import MolNetCalculator
from molnet.data import AtomicGraph, load_bundled
from molnet.errors import UnknownElementError
from molnet.models import build_model
from molnet.workflows.md import run_md


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(
        {
            "name": "mace",
            "elements": ["H", "C", "O"],
            "r_max": 4.0,
            "num_channels": 8,
            "max_ell": 2,
            "max_L": 1,
            "radial_MLP": [16],
            "e0s": {"H": -13.6, "C": -1026.9, "O": -2037.8},
        },
        dtype=torch.float64,
    ).eval()


def _periodic():
    atoms = bulk("C", "diamond", a=3.6).repeat((1, 1, 2))
    atoms.rattle(0.05, seed=1)
    atoms.numbers[1] = 8
    return atoms


def test_results_equal_potential_outputs(model):
    atoms = _periodic()
    atoms.calc = MolNetCalculator(model)
    g = next(iter(DataLoader([AtomicGraph.from_atoms(atoms, model.r_max, dtype=torch.float64)], batch_size=1)))
    ref = model(g, compute_forces=True, compute_stress=True)
    assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"][0]), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"].numpy(), atol=1e-10)
    s = ref["stress"][0].numpy()
    np.testing.assert_allclose(atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], atol=1e-10)
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), atol=1e-9)
    # ASE's own finite-difference stress agrees with ours
    np.testing.assert_allclose(atoms.calc.calculate_numerical_stress(atoms, d=1e-5), atoms.get_stress(), atol=1e-7)


def test_molecule_has_no_stress_property(model):
    atoms = load_bundled("acac", "test")[0]
    atoms.calc = MolNetCalculator(model)
    atoms.get_forces()
    assert "stress" not in atoms.calc.results
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError, match="periodic in all three directions"):
        atoms.get_stress()


def test_a_charge_that_a_model_without_coulomb_cannot_see_is_reported_once(model, caplog):
    atoms = load_bundled("acac", "test")[0]
    atoms.calc = MolNetCalculator(model)
    neutral = atoms.get_potential_energy()
    assert "no Coulomb block" not in caplog.text
    atoms.info["charge"] = 1
    assert atoms.get_potential_energy() == neutral
    atoms.positions[0, 0] += 0.01
    atoms.get_potential_energy()
    assert caplog.text.count("atoms.info['charge'] = 1, but this model has no Coulomb block") == 1


def test_skin_reuse_is_identical_to_rebuilding(model):
    results = {}
    for skin in (0.0, 1.0):
        atoms = _periodic()
        atoms.calc = MolNetCalculator(model, skin=skin)
        md_log = run_md(
            atoms, steps=30, temperature_K=300, timestep_fs=0.5, ensemble="nve", log_interval=1, progress=False
        )
        results[skin] = (np.array(md_log.total_energy), atoms.get_forces().copy(), atoms.calc.neighbor_list_builds)
        fresh = AtomicGraph.from_atoms(atoms, model.r_max)
        assert (
            atoms.calc._graph.edge_index.shape[1] == fresh.edge_index.shape[1]
        )  # only pairs within r_max reach the model
    # same to rounding (the edge order differs); at 300 K and 0.5 fs this untrained model's MD stays
    # physical (at 600 K it blows up, and its chaos amplifies rounding), and the list is still reused
    np.testing.assert_allclose(results[1.0][0], results[0.0][0], atol=1e-10, rtol=0)
    np.testing.assert_allclose(results[1.0][1], results[0.0][1], atol=1e-10, rtol=0)
    assert results[1.0][2] < results[0.0][2] / 3  # the list really was reused


def test_float32_keeps_its_precision_for_atoms_far_outside_the_cell(model):
    """An unwrapped trajectory's atoms can be hundreds of Å from the cell: a float32 model of
    them (each atom 2,000 cells out, then moved within the skin) gives the forces and stress of the
    wrapped structure to float32 rounding, not to that of 7,000 Å coordinates."""
    inside = _periodic()
    far = inside.copy()
    far.positions += np.random.default_rng(0).choice([-2000, 2000], size=(len(far), 3)) @ far.cell[:]
    calculators = [MolNetCalculator(model, dtype=dtype) for dtype in ("float64", "float32", "float32")]
    for step in range(2):  # a rebuild, then a reuse of the neighbor list with moved atoms
        moved = 0.05 * step * np.random.default_rng(1).normal(size=inside.positions.shape)
        results = []
        for atoms, calc in zip((inside, inside, far), calculators):
            atoms = atoms.copy()
            atoms.positions += moved
            atoms.calc = calc
            results.append((atoms.get_forces(), atoms.get_stress()))
        (forces64, stress64), (forces32, stress32), (forces_far, stress_far) = results
        np.testing.assert_allclose(forces_far, forces64, atol=2e-4, rtol=0)
        np.testing.assert_allclose(forces_far, forces32, atol=2e-4, rtol=0)
        np.testing.assert_allclose(stress_far, stress64, atol=2e-5, rtol=0)
    assert calculators[2].neighbor_list_builds == 1


def test_unknown_element_is_refused_clearly(model):
    atoms = Atoms("CN", positions=[[0, 0, 0], [1.2, 0, 0]])
    atoms.calc = MolNetCalculator(model)
    with pytest.raises(UnknownElementError, match=r"\['N'\]"):
        atoms.get_potential_energy()


def test_global_default_dtype_is_untouched(model):
    before = torch.get_default_dtype()
    atoms = load_bundled("acac", "test")[0]
    atoms.calc = MolNetCalculator(model, dtype="float32")
    atoms.get_potential_energy()
    assert torch.get_default_dtype() == before


def test_the_callers_model_is_left_as_it_was(model):
    """The calculator evaluates its own copy: another dtype, mode or chunking does not reach the caller."""
    model.train()
    try:
        atoms = load_bundled("acac", "test")[0]
        single = MolNetCalculator(model, dtype="float32", atoms_per_chunk=4)
        double = MolNetCalculator(model, dtype="float64")
        assert model.dtype == torch.float64 and model.training and model.body.atoms_per_chunk == "auto"
        assert single.model.dtype == torch.float32 and double.model.dtype == torch.float64
        assert not single.model.training and single.model.body.atoms_per_chunk == 4
        reference = atoms.copy()
        reference.calc = MolNetCalculator(model.inference_copy("cpu", torch.float64))
        atoms.calc = double
        assert atoms.get_potential_energy() == reference.get_potential_energy()
    finally:
        model.eval()
