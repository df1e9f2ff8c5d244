"""Extrapolation of the ion pair's Coulomb tail: local, Ewald, Coulomb and Ewald + Coulomb MACE.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coulomb_ionpair.py [--epochs 15] [--plot docs/images/ionpair_coulomb.png] [--no-save]

Each variant of ``configs/mace_ewald_ionpair.yaml`` (MACE 32 channels, L=1, r_max 5 Å) is trained
with ``molnet train`` on the 500 training structures of ``data/longrange/ionpair`` (CH3NH3+/CF3SO3−,
GFN2-xTB, separations 3–20 Å) for ``--epochs`` epochs, one after the other, one thread, and
evaluated on the 200 test structures and on the rigid scan ``curve.xyz`` (3–25 Å). Beyond the
training range the measure is the interaction curve relative to its last trained point,
ΔE(R) = E(R) − E(20 Å): a model without the right tail stays flat there while the reference
rises as −k_e q_a q_c (1/R − 1/20 Å). One JSON line per model is printed and appended to
``benchmarks/results/coulomb.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (environment and record helpers)

DATA = ROOT / "data" / "longrange" / "ionpair"
EWALD = {"name": "ewald", "k_cutoff": 1.0}
COULOMB = {"name": "coulomb", "sigma": 1.0}
VARIANTS = {"local": None, "ewald": EWALD, "coulomb": COULOMB, "ewald+coulomb": [EWALD, COULOMB]}


def train(label: str, long_range, epochs: int, work: Path) -> Path:
    import yaml

    config = ROOT / "configs" / "mace_ewald_ionpair.yaml"
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
    ]
    run.run_logged(cmd, run.worker_env(1), work / f"{label}.log")
    return run_dir / "model.safetensors"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--plot", default=None)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, 1

    import torch

    import molnet
    from molnet.data import keys, read_dataset
    from molnet.models.inference import predict
    from molnet.workflows.evaluate import evaluate_file

    curve = read_dataset(DATA / "curve.xyz", require=("energy", "forces"))
    separation = np.array([a.info["separation"] for a in curve])
    reference = np.array([a.info[keys.REF_ENERGY] for a in curve])
    anchor = int(np.argmin(np.abs(separation - 20.0)))
    beyond = separation > separation[anchor] + 1e-9
    curves = {"reference (GFN2-xTB)": reference - reference[anchor]}
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.variants:
            path = train(label, VARIANTS[label], args.epochs, Path(tmp))
            model = molnet.load_model(path, dtype=torch.float64)
            test = evaluate_file(model, DATA / "test.xyz", progress=False)
            energy = np.array([p["energy"] for p in predict(model, curve)])
            delta = energy - energy[anchor]
            curves[label] = delta
            error = np.abs(delta - curves["reference (GFN2-xTB)"])
            run.emit(
                "coulomb",
                {
                    "model": label,
                    "long_range": VARIANTS[label],
                    "epochs": args.epochs,
                    "config": "configs/mace_ewald_ionpair.yaml",
                    "test_energy_mae_meV": test["energy_mae_meV"],
                    "test_forces_mae_meV_per_A": test["forces_mae_meV_per_A"],
                    "scan_energy_mae_meV": float(
                        1000 * np.mean(np.abs(energy - reference - np.mean(energy - reference)))
                    ),
                    "beyond_20A_delta_e_max_error_meV": float(1000 * error[beyond].max()),
                    "beyond_20A_delta_e_mae_meV": float(1000 * error[beyond].mean()),
                    "reference_delta_e_at_25A_meV": float(1000 * curves["reference (GFN2-xTB)"][-1]),
                },
                args,
            )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, values in curves.items():
            ax.plot(
                separation,
                values,
                "k-" if label.startswith("reference") else "-",
                lw=2 if label.startswith("reference") else 1.2,
                label=label,
            )
        ax.axvspan(20.0, separation.max(), color="0.92", label="beyond training range")
        ax.set(xlabel="ion separation R (Å)", ylabel="E(R) − E(20 Å) (eV)", title="CH3NH3+ / CF3SO3− rigid scan")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
