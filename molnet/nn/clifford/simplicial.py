"""Lifting a (periodic) radius graph to a simplicial complex of atoms, edges and triangles.

Simplices are built from the edge list of :class:`~molnet.nn.inputs.GraphInputs`, so periodic
images are handled exactly: a vertex is an atom, an edge an unordered pair of atom images and a
triangle a triple of atom images, all up to a common lattice translation. Everything geometric
is computed from the edge vectors r_ij (which include the shifts), never from raw positions, so
the complex and its features are translation invariant and a supercell's complex is the
corresponding number of copies of its cell's.

The index work runs in torch on the whole batch (sorting and ``searchsorted`` on integer keys,
no Python loop over structures or atoms): it must run at every MD step.

- Edges: all pairs within the graph's cutoff r_max; one per pair of directed edges
  (j → i, n) and (i → j, −n).
- Triangles: triples whose three edges are all shorter than ``r_tri`` (≤ r_max), found as pairs
  of edges around a common vertex and deduplicated by a translation-invariant order on atom
  images (atom index, then integer shift lexicographically).
- Adjacencies (message types, :data:`MESSAGE_TYPES`): vertex–vertex along every radius edge
  (upper adjacency of atoms), boundary (vertex → edge, edge → triangle), co-boundary
  (edge → vertex, triangle → edge) and edge–edge through a common triangle (upper adjacency).
  Boundary relations keep their multiplicity (an edge between an atom and its own image has
  that atom twice), which is what makes supercells exactly extensive.

References:
    Liu, Ruhe, Forré, Bekkers, "Clifford Group Equivariant Simplicial Message Passing Networks"
    (ICLR 2024), Section 3 (simplicial complexes, adjacencies, shared simplicial message
    passing) and Section 4 (simplex features from positions relative to the simplex mean,
    summed over vertex orderings).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from molnet.errors import InputError
from molnet.nn.clifford.algebra import CliffordAlgebra
from molnet.nn.clifford.layers import CliffordBlock, scalar_multivector
from molnet.nn.inputs import GraphInputs
from molnet.nn.radial import BesselBasis, PolynomialEnvelope

#: message types: (name, sender dimension, receiver dimension); index = type id
MESSAGE_TYPES = (
    ("vertex-vertex", 0, 0),  # upper adjacency of atoms, along every radius edge
    ("vertex-edge", 0, 1),  # boundary
    ("edge-vertex", 1, 0),  # co-boundary
    ("edge-edge", 1, 1),  # upper adjacency through a common triangle
    ("edge-triangle", 1, 2),  # boundary
    ("triangle-edge", 2, 1),  # co-boundary
)


@dataclass
class SimplicialComplex:
    """Index structure of the lifted batch (no geometry; build with :func:`lift`).

    Simplices are stacked as vertices ``[0, n_vertices)``, edges, then triangles.

    Shapes:
        - edge_directed: ``[n_edges]`` index of each edge's canonical directed edge in the graph
        - edge_vertices: ``[n_edges, 2]`` (receiver, sender) atoms of that directed edge
        - undirected: ``[n_directed]`` the edge of every directed graph edge
        - triangle_directed: ``[n_triangles, 2]`` directed edges a (V←Q), b (V←R) from vertex V
        - triangle_vertices: ``[n_triangles, 3]`` atoms (V, Q, R)
        - triangle_edges: ``[n_triangles, 3]`` edges (VQ, VR, QR)
        - message_sender, message_receiver, message_witness: ``[n_messages]`` stacked simplex
          indices; the witness is the simplex whose envelope weights the message
        - message_type: ``[n_messages]`` index into :data:`MESSAGE_TYPES`
    """

    n_vertices: int
    edge_directed: torch.Tensor
    edge_vertices: torch.Tensor
    undirected: torch.Tensor
    triangle_directed: torch.Tensor
    triangle_vertices: torch.Tensor
    triangle_edges: torch.Tensor
    message_sender: torch.Tensor
    message_receiver: torch.Tensor
    message_witness: torch.Tensor
    message_type: torch.Tensor

    @property
    def n_edges(self) -> int:
        return len(self.edge_directed)

    @property
    def n_triangles(self) -> int:
        return len(self.triangle_directed)

    @property
    def n_simplices(self) -> int:
        return self.n_vertices + self.n_edges + self.n_triangles

    def simplex_dimension(self) -> torch.Tensor:
        """0, 1 or 2 for every stacked simplex ``[n_simplices]``."""
        device = self.edge_directed.device
        return torch.cat(
            [
                torch.full((n,), d, dtype=torch.long, device=device)
                for d, n in enumerate((self.n_vertices, self.n_edges, self.n_triangles))
            ]
        )


def integer_shifts(inputs: GraphInputs) -> torch.Tensor:
    """Lattice translation of every edge's sender, ``[n_edges, 3]`` int64 (zero for molecules)."""
    return torch.round(inputs.unit_shifts.detach()).long()


class _Keys:
    """Integer keys ordering atom images by (atom, shift lexicographically): a total order whose
    comparisons are invariant under a common lattice translation."""

    def __init__(self, n_atoms: int, max_shift: int) -> None:
        self.offset = 2 * max_shift  # differences of two shifts fit
        self.base = 4 * max_shift + 1
        self.per_atom = self.base**3
        self.per_pair = n_atoms * self.per_atom
        if n_atoms * self.per_pair >= 2**62:
            raise InputError(
                f"the batch is too large to index its simplices ({n_atoms} atoms, lattice shifts up "
                f"to {max_shift}); evaluate it in smaller batches"
            )

    def image(self, atom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        s = shift + self.offset
        return atom * self.per_atom + (s[:, 0] * self.base + s[:, 1]) * self.base + s[:, 2]

    def directed(self, receiver: torch.Tensor, sender: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return receiver * self.per_pair + self.image(sender, shift)


def _lookup(sorted_keys: torch.Tensor, order: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in the original array of ``query`` keys, and whether each was found."""
    if len(sorted_keys) == 0:
        return torch.zeros_like(query), torch.zeros_like(query, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, query).clamp(max=len(sorted_keys) - 1)
    return order[pos], sorted_keys[pos] == query


def _pairs_by_group(group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (p, q) of positions of ``group`` ``[m]`` (sorted) with equal group."""
    counts = torch.bincount(group, minlength=n_groups)  # [n_groups]
    starts = torch.cumsum(counts, 0) - counts
    per_item = counts[group]  # [m]
    first = torch.repeat_interleave(torch.arange(len(group), device=group.device), per_item)
    run_start = torch.repeat_interleave(torch.cumsum(per_item, 0) - per_item, per_item)
    within = torch.arange(len(first), device=group.device) - run_start
    return first, starts[group[first]] + within


@torch.no_grad()
def lift(inputs: GraphInputs, lengths: torch.Tensor, vectors: torch.Tensor, r_tri: float | None) -> SimplicialComplex:
    """Lift the radius graph of ``inputs`` to vertices, edges and (if ``r_tri``) triangles.

    Parameters
    ----------
    inputs
        The batch; its edge list must be full (both directions of every pair).
    lengths, vectors
        Edge lengths ``[n_directed, 1]`` and vectors ``[n_directed, 3]`` (Å), used only to select
        the triangles.
    r_tri
        Triangles need all three edges shorter than this (Å); None for no triangles.
    """
    device = inputs.positions.device
    n = len(inputs.positions)
    sender, receiver = inputs.sender, inputs.receiver
    shift = integer_shifts(inputs)  # [E, 3]
    keys = _Keys(n, int(shift.abs().max()) if len(shift) else 0)

    # edges: keep the direction whose sender image sorts after its receiver
    canonical = keys.image(sender, shift) > keys.image(receiver, torch.zeros_like(shift))  # [E]
    edge_directed = torch.nonzero(canonical).flatten()  # [n_edges]
    rank = torch.full((len(sender),), -1, dtype=torch.long, device=device)
    rank[edge_directed] = torch.arange(len(edge_directed), device=device)
    directed_keys = keys.directed(receiver, sender, shift)  # [E]
    sorted_keys, order = torch.sort(directed_keys)
    reverse, found = _lookup(sorted_keys, order, keys.directed(sender, receiver, -shift))
    if not bool(found.all()):
        raise InputError("the edge list is not symmetric (a full neighbor list is needed to build simplices)")
    undirected = torch.where(canonical, rank, rank[reverse])  # [E]
    edge_vertices = torch.stack([receiver[edge_directed], sender[edge_directed]], dim=1)  # [n_edges, 2]

    # triangles V < Q < R (image order) from pairs of short canonical edges around V
    empty = torch.zeros(0, dtype=torch.long, device=device)
    tri_a = tri_b = tri_c = empty
    if r_tri is not None:
        short = edge_directed[lengths[edge_directed, 0] < r_tri]  # directed ids, sender after receiver
        short = short[torch.argsort(receiver[short], stable=True)]
        p, q = _pairs_by_group(receiver[short], n)
        a, b = short[p], short[q]
        keep = keys.image(sender[a], shift[a]) < keys.image(sender[b], shift[b])
        a, b = a[keep], b[keep]
        third = torch.linalg.norm(vectors[b] - vectors[a], dim=-1)
        a, b = a[third < r_tri], b[third < r_tri]
        c, found = _lookup(sorted_keys, order, keys.directed(sender[a], sender[b], shift[b] - shift[a]))
        tri_a, tri_b, tri_c = a[found], b[found], c[found]
    triangle_directed = torch.stack([tri_a, tri_b], dim=1)  # [T, 2]
    triangle_vertices = torch.stack([receiver[tri_a], sender[tri_a], sender[tri_b]], dim=1)  # [T, 3]
    triangle_edges = torch.stack([rank[tri_a], rank[tri_b], undirected[tri_c]], dim=1)  # [T, 3]

    # messages in stacked simplex indices
    n_edges, n_tri = len(edge_directed), len(tri_a)
    e_ids = n + torch.arange(n_edges, device=device)
    t_ids = n + n_edges + torch.arange(n_tri, device=device)
    tri_e = n + triangle_edges  # [T, 3]
    pairs = torch.tensor([(i, j) for i, j in itertools.permutations(range(3), 2)], device=device)  # [6, 2]
    blocks = [  # (sender, receiver, witness) per message type, in MESSAGE_TYPES order
        (sender, receiver, n + undirected),
        (edge_vertices.flatten(), e_ids.repeat_interleave(2), e_ids.repeat_interleave(2)),
        (e_ids.repeat_interleave(2), edge_vertices.flatten(), e_ids.repeat_interleave(2)),
        (tri_e[:, pairs[:, 0]].flatten(), tri_e[:, pairs[:, 1]].flatten(), t_ids.repeat_interleave(6)),
        (tri_e.flatten(), t_ids.repeat_interleave(3), t_ids.repeat_interleave(3)),
        (t_ids.repeat_interleave(3), tri_e.flatten(), t_ids.repeat_interleave(3)),
    ]
    receivers = torch.cat([r for _, r, _ in blocks])
    by_receiver = torch.argsort(receivers, stable=True)  # sorted receivers make the scatter sums fast
    return SimplicialComplex(
        n_vertices=n,
        edge_directed=edge_directed,
        edge_vertices=edge_vertices,
        undirected=undirected,
        triangle_directed=triangle_directed,
        triangle_vertices=triangle_vertices,
        triangle_edges=triangle_edges,
        message_sender=torch.cat([s for s, _, _ in blocks])[by_receiver],
        message_receiver=receivers[by_receiver],
        message_witness=torch.cat([w for _, _, w in blocks])[by_receiver],
        message_type=torch.cat(
            [torch.full((len(s),), t, dtype=torch.long, device=device) for t, (s, _, _) in enumerate(blocks)]
        )[by_receiver],
    )


class OrderedSimplexNet(nn.Module):
    """Mean over the k! orderings σ of a k-vertex simplex of a Clifford block applied to
    the ordered inputs: vertex positions relative to the centroid (grade 1), vertex element
    embeddings and Bessel features of the edge lengths (scalars), one slot per vertex or pair.

    The first layer is the paper's linear map of the concatenated inputs, evaluated by parts
    (the element and radial terms per vertex and pair, then gathered per ordering), which skips
    the blades that are zero in the inputs.

    Shapes:
        - positions ``[n, k, 3]`` Å, elements ``[n, k, C]``, radial ``[n, k(k−1)/2, B]`` for the
          pairs (0,1), (0,2), …, (1,2), … in that order
        - output ``[n, C, dim]``
    """

    def __init__(self, algebra: CliffordAlgebra, k: int, channels: int, num_bessel: int) -> None:
        super().__init__()
        self.algebra = algebra
        self.channels = channels
        pairs = list(itertools.combinations(range(k), 2))
        pair_index = {pair: i for i, pair in enumerate(pairs)}
        perms = list(itertools.permutations(range(k)))
        self.register_buffer("vertex_perm", torch.tensor(perms), persistent=False)  # [k!, k]
        self.register_buffer(
            "pair_perm",
            torch.tensor(
                [[pair_index[tuple(sorted((p[i], p[j])))] for i, j in pairs] for p in perms], dtype=torch.long
            ).reshape(len(perms), len(pairs)),
            persistent=False,
        )  # [k!, pairs]
        scalar_std = 1.0 / math.sqrt(k * channels + len(pairs) * num_bessel)
        self.vertex_weight = nn.Parameter(torch.randn(k, channels, channels) * scalar_std)  # [slot, in, out]
        self.radial_weight = nn.Parameter(torch.randn(len(pairs), num_bessel, channels) * scalar_std)
        self.position_weight = nn.Parameter(torch.randn(k, channels) / math.sqrt(k))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.block = CliffordBlock(algebra, None, channels)

    def forward(self, positions: torch.Tensor, elements: torch.Tensor, radial: torch.Tensor) -> torch.Tensor:
        n, k = positions.shape[:2]
        if n == 0:
            return positions.new_zeros(0, self.channels, self.algebra.dim)
        slots = torch.arange(k, device=positions.device)
        per_vertex = torch.einsum("nvc,sco->nvso", elements, self.vertex_weight)  # [n, vertex, slot, C]
        per_pair = torch.einsum("npb,sbo->npso", radial, self.radial_weight)  # [n, pair, slot, C]
        pair_slots = torch.arange(self.pair_perm.shape[1], device=positions.device)
        scalar = (
            per_vertex[:, self.vertex_perm, slots].sum(2) + per_pair[:, self.pair_perm, pair_slots].sum(2) + self.bias
        )  # [n, k!, C]
        vector = torch.einsum("nsax,ac->nscx", positions[:, self.vertex_perm], self.position_weight)  # [n, k!, C, 3]
        rest = vector.new_zeros(vector.shape[:-1] + (self.algebra.dim - 1 - vector.shape[-1],))
        pre = torch.cat([scalar[..., None], vector, rest], dim=-1)  # [n, k!, C, dim]
        return self.block(pre).mean(dim=1)


class SimplexEmbedding(nn.Module):
    """Initial multivector features of every simplex, and the smooth simplex weights.

    A vertex carries its element embedding as scalars. An edge or a triangle, for each ordering
    (v_0, …, v_d) of its vertices, takes the vertices' positions relative to the simplex
    centroid (grade 1, built from the edge vectors), their element embeddings and a Bessel basis
    of its edge lengths (scalars) through a Clifford block (geometric products); the results are
    summed over the (d + 1)! orderings (and divided by (d + 1)!, to keep features O(1)), so they
    are invariant under relabelling (:class:`OrderedSimplexNet`). The weight of an edge is the
    envelope u(r / r_max); of a triangle Π u(r / r_tri) over its three edges; of a vertex 1.

    Shapes:
        - species embeddings ``[n_vertices, C]``; edge vectors ``[n_directed, 3]`` Å
        - returns features ``[n_simplices, C, dim]`` and weights ``[n_simplices]``
    """

    def __init__(
        self,
        algebra: CliffordAlgebra,
        channels: int,
        r_max: float,
        r_tri: float | None,
        num_bessel: int,
        envelope_p: int,
    ) -> None:
        super().__init__()
        self.algebra = algebra
        self.edge_radial = BesselBasis(r_max, num_bessel)
        self.edge_envelope = PolynomialEnvelope(r_max, envelope_p)
        self.edge_net = OrderedSimplexNet(algebra, 2, channels, num_bessel)
        self.has_triangles = r_tri is not None
        if r_tri is not None:
            self.triangle_radial = BesselBasis(r_tri, num_bessel)
            self.triangle_envelope = PolynomialEnvelope(r_tri, envelope_p)
            self.triangle_net = OrderedSimplexNet(algebra, 3, channels, num_bessel)

    def forward(
        self, complex_: SimplicialComplex, elements: torch.Tensor, vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = complex_
        vertex = scalar_multivector(elements, self.algebra.dim)  # [N, C, dim]
        r_edge = vectors[c.edge_directed]  # [n_edges, 3] receiver → sender
        len_edge = torch.linalg.norm(r_edge, dim=-1, keepdim=True)  # [n_edges, 1]
        edge = self.edge_net(
            torch.stack([-0.5 * r_edge, 0.5 * r_edge], dim=1),
            elements[c.edge_vertices],
            self.edge_radial(len_edge)[:, None],
        )
        parts, weights = [vertex, edge], [vertex.new_ones(len(vertex)), self.edge_envelope(len_edge)[:, 0]]
        if self.has_triangles:
            r_a, r_b = vectors[c.triangle_directed[:, 0]], vectors[c.triangle_directed[:, 1]]  # V→Q, V→R
            lengths = torch.linalg.norm(torch.stack([r_a, r_b, r_b - r_a], dim=1), dim=-1, keepdim=True)  # [T, 3, 1]
            centroid = (r_a + r_b) / 3.0  # from V
            rel = torch.stack([-centroid, r_a - centroid, r_b - centroid], dim=1)  # [T, 3, 3]
            parts.append(self.triangle_net(rel, elements[c.triangle_vertices], self.triangle_radial(lengths)))
            weights.append(self.triangle_envelope(lengths).prod(dim=1)[:, 0])
        return torch.cat(parts), torch.cat(weights)
