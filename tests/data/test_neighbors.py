import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from hypothesis import given, settings
from hypothesis import strategies as st

from molnet.data import neighbor_list


def _pairs(i, j, shifts):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(shifts).astype(int).tolist())))


def _compare(atoms: Atoms, r_max: float) -> None:
    cell = atoms.cell[:] if atoms.pbc.any() else np.zeros((3, 3))
    nl = neighbor_list(atoms.positions, cell, atoms.pbc, r_max)
    i, j, S = ase_neighbor_list("ijS", atoms, r_max)
    assert _pairs(nl.receiver, nl.sender, nl.unit_shifts) == _pairs(i, j, S)
    vec = atoms.positions[nl.sender] - atoms.positions[nl.receiver] + nl.shifts
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), nl.distances, atol=1e-10)


cells = st.lists(st.floats(-1.5, 1.5), min_size=9, max_size=9).map(
    lambda v: np.diag([3.0, 3.5, 4.0]) + np.array(v).reshape(3, 3) * np.tri(3, k=-1)
)


@settings(max_examples=40, deadline=None)
@given(
    cell=cells,
    n=st.integers(1, 8),
    pbc=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    r_max=st.floats(1.0, 6.0),
    seed=st.integers(0, 10_000),
)
def test_matches_ase_on_random_triclinic_cells(cell, n, pbc, r_max, seed):
    """Same pairs and shifts as ASE, for cells smaller than r_max and mixed pbc."""
    rng = np.random.default_rng(seed)
    atoms = Atoms([6] * n, scaled_positions=rng.random((n, 3)), cell=cell, pbc=pbc)
    _compare(atoms, r_max)


def test_cell_smaller_than_cutoff_has_self_images():
    atoms = Atoms("C", positions=[[0, 0, 0]], cell=np.eye(3) * 1.5, pbc=True)
    nl = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 3.1)
    assert len(nl.sender) > 6 and (nl.sender == 0).all()
    _compare(atoms, 3.1)


def test_molecule_without_cell():
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    _compare(atoms, 2.0)
