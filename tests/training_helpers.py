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
