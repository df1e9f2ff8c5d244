"""molnet-MACE's faster paths against its plain path on one device: cuequivariance and torch.compile.

Run with molnet's interpreter from the repository root (``gpu_check.sh`` runs it on a GPU)::

    python benchmarks/gpu_check.py --device cuda [--sizes 1000] [--channels 128] [--max-ell 3] [--correlation 3] [--compile] [--no-save]

For each size and dtype: a random MACE of mace-torch's default shape (C=128, L=1, max_ell 3,
ν=3, r_max 5 Å) on ``run.py``'s liquid AcAc box; energy, forces and stress of the plain path
(chunked as by default), of ``use_cueq()`` (cuequivariance's CUDA kernels on a GPU, its PyTorch
fallback elsewhere) and, with ``--compile``, of ``compile_inference()``. Each faster path is
compared with the plain one (largest force difference relative to the largest force) and timed
(median of ``--calls`` energy+forces calls after one warm-up). One JSON line per size and dtype
is printed and appended to ``benchmarks/results/gpu.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (structures and record helpers)

#: Largest force difference, relative to the largest force, accepted per dtype.
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def timed_calls(model, batch, calls: int, device) -> tuple[dict, float]:
    """Energy, forces and stress of ``batch`` and the median seconds of ``calls`` energy+forces calls."""
    import torch

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out = model(batch, compute_forces=True, compute_stress=True)  # warm-up (and compilation)
    seconds = []
    for _ in range(calls):
        synchronize()
        start = time.perf_counter()
        model(batch, compute_forces=True)
        synchronize()
        seconds.append(time.perf_counter() - start)
    return out, sorted(seconds)[len(seconds) // 2]


def compare(reference: dict, other: dict) -> dict[str, float]:
    """Largest differences of ``other`` from ``reference``: energy in eV, forces relative to max |F|."""
    scale = float(reference["forces"].abs().max())
    return {
        "energy_abs": float((other["energy"] - reference["energy"]).abs().max()),
        "forces_rel": float((other["forces"] - reference["forces"]).abs().max()) / max(scale, 1e-30),
        "stress_abs": float((other["stress"] - reference["stress"]).abs().max()),
    }


def check(atoms, dtype: str, device: str, hyper: dict, calls: int, with_compile: bool) -> dict:
    """One record: the plain path, cuequivariance and (optionally) torch.compile on ``atoms``."""
    import torch
    from torch_geometric.data import Batch

    from molnet.data import AtomicGraph
    from molnet.models import build_model

    torch_dtype, dev = getattr(torch, dtype), torch.device(device)
    torch.manual_seed(0)
    plain = build_model({"name": "mace", "elements": run.ELEMENTS, **hyper}, torch_dtype).to(dev).eval()
    batch = Batch.from_data_list([AtomicGraph.from_atoms(atoms, plain.r_max, dtype=torch_dtype)]).to(dev)
    reference, plain_s = timed_calls(plain, batch, calls, dev)
    record = {"n_atoms": len(atoms), "dtype": dtype, "device": device, "hyper": hyper, "plain_s": plain_s}
    variants = {"cueq": lambda m: m.use_cueq()}
    if with_compile:
        variants["compiled"] = lambda m: m.compile_inference()
    for name, switch in variants.items():
        model = copy.deepcopy(plain)
        switch(model)
        out, seconds = timed_calls(model, batch, calls, dev)
        differences = compare(reference, out)
        record[name] = {
            "seconds": seconds,
            "speedup": plain_s / seconds,
            **differences,
            "agrees": differences["forces_rel"] < TOLERANCE[dtype],
        }
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=run.int_list, default=[1000])
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--max-ell", type=int, default=3)
    parser.add_argument("--correlation", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, None
    import ase.io

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "structures.extxyz"
        described = run.build_structures(args.sizes, path, seed=0)
        frames = ase.io.read(path, ":")
    hyper = {**run.hyperparameters(args.channels, 1, 12.16, args.correlation), "max_ell": args.max_ell}
    failed = []
    for dtype in args.dtypes.split(","):
        for structure in described:
            record = check(frames[structure.index], dtype, args.device, hyper, args.calls, args.compile)
            run.emit("gpu", {"structure": structure.label, **record}, args)
            failed += [
                f"{name} {dtype} {structure.n_atoms}"
                for name in ("cueq", "compiled")
                if name in record and not record[name]["agrees"]
            ]
    if failed:
        raise SystemExit(f"faster paths disagree with the plain path: {failed}")


if __name__ == "__main__":
    main()
