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
import time

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
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if time.monotonic() > deadline:
                where = f"Unix socket /tmp/ipi_{unixsocket}" if unixsocket else f"{host}:{port}"
                raise ConnectionError(
                    f"no i-PI server at {where} after {timeout:.0f} s ({exc}); start the server first"
                ) from exc
            time.sleep(0.2)


def check_species(calculator: MolNetCalculator, structure: Atoms) -> None:
    """Raise :class:`UnknownElementError` when the model lacks one of the structure's species."""
    unknown = sorted(set(structure.get_chemical_symbols()) - set(calculator.model.elements))
    if unknown:
        raise UnknownElementError(
            f"the structure has element(s) {unknown} that the model does not know (it knows {calculator.model.elements})"
        )


def serve(calculator: MolNetCalculator, structure: Atoms, client: SocketClient) -> int:
    """Answer the server's force requests for ``structure``'s species until it ends; return the step count.

    Stress (virial) is sent for cells periodic in three directions. Raises
    :class:`UnknownElementError` before serving when the model lacks one of the species, and
    :class:`InputError` when the server sends a different number of atoms. A server that closes
    the connection, with or without an EXIT message, ends the loop normally.
    """
    check_species(calculator, structure)
    atoms = structure.copy()
    atoms.calc = calculator
    steps = 0
    try:
        for _ in client.irun(atoms, use_stress=bool(atoms.pbc.all())):
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
