"""The ``molnet`` command: train, eval, md, driver, preprocess, import-mace, export, models, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from molnet.data.neighbors import DEFAULT_R_MAX

log = logging.getLogger("molnet")


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(show_path=False, console=Console(stderr=True))]
    )


def cmd_eval(args: argparse.Namespace) -> int:
    import molnet
    from molnet.workflows.evaluate import evaluate_file

    if args.predictions:
        refuse_same_file(args.predictions, args.data, "the data file")
    model = molnet.load_model(args.model, dtype=args.dtype)
    metrics = evaluate_file(
        model,
        args.data,
        batch_size=args.batch_size,
        plot=args.plot,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        energy_unit=args.energy_unit,
        length_unit=args.length_unit,
        progress=not args.json,
        predictions=args.predictions,
    )
    if args.json:
        print(json.dumps(metrics))
    else:
        table = Table(title=f"{args.model} on {args.data}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in metrics.items():
            table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
        Console().print(table)
    if args.plot:
        log.info("parity plot written to %s", args.plot)
    if args.predictions:
        log.info(
            "per-structure predictions written to %s (molnet_energy, molnet_forces, molnet_stress)", args.predictions
        )
    return 0


def read_frame(path: str, frame: int, charge: float | None = None):
    """Frame ``frame`` of the structure file ``path`` (InputError naming the file's frame count if
    out of range), with the total charge ``charge`` (e) when given, else the file's."""
    from ase.io import read

    from molnet.data import keys
    from molnet.errors import InputError

    try:
        atoms = read(path, index=frame)
    except (StopIteration, IndexError) as exc:
        try:
            count = len(read(path, index=":"))
        except Exception:  # the file itself is broken: ASE's own error says how
            raise exc from None
        if count == 0:
            raise InputError(f"{path} holds no structures") from exc
        raise InputError(
            f"{path} has {count} frame(s); --frame {frame} is out of range (use 0 to {count - 1}, or -1 for the last)"
        ) from exc
    if charge is not None:
        atoms.info[keys.CHARGE_INFO] = charge
    return atoms


def refuse_same_file(output: str, source: str, what: str) -> None:
    """InputError when writing ``output`` would overwrite ``source`` (``what`` names the source)."""
    from pathlib import Path

    from molnet.errors import InputError

    if Path(output).resolve() == Path(source).resolve():
        raise InputError(f"the output {output} is {what} itself; write to another file")


def restart_frame(args: argparse.Namespace):
    """The trajectory that ``molnet md --restart`` continues and its last frame (InputError when the
    options do not name one molnet md run to continue)."""
    from pathlib import Path

    from molnet.errors import InputError
    from molnet.workflows.md import TIME_INFO

    if args.structure is not None or args.overwrite or args.frame != 0:
        raise InputError(
            "--restart continues the run in --trajectory from its last frame; "
            "drop --structure, --frame and --overwrite (or drop --restart to start a new run)"
        )
    if not args.trajectory or not Path(args.trajectory).exists():
        raise InputError(
            f"--restart: there is no trajectory {args.trajectory!r} to continue; name it with --trajectory"
        )
    atoms = read_frame(args.trajectory, -1, args.charge)
    if not atoms.has("momenta") or TIME_INFO not in atoms.info:
        raise InputError(
            f"the last frame of {args.trajectory} has no velocities (momenta) or no {TIME_INFO}: it is not a frame "
            "of molnet md to continue; start a new run from it with --structure instead"
        )
    return args.trajectory, atoms


def cmd_md(args: argparse.Namespace) -> int:
    from molnet.analysis.plots import md_trace
    from molnet.calculators import MolNetCalculator
    from molnet.data import bundled_path
    from molnet.workflows.md import run_md

    if args.restart:
        structure, atoms = restart_frame(args)
    else:
        structure = args.structure or str(bundled_path("acac", "test"))
        if args.trajectory:
            refuse_same_file(args.trajectory, structure, "the structure file")
        atoms = read_frame(structure, args.frame, args.charge)
    atoms.calc = MolNetCalculator(
        model=args.model, dtype=args.dtype, compile=args.compile, cueq=args.cueq, device=args.device
    )
    log.info(
        "MD of %s (%d atoms) with %s: %s, %d steps of %.2f fs at %.0f K",
        structure,
        len(atoms),
        args.model,
        args.ensemble.upper(),
        args.steps,
        args.timestep,
        args.temperature,
    )
    md_log = run_md(
        atoms,
        args.steps,
        temperature_K=args.temperature,
        timestep_fs=args.timestep,
        ensemble=args.ensemble,
        trajectory=args.trajectory or None,
        log_interval=args.log_interval,
        seed=args.seed,
        pressure_bar=args.pressure,
        max_bond_distance=args.max_bond_distance if args.max_bond_distance > 0 else None,
        thermalize=not args.restart,
        existing="append" if args.restart else "overwrite" if args.overwrite else "refuse",
    )
    for t, etot, temp, vol in zip(md_log.time_fs, md_log.total_energy, md_log.temperature, md_log.volume):
        log.debug("t=%8.1f fs  E_tot=%.6f eV  T=%.1f K  V=%.2f Å³", t, etot, temp, vol)
    log.info(
        "final: E_tot %.4f eV, T %.1f K; total-energy change %.3f meV/atom",
        md_log.total_energy[-1],
        md_log.temperature[-1],
        md_log.drift_meV_per_atom(len(atoms)),
    )
    if args.plot:
        md_trace(md_log.time_fs, md_log.total_energy, md_log.temperature, args.plot)
        log.info("energy/temperature trace written to %s", args.plot)
    if args.trajectory:
        log.info("trajectory written to %s", args.trajectory)
    return 0


def cmd_driver(args: argparse.Namespace) -> int:
    from molnet.calculators import MolNetCalculator
    from molnet.calculators.ipi import check_species, connect, serve

    structure = read_frame(args.structure, args.frame, args.charge)
    calculator = MolNetCalculator(model=args.model, dtype=args.dtype, device=args.device)
    check_species(calculator, structure)
    where = f"Unix socket /tmp/ipi_{args.unix}" if args.unix else f"{args.host}:{args.port}"
    log.info("i-PI driver: %s for %s (%d atoms), connecting to %s", args.model, args.structure, len(structure), where)
    client = connect(unixsocket=args.unix, host=args.host, port=args.port, timeout=args.timeout)
    steps = serve(calculator, structure, client, pbc=None if args.pbc == "file" else args.pbc == "true")
    log.info("server closed the connection after %d force evaluations; driver done", steps)
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from molnet.data.preprocess import preprocess

    path = preprocess(
        args.data,
        args.out,
        r_max=args.r_max,
        workers=args.workers,
        append=args.append,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        dipole_key=args.dipole_key,
        charges_key=args.charges_key,
        energy_unit=args.energy_unit,
        length_unit=args.length_unit,
        require=args.require,
    )
    log.info("data set written to %s; train with --data.train_file %s", path, path)
    return 0


def cmd_import_mace(args: argparse.Namespace) -> int:

    import torch

    from molnet.interop import import_mace
    from molnet.models.io import save_model

    refuse_same_file(args.output, args.model, "the mace-torch file")
    model = import_mace(args.model, head=args.head, basis=args.basis, dtype=getattr(torch, args.dtype))
    path = save_model(model, args.output)
    log.info(
        "%s → %s: %s, elements %s, r_max %.2f Å (sha256 of the source %s)",
        args.model,
        path,
        model.config["name"],
        " ".join(model.elements),
        model.r_max,
        model.provenance["source_sha256"][:12],
    )
    if "licence" in model.provenance:
        log.warning("licence: %s", model.provenance["licence"])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from molnet.train.export import export_checkpoint

    refuse_same_file(args.output, args.checkpoint, "the checkpoint")
    path = export_checkpoint(args.checkpoint, args.output)
    log.info("wrote %s", path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from molnet.workflows.demo import run_demo

    run_demo(args.output, epochs=args.epochs, md_steps=args.md_steps)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from molnet.pretrained import list_models

    entries = list_models()
    if args.json:
        print(json.dumps([vars(e) for e in entries.values()], indent=2))
        return 0
    table = Table(title="pretrained molnet models")
    for col in ("name", "family", "elements", "training data", "test E / F MAE", "size", "sha256"):
        # names are never cut (`molnet models | grep NAME` must find them); long text wraps
        table.add_column(
            col,
            no_wrap=col == "name",
            min_width=max(len(e.name) for e in entries.values()) if col == "name" else None,
            overflow="fold",
        )
    for e in entries.values():
        m = e.metrics
        errors = (
            f"{m.get('energy_mae_meV', float('nan')):.1f} meV / {m.get('forces_mae_meV_per_A', float('nan')):.1f} meV/Å"
        )
        table.add_row(
            e.name,
            e.family,
            " ".join(e.elements),
            e.training_data,
            errors,
            f"{(e.size_bytes or 0) / 1e6:.2f} MB",
            e.sha256[:12],
        )
    Console().print(table)
    return 0


def _add_data_options(p: argparse.ArgumentParser, targets: tuple[str, ...], unit_note: str = "") -> None:
    """Options naming a data file's target keys (``--energy-key``, ...) and the units of its energies
    and lengths, each in both spellings (``--energy-key`` and ``--energy_key``)."""
    for name in targets:
        p.add_argument(f"--{name}-key", f"--{name}_key", dest=f"{name}_key", default=name)
    p.add_argument(
        "--energy-unit",
        "--energy_unit",
        dest="energy_unit",
        default="eV",
        help=f"unit of the file's energies: eV, meV, Hartree, Ry, kcal/mol, kJ/mol{unit_note}",
    )
    p.add_argument(
        "--length-unit",
        "--length_unit",
        dest="length_unit",
        default="Å",
        help="unit of the file's positions and cells: Å, Bohr, nm",
    )


def _add_frame_options(p: argparse.ArgumentParser) -> None:
    """``--frame`` and ``--charge``: which structure of the file, with which total charge (:func:`read_frame`)."""
    p.add_argument("--frame", type=int, default=0, help="frame of the structure file")
    p.add_argument(
        "--charge", type=float, default=None, help="total charge in e (default: the file's info['charge'], else 0)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molnet", description="Equivariant interatomic potentials: train, evaluate, simulate."
    )
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("train", help="train a model (Lightning CLI; `molnet train --help`)", add_help=False)

    p = sub.add_parser("eval", help="metrics of a model on a data file, optional parity plot")
    p.add_argument("--model", required=True, help="pretrained name, model file or URL")
    p.add_argument("--data", required=True, help="extxyz / ASE db file with reference energies and forces")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, help="write an energy/force parity plot (PNG)")
    p.add_argument(
        "--predictions",
        default=None,
        help="write an extxyz with the references and the model's molnet_energy/forces/stress per structure",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    _add_data_options(p, ("energy", "forces", "stress"), " (metrics and predictions in eV and Å)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("md", help="molecular dynamics with the ASE calculator (default: NVT of AcAc with mace-acac)")
    p.add_argument("--model", default="mace-acac", help="pretrained name, model file or URL")
    p.add_argument("--structure", default=None, help="structure file (default: a bundled AcAc geometry)")
    _add_frame_options(p)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--ensemble", default="nvt", choices=["nve", "nvt", "npt"])
    p.add_argument("--pressure", type=float, default=1.0, help="bar (NPT)")
    p.add_argument(
        "--trajectory", default="md.extxyz", help="extxyz output (frames with velocities and info['md_time_fs'])"
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="continue the run in --trajectory from its last frame (positions, cell, velocities, time) and "
        "append to it, instead of starting from --structure with Maxwell-Boltzmann velocities",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --trajectory if it exists (default: refuse)")
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--plot", default="md.png", help="PNG of total energy and temperature against time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-bond-distance",
        type=float,
        default=4.0,
        help="Å: a molecule's atom with no neighbor this close stops the run as falling apart (0: no check, "
        "e.g. for a gas-phase ion far from the rest)",
    )
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda)")
    p.add_argument(
        "--cueq",
        action="store_true",
        help="mace models: evaluate with NVIDIA cuequivariance (pip install 'molnet[cueq]'; same numbers, CUDA kernels on a GPU)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="evaluate the model through torch.compile (same numbers, after minutes of compilation; on the CPU faster for small models on molecules and small cells, see benchmarks/README.md)",
    )
    p.set_defaults(func=cmd_md)

    p = sub.add_parser(
        "driver",
        help="serve energies, forces and virial to an i-PI-protocol server (i-PI, ASE SocketIOCalculator, CP2K)",
    )
    p.add_argument("--model", required=True, help="pretrained name, model file or URL")
    p.add_argument(
        "--structure",
        required=True,
        help="structure file giving the species (the protocol sends only positions and cell)",
    )
    _add_frame_options(p)
    p.add_argument(
        "--pbc",
        choices=["file", "true", "false"],
        default="file",
        help="periodic in all directions (true: with the cell the server sends, stress as virial), a molecule "
        "(false), or as the structure file says (file, the default; i-PI always sends a cell, so the wire "
        "cannot tell)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", default=None, help="Unix socket NAME (/tmp/ipi_NAME, i-PI's convention)")
    where.add_argument("--port", type=int, default=None, help="TCP port of the server")
    p.add_argument("--host", default="localhost", help="TCP host of the server")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server to come up")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda)")
    p.set_defaults(func=cmd_driver)

    p = sub.add_parser(
        "preprocess", help="write extxyz / ASE db files (globs) to one on-disk data set for lazy training"
    )
    p.add_argument("--data", action="append", required=True, help="file or glob (quote it); repeat for more")
    p.add_argument("--out", required=True, help="data set to write (HDF5)")
    p.add_argument(
        "--r_max",
        type=float,
        default=DEFAULT_R_MAX,
        help="cutoff (Å) at which neighbor counts are stored; the model's r_max",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel reader processes")
    p.add_argument("--append", action="store_true", help="add the files to an existing data set")
    _add_data_options(p, ("energy", "forces", "stress", "dipole", "charges"))
    p.add_argument("--require", nargs="*", default=["energy", "forces"], help="targets every structure must have")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser(
        "import-mace", help="convert a mace-torch .model file (trusted; nothing in it runs) into a molnet model file"
    )
    p.add_argument("model", help="mace-torch model file (torch.save of a MACE / ScaleShiftMACE)")
    p.add_argument("-o", "--output", required=True, help="molnet model file to write (.safetensors)")
    p.add_argument(
        "--head", default=None, help="readout head to keep (default: the only head, or the one named default)"
    )
    p.add_argument(
        "--dtype",
        default="float64",
        choices=["float32", "float64"],
        help="precision of the weights in the molnet file (default float64, whatever the source's)",
    )
    p.add_argument(
        "--basis",
        default="reduced",
        choices=["reduced", "coupled"],
        help="molnet's symmetric-contraction basis (same numbers)",
    )
    p.set_defaults(func=cmd_import_mace)

    p = sub.add_parser("export", help="write a training checkpoint as a safetensors model file")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="train briefly on the bundled AcAc data, evaluate, and run MD with the result")
    p.add_argument("--output", default="demo_out")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--md-steps", type=int, default=1000)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list the pretrained models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    from molnet.errors import MolnetError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            from molnet.train.cli import main as train_main

            _setup_logging()
            return train_main(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        _setup_logging(args.log_level)
        return args.func(args)
    except (MolnetError, ConnectionError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
