"""Error metrics in the units users quote: meV, meV/atom, meV/Å, meV/Å³."""

from __future__ import annotations

import numpy as np


def _mae(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x))) if x.size else float("nan")


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else float("nan")


def error_metrics(
    energy_pred: np.ndarray,
    energy_ref: np.ndarray,
    n_atoms: np.ndarray,
    forces_pred: np.ndarray | None = None,
    forces_ref: np.ndarray | None = None,
    stress_pred: np.ndarray | None = None,
    stress_ref: np.ndarray | None = None,
) -> dict[str, float]:
    """Energy (total and per atom), force and stress errors; inputs in eV, eV/Å, eV/Å³.

    Shapes: energies and n_atoms ``[n_configs]``; forces ``[n_atoms_total, 3]``; stress ``[n, 3, 3]``.
    """
    de = np.asarray(energy_pred) - np.asarray(energy_ref)
    out = {
        "n_configs": int(len(de)),
        "energy_mae_meV": 1000 * _mae(de),
        "energy_rmse_meV": 1000 * _rmse(de),
        "energy_per_atom_mae_meV": 1000 * _mae(de / n_atoms),
        "energy_per_atom_rmse_meV": 1000 * _rmse(de / n_atoms),
    }
    if forces_pred is not None and forces_ref is not None and len(forces_ref):
        df = np.asarray(forces_pred) - np.asarray(forces_ref)
        out["forces_mae_meV_per_A"] = 1000 * _mae(df)
        out["forces_rmse_meV_per_A"] = 1000 * _rmse(df)
    if stress_pred is not None and stress_ref is not None and len(stress_ref):
        out["stress_mae_meV_per_A3"] = 1000 * _mae(np.asarray(stress_pred) - np.asarray(stress_ref))
    return out
