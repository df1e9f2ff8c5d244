"""Molecular dynamics through ASE with a molnet calculator (``molnet md``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from molnet.errors import ConfigError, InputError, SimulationError

log = logging.getLogger(__name__)
ENSEMBLES = ("nve", "nvt", "npt")
#: What :func:`run_md` does with a trajectory file that already exists.
EXISTING_TRAJECTORY = ("refuse", "overwrite", "append")
#: ``atoms.info`` key of a trajectory frame's simulation time (fs); a continued run starts its clock there.
TIME_INFO = "md_time_fs"


@dataclass
class MDLog:
    """Per-sample time (fs), total/potential energy (eV), temperature (K) and volume (Å³)."""

    time_fs: list[float] = field(default_factory=list)
    total_energy: list[float] = field(default_factory=list)
    potential_energy: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)

    def drift_meV_per_atom(self, n_atoms: int) -> float:
        """Total-energy change from the first to the last sample, meV/atom."""
        return 1000 * (self.total_energy[-1] - self.total_energy[0]) / n_atoms


def check_bonded(atoms: Atoms, max_distance: float, step: int) -> None:
    """Raise :class:`SimulationError` if an atom of a molecule has no neighbor within ``max_distance`` Å."""
    if atoms.pbc.any() or len(atoms) < 2 or len(atoms) > 5000:
        return
    d = atoms.get_all_distances() + np.eye(len(atoms)) * 1e9
    lonely = np.flatnonzero(d.min(axis=1) > max_distance)
    if len(lonely):
        raise SimulationError(
            f"step {step}: atom(s) {lonely[:10].tolist()} have no neighbor within {max_distance:.1f} Å; "
            "the molecule is falling apart (timestep too large, temperature too high, or the model is "
            "outside its training data)"
        )


def check_options(
    steps: int,
    log_interval: int,
    ensemble: str,
    timestep_fs: float,
    temperature_K: float,
    friction_per_fs: float,
    pressure_bar: float,
) -> None:
    """ConfigError naming the options of :func:`run_md` that are out of range (the first found)."""
    numbers = {
        "timestep": timestep_fs,
        "temperature": temperature_K,
        "friction": friction_per_fs,
        "pressure": pressure_bar,
    }
    for ok, what in (
        (steps >= 0 and log_interval >= 1, f"steps must be >= 0 and log_interval >= 1, got {steps} and {log_interval}"),
        (np.isfinite(list(numbers.values())).all(), f"these must be finite numbers: {numbers}"),
        (timestep_fs > 0, f"the timestep must be > 0 fs, got {timestep_fs}"),
        (temperature_K >= 0, f"the temperature must be >= 0 K, got {temperature_K}"),
        (ensemble != "nvt" or friction_per_fs > 0, f"the Langevin friction must be > 0 per fs, got {friction_per_fs}"),
    ):
        if not ok:
            raise ConfigError(what)


def make_dynamics(
    atoms: Atoms,
    ensemble: str,
    timestep_fs: float,
    temperature_K: float,
    friction_per_fs: float = 0.01,
    pressure_bar: float = 1.0,
    seed: int | tuple[int, ...] = 0,
):
    """The ASE integrator for ``ensemble`` (VelocityVerlet, Langevin, or Berendsen NPT); ``seed``
    seeds Langevin's random forces (``numpy.random.default_rng``)."""
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == "nvt":
        if not atoms.constraints:  # keep the centre of mass fixed, as ASE recommends instead of fixcm
            atoms.set_constraint(FixCom())
        return Langevin(
            atoms,
            timestep=dt,
            temperature_K=temperature_K,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=np.random.default_rng(seed),
        )
    if ensemble == "npt":
        if not atoms.pbc.all():
            raise ConfigError("NPT needs a structure periodic in all three directions")
        return NPTBerendsen(
            atoms,
            timestep=dt,
            temperature_K=temperature_K,
            pressure_au=pressure_bar * units.bar,
            taut=100 * units.fs,
            taup=1000 * units.fs,
            compressibility_au=4.57e-5 / units.bar,
        )
    raise ConfigError(f"unknown ensemble {ensemble!r}; choose from {ENSEMBLES}")


def run_md(
    atoms: Atoms,
    steps: int,
    temperature_K: float = 300.0,
    timestep_fs: float = 0.5,
    ensemble: str = "nvt",
    trajectory: str | Path | None = None,
    log_interval: int = 10,
    seed: int = 0,
    friction_per_fs: float = 0.01,
    pressure_bar: float = 1.0,
    progress: bool = True,
    max_bond_distance: float | None = 4.0,
    thermalize: bool = True,
    existing: str = "refuse",
) -> MDLog:
    """Run ``steps`` MD steps on ``atoms`` (which must carry a calculator); returns the log.

    ``thermalize``: velocities are drawn from Maxwell–Boltzmann at ``temperature_K`` with ``seed``
    (centre of mass and, for molecules, rotation removed) and the clock starts at 0. Otherwise the
    run continues ``atoms`` as given (a restart from a trajectory frame): its velocities are kept
    and its clock starts at ``atoms.info["md_time_fs"]`` (0 if absent).

    Frames (with their velocities and ``info["md_time_fs"]``) are written to ``trajectory``
    (extxyz) every ``log_interval`` steps. A trajectory file that already exists is refused
    (``existing="refuse"``, nothing written), replaced (``"overwrite"``) or continued
    (``"append"``). Non-finite energies (:class:`~molnet.errors.NonFiniteError`) and, for
    molecules, an atom with no neighbor within ``max_bond_distance`` Å stop the run with an error;
    frames written so far stay in ``trajectory``. A run that continues ``atoms`` into an existing
    trajectory does not write its first frame again (it is the file's last).
    """
    check_options(steps, log_interval, ensemble, timestep_fs, temperature_K, friction_per_fs, pressure_bar)
    if existing not in EXISTING_TRAJECTORY:
        raise ConfigError(f"existing must be one of {EXISTING_TRAJECTORY}, got {existing!r}")
    exists = trajectory is not None and Path(trajectory).exists()
    if exists and existing == "refuse":
        raise InputError(
            f"the trajectory {trajectory} already exists; continue that run (molnet md --restart), "
            "replace it (--overwrite), or write to another file (--trajectory)"
        )
    if thermalize:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
        Stationary(atoms)
        if not atoms.pbc.any():
            ZeroRotation(atoms)
        start_fs = 0.0
    else:
        start_fs = float(atoms.info.get(TIME_INFO, 0.0))
    # a continued run draws other Langevin forces than the run it continues
    dynamics_seed = seed if start_fs == 0 else (seed, abs(round(start_fs * 1000)))
    dyn = make_dynamics(atoms, ensemble, timestep_fs, temperature_K, friction_per_fs, pressure_bar, dynamics_seed)
    if exists and existing == "overwrite":  # only once the options have been accepted
        Path(trajectory).unlink()
    md_log = MDLog()

    def record(write_frame: bool = True) -> None:
        if max_bond_distance is not None:
            check_bonded(atoms, max_bond_distance, dyn.get_number_of_steps())
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        now_fs = start_fs + dyn.get_number_of_steps() * timestep_fs
        md_log.time_fs.append(now_fs)
        md_log.potential_energy.append(epot)
        md_log.total_energy.append(epot + ekin)
        md_log.temperature.append(atoms.get_temperature())
        md_log.volume.append(atoms.get_volume() if atoms.pbc.all() else float("nan"))
        if trajectory is not None and write_frame:
            atoms.info[TIME_INFO] = now_fs
            write(trajectory, atoms, format="extxyz", append=True)

    continuing = exists and existing == "append" and not thermalize  # its first frame is the file's last
    record(write_frame=not continuing)
    start = time.perf_counter()
    columns = (
        TextColumn("[bold]MD {task.fields[ensemble]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[ns_day]:.3f} ns/day"),
        TextColumn("T={task.fields[temp]:.0f} K"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("md", total=steps, ensemble=ensemble.upper(), ns_day=0.0, temp=md_log.temperature[0])
        done = 0
        while done < steps:
            n = min(log_interval, steps - done)
            dyn.run(n)
            done += n
            record()
            elapsed = time.perf_counter() - start
            ns_day = done * timestep_fs * 1e-6 / (elapsed / 86400) if elapsed > 0 else 0.0
            bar.update(task, completed=done, ns_day=ns_day, temp=md_log.temperature[-1])
    elapsed = time.perf_counter() - start
    if steps:
        log.info(
            "%d steps in %.1f s: %.2f steps/s, %.3f ns/day",
            steps,
            elapsed,
            steps / elapsed,
            steps * timestep_fs * 1e-6 / (elapsed / 86400),
        )
    return md_log
