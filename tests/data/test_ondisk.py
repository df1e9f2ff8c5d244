"""On-disk data sets: `molnet preprocess` → HDF5 → lazy training equal to training from extxyz."""

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import h5py
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator

from molnet.data import read_dataset
from molnet.data.ondisk import OnDiskDataset, read_info
from molnet.data.preprocess import preprocess
from molnet.errors import ConfigError, DataError
from molnet.train.datamodule import AtomicDataModule
from molnet.train.module import PotentialModule
from tests.training_helpers import quiet_trainer

IONPAIR = Path(__file__).parents[2] / "data" / "longrange" / "ionpair"
TINY = {"name": "mpnn", "num_channels": 16, "num_interactions": 2, "radial_MLP": [16], "r_max": 4.0}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six-element ion-pair structures split over two files (one with isolated atoms), and a validation file."""
    folder = tmp_path_factory.mktemp("ondisk")
    frames = ase.io.read(IONPAIR / "train.xyz", ":30")
    ase.io.write(folder / "part_a.xyz", ase.io.read(IONPAIR / "isolated_atoms.xyz", ":") + frames[:14])
    ase.io.write(folder / "part_b.xyz", frames[14:])
    ase.io.write(folder / "valid.xyz", ase.io.read(IONPAIR / "test.xyz", ":10"))
    return folder


def _train(train_file, valid_file, tmp_path, **data_kw):
    pl.seed_everything(0)
    data = AtomicDataModule(
        train_file=str(train_file), valid_file=str(valid_file), batch_size=5, valid_batch_size=5, **data_kw
    )
    module = PotentialModule(model=TINY, dtype="float64", lr=0.01, scheduler="cosine")
    trainer = quiet_trainer(max_epochs=3, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}, module.potential


def test_training_from_the_data_set_equals_training_from_extxyz(files, tmp_path):
    dataset = preprocess([str(files / "part_*.xyz")], tmp_path / "train.h5", r_max=4.0, workers=2, progress=False)
    valid = preprocess([str(files / "valid.xyz")], tmp_path / "valid.h5", r_max=4.0, progress=False)
    info = read_info(dataset)
    assert info["n_configs"] == 30 and len(info["isolated_e0s"]) == 6 and len(info["sources"]) == 2
    ase.io.write(tmp_path / "all.xyz", ase.io.read(files / "part_a.xyz", ":") + ase.io.read(files / "part_b.xyz", ":"))
    from_disk, model_disk = _train(dataset, valid, tmp_path)
    from_xyz, model_xyz = _train(tmp_path / "all.xyz", files / "valid.xyz", tmp_path)
    for key in ("val_energy_mae_meV", "val_forces_mae_meV_per_A", "val_loss"):
        assert from_disk[key] == pytest.approx(from_xyz[key], rel=1e-6), key
    for name in ("e0s", "scale", "shift"):
        assert torch.allclose(getattr(model_disk, name), getattr(model_xyz, name), rtol=1e-10), name
    assert model_disk.config["avg_num_neighbors"] == pytest.approx(model_xyz.config["avg_num_neighbors"], rel=1e-12)


def test_valid_fraction_of_a_data_set_and_appending(files, tmp_path):
    path = preprocess([str(files / "part_a.xyz")], tmp_path / "set.h5", r_max=4.0, progress=False)
    preprocess([str(files / "part_b.xyz")], path, r_max=4.0, append=True, progress=False)
    assert read_info(path)["n_configs"] == 30
    data = AtomicDataModule(train_file=str(path), valid_fraction=0.2)
    data.setup()
    data.configure(4.0, torch.float64)
    train, valid = data.dataset("train"), data.dataset("valid")
    assert len(train) == 24 and len(valid) == 6 and not set(train.indices) & set(valid.indices)
    graph = train[0]
    assert graph.edge_index.shape[1] == train.n_edges(0)
    with pytest.raises(DataError, match="append with the same --r_max"):
        preprocess([str(files / "part_b.xyz")], path, r_max=5.0, append=True, progress=False)
    # a file already in the set, under its own or another name, is refused and the set kept
    copy = tmp_path / "copy_of_b.xyz"
    copy.write_bytes((files / "part_b.xyz").read_bytes())
    with pytest.raises(DataError, match=r"copy_of_b.xyz has the same content .* as .*part_b.xyz, already in"):
        preprocess([str(copy)], path, r_max=4.0, append=True, progress=False)
    assert read_info(path)["n_configs"] == 30


def test_broken_unfinished_and_mismatched_data_sets_fail_naming_the_file(files, tmp_path):
    good = preprocess([str(files / "valid.xyz")], tmp_path / "good.h5", r_max=4.0, progress=False)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.h5: not a readable HDF5 data set"):
        read_info(truncated)
    unfinished = tmp_path / "unfinished.h5"
    unfinished.write_bytes(good.read_bytes())
    with h5py.File(unfinished, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(DataError, match="unfinished.h5: the data set is incomplete"):
        OnDiskDataset(unfinished, 4.0)
    with pytest.raises(ConfigError, match=r"good.h5: the data set was converted from .*'Hartree'"):
        AtomicDataModule(train_file=str(good), energy_unit="Hartree").setup()
    with pytest.raises(ConfigError, match=r"data.train_index ':10' takes a slice of an extxyz or ASE db file"):
        AtomicDataModule(train_file=str(good), train_index=":10").setup()
    with pytest.raises(DataError, match=r"valid.xyz, frame 0: no energy under the key 'E_dft'"):
        preprocess([str(files / "valid.xyz")], tmp_path / "nokey.h5", energy_key="E_dft", progress=False)
    assert not (tmp_path / "nokey.h5").exists() and not (tmp_path / "nokey.h5.partial").exists()


def test_required_targets_and_the_valid_fraction_are_checked_on_a_data_set(files, tmp_path):
    """data.require and data.valid_fraction hold for a data set as for an extxyz file."""
    frames = ase.io.read(files / "valid.xyz", ":")
    for i in (3, 7):  # two structures without forces
        energy = frames[i].get_potential_energy()
        frames[i].calc = SinglePointCalculator(frames[i], energy=energy)
    ase.io.write(tmp_path / "some_forces.xyz", frames)
    path = preprocess(
        [str(tmp_path / "some_forces.xyz")], tmp_path / "s.h5", r_max=4.0, require=("energy",), progress=False
    )
    assert len(OnDiskDataset(path, 4.0).without("forces")) == 2
    with pytest.raises(DataError, match=r"s.h5: an on-disk data set \(HDF5\), which training reads"):
        read_dataset(path)  # as `molnet eval --data s.h5` does
    with pytest.raises(DataError, match=r"s.h5: 2 of 10 structures have no forces \(the first: structure 3\)"):
        AtomicDataModule(train_file=str(path), require=["energy", "forces"]).setup()
    with pytest.raises(DataError, match=r"s.h5: 10 of 10 structures have no stress"):
        AtomicDataModule(train_file=str(path), require=["energy", "stress"]).setup()
    for fraction in (0.0, 1.5):
        with pytest.raises(DataError, match="valid_fraction must lie in"):
            AtomicDataModule(train_file=str(path), require=["energy"], valid_fraction=fraction).setup()
    only_isolated = preprocess([str(IONPAIR / "isolated_atoms.xyz")], tmp_path / "iso.h5", r_max=4.0, progress=False)
    with pytest.raises(DataError, match=r"cannot split 0 configuration\(s\)"):
        AtomicDataModule(train_file=str(only_isolated)).setup()
    data = AtomicDataModule(train_file=str(path), require=["energy"], valid_fraction=0.3)
    data.setup()
    data.configure(4.0, torch.float64)
    assert len(data.dataset("valid")) == 3


def test_sources_are_files_each_read_once(files, tmp_path):
    from molnet.data.preprocess import expand_sources

    assert expand_sources([str(files / "part_a.xyz"), str(files / "part_*.xyz")]) == [
        files / "part_a.xyz",
        files / "part_b.xyz",
    ]
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="matches only folders"):
        expand_sources([str(tmp_path / "fold*")])
    with pytest.raises(DataError, match="matches no file"):
        expand_sources([str(tmp_path / "none*.xyz")])


def test_a_killed_preprocess_leaves_no_data_set(files, tmp_path):
    big = tmp_path / "big.xyz"
    ase.io.write(big, ase.io.read(IONPAIR / "train.xyz", ":") * 4)
    out = tmp_path / "killed.h5"
    code = f"import os, molnet.data.ondisk as o; o.DatasetWriter.close = lambda self: os._exit(9); from molnet.data.preprocess import preprocess; preprocess([{str(big)!r}], {str(out)!r}, progress=False)"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    assert done.returncode == 9
    assert not out.exists()  # only the .partial file, which never reads as complete
    with pytest.raises(DataError, match="killed.h5.partial: (the data set is incomplete|not a readable HDF5 data set)"):
        read_info(out.with_name(out.name + ".partial"))


def test_hartree_bohr_copy_trains_to_the_same_model(files, tmp_path):
    def convert(src, dst):
        frames = ase.io.read(src, ":")
        for a in frames:
            e, f = a.get_potential_energy(), a.get_forces()
            a.calc = None
            a.info["energy"] = e / units.Hartree
            a.arrays["forces"] = f / (units.Hartree / units.Bohr)
            a.positions /= units.Bohr
        ase.io.write(dst, frames)

    convert(files / "part_b.xyz", tmp_path / "train_au.xyz")
    convert(files / "valid.xyz", tmp_path / "valid_au.xyz")
    iso = {"isolated_atoms_file": str(IONPAIR / "isolated_atoms.xyz")}
    reference, model_ev = _train(files / "part_b.xyz", files / "valid.xyz", tmp_path, **iso)
    converted, model_au = _train(
        tmp_path / "train_au.xyz",
        tmp_path / "valid_au.xyz",
        tmp_path,
        energy_unit="Hartree",
        length_unit="Bohr",
        e0s={s: float(v) for s, v in zip(model_ev.elements, model_ev.e0s)},
    )
    for key in ("val_energy_mae_meV", "val_forces_mae_meV_per_A"):
        assert converted[key] == pytest.approx(reference[key], rel=1e-6), key
    worst = max(
        float((a - b).abs().max()) for a, b in zip(model_ev.state_dict().values(), model_au.state_dict().values())
    )
    assert worst < 1e-7, worst  # the same weights up to the rounding of the unit round trip


def test_two_ddp_processes_train_on_disjoint_shares_that_cover_the_set(files, tmp_path):
    """`molnet train` under DDP (two CPU processes, gloo) on a preprocessed data set: in every epoch
    the ranks' training structures are disjoint and together are the training set, once."""
    import json

    from molnet.data import keys

    dataset = preprocess([str(files / "part_*.xyz")], tmp_path / "train.h5", r_max=4.0, progress=False)
    valid = preprocess([str(files / "valid.xyz")], tmp_path / "valid.h5", r_max=4.0, progress=False)
    items = OnDiskDataset(dataset, 4.0, dtype=torch.float64)
    expected = sorted(round(float(items[i][keys.ENERGY]), 8) for i in range(len(items)))
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = [sys.executable, "-m", "molnet.cli", "train", "--run_dir", str(tmp_path / "run")]
    cmd += ["--data.train_file", str(dataset), "--data.valid_file", str(valid), "--data.test_file", "null"]
    cmd += ["--data.batch_size", "5", "--model", json.dumps(TINY), "--training.dtype", "float64"]
    cmd += ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--ema_decay", "null"]
    cmd += ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    cmd += ["--trainer.callbacks+=tests.training_helpers.RecordTrainingItems", "--trainer.callbacks.folder", str(probe)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {}
    for rank in (0, 1):
        for line in (probe / f"rank{rank}.jsonl").read_text().splitlines():
            entry = json.loads(line)
            seen.setdefault((entry["epoch"], rank), []).extend(round(e, 8) for e in entry["energies"])
    for epoch in (0, 1):
        first, second = seen[(epoch, 0)], seen[(epoch, 1)]
        assert len(first) == len(second) == len(expected) // 2 and not set(first) & set(second), epoch
        assert sorted(first + second) == expected, epoch
    assert seen[(0, 0)] != seen[(1, 0)]  # the order is reshuffled per epoch


def test_ddp_sampler_wrapper_gives_disjoint_shares(files, tmp_path):
    """Lightning wraps the epoch sampler for DDP: each rank gets its share, together all items once."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    from molnet.train.datamodule import EpochSeededSampler

    path = preprocess([str(files / "part_*.xyz")], tmp_path / "ddp.h5", r_max=4.0, progress=False)
    n = len(OnDiskDataset(path, 4.0))
    seen = []
    for rank in range(2):
        sampler = DistributedSamplerWrapper(EpochSeededSampler(n, seed=0), num_replicas=2, rank=rank, shuffle=False)
        sampler.set_epoch(3)
        seen.append(list(sampler))
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(n))
    np.testing.assert_array_equal(sorted(seen[0] + seen[1]), np.arange(n))
