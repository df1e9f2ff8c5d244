"""``molnet train``: LightningCLI over :class:`PotentialModule` and :class:`AtomicDataModule`.

The configuration's sections are ``model:`` (the architecture), ``training:`` (the loop's
settings), ``data:``, ``trainer:`` (Lightning's Trainer) and top-level ``run_dir``, ``ema_decay``,
``seed_everything``, ``ckpt_path`` (:mod:`molnet.train.sections` maps them onto LightningCLI).

Every run writes ``<run_dir>/``: ``config.yaml`` (the resolved configuration), ``metrics.csv``
(CSV logs), ``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt``, and at the end
``model.safetensors`` (the weights of ``best.ckpt``: :func:`restore_best`), ``metrics.json``
(their test-split metrics) and ``learning_curve.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from molnet.atomic_write import atomic_path
from molnet.train.checkpoint_io import AtomicCheckpointIO
from molnet.train.datamodule import AtomicDataModule
from molnet.train.ema import WarmupEMA
from molnet.train.export import potential_state, read_checkpoint
from molnet.train.module import PotentialModule
from molnet.train.sections import to_lightning_args, to_user_config, to_user_names

log = logging.getLogger("molnet.train")

TRAINER_DEFAULTS = {
    "max_epochs": 20,
    "inference_mode": False,  # forces need autograd in validation and test
    "gradient_clip_val": 10.0,
    "log_every_n_steps": 1,
    "accelerator": "cpu",
    "devices": 1,
}


def run_callbacks(run_dir: Path, ema_decay: float | None) -> list[Callback]:
    """Checkpoints and weight averaging of a run.

    ``checkpoints/last.ckpt`` is rewritten after every epoch's validation (resume continues at
    the next epoch); ``checkpoints/best.ckpt`` only when ``val_loss`` improves (in stage two, on
    stage two's losses only: :meth:`PotentialModule._restart_model_selection`). Both are written
    atomically by :class:`AtomicCheckpointIO`. With EMA, both hold the averaged weights.
    """
    folder = run_dir / "checkpoints"
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=folder,
            filename="best",
            monitor="val_loss",
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=False,
        ),
        ModelCheckpoint(
            dirpath=folder,
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_epochs=1,
            enable_version_counter=False,
            save_on_train_epoch_end=False,
        ),
    ]
    if ema_decay is not None:
        callbacks.append(WarmupEMA(decay=ema_decay))
    return callbacks


class SaveUserConfig(SaveConfigCallback):
    """Writes ``<run_dir>/config.yaml`` in the user layout (``model:``, ``training:``, ...) when
    training starts, after a checkpoint to resume from has been restored: a resume refused for
    another model configuration leaves the run's configuration as it was."""

    def setup(self, trainer, pl_module, stage) -> None:
        """Nothing yet (LightningCLI saves here, before a resumed checkpoint is checked)."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().setup(trainer, pl_module, "fit")

    def save_config(self, trainer, pl_module, stage) -> None:
        import yaml

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("config", None)
        # rank zero only: trainer.log_dir would broadcast, a collective the other ranks never join
        path = Path(config["run_dir"]) / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(to_user_config(config), sort_keys=False))


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer without its deletion of an earlier ``metrics.csv`` when created
    (at set-up, before a checkpoint is restored): :meth:`RunCSVLogger.start` decides."""

    def _check_log_dir_exists(self) -> None:
        """Leave the folder as it is."""


class RunCSVLogger(CSVLogger):
    """``<run_dir>/metrics.csv``: a fresh run replaces an earlier file; a resumed run keeps the
    rows logged before the optimiser step it resumes at (what its checkpoint had done), so that
    the file and the learning curve cover the whole run. Both happen when training starts
    (:class:`StartMetricsFile`), after the checkpoint was restored, so that a refused resume
    leaves the file as it was."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def start(self, resumed_at: int | None) -> None:
        """``resumed_at``: the global step a resumed run continues from, None for a fresh run."""
        writer, path = self.experiment, Path(self.log_dir) / "metrics.csv"
        if not path.is_file():
            return
        if resumed_at is None:
            path.unlink()
            return
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if row.get("step") and int(float(row["step"])) < resumed_at]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=header)
            out.writeheader()
            out.writerows(kept)
        writer.metrics_keys = sorted(header)


class StartMetricsFile(Callback):
    """Calls :meth:`RunCSVLogger.start` when training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        if isinstance(trainer.logger, RunCSVLogger):
            resumed = trainer.ckpt_path is not None
            trainer.logger.start(trainer.global_step if resumed else None)


class UserLayoutParser(LightningArgumentParser):
    """LightningCLI's parser, whose error messages name options as the user wrote them
    (``training.lr``, not LightningCLI's ``model.lr``; :func:`molnet.train.sections.to_user_names`)."""

    def error(self, message: str, ex: Exception | None = None):
        super().error(to_user_names(message), ex)


class MolnetCLI(LightningCLI):
    """LightningCLI with molnet's run directory, checkpointing, EMA and logging defaults."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", default="runs/default", help="output folder of this run")
        parser.add_argument(
            "--ckpt_path", default=None, help="resume from a checkpoint ('last' for the run's last.ckpt)"
        )
        parser.add_argument(
            "--ema_decay", type=float | None, default=0.99, help="EMA decay of the weights (null: no EMA)"
        )

    def instantiate_trainer(self, **kwargs):
        run_dir = Path(self.config["run_dir"])
        self.trainer_defaults["callbacks"] = [
            *run_callbacks(run_dir, self.config["ema_decay"]),
            LearningRateMonitor(logging_interval="epoch"),
            StartMetricsFile(),
        ]
        return super().instantiate_trainer(
            logger=RunCSVLogger(save_dir=str(run_dir), name="", version=""),
            default_root_dir=str(run_dir),
            plugins=[AtomicCheckpointIO()],
            **kwargs,
        )


def learning_curve_from_csv(csv_path: Path, png_path: Path) -> Path | None:
    """Plot validation energy and force MAE per epoch from Lightning's metrics.csv."""
    from molnet.analysis.plots import learning_curve

    if not csv_path.is_file():
        return None
    series: dict[str, dict[int, float]] = {"val_energy_per_atom_mae_meV": {}, "val_forces_mae_meV_per_A": {}}
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            for key in series:
                if row.get(key) and row.get("epoch"):
                    series[key][int(float(row["epoch"]))] = float(row[key])
    epochs = sorted(series["val_forces_mae_meV_per_A"])
    if not epochs:
        return None
    return learning_curve(
        epochs,
        {
            "E MAE (meV/atom)": [series["val_energy_per_atom_mae_meV"].get(e, float("nan")) for e in epochs],
            "F MAE (meV/Å)": [series["val_forces_mae_meV_per_A"][e] for e in epochs],
        },
        png_path,
        ylabel="validation error",
    )


#: Warnings that say nothing about the user's run: ``molnet train`` passes its own arguments to
#: LightningCLI; molnet's ``configure_model`` builds the model from the data, it does not shard it;
#: a deprecation inside Lightning's own code.
IRRELEVANT_WARNINGS = (
    r"LightningCLI's args parameter is intended to run from within Python",
    r"You're using the WeightAveraging callback with a model that overrides the configure_model",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence Lightning's warnings and tips that do not concern a molnet run; keep all others."""
    for pattern in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # jsonargparse's deprecations of the APIs LightningCLI itself calls: nothing a user can change
    warnings.filterwarnings("ignore", message=r"(?s).*was deprecated in v4\.", category=DeprecationWarning)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLightningTips())


def restore_best(trainer: pl.Trainer, module: PotentialModule) -> int:
    """Load the weights of ``checkpoints/best.ckpt`` (lowest ``val_loss``; of stage two when it ran;
    the EMA average when EMA is on) into ``module`` on every rank, as mace-torch keeps its best
    model; returns their epoch (0-based). Where no validation selected one (no validation set, or
    none in stage two) the module keeps the last epoch's weights, whose epoch is returned."""
    selector = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == "val_loss"), None)
    path = selector.best_model_path if selector is not None else ""
    best = None
    if trainer.is_global_zero and path and Path(path).is_file():  # rank 0 wrote it; others may not see it
        checkpoint = read_checkpoint(path)
        best = (potential_state(checkpoint), int(checkpoint["epoch"]))
    best = trainer.strategy.broadcast(best, src=0)
    last = max(trainer.current_epoch - 1, 0)
    if best is None:
        return last
    state, epoch = best
    module.potential.load_state_dict(state)
    if epoch != last:
        log.info(
            "the model is epoch %d's, of lowest validation loss; the last epoch's is in %s",
            epoch,
            Path(path).with_name("last.ckpt") if path else "checkpoints/last.ckpt",
        )
    return epoch


def main(argv: list[str] | None = None) -> int:
    from molnet.models import save_model

    quiet_lightning()

    cli = MolnetCLI(
        PotentialModule,
        AtomicDataModule,
        run=False,
        args=to_lightning_args(list(sys.argv[1:] if argv is None else argv)),
        trainer_defaults=dict(TRAINER_DEFAULTS),
        save_config_callback=SaveUserConfig,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        seed_everything_default=0,
        parser_kwargs={"prog": "molnet train"},
        parser_class=UserLayoutParser,
    )
    run_dir = Path(cli.config["run_dir"])
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=cli.config["ckpt_path"])
    minutes = (time.perf_counter() - start) / 60
    model_epoch = restore_best(trainer, module)
    test_metrics = {}
    if data.test_file:
        trainer.test(module, datamodule=data, verbose=False)
        test_metrics = dict(module.test_metrics)
    if trainer.is_global_zero:
        summary = {
            "train_file": data.train_file,
            "valid_file": data.valid_file,
            "test_file": data.test_file,
            "epochs": trainer.current_epoch,
            "model_epoch": model_epoch,
            "minutes": round(minutes, 2),
            "test_metrics": test_metrics,
        }
        save_model(module.potential, run_dir / "model.safetensors", training=summary)
        (run_dir / "metrics.json").write_text(json.dumps(test_metrics, indent=2))
        curve = learning_curve_from_csv(run_dir / "metrics.csv", run_dir / "learning_curve.png")
        log.info("model written to %s (%.1f min)", run_dir / "model.safetensors", minutes)
        if test_metrics:
            log.info(
                "test: E MAE %.2f meV (%.3f meV/atom), F MAE %.2f meV/Å",
                test_metrics.get("energy_mae_meV", float("nan")),
                test_metrics.get("energy_per_atom_mae_meV", float("nan")),
                test_metrics.get("forces_mae_meV_per_A", float("nan")),
            )
        if curve:
            log.info("learning curve: %s", curve)
    return 0
