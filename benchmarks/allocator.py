"""Both packages under the default glibc allocator and under tuned glibc thresholds, one run.

Run with molnet's interpreter from the repository root (needs ``bash benchmarks/mace_env.sh``)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/allocator.py [--sizes 600] [--dtypes float64] [--no-save]

``run.py speed`` (molnet and mace-torch side by side, alternating blocks, C=128, one thread) runs
once with the environment as it is and once with ``GLIBC_TUNABLES`` raising malloc's trim and
mmap thresholds (freed memory stays in the process instead of being returned to the operating
system after every call and faulted in again on the next), the setting issue 21 asks to decide
on. Each run's speed records are kept; one summary JSON line is printed and appended to
``benchmarks/results/allocator.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (record helpers)

TUNED = "glibc.malloc.trim_threshold=17179869184:glibc.malloc.mmap_threshold=4294967296:glibc.malloc.top_pad=268435456"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="600")
    parser.add_argument("--dtypes", default="float64")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, 1
    results = {}
    for label, tunables in (("default", None), ("tuned", TUNED)):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("GLIBC_TUNABLES", None)
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        cmd = [
            sys.executable,
            str(HERE / "run.py"),
            "speed",
            "--sizes",
            args.sizes,
            "--dtypes",
            args.dtypes,
            "--threads",
            "1",
            "--rounds",
            str(args.rounds),
            "--no-save",
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        results[label] = [
            {
                "n_atoms": r["n_atoms"],
                "dtype": r["dtype"],
                "molnet_s": r["molnet"]["median_s"],
                "mace_s": r["mace"]["median_s"],
                "ratio_molnet_over_mace": r["throughput_ratio_molnet_over_mace"],
            }
            for r in records
        ]
    run.emit("allocator", {"tunables": TUNED, "results": results}, args)


if __name__ == "__main__":
    main()
