"""Where molnet-MACE's time goes: torch.profiler per module and per op, energy + forces.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_mace.py [--sizes 15 600 2400] [--foundation 512] [--whole] [--no-save]

Two shapes, random weights, float64, one thread:
  * mace-torch's default size (C=128, L=1, max_ell 3, ν=3, 2 layers, r_max 5 Å; 3 elements) on the
    AcAc molecule (15 atoms) and liquid AcAc boxes (``run.py``'s structures);
  * MACE-MP-0-medium's shape (89 elements, C=128, L=1, max_ell 3, ν=3, r_max 6 Å, ZBL) on a
    rattled eight-element rock-salt crystal.
Models evaluate as by default, in chunks of atoms (``--whole``: one neighbor table for all atoms,
``set_chunking(None)``). A block called inside a checkpointed chunk (large structures) is
recorded again when backward recomputes it, so its "forward" time includes the recomputation.
After one warm-up call, one call (energy and forces by autograd) runs under ``torch.profiler``.
Each top-level block's forward is wrapped in ``record_function``, so the forward is split per
module (an interaction also into its linear_up, radial MLP ``conv_weights``, fused
``convolution``, ``linear`` and ``skip``); the backward (forces) is attributed by op. Reported per structure: wall seconds of the
profiled call, forward ms per module, and the ten ops with most self CPU time over forward and
backward. One JSON line per structure is printed and appended to
``benchmarks/results/profile.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (structures and record helpers)

DEFAULT_SHAPE = {"name": "mace", "num_channels": 128, "max_L": 1, "max_ell": 3, "correlation": 3, "r_max": 5.0}
FOUNDATION_SHAPE = {
    **DEFAULT_SHAPE,
    "r_max": 6.0,
    "num_bessel": 10,
    "pair_repulsion": True,
    "avg_num_neighbors": 40.0,
}


def wrap_forward(module, label: str) -> None:
    """Run ``module``'s forward inside ``record_function(label)``."""
    import torch

    forward = module.forward

    def timed(*args, **kwargs):
        with torch.profiler.record_function(label):
            return forward(*args, **kwargs)

    module.forward = timed


def blocks(model) -> dict[str, object]:
    """The top-level blocks of molnet's MACE body whose forwards are timed."""
    body = model.body
    named = {"spherical_harmonics": body.spherical_harmonics, "radial": body.radial, "embedding": body.embedding}
    for t, (interaction, product, linear, readout) in enumerate(
        zip(body.interactions, body.products, body.product_linears, body.readouts)
    ):
        named[f"layer{t}.interaction"] = interaction
        for part in ("linear_up", "conv_weights", "convolution", "linear", "skip", "element_mix", "density_fn"):
            if getattr(interaction, part, None) is not None:  # nested inside the interaction's time
                named[f"layer{t}.interaction.{part}"] = getattr(interaction, part)
        named[f"layer{t}.symmetric_contraction"] = product
        named[f"layer{t}.product_linear"] = linear
        named[f"layer{t}.readout"] = readout
    if body.pair_repulsion is not None:
        named["zbl"] = body.pair_repulsion
    return named


def profile(model, atoms) -> dict:
    import torch
    from torch_geometric.data import Batch

    from molnet.data import AtomicGraph

    batch = Batch.from_data_list([AtomicGraph.from_atoms(atoms, model.r_max, dtype=torch.float64)])
    model(batch, compute_forces=True)  # warm-up
    for name, module in blocks(model).items():
        wrap_forward(module, f"module::{name}")
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.profiler.record_function("phase::forward+backward"):
            model(batch, compute_forces=True)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    modules = {e.key[len("module::") :]: e.cpu_time_total / 1e3 for e in events if e.key.startswith("module::")}
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    total_self = sum(e.self_cpu_time_total for e in events) or 1.0
    return {
        "n_atoms": len(atoms),
        "n_edges": int(batch.edge_index.shape[1]),
        "atoms_per_chunk": model.body.atoms_per_chunk,
        "profiled_call_s": wall,
        # the rest of the call: backward, graph (sub-blocks of an interaction are inside its time)
        "forward_modules_ms_total": round(sum(v for k, v in modules.items() if k.count(".") < 2), 1),
        "forward_ms_per_module": {k: round(v, 2) for k, v in sorted(modules.items(), key=lambda kv: -kv[1])},
        "top_ops_self_ms": {e.key: round(e.self_cpu_time_total / 1e3, 2) for e in ops[:10]},
        "top_ops_share": {e.key: round(e.self_cpu_time_total / total_self, 3) for e in ops[:10]},
    }


def crystal(n_atoms: int):
    import numpy as np
    from ase.build import bulk

    reps = round((n_atoms / 8) ** (1 / 3))
    atoms = bulk("NaCl", "rocksalt", a=5.0, cubic=True) * (reps, reps, reps)
    rng = np.random.default_rng(1)
    atoms.set_chemical_symbols(rng.choice(["Li", "Na", "K", "Mg", "O", "F", "Cl", "S"], len(atoms)))
    atoms.rattle(0.05, seed=2)
    return atoms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[15, 600, 2400])
    parser.add_argument("--foundation", type=int, nargs="*", default=[512])
    parser.add_argument("--whole", action="store_true", help="evaluate whole structures (set_chunking(None))")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, 1

    import torch
    from ase.data import chemical_symbols

    from molnet.models import build_model

    torch.set_num_threads(1)
    described, frames = run.read_structures(args.sizes) if args.sizes else ([], [])
    for structure in described:
        torch.manual_seed(0)
        model = build_model({**DEFAULT_SHAPE, "elements": ["H", "C", "O"], "avg_num_neighbors": 12.0}, torch.float64)
        model.set_chunking(None if args.whole else "auto")
        record = profile(model.eval(), frames[structure.index])
        run.emit("profile", {"shape": "mace-torch default", "structure": structure.label, **record}, args)
    for size in args.foundation:
        torch.manual_seed(0)
        model = build_model({**FOUNDATION_SHAPE, "elements": chemical_symbols[1:90]}, torch.float64)
        model.set_chunking(None if args.whole else "auto")
        run.emit("profile", {"shape": "MACE-MP-0-medium", **profile(model.eval(), crystal(size))}, args)


if __name__ == "__main__":
    main()
