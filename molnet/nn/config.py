"""Hyperparameters that every model family shares."""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np

from molnet.data.neighbors import DEFAULT_R_MAX
from molnet.errors import ConfigError


@dataclass
class GraphConfig:
    """The radius graph and its radial features: ``r_max`` (Å), Bessel basis size, envelope
    exponent p, the mean neighbor count that normalises neighbor sums (set from the training
    data), and the optional long-range block (``{"name": "ewald", ...}``, ``{"name": "coulomb", ...}`` or a list of both)."""

    r_max: float = DEFAULT_R_MAX
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    avg_num_neighbors: float = 1.0
    long_range: dict[str, Any] | list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if not self.r_max > 0:
            raise ConfigError(f"r_max must be positive, got {self.r_max}")
        if self.num_bessel < 1:
            raise ConfigError(f"num_bessel must be >= 1, got {self.num_bessel}")
        if self.num_polynomial_cutoff < 2:
            raise ConfigError(f"num_polynomial_cutoff must be >= 2, got {self.num_polynomial_cutoff}")
        if not self.avg_num_neighbors > 0:
            raise ConfigError(f"avg_num_neighbors must be positive, got {self.avg_num_neighbors}")
        from molnet.nn.long_range import validate_long_range

        validate_long_range(self.long_range)


def check_field_types(config: Any) -> None:
    """Refuse a dataclass ``config`` whose field values do not have their annotated types.

    A YAML or command-line value of the wrong type would otherwise build another model than
    asked (the string ``'False'`` is truthy) or fail deep inside e3nn. Integers pass as floats;
    booleans pass only as booleans. NumPy scalars become Python numbers, so that the
    configuration saves as JSON with the model.
    """
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, hint = _plain(getattr(config, field.name)), hints[field.name]
        setattr(config, field.name, value)
        if not _has_type(value, hint):
            advice = " (write booleans as true/false, numbers without quotes)" if isinstance(value, str) else ""
            raise ConfigError(f"{field.name} must be {_describe(hint)}, got {value!r} ({type(value).__name__}){advice}")


def _plain(value: Any) -> Any:
    """NumPy scalars (also inside lists) as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _has_type(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_has_type(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg, plural) for arg in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list of {_describe(args[0], plural=True)}" if args else "a list"
    if origin is dict:
        return "mappings" if plural else "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    plurals = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    return (plurals if plural else names).get(hint, getattr(hint, "__name__", str(hint)))
