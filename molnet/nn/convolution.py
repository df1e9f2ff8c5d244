"""Channel-wise ("uvu") tensor-product convolution summed over neighbors, as batched matmuls.

MACE's message A_i = Σ_{j∈N(i)} TP_uvu(h_j, Y(r̂_ij); w_ij) is, path by path,

    A_i[u, p, k] = c_p Σ_{j, a} w_ij[u, p] h_j[u, a] Z_ij[p, a, k],   Z_ij[p, a, k] = Σ_b Y_ij[b] C_p[a, b, k]

with C_p the Wigner-3j symbol of path p = (l1, l2 → l3) and c_p e3nn's path normalisation.
Evaluating it edge by edge (e3nn's ``TensorProduct`` followed by a scatter sum) writes an
``[n_edges, C, Σ_p (2 l3 + 1)]`` message tensor and keeps several of that size for backward.
Here the edges are laid out in a padded neighbor table ``[n_nodes, max_neighbors]`` instead,
and the sum over neighbors j and input components a becomes one batched matmul per path
(``[n_nodes, C, n_nb·(2l1+1)] @ [n_nodes, n_nb·(2l1+1), 2l3+1]``): no per-edge message tensor
exists, and backward and double backward are matmuls too. The operation is defined by an e3nn
``TensorProduct`` (its instructions, normalisation and weight layout) and equals
``scatter_sum(tp(h[sender], Y, w), receiver)`` to rounding (tested).

References:
    e3nn ``o3.TensorProduct`` ("uvu" instructions, path normalisation); Batatia et al.,
    "MACE" (NeurIPS 2022), eq. 8 (the atomic basis A_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from molnet.nn.inputs import gather_padded, inverse_permutation, reverse_edge_groups


@dataclass(frozen=True)
class NeighborTable:
    """Edges grouped by receiver in a padded table, built once per forward and shared by layers.

    Attributes:
        edge: ``[n_nodes, max_neighbors]`` edge index of each slot; ``n_edges`` marks an empty slot
        sender: ``[n_nodes, max_neighbors]`` sender atom of each slot (0 for empty slots, whose
            edge quantities are zero)
        num_edges: number of real edges
    """

    edge: torch.Tensor
    sender: torch.Tensor
    num_edges: int

    @classmethod
    def build(cls, sender: torch.Tensor, receiver: torch.Tensor, num_nodes: int) -> "NeighborTable":
        """Group edges ``(sender [E], receiver [E])`` by receiver; order within a group is edge order."""
        num_edges = len(receiver)
        counts = torch.bincount(receiver, minlength=num_nodes)  # [n_nodes]
        width = int(counts.max()) if num_edges else 0
        order = torch.argsort(receiver, stable=True)  # [E]
        start = torch.cumsum(counts, 0) - counts  # [n_nodes] first position of each group
        sorted_receiver = receiver[order]
        slot = torch.arange(num_edges, device=receiver.device) - start[sorted_receiver]  # [E]
        edge = torch.full((num_nodes, width), num_edges, dtype=torch.long, device=receiver.device)
        edge[sorted_receiver, slot] = order
        padded_sender = torch.zeros((num_nodes, width), dtype=torch.long, device=receiver.device)
        padded_sender[sorted_receiver, slot] = sender[order]
        return cls(edge=edge, sender=padded_sender, num_edges=num_edges)

    def gather_edges(self, values: torch.Tensor) -> torch.Tensor:
        """Edge values ``[E, *shape]`` → ``[n_nodes, max_neighbors, *shape]``, zero in empty slots."""
        return gather_padded(values, self.edge)


@dataclass(frozen=True)
class ReceiverChunks:
    """The atoms in order of neighbor count, cut into chunks of ``size``, and the edges in that order.

    Atoms of similar neighbor count share a chunk, so each chunk's padded table (built per chunk)
    is nearly full whatever the spread of counts in the structure. The edges are sorted once by
    the position of their receiver, so that every per-edge tensor in that order splits into the
    chunks' edges without copies (and its backward is one concatenation).

    Attributes:
        nodes: ``[n_nodes]`` atoms by ascending neighbor count (stable)
        rank: ``[n_nodes]`` position of each atom in ``nodes``
        edges: ``[E]`` edge indices grouped by receiver in the order of ``nodes`` (edge order within)
        sender: ``[E]`` sender atom of each edge in that order
        receiver: ``[E]`` position in ``nodes`` of each edge's receiver, in that order
        edge_counts: edges per chunk
        size: atoms per chunk
        tables: each chunk's :class:`NeighborTable`, receivers numbered from the chunk's first
            atom and edges from the chunk's first edge (shared by every layer)
        pairs: each edge grouped with its reverse, ``(first [G], group [E])`` in the order of
            ``edges`` (:func:`~molnet.nn.inputs.reverse_edge_groups`), so that functions of the
            edge length (the radial MLP) can run once per pair; None when built without lattice
            translations (each chunk then evaluates its own edges)
        pair_slots: with ``pairs``, the pair (row of ``first``) of every slot of every chunk's
            table, the tables flattened one after the other, ``G`` for an empty slot
    """

    nodes: torch.Tensor
    rank: torch.Tensor
    edges: torch.Tensor
    sender: torch.Tensor
    receiver: torch.Tensor
    edge_counts: list[int]
    size: int
    tables: list[NeighborTable]
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    pair_slots: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        counts: torch.Tensor,
        size: int,
        unit_shifts: torch.Tensor | None = None,
    ) -> "ReceiverChunks":
        """Chunks of the edges ``(sender [E], receiver [E])``, whose neighbor count per atom is
        ``counts [n_nodes]``; with ``unit_shifts [E, 3]`` (lattice translations), each edge is
        also paired with its reverse (``pairs``)."""
        num_nodes = len(counts)
        nodes = torch.argsort(counts, stable=True)
        rank = inverse_permutation(nodes)
        edges = torch.argsort(rank[receiver], stable=True)
        bounds = list(range(0, num_nodes, size)) + [num_nodes]  # first atom of each chunk, then the end
        offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts[nodes], 0)])[bounds].tolist()
        edge_counts = [stop - start for start, stop in zip(offsets, offsets[1:])]
        chunk_sender, chunk_receiver = sender[edges], rank[receiver[edges]]
        tables = [
            NeighborTable.build(sender_k, receiver_k - start, stop - start)
            for sender_k, receiver_k, start, stop in zip(
                chunk_sender.split(edge_counts), chunk_receiver.split(edge_counts), bounds, bounds[1:]
            )
        ]
        pairs = pair_slots = None
        if unit_shifts is not None:
            pairs = reverse_edge_groups(chunk_sender, receiver[edges], unit_shifts[edges])  # atoms, not positions
            first, group = pairs
            empty = group.new_full((1,), len(first))
            pair_slots = torch.cat(
                [
                    torch.cat([group_k, empty])[table.edge].flatten()
                    for group_k, table in zip(group.split(edge_counts), tables)
                ]
            )
        return cls(
            nodes=nodes,
            rank=rank,
            edges=edges,
            sender=chunk_sender,
            receiver=chunk_receiver,
            edge_counts=edge_counts,
            size=size,
            tables=tables,
            pairs=pairs,
            pair_slots=pair_slots,
        )

    def split(self, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A per-edge tensor ``[E, …]`` in the order of ``edges`` → one view per chunk (one chunk:
        the tensor itself, so that a traced graph does not depend on the number of edges)."""
        return (values,) if len(self.edge_counts) == 1 else values.split(self.edge_counts)

    def split_slots(self, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A tensor ``[Σ slots, …]`` over every chunk's table slots in turn (as ``pair_slots``) →
        one view per chunk, ``[rows * max_neighbors, …]`` (one chunk: the tensor itself)."""
        return (values,) if len(self.tables) == 1 else values.split([t.edge.numel() for t in self.tables])

    def rows(self, chunk: int) -> tuple[int, int]:
        """``(start, stop)``: the chunk's atoms are ``nodes[start:stop]``."""
        start = chunk * self.size
        return start, min(start + self.size, len(self.nodes))


class NeighborConvolution(nn.Module):
    """Σ_j TP_uvu(h_j, Y_ij; w_ij) for the "uvu" instructions of an e3nn ``TensorProduct``.

    Args:
        tp: the defining tensor product: ``irreps_in1`` node irreps (all multiplicities equal to C),
            ``irreps_in2`` spherical harmonics (multiplicity 1), "uvu" instructions with per-edge
            weights (``internal_weights=False, shared_weights=False``).

    Shapes:
        - node_feats ``[n_nodes, irreps_in1.dim]``; edge_sh ``[n_rows, max_neighbors, irreps_in2.dim]``
          and weights ``[n_rows, max_neighbors, tp.weight_numel]`` (e3nn's layout: instruction-major,
          then channel) in the table's layout (:meth:`NeighborTable.gather_edges`): edge_sh must be
          zero in empty slots, which then add nothing whatever their weights
        - returns ``[n_rows, irreps_out.dim]`` in e3nn layout, the sum over each node's neighbors,
          for the table's rows (``n_rows`` is ``n_nodes`` unless the table holds some
          receivers only, as chunked evaluation builds it)
    """

    def __init__(self, tp: o3.TensorProduct) -> None:
        super().__init__()
        self.irreps_in = tp.irreps_in1
        self.irreps_sh = tp.irreps_in2
        self.irreps_out = tp.irreps_out
        muls = {mul for mul, _ in self.irreps_in} | {mul for mul, _ in self.irreps_out}
        if len(muls) != 1 or any(mul != 1 for mul, _ in self.irreps_sh):
            raise ValueError(f"needs equal node multiplicities and multiplicity-1 harmonics, got {tp}")
        self.channels = muls.pop()
        # layouts as plain ints, so that forward never touches Irreps (torch.compile traces it)
        self._in_blocks = [(s.start, s.stop, ir.dim) for s, (_, ir) in zip(self.irreps_in.slices(), self.irreps_in)]
        self._sh_blocks = [(s.start, s.stop) for s in self.irreps_sh.slices()]
        self._out_dims = [ir.dim for _, ir in self.irreps_out]
        self.paths: list[tuple[int, int, int, int, int]] = []  # (i_in, i_sh, i_out, weight index, d_in)
        for p, ins in enumerate(tp.instructions):
            if ins.connection_mode != "uvu" or not ins.has_weight:
                raise ValueError(f"only weighted 'uvu' instructions are supported, got {ins}")
            l1, l2, l3 = self.irreps_in[ins.i_in1].ir.l, self.irreps_sh[ins.i_in2].ir.l, self.irreps_out[ins.i_out].ir.l
            # path normalisation folded into the coupling: Z[e, a, k] = Σ_b Y[e, b] C[b, a, k]
            coupling = ins.path_weight * o3.wigner_3j(l1, l2, l3).transpose(0, 1)  # [2l2+1, 2l1+1, 2l3+1]
            self.register_buffer(f"coupling_{p}", coupling.reshape(2 * l2 + 1, -1).contiguous(), persistent=False)
            self.paths.append((ins.i_in1, ins.i_in2, ins.i_out, p, 2 * l1 + 1))

    def bytes_per_slot(self, itemsize: int) -> int:
        """Bytes per neighbor-table slot of forward's largest tensors: the weighted inputs of every
        path, the gathered weights and radial-MLP output, and the gathered node features."""
        weighted = sum(d_in for *_, d_in in self.paths)
        gathered = sum(dim for *_, dim in self._in_blocks)
        return itemsize * self.channels * (weighted + 2 * len(self.paths) + gathered)

    def layout(self, node_feats: torch.Tensor) -> list[torch.Tensor]:
        """Node features ``[n_nodes, irreps_in.dim]`` → one contiguous ``[n_nodes, 2l+1, C]`` per
        input irrep, the rows that :meth:`gather` takes (a gather of the transposed view keeps its
        strides, and the products with the weights then run 4x slower). Made once per layer and
        shared by all chunks."""
        n_nodes, c = node_feats.shape[0], self.channels
        return [
            node_feats[:, start:stop].reshape(n_nodes, c, dim).transpose(1, 2).contiguous()
            for start, stop, dim in self._in_blocks
        ]

    def gather(self, layout: list[torch.Tensor], table: NeighborTable) -> list[torch.Tensor]:
        """The senders' rows of :meth:`layout`, ``[n, max_neighbors, 2l+1, C]`` per input irrep."""
        n, width = table.edge.shape
        senders = table.sender.flatten()
        return [x.index_select(0, senders).view(n, width, x.shape[1], x.shape[2]) for x in layout]

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_sh: torch.Tensor,
        weights: torch.Tensor,
        table: NeighborTable,
        layout: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``layout``: :meth:`layout` of ``node_feats``, when already made for another chunk."""
        return self.gathered(
            self.gather(self.layout(node_feats) if layout is None else layout, table), edge_sh, weights
        )

    def gathered(self, inputs: list[torch.Tensor], edge_sh: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The sum over neighbors from the senders' features already gathered (:meth:`gather`)."""
        n, width, c = edge_sh.shape[0], edge_sh.shape[1], self.channels
        # per-path weights [n, nb, 1, C] (split, not indexing: its backward is one cat, not a zero fill per path)
        w = weights.reshape(n, width, len(self.paths), c).split(1, dim=2)
        out: list[torch.Tensor | None] = [None] * len(self._out_dims)
        for i_in, i_sh, i_out, p, d_in in self.paths:
            d_out = self._out_dims[i_out]
            sh_start, sh_stop = self._sh_blocks[i_sh]
            z = edge_sh[:, :, sh_start:sh_stop] @ getattr(self, f"coupling_{p}")  # [n, nb, d_in * d_out]
            z = z.reshape(n, width * d_in, d_out)
            v = (inputs[i_in] * w[p]).reshape(n, width * d_in, c)  # [n, nb·d_in, C]
            # Zᵀ v, [n, d_out, C]: both operands row-major, no copy; then e3nn's [n, C·d_out]
            out[i_out] = torch.bmm(z.transpose(1, 2), v).transpose(1, 2).reshape(n, c * d_out)
        return torch.cat(out, dim=1)
