import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from torch_geometric.loader import DataLoader

from molnet.data import AtomicGraph, load_bundled
from molnet.errors import InputError


def test_fields_and_shapes():
    atoms = load_bundled("acac", "train")[0]
    g = AtomicGraph.from_atoms(atoms, r_max=5.0, dtype=torch.float64)
    n, e = len(atoms), g.edge_index.shape[1]
    assert g.positions.shape == (n, 3) and g.atomic_numbers.shape == (n,)
    assert g.shifts.shape == (e, 3) and g.cell.shape == (1, 3, 3) and g.pbc.shape == (1, 3)
    assert g.energy.shape == (1,) and g.forces.shape == (n, 3)
    assert float(g.energy) == pytest.approx(atoms.info["REF_energy"])
    assert g.energy_weight.item() == 1 and g.forces_weight.item() == 1 and g.stress_weight.item() == 0


def test_stress_is_a_target_of_fully_periodic_cells_only():
    """A slab's reference stress (ASE calculators give one) is not fitted: the model, the
    calculator and `molnet eval` define stress for cells periodic in all three directions only."""
    stress = np.diag([0.1, 0.2, 0.3])
    weights = {}
    for pbc in ([True, True, True], [True, True, False]):
        atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=np.eye(3) * 3.6, pbc=pbc)
        atoms.info["REF_stress"] = stress
        g = AtomicGraph.from_atoms(atoms, r_max=3.0, dtype=torch.float64)
        weights[tuple(pbc)] = (g.stress_weight.item(), g.stress.abs().sum().item())
    assert weights == {(True, True, True): (1.0, pytest.approx(0.6)), (True, True, False): (0.0, 0.0)}
    # so requiring stress of a slab is refused
    from molnet.data import extract_targets
    from molnet.errors import DataError

    atoms.info["stress"] = stress
    with pytest.raises(DataError, match=r"slab: stress is required, but the structure is periodic in 2 of 3"):
        extract_targets(atoms, require=("stress",), where="slab")


def test_a_voigt_ref_stress_in_a_users_file_is_read_as_a_matrix():
    """mace-torch's files carry REF_stress in Voigt order (xx, yy, zz, yz, xz, xy), as ASE's
    get_stress gives it: a graph made for the calculator or predict reads it, not crashes."""
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=np.eye(3) * 3.6, pbc=True)
    atoms.info["REF_stress"] = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    g = AtomicGraph.from_atoms(atoms, r_max=3.0, dtype=torch.float64)
    expected = [[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]]
    assert g.stress.tolist() == [expected] and g.stress_weight.item() == 1.0


def test_edge_vectors_follow_convention():
    atoms = Atoms("CO", positions=[[0, 0, 0], [0.5, 0, 0]], cell=np.eye(3) * 3.0, pbc=True)
    g = AtomicGraph.from_atoms(atoms, r_max=2.0, dtype=torch.float64)
    sender, receiver = g.edge_index
    vec = g.positions[sender] - g.positions[receiver] + g.shifts
    assert torch.all(torch.linalg.norm(vec, dim=1) < 2.0)
    torch.testing.assert_close(g.shifts, g.unit_shifts @ g.cell[0])


def test_batching_offsets_edges():
    graphs = [AtomicGraph.from_atoms(molecule(m), r_max=3.0) for m in ("H2O", "CH4")]
    batch = next(iter(DataLoader(graphs, batch_size=2)))
    assert batch.num_graphs == 2 and batch.cell.shape == (2, 3, 3)
    assert batch.edge_index[:, graphs[0].edge_index.shape[1] :].min() >= 3


def test_non_periodic_cell_is_ignored():
    atoms = molecule("H2O")
    atoms.cell = np.eye(3) * 0.5  # a tiny dummy cell must not create images
    g = AtomicGraph.from_atoms(atoms, r_max=3.0)
    assert g.edge_index.shape[1] == 6 and torch.all(g.shifts == 0)


@pytest.mark.parametrize(
    "atoms, message",
    [
        (Atoms(), "no atoms"),
        (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), r"atom\(s\) \[1\] are NaN"),
        (Atoms("H2", positions=[[0, 0, 0], [np.inf, 0, 0]]), "NaN or infinite"),
        (Atoms("H2", positions=[[0, 0, 0], [0, 0, 0]]), "atoms 0 and 1 are 0 Å apart"),
        (Atoms("H2", positions=[[0, 0, 0], [0.05, 0, 0]]), "overlapping"),
        (Atoms("H", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True), "singular"),
    ],
    ids=["empty", "nan", "inf", "coincident", "too-close", "singular-cell"],
)
def test_bad_structures_are_refused(atoms, message):
    with pytest.raises(InputError, match=message):
        AtomicGraph.from_atoms(atoms, r_max=3.0, where="test")


def test_tiny_cell_works_and_absurd_cell_is_refused():
    atoms = Atoms("C", positions=[[0, 0, 0]], cell=np.eye(3) * 1.2, pbc=True)
    g = AtomicGraph.from_atoms(atoms, r_max=5.0)  # far smaller than r_max: many images, must work
    assert g.edge_index.shape[1] > 200
    sliver = Atoms("C", positions=[[0, 0, 0]], cell=np.diag([1e-3, 1e-3, 1.0]), pbc=True)
    with pytest.raises(InputError, match="use a larger"):
        AtomicGraph.from_atoms(sliver, r_max=5.0)
