"""Radial machinery shared by every family: Bessel basis, polynomial envelope, radial MLP.

References:
    Klicpera, Groß, Günnemann, "Directional Message Passing for Molecular Graphs" (ICLR 2020),
    eq. 7 (Bessel basis) and eq. 8 (polynomial envelope), as used by MACE.
"""

from __future__ import annotations

import math

import torch
from e3nn.nn import FullyConnectedNet
from torch import nn


class BesselBasis(nn.Module):
    """√(2/r_max) · sin(nπ r / r_max) / r for n = 1..num_basis, fixed frequencies.

    Shapes:
        - input: lengths ``[n_edges, 1]`` Å
        - output: ``[n_edges, num_basis]``
    """

    def __init__(self, r_max: float, num_basis: int = 8) -> None:
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.r_max = float(r_max)
        self.register_buffer(
            "frequencies", math.pi / r_max * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        )
        self.prefactor = math.sqrt(2.0 / r_max)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.prefactor * torch.sin(self.frequencies * lengths) / lengths

    def __repr__(self) -> str:
        return f"{type(self).__name__}(r_max={self.r_max}, num_basis={len(self.frequencies)})"


class PolynomialEnvelope(nn.Module):
    """u(x) = 1 − (p+1)(p+2)/2·x^p + p(p+2)·x^{p+1} − p(p+1)/2·x^{p+2}, x = r/r_max; 0 beyond r_max.

    u and its first two derivatives vanish at r_max, so energies and forces are continuous
    when a neighbor crosses the cutoff.

    Shapes:
        - input: lengths ``[n_edges, 1]`` Å; output ``[n_edges, 1]``
    """

    def __init__(self, r_max: float, p: int = 5) -> None:
        super().__init__()
        if p < 2:
            raise ValueError(f"the envelope exponent p must be >= 2, got {p}")
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.of(lengths / self.r_max, self.p)

    @staticmethod
    def of(x: torch.Tensor, p: int) -> torch.Tensor:
        """u(x) for x = r/r_cut (any shape; r_cut may differ per edge)."""
        u = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        return u * (x < 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(r_max={self.r_max}, p={self.p})"


class RadialEmbedding(nn.Module):
    """Bessel basis times the envelope: the edge-length features every family uses.

    Shapes:
        - input: lengths ``[n_edges, 1]`` Å
        - output: ``[n_edges, num_basis]`` (zero for r ≥ r_max)
    """

    def __init__(self, r_max: float, num_basis: int = 8, p: int = 5) -> None:
        super().__init__()
        self.basis = BesselBasis(r_max, num_basis)
        self.envelope = PolynomialEnvelope(r_max, p)
        self.num_basis = num_basis

    def forward(self, lengths: torch.Tensor, basis_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``basis_lengths``: transformed lengths for the basis (e.g. Agnesi's); the envelope acts on ``lengths``."""
        return self.basis(lengths if basis_lengths is None else basis_lengths) * self.envelope(lengths)


def radial_mlp(num_basis: int, hidden: list[int], num_out: int) -> FullyConnectedNet:
    """e3nn's bias-free MLP ``[num_basis → hidden… → num_out]`` with SiLU, variance-normalised."""
    return FullyConnectedNet([num_basis, *hidden, num_out], torch.nn.functional.silu)
