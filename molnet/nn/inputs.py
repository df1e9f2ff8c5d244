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
