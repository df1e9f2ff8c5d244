"""Cost of the Ewald block's two evaluations for molecules: exact real-space sum vs principal-frame grid.

    python benchmarks/ewald_aperiodic_cost.py [--sizes 15,150,600,2400] [--threads 1]

Structures: the AcAc molecule and clusters of N/15 AcAc molecules (the liquid boxes of
``run.py speed`` with their periodicity removed). For each, an MPNN (64 channels, 3 layers,
``configs/mpnn_acac.yaml``) with the default Ewald block is timed for energy + forces with
``aperiodic="real_space"`` and ``aperiodic="grid"`` (grid_box = the cluster's extent + 2·20 Å,
the filter's range), and without Ewald; calls alternate, medians are printed as JSON and
appended to ``results/ewald.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch_geometric.data import Batch

from molnet.data import AtomicGraph
from molnet.models import build_model

HERE = Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(HERE))
    from run import acac_molecule, liquid_box  # the structures of the speed benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="15,150,600,2400")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--range", type=float, default=20.0, help="margin added on each side of the cluster for grid_box (Å)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = yaml.safe_load((HERE.parent / "configs" / "mpnn_acac.yaml").read_text())["model"]
    for n in (int(s) for s in args.sizes.split(",")):
        atoms = acac_molecule() if n <= 15 else liquid_box(max(1, round(n / 15)))[0]
        atoms.pbc = False
        atoms.cell = np.zeros((3, 3))
        extent = float(np.linalg.norm(atoms.positions - atoms.positions.mean(0), axis=1).max() * 2)
        box = extent + 2 * args.range
        variants = {
            "local": None,
            "real_space": {"name": "ewald"},
            "grid": {"name": "ewald", "aperiodic": "grid", "grid_box": box},
        }
        models = {}
        for name, long_range in variants.items():
            torch.manual_seed(0)
            models[name] = build_model(
                {"elements": ["H", "C", "O"], **base, "long_range": long_range}, dtype=torch.float64
            ).eval()
        graph = Batch.from_data_list([AtomicGraph.from_atoms(atoms, models["local"].r_max, dtype=torch.float64)])
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(graph, compute_forces=True)
                times[name].append(time.perf_counter() - start)
        med = {k: float(np.median(v)) for k, v in times.items()}
        record = {
            "benchmark": "ewald_aperiodic_cost",
            "n_atoms": len(atoms),
            "extent_A": extent,
            "grid_box_A": box,
            "threads": args.threads,
            "dtype": "float64",
            "model": "mpnn_acac + ewald defaults",
            "median_s": med,
            "overhead_real_space": med["real_space"] / med["local"] - 1,
            "overhead_grid": med["grid"] / med["local"] - 1,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        print(json.dumps(record), flush=True)
        with open(HERE / "results" / "ewald.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
