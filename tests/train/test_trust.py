"""Training you can trust, on six elements (CH3NH3+/CF3SO3-, data/longrange/ionpair): the loop's
metrics equal an independent evaluation, last.ckpt is the last epoch, unidentifiable E0s are refused."""

from pathlib import Path

import ase.io
import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import molnet
from molnet.errors import DataError
from molnet.train.cli import run_callbacks
from molnet.train.datamodule import AtomicDataModule
from molnet.train.module import PotentialModule
from molnet.workflows.evaluate import evaluate_file
from tests.training_helpers import quiet_trainer

IONPAIR = Path(__file__).parents[2] / "data" / "longrange" / "ionpair"
TINY = {"name": "mpnn", "num_channels": 16, "num_interactions": 2, "radial_MLP": [16], "r_max": 4.0}
EPOCHS = 6  # 36 EMA updates: the 31st (n=30) is where float32 rounding truncated index 3 (O) to 2


@pytest.fixture(scope="module")
def ionpair_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ionpair")
    train, valid = folder / "train.xyz", folder / "valid.xyz"
    ase.io.write(train, ase.io.read(IONPAIR / "train.xyz", ":30"))
    ase.io.write(valid, ase.io.read(IONPAIR / "test.xyz", ":12"))
    assert {s for a in ase.io.read(train, ":") for s in a.get_chemical_symbols()} == {"H", "C", "N", "O", "F", "S"}
    return train, valid


class Worsen(pl.Callback):
    """From the second epoch on, kick the weights before each epoch: validation stops improving."""

    def __init__(self):
        self.final_weights: dict[str, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch >= 1:
            with torch.no_grad():
                generator = torch.Generator().manual_seed(trainer.current_epoch)
                for p in module.parameters():
                    p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))

    def on_train_epoch_end(self, trainer, module):  # the trained (not averaged) weights
        self.final_weights = {k: v.clone() for k, v in module.state_dict().items()}


class Epochs(pl.Callback):
    def __init__(self):
        self.epochs, self.start_weights = [], None

    def on_train_epoch_start(self, trainer, module):
        self.epochs.append(trainer.current_epoch)
        if self.start_weights is None:
            self.start_weights = {k: v.clone() for k, v in module.state_dict().items()}


class ValidationLog(pl.Callback):
    """The validation metrics the loop logged, per epoch."""

    def __init__(self):
        self.by_epoch: dict[int, dict[str, float]] = {}

    def on_validation_end(self, trainer, module):
        metrics = trainer.callback_metrics
        self.by_epoch[trainer.current_epoch] = {k: float(v) for k, v in metrics.items() if k.startswith("val_")}


def _fit(files, run_dir, ema_decay, max_epochs, callbacks, ckpt_path=None, **training):
    pl.seed_everything(0)
    train, valid = files
    data = AtomicDataModule(
        train_file=str(train),
        valid_file=str(valid),
        isolated_atoms_file=str(IONPAIR / "isolated_atoms.xyz"),
        batch_size=5,
        valid_batch_size=5,
    )
    module = PotentialModule(
        model=TINY, dtype="float32", lr=0.01, scheduler="cosine", **training
    )  # float32: as users train
    trainer = quiet_trainer(
        enable_checkpointing=True,
        max_epochs=max_epochs,
        num_sanity_val_steps=0,
        callbacks=[*run_callbacks(run_dir, ema_decay), *callbacks],
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer, module


@pytest.mark.parametrize("ema_decay", [0.99, None], ids=["ema", "no-ema"])
def test_logged_metrics_equal_independent_evaluation_and_last_checkpoint_is_last_epoch(
    ionpair_files, tmp_path, ema_decay
):
    worsen = Worsen()
    trainer, module = _fit(ionpair_files, tmp_path, ema_decay, EPOCHS, [worsen])
    # the loop's last validation used the weights the run ends with (EMA: the average)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_") and k != "val_loss"}
    exported = molnet.load_model(molnet.save_model(module.potential, tmp_path / "model.safetensors"), dtype=None)
    independent = evaluate_file(exported, ionpair_files[1], batch_size=5, progress=False)  # as `molnet eval` does
    assert independent["n_configs"] == 12
    for name in (
        "energy_mae_meV",
        "energy_rmse_meV",
        "energy_per_atom_mae_meV",
        "forces_mae_meV_per_A",
        "forces_rmse_meV_per_A",
    ):
        assert logged[f"val_{name}"] == pytest.approx(independent[name], rel=1e-6), name

    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert best["epoch"] < EPOCHS - 1, "validation was meant to stop improving after the first epoch"
    assert last["epoch"] == EPOCHS - 1
    final = module.state_dict()
    assert all(torch.equal(last["state_dict"][k], final[k]) for k in final)

    resumed = Epochs()
    _fit(
        ionpair_files, tmp_path, ema_decay, EPOCHS + 2, [resumed], ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt")
    )
    assert resumed.epochs == [EPOCHS, EPOCHS + 1]
    assert all(torch.equal(resumed.start_weights[k], worsen.final_weights[k]) for k in worsen.final_weights)


def test_stage_two_selects_among_its_own_epochs_and_the_run_keeps_its_best(ionpair_files, tmp_path):
    """Stage two weighs energies 1000x, so its validation losses are on another scale: best.ckpt and
    early stopping start afresh there (as mace-torch's SWA stage does). The model a run ends with is
    best.ckpt's (EMA) weights, and the metrics the loop logged for that epoch equal an independent
    evaluation of the exported model."""
    from lightning.pytorch.callbacks import EarlyStopping

    from molnet.train.cli import restore_best

    validation, early = ValidationLog(), EarlyStopping(monitor="val_loss", patience=EPOCHS)
    trainer, module = _fit(
        ionpair_files, tmp_path, 0.99, EPOCHS, [Worsen(), validation, early], stage_two_start=0.5
    )  # stage two from epoch 3; validation gets worse every epoch after the first
    first = EPOCHS // 2
    losses = {epoch: metrics["val_loss"] for epoch, metrics in validation.by_epoch.items()}
    assert losses[first] > 10 * losses[0]  # stage two's scale: without the restart, epoch 0 stays "best"
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == min(range(first, EPOCHS), key=losses.get)
    assert float(early.best_score) == pytest.approx(min(losses[e] for e in range(first, EPOCHS)))

    assert restore_best(trainer, module) == best["epoch"]
    exported = molnet.load_model(molnet.save_model(module.potential, tmp_path / "model.safetensors"), dtype=None)
    saved = {k[len("potential.") :]: v for k, v in best["state_dict"].items() if k.startswith("potential.")}
    assert all(torch.equal(exported.state_dict()[k], v) for k, v in saved.items())
    independent = evaluate_file(exported, ionpair_files[1], batch_size=5, progress=False)
    logged = validation.by_epoch[best["epoch"]]
    for name in ("energy_mae_meV", "energy_per_atom_mae_meV", "forces_mae_meV_per_A", "forces_rmse_meV_per_A"):
        # float32 energies of ~1e3 eV in batches of another order: rounding of 1e-5 relative, not 1e-6
        assert logged[f"val_{name}"] == pytest.approx(independent[name], rel=1e-5), name

    # resumed for longer, the run stays in stage two (whose first epoch would now be 7): its best
    # so far is kept, not forgotten at epoch 7
    resumed, longer = ValidationLog(), 2 * EPOCHS + 2
    last = str(tmp_path / "checkpoints" / "last.ckpt")
    _fit(ionpair_files, tmp_path, 0.99, longer, [Worsen(), resumed], ckpt_path=last, stage_two_start=0.5)
    losses.update({epoch: metrics["val_loss"] for epoch, metrics in resumed.by_epoch.items()})
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == min(range(first, longer), key=losses.get)


def test_single_stoichiometry_without_isolated_atoms_is_refused_and_trains_with_average(ionpair_files):
    train, valid = ionpair_files

    def fit(**data_kw):
        data = AtomicDataModule(train_file=str(train), valid_file=str(valid), batch_size=10, **data_kw)
        module = PotentialModule(model=TINY, dtype="float64")
        trainer = quiet_trainer(max_epochs=1, limit_train_batches=1)
        trainer.fit(module, datamodule=data)
        return module.potential

    with pytest.raises(
        DataError,
        match=r"E0s of \['H', 'C', 'N', 'O', 'F', 'S'\] cannot be fitted.*isolated_atoms_file.*data.e0s: average",
    ):
        fit()
    model = fit(e0s="average")
    assert torch.isfinite(model.e0s).all()
    explicit = {"H": -11.0, "C": -50.0, "N": -74.0, "O": -100.0, "F": -130.0, "S": -90.0}
    assert fit(e0s=explicit).e0s.tolist() == list(explicit.values())
    # isolated-atom energies read from another key
    alt = fit(isolated_atoms_file=str(IONPAIR / "isolated_atoms.xyz"), isolated_atoms_energy_key="energy_restricted")
    assert float(alt.e0s[0]) == pytest.approx(-10.707211383283003)


def test_an_explicit_isolated_atoms_file_wins_over_the_training_files_isolated_atoms(ionpair_files, tmp_path, caplog):
    """Isolated atoms in the training file (their energies 1 eV off) and an isolated_atoms_file:
    the file named explicitly gives the E0s, and the disagreement is reported by element."""
    reference = ase.io.read(IONPAIR / "isolated_atoms.xyz", ":")
    shifted = []
    for atoms in reference:
        copy = atoms.copy()  # (without the calculator that holds the file's energy)
        copy.info["energy"] = atoms.get_potential_energy() + 1.0
        shifted.append(copy)
    train = tmp_path / "train_with_atoms.xyz"
    ase.io.write(train, shifted + ase.io.read(ionpair_files[0], ":"))
    data = AtomicDataModule(
        train_file=str(train), valid_file=str(ionpair_files[1]), isolated_atoms_file=str(IONPAIR / "isolated_atoms.xyz")
    )
    data.setup()
    assert data.isolated_e0s == {int(a.numbers[0]): pytest.approx(a.get_potential_energy()) for a in reference}
    assert "give different energies (eV) for H: -11.681719 vs -10.681719" in caplog.text
    assert "the file's are used" in caplog.text


def test_options_that_select_nothing_in_the_training_data_are_reported(tmp_path, caplog):
    """Four elements in periodic cells with stress under REF_stress: a misspelt stress_key or a
    config type that no structure has would train without them, so both are reported."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    frames = []
    for k, symbols in enumerate(["Cu", "Ag", "Au", "Ni"] * 3):
        atoms = bulk(symbols, "fcc", a=3.6 + 0.1 * (k % 4), cubic=True)
        atoms.rattle(0.02, seed=k)
        atoms.calc = EMT()
        atoms.info.update(REF_energy=atoms.get_potential_energy(), REF_stress=atoms.get_stress(), config_type="bulk")
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    train = tmp_path / "cells.xyz"
    ase.io.write(train, frames)
    keys = {"energy_key": "REF_energy", "forces_key": "REF_forces"}
    AtomicDataModule(train_file=str(train), stress_key="REF_stress", **keys).setup()
    assert "stress is not fitted" not in caplog.text
    AtomicDataModule(train_file=str(train), stress_key="REF_stres", config_type_weights={"bul": 10.0}, **keys).setup()
    assert "none of its 12 fully periodic structures has a stress under the key 'REF_stres'" in caplog.text
    assert "data.config_type_weights names ['bul'], which no training structure has (their config types: ['bulk'])" in (
        caplog.text
    )


def test_eval_predictions_round_trip_and_missing_targets(ionpair_files, tmp_path, caplog):
    from molnet.models import build_model
    from molnet.models.inference import predict

    model = build_model({**TINY, "elements": ["H", "C", "N", "O", "F", "S"]}, dtype=torch.float64)
    frames = ase.io.read(ionpair_files[1], ":")
    out = tmp_path / "pred.extxyz"
    metrics = evaluate_file(model, ionpair_files[1], predictions=out, plot=tmp_path / "parity.png", progress=False)
    written = ase.io.read(out, ":")
    reference = predict(model, frames)
    assert len(written) == len(frames) == metrics["n_configs"]
    assert [a.info["molnet_source_frame"] for a in written] == list(range(len(frames)))
    # isolated atoms are not evaluated; the written frames name their frame in the input
    isolated = ase.io.read(IONPAIR / "isolated_atoms.xyz", ":")
    ase.io.write(tmp_path / "with_isolated.xyz", isolated + frames[:3])
    evaluate_file(model, tmp_path / "with_isolated.xyz", predictions=tmp_path / "p.extxyz", progress=False)
    written = ase.io.read(tmp_path / "p.extxyz", ":")
    assert [a.info["molnet_source_frame"] for a in written] == [len(isolated) + i for i in range(3)]
    for a, ref, p in zip(written, frames, reference):
        assert a.info["molnet_energy"] == pytest.approx(p["energy"], rel=1e-12)
        assert a.arrays["molnet_forces"] == pytest.approx(p["forces"], abs=1e-7)  # extxyz keeps 8 decimals
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-12)  # reference kept
    # a file without forces: said so, force metrics skipped, the energy panel alone plotted
    bare = tmp_path / "noforces.xyz"
    for a in frames:
        a.calc = type(a.calc)(a, energy=a.get_potential_energy())
    ase.io.write(bare, frames)
    with caplog.at_level("WARNING"):
        m = evaluate_file(model, bare, plot=tmp_path / "energy_only.png", progress=False)
    assert "no forces under the key 'forces' in any structure" in caplog.text
    assert "; name the key with --forces-key)" in caplog.text
    assert "forces_mae_meV_per_A" not in m and m["energy_mae_meV"] == pytest.approx(
        metrics["energy_mae_meV"], rel=1e-12
    )
    assert (tmp_path / "energy_only.png").is_file()


def test_eval_stress_of_the_periodic_structures_in_a_mixed_file(ionpair_files, tmp_path, caplog):
    """A file of cells and molecules: stress metrics over the cells, as for the cells alone."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from molnet.models import build_model

    model = build_model({**TINY, "elements": ["H", "C", "N", "O", "F", "S"]}, dtype=torch.float64)
    frames = ase.io.read(ionpair_files[1], ":3")
    rng = np.random.default_rng(0)
    for a in frames[:2]:
        energy, forces = a.get_potential_energy(), a.get_forces()
        a.set_cell(np.eye(3) * 12.0)
        a.pbc = True
        a.calc = SinglePointCalculator(a, energy=energy, forces=forces, stress=rng.normal(0, 0.01, 6))
    mixed, cells = tmp_path / "mixed.xyz", tmp_path / "cells.xyz"
    ase.io.write(mixed, frames)
    ase.io.write(cells, frames[:2])
    with caplog.at_level("WARNING"):
        m = evaluate_file(model, mixed, progress=False)
    assert "stress" not in caplog.text  # the molecule lacks no stress
    alone = evaluate_file(model, cells, progress=False)
    assert m["stress_mae_meV_per_A3"] == pytest.approx(alone["stress_mae_meV_per_A3"], rel=1e-12)
    assert m["n_configs"] == 3


def test_eval_reads_units_as_training_does(ionpair_files, tmp_path):
    """A file in Hartree and Bohr evaluates to the metrics of the same file in eV and Å."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.units import Bohr, Hartree

    from molnet.cli import build_parser
    from molnet.models import build_model

    model = build_model({**TINY, "elements": ["H", "C", "N", "O", "F", "S"]}, dtype=torch.float64)
    frames = ase.io.read(ionpair_files[1], ":4")
    atomic = []
    for a in frames:
        b = a.copy()
        b.positions = a.positions / Bohr
        b.calc = SinglePointCalculator(
            b, energy=a.get_potential_energy() / Hartree, forces=a.get_forces() / (Hartree / Bohr)
        )
        atomic.append(b)
    ev, au = tmp_path / "ev.xyz", tmp_path / "au.xyz"
    ase.io.write(ev, frames)
    ase.io.write(au, atomic)
    expected = evaluate_file(model, ev, progress=False)
    metrics = evaluate_file(model, au, progress=False, energy_unit="Hartree", length_unit="Bohr")
    for key in ("energy_mae_meV", "forces_mae_meV_per_A"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-6)  # extxyz keeps 8 decimals
    args = build_parser().parse_args(
        ["eval", "--model", "m", "--data", "d", "--energy-unit", "Hartree", "--length_unit", "Bohr"]
    )
    assert (args.energy_unit, args.length_unit) == ("Hartree", "Bohr")
