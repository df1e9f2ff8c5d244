"""The sections of a training configuration as users write them, and LightningCLI's layout.

Users write the architecture under ``model:`` and the training loop's settings under
``training:``::

    model:    {name: mace, r_max: 5.0, num_channels: 32}    # build_model's configuration
    training: {dtype: float32, lr: 0.01, forces_weight: 100}  # PotentialModule's arguments
    data:     {train_file: train.xyz, batch_size: 5}

LightningCLI files every argument of the LightningModule under ``model:``, so the architecture
itself would sit under ``model.model``. :func:`to_lightning` turns the user layout (files given
with ``--config`` and dotted overrides such as ``--model.num_channels 8`` or
``--training.lr 0.005``) into LightningCLI's; :func:`to_user` turns a resolved LightningCLI
configuration back (the ``config.yaml`` a run writes). Configurations in LightningCLI's layout
(``model.model.*``, ``model.lr``) are read unchanged.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import yaml

from molnet.errors import ConfigError
from molnet.train.module import PotentialModule, model_architecture, typed_model_config

#: PotentialModule's arguments other than the architecture: the ``training:`` section
TRAINING_KEYS = frozenset(inspect.signature(PotentialModule.__init__).parameters) - {"self", "model"}


def split_model_section(section: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model:`` as written → (architecture, training arguments written in LightningCLI's layout)."""
    section = dict(section or {})
    if isinstance(section.get("model"), dict):  # LightningCLI's layout: model.model.*
        architecture = section.pop("model")
    else:
        architecture = {k: v for k, v in section.items() if k not in TRAINING_KEYS}
        section = {k: v for k, v in section.items() if k in TRAINING_KEYS}
    return architecture, section


def to_lightning_config(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration in the user layout (or LightningCLI's) → LightningCLI's layout.

    The architecture stays as written; one without ``name`` extends the default model when the
    module builds it (:func:`~molnet.train.module.model_architecture`).
    """
    config = dict(config)
    training = dict(config.pop("training", None) or {})
    unknown = set(training) - TRAINING_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in 'training:'; valid keys: {sorted(TRAINING_KEYS)}")
    architecture, old_training = split_model_section(config.pop("model", None) or {})
    clash = set(training) & set(old_training)
    if clash:
        raise ConfigError(f"{sorted(clash)} given under both 'model:' and 'training:'; keep them under 'training:'")
    module = {**old_training, **training}
    if architecture:  # as written: PotentialModule extends DEFAULT_MODEL (model_architecture)
        module["model"] = architecture
    if module:
        config["model"] = module
    return config


def _option(name: str) -> str:
    """A dotted option (without ``--``) → its LightningCLI spelling."""
    head, _, rest = name.partition(".")
    if head == "training" and rest:
        return f"model.{rest}"
    if head == "model" and not rest:
        return "model.model"
    if head == "model":
        first = rest.split(".")[0]
        return name if first in TRAINING_KEYS or first == "model" else f"model.model.{rest}"
    return name


def to_user_names(text: str) -> str:
    """Option names of LightningCLI's layout in ``text`` (an error message) → the user layout:
    ``model.model.X`` → ``model.X``, ``model.X`` → ``training.X`` (:func:`_option` in reverse).

    Only options (``--model.lr``) and quoted keys (``"model.lr"``, an argument of the training
    loop) are renamed; values such as a file ``runs/model.ckpt`` stay as written."""

    def user(match: re.Match) -> str:
        architecture, key = match.group(1), match.group(2)
        if architecture:
            return f"model.{key}"
        return "model" if key == "model" else f"training.{key}"

    def quoted(match: re.Match) -> str:
        return user(match) if match.group(1) or match.group(2) in TRAINING_KEYS else match.group(0)

    text = re.sub(r"(?<=--)model\.(model\.)?(\w+)", user, text)
    return re.sub(r"(?<=[\"'])model\.(model\.)?(\w+)(?=[\"'])", quoted, text)


def to_lightning_args(argv: list[str]) -> list[str]:
    """Command-line arguments in the user layout → LightningCLI's.

    ``--config FILE`` becomes the translated YAML text (jsonargparse takes a file or its
    content); ``--model MAPPING`` and ``--model.X`` (an architecture key) become
    ``--model.model …``; ``--training.X`` becomes ``--model.X``.
    """
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if not arg.startswith("--"):
            out.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        if name == "config":
            path = value if eq else next(args, None)
            if path is None:
                raise ConfigError("--config needs a file")
            out += ["--config", yaml.safe_dump(to_lightning_config(read_yaml(path)), sort_keys=False)]
            continue
        out.append(f"--{_option(name)}{eq}{value}" if eq else f"--{_option(name)}")
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with a clear error when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"--config {path}: expected a mapping of sections (model:, training:, data:, trainer:)")
    return config


def to_user_config(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved LightningCLI configuration → the user layout (``model:`` architecture, ``training:``);
    dotted overrides of the architecture (strings on the command line) are written typed."""
    config = dict(config)
    module = dict(config.pop("model", None) or {})
    written = module.pop("model", None) or {}
    # a new model: the architecture it builds; a fine-tuned one (init_from): what was written (the file has the rest)
    architecture = typed_model_config(written) if module.get("init_from") else model_architecture(written)
    ordered: dict[str, Any] = {}
    for key, value in config.items():
        if key == "data":
            ordered["model"] = architecture
            ordered["training"] = module
        ordered[key] = value
    ordered.setdefault("model", architecture)
    ordered.setdefault("training", module)
    return ordered
