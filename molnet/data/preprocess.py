"""``molnet preprocess``: reference files (extxyz, ASE db, globs) → one on-disk data set.

Files are parsed (and their neighbor counts at ``r_max`` taken) in parallel worker processes,
one file per task; the parent appends each file's structures to the data set in the order the
files were given and accumulates the statistics in the same pass (:mod:`molnet.data.ondisk`).
"""

from __future__ import annotations

import glob
import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Sequence

from rich.progress import Progress

from molnet.data.datasets import read_dataset, split_isolated_atoms
from molnet.data.neighbors import DEFAULT_R_MAX
from molnet.data.ondisk import DatasetWriter
from molnet.data.statistics import count_edges
from molnet.data.units import canonical_units
from molnet.errors import DataError

log = logging.getLogger(__name__)


def expand_sources(patterns: Sequence[str]) -> list[Path]:
    """Files named by ``patterns`` (paths or globs, e.g. ``'train/*.xyz'``), in the order given,
    each once (a file that two patterns name would be written twice, and could land in both the
    training and the validation split)."""
    files: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
        if not any(m.is_file() for m in matches):
            what = "matches only folders" if matches else "matches no file"
            raise DataError(f"--data {pattern!r} {what}; name data files (e.g. 'dft/*.xyz')")
        for match in matches:
            if match.is_file() and match.resolve() not in seen:
                seen.add(match.resolve())
                files.append(match)
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_file(path: Path, r_max: float, read_kw: dict) -> tuple[dict[int, float], list, list[int], dict]:
    """Worker task: one file's isolated atoms, structures, edge counts and provenance."""
    isolated, structures = split_isolated_atoms(read_dataset(path, **read_kw))
    n_edges = [count_edges(a, r_max) for a in structures]
    return isolated, structures, n_edges, {"path": str(path), "frames": len(structures), "sha256": _sha256(path)}


def preprocess(
    data: Sequence[str],
    out: str | Path,
    r_max: float = DEFAULT_R_MAX,
    workers: int = 1,
    append: bool = False,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    dipole_key: str = "dipole",
    charges_key: str = "charges",
    energy_unit: str = "eV",
    length_unit: str = "Å",
    require: Sequence[str] = ("energy", "forces"),
    progress: bool = True,
) -> Path:
    """Write the structures of ``data`` (paths or globs) to the data set ``out``; return its path.

    Targets are converted from ``energy_unit``/``length_unit`` to eV and Å; isolated atoms
    (``config_type=isolated_atom``) become the data set's isolated-atom energies. ``append``
    adds files to an existing data set (same ``r_max`` and units). Memory holds one file per
    worker at a time, never the whole set.
    """
    files = expand_sources(data)
    units = canonical_units(energy_unit, length_unit)
    data_keys = {
        "energy": energy_key,
        "forces": forces_key,
        "stress": stress_key,
        "dipole": dipole_key,
        "charges": charges_key,
    }
    read_kw = {
        **{f"{k}_key": v for k, v in data_keys.items()},
        "require": tuple(require),
        "energy_unit": energy_unit,
        "length_unit": length_unit,
    }
    writer = DatasetWriter(out, r_max=r_max, units=units, data_keys=data_keys, append=append)
    task = partial(_read_file, r_max=r_max, read_kw=read_kw)
    try:
        with Progress(disable=not progress, transient=True) as bar:
            job = bar.add_task("preprocessing", total=len(files))
            if workers > 1:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    for result in pool.map(task, files):
                        _write(writer, *result)
                        bar.advance(job)
            else:
                for path in files:
                    _write(writer, *task(path))
                    bar.advance(job)
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    log.info("%s: %d structures from %d file(s), r_max %.2f Å", path, writer.stats.n_configs, len(files), r_max)
    return path


def _write(
    writer: DatasetWriter, isolated: dict[int, float], structures: list, n_edges: list[int], source: dict
) -> None:
    earlier = next((s for s in writer.sources if s["sha256"] == source["sha256"]), None)
    if earlier is not None:  # the same structures twice could land in both training and validation
        raise DataError(
            f"{source['path']} has the same content (sha256 {source['sha256'][:12]}…) as {earlier['path']}, "
            f"already in {writer.path}; leave it out"
        )
    writer.add_isolated(isolated)
    writer.add(structures, n_edges, source)
