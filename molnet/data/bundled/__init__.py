"""Small data sets shipped with molnet (see README.md in this folder)."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from molnet.errors import DataError

BUNDLED_DIR = Path(__file__).parent
DATASETS = ("acac", "ethanol")
SPLITS = ("train", "test", "isolated_atoms")


def bundled_path(name: str, split: str = "train") -> Path:
    """Path of a bundled file, e.g. ``bundled_path("acac", "test")``."""
    if name not in DATASETS:
        raise DataError(f"unknown bundled data set {name!r}; choose from {DATASETS}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {SPLITS}")
    return BUNDLED_DIR / name / f"{split}.xyz"


def load_bundled(name: str, split: str = "train") -> list[Atoms]:
    """Read a bundled data set with its targets, e.g. ``load_bundled("acac", split="train")``."""
    from molnet.data.datasets import read_dataset

    return read_dataset(bundled_path(name, split))
