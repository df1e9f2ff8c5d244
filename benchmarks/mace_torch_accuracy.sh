#!/usr/bin/env bash
# Train mace-torch 0.3.16 with molnet's `mace-acac` recipe (configs/mace_acac.yaml), evaluate it on
# a test file with molnet's metric definitions, and print one JSON line (the accuracy record).
# `benchmarks/run.py accuracy` drives it (and appends the record to results/accuracy.jsonl).
#
# Usage (from the repository root):
#   bash benchmarks/mace_torch_accuracy.sh [EPOCHS] [WORK_DIR]      # defaults: 25, /tmp/mace_torch_acac
# Environment (defaults: the AcAc set): TRAIN_FILE, TEST_FILE, ISOLATED_FILE, DATASET, SEED.
#
# The recipe mirrors molnet's trainer: 10% of train.xyz held out for validation (seed 0), E0s from
# isolated_atoms.xyz, hidden irreps 32x0e+32x1o, max_ell 2, correlation 3, 2 interactions,
# r_max 5 Å, radial MLP [64,64,64], batch 5, Adam (amsgrad) lr 0.01, energy/forces weights 1/100,
# ReduceLROnPlateau (factor 0.8, patience 5), EMA 0.99, stage two (mace-torch's "SWA") from epoch
# int(0.72 * EPOCHS) with energy weight 1000 and lr 1e-3, float32. Everything runs on one thread.
set -euo pipefail

EPOCHS=${1:-25}
WORK=${2:-/tmp/mace_torch_acac}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
MACE_VENV="$HERE/.venv-mace"
TRAIN="${TRAIN_FILE:-$ROOT/molnet/data/bundled/acac/train.xyz}"
TEST="${TEST_FILE:-$ROOT/data/acac/test_MD_300K.xyz}"
ISOLATED="${ISOLATED_FILE:-$ROOT/molnet/data/bundled/acac/isolated_atoms.xyz}"
DATASET="${DATASET:-acac}"
SEED="${SEED:-0}"
START_SWA=$(python3 -c "print(int(0.72 * $EPOCHS))")
NAME="${DATASET}_e${EPOCHS}_s${SEED}"

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1   # e3nn 0.4.4 loads its constants with the pre-2.6 default

mkdir -p "$WORK"
# E0s as mace-torch's dict string {Z: E}, read from the isolated-atom file, for the elements of the
# training set only (mace-torch sizes its element table by the E0s and the one-hot by the data).
E0S=$("$MACE_VENV/bin/python" - "$ISOLATED" "$TRAIN" <<'EOF'
import sys
from ase.io import read
present = {int(z) for a in read(sys.argv[2], ":") for z in a.numbers}
print({int(a.numbers[0]): float(a.get_potential_energy()) for a in read(sys.argv[1], ":") if int(a.numbers[0]) in present})
EOF
)

ARGS=(
  --name "$NAME" --work_dir "$WORK" --seed "$SEED" --device cpu --default_dtype float32
  --train_file "$TRAIN" --valid_fraction 0.1 --E0s "$E0S"
  --energy_key energy --forces_key forces
  --model ScaleShiftMACE --hidden_irreps "32x0e+32x1o" --max_ell 2 --correlation 3
  --num_interactions 2 --r_max 5.0 --num_radial_basis 8 --num_cutoff_basis 5
  --radial_MLP "[64, 64, 64]" --MLP_irreps 16x0e --gate silu
  --batch_size 5 --valid_batch_size 10 --lr 0.01 --amsgrad --optimizer adam
  --loss weighted --energy_weight 1.0 --forces_weight 100.0
  --scheduler ReduceLROnPlateau --lr_factor 0.8 --scheduler_patience 5
  --ema --ema_decay 0.99
  --swa --start_swa "$START_SWA" --swa_energy_weight 1000.0 --swa_forces_weight 100.0 --swa_lr 0.001
  --max_num_epochs "$EPOCHS" --patience 1000 --eval_interval 1 --error_table PerAtomMAE
  --plot False --num_workers 0 --save_cpu
)

echo "mace_run_train ${ARGS[*]}" > "$WORK/$NAME.cmd"
T0=$(date +%s.%N)
"$MACE_VENV/bin/mace_run_train" "${ARGS[@]}" > "$WORK/$NAME.train.log" 2>&1 || {
  echo "mace_run_train failed; last lines of $WORK/$NAME.train.log:" >&2
  tail -n 30 "$WORK/$NAME.train.log" >&2
  exit 1
}
T1=$(date +%s.%N)
WALL=$(python3 -c "print(round($T1 - $T0, 1))")

MODEL="$WORK/${NAME}_stagetwo.model"
[ -f "$MODEL" ] || MODEL="$WORK/$NAME.model"

# Evaluate with mace-torch's ASE calculator (float64 inference of the float32-trained weights,
# as molnet evaluates its checkpoints in float64) and molnet's metric definitions.
"$MACE_VENV/bin/python" - "$MODEL" "$TEST" "$WALL" "$EPOCHS" "$START_SWA" "$SEED" "$ROOT" "$WORK/$NAME.cmd" "$TRAIN" "$DATASET" <<'EOF'
import json, os, sys, time, platform
import numpy as np
from ase.io import read
from mace.calculators import MACECalculator

model, test, wall, epochs, start_swa, seed, root, cmdfile, train, dataset = sys.argv[1:]
import importlib.util
spec = importlib.util.spec_from_file_location("metrics", os.path.join(root, "molnet", "analysis", "metrics.py"))
metrics = importlib.util.module_from_spec(spec); spec.loader.exec_module(metrics)

calc = MACECalculator(model_paths=model, device="cpu", default_dtype="float64")
frames = read(test, ":")
e_ref, e_pred, n_at, f_ref, f_pred = [], [], [], [], []
t0 = time.perf_counter()
for a in frames:
    e_ref.append(a.get_potential_energy()); f_ref.append(a.get_forces().copy()); n_at.append(len(a))
    b = a.copy(); b.calc = calc
    e_pred.append(b.get_potential_energy()); f_pred.append(b.get_forces())
t_eval = time.perf_counter() - t0
import torch, e3nn
sums = metrics.ErrorSums()
sums.add(torch.tensor(e_pred), torch.tensor(e_ref), torch.tensor(n_at), torch.ones(len(e_ref), dtype=torch.bool),
         torch.from_numpy(np.concatenate(f_pred)), torch.from_numpy(np.concatenate(f_ref)), torch.ones(sum(n_at), dtype=torch.bool))
m = sums.metrics()
from importlib.metadata import version
rec = {
    "kind": "accuracy", "package": "mace-torch", "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    "dataset": dataset, "train_file": os.path.relpath(train, os.path.dirname(root)), "valid_fraction": 0.1,
    "test_file": os.path.relpath(test, os.path.dirname(root)), "model_file": model,
    "epochs": int(epochs), "seed": int(seed), "threads": 1, "load_avg": list(os.getloadavg()),
    "train_wall_s": float(wall), "eval_wall_s": round(t_eval, 2), "eval_dtype": "float64",
    "hyper": {"model": "ScaleShiftMACE", "hidden_irreps": "32x0e+32x1o", "max_ell": 2, "correlation": 3,
              "num_interactions": 2, "r_max": 5.0, "num_bessel": 8, "num_polynomial_cutoff": 5,
              "radial_MLP": [64, 64, 64], "MLP_irreps": "16x0e", "batch_size": 5, "lr": 0.01, "amsgrad": True,
              "energy_weight": 1.0, "forces_weight": 100.0, "scheduler": "ReduceLROnPlateau", "lr_factor": 0.8,
              "scheduler_patience": 5, "ema_decay": 0.99, "stage_two_start_epoch": int(start_swa),
              "stage_two_energy_weight": 1000.0, "stage_two_forces_weight": 100.0, "stage_two_lr": 0.001,
              "train_dtype": "float32"},
    "command": open(cmdfile).read().strip(),
    "versions": {"mace-torch": version("mace-torch"), "torch": torch.__version__, "e3nn": e3nn.__version__},
    "machine": {"cores": os.cpu_count(), "system": platform.platform()},
    "test": m,
}
print(json.dumps(rec))
EOF
