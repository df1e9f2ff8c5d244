"""Long-range benchmark: the same model trained with and without the Ewald block on the ion pair.

    python benchmarks/ewald_ionpair.py --model local=runs/ionpair_mace/model.safetensors \
        --model ewald=runs/ionpair_mace_ewald/model.safetensors [--plot docs/images/ionpair_curve.png]

Prints one JSON object per model (test-split errors, errors along the rigid distance scan
``curve.xyz``, and time per energy+forces call on the 16-atom pair) and appends them to
``benchmarks/results/ewald.jsonl``; the plot shows the interaction curve E(R) − E(R_max).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import molnet
from molnet.data import keys, read_dataset
from molnet.models.inference import predict
from molnet.workflows.evaluate import evaluate_file

DATA = Path(__file__).resolve().parents[1] / "data" / "longrange" / "ionpair"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="label=path of a model file")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    data = Path(args.data)
    curve = read_dataset(data / "curve.xyz", require=("energy", "forces"))
    separation = np.array([a.info["separation"] for a in curve])
    reference = np.array([a.info[keys.REF_ENERGY] for a in curve])
    curves = {"reference (GFN2-xTB)": reference - reference[-1]}
    for spec in args.model:
        label, path = spec.split("=", 1)
        model = molnet.load_model(path, dtype="float64")
        test = evaluate_file(model, data / "test.xyz", progress=False)
        preds = predict(model, curve, batch_size=32)
        energy = np.array([p["energy"] for p in preds])
        forces = np.concatenate([p["forces"] for p in preds])
        ref_forces = np.concatenate([a.arrays[keys.REF_FORCES] for a in curve])
        curves[label] = energy - energy[-1]
        start = time.perf_counter()
        for _ in range(20):
            predict(model, curve[:1])
        far = separation > 10.0
        test_structures = read_dataset(data / "test.xyz", require=("energy", "forces"))
        test_preds = predict(model, test_structures, batch_size=32)
        bins = {}
        for lo, hi in ((0.0, 5.0), (5.0, 10.0), (10.0, 20.01)):
            idx = [i for i, a in enumerate(test_structures) if lo <= a.info["separation"] < hi]
            if idx:
                df = np.concatenate([test_preds[i]["forces"] - test_structures[i].arrays[keys.REF_FORCES] for i in idx])
                bins[f"{lo:g}-{hi:.0f}A"] = {"n": len(idx), "forces_mae_meV_per_A": 1000 * float(np.mean(np.abs(df)))}
        record = {
            "benchmark": "ewald_ionpair",
            "model": label,
            "file": path,
            "long_range": model.config.get("long_range"),
            "test": test,
            "curve_energy_mae_meV": 1000 * float(np.mean(np.abs((energy - energy[-1]) - (reference - reference[-1])))),
            "curve_forces_mae_meV_per_A": 1000 * float(np.mean(np.abs(forces - ref_forces))),
            "curve_energy_mae_meV_R_gt_10A": 1000
            * float(np.mean(np.abs(((energy - energy[-1]) - (reference - reference[-1]))[far]))),
            "test_forces_mae_by_separation": bins,
            "ms_per_call_16_atoms": 1000 * (time.perf_counter() - start) / 20,
        }
        print(json.dumps(record))
        results = Path(__file__).parent / "results" / "ewald.jsonl"
        with open(results, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    if args.plot:
        from molnet.analysis.plots import plt

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for label, values in curves.items():
            ax.plot(separation, values, label=label, lw=2 if label.startswith("reference") else 1.5)
        ax.set(xlabel="ion separation R (Å)", ylabel="E(R) − E(25 Å) (eV)", title="CH3NH3+ / CF3SO3− rigid scan")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
