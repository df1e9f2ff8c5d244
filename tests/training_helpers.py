"""A Lightning trainer for tests: CPU, quiet, no logger, autograd kept for forces in validation."""

import lightning.pytorch as pl


def quiet_trainer(**overrides) -> pl.Trainer:
    """``pl.Trainer`` with the settings every training test shares; ``overrides`` win."""
    settings = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    return pl.Trainer(**{**settings, **overrides})


class RecordTrainingItems(pl.Callback):
    """Appends the reference energies of every training batch to ``<folder>/rank<r>.jsonl``, one
    line per batch with its epoch: which structures each DDP rank trained on (energies identify
    the structures of a data set). Given to ``molnet train`` as
    ``--trainer.callbacks+=tests.training_helpers.RecordTrainingItems --trainer.callbacks.folder DIR``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import json
        from pathlib import Path

        from molnet.data import keys

        line = {"epoch": trainer.current_epoch, "energies": batch[keys.ENERGY].tolist()}
        with open(Path(self.folder) / f"rank{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
