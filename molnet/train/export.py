"""Turn a Lightning checkpoint into a molnet model file (``molnet export``)."""

from __future__ import annotations

from pathlib import Path

import torch

from molnet.errors import ModelFileError
from molnet.models import build_model, save_model
from molnet.models.potential import Potential

PREFIX = "potential."


def read_checkpoint(path: str | Path) -> dict:
    """A molnet training checkpoint's contents (tensors and plain data only: ``weights_only``)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path}: no such checkpoint") from exc
    except Exception as exc:
        raise ModelFileError(
            f"{path}: not a readable molnet training checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if checkpoint.get("molnet_model_config") is None:
        raise ModelFileError(f"{path}: not a molnet training checkpoint (no model configuration)")
    return checkpoint


def potential_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The potential's weights in a checkpoint (:func:`read_checkpoint`): the EMA average when EMA was on."""
    return {k[len(PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}


def potential_from_checkpoint(path: str | Path) -> Potential:
    """The (EMA-averaged, when EMA was on) potential stored in a training checkpoint."""
    checkpoint = read_checkpoint(path)
    config = checkpoint["molnet_model_config"]
    state = potential_state(checkpoint)
    dtype = state["e0s"].dtype
    model = build_model(config, dtype=dtype)
    model.load_state_dict(state)
    return model.eval()


def export_checkpoint(checkpoint: str | Path, output: str | Path, training: dict | None = None) -> Path:
    """Write the checkpoint's potential to ``output`` as a safetensors model file."""
    return save_model(potential_from_checkpoint(checkpoint), output, training=training)
