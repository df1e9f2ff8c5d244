"""molnet models in torch-sim: batched energies, forces and stress for many systems at once.

torch-sim (``pip install "molnet[torchsim]"``, PyPI name ``torch-sim-atomistic``) integrates
and relaxes a :class:`~torch_sim.state.SimState` holding many systems; :class:`MolNetModel`
evaluates any molnet family on all of them in one call. The neighbor lists of all systems are
built in one batched call of torch-sim's search (linked cells for periodic states, all pairs
within each molecule otherwise), without a Python loop over systems.

Reference: Cohen et al., "TorchSim: An efficient atomistic simulation engine in PyTorch",
arXiv:2508.06628 (2025).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch_sim as ts
from torch_sim.models.interface import ModelInterface
from torch_sim.neighbors import torch_nl_linked_cell, torch_nl_n2

from molnet.data import keys
from molnet.errors import InputError
from molnet.models.potential import Potential
from molnet.nn.dtypes import resolve_dtype
from molnet.pretrained.registry import model_for_inference


class _Graphs(dict):
    """The fields of a batch of atomic graphs that :meth:`Potential.forward` reads, by key and attribute."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class MolNetModel(ModelInterface):
    """torch-sim model interface over a molnet :class:`~molnet.models.Potential`.

    Parameters
    ----------
    model
        A pretrained name, a model file, a URL or a :class:`Potential` (evaluated as a copy, so the
        caller's model keeps its device, dtype and mode).
    device, dtype
        Where and in which precision the model runs (``"float64"`` or ``"float32"``).
    compute_stress
        Return the stress ``[n_systems, 3, 3]`` (eV/Å³, ASE sign) of periodic states.
    total_charge
        Total charge (e) of every system of the states this model evaluates: one number for all,
        or one per system. torch-sim's states carry no charge, so models with a Coulomb block
        (whose charges sum to it) take it here; the default is neutral, as ``atoms.info["charge"]``
        is for :class:`~molnet.calculators.MolNetCalculator`.

    ``forward(state)`` returns ``energy [n_systems]`` (eV), ``forces [n_atoms, 3]`` (eV/Å) and,
    when asked and the state is periodic, ``stress``; a non-periodic state gets zero stress.

    A torch-sim 0.3 state has one periodicity flag for all three directions, so it cannot hold a
    slab (ASE ``pbc=[True, True, False]``): ``ts.io.atoms_to_state`` turns it into a non-periodic
    system. Evaluate slabs with :class:`~molnet.calculators.MolNetCalculator`.
    """

    def __init__(
        self,
        model: str | os.PathLike | Potential,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float64",
        compute_stress: bool = True,
        total_charge: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self._device = torch.device(device)
        self._dtype = resolve_dtype(dtype)
        self.total_charge = torch.as_tensor(total_charge, dtype=self._dtype, device=self._device).reshape(-1)
        self.model = model_for_inference(model, self._dtype, self._device)
        self._compute_stress = compute_stress
        self._compute_forces = True
        self._memory_scales_with = "n_atoms_x_density"

    def graphs(self, state: ts.SimState) -> _Graphs:
        """The batch of atomic graphs of every system in ``state`` (positions wrapped into their cells)."""
        positions = state.positions
        if state.pbc:  # the linked-cell search needs positions in the cell (SimState.wrap_positions does not wrap)
            positions = ts.transforms.pbc_wrap_batched(positions, state.cell, state.system_idx)
        positions = positions.to(self._dtype)
        cell = state.row_vector_cell.to(self._dtype)  # [n_systems, 3, 3], lattice vectors as rows
        n_systems = state.n_systems
        pbc = torch.full((n_systems, 3), bool(state.pbc), device=positions.device)
        # linked cells need a cell to bin into; molecules (zero cells) take the all-pairs search
        search = torch_nl_linked_cell if state.pbc else torch_nl_n2
        mapping, edge_system, unit_shifts = search(
            self.model.r_max, positions, cell.reshape(-1, 3), pbc, state.system_idx
        )
        unit_shifts = unit_shifts.to(self._dtype)
        counts = torch.bincount(state.system_idx, minlength=n_systems)
        if len(self.total_charge) not in (1, n_systems):
            raise InputError(
                f"total_charge has {len(self.total_charge)} values for a state of {n_systems} systems; "
                "give one number for all systems or one per system"
            )
        return _Graphs(
            {
                keys.POSITIONS: positions,
                keys.ATOMIC_NUMBERS: state.atomic_numbers,
                keys.EDGE_INDEX: torch.stack([mapping[1], mapping[0]]),  # (sender j, receiver i)
                keys.UNIT_SHIFTS: unit_shifts,
                keys.SHIFTS: torch.einsum("ei,eij->ej", unit_shifts, cell[edge_system]),
                keys.CELL: cell,
                keys.PBC: pbc,
                keys.BATCH: state.system_idx,
                keys.TOTAL_CHARGE: self.total_charge.expand(n_systems),
                "ptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)]),
                "num_graphs": n_systems,
            }
        )

    def forward(self, state: ts.SimState | dict, **kwargs) -> dict[str, torch.Tensor]:
        if isinstance(state, dict):
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        stress = self._compute_stress and bool(state.pbc)
        out = self.model(self.graphs(state), compute_forces=True, compute_stress=stress)
        results = {"energy": out[keys.ENERGY], "forces": out[keys.FORCES]}
        if self._compute_stress:
            results["stress"] = (
                out[keys.STRESS]
                if stress
                else torch.zeros(state.n_systems, 3, 3, dtype=self._dtype, device=self._device)
            )
        return results
