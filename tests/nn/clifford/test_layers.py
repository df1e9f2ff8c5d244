import pytest
import torch
from scipy.spatial.transform import Rotation

from molnet.nn.clifford.algebra import CliffordAlgebra
from molnet.nn.clifford.layers import (
    CliffordMLP,
    GradeNormalization,
    MVLayerNorm,
    MVLinear,
    MVSiLU,
    SteerableGeometricProduct,
)
from molnet.nn.dtypes import default_dtype

C = 5


def _layers(algebra):
    return {
        "linear": MVLinear(algebra, C, 3),
        "silu": MVSiLU(algebra, C),
        "normalization": GradeNormalization(algebra, C),
        "geometric-product": SteerableGeometricProduct(algebra, C),
        "layer-norm": MVLayerNorm(algebra, C),
        "mlp": CliffordMLP(algebra, C, 6, 4, num_blocks=2),
    }


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    with default_dtype(torch.float64):
        algebra = CliffordAlgebra((1.0, 1.0, 1.0))
        layers = _layers(algebra)
    for layer in layers.values():  # move every parameter away from its initial value
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return algebra, layers


@pytest.mark.parametrize("name", ["linear", "silu", "normalization", "geometric-product", "layer-norm", "mlp"])
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_layer_is_o3_equivariant(setup, name, reflect):
    algebra, layers = setup
    layer = layers[name]
    rot = torch.tensor(Rotation.random(random_state=4).as_matrix())
    if reflect:
        rot = rot @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    action = algebra.orthogonal_action(rot)  # [8, 8]
    x = torch.randn(7, C, 8, dtype=torch.float64)
    out = layer(x)
    torch.testing.assert_close(layer(x @ action.T), out @ action.T, atol=1e-12, rtol=0)
    assert out.abs().max() > 1e-3


def test_versor_sandwich_equivariance_of_geometric_product(setup):
    """Same check with the group acting as a product of three reflections (an odd versor)."""
    algebra, layers = setup
    vs = torch.nn.functional.normalize(torch.randn(3, 3, dtype=torch.float64), dim=-1)
    w = torch.eye(8, dtype=torch.float64)[0]
    for v in vs:
        w = algebra.geometric_product(w, algebra.embed_grade(v, 1))
    x = torch.randn(4, C, 8, dtype=torch.float64)
    layer = layers["geometric-product"]
    torch.testing.assert_close(
        layer(algebra.versor_action(w, x)), algebra.versor_action(w, layer(x)), atol=1e-12, rtol=0
    )


def test_reflection_acts_differently_from_rotation(setup):
    """A reflection flips vectors and the trivector relative to the proper rotation -R."""
    algebra, _ = setup
    rot = torch.tensor(Rotation.random(random_state=5).as_matrix())
    proper, improper = algebra.orthogonal_action(rot), algebra.orthogonal_action(-rot)
    torch.testing.assert_close(improper, proper * algebra.involution_signs)


def test_geometric_product_layer_has_one_weight_per_channel_and_grade_triple(setup):
    algebra, layers = setup
    layer = layers["geometric-product"]
    assert layer.weight.shape == (C, 20)
    w = layer.product_weight()
    assert w.shape == (C, 8, 8, 8)
    assert bool(((w != 0) <= (algebra.cayley != 0)).all())


def test_linear_mixes_channels_within_grades_only(setup):
    algebra, layers = setup
    x = torch.zeros(1, C, 8, dtype=torch.float64)
    x[0, :, 4:7] = torch.randn(C, 3, dtype=torch.float64)  # bivectors only
    out = layers["linear"](x)
    assert out[..., 4:7].abs().max() > 0
    assert out[..., 1:4].abs().max() == 0 and out[..., 7].abs().max() == 0
    # the bias lives on the scalar blade only
    torch.testing.assert_close(out[0, :, 0], layers["linear"].bias)


def test_layers_are_smooth_at_zero_features(setup):
    """Norms are (q^2 + eps)^(1/4): gradients stay finite when a grade vanishes."""
    _, layers = setup
    x = torch.zeros(2, C, 8, dtype=torch.float64)
    x[..., 0] = 1.0
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(layers["mlp"](x).pow(2).sum(), x)
    assert torch.isfinite(g).all()


def test_weighted_product_matches_dense_cayley(setup):
    """The term-wise product equals the dense einsum with the weighted Cayley table, and has
    exact first and second derivatives."""
    algebra, layers = setup
    layer = layers["geometric-product"]
    x, y = torch.randn(3, C, 8, dtype=torch.float64), torch.randn(3, C, 8, dtype=torch.float64)
    dense = torch.einsum("nci,cijk,nck->ncj", x, layer.product_weight(), y)
    torch.testing.assert_close(algebra.weighted_product(x, y, layer.coefficients()), dense, atol=1e-12, rtol=0)
    w = layer.product_weight().detach()
    full = torch.zeros(C, 4, 4, 4, dtype=torch.float64)
    full[:, algebra.product_paths] = layer.weight.detach()
    g = algebra.grade_index
    torch.testing.assert_close(w, algebra.cayley * full[:, g][:, :, g][:, :, :, g])
    xs, ys = (
        torch.randn(2, 2, 8, dtype=torch.float64, requires_grad=True),
        torch.randn(2, 2, 8, dtype=torch.float64, requires_grad=True),
    )
    cs = torch.randn(2, 64, dtype=torch.float64, requires_grad=True)
    fn = lambda a, b, c: algebra.weighted_product(a, b, c)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (xs, ys, cs))
    assert torch.autograd.gradgradcheck(fn, (xs, ys, cs))
