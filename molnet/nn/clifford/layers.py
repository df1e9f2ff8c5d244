"""Clifford-group-equivariant layers on multivector channels.

Every layer maps ``[..., C_in, dim]`` multivector features to ``[..., C_out, dim]`` and commutes
with the Clifford group's action ρ(w) applied to every channel (for Cl(3, 0): all of O(3),
reflections included): linear maps act within a grade, products use the geometric product, and
nonlinearities and normalisations only rescale by invariants (scalar parts and q per grade).

References:
    Ruhe, Brandstetter, Forré, "Clifford Group Equivariant Neural Networks" (NeurIPS 2023):
    Section 4 (grade-wise linear layers, eq. 12; steerable geometric product layer, eq. 13–14;
    invariant-gated nonlinearity and normalisation, Section 4.3).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from molnet.nn.clifford.algebra import CliffordAlgebra, smooth_norm


class MVLinear(nn.Module):
    """y_o = Σ_c W[o, c, grade] x_c per grade, plus a bias on the scalar blade only.

    Shapes:
        - input: ``[..., in_channels, dim]``; output ``[..., out_channels, dim]``
    """

    def __init__(self, algebra: CliffordAlgebra, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.algebra = algebra
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(algebra.num_grades, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.in_channels))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight[self.algebra.grade_index]  # [dim, in, out]
        out = torch.einsum("...ci,ico->...oi", x, weight)  # [..., out, dim]
        if self.bias is not None:
            out = out + scalar_multivector(self.bias, self.algebra.dim)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, bias={self.bias is not None}"


def scalar_multivector(s: torch.Tensor, dim: int) -> torch.Tensor:
    """Multivectors ``[..., dim]`` with scalar part ``s`` ``[...]`` and nothing else."""
    return torch.nn.functional.pad(s[..., None], (0, dim - 1))


class MVSiLU(nn.Module):
    """x_k ← σ(a_k · inv_k + b_k) x_k per channel and grade; inv_0 = ⟨x⟩₀, inv_k = q(⟨x⟩_k).

    Shapes:
        - input and output: ``[..., channels, dim]``
    """

    def __init__(self, algebra: CliffordAlgebra, channels: int) -> None:
        super().__init__()
        self.algebra = algebra
        self.a = nn.Parameter(torch.ones(channels, algebra.num_grades))
        self.b = nn.Parameter(torch.zeros(channels, algebra.num_grades))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.a * self.algebra.gate_invariants(x) + self.b)  # [..., C, G]
        return x * (gates @ self.algebra.grade_expand)


class GradeNormalization(nn.Module):
    """x_k ← x_k / (s (‖x_k‖ − 1) + 1), s = σ(a) learned per channel and grade (a = 0: halfway).

    ‖·‖ is the smooth norm (q² + ε)^{1/4}, so the divisor stays ≥ 1 − s(1 − ε^{1/4}) > 0.

    Shapes:
        - input and output: ``[..., channels, dim]``
    """

    def __init__(self, algebra: CliffordAlgebra, channels: int) -> None:
        super().__init__()
        self.algebra = algebra
        self.a = nn.Parameter(torch.zeros(channels, algebra.num_grades))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.a)  # [C, G]
        divisor = s * (self.algebra.norms(x) - 1.0) + 1.0  # [..., C, G]
        return x / (divisor @ self.algebra.grade_expand)


class SteerableGeometricProduct(nn.Module):
    """(Linear(x) + Σ_{ik} W[c, g_i, g_j, g_k] cayley[i, j, k] x_{c,i} y_{c,k}) / √2.

    y = GradeNormalization(Linear(x)); one learned weight per channel and per grade triple
    (i, j → k) with a non-zero Cayley block (20 triples in Cl(3, 0)), evaluated by
    :meth:`CliffordAlgebra.weighted_product`.

    Shapes:
        - input and output: ``[..., channels, dim]``
    """

    def __init__(self, algebra: CliffordAlgebra, channels: int) -> None:
        super().__init__()
        self.algebra = algebra
        self.channels = channels
        self.linear_left = MVLinear(algebra, channels, channels, bias=True)
        self.linear_right = MVLinear(algebra, channels, channels, bias=False)
        self.normalization = GradeNormalization(algebra, channels)
        self.num_paths = int(algebra.product_paths.sum())
        self.weight = nn.Parameter(torch.empty(channels, self.num_paths))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.algebra.num_grades))

    def product_weight(self) -> torch.Tensor:
        """Cayley table weighted per channel and grade triple, ``[channels, dim, dim, dim]``
        (for inspection: (x W y)_j = Σ_ik x_i W[c, i, j, k] y_k)."""
        a = self.algebra
        return (
            torch.einsum("cq,qj->cqj", self.coefficients(), a.term_output)
            .reshape(self.channels, a.dim, a.dim, a.dim)
            .transpose(2, 3)
        )

    def coefficients(self) -> torch.Tensor:
        """Sign × weight of every term x_i y_k, ``[channels, dim²]`` (term i·dim + k)."""
        return self.weight[:, self.algebra.term_path] * self.algebra.term_sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalization(self.linear_right(x))  # [..., C, dim]
        product = self.algebra.weighted_product(x, y, self.coefficients())  # [..., C, dim]
        return (self.linear_left(x) + product) / math.sqrt(2.0)


class MVLayerNorm(nn.Module):
    """x_c ← a_c x_c / mean_c ‖x_c‖ with ‖·‖ the smooth norm of the whole multivector.

    Shapes:
        - input and output: ``[..., channels, dim]``
    """

    def __init__(self, algebra: CliffordAlgebra, channels: int) -> None:
        super().__init__()
        self.algebra = algebra
        self.a = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = smooth_norm(self.algebra.q(x)).mean(dim=-1)  # [...]
        return self.a[:, None] * x / norm[..., None, None]


class CliffordBlock(nn.Sequential):
    """MVSiLU → SteerableGeometricProduct → MVLayerNorm, after an optional MVLinear (one CEMLP
    layer of the paper; without the linear when the caller forms the pre-activation itself).

    Shapes:
        - input: ``[..., in_channels, dim]``; output ``[..., out_channels, dim]``
    """

    def __init__(self, algebra: CliffordAlgebra, in_channels: int | None, out_channels: int) -> None:
        linear = [MVLinear(algebra, in_channels, out_channels)] if in_channels is not None else []
        super().__init__(
            *linear,
            MVSiLU(algebra, out_channels),
            SteerableGeometricProduct(algebra, out_channels),
            MVLayerNorm(algebra, out_channels),
        )


class CliffordMLP(nn.Sequential):
    """``num_blocks`` :class:`CliffordBlock` s with linears: in → hidden → … → out.

    Shapes:
        - input: ``[..., in_channels, dim]``; output ``[..., out_channels, dim]``
    """

    def __init__(
        self, algebra: CliffordAlgebra, in_channels: int, hidden: int, out_channels: int, num_blocks: int = 1
    ) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        sizes = [in_channels] + [hidden] * (num_blocks - 1) + [out_channels]
        super().__init__(*(CliffordBlock(algebra, i, o) for i, o in zip(sizes[:-1], sizes[1:])))
