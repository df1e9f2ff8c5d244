"""The symmetric contraction on monomials against its definition, and the reuse of folded weights."""

import string

import pytest
import torch
from e3nn import o3

from molnet.nn.dtypes import default_dtype
from molnet.nn.symmetric_contraction import SymmetricContraction, coupling_tensors


def definition(contraction: SymmetricContraction, a: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """B[n, c, m] = Σ_ν Σ_p W_{z_n,p,c} Σ_{i_1…i_ν} U^{(ν)}[m, i_1…i_ν, p] Π_t A[n, c, i_t], term by term."""
    blocks = []
    for k, (_, ir) in enumerate(contraction.irreps_out):
        out = a.new_zeros(len(a), contraction.num_channels, ir.dim)
        for order, w_index in contraction._layout[k]:
            if w_index < 0:
                continue
            u = coupling_tensors(str(contraction.irreps_in), str(ir), order, contraction.basis).to(a.dtype)
            slots = string.ascii_uppercase[:order]
            # A ⊗ … ⊗ A per node and channel: [n, c, D, …, D]
            power = torch.einsum(",".join(f"nc{s}" for s in slots) + f"->nc{slots}", *([a] * order))
            w = contraction.weights[w_index][species]  # [n, P, C]
            out = out + torch.einsum(f"m{slots}p,nc{slots},npc->ncm", u, power, w)
        blocks.append(out.reshape(len(a), -1))
    return torch.cat(blocks, dim=1)


CASES = [
    ("0e+1o+2e+3o", "6x0e+6x1o", 3, "reduced"),
    ("0e+1o+2e", "4x0e+4x1o+4x2e", 3, "coupled"),
    ("0e+1o", "3x0e+3x1o", 4, "reduced"),
    ("0e+1o+2e", "5x0e+5x1o", 2, "reduced"),
    ("0e+1o", "5x0e+5x1o", 1, "coupled"),
    # parity blocks: no odd component of A; odd output first; no even component
    ("0e", "4x0e", 3, "reduced"),
    ("0e+1o+2e+3o", "3x1o+3x2e", 3, "reduced"),
    ("1o", "3x0e+3x1o", 3, "coupled"),
]


@pytest.mark.parametrize(("irreps_in", "irreps_out", "correlation", "basis"), CASES)
def test_contraction_equals_its_definition_with_gradients(irreps_in, irreps_out, correlation, basis):
    """Elements absent, an element with one atom, atoms in no element order; values and ∂/∂A."""
    torch.manual_seed(0)
    with default_dtype(torch.float64):
        contraction = SymmetricContraction(o3.Irreps(irreps_in), o3.Irreps(irreps_out), correlation, 4, basis)
        a = torch.randn(9, contraction.num_channels, o3.Irreps(irreps_in).dim, requires_grad=True)
    species = torch.tensor([2, 0, 2, 2, 0, 3, 0, 2, 0])  # element 1 absent, element 3 once
    mine, reference = contraction(a, species), definition(contraction, a, species)
    torch.testing.assert_close(mine, reference, atol=1e-12, rtol=1e-12)
    probe = torch.randn_like(mine)
    (g_mine,) = torch.autograd.grad((mine * probe).sum(), a)
    (g_reference,) = torch.autograd.grad((reference * probe).sum(), a)
    torch.testing.assert_close(g_mine, g_reference, atol=1e-12, rtol=1e-12)
    assert contraction(a[:0], species[:0]).shape == (0, mine.shape[1])


def _contraction() -> SymmetricContraction:
    torch.manual_seed(1)
    with default_dtype(torch.float64):
        return SymmetricContraction(o3.Irreps("0e+1o+2e"), o3.Irreps("4x0e+4x1o"), 3, 3)


def test_reused_weights_follow_every_change_of_the_weights():
    contraction = _contraction()
    a = torch.randn(6, 4, 9, dtype=torch.float64)
    species = torch.tensor([0, 1, 0, 1, 1, 0])
    first = contraction(a, species, constant_weights=True)
    torch.testing.assert_close(first, contraction(a, species), atol=1e-13, rtol=0)
    assert contraction(a, species, constant_weights=True) is not first  # a new output from the kept weights

    optimiser = torch.optim.SGD(contraction.parameters(), lr=0.1)  # an in-place step
    contraction(a, species).pow(2).sum().backward()
    optimiser.step()
    torch.testing.assert_close(contraction(a, species, constant_weights=True), contraction(a, species))
    assert not torch.allclose(contraction(a, species, constant_weights=True), first)

    state = _contraction().state_dict()  # load_state_dict copies in place
    contraction.load_state_dict(state)
    torch.testing.assert_close(contraction(a, species, constant_weights=True), first, atol=1e-13, rtol=0)

    other = torch.tensor([2, 1, 2, 1, 1, 2])  # another set of elements present
    torch.testing.assert_close(contraction(a, other, constant_weights=True), contraction(a, other))

    single = contraction.float()  # new storage and dtype
    torch.testing.assert_close(single(a.float(), species, constant_weights=True), first.float(), atol=1e-5, rtol=1e-5)


def test_weight_gradients_flow_unless_the_weights_are_constant():
    contraction = _contraction()
    a = torch.randn(5, 4, 9, dtype=torch.float64)
    species = torch.tensor([0, 1, 2, 1, 0])
    contraction(a, species, constant_weights=True)  # fill the kept weights first
    contraction(a, species).sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in contraction.weights)
    assert not contraction(a, species, constant_weights=True).requires_grad


def reduced_tensor_products(irreps: str, ir: str, order: int) -> torch.Tensor:
    """e3nn's ``ReducedTensorProducts`` basis with full slot symmetry, ``[2L+1, D…, P]`` (P = 0 where e3nn raises)."""
    indices = string.ascii_lowercase[:order]
    swaps = [indices[:k] + indices[k + 1] + indices[k] + indices[k + 2 :] for k in range(order - 1)]
    shape = (o3.Irrep(ir).dim,) + (o3.Irreps(irreps).dim,) * order
    with default_dtype(torch.float64):
        try:
            rtp = o3.ReducedTensorProducts("=".join([indices, *swaps]), filter_ir_out=[ir], **{indices[0]: irreps})
        except ValueError:  # no symmetric coupling reaches ir: e3nn has nothing to concatenate
            return torch.zeros(shape + (0,), dtype=torch.float64)
    n_paths = rtp.irreps_out.count(o3.Irrep(ir))
    return rtp.change_of_basis.reshape((n_paths,) + shape).movedim(0, -1)


@pytest.mark.parametrize(
    ("irreps", "order", "irs"),
    [
        ("0e+1o", 1, ["0e", "1o"]),
        ("0e+1o", 4, ["0e", "1o", "1e", "2e"]),
        ("0e+1o+2e", 2, ["0e", "1o", "1e", "2e", "3o"]),
        ("0e+1o+2e", 3, ["0e", "1o", "2e", "3o", "3e"]),
        ("1o", 3, ["0e", "1o", "3o"]),
        ("0e+1o+2e+3o", 3, ["3o"]),
    ],
)
def test_reduced_basis_is_e3nns_reduced_tensor_products(irreps, order, irs):
    """The reduced basis, found among the chains that end in each output irrep, is e3nn's
    ReducedTensorProducts basis entry for entry (model files store weights in that basis)."""
    for ir in irs:
        expected = reduced_tensor_products(irreps, ir, order)
        got = coupling_tensors(irreps, ir, order, "reduced")
        assert got.shape == expected.shape, ir
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
