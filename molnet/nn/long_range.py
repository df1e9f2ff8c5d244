"""The long-range plug-ins every family accepts through its ``long_range`` config entry.

``long_range`` is one spec or a list of specs: ``{"name": "ewald", ...}`` adds a learned
non-local update to every layer (:mod:`molnet.nn.ewald`); ``{"name": "coulomb", ...}`` reads
charges from the final invariant features and adds their exact Coulomb energy, unscaled
(:mod:`molnet.nn.coulomb`). Both may be given together.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from molnet.errors import ConfigError
from molnet.nn.inputs import GraphInputs

LONG_RANGE_BLOCKS = ("ewald", "coulomb")


def _specs(spec: dict[str, Any] | list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``{name: options}`` of the long-range blocks in ``spec``, each named at most once."""
    if spec is None:
        return {}
    specs = [spec] if isinstance(spec, dict) else list(spec)
    out: dict[str, dict[str, Any]] = {}
    for item in specs:
        if not isinstance(item, dict):
            raise ConfigError(f"long_range entries are mappings such as {{name: ewald}}, got {item!r}")
        options = dict(item)
        name = options.pop("name", None)
        if name not in LONG_RANGE_BLOCKS:
            raise ConfigError(f"unknown long_range block {name!r}; choose from {LONG_RANGE_BLOCKS}")
        if name in out:
            raise ConfigError(f"long_range names {name!r} twice")
        out[name] = options
    return out


def _block_class(name: str) -> type[nn.Module]:
    if name == "ewald":
        from molnet.nn.ewald import EwaldBlock

        return EwaldBlock
    from molnet.nn.coulomb import CoulombBlock

    return CoulombBlock


def _build(name: str, options: dict[str, Any], channels: int) -> nn.Module:
    """The ``name`` block for ``channels`` invariant channels; its own value errors become ConfigError."""
    try:
        return _block_class(name)(channels, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid long_range {name} options {options}: {exc}") from exc


def validate_long_range(spec: dict[str, Any] | list[dict[str, Any]] | None) -> None:
    """Raise :class:`ConfigError` for an invalid ``long_range`` entry before anything is built:
    an unknown block, a block named twice, or options its block does not take (checked against
    the block's signature, so the schema is the constructor itself)."""
    for name, options in _specs(spec).items():
        signature = inspect.signature(_block_class(name).__init__)
        valid = [p for p in signature.parameters if p not in ("self", "channels")]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(f"long_range {name}: unknown option(s) {unknown}; valid options: {valid}")


def long_range_layers(
    spec: dict[str, Any] | list[dict[str, Any]] | None, channels: int, num_layers: int
) -> nn.ModuleList | None:
    """One Ewald block per message-passing layer for ``channels`` invariant channels (None without ``ewald``).

    Each is called as ``block(h, inputs)`` with ``h`` ``[n_nodes, channels]`` and returns an update
    of the same shape, to be added to the layer's invariant channels.
    """
    options = _specs(spec).get("ewald")
    if options is None:
        return None
    return nn.ModuleList(_build("ewald", options, channels) for _ in range(num_layers))


def coulomb_block(spec: dict[str, Any] | list[dict[str, Any]] | None, channels: int) -> nn.Module | None:
    """The Coulomb block reading charges from ``channels`` final invariant features (None without ``coulomb``)."""
    options = _specs(spec).get("coulomb")
    return None if options is None else _build("coulomb", options, channels)


def add_coulomb(block: nn.Module | None, h: torch.Tensor, inputs: GraphInputs) -> None:
    """Evaluate ``block`` on the final invariant features ``h`` ``[n_nodes, channels]`` and put its
    per-atom energies and charges into ``inputs.aux`` (``coulomb_energy``, ``charges``)."""
    if block is not None:
        inputs.aux["coulomb_energy"], inputs.aux["charges"] = block(h, inputs)
