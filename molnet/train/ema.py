"""Exponential moving average of the weights, with a warm-up of its decay."""

from __future__ import annotations

from typing import Any, Callable

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging


def warmup_ema_fn(decay: float) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """``avg_fn`` for ``AveragedModel``: after n updates the decay is min(decay, (1 + n)/(10 + n)).

    With a fixed decay of 0.99 the average still holds 0.99⁹⁰ ≈ 40% of the random initial weights
    after one epoch of 90 steps, which distorts the validation metrics (and the checkpoint chosen
    by them) of short runs. The warm-up (torch_ema's ``use_num_updates``, as mace-torch trains)
    lets the average follow the early progress and reaches the full decay after ~900 updates.
    """

    @torch.no_grad()
    def update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: Any) -> torch.Tensor:
        n = int(num_averaged)
        effective = min(decay, (1 + n) / (10 + n))
        return effective * averaged + (1 - effective) * current

    return update


class WarmupEMA(EMAWeightAveraging):
    """EMA of the trainable parameters with the decay warm-up of :func:`warmup_ema_fn`.

    Only parameters are averaged. Buffers (element tables, E0s, scale and shift, basis constants)
    are not learned: they are copied from the trained model after every update, never averaged,
    so an integer table cannot be rounded (0.1·3 + 0.9·3 = 2.99… → 2) and a float constant
    cannot drift by rounding.
    """

    def __init__(self, decay: float = 0.99, **kwargs: Any) -> None:
        super().__init__(decay=decay, use_buffers=False, **kwargs)
        self._kwargs["avg_fn"] = warmup_ema_fn(decay)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        self._copy_buffers(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._copy_buffers(pl_module)

    @torch.no_grad()
    def _copy_buffers(self, pl_module: pl.LightningModule) -> None:
        if self._average_model is None:
            return
        for averaged, current in zip(self._average_model.module.buffers(), pl_module.buffers(), strict=True):
            averaged.copy_(current)
