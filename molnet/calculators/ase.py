"""ASE calculator for any molnet model: MD, relaxations, vibrations, phonons."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.geometry import wrap_positions

from molnet.data import AtomicGraph, keys
from molnet.errors import InputError
from molnet.models.potential import Potential
from molnet.nn.dtypes import resolve_dtype
from molnet.pretrained.registry import model_for_inference

log = logging.getLogger(__name__)


def _wrapped(atoms: Atoms) -> Atoms:
    """``atoms`` with positions wrapped into the cell along its periodic directions (itself when
    none is periodic, or when the cell cannot wrap: the graph then names what is wrong with it)."""
    if not atoms.pbc.any():
        return atoms
    inside = atoms.copy()
    try:
        inside.positions = wrap_positions(atoms.positions, atoms.cell, atoms.pbc)
    except np.linalg.LinAlgError:
        return atoms
    return inside


class MolNetCalculator(Calculator):
    """ASE calculator wrapping a molnet :class:`~molnet.models.Potential`.

    Parameters
    ----------
    model
        A pretrained name, a model file path, a URL, or a :class:`Potential` (the calculator
        evaluates its own copy, so the options below leave the caller's model as it was).
    device
        Torch device (``"cpu"``, ``"cuda"``).
    dtype
        ``"float64"`` (default, for MD) or ``"float32"``. Torch's global default dtype is not changed.
    skin
        Verlet skin in Å: the neighbor list is built with ``r_max + skin`` and reused until an
        atom moved more than ``skin / 2`` or the cell, numbers or pbc changed. Edges beyond
        ``r_max`` are dropped before the model runs (a cheap distance mask over the stored
        pairs), so the model sees exactly the edges of a fresh list and results are identical to
        rebuilding at every step. ``skin=0`` rebuilds every call.
    compile
        Evaluate the model through ``torch.compile`` (:meth:`Potential.compile_inference`):
        same numbers, after a one-off compilation of minutes. On the CPU it pays for small
        models on molecules and small cells, where the eager call is bound by per-operation cost
        (C=32: 1.25–1.8× per call, 1.4× in MD), not at C=128 (``benchmarks/README.md``, "Compiled
        inference"); on GPUs it is not yet measured. Off by default.
    cueq
        Evaluate a ``mace`` model's convolution and symmetric contraction with NVIDIA
        cuequivariance (:meth:`Potential.use_cueq`; needs ``pip install 'molnet[cueq]'``, and
        ``cuequivariance-ops-torch-cu12`` for its CUDA kernels). Same numbers. Off by default.
    atoms_per_chunk
        How a ``mace`` model splits its atoms (:meth:`Potential.set_chunking`). ``"auto"`` (the
        default): chunks of up to 48 atoms of similar neighbor count, those of the largest layers
        checkpointed (a fraction of the memory) when a call's temporaries would exceed 1 GiB; an int: checkpointed chunks of
        that many atoms; ``None``: one neighbor table. Same numbers (`benchmarks/README.md`). The
        ``compile`` and ``cueq`` paths use one table.

    Properties: ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å), ``energies`` (per atom, eV),
    and ``stress`` (eV/Å³, Voigt, ASE sign) for structures periodic in all three directions; models
    with a Coulomb block add ``charges`` (e; ``atoms.get_charges()``) and, for molecules, ``dipole``
    (e·Å; ``atoms.get_dipole_moment()``). The total charge is ``atoms.info["charge"]`` (default 0).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "charges", "dipole"]

    def __init__(
        self,
        model: str | os.PathLike | Potential = "mace-acac",
        device: str = "cpu",
        dtype: str = "float64",
        skin: float = 0.5,
        compile: bool = False,
        cueq: bool = False,
        atoms_per_chunk: int | str | None = "auto",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.torch_dtype = resolve_dtype(dtype)
        self.model = model_for_inference(model, self.torch_dtype, device)
        if cueq:
            self.model.use_cueq()
        if not (cueq or compile) or atoms_per_chunk not in ("auto", None):
            self.model.set_chunking(atoms_per_chunk)
        if compile:
            self.model.compile_inference()
        self.device = torch.device(device)
        self.skin = float(skin)
        self._graph: AtomicGraph | None = None
        self._reference: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._offset = np.zeros((0, 3))  # lattice vectors the graph's positions are moved by
        self._charge_warned = False
        self.neighbor_list_builds = 0

    def _needs_rebuild(self, atoms: Atoms) -> bool:
        if self._graph is None or self._reference is None or self.skin == 0:
            return True
        positions, cell, numbers, pbc = self._reference
        if (
            len(numbers) != len(atoms)
            or not np.array_equal(numbers, atoms.numbers)
            or not np.array_equal(pbc, atoms.pbc)
        ):
            return True
        if not np.array_equal(cell, atoms.cell[:]):
            return True
        displacement = np.linalg.norm(atoms.positions - positions, axis=1).max()
        return not displacement < self.skin / 2

    def _graph_for(self, atoms: Atoms) -> AtomicGraph:
        if self._needs_rebuild(atoms):
            self.model.species_of(
                torch.as_tensor(atoms.numbers, device=self.device)
            )  # clear error for unknown elements
            # the model sees positions wrapped into the cell along its periodic directions, so that a
            # float32 model of an unwrapped trajectory (atoms hundreds of Å out) keeps its precision;
            # every call until the next rebuild subtracts the same whole lattice vectors
            inside = _wrapped(atoms)
            self._offset = atoms.positions - inside.positions  # [n_atoms, 3] Å
            graph = AtomicGraph.from_atoms(inside, self.model.r_max + self.skin, dtype=self.torch_dtype)
            self._graph = graph.to(self.device)  # one structure: the model takes the graph itself, no collation
            # the pairs within r_max + skin: candidates from which every call keeps those within r_max
            self._candidates = {k: self._graph[k] for k in (keys.EDGE_INDEX, keys.SHIFTS, keys.UNIT_SHIFTS)}
            self._reference = (atoms.positions.copy(), atoms.cell[:].copy(), atoms.numbers.copy(), atoms.pbc.copy())
            self.neighbor_list_builds += 1
        elif not np.isfinite(atoms.positions).all():
            raise InputError("positions contain NaN or infinite values")
        self._graph[keys.TOTAL_CHARGE] = torch.tensor(
            [float(atoms.info.get(keys.CHARGE_INFO, 0.0))], dtype=self.torch_dtype, device=self.device
        )
        positions = torch.tensor(atoms.positions - self._offset, dtype=self.torch_dtype, device=self.device)
        sender, receiver = self._candidates[keys.EDGE_INDEX]
        lengths = torch.linalg.norm(positions[sender] - positions[receiver] + self._candidates[keys.SHIFTS], dim=1)
        within = lengths < self.model.r_max  # [n_candidates]
        self._graph[keys.POSITIONS] = positions
        for key, value in self._candidates.items():
            self._graph[key] = value[:, within] if key == keys.EDGE_INDEX else value[within]
        return self._graph

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes, and a change of the total charge (``atoms.info["charge"]``), which ASE's
        comparison of ``Atoms`` leaves out: a cached result is for one charge only."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and atoms.info.get(keys.CHARGE_INFO, 0.0) != self.atoms.info.get(
            keys.CHARGE_INFO, 0.0
        ):
            changes.append("charge")
        return changes

    def calculate(self, atoms: Atoms | None = None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(atoms.pbc.all())
        if properties and "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions; this structure has pbc={atoms.pbc.tolist()} "
                "(molecules and slabs have no stress: set a cell and atoms.pbc = True for a bulk system)"
            )
        out = self.model(self._graph_for(atoms), compute_forces=True, compute_stress=periodic)
        energy = float(out[keys.ENERGY][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out[keys.FORCES].cpu().numpy().astype(np.float64),
            "energies": out[keys.NODE_ENERGY].cpu().numpy().astype(np.float64),
        }
        if periodic:
            s = out[keys.STRESS][0].cpu().numpy().astype(np.float64)
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        charge = atoms.info.get(keys.CHARGE_INFO, 0.0)
        if keys.CHARGES not in out and charge and not self._charge_warned:
            log.warning(
                "atoms.info['charge'] = %s, but this model has no Coulomb block: its energy does not depend on "
                "the total charge (a model trained on one charge state applies to that state only)",
                charge,
            )
            self._charge_warned = True
        if keys.CHARGES in out:
            self.results["charges"] = out[keys.CHARGES].cpu().numpy().astype(np.float64)
            if not atoms.pbc.any():  # the dipole of a periodic cell is ill-defined
                self.results["dipole"] = out[keys.DIPOLE][0].cpu().numpy().astype(np.float64)
