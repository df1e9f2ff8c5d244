"""Add GFN2-xTB dipoles and Mulliken charges to ion-pair structures (molnet's dipole-training data).

    python -m venv /tmp/tb && /tmp/tb/bin/pip install tblite ase
    /tmp/tb/bin/python data/longrange/ionpair/make_dipoles.py          # from the repository root

Reads the first 200 structures of ``train.xyz`` and the first 100 of ``test.xyz`` (GFN2-xTB
energies and forces already), recomputes each with tblite's GFN2-xTB (total charge 0, the same
method as the labels) and writes ``dipoles_train.xyz`` and ``dipoles_test.xyz`` with the
original energy and forces plus ``dipole`` (e·Å, info) and ``charges`` (Mulliken, e, arrays),
and ``tblite_energy`` for a check against the stored energy. Same licence as the rest of this
folder (CC0).
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import units
from tblite.interface import Calculator

HERE = Path(__file__).resolve().parent


def label(frames):
    out = []
    for atoms in frames:
        calc = Calculator("GFN2-xTB", atoms.numbers, atoms.positions / units.Bohr, charge=0.0)
        calc.set("verbosity", 0)
        result = calc.singlepoint()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        copy = atoms.copy()
        copy.calc = None
        copy.info["energy"] = energy
        copy.arrays["forces"] = forces
        copy.info["dipole"] = np.asarray(result.get("dipole")) * units.Bohr  # e·Bohr → e·Å
        copy.arrays["charges"] = np.asarray(result.get("charges"))
        copy.info["tblite_energy"] = float(result.get("energy")) * units.Hartree
        out.append(copy)
    return out


if __name__ == "__main__":
    for name, n in (("train", 200), ("test", 100)):
        frames = label(ase.io.read(HERE / f"{name}.xyz", f":{n}"))
        ase.io.write(HERE / f"dipoles_{name}.xyz", frames)
        gap = max(abs(a.info["tblite_energy"] - a.info["energy"]) for a in frames)
        print(f"dipoles_{name}.xyz: {len(frames)} structures; max |E_tblite − E_stored| = {gap:.2e} eV")
