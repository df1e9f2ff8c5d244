"""The Clifford algebra Cl(p, q) over a diagonal metric, with its Cayley table built from blades.

A basis blade e_A = e_{a1} e_{a2} ⋯ (a1 < a2 < ⋯) is stored as the bitmap A (bit a set when
e_a is a factor). The product of two blades is ± Π(metric of shared vectors) · e_{A XOR B}, the
sign counting the transpositions needed to bring e_A e_B into canonical order. Blades are ordered
by grade, then lexicographically: for Cl(3, 0), [1, e1, e2, e3, e12, e13, e23, e123].

Multivectors are tensors ``[..., 2^n]`` of blade coefficients. The geometric product is
``einsum("...i,ijk,...k->...j", a, cayley, b)``; grade involution multiplies grade k by (−1)^k,
reversion by (−1)^{k(k−1)/2}. The quadratic form q(x) = ⟨β(x) x⟩₀ (β the reversion) restricted
to one grade is invariant under the Clifford group; for a Euclidean metric it is the sum of
squared coefficients of that grade.

References:
    Ruhe, Brandstetter, Forré, "Clifford Group Equivariant Neural Networks" (NeurIPS 2023),
    Sections 3–4 (twisted conjugation, grade-wise invariants).
    Dorst, Fontijne, Mann, "Geometric Algebra for Computer Science" (2007), Section 19.1
    (bitmap representation of blades and the reordering sign).
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn

from molnet.errors import ConfigError

#: ε in the smooth norm (q² + ε)^{1/4}: every norm is smooth at zero, with curvature of order
#: ε^{-1/2} there. Features are O(1) after layer norms; ε = 1e-2 (smoothing below |x| ≈ 0.3) keeps
#: the third derivative of the energy small near planar or linear geometries, where a grade
#: vanishes (with 1e-4 the central-difference error of untrained AcAc forces at h = 1e-4 Å was
#: about 1000× larger).
NORM_EPS = 1e-2


def reordering_sign(a: int, b: int) -> int:
    """Sign (±1) of reordering the vector factors of blade bitmap ``a`` times blade bitmap ``b``."""
    swaps = 0
    a >>= 1
    while a:
        swaps += bin(a & b).count("1")
        a >>= 1
    return -1 if swaps % 2 else 1


def smooth_norm(q: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """(q² + ε)^{1/4}: ≈ √|q| for |q| ≫ √ε, smooth everywhere (also for indefinite metrics)."""
    return (q * q + eps) ** 0.25


class CliffordAlgebra(nn.Module):
    """Cl(p, q) for the diagonal ``metric`` (squares of the basis vectors, e.g. ``(1, 1, 1)``).

    Constants are non-persistent buffers built in torch's default dtype, so model files carry
    no copy of them.

    Shapes:
        - multivectors: ``[..., dim]`` with ``dim = 2^n``; grade ``k`` occupies
          ``slice(grade_offsets[k], grade_offsets[k + 1])``
        - ``cayley``: ``[dim, dim, dim]``, ``(a b)_j = Σ_ik a_i cayley[i, j, k] b_k``

    Examples
    --------
    >>> algebra = CliffordAlgebra((1.0, 1.0, 1.0))
    >>> algebra.dim, algebra.num_grades, algebra.blade_names()[4]
    (8, 4, 'e12')
    """

    def __init__(self, metric: Sequence[float]) -> None:
        super().__init__()
        metric = [float(m) for m in metric]
        if not 1 <= len(metric) <= 6:
            raise ConfigError(f"the metric must have 1..6 basis vectors, got {len(metric)}")
        self.metric = tuple(metric)
        self.n = len(metric)
        self.dim = 2**self.n
        self.num_grades = self.n + 1
        # blades ordered by grade, then lexicographically by their vector indices
        self.bitmaps = [
            sum(1 << a for a in combo) for k in range(self.n + 1) for combo in itertools.combinations(range(self.n), k)
        ]
        index_of = {b: i for i, b in enumerate(self.bitmaps)}
        grades = [bin(b).count("1") for b in self.bitmaps]
        self.grade_sizes = [math.comb(self.n, k) for k in range(self.num_grades)]
        self.grade_offsets = [0, *itertools.accumulate(self.grade_sizes)]

        dtype = torch.get_default_dtype()
        cayley = torch.zeros(self.dim, self.dim, self.dim, dtype=dtype)
        for i, a in enumerate(self.bitmaps):
            for k, b in enumerate(self.bitmaps):
                factor = float(reordering_sign(a, b))
                for v in range(self.n):
                    if (a & b) >> v & 1:
                        factor *= metric[v]
                cayley[i, index_of[a ^ b], k] = factor
        grade_t = torch.tensor(grades, dtype=torch.long)
        self.register_buffer("cayley", cayley, persistent=False)
        self.register_buffer("grade_index", grade_t, persistent=False)
        self.register_buffer("involution_signs", (-1.0) ** grade_t.to(dtype), persistent=False)
        self.register_buffer("reversion_signs", (-1.0) ** (grade_t * (grade_t - 1) // 2).to(dtype), persistent=False)
        # ⟨β(e_i) e_i⟩₀ per blade: the diagonal of the invariant bilinear form
        form = self.reversion_signs * cayley[torch.arange(self.dim), 0, torch.arange(self.dim)]
        self.register_buffer("form_diagonal", form, persistent=False)
        onehot = torch.nn.functional.one_hot(grade_t, self.num_grades).to(dtype)  # [dim, G]
        # matrices, so that per-grade sums and per-grade broadcasts are single matmuls
        self.register_buffer("grade_form", onehot * form[:, None], persistent=False)  # [dim, G]
        self.register_buffer("grade_expand", onehot.T.contiguous(), persistent=False)  # [G, dim]
        # x ↦ [⟨x⟩₀, q(⟨x⟩₁), …, q(⟨x⟩_n)] as x @ scalar_pick + (x * x) @ higher_form (no slicing)
        scalar_pick = torch.zeros(self.dim, self.num_grades, dtype=dtype)
        scalar_pick[0, 0] = 1.0  # blade 0 is the scalar
        self.register_buffer("scalar_pick", scalar_pick, persistent=False)  # [dim, G]
        self.register_buffer("higher_form", self.grade_form * (grade_t != 0).to(dtype)[:, None], persistent=False)
        # grade triples (i, j → k) with at least one non-zero Cayley entry, as [num_grades]^3 bool
        paths = torch.zeros(self.num_grades, self.num_grades, self.num_grades, dtype=torch.bool)
        nz = cayley.nonzero()
        paths[grade_t[nz[:, 0]], grade_t[nz[:, 1]], grade_t[nz[:, 2]]] = True
        self.register_buffer("product_paths", paths, persistent=False)  # [left grade, out grade, right grade]
        # the dim² terms x_i y_k of a product, term q = i·dim + k: its sign and its grade triple
        left, right = torch.arange(self.dim).repeat_interleave(self.dim), torch.arange(self.dim).repeat(self.dim)
        out = torch.tensor([index_of[self.bitmaps[i] ^ self.bitmaps[k]] for i, k in zip(left.tolist(), right.tolist())])
        self.register_buffer("term_sign", cayley[left, out, right], persistent=False)  # [dim²]
        path_id = torch.full_like(paths, -1, dtype=torch.long)
        path_id[paths] = torch.arange(int(paths.sum()))
        term_path = path_id[grade_t[left], grade_t[out], grade_t[right]]
        self.register_buffer("term_path", term_path, persistent=False)  # [dim²]
        term_output = torch.nn.functional.one_hot(out, self.dim).to(dtype)
        self.register_buffer("term_output", term_output, persistent=False)  # [dim², dim]

    # --- bookkeeping -------------------------------------------------------------------------
    def blade_names(self) -> list[str]:
        """Human-readable blade names (``'1'``, ``'e1'``, ``'e12'``, …) in storage order."""
        return ["1" if b == 0 else "e" + "".join(str(v + 1) for v in range(self.n) if b >> v & 1) for b in self.bitmaps]

    def grade_slice(self, k: int) -> slice:
        """The blade positions of grade ``k``."""
        if not 0 <= k <= self.n:
            raise ValueError(f"grade must be 0..{self.n}, got {k}")
        return slice(self.grade_offsets[k], self.grade_offsets[k + 1])

    def embed_grade(self, values: torch.Tensor, k: int) -> torch.Tensor:
        """Multivectors ``[..., dim]`` with ``values`` ``[..., C(n, k)]`` in grade ``k``, zero elsewhere."""
        if values.shape[-1] != self.grade_sizes[k]:
            raise ValueError(f"grade {k} has {self.grade_sizes[k]} blades, got {values.shape[-1]} values")
        out = values.new_zeros(values.shape[:-1] + (self.dim,))
        out[..., self.grade_slice(k)] = values
        return out

    # --- products and involutions ---------------------------------------------------------------
    def geometric_product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a b for broadcastable multivectors ``[..., dim]``."""
        return torch.einsum("...i,ijk,...k->...j", a, self.cayley, b)

    def grade_projection(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """⟨x⟩_k: keep grade ``k``, zero the rest."""
        out = torch.zeros_like(x)
        out[..., self.grade_slice(k)] = x[..., self.grade_slice(k)]
        return out

    def reverse(self, x: torch.Tensor) -> torch.Tensor:
        """β(x): grade k times (−1)^{k(k−1)/2}."""
        return x * self.reversion_signs

    def grade_involution(self, x: torch.Tensor) -> torch.Tensor:
        """α(x): grade k times (−1)^k."""
        return x * self.involution_signs

    def weighted_product(self, x: torch.Tensor, y: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """Channel-wise product (x ⋆ y)_{cj} = Σ_{i,k: e_i e_k ∝ e_j} coefficients[c, i·dim + k] x_{ci} y_{ck}.

        With coefficients = Cayley sign × a weight per grade triple this is the steerable
        geometric product. Evaluated as the dim² products x_i y_k (each lands in exactly one
        blade), weighted, then summed into their blades by one matrix product.

        Shapes:
            - x, y: ``[..., C, dim]``; coefficients ``[C, dim²]``; output ``[..., C, dim]``
        """
        terms = (x[..., :, None] * y[..., None, :]).flatten(-2)  # [..., C, dim²]
        return (terms * coefficients) @ self.term_output

    # --- invariants -----------------------------------------------------------------------------
    def qs(self, x: torch.Tensor) -> torch.Tensor:
        """q(⟨x⟩_k) = ⟨β(⟨x⟩_k) ⟨x⟩_k⟩₀ for every grade: ``[..., dim]`` → ``[..., num_grades]``."""
        return (x * x) @ self.grade_form

    def gate_invariants(self, x: torch.Tensor) -> torch.Tensor:
        """[⟨x⟩₀, q(⟨x⟩₁), …, q(⟨x⟩_n)]: ``[..., dim]`` → ``[..., num_grades]``."""
        return x @ self.scalar_pick + (x * x) @ self.higher_form

    def q(self, x: torch.Tensor) -> torch.Tensor:
        """q(x) = ⟨β(x) x⟩₀ of the whole multivector ``[..., dim]`` → ``[...]``."""
        return (x * x) @ self.form_diagonal

    def norms(self, x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
        """Smooth grade norms (q_k² + ε)^{1/4}: ``[..., dim]`` → ``[..., num_grades]``."""
        return smooth_norm(self.qs(x), eps)

    # --- group action (used to test equivariance) ------------------------------------------------
    def versor_inverse(self, w: torch.Tensor) -> torch.Tensor:
        """w⁻¹ = β(w) / (w β(w)) for a versor ``w`` ``[..., dim]`` (w β(w) is a non-zero scalar)."""
        norm = self.geometric_product(w, self.reverse(w))[..., :1]  # [..., 1]
        return self.reverse(w) / norm

    def versor_action(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Twisted conjugation ρ(w)(x) = w x^{(w)} w⁻¹ (x^{(w)} = α(x) for odd w, x for even w).

        ``w`` ``[dim]`` must be a versor (a product of vectors), hence of one parity. For a unit
        vector v, ρ(v) reflects every vector in the hyperplane orthogonal to v; on grade k it
        acts as the k-th exterior power of that orthogonal map.
        """
        odd_blades = self.grade_index % 2 == 1
        if bool((w[~odd_blades] == 0).all()):
            xw = self.grade_involution(x)
        elif bool((w[odd_blades] == 0).all()):
            xw = x
        else:
            raise ValueError("a versor has a single parity; w has both even and odd parts")
        return self.geometric_product(self.geometric_product(w, xw), self.versor_inverse(w))

    def orthogonal_action(self, matrix: torch.Tensor) -> torch.Tensor:
        """The outermorphism of an orthogonal ``[n, n]`` matrix: a ``[dim, dim]`` block-diagonal map.

        Grade k acts by the k-th compound matrix (minors of ``matrix``), so vectors rotate and
        reflect with ``matrix``, bivectors as oriented planes, the pseudoscalar by det(matrix).
        """
        out = torch.zeros(self.dim, self.dim, dtype=matrix.dtype, device=matrix.device)
        vecs = [[v for v in range(self.n) if b >> v & 1] for b in self.bitmaps]
        for i, rows in enumerate(vecs):
            for j, cols in enumerate(vecs):
                if len(rows) == len(cols):
                    out[i, j] = torch.linalg.det(matrix[rows][:, cols]) if rows else 1.0
        return out

    def extra_repr(self) -> str:
        return f"metric={self.metric}, dim={self.dim}"
