"""ASE calculators."""

from molnet.calculators.ase import MolNetCalculator

__all__ = ["MolNetCalculator"]
