"""Where molnet's MACE spends its time: torch.profiler over the calculator path (molnet side only).

    .venv/bin/python benchmarks/profile_molnet.py --atoms 150 --dtype float32 --threads 1

Builds the same structure and hyperparameters as ``run.py speed``, warms up, then profiles
``--calls`` energy+forces calls. Prints (1) forward time per labelled module (each module's
forward wrapped in a ``record_function``; backward is reported separately by autograd node) and
(2) the top operators by self CPU time, forward and backward together.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (benchmarks/run.py: structures and hyperparameters)
import worker  # noqa: E402

#: Modules whose forward gets its own profiler region.
LABELLED = re.compile(
    r"body\.(spherical_harmonics|radial|embedding|interactions\.\d+\.(linear_up|conv_weights|convolution|linear|skip)"
    r"|products\.\d+|product_linears\.\d+|readouts\.\d+)"
)


def label_modules(model: torch.nn.Module) -> None:
    """Wrap the forward of every module named by LABELLED in a ``record_function``."""
    for name, module in model.named_modules():
        if not LABELLED.fullmatch(name):
            continue
        forward = module.forward

        def wrapped(*args, _forward=forward, _tag=f"mod::{name.removeprefix('body.')}", **kwargs):
            with record_function(_tag):
                return _forward(*args, **kwargs)

        module.forward = wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=150)
    parser.add_argument("--dtype", choices=sorted(worker.DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--max-l", type=int, default=1)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    worker.set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="molnet-prof-"))
    (structure,) = run.build_structures([args.atoms], tmp / "s.xyz", seed=0)
    import ase.io

    atoms = ase.io.read(tmp / "s.xyz", index=0)
    backend = worker.MolnetBackend(worker.DTYPES[args.dtype])
    backend.build(run.ELEMENTS, run.hyperparameters(args.channels, args.max_l, run.average_neighbors(5.0)))
    label_modules(backend.model)
    for _ in range(2):
        backend.evaluate(backend.collate([backend.graph(atoms)]))
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(args.calls):
            with record_function("call::graph"):
                batch = backend.collate([backend.graph(atoms)])
            with record_function("call::model"):
                backend.evaluate(batch)
    wall = (time.perf_counter() - t0) / args.calls
    events = prof.key_averages()
    print(
        f"# {structure.label}: {structure.n_atoms} atoms, {args.dtype}, {args.threads} thread(s), "
        f"C={args.channels} L={args.max_l}; {wall:.4f} s per call under the profiler"
    )
    print("\n## labelled regions (CPU total per call, ms)")
    regions = sorted((e for e in events if e.key.startswith(("mod::", "call::"))), key=lambda e: -e.cpu_time_total)
    for e in regions:
        print(f"{e.cpu_time_total / 1e3 / args.calls:10.2f}  {e.key}")
    print(f"\n## top {args.top} operators by self CPU time (per call, ms)")
    ops = sorted((e for e in events if not e.key.startswith(("mod::", "call::"))), key=lambda e: -e.self_cpu_time_total)
    for e in ops[: args.top]:
        print(f"{e.self_cpu_time_total / 1e3 / args.calls:10.2f}  {e.count // args.calls:6d}x  {e.key}")


if __name__ == "__main__":
    main()
