"""molnet's compiled inference path against its eager path, in one process, calls alternating.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compile_inference.py [--channels 128] [--sizes 15 150 600]
        [--dtypes float64] [--rounds 6] [--no-save]

Two copies of one random-weight MACE (the speed benchmark's hyperparameters, :func:`run.hyperparameters`)
evaluate energy and forces of the speed benchmark's structures (:func:`run.read_structures`): one
eagerly with the default ``"auto"`` chunking, one through :meth:`Potential.compile_inference`
(``torch.compile``, dynamic shapes, one neighbor table). Reported per (size, dtype): the first
compiled call (compilation included; Inductor's on-disk cache shortens later runs), the median
milliseconds per call of each path over ``--rounds`` alternating blocks, their ratio, and the
largest force difference. One JSON line each, appended to ``benchmarks/results/compile_inference.jsonl``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--sizes", type=int, nargs="+", default=[15, 150, 600])
    parser.add_argument("--dtypes", nargs="+", default=["float64"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy = False, None
    sys.path.insert(0, str(HERE))
    import run  # structures, hyperparameters and records
    import torch

    from molnet.data import AtomicGraph
    from molnet.models.registry import build_model

    torch.set_num_threads(args.threads)
    hyper = run.hyperparameters(args.channels, 1, run.average_neighbors(5.0))
    described, frames = run.read_structures(args.sizes)
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        torch.manual_seed(0)
        config = {"name": "mace", "elements": run.ELEMENTS, **hyper}
        eager = build_model(config, dtype=dtype).eval()
        compiled = build_model(config, dtype=dtype).eval()
        compiled.load_state_dict(eager.state_dict())
        compiled.compile_inference()
        for structure in described:
            graph = AtomicGraph.from_atoms(frames[structure.index], eager.r_max, dtype=dtype)
            start = time.perf_counter()
            compiled_forces = compiled(graph)["forces"]
            first_call = time.perf_counter() - start
            difference = float((compiled_forces - eager(graph)["forces"]).abs().max())
            calls = max(1, 300 // structure.n_atoms)
            seconds: dict[str, list[float]] = {"eager": [], "compiled": []}
            for r in range(args.rounds):
                order = [("eager", eager), ("compiled", compiled)]
                for name, model in order if r % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    for _ in range(calls):
                        model(graph, compute_forces=True)
                    seconds[name].append((time.perf_counter() - start) / calls)
            eager_ms, compiled_ms = (1e3 * statistics.median(seconds[k]) for k in ("eager", "compiled"))
            run.emit(
                "compile_inference",
                {
                    "hyper": hyper,
                    "dtype": dtype_name,
                    "structure": structure.label,
                    "n_atoms": structure.n_atoms,
                    "first_compiled_call_s": first_call,
                    "calls_per_round": calls,
                    "eager_ms": eager_ms,
                    "compiled_ms": compiled_ms,
                    "speedup_compiled_over_eager": eager_ms / compiled_ms,
                    "max_force_difference": difference,
                },
                args,
            )


if __name__ == "__main__":
    main()
