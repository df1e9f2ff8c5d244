"""PONITA: SE(3)-equivariant convolution in position–orientation space R³×S² (the ``ponita`` family).

Every atom carries a feature map over a grid of ``num_ori`` orientations on the sphere,
x[n, o, c]. A pair (atom i, orientation o) and (atom j, orientation o') is described up to a
rotation and translation by the invariants

    a1 = o·x_ij,   a2 = ‖x_ij − (o·x_ij) o‖,   a3 = o·o',     x_ij = r_j − r_i + shift,

so convolution kernels that are functions of them are equivariant (Bekkers et al., Thm. 1).
The convolution is separable: a spatial convolution over neighbors per orientation, with a
kernel K(a1, a2, r) windowed by a polynomial envelope that takes it smoothly to zero at
``r_max``, then a depthwise convolution over the orientations with a kernel K(a3). Layers are
ConvNeXt blocks; per-atom energies are linear readouts averaged over orientations.

Equivariance holds exactly for rotations that permute the grid; for a general rotation it holds
up to the quadrature error of the grid, which falls as ``num_ori`` grows (measured in
``tests/nn/test_ponita.py``). Everything else (translations, permutations, forces = −∇E,
stress, extensivity, smoothness at ``r_max``) is exact.

Differences from the reference code, all deliberate:

- The grid is a deterministic Fibonacci lattice stored as a persistent buffer (saved with the
  weights); the reference draws a random repulsion grid at start-up that checkpoints omit.
- a2 enters as (a2/r_max)² = (|x_ij|² − a1²)/r_max²: the norm has a kink where x_ij ∥ o, which
  would make forces discontinuous there; its square carries the same information (a2 ≥ 0) and is
  a polynomial in the positions.
- The invariants are embedded by the monomials of total degree 1..``degree`` (the reference
  stacks repeated outer products, with duplicates) and, for the spatial kernel, also by the
  Bessel features of |x_ij|, so that the kernel is not only polynomial in a1, a2.
- Radius graph with periodic images, envelope and neighbor sums divided by
  ``avg_num_neighbors`` (the reference uses a fully connected graph without cutoff). The
  reference's self-loop (kernel at x_ij = 0, which is orientation-independent) is a learned
  per-channel self-interaction weight.
- No data-dependent re-calibration of the kernel weights on the first batch; the LayerNorm
  after each convolution keeps the scale of the features.

References:
    Bekkers, Vadgama, Hesselink, van der Linden, Romero, "Fast, Expressive SE(n) Equivariant
    Networks through Weight-Sharing in Position-Orientation Space" (ICLR 2024), Sec. 3–4;
    code ebekkers/ponita and ebekkers/ponita-torch.
    González, "Measurement of areas on a sphere using Fibonacci and latitude–longitude
    lattices", Math. Geosci. 42 (2010) (the Fibonacci grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from molnet.errors import ConfigError
from molnet.nn.config import GraphConfig
from molnet.nn.inputs import GraphInputs, scatter_sum
from molnet.nn.long_range import add_coulomb, coulomb_block, long_range_layers
from molnet.nn.radial import PolynomialEnvelope, RadialEmbedding


@dataclass
class PONITAConfig(GraphConfig):
    """Hyperparameters of :class:`PONITA` (``r_max`` in Å).

    ``num_ori`` defaults to 16 rather than the published 20: the cost per call grows about
    linearly with ``num_ori`` (spatial convolution; the fibre convolution is quadratic but
    small), and at 16 the grid residual of an untrained model of the default size on acac is
    0.24 % of the forces (0.09 meV/Å RMS; 0.78 % at 8, 0.22 % at 20, 0.075 % at 32;
    ``benchmarks/ponita_grid.py``), far below the force error of a trained model. Use 20–32
    where equivariance matters more than speed, and rerun the benchmark on trained weights.
    ``layer_scale=None`` disables the ConvNeXt layer scale (the published rMD17 setting);
    a float initialises it to that value. ``random_rotate_grid`` rotates the grid by a fresh
    random rotation at every forward pass in training mode (on by default: the equivalent of the
    published random-rotation augmentation, it trains the model to be insensitive to the grid's
    orientation); evaluation always uses the stored grid.
    """

    num_ori: int = 16
    hidden_dim: int = 128
    num_layers: int = 5
    basis_dim: int = 256
    degree: int = 3
    widening_factor: int = 4
    layer_scale: float | None = None
    random_rotate_grid: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = {
            "num_ori": self.num_ori,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "basis_dim": self.basis_dim,
            "degree": self.degree,
            "widening_factor": self.widening_factor,
            "num_bessel": self.num_bessel,
        }
        for name, value in positive.items():  # (their types are checked by GraphConfig)
            if value < 1:
                raise ConfigError(f"PONITA: {name} must be a positive integer, got {value!r}")
        if self.num_ori < 2:
            raise ConfigError(f"PONITA: num_ori must be >= 2 orientations, got {self.num_ori}")
        if self.layer_scale is not None and not self.layer_scale > 0:
            raise ConfigError(f"PONITA: layer_scale must be None (off) or > 0, got {self.layer_scale}")


def fibonacci_grid(num_ori: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Unit vectors of the Fibonacci lattice on S²: θ_i = π i (1+√5) mod 2π, φ_i = arccos(1 − 2(i+½)/O).

    Computed in float64 and cast to ``dtype`` (default: torch's default dtype). The lattice is
    near-uniform and deterministic but not inversion-symmetric.

    Shapes:
        - output: ``[num_ori, 3]``
    """
    i = torch.arange(num_ori, dtype=torch.float64)
    theta = torch.remainder(math.pi * (1.0 + math.sqrt(5.0)) * i, 2.0 * math.pi)
    phi = torch.arccos(1.0 - 2.0 * (i + 0.5) / num_ori)
    grid = torch.stack([torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], dim=-1)
    return grid.to(dtype or torch.get_default_dtype())


def random_rotation_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A Haar-random rotation matrix ``[3, 3]`` from a normalised Gaussian quaternion (torch's RNG)."""
    w, x, y, z = torch.nn.functional.normalize(torch.randn(4, dtype=dtype, device=device), dim=0)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )


def monomials(x: torch.Tensor, degree: int) -> torch.Tensor:
    """All monomials of the last-axis entries of ``x`` with total degree 1..``degree``, no duplicates.

    Built by repeated multiplication (never ``x**0``, whose gradient is NaN at 0).

    Shapes:
        - input: ``[..., d]``; output ``[..., C(d + degree, degree) − 1]``
    """
    d = x.shape[-1]
    current = [(x[..., k], k) for k in range(d)]  # (monomial, index of its last factor)
    out = [m for m, _ in current]
    for _ in range(degree - 1):
        current = [(m * x[..., k], k) for m, last in current for k in range(last, d)]
        out.extend(m for m, _ in current)
    return torch.stack(out, dim=-1)


def num_monomials(d: int, degree: int) -> int:
    return math.comb(d + degree, degree) - 1


class SpatialBasis(nn.Module):
    """Kernel basis of the spatial convolution from (a1/r_max, (a2/r_max)²) and Bessel(|x_ij|).

    φ = GELU(Linear(GELU(W_p·poly(a1, a2²) + W_r·bessel(r) + b))), shared by all layers.

    Shapes:
        - invariants: ``[n_edges, O, 2]``; radial: ``[n_edges, num_bessel]``
        - output: ``[n_edges, O, basis_dim]``
    """

    def __init__(self, degree: int, num_bessel: int, hidden: int, basis_dim: int) -> None:
        super().__init__()
        self.degree = degree
        self.poly = nn.Linear(num_monomials(2, degree), hidden)
        self.radial = nn.Linear(num_bessel, hidden, bias=False)
        self.out = nn.Linear(hidden, basis_dim)

    def forward(self, invariants: torch.Tensor, radial: torch.Tensor) -> torch.Tensor:
        h = self.poly(monomials(invariants, self.degree)) + self.radial(radial)[:, None, :]  # [E, O, hidden]
        return nn.functional.gelu(self.out(nn.functional.gelu(h)))


class FibreBasis(nn.Module):
    """Kernel basis of the fibre convolution from o·o': GELU(Linear(GELU(Linear(poly(o·o'))))).

    Shapes:
        - input: ``[O, O, 1]``; output ``[O, O, basis_dim]``
    """

    def __init__(self, degree: int, hidden: int, basis_dim: int) -> None:
        super().__init__()
        self.degree = degree
        self.net = nn.Sequential(
            nn.Linear(num_monomials(1, degree), hidden), nn.GELU(), nn.Linear(hidden, basis_dim), nn.GELU()
        )

    def forward(self, cosines: torch.Tensor) -> torch.Tensor:
        return self.net(monomials(cosines, self.degree))


class SeparableConv(nn.Module):
    """Depthwise separable group convolution on R³×S².

    y[i, o, c] = w_c x[i, o, c] + Σ_j K_c(a1, a2, r)·u(r)·x[j, o, c] / avg_num_neighbors   (spatial)
    z[i, p, c] = Σ_o y[i, o, c] K_c(o·p) / O + b_c                                           (fibre)

    with u the polynomial envelope (zero beyond r_max) and w the self-interaction (the
    reference's self-loop).

    Shapes:
        - x: ``[n_nodes, O, C]``; spatial_basis ``[n_edges, O, basis_dim]``; envelope
          ``[n_edges, 1, 1]``; fibre_basis ``[O, O, basis_dim]``; output ``[n_nodes, O, C]``
    """

    def __init__(self, channels: int, basis_dim: int, avg_num_neighbors: float) -> None:
        super().__init__()
        self.kernel = nn.Linear(basis_dim, channels, bias=False)
        self.fibre_kernel = nn.Linear(basis_dim, channels, bias=False)
        self.self_weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.avg_num_neighbors = avg_num_neighbors

    def forward(self, x, spatial_basis, envelope, fibre_basis, inputs: GraphInputs) -> torch.Tensor:
        kernel = self.kernel(spatial_basis) * envelope  # [E, O, C]
        messages = kernel * x[inputs.sender]  # [E, O, C]
        y = self.self_weight * x + scatter_sum(messages, inputs.receiver, len(x)) / self.avg_num_neighbors
        fibre_kernel = self.fibre_kernel(fibre_basis)  # [O, O, C]
        return torch.einsum("noc,opc->npc", y, fibre_kernel) / fibre_kernel.shape[0] + self.bias


class ConvNeXtBlock(nn.Module):
    """x ← x + γ ⊙ Linear(GELU(Linear(LayerNorm(conv(x))))), widening C → wC → C.

    Shapes:
        - x: ``[n_nodes, O, C]`` → ``[n_nodes, O, C]``
    """

    def __init__(
        self, channels: int, basis_dim: int, widening_factor: int, layer_scale: float | None, avg_num_neighbors: float
    ) -> None:
        super().__init__()
        self.conv = SeparableConv(channels, basis_dim, avg_num_neighbors)
        self.norm = nn.LayerNorm(channels)
        self.linear_1 = nn.Linear(channels, widening_factor * channels)
        self.linear_2 = nn.Linear(widening_factor * channels, channels)
        self.layer_scale = (
            nn.Parameter(torch.full((channels,), float(layer_scale))) if layer_scale is not None else None
        )

    def forward(self, x, spatial_basis, envelope, fibre_basis, inputs: GraphInputs) -> torch.Tensor:
        h = self.conv(x, spatial_basis, envelope, fibre_basis, inputs)
        h = self.linear_2(nn.functional.gelu(self.linear_1(self.norm(h))))  # [n_nodes, O, C]
        if self.layer_scale is not None:
            h = self.layer_scale * h
        return x + h


class PONITA(nn.Module):
    """The PONITA body: per-atom energies from features on the orientation grid.

    The grid is the persistent buffer ``grid`` ``[num_ori, 3]`` (saved with the weights). In
    training mode with ``random_rotate_grid`` it is rotated by a fresh random rotation per
    forward pass; the fibre invariants o·o' do not change under that rotation.

    Shapes:
        - input: :class:`GraphInputs` with ``n_nodes`` atoms
        - output: ``[n_nodes]`` per-atom energies (before scale/shift/E0)
    """

    def __init__(self, num_elements: int, config: PONITAConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.register_buffer("grid", fibonacci_grid(c.num_ori), persistent=True)
        self.embedding = nn.Embedding(num_elements, c.hidden_dim)
        self.radial = RadialEmbedding(c.r_max, c.num_bessel, c.num_polynomial_cutoff)
        self.envelope = PolynomialEnvelope(c.r_max, c.num_polynomial_cutoff)
        self.spatial_basis = SpatialBasis(c.degree, c.num_bessel, c.hidden_dim, c.basis_dim)
        self.fibre_basis = FibreBasis(c.degree, c.hidden_dim, c.basis_dim)
        self.layers = nn.ModuleList(
            ConvNeXtBlock(c.hidden_dim, c.basis_dim, c.widening_factor, c.layer_scale, c.avg_num_neighbors)
            for _ in range(c.num_layers)
        )
        self.long_range = long_range_layers(c.long_range, c.hidden_dim, c.num_layers)
        self.coulomb = coulomb_block(c.long_range, c.hidden_dim)
        self.readouts = nn.ModuleList(nn.Linear(c.hidden_dim, 1) for _ in range(c.num_layers))

    def orientations(self) -> torch.Tensor:
        """The grid used by this forward pass ``[num_ori, 3]``: randomly rotated in training mode
        when ``random_rotate_grid`` is set, else the stored grid."""
        if self.training and self.config.random_rotate_grid:
            return self.grid @ random_rotation_matrix(self.grid.dtype, self.grid.device).T
        return self.grid

    def forward(self, inputs: GraphInputs) -> torch.Tensor:
        c = self.config
        grid = self.orientations()  # [O, 3]
        vectors, lengths = inputs.edge_vectors()  # [E, 3], [E, 1] Å
        a1 = vectors @ grid.T  # [E, O]
        a2_sq = lengths.square() - a1.square()  # [E, O], ‖x − (o·x) o‖², smooth everywhere
        invariants = torch.stack([a1 / c.r_max, a2_sq / c.r_max**2], dim=-1)  # [E, O, 2]
        spatial_basis = self.spatial_basis(invariants, self.radial(lengths))  # [E, O, basis_dim]
        envelope = self.envelope(lengths)[:, :, None]  # [E, 1, 1]
        fibre_basis = self.fibre_basis((grid @ grid.T)[..., None])  # [O, O, basis_dim]

        x = self.embedding(inputs.species)[:, None, :].expand(-1, len(grid), -1)  # [n_nodes, O, C]
        energy = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for t, (layer, readout) in enumerate(zip(self.layers, self.readouts)):
            x = layer(x, spatial_basis, envelope, fibre_basis, inputs)
            if self.long_range is not None:
                update = self.long_range[t](x.mean(dim=1), inputs)  # [n_nodes, C]
                x = x + update[:, None, :]
            energy = energy + readout(x.mean(dim=1)).squeeze(-1)  # mean over orientations
        add_coulomb(self.coulomb, x.mean(dim=1), inputs)
        return energy
