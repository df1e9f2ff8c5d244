"""MD speed: molnet's ASE calculator against mace-torch's, same model size, side by side.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/md_speed.py [--rounds 3] [--dtype float64] [--compile]
        [--box-atoms 2400] [--no-save]

Both packages get a MACE model of the size of molnet's shipped ``mace-acac`` (32 channels,
max_L 1, max_ell 2, correlation 3, 2 interactions, r_max 5 Å, radial MLP [64,64,64]; random
weights, zero E0s) in ``--dtype`` (float64 by default), wrapped in each package's own ASE
calculator (with ``--compile``, both through ``torch.compile``: molnet's ``compile=True``,
mace-torch's ``compile_mode="default"``, whose calculator pads the graph to fixed sizes):

- molnet: ``molnet.calculators.MolNetCalculator(model=<Potential>, dtype="float64")`` (by default
  its neighbor-list skin, 0.5 Å, so the list is rebuilt only when an atom moved more than
  skin/2; ``--molnet-skin 0`` rebuilds it every step as mace-torch does);
- mace-torch: ``mace.calculators.MACECalculator(model_paths=<torch.save'd ScaleShiftMACE>,
  device="cpu", default_dtype="float64")`` (rebuilds the neighbor list every call).

Each calculator drives ASE ``VelocityVerlet`` (0.5 fs, Maxwell-Boltzmann velocities at 300 K,
the same seed on both sides) on (1) one AcAc molecule (first frame of the bundled test set) and
(2) a ~2400-atom periodic liquid AcAc box (``run.liquid_box``). Both calculators run in their
own persistent worker process (molnet's venv and ``benchmarks/.venv-mace``), one thread each.
Timed blocks of MD steps alternate A/B, with the order swapped every round; the reported ratio
(molnet steps/s over mace-torch steps/s) is the median of the per-round ratios. One JSON line
per structure is printed and appended to ``benchmarks/results/md.jsonl``.

Each calculator computes what it computes by default inside MD: molnet energy+forces (+stress
for periodic cells), mace-torch energy+forces+stress (its ``MACE`` model type always asks for
stress). The weights are random, so the trajectories are not physical; only the cost matters.

References:
    mace-torch (ACEsuit/mace), ``mace/calculators/mace.py`` (``MACECalculator``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (the shared structure builders, environment and record helpers)

log = logging.getLogger("benchmarks.md")

#: The size of molnet's shipped ``mace-acac`` model (configs/mace_acac.yaml).
MACE_ACAC_SIZE = {
    "r_max": 5.0,
    "num_channels": 32,
    "max_L": 1,
    "max_ell": 2,
    "correlation": 3,
    "num_interactions": 2,
    "num_bessel": 8,
    "num_polynomial_cutoff": 5,
    "radial_MLP": [64, 64, 64],
    "gate": "silu",
}
TIMESTEP_FS = 0.5
TEMPERATURE_K = 300.0


# --------------------------------------------------------------------------------------------
# Worker side (runs in either venv)
# --------------------------------------------------------------------------------------------


def molnet_calculator(hyper: dict[str, Any], tmp: Path, skin: float, dtype: str, compile: bool):
    import torch

    from molnet.calculators import MolNetCalculator
    from molnet.models.registry import build_model

    torch.manual_seed(0)
    model = build_model({"name": "mace", "elements": run.ELEMENTS, **hyper}, dtype=getattr(torch, dtype))
    return MolNetCalculator(model=model, dtype=dtype, skin=skin, compile=compile), {}


def mace_calculator(hyper: dict[str, Any], tmp: Path, skin: float, dtype: str, compile: bool):
    import torch
    import worker  # the speed benchmark's mace-torch model, built with the same hyperparameters
    from mace.calculators import MACECalculator

    del skin  # mace-torch rebuilds its neighbor list every call
    torch.manual_seed(0)
    backend = worker.MaceBackend(getattr(torch, dtype))
    backend.build(run.ELEMENTS, hyper)
    path = tmp / "mace_acac_size.model"
    torch.save(backend.model, path)
    calc = MACECalculator(
        model_paths=str(path), device="cpu", default_dtype=dtype, compile_mode="default" if compile else None
    )
    return calc, {"model_file_bytes": path.stat().st_size}


def calculator_calls(skin: float, dtype: str, compile: bool) -> dict[str, str]:
    """Each package's calculator as built by :func:`molnet_calculator` and :func:`mace_calculator`."""
    return {
        "molnet": f"molnet.calculators.MolNetCalculator(model=Potential, dtype={dtype!r}, skin={skin}, compile={compile})",
        "mace": f"mace.calculators.MACECalculator(model_paths=<file>, device='cpu', default_dtype={dtype!r}, "
        f"compile_mode={'default' if compile else None!r})",
    }


def serve(
    backend: str, hyper: dict[str, Any], structures: str, tmp: Path, skin: float, dtype: str, compile: bool
) -> None:
    """JSON-lines loop: ``{"cmd": "md", "index": i, "steps": n}`` → wall seconds of n MD steps."""
    import ase.io
    import numpy as np
    import torch
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    proto, sys.stdout = sys.stdout, sys.stderr  # the packages print; keep stdout for the protocol
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    make = molnet_calculator if backend == "molnet" else mace_calculator
    frames = ase.io.read(structures, index=":")
    dyns = []
    for atoms in frames:
        # one calculator per structure (same seed, so the same weights), so that cached state
        # such as molnet's skin neighbor list belongs to one trajectory
        atoms.calc, extra = make(hyper, tmp, skin, dtype, compile)
        MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(0))
        dyns.append(VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs))
    import importlib.metadata as md

    versions = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for pkg in ("molnet", "mace-torch", "e3nn", "ase"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    print(json.dumps({"ok": True, "versions": versions, **extra}), file=proto, flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        atoms, dyn = frames[msg["index"]], dyns[msg["index"]]
        t0 = time.perf_counter()
        dyn.run(int(msg["steps"]))
        wall = time.perf_counter() - t0
        reply = {
            "ok": True,
            "wall_s": wall,
            "finite": bool(np.isfinite(atoms.positions).all()),
            "temperature_K": float(atoms.get_temperature()),
        }
        builds = getattr(atoms.calc, "neighbor_list_builds", None)
        if builds is not None:
            reply["neighbor_list_builds"] = int(builds)
        print(json.dumps(reply), file=proto, flush=True)


# --------------------------------------------------------------------------------------------
# Driver side (molnet's venv)
# --------------------------------------------------------------------------------------------


class MDWorker:
    def __init__(
        self, backend: str, python: str, hyper: dict, structures: Path, tmp: Path, args: argparse.Namespace
    ) -> None:
        self.backend = backend
        self.log_path = tmp / f"md-{backend}.log"
        self.log = open(self.log_path, "w")
        wdir = tmp / backend
        wdir.mkdir()
        self.proc = subprocess.Popen(
            [
                python,
                str(Path(__file__).resolve()),
                "serve",
                "--backend",
                backend,
                "--hyper",
                json.dumps(hyper),
                "--structures",
                str(structures),
                "--tmp",
                str(wdir),
                "--molnet-skin",
                str(args.molnet_skin),
                "--dtype",
                args.dtype,
                *(["--compile"] if args.compile else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=run.worker_env(args.threads),
            cwd=run.ROOT,
        )
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            raise RuntimeError(
                f"{self.backend} MD worker died; its stderr ends with:\n{self.log_path.read_text()[-3000:]}"
            )
        reply = json.loads(line)
        reply.pop("ok")
        return reply

    def md(self, index: int, steps: int) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": "md", "index": index, "steps": steps}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        self.log.close()


def ns_per_day(steps_per_s: float) -> float:
    return steps_per_s * TIMESTEP_FS * 86400 / 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", default="drive", choices=["drive", "serve"])
    p.add_argument("--backend", choices=["molnet", "mace"], help=argparse.SUPPRESS)
    p.add_argument("--hyper", help=argparse.SUPPRESS)
    p.add_argument("--structures", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument(
        "--box-atoms", type=int, default=2400, help="target size of the periodic liquid box (0: the molecule only)"
    )
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds per structure")
    p.add_argument("--molecule-steps", type=int, default=100, help="MD steps per timed block, molecule")
    p.add_argument("--box-steps", type=int, default=3, help="MD steps per timed block, box")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed MD steps per side before timing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mace-python", default=str(run.MACE_VENV / "bin" / "python"))
    p.add_argument(
        "--molnet-skin",
        type=float,
        default=0.5,
        help="MolNetCalculator neighbor-list skin in Å (its default 0.5; 0 rebuilds every step)",
    )
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument(
        "--compile",
        action="store_true",
        help="both calculators through torch.compile (molnet compile=True, mace-torch compile_mode='default'); "
        "the warm-up steps include the compilation",
    )
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)

    if args.mode == "serve":
        serve(
            args.backend,
            json.loads(args.hyper),
            args.structures,
            Path(args.tmp),
            args.molnet_skin,
            args.dtype,
            args.compile,
        )
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args.quick, args.omp_wait_policy = False, None  # fields run.emit records
    hyper = {**MACE_ACAC_SIZE, "avg_num_neighbors": run.average_neighbors(MACE_ACAC_SIZE["r_max"])}
    with tempfile.TemporaryDirectory(prefix="md_speed_") as tmpdir:
        tmp = Path(tmpdir)
        sizes = [15] + ([args.box_atoms] if args.box_atoms else [])
        structures = run.build_structures(sizes, tmp / "structures.extxyz", args.seed)
        workers = {
            "molnet": MDWorker("molnet", sys.executable, hyper, tmp / "structures.extxyz", tmp, args),
            "mace": MDWorker("mace", args.mace_python, hyper, tmp / "structures.extxyz", tmp, args),
        }
        try:
            for s in structures:
                steps = args.molecule_steps if s.n_atoms <= 15 else args.box_steps
                for w in workers.values():
                    w.md(s.index, args.warmup_steps)
                rates: dict[str, list[float]] = {"molnet": [], "mace": []}
                last: dict[str, dict] = {}
                for r in range(args.rounds):
                    order = ["molnet", "mace"] if r % 2 == 0 else ["mace", "molnet"]
                    for name in order:
                        reply = workers[name].md(s.index, steps)
                        if not reply["finite"]:
                            raise RuntimeError(f"{name}: non-finite positions in MD on {s.label}")
                        rates[name].append(steps / reply["wall_s"])
                        last[name] = reply
                    log.info(
                        "%s round %d: molnet %.3f, mace %.3f steps/s",
                        s.label,
                        r,
                        rates["molnet"][-1],
                        rates["mace"][-1],
                    )
                ratios = [a / b for a, b in zip(rates["molnet"], rates["mace"])]
                record = {
                    "structure": s.label,
                    "n_atoms": s.n_atoms,
                    "min_gap_A": s.min_gap,
                    "dtype": args.dtype,
                    "compiled": args.compile,
                    "integrator": "VelocityVerlet",
                    "timestep_fs": TIMESTEP_FS,
                    "init_temperature_K": TEMPERATURE_K,
                    "steps_per_block": steps,
                    "rounds": args.rounds,
                    "warmup_steps": args.warmup_steps,
                    "hyper": hyper,
                    "weights": "random",
                    "molnet_skin_A": args.molnet_skin,
                    "calculators": calculator_calls(args.molnet_skin, args.dtype, args.compile),
                }
                for name in ("molnet", "mace"):
                    sps = statistics.median(rates[name])
                    record[name] = {
                        "steps_per_s": sps,
                        "ns_per_day": ns_per_day(sps),
                        "steps_per_s_rounds": rates[name],
                        "versions": workers[name].info["versions"],
                        **{k: v for k, v in last[name].items() if k in ("neighbor_list_builds", "temperature_K")},
                    }
                record["ratio_molnet_over_mace"] = statistics.median(ratios)
                record["ratio_rounds"] = ratios
                run.emit("md", record, args)
        finally:
            for w in workers.values():
                w.close()


if __name__ == "__main__":
    main()
