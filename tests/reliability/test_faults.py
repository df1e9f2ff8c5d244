"""Faults during training and checkpointing lose nothing that was saved."""

import errno

import lightning.pytorch as pl
import pytest
import torch

from molnet.errors import NonFiniteError
from molnet.train.checkpoint_io import AtomicCheckpointIO
from molnet.train.datamodule import AtomicDataModule
from molnet.train.module import PotentialModule


def test_non_finite_loss_stops_naming_the_batch():
    data = AtomicDataModule(train_index=":10", test_file=None, batch_size=5)
    module = PotentialModule(model={"name": "mpnn", "num_channels": 8, "r_max": 4.0})
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        inference_mode=False,
        num_sanity_val_steps=0,
    )

    class Poison(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                with torch.no_grad():
                    pl_module.potential.scale.fill_(float("nan"))

    trainer.callbacks.append(Poison())
    with pytest.raises(NonFiniteError, match="epoch 0, batch 1: .*non-finite"):
        trainer.fit(module, datamodule=data)


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    good = path.read_bytes()

    def full_disk(obj, fh, *args, **kwargs):
        fh.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == good
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    monkeypatch.undo()
    assert io.load_checkpoint(path)["step"] == 1


def test_checkpoints_are_read_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Evil()}, path)
    with pytest.raises(Exception):
        AtomicCheckpointIO().load_checkpoint(path)
    from molnet.errors import ModelFileError
    from molnet.train.export import potential_from_checkpoint

    with pytest.raises(ModelFileError, match="evil.ckpt"):
        potential_from_checkpoint(path)
    assert not marker.exists()


def test_md_stops_clearly_and_keeps_the_trajectory(tmp_path):
    import numpy as np
    from ase.calculators.calculator import Calculator, all_changes
    from ase.io import read

    from molnet.data import load_bundled
    from molnet.errors import SimulationError
    from molnet.workflows.md import run_md

    class Repulsive(Calculator):
        """Pushes the first hydrogen away from the molecule: it leaves within a few hundred steps."""

        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            forces = np.zeros((len(self.atoms), 3))
            forces[7] = [20.0, 0.0, 0.0]
            self.results = {"energy": -float(forces[7, 0] * self.atoms.positions[7, 0]), "forces": forces}

    atoms = load_bundled("acac", "test")[0]
    atoms.calc = Repulsive()
    trajectory = tmp_path / "md.extxyz"
    with pytest.raises(SimulationError, match=r"atom\(s\) \[7\] have no neighbor"):
        run_md(atoms, steps=2000, ensemble="nve", trajectory=trajectory, progress=False, log_interval=10)
    assert len(read(trajectory, index=":")) > 1
