"""The atomic graph: one structure as a torch_geometric ``Data`` object."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Data

from molnet.data import keys
from molnet.data.datasets import as_stress_matrix
from molnet.data.neighbors import neighbor_list
from molnet.errors import InputError

log = logging.getLogger(__name__)

#: Atoms closer than this (Å) are rejected: no interatomic potential is meaningful there.
MIN_DISTANCE = 0.1
#: Above this many estimated edges per structure a warning says memory use will be large.
WARN_EDGES = 20_000_000
#: Above this many estimated edges the structure is refused instead of exhausting memory.
MAX_EDGES = 500_000_000


def estimate_edges(n_atoms: int, cell: np.ndarray, pbc: np.ndarray, r_max: float) -> float:
    """Expected number of edges of a periodic structure at uniform density (n² for a molecule).

    Fully periodic: n² · (4/3)π r_max³ / V, right both for large cells and for cells much smaller
    than the cutoff (where it counts the periodic images). Partly periodic: n² · Π_d 2 r_max / h_d
    over the periodic directions, h_d being the spacing of the lattice planes.
    """
    n2 = float(n_atoms) ** 2
    if not pbc.any():
        return n2
    from ase.geometry import complete_cell

    full = complete_cell(cell)
    volume = abs(np.linalg.det(full))
    if pbc.all():
        return n2 * 4.0 / 3.0 * np.pi * r_max**3 / volume
    factor = 1.0
    for d in np.flatnonzero(pbc):
        e, f = [k for k in range(3) if k != d]
        spacing = volume / np.linalg.norm(np.cross(full[e], full[f]))
        factor *= 2.0 * r_max / spacing
    return n2 * factor


def validate_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, where: str = "structure") -> None:
    """Raise :class:`InputError` if a structure cannot be evaluated.

    Checks: at least one atom, finite positions and cell, and a non-singular cell along
    the periodic directions. ``where`` names the structure in messages (e.g. file and frame).
    """
    if len(positions) == 0:
        raise InputError(f"{where}: the structure has no atoms")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        raise InputError(f"{where}: positions of atom(s) {bad[:10].tolist()} are NaN or infinite")
    if not np.isfinite(cell).all():
        raise InputError(f"{where}: the cell contains NaN or infinite values")
    if pbc.any():
        periodic_vectors = cell[pbc]
        gram = periodic_vectors @ periodic_vectors.T
        lengths = np.linalg.norm(periodic_vectors, axis=1)
        if (lengths < 1e-8).any() or abs(np.linalg.det(gram)) < 1e-12 * float(np.prod(lengths**2)):
            raise InputError(
                f"{where}: the cell is singular along its periodic directions "
                f"(pbc={pbc.tolist()}, cell={cell.tolist()}); give linearly independent "
                "lattice vectors or switch pbc off for the missing directions"
            )


class AtomicGraph(Data):
    """A structure with its radius graph, as a torch_geometric :class:`~torch_geometric.data.Data`.

    Fields (see :mod:`molnet.data.keys`):

    Shapes:
        - positions: ``[n_nodes, 3]`` Å
        - atomic_numbers: ``[n_nodes]`` int64
        - edge_index: ``[2, n_edges]`` (sender j, receiver i)
        - shifts: ``[n_edges, 3]`` Å, so that r_ij = r_j - r_i + shift
        - unit_shifts: ``[n_edges, 3]`` lattice translations (shift = unit_shift @ cell)
        - cell: ``[1, 3, 3]`` Å; pbc: ``[1, 3]`` bool
        - targets when present: energy ``[1]`` eV, forces ``[n_nodes, 3]`` eV/Å,
          stress ``[1, 3, 3]`` eV/Å³, and the weights ``weight``, ``energy_weight``,
          ``forces_weight``, ``stress_weight`` (each ``[1]``).

    Batch graphs with :class:`torch_geometric.loader.DataLoader`.
    """

    @classmethod
    def from_atoms(
        cls,
        atoms: Atoms,
        r_max: float,
        dtype: torch.dtype | None = None,
        where: str = "structure",
    ) -> "AtomicGraph":
        """Build the graph of ``atoms`` with cutoff ``r_max`` (Å).

        Reference values stored by :func:`molnet.data.read_dataset` (``REF_energy`` in
        ``atoms.info``, ``REF_forces`` in ``atoms.arrays``, ``REF_stress`` in ``atoms.info``)
        become targets (stress only of cells periodic in all three directions). ``pbc`` decides
        periodicity; the cell of a non-periodic structure is ignored. ``where`` names the structure in error messages.

        Examples
        --------
        >>> from ase.build import molecule
        >>> g = AtomicGraph.from_atoms(molecule("H2O"), r_max=3.0)
        >>> g.edge_index.shape
        torch.Size([2, 6])
        """
        dtype = dtype or torch.get_default_dtype()
        positions = np.asarray(atoms.get_positions(), dtype=np.float64)
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        cell = np.asarray(atoms.get_cell()[:], dtype=np.float64)
        if not pbc.any():
            cell = np.zeros((3, 3))
        validate_structure(positions, cell, pbc, where)
        estimate = estimate_edges(len(atoms), cell, pbc, r_max) if pbc.any() else 0.0
        if estimate > MAX_EDGES:
            raise InputError(
                f"{where}: the cell is so small against r_max={r_max} Å that about {estimate:.2g} edges would be "
                "needed; use a larger (super)cell"
            )
        if estimate > WARN_EDGES:
            log.warning(
                "%s: about %.2g edges for %d atoms with r_max=%.2f Å; memory use will be large",
                where,
                estimate,
                len(atoms),
                r_max,
            )
        nl = neighbor_list(positions, cell, pbc, r_max)
        close = np.flatnonzero(nl.distances < MIN_DISTANCE)
        if len(close):
            e = close[np.argmin(np.minimum(nl.receiver[close], nl.sender[close]))]
            first, second = sorted((int(nl.receiver[e]), int(nl.sender[e])))
            raise InputError(
                f"{where}: atoms {first} and {second} are "
                f"{nl.distances[e]:.3g} Å apart (minimum {MIN_DISTANCE} Å); "
                "the structure has overlapping atoms"
            )
        graph = cls(
            positions=torch.tensor(positions, dtype=dtype),
            atomic_numbers=torch.tensor(atoms.get_atomic_numbers(), dtype=torch.long),
            edge_index=torch.tensor(np.stack([nl.sender, nl.receiver]), dtype=torch.long),
            shifts=torch.tensor(nl.shifts, dtype=dtype),
            unit_shifts=torch.tensor(nl.unit_shifts, dtype=dtype),
            cell=torch.tensor(cell, dtype=dtype).unsqueeze(0),
            pbc=torch.tensor(pbc).unsqueeze(0),
            num_nodes=len(atoms),
        )
        graph[keys.TOTAL_CHARGE] = torch.tensor([float(atoms.info.get(keys.CHARGE_INFO, 0.0))], dtype=dtype)
        _attach_targets(graph, atoms, dtype)
        return graph


def _attach_targets(graph: AtomicGraph, atoms: Atoms, dtype: torch.dtype) -> None:
    """Copy the ``REF_*`` targets of ``atoms`` onto ``graph`` with their presence weights."""
    energy = atoms.info.get(keys.REF_ENERGY)
    forces = atoms.arrays.get(keys.REF_FORCES)
    stress = atoms.info.get(keys.REF_STRESS)
    n = len(atoms)
    has_energy = energy is not None and math.isfinite(float(energy))
    graph[keys.ENERGY] = torch.tensor([float(energy) if has_energy else 0.0], dtype=dtype)
    graph[keys.ENERGY_WEIGHT] = torch.tensor([1.0 if has_energy else 0.0], dtype=dtype)
    graph[keys.FORCES] = (
        torch.tensor(np.asarray(forces), dtype=dtype) if forces is not None else torch.zeros(n, 3, dtype=dtype)
    )
    graph[keys.FORCES_WEIGHT] = torch.tensor([1.0 if forces is not None else 0.0], dtype=dtype)
    # stress is defined for cells periodic in all three directions only (the calculator and
    # `molnet eval` give none for slabs and wires), so a slab's reference stress is not fitted
    has_stress = stress is not None and bool(np.all(atoms.pbc))
    graph[keys.STRESS] = (
        torch.tensor(as_stress_matrix(stress, "the structure's REF_stress"), dtype=dtype).reshape(1, 3, 3)
        if has_stress
        else torch.zeros(1, 3, 3, dtype=dtype)
    )
    graph[keys.STRESS_WEIGHT] = torch.tensor([1.0 if has_stress else 0.0], dtype=dtype)
    graph[keys.WEIGHT] = torch.tensor([float(atoms.info.get(keys.REF_WEIGHT, 1.0))], dtype=dtype)
    dipole = atoms.info.get(keys.REF_DIPOLE)
    graph[keys.REF_DIPOLE_FIELD] = torch.tensor(
        np.zeros((1, 3)) if dipole is None else np.asarray(dipole).reshape(1, 3), dtype=dtype
    )
    graph[keys.DIPOLE_WEIGHT] = torch.tensor([0.0 if dipole is None else 1.0], dtype=dtype)
    charges = atoms.arrays.get(keys.REF_CHARGES)
    graph[keys.REF_CHARGES_FIELD] = torch.tensor(np.zeros(n) if charges is None else np.asarray(charges), dtype=dtype)
    graph[keys.CHARGES_WEIGHT] = torch.tensor([0.0 if charges is None else 1.0], dtype=dtype)
