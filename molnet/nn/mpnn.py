"""Invariant message passing (``mpnn``): the baseline family.

A continuous-filter network in the spirit of SchNet and of Gilmer et al.'s message passing:
element embedding, radial basis with a smooth envelope, edge-conditioned messages, residual
node updates and a per-atom energy readout.

References:
    Gilmer et al., "Neural Message Passing for Quantum Chemistry" (ICML 2017);
    Schütt et al., "SchNet" (NeurIPS 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from molnet.nn.config import GraphConfig
from molnet.nn.inputs import GraphInputs, scatter_sum
from molnet.nn.long_range import add_coulomb, coulomb_block, long_range_layers
from molnet.nn.radial import RadialEmbedding, radial_mlp


@dataclass
class MPNNConfig(GraphConfig):
    """Hyperparameters of :class:`MPNN` (``r_max`` in Å)."""

    num_channels: int = 64
    num_interactions: int = 3
    radial_MLP: list[int] = field(default_factory=lambda: [64, 64])


class MPNNInteraction(nn.Module):
    """h_i ← h_i + MLP(Σ_j W(r_ij) ⊙ Linear(h_j) / avg_num_neighbors).

    Shapes:
        - node_feats: ``[n_nodes, C]``; radial: ``[n_edges, num_bessel]``; output ``[n_nodes, C]``
    """

    def __init__(self, num_channels: int, num_basis: int, radial_hidden: list[int], avg_num_neighbors: float) -> None:
        super().__init__()
        self.linear_in = nn.Linear(num_channels, num_channels)
        self.filter = radial_mlp(num_basis, radial_hidden, num_channels)
        self.update = nn.Sequential(
            nn.Linear(num_channels, num_channels), nn.SiLU(), nn.Linear(num_channels, num_channels)
        )
        self.avg_num_neighbors = avg_num_neighbors

    def forward(self, node_feats: torch.Tensor, radial: torch.Tensor, inputs: GraphInputs) -> torch.Tensor:
        messages = self.filter(radial) * self.linear_in(node_feats)[inputs.sender]  # [n_edges, C]
        summed = scatter_sum(messages, inputs.receiver, len(node_feats)) / self.avg_num_neighbors
        return node_feats + self.update(summed)


class MPNN(nn.Module):
    """Invariant message-passing body: per-atom energies from a batch of graphs.

    Shapes:
        - input: :class:`GraphInputs` with ``n_nodes`` atoms
        - output: ``[n_nodes]`` per-atom energies (before scale/shift/E0)
    """

    def __init__(self, num_elements: int, config: MPNNConfig) -> None:
        super().__init__()
        c = config
        self.embedding = nn.Embedding(num_elements, c.num_channels)
        self.radial = RadialEmbedding(c.r_max, c.num_bessel, c.num_polynomial_cutoff)
        self.interactions = nn.ModuleList(
            MPNNInteraction(c.num_channels, c.num_bessel, list(c.radial_MLP), c.avg_num_neighbors)
            for _ in range(c.num_interactions)
        )
        self.long_range = long_range_layers(c.long_range, c.num_channels, c.num_interactions)
        self.coulomb = coulomb_block(c.long_range, c.num_channels)
        self.readout = nn.Sequential(
            nn.Linear(c.num_channels, c.num_channels // 2), nn.SiLU(), nn.Linear(c.num_channels // 2, 1)
        )

    def forward(self, inputs: GraphInputs) -> torch.Tensor:
        _, lengths = inputs.edge_vectors()
        radial = self.radial(lengths)  # [n_edges, num_bessel]
        h = self.embedding(inputs.species)  # [n_nodes, C]
        for t, interaction in enumerate(self.interactions):
            update = self.long_range[t](h, inputs) if self.long_range is not None else None  # [n_nodes, C]
            h = interaction(h, radial, inputs)
            if update is not None:
                h = h + update
        add_coulomb(self.coulomb, h, inputs)
        return self.readout(h).squeeze(-1)
