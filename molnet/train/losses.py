"""Weighted energy / forces / stress losses, as in mace-torch's WeightedEnergyForcesStressLoss."""

from __future__ import annotations

import torch

from molnet.data import keys
from molnet.errors import ConfigError


def _error(diff: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    if kind == "mse":
        return diff**2
    if kind == "huber":
        return torch.nn.functional.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=delta)
    raise ConfigError(f"unknown loss {kind!r}; choose 'mse' or 'huber'")


def weighted_loss(
    pred: dict[str, torch.Tensor],
    batch,
    energy_weight: float,
    forces_weight: float,
    stress_weight: float,
    dipole_weight: float = 0.0,
    charges_weight: float = 0.0,
    kind: str = "mse",
    huber_delta: float = 0.01,
) -> dict[str, torch.Tensor]:
    """Per-term and total losses of a batch.

    energy: mean over structures of w·ℓ((E − E_ref)/N); forces: mean over atoms of w·mean_xyz ℓ(F − F_ref);
    stress: mean over structures of w·mean ℓ(σ − σ_ref); dipole (models with charges): mean over
    structures of w·mean_xyz ℓ(μ − μ_ref); charges: mean over atoms of w·ℓ(q − q_ref). ``w`` is the per-structure weight times
    the presence flag of that target.
    """
    n_atoms = torch.bincount(batch[keys.BATCH], minlength=batch.num_graphs).to(pred[keys.ENERGY].dtype)
    w = batch[keys.WEIGHT]
    terms = {}
    e = _error((pred[keys.ENERGY] - batch[keys.ENERGY]) / n_atoms, kind, huber_delta)
    terms["energy"] = (w * batch[keys.ENERGY_WEIGHT] * e).mean()
    total = energy_weight * terms["energy"]
    if keys.FORCES in pred:
        f = _error(pred[keys.FORCES] - batch[keys.FORCES], kind, huber_delta).mean(dim=-1)  # [n_nodes]
        terms["forces"] = ((w * batch[keys.FORCES_WEIGHT])[batch[keys.BATCH]] * f).mean()
        total = total + forces_weight * terms["forces"]
    if keys.STRESS in pred:
        s = _error(pred[keys.STRESS] - batch[keys.STRESS], kind, huber_delta).mean(dim=(-1, -2))
        terms["stress"] = (w * batch[keys.STRESS_WEIGHT] * s).mean()
        total = total + stress_weight * terms["stress"]
    if dipole_weight and keys.DIPOLE in pred:
        d = _error(pred[keys.DIPOLE] - batch[keys.REF_DIPOLE_FIELD], kind, huber_delta).mean(dim=-1)
        terms["dipole"] = (w * batch[keys.DIPOLE_WEIGHT] * d).mean()
        total = total + dipole_weight * terms["dipole"]
    if charges_weight and keys.CHARGES in pred:
        q = _error(pred[keys.CHARGES] - batch[keys.REF_CHARGES_FIELD], kind, huber_delta)
        terms["charges"] = ((w * batch[keys.CHARGES_WEIGHT])[batch[keys.BATCH]] * q).mean()
        total = total + charges_weight * terms["charges"]
    terms["total"] = total
    return terms
