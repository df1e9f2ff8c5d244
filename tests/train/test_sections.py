"""The user layout of a training configuration (``model:`` architecture, ``training:`` loop) and
its translation to LightningCLI's (``model.model``), in both directions."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from molnet.errors import ConfigError
from molnet.train.module import DEFAULT_MODEL, model_architecture
from molnet.train.sections import to_lightning_args, to_lightning_config, to_user_config, to_user_names

TINY = {"name": "mpnn", "num_channels": 8, "num_interactions": 2, "radial_MLP": [8], "r_max": 4.0}


def test_user_layout_becomes_lightnings_and_back():
    user = {
        "run_dir": "r",
        "data": {"batch_size": 5},
        "model": dict(TINY),
        "training": {"lr": 0.02, "dtype": "float64"},
    }
    lightning = to_lightning_config(user)
    assert lightning["model"] == {"lr": 0.02, "dtype": "float64", "model": TINY}
    assert to_user_config(lightning) == user
    # LightningCLI's own layout is read unchanged
    assert to_lightning_config(lightning) == lightning
    # an architecture without a family name stays as written; the module extends the default MACE
    lightning = to_lightning_config({"model": {"num_channels": 8}})
    assert lightning["model"]["model"] == {"num_channels": 8}
    assert model_architecture(lightning["model"]["model"]) == {**DEFAULT_MODEL, "num_channels": 8}
    assert to_user_config(lightning)["model"] == {**DEFAULT_MODEL, "num_channels": 8}  # config.yaml: what was built
    fine_tuned = to_lightning_config({"model": {"num_channels": 8}, "training": {"init_from": "m.safetensors"}})
    assert to_user_config(fine_tuned)["model"] == {"num_channels": 8}  # the file has the rest


def test_bad_sections_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\] in 'training:'"):
        to_lightning_config({"training": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match=r"\['lr'\] given under both 'model:' and 'training:'"):
        to_lightning_config({"model": {"lr": 0.1}, "training": {"lr": 0.2}})


def test_command_line_overrides_are_translated(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": TINY, "training": {"lr": 0.02}}))
    args = to_lightning_args(
        ["--config", str(config), "--model.num_channels", "4", "--training.lr=0.5", "--model.lr", "0.1"]
        + ["--model.model.r_max", "3.5", "--model", json.dumps(TINY), "--data.batch_size", "2"]
    )
    assert yaml.safe_load(args[1]) == {"model": {"lr": 0.02, "model": TINY}}
    assert args[2:] == [
        "--model.model.num_channels",
        "4",
        "--model.lr=0.5",
        "--model.lr",
        "0.1",
        "--model.model.r_max",
        "3.5",
        "--model.model",
        json.dumps(TINY),
        "--data.batch_size",
        "2",
    ]
    with pytest.raises(ConfigError, match="no such file"):
        to_lightning_args(["--config", str(tmp_path / "missing.yaml")])


def test_option_errors_name_the_options_as_the_user_wrote_them(tmp_path, capsys):
    from molnet.train.cli import main

    with pytest.raises(SystemExit):
        main(["--training.lrr", "0.1", "--run_dir", str(tmp_path)])
    assert "--training.lrr" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": TINY, "training": {"lr": "fast"}}))
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--run_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert '"training.lr"' in err and '"model.lr"' not in err
    # values are left as written, however they are spelled
    message = 'unrecognized arguments: --model.lrr runs/model.ckpt; key "model.model.r_max"; got "model.safetensors"'
    assert to_user_names(message) == (
        'unrecognized arguments: --training.lrr runs/model.ckpt; key "model.r_max"; got "model.safetensors"'
    )


def test_a_run_in_the_user_layout_writes_its_config_in_that_layout_and_resumes_from_it(tmp_path):
    """Train from a user-layout YAML with dotted overrides on the six-element ion pair; the run's
    test metrics equal an independent evaluation of its model file; its config.yaml is in the user
    layout and continues the run (``--ckpt_path last``) when given back as ``--config``."""
    import ase.io

    from molnet.cli import main

    ionpair = Path(__file__).parents[2] / "data" / "longrange" / "ionpair"
    ase.io.write(tmp_path / "train.xyz", ase.io.read(ionpair / "train.xyz", ":20"))
    ase.io.write(tmp_path / "test.xyz", ase.io.read(ionpair / "test.xyz", ":10"))
    run_dir = tmp_path / "run"
    config = tmp_path / "user.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(run_dir),
                "ema_decay": None,
                "trainer": {"max_epochs": 1, "enable_progress_bar": False},
                "data": {
                    "train_file": str(tmp_path / "train.xyz"),
                    "test_file": str(tmp_path / "test.xyz"),
                    "isolated_atoms_file": str(ionpair / "isolated_atoms.xyz"),
                    "batch_size": 5,
                },
                "model": {**TINY, "num_channels": 16},
                "training": {"dtype": "float64", "lr": 0.02},
            }
        )
    )
    assert main(["train", "--config", str(config), "--model.num_channels", "8", "--training.lr", "0.01"]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["num_channels"] == 8 and saved["model"]["name"] == "mpnn"
    assert saved["training"]["lr"] == 0.01 and saved["training"]["dtype"] == "float64"
    assert "model" not in saved["training"]
    import molnet
    from molnet.workflows.evaluate import evaluate_file

    model = molnet.load_model(run_dir / "model.safetensors", dtype=torch.float64)
    assert model.config["num_channels"] == 8 and len(model.elements) == 6
    own = json.loads((run_dir / "metrics.json").read_text())
    independent = evaluate_file(model, tmp_path / "test.xyz", progress=False)
    for key in ("energy_mae_meV", "forces_mae_meV_per_A"):
        assert own[key] == pytest.approx(independent[key], rel=1e-6), key
    args = ["train", "--config", str(run_dir / "config.yaml"), "--trainer.max_epochs", "2", "--ckpt_path", "last"]
    for other in (["--model.num_channels", "16"], ["--model.r_max", "4.5"]):  # another model: refused
        assert main(args[:-2] + other + ["--ckpt_path", "last"]) == 2
    assert main(args) == 0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1
