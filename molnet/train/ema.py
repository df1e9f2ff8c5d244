"""Exponential moving average of the weights, with a warm-up of its decay."""

from __future__ import annotations

from typing import Any, Callable

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
    """Lightning's EMA weight averaging with the decay warm-up of :func:`warmup_ema_fn`."""

    def __init__(self, decay: float = 0.99, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        self._kwargs["avg_fn"] = warmup_ema_fn(decay)
