"""Atomic data: neighbor lists, graphs, data sets and their statistics."""

from molnet.data.bundled import bundled_path, load_bundled
from molnet.data.datasets import extract_targets, random_split, read_dataset, split_isolated_atoms
from molnet.data.graph import AtomicGraph
from molnet.data.neighbors import neighbor_list
from molnet.data.statistics import DatasetStatistics, compute_statistics

__all__ = [
    "AtomicGraph",
    "DatasetStatistics",
    "bundled_path",
    "compute_statistics",
    "extract_targets",
    "load_bundled",
    "neighbor_list",
    "random_split",
    "read_dataset",
    "split_isolated_atoms",
]
