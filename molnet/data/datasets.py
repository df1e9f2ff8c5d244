"""Reading reference data (extxyz, ASE db, anything ``ase.io.read`` knows) and splitting it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import ase.io
import ase.io.formats
import numpy as np
from ase import Atoms

from molnet.data import keys
from molnet.data.units import unit_factors
from molnet.errors import DataError

#: Targets that read_dataset knows; the names are those of the ``require`` argument.
TARGETS = ("energy", "forces", "stress", "dipole", "charges")


def _lookup(atoms: Atoms, key: str, container: str):
    """Return the value under ``key`` in ``atoms.info``/``atoms.arrays`` or the attached calculator."""
    store = atoms.info if container == "info" else atoms.arrays
    if key in store:
        return store[key]
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    return None


def as_stress_matrix(value, where: str) -> np.ndarray:
    """Convert a Voigt-6 (xx, yy, zz, yz, xz, xy) or 3×3/9 stress to a symmetric 3×3 array."""
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 6:
        xx, yy, zz, yz, xz, xy = arr
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if arr.size == 9:
        return arr.reshape(3, 3)
    raise DataError(f"{where}: stress has {arr.size} components; expected 6 (Voigt) or 9")


def extract_targets(
    atoms: Atoms,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    require: Iterable[str] = ("energy",),
    where: str = "structure",
    energy_unit: str = "eV",
    length_unit: str = "Å",
    dipole_key: str = "dipole",
    charges_key: str = "charges",
) -> Atoms:
    """Return a copy of ``atoms`` with its reference values stored under the ``REF_*`` keys.

    Dipoles (``info[dipole_key]``, e·Å, converted with ``length_unit``) and atomic charges
    (``arrays[charges_key]``, e) are read when present.

    Values are read from ``atoms.info`` (energy, stress), ``atoms.arrays`` (forces) or an
    attached SinglePointCalculator (ASE >= 3.23 moves ``energy``/``forces``/``stress`` there).
    Positions, cell and targets in ``energy_unit``/``length_unit`` (:mod:`molnet.data.units`)
    are converted to eV and Å. Raises :class:`DataError` naming ``where`` when a required
    target is missing or malformed. An isolated atom (a single atom marked ``config_type``
    ``isolated_atom`` or ``IsolatedAtom``, read as an E0 by :func:`split_isolated_atoms`) needs its
    energy only.
    """
    e_unit, l_unit = unit_factors(energy_unit, length_unit)
    require = set(require)
    unknown = require - set(TARGETS)
    if unknown:
        raise DataError(f"unknown required target(s) {sorted(unknown)}; choose from {TARGETS}")
    if len(atoms) == 1 and atoms.info.get(keys.CONFIG_TYPE) in keys.ISOLATED_ATOM_TYPES:
        require &= {"energy"}
    out = atoms.copy()
    out.calc = None
    if l_unit != 1.0:
        out.set_cell(out.cell[:] * l_unit, scale_atoms=False)
        out.positions = out.positions * l_unit
    n = len(atoms)
    energy = _lookup(atoms, energy_key, "info")
    forces = _lookup(atoms, forces_key, "arrays")
    stress = _lookup(atoms, stress_key, "info")
    dipole = _lookup(atoms, dipole_key, "info")
    charges = _lookup(atoms, charges_key, "arrays")
    for name, key, value in (
        ("energy", energy_key, energy),
        ("forces", forces_key, forces),
        ("stress", stress_key, stress),
        ("dipole", dipole_key, dipole),
        ("charges", charges_key, charges),
    ):
        if value is None and name in require:
            raise DataError(
                f"{where}: no {name} under the key {key!r} (info keys: {sorted(atoms.info)}, "
                f"array keys: {sorted(atoms.arrays)}); name the right key with --{name}-key on the command line "
                f"or data.{name}_key in a training config"
            )
    if "stress" in require and not atoms.pbc.all():
        raise DataError(
            f"{where}: stress is required, but the structure is periodic in {int(atoms.pbc.sum())} of 3 directions "
            f"(pbc {atoms.pbc.tolist()}); stress is fitted for bulk cells only: drop stress from require"
        )
    # the copy keeps neither the raw values nor parsed ones it came with: a file may name its
    # targets with molnet's own REF_* keys (mace-torch's convention), read here as raw values
    for k in {energy_key, stress_key, dipole_key, keys.REF_ENERGY, keys.REF_STRESS, keys.REF_DIPOLE}:
        out.info.pop(k, None)
    for k in {forces_key, charges_key, keys.REF_FORCES, keys.REF_CHARGES}:
        if k in out.arrays:
            del out.arrays[k]
    if energy is not None:
        try:
            energy = float(np.asarray(energy).reshape(()))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: energy {energy!r} under key {energy_key!r} is not a number") from exc
        if not np.isfinite(energy):
            raise DataError(f"{where}: energy under key {energy_key!r} is {energy}")
        out.info[keys.REF_ENERGY] = energy * e_unit
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (n, 3):
            raise DataError(f"{where}: forces under key {forces_key!r} have shape {forces.shape}; expected ({n}, 3)")
        if not np.isfinite(forces).all():
            raise DataError(f"{where}: forces under key {forces_key!r} contain NaN or infinite values")
        out.arrays[keys.REF_FORCES] = forces * (e_unit / l_unit)
    if stress is not None:
        out.info[keys.REF_STRESS] = as_stress_matrix(stress, where) * (e_unit / l_unit**3)
    if dipole is not None:
        dipole = np.asarray(dipole, dtype=np.float64).reshape(-1)
        if dipole.shape != (3,):
            raise DataError(f"{where}: dipole under key {dipole_key!r} has {dipole.size} components; expected 3")
        out.info[keys.REF_DIPOLE] = dipole * l_unit
    if charges is not None:
        charges = np.asarray(charges, dtype=np.float64).reshape(-1)
        if charges.shape != (n,):
            raise DataError(f"{where}: charges under key {charges_key!r} have shape {charges.shape}; expected ({n},)")
        out.arrays[keys.REF_CHARGES] = charges
    return out


def _is_ase_db(path: Path) -> bool:
    """Whether ASE reads ``path`` as a database (SQLite ``.db`` or ASE's JSON database)."""
    try:
        return ase.io.formats.filetype(str(path)) in ("db", "json")
    except Exception:  # not a format ASE recognises: ase.io.read reports it
        return False


def _read_ase_db(path: Path, index: str | int, per_atom_keys: set[str]) -> list[Atoms]:
    """The rows of an ASE database as :class:`ase.Atoms`, with what ``ase.io.read`` leaves behind.

    ``ase.io.read`` keeps only a row's atoms and its calculator's results. Here the row's key-value
    pairs (``db.write(atoms, my_energy=…, config_type=…)``) go to ``atoms.info``, and its
    ``data`` entries to ``atoms.arrays`` when named in ``per_atom_keys`` (forces, charges), else
    to ``atoms.info``. The calculator's results stay on ``atoms.calc``. The total charge
    (``info["charge"]``) is the sum of the row's initial charges: ASE's db keeps that under the
    name ``charge`` and overwrites a key-value pair of that name. ``index`` selects rows as for
    ``ase.io.read``: a frame, a slice (``":100"``; only those rows are read), or a query
    (``"config_type=md"``).
    """
    from ase.db import connect
    from ase.io.formats import string2index

    db = connect(str(path))
    selection = string2index(index) if isinstance(index, str) else index
    if isinstance(selection, str):  # not a frame or slice: an ASE db query
        rows = db.select(selection)
    else:
        if isinstance(selection, int):
            count = db.count()
            if not -count <= selection < count:
                raise DataError(f"{path}: frame {selection} is out of range (the database holds {count} rows)")
            rows = list(db.select(offset=selection % count, limit=1))
        elif selection.step in (None, 1) and (selection.start or 0) >= 0 and (selection.stop or 0) >= 0:
            start = selection.start or 0
            stop = selection.stop
            rows = (
                []
                if stop is not None and stop <= start
                else db.select(offset=start, limit=None if stop is None else stop - start)
            )
        else:
            rows = list(db.select())[selection]
    return [_row_atoms(row, per_atom_keys) for row in rows]  # rows are read one by one


def _row_atoms(row, per_atom_keys: set[str]) -> Atoms:
    """One ASE db row as :class:`ase.Atoms` (:func:`_read_ase_db`)."""
    atoms = row.toatoms()
    atoms.info.update(row.key_value_pairs)
    if "initial_charges" in row:
        atoms.info[keys.CHARGE_INFO] = float(row.charge)
    for key, value in row.data.items():
        if key in per_atom_keys:
            atoms.arrays[key] = np.asarray(value)
        else:
            atoms.info[key] = value
    return atoms


def read_dataset(
    path: str | Path,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    require: Iterable[str] = ("energy",),
    index: str = ":",
    energy_unit: str = "eV",
    length_unit: str = "Å",
    dipole_key: str = "dipole",
    charges_key: str = "charges",
) -> list[Atoms]:
    """Read reference structures from ``path`` (extxyz, ASE db, or any format ASE reads).

    An ASE db row's key-value pairs and data are read as ``info`` and ``arrays`` entries
    (:func:`_read_ase_db`), so the keys below may name them.

    Each returned :class:`ase.Atoms` carries its targets under the ``REF_*`` keys of
    :mod:`molnet.data.keys`, ready for :meth:`AtomicGraph.from_atoms`. ``require`` lists the
    targets every frame must have (``"energy"``, ``"forces"``, ``"stress"``); a missing one
    raises :class:`DataError` naming the file and frame. Values in other units are converted
    (``energy_unit``, ``length_unit``: :mod:`molnet.data.units`). Isolated atoms
    (``config_type=isolated_atom``) are kept; separate them with :func:`split_isolated_atoms`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    from molnet.data.ondisk import is_dataset

    if is_dataset(path):
        raise DataError(
            f"{path}: an on-disk data set (HDF5), which training reads; this reads structure files "
            "(extxyz, ASE db): give the files the data set was made from"
        )
    try:
        if _is_ase_db(path):
            frames = _read_ase_db(path, index, {forces_key, charges_key})
        else:
            frames = ase.io.read(str(path), index=index)
    except DataError:
        raise
    except Exception as exc:  # ASE raises many types for broken files
        raise DataError(
            f"{path}: cannot be read ({type(exc).__name__}: {exc}); is the file truncated or of another format?"
        ) from exc
    if isinstance(frames, Atoms):
        frames = [frames]
    if len(frames) == 0:
        raise DataError(f"{path}: contains no structures")
    return [
        extract_targets(
            a,
            energy_key,
            forces_key,
            stress_key,
            require,
            where=f"{path}, frame {i}",
            energy_unit=energy_unit,
            length_unit=length_unit,
            dipole_key=dipole_key,
            charges_key=charges_key,
        )
        for i, a in enumerate(frames)
    ]


def split_isolated_atoms(configs: Sequence[Atoms]) -> tuple[dict[int, float], list[Atoms]]:
    """Split off single-atom configurations marked ``config_type=isolated_atom`` (or mace-torch's
    ``IsolatedAtom``).

    Returns ``({Z: E0 in eV}, remaining configurations)``.
    """
    e0s: dict[int, float] = {}
    rest = []
    for atoms in configs:
        if atoms.info.get(keys.CONFIG_TYPE) in keys.ISOLATED_ATOM_TYPES and len(atoms) == 1:
            if keys.REF_ENERGY not in atoms.info:
                raise DataError(f"isolated atom {atoms.get_chemical_symbols()[0]} has no energy")
            e0s[int(atoms.numbers[0])] = float(atoms.info[keys.REF_ENERGY])
        else:
            rest.append(atoms)
    return e0s, rest


def read_isolated_atoms(path: str | Path, energy_key: str = "energy", energy_unit: str = "eV") -> dict[int, float]:
    """``{Z: E0 in eV}`` from a file of single-atom frames (``config_type`` need not be set)."""
    e0s: dict[int, float] = {}
    for i, atoms in enumerate(read_dataset(path, energy_key, require=("energy",), energy_unit=energy_unit)):
        if len(atoms) != 1:
            raise DataError(
                f"{path}, frame {i}: an isolated-atoms file holds single atoms; this frame has {len(atoms)}"
            )
        e0s[int(atoms.numbers[0])] = float(atoms.info[keys.REF_ENERGY])
    return e0s


def split_indices(n: int, valid_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``n`` configurations into sorted (train, valid) indices; at least
    one validation configuration."""
    if not 0.0 < valid_fraction < 1.0:
        raise DataError(f"valid_fraction must lie in (0, 1), got {valid_fraction}")
    if n < 2:
        raise DataError(f"cannot split {n} configuration(s) into train and valid")
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(valid_fraction * n)))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def random_split(configs: Sequence[Atoms], valid_fraction: float, seed: int = 0) -> tuple[list[Atoms], list[Atoms]]:
    """Seeded random split into (train, valid) (:func:`split_indices`)."""
    train, valid = split_indices(len(configs), valid_fraction, seed)
    return [configs[i] for i in train], [configs[i] for i in valid]
