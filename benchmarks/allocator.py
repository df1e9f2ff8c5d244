"""Both packages under one allocator at a time: glibc's defaults, tuned glibc thresholds, jemalloc.

Run with molnet's interpreter from the repository root (needs ``bash benchmarks/mace_env.sh``;
jemalloc from the distribution, e.g. Debian's ``libjemalloc2``)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/allocator.py [--allocators default,tuned,jemalloc] [-- RUN_ARGS]

Each allocator runs ``run.py RUN_ARGS --no-save`` (default: ``speed --sizes 600 --dtypes float64
--threads 1 --rounds 2``) with its environment, which the driver and both packages' workers
inherit, so that every ratio compares the packages under the same allocator:

- ``default``: glibc as the process finds it;
- ``tuned``: ``GLIBC_TUNABLES`` raising malloc's trim and mmap thresholds (freed memory stays in
  the process instead of being returned to the operating system after every call and faulted in
  again on the next);
- ``jemalloc``: ``LD_PRELOAD`` of ``--jemalloc`` with ``MALLOC_CONF`` keeping freed pages
  (``dirty_decay_ms:-1,muzzy_decay_ms:-1``).

One JSON line per allocator, with run.py's records, is printed and appended to
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
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
DEFAULT_RUN = ["speed", "--sizes", "600", "--dtypes", "float64", "--threads", "1", "--rounds", "2"]


def allocator_env(name: str, jemalloc: str) -> dict[str, str]:
    """The environment variables that select allocator ``name``."""
    if name == "default":
        return {}
    if name == "tuned":
        return {"GLIBC_TUNABLES": TUNED}
    if name == "jemalloc":
        if not Path(jemalloc).is_file():
            raise SystemExit(f"{jemalloc} does not exist; install jemalloc (Debian: libjemalloc2) or pass --jemalloc")
        return {"LD_PRELOAD": jemalloc, "MALLOC_CONF": JEMALLOC_CONF}
    raise SystemExit(f"unknown allocator {name!r}; choose from default, tuned, jemalloc")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocators", default="default,tuned,jemalloc")
    parser.add_argument("--jemalloc", default=JEMALLOC, help="path of libjemalloc.so")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("run_args", nargs=argparse.REMAINDER, help="after --: run.py's arguments")
    args = parser.parse_args(argv)
    run_args = [a for a in args.run_args if a != "--"] or DEFAULT_RUN
    args.quick, args.omp_wait_policy = False, None
    args.threads = int(run_args[run_args.index("--threads") + 1]) if "--threads" in run_args else None
    for name in args.allocators.split(","):
        variant = allocator_env(name, args.jemalloc)
        env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF")}
        env.update(variant)
        cmd = [sys.executable, str(HERE / "run.py"), *run_args, "--no-save"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"run.py under {name} failed:\n{done.stderr[-3000:]}")
        records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        run.emit("allocator", {"allocator": name, "env": variant, "run_args": run_args, "records": records}, args)


if __name__ == "__main__":
    main()
