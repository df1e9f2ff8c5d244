"""Statistics of a training set, computed once and stored in the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

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


#: How E0s are chosen: ``"isolated"`` (isolated-atom energies, the rest by least squares where
#: the compositions determine them), ``"average"`` (least squares over the training set, as
#: mace-torch's ``E0s="average"``; minimum-norm where the compositions do not determine them) or
#: explicit values per element symbol.
E0Choice = Union[str, Mapping[str, float]]


def fit_e0s(configs: Sequence[Atoms], elements: Sequence[str], known: Mapping[str, float] | None = None,
            underdetermined_ok: bool = False) -> dict[str, float]:
    """Least-squares isolated-atom energies: E − Σ_known n_Z·E0[Z] ≈ Σ_Z n_Z(config) · E0[Z].

    Only the elements absent from ``known`` are fitted. When the composition matrix of those
    elements has lower rank than their number (e.g. every structure has the same stoichiometry,
    as in any single-molecule set) the split of the energy between elements is arbitrary: a
    :class:`DataError` names the alternatives, unless ``underdetermined_ok`` (``e0s: average``),
    which returns the minimum-norm solution with a warning.
    """
    known = dict(known or {})
    unknown = [s for s in elements if s not in known]
    index = {s: k for k, s in enumerate(unknown)}
    counts = np.zeros((len(configs), len(unknown)))
    energies = np.zeros(len(configs))
    for c, atoms in enumerate(configs):
        if keys.REF_ENERGY not in atoms.info:
            raise DataError(f"configuration {c} has no energy; cannot fit E0s")
        energies[c] = atoms.info[keys.REF_ENERGY]
        for s in atoms.get_chemical_symbols():
            if s in known:
                energies[c] -= known[s]
            else:
                counts[c, index[s]] += 1
    if not unknown:
        return known
    rank = np.linalg.matrix_rank(counts)
    if rank < len(unknown):
        message = (
            f"the E0s of {unknown} cannot be fitted: the training compositions determine only {rank} combination(s) "
            f"of {len(unknown)} element energies (e.g. every structure has the same stoichiometry)"
        )
        if not underdetermined_ok:
            raise DataError(
                f"{message}. Give isolated-atom energies (data.isolated_atoms_file, or frames with "
                f"config_type=isolated_atom; data.isolated_atoms_energy_key reads them from another key), explicit "
                f"values (data.e0s: {{H: -13.6, ...}} in eV), or data.e0s: average to accept the minimum-norm split "
                f"(the model then only transfers to these compositions)"
            )
        log.warning("%s; e0s: average takes the minimum-norm solution", message)
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {s: known[s] if s in known else float(solution[index[s]]) for s in elements}


def choose_e0s(configs: Sequence[Atoms], elements: Sequence[str], isolated_e0s: Mapping[int, float] | None,
               e0s: E0Choice = "isolated") -> dict[str, float]:
    """E0 per element symbol (eV) for the model's ``elements`` according to ``e0s`` (see :data:`E0Choice`)."""
    if isinstance(e0s, Mapping):
        missing = [s for s in elements if s not in e0s]
        if missing:
            raise DataError(f"data.e0s gives no energy for {missing}; give one for every element of the model {list(elements)}")
        return {s: float(e0s[s]) for s in elements}
    if e0s == "average":
        return fit_e0s(configs, elements, underdetermined_ok=True)
    if e0s != "isolated":
        raise DataError(f"data.e0s must be 'isolated', 'average' or a mapping of element to eV, got {e0s!r}")
    isolated = {chemical_symbols[z]: e for z, e in (isolated_e0s or {}).items() if chemical_symbols[z] in elements}
    if len(isolated) < len(elements):
        log.info("fitting E0s by least squares (no isolated-atom energy for %s)", [s for s in elements if s not in isolated])
    return fit_e0s(configs, elements, known=isolated)


def compute_statistics(
    configs: Sequence[Atoms],
    elements: Sequence[str],
    r_max: float,
    isolated_e0s: Mapping[int, float] | None = None,
    e0s: E0Choice = "isolated",
) -> DatasetStatistics:
    """E0s, avg_num_neighbors, scale (RMS force component) and shift as in mace-torch.

    The shift is the mean per-atom interaction energy (E − Σ E0)/N of the training set, so
    an untrained model starts at the right energy scale.

    ``isolated_e0s`` maps atomic numbers to isolated-atom energies; ``e0s`` chooses how they
    are used (:func:`choose_e0s`).
    """
    if len(configs) == 0:
        raise DataError("no training configurations to compute statistics from")
    present = {s for a in configs for s in a.get_chemical_symbols()}
    missing = present - set(elements)
    if missing:
        raise DataError(f"training data contains element(s) {sorted(missing)} absent from the model's elements {list(elements)}")
    e0s = choose_e0s(configs, elements, isolated_e0s, e0s)
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
