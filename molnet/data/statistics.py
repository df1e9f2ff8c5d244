"""Statistics of a training set, accumulated in one streaming pass and stored in the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers as SYMBOL_TO_Z
from ase.data import chemical_symbols

from molnet.data import keys
from molnet.data.neighbors import neighbor_list
from molnet.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Elements up to this atomic number are counted (every element ASE knows).
N_ELEMENTS = len(chemical_symbols)

#: How E0s are chosen: ``"isolated"`` (isolated-atom energies, the rest by least squares where
#: the compositions determine them), ``"average"`` (least squares over the training set, as
#: mace-torch's ``E0s="average"``; minimum-norm where the compositions do not determine them) or
#: explicit values per element symbol.
E0Choice = Union[str, Mapping[str, float]]


def check_e0_choice(e0s: E0Choice) -> None:
    """ConfigError unless ``e0s`` is an :data:`E0Choice`."""
    if not isinstance(e0s, Mapping) and e0s not in ("isolated", "average"):
        raise ConfigError(f"data.e0s must be 'isolated', 'average' or a mapping of element to eV, got {e0s!r}")


@dataclass
class DatasetStatistics:
    """E0s (eV per element symbol), mean neighbor count, force RMS (eV/Å) and per-atom shift (eV)."""

    e0s: dict[str, float]
    avg_num_neighbors: float
    scale: float
    shift: float

    def as_dict(self) -> dict:
        return {"e0s": self.e0s, "avg_num_neighbors": self.avg_num_neighbors, "scale": self.scale, "shift": self.shift}


#: The scalar running sums of :class:`StatisticsAccumulator` (stored as they are).
_SCALAR_SUMS = (
    "energy_per_atom_sum",
    "n_energies",
    "force_sq_sum",
    "n_force_components",
    "n_edges",
    "n_nodes",
    "n_configs",
)


@dataclass
class StatisticsAccumulator:
    """Running sums from which E0s, avg_num_neighbors, scale and shift follow exactly.

    Per structure c with n_cZ atoms of element Z, N_c atoms and energy E_c: the normal
    equations of the E0 fit (AᵀA, Aᵀb with A = [n_cZ], b = [E_c]), Σ_c E_c/N_c and
    Σ_c n_cZ/N_c for the mean per-atom interaction energy, Σ F² and the force count for the
    RMS force, and the edge and node counts at ``r_max``. :meth:`to_dict`/:meth:`from_dict` store
    them in a data set's metadata (``molnet preprocess --append`` continues from there).
    """

    r_max: float
    ata: np.ndarray = field(default_factory=lambda: np.zeros((N_ELEMENTS, N_ELEMENTS)))
    atb: np.ndarray = field(default_factory=lambda: np.zeros(N_ELEMENTS))
    fraction_sum: np.ndarray = field(default_factory=lambda: np.zeros(N_ELEMENTS))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(N_ELEMENTS, dtype=np.int64))
    energy_per_atom_sum: float = 0.0
    n_energies: int = 0
    force_sq_sum: float = 0.0
    n_force_components: int = 0
    n_edges: int = 0
    n_nodes: int = 0
    n_configs: int = 0

    def add(self, atoms: Atoms, n_edges: int | None = None) -> None:
        """Add one structure with its ``REF_*`` targets; ``n_edges`` at ``r_max`` is computed when not given."""
        composition = np.bincount(atoms.numbers, minlength=N_ELEMENTS).astype(np.float64)
        n = len(atoms)
        self.counts += composition.astype(np.int64)
        if n_edges is None:
            n_edges = count_edges(atoms, self.r_max)
        self.n_edges += int(n_edges)
        self.n_nodes += n
        self.n_configs += 1
        if keys.REF_ENERGY in atoms.info:
            energy = float(atoms.info[keys.REF_ENERGY])
            self.ata += np.outer(composition, composition)
            self.atb += composition * energy
            self.fraction_sum += composition / n
            self.energy_per_atom_sum += energy / n
            self.n_energies += 1
        if keys.REF_FORCES in atoms.arrays:
            forces = np.asarray(atoms.arrays[keys.REF_FORCES])
            self.force_sq_sum += float(np.sum(forces**2))
            self.n_force_components += forces.size

    def elements(self) -> list[str]:
        """Symbols present, by atomic number."""
        return [chemical_symbols[z] for z in np.flatnonzero(self.counts)]

    def fit_e0s(
        self, elements: Sequence[str], known: Mapping[str, float] | None = None, underdetermined_ok: bool = False
    ) -> dict[str, float]:
        """Least-squares E0s of the elements absent from ``known``: E − Σ_known n_Z·E0[Z] ≈ Σ_Z n_Z E0[Z].

        When the compositions of the unknown elements have lower rank than their number (e.g.
        every structure has the same stoichiometry, as in any single-molecule set) the split of
        the energy between elements is arbitrary: a :class:`DataError` names the alternatives,
        unless ``underdetermined_ok`` (``e0s: average``), which returns the minimum-norm
        solution with a warning.
        """
        known = {s: float(v) for s, v in (known or {}).items() if s in elements}
        unknown = [s for s in elements if s not in known]
        if not unknown:
            return {s: known[s] for s in elements}
        if self.n_energies == 0:
            raise DataError(f"no training energies to fit the E0s of {unknown} from")
        u = [SYMBOL_TO_Z[s] for s in unknown]
        k = [SYMBOL_TO_Z[s] for s in known]
        e0_known = np.array([known[s] for s in known])
        ata = self.ata[np.ix_(u, u)]
        atb = self.atb[u] - (self.ata[np.ix_(u, k)] @ e0_known if k else 0.0)
        rank = np.linalg.matrix_rank(ata, hermitian=True)
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
        solution = np.linalg.pinv(ata, hermitian=True) @ atb
        fitted = dict(zip(unknown, solution.tolist()))
        return {s: known[s] if s in known else fitted[s] for s in elements}

    def choose_e0s(
        self, elements: Sequence[str], isolated_e0s: Mapping[int, float] | None, e0s: E0Choice = "isolated"
    ) -> dict[str, float]:
        """E0 per element symbol (eV) for the model's ``elements`` according to ``e0s`` (:data:`E0Choice`)."""
        if isinstance(e0s, Mapping):
            missing = [s for s in elements if s not in e0s]
            if missing:
                raise DataError(
                    f"data.e0s gives no energy for {missing}; give one for every element of the model {list(elements)}"
                )
            return {s: float(e0s[s]) for s in elements}
        check_e0_choice(e0s)
        if e0s == "average":
            return self.fit_e0s(elements, underdetermined_ok=True)
        isolated = {chemical_symbols[z]: e for z, e in (isolated_e0s or {}).items()}
        if any(s not in isolated for s in elements):
            log.info(
                "fitting E0s by least squares (no isolated-atom energy for %s)",
                [s for s in elements if s not in isolated],
            )
        return self.fit_e0s(elements, known=isolated)

    def statistics(
        self, elements: Sequence[str], isolated_e0s: Mapping[int, float] | None = None, e0s: E0Choice = "isolated"
    ) -> DatasetStatistics:
        """E0s (:meth:`choose_e0s`), avg_num_neighbors, scale (RMS force component) and shift as in mace-torch.

        The shift is the mean per-atom interaction energy (E − Σ E0)/N of the training set, so
        an untrained model starts at the right energy scale.
        """
        if self.n_configs == 0:
            raise DataError("no training configurations to compute statistics from")
        missing = set(self.elements()) - set(elements)
        if missing:
            raise DataError(
                f"training data contains element(s) {sorted(missing)} absent from the model's elements {list(elements)}"
            )
        chosen = self.choose_e0s(elements, isolated_e0s, e0s)
        scale = float(np.sqrt(self.force_sq_sum / self.n_force_components)) if self.n_force_components else 1.0
        if not scale > 0:
            scale = 1.0
        shift = 0.0
        if self.n_energies:
            e0_vector = np.zeros(N_ELEMENTS)
            for s, v in chosen.items():
                e0_vector[SYMBOL_TO_Z[s]] = v
            shift = (self.energy_per_atom_sum - float(self.fraction_sum @ e0_vector)) / self.n_energies
        return DatasetStatistics(e0s=chosen, avg_num_neighbors=self.n_edges / self.n_nodes, scale=scale, shift=shift)

    def to_dict(self) -> dict:
        """JSON-serialisable form (sparse over the elements present)."""
        z = np.flatnonzero(self.counts).tolist()
        return {
            "r_max": self.r_max,
            "z": z,
            "ata": self.ata[np.ix_(z, z)].tolist(),
            "atb": self.atb[z].tolist(),
            "fraction_sum": self.fraction_sum[z].tolist(),
            "counts": self.counts[z].tolist(),
            **{name: getattr(self, name) for name in _SCALAR_SUMS},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "StatisticsAccumulator":
        out = cls(r_max=float(data["r_max"]))
        z = list(data["z"])
        out.ata[np.ix_(z, z)] = np.asarray(data["ata"], dtype=np.float64).reshape(len(z), len(z))
        out.atb[z] = data["atb"]
        out.fraction_sum[z] = data["fraction_sum"]
        out.counts[z] = data["counts"]
        for name in _SCALAR_SUMS:
            setattr(out, name, type(getattr(out, name))(data[name]))  # float sums, int counts
        return out


def count_edges(atoms: Atoms, r_max: float) -> int:
    """Number of directed edges of ``atoms`` within ``r_max`` (Å)."""
    cell = atoms.get_cell()[:] if atoms.pbc.any() else np.zeros((3, 3))
    return len(neighbor_list(atoms.get_positions(), cell, atoms.pbc, r_max).sender)


def accumulate(configs: Iterable[Atoms], r_max: float, n_edges: Iterable[int] | None = None) -> StatisticsAccumulator:
    """One pass over ``configs``; ``n_edges`` per structure when already known (e.g. from their graphs)."""
    acc = StatisticsAccumulator(r_max=r_max)
    edges = iter(n_edges) if n_edges is not None else None
    for atoms in configs:
        acc.add(atoms, next(edges) if edges is not None else None)
    return acc


def compute_statistics(
    configs: Sequence[Atoms],
    elements: Sequence[str],
    r_max: float,
    isolated_e0s: Mapping[int, float] | None = None,
    e0s: E0Choice = "isolated",
) -> DatasetStatistics:
    """E0s, avg_num_neighbors, scale and shift of ``configs`` (:meth:`StatisticsAccumulator.statistics`).

    ``isolated_e0s`` maps atomic numbers to isolated-atom energies; ``e0s`` chooses how they
    are used (:meth:`StatisticsAccumulator.choose_e0s`).
    """
    return accumulate(configs, r_max).statistics(elements, isolated_e0s, e0s)
