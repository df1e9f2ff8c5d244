"""Units of reference data, converted on read to molnet's eV and Å with ASE's constants."""

from __future__ import annotations

from ase import units

from molnet.errors import ConfigError

#: eV per unit of energy.
ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "Hartree": units.Hartree,
    "Ry": units.Rydberg,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
}
#: Å per unit of length.
LENGTH_UNITS = {"Å": 1.0, "Angstrom": 1.0, "A": 1.0, "Bohr": units.Bohr, "nm": 10.0}


def unit_factors(energy_unit: str = "eV", length_unit: str = "Å") -> tuple[float, float]:
    """(eV per energy unit, Å per length unit); forces scale by E/L and stress by E/L³."""
    if energy_unit not in ENERGY_UNITS:
        raise ConfigError(f"unknown energy_unit {energy_unit!r}; choose from {sorted(ENERGY_UNITS)}")
    if length_unit not in LENGTH_UNITS:
        raise ConfigError(f"unknown length_unit {length_unit!r}; choose from {sorted(LENGTH_UNITS)}")
    return ENERGY_UNITS[energy_unit], LENGTH_UNITS[length_unit]


def canonical_units(energy_unit: str = "eV", length_unit: str = "Å") -> dict[str, str]:
    """The declared units as stored in a data set's metadata (``Angstrom`` and ``A`` read as ``Å``)."""
    unit_factors(energy_unit, length_unit)
    return {"energy": energy_unit, "length": "Å" if LENGTH_UNITS[length_unit] == 1.0 else length_unit}
