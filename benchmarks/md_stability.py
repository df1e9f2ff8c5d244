"""Long NVT stability of a shipped model: does the molecule stay bonded, is the energy sane?

    python benchmarks/md_stability.py --model mace-acac --temperature 600 --ps 10

Runs Langevin NVT (0.5 fs, float64) from a bundled AcAc geometry, checks every 100 steps that no
atom lost all neighbors within 2 Å and that every covalent bond of the starting geometry stays
below 1.6× its length, and prints one JSON object (also appended to results/md_stability.jsonl).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from molnet.calculators import MolNetCalculator
from molnet.data import load_bundled
from molnet.workflows.md import run_md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mace-acac")
    parser.add_argument("--temperature", type=float, default=600.0)
    parser.add_argument("--ps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    atoms = load_bundled("acac", "test")[0]
    atoms.calc = MolNetCalculator(args.model, dtype="float64")
    d0 = atoms.get_all_distances()
    bonds = np.argwhere(np.triu(d0 < 1.6, k=1))
    steps = int(round(args.ps * 1000 / 0.5))
    start = time.perf_counter()
    md_log = run_md(
        atoms,
        steps,
        temperature_K=args.temperature,
        timestep_fs=0.5,
        ensemble="nvt",
        log_interval=100,
        seed=args.seed,
        progress=False,
        max_bond_distance=2.0,
    )
    elapsed = time.perf_counter() - start
    d = atoms.get_all_distances()
    stretch = max(d[i, j] / d0[i, j] for i, j in bonds)
    record = {
        "benchmark": "md_stability",
        "model": args.model,
        "temperature_K": args.temperature,
        "ps": args.ps,
        "steps": steps,
        "bonded": bool(stretch < 1.6),
        "max_final_bond_stretch": float(stretch),
        "mean_temperature_K": float(np.mean(md_log.temperature[len(md_log.temperature) // 5 :])),
        "potential_energy_range_eV": float(np.ptp(md_log.potential_energy)),
        "steps_per_s": steps / elapsed,
        "threads": 1,
    }
    print(json.dumps(record))
    with open(Path(__file__).parent / "results" / "md_stability.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
