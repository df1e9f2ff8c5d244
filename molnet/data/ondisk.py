"""Training data on disk: one HDF5 file of structures, targets and statistics, read lazily.

Why HDF5 (h5py): one portable file that any language reads, random access to a structure by
slicing concatenated arrays, many concurrent readers (DataLoader workers, DDP ranks) without a
server, and metadata beside the arrays; mace-torch's preprocessed sets are HDF5 too.

Layout (``n`` structures, ``a`` atoms in all; units eV, Å, eV/Å, eV/Å³):

- ``offsets [n + 1]`` int64: structure c holds atoms ``offsets[c]:offsets[c + 1]``;
- ``numbers [a]`` int16, ``positions [a, 3]``, ``forces [a, 3]`` and ``charges [a]`` float64 (NaN
  where absent);
- ``cell [n, 3, 3]``, ``pbc [n, 3]`` bool, ``energy [n]`` (NaN without energy), ``stress [n, 3, 3]``
  (NaN without stress), ``weight [n]``, ``config_type [n]`` (strings), ``n_edges [n]`` (edges at
  the file's ``r_max``), ``total_charge [n]`` (e) and ``dipole [n, 3]`` (e·Å, NaN where absent);
- attributes: ``format``, ``version``, ``complete`` (set last: a killed writer never leaves a
  file that reads as complete), ``units`` (the source units converted from), ``keys``,
  ``sources`` (files, frames and sha256), ``isolated_e0s`` and ``statistics`` (the streaming
  :class:`~molnet.data.statistics.StatisticsAccumulator` of all structures).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
from ase import Atoms

from molnet.data import keys
from molnet.data.graph import AtomicGraph
from molnet.data.statistics import StatisticsAccumulator
from molnet.errors import DataError

FORMAT_NAME = "molnet-dataset"
FORMAT_VERSION = 1
_PER_CONFIG = ("cell", "pbc", "energy", "stress", "weight", "config_type", "n_edges", "total_charge", "dipole")


def is_dataset(path: str | os.PathLike) -> bool:
    """True when ``path`` is an HDF5 file (a molnet data set or a broken one), not extxyz or an ASE db."""
    path = Path(path)
    return path.is_file() and h5py.is_hdf5(path)


class DatasetWriter:
    """Append structures to a data set; :meth:`close` marks it complete and renames it into place.

    Writes go to ``<path>.partial`` (with ``append``, a copy of the existing data set); only a
    finished write is renamed to ``path``, so a killed run leaves the old data set (or none).
    """

    def __init__(
        self, path: str | os.PathLike, r_max: float, units: dict, data_keys: dict, append: bool = False
    ) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            info = read_info(self.path)
            if info["statistics"]["r_max"] != r_max:
                raise DataError(
                    f"{self.path}: holds neighbor counts at r_max {info['statistics']['r_max']} Å, not {r_max}; append with the same --r_max"
                )
            if info["units"] != units:
                raise DataError(
                    f"{self.path}: was written from units {info['units']}, not {units}; convert both the same way"
                )
            shutil.copyfile(self.path, self.partial)
            self.file = h5py.File(self.partial, "r+")
            self.stats = StatisticsAccumulator.from_dict(info["statistics"])
            self.isolated = {int(z): e for z, e in info["isolated_e0s"].items()}
            self.sources = info["sources"]
        else:
            self.file = h5py.File(self.partial, "w")
            self.file.attrs.update(
                {
                    "format": FORMAT_NAME,
                    "version": FORMAT_VERSION,
                    "complete": False,
                    "units": json.dumps(units),
                    "keys": json.dumps(data_keys),
                }
            )
            self.file.create_dataset("offsets", data=np.zeros(1, dtype=np.int64), maxshape=(None,), chunks=(65536,))
            for name, shape, dtype in (
                ("numbers", (), np.int16),
                ("positions", (3,), np.float64),
                ("forces", (3,), np.float64),
                ("charges", (), np.float64),
                ("total_charge", (), np.float64),
                ("dipole", (3,), np.float64),
                ("cell", (3, 3), np.float64),
                ("pbc", (3,), bool),
                ("energy", (), np.float64),
                ("stress", (3, 3), np.float64),
                ("weight", (), np.float64),
                ("config_type", (), h5py.string_dtype()),
                ("n_edges", (), np.int64),
            ):
                chunk = 65536 if name in ("numbers", "positions", "forces", "charges") else 4096
                compression = (
                    None if name == "config_type" else "lzf"
                )  # fast; NaN-filled absent targets shrink to little
                self.file.create_dataset(
                    name,
                    shape=(0, *shape),
                    maxshape=(None, *shape),
                    dtype=dtype,
                    chunks=(chunk, *shape),
                    compression=compression,
                )
            self.stats = StatisticsAccumulator(r_max=r_max)
            self.isolated: dict[int, float] = {}
            self.sources: list[dict] = []

    def add_isolated(self, e0s: dict[int, float]) -> None:
        self.isolated.update(e0s)

    def add(self, structures: Sequence[Atoms], n_edges: Sequence[int], source: dict) -> None:
        """Append ``structures`` (targets under the ``REF_*`` keys) with their edge counts at ``r_max``."""
        f = self.file
        lengths = np.array([len(a) for a in structures], dtype=np.int64)
        start_atoms, start = int(f["offsets"][-1]), len(f["energy"])
        n_new, a_new = len(structures), int(lengths.sum())
        self._grow("offsets", 1 + start + n_new)
        f["offsets"][start + 1 :] = start_atoms + np.cumsum(lengths)
        for name in ("numbers", "positions", "forces", "charges"):
            self._grow(name, start_atoms + a_new)
        for name in _PER_CONFIG:
            self._grow(name, start + n_new)
        if n_new:
            f["numbers"][start_atoms:] = np.concatenate([a.numbers for a in structures])
            f["positions"][start_atoms:] = np.concatenate([a.positions for a in structures])
            nan3 = [np.full((len(a), 3), np.nan) for a in structures]
            f["forces"][start_atoms:] = np.concatenate(
                [a.arrays.get(keys.REF_FORCES, n) for a, n in zip(structures, nan3)]
            )
            f["cell"][start:] = np.stack([a.cell[:] if a.pbc.any() else np.zeros((3, 3)) for a in structures])
            f["pbc"][start:] = np.stack([a.pbc for a in structures])
            f["energy"][start:] = [a.info.get(keys.REF_ENERGY, np.nan) for a in structures]
            f["stress"][start:] = np.stack([a.info.get(keys.REF_STRESS, np.full((3, 3), np.nan)) for a in structures])
            f["weight"][start:] = [a.info.get(keys.REF_WEIGHT, 1.0) for a in structures]
            f["config_type"][start:] = [str(a.info.get(keys.CONFIG_TYPE, "Default")) for a in structures]
            f["n_edges"][start:] = n_edges
            f["charges"][start_atoms:] = np.concatenate(
                [a.arrays.get(keys.REF_CHARGES, np.full(len(a), np.nan)) for a in structures]
            )
            f["total_charge"][start:] = [float(a.info.get(keys.CHARGE_INFO, 0.0)) for a in structures]
            f["dipole"][start:] = np.stack([a.info.get(keys.REF_DIPOLE, np.full(3, np.nan)) for a in structures])
        for atoms, edges in zip(structures, n_edges):
            self.stats.add(atoms, edges)
        self.sources.append(source)

    def _grow(self, name: str, size: int) -> None:
        self.file[name].resize(size, axis=0)

    def close(self) -> Path:
        """Write the statistics, mark the data set complete, and rename it into place."""
        self.file.attrs.update(
            {
                "statistics": json.dumps(self.stats.to_dict()),
                "isolated_e0s": json.dumps({str(z): e for z, e in self.isolated.items()}),
                "sources": json.dumps(self.sources),
            }
        )
        self.file.attrs["complete"] = True
        self.file.flush()
        self.file.close()
        with open(self.partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


def read_info(path: str | os.PathLike) -> dict:
    """The metadata of a complete data set; a clear :class:`DataError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data set")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            n_configs = len(f["energy"]) if "energy" in f else None
    except OSError as exc:
        raise DataError(
            f"{path}: not a readable HDF5 data set ({exc}); is it truncated? Run molnet preprocess again"
        ) from exc
    if attrs.get("format") != FORMAT_NAME:
        raise DataError(
            f"{path}: an HDF5 file but not a molnet data set (format {attrs.get('format')!r}); write one with molnet preprocess"
        )
    if int(attrs.get("version", 0)) > FORMAT_VERSION:
        raise DataError(
            f"{path}: data set format {attrs['version']} is newer than this molnet reads ({FORMAT_VERSION})"
        )
    if not bool(attrs.get("complete", False)) or "statistics" not in attrs:
        raise DataError(f"{path}: the data set is incomplete (its writer did not finish); run molnet preprocess again")
    return {
        "n_configs": n_configs,
        "units": json.loads(attrs["units"]),
        "keys": json.loads(attrs["keys"]),
        "sources": json.loads(attrs["sources"]),
        "isolated_e0s": json.loads(attrs["isolated_e0s"]),
        "statistics": json.loads(attrs["statistics"]),
    }


class OnDiskDataset(torch.utils.data.Dataset):
    """Graphs of a data set's structures, each read and built when asked for.

    Memory does not grow with the number of structures: only ``offsets`` is held; every
    DataLoader worker opens its own read-only handle. ``indices`` selects a subset (a split).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        r_max: float,
        dtype: torch.dtype = torch.float32,
        indices: Sequence[int] | None = None,
        config_type_weights: dict[str, float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.info = read_info(self.path)
        self.r_max, self.dtype = r_max, dtype
        self.indices = np.arange(self.info["n_configs"]) if indices is None else np.asarray(indices, dtype=np.int64)
        self.config_type_weights = dict(config_type_weights or {})
        self._file: h5py.File | None = None
        self._pid: int | None = None
        with h5py.File(self.path, "r") as f:
            self.offsets = f["offsets"][:]

    def __len__(self) -> int:
        return len(self.indices)

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():  # a forked worker opens its own
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def atoms(self, item: int) -> Atoms:
        """Structure ``item`` of this (sub)set with its targets under the ``REF_*`` keys."""
        c = int(self.indices[item])
        f = self._handle()
        lo, hi = int(self.offsets[c]), int(self.offsets[c + 1])
        pbc = f["pbc"][c]
        atoms = Atoms(numbers=f["numbers"][lo:hi], positions=f["positions"][lo:hi], cell=f["cell"][c], pbc=pbc)
        energy, forces, stress = float(f["energy"][c]), f["forces"][lo:hi], f["stress"][c]
        if np.isfinite(energy):
            atoms.info[keys.REF_ENERGY] = energy
        if np.isfinite(forces).all():
            atoms.arrays[keys.REF_FORCES] = forces
        if np.isfinite(stress).all():
            atoms.info[keys.REF_STRESS] = stress
        charges, dipole = f["charges"][lo:hi], f["dipole"][c]
        if np.isfinite(charges).all():
            atoms.arrays[keys.REF_CHARGES] = charges
        if np.isfinite(dipole).all():
            atoms.info[keys.REF_DIPOLE] = dipole
        atoms.info[keys.CHARGE_INFO] = float(f["total_charge"][c])
        config_type = f["config_type"][c].decode()
        atoms.info[keys.CONFIG_TYPE] = config_type
        atoms.info[keys.REF_WEIGHT] = float(f["weight"][c]) * self.config_type_weights.get(config_type, 1.0)
        return atoms

    def n_edges(self, item: int) -> int:
        """Edges of structure ``item`` at the data set's stored ``r_max``."""
        return int(self._handle()["n_edges"][int(self.indices[item])])

    def __getitem__(self, item: int) -> AtomicGraph:
        return AtomicGraph.from_atoms(
            self.atoms(item), self.r_max, dtype=self.dtype, where=f"{self.path} (structure {int(self.indices[item])})"
        )

    def __getstate__(self) -> dict:  # DataLoader workers get no open handle
        return {**self.__dict__, "_file": None, "_pid": None}

    def without(self, target: str) -> np.ndarray:
        """The structures of this (sub)set that lack ``target`` (``energy``, ``forces``, ``stress``,
        ``dipole`` or ``charges``; a stress counts in cells periodic in all three directions only),
        as positions in the subset. Per-atom targets are read in blocks
        of 2²⁰ atoms, so that memory grows with the number of structures only."""
        f = self._handle()
        if target in ("energy", "stress", "dipole"):
            values = f[target][:]
            lacking = ~np.isfinite(values).reshape(len(values), math.prod(values.shape[1:])).all(axis=1)
            if target == "stress":  # fitted for bulk cells only (AtomicGraph.from_atoms)
                lacking |= ~f["pbc"][:].all(axis=1)
        elif target in ("forces", "charges"):
            column, block = f[target], 2**20
            lacking = np.zeros(self.info["n_configs"], dtype=bool)
            for start in range(0, len(column), block):
                values = column[start : start + block]
                finite = np.isfinite(values).reshape(len(values), math.prod(values.shape[1:])).all(axis=1)
                bad = start + np.flatnonzero(~finite)
                lacking[np.searchsorted(self.offsets, bad, side="right") - 1] = True
        else:
            raise ValueError(f"unknown target {target!r}")
        return np.flatnonzero(lacking[self.indices])

    def elements_present(self) -> set[str]:
        return set(StatisticsAccumulator.from_dict(self.info["statistics"]).elements())
