"""molnet's Linear equals e3nn's o3.Linear: same parameters, values and gradients."""

import pytest
import torch
from e3nn import o3

from molnet.nn.dtypes import default_dtype
from molnet.nn.linear import ElementGroups, ElementLinear, Linear

CASES = [
    ("8x0e", "5x0e"),
    ("6x0e+6x1o", "6x0e+6x1o"),
    # repeated and interleaved input irreps: runs of adjacent inputs per output, and a lone one
    ("4x0e+3x1o+5x1o+2x2e+7x0e+4x3o", "5x0e+2x1o+3x2e+4x3o"),
    # an output irrep without any input (stays zero) and an input used by nothing
    ("3x0e+2x2e", "4x0e+3x1o"),
    ("3x1o", "0e"),
]


def _pair(irreps_in: str, irreps_out: str):
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        reference = o3.Linear(irreps_in, irreps_out)
        torch.manual_seed(0)
        linear = Linear(irreps_in, irreps_out)
    return reference, linear


@pytest.mark.parametrize("irreps_in,irreps_out", CASES, ids=[f"{a}->{b}" for a, b in CASES])
def test_equals_e3nn_linear(irreps_in, irreps_out):
    reference, linear = _pair(irreps_in, irreps_out)
    assert torch.equal(reference.weight, linear.weight)
    assert linear.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(7, o3.Irreps(irreps_in).dim, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(7, o3.Irreps(irreps_out).dim, dtype=torch.float64)
    values = []
    for module in (reference, linear):
        y = module(x)
        wrt = [x, module.weight] if module.weight.requires_grad else [x]
        # (no instruction: the output is a constant zero)
        grads = torch.autograd.grad((y * probe).sum(), wrt, allow_unused=True) if y.requires_grad else [None] * len(wrt)
        values.append((y, *(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt))))
    for got, want in zip(values[1], values[0]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_no_atoms_and_e3nn_forward_for_other_inputs():
    reference, linear = _pair("4x0e+3x1o", "2x0e+5x1o")
    assert linear(torch.zeros(0, 13, dtype=torch.float64)).shape == (0, 17)
    # extra batch dimensions and external weights run e3nn's own forward
    x = torch.randn(2, 3, 13, dtype=torch.float64)
    torch.testing.assert_close(linear(x), reference(x), rtol=1e-12, atol=1e-12)
    weight = torch.randn(reference.weight_numel, dtype=torch.float64)
    torch.testing.assert_close(linear(x[0], weight), reference(x[0], weight), rtol=1e-12, atol=1e-12)


def test_loads_an_e3nn_linear_state_dict():
    reference, _ = _pair("4x0e+3x1o", "2x0e+5x1o")
    with default_dtype(torch.float64):
        linear = Linear("4x0e+3x1o", "2x0e+5x1o")
    linear.load_state_dict(reference.state_dict())
    x = torch.randn(5, 13, dtype=torch.float64)
    torch.testing.assert_close(linear(x), reference(x), rtol=1e-12, atol=1e-12)


ELEMENT_CASES = [
    ("6x0e", 3, "6x0e+6x1o"),  # MACE's first-layer skip: scalars in, an output irrep without input
    ("5x0e+5x1o", 4, "3x0e+2x1o"),
    ("2x0e+3x1o+2x2e+2x3o", 89, "2x0e+2x1o+2x2e+2x3o"),  # many elements, few present; a dropped input
]


@pytest.mark.parametrize(
    "species",
    [[2, 0, 2, 2, 1, 0, 2, 2], [1], [0, 0, 0], []],
    ids=["uneven groups", "one atom", "one element", "no atoms"],
)
@pytest.mark.parametrize("irreps_in,num_elements,irreps_out", ELEMENT_CASES, ids=[str(c) for c in ELEMENT_CASES])
def test_element_linear_equals_e3nns_product_with_the_one_hot_elements(irreps_in, num_elements, irreps_out, species):
    """ElementLinear.by_element (one map per element present) against e3nn's fully connected
    tensor product with the one-hot elements: values and gradients of inputs and weights."""
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        reference = o3.FullyConnectedTensorProduct(irreps_in, f"{num_elements}x0e", irreps_out)
        torch.manual_seed(0)
        linear = ElementLinear(irreps_in, num_elements, irreps_out)
    assert torch.equal(reference.weight, linear.weight) and linear.state_dict().keys() == reference.state_dict().keys()
    species = torch.tensor(species, dtype=torch.long) * (num_elements // 3 or 1) % num_elements
    x = torch.randn(len(species), o3.Irreps(irreps_in).dim, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(len(species), o3.Irreps(irreps_out).dim, dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(species, num_elements).double()
    results = []
    for y in (reference(x, onehot), linear.by_element(x, ElementGroups.build(species, num_elements))):
        grads = torch.autograd.grad((y * probe).sum(), [x, reference.weight, linear.weight], allow_unused=True)
        results.append((y, grads[0], grads[1] if grads[1] is not None else grads[2]))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
