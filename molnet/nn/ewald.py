"""Ewald long-range message passing: a non-local update with a cutoff on frequency, not distance.

Per layer, from the same invariant node features h as the local message::

    x_i  = Down(ResidualMLP(h_i))                                   # [n_nodes, D], D = projection_dim
    u_i  = Σ_j Σ_T G(r_j + T − r_i) x_j  (per projected channel)    # a convolution with kernel G
    Δh_i = Out(ResidualMLP(Up(u_i)))                                # [n_nodes, C]

The kernel is defined by its Fourier transform, a learned smooth function of |k| that vanishes
beyond ``k_cutoff`` (L)::

    Ŵ_d(k) = (6π²/L³) · w(|k|/L) · Σ_n Θ[n, d] cos(nπ|k|/L),   n = 0 … num_k_basis − 1,
    w(x)   = 1/2 + (9/16) cos πx − (1/16) cos 3πx                   (w(0) = 1; w ~ (1 − x)⁴ at x = 1)

so each projected channel has its own filter, and the channel map C → D → C makes the update
low rank. The prefactor 6π²/L³ (one over the volume of the k-ball) makes G(0) the mean of the
filter over the ball. Expanding w·cos(nπx) gives a cosine series Σ_m c_m cos(mπx),
m = 0 … num_k_basis + 2.

*Periodic* structures (pbc all True) evaluate the lattice sum in reciprocal space, as the Ewald
sum does: for every reciprocal vector k = 2π·n·cell⁻ᵀ with 0 < |k| < L in a half space
(S(−k) = S(k)*), with structure factors S_d(k) = Σ_j x_jd e^{ik·r_j} of the graph,

    u_id = (2/V) Σ_{k ∈ half space} Ŵ_d(|k|) Re[S_d(k) e^{−ik·r_i}].

This equals the real-space lattice sum of G minus the uniform background Ŵ(0)·Σ_j x_j / V of the
excluded k = 0 term (Poisson summation). The k set is enumerated per graph from its own (possibly
strained) cell in torch, so stress flows through k and V by autograd. It is invariant under
rotations, translations, lattice translations of single atoms and the choice of cell basis, and
a perfectly repeated N× supercell gives exactly N× the energy (its extra k vectors have S = 0).
A k shell that crosses L as the cell is strained enters with weight w(1) = 0 and zero first
three derivatives, so energy, forces and stress stay continuous.

*Aperiodic* structures (pbc all False) evaluate the same kernel exactly in real space,
u_i = G(0) x_i + Σ_{j ≠ i} G(|r_i − r_j|) x_j over all pairs of the molecule, with the analytic
radial transform of every cosine mode (s = rL)::

    G_m(r) = (6π²/L³) · (1/(2π² r)) ∫_0^L cos(mπk/L) k sin(kr) dk
           = 3/(2s) · [g(s + mπ) + g(s − mπ)],   g(y) = (sin y − y cos y)/y²,
    G_m(0) = 3 ∫_0^1 x² cos(mπx) dx = 1 (m = 0), 6(−1)^m/(mπ)² (m ≥ 1).

Mode m is a smeared spherical shell of radius ≈ mπ/L, so the kernel reaches about
(num_k_basis + 2)·π/L and then decays as r⁻⁶ (w vanishes to fourth order at L). It depends only
on distances: exactly E(3) invariant, smooth and differentiable.

*Aperiodic, grid option* (``aperiodic="grid"``, the paper's form for molecules): each molecule is
centred and rotated into its principal-axes frame (eigenvectors of Σ_j (r_j − r̄)(r_j − r̄)ᵀ)
and evaluated with the periodic formula in a virtual cubic cell of side ``grid_box``, i.e. on
the fixed k grid 2π·n/grid_box, 0 < |k| < L. The cubic grid is symmetric under every signed
permutation of the axes, so the frame's sign and ordering ambiguities do not matter and
rotations, translations and permutations leave the energy unchanged to rounding (tested); but
near a crossing of two principal moments the frame turns by up to 45° within a small
deformation, so energy and forces change steeply there, and at an exact degeneracy (linear,
symmetric-top or spherical-top molecules) the frame and its derivative are undefined: such
molecules raise InputError (single atoms need no frame). The
result also contains the molecule's periodic images (at distance ``grid_box``) and lacks the
k = 0 term, so it approaches the real-space sum only as ``grid_box`` exceeds the molecule plus
the kernel's range (measured on AcAc with a 19 Å kernel: 4e-3, 5e-4, 6e-5 relative deviation
at grid_box = 30, 60, 120 Å). Cost O(N·K) with K ≈ L³·grid_box³/(12π²) grid points (grid_box = 30 Å,
L = 1 Å⁻¹: K ≈ 230), but grid_box has to grow with the molecule: with grid_box = extent + 40 Å
the grid was 3.7×, 5.8× and 3.3× slower than the real-space sum for 15, 150 and 600 atoms
(``benchmarks/ewald_aperiodic_cost.py``, 64-channel MPNN, 1 thread), so it is an option for
comparison with the paper, not for speed.

*Mixed* pbc (slabs, wires) raise :class:`~molnet.errors.InputError`: neither evaluation is
correct there (the real-space sum would change when an atom is wrapped across the periodic
boundary), and the 2-D/1-D periodic sum is not built.

Cost per layer, D = projection_dim, M = num_k_basis + 3 modes:
    periodic: O(N·K·D) time and memory, K ≈ L³·V/(12π²) k vectors per cell (64 waters,
    V ≈ 1.9 nm³, L = 1 Å⁻¹: K ≈ 16);
    aperiodic: O(N²·(M + D)) time and memory per molecule (N(N−1)/2 pairs), fine up to a few
    thousand atoms per molecule; grid option O(N·K·D).
Measured with the defaults (1 CPU thread, float64, forces and stress, 64-channel MPNN with 3
layers): +10 ms per call (+15 %) for 64 periodic waters, +26 ms (+14 %) for 200, +2.4 ms for
acetylacetone (15 atoms); a 600-atom molecule costs about 0.2 s per layer (180k pairs).

References:
    Kosmala, Gasteiger, Gao, Günnemann, "Ewald-based Long-Range Message Passing for Molecular
    Graphs" (ICML 2023), code arthurkosmala/EwaldMP (ewald_block.py): the block structure
    (residual MLPs, down-projected structure factors, low-rank learned filters) and the
    SVD-frame k grid for molecules. Unlike the paper, the periodic filter is a function of |k|
    with a cutoff (independent of the cell basis and extensive), sums are normalised by the cell
    volume, and molecules use the exact real-space form of the same filter by default.
    Ewald, "Die Berechnung optischer und elektrostatischer Gitterpotentiale" (Ann. Phys. 1921).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch_geometric.utils import to_dense_batch

from molnet.errors import ConfigError, InputError
from molnet.nn.inputs import GraphInputs, pairs_within, scatter_sum

#: Coefficients (a_j, j) of the window w(x) = Σ a_j cos(jπx): w(0) = 1, w(1) = w''(1) = w''(0) = 0.
WINDOW = ((0.5, 0), (9.0 / 16.0, 1), (-1.0 / 16.0, 3))
#: Evaluations of structures without periodicity (see the module docstring).
APERIODIC_MODES = ("real_space", "grid")
#: Smallest relative gap between principal moments the grid option accepts.
DEGENERATE_GAP = 1e-6
#: Below this |y| the function g(y) = (sin y − y cos y)/y² is evaluated by its Taylor series.
TAYLOR_BELOW = 1.0
#: Taylor coefficients of g(y) = Σ_{n≥1} (−1)^{n+1} 2n/(2n+1)! y^{2n−1}; the first omitted term is < 2e-16 at |y| = 1.
TAYLOR = tuple((-1) ** (n + 1) * 2 * n / math.factorial(2 * n + 1) for n in range(1, 9))


class ResidualMLP(nn.Module):
    """x ← (x + Linear(SiLU(Linear(x)))) / √2 (GemNet's residual layer).

    Shapes:
        - input ``[n, C]``; output ``[n, C]``
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.mlp(x)) / math.sqrt(2.0)


def window_expansion(num_k_basis: int) -> torch.Tensor:
    """Matrix T with w(x)·cos(nπx) = Σ_m T[n, m] cos(mπx), shape ``[num_k_basis, num_k_basis + 3]``."""
    t = torch.zeros(num_k_basis, num_k_basis + 3, dtype=torch.float64)
    for n in range(num_k_basis):
        for a, j in WINDOW:  # cos(nπx) cos(jπx) = ½[cos((n+j)πx) + cos(|n−j|πx)]
            t[n, n + j] += a / 2
            t[n, abs(n - j)] += a / 2
    return t


def reciprocal_lattice_vectors(cell: torch.Tensor, k_cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """All k = 2π·n·cell⁻ᵀ with 0 < |k| < k_cutoff and n in the half space n > 0 (lexicographic).

    The integer box |n_i| ≤ k_cutoff·|a_i|/2π (|n_i| = |k·a_i|/2π) is shared by the batch and
    filtered per cell; k is computed from ``cell`` so derivatives with respect to it flow.

    Shapes:
        - cell: ``[n_cells, 3, 3]`` Å, rows are lattice vectors
        - returns k ``[n_k, 3]`` Å⁻¹ and the cell index of each k ``[n_k]``, sorted by cell
    """
    with torch.no_grad():
        n_max = torch.floor(k_cutoff * torch.linalg.norm(cell, dim=-1) / (2 * math.pi)).amax(0)  # [3]
        axes = [torch.arange(-int(m), int(m) + 1, device=cell.device) for m in n_max.tolist()]
        n = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # [M, 3]
        zero = n == 0
        half = (n[:, 0] > 0) | (zero[:, 0] & (n[:, 1] > 0)) | (zero[:, 0] & zero[:, 1] & (n[:, 2] > 0))
        n = n[half].to(cell.dtype)
    reciprocal = 2 * math.pi * torch.linalg.inv(cell).transpose(1, 2)  # [n_cells, 3, 3], rows b_i
    k = torch.einsum("mi,cij->cmj", n, reciprocal)  # [n_cells, M, 3]
    cells, index = torch.nonzero(torch.linalg.norm(k.detach(), dim=-1) < k_cutoff, as_tuple=True)
    return k[cells, index], cells


def _taylor_g(y: torch.Tensor) -> torch.Tensor:
    """g(y) = (sin y − y cos y)/y² by its Taylor series (for |y| < TAYLOR_BELOW)."""
    y2 = y * y
    series = torch.zeros_like(y)
    for c in reversed(TAYLOR):
        series = series * y2 + c
    return series * y


def radial_modes(s: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """G_m = 3/(2s)·[g(s + mπ) + g(s − mπ)] for s = r·k_cutoff > 0 (the modes' real-space kernels).

    With y = s ± mπ, sin y = (−1)^m sin s and cos y = (−1)^m cos s, so g(y) = (−1)^m (sin s − y cos s)/y²
    needs one sine and cosine per pair; where |s − mπ| < TAYLOR_BELOW (and for m = 0, where
    s + mπ = s − mπ) the removable singularity is evaluated by the Taylor series of g.

    Shapes:
        - s: ``[n_pairs, 1]``; frequencies: ``[M]`` (mπ); output ``[n_pairs, M]``
    """
    sin, cos = torch.sin(s), torch.cos(s)  # [P, 1]
    sign = 1.0 - 2.0 * (torch.arange(len(frequencies), device=s.device) % 2).to(s.dtype)  # [M], (−1)^m
    q = s - frequencies  # [P, M]
    near = q.abs() < TAYLOR_BELOW
    q_safe = torch.where(near, torch.ones_like(q), q)
    g_minus = (sign * (sin - q_safe * cos) / q_safe**2).masked_scatter(near, _taylor_g(q[near]))
    p = s + frequencies[1:]  # [P, M − 1], ≥ π
    g_plus = torch.cat([g_minus[:, :1], sign[1:] * (sin - p * cos) / p**2], dim=1)
    return 1.5 / s * (g_minus + g_plus)


class EwaldBlock(nn.Module):
    """Long-range update of invariant node features (see the module docstring for the maths).

    Parameters
    ----------
    channels
        Invariant node channels C of the layer.
    k_cutoff
        Frequency cutoff L in Å⁻¹; the kernel resolves distances down to about π/L.
    num_k_basis
        Cosine modes of the |k| filter; the kernel reaches about (num_k_basis + 2)·π/L Å.
    projection_dim
        Channels D of the structure factors (the rank of the channel map).
    aperiodic
        ``"real_space"`` (default: exact all-pairs sum) or ``"grid"`` (principal-axes frame and
        a fixed k grid, see the module docstring) for structures without periodicity.
    grid_box
        Side of the virtual cubic cell of the grid option, Å.

    Shapes:
        - h: ``[n_nodes, C]``; inputs: :class:`GraphInputs`; output ``[n_nodes, C]``
    """

    def __init__(
        self,
        channels: int,
        k_cutoff: float = 1.0,
        num_k_basis: int = 16,
        projection_dim: int = 8,
        aperiodic: str = "real_space",
        grid_box: float = 30.0,
    ) -> None:
        super().__init__()
        if not k_cutoff > 0:
            raise ConfigError(f"ewald k_cutoff must be > 0 (Å⁻¹), got {k_cutoff}")
        if aperiodic not in APERIODIC_MODES:
            raise ConfigError(f"ewald aperiodic must be one of {APERIODIC_MODES}, got {aperiodic!r}")
        if not grid_box > 0:
            raise ConfigError(f"ewald grid_box must be > 0 (Å), got {grid_box}")
        self.aperiodic = aperiodic
        self.grid_box = float(grid_box)
        if num_k_basis < 1 or projection_dim < 1:
            raise ConfigError(f"ewald num_k_basis and projection_dim must be >= 1, got {num_k_basis}, {projection_dim}")
        dtype = torch.get_default_dtype()
        self.k_cutoff = float(k_cutoff)
        self.pre = ResidualMLP(channels)
        self.down = nn.Linear(channels, projection_dim, bias=False)
        self.filter = nn.Parameter(torch.randn(num_k_basis, projection_dim) / math.sqrt(num_k_basis))
        self.up = nn.Linear(projection_dim, channels, bias=False)
        self.post = ResidualMLP(channels)
        self.output = nn.Linear(channels, channels, bias=False)
        modes = torch.arange(num_k_basis + 3, dtype=torch.float64)
        self_term = torch.where(modes == 0, 1.0, 6 * (-1.0) ** modes / (math.pi * modes.clamp(min=1)) ** 2)
        self.register_buffer("expansion", window_expansion(num_k_basis).to(dtype))  # [B, M]
        self.register_buffer("frequencies", (math.pi * modes).to(dtype))  # [M], mπ
        self.register_buffer("self_term", self_term.to(dtype))  # [M], G_m(0)

    def forward(self, h: torch.Tensor, inputs: GraphInputs) -> torch.Tensor:
        pbc = inputs.pbc.reshape(-1, 3)
        periodic, aperiodic = pbc.all(dim=1), ~pbc.any(dim=1)  # [n_graphs]
        mixed = ~(periodic | aperiodic)
        if bool(mixed.any()):
            graphs = torch.nonzero(mixed).flatten()[:10].tolist()
            raise InputError(
                f"the Ewald long-range block needs pbc all True or all False; graph(s) {graphs} have "
                f"mixed pbc {pbc[mixed][0].tolist()}: the slab/wire sum is not built; use a 3-D periodic "
                "cell with vacuum or a model without long_range"
            )
        x = self.down(self.pre(h))  # [n_nodes, D]
        coefficients = self.expansion.T @ self.filter  # [M, D], cosine-series coefficients per channel
        u = torch.zeros_like(x)
        if bool(periodic.any()):
            u = u + self._reciprocal_space(x, coefficients, inputs, periodic)
        if bool(aperiodic.any()):
            if self.aperiodic == "grid":
                u = u + self._reciprocal_space(x, coefficients, self._principal_frame(inputs, aperiodic), aperiodic)
            else:
                u = u + self._real_space(x, coefficients, inputs, aperiodic)
        return self.output(self.post(self.up(u)))

    def _reciprocal_space(
        self, x: torch.Tensor, coefficients: torch.Tensor, inputs: GraphInputs, periodic: torch.Tensor
    ) -> torch.Tensor:
        """u_i = (2/V) Σ_{k half space} Ŵ(|k|) Re[S(k) e^{−ik·r_i}] for nodes of periodic graphs."""
        graphs = torch.nonzero(periodic).flatten()  # [G_p]
        cell = inputs.cell[graphs]  # [G_p, 3, 3]
        k, k_graph = reciprocal_lattice_vectors(cell, self.k_cutoff)  # [K, 3], [K] sorted by graph
        if len(k) == 0:
            return torch.zeros_like(x)
        local = torch.full((len(periodic),), -1, dtype=torch.long, device=x.device)
        local[graphs] = torch.arange(len(graphs), device=x.device)
        node_graph = local[inputs.batch]  # [n_nodes], -1 for aperiodic nodes
        nodes = torch.nonzero(node_graph >= 0).flatten()
        # per graph, dense and zero-padded: k vectors [G_p, K_max, 3], nodes [G_p, N_max, ·]; the
        # sums over atoms and over k are batched matmuls (no per (atom, k) tensor wider than 1)
        k_dense, k_mask = to_dense_batch(k, k_graph, batch_size=len(graphs))
        r_dense, node_mask = to_dense_batch(inputs.positions[nodes], node_graph[nodes], batch_size=len(graphs))
        x_dense, _ = to_dense_batch(x[nodes], node_graph[nodes], batch_size=len(graphs))  # padding: x = 0
        phase = r_dense @ k_dense.transpose(1, 2)  # [G_p, N_max, K_max]
        cos, sin = torch.cos(phase), torch.sin(phase)
        s_re = cos.transpose(1, 2) @ x_dense  # [G_p, K_max, D]
        s_im = sin.transpose(1, 2) @ x_dense
        volume = torch.linalg.det(cell).abs()  # [G_p]
        modes = torch.cos(
            self.frequencies * (torch.linalg.norm(k_dense, dim=-1, keepdim=True) / self.k_cutoff)
        )  # [G_p, K_max, M]
        norm = 6 * math.pi**2 / self.k_cutoff**3 * 2 / volume  # [G_p]
        filt = (modes @ coefficients) * (norm[:, None, None] * k_mask[..., None])  # [G_p, K_max, D], 0 on padding
        u_dense = cos @ (filt * s_re) + sin @ (filt * s_im)  # [G_p, N_max, D]
        return torch.zeros_like(x).index_put((nodes,), u_dense[node_mask])

    def _principal_frame(self, inputs: GraphInputs, aperiodic: torch.Tensor) -> GraphInputs:
        """Molecules centred and rotated into their principal axes, in a cubic cell of side grid_box.

        Raises InputError where two principal moments coincide (the frame is undefined) or a
        molecule does not fit in the virtual cell.
        """
        batch = inputs.batch
        ones = torch.ones_like(inputs.positions[:, 0])
        counts = scatter_sum(ones, batch, inputs.num_graphs).clamp(min=1)  # [G]
        centre = scatter_sum(inputs.positions, batch, inputs.num_graphs) / counts[:, None]  # [G, 3]
        d = inputs.positions - centre[batch]  # [n_nodes, 3]
        moments = scatter_sum(d[:, :, None] * d[:, None, :], batch, inputs.num_graphs)  # [G, 3, 3]
        eye = torch.eye(3, dtype=d.dtype, device=d.device)
        # periodic graphs and single atoms (d = 0, any frame) get a dummy with distinct moments, so
        # that eigh's derivative stays finite
        framed = aperiodic & (counts > 1)  # [G]
        dummy = torch.diag(torch.arange(1.0, 4.0, dtype=d.dtype, device=d.device))
        moments = torch.where(framed[:, None, None], moments, dummy)
        values, frame = torch.linalg.eigh(moments)  # ascending moments, columns are axes
        with torch.no_grad():
            scale = values.abs().amax(dim=1).clamp(min=1e-12)
            gap = torch.diff(values, dim=1).amin(dim=1) / scale  # [G]
            bad = framed & (gap < DEGENERATE_GAP)
            if bool(bad.any()):
                graphs = torch.nonzero(bad).flatten()[:10].tolist()
                raise InputError(
                    f"ewald aperiodic='grid' needs distinct principal moments; graph(s) {graphs} have a degenerate "
                    f"inertia tensor (relative gap {float(gap[bad].min()):.1e}; linear or symmetric molecule), where "
                    "the frame is undefined: use the default aperiodic='real_space'"
                )
        local = torch.einsum("ni,nij->nj", d, frame[batch])  # [n_nodes, 3]
        with torch.no_grad():
            extent = (local.abs() * aperiodic[batch, None]).amax() * 2
            if float(extent) >= self.grid_box:
                raise InputError(
                    f"a molecule spans {float(extent):.1f} Å, more than ewald grid_box = {self.grid_box} Å: "
                    "raise grid_box or use aperiodic='real_space'"
                )
        cell = self.grid_box * eye.expand(inputs.num_graphs, 3, 3)
        return dataclasses.replace(inputs, positions=local, cell=cell)

    def _real_space(
        self, x: torch.Tensor, coefficients: torch.Tensor, inputs: GraphInputs, aperiodic: torch.Tensor
    ) -> torch.Tensor:
        """u_i = G(0) x_i + Σ_{j≠i} G(|r_i − r_j|) x_j over the atoms of each aperiodic graph."""
        node_mask = aperiodic[inputs.batch]  # [n_nodes]
        nodes = torch.nonzero(node_mask).flatten()
        u = (self.self_term @ coefficients) * x * node_mask[:, None].to(x.dtype)  # [n_nodes, D]
        i, j = pairs_within(nodes, inputs.batch[nodes])  # [P], [P]
        if len(i) == 0:
            return u
        s = torch.linalg.norm(inputs.positions[i] - inputs.positions[j], dim=-1, keepdim=True) * self.k_cutoff  # [P, 1]
        kernel = radial_modes(s, self.frequencies) @ coefficients  # [P, D]
        return u + scatter_sum(kernel * x[j], i, len(x)) + scatter_sum(kernel * x[i], j, len(x))

    def extra_repr(self) -> str:
        return (
            f"k_cutoff={self.k_cutoff}, num_k_basis={self.filter.shape[0]}, projection_dim={self.filter.shape[1]}, "
            f"aperiodic={self.aperiodic!r}" + (f", grid_box={self.grid_box}" if self.aperiodic == "grid" else "")
        )
