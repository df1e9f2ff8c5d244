"""Chunked evaluation (``Potential.set_chunking``) equals the whole-structure evaluation."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from torch_geometric.data import Batch

from molnet.calculators.ase import MolNetCalculator
from molnet.data import AtomicGraph
from molnet.errors import ConfigError
from molnet.models import build_model
from tests.battery import acac, evaluate, periodic_cell

#: six elements, two layers, L=2 features, a radial MLP with two hidden layers
CONFIG = {
    "name": "mace",
    "elements": ["H", "C", "N", "O", "Na", "Cl"],
    "r_max": 4.0,
    "num_channels": 8,
    "max_L": 2,
    "max_ell": 2,
    "correlation": 3,
    "radial_MLP": [16, 16],
    "num_interactions": 2,
}


def _model(**overrides):
    torch.manual_seed(0)
    return build_model({**CONFIG, **overrides}, dtype=torch.float64).eval()


def _structures() -> list[Atoms]:
    """A molecule, a lone atom, a dense six-element salt cell and a sparse triclinic cell: uneven neighbor counts."""
    salt = bulk("NaCl", "rocksalt", a=5.0, cubic=True).repeat((2, 1, 1))
    salt.rattle(0.15, seed=2)
    salt.numbers[[1, 6]] = [7, 8]  # N and O among the ions
    molecule = acac()
    molecule.numbers[4] = 7
    return [molecule, Atoms("Cl", positions=[[0.0, 0.0, 0.0]]), salt, periodic_cell(3)]


@pytest.mark.parametrize("atoms_per_chunk", [1, 5, 16])
def test_chunked_energy_forces_stress_equal_the_whole_evaluation(atoms_per_chunk):
    structures = _structures()
    model = _model().set_chunking(None)
    plain = evaluate(model, structures[2:], stress=True)
    plain_molecules = evaluate(model, structures[:2])
    model.set_chunking(atoms_per_chunk)
    chunked = evaluate(model, structures[2:], stress=True)
    chunked_molecules = evaluate(model, structures[:2])
    for whole, parts in ((plain, chunked), (plain_molecules, chunked_molecules)):
        for key in ("energy", "forces") + (("stress",) if "stress" in whole else ()):
            torch.testing.assert_close(parts[key], whole[key], atol=1e-11, rtol=1e-12)


@pytest.mark.parametrize("checkpointed", [True, False], ids=["checkpointed", "plain"])
def test_chunked_training_gradients_equal_the_whole_evaluation(checkpointed, monkeypatch):
    """The double backward of a force loss gives the same parameter gradients in chunks of three
    atoms (checkpointed, or plain as "auto" runs a training step) and in one table."""
    import molnet.nn.mace as mace

    structures = _structures()
    batch = Batch.from_data_list([AtomicGraph.from_atoms(a, CONFIG["r_max"], dtype=torch.float64) for a in structures])

    def gradients(model):
        model.train()
        out = model(batch, compute_forces=True, compute_stress=False, training=True)
        loss = out["energy"].square().sum() + out["forces"].square().sum()
        return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])

    model = _model().set_chunking(None)
    whole = gradients(model)
    if checkpointed:
        model.set_chunking(3)
    else:
        monkeypatch.setattr(mace, "CHUNK_ATOMS", 3)
        model.set_chunking("auto")
        model.train()
        assert model.body._chunking(batch.num_nodes, 40, 8) == (3, (False, False))
    chunked = gradients(model)
    assert len(whole) == len(chunked)
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_the_calculator_chunks_a_periodic_box_with_the_same_results():
    atoms = bulk("NaCl", "rocksalt", a=5.2, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=5)
    model = _model()
    atoms.calc = MolNetCalculator(model, dtype="float64", atoms_per_chunk=None)
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    chunked = atoms.copy()
    chunked.calc = MolNetCalculator(_model(), dtype="float64", atoms_per_chunk=10)
    assert chunked.get_potential_energy() == pytest.approx(energy, abs=1e-10, rel=0)
    np.testing.assert_allclose(chunked.get_forces(), forces, atol=1e-11, rtol=0)
    np.testing.assert_allclose(chunked.get_stress(), stress, atol=1e-12, rtol=0)


def test_auto_chunks_by_bytes_checkpoints_only_large_calls_and_gives_the_same_results(monkeypatch):
    """ "auto": chunks of at most CHUNK_ATOMS atoms and CHUNK_BYTES, checkpointed above AUTO_CHUNK_ABOVE."""
    import molnet.nn.mace as mace

    structures = _structures()[2:]
    model = _model().set_chunking(None)
    assert model.body._chunking(10, 40, 8) == (10, (False, False))  # one table
    whole = evaluate(model, structures, stress=True)
    model.set_chunking("auto")
    per_atom = model.body.temporary_bytes_per_atom(max_neighbors=40, itemsize=8)
    assert per_atom[1] > per_atom[0]  # the second layer's L=2 inputs have more paths
    assert model.body._chunking(10, 40, 8) == (mace.CHUNK_ATOMS, (False, False))  # small: plain chunks
    monkeypatch.setattr(mace, "CHUNK_BYTES", 3 * max(per_atom))  # fewer than CHUNK_ATOMS
    assert model.body._chunking(10, 40, 8) == (3, (False, False))
    plain = evaluate(model, structures, stress=True)
    # the largest layer alone is checkpointed while that brings the estimate under the budget
    monkeypatch.setattr(mace, "AUTO_CHUNK_ABOVE", 10 * per_atom[0])
    assert model.body._chunking(10, 40, 8) == (3, (False, True))
    one_layer = evaluate(model, structures, stress=True)
    monkeypatch.setattr(mace, "AUTO_CHUNK_ABOVE", 0)
    assert model.body._chunking(10, 40, 8) == (3, (True, True))
    model.train()  # a training step recomputes checkpointed chunks: only above its own threshold
    assert model.body._chunking(10, 40, 8) == (3, (False, False))
    monkeypatch.setattr(mace, "AUTO_CHUNK_ABOVE_TRAINING", 0)
    assert model.body._chunking(10, 40, 8) == (3, (True, True))
    model.eval()
    checkpointed = evaluate(model, structures, stress=True)
    for chunked in (plain, one_layer, checkpointed):
        for key in ("energy", "forces", "stress"):
            torch.testing.assert_close(chunked[key], whole[key], atol=1e-11, rtol=1e-12)


def test_chunking_refuses_what_it_cannot_do():
    model = _model()
    for wrong in (0, "big", 2.5):
        with pytest.raises(ConfigError, match="atoms_per_chunk must be >= 1, 'auto' or None"):
            model.set_chunking(wrong)
    assert model.body.atoms_per_chunk == "auto"  # the default
    model.use_cueq()  # cuequivariance evaluates whole structures
    assert model.body.atoms_per_chunk is None
    with pytest.raises(ConfigError, match="use_cueq\\(False\\) first"):
        model.set_chunking(4)
    model.use_cueq(False)
    assert model.body.atoms_per_chunk == "auto"
    model.compile_inference()  # so does the compiled path
    assert model.body.atoms_per_chunk is None
    assert model.inference_copy("cpu", torch.float64)._inference_body is not None  # a calculator's copy stays compiled
    with pytest.raises(ConfigError, match="do not combine"):
        model.set_chunking(4)
    mpnn = build_model({"name": "mpnn", "elements": ["H", "O"], "r_max": 4.0})
    assert mpnn.set_chunking("auto") is mpnn  # nothing to chunk
    with pytest.raises(ConfigError, match="mace family only"):
        mpnn.set_chunking(4)


def test_edge_pairs_are_each_edge_and_its_reverse_with_equal_lengths():
    """In a periodic cell shorter than the cutoff (edges to an atom's own images), every edge
    pairs with its reverse, translation negated, and both have bitwise the same length; an edge
    whose reverse is missing stays alone."""
    from molnet.nn.inputs import reverse_edge_groups

    graph = AtomicGraph.from_atoms(periodic_cell(3), CONFIG["r_max"], dtype=torch.float64)
    sender, receiver = graph.edge_index
    first, group = reverse_edge_groups(sender, receiver, graph.unit_shifts)
    assert (sender == receiver).any()  # images of the atom itself
    assert torch.equal(torch.bincount(group), torch.full((len(first),), 2))
    assert torch.equal(group[first], torch.arange(len(first)))
    partner = torch.zeros_like(group)
    for g in range(len(first)):
        a, b = (group == g).nonzero().flatten().tolist()
        partner[a], partner[b] = b, a
    assert torch.equal(sender[partner], receiver) and torch.equal(receiver[partner], sender)
    assert torch.equal(graph.unit_shifts[partner], -graph.unit_shifts)
    lengths = torch.linalg.norm(graph.positions[sender] - graph.positions[receiver] + graph.shifts, dim=1)
    assert torch.equal(lengths[partner], lengths)
    one_way = reverse_edge_groups(sender[:-1], receiver[:-1], graph.unit_shifts[:-1])[1]
    assert (torch.bincount(one_way) == 1).sum() == 1  # the partner of the dropped edge


def test_radial_mlp_per_edge_pair_gives_the_same_energy_forces_stress_and_gradients(monkeypatch):
    """The radial MLP run once per edge pair equals the MLP on every table slot (PAIRED_RADIAL_BYTES 0),
    in one table and in plain chunks of three atoms, for a batch with a lone atom and periodic cells."""
    import molnet.nn.mace as mace

    structures = _structures()
    batch = Batch.from_data_list([AtomicGraph.from_atoms(a, CONFIG["r_max"], dtype=torch.float64) for a in structures])
    model = _model()
    paired_layers = [i.pairs_pay(len(batch.edge_index[0]) // 2, 8) for i in model.body.interactions]
    assert all(paired_layers)

    def run():
        out = model(batch, compute_forces=True, compute_stress=True, training=True)
        loss = out["energy"].square().sum() + out["forces"].square().sum()
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        return [out["energy"], out["forces"], out["stress"], *grads]

    results = {}
    for chunk_atoms in (48, 3):
        monkeypatch.setattr(mace, "CHUNK_ATOMS", chunk_atoms)
        for label, limit in (("paired", mace.PAIRED_RADIAL_BYTES), ("per slot", 0)):
            monkeypatch.setattr(mace, "PAIRED_RADIAL_BYTES", limit)
            model.set_chunking("auto")
            results[label, chunk_atoms] = run()
    reference = results["per slot", 48]
    for key, values in results.items():
        for a, b in zip(values, reference, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=str(key))


def test_a_call_without_atoms_gives_empty_energies():
    from molnet.nn.inputs import GraphInputs

    model = _model()
    f64, long = torch.float64, torch.long
    empty = GraphInputs(
        positions=torch.zeros(0, 3, dtype=f64),
        species=torch.zeros(0, dtype=long),
        edge_index=torch.zeros(2, 0, dtype=long),
        shifts=torch.zeros(0, 3, dtype=f64),
        cell=torch.zeros(1, 3, 3, dtype=f64),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        batch=torch.zeros(0, dtype=long),
        num_graphs=1,
        unit_shifts=torch.zeros(0, 3, dtype=f64),
        atomic_numbers=torch.zeros(0, dtype=long),
    )
    assert model.body(empty).shape == (0,)
