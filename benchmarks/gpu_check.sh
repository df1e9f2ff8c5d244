#!/usr/bin/env bash
# GPU check of molnet-MACE: cuequivariance and torch.compile against the plain path, then speed
# against mace-torch (plain and with its cuequivariance conversion), on one CUDA device.
#
# From the repository root, on a machine with an NVIDIA GPU and a CUDA build of PyTorch in
# $PYTHON (default python3):
#
#     bash benchmarks/gpu_check.sh
#
# Packages go into two target folders (molnet's and mace-torch's, whose e3nn pins differ):
#   - with a package index: pip installs them (molnet's dependencies, cuequivariance-torch,
#     cuequivariance-ops-torch-cu$CUDA_MAJOR, mace-torch 0.3.16);
#   - without one: wheels carried in .whl/molnet and .whl/mace (downloaded elsewhere with
#     `pip download --only-binary=:all: --python-version 3.12 ...`) are installed offline.
# SIZES (default 1000,10000; 100000 adds minutes of structure building) and DTYPES choose the runs.
# Records: benchmarks/results/gpu.jsonl (agreement, molnet's speed-ups) and speed.jsonl (device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/molnet-gpu}
SIZES=${SIZES:-1000,10000}
DTYPES=${DTYPES:-float32,float64}
THREADS=${THREADS:-8}

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'"
CUDA_MAJOR=$("$PYTHON" -c "import torch; print(torch.version.cuda.split('.')[0])")

install() {  # install <target folder> <wheel folder> <requirements...>
    local target=$1 wheels=$2
    shift 2
    if [ -d "$wheels" ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$target" "$wheels"/*.whl
    else
        "$PYTHON" -m pip install -q --no-compile --target "$target" "$@"
    fi
}

mkdir -p "$SITE"
install "$SITE/molnet" .whl/molnet "e3nn==0.6.0" ase vesin safetensors "cuequivariance-torch" \
    "cuequivariance-ops-torch-cu${CUDA_MAJOR}"
install "$SITE/mace" .whl/mace "mace-torch==0.3.16" "cuequivariance-torch" "cuequivariance-ops-torch-cu${CUDA_MAJOR}"

# one interpreter per side: the benchmark's workers drop PYTHONPATH, so wrappers set it
for side in molnet mace; do
    extra=$([ "$side" = molnet ] && echo ":$PWD" || echo "")
    printf '#!/bin/sh\nPYTHONPATH=%s%s exec %s "$@"\n' "$SITE/$side" "$extra" "$(command -v "$PYTHON")" >"$SITE/$side-python"
    chmod +x "$SITE/$side-python"
done

echo "== agreement and molnet's own speed-ups (cuequivariance, torch.compile)"
"$SITE/molnet-python" benchmarks/gpu_check.py --device cuda --sizes "${SIZES%%,*}" --dtypes "$DTYPES" --compile

echo "== speed against mace-torch"
common=(--device cuda --threads "$THREADS" --sizes "$SIZES" --dtypes "$DTYPES" --rounds 3 --warmup 2
    --molnet-python "$SITE/molnet-python" --mace-python "$SITE/mace-python")
"$SITE/molnet-python" benchmarks/run.py speed "${common[@]}"
"$SITE/molnet-python" benchmarks/run.py speed "${common[@]}" --molnet-cueq --mace-cueq
"$SITE/molnet-python" benchmarks/run.py speed "${common[@]}" --molnet-compile
