"""The long-range plug-in every family accepts through its ``long_range`` config entry."""

from __future__ import annotations

from typing import Any

from torch import nn

from molnet.errors import ConfigError

LONG_RANGE_BLOCKS = ("ewald",)


def build_long_range(spec: dict[str, Any] | None, channels: int) -> nn.Module | None:
    """Build the long-range block named in ``spec`` (``{"name": "ewald", ...}``) for ``channels``
    invariant node channels, or return None when ``spec`` is None.

    The block is called as ``block(h, inputs)`` with ``h`` ``[n_nodes, channels]`` and returns an
    update of the same shape, to be added to the layer's invariant channels.
    """
    if spec is None:
        return None
    spec = dict(spec)
    name = spec.pop("name", None)
    if name == "ewald":
        from molnet.nn.ewald import EwaldBlock

        try:
            return EwaldBlock(channels, **spec)
        except TypeError as exc:
            raise ConfigError(f"invalid long_range options {spec}: {exc}") from exc
    raise ConfigError(f"unknown long_range block {name!r}; choose from {LONG_RANGE_BLOCKS}")


def long_range_layers(spec: dict[str, Any] | None, channels: int, num_layers: int) -> nn.ModuleList | None:
    """One long-range block per message-passing layer (None when ``spec`` is None)."""
    if spec is None:
        return None
    return nn.ModuleList(build_long_range(spec, channels) for _ in range(num_layers))
