"""PONITA grid-resolution study: rotation residual and cost per energy+forces call vs ``num_ori``.

For each grid size the same weights (one per seed: no parameter depends on ``num_ori``) are
evaluated on acac configurations and on randomly rotated copies; the residual is the grid's
quadrature error. Prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/ponita_grid.py [--grids 8 16 20 32 64] [--seeds 3]

Untrained weights: a trained model has sharper kernels and can show a larger residual; rerun on
a trained model with ``--model path.safetensors``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation
from torch_geometric.loader import DataLoader

import molnet
from molnet.data import AtomicGraph, load_bundled
from molnet.models import build_model


def _batch(model, structures: list[Atoms], dtype: torch.dtype):
    graphs = [AtomicGraph.from_atoms(a, model.r_max, dtype=dtype) for a in structures]
    return next(iter(DataLoader(graphs, batch_size=len(graphs))))


def residuals(model, structures: list[Atoms], rotations: list[np.ndarray]) -> dict[str, float]:
    """Mean |ΔE| (meV, and meV/atom), RMS force error (meV/Å) and ‖ΔF‖/‖F‖ over structures × rotations."""
    ref = model(_batch(model, structures, torch.float64))
    de, df_rms, df_rel = [], [], []
    for rot in rotations:
        moved = [Atoms(a.numbers, a.positions @ rot.T) for a in structures]
        new = model(_batch(model, moved, torch.float64))
        de.append((new["energy"] - ref["energy"]).abs().numpy())
        delta = new["forces"] - ref["forces"] @ torch.tensor(rot).T
        df_rms.append(float(delta.square().mean().sqrt()))
        df_rel.append(float(delta.norm() / ref["forces"].norm()))
    n_atoms = len(structures[0])
    return {
        "energy_mae_meV": 1e3 * float(np.mean(de)),
        "energy_per_atom_mae_meV": 1e3 * float(np.mean(de)) / n_atoms,
        "forces_rmse_meV_per_A": 1e3 * float(np.mean(df_rms)),
        "forces_relative": float(np.mean(df_rel)),
        "forces_rms_meV_per_A": 1e3 * float(ref["forces"].square().mean().sqrt()),
    }


def time_call(model, atoms: Atoms, dtype: torch.dtype, repeats: int) -> float:
    """Median wall time (ms) of one energy+forces call on one structure."""
    batch = _batch(model, [atoms], dtype)
    model(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16, 20, 32, 64])
    parser.add_argument("--seeds", type=int, default=3, help="weight seeds (ignored with --model)")
    parser.add_argument("--rotations", type=int, default=3)
    parser.add_argument("--configs", type=int, default=5, help="acac test configurations")
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--basis-dim", type=int, default=256)
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--model", help="a trained PONITA model file: study its weights instead")
    args = parser.parse_args()

    structures = [Atoms(a.numbers, a.positions) for a in load_bundled("acac", "test")[: args.configs]]
    rotations = [Rotation.random(random_state=100 + k).as_matrix() for k in range(args.rotations)]
    if args.model:
        trained = molnet.load_model(args.model, dtype=torch.float64)
        config, states = dict(trained.config), [trained.state_dict()]
    else:
        config = {
            "name": "ponita",
            "elements": ["H", "C", "O"],
            "r_max": 5.0,
            "hidden_dim": args.hidden_dim,
            "num_layers": args.num_layers,
            "basis_dim": args.basis_dim,
        }
        states = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            states.append(build_model({**config, "num_ori": 8}, dtype=torch.float64).state_dict())

    rows = []
    for num_ori in args.grids:
        cfg = {**copy.deepcopy(config), "num_ori": num_ori}
        per_seed = []
        for state in states:
            model = build_model(cfg, dtype=torch.float64).eval()
            model.load_state_dict({k: v for k, v in state.items() if k != "body.grid"}, strict=False)
            per_seed.append(residuals(model, structures, rotations))
        row = {"num_ori": num_ori, **{k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]}}
        model32 = build_model(cfg, dtype=torch.float32).eval()
        row["ms_per_call_float64"] = time_call(model, structures[0], torch.float64, args.timing_repeats)
        row["ms_per_call_float32"] = time_call(model32, structures[0], torch.float32, args.timing_repeats)
        rows.append(row)
    print(
        json.dumps(
            {
                "benchmark": "ponita_grid",
                "structure": "acac (15 atoms), bundled test split",
                "weights": args.model or f"untrained, {len(states)} seeds",
                "config": {k: v for k, v in config.items() if k != "elements"},
                "threads": torch.get_num_threads(),
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
