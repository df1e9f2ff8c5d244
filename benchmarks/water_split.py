"""How much of the water box's force error can a long-range block remove? Split the labels.

    python benchmarks/water_split.py --out /tmp/water_split          # writes {train,test}_short_range.xyz

The `longrange/water32` labels are flexible TIP3P with PME (OpenMM: real-space cutoff 4.5 Å,
α = 0.73097 Å⁻¹, point charges O −0.834 e, H +0.417 e). Its non-local part is the
reciprocal-space Ewald energy (plus the constant self term)

    E_lr = k_e/(2V) Σ_{k≠0} 4π/k² exp(−k²/4α²) |Σ_j q_j exp(i k·r_j)|² − k_e α/√π Σ_j q_j²,

everything else (bonds, angles, Lennard-Jones, the erfc-screened real-space Coulomb sum and the
exclusion corrections) lives within 4.5 Å. This script evaluates E_lr, its forces and its
stress (autograd through positions and a strain), writes the data set with E_lr removed from
every label (the "short-range" labels, which a local model with r_max = 5 Å can represent in
principle), and prints JSON with the size of the removed part.

Training the local model on the short-range labels with the recipe used for the full labels
gives the error floor of that model on the local part alone: a long-range block that learned
E_lr perfectly would leave about that error on the full labels.

Checks (printed): the full Ewald Coulomb energy (real + reciprocal + self) of a frame is the same
for two splitting parameters α (it must not depend on α), and forces equal −∇E_lr by central
differences.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.neighborlist import neighbor_list
from scipy.special import erfc

from molnet.nn.ewald import reciprocal_lattice_vectors

DATA = Path(__file__).resolve().parents[1] / "data" / "longrange" / "water32"
COULOMB = 14.399645  # k_e in eV·Å/e²
CHARGES = {"O": -0.834, "H": 0.417}
ALPHA = 0.73097  # Å⁻¹, OpenMM's choice for these labels (README of the data set)


def reciprocal_energy(
    positions: torch.Tensor,
    cell: torch.Tensor,
    charges: torch.Tensor,
    alpha: float,
    tol: float = 1e-13,
    k_band: tuple[float, float] | None = None,
) -> torch.Tensor:
    """E_recip + E_self in eV for one periodic frame: positions ``[N, 3]`` Å, cell ``[3, 3]`` rows Å.

    ``k_band = (k_lo, k_hi)`` keeps only lo ≤ |k| < hi (Å⁻¹) of the reciprocal sum and drops the self term.
    """
    volume = torch.abs(torch.linalg.det(cell))
    k_max = 2 * alpha * math.sqrt(-math.log(tol))
    k, _ = reciprocal_lattice_vectors(
        cell.unsqueeze(0), k_max if k_band is None else min(k_max, k_band[1])
    )  # half space
    k2 = (k * k).sum(-1)
    if k_band is not None:
        k, k2 = k[k2 >= k_band[0] ** 2], k2[k2 >= k_band[0] ** 2]
    phase = positions @ k.T  # [N, K]
    s_re = (charges[:, None] * torch.cos(phase)).sum(0)
    s_im = (charges[:, None] * torch.sin(phase)).sum(0)
    weight = 4 * math.pi / k2 * torch.exp(-k2 / (4 * alpha**2))
    e_recip = COULOMB / volume * (weight * (s_re**2 + s_im**2)).sum()  # k_e/(2V) Σ over all k = k_e/V Σ over half
    if k_band is not None:
        return e_recip
    return e_recip - COULOMB * alpha / math.sqrt(math.pi) * (charges**2).sum()


def long_range_labels(
    atoms: Atoms, alpha: float = ALPHA, k_band: tuple[float, float] | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """E_lr (eV), its forces ``[N, 3]`` (eV/Å) and stress ``[3, 3]`` (eV/Å³, ASE sign: (1/V) dE/dε).

    ``k_band``: only that band of the reciprocal sum (see :func:`reciprocal_energy`).
    """
    charges = torch.tensor([CHARGES[s] for s in atoms.get_chemical_symbols()], dtype=torch.float64)
    positions = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deformation = torch.eye(3, dtype=torch.float64) + 0.5 * (strain + strain.T)
    cell = torch.tensor(atoms.cell[:], dtype=torch.float64)
    energy = reciprocal_energy(positions @ deformation, cell @ deformation, charges, alpha, k_band=k_band)
    grad_r, grad_e = torch.autograd.grad(energy, (positions, strain))
    return float(energy.detach()), -grad_r.numpy(), grad_e.numpy() / atoms.get_volume()


def real_space_energy(atoms: Atoms, alpha: float, tol: float = 1e-12) -> float:
    """Σ_{pairs, images} q_i q_j erfc(α r)/r (eV): the real-space part of the full Ewald sum."""
    cutoff = 1.0
    while erfc(alpha * cutoff) / cutoff > tol:
        cutoff += 0.5
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    q = np.array([CHARGES[s] for s in atoms.get_chemical_symbols()])
    return float(0.5 * COULOMB * np.sum(q[i] * q[j] * erfc(alpha * d) / d))


def checks(atoms: Atoms) -> dict:
    """α independence of the full Coulomb sum; forces = −∇E_lr by central differences."""
    totals = []
    for alpha in (ALPHA, 0.5):
        e_lr, _, _ = long_range_labels(atoms, alpha)
        totals.append(real_space_energy(atoms, alpha) + e_lr)
    _, forces, _ = long_range_labels(atoms)
    h, worst = 1e-4, 0.0
    for atom, axis in [(0, 0), (1, 2), (50, 1)]:
        shifted = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            shifted.append(long_range_labels(moved)[0])
        worst = max(worst, abs(-(shifted[0] - shifted[1]) / (2 * h) - forces[atom, axis]))
    _, _, stress = long_range_labels(atoms)
    strained = []
    for sign in (1, -1):  # σ_xy = (1/V) dE/dε_xy for a symmetric shear ε_xy = ε_yx
        deformation = np.eye(3)
        deformation[0, 1] = deformation[1, 0] = sign * h / 2
        moved = atoms.copy()
        moved.set_cell(atoms.cell[:] @ deformation, scale_atoms=True)
        strained.append(long_range_labels(moved)[0])
    fd_stress = (strained[0] - strained[1]) / (2 * h) / atoms.get_volume()
    return {
        "coulomb_total_alpha_0.731_eV": totals[0],
        "coulomb_total_alpha_0.5_eV": totals[1],
        "alpha_independence_abs_eV": abs(totals[0] - totals[1]),
        "fd_force_max_abs_err_eV_per_A": worst,
        "fd_stress_xy_abs_err_eV_per_A3": abs(fd_stress - stress[0, 1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--bands", default="1,2,3", help="|k| band edges (Å⁻¹) for the force RMS per band on the test split"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"kind": "water_split", "alpha": ALPHA}
    for split in ("train", "test"):
        frames = read(args.data / f"{split}.xyz", ":")
        if split == "train":
            report["checks"] = checks(frames[0])
        energies, forces_lr, stresses_lr, forces_all = [], [], [], []
        for atoms in frames:
            e_lr, f_lr, s_lr = long_range_labels(atoms)
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            stress = atoms.get_stress(voigt=False)
            short = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc, info=dict(atoms.info))
            short.calc = SinglePointCalculator(short, energy=energy - e_lr, forces=forces - f_lr, stress=stress - s_lr)
            energies.append(e_lr), forces_lr.append(f_lr), stresses_lr.append(s_lr), forces_all.append(forces)
            write(args.out / f"{split}_short_range.xyz", short, append=atoms is not frames[0])
        f_lr, f_all = np.concatenate(forces_lr), np.concatenate(forces_all)
        report[split] = {
            "frames": len(frames),
            "long_range_energy_std_meV_per_atom": float(np.std(energies) / len(frames[0]) * 1000),
            "long_range_force_rms_meV_per_A": float(np.sqrt(np.mean(f_lr**2)) * 1000),
            "long_range_force_mean_abs_meV_per_A": float(np.mean(np.abs(f_lr)) * 1000),
            "total_force_rms_meV_per_A": float(np.sqrt(np.mean(f_all**2)) * 1000),
            "long_range_stress_std_meV_per_A3": float(np.std(np.array(stresses_lr)) * 1000),
        }
        if split == "test":
            edges = [0.0, *(float(e) for e in args.bands.split(",")), math.inf]
            report[split]["long_range_force_rms_by_k_band_meV_per_A"] = {
                f"{lo:g}-{hi:g}": float(
                    np.sqrt(np.mean(np.concatenate([long_range_labels(a, k_band=(lo, hi))[1] for a in frames]) ** 2))
                    * 1000
                )
                for lo, hi in zip(edges[:-1], edges[1:])
            }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
