"""Periodic rock-salt / molten NaCl boxes labelled with a rigid-ion Tosi–Fumi model and PME (OpenMM).

    python -m venv /tmp/omm && /tmp/omm/bin/pip install openmm ase numpy
    OMP_NUM_THREADS=1 /tmp/omm/bin/python data/longrange/nacl64/make_nacl.py   # from the repository root

The model is the Born–Mayer–Huggins form with the Fumi–Tosi NaCl parameters (Fumi & Tosi,
J. Phys. Chem. Solids 25, 31 (1964); as tabulated by Sangster & Dixon, Adv. Phys. 25, 247 (1976)):

    U_ij(r) = A_ij b exp((σ_i + σ_j − r)/ρ) − C_ij/r⁶ − D_ij/r⁸ + k_e q_i q_j / r,   q = ±1 e

The short-range (Born–Mayer–Huggins) part is cut at 5 Å with OpenMM's switching function from
4 Å, so it lies inside a 5 Å local model's reach; the Coulomb part is the full periodic sum
(particle-mesh Ewald, ``ewaldErrorTolerance`` 1e-6, direct-space cutoff 5 Å), which no local model
sees. Labels are computed on OpenMM's double-precision Reference platform; the stress is the
central finite difference of the energy under symmetric strain (step 1e-3, atoms scaled
affinely, ASE's sign convention σ = (1/V) ∂E/∂ε). Energies in eV, forces in eV/Å, stress in
eV/Å³ (potential part only).

Files written next to this script (CC0, like the rest of ``data/longrange``):
    ``train.xyz``: 64 ions, three NVT trajectories: crystal at 300 K and 800 K, melt at 1300 K.
    ``test.xyz``: the same recipe with independent seeds.
    ``expansion.xyz``: the perfect 64-ion crystal uniformly expanded, a = 5.2 … 8.0 Å; the
        training frames span nearest-neighbour geometries of a ≈ 5.5–6.1 Å only.
    ``test_216.xyz``: 216 ions (3×3×3 cells) at 800 K: a cell larger than any trained on.
    ``stats.json``: settings, seeds, versions and the checks below.
Checks run before writing: the Coulomb part of a perfect crystal equals the Madelung energy
(α = 1.747565) to 1e-6 relative, and forces equal −∇E by central differences.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import ase
import ase.io
import numpy as np
import openmm
from ase.build import bulk
from openmm import unit

HERE = Path(__file__).resolve().parent
KJ_PER_MOL_IN_EV = 1.0 / 96.48533212
COULOMB_EV_A = 14.399645  # k_e in eV·Å/e² (ASE's units)
MADELUNG_ROCKSALT = 1.747565
#: Fumi–Tosi NaCl: b (eV), ρ (Å), σ (Å), Pauling factors A_ij, C (eV·Å⁶), D (eV·Å⁸)
B, RHO = 0.338e-19 / 1.602176634e-19, 0.317
SIGMA = {"Na": 1.170, "Cl": 1.585}
PAULING = {("Na", "Na"): 1.25, ("Na", "Cl"): 1.00, ("Cl", "Cl"): 0.75}
C6 = {("Na", "Na"): 1.68, ("Na", "Cl"): 11.2, ("Cl", "Cl"): 116.0}  # 1e-79 J m⁶
C8 = {("Na", "Na"): 0.8, ("Na", "Cl"): 13.9, ("Cl", "Cl"): 233.0}  # 1e-99 J m⁸
J_TO_EV = 1.0 / 1.602176634e-19
CUTOFF, SWITCH = 5.0, 4.0  # Å
A0 = 5.65  # Å, the model's 0 K lattice constant (the scan in main() stores it)
#: (label, temperature K, lattice scale of A0, seed, frames): melt starts at 3000 K for 10 ps
TRAIN = [
    ("crystal_300K", 300.0, 1.01, 11, 70),
    ("crystal_800K", 800.0, 1.03, 12, 70),
    ("melt_1300K", 1300.0, 1.07, 13, 70),
]
TEST = [
    ("crystal_300K", 300.0, 1.01, 21, 35),
    ("crystal_800K", 800.0, 1.03, 22, 35),
    ("melt_1300K", 1300.0, 1.07, 23, 35),
]


def pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if (a, b) in PAULING else (b, a)


def build_system(atoms: ase.Atoms, tolerance: float = 1e-6) -> openmm.System:
    """OpenMM system of ``atoms``: PME Coulomb (force group 1, ``ewaldErrorTolerance`` ``tolerance``)
    + switched Born–Mayer–Huggins (group 2)."""
    system = openmm.System()
    cell = atoms.cell.array / 10.0  # nm
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in cell])
    coulomb = openmm.NonbondedForce()
    coulomb.setNonbondedMethod(openmm.NonbondedForce.PME)
    coulomb.setCutoffDistance(CUTOFF / 10.0)
    coulomb.setEwaldErrorTolerance(tolerance)
    coulomb.setUseDispersionCorrection(False)
    coulomb.setForceGroup(1)
    species = ["Na", "Cl"]
    table = {}
    for name in ("A", "C", "D"):
        table[name] = np.zeros((2, 2))
    for i, si in enumerate(species):
        for j, sj in enumerate(species):
            key = pair(si, sj)
            prefactor = PAULING[key] * B * np.exp((SIGMA[si] + SIGMA[sj]) / RHO)  # eV
            table["A"][i, j] = prefactor / KJ_PER_MOL_IN_EV
            table["C"][i, j] = C6[key] * 1e-79 * J_TO_EV * 1e60 / KJ_PER_MOL_IN_EV * 1e-6  # kJ/mol nm⁶
            table["D"][i, j] = C8[key] * 1e-99 * J_TO_EV * 1e80 / KJ_PER_MOL_IN_EV * 1e-8  # kJ/mol nm⁸
    short = openmm.CustomNonbondedForce(f"A(t1, t2) * exp(-r / {RHO / 10.0}) - C(t1, t2) / r^6 - D(t1, t2) / r^8")
    for name in ("A", "C", "D"):
        short.addTabulatedFunction(name, openmm.Discrete2DFunction(2, 2, table[name].flatten(order="F").tolist()))
    short.addPerParticleParameter("t")
    short.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    short.setCutoffDistance(CUTOFF / 10.0)
    short.setUseSwitchingFunction(True)
    short.setSwitchingDistance(SWITCH / 10.0)
    short.setForceGroup(2)
    for symbol, mass in zip(atoms.get_chemical_symbols(), atoms.get_masses()):
        system.addParticle(mass)
        coulomb.addParticle(1.0 if symbol == "Na" else -1.0, 1.0, 0.0)
        short.addParticle([float(species.index(symbol))])
    system.addForce(coulomb)
    system.addForce(short)
    return system


class Labeller:
    """Energy, forces and finite-strain stress of structures with one composition and cell shape family."""

    def __init__(self, atoms: ase.Atoms) -> None:
        self.context = openmm.Context(
            build_system(atoms), openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference")
        )

    def energy_forces(self, atoms: ase.Atoms, groups: set[int] | None = None) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (eV/Å, in the frame of ``atoms``); OpenMM gets the rotated lower-triangular cell."""
        cell, rotation = atoms.cell.standard_form()  # cell = atoms.cell @ rotation.T
        self.context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in cell / 10.0])
        self.context.setPositions(atoms.positions @ rotation.T / 10.0)
        state = self.context.getState(getEnergy=True, getForces=True, groups=groups or {1, 2})
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_IN_EV
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return energy, np.asarray(forces) @ rotation * KJ_PER_MOL_IN_EV / 10.0

    def stress(self, atoms: ase.Atoms, step: float = 1e-3) -> np.ndarray:
        """σ = (1/V) ∂E/∂ε by central differences of symmetric strains (3×3, eV/Å³)."""
        volume = atoms.get_volume()
        stress = np.zeros((3, 3))
        for i in range(3):
            for j in range(i, 3):
                values = []
                for sign in (1.0, -1.0):
                    strain = np.eye(3)
                    if i == j:
                        strain[i, i] += sign * step
                    else:
                        strain[i, j] += sign * step / 2
                        strain[j, i] += sign * step / 2
                    strained = atoms.copy()
                    strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
                    values.append(self.energy_forces(strained)[0])
                stress[i, j] = stress[j, i] = (values[0] - values[1]) / (2 * step * volume)
        return stress

    def label(self, atoms: ase.Atoms, **info) -> ase.Atoms:
        energy, forces = self.energy_forces(atoms)
        out = ase.Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
        out.info.update(energy=energy, stress=self.stress(atoms), total_charge=0, **info)
        out.arrays["forces"] = forces
        return out


def rocksalt(a: float, repeat: int) -> ase.Atoms:
    return bulk("NaCl", "rocksalt", a=a, cubic=True).repeat(repeat)


def trajectory(
    label: str, temperature: float, scale: float, seed: int, frames: int, repeat: int = 2
) -> list[ase.Atoms]:
    """NVT Langevin frames every 0.5 ps after 20 ps of equilibration (2 fs steps, CPU platform).

    Propagation uses a looser PME (``ewaldErrorTolerance`` 5e-4); every stored label is recomputed
    by :class:`Labeller`.
    """
    atoms = rocksalt(A0 * scale, repeat)
    system = build_system(atoms, tolerance=5e-4)
    integrator = openmm.LangevinMiddleIntegrator(3000.0 if label.startswith("melt") else temperature, 5.0, 2e-3)
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": "1", "DeterministicForces": "true"})
    context.setPositions(atoms.positions / 10.0)
    context.setVelocitiesToTemperature(temperature, seed)
    integrator.step(5_000)
    integrator.setTemperature(temperature)
    integrator.step(5_000)
    labeller, out = Labeller(atoms), []
    for k in range(frames):
        integrator.step(250)
        state = context.getState(getPositions=True)
        snapshot = atoms.copy()
        snapshot.positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)) * 10.0
        snapshot.wrap()
        out.append(
            labeller.label(
                snapshot,
                config_type=f"nacl_{label}",
                md_temperature_K=temperature,
                md_seed=seed,
                lattice_a=atoms.cell[0, 0] / repeat,
                md_time_ps=20.0 + 0.5 * (k + 1),
            )
        )
    return out


def checks() -> dict:
    """Madelung energy of the perfect crystal and central-difference forces of a rattled one."""
    result = {}
    for a in (5.6, 7.0):
        crystal = rocksalt(a, 2)
        energy, _ = Labeller(crystal).energy_forces(crystal, groups={1})
        expected = -MADELUNG_ROCKSALT * COULOMB_EV_A / (a / 2) * len(crystal) / 2
        result[f"madelung_rel_error_a{a}"] = abs(energy / expected - 1)
        assert result[f"madelung_rel_error_a{a}"] < 1e-6, result
    rattled = rocksalt(5.7, 2)
    rattled.rattle(0.1, seed=3)
    labeller = Labeller(rattled)
    _, forces = labeller.energy_forces(rattled)
    worst, h = 0.0, 1e-4
    for atom in range(0, 64, 7):
        for axis in range(3):
            shifted = [rattled.copy(), rattled.copy()]
            shifted[0].positions[atom, axis] += h
            shifted[1].positions[atom, axis] -= h
            numeric = -(labeller.energy_forces(shifted[0])[0] - labeller.energy_forces(shifted[1])[0]) / (2 * h)
            worst = max(worst, abs(numeric - forces[atom, axis]))
    result["fd_force_max_error_eV_per_A"] = worst
    assert worst < 1e-4, result
    return result


def main() -> None:
    stats = {"checks": checks()}
    scan = np.linspace(5.0, 7.0, 201)
    energies = [Labeller(rocksalt(a, 2)).energy_forces(rocksalt(a, 2))[0] for a in scan]
    stats["a0_model_0K_A"] = float(scan[int(np.argmin(energies))])
    for name, recipe in (("train", TRAIN), ("test", TEST)):
        frames = [atoms for spec in recipe for atoms in trajectory(*spec)]
        ase.io.write(HERE / f"{name}.xyz", frames)
        stats[name] = {"frames": len(frames), "recipe": recipe}
    big = trajectory("crystal_800K", 800.0, 1.03, 31, 20, repeat=3)
    ase.io.write(HERE / "test_216.xyz", big)
    expansion = []
    for a in np.round(np.arange(5.2, 8.0001, 0.1), 4):
        atoms = rocksalt(float(a), 2)  # a context per cell: OpenMM sizes the PME grid when it is created
        expansion.append(Labeller(atoms).label(atoms, config_type="nacl_expansion", lattice_a=float(a)))
    ase.io.write(HERE / "expansion.xyz", expansion)
    stats["settings"] = {
        "cutoff_A": CUTOFF,
        "switch_A": SWITCH,
        "ewald_error_tolerance": 1e-6,
        "start_lattice_A": A0,
        "stress_strain_step": 1e-3,
        "timestep_fs": 2.0,
        "md_ewald_error_tolerance": 5e-4,
        "friction_per_ps": 5.0,
        "frame_spacing_ps": 0.5,
        "equilibration_ps": 20.0,
        "melt_preheat": "10 ps at 3000 K, then 10 ps at 1300 K",
    }
    stats["versions"] = {
        "openmm": openmm.__version__,
        "ase": ase.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    (HERE / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps({k: v for k, v in stats.items() if k != "versions"}, indent=1))


if __name__ == "__main__":
    main()
