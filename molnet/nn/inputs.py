"""What every model body receives, and the graph operations all families share."""

from __future__ import annotations

from dataclasses import dataclass

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
            positions=positions, species=species, edge_index=graph[keys.EDGE_INDEX],
            shifts=graph[keys.SHIFTS].to(dtype), cell=graph[keys.CELL].to(dtype).reshape(-1, 3, 3),
            pbc=graph[keys.PBC].reshape(-1, 3), batch=batch, num_graphs=int(getattr(graph, "num_graphs", 1)),
            unit_shifts=graph[keys.UNIT_SHIFTS].to(dtype),
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
