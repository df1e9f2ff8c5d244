"""The LightningModule that trains a :class:`~molnet.models.Potential`."""

from __future__ import annotations

import json
import logging

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from molnet.analysis.metrics import ErrorSums
from molnet.data import keys
from molnet.errors import ConfigError, NonFiniteError
from molnet.models import Potential, build_model
from molnet.models.registry import family_config
from molnet.train.losses import weighted_loss

log = logging.getLogger(__name__)

DEFAULT_MODEL = {"name": "mace", "num_channels": 32, "max_L": 1, "correlation": 3, "num_interactions": 2}


#: Python's spellings of JSON's literals, as users also write them on the command line
PYTHON_LITERALS = {"True": "true", "False": "false", "None": "null"}


def typed_model_config(model: dict) -> dict:
    """The model section with command-line strings turned into the values they spell.

    ``--model.num_channels 8`` reaches the free-form model dict as the string ``'8'``;
    every string value that parses as JSON (numbers, booleans, null, lists, mappings; also
    Python's ``True``, ``False``, ``None``) is replaced by the parsed value, other strings
    (``mace``, element symbols) stay strings.
    """
    typed = {}
    for key, value in model.items():
        if isinstance(value, str):
            try:
                value = json.loads(PYTHON_LITERALS.get(value, value))
            except json.JSONDecodeError:
                pass
        typed[key] = value
    return typed


def model_architecture(model: dict) -> dict:
    """The architecture a ``model`` section asks for: :func:`typed_model_config`, extending
    :data:`DEFAULT_MODEL` when it names no family."""
    typed = typed_model_config(model)
    return typed if "name" in typed else {**DEFAULT_MODEL, **typed}


#: Model options that a run takes from its training data when not given and that a checkpoint
#: restores with the weights (buffers of the potential), so a resumed run may recompute them.
DATA_DERIVED_OPTIONS = {"e0s", "scale", "shift"}


class PotentialModule(pl.LightningModule):
    """Weighted energy/forces/stress training of any molnet model family.

    Parameters
    ----------
    model
        Model configuration for :func:`molnet.models.build_model`. ``elements`` default to those
        of the training data; ``e0s``, ``scale``, ``avg_num_neighbors`` default to the training
        statistics.
    init_from
        A pretrained name or model file to fine-tune. Its architecture is the file's: a ``model``
        section that asks for other values is refused.
    dtype
        ``float32`` or ``float64``.
    energy_weight, forces_weight, stress_weight
        Loss weights (energy per atom, force components, stress components).
    dipole_weight, charges_weight
        Loss weights of reference dipoles (e·Å) and atomic charges (e), for models with a Coulomb
        block (``long_range: {name: coulomb}``).
    loss, huber_delta
        ``mse`` or ``huber``.
    optimizer, lr, weight_decay, amsgrad
        ``adam`` or ``adamw``.
    scheduler
        ``plateau`` (ReduceLROnPlateau on the validation loss) or ``cosine`` (with linear warm-up).
    stage_two_start
        Fraction of ``max_epochs`` after which the energy weight and learning rate switch to the
        stage-two values (MACE's SWA stage); None disables it.
    """

    def __init__(
        self,
        model: dict = {},  # noqa: B006 - plain dict for LightningCLI; as written, see model_architecture
        init_from: str | None = None,
        dtype: str = "float32",
        energy_weight: float = 1.0,
        forces_weight: float = 100.0,
        stress_weight: float = 1.0,
        dipole_weight: float = 0.0,
        charges_weight: float = 0.0,
        loss: str = "mse",
        huber_delta: float = 0.01,
        optimizer: str = "adam",
        lr: float = 0.01,
        weight_decay: float = 5e-7,
        amsgrad: bool = True,
        scheduler: str = "plateau",
        plateau_factor: float = 0.8,
        plateau_patience: int = 50,
        warmup_epochs: int = 0,
        stage_two_start: float | None = None,
        stage_two_energy_weight: float = 1000.0,
        stage_two_forces_weight: float = 100.0,
        stage_two_lr: float = 1e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"training.dtype must be 'float32' or 'float64', got {dtype!r}")
        if loss not in ("mse", "huber"):
            raise ConfigError(f"training.loss must be 'mse' or 'huber', got {loss!r}")
        if optimizer not in ("adam", "adamw"):
            raise ConfigError(f"training.optimizer must be 'adam' or 'adamw', got {optimizer!r}")
        if scheduler not in ("plateau", "cosine"):
            raise ConfigError(f"training.scheduler must be 'plateau' or 'cosine', got {scheduler!r}")
        if warmup_epochs and scheduler != "cosine":
            raise ConfigError(
                f"training.warmup_epochs {warmup_epochs} needs scheduler: cosine (the plateau scheduler has no "
                "warm-up); set training.scheduler to cosine or warmup_epochs to 0"
            )
        if stage_two_start is not None and not 0.0 <= stage_two_start < 1.0:
            raise ConfigError(
                f"training.stage_two_start is a fraction of max_epochs in [0, 1), got {stage_two_start} (null: no stage two)"
            )
        if init_from is None:
            family_config(model_architecture(model))  # validate before any data is read
        self.potential: Potential | None = None
        self.loss_weights = {
            "energy": energy_weight,
            "forces": forces_weight,
            "stress": stress_weight,
            "dipole": dipole_weight,
            "charges": charges_weight,
        }
        self.stage_two_active = False  # saved in checkpoints: a resumed run stays in its stage
        self._selection_restart_pending = False  # see _restart_model_selection; saved in checkpoints too
        self._errors = ErrorSums()
        self.test_metrics: dict[str, float] = {}

    # -- model construction --------------------------------------------------------------------
    def configure_model(self) -> None:
        """Build the potential from the configuration and the training statistics (once)."""
        if self.potential is not None:
            return
        dm = self.trainer.datamodule
        dtype = getattr(torch, self.hparams.dtype)
        if self.hparams.init_from:
            from molnet.pretrained import load

            self.potential = load(self.hparams.init_from, dtype=dtype)
            self._refuse_other_architecture(self.potential.config)
            self.potential.train()
            dm.check_elements(self.potential.elements)
            dm.configure(self.potential.r_max, dtype)
            log.info("fine-tuning %s (%s)", self.hparams.init_from, self.potential.config["name"])
        else:
            config = model_architecture(self.hparams.model)
            config.setdefault("elements", dm.elements())
            dm.check_elements(config["elements"])
            dm.configure(family_config(config).r_max, dtype)
            stats = dm.statistics(config["elements"], e0s=config.get("e0s"))
            config.setdefault("e0s", stats.e0s)
            config.setdefault("scale", stats.scale)
            config.setdefault("shift", stats.shift)
            config.setdefault("avg_num_neighbors", stats.avg_num_neighbors)
            log.info(
                "model %s, elements %s, avg_num_neighbors %.2f, scale %.3f eV/Å",
                config["name"],
                config["elements"],
                config["avg_num_neighbors"],
                config["scale"],
            )
            self.potential = build_model(config, dtype=dtype)
        self._refuse_unfittable_targets()

    def _refuse_unfittable_targets(self) -> None:
        """Dipole and charge losses need a model that predicts charges (a Coulomb block)."""
        if getattr(self.potential.body, "coulomb", None) is not None:
            return
        unused = [
            f"training.{name}_weight {self.loss_weights[name]}"
            for name in ("dipole", "charges")
            if self.loss_weights[name]
        ]
        if unused:
            raise ConfigError(
                f"{' and '.join(unused)}: this model predicts no charges, so nothing would fit them; add "
                "long_range: {name: coulomb} to the model, or set the weight to 0"
            )

    def _refuse_other_architecture(self, stored: dict) -> None:
        """With ``init_from``, the model file fixes the architecture: values of the ``model``
        section that differ from the file's are refused, not silently dropped.

        Every value written is compared (the section as written, not merged into
        :data:`DEFAULT_MODEL`); a section that is :data:`DEFAULT_MODEL` as a whole names nothing
        (the ``config.yaml`` of fine-tuning runs of earlier versions holds it). Options that the
        data determine (E0s, scale, shift) cannot be given at all: a fine-tuned model keeps the file's."""

        def same(key: str, value) -> bool:
            if key == "elements":
                return sorted(value) == sorted(stored.get(key, []))
            normal = json.loads(json.dumps(value))  # tuples as lists, as the file stores them
            return key in stored and normal == stored[key]

        requested = typed_model_config(self.hparams.model)
        if requested == DEFAULT_MODEL:  # the whole default model, as run folders of earlier versions record it
            requested = {}
        differing = [key for key, value in requested.items() if key in DATA_DERIVED_OPTIONS or not same(key, value)]
        if differing:
            listed = ", ".join(
                f"{key}: {requested[key]!r} (the file: {stored.get(key, 'not set')!r})" for key in differing
            )
            raise ConfigError(
                f"training.init_from takes the architecture from {self.hparams.init_from}, but the model "
                f"section asks for other values: {listed}. Remove them from the model section to fine-tune "
                "the file's model, or drop init_from to train a new model"
            )

    def forward(self, batch, training: bool = False):
        return self.potential(batch, compute_forces=True, compute_stress=self._wants_stress(batch), training=training)

    def _loss(self, pred, batch) -> dict[str, torch.Tensor]:
        weights = {f"{name}_weight": value for name, value in self.loss_weights.items()}
        return weighted_loss(pred, batch, **weights, kind=self.hparams.loss, huber_delta=self.hparams.huber_delta)

    def _wants_stress(self, batch) -> bool:
        return bool((batch[keys.STRESS_WEIGHT] > 0).any())

    # -- steps --------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        try:
            pred = self(batch, training=True)
        except NonFiniteError as exc:
            raise NonFiniteError(
                f"epoch {self.current_epoch}, batch {batch_idx}: {exc}; the last good checkpoint is kept"
            ) from exc
        terms = self._loss(pred, batch)
        if not torch.isfinite(terms["total"]):
            raise NonFiniteError(
                f"non-finite training loss at epoch {self.current_epoch}, batch {batch_idx} "
                f"({ {k: float(v) for k, v in terms.items()} }); the last good checkpoint is kept"
            )
        self.log("train_loss", terms["total"], batch_size=batch.num_graphs, on_step=False, on_epoch=True, prog_bar=True)
        return terms["total"]

    def _accumulate(self, batch, pred) -> None:
        n_atoms = torch.bincount(batch[keys.BATCH], minlength=batch.num_graphs)
        stress = keys.STRESS in pred
        self._errors.add(
            pred[keys.ENERGY],
            batch[keys.ENERGY],
            n_atoms,
            batch[keys.ENERGY_WEIGHT] > 0,
            pred[keys.FORCES],
            batch[keys.FORCES],
            (batch[keys.FORCES_WEIGHT] > 0)[batch[keys.BATCH]],
            pred[keys.STRESS] if stress else None,
            batch[keys.STRESS] if stress else None,
            batch[keys.STRESS_WEIGHT] > 0 if stress else None,
        )
        if keys.CHARGES in pred:
            self._errors.add_charges(
                pred[keys.DIPOLE],
                batch[keys.REF_DIPOLE_FIELD],
                batch[keys.DIPOLE_WEIGHT] > 0,
                pred[keys.CHARGES],
                batch[keys.REF_CHARGES_FIELD],
                (batch[keys.CHARGES_WEIGHT] > 0)[batch[keys.BATCH]],
            )

    def _eval_step(self, batch, prefix: str):
        pred = self(batch, training=False)
        terms = self._loss(pred, batch)
        self.log(
            f"{prefix}_loss",
            terms["total"],
            batch_size=batch.num_graphs,
            on_epoch=True,
            prog_bar=prefix == "val",
            sync_dist=True,
        )
        self._accumulate(batch, pred)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _epoch_metrics(self) -> dict[str, float]:
        errors, self._errors = self._errors, ErrorSums()
        errors.reduce(lambda v: self.trainer.strategy.reduce(v.to(self.device), reduce_op="sum"))
        return errors.metrics()

    def on_validation_epoch_end(self) -> None:
        metrics = self._epoch_metrics()
        for k, v in metrics.items():
            if k != "n_configs":
                self.log(f"val_{k}", v, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._epoch_metrics()
        for k, v in self.test_metrics.items():
            if k != "n_configs":
                self.log(f"test_{k}", v, sync_dist=False)

    # -- optimisation -----------------------------------------------------------------------------
    def _stage_two_epoch(self) -> int | None:
        """The first epoch of stage two, None without one."""
        start = self.hparams.stage_two_start
        if start is None or self.trainer.max_epochs is None:
            return None
        return int(start * self.trainer.max_epochs)

    def on_train_epoch_start(self) -> None:
        first = self._stage_two_epoch()  # (a run that starts, or resumes, inside stage two)
        if first is not None and self.current_epoch >= first:
            self._enter_stage_two()
        if self._selection_restart_pending:  # stage one's last validation and checkpoints are done
            self._restart_model_selection()
            self._selection_restart_pending = False

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """At an epoch's end: enter stage two when the next epoch is its first, so that the rate
        is set before the learning-rate monitor logs it; in stage two the schedulers no longer
        step, so the rate holds at ``stage_two_lr`` whichever scheduler stage one ran."""
        first = self._stage_two_epoch()
        if first is not None and self.current_epoch + 1 >= first:
            self._enter_stage_two()
            return
        super().lr_scheduler_step(scheduler, metric)

    def _enter_stage_two(self) -> None:
        """Switch the loss weights and the rate to stage two's (as mace-torch's SWA stage), once."""
        if self.stage_two_active:
            return
        self.stage_two_active = True
        self._selection_restart_pending = True  # done when the first stage-two epoch starts
        self.loss_weights["energy"] = self.hparams.stage_two_energy_weight
        self.loss_weights["forces"] = self.hparams.stage_two_forces_weight
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = self.hparams.stage_two_lr
        log.info(
            "stage two from epoch %d: energy weight %g, lr %g",
            self._stage_two_epoch(),
            self.loss_weights["energy"],
            self.hparams.stage_two_lr,
        )

    def _restart_model_selection(self) -> None:
        """Forget the best ``val_loss`` so far (``best.ckpt``, early stopping): stage two's loss
        weighs energies differently, so its losses are compared among themselves, as mace-torch
        restarts its lowest loss at the SWA stage."""
        for callback in self.trainer.callbacks:
            if getattr(callback, "monitor", None) != "val_loss":
                continue
            worst = torch.tensor(torch.inf if callback.mode == "min" else -torch.inf)
            if isinstance(callback, ModelCheckpoint):
                callback.best_k_models, callback.kth_best_model_path, callback.kth_value = {}, "", worst
                callback.best_model_score, callback.best_model_path = None, ""
            elif isinstance(callback, EarlyStopping):
                callback.best_score, callback.wait_count = worst, 0

    def on_load_checkpoint(self, checkpoint) -> None:
        """Restore the stage and loss weights; refuse, naming the differing options, a checkpoint
        of another model: one whose weights do not fit this run's model, or whose stored model
        options (those not taken from the data: :data:`DATA_DERIVED_OPTIONS`) differ."""
        own, theirs = self.state_dict(), checkpoint.get("state_dict", {})
        misfit = set(own) != set(theirs) or any(own[k].shape != v.shape for k, v in theirs.items() if k in own)
        stored = checkpoint.get("molnet_model_config")
        differ = (
            sorted(
                k
                for k in (set(stored) | set(self.potential.config)) - DATA_DERIVED_OPTIONS
                if stored.get(k) != self.potential.config.get(k)
            )
            if stored is not None
            else []
        )
        if misfit or differ:
            options = f"the model options that differ: {differ}" if stored is not None else "it stores no options"
            raise ConfigError(
                f"the checkpoint is of another model than this run's ({options}); resume with the run's own "
                "configuration (--config <run_dir>/config.yaml)"
            )
        self.loss_weights = checkpoint.get("molnet_loss_weights", self.loss_weights)
        self.stage_two_active = bool(checkpoint.get("molnet_stage_two", False))
        self._selection_restart_pending = bool(checkpoint.get("molnet_selection_restart", False))

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["molnet_loss_weights"] = dict(self.loss_weights)
        checkpoint["molnet_stage_two"] = self.stage_two_active
        checkpoint["molnet_selection_restart"] = self._selection_restart_pending
        checkpoint["molnet_model_config"] = self.potential.config

    def configure_optimizers(self):
        h = self.hparams
        cls = torch.optim.AdamW if h.optimizer == "adamw" else torch.optim.Adam
        optimizer = cls(self.parameters(), lr=h.lr, weight_decay=h.weight_decay, amsgrad=h.amsgrad)
        if h.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=h.plateau_factor, patience=h.plateau_patience
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"},
            }
        epochs = max(1, (self.trainer.max_epochs or 1))
        warm = max(0, min(h.warmup_epochs, epochs - 1))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warm))
        if warm:
            linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warm)
            scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warm])
        else:
            scheduler = cosine
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
