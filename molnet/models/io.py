"""Model files: safetensors weights plus a JSON configuration in the file's metadata.

Loading builds the model from its configuration and loads the tensors; nothing is ever
unpickled, so a model file cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from molnet._version import __version__
from molnet.atomic_write import atomic_path
from molnet.errors import ConfigError, ModelFileError
from molnet.models.potential import Potential
from molnet.models.registry import build_model

FORMAT_NAME = "molnet-model"
FORMAT_VERSION = 1

# Leading bytes of files that would need unpickling: a torch zip archive or a raw pickle.
_PICKLE_SIGNATURES = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def save_model(model: Potential, path: str | Path, training: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (atomically: a temporary file renamed into place).

    ``training`` is an optional JSON-serialisable summary (data, metrics) stored with the model;
    the model's ``provenance`` (e.g. of an imported mace-torch model) is stored too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    config = dict(model.config)
    config["e0s"] = {s: float(e) for s, e in zip(model.elements, model.e0s.tolist())}
    config["scale"] = float(model.scale)
    config["shift"] = float(model.shift)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "molnet_version": __version__,
        "dtype": str(model.dtype).replace("torch.", ""),
        "config": json.dumps(config),
        "training": json.dumps(training or {}),
        "provenance": json.dumps(getattr(model, "provenance", None) or {}),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Return the parsed metadata (``config``, ``training``, versions) of a model file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if any(head.startswith(sig) for sig in _PICKLE_SIGNATURES):
        raise ModelFileError(
            f"{path}: is a pickled (torch.save) file; molnet refuses to unpickle model files because "
            "that can run arbitrary code. A mace-torch model: convert it once with `molnet import-mace FILE -o "
            "model.safetensors`; a molnet training checkpoint: `molnet export`."
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for broken headers
        raise ModelFileError(f"{path}: not a readable safetensors file (corrupt or truncated?): {exc}") from exc
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: a safetensors file but not a molnet model (no '{FORMAT_NAME}' metadata)")
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError as exc:
        raise ModelFileError(f"{path}: invalid format_version {metadata.get('format_version')!r}") from exc
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {version} is newer than this molnet ({__version__}) reads "
            f"(format {FORMAT_VERSION}); upgrade molnet"
        )
    try:
        return {
            **metadata,
            "config": json.loads(metadata["config"]),
            "training": json.loads(metadata.get("training", "{}")),
            "provenance": json.loads(metadata.get("provenance", "{}")),
        }
    except (KeyError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: the model configuration in the metadata is missing or not JSON") from exc


#: Options added after model files were first written, per family, with the value that files
#: written before them were built with (a stored configuration lists every option it was built
#: with, so a missing one means the file predates it).
LEGACY_DEFAULTS = {"mace": {"first_layer_residual": False}}


def _keep_rebuilt_constants(model: Potential, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with each buffer that ``model`` rebuilt from its configuration in a finer dtype
    than the file's, and that equals the file's value to the file's precision, replaced by the
    rebuilt value: constants such as e3nn's Wigner-3j blocks then keep full precision when a
    float32 file is loaded in float64 (rounded, equivariance would hold to 1e-8 only). Parameters
    and buffers that differ from the rebuilt ones (element energies, scale, shift) come from the file.
    """
    built = model.state_dict()
    parameters = {name for name, _ in model.named_parameters()}
    out = dict(tensors)
    for key, stored in tensors.items():
        fresh = built.get(key)
        if key in parameters or fresh is None or not stored.is_floating_point() or fresh.shape != stored.shape:
            continue
        if not fresh.is_floating_point() or torch.finfo(stored.dtype).eps <= torch.finfo(fresh.dtype).eps:
            continue
        tolerance = 4 * torch.finfo(stored.dtype).eps * float(fresh.abs().max()) if fresh.numel() else 0.0
        if bool(((fresh - stored.to(fresh.dtype)).abs() <= tolerance).all()):
            out[key] = fresh
    return out


def load_model_file(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> Potential:
    """Build the model described in ``path`` and load its weights (never unpickles)."""
    path = Path(path)
    meta = read_metadata(path)
    stored_dtype = getattr(torch, meta.get("dtype", "float32"), torch.float32)
    config = {**LEGACY_DEFAULTS.get(meta["config"].get("name"), {}), **meta["config"]}
    try:
        model = build_model(config, dtype=dtype or stored_dtype)
    except ConfigError as exc:
        raise ModelFileError(f"{path}: the stored configuration is invalid: {exc}") from exc
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise ModelFileError(f"{path}: the weights cannot be read (corrupt or truncated?): {exc}") from exc
    try:
        model.load_state_dict(_keep_rebuilt_constants(model, tensors), strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the stored configuration: {exc}") from exc
    model.training_summary = meta["training"]
    model.provenance = meta["provenance"]
    return model.to(device).eval()
