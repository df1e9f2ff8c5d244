"""Batched inference on lists of ASE structures."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from ase import Atoms
from rich.progress import Progress
from torch_geometric.loader import DataLoader

from molnet.data import AtomicGraph, keys
from molnet.models.potential import Potential


def predict(
    model: Potential,
    structures: Sequence[Atoms],
    batch_size: int = 16,
    compute_stress: bool = True,
    progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Energy (eV), forces (eV/Å), per-atom energies and, for periodic cells, stress (eV/Å³).

    Returns one dict per structure, in order, with keys ``energy``, ``forces``, ``energies``
    and optionally ``stress`` (3×3, for each structure periodic in 3-D unless
    ``compute_stress=False``), ``charges`` (e) and, for molecules, ``dipole`` (e·Å). The model
    evaluates in eval mode (PONITA's training mode rotates its grid at random) and is returned
    to its mode afterwards.
    """
    if isinstance(structures, Atoms):
        raise TypeError("predict takes a list of structures; for one structure pass [atoms]")
    device = model.e0s.device
    results: list[dict[str, np.ndarray]] = []
    with evaluating(model), Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating", total=len(structures))
        for start in range(0, len(structures), batch_size):
            chunk = structures[start : start + batch_size]
            graphs = [
                AtomicGraph.from_atoms(a, model.r_max, dtype=model.dtype, where=f"structure {start + k}")
                for k, a in enumerate(chunk)
            ]
            batch = next(iter(DataLoader(graphs, batch_size=len(graphs)))).to(device)
            periodic = [bool(a.pbc.all()) for a in chunk]
            out = model(batch, compute_forces=True, compute_stress=compute_stress and any(periodic))
            ptr = batch.ptr.cpu().numpy()
            for g in range(len(chunk)):
                item = {
                    "energy": float(out[keys.ENERGY][g]),
                    "forces": out[keys.FORCES][ptr[g] : ptr[g + 1]].cpu().numpy(),
                    "energies": out[keys.NODE_ENERGY][ptr[g] : ptr[g + 1]].cpu().numpy(),
                }
                if compute_stress and periodic[g]:
                    item["stress"] = out[keys.STRESS][g].cpu().numpy()
                if keys.CHARGES in out:
                    item["charges"] = out[keys.CHARGES][ptr[g] : ptr[g + 1]].cpu().numpy()
                    if not chunk[g].pbc.any():
                        item["dipole"] = out[keys.DIPOLE][g].cpu().numpy()
                results.append(item)
            bar.advance(task, len(chunk))
    return results


@contextmanager
def evaluating(model: Potential) -> Iterator[Potential]:
    """``model`` in eval mode for the block, then back in the mode it had."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
