"""Hostile inputs: random structures and corrupted files fail only with molnet's own errors."""

import numpy as np
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molnet.data import AtomicGraph, read_dataset
from molnet.data.bundled import bundled_path
from molnet.errors import DataError, InputError

finite_or_not = st.one_of(st.floats(-20, 20), st.sampled_from([float("nan"), float("inf"), -float("inf")]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 6),
    numbers=st.lists(st.integers(1, 100), min_size=6, max_size=6),
    coords=st.lists(finite_or_not, min_size=18, max_size=18),
    cell=st.lists(st.floats(-6, 6), min_size=9, max_size=9),
    pbc=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    r_max=st.floats(0.5, 5.0),
)
def test_from_atoms_accepts_or_refuses_with_input_error(n, numbers, coords, cell, pbc, r_max):
    positions = np.array(coords).reshape(6, 3)[:n]
    atoms = Atoms(numbers[:n], positions=positions, cell=np.array(cell).reshape(3, 3), pbc=pbc)
    try:
        graph = AtomicGraph.from_atoms(atoms, r_max)
    except InputError:
        return
    assert graph.edge_index.shape[1] == graph.shifts.shape[0]
    vec = graph.positions[graph.edge_index[0]] - graph.positions[graph.edge_index[1]] + graph.shifts
    assert bool((vec.norm(dim=1) < r_max + 1e-4).all()) and bool((vec.norm(dim=1) >= 0.1 - 1e-6).all())


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(1, 3000), junk=st.binary(max_size=40), position=st.integers(0, 3000))
def test_corrupted_extxyz_gives_data_error(tmp_path_factory, cut, junk, position):
    text = bundled_path("acac", "train").read_bytes()[:6000]
    corrupted = text[:position] + junk + text[position : cut + position]
    path = tmp_path_factory.mktemp("fuzz") / "c.xyz"
    path.write_bytes(corrupted)
    try:
        configs = read_dataset(path, require=("energy", "forces"))
    except DataError:
        return
    for atoms in configs:
        assert np.isfinite(atoms.info["REF_energy"]) and atoms.arrays["REF_forces"].shape == (len(atoms), 3)
