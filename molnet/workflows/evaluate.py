"""Evaluate a model on a data file (``molnet eval``): metrics, a parity plot, per-structure predictions."""

from __future__ import annotations

import logging
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms

from molnet.analysis.metrics import ErrorSums
from molnet.analysis.plots import parity_plot
from molnet.data import keys, read_dataset, split_isolated_atoms
from molnet.errors import DataError
from molnet.models.inference import predict
from molnet.models.potential import Potential

log = logging.getLogger(__name__)

#: Prefix of the predicted values in the file written by ``--predictions``.
PREDICTION_PREFIX = "molnet_"


def _has(configs: list[Atoms], key: str, container: str) -> np.ndarray:
    return np.array([key in (a.info if container == "info" else a.arrays) for a in configs])


def report_missing_targets(configs: list[Atoms], data: str | Path, key_names: dict[str, str]) -> dict[str, np.ndarray]:
    """Which structures have each reference (``{"energy": mask [n], ...}``); logs what a file lacks."""
    present = {
        "energy": _has(configs, keys.REF_ENERGY, "info"),
        "forces": _has(configs, keys.REF_FORCES, "arrays"),
        "stress": _has(configs, keys.REF_STRESS, "info"),
    }
    periodic = np.array([bool(a.pbc.all()) for a in configs], dtype=bool)
    for name, mask in present.items():
        kind = "structure"
        if name == "stress":  # molecules and slabs have no stress to compare
            if not periodic.any():
                continue
            mask, kind = mask[periodic], "periodic structure"
        if not mask.all():
            where = f"any {kind}" if not mask.any() else f"{int((~mask).sum())} of {len(mask)} {kind}s"
            first = configs[0]
            log.warning(
                "%s: no %s under the key %r in %s: %s metrics %s (info keys: %s, array keys: %s; name the key "
                "with --%s-key)",
                data,
                name,
                key_names[name],
                where,
                name,
                "skipped" if not mask.any() else "over the others",
                sorted(k for k in first.info if not k.startswith("REF_")),
                sorted(k for k in first.arrays if not k.startswith("REF_")),
                name,
            )
    return present


def evaluate_file(
    model: Potential,
    data: str | Path,
    batch_size: int = 16,
    plot: str | Path | None = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    progress: bool = True,
    predictions: str | Path | None = None,
    energy_unit: str = "eV",
    length_unit: str = "Å",
) -> dict[str, float]:
    """Metrics of ``model`` on the structures in ``data`` (isolated atoms are skipped).

    Structures without a reference energy, forces or stress count only in the metrics they
    have references for (a warning says which). ``plot`` writes the parity panels that have
    data; ``predictions`` writes an extxyz with the references under their own keys and the
    model's values under ``molnet_energy``, ``molnet_forces``, ``molnet_energies`` (per atom)
    and ``molnet_stress`` (eV, eV/Å, eV/Å³), and each structure's frame in ``data`` under
    ``molnet_source_frame``. The file's energies, positions and cells are in
    ``energy_unit`` and ``length_unit`` (:mod:`molnet.data.units`); metrics, plots and the
    predictions file are in eV and Å.
    """
    key_names = {"energy": energy_key, "forces": forces_key, "stress": stress_key}
    frames = read_dataset(
        data, energy_key, forces_key, stress_key, require=(), energy_unit=energy_unit, length_unit=length_unit
    )
    for i, atoms in enumerate(frames):  # the predictions file skips isolated atoms: it names each frame's origin
        atoms.info[PREDICTION_PREFIX + "source_frame"] = i
    _, configs = split_isolated_atoms(frames)
    if not configs:
        raise DataError(f"{data}: holds only isolated atoms; nothing to evaluate")
    present = report_missing_targets(configs, data, key_names)
    preds = predict(model, configs, batch_size=batch_size, progress=progress)
    errors = ErrorSums()
    n_atoms = torch.tensor([len(a) for a in configs])
    # float64: total energies of 1e4 eV lose ~1 meV in float32 (torch.tensor's default for floats)
    e_ref = torch.tensor([a.info.get(keys.REF_ENERGY, np.nan) for a in configs], dtype=torch.float64)
    e_pred = torch.tensor([p["energy"] for p in preds], dtype=torch.float64)
    atom_mask = torch.from_numpy(np.repeat(present["forces"], n_atoms.numpy()))
    f_ref = torch.from_numpy(np.concatenate([a.arrays.get(keys.REF_FORCES, np.zeros((len(a), 3))) for a in configs]))
    f_pred = torch.from_numpy(np.concatenate([p["forces"] for p in preds]))
    stress_mask = present["stress"] & np.array(["stress" in p for p in preds])  # periodic, with a reference
    has_stress = bool(stress_mask.any())
    errors.add(
        e_pred,
        torch.nan_to_num(e_ref),
        n_atoms,
        torch.from_numpy(present["energy"]),
        f_pred,
        f_ref,
        atom_mask,
        torch.from_numpy(np.stack([p.get("stress", np.zeros((3, 3))) for p in preds])) if has_stress else None,
        torch.from_numpy(np.stack([a.info.get(keys.REF_STRESS, np.zeros((3, 3))) for a in configs]))
        if has_stress
        else None,
        torch.from_numpy(stress_mask) if has_stress else None,
    )
    if all("charges" in p for p in preds):
        has_dipole = np.array([keys.REF_DIPOLE in a.info and "dipole" in p for a, p in zip(configs, preds)])
        has_charges = np.array([keys.REF_CHARGES in a.arrays for a in configs])
        errors.add_charges(
            torch.from_numpy(np.stack([p.get("dipole", np.zeros(3)) for p in preds])),
            torch.from_numpy(np.stack([a.info.get(keys.REF_DIPOLE, np.zeros(3)) for a in configs])),
            torch.from_numpy(has_dipole),
            torch.from_numpy(np.concatenate([p["charges"] for p in preds])),
            torch.from_numpy(np.concatenate([a.arrays.get(keys.REF_CHARGES, np.zeros(len(a))) for a in configs])),
            torch.from_numpy(np.repeat(has_charges, n_atoms.numpy())),
        )
    metrics = errors.metrics()
    if plot is not None and not (present["energy"].any() or atom_mask.any()):
        log.warning("%s: no reference energies or forces; no parity plot written", data)
    elif plot is not None:
        e = present["energy"]
        parity_plot(
            e_ref.numpy()[e],
            e_pred.numpy()[e],
            n_atoms.numpy()[e],
            f_ref.numpy()[atom_mask.numpy()],
            f_pred.numpy()[atom_mask.numpy()],
            plot,
        )
    if predictions is not None:
        write_predictions(configs, preds, predictions, key_names)
    return metrics


def write_predictions(configs: list[Atoms], preds: list[dict], path: str | Path, key_names: dict[str, str]) -> Path:
    """Write each structure with its references (original keys) and the model's predictions (``molnet_*``)."""
    out = []
    for atoms, pred in zip(configs, preds):
        a = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        a.info.update({k: v for k, v in atoms.info.items() if not k.startswith("REF_")})
        if keys.REF_ENERGY in atoms.info:
            a.info[key_names["energy"]] = atoms.info[keys.REF_ENERGY]
        if keys.REF_STRESS in atoms.info:
            a.info[key_names["stress"]] = atoms.info[keys.REF_STRESS]
        if keys.REF_FORCES in atoms.arrays:
            a.arrays[key_names["forces"]] = atoms.arrays[keys.REF_FORCES]
        a.info[PREDICTION_PREFIX + "energy"] = pred["energy"]
        a.arrays[PREDICTION_PREFIX + "forces"] = pred["forces"]
        a.arrays[PREDICTION_PREFIX + "energies"] = pred["energies"]
        if "stress" in pred:
            a.info[PREDICTION_PREFIX + "stress"] = pred["stress"]
        if "charges" in pred:
            a.arrays[PREDICTION_PREFIX + "charges"] = pred["charges"]
        if "dipole" in pred:
            a.info[PREDICTION_PREFIX + "dipole"] = pred["dipole"]
        out.append(a)
    path = Path(path)
    ase.io.write(path, out, format="extxyz")
    return path
