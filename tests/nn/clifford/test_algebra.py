import itertools

import pytest
import torch

from molnet.nn.clifford.algebra import CliffordAlgebra, reordering_sign
from molnet.nn.dtypes import default_dtype


@pytest.fixture
def cl3():
    with default_dtype(torch.float64):
        return CliffordAlgebra((1.0, 1.0, 1.0))


def _blade(algebra, name):
    return torch.eye(algebra.dim, dtype=torch.float64)[algebra.blade_names().index(name)]


def _vector(algebra, v):
    return algebra.embed_grade(torch.as_tensor(v, dtype=torch.float64), 1)


def test_blades_and_grades(cl3):
    assert cl3.blade_names() == ["1", "e1", "e2", "e3", "e12", "e13", "e23", "e123"]
    assert cl3.grade_index.tolist() == [0, 1, 1, 1, 2, 2, 2, 3]
    assert int(cl3.product_paths.sum()) == 20  # non-zero grade triples in 3-D


def test_reordering_sign_by_hand():
    assert reordering_sign(0b10, 0b01) == -1  # e2 e1 = -e12
    assert reordering_sign(0b01, 0b10) == 1
    assert reordering_sign(0b011, 0b100) == 1  # e12 e3 = e123
    assert reordering_sign(0b110, 0b001) == 1  # e23 e1 = e1 e23 (two swaps)
    assert reordering_sign(0b101, 0b010) == -1  # e13 e2 = -e123


def test_hand_checked_identities(cl3):
    gp = cl3.geometric_product
    e1, e2, e3, e12, e123 = (_blade(cl3, n) for n in ("e1", "e2", "e3", "e12", "e123"))
    torch.testing.assert_close(gp(e1, e2), -gp(e2, e1))
    torch.testing.assert_close(gp(e1, e2), e12)
    torch.testing.assert_close(gp(e12, e12), -_blade(cl3, "1"))  # (e1e2)^2 = -1
    torch.testing.assert_close(gp(gp(e1, e2), e3), e123)
    torch.testing.assert_close(gp(e123, e123), -_blade(cl3, "1"))
    v = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    torch.testing.assert_close(gp(_vector(cl3, v), _vector(cl3, v)), (v @ v) * _blade(cl3, "1"))


def test_signature_enters_squares():
    with default_dtype(torch.float64):
        algebra = CliffordAlgebra((1.0, -1.0))  # Cl(1, 1)
    e1, e2, one = (torch.eye(4, dtype=torch.float64)[i] for i in (1, 2, 0))
    torch.testing.assert_close(algebra.geometric_product(e1, e1), one)
    torch.testing.assert_close(algebra.geometric_product(e2, e2), -one)
    e12 = algebra.geometric_product(e1, e2)
    torch.testing.assert_close(algebra.geometric_product(e12, e12), one)  # e1e2e1e2 = -e1e1e2e2 = +1


def test_associativity_and_distributivity(cl3):
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    gp = cl3.geometric_product
    torch.testing.assert_close(gp(gp(a, b), c), gp(a, gp(b, c)), atol=1e-12, rtol=0)
    torch.testing.assert_close(gp(a, b + c), gp(a, b) + gp(a, c), atol=1e-12, rtol=0)


def test_involutions(cl3):
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(4, 8, generator=g, dtype=torch.float64) for _ in range(2))
    gp = cl3.geometric_product
    torch.testing.assert_close(cl3.reverse(gp(a, b)), gp(cl3.reverse(b), cl3.reverse(a)), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        cl3.grade_involution(gp(a, b)), gp(cl3.grade_involution(a), cl3.grade_involution(b)), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(cl3.reverse(cl3.reverse(a)), a)
    torch.testing.assert_close(cl3.grade_involution(cl3.grade_involution(a)), a)
    assert cl3.reversion_signs.tolist() == [1, 1, 1, 1, -1, -1, -1, -1]
    parts = sum(cl3.grade_projection(a, k) for k in range(4))
    torch.testing.assert_close(parts, a)


def test_quadratic_form_is_euclidean_per_grade(cl3):
    x = torch.randn(3, 8, dtype=torch.float64)
    full = cl3.geometric_product(cl3.reverse(x), x)[..., 0]
    torch.testing.assert_close(cl3.q(x), full, atol=1e-12, rtol=0)
    expected = torch.stack([x[:, s].pow(2).sum(-1) for s in (slice(0, 1), slice(1, 4), slice(4, 7), slice(7, 8))], -1)
    torch.testing.assert_close(cl3.qs(x), expected)


def test_versor_action_is_outermorphism(cl3):
    """ρ(w) of a product of unit vectors acts on grade k by the k-th compound matrix of R."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 8, generator=g, dtype=torch.float64)
    for n_vectors in (1, 2, 3):
        vs = torch.nn.functional.normalize(torch.randn(n_vectors, 3, generator=g, dtype=torch.float64), dim=-1)
        w, rot = _blade(cl3, "1"), torch.eye(3, dtype=torch.float64)
        for v in vs:
            w = cl3.geometric_product(w, _vector(cl3, v))
            rot = rot @ (torch.eye(3, dtype=torch.float64) - 2 * torch.outer(v, v))
        action = cl3.orthogonal_action(rot)
        torch.testing.assert_close(cl3.versor_action(w, x), x @ action.T, atol=1e-12, rtol=0)
        assert abs(float(action[7, 7]) - float(torch.linalg.det(rot))) < 1e-12  # pseudoscalar: det R
        # the action is an algebra automorphism: ρ(w)(ab) = ρ(w)(a) ρ(w)(b)
        a, b = x[:3], x[3:]
        lhs = cl3.versor_action(w, cl3.geometric_product(a, b))
        rhs = cl3.geometric_product(cl3.versor_action(w, a), cl3.versor_action(w, b))
        torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)


def test_cayley_matches_bitmap_rule_everywhere(cl3):
    """Every entry of the table: blade e_A e_B = sign · e_{A xor B}, in Cl(3,0)."""
    for (i, a), (k, b) in itertools.product(enumerate(cl3.bitmaps), repeat=2):
        column = cl3.cayley[i, :, k]
        j = cl3.bitmaps.index(a ^ b)
        assert int(column.abs().sum()) == 1 and int(column[j]) == reordering_sign(a, b)
