"""The main job on the bundled default: train briefly, evaluate, run MD with the result."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from molnet.data import bundled_path

log = logging.getLogger("molnet.workflows.demo")


def run_demo(output: str | Path = "demo_out", epochs: int = 30, md_steps: int = 1000) -> dict:
    """Train a small MACE on 200 bundled AcAc structures for ``epochs`` epochs, evaluate it on the
    bundled test set (parity plot), then run ``md_steps`` of NVT at 300 K with the ASE calculator.

    Everything lands in ``output``: the run folder, ``parity.png``, ``md.extxyz``, ``md.png`` and
    ``summary.json``. All numbers are computed here; nothing is precomputed.
    """
    from ase.io import read

    from molnet.analysis.plots import md_trace
    from molnet.calculators import MolNetCalculator
    from molnet.models.io import load_model_file
    from molnet.train.cli import main as train_main
    from molnet.workflows.evaluate import evaluate_file
    from molnet.workflows.md import run_md

    output = Path(output)
    run_dir = output / "run"
    log.info("step 1/3: training a small MACE on the bundled AcAc set (%d epochs)", epochs)
    train_main(
        [
            "--run_dir",
            str(run_dir),
            "--trainer.max_epochs",
            str(epochs),
            "--data.train_index",
            ":200",
            "--data.batch_size",
            "5",
            "--training.lr",
            "0.01",
            "--training.stage_two_start",
            "0.7",
            "--model",
            json.dumps(
                {
                    "name": "mace",
                    "num_channels": 16,
                    "max_L": 1,
                    "correlation": 3,
                    "num_interactions": 2,
                    "max_ell": 2,
                    "radial_MLP": [32, 32],
                }
            ),
        ]
    )
    model_file = run_dir / "model.safetensors"
    log.info("step 2/3: evaluating %s on the bundled AcAc test set", model_file)
    model = load_model_file(model_file, dtype=None)
    metrics = evaluate_file(model, bundled_path("acac", "test"), plot=output / "parity.png")
    log.info(
        "test metrics: %s", json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in metrics.items()})
    )
    log.info("step 3/3: %d steps of NVT MD at 300 K with the trained model", md_steps)
    atoms = read(bundled_path("acac", "test"), index=0)
    atoms.calc = MolNetCalculator(model_file, dtype="float64")
    md_log = run_md(  # the demo's own output of an earlier run is replaced
        atoms,
        md_steps,
        temperature_K=300,
        timestep_fs=0.5,
        ensemble="nvt",
        trajectory=output / "md.extxyz",
        existing="overwrite",
    )
    md_trace(md_log.time_fs, md_log.total_energy, md_log.temperature, output / "md.png")
    summary = {
        "test_metrics": metrics,
        "md_steps": md_steps,
        "md_final_temperature_K": md_log.temperature[-1],
        "outputs": sorted(str(p) for p in output.iterdir()),
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("done: see %s (parity.png, md.png, md.extxyz, run/learning_curve.png)", output)
    return summary
