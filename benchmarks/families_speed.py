"""Energy + forces time per call of every molnet family at its AcAc training size.

    python benchmarks/families_speed.py [--sizes 15,150,600] [--dtype float64] [--threads 1]

Families use the model section of ``configs/<family>_acac.yaml`` (random weights) on the same
structures as ``run.py speed`` (the AcAc molecule and liquid AcAc boxes). The calls alternate
between families in every round, so machine noise affects all alike; the median per family is
printed as JSON (and appended to ``results/families_speed.jsonl``) with its ratio to molnet-MACE.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from torch_geometric.data import Batch

from molnet.data import AtomicGraph
from molnet.models import build_model

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("mace", "ponita", "csmpn", "mpnn")


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from run import acac_molecule, liquid_box  # the structures of the speed benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="15,150,600")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    models = {}
    for family in FAMILIES:
        config = yaml.safe_load((ROOT / "configs" / f"{family}_acac.yaml").read_text())["model"]
        torch.manual_seed(0)
        models[family] = build_model(
            {"elements": ["H", "C", "O"], "avg_num_neighbors": 12.16, **config}, dtype=dtype
        ).eval()
    for n in (int(s) for s in args.sizes.split(",")):
        atoms = acac_molecule() if n <= 15 else liquid_box(max(1, round(n / 15)))[0]
        times: dict[str, list[float]] = {f: [] for f in FAMILIES}
        for _ in range(args.rounds):
            for family, model in models.items():
                start = time.perf_counter()
                graph = Batch.from_data_list([AtomicGraph.from_atoms(atoms, model.r_max, dtype=dtype)])
                model(graph, compute_forces=True)
                times[family].append(time.perf_counter() - start)
        medians = {f: sorted(t)[len(t) // 2] for f, t in times.items()}
        for family in FAMILIES:
            record = {
                "benchmark": "families_speed",
                "family": family,
                "n_atoms": len(atoms),
                "dtype": args.dtype,
                "threads": args.threads,
                "config": models[family].config,
                "median_s": medians[family],
                "time_ratio_to_mace": medians[family] / medians["mace"],
            }
            print(json.dumps(record))
            with open(Path(__file__).parent / "results" / "families_speed.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
