"""End-to-end training time per epoch: ``molnet train`` against ``mace_run_train``, same recipe.

Run with molnet's interpreter from the repository root (needs ``bash benchmarks/mace_env.sh``)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/training_epoch.py [--short 2 --long 6] [--frames 400] [--no-save]

Both packages train the same MACE (32x0e+32x1o, max_ell 2, correlation 3, 2 layers, radial MLP
[64, 64, 64], float32, batch 5, Adam + AMSGrad, EMA, plateau schedule, stage two) on the same
``--frames`` structures of BOTNet AcAc ``train_300K`` (10% held out for validation), one thread,
each run as a user would start it (``run.train_molnet`` / ``mace_torch_accuracy.sh``). Each is run
for ``--short`` and ``--long`` epochs; the time per epoch is the difference of the two wall times
over the difference of the epochs, so start-up, statistics and the final evaluation cancel. Runs
alternate molnet / mace-torch. One JSON line is printed and appended to
``benchmarks/results/training_epoch.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (training drivers, environment and record helpers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=6)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.molnet_set = False, None, None
    args.molnet_python = args.mace_python = None

    import ase.io

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = tmp / "train.xyz"
        ase.io.write(train, ase.io.read(run.DATA / "acac" / "train_300K.xyz", f":{args.frames}"))
        test = tmp / "test.xyz"
        ase.io.write(test, ase.io.read(run.DATA / "acac" / "test_MD_300K.xyz", ":20"))
        files = (train, test, run.DATA / "acac" / "isolated_atoms.xyz")
        wall: dict[str, dict[int, float]] = {"molnet": {}, "mace-torch": {}}
        for epochs in (args.short, args.long):
            for package in ("molnet", "mace-torch"):
                work = tmp / f"{package}_{epochs}"
                work.mkdir()
                if package == "molnet":
                    wall[package][epochs] = run.train_molnet("mace", files, 0, epochs, work, args)["train_wall_s"]
                else:
                    wall[package][epochs] = run.train_mace_torch(files, "acac", 0, epochs, work, args)["train_wall_s"]
        per_epoch = {p: (w[args.long] - w[args.short]) / (args.long - args.short) for p, w in wall.items()}
        run.emit(
            "training_epoch",
            {
                "frames": args.frames,
                "epochs": [args.short, args.long],
                "wall_s": wall,
                "seconds_per_epoch": per_epoch,
                "speedup_molnet_over_mace": per_epoch["mace-torch"] / per_epoch["molnet"],
                "config": "configs/mace_acac.yaml",
            },
            args,
        )


if __name__ == "__main__":
    main()
