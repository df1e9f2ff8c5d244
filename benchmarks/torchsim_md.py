"""Batched MD in torch-sim against a loop of ASE calculators, same molnet model, same structures.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/torchsim_md.py [--structures 64] [--steps 20] [--rounds 2] [--no-save]

The shipped ``mace-acac`` model (MACE, 32 channels, L=1, ν=3, 2 layers; float64) drives NVT Langevin dynamics (0.5 fs, 300 K) of ``--structures`` AcAc
molecules (frames of the bundled test set): once as one torch-sim ``SimState`` through
:class:`molnet.calculators.torchsim.MolNetModel` (``ts.integrate``), once as ASE ``Langevin``
runs of ``MolNetCalculator``, one structure after another. Blocks alternate A/B, order swapped
each round; the throughput is structure-steps per second and the ratio the median of the
per-round ratios. One JSON line is printed and appended to ``benchmarks/results/torchsim.jsonl``.
mace-torch's own torch-sim model is not measured: torch-sim 0.3 and mace-torch 0.3.16 do not
share molnet's venv, and the mace venv has no torch-sim.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (environment and record helpers)
from md_speed import TEMPERATURE_K, TIMESTEP_FS  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy = False, None

    import ase.io
    import numpy as np
    import torch
    import torch_sim as ts
    from ase import units
    from ase.md.langevin import Langevin

    import molnet
    from molnet.calculators import MolNetCalculator
    from molnet.calculators.torchsim import MolNetModel
    from molnet.data import bundled_path

    torch.set_num_threads(args.threads)
    model = molnet.load_model(
        "mace-acac", dtype=torch.float64
    )  # trained: random weights would tear the molecules apart
    frames = ase.io.read(bundled_path("acac", "test"), index=f":{args.structures}")
    for a in frames:
        a.calc = None
    state = ts.io.atoms_to_state(frames, device=torch.device("cpu"), dtype=torch.float64)
    ts_model = MolNetModel(model, dtype="float64", compute_stress=False)
    dyns = []
    for k, atoms in enumerate(frames):
        atoms.calc = MolNetCalculator(model, dtype="float64")
        dyns.append(
            Langevin(
                atoms,
                TIMESTEP_FS * units.fs,
                temperature_K=TEMPERATURE_K,
                friction=0.01,
                fixcm=False,
                rng=np.random.default_rng(k),
            )
        )

    def torchsim_block() -> float:
        nonlocal state
        start = time.perf_counter()
        state = ts.integrate(
            system=state,
            model=ts_model,
            integrator=ts.nvt_langevin,
            n_steps=args.steps,
            temperature=TEMPERATURE_K,
            timestep=TIMESTEP_FS / 1000,
            seed=0,
        )
        return time.perf_counter() - start

    def ase_block() -> float:
        start = time.perf_counter()
        for dyn in dyns:
            dyn.run(args.steps)
        return time.perf_counter() - start

    torchsim_block(), ase_block()  # warm-up: first calls, neighbor lists
    work = args.structures * args.steps
    rates: dict[str, list[float]] = {"torchsim": [], "ase_loop": []}
    for r in range(args.rounds):
        order = [("torchsim", torchsim_block), ("ase_loop", ase_block)]
        for name, block in order if r % 2 == 0 else order[::-1]:
            rates[name].append(work / block())
    ratios = [t / a for t, a in zip(rates["torchsim"], rates["ase_loop"])]
    run.emit(
        "torchsim",
        {
            "model": "mace-acac",
            "dtype": "float64",
            "structures": args.structures,
            "atoms_per_structure": len(frames[0]),
            "steps_per_block": args.steps,
            "torchsim_structure_steps_per_s": rates["torchsim"],
            "ase_loop_structure_steps_per_s": rates["ase_loop"],
            "ratio_torchsim_over_ase_loop": run.median(ratios),
            "ratio_rounds": ratios,
            "torch_sim_version": importlib.metadata.version("torch-sim-atomistic"),
        },
        args,
    )


if __name__ == "__main__":
    main()
