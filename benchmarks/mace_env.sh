#!/usr/bin/env bash
# Create benchmarks/.venv-mace: the reference mace-torch in its own virtual environment.
#
# mace-torch pins e3nn 0.4.4, which cannot live beside molnet's e3nn 0.6, so the anchor side of
# the benchmarks runs in this separate venv. torch is installed first, at the same version as
# molnet's venv (2.13.0, CPU build, taken from the local wheel cache), so that both sides run the
# same torch and pip does not pull a CUDA build when it resolves mace-torch's requirements.
#
# Usage: bash benchmarks/mace_env.sh            (idempotent; reinstalls nothing when up to date)
#        MACE_VERSION=0.3.16 TORCH_VERSION=2.13.0 PYTHON=python3.11 bash benchmarks/mace_env.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${HERE}/.venv-mace"
PYTHON="${PYTHON:-python3}"
MACE_VERSION="${MACE_VERSION:-0.3.16}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x "${VENV}/bin/python" ]; then
    "${PYTHON}" -m venv "${VENV}"
fi
# Keep pip's output short: drop its notes about local index folders that hold no such package.
pip_install() {
    "${VENV}/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
pip_install "torch==${TORCH_VERSION}"
pip_install "mace-torch==${MACE_VERSION}" "torch==${TORCH_VERSION}"
# e3nn 0.4.4 reads its constants with torch.load's pre-2.6 default; the workers set this too.
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "${VENV}/bin/python" - <<PY
import e3nn, mace, torch
from e3nn import o3
from mace import __version__ as v
from mace import modules
print(f"mace-torch {v}, e3nn {e3nn.__version__}, torch {torch.__version__} in ${VENV}")
assert torch.__version__.startswith("${TORCH_VERSION}"), torch.__version__
PY
