"""A driver for the i-PI socket protocol: molnet serves energies, forces and the virial.

Any server that speaks i-PI's protocol (i-PI itself, ASE's ``SocketIOCalculator``, CP2K's
``FORCE_EVAL/METHOD IPI`` …) sends positions and the cell; the driver answers with energy,
forces and virial. The protocol carries no chemical species, so the driver takes them from a
structure file, as every i-PI client does. ASE's :class:`~ase.calculators.socketio.SocketClient`
implements the client side of the protocol (units: Bohr and Hartree on the wire, converted
by ASE); this module adds connection retries, species checks and clear exits.

Reference: Kapil et al., "i-PI 2.0: A universal force engine for advanced molecular
simulations", Comput. Phys. Commun. 236, 214 (2019).
"""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
from ase import Atoms
from ase.calculators.socketio import SocketClient

from molnet.calculators.ase import MolNetCalculator
from molnet.errors import InputError, UnknownElementError

log = logging.getLogger(__name__)


def connect(
    unixsocket: str | None = None, host: str = "localhost", port: int | None = None, timeout: float = 60.0
) -> SocketClient:
    """Connect to an i-PI server, retrying for ``timeout`` seconds while it is not up yet.

    ``unixsocket`` NAME connects to ``/tmp/ipi_NAME`` (the i-PI convention); otherwise
    ``host:port`` over TCP.
    """
    if (unixsocket is None) == (port is None):
        raise InputError("give exactly one of a Unix socket name or a TCP port")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return SocketClient(host=host, port=port, unixsocket=unixsocket)
        except socket.gaierror as exc:
            raise ConnectionError(f"cannot resolve the host {host!r} ({exc}); check --host") from exc
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if time.monotonic() > deadline:
                where = f"Unix socket /tmp/ipi_{unixsocket}" if unixsocket else f"{host}:{port}"
                raise ConnectionError(
                    f"no i-PI server at {where} after {timeout:.0f} s ({exc}); start the server first"
                ) from exc
            time.sleep(0.2)


def warn_if_periodic_images_matter(atoms: Atoms, r_max: float) -> None:
    """Log a warning when ``atoms`` (treated as a molecule) sit in a cell sent by the server whose
    periodic images would come within ``r_max`` Å of the atoms: then the server likely simulates
    a periodic system."""
    if atoms.cell.rank < 3:
        return
    extent = atoms.positions.max(axis=0) - atoms.positions.min(axis=0)  # [3] Å
    heights = atoms.cell.volume / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)
    if np.any(heights < extent + r_max):
        log.warning(
            "the structure file has no periodic cell, so the system is evaluated as a molecule, but the "
            "server's cell (heights %s Å) brings periodic images within the cutoff (%.1f Å): if the server "
            "simulates a periodic system, restart the driver with --pbc true (or a structure file with its cell)",
            np.array2string(heights, precision=2),
            r_max,
        )


def check_species(calculator: MolNetCalculator, structure: Atoms) -> None:
    """Raise :class:`UnknownElementError` when the model lacks one of the structure's species."""
    unknown = sorted(set(structure.get_chemical_symbols()) - set(calculator.model.elements))
    if unknown:
        raise UnknownElementError(
            f"the structure has element(s) {unknown} that the model does not know (it knows {calculator.model.elements})"
        )


def serve(calculator: MolNetCalculator, structure: Atoms, client: SocketClient, pbc: bool | None = None) -> int:
    """Answer the server's force requests for ``structure``'s species until it ends; return the step count.

    The server sends a cell with every step (i-PI always does, also for a molecule in a box), so
    whether the system is periodic cannot come from the wire: it is ``pbc`` when given, else the
    structure file's. A molecule is evaluated without periodic images and without a virial,
    whatever cell the server sends; unless ``pbc`` is given, the first step logs a warning when the server's cell is
    small enough for periodic images within the model's cutoff to matter (a periodic system
    read from a file without a cell, such as i-PI's own xyz input). Stress (virial) is sent for
    cells periodic in three directions. Raises :class:`UnknownElementError` before serving when
    the model lacks one of the species, and :class:`InputError` when the server sends a
    different number of atoms. A server that closes the connection, with or without an EXIT
    message, ends the loop normally.
    """
    check_species(calculator, structure)
    atoms = structure.copy()
    if pbc is not None:
        atoms.pbc = pbc
    atoms.calc = calculator
    steps = 0
    try:
        for _ in client.irun(atoms, use_stress=bool(atoms.pbc.all())):
            if steps == 0 and pbc is None and not atoms.pbc.any():
                warn_if_periodic_images_matter(atoms, calculator.model.r_max)
            steps += 1
    except ValueError as exc:  # positions of the wrong shape
        raise InputError(
            f"the server sent a structure that does not match the {len(atoms)} atoms of the structure file ({exc})"
        ) from exc
    except OSError as exc:  # the server vanished between receiving positions and sending forces
        log.info("the server closed the connection (%s)", exc)
    finally:
        client.close()
    return steps
