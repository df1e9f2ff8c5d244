"""``build_model``: one entry point that turns a configuration dict into a :class:`Potential`.

A family registers its config dataclass and its body class here: one line per family.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
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


@dataclass
class ModelConfig:
    """The checked configuration of a model: the shared keys and the family's dataclass.

    One schema for :func:`build_model`, the training YAML's ``model:`` section and a model file's
    metadata, all of which hold the flat mapping of :meth:`to_dict`. ``family`` is the family's
    dataclass (e.g. :class:`molnet.nn.mace.MACEConfig`, whose ``long_range`` entries are checked
    against the blocks' signatures); ``e0s`` (eV per element, a mapping or a list in
    ``elements`` order), ``scale`` and ``shift`` (eV) default to the training statistics.

    Examples
    --------
    >>> config = ModelConfig.from_dict({"name": "mpnn", "elements": ["H", "O"], "r_max": 4.0})
    >>> config.family.r_max, config.to_dict()["num_channels"]
    (4.0, 64)
    """

    name: str
    elements: list[str]
    family: Any
    e0s: Any = None
    scale: float | None = None
    shift: float | None = None

    @classmethod
    def from_dict(cls, config: dict[str, Any], need_elements: bool = True) -> "ModelConfig":
        """Check ``config`` (flat: shared keys and family keys) and split it; ConfigError names what is wrong.

        ``need_elements=False`` checks a configuration whose elements come later (from training data).
        """
        config = dict(config)
        name = config.get("name")
        if name not in FAMILIES:
            raise ConfigError(f"unknown model family {name!r}; choose from {sorted(FAMILIES)}")
        elements = config.get("elements")
        if elements is not None or need_elements:
            if not elements or not isinstance(elements, (list, tuple)):
                raise ConfigError("the model configuration needs 'elements', a non-empty list of chemical symbols")
            bad = [s for s in elements if s not in SYMBOL_TO_Z or s == "X"]
            if bad or len(set(elements)) != len(elements):
                raise ConfigError(f"'elements' must be distinct chemical symbols; got {list(elements)}")
        config_cls, _ = FAMILIES[name]()
        fields = {f.name for f in dataclasses.fields(config_cls)}
        hyper = {k: v for k, v in config.items() if k not in COMMON_KEYS}
        unknown = set(hyper) - fields
        if unknown:
            raise ConfigError(
                f"unknown key(s) {sorted(unknown)} for model family {name!r}; "
                f"valid keys: {sorted(fields | set(COMMON_KEYS))}"
            )
        try:
            family = config_cls(**hyper)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid configuration for {name!r}: {exc}") from exc
        return cls(name, list(elements or []), family, config.get("e0s"), config.get("scale"), config.get("shift"))

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping with every family default resolved (what a model file stores)."""
        out = {"name": self.name, "elements": list(self.elements), **dataclasses.asdict(self.family)}
        for key in ("e0s", "scale", "shift"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def family_config(config: dict[str, Any]) -> Any:
    """The family's dataclass of ``config`` (elements optional), checked: :meth:`ModelConfig.from_dict`."""
    return ModelConfig.from_dict(config, need_elements=False).family


def build_model(config: dict[str, Any] | ModelConfig, dtype: torch.dtype | None = None) -> Potential:
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
    checked = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(copy.deepcopy(dict(config)))
    _, body_cls = FAMILIES[checked.name]()
    elements = checked.elements
    with default_dtype(dtype or torch.get_default_dtype()):  # E0s, scale and shift too: no float32 rounding
        body = body_cls(len(elements), checked.family)
        model = Potential(
            body,
            elements,
            checked.to_dict(),
            e0s=checked.e0s,
            scale=1.0 if checked.scale is None else checked.scale,
            shift=0.0 if checked.shift is None else checked.shift,
        )
    model.builder = build_model
    return model.to(dtype or torch.get_default_dtype())
