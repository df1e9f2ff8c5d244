"""Dipoles of the ion pair from learned charges: a Coulomb MACE with and without a dipole loss.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dipole_ionpair.py [--epochs 15] [--no-save]

``configs/mace_ewald_ionpair.yaml`` with ``long_range: {name: coulomb}`` is trained with
``molnet train`` on the 200 structures of ``data/longrange/ionpair/dipoles_train.xyz`` (GFN2-xTB
energies, forces, dipoles and Mulliken charges from tblite), on energies and forces only and
with a dipole loss (``dipole_weight`` 10 and 1), and evaluated on the 100 held-back structures of
``dipoles_test.xyz``. A charge-free model has no dipole at all: its error is the mean absolute
reference component, printed as the baseline. One JSON line per model is printed and appended to
``benchmarks/results/coulomb.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (record helpers)
from coulomb_variants import COULOMB, SYSTEMS, train  # noqa: E402

DATA = HERE.parent / "data" / "longrange" / "ionpair"
#: name → (label, extra ``molnet train`` options)
RUNS = {
    "ef": ("coulomb, energy + forces", ()),
    "ef+dipoles10": ("coulomb, energy + forces + dipoles", ("--training.dipole_weight", "10.0")),
    "ef+dipoles1": ("coulomb, energy + forces + dipoles (weight 1)", ("--training.dipole_weight", "1.0")),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, 1

    import torch

    import molnet
    from molnet.data import read_dataset
    from molnet.workflows.evaluate import evaluate_file

    test = read_dataset(DATA / "dipoles_test.xyz")
    baseline = 1000 * float(np.abs(np.stack([a.info["REF_dipole"] for a in test])).mean())
    files = ("--data.train_file", str(DATA / "dipoles_train.xyz"), "--data.test_file", str(DATA / "dipoles_test.xyz"))
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (RUNS[name] for name in args.runs):
            work = Path(tmp) / str(len(list(Path(tmp).iterdir())))
            work.mkdir()
            path = train(SYSTEMS["ionpair"], "model", COULOMB, args.epochs, work, files + extra)
            model = molnet.load_model(path, dtype=torch.float64)
            metrics = evaluate_file(model, DATA / "dipoles_test.xyz", progress=False)
            run.emit(
                "coulomb",
                {
                    "system": "ionpair_dipoles",
                    "model": label,
                    "long_range": COULOMB,
                    "extra_options": list(extra),
                    "epochs": args.epochs,
                    "config": SYSTEMS["ionpair"].config,
                    "train": "data/longrange/ionpair/dipoles_train.xyz",
                    "test": "data/longrange/ionpair/dipoles_test.xyz",
                    "dipole_mae_me_A": metrics["dipole_mae_me_A"],
                    "charges_mae_me": metrics["charges_mae_me"],
                    "energy_mae_meV": metrics["energy_mae_meV"],
                    "forces_mae_meV_per_A": metrics["forces_mae_meV_per_A"],
                    "charge_free_baseline_dipole_mae_me_A": baseline,
                },
                args,
            )


if __name__ == "__main__":
    main()
