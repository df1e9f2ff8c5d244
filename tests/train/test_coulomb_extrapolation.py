"""A Coulomb model trained on the ion pair at 3–20 Å follows the reference tail beyond 20 Å; a
local model cannot (``benchmarks/coulomb_variants.py --system ionpair`` records all four variants with Ewald)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).parents[2]
DATA = ROOT / "data" / "longrange" / "ionpair"


def _beyond_20A_error_meV(tmp_path: Path, label: str, long_range) -> float:
    """Train ``configs/mace_ewald_ionpair.yaml`` with ``long_range`` for 15 epochs; the largest
    error of ΔE(R) = E(R) − E(20 Å) on the rigid scan beyond 20 Å, meV."""
    import yaml

    import molnet
    from molnet.data import keys, read_dataset
    from molnet.models.inference import predict

    config = ROOT / "configs" / "mace_ewald_ionpair.yaml"
    model = {**yaml.safe_load(config.read_text())["model"], "long_range": long_range}
    run_dir = tmp_path / label
    cmd = [sys.executable, "-m", "molnet.cli", "train", "--config", str(config), "--run_dir", str(run_dir)]
    cmd += ["--trainer.max_epochs", "15", "--trainer.enable_progress_bar", "false", "--model", json.dumps(model)]
    cmd += ["--data.test_file", "null"]
    result = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = molnet.load_model(run_dir / "model.safetensors", dtype=torch.float64)
    curve = read_dataset(DATA / "curve.xyz", require=("energy", "forces"))
    separation = np.array([a.info["separation"] for a in curve])
    reference = np.array([a.info[keys.REF_ENERGY] for a in curve])
    energy = np.array([p["energy"] for p in predict(trained, curve)])
    anchor = int(np.argmin(np.abs(separation - 20.0)))
    beyond = separation > separation[anchor] + 1e-9
    assert beyond.sum() >= 5 and separation.max() >= 25.0
    error = np.abs((energy - energy[anchor]) - (reference - reference[anchor]))
    return float(1000 * error[beyond].max())


@pytest.mark.slow
def test_coulomb_model_extrapolates_the_ion_pair_tail_and_a_local_model_does_not(tmp_path):
    coulomb = _beyond_20A_error_meV(tmp_path, "coulomb", {"name": "coulomb", "sigma": 1.0})
    local = _beyond_20A_error_meV(tmp_path, "local", None)
    assert coulomb < 20.0 < local, (coulomb, local)
