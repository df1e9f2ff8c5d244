"""Ship a trained model: copy it into molnet/pretrained/, evaluate it, record it in registry.json.

    python tools/register_pretrained.py --name mace-acac --run runs/mace_acac \
        --test ../shared/data/acac/test_MD_300K.xyz --training-data "BOTNet AcAc train_300K (450 train / 50 valid)"
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import molnet
from molnet.pretrained.registry import PRETRAINED_DIR, REGISTRY_FILE, sha256_of
from molnet.workflows.evaluate import evaluate_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--run", required=True, help="run folder of `molnet train`")
    parser.add_argument("--test", required=True, help="held-out test file")
    parser.add_argument("--training-data", required=True)
    parser.add_argument("--description", default="")
    args = parser.parse_args()

    source = Path(args.run) / "model.safetensors"
    target = PRETRAINED_DIR / f"{args.name}.safetensors"
    shutil.copyfile(source, target)
    model = molnet.load_model(target, dtype="float64")
    metrics = evaluate_file(model, args.test, plot=Path(args.run) / f"{args.name}_parity.png")
    entry = {
        "name": args.name,
        "family": model.config["name"],
        "elements": model.elements,
        "training_data": args.training_data,
        "sha256": sha256_of(target),
        "file": target.name,
        "size_bytes": target.stat().st_size,
        "metrics": {
            "test_file": Path(args.test).name,
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()},
        },
        "description": args.description,
    }
    entries = (
        [e for e in json.loads(REGISTRY_FILE.read_text()) if e["name"] != args.name] if REGISTRY_FILE.is_file() else []
    )
    REGISTRY_FILE.write_text(json.dumps(sorted(entries + [entry], key=lambda e: e["name"]), indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
