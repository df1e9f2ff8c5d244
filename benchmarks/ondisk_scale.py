"""Training data on disk: preprocess throughput, bytes per frame, and flat training memory.

Run with molnet's interpreter from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ondisk_scale.py [--small 20000] [--large 500000] [--steps 200] [--no-save]

A synthetic set (this is about I/O; the labels are random): the bundled AcAc test molecules
(15 atoms), each frame jittered by 0.05 Å, with random energies and forces, written as extxyz in
files of 10,000 frames. ``molnet preprocess`` turns the first ``--small`` frames into one data set
with 1 and with 2 workers and all ``--large`` frames into another (2 workers), and 200 other frames
into a validation set; mace-torch's ``mace_prepare_data`` (in ``benchmarks/.venv-mace``) turns the
same ``--small`` frames, concatenated into one file as it takes, into its HDF5 folders with
statistics, with 1 and 2 processes (wall time, peak RSS of its largest process, bytes per frame),
and ``mace_run_train`` runs one epoch from those files (the same small MACE, ``num_workers`` 0,
no final evaluation; peak RSS); then ``molnet train``
(a small MACE, batch 10, float32, one thread) runs ``--steps`` steps on each data set, with
``num_workers`` 0 and 2, each in a fresh process whose peak resident memory is taken. One JSON
line is printed and appended to ``benchmarks/results/ondisk.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (environment and record helpers)

FRAMES_PER_FILE = 10_000
MODEL = {"name": "mace", "num_channels": 16, "max_L": 1, "correlation": 2, "num_interactions": 2, "radial_MLP": [16]}


def write_synthetic(folder: Path, n_frames: int) -> list[Path]:
    """``n_frames`` jittered AcAc frames with random labels, in extxyz files of FRAMES_PER_FILE."""
    import numpy as np

    from molnet.data import load_bundled

    templates = load_bundled("acac", "test")
    rng = np.random.default_rng(0)
    files = []
    for start in range(0, n_frames, FRAMES_PER_FILE):
        path = folder / f"part_{start // FRAMES_PER_FILE:04d}.xyz"
        lines = []
        for k in range(start, min(n_frames, start + FRAMES_PER_FILE)):
            atoms = templates[k % len(templates)]
            pos = atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
            forces = rng.normal(0, 1.0, pos.shape)
            lines.append(
                f'{len(atoms)}\nProperties=species:S:1:pos:R:3:forces:R:3 energy={rng.normal(-11000, 1):.6f} pbc="F F F"'
            )
            lines += [
                f"{s} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {f[0]:.5f} {f[1]:.5f} {f[2]:.5f}"
                for s, p, f in zip(atoms.get_chemical_symbols(), pos, forces)
            ]
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    return files


def rss_of(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``cmd``, run under a fresh wrapper process of its own."""
    wrapper = (
        "import resource, subprocess, sys, time, json; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], check=True, env=run.worker_env(1), capture_output=True, text=True
    )
    wall, peak = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, peak


def mace_prepare(small_files: list[Path], valid: Path, prefix: Path, processes: int) -> dict:
    """mace-torch 0.3.16's ``mace_prepare_data`` on the concatenated ``small_files``: wall s, peak RSS, bytes."""
    combined = prefix.parent / "mace_train.xyz"
    if not combined.exists():
        combined.write_text("".join(f.read_text() for f in small_files))
    tool = HERE / ".venv-mace" / "bin" / "mace_prepare_data"
    wall, peak = rss_of(
        [str(tool), "--train_file", str(combined), "--valid_file", str(valid), "--h5_prefix", f"{prefix}/"]
        + ["--r_max", "5.0", "--num_process", str(processes), "--compute_statistics", "--E0s", "average"]
        + ["--energy_key", "energy", "--forces_key", "forces", "--seed", "0"]
    )
    size = sum(f.stat().st_size for f in (prefix / "train").glob("*.h5"))
    return {"wall_s": wall, "peak_rss_mb": peak, "train_bytes": size}


def mace_train(prefix: Path, workers: int) -> dict:
    """One epoch of ``mace_run_train`` (same small MACE, batch 10, float32) from ``mace_prepare_data``'s
    HDF5 folders: wall s and peak RSS (its largest process)."""
    import re

    # mace-torch 0.3.16 writes numpy-2 reprs ("np.int64(1): np.float64(-9.4)") into statistics.json,
    # which its own reader (ast.literal_eval) refuses: write them as plain numbers
    stats = prefix / "statistics.json"
    stats.write_text(re.sub(r"np\.(?:int|float)64\(([^()]*)\)", r"\1", stats.read_text()))
    tool = HERE / ".venv-mace" / "bin" / "mace_run_train"
    work = prefix / f"train_w{workers}"
    work.mkdir()
    cmd = [str(tool), "--name", "bench", "--work_dir", str(work), "--seed", "0", "--device", "cpu"]
    cmd += ["--train_file", f"{prefix}/train", "--valid_file", f"{prefix}/val"]
    cmd += ["--statistics_file", f"{prefix}/statistics.json", "--default_dtype", "float32"]
    cmd += ["--model", "ScaleShiftMACE", "--num_channels", "16", "--max_L", "1", "--correlation", "2"]
    cmd += ["--num_interactions", "2", "--radial_MLP", "[16]", "--batch_size", "10", "--valid_batch_size", "10"]
    cmd += ["--max_num_epochs", "1", "--num_workers", str(workers)]
    cmd += ["--skip_evaluate_heads", "Default"]  # no final evaluation of the whole training set
    wall, peak = rss_of(cmd)
    return {"wall_s": wall, "peak_rss_mb": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=500_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, 1
    molnet = [sys.executable, "-m", "molnet.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "xyz").mkdir()
        files = write_synthetic(tmp / "xyz", args.large)
        small_files = files[: max(1, args.small // FRAMES_PER_FILE)]
        (tmp / "valid").mkdir()
        valid = write_synthetic(tmp / "valid", 200)
        record: dict = {
            "frames_per_file": FRAMES_PER_FILE,
            "atoms_per_frame": 15,
            "extxyz_bytes_per_frame": sum(f.stat().st_size for f in files) / args.large,
        }

        def preprocess(inputs: list[Path], out: Path, workers: int) -> tuple[float, float]:
            data = sum((["--data", str(f)] for f in inputs), [])
            return rss_of(
                [*molnet, "preprocess", *data, "--out", str(out), "--r_max", "5.0", "--workers", str(workers)]
            )

        for workers in (1, 2):
            wall, peak = preprocess(small_files, tmp / f"small_w{workers}.h5", workers)
            record[f"preprocess_frames_per_s_{workers}_workers"] = args.small / wall
            record[f"preprocess_peak_rss_mb_{workers}_workers"] = peak
        record["dataset_bytes_per_frame"] = (tmp / "small_w2.h5").stat().st_size / args.small
        if (HERE / ".venv-mace" / "bin" / "mace_prepare_data").exists():
            for processes in (1, 2):
                mace = mace_prepare(small_files, valid[0], tmp / f"mace_p{processes}", processes)
                record[f"mace_prepare_frames_per_s_{processes}_processes"] = args.small / mace["wall_s"]
                record[f"mace_prepare_peak_rss_mb_{processes}_processes"] = mace["peak_rss_mb"]
                record["mace_dataset_bytes_per_frame"] = mace["train_bytes"] / args.small
            for workers in (0,):  # one epoch (small / 10 steps) from mace-torch's own HDF5 files
                mace = mace_train(tmp / "mace_p2", workers)
                record[f"mace_train_small_workers{workers}_one_epoch_wall_s"] = mace["wall_s"]
                record[f"mace_train_small_workers{workers}_peak_rss_mb"] = mace["peak_rss_mb"]
        wall, peak = preprocess([tmp / "xyz" / "*.xyz"], tmp / "large.h5", 2)
        record["preprocess_large_frames_per_s_2_workers"] = args.large / wall
        record["preprocess_large_peak_rss_mb_2_workers"] = peak
        preprocess(valid[:1], tmp / "valid.h5", 1)
        for label, dataset in (("small", tmp / "small_w2.h5"), ("large", tmp / "large.h5")):
            for workers in (0, 2):
                run_dir = tmp / f"run_{label}_{workers}"
                wall, peak = rss_of(
                    [
                        *molnet,
                        "train",
                        "--run_dir",
                        str(run_dir),
                        "--data.train_file",
                        str(dataset),
                        "--data.valid_file",
                        str(tmp / "valid.h5"),
                        "--data.test_file",
                        "null",
                        "--data.e0s",
                        "average",
                        "--data.batch_size",
                        "10",
                        "--data.num_workers",
                        str(workers),
                        "--trainer.max_epochs",
                        "1",
                        "--trainer.limit_train_batches",
                        str(args.steps),
                        "--trainer.limit_val_batches",
                        "2",
                        "--trainer.enable_progress_bar",
                        "false",
                        "--ema_decay",
                        "null",
                        "--model",
                        json.dumps(MODEL),
                    ]
                )
                record[f"train_{label}_workers{workers}_wall_s"] = wall
                record[f"train_{label}_workers{workers}_peak_rss_mb"] = peak
        record.update({"small_frames": args.small, "large_frames": args.large, "steps": args.steps, "model": MODEL})
        run.emit("ondisk", record, args)


if __name__ == "__main__":
    main()
