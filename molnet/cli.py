"""The ``molnet`` command: train, eval, md, export, models, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

log = logging.getLogger("molnet")


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False, console=Console(stderr=True))])


def cmd_eval(args: argparse.Namespace) -> int:
    import molnet
    from molnet.evaluate import evaluate_file

    model = molnet.load_model(args.model, dtype=args.dtype)
    metrics = evaluate_file(
        model, args.data, batch_size=args.batch_size, plot=args.plot,
        energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key,
        progress=not args.json,
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
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from molnet.pretrained import registry

    entries = registry()
    if args.json:
        print(json.dumps([vars(e) for e in entries.values()], indent=2))
        return 0
    table = Table(title="pretrained molnet models")
    for col in ("name", "family", "elements", "training data", "test E / F MAE", "size", "sha256"):
        table.add_column(col)
    for e in entries.values():
        m = e.metrics
        errors = f"{m.get('energy_mae_meV', float('nan')):.1f} meV / {m.get('forces_mae_meV_per_A', float('nan')):.1f} meV/Å"
        table.add_row(e.name, e.family, " ".join(e.elements), e.training_data, errors, f"{(e.size_bytes or 0) / 1e6:.2f} MB", e.sha256[:12])
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="molnet", description="Equivariant interatomic potentials: train, evaluate, simulate.")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("train", help="train a model (Lightning CLI; `molnet train --help`)", add_help=False)

    p = sub.add_parser("eval", help="metrics of a model on a data file, optional parity plot")
    p.add_argument("--model", required=True, help="pretrained name, model file or URL")
    p.add_argument("--data", required=True, help="extxyz / ASE db file with reference energies and forces")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, help="write an energy/force parity plot (PNG)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("models", help="list the pretrained models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from molnet.train.cli import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return args.func(args)
    except Exception as exc:
        from molnet.errors import MolnetError

        if isinstance(exc, MolnetError):
            log.error("%s", exc)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
