"""CSMPN: the battery, plus the lifting, the Clifford action on hidden features and triangle smoothness."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from molnet.data import AtomicGraph
from molnet.errors import ConfigError
from molnet.models import build_model
from molnet.nn.clifford.simplicial import lift
from molnet.nn.inputs import GraphInputs
from tests.battery import R_MAX, LongRangeBattery, ModelBattery, acac, evaluate, periodic_cell, random_rotation

SMALL = {"name": "csmpn", "num_channels": 6, "num_layers": 2, "num_bessel": 4, "readout_hidden": 8}


class TestCSMPN(ModelBattery):
    configs = [
        # r_tri above the cell's 3.2 Å lattice vector: triangles with an atom and its own image
        {**SMALL, "r_tri": 3.3, "id": "triangles"},
        {**SMALL, "max_simplex_dim": 1, "num_layers": 1, "id": "edges-only"},
        {**SMALL, "message_product": True, "num_layers": 1, "id": "message-product"},
    ]


class TestCSMPNEwald(LongRangeBattery):
    """The battery with the Ewald block on the vertices' invariant channels (grade-0 parts)."""

    configs = [
        {
            **SMALL,
            "num_layers": 1,
            "long_range": {"name": "ewald", "k_cutoff": 3.0, "num_k_basis": 6, "projection_dim": 4},
            "id": "csmpn-ewald",
        }
    ]


def _model(**overrides):
    torch.manual_seed(0)
    return build_model({**SMALL, "elements": ["H", "C", "O"], "r_max": R_MAX, **overrides}, dtype=torch.float64).eval()


def _inputs(model, atoms):
    g = AtomicGraph.from_atoms(atoms, model.r_max, dtype=torch.float64)
    return GraphInputs.from_graph(g, model.species_of(g.atomic_numbers))


def _lift(atoms, r_max, r_tri):
    g = AtomicGraph.from_atoms(atoms, r_max, dtype=torch.float64)
    inputs = GraphInputs.from_graph(g, torch.zeros(len(atoms), dtype=torch.long))
    vectors, lengths = inputs.edge_vectors()
    return lift(inputs, lengths, vectors, r_tri), vectors


def _brute_force_triangles(atoms, r_tri):
    """Sorted edge-length triples of all triangles (image triples up to translation), by brute force:
    every (centre atom, ordered pair of distinct neighbor images) closed by a short third edge,
    each triangle being seen 3 × 2 times."""
    i, j, d, shift = neighbor_list("ijdS", atoms, r_tri)
    pos = atoms.positions
    cell = atoms.cell[:] if atoms.pbc.any() else np.zeros((3, 3))
    found = []
    for centre in range(len(atoms)):
        nbrs = [(jj, tuple(s), pos[jj] + s @ cell - pos[centre]) for ii, jj, s in zip(i, j, shift) if ii == centre]
        for (q, sq, rq), (r, sr, rr) in itertools.permutations(nbrs, 2):
            third = np.linalg.norm(rr - rq)
            if third < r_tri:
                found.append(tuple(np.round(sorted((np.linalg.norm(rq), np.linalg.norm(rr), third)), 9)))
    counts = Counter(found)
    assert all(c % 6 == 0 for c in counts.values())
    return Counter({k: c // 6 for k, c in counts.items()})


def _chain():
    """One atom per cell, 1.3 Å apart along x: collinear triangles (0, a, 2a) whose two short
    edges are the same edge of the cell."""
    return Atoms("C", cell=[1.3, 8.0, 8.0], pbc=True)


STRUCTURES = {
    "molecule": acac,
    "periodic": periodic_cell,
    "supercell": lambda: periodic_cell().repeat((2, 1, 1)),
    "chain": _chain,
}


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_lifting_matches_brute_force(structure):
    atoms = STRUCTURES[structure]()
    r_tri = 3.3  # longer than the 3.2 Å lattice vector: triangles with an atom and its own image
    complex_, vectors = _lift(atoms, R_MAX, r_tri)
    expected = _brute_force_triangles(atoms, r_tri)
    r_a, r_b = vectors[complex_.triangle_directed[:, 0]], vectors[complex_.triangle_directed[:, 1]]
    lengths = torch.stack([r_a.norm(dim=-1), r_b.norm(dim=-1), (r_b - r_a).norm(dim=-1)], dim=1)
    got = Counter(tuple(np.round(row, 9)) for row in lengths.sort(dim=1).values.numpy())
    assert got == expected and len(expected) > 0
    # one undirected edge per pair of directed edges, and triangle edges are the right ones
    assert 2 * complex_.n_edges == len(complex_.undirected)
    edge_len = vectors[complex_.edge_directed].norm(dim=-1)
    torch.testing.assert_close(edge_len[complex_.triangle_edges], lengths, atol=1e-12, rtol=0)


def test_supercell_has_the_multiple_of_the_cells_simplices():
    cell, _ = _lift(periodic_cell(), R_MAX, 3.3)
    big, _ = _lift(periodic_cell().repeat((2, 2, 1)), R_MAX, 3.3)
    assert (big.n_edges, big.n_triangles, len(big.message_type)) == (
        4 * cell.n_edges,
        4 * cell.n_triangles,
        4 * len(cell.message_type),
    )


def test_chain_with_repeated_edges_is_extensive():
    """Triangles whose boundary repeats an edge of the cell keep that multiplicity."""
    complex_, _ = _lift(_chain(), R_MAX, 3.3)
    edges = complex_.triangle_edges
    assert bool(((edges[:, 0] == edges[:, 1]) | (edges[:, 0] == edges[:, 2]) | (edges[:, 1] == edges[:, 2])).any())
    model = _model(r_tri=3.3)
    one, three = evaluate(model, [_chain()], stress=True), evaluate(model, [_chain().repeat((3, 1, 1))], stress=True)
    torch.testing.assert_close(three["energy"], 3 * one["energy"], atol=1e-9, rtol=1e-12)
    torch.testing.assert_close(three["stress"], one["stress"], atol=1e-9, rtol=0)


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_hidden_features_transform_by_the_clifford_action(reflect):
    """Every simplex's multivector features (atoms, edges, triangles; all layers) transform by the
    outermorphism of R: grade-1 parts as vectors, grade-2 as bivectors, grade 3 by det R."""
    model = _model()
    body = model.body
    inputs = _inputs(model, acac())
    rot = torch.tensor(random_rotation(seed=11, reflect=reflect))
    moved = dataclasses.replace(inputs, positions=inputs.positions @ rot.T)  # same edge list, same simplex order
    complex_, ref = body.simplex_features(inputs)
    complex_moved, new = body.simplex_features(moved)
    assert complex_.n_triangles > 0 and torch.equal(complex_moved.triangle_vertices, complex_.triangle_vertices)
    action = body.algebra.orthogonal_action(rot)
    for a, b in zip(ref, new):
        torch.testing.assert_close(b, a @ action.T, atol=1e-10, rtol=0)
    # every grade is populated by the last layer; the pseudoscalar weakly (it needs chirality,
    # and AcAc is nearly planar), yet far above the tolerance
    for blades, size in ((slice(1, 4), 1e-2), (slice(4, 7), 1e-2), (slice(7, 8), 1e-6)):
        assert ref[-1][..., blades].abs().max() > size


def _triangle(x):
    """C, O, H with the C–H distance (the longest) crossing r_tri = 3 Å at x = 0."""
    return Atoms("COH", positions=[[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [1.0, np.sqrt(9.0 - 1.04) + x, 0.2]])


def test_energy_is_smooth_when_a_triangle_appears():
    """The triangles' contribution (full model minus the same weights without triangles) vanishes
    smoothly, with its forces, as the longest edge reaches r_tri, and is exactly zero beyond."""
    model = _model()
    edges_only = _model(max_simplex_dim=1)
    edges_only.load_state_dict(model.state_dict(), strict=False)  # all but the triangle embedding

    def contribution(x):
        full, base = evaluate(model, [_triangle(x)]), evaluate(edges_only, [_triangle(x)])
        return full["energy"] - base["energy"], full["forces"] - base["forces"]

    eps = 1e-6
    assert [_lift(_triangle(x), R_MAX, 3.0)[0].n_triangles for x in (-eps, eps)] == [1, 0]
    (e_in, f_in), (e_out, f_out) = contribution(-eps), contribution(eps)
    assert float(e_out.abs().max()) == 0.0 and float(f_out.abs().max()) == 0.0
    assert float(e_in.abs().max()) < 1e-9 and float(f_in.abs().max()) < 1e-7
    e_near, _ = contribution(-1.0)
    assert float(e_near.abs().max()) > 1e-4  # well inside r_tri the triangle matters


def test_r_tri_defaults_and_validation():
    assert _model().config["r_tri"] == 3.0
    assert build_model({"name": "csmpn", "elements": ["H"], "r_max": 2.5}).config["r_tri"] == 2.5
    with pytest.raises(ConfigError, match="r_tri"):
        build_model({"name": "csmpn", "elements": ["H"], "r_max": 4.0, "r_tri": 4.5})
    with pytest.raises(ConfigError, match="max_simplex_dim"):
        build_model({"name": "csmpn", "elements": ["H"], "max_simplex_dim": 3})


def test_long_range_hook():
    """With an Ewald block per layer: it changes the energy, which stays O(3) invariant and extensive."""
    pytest.importorskip("molnet.nn.ewald")
    lr = _model(long_range={"name": "ewald", "k_cutoff": 3.0, "num_k_basis": 4, "projection_dim": 4})
    assert lr.body.long_range is not None and len(lr.body.long_range) == SMALL["num_layers"]
    plain = _model()
    plain.load_state_dict(lr.state_dict(), strict=False)
    atoms = periodic_cell()
    ref = evaluate(lr, [atoms])
    assert abs(float(ref["energy"][0] - evaluate(plain, [atoms])["energy"][0])) > 1e-6
    rot = random_rotation(seed=5, reflect=True)
    moved = atoms.copy()
    moved.positions, moved.cell = atoms.positions @ rot.T, atoms.cell[:] @ rot.T
    new = evaluate(lr, [moved])
    torch.testing.assert_close(new["energy"], ref["energy"], atol=1e-9, rtol=0)
    torch.testing.assert_close(new["forces"], ref["forces"] @ torch.tensor(rot).T, atol=1e-9, rtol=0)
    big = evaluate(lr, [atoms.repeat((2, 1, 1))])
    torch.testing.assert_close(big["energy"], 2 * ref["energy"], atol=1e-9, rtol=1e-12)


def test_degenerate_structures_and_float32():
    """A lone atom, a pair and AcAc in one batch (no edges / no triangles for some); float32 ≈ float64."""
    model = _model()
    structures = [Atoms("O"), Atoms("CH", positions=[[0, 0, 0], [1.1, 0, 0]]), acac()]
    batched, single = evaluate(model, structures), evaluate(model, structures, batch_size=1)
    torch.testing.assert_close(batched["energy"], single["energy"], atol=1e-9, rtol=0)
    assert float(batched["forces"][0].abs().max()) == 0.0
    from torch_geometric.loader import DataLoader

    m32 = _model().float()
    graphs = [AtomicGraph.from_atoms(a, R_MAX, dtype=torch.float32) for a in structures]
    out32 = m32(next(iter(DataLoader(graphs, batch_size=len(graphs)))))
    torch.testing.assert_close(out32["energy"].double(), batched["energy"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out32["forces"].double(), batched["forces"], rtol=1e-3, atol=1e-4)


def test_model_file_round_trip(tmp_path):
    from molnet.models.io import load_model_file, save_model

    model = _model()
    path = save_model(model, tmp_path / "csmpn.safetensors")
    loaded = load_model_file(path, dtype=torch.float64)
    atoms = periodic_cell()
    torch.testing.assert_close(
        evaluate(loaded, [atoms])["energy"], evaluate(model, [atoms])["energy"], atol=1e-12, rtol=0
    )
