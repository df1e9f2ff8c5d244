"""Models from other packages brought into molnet (mace-torch model files)."""

from molnet.interop.mace import import_mace

__all__ = ["import_mace"]
