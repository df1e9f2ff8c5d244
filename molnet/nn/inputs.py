"""What every model body receives, and the graph operations all families share."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class GraphInputs:
    """Geometry of a batch of structures, already strained when stress is wanted.

    Shapes:
        - positions: ``[n_nodes, 3]`` Å (may require grad)
        - species: ``[n_nodes]`` int64, index of each atom's element in the model's element list
        - edge_index: ``[2, n_edges]`` (sender j, receiver i)
        - shifts: ``[n_edges, 3]`` Å, r_ij = r_j - r_i + shift
        - unit_shifts: ``[n_edges, 3]`` integer lattice translations (shift = unit_shift @ cell)
        - cell: ``[n_graphs, 3, 3]`` Å; pbc: ``[n_graphs, 3]`` bool
        - batch: ``[n_nodes]`` graph index of each node
        - total_charge: ``[n_graphs]`` e (``atoms.info["charge"]``, default 0)
        - atomic_numbers: ``[n_nodes]`` int64 (for pieces that depend on Z itself, e.g. ZBL)
        - aux: outputs a body adds besides its per-atom energies: ``coulomb_energy [n_nodes]`` eV
          (added to the energy unscaled) and ``charges [n_nodes]`` e
        - constant_weights: no derivative with respect to the model's parameters and no second
          derivative will be taken (inference), so layers may reuse products of their weights from
          the previous call and recompute what backward needs with first derivatives only
    """

    positions: torch.Tensor
    species: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    unit_shifts: torch.Tensor
    total_charge: torch.Tensor | None = None
    atomic_numbers: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    constant_weights: bool = False

    @classmethod
    def from_graph(cls, graph, species: torch.Tensor, dtype: torch.dtype | None = None) -> "GraphInputs":
        """Unstrained inputs of an :class:`~molnet.data.AtomicGraph` or a batch of them."""
        from molnet.data import keys

        dtype = dtype or graph[keys.POSITIONS].dtype
        positions = graph[keys.POSITIONS].to(dtype)
        batch = getattr(graph, keys.BATCH, None)
        if batch is None:
            batch = torch.zeros(len(positions), dtype=torch.long, device=positions.device)
        return cls(
            positions=positions,
            species=species,
            edge_index=graph[keys.EDGE_INDEX],
            shifts=graph[keys.SHIFTS].to(dtype),
            cell=graph[keys.CELL].to(dtype).reshape(-1, 3, 3),
            pbc=graph[keys.PBC].reshape(-1, 3),
            batch=batch,
            num_graphs=int(getattr(graph, "num_graphs", 1)),
            unit_shifts=graph[keys.UNIT_SHIFTS].to(dtype),
            atomic_numbers=graph[keys.ATOMIC_NUMBERS],
            total_charge=(
                graph[keys.TOTAL_CHARGE].reshape(-1).to(dtype)
                if keys.TOTAL_CHARGE in graph
                else torch.zeros(int(getattr(graph, "num_graphs", 1)), dtype=dtype, device=positions.device)
            ),
        )

    @property
    def sender(self) -> torch.Tensor:
        return self.edge_index[0]

    @property
    def receiver(self) -> torch.Tensor:
        return self.edge_index[1]

    def edge_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge vectors r_ij = r_j - r_i + shift ``[n_edges, 3]`` and lengths ``[n_edges, 1]`` (Å)."""
        vectors = self.positions[self.sender] - self.positions[self.receiver] + self.shifts
        return vectors, torch.linalg.norm(vectors, dim=-1, keepdim=True)


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` ``[n, ...]`` into ``dim_size`` bins given by ``index`` ``[n]``."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def gather_padded(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``values[index]`` of ``values [N, *shape]`` for ``index`` of any shape, where index N
    (one past the last row) marks a padding slot and gives zeros: ``[*index.shape, *shape]``."""
    return torch.cat([values, values.new_zeros((1, *values.shape[1:]))])[index]


def pairs_within(nodes: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every unordered pair (i, j), i ≠ j, of ``nodes`` ``[n]`` with the same ``group`` ``[n]``."""
    order = torch.argsort(group, stable=True)
    nodes, group = nodes[order], group[order]
    counts = torch.bincount(group)
    end = torch.cumsum(counts, 0)[group]  # one past the last node of each node's group
    position = torch.arange(len(nodes), device=nodes.device)
    partners = end - position - 1  # later nodes in the same group
    first = torch.repeat_interleave(position, partners)
    start = torch.repeat_interleave(torch.cumsum(partners, 0) - partners, partners)
    second = first + 1 + torch.arange(len(first), device=nodes.device) - start
    return nodes[first], nodes[second]


def reverse_edge_groups(
    sender: torch.Tensor, receiver: torch.Tensor, unit_shifts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges grouped with their reverses: j→i with lattice translation S and i→j with −S.

    Both vectors are r_j − r_i + S·cell and its exact negation (floating-point subtraction and
    matrix products with integer translations change sign exactly), so every function of the
    length alone is the same on both. Edges without a reverse (an edge list that is not
    symmetric) and repeated edges form groups of their own.

    Args:
        sender, receiver: ``[E]`` atoms of each edge; unit_shifts: ``[E, 3]`` integer translations
            (any dtype holding integers)

    Returns:
        ``first [G]``: one edge of each group (its smallest index); ``group [E]``: each edge's
        group, so that ``values[first][group]`` spreads per-group values over all edges.
    """
    num_edges = len(sender)
    shifts = unit_shifts.round().long()  # [E, 3]
    atoms = int(torch.maximum(sender.max(), receiver.max())) + 1 if num_edges else 1
    span = 2 * int(shifts.abs().max()) + 1 if num_edges else 1
    # the ordered atom pair and the translation of each edge and of its reverse, as 1-D codes
    # (1-D unique is a sort; unique over rows is an order of magnitude slower)
    pair = torch.cat([sender * atoms + receiver, receiver * atoms + sender])
    code = ((shifts[:, 0] * span + shifts[:, 1]) * span + shifts[:, 2]) + (span**3 - 1) // 2  # in [0, span³)
    translation = torch.cat([code, span**3 - 1 - code])  # -S encodes as span³ - 1 - code(S)
    _, pair = torch.unique(pair, return_inverse=True)
    _, translation = torch.unique(translation, return_inverse=True)
    key = pair * (2 * num_edges) + translation  # [2E]: the edge itself, then its reverse
    canonical = torch.minimum(key[:num_edges], key[num_edges:])  # the same on both edges of a pair
    labels, group = torch.unique(canonical, return_inverse=True)
    first = torch.full((len(labels),), len(sender), dtype=torch.long, device=sender.device)
    first = first.scatter_reduce(0, group, torch.arange(len(sender), device=sender.device), "amin")
    return first, group


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """``rank [n]`` with ``rank[order[i]] = i``: where each index stands in the permutation ``order [n]``."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return rank
