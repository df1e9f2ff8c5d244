"""Training charges: dipoles (GFN2-xTB, tblite) learned by a Coulomb model beat a charge-free baseline."""

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from molnet.data import read_dataset
from molnet.models.inference import predict
from molnet.train.datamodule import AtomicDataModule
from molnet.train.module import PotentialModule
from molnet.workflows.evaluate import evaluate_file
from tests.training_helpers import quiet_trainer

IONPAIR = Path(__file__).parents[2] / "data" / "longrange" / "ionpair"
MODEL = {
    "name": "mpnn",
    "num_channels": 16,
    "num_interactions": 2,
    "radial_MLP": [16],
    "r_max": 4.0,
    "long_range": {"name": "coulomb", "sigma": 1.0},
}


def test_dipole_training_beats_a_charge_free_baseline_and_eval_reports_it(tmp_path):
    pl.seed_everything(0)
    data = AtomicDataModule(
        train_file=str(IONPAIR / "dipoles_train.xyz"),
        valid_file=str(IONPAIR / "dipoles_test.xyz"),
        isolated_atoms_file=str(IONPAIR / "isolated_atoms.xyz"),
        batch_size=10,
        valid_batch_size=50,
    )
    module = PotentialModule(
        model=MODEL,
        dtype="float64",
        lr=0.01,
        scheduler="cosine",
        energy_weight=0.0,
        forces_weight=1.0,
        dipole_weight=10.0,
    )
    trainer = quiet_trainer(max_epochs=6, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    logged = float(trainer.callback_metrics["val_dipole_mae_me_A"])
    test = read_dataset(IONPAIR / "dipoles_test.xyz")
    reference = np.stack([a.info["REF_dipole"] for a in test])
    predicted = np.stack([p["dipole"] for p in predict(module.potential, test)])
    baseline = 1000 * np.abs(reference).mean()  # a model without charges has no dipole
    mae = 1000 * np.abs(predicted - reference).mean()
    assert mae == pytest.approx(logged, rel=1e-6)  # the loop's metric is the independent one
    assert mae < 0.2 * baseline, (mae, baseline)
    metrics = evaluate_file(module.potential, IONPAIR / "dipoles_test.xyz", progress=False)
    assert metrics["dipole_mae_me_A"] == pytest.approx(mae, rel=1e-9) and "charges_mae_me" in metrics
    charges = np.concatenate([p["charges"] for p in predict(module.potential, test)])
    assert torch.allclose(
        torch.tensor(charges.reshape(-1, 16).sum(1)), torch.zeros(100, dtype=torch.float64), atol=1e-12
    )
