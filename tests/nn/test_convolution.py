"""NeighborConvolution equals e3nn's TensorProduct followed by a scatter sum, values and gradients."""

import pytest
import torch
from e3nn import o3

from molnet.nn.convolution import NeighborConvolution, NeighborTable
from molnet.nn.dtypes import default_dtype
from molnet.nn.inputs import scatter_sum
from molnet.nn.mace import _conv_irreps


def _setup(irreps_in: str, max_ell: int, n_nodes: int, n_edges: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    irreps_in = o3.Irreps(irreps_in)
    sh = o3.Irreps.spherical_harmonics(max_ell)
    c = irreps_in[0].mul
    mid, instructions = _conv_irreps(irreps_in, sh, o3.Irreps([(c, ir) for _, ir in sh]))
    with default_dtype(dtype):  # the constants (Wigner-3j symbols) at the working precision, as build_model does
        tp = o3.TensorProduct(irreps_in, sh, mid, instructions, shared_weights=False, internal_weights=False)
        conv = NeighborConvolution(tp)
    # receivers skip node 0 (a node without neighbors) and repeat others (uneven neighbor counts)
    receiver = torch.randint(1, n_nodes, (n_edges,), generator=gen) if n_edges else torch.zeros(0, dtype=torch.long)
    sender = torch.randint(0, n_nodes, (n_edges,), generator=gen)
    x = torch.randn(n_nodes, irreps_in.dim, generator=gen, dtype=dtype, requires_grad=True)
    vectors = torch.randn(n_edges, 3, generator=gen, dtype=dtype, requires_grad=True)
    weights = torch.randn(n_edges, tp.weight_numel, generator=gen, dtype=dtype, requires_grad=True)
    return tp, conv, sender, receiver, x, vectors, weights, sh


CASES = [("6x0e", 3), ("6x0e+6x1o", 3), ("5x0e+5x1o+5x2e", 2), ("4x0e+4x1o+4x2e+4x3o", 3)]


@pytest.mark.parametrize("irreps_in,max_ell", CASES, ids=[c[0] for c in CASES])
def test_equals_e3nn_tensor_product_and_scatter(irreps_in, max_ell):
    tp, conv, sender, receiver, x, vectors, weights, sh = _setup(irreps_in, max_ell, 9, 40, torch.float64)

    def reference():
        y = o3.spherical_harmonics(sh, vectors, normalize=True)
        return scatter_sum(tp(x[sender], y, weights), receiver, len(x))

    def fused():
        y = o3.spherical_harmonics(sh, vectors, normalize=True)
        table = NeighborTable.build(sender, receiver, len(x))
        return conv(x, table.gather_edges(y), table.gather_edges(weights), table)

    ref, out = reference(), fused()
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    assert torch.all(out[0] == 0)  # node 0 receives nothing
    # first and second derivatives (forces, and force-loss training) agree too
    probe = torch.randn_like(ref)
    grads = []
    for f in (reference, fused):
        g = torch.autograd.grad((f() * probe).sum(), [x, vectors, weights], create_graph=True)
        second = torch.autograd.grad(sum((t**2).sum() for t in g), [x, vectors, weights])
        grads.append([t.detach() for t in (*g, *second)])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10)


def test_float32_and_no_edges():
    tp, conv, sender, receiver, x, vectors, weights, sh = _setup("4x0e+4x1o", 2, 7, 30, torch.float32)
    y = o3.spherical_harmonics(sh, vectors, normalize=True)
    ref = scatter_sum(tp(x[sender], y, weights), receiver, len(x))
    table = NeighborTable.build(sender, receiver, len(x))
    out = conv(x, table.gather_edges(y), table.gather_edges(weights), table)
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-5)
    tp, conv, sender, receiver, x, vectors, weights, sh = _setup("4x0e+4x1o", 2, 3, 0, torch.float64)
    y = o3.spherical_harmonics(sh, vectors, normalize=True)
    table = NeighborTable.build(sender, receiver, len(x))
    out = conv(x, table.gather_edges(y), table.gather_edges(weights), table)
    assert out.shape == (3, tp.irreps_out.dim) and torch.all(out == 0)


def test_neighbor_table_lists_every_edge_once():
    receiver = torch.tensor([2, 0, 2, 2, 1, 0])
    sender = torch.tensor([0, 1, 1, 3, 2, 3])
    table = NeighborTable.build(sender, receiver, 4)
    assert table.edge.shape == (4, 3)
    real = table.edge[table.edge < 6]
    assert sorted(real.tolist()) == list(range(6))
    for node in range(4):
        slots = table.edge[node][table.edge[node] < 6]
        assert torch.all(receiver[slots] == node)
        assert torch.equal(table.sender[node][: len(slots)], sender[slots])


def test_rejects_non_uvu_instructions():
    irreps = o3.Irreps("2x0e+2x1o")
    tp = o3.FullyConnectedTensorProduct(irreps, "1x0e+1x1o", irreps, shared_weights=False, internal_weights=False)
    with pytest.raises(ValueError, match="uvu"):
        NeighborConvolution(tp)
