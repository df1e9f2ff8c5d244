"""Short-range pieces of the foundation MACE models: ZBL pair repulsion and the Agnesi distance transform.

Both depend on the atomic numbers of an edge's two atoms through ASE's covalent radii R_cov.

ZBL (Ziegler, Biersack & Littmark, "The Stopping and Range of Ions in Solids", 1985): the
screened nuclear repulsion of every pair,

    V(r) = k Z_i Z_j / r · Σ_m c_m exp(−d_m r/a),   a = A·a₀ / (Z_i^x + Z_j^x),
    c = (0.1818, 0.5099, 0.2802, 0.02817),  d = (3.2, 0.9423, 0.4028, 0.2016),

switched off by the polynomial envelope at r = R_cov(Z_i) + R_cov(Z_j), half to each atom of an
edge. The screening length takes the form and constants mace-torch uses (A = 0.4543, x = 0.300,
k = 14.3996 eV·Å, a₀ = 0.529 Å) so that imported models give identical energies.

Agnesi transform (Witt et al., "ACEpotentials.jl", J. Chem. Phys. 159, 164101 (2023), radial
transforms): the length fed to the radial basis is

    u(r) = 1 / (1 + A (r/r₀)^q / (1 + (r/r₀)^(q−p))),   r₀ = (R_cov(Z_i) + R_cov(Z_j))/2,

with (q, p, A) = (0.9183, 4.5791, 1.0805); the cutoff envelope still acts on r.
"""

from __future__ import annotations

import torch
from ase.data import covalent_radii
from torch import nn

from molnet.nn.radial import PolynomialEnvelope


def _radii() -> torch.Tensor:
    return torch.tensor(covalent_radii, dtype=torch.get_default_dtype())


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energies (eV) from edges; see the module docstring.

    Shapes: ``forward(lengths [E, 1] Å, z_sender [E], z_receiver [E], receiver [E], n_nodes)`` → ``[n_nodes]``.
    """

    def __init__(self, p: int = 5, a_prefactor: float = 0.4543, a_exp: float = 0.300) -> None:
        super().__init__()
        self.p, self.a_prefactor, self.a_exp = int(p), float(a_prefactor), float(a_exp)
        self.register_buffer("covalent_radii", _radii(), persistent=False)
        self.register_buffer("c", torch.tensor([0.1818, 0.5099, 0.2802, 0.02817]), persistent=False)
        self.register_buffer("d", torch.tensor([3.2, 0.9423, 0.4028, 0.2016]), persistent=False)

    def forward(
        self,
        lengths: torch.Tensor,
        z_sender: torch.Tensor,
        z_receiver: torch.Tensor,
        receiver: torch.Tensor,
        n_nodes: int,
    ) -> torch.Tensor:
        zs, zr = z_sender.to(lengths.dtype)[:, None], z_receiver.to(lengths.dtype)[:, None]
        a = self.a_prefactor * 0.529 / (zs**self.a_exp + zr**self.a_exp)  # [E, 1] Å
        phi = (self.c * torch.exp(-self.d * (lengths / a))).sum(-1, keepdim=True)  # [E, 1]
        pair = 14.3996 * zs * zr / lengths * phi
        r_cut = self.covalent_radii[z_sender][:, None] + self.covalent_radii[z_receiver][:, None]
        envelope = PolynomialEnvelope.of(lengths / r_cut, self.p)
        energy = 0.5 * (pair * envelope).squeeze(-1)
        return torch.zeros(n_nodes, dtype=lengths.dtype, device=lengths.device).index_add(0, receiver, energy)

    def extra_repr(self) -> str:
        return f"p={self.p}, a_prefactor={self.a_prefactor}, a_exp={self.a_exp}"


class AgnesiTransform(nn.Module):
    """u(r) of the module docstring. Shapes: ``forward(lengths [E, 1] Å, z_sender [E], z_receiver [E])`` → ``[E, 1]``."""

    def __init__(self, q: float = 0.9183, p: float = 4.5791, a: float = 1.0805) -> None:
        super().__init__()
        self.q, self.p, self.a = float(q), float(p), float(a)
        self.register_buffer("covalent_radii", _radii(), persistent=False)

    def forward(self, lengths: torch.Tensor, z_sender: torch.Tensor, z_receiver: torch.Tensor) -> torch.Tensor:
        r0 = 0.5 * (self.covalent_radii[z_sender] + self.covalent_radii[z_receiver])[:, None]
        x = lengths / r0
        return 1.0 / (1.0 + self.a * x**self.q / (1.0 + x ** (self.q - self.p)))

    def extra_repr(self) -> str:
        return f"q={self.q}, p={self.p}, a={self.a}"
