"""The potential: per-atom energies of any body → energy, forces and stress."""

from __future__ import annotations

import copy
import dataclasses
from typing import Sequence

import torch
from ase.data import atomic_numbers as SYMBOL_TO_Z
from ase.data import chemical_symbols
from torch import nn

from molnet.data import keys
from molnet.errors import ConfigError, NonFiniteError, UnknownElementError
from molnet.nn.inputs import GraphInputs, scatter_sum


class Potential(nn.Module):
    """E = Σ_i (scale·e_i + shift) + Σ_i E0[Z_i]; forces −∂E/∂r and stress (1/V)·∂E/∂ε by autograd.

    ``body`` maps :class:`GraphInputs` to per-atom energies ``[n_nodes]``. Stress follows ASE's
    sign convention (positive under tension) and is the derivative with respect to a symmetric
    strain ε applied to positions and cell; it is zero for structures without a 3-D periodic cell.

    Parameters
    ----------
    body
        The model family's network.
    elements
        Chemical symbols the model knows, in the order of its species index.
    config
        The full configuration the model was built from (stored in model files).
    e0s
        Isolated-atom energies per element symbol (eV); missing ones are 0.
    scale, shift
        Per-atom energy scale and shift (eV).
    """

    def __init__(
        self,
        body: nn.Module,
        elements: Sequence[str],
        config: dict,
        e0s: dict[str, float] | None = None,
        scale: float = 1.0,
        shift: float = 0.0,
    ) -> None:
        super().__init__()
        self.body = body
        self.elements = list(elements)
        self.config = config
        e0s = e0s or {}
        self.register_buffer("e0s", torch.tensor([float(e0s.get(s, 0.0)) for s in self.elements]))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor(float(shift)))
        table = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        for k, s in enumerate(self.elements):
            table[SYMBOL_TO_Z[s]] = k
        self.register_buffer("z_to_species", table, persistent=False)
        self._inference_body = None  # set by compile_inference(); a function, so not a submodule
        self.builder = None  # the function that built this model from its config (set by build_model); used by copies

    def compile_inference(self) -> "Potential":
        """Evaluate the body through ``torch.compile`` (TorchInductor, dynamic shapes) outside training.

        Energies, forces and stress equal the eager path's to rounding (tested); training
        (``training=True``, which needs double backward) always runs eagerly. The first call per
        new kind of input compiles (minutes on a CPU; Inductor's on-disk cache shortens later
        processes). The compiled path evaluates whole structures (chunking, :meth:`set_chunking`,
        is turned off). A ``mace`` body computes its per-call plan from the graph's integers
        eagerly and the rest of the call is traced as one graph, whose backward (the forces) is
        compiled too. On the CPU it pays on molecules and small cells, where the eager call is
        bound by per-operation cost, and least in float64 and at C=128 from ~150 atoms, where the
        default path's chunked neighbor tables win (``benchmarks/compile_inference.py``; results
        in ``benchmarks/README.md``, "Compiled inference"); on a GPU it is not yet measured
        (``benchmarks/gpu_check.sh`` times it). Returns ``self``.
        """
        if hasattr(self.body, "set_chunking"):
            self.body.set_chunking(None)
        self._inference_body = torch.compile(self.body.forward, dynamic=True)
        return self

    def set_chunking(self, atoms_per_chunk: int | str | None) -> "Potential":
        """How the message passing splits the atoms of a call (``mace`` family).

        ``"auto"`` (the default of every MACE): chunks of 48 atoms or fewer of similar neighbor
        count; when a call's temporaries would exceed 1 GiB (4 GiB in train mode) the chunks of
        the layers with the largest temporaries are also checkpointed, as few layers as fit the
        budget (:meth:`molnet.nn.mace.MACE.set_chunking`). An int: checkpointed chunks
        of that many atoms. ``None``: one neighbor table for all atoms.

        Checkpointed, the per-neighbor tensors of each message-passing layer exist for one chunk
        of receiving atoms at a time, and backward recomputes them chunk by chunk: energies,
        forces and stress are the same to rounding (tested), and peak memory falls to a fraction
        (`benchmarks/README.md`). Families without chunking accept ``"auto"`` and ``None`` and
        refuse a chunk size. Returns ``self``.
        """
        if not hasattr(self.body, "set_chunking"):
            if atoms_per_chunk in ("auto", None):
                return self
            raise ConfigError(f"chunked evaluation exists for the mace family only, not {self.config.get('name')!r}")
        if atoms_per_chunk is not None and self._inference_body is not None:
            raise ConfigError("torch.compile and chunked evaluation do not combine; load the model without compile")
        self.body.set_chunking(atoms_per_chunk)
        return self

    def use_cueq(self, enabled: bool = True, method: str | None = None) -> "Potential":
        """Evaluate the body's heavy operations with NVIDIA cuequivariance (``mace`` family only).

        Same parameters and files, same energies, forces and stress to rounding (tested); on a
        GPU with ``cuequivariance-ops-torch`` its CUDA kernels run. Call after ``.to(device)``.
        See :mod:`molnet.nn.cueq`. Returns ``self``.
        """
        if not hasattr(self.body, "use_cueq"):
            raise ConfigError(
                f"the cuequivariance path exists for the mace family only, not {self.config.get('name')!r}"
            )
        self.body.use_cueq(enabled, method)
        return self

    def __deepcopy__(self, memo) -> "Potential":
        """Rebuild from the configuration and copy the state.

        A plain deep copy of e3nn's generated tensor-product modules registers extra buffers,
        which breaks weight averaging (EMA) that pairs parameters and buffers by position.
        """
        clone = self.builder(self.config, dtype=self.dtype).to(self.e0s.device)
        clone.load_state_dict(self.state_dict())
        if getattr(self.body, "cueq_enabled", False):
            clone.use_cueq(True, self.body.cueq_method)
        if hasattr(self.body, "atoms_per_chunk"):
            clone.body.atoms_per_chunk = self.body.atoms_per_chunk
        clone.train(self.training)
        for p_clone, p_self in zip(clone.parameters(), self.parameters()):
            p_clone.requires_grad_(p_self.requires_grad)
        memo[id(self)] = clone
        return clone

    def inference_copy(self, device: str | torch.device, dtype: torch.dtype) -> "Potential":
        """A copy on ``device`` in ``dtype`` and eval mode, for a calculator to own: the caller's
        model keeps its device, dtype, mode and chunking (:meth:`__deepcopy__`). A model prepared
        with :meth:`compile_inference` gives a compiled copy."""
        clone = copy.deepcopy(self).to(device=device, dtype=dtype).eval()
        return clone.compile_inference() if self._inference_body is not None else clone

    @property
    def r_max(self) -> float:
        return float(self.config["r_max"])

    @property
    def dtype(self) -> torch.dtype:
        return self.e0s.dtype

    def species_of(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers ``[n]`` to species indices, refusing elements the model does not know."""
        valid = (atomic_numbers >= 0) & (atomic_numbers < len(self.z_to_species))
        species = torch.where(valid, self.z_to_species[atomic_numbers.clamp(0, len(self.z_to_species) - 1)], -1)
        unknown = species < 0
        if bool(unknown.any()):
            idx = torch.nonzero(unknown).flatten()
            zs = sorted({int(z) for z in atomic_numbers[idx]})
            names = [chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in zs]
            raise UnknownElementError(
                f"element(s) {names} (atom index {idx[:10].tolist()}) are not known to this model; "
                f"it was trained on {self.elements}"
            )
        return species

    def forward(
        self, batch, compute_forces: bool = True, compute_stress: bool = False, training: bool = False
    ) -> dict[str, torch.Tensor]:
        """Evaluate a torch_geometric batch of :class:`~molnet.data.AtomicGraph`.

        Returns a dict with ``energy [n_graphs]`` eV, ``node_energy [n_nodes]`` eV and, when
        asked, ``forces [n_nodes, 3]`` eV/Å and ``stress [n_graphs, 3, 3]`` eV/Å³; models with a
        Coulomb block add ``charges [n_nodes]`` e and ``dipole [n_graphs, 3]`` e·Å (Σ q_i r_i for
        molecules; zero for periodic cells, where it is ill-defined). ``training``
        keeps the graph of the derivatives so that a loss on forces can be back-propagated.
        """
        species = self.species_of(batch[keys.ATOMIC_NUMBERS])
        inputs = GraphInputs.from_graph(batch, species, self.dtype)
        needs_grad = compute_forces or compute_stress
        with torch.enable_grad():
            positions, cell, shifts = inputs.positions, inputs.cell, inputs.shifts
            if needs_grad and not positions.requires_grad:
                positions = positions.clone().requires_grad_(True)
            if compute_stress:
                displacement = torch.zeros_like(cell).requires_grad_(True)
                strain = 0.5 * (displacement + displacement.transpose(1, 2))  # [n_graphs, 3, 3]
                positions = positions + torch.einsum("ni,nij->nj", positions, strain[inputs.batch])
                cell = cell + torch.bmm(cell, strain)
                edge_cell = cell[inputs.batch[inputs.receiver]]  # [n_edges, 3, 3]
                shifts = torch.einsum("ei,eij->ej", inputs.unit_shifts, edge_cell)
            inputs = dataclasses.replace(
                inputs, positions=positions, cell=cell, shifts=shifts, constant_weights=not training
            )
            body = self._inference_body if self._inference_body is not None and not training else self.body
            node_energy = self.scale * body(inputs) + self.shift + self.e0s[species]  # [n_nodes]
            if "coulomb_energy" in inputs.aux:  # physical energies are not scaled
                node_energy = node_energy + inputs.aux["coulomb_energy"]
            energy = scatter_sum(node_energy, inputs.batch, inputs.num_graphs)  # [n_graphs]
            out = {keys.ENERGY: energy, keys.NODE_ENERGY: node_energy}
            if "charges" in inputs.aux:
                charges = inputs.aux["charges"]
                out[keys.CHARGES] = charges
                dipole = scatter_sum(charges[:, None] * inputs.positions, inputs.batch, inputs.num_graphs)
                periodic = inputs.pbc.any(dim=1)  # Σ q_i r_i is ill-defined in a periodic cell: zero there
                out[keys.DIPOLE] = torch.where(periodic[:, None], torch.zeros_like(dipole), dipole)
            if needs_grad:
                wrt = [positions] + ([displacement] if compute_stress else [])
                grads = torch.autograd.grad(
                    energy.sum(), wrt, create_graph=training, retain_graph=training, allow_unused=True
                )
                if compute_forces:
                    g = grads[0] if grads[0] is not None else torch.zeros_like(positions)
                    out[keys.FORCES] = -g
                if compute_stress:
                    g = grads[-1] if grads[-1] is not None else torch.zeros_like(displacement)
                    volume = torch.linalg.det(cell).abs()
                    periodic = inputs.pbc.all(dim=1) & (volume > 0)
                    safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
                    out[keys.STRESS] = torch.where(periodic[:, None, None], g / safe_volume[:, None, None], 0.0)
        if not training:
            out = {k: v.detach() for k, v in out.items()}
        _check_finite(out)
        return out


def _check_finite(out: dict[str, torch.Tensor]) -> None:
    for name, value in out.items():
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteError(
                f"the model produced non-finite {name}; check the structure for atoms far outside the "
                "training distribution and the model file for corrupted weights"
            )
