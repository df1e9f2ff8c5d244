"""A foundation-shaped mace-torch model and its molnet import, timed side by side on the same file.

Run with molnet's interpreter from the repository root (needs ``bash benchmarks/mace_env.sh``)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mace_import_speed.py [--sizes 64 512] [--dtypes float64 float32] [--calls 3] [--rounds 2] [--no-save]

mace-torch (in ``benchmarks/.venv-mace``) builds a random-weight ``ScaleShiftMACE`` of
MACE-MP-0-medium's shape: 89 elements, 128x0e+128x1o, max_ell 3, correlation 3, 2 layers,
r_max 6 Å, 10 Bessel functions, radial MLP [64, 64, 64], ZBL pair repulsion.
``molnet import-mace`` converts that file. Each side then evaluates
energy, forces and stress through its own ASE calculator (mace-torch's ``MACECalculator``, molnet's
``MolNetCalculator``) on rattled rocksalt supercells with eight elements (64, 512, … atoms), in its
own process, one thread; the two alternate per round, order swapped each round. Reported: seconds
per call (median of the calls after one warm-up), the ratio mace-torch/molnet per round and its
median, and each process's peak RSS. One JSON line per (size, dtype) is printed and appended to
``benchmarks/results/mace_import.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MACE_PYTHON = HERE / ".venv-mace" / "bin" / "python"
ELEMENTS_IN_CELL = ["Li", "Na", "K", "Mg", "O", "F", "Cl", "S"]
SHAPE = {
    "num_channels": 128,
    "max_L": 1,
    "max_ell": 3,
    "correlation": 3,
    "num_interactions": 2,
    "r_max": 6.0,
    "num_bessel": 10,
    "num_polynomial_cutoff": 5,
    "radial_MLP": [64, 64, 64],
    "avg_num_neighbors": 40.0,
}

BUILD = r"""
import sys, numpy as np, torch
from e3nn import o3
from mace import modules
shape, path, dtype = __import__("json").loads(sys.argv[1]), sys.argv[2], getattr(torch, sys.argv[3])
torch.manual_seed(0); torch.set_default_dtype(dtype)
c = shape["num_channels"]
model = modules.ScaleShiftMACE(
    r_max=shape["r_max"], num_bessel=shape["num_bessel"], num_polynomial_cutoff=shape["num_polynomial_cutoff"],
    max_ell=shape["max_ell"], interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
    interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
    num_interactions=shape["num_interactions"], num_elements=89, hidden_irreps=o3.Irreps(f"{c}x0e+{c}x1o"),
    MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.random.default_rng(0).normal(-5, 2, 89),
    avg_num_neighbors=shape["avg_num_neighbors"], atomic_numbers=list(range(1, 90)), correlation=shape["correlation"],
    gate=modules.gate_dict["silu"], radial_MLP=shape["radial_MLP"], atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    pair_repulsion=True)
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
torch.save(model.eval(), path)
"""

TIME = r"""
import json, os, sys, time
import numpy as np, torch
sys.path.insert(0, "benchmarks")
from rss import peak_rss_mib
side, model_path, structure, dtype, calls = sys.argv[1:6]
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
import ase.io
atoms = ase.io.read(structure)
if side == "mace":
    from mace.calculators import MACECalculator
    atoms.calc = MACECalculator(model_paths=model_path, device="cpu", default_dtype=dtype)
else:
    from molnet.calculators import MolNetCalculator
    atoms.calc = MolNetCalculator(model_path, dtype=dtype)
rng = np.random.default_rng(0)
times = []
for k in range(int(calls) + 1):
    atoms.positions += rng.normal(0, 0.002, atoms.positions.shape)
    start = time.perf_counter()
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": times[1:], "peak_rss_mb": peak_rss_mib()}))
"""


def crystal(n_atoms: int, path: Path) -> Path:
    import ase.io
    import numpy as np
    from ase.build import bulk

    reps = round((n_atoms / 8) ** (1 / 3))
    atoms = bulk("NaCl", "rocksalt", a=5.0, cubic=True) * (reps, reps, reps)
    rng = np.random.default_rng(1)
    atoms.set_chemical_symbols(rng.choice(ELEMENTS_IN_CELL, len(atoms)))
    atoms.rattle(0.05, seed=2)
    ase.io.write(path, atoms)
    return path


def run_side(side: str, model: Path, structure: Path, dtype: str, calls: int) -> dict:
    python = str(MACE_PYTHON) if side == "mace" else sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    done = subprocess.run(
        [python, "-c", TIME, side, str(model), str(structure), dtype, str(calls)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy = False, None
    sys.path.insert(0, str(HERE))
    import run  # environment and record helpers

    from molnet.interop import import_mace
    from molnet.models.io import save_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for dtype in args.dtypes:
            mace_file = tmp / f"mp_medium_shape_{dtype}.model"
            built = subprocess.run(
                [str(MACE_PYTHON), "-c", BUILD, json.dumps(SHAPE), str(mace_file), dtype],
                env={**os.environ, "OMP_NUM_THREADS": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
                capture_output=True,
                text=True,
            )
            if built.returncode != 0:
                raise RuntimeError(f"building the mace-torch model failed:\n{built.stderr[-3000:]}")
            molnet_file = save_model(
                import_mace(mace_file, dtype=getattr(__import__("torch"), dtype)),
                tmp / f"mp_medium_shape_{dtype}.safetensors",
            )
            for size in args.sizes:
                structure = crystal(size, tmp / f"crystal_{size}.extxyz")
                sides: dict[str, list[dict]] = {"mace": [], "molnet": []}
                for r in range(args.rounds):
                    order = [("mace", mace_file), ("molnet", molnet_file)]
                    for side, model in order if r % 2 == 0 else order[::-1]:
                        sides[side].append(run_side(side, model, structure, dtype, args.calls))
                per_round = {s: [statistics.median(x["seconds"]) for x in v] for s, v in sides.items()}
                ratios = [m / n for m, n in zip(per_round["mace"], per_round["molnet"])]
                run.emit(
                    "mace_import",
                    {
                        "shape": {**SHAPE, "elements": 89, "zbl": True},
                        "dtype": dtype,
                        "n_atoms": size,
                        "calls_per_round": args.calls,
                        "mace_s_per_call": per_round["mace"],
                        "molnet_s_per_call": per_round["molnet"],
                        "speedup_molnet_over_mace": statistics.median(ratios),
                        "speedup_rounds": ratios,
                        "mace_peak_rss_mb": max(x["peak_rss_mb"] for x in sides["mace"]),
                        "molnet_peak_rss_mb": max(x["peak_rss_mb"] for x in sides["molnet"]),
                    },
                    args,
                )


if __name__ == "__main__":
    main()
