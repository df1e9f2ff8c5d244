"""The EMA of the weights warms its decay up: min(decay, (1 + n)/(10 + n)) after n updates."""

import torch
from torch.optim.swa_utils import AveragedModel

from molnet.train.ema import WarmupEMA, warmup_ema_fn


def test_effective_decay_warms_up_then_saturates():
    update = warmup_ema_fn(0.99)
    zero, one = torch.zeros(1), torch.ones(1)
    assert torch.isclose(update(zero, one, torch.tensor(0)), torch.tensor(0.9))  # decay 1/10
    assert torch.isclose(update(zero, one, torch.tensor(40)), torch.tensor(1 - 41 / 50))
    assert torch.isclose(update(zero, one, torch.tensor(5000)), torch.tensor(0.01))  # full decay


def test_averaged_model_follows_a_drifting_weight_early():
    """After 20 steps of a weight moving 0 → 20, the warm-up EMA sits near the recent values;
    a fixed 0.99 EMA would still be dominated by the initial weight (mean ≈ 2)."""
    model = torch.nn.Linear(1, 1, bias=False)
    averaged = AveragedModel(model, avg_fn=warmup_ema_fn(0.99))
    with torch.no_grad():
        for step in range(21):
            model.weight.fill_(float(step))
            averaged.update_parameters(model)
    assert 15.0 < float(averaged.module.weight.detach()) < 20.0
    assert WarmupEMA(decay=0.99)._kwargs["avg_fn"] is not None
