"""Statistics of a training set, computed once and stored in the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from molnet.data import keys
from molnet.data.neighbors import neighbor_list
from molnet.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class DatasetStatistics:
    """E0s (eV per element symbol), mean neighbour count, force RMS (eV/Å) and per-atom shift (eV)."""

    e0s: dict[str, float]
    avg_num_neighbors: float
    scale: float
    shift: float

    def as_dict(self) -> dict:
        return {"e0s": self.e0s, "avg_num_neighbors": self.avg_num_neighbors, "scale": self.scale, "shift": self.shift}


def fit_e0s(configs: Sequence[Atoms], elements: Sequence[str]) -> dict[str, float]:
    """Least-squares isolated-atom energies: E ≈ Σ_Z n_Z(config) · E0[Z].

    Used when no isolated-atom file is given. With a single composition (one molecule) the
    problem is rank deficient; the minimum-norm solution is returned, which is fine because
    only the sum over the composition enters the energies.
    """
    index = {s: k for k, s in enumerate(elements)}
    counts = np.zeros((len(configs), len(elements)))
    energies = np.zeros(len(configs))
    for c, atoms in enumerate(configs):
        if keys.REF_ENERGY not in atoms.info:
            raise DataError(f"configuration {c} has no energy; cannot fit E0s")
        for s in atoms.get_chemical_symbols():
            counts[c, index[s]] += 1
        energies[c] = atoms.info[keys.REF_ENERGY]
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {s: float(solution[k]) for s, k in index.items()}


def compute_statistics(
    configs: Sequence[Atoms],
    elements: Sequence[str],
    r_max: float,
    isolated_e0s: dict[int, float] | None = None,
) -> DatasetStatistics:
    """E0s, avg_num_neighbors, scale (RMS force component) and shift as in mace-torch.

    The shift is the mean per-atom interaction energy (E − Σ E0)/N of the training set, so
    an untrained model starts at the right energy scale.

    ``isolated_e0s`` maps atomic numbers to isolated-atom energies; elements missing there are
    fitted by least squares over ``configs``.
    """
    if len(configs) == 0:
        raise DataError("no training configurations to compute statistics from")
    present = {s for a in configs for s in a.get_chemical_symbols()}
    missing = present - set(elements)
    if missing:
        raise DataError(f"training data contains element(s) {sorted(missing)} absent from the model's elements {list(elements)}")
    isolated = {chemical_symbols[z]: e for z, e in (isolated_e0s or {}).items()}
    if all(s in isolated for s in elements):
        e0s = {s: isolated[s] for s in elements}
    else:
        log.info("fitting E0s by least squares (no isolated-atom energy for %s)", sorted(set(elements) - set(isolated)))
        e0s = {**fit_e0s(configs, elements), **{s: isolated[s] for s in elements if s in isolated}}
    n_edges = n_nodes = 0
    for atoms in configs:
        cell = atoms.get_cell()[:] if atoms.pbc.any() else np.zeros((3, 3))
        nl = neighbor_list(atoms.get_positions(), cell, atoms.pbc, r_max)
        n_edges += len(nl.sender)
        n_nodes += len(atoms)
    forces = [atoms.arrays[keys.REF_FORCES] for atoms in configs if keys.REF_FORCES in atoms.arrays]
    scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) if forces else 1.0
    if not scale > 0:
        scale = 1.0
    residuals = [
        (atoms.info[keys.REF_ENERGY] - sum(e0s[s] for s in atoms.get_chemical_symbols())) / len(atoms)
        for atoms in configs
        if keys.REF_ENERGY in atoms.info
    ]
    shift = float(np.mean(residuals)) if residuals else 0.0
    return DatasetStatistics(e0s=e0s, avg_num_neighbors=n_edges / n_nodes, scale=scale, shift=shift)
