"""Error metrics in the units users quote (meV, meV/atom, meV/Å, meV/Å³), accumulated in a stream.

One implementation serves training (validation and test epochs, summed over DDP ranks) and
``molnet eval``, so the numbers a run logs and an independent evaluation print are the same
formula applied to the same predictions.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

#: (metric name, numerator sum, denominator count, take the square root)
_METRICS = (
    ("energy_mae_meV", "e_abs", "n_e", False),
    ("energy_rmse_meV", "e_sq", "n_e", True),
    ("energy_per_atom_mae_meV", "e_pa_abs", "n_e", False),
    ("energy_per_atom_rmse_meV", "e_pa_sq", "n_e", True),
    ("forces_mae_meV_per_A", "f_abs", "n_f", False),
    ("forces_rmse_meV_per_A", "f_sq", "n_f", True),
    ("stress_mae_meV_per_A3", "s_abs", "n_s", False),
    ("stress_rmse_meV_per_A3", "s_sq", "n_s", True),
    ("dipole_mae_me_A", "d_abs", "n_d", False),  # milli e·Å per component
    ("dipole_rmse_me_A", "d_sq", "n_d", True),
    ("charges_mae_me", "q_abs", "n_q", False),  # milli e
)


class ErrorSums:
    """Running sums of absolute and squared errors of energies, forces and stress (float64).

    :meth:`add` takes one batch; masks select the structures that have each reference (a
    structure without forces contributes nothing to the force metrics). :meth:`metrics` turns
    the sums into MAE/RMSE in meV units; a metric whose count is zero is left out.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def _add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().to(torch.float64)
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    @torch.no_grad()
    def add(
        self,
        energy_pred: torch.Tensor,
        energy_ref: torch.Tensor,
        n_atoms: torch.Tensor,
        energy_mask: torch.Tensor,
        forces_pred: torch.Tensor | None = None,
        forces_ref: torch.Tensor | None = None,
        forces_mask: torch.Tensor | None = None,
        stress_pred: torch.Tensor | None = None,
        stress_ref: torch.Tensor | None = None,
        stress_mask: torch.Tensor | None = None,
    ) -> None:
        """Add one batch: energies, n_atoms and masks ``[B]`` (eV); forces ``[N, 3]`` (eV/Å) with a
        per-atom mask ``[N]``; stress ``[B, 3, 3]`` (eV/Å³) with a per-structure mask ``[B]``."""
        energy_mask = energy_mask.to(torch.float64)
        de = (energy_pred.to(torch.float64) - energy_ref.to(torch.float64)) * energy_mask
        de_pa = de / n_atoms.to(torch.float64)
        self._add("n_configs", torch.tensor(float(len(de)), dtype=torch.float64, device=de.device))
        self._add("n_e", energy_mask.sum())
        self._add("e_abs", de.abs().sum())
        self._add("e_sq", (de**2).sum())
        self._add("e_pa_abs", de_pa.abs().sum())
        self._add("e_pa_sq", (de_pa**2).sum())
        if forces_pred is not None and forces_ref is not None and forces_mask is not None:
            mask = forces_mask.to(torch.float64)[:, None]
            df = (forces_pred.to(torch.float64) - forces_ref.to(torch.float64)) * mask
            self._add("n_f", 3 * mask.sum())
            self._add("f_abs", df.abs().sum())
            self._add("f_sq", (df**2).sum())
        if stress_pred is not None and stress_ref is not None and stress_mask is not None:
            mask = stress_mask.to(torch.float64)[:, None, None]
            ds = (stress_pred.to(torch.float64) - stress_ref.to(torch.float64)) * mask
            self._add("n_s", 9 * mask.sum())
            self._add("s_abs", ds.abs().sum())
            self._add("s_sq", (ds**2).sum())

    @torch.no_grad()
    def add_charges(
        self,
        dipole_pred: torch.Tensor,
        dipole_ref: torch.Tensor,
        dipole_mask: torch.Tensor,
        charges_pred: torch.Tensor,
        charges_ref: torch.Tensor,
        charges_mask: torch.Tensor,
    ) -> None:
        """Add dipoles ``[B, 3]`` (e·Å) with a per-structure mask ``[B]`` and charges ``[N]`` (e) with a per-atom mask."""
        mask = dipole_mask.to(torch.float64)[:, None]
        dd = (dipole_pred.to(torch.float64) - dipole_ref.to(torch.float64)) * mask
        self._add("n_d", 3 * mask.sum())
        self._add("d_abs", dd.abs().sum())
        self._add("d_sq", (dd**2).sum())
        qmask = charges_mask.to(torch.float64)
        dq = (charges_pred.to(torch.float64) - charges_ref.to(torch.float64)) * qmask
        self._add("n_q", qmask.sum())
        self._add("q_abs", dq.abs().sum())

    def reduce(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply ``fn`` to every sum, e.g. a sum over DDP ranks (every rank must hold the same keys)."""
        self.sums = {k: fn(v) for k, v in sorted(self.sums.items())}

    def metrics(self) -> dict[str, float]:
        """``n_configs`` and every metric whose count is positive, in meV units."""
        out: dict[str, float] = {}
        if "n_configs" in self.sums:
            out["n_configs"] = int(self.sums["n_configs"])
        for name, num, den, root in _METRICS:
            if den in self.sums and float(self.sums[den]) > 0:
                value = float(self.sums[num]) / float(self.sums[den])
                out[name] = 1000.0 * (math.sqrt(value) if root else value)
        return out
