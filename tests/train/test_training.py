import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from molnet.errors import ConfigError, DataError
from molnet.train.datamodule import AtomicDataModule
from molnet.train.module import DEFAULT_MODEL, PotentialModule
from tests.training_helpers import quiet_trainer

TINY = {"name": "mpnn", "num_channels": 16, "num_interactions": 2, "radial_MLP": [16], "r_max": 4.0}


def _trainer(**kw):
    return quiet_trainer(gradient_clip_val=10.0, **kw)


def test_short_run_halves_validation_force_error():
    pl.seed_everything(0)
    data = AtomicDataModule(train_index=":40", valid_fraction=0.25, batch_size=5, test_file=None)
    module = PotentialModule(model=TINY, dtype="float64", lr=0.01, scheduler="cosine")
    trainer = _trainer(max_epochs=25)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]["val_forces_mae_meV_per_A"]
    trainer.fit(module, datamodule=data)
    after = trainer.validate(module, datamodule=data, verbose=False)[0]["val_forces_mae_meV_per_A"]
    assert after < 0.5 * before, (before, after)


class _RecordRates(pl.Callback):
    """The energy weight and rate at each training epoch's end, and both at its start as a
    callback sees them (Lightning's LearningRateMonitor logs the rate there, before the module's hooks)."""

    def __init__(self):
        self.epochs, self.starts, self.start_weights = [], [], []

    def on_train_epoch_start(self, trainer, module):
        self.starts.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.start_weights.append(module.loss_weights["energy"])

    def on_train_epoch_end(self, trainer, module):
        self.epochs.append((module.loss_weights["energy"], trainer.optimizers[0].param_groups[0]["lr"]))


@pytest.mark.parametrize("scheduler", ["plateau", "cosine"])
def test_stage_two_switches_weights_and_holds_its_learning_rate(scheduler):
    """As mace-torch's SWA stage: energy weight and rate switch once, and no scheduler changes the rate after."""
    Record = _RecordRates
    pl.seed_everything(0)
    ionpair = Path(__file__).parents[2] / "data" / "longrange" / "ionpair"  # six elements
    data = AtomicDataModule(
        train_file=str(ionpair / "train.xyz"),
        isolated_atoms_file=str(ionpair / "isolated_atoms.xyz"),
        train_index=":20",
        valid_fraction=0.25,
        batch_size=5,
        test_file=None,
    )
    module = PotentialModule(
        model=TINY,
        dtype="float64",
        lr=0.01,
        scheduler=scheduler,
        plateau_patience=0,
        plateau_factor=0.5,
        stage_two_start=0.5,
        stage_two_energy_weight=1000.0,
        stage_two_lr=0.002,
    )
    record = Record()
    trainer = _trainer(max_epochs=6, callbacks=[record])
    trainer.fit(module, datamodule=data)
    assert record.start_weights == [1.0, 1.0, 1.0, 1000.0, 1000.0, 1000.0]
    assert [w for w, _ in record.epochs[3:]] == [1000.0, 1000.0, 1000.0]
    # stage two's first epochs have larger losses than stage one's best: with patience 0 the plateau
    # would halve the rate at once, and the cosine would decay it; it must stay at stage_two_lr,
    # from the first stage-two epoch's start (what the learning-rate monitor logs) to the end
    assert [lr for _, lr in record.epochs[3:]] == [0.002, 0.002, 0.002]
    assert record.starts[3:] == [0.002, 0.002, 0.002]
    assert all(lr != 0.002 for lr in record.starts[:3])
    # the switch does not depend on the weights changing: equal energy weights still switch the rate
    pl.seed_everything(0)
    module = PotentialModule(
        model=TINY,
        dtype="float64",
        lr=0.01,
        scheduler="plateau",
        stage_two_start=0.5,
        stage_two_energy_weight=1.0,
        stage_two_lr=0.002,
    )
    record = Record()
    _trainer(max_epochs=4, callbacks=[record]).fit(module, datamodule=data)
    assert [lr for _, lr in record.epochs] == [0.01, 0.01, 0.002, 0.002] and module.stage_two_active


def test_statistics_are_stored_in_the_model():
    data = AtomicDataModule(train_index=":20", test_file=None)
    module = PotentialModule(model=TINY)
    trainer = _trainer(max_epochs=1, limit_train_batches=1)
    trainer.fit(module, datamodule=data)
    model = module.potential
    assert model.elements == ["H", "C", "O"]
    assert float(model.e0s[0]) == pytest.approx(-13.568422178253735, rel=1e-6)
    assert model.config["avg_num_neighbors"] > 5 and float(model.scale) > 0.1


def test_config_errors_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="unknown model family 'nope'"):
        PotentialModule(model={"name": "nope"})
    with pytest.raises(ConfigError, match="data.train_file: no such file"):
        AtomicDataModule(train_file=str(tmp_path / "missing.xyz"))
    bad = tmp_path / "nokey.xyz"
    bad.write_text('1\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc="F F F"\nH 0 0 0\n')
    with pytest.raises(DataError, match=r"nokey.xyz, frame 0: no forces under the key 'forces'"):
        AtomicDataModule(train_file=str(bad)).setup()


def test_fine_tuning_refuses_incompatible_elements(tmp_path):
    from molnet.models import build_model, save_model

    path = save_model(build_model({"name": "mpnn", "elements": ["H", "C"], "r_max": 4.0}), tmp_path / "hc.safetensors")
    data = AtomicDataModule(train_index=":20", test_file=None)
    module = PotentialModule(init_from=str(path))
    with pytest.raises(ConfigError, match=r"element\(s\) \['O'\] that the model does not know"):
        _trainer(max_epochs=1).fit(module, datamodule=data)


def test_fine_tuning_refuses_a_model_section_that_asks_for_another_architecture(tmp_path):
    from molnet.models import build_model, save_model

    path = save_model(
        build_model({"name": "mpnn", "elements": ["H", "C", "O"], "r_max": 4.0}), tmp_path / "hco.safetensors"
    )
    data = AtomicDataModule(train_index=":20", test_file=None)
    module = PotentialModule(model={"name": "mpnn", "num_channels": 8, "r_max": 4.0}, init_from=str(path))
    with pytest.raises(ConfigError, match=r"num_channels: 8 \(the file: 64\)"):
        _trainer(max_epochs=1).fit(module, datamodule=data)
    # the values written (a section without a name, --model.X) are compared as the file stores
    # them, those equal to the default MACE's too
    stored = build_model({"name": "mpnn", "elements": ["O", "C", "H"], "r_max": 4.0, "radial_MLP": [64]}).config
    written = {"r_max": 4.0, "radial_MLP": (64,), "elements": ["H", "C", "O"]}
    PotentialModule(model=written, init_from=str(path))._refuse_other_architecture(stored)
    # the whole default model names nothing: run folders of earlier versions recorded it for fine-tuning runs
    PotentialModule(model=dict(DEFAULT_MODEL), init_from=str(path))._refuse_other_architecture(stored)
    for extra, named in (
        ({"r_max": 3.0}, r"r_max: 3.0 \(the file: 4.0\)"),
        ({"e0s": {"H": -1.0}}, "e0s"),
        ({"num_channels": "32"}, r"num_channels: 32 \(the file: 64\)"),  # the default MACE's, as --model.X
        ({"name": "mace"}, r"name: 'mace' \(the file: 'mpnn'\)"),
    ):
        with pytest.raises(ConfigError, match=named):
            PotentialModule(model={**written, **extra}, init_from=str(path))._refuse_other_architecture(stored)


def test_options_that_would_be_ignored_are_refused():
    with pytest.raises(
        ConfigError, match="data.e0s must be 'isolated', 'average' or a mapping of element to eV, got 'avg'"
    ):
        AtomicDataModule(e0s="avg")  # before any data is read
    with pytest.raises(ConfigError, match="training.warmup_epochs 2 needs scheduler: cosine"):
        PotentialModule(warmup_epochs=2)
    with pytest.raises(ConfigError, match=r"training.stage_two_start is a fraction of max_epochs in \[0, 1\), got 2.0"):
        PotentialModule(stage_two_start=2.0)
    module = PotentialModule(model={"name": "mpnn", "num_channels": 8, "r_max": 4.0}, dipole_weight=10.0)
    data = AtomicDataModule(train_index=":20", test_file=None)
    with pytest.raises(ConfigError, match="training.dipole_weight 10.0: this model predicts no charges"):
        _trainer(max_epochs=1).fit(module, datamodule=data)


def _train_cmd(run_dir: Path, *extra: str) -> list[str]:
    """A ``molnet train`` command in LightningCLI's own layout (``--model.model``, ``--model.dtype``),
    which stays readable beside the user layout of :mod:`molnet.train.sections`."""
    return [
        sys.executable,
        "-m",
        "molnet.cli",
        "train",
        "--run_dir",
        str(run_dir),
        "--data.train_index",
        ":30",
        "--data.batch_size",
        "5",
        "--data.test_file",
        str(Path(__file__).parents[2] / "molnet/data/bundled/acac/test.xyz"),
        "--model.model",
        json.dumps(TINY),
        "--model.dtype",
        "float64",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.max_epochs",
        "6",
        *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_molnet_train_writes_run_folder_and_resumes_after_sigkill(tmp_path):
    """A run killed by SIGKILL after a checkpoint resumes with --ckpt_path last and finishes with
    the same test metrics as an uninterrupted run (float64, one thread: identical to 1e-8 relative)."""
    full = tmp_path / "full"
    subprocess.run(_train_cmd(full), check=True, env=ENV, capture_output=True)
    for name in (
        "config.yaml",
        "metrics.csv",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "model.safetensors",
        "metrics.json",
        "learning_curve.png",
    ):
        assert (full / name).is_file(), name
    reference = json.loads((full / "metrics.json").read_text())
    assert reference["n_configs"] == 200 and reference["forces_mae_meV_per_A"] > 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    torch.load(last, weights_only=True)  # the checkpoint on disk is whole
    subprocess.run(_train_cmd(killed, "--ckpt_path", "last"), check=True, env=ENV, capture_output=True)
    resumed = json.loads((killed / "metrics.json").read_text())
    for key in ("energy_mae_meV", "forces_mae_meV_per_A"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-8), key
    # metrics.csv keeps the epochs before the kill: the same validation curve as the uninterrupted run
    full_curve, resumed_curve = _validation_curve(full / "metrics.csv"), _validation_curve(killed / "metrics.csv")
    assert sorted(resumed_curve) == sorted(full_curve) == list(range(6))
    for epoch, loss in full_curve.items():
        assert resumed_curve[epoch] == pytest.approx(loss, rel=1e-8), epoch
    assert _column(killed / "metrics.csv", "lr-Adam") == _column(full / "metrics.csv", "lr-Adam")  # once per epoch


def _column(path: Path, name: str) -> list[str]:
    with open(path, newline="") as fh:
        return [row[name] for row in csv.DictReader(fh) if row.get(name)]


def _validation_curve(path: Path) -> dict[int, float]:
    """``{epoch: val_loss}`` from a run's metrics.csv; an epoch logged twice fails."""
    curve: dict[int, float] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("val_loss"):
                epoch = int(float(row["epoch"]))
                assert epoch not in curve, f"epoch {epoch} logged twice"
                curve[epoch] = float(row["val_loss"])
    return curve


def test_export_checkpoint_gives_a_loadable_model(tmp_path):
    import molnet
    from molnet.train.export import export_checkpoint

    run = tmp_path / "run"
    subprocess.run(_train_cmd(run, "--trainer.max_epochs", "1"), check=True, env=ENV, capture_output=True)
    out = export_checkpoint(run / "checkpoints" / "last.ckpt", tmp_path / "exported.safetensors")
    a, b = molnet.load_model(out), molnet.load_model(run / "model.safetensors")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    """`--trainer.strategy ddp --trainer.devices 2` (gloo) at the same global batch trains like one process."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    common = ("--trainer.max_epochs", "4", "--data.valid_batch_size", "10")
    subprocess.run(_train_cmd(single, *common, "--data.batch_size", "10"), check=True, env=ENV, capture_output=True)
    result = subprocess.run(
        _train_cmd(ddp, *common, "--data.batch_size", "5", "--trainer.strategy", "ddp", "--trainer.devices", "2"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stderr or "rank: 1" in result.stderr.lower()
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ddp / "metrics.json").read_text())
    assert a["n_configs"] == b["n_configs"] == 200
    for key in ("forces_mae_meV_per_A", "energy_per_atom_mae_meV"):
        assert b[key] == pytest.approx(a[key], rel=0.15), key


@pytest.mark.parametrize(
    "family",
    [
        {"name": "mace", "num_channels": 8, "max_ell": 2, "radial_MLP": [16]},
        {"name": "ponita", "num_ori": 8, "hidden_dim": 16, "num_layers": 2, "basis_dim": 16},
        {"name": "csmpn", "num_channels": 4, "num_layers": 2},
        {**TINY, "long_range": {"name": "ewald"}},
    ],
    ids=["mace", "ponita", "csmpn", "mpnn+ewald"],
)
def test_every_family_trains(family):
    """Forces in the loss need the double backward of every family: a few steps must lower the loss."""
    pl.seed_everything(0)
    data = AtomicDataModule(train_index=":20", valid_fraction=0.25, batch_size=5, test_file=None)
    module = PotentialModule(model={"r_max": 4.0, **family}, dtype="float64", lr=0.005)
    trainer = _trainer(max_epochs=3)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]["val_loss"]
    trainer.fit(module, datamodule=data)
    after = trainer.validate(module, datamodule=data, verbose=False)[0]["val_loss"]
    assert after < before, (before, after)


def test_shipped_configs_are_valid():
    """Every YAML in configs/ is in the user layout, names a known family with valid
    hyperparameters and valid training keys, and points at existing bundled files."""
    import yaml

    from molnet.models.registry import family_config
    from molnet.train.sections import to_lightning_config

    root = Path(__file__).parents[2]
    for config in sorted((root / "configs").glob("*.yaml")):
        content = yaml.safe_load(config.read_text())
        assert "model" not in content["model"], config.name
        family_config({"elements": ["H"], **content["model"]})
        to_lightning_config(content)  # unknown training keys are refused
        for key in ("train_file", "test_file", "isolated_atoms_file"):
            path = content["data"].get(key)
            if path and path.startswith("molnet/"):
                assert (root / path).is_file(), (config.name, path)


def test_dotted_overrides_of_the_model_section_arrive_typed():
    """`--model.model.num_channels 8` reaches the free-form model dict as '8': it is read as 8."""
    from molnet.train.module import typed_model_config

    typed = typed_model_config(
        {
            "name": "mace",
            "num_channels": "8",
            "radial_MLP": "[16, 16]",
            "long_range": "null",
            "r_max": "4.5",
            "elements": ["H"],
            "first_layer_residual": "false",
        }
    )
    assert typed == {
        "name": "mace",
        "num_channels": 8,
        "radial_MLP": [16, 16],
        "long_range": None,
        "r_max": 4.5,
        "elements": ["H"],
        "first_layer_residual": False,
    }
    PotentialModule(model={"name": "mace", "num_channels": "8", "max_L": "1"})  # validated with the typed values
    # Python's spellings too; element symbols stay strings (No is nobelium, not false)
    assert typed_model_config({"pair_repulsion": "True", "distance_transform": "None", "elements": "No"}) == {
        "pair_repulsion": True,
        "distance_transform": None,
        "elements": "No",
    }
