"""molnet against mace-torch, side by side: parameter counts, speed, memory, training throughput.

Run with molnet's interpreter from the repository root::

    .venv/bin/python benchmarks/run.py params
    .venv/bin/python benchmarks/run.py speed [--quick] [--sizes 15,150,600,2400] [--max-atoms 10000]
    .venv/bin/python benchmarks/run.py memory [--quick] [--molnet-chunk '"auto"' --sizes 2400,5000,10000 --max-atoms 10000]
    .venv/bin/python benchmarks/run.py largest --dtypes float64 --sizes 2400,2700,10000,40000 --max-atoms 40000 [--limit-gib 21]
    .venv/bin/python benchmarks/run.py training [--quick]
    .venv/bin/python benchmarks/run.py accuracy [--datasets acac,acac600,ethanol]
        [--families mace,mpnn,ponita,csmpn,mace-torch] [--seeds 0,1] [--epochs 25] [--quick]
    .venv/bin/python benchmarks/run.py all --quick

The mace-torch side runs in ``benchmarks/.venv-mace`` (created by ``benchmarks/mace_env.sh``,
which this script runs when the venv is missing). Each side runs in its own worker process
(:mod:`worker`); the driver sends both the same structures and alternates timed blocks A/B/A/B…
with the order swapped every round, so that slow drifts of a shared machine cancel in the
per-round ratios. Every measurement is printed as one JSON object on stdout and appended to
``benchmarks/results/<kind>.jsonl`` (``--no-save`` to skip); :mod:`report` turns those files into
tables and plots.

Structures: ``15`` is one acetylacetone (AcAc) molecule from molnet's bundled test set; any
other size N is a periodic cubic box of round(N/15) AcAc molecules at the liquid density
(0.975 g/cm³), placed on a grid with random orientations chosen to keep molecules apart
(deterministic for a given ``--seed``).

References:
    mace-torch (ACEsuit/mace), ``mace/modules/models.py`` (``ScaleShiftMACE``) and
    ``mace/calculators/mace.py`` (the inference data path mirrored by the worker).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

log = logging.getLogger("benchmarks")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WORKER = HERE / "worker.py"
MACE_VENV = HERE / ".venv-mace"
ACAC_TEST = ROOT / "molnet" / "data" / "bundled" / "acac" / "test.xyz"
ACAC_TRAIN = ROOT / "data" / "acac" / "train_300K.xyz"

ELEMENTS = ["H", "C", "O"]
#: Liquid acetylacetone at 25 °C (g/cm³) and its molar mass (g/mol).
ACAC_DENSITY = 0.975
ACAC_MOLAR_MASS = 100.117
AVOGADRO = 6.02214076e23


# --------------------------------------------------------------------------------------------
# Hyperparameters and structures
# --------------------------------------------------------------------------------------------


def hyperparameters(channels: int, max_l: int, avg_num_neighbors: float, correlation: int = 3) -> dict[str, Any]:
    """The shared MACE hyperparameters (mace-torch's defaults apart from C and L)."""
    return {
        "r_max": 5.0,
        "num_channels": channels,
        "max_L": max_l,
        "max_ell": 3,
        "correlation": correlation,
        "num_interactions": 2,
        "num_bessel": 8,
        "num_polynomial_cutoff": 5,
        "radial_MLP": [64, 64, 64],
        "avg_num_neighbors": avg_num_neighbors,
        "gate": "silu",
    }


def acac_molecule():
    """The first AcAc frame of molnet's bundled test set, centred at its centroid."""
    import ase.io

    atoms = ase.io.read(ACAC_TEST, index=0)
    atoms.info = {}
    atoms.arrays = {k: v for k, v in atoms.arrays.items() if k in ("numbers", "positions")}
    atoms.calc = None
    atoms.positions -= atoms.positions.mean(axis=0)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    a, b, c, d = q / np.linalg.norm(q)
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )


def liquid_box(n_molecules: int, seed: int = 0, trials: int = 256, target_gap: float = 2.0):
    """Periodic cubic box of ``n_molecules`` AcAc molecules at liquid density.

    Molecules go to a random subset of the sites of a cubic grid; for each, ``trials`` random
    orientations (with a small random offset) are tried and the one farthest from the atoms
    already placed (minimum-image distance) is kept, stopping early at ``target_gap`` Å.
    Returns ``(atoms, min_intermolecular_distance)``.
    """
    from ase import Atoms
    from scipy.spatial import cKDTree

    mol = acac_molecule()
    volume = n_molecules * ACAC_MOLAR_MASS / (ACAC_DENSITY * AVOGADRO) * 1e24  # Å³
    side = volume ** (1.0 / 3.0)
    k = math.ceil(n_molecules ** (1.0 / 3.0))
    spacing = side / k
    rng = np.random.default_rng(seed)
    sites = np.array([(i, j, l) for i in range(k) for j in range(k) for l in range(k)], dtype=float)
    sites = (sites[rng.permutation(len(sites))[:n_molecules]] + 0.5) * spacing
    placed: list[np.ndarray] = []
    min_gap = np.inf
    for centre in sites:
        tree = cKDTree(np.concatenate(placed) % side, boxsize=side) if placed else None
        best, best_gap = None, -1.0
        for _ in range(trials):
            pos = mol.positions @ _random_rotation(rng).T + centre + rng.uniform(-0.3, 0.3, 3) * spacing / 2
            gap = np.inf if tree is None else float(tree.query(pos % side)[0].min())
            if gap > best_gap:
                best, best_gap = pos, gap
            if gap >= target_gap:
                break
        placed.append(best)
        min_gap = min(min_gap, best_gap)
    numbers = np.tile(mol.numbers, n_molecules)
    atoms = Atoms(numbers=numbers, positions=np.concatenate(placed), cell=np.eye(3) * side, pbc=True)
    atoms.wrap()
    return atoms, float(min_gap)


@dataclass
class Structure:
    label: str
    n_atoms: int
    index: int  # frame in the structures file
    min_gap: float | None


def build_structures(sizes: Iterable[int], path: Path, seed: int) -> list[Structure]:
    """Write the benchmark structures to one extxyz file and describe them."""
    import ase.io

    frames, out = [], []
    for n in sizes:
        if n <= 15:
            atoms, label, gap = acac_molecule(), "acac_molecule", None
        else:
            n_mol = max(1, round(n / 15))
            atoms, gap = liquid_box(n_mol, seed=seed)
            label = f"acac_liquid_{n_mol}mol"
        out.append(Structure(label, len(atoms), len(frames), gap))
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return out


def read_structures(sizes: Iterable[int], seed: int = 0) -> tuple[list[Structure], list]:
    """The structures of :func:`build_structures` as ASE ``Atoms``, with their descriptions."""
    import ase.io

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "structures.extxyz"
        described = build_structures(sizes, path, seed)
        return described, ase.io.read(path, ":")


def average_neighbors(r_max: float, frames: int = 50) -> float:
    """Mean number of neighbors within ``r_max`` over AcAc training frames (as mace-torch computes it)."""
    import ase.io

    from molnet.data.neighbors import neighbor_list

    path = ACAC_TRAIN
    n_edges = n_nodes = 0
    for atoms in ase.io.read(path, index=f":{frames}"):
        nl = neighbor_list(atoms.positions, np.zeros((3, 3)), np.zeros(3, bool), r_max)
        n_edges += len(nl.sender)
        n_nodes += len(atoms)
    return n_edges / n_nodes


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


def python_of(backend: str, args: argparse.Namespace) -> str:
    if backend == "molnet":
        return args.molnet_python or sys.executable
    python = args.mace_python or str(MACE_VENV / "bin" / "python")
    if not Path(python).exists():
        if args.mace_python:
            raise SystemExit(f"--mace-python {python} does not exist")
        log.warning("benchmarks/.venv-mace is missing; creating it with benchmarks/mace_env.sh")
        subprocess.run(["bash", str(HERE / "mace_env.sh")], check=True)
    return python


def worker_command(mode: str, backend: str, dtype: str, args: argparse.Namespace) -> list[str]:
    """The command line of a :mod:`worker` process in ``mode`` (``serve`` or ``memory``)."""
    return [
        python_of(backend, args),
        str(WORKER),
        mode,
        "--backend",
        backend,
        "--dtype",
        dtype,
        "--threads",
        str(args.threads),
        "--device",
        getattr(args, "device", "cpu"),
    ]


def worker_env(threads: int, wait_policy: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            # e3nn 0.4.4 (mace-torch's pin) loads its constants with torch.load's old default.
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.pop("PYTHONPATH", None)
    return env


class Worker:
    """A ``worker.py serve`` process speaking JSON lines."""

    def __init__(self, backend: str, dtype: str, args: argparse.Namespace, log_dir: Path) -> None:
        self.backend = backend
        self.log_path = log_dir / f"{backend}-{dtype}-{os.getpid()}-{id(self)}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            worker_command("serve", backend, dtype, args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=worker_env(args.threads, args.omp_wait_policy),
            cwd=ROOT,
        )
        self.info = self.call("hello")

    def call(self, cmd: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(f"{self.backend} worker died during {cmd!r}; its stderr ends with:\n{tail}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"{self.backend} worker failed on {cmd!r}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit")
            except (RuntimeError, BrokenPipeError):
                pass
            self.proc.wait(timeout=30)
        self.log.close()


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(), "python": platform.python_version()}


def molnet_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def emit(kind: str, record: dict[str, Any], args: argparse.Namespace) -> None:
    record = {
        "kind": kind,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "threads": args.threads,
        "omp_wait_policy": args.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY"),
        "load_avg": list(os.getloadavg()),
        "machine": machine(),
        "molnet_commit": molnet_commit(),
        **record,
    }
    line = json.dumps(record)
    print(line, flush=True)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        with open(RESULTS / f"{kind}.jsonl", "a") as f:
            f.write(line + "\n")


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


# --------------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def paired_workers(
    dtype: str, args: argparse.Namespace, tmp: Path, hyper: dict | None = None, data: Path | None = None
):
    """Both sides' workers, with the model built and the structures loaded when given; closed after."""
    workers = {b: Worker(b, dtype, args, tmp) for b in ("molnet", "mace")}
    try:
        if hyper is not None:
            build_both(workers, hyper, args)
        if data is not None:
            for w in workers.values():
                w.call("load", path=str(data))
        yield workers
    finally:
        for w in workers.values():
            w.close()


def build_both(workers: dict[str, "Worker"], hyper: dict, args: argparse.Namespace) -> None:
    """Build the same model on both sides (mace-torch's spelling of the options on its side)."""
    for b, w in workers.items():
        if b == "mace":
            w.call(
                "build", elements=ELEMENTS, hyper=mace_hyper(hyper, args), cueq=bool(getattr(args, "mace_cueq", False))
            )
        else:
            w.call(
                "build",
                elements=ELEMENTS,
                hyper=hyper,
                compile=bool(getattr(args, "molnet_compile", False)),
                cueq=bool(getattr(args, "molnet_cueq", False)),
            )


def cmd_params(args: argparse.Namespace, tmp: Path) -> None:
    """Trainable parameter counts at every (C, L), by module group, both sides (float64)."""
    avg = 10.0  # a divisor only: parameter counts do not depend on it
    with paired_workers("float64", args, tmp) as workers:
        for c in args.channels:
            for max_l in args.max_l:
                hyper = hyperparameters(c, max_l, avg, args.correlation)
                build_both(workers, hyper, args)
                counts = {b: w.call("params") for b, w in workers.items()}
                groups = sorted(set(counts["molnet"]["groups"]) | set(counts["mace"]["groups"]))
                emit(
                    "params",
                    {
                        "num_channels": c,
                        "max_L": max_l,
                        "hyper": hyper,
                        "mace_use_reduced_cg": args.mace_reduced_cg,
                        "molnet": counts["molnet"]["total"],
                        "mace": counts["mace"]["total"],
                        "ratio_molnet_over_mace": counts["molnet"]["total"] / counts["mace"]["total"],
                        "groups": {
                            g: {
                                "molnet": counts["molnet"]["groups"].get(g, 0),
                                "mace": counts["mace"]["groups"].get(g, 0),
                            }
                            for g in groups
                        },
                        "versions": {b: w.info["versions"] for b, w in workers.items()},
                    },
                    args,
                )


def mace_hyper(hyper: dict, args: argparse.Namespace) -> dict:
    return {**hyper, "mace_use_reduced_cg": args.mace_reduced_cg}


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_s": median(times), "min_s": min(times), "max_s": max(times), "calls": len(times)}


def cmd_speed(args: argparse.Namespace, tmp: Path) -> None:
    """Energy+forces per call through each package's calculator path, alternating A/B blocks."""
    structures = build_structures(args.sizes, tmp / "structures.xyz", args.seed)
    hyper = hyperparameters(args.channels[0], args.max_l[0], average_neighbors(5.0), args.correlation)
    for dtype in args.dtypes:
        with paired_workers(dtype, args, tmp, hyper=hyper, data=tmp / "structures.xyz") as workers:
            for s in structures:
                checks = {b: w.call("check", index=s.index) for b, w in workers.items()}
                warm = {b: w.call("time", index=s.index, calls=args.warmup) for b, w in workers.items()}
                per_call = max(median(r["total_s"]) for r in warm.values())
                calls = max(1, min(args.max_calls, math.ceil(args.block_seconds / per_call)))
                runs: dict[str, list[dict]] = {"molnet": [], "mace": []}
                for r in range(args.rounds):
                    order = ("molnet", "mace") if r % 2 == 0 else ("mace", "molnet")
                    for b in order:
                        runs[b].append(workers[b].call("time", index=s.index, calls=calls))
                round_ratios = [
                    median(m["total_s"]) / median(n["total_s"]) for n, m in zip(runs["molnet"], runs["mace"])
                ]
                sides = {}
                for b in ("molnet", "mace"):
                    total = [t for run in runs[b] for t in run["total_s"]]
                    sides[b] = {
                        **_stats(total),
                        "graph_median_s": median([t for run in runs[b] for t in run["graph_s"]]),
                        "model_median_s": median([t for run in runs[b] for t in run["model_s"]]),
                        "atoms_per_s": s.n_atoms / median(total),
                        "n_edges": checks[b]["n_edges"],
                        "finite": checks[b]["finite"],
                        "versions": workers[b].info["versions"],
                    }
                emit(
                    "speed",
                    {
                        "structure": s.label,
                        "n_atoms": s.n_atoms,
                        "min_intermolecular_distance": s.min_gap,
                        "dtype": dtype,
                        "hyper": hyper,
                        "mace_use_reduced_cg": args.mace_reduced_cg,
                        "molnet_compiled": args.molnet_compile,
                        "molnet_cueq": args.molnet_cueq,
                        "mace_cueq": args.mace_cueq,
                        "device": args.device,
                        "rounds": args.rounds,
                        "calls_per_round": calls,
                        "warmup": args.warmup,
                        "molnet": sides["molnet"],
                        "mace": sides["mace"],
                        "throughput_ratio_molnet_over_mace": median(round_ratios),
                        "throughput_ratio_rounds": round_ratios,
                        "same_edges": checks["molnet"]["n_edges"] == checks["mace"]["n_edges"],
                    },
                    args,
                )


OUT_OF_MEMORY = ("can't allocate memory", "MemoryError", "std::bad_alloc", "out of memory")


def memory_worker(
    backend: str,
    dtype: str,
    structure: "Structure",
    hyper: dict,
    tmp: Path,
    args,
    chunk=None,
    limit_bytes: int | None = None,
) -> dict:
    """Peak RSS and seconds per call of one fresh worker process evaluating one structure.

    With ``limit_bytes`` the worker runs under that address-space limit (``RLIMIT_AS``), and a
    worker that runs out of memory returns ``{"fits": False, ...}`` instead of raising.
    """
    cmd = [
        *worker_command("memory", backend, dtype, args),
        "--elements",
        json.dumps(ELEMENTS),
        "--hyper",
        json.dumps(mace_hyper(hyper, args) if backend == "mace" else hyper),
        "--structures",
        str(tmp / "structures.xyz"),
        "--index",
        str(structure.index),
        "--calls",
        str(args.memory_calls),
        *(["--atoms-per-chunk", json.dumps(chunk)] if chunk is not None else []),
    ]

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    start = time.perf_counter()
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=worker_env(args.threads, args.omp_wait_policy),
        cwd=ROOT,
        preexec_fn=limit if limit_bytes is not None else None,
    )
    if done.returncode != 0:
        killed = done.returncode == -9  # the kernel's OOM killer
        if limit_bytes is not None and (killed or any(m in done.stderr for m in OUT_OF_MEMORY)):
            last = done.stderr.strip().splitlines()[-1:] or ["killed (signal 9)"]
            return {"fits": False, "error": last[0][-300:], "wall_s": time.perf_counter() - start}
        raise RuntimeError(f"{backend} memory worker failed:\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    r["working_mib"] = r["maxrss_peak_mib"] - r["maxrss_built_mib"]
    r["fits"] = True
    return r


def cmd_memory(args: argparse.Namespace, tmp: Path) -> None:
    """Peak RSS of a fresh process that builds the model and evaluates one structure.

    Sides: molnet as built, with its default ``"auto"`` chunking (up to ``--whole-max-atoms``),
    molnet with ``set_chunking(--molnet-chunk)`` (an atom count: checkpointed chunks of that size)
    and mace-torch (up to ``--mace-max-atoms``), alternating their order per structure.
    """
    structures = build_structures(args.sizes, tmp / "structures.xyz", args.seed)
    hyper = hyperparameters(args.channels[0], args.max_l[0], average_neighbors(5.0), args.correlation)
    for dtype in args.dtypes:
        for k, s in enumerate(structures):
            sides = {"molnet": ("molnet", None)} if s.n_atoms <= args.whole_max_atoms else {}
            if args.molnet_chunk is not None:
                sides["molnet_chunked"] = ("molnet", args.molnet_chunk)
            if s.n_atoms <= args.mace_max_atoms:
                sides["mace"] = ("mace", None)
            order = list(sides) if k % 2 == 0 else list(reversed(sides))
            results = {
                label: memory_worker(*sides[label][:1], dtype, s, hyper, tmp, args, sides[label][1]) for label in order
            }
            record = {
                "structure": s.label,
                "n_atoms": s.n_atoms,
                "dtype": dtype,
                "hyper": hyper,
                "mace_use_reduced_cg": args.mace_reduced_cg,
                "calls": args.memory_calls,
                "molnet_chunk": args.molnet_chunk,
                **results,
            }
            for label in ("molnet", "molnet_chunked"):
                if label in results and "mace" in results:
                    suffix = "" if label == "molnet" else "_chunked"
                    record[f"peak_ratio_molnet{suffix}_over_mace"] = (
                        results[label]["maxrss_peak_mib"] / results["mace"]["maxrss_peak_mib"]
                    )
                    record[f"last_call_ratio_mace_over_molnet{suffix}"] = (
                        results["mace"]["seconds_per_call"][-1] / results[label]["seconds_per_call"][-1]
                    )
            emit("memory", record, args)


def cmd_largest(args: argparse.Namespace, tmp: Path) -> None:
    """The largest structure each package evaluates under an address-space limit.

    Each package evaluates the structures of ``--sizes`` in ascending order, one fresh worker per
    structure (``--memory-calls`` energy + forces calls) under ``RLIMIT_AS`` = ``--limit-gib``,
    and stops at the first that does not fit: an allocation refused or the process killed.
    molnet runs its default ``"auto"`` chunking. One record per attempt, with ``fits``.
    """
    structures = build_structures(args.sizes, tmp / "structures.xyz", args.seed)
    hyper = hyperparameters(args.channels[0], args.max_l[0], average_neighbors(5.0), args.correlation)
    limit_bytes = int(args.limit_gib * 2**30)
    for dtype in args.dtypes:
        for backend in args.backends:
            for s in sorted(structures, key=lambda s: s.n_atoms):
                log.info("largest: %s %s %d atoms under %.1f GiB", backend, dtype, s.n_atoms, args.limit_gib)
                result = memory_worker(backend, dtype, s, hyper, tmp, args, limit_bytes=limit_bytes)
                record = {
                    "backend": backend,
                    "structure": s.label,
                    "n_atoms": s.n_atoms,
                    "dtype": dtype,
                    "hyper": hyper,
                    "limit_gib": args.limit_gib,
                    "calls": args.memory_calls,
                    **result,
                }
                emit("largest", record, args)
                if not result["fits"]:
                    break


def cmd_training(args: argparse.Namespace, tmp: Path) -> None:
    """Optimizer steps (energy+forces loss, Adam) per second on one fixed batch of AcAc configurations."""
    import ase.io

    path = ACAC_TRAIN
    frames = ase.io.read(path, index=f":{args.batch_size}")
    for a in frames:
        a.calc = None
    ase.io.write(tmp / "train.xyz", frames, format="extxyz")
    hyper = hyperparameters(args.channels[0], args.max_l[0], average_neighbors(5.0), args.correlation)
    for dtype in args.dtypes:
        with paired_workers(dtype, args, tmp, hyper=hyper, data=tmp / "train.xyz") as workers:
            indices = list(range(len(frames)))
            for w in workers.values():
                w.call("train", indices=indices, steps=args.warmup)
            runs: dict[str, list[float]] = {"molnet": [], "mace": []}
            round_ratios = []
            for r in range(args.rounds):
                order = ("molnet", "mace") if r % 2 == 0 else ("mace", "molnet")
                got = {b: workers[b].call("train", indices=indices, steps=args.train_steps)["step_s"] for b in order}
                for b in order:
                    runs[b].extend(got[b])
                round_ratios.append(median(got["mace"]) / median(got["molnet"]))
            emit(
                "training",
                {
                    "data": str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else str(path),
                    "batch_size": len(frames),
                    "dtype": dtype,
                    "hyper": hyper,
                    "mace_use_reduced_cg": args.mace_reduced_cg,
                    "molnet": {
                        **_stats(runs["molnet"]),
                        "configs_per_s": len(frames) / median(runs["molnet"]),
                        "versions": workers["molnet"].info["versions"],
                    },
                    "mace": {
                        **_stats(runs["mace"]),
                        "configs_per_s": len(frames) / median(runs["mace"]),
                        "versions": workers["mace"].info["versions"],
                    },
                    "throughput_ratio_molnet_over_mace": median(round_ratios),
                    "throughput_ratio_rounds": round_ratios,
                },
                args,
            )


DATA = ROOT / "data"

#: name → (train, test, isolated atoms): the issue's splits, read from data/.
ACCURACY_SETS = {
    "acac": (
        DATA / "acac" / "train_300K.xyz",
        DATA / "acac" / "test_MD_300K.xyz",
        DATA / "acac" / "isolated_atoms.xyz",
    ),
    "acac600": (
        DATA / "acac" / "train_600K.xyz",
        DATA / "acac" / "test_MD_300K.xyz",
        DATA / "acac" / "isolated_atoms.xyz",
    ),
    "ethanol": (
        DATA / "ethanol" / "train.xyz",
        DATA / "ethanol" / "test_MD.xyz",
        DATA / "ethanol" / "isolated_atoms.xyz",
    ),
}
#: molnet families and the config that fixes each one's size (the data files are overridden).
FAMILY_CONFIGS = {f: ROOT / "configs" / f"{f}_acac.yaml" for f in ("mace", "mpnn", "ponita", "csmpn")}


def accuracy_files(name: str, tmp: Path, quick: bool) -> tuple[Path, Path, Path]:
    """Train/test/isolated files of a data set; ``--quick`` cuts them to 100 and 50 configurations."""
    import ase.io

    files = ACCURACY_SETS[name]
    if not quick:
        return files
    cut = []
    for path, n in zip(files[:2], (100, 50)):
        frames = ase.io.read(path, index=f":{n}")
        out = tmp / f"{name}_{path.stem}_{n}.xyz"
        ase.io.write(out, frames, format="extxyz")
        cut.append(out)
    return (*cut, files[2])


def run_logged(cmd: list[str], env: dict[str, str], log_path: Path) -> float:
    """Run ``cmd`` with its output in ``log_path``; return the wall time (s) or fail with the log's tail."""
    start = datetime.datetime.now()
    with open(log_path, "w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} … failed; last lines of {log_path}:\n{log_path.read_text()[-3000:]}")
    return (datetime.datetime.now() - start).total_seconds()


def train_molnet(family: str, files: tuple[Path, Path, Path], seed: int, epochs: int, workdir: Path, args) -> dict:
    """Train one molnet family with ``molnet train`` and return its test metrics and settings."""
    import yaml

    run_dir = workdir / f"{family}_s{seed}"
    cmd = [
        python_of("molnet", args),
        "-m",
        "molnet.cli",
        "train",
        "--config",
        str(FAMILY_CONFIGS[family]),
        "--run_dir",
        str(run_dir),
        "--seed_everything",
        str(seed),
        "--data.seed",
        str(seed),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--data.train_file",
        str(files[0]),
        "--data.test_file",
        str(files[1]),
        "--data.isolated_atoms_file",
        str(files[2]),
    ]
    for override in args.molnet_set or []:
        key, _, value = override.partition("=")
        cmd += [f"--{key}", value]
    wall = run_logged(cmd, worker_env(args.threads), workdir / f"{family}_s{seed}.log")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    from molnet.models.io import read_metadata

    return {
        "package": "molnet",
        "family": family,
        "train_wall_s": round(wall, 1),
        "hyper": config["model"],  # the run's config.yaml is in the user layout (molnet.train.sections)
        "train_dtype": config["training"].get("dtype"),
        "model_config": read_metadata(run_dir / "model.safetensors")["config"],  # every default resolved
        "batch_size": config["data"]["batch_size"],
        "config": str(FAMILY_CONFIGS[family].relative_to(ROOT)),
        "command": " ".join(cmd[1:]),
        "test": json.loads((run_dir / "metrics.json").read_text()),
    }


def train_mace_torch(files: tuple[Path, Path, Path], dataset: str, seed: int, epochs: int, workdir: Path, args) -> dict:
    """Train mace-torch with molnet's mace recipe (``mace_torch_accuracy.sh``) and return its record."""
    python_of("mace", args)  # creates benchmarks/.venv-mace when missing
    env = {
        **worker_env(args.threads),
        "TRAIN_FILE": str(files[0]),
        "TEST_FILE": str(files[1]),
        "ISOLATED_FILE": str(files[2]),
        "DATASET": dataset,
        "SEED": str(seed),
    }
    log_path = workdir / f"mace-torch_s{seed}.log"
    run_logged(["bash", str(HERE / "mace_torch_accuracy.sh"), str(epochs), str(workdir / "mace-torch")], env, log_path)
    record = json.loads(log_path.read_text().strip().splitlines()[-1])
    for key in (
        "kind",
        "date",
        "threads",
        "load_avg",
        "machine",
        "dataset",
        "seed",
        "epochs",
        "train_file",
        "test_file",
    ):
        record.pop(key, None)
    return {**record, "family": "mace"}


def cmd_accuracy(args: argparse.Namespace, tmp: Path) -> None:
    """Train every requested family (and mace-torch) per data set and seed; test errors side by side."""
    for dataset in args.datasets:
        files = accuracy_files(dataset, tmp, args.quick)
        for seed in args.seeds:
            for family in args.families:
                workdir = tmp / f"accuracy_{dataset}_{family}_s{seed}"
                workdir.mkdir(parents=True)
                log.info("accuracy: %s on %s, seed %d, %d epochs", family, dataset, seed, args.epochs)
                if family == "mace-torch":
                    result = train_mace_torch(files[:3], dataset, seed, args.epochs, workdir, args)
                else:
                    result = train_molnet(family, files[:3], seed, args.epochs, workdir, args)
                emit(
                    "accuracy",
                    {
                        "dataset": dataset,
                        "seed": seed,
                        "epochs": args.epochs,
                        "train_file": _shown(files[0]),
                        "test_file": _shown(files[1]),
                        **result,
                    },
                    args,
                )


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else path.name


COMMANDS = {
    "params": cmd_params,
    "speed": cmd_speed,
    "memory": cmd_memory,
    "largest": cmd_largest,
    "training": cmd_training,
    "accuracy": cmd_accuracy,
}


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="molnet vs mace-torch benchmarks", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "command",
        choices=[*COMMANDS, "all"],
        help="'all' runs params, speed, memory, training and accuracy, then prints report.py's tables",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="AcAc + 150 atoms, few repeats; accuracy: 2 epochs on 100 configurations, first seed (minutes)",
    )
    parser.add_argument(
        "--sizes", type=int_list, default=[15, 150, 600, 2400, 10000], help="target atom counts; 15 = one AcAc molecule"
    )
    parser.add_argument(
        "--max-atoms", type=int, default=2400, help="drop sizes above this (10000 needs --max-atoms 10000)"
    )
    parser.add_argument("--dtypes", type=lambda s: s.split(","), default=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads in every worker")
    parser.add_argument("--channels", type=int_list, default=None, help="C; params default 32,64,128, others 128")
    parser.add_argument("--max-l", type=int_list, default=None, help="max_L; params default 0,1,2, others 1")
    parser.add_argument(
        "--omp-wait-policy",
        choices=["PASSIVE", "ACTIVE"],
        help="OMP_WAIT_POLICY of the workers (unset by default); PASSIVE avoids the collapse of 2-thread runs on a busy machine",
    )
    parser.add_argument("--correlation", type=int, default=3)
    parser.add_argument(
        "--molnet-compile",
        action="store_true",
        help="speed: molnet through torch.compile (Potential.compile_inference); mace-torch eager",
    )
    parser.add_argument(
        "--molnet-set",
        action="append",
        metavar="KEY=VALUE",
        help="accuracy: extra molnet train option, e.g. model.contraction_basis=coupled (repeatable)",
    )
    parser.add_argument(
        "--molnet-cueq",
        action="store_true",
        help="speed: molnet's convolution and contraction through cuequivariance (Potential.use_cueq; CUDA kernels on a GPU, PyTorch fallback elsewhere)",
    )
    parser.add_argument(
        "--mace-reduced-cg", action="store_true", help="mace-torch's use_reduced_cg (its CLI default is off)"
    )
    parser.add_argument(
        "--mace-cueq",
        action="store_true",
        help="speed: mace-torch converted to cuequivariance (mace.cli.convert_e3nn_cueq; fused convolution on CUDA)",
    )
    parser.add_argument("--device", default="cpu", help="speed: torch device of both workers (cpu, cuda)")
    parser.add_argument("--rounds", type=int, default=6, help="A/B rounds per measurement")
    parser.add_argument("--block-seconds", type=float, default=2.0, help="target seconds per timed block")
    parser.add_argument("--max-calls", type=int, default=20, help="calls per timed block at most")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls (or training steps) before timing")
    parser.add_argument("--memory-calls", type=int, default=2)
    parser.add_argument(
        "--molnet-chunk",
        type=json.loads,
        default=None,
        help="memory: also measure molnet with set_chunking(VALUE), an atom count or '\"auto\"'",
    )
    parser.add_argument(
        "--whole-max-atoms", type=int, default=2400, help="memory: molnet with its default chunking up to this size"
    )
    parser.add_argument("--mace-max-atoms", type=int, default=2400, help="memory: mace-torch up to this size")
    parser.add_argument(
        "--limit-gib", type=float, default=21.0, help="largest: address-space limit (RLIMIT_AS) of each worker, GiB"
    )
    parser.add_argument(
        "--backends", type=lambda t: t.split(","), default=["mace", "molnet"], help="largest: packages to measure"
    )
    parser.add_argument("--batch-size", type=int, default=10, help="training: configurations per batch")
    parser.add_argument("--train-steps", type=int, default=5, help="training: steps per timed block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--datasets", type=lambda t: t.split(","), default=["acac"], help=f"accuracy: of {sorted(ACCURACY_SETS)}"
    )
    parser.add_argument(
        "--families",
        type=lambda t: t.split(","),
        default=["mace", "mace-torch"],
        help=f"accuracy: of {sorted(FAMILY_CONFIGS)} and mace-torch",
    )
    parser.add_argument(
        "--seeds", type=int_list, default=[0, 1], help="accuracy: training seeds (model, split, data order)"
    )
    parser.add_argument("--epochs", type=int, default=25, help="accuracy: training epochs")
    parser.add_argument("--mace-python", help="interpreter of the mace-torch venv (default benchmarks/.venv-mace)")
    parser.add_argument("--molnet-python", help="interpreter of molnet's venv (default: this one)")
    parser.add_argument("--no-save", action="store_true", help="print only; do not append to benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [15, 150]
        args.rounds = min(args.rounds, 2)
        args.block_seconds = min(args.block_seconds, 1.0)
        args.max_calls = min(args.max_calls, 5)
        args.warmup = min(args.warmup, 2)
        args.train_steps = min(args.train_steps, 3)
        args.batch_size = min(args.batch_size, 5)
        args.seeds = args.seeds[:1]
        args.epochs = min(args.epochs, 2)
    args.sizes = [n for n in args.sizes if n <= args.max_atoms]
    unknown = [f for f in args.families if f not in FAMILY_CONFIGS and f != "mace-torch"]
    unknown += [d for d in args.datasets if d not in ACCURACY_SETS]
    if unknown:
        parser.error(
            f"unknown families/datasets {unknown}; families: {sorted(FAMILY_CONFIGS)} + mace-torch, datasets: {sorted(ACCURACY_SETS)}"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    commands = ["params", "speed", "memory", "training", "accuracy"] if args.command == "all" else [args.command]
    tmp = Path(tempfile.mkdtemp(prefix="molnet-bench-"))
    try:
        for name in commands:
            run_args = argparse.Namespace(**vars(args))
            is_params = name == "params"
            run_args.channels = args.channels or ([32, 64, 128] if is_params else [128])
            run_args.max_l = args.max_l or ([0, 1, 2] if is_params else [1])
            COMMANDS[name](run_args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.command == "all" and not args.no_save:
        # the tables from the results just appended (a --quick run's own records included)
        subprocess.run(
            [sys.executable, str(HERE / "report.py"), *(["--include-quick"] if args.quick else [])], check=True
        )


if __name__ == "__main__":
    main()
