"""The data side of training: reading, splitting, statistics and loaders of atomic graphs.

Each split comes either from extxyz / ASE db files, read into memory and turned into graphs once,
or from an on-disk data set written by ``molnet preprocess`` (:mod:`molnet.data.ondisk`), read
lazily one structure at a time in the DataLoader workers, so that memory does not grow with
the number of structures. Under DDP, Lightning's distributed sampler gives each rank its share
of the indices; no rank reads the others'.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch
from ase import Atoms
from ase.data import atomic_numbers as SYMBOL_TO_Z
from ase.data import chemical_symbols
from torch.utils.data import Dataset, Sampler
from torch_geometric.loader import DataLoader

from molnet.data import AtomicGraph, bundled_path, keys, random_split, read_dataset, split_isolated_atoms
from molnet.data.datasets import read_isolated_atoms, split_indices
from molnet.data.ondisk import OnDiskDataset, is_dataset
from molnet.data.statistics import DatasetStatistics, StatisticsAccumulator, accumulate, check_e0_choice
from molnet.data.units import canonical_units
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


class GraphList(Dataset):
    """Structures held in memory, turned into graphs once (at the first epoch)."""

    def __init__(self, structures: Sequence[Atoms], r_max: float, dtype: torch.dtype, where: str) -> None:
        self.structures = list(structures)
        self.graphs = [
            AtomicGraph.from_atoms(a, r_max, dtype=dtype, where=f"{where} structure {i}")
            for i, a in enumerate(structures)
        ]

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, item: int) -> AtomicGraph:
        return self.graphs[item]


class AtomicDataModule(pl.LightningDataModule):
    """Training, validation and test sets of atomic structures.

    Parameters
    ----------
    train_file
        extxyz / ASE db with the training structures, or a data set written by ``molnet
        preprocess`` (read lazily); default: the bundled AcAc set.
    valid_file
        Validation structures (file or data set); when absent, ``valid_fraction`` of the
        training structures is held out.
    test_file
        Test structures (file or data set), evaluated after training (metrics.json); optional.
    isolated_atoms_file
        Single-atom reference energies (every frame a single atom); isolated atoms inside
        ``train_file`` (``config_type=isolated_atom``, or mace-torch's ``IsolatedAtom``) are used too.
    isolated_atoms_energy_key
        Key of the isolated atoms' energies (default: ``energy_key``).
    e0s
        ``isolated`` (isolated-atom energies; elements without one are fitted by least squares
        when the training compositions determine them, refused otherwise), ``average`` (least
        squares over the training set, minimum-norm when underdetermined, as mace-torch's
        ``E0s="average"``) or explicit values ``{symbol: eV}``.
    train_index
        ASE index string to take a slice of an extxyz ``train_file`` (e.g. ``":200"``).
    energy_key, forces_key, stress_key, dipole_key, charges_key
        Names of the targets in the files (dipoles and atomic charges train models with a Coulomb
        block; a structure's total charge is ``info["charge"]``).
    energy_unit, length_unit
        Units of the files (``eV``, ``Hartree``, ``kcal/mol``, ``kJ/mol``; ``Å``, ``Bohr``):
        converted on read to eV and Å. A data set written from other units is refused.
    config_type_weights
        Loss weight per ``config_type`` (as mace-torch's ``config_type_weights``), multiplying
        each structure's own weight.
    require
        Targets every training frame must have.
    num_workers
        DataLoader worker processes (graphs of an on-disk data set are built in them).
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
        dipole_key: str = "dipole",
        charges_key: str = "charges",
        energy_unit: str = "eV",
        length_unit: str = "Å",
        config_type_weights: dict[str, float] | None = None,
        require: list[str] = ["energy", "forces"],  # noqa: B006 - a plain list for LightningCLI
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if train_file is None:
            train_file = str(bundled_path("acac", "train"))
            isolated_atoms_file = isolated_atoms_file or str(bundled_path("acac", "isolated_atoms"))
            test_file = test_file or str(bundled_path("acac", "test"))
        self.files = {"train": train_file, "valid": valid_file, "test": test_file}
        self.isolated_atoms_file = isolated_atoms_file
        for name, path in (
            ("train_file", train_file),
            ("valid_file", valid_file),
            ("test_file", test_file),
            ("isolated_atoms_file", isolated_atoms_file),
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"data.{name}: no such file {path!r}")
        check_e0_choice(e0s)
        self.units = canonical_units(energy_unit, length_unit)
        self.r_max: float | None = None
        self.dtype = torch.float32
        self._sources: dict[str, list[Atoms] | OnDiskDataset] = {}
        self._datasets: dict[str, Dataset] = {}
        self.isolated_e0s: dict[int, float] = {}

    @property
    def train_file(self) -> str:
        return self.files["train"]

    @property
    def valid_file(self) -> str | None:
        return self.files["valid"]

    @property
    def test_file(self) -> str | None:
        return self.files["test"]

    def configure(self, r_max: float, dtype: torch.dtype) -> None:
        """Set the cutoff (Å) and dtype of the graphs; called by the training module with its model's."""
        if self._datasets and (r_max, dtype) != (self.r_max, self.dtype):
            raise ConfigError(
                f"the data were already built with r_max {self.r_max} and {self.dtype}, not {r_max} and {dtype}"
            )
        self.r_max, self.dtype = float(r_max), dtype

    # -- reading ---------------------------------------------------------------------------------
    def _open(self, split: str) -> list[Atoms] | OnDiskDataset:
        """The structures of a split's file: in memory (extxyz, db) or an on-disk data set."""
        h, path = self.hparams, self.files[split]
        if is_dataset(path):
            if split == "train" and h.train_index != ":":
                raise ConfigError(
                    f"data.train_index {h.train_index!r} takes a slice of an extxyz or ASE db file, but "
                    f"data.train_file {path} is an on-disk data set, which is used whole; preprocess the "
                    "structures you want into a data set of their own, or train from the extxyz file"
                )
            dataset = OnDiskDataset(path, r_max=0.0, config_type_weights=h.config_type_weights)
            if dataset.info["units"] != self.units:
                raise ConfigError(
                    f"data.{split}_file {path}: the data set was converted from {dataset.info['units']}, but the "
                    f"configuration declares {self.units}; set data.energy_unit/length_unit to match"
                )
            for target in h.require:
                lacking = dataset.without(target)
                if len(lacking):
                    raise DataError(
                        f"data.{split}_file {path}: {len(lacking)} of {len(dataset)} structures have no {target} "
                        f"(the first: structure {int(lacking[0])}), but data.require lists it; drop {target} "
                        "from data.require, or preprocess data that have it"
                    )
            return dataset
        index = h.train_index if split == "train" else ":"
        structures = read_dataset(
            path,
            h.energy_key,
            h.forces_key,
            h.stress_key,
            require=h.require,
            index=index,
            energy_unit=h.energy_unit,
            length_unit=h.length_unit,
            dipole_key=h.dipole_key,
            charges_key=h.charges_key,
        )
        for atoms in structures:
            weight = (h.config_type_weights or {}).get(str(atoms.info.get("config_type", "Default")), 1.0)
            atoms.info["REF_weight"] = float(atoms.info.get("REF_weight", 1.0)) * weight
        return structures

    def setup(self, stage: str | None = None) -> None:
        if self._sources:
            return
        train = self._open("train")
        e0s: dict[int, float] = {}
        if isinstance(train, OnDiskDataset):
            e0s = {int(z): e for z, e in train.info["isolated_e0s"].items()}
        else:
            e0s, train = split_isolated_atoms(train)
            self._warn_of_options_that_select_nothing(train)
        if self.isolated_atoms_file:  # named explicitly: its energies win over the training file's
            energy_key = self.hparams.isolated_atoms_energy_key or self.hparams.energy_key
            given = read_isolated_atoms(self.isolated_atoms_file, energy_key, self.hparams.energy_unit)
            differ = sorted(z for z in given.keys() & e0s.keys() if abs(given[z] - e0s[z]) > 1e-6)
            if differ:
                log.warning(
                    "data.isolated_atoms_file %s and the training data's isolated atoms give different energies "
                    "(eV) for %s; the file's are used",
                    self.isolated_atoms_file,
                    ", ".join(f"{chemical_symbols[z]}: {given[z]:.6f} vs {e0s[z]:.6f}" for z in differ),
                )
            e0s = {**e0s, **given}
        self.isolated_e0s = e0s
        if self.files["valid"]:
            valid = self._open("valid")
            if not isinstance(valid, OnDiskDataset):
                valid = split_isolated_atoms(valid)[1]
        elif isinstance(train, OnDiskDataset):
            train_indices, valid_indices = split_indices(len(train), self.hparams.valid_fraction, self.hparams.seed)
            valid = OnDiskDataset(train.path, 0.0, indices=valid_indices, config_type_weights=train.config_type_weights)
            train = OnDiskDataset(train.path, 0.0, indices=train_indices, config_type_weights=train.config_type_weights)
        else:
            train, valid = random_split(train, self.hparams.valid_fraction, seed=self.hparams.seed)
        self._sources = {"train": train, "valid": valid}
        if self.files["test"]:
            test = self._open("test")
            self._sources["test"] = test if isinstance(test, OnDiskDataset) else split_isolated_atoms(test)[1]
        log.info(
            "data: %d train, %d valid, %d test structures", len(train), len(valid), len(self._sources.get("test", []))
        )

    def _warn_of_options_that_select_nothing(self, train: list[Atoms]) -> None:
        """Warn when ``stress_key`` finds no stress in any fully periodic training structure, or
        ``config_type_weights`` names config types that no training structure has (a misspelt
        key or type would otherwise train without it)."""
        h = self.hparams
        periodic = [a for a in train if a.pbc.all()]
        if periodic and not any(keys.REF_STRESS in a.info for a in periodic):
            log.warning(
                "data.train_file: none of its %d fully periodic structures has a stress under the key %r (info keys "
                "of the first: %s), so stress is not fitted; name the key with data.stress_key",
                len(periodic),
                h.stress_key,
                sorted(k for k in periodic[0].info if not k.startswith("REF_")),
            )
        present = {str(a.info.get("config_type", "Default")) for a in train}
        unknown = sorted(set(h.config_type_weights or {}) - present)
        if unknown:
            log.warning(
                "data.config_type_weights names %s, which no training structure has (their config types: %s)",
                unknown,
                sorted(present),
            )

    def _present(self, split: str) -> set[str]:
        source = self._sources[split]
        if isinstance(source, OnDiskDataset):
            return source.elements_present()
        return {s for a in source for s in a.get_chemical_symbols()}

    def elements(self) -> list[str]:
        """Chemical symbols present in the training set, by atomic number."""
        self.setup()
        return sorted(self._present("train"), key=lambda s: SYMBOL_TO_Z[s])

    def check_elements(self, elements: list[str]) -> None:
        """Refuse data with elements the model does not have."""
        self.setup()
        for split in self._sources:
            extra = self._present(split) - set(elements)
            if extra:
                raise ConfigError(
                    f"the {split} data contain element(s) {sorted(extra)} that the model does not know ({elements})"
                )

    def statistics(self, elements: list[str], e0s: dict[str, float] | None = None) -> DatasetStatistics:
        """E0s, avg_num_neighbors, force scale and shift of the training set at the configured r_max.

        In-memory sets: from the training graphs (their edge counts give avg_num_neighbors, so
        the neighbor lists are built once). Data sets: the statistics stored by ``molnet
        preprocess`` when the whole file trains, else one streaming pass over the training items.
        ``e0s`` overrides ``data.e0s``.
        """
        if self.r_max is None:
            raise ConfigError("AtomicDataModule.configure(r_max, dtype) must be called before statistics()")
        self.setup()
        train = self._sources["train"]
        if isinstance(train, OnDiskDataset):
            acc = StatisticsAccumulator.from_dict(train.info["statistics"])
            if len(train) != train.info["n_configs"]:
                acc = accumulate(
                    (train.atoms(i) for i in range(len(train))),
                    acc.r_max,
                    (train.n_edges(i) for i in range(len(train))),
                )
            if acc.r_max != self.r_max:
                raise ConfigError(
                    f"data.train_file {train.path}: neighbor counts were stored at r_max {acc.r_max} Å but the model's "
                    f"r_max is {self.r_max} Å; run molnet preprocess with --r_max {self.r_max}"
                )
        else:
            graphs = self.dataset("train").graphs
            acc = accumulate(train, self.r_max, (g.edge_index.shape[1] for g in graphs))
        return acc.statistics(elements, self.isolated_e0s, e0s or self.hparams.e0s)

    # -- loaders ----------------------------------------------------------------------------------
    def dataset(self, split: str) -> Dataset:
        """The graphs of a split at the configured r_max and dtype."""
        if self.r_max is None:
            raise ConfigError("AtomicDataModule.configure(r_max, dtype) must be called before the data are built")
        if split not in self._datasets:
            self.setup()
            if split not in self._sources:
                raise DataError(f"no {split} data configured")
            source = self._sources[split]
            if isinstance(source, OnDiskDataset):
                source.r_max, source.dtype = self.r_max, self.dtype
                self._datasets[split] = source
            else:
                path = self.files[split] or self.files["train"]
                self._datasets[split] = GraphList(source, self.r_max, self.dtype, f"{path} ({split})")
        return self._datasets[split]

    def _loader(self, split: str, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        n = len(self.dataset("train"))
        return self._loader("train", self.hparams.batch_size, EpochSeededSampler(n, self.hparams.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", self.hparams.valid_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.valid_batch_size)
