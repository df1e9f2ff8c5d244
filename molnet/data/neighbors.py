"""Radius neighbor lists with periodic images, computed by vesin.

The list is *full* (both i→j and j→i) and includes periodic images of an atom
itself when the cell is smaller than the cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vesin
from ase.geometry import complete_cell

from molnet.errors import InputError

#: The default cutoff radius (Å) of every model family and of ``molnet preprocess``'s neighbor counts.
DEFAULT_R_MAX = 5.0


@dataclass(frozen=True)
class NeighborList:
    """Pairs within the cutoff.

    Shapes:
        - sender, receiver: ``[n_edges]`` int64 (edge j → i, ``receiver`` is i)
        - unit_shifts: ``[n_edges, 3]`` int64 lattice translations of the sender
        - shifts: ``[n_edges, 3]`` Å, ``shifts = unit_shifts @ cell`` so that
          ``r_ij = positions[sender] - positions[receiver] + shifts``
        - distances: ``[n_edges]`` Å
    """

    sender: np.ndarray
    receiver: np.ndarray
    unit_shifts: np.ndarray
    shifts: np.ndarray
    distances: np.ndarray


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float) -> NeighborList:
    """All ordered pairs (i, j, image) with ``|r_ij| < r_max``, excluding i == j in the same image.

    Parameters
    ----------
    positions
        ``[n_atoms, 3]`` Cartesian positions in Å.
    cell
        ``[3, 3]`` lattice vectors as rows, Å. Vectors along non-periodic directions may be zero.
    pbc
        ``[3]`` periodic flags.
    r_max
        Cutoff radius in Å (> 0).

    Examples
    --------
    >>> import numpy as np
    >>> nl = neighbor_list(np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.zeros((3, 3)), np.zeros(3, bool), 1.5)
    >>> sorted(zip(nl.sender.tolist(), nl.receiver.tolist()))
    [(0, 1), (1, 0)]
    """
    if not r_max > 0:
        raise InputError(f"r_max must be positive, got {r_max}")
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    box = complete_cell(cell) if pbc.any() else np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(r_max), full_list=True)
    i, j, unit_shifts, d = calculator.compute(positions, box, [bool(p) for p in pbc], quantities="ijSd")
    unit_shifts = np.asarray(unit_shifts, dtype=np.int64).reshape(-1, 3)
    return NeighborList(
        sender=np.asarray(j, dtype=np.int64),
        receiver=np.asarray(i, dtype=np.int64),
        unit_shifts=unit_shifts,
        shifts=unit_shifts.astype(np.float64) @ cell,
        distances=np.asarray(d, dtype=np.float64),
    )
