"""Cost of the Coulomb option per call against the local model, on periodic rock-salt boxes.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coulomb_cost.py [--sizes 96 600 2400] [--calls 3] [--no-save]

The same MACE (32 channels, L=1, max_ell 2, ν=3, 2 layers, r_max 5 Å, random weights, float64)
with and without ``long_range: {name: coulomb}`` (default accuracy 1e-8) evaluates energy, forces
and stress of rattled NaCl boxes (a = 5.64 Å) of about 96, 600 and 2400 atoms through
``MolNetCalculator``, the two models alternating per call. Reported: median seconds per call,
the ratio, and the exponent of the Coulomb part's cost between sizes (the Ewald sum with
Fincham's α scales as N^1.5). One JSON line per size is printed and appended to
``benchmarks/results/coulomb.jsonl``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (environment and record helpers)

MACE = {
    "name": "mace",
    "num_channels": 32,
    "max_L": 1,
    "max_ell": 2,
    "correlation": 3,
    "num_interactions": 2,
    "r_max": 5.0,
    "radial_MLP": [32, 32],
    "avg_num_neighbors": 20.0,
}


def box(n_atoms: int):
    from ase.build import bulk

    conventional = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    best = min(
        ((i, j, k) for i in range(1, 12) for j in range(i, 12) for k in range(j, 12)),
        key=lambda r: abs(8 * r[0] * r[1] * r[2] - n_atoms),
    )
    atoms = conventional * best
    atoms.rattle(0.05, seed=0)
    return atoms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 600, 2400])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, 1

    import numpy as np
    import torch

    from molnet.calculators import MolNetCalculator
    from molnet.models import build_model

    torch.set_num_threads(1)
    previous = None
    for size in args.sizes:
        atoms = box(size)
        models = {}
        for label, long_range in (("local", None), ("coulomb", {"name": "coulomb"})):
            torch.manual_seed(0)
            models[label] = build_model(
                {"elements": ["Na", "Cl"], **MACE, "long_range": long_range}, dtype=torch.float64
            )
        times: dict[str, list[float]] = {"local": [], "coulomb": []}
        rng = np.random.default_rng(0)
        for call in range(args.calls + 1):
            atoms.positions += rng.normal(0, 0.002, atoms.positions.shape)
            for label, model in models.items():
                trial = atoms.copy()
                trial.calc = MolNetCalculator(model, dtype="float64", skin=0.0)
                start = time.perf_counter()
                trial.get_potential_energy(), trial.get_forces(), trial.get_stress()
                if call:  # the first call of each is a warm-up
                    times[label].append(time.perf_counter() - start)
        local, coulomb = statistics.median(times["local"]), statistics.median(times["coulomb"])
        extra = coulomb - local
        record = {
            "n_atoms": len(atoms),
            "local_s_per_call": local,
            "coulomb_s_per_call": coulomb,
            "coulomb_over_local": coulomb / local,
            "coulomb_extra_s": extra,
            "model": MACE,
        }
        if previous is not None and extra > 0 and previous[1] > 0:
            record["coulomb_extra_exponent"] = math.log(extra / previous[1]) / math.log(len(atoms) / previous[0])
        previous = (len(atoms), extra)
        run.emit("coulomb", record, args)


if __name__ == "__main__":
    main()
