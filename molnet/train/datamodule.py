"""The data side of training: reading, splitting, statistics and loaders of atomic graphs."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from ase import Atoms
from ase.data import atomic_numbers as SYMBOL_TO_Z
from torch.utils.data import Sampler
from torch_geometric.loader import DataLoader

from molnet.data import AtomicGraph, bundled_path, compute_statistics, random_split, read_dataset, split_isolated_atoms
from molnet.data.datasets import read_isolated_atoms
from molnet.data.statistics import DatasetStatistics
from molnet.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class EpochSeededSampler(Sampler[int]):
    """A random permutation per epoch drawn from ``seed + epoch``: the same order after a resume."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at the start of every epoch
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class AtomicDataModule(pl.LightningDataModule):
    """Training, validation and test sets of atomic structures.

    Parameters
    ----------
    train_file
        extxyz / ASE db with the training structures (default: the bundled AcAc set).
    valid_file
        Validation structures; when absent, ``valid_fraction`` of the training file is held out.
    test_file
        Test structures, evaluated after training (metrics.json); optional.
    isolated_atoms_file
        Single-atom reference energies (every frame a single atom); isolated atoms inside
        ``train_file`` (``config_type=isolated_atom``) are used too.
    isolated_atoms_energy_key
        Key of the isolated atoms' energies (default: ``energy_key``).
    e0s
        ``isolated`` (isolated-atom energies; elements without one are fitted by least squares
        when the training compositions determine them, refused otherwise), ``average`` (least
        squares over the training set, minimum-norm when underdetermined, as mace-torch's
        ``E0s="average"``) or explicit values ``{symbol: eV}``.
    train_index
        ASE index string to take a slice of ``train_file`` (e.g. ``":200"``).
    energy_key, forces_key, stress_key
        Names of the targets in the files.
    require
        Targets every training frame must have.
    """

    def __init__(
        self,
        train_file: str | None = None,
        valid_file: str | None = None,
        test_file: str | None = None,
        isolated_atoms_file: str | None = None,
        isolated_atoms_energy_key: str | None = None,
        e0s: str | dict[str, float] = "isolated",
        train_index: str = ":",
        valid_fraction: float = 0.1,
        batch_size: int = 10,
        valid_batch_size: int = 20,
        num_workers: int = 0,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        require: list[str] = ["energy", "forces"],  # noqa: B006 - a plain list for LightningCLI
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if train_file is None:
            train_file = str(bundled_path("acac", "train"))
            isolated_atoms_file = isolated_atoms_file or str(bundled_path("acac", "isolated_atoms"))
            test_file = test_file or str(bundled_path("acac", "test"))
        self.train_file, self.valid_file, self.test_file = train_file, valid_file, test_file
        self.isolated_atoms_file = isolated_atoms_file
        for name, path in (("train_file", train_file), ("valid_file", valid_file), ("test_file", test_file), ("isolated_atoms_file", isolated_atoms_file)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"data.{name}: no such file {path!r}")
        self.r_max: float | None = None
        self.dtype = torch.float32
        self._structures: dict[str, list[Atoms]] = {}
        self._graphs: dict[str, list[AtomicGraph]] = {}
        self.isolated_e0s: dict[int, float] = {}

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, path: str, index: str = ":") -> list[Atoms]:
        h = self.hparams
        return read_dataset(path, h.energy_key, h.forces_key, h.stress_key, require=h.require, index=index)

    def setup(self, stage: str | None = None) -> None:
        if self._structures:
            return
        e0s, train = split_isolated_atoms(self._read(self.train_file, self.hparams.train_index))
        if self.isolated_atoms_file:
            extra = read_isolated_atoms(self.isolated_atoms_file, self.hparams.isolated_atoms_energy_key or self.hparams.energy_key)
            e0s = {**extra, **e0s}
        self.isolated_e0s = e0s
        if self.valid_file:
            valid = split_isolated_atoms(self._read(self.valid_file))[1]
        else:
            train, valid = random_split(train, self.hparams.valid_fraction, seed=self.hparams.seed)
        self._structures = {"train": train, "valid": valid}
        if self.test_file:
            self._structures["test"] = split_isolated_atoms(self._read(self.test_file))[1]
        log.info("data: %d train, %d valid, %d test structures", len(train), len(valid), len(self._structures.get("test", [])))

    def elements(self) -> list[str]:
        """Chemical symbols present in the training set, by atomic number."""
        self.setup()
        present = {s for a in self._structures["train"] for s in a.get_chemical_symbols()}
        return sorted(present, key=lambda s: SYMBOL_TO_Z[s])

    def statistics(self, elements: list[str], r_max: float, e0s: dict[str, float] | None = None) -> DatasetStatistics:
        """E0s, avg_num_neighbors and force scale of the training set; ``e0s`` overrides ``data.e0s``."""
        self.setup()
        return compute_statistics(self._structures["train"], elements, r_max, self.isolated_e0s, e0s or self.hparams.e0s)

    def check_elements(self, elements: list[str]) -> None:
        """Refuse data with elements the model does not have."""
        self.setup()
        for split, structures in self._structures.items():
            present = {s for a in structures for s in a.get_chemical_symbols()}
            if present - set(elements):
                raise ConfigError(f"the {split} data contain element(s) {sorted(present - set(elements))} that the model does not know ({elements})")

    # -- loaders ----------------------------------------------------------------------------------
    def graphs(self, split: str) -> list[AtomicGraph]:
        if self.r_max is None:
            raise RuntimeError("AtomicDataModule.r_max is set by the training module before loaders are built")
        if split not in self._graphs:
            self.setup()
            if split not in self._structures:
                raise DataError(f"no {split} data configured")
            path = {"train": self.train_file, "valid": self.valid_file or self.train_file, "test": self.test_file}[split]
            self._graphs[split] = [
                AtomicGraph.from_atoms(a, self.r_max, dtype=self.dtype, where=f"{path} ({split} structure {i})")
                for i, a in enumerate(self._structures[split])
            ]
        return self._graphs[split]

    def train_dataloader(self) -> DataLoader:
        graphs = self.graphs("train")
        return DataLoader(graphs, batch_size=self.hparams.batch_size, sampler=EpochSeededSampler(len(graphs), self.hparams.seed), num_workers=self.hparams.num_workers, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.graphs("valid"), batch_size=self.hparams.valid_batch_size, shuffle=False, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.graphs("test"), batch_size=self.hparams.valid_batch_size, shuffle=False, num_workers=self.hparams.num_workers)
