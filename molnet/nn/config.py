"""Hyperparameters that every model family shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from molnet.data.neighbors import DEFAULT_R_MAX
from molnet.errors import ConfigError


@dataclass
class GraphConfig:
    """The radius graph and its radial features: ``r_max`` (Å), Bessel basis size, envelope
    exponent p, the mean neighbor count that normalises neighbor sums (set from the training
    data), and the optional long-range block (``{"name": "ewald", ...}``, ``{"name": "coulomb", ...}`` or a list of both)."""

    r_max: float = DEFAULT_R_MAX
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    avg_num_neighbors: float = 1.0
    long_range: dict[str, Any] | list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.r_max > 0:
            raise ConfigError(f"r_max must be positive, got {self.r_max}")
        if self.num_bessel < 1:
            raise ConfigError(f"num_bessel must be >= 1, got {self.num_bessel}")
        if self.num_polynomial_cutoff < 2:
            raise ConfigError(f"num_polynomial_cutoff must be >= 2, got {self.num_polynomial_cutoff}")
        if not self.avg_num_neighbors > 0:
            raise ConfigError(f"avg_num_neighbors must be positive, got {self.avg_num_neighbors}")
        from molnet.nn.long_range import validate_long_range

        validate_long_range(self.long_range)
