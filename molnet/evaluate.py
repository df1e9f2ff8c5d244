"""Evaluate a model on a data file: metrics and a parity plot (``molnet eval``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molnet.data import keys, read_dataset, split_isolated_atoms
from molnet.metrics import error_metrics
from molnet.models.inference import predict
from molnet.models.potential import Potential
from molnet.plots import parity_plot


def evaluate_file(
    model: Potential,
    data: str | Path,
    batch_size: int = 16,
    plot: str | Path | None = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    progress: bool = True,
) -> dict[str, float]:
    """Metrics of ``model`` on the structures in ``data`` (isolated atoms are skipped)."""
    _, configs = split_isolated_atoms(read_dataset(data, energy_key, forces_key, stress_key))
    preds = predict(model, configs, batch_size=batch_size, progress=progress)
    has_forces = all(keys.REF_FORCES in a.arrays for a in configs)
    has_stress = all(keys.REF_STRESS in a.info for a in configs) and all("stress" in p for p in preds)
    e_ref = np.array([a.info[keys.REF_ENERGY] for a in configs])
    e_pred = np.array([p["energy"] for p in preds])
    n_atoms = np.array([len(a) for a in configs])
    f_ref = np.concatenate([a.arrays[keys.REF_FORCES] for a in configs]) if has_forces else None
    f_pred = np.concatenate([p["forces"] for p in preds]) if has_forces else None
    metrics = error_metrics(
        e_pred, e_ref, n_atoms, f_pred, f_ref,
        np.stack([p["stress"] for p in preds]) if has_stress else None,
        np.stack([a.info[keys.REF_STRESS] for a in configs]) if has_stress else None,
    )
    if plot is not None:
        parity_plot(e_ref, e_pred, n_atoms, f_ref, f_pred, plot)
    return metrics
