"""Local, Ewald, Coulomb and Ewald + Coulomb MACE, in and beyond the training range.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coulomb_variants.py --system ionpair [--epochs 15] [--plot docs/images/ionpair_coulomb.png] [--no-save]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coulomb_variants.py --system nacl64 [--epochs 15] [--plot docs/images/nacl64_coulomb.png]

Each variant of the system's configuration is trained with ``molnet train`` for ``--epochs``
epochs, one after the other, one thread, and evaluated on the system's test files and on a scan
that leaves the training range:

- ``ionpair``: ``configs/mace_ewald_ionpair.yaml`` (MACE 32 channels, L=1, r_max 5 Å) on
  ``data/longrange/ionpair`` (CH3NH3+/CF3SO3−, GFN2-xTB, separations 3–20 Å, molecules); the scan
  is the rigid ``curve.xyz`` (3–25 Å) and "beyond" is R > 20 Å.
- ``nacl64``: ``configs/mace_coulomb_nacl64.yaml`` (the same MACE) on ``data/longrange/nacl64``
  (64-ion periodic NaCl, Tosi–Fumi + PME, crystal 300/800 K and melt 1300 K); the extra test is
  ``test_216.xyz`` (216 ions, a larger cell than any trained on); the scan is the perfect crystal
  expanded uniformly (``expansion.xyz``, a = 5.2–8.0 Å) and "beyond" is a > 6.1 Å.

Along the scan the measure is the energy relative to an anchor inside the training range,
ΔE(x) = E(x) − E(anchor), which removes any constant offset: a model without the right tail stays
flat where the reference keeps changing. One JSON line per model is printed and appended to
``benchmarks/results/coulomb.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (environment and record helpers)


@dataclass(frozen=True)
class System:
    """A benchmark system: its training configuration, data and extrapolation scan."""

    config: str
    data: str
    tests: tuple[str, ...]  # evaluated with molnet eval's metrics
    scan: str
    coordinate: str  # info key of the scan coordinate (Å)
    anchor: float  # ΔE reference point, inside the training range
    beyond: float  # scan points with coordinate > beyond are outside the training range
    ewald: dict
    xlabel: str
    title: str


SYSTEMS = {
    "ionpair": System(
        config="configs/mace_ewald_ionpair.yaml",
        data="data/longrange/ionpair",
        tests=("test.xyz",),
        scan="curve.xyz",
        coordinate="separation",
        anchor=20.0,
        beyond=20.0,
        ewald={"name": "ewald", "k_cutoff": 1.0},
        xlabel="ion separation R (Å)",
        title="CH3NH3+ / CF3SO3− rigid scan",
    ),
    "nacl64": System(
        config="configs/mace_coulomb_nacl64.yaml",
        data="data/longrange/nacl64",
        tests=("test.xyz", "test_216.xyz"),
        scan="expansion.xyz",
        coordinate="lattice_a",
        anchor=5.8,
        beyond=6.1,
        ewald={"name": "ewald", "k_cutoff": 3.0},
        xlabel="rock-salt lattice constant a (Å)",
        title="NaCl crystal, uniform expansion (64 ions)",
    ),
}
COULOMB = {"name": "coulomb", "sigma": 1.0}


def variants(system: System) -> dict:
    return {"local": None, "ewald": system.ewald, "coulomb": COULOMB, "ewald+coulomb": [system.ewald, COULOMB]}


def train(system: System, label: str, long_range, epochs: int, work: Path, extra: tuple[str, ...] = ()) -> Path:
    """``molnet train`` of the system's configuration with ``long_range`` (and ``extra`` CLI options)."""
    import yaml

    config = ROOT / system.config
    model = {**yaml.safe_load(config.read_text())["model"], "long_range": long_range}
    run_dir = work / label
    cmd = [
        sys.executable,
        "-m",
        "molnet.cli",
        "train",
        "--config",
        str(config),
        "--run_dir",
        str(run_dir),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--model",
        json.dumps(model),
        *extra,
    ]
    run.run_logged(cmd, run.worker_env(1), work / f"{label}.log")
    return run_dir / "model.safetensors"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="ionpair")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=["local", "ewald", "coulomb", "ewald+coulomb"])
    parser.add_argument("--plot", default=None)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, 1

    import torch

    import molnet
    from molnet.data import keys, read_dataset
    from molnet.models.inference import predict
    from molnet.workflows.evaluate import evaluate_file

    system = SYSTEMS[args.system]
    data = ROOT / system.data
    scan = read_dataset(data / system.scan, require=("energy", "forces"))
    coordinate = np.array([a.info[system.coordinate] for a in scan])
    n_atoms = np.array([len(a) for a in scan])
    reference = np.array([a.info[keys.REF_ENERGY] for a in scan])
    anchor = int(np.argmin(np.abs(coordinate - system.anchor)))
    beyond = coordinate > system.beyond + 1e-9
    curves = {"reference": reference - reference[anchor]}
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.variants:
            long_range = variants(system)[label]
            path = train(system, label, long_range, args.epochs, Path(tmp))
            model = molnet.load_model(path, dtype=torch.float64)
            tests = {name: evaluate_file(model, data / name, progress=False) for name in system.tests}
            energy = np.array([p["energy"] for p in predict(model, scan)])
            delta = energy - energy[anchor]
            curves[label] = delta
            error = np.abs(delta - curves["reference"])
            offset_free = energy - reference - np.mean(energy - reference)
            run.emit(
                "coulomb",
                {
                    "system": args.system,
                    "model": label,
                    "long_range": long_range,
                    "epochs": args.epochs,
                    "config": system.config,
                    "tests": {
                        name: {
                            key: metrics[key]
                            for key in metrics
                            if key.endswith(("_mae_meV", "_mae_meV_per_A", "_mae_meV_per_A3"))
                        }
                        for name, metrics in tests.items()
                    },
                    "scan": system.scan,
                    "scan_coordinate": system.coordinate,
                    "anchor": float(coordinate[anchor]),
                    "beyond": system.beyond,
                    "scan_energy_mae_meV": float(1000 * np.mean(np.abs(offset_free))),
                    "beyond_delta_e_max_error_meV": float(1000 * error[beyond].max()),
                    "beyond_delta_e_mae_meV": float(1000 * error[beyond].mean()),
                    "beyond_delta_e_max_error_meV_per_atom": float(1000 * (error / n_atoms)[beyond].max()),
                    "reference_delta_e_at_scan_end_meV": float(1000 * curves["reference"][-1]),
                },
                args,
            )
    if args.plot:
        plot(curves, coordinate, n_atoms, system, args.plot)


def plot(curves: dict, coordinate: np.ndarray, n_atoms: np.ndarray, system: System, path: str) -> None:
    """ΔE along the scan per model (per atom when the scan's structures are large), reference in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_atom = n_atoms.min() > 16
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in curves.items():
        y = values / n_atoms if per_atom else values
        ax.plot(
            coordinate, y, "k-" if label == "reference" else "-", lw=2 if label == "reference" else 1.2, label=label
        )
    ax.axvspan(system.beyond, coordinate.max(), color="0.92", label="beyond training range")
    unit = "eV/atom" if per_atom else "eV"
    ax.set(xlabel=system.xlabel, ylabel=f"E − E({system.anchor:g} Å) ({unit})", title=system.title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
