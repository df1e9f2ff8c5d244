"""Checkpoint files that survive a kill: written to a temporary file, synced, renamed into place;
read back with ``weights_only=True`` so a checkpoint cannot run code."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from molnet.atomic_write import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic, fsynced checkpoint writes; safe (non-pickling) reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
