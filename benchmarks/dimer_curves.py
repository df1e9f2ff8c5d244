"""Dimer dissociation curves (a smoothness check): model vs DFT for the ethanol dimers.

    python benchmarks/dimer_curves.py --model mace-ethanol --plot docs/images/ethanol_dimers.png

Reads ``ethanol/test_dimers.xyz`` (HH, HC, HO, CC, CO, OO at 0.35–… Å), evaluates the model in
float64 and plots E(r) for model and reference per pair; prints one JSON object per pair with
the reference and model energies (eV) relative to their values at the largest distance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import molnet
from molnet.data import keys, read_dataset
from molnet.models.inference import predict

DATA = Path(__file__).resolve().parents[1] / "data" / "ethanol" / "test_dimers.xyz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mace-ethanol")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--min-distance", type=float, default=0.5, help="skip closer dimers (molnet refuses < 0.1 Å)")
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    model = molnet.load_model(args.model, dtype="float64")
    frames = [a for a in read_dataset(args.data) if a.info["distance"] >= args.min_distance]
    pairs = sorted({a.info["config_type"] for a in frames})
    preds = predict(model, frames, batch_size=64)
    curves = {}
    for pair in pairs:
        idx = [i for i, a in enumerate(frames) if a.info["config_type"] == pair]
        idx.sort(key=lambda i: frames[i].info["distance"])
        r = np.array([frames[i].info["distance"] for i in idx])
        ref = np.array([frames[i].info[keys.REF_ENERGY] for i in idx])
        pred = np.array([preds[i]["energy"] for i in idx])
        curves[pair] = (r, ref - ref[-1], pred - pred[-1])
        print(
            json.dumps(
                {
                    "benchmark": "dimer_curves",
                    "model": args.model,
                    "pair": pair,
                    "distance_A": r.tolist(),
                    "reference_eV": curves[pair][1].tolist(),
                    "model_eV": curves[pair][2].tolist(),
                }
            )
        )
    if args.plot:
        from molnet.analysis.plots import plt

        fig, axes = plt.subplots(2, 3, figsize=(11, 6.5))
        for ax, pair in zip(axes.ravel(), pairs):
            r, ref, pred = curves[pair]
            ax.plot(r, ref, label="DFT", lw=2)
            ax.plot(r, pred, label=args.model, lw=1.5)
            ax.set(
                title=pair,
                xlabel="r (Å)",
                ylabel="E − E(r_max) (eV)",
                ylim=(min(ref.min(), pred.min()) - 0.5, max(5.0, 0)),
            )
            ax.grid(alpha=0.3)
        axes[0, 0].legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
