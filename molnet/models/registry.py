"""``build_model``: one entry point that turns a configuration dict into a :class:`Potential`.

A family registers its config dataclass and its body class here: one line per family.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch
from ase.data import atomic_numbers as SYMBOL_TO_Z
from torch import nn

from molnet.errors import ConfigError
from molnet.models.potential import Potential
from molnet.nn.dtypes import default_dtype
from molnet.nn.mpnn import MPNN, MPNNConfig

#: Keys every family accepts; the rest go to the family's config dataclass.
COMMON_KEYS = ("name", "elements", "e0s", "scale", "shift")


def _mace():
    from molnet.nn.mace import MACE, MACEConfig

    return MACEConfig, MACE


def _ponita():
    from molnet.nn.ponita import PONITA, PONITAConfig

    return PONITAConfig, PONITA


def _csmpn():
    from molnet.nn.clifford.csmpn import CSMPN, CSMPNConfig

    return CSMPNConfig, CSMPN


#: family name → function returning (config dataclass, body class taking (num_elements, config))
FAMILIES: dict[str, Callable[[], tuple[type, type[nn.Module]]]] = {
    "mpnn": lambda: (MPNNConfig, MPNN),
    "mace": _mace,
    "ponita": _ponita,
    "csmpn": _csmpn,
}


def family_config(config: dict[str, Any]) -> Any:
    """Validate ``config`` and return the family's config dataclass instance."""
    name = config.get("name")
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; choose from {sorted(FAMILIES)}")
    config_cls, _ = FAMILIES[name]()
    fields = {f.name for f in dataclasses.fields(config_cls)}
    hyper = {k: v for k, v in config.items() if k not in COMMON_KEYS}
    unknown = set(hyper) - fields
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown)} for model family {name!r}; valid keys: {sorted(fields | set(COMMON_KEYS))}"
        )
    try:
        return config_cls(**hyper)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration for {name!r}: {exc}") from exc


def build_model(config: dict[str, Any], dtype: torch.dtype | None = None) -> Potential:
    """Build a model from its configuration, in ``dtype`` (default: torch's default dtype).

    Constant tensors (Clebsch–Gordan coefficients, coupling tensors) are created directly in
    ``dtype``, so a float64 model is exact to float64 precision; torch's global default dtype is
    left unchanged.

    Examples
    --------
    >>> model = build_model({"name": "mpnn", "elements": ["H", "O"], "r_max": 4.0})
    >>> model.elements
    ['H', 'O']
    """
    config = copy.deepcopy(dict(config))
    elements = config.get("elements")
    if not elements or not isinstance(elements, (list, tuple)):
        raise ConfigError("the model configuration needs 'elements', a non-empty list of chemical symbols")
    bad = [s for s in elements if s not in SYMBOL_TO_Z or s == "X"]
    if bad or len(set(elements)) != len(elements):
        raise ConfigError(f"'elements' must be distinct chemical symbols; got {list(elements)}")
    hyper = family_config(config)
    _, body_cls = FAMILIES[config["name"]]()
    full = {"name": config["name"], "elements": list(elements), **dataclasses.asdict(hyper)}
    for k in ("e0s", "scale", "shift"):
        if k in config:
            full[k] = config[k]
    with default_dtype(dtype or torch.get_default_dtype()):  # E0s, scale and shift too: no float32 rounding
        body = body_cls(len(elements), hyper)
        model = Potential(
            body, elements, full, e0s=config.get("e0s"), scale=config.get("scale", 1.0), shift=config.get("shift", 0.0)
        )
    model.builder = build_model
    return model.to(dtype or torch.get_default_dtype())
