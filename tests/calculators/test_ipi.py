"""`molnet driver` serves an i-PI-protocol server (ASE's SocketIOCalculator) over a Unix socket."""

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.socketio import SocketIOCalculator
from ase.io import write
from ase.md.verlet import VelocityVerlet

from molnet.calculators import MolNetCalculator
from molnet.models import build_model, save_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    model = build_model(
        {"name": "mpnn", "elements": ["H", "C", "O", "Si"], "r_max": 4.0, "num_channels": 8}, dtype=torch.float64
    )
    return save_model(model, tmp_path_factory.mktemp("ipi") / "model.safetensors")


def _driver(model_file, structure, name, *options):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "molnet.cli",
            "driver",
            "--model",
            str(model_file),
            "--structure",
            str(structure),
            "--unix",
            name,
            "--timeout",
            "60",
            *options,
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _triclinic_cell():
    atoms = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    atoms.set_cell(atoms.cell[:] + np.array([[0.0, 0.3, 0.1], [0.2, 0.0, -0.2], [0.1, 0.4, 0.0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_md_over_the_socket_equals_the_direct_calculator(model_file, tmp_path):
    atoms = _triclinic_cell()
    write(tmp_path / "start.xyz", atoms)
    direct = MolNetCalculator(model_file, dtype="float64", skin=0.0)
    name = f"molnet-{uuid.uuid4().hex[:8]}"
    driver = _driver(model_file, tmp_path / "start.xyz", name)
    atoms.set_velocities(np.random.default_rng(0).normal(0.0, 0.02, (len(atoms), 3)))  # Å/(ASE time unit)
    with SocketIOCalculator(unixsocket=name, timeout=120) as calc:
        atoms.calc = calc
        dyn = VelocityVerlet(atoms, timestep=1.0)
        for _ in range(4):  # the first call plus four steps: five force evaluations
            dyn.run(1)
            reference = atoms.copy()
            reference.calc = direct
            # i-PI's wire units are Bohr and Hartree: the round trip is exact to those conversions
            assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-9)
            np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-9)
            np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), atol=1e-10)
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 0, out
    assert "server closed the connection after 5 force evaluations" in " ".join(out.split())


def test_a_vanished_server_and_unknown_elements_end_the_driver_with_a_message(model_file, tmp_path):
    from ase.calculators.socketio import SocketServer

    atoms = _triclinic_cell()
    write(tmp_path / "start.xyz", atoms)
    name = f"molnet-{uuid.uuid4().hex[:8]}"
    driver = _driver(model_file, tmp_path / "start.xyz", name)
    server = SocketServer(unixsocket=name, timeout=120)
    server.calculate(atoms)  # one step, then the server's socket goes away without an EXIT message
    server.protocol.socket.close()
    server.serversocket.close()
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 0, out
    assert "server closed the connection after 1 force evaluations" in " ".join(out.split())

    atoms[0].symbol = "N"
    write(tmp_path / "nitrogen.xyz", atoms)
    error = _refused_driver(model_file, tmp_path / "nitrogen.xyz", "--unix", name)
    assert "element(s) ['N'] that the model does not know" in error


def _refused_driver(model_file, structure, *options) -> str:
    """Run ``molnet driver`` expecting a one-line error (exit code 2); its stderr on one line."""
    done = subprocess.run(
        [sys.executable, "-m", "molnet.cli", "driver", "--model", str(model_file), "--structure", str(structure)]
        + [*options, "--timeout", "1"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    return " ".join(done.stderr.split())


def test_a_structure_file_without_a_cell_is_a_molecule_with_a_warning_unless_pbc_is_given(model_file, tmp_path):
    """i-PI always sends a cell, so a periodic system read from a file without one (i-PI's own xyz
    input) would silently lose its periodic images and virial: the driver warns, and --pbc true
    serves the periodic energy and stress."""
    atoms = _triclinic_cell()
    write(tmp_path / "plain.xyz", atoms, format="xyz")  # positions only: ASE reads pbc=False
    periodic = MolNetCalculator(model_file, dtype="float64", skin=0.0)
    molecule = atoms.copy()
    molecule.pbc = False
    molecule.calc = MolNetCalculator(model_file, dtype="float64", skin=0.0)
    for options, expected in (((), molecule.get_potential_energy()), (("--pbc", "true"), None)):
        name = f"molnet-{uuid.uuid4().hex[:8]}"
        driver = _driver(model_file, tmp_path / "plain.xyz", name, *options)
        with SocketIOCalculator(unixsocket=name, timeout=120) as calc:
            served = atoms.copy()
            served.calc = calc
            energy = served.get_potential_energy()
            if expected is None:
                reference = atoms.copy()
                reference.calc = periodic
                assert energy == pytest.approx(reference.get_potential_energy(), abs=1e-9)
                np.testing.assert_allclose(served.get_stress(), reference.get_stress(), atol=1e-10)
            else:
                assert energy == pytest.approx(expected, abs=1e-9)
        out, _ = driver.communicate(timeout=60)
        assert driver.returncode == 0, out
        warned = "restart the driver with --pbc true" in " ".join(out.split())
        assert warned == (not options), out


def test_an_unknown_host_ends_the_driver_with_a_message(model_file, tmp_path):
    write(tmp_path / "start.xyz", _triclinic_cell())
    error = _refused_driver(model_file, tmp_path / "start.xyz", "--port", "31415", "--host", "no-such-host.invalid")
    assert "cannot resolve the host 'no-such-host.invalid'" in error
