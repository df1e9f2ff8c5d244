"""Cost of the Ewald block in periodic boxes: MACE with and without it, per energy+forces+stress call.

    python benchmarks/ewald_periodic_cost.py [--sizes 96,768] [--k-cutoffs 1,2,3] [--threads 1]

Structures: the water box of ``longrange/water32`` (96 atoms) and its 2×2×2 supercell (768), or,
for other sizes, the liquid AcAc boxes of ``run.py speed`` (e.g. 600). The model is the water
benchmark's MACE (32 channels, L=1, max_ell 2, ν=3, 2 layers, r_max 5 Å, random weights), local
and with ``long_range: {name: ewald, k_cutoff: k}``. Calls alternate between the variants in every
round; the median per variant and its overhead over the local model are printed as JSON and
appended to ``results/ewald.jsonl`` (with the number of k vectors).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
from ase.io import read
from torch_geometric.data import Batch

from molnet.data import AtomicGraph
from molnet.models import build_model
from molnet.nn.ewald import reciprocal_lattice_vectors

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import liquid_box, molnet_commit  # noqa: E402  (the speed benchmark's structures and commit)

WATER = HERE.parents[0] / "data" / "longrange" / "water32" / "test.xyz"
MODEL = {
    "name": "mace",
    "elements": ["H", "C", "O"],
    "r_max": 5.0,
    "num_channels": 32,
    "max_L": 1,
    "max_ell": 2,
    "correlation": 3,
    "num_interactions": 2,
    "avg_num_neighbors": 20.0,
}


def structure(n: int):
    if n in (96, 768):
        atoms = read(WATER, 0)
        return atoms if n == 96 else atoms.repeat(2)
    return liquid_box(max(1, round(n / 15)))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="96,768")
    parser.add_argument("--k-cutoffs", default="1,2,3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    variants = {"local": None, **{f"ewald_k{k}": float(k) for k in args.k_cutoffs.split(",")}}
    models = {}
    for name, k in variants.items():
        torch.manual_seed(0)
        config = {**MODEL, "long_range": None if k is None else {"name": "ewald", "k_cutoff": k}}
        models[name] = build_model(config, dtype=dtype).eval()
    for n in (int(s) for s in args.sizes.split(",")):
        atoms = structure(n)
        graph = Batch.from_data_list([AtomicGraph.from_atoms(atoms, MODEL["r_max"], dtype=dtype)])
        times: dict[str, list[float]] = {name: [] for name in models}
        for name, model in models.items():  # warm-up
            model(graph, compute_forces=True, compute_stress=True)
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(graph, compute_forces=True, compute_stress=True)
                times[name].append(time.perf_counter() - start)
        medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        cell = torch.tensor(atoms.cell[:], dtype=dtype).unsqueeze(0)
        for name, k in variants.items():
            record = {
                "benchmark": "ewald_periodic_cost",
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "variant": name,
                "k_cutoff": k,
                "n_atoms": len(atoms),
                "dtype": args.dtype,
                "threads": args.threads,
                "n_k_vectors": 0 if k is None else len(reciprocal_lattice_vectors(cell, k)[0]),
                "median_s": medians[name],
                "overhead_over_local": medians[name] / medians["local"] - 1,
                "molnet_commit": molnet_commit(),
            }
            print(json.dumps(record))
            with open(HERE / "results" / "ewald.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
