import pytest
import torch
from ase import Atoms
from e3nn import o3

from molnet.data import AtomicGraph
from molnet.models import build_model
from molnet.nn.dtypes import default_dtype
from tests.battery import ModelBattery, acac, evaluate, random_rotation

SMALL = {"name": "mace", "num_channels": 8, "max_ell": 2, "radial_MLP": [16], "num_interactions": 2}


class TestMACE(ModelBattery):
    configs = [
        {**SMALL, "max_L": 0, "correlation": 1, "id": "L0-nu1"},
        {**SMALL, "max_L": 1, "correlation": 2, "id": "L1-nu2"},
        {**SMALL, "max_L": 1, "correlation": 3, "first_layer_residual": False, "id": "L1-nu3-plain-first"},
        {**SMALL, "max_L": 2, "correlation": 3, "id": "L2-nu3"},
        {**SMALL, "max_L": 1, "correlation": 4, "id": "L1-nu4"},
        {**SMALL, "max_L": 1, "correlation": 2, "density_normalization": True, "id": "L1-nu2-density"},
        {**SMALL, "max_L": 1, "correlation": 3, "num_interactions": 1, "id": "one-layer"},
    ]


class TestMACEShortRange(ModelBattery):
    """ZBL repulsion and the Agnesi transform. With random weights the Agnesi basis (lengths mapped
    into (0, 1]) makes energies of 1e3-1e9 eV, so the absolute tolerance scales with them
    (relative errors are ~1e-14)."""

    configs = [
        {
            **SMALL,
            "max_L": 1,
            "correlation": 2,
            "pair_repulsion": True,
            "distance_transform": "agnesi",
            "id": "L1-zbl-agnesi",
        }
    ]
    atol = 1e-5


def _model(dtype=torch.float64, **overrides):
    torch.manual_seed(0)
    cfg = {**SMALL, "elements": ["H", "C", "O"], "r_max": 4.0, "max_L": 2, "correlation": 3, **overrides}
    return build_model(cfg, dtype=dtype).eval()


def _inputs(model, atoms):
    from molnet.nn.inputs import GraphInputs

    g = AtomicGraph.from_atoms(atoms, model.r_max, dtype=torch.float64)
    return GraphInputs.from_graph(g, model.species_of(g.atomic_numbers))


@pytest.mark.parametrize("inversion", [False, True], ids=["rotation", "rotation+inversion"])
def test_hidden_features_transform_with_wigner_d(inversion):
    """Every hidden feature of degree l rotates with D^l(R); parity-odd ones flip under inversion."""
    model = _model(num_interactions=3)
    atoms = acac()
    rot = random_rotation(seed=7, reflect=inversion)
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T
    ref = model.body.node_features(_inputs(model, atoms))
    new = model.body.node_features(_inputs(model, moved))
    irreps = model.body.hidden
    with default_dtype(torch.float64):  # e3nn builds Wigner matrices in the default dtype
        d = irreps.D_from_matrix(torch.tensor(rot))
        d_proper = irreps.D_from_matrix(torch.tensor(-rot))
    assert d.shape[0] == irreps.dim and irreps.lmax == 2
    for layer in range(2):  # the last layer keeps only scalars
        assert ref[layer].abs().max() > 1e-3
        torch.testing.assert_close(new[layer], ref[layer] @ d.T, atol=1e-10, rtol=0)
    if inversion:  # the 1o block really changes sign relative to a proper rotation
        proper = model.body.node_features(_inputs(model, atoms))[0]
        odd = irreps.slices()[1]
        assert (new[0][:, odd] - (proper @ d_proper.T)[:, odd]).abs().max() > 1e-3


def _site_energy(model, neighbors):
    positions = [[0.0, 0.0, 0.0]] + [p for _, p in neighbors]
    symbols = "C" + "".join(s for s, _ in neighbors)
    out = evaluate(model, [Atoms(symbols, positions=positions)])
    return float(out["node_energy"][0])


@pytest.mark.parametrize("correlation, additive", [(1, True), (2, False), (3, False)])
def test_body_order(correlation, additive):
    """Correlation 1 with a linear readout (a single layer has one) is a pair potential per site;
    correlation >= 2 is not."""
    model = _model(num_interactions=1, correlation=correlation, max_L=0)
    assert isinstance(model.body.readouts[-1], o3.Linear)
    j, k = ("H", [1.1, 0.0, 0.0]), ("O", [0.3, 1.3, -0.2])
    e_jk, e_j, e_k, e_0 = (_site_energy(model, s) for s in ([j, k], [j], [k], []))
    interaction = e_jk - e_j - e_k + e_0
    if additive:
        assert abs(interaction) < 1e-12
    else:
        assert abs(interaction) > 1e-6


def test_unknown_element_names_element_and_model_elements():
    from molnet.errors import UnknownElementError

    with pytest.raises(UnknownElementError, match=r"\['Fe'\].*\['H', 'C', 'O'\]"):
        evaluate(_model(), [Atoms("CFe", positions=[[0, 0, 0], [2, 0, 0]])])


def test_float32_matches_float64():
    atoms = acac()
    m64 = _model(torch.float64)
    e64 = evaluate(m64, [atoms])
    m32 = m64.float()
    from torch_geometric.loader import DataLoader

    g = next(iter(DataLoader([AtomicGraph.from_atoms(atoms, 4.0, dtype=torch.float32)], batch_size=1)))
    e32 = m32(g)
    torch.testing.assert_close(e32["energy"].double(), e64["energy"], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(e32["forces"].double(), e64["forces"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("basis", ["reduced", "coupled"])
def test_coupling_tensors_are_equivariant(basis):
    from molnet.nn.symmetric_contraction import coupling_tensors

    irreps = o3.Irreps("0e+1o+2e")
    rot = torch.tensor(random_rotation(seed=3, reflect=True))
    for ir in ("0e", "1o", "2e"):
        u = coupling_tensors(str(irreps), ir, 3, basis)  # [M, D, D, D, P]
        with default_dtype(torch.float64):
            d_in, d_out = irreps.D_from_matrix(rot), o3.Irrep(ir).D_from_matrix(rot)
        lhs = torch.einsum("mijkp,ia,jb,kc->mabcp", u, d_in, d_in, d_in)  # U(Dx, Dx, Dx)
        rhs = torch.einsum("mn,nabcp->mabcp", d_out, u)  # D_out U(x, x, x)
        assert u.shape[-1] > 0
        torch.testing.assert_close(lhs, rhs, atol=1e-10, rtol=0)
        if basis == "reduced":
            torch.testing.assert_close(u, u.transpose(1, 2), atol=1e-12, rtol=0)  # symmetric in its inputs
        else:  # ordered chains, redundant: 11 invariant and 21 vector paths as in mace-torch's U matrices
            mace_torch_paths = {"0e": 11, "1o": 21}  # counted in mace-torch 0.3.16's U matrices
            assert ir not in mace_torch_paths or u.shape[-1] == mace_torch_paths[ir]


@pytest.mark.parametrize(("irreps", "correlation"), [("0e+1o+2e", 3), ("0e+1o", 4)])
def test_contraction_bases_span_the_same_functions(irreps, correlation):
    """Each basis reproduces the other exactly (least squares over random inputs, one channel);
    at ν = 4 the reduced basis needs all ν slots tied by symmetry (it once left the fourth free)."""
    from molnet.nn.symmetric_contraction import SymmetricContraction

    torch.manual_seed(0)
    with default_dtype(torch.float64):
        per_channel = o3.Irreps(irreps)
        out = o3.Irreps("+".join(f"1x{ir}" for _, ir in per_channel))
        a = torch.randn(400, 1, per_channel.dim)
        coupled = SymmetricContraction(per_channel, out, correlation, 1, basis="coupled").basis_functions(a)
        reduced = SymmetricContraction(per_channel, out, correlation, 1, basis="reduced").basis_functions(a)
    for source, target in ((coupled, reduced), (reduced, coupled)):
        solution = torch.linalg.lstsq(source, target, rcond=1e-10, driver="gelsd").solution  # rank-deficient: redundant
        assert (source @ solution - target).norm() < 1e-9 * target.norm()
    assert torch.linalg.matrix_rank(coupled) == torch.linalg.matrix_rank(reduced) == reduced.shape[1]


def test_lone_atoms_in_a_batch_leave_the_molecule_unchanged():
    """Fifty atoms without neighbors share a chunk (atoms are chunked by neighbor count)."""
    from molnet.nn.convolution import ReceiverChunks
    from tests.battery import evaluate

    model = _model(max_L=1, correlation=2)
    molecule = acac()
    lone = [Atoms("H", positions=[[0.0, 0.0, 0.0]]) for _ in range(50)]
    graphs = [AtomicGraph.from_atoms(a, model.r_max, dtype=torch.float64) for a in [molecule, *lone]]
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(graphs)
    sender, receiver = batch.edge_index
    chunks = ReceiverChunks.build(sender, receiver, torch.bincount(receiver, minlength=65), 16)
    assert chunks.edge_counts[:3] == [0, 0, 0] and sum(chunks.edge_counts) == len(receiver)
    alone, mixed = evaluate(model, [molecule]), evaluate(model, [molecule, *lone])
    torch.testing.assert_close(mixed["energy"][0], alone["energy"][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(mixed["forces"][: len(molecule)], alone["forces"], atol=1e-10, rtol=0)
