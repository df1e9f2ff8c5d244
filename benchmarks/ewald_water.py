"""Long-range benchmark on the periodic water box: test errors of models trained with and without Ewald.

    python benchmarks/ewald_water.py --model local=runs/water32_local_e30/model.safetensors \
        --model ewald_k2=runs/water32_ewald_k2_e30/model.safetensors \
        --model local_short_range=runs/water32_local_sr/model.safetensors@/tmp/water_split/test_short_range.xyz

``label=path`` evaluates on ``longrange/water32/test.xyz``; ``label=path@file`` on another test
file (the short-range labels of ``water_split.py`` for a model trained on them). Prints one JSON
object per model (energy, force and stress errors, the model's long-range settings and training
record, ms per energy+forces+stress call on the 96-atom box) and appends it to
``benchmarks/results/ewald.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import molnet
from molnet.data import read_dataset
from molnet.models.inference import predict
from molnet.models.io import read_metadata
from molnet.workflows.evaluate import evaluate_file

DATA = Path(__file__).resolve().parents[1] / "data" / "longrange" / "water32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="label=path[@test file] of a model file")
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    default_test = Path(args.data) / "test.xyz"
    box = read_dataset(default_test, require=("energy", "forces"))[:1]
    for spec in args.model:
        label, rest = spec.split("=", 1)
        path, _, test_file = rest.partition("@")
        test_file = Path(test_file) if test_file else default_test
        model = molnet.load_model(path, dtype="float64")
        test = evaluate_file(model, test_file, progress=False)
        predict(model, box)  # warm-up
        start = time.perf_counter()
        for _ in range(10):
            predict(model, box)
        training = read_metadata(path).get("training", {})
        record = {
            "benchmark": "ewald_water32",
            "model": label,
            "file": path,
            "test_file": str(test_file),
            "long_range": model.config.get("long_range"),
            "training": training,
            "test": test,
            "ms_per_call_96_atoms": 100 * (time.perf_counter() - start),
        }
        print(json.dumps(record))
        with open(Path(__file__).parent / "results" / "ewald.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
