"""Model assembly: the Potential wrapper, the family registry and model files."""

from molnet.models.io import load_model_file, read_metadata, save_model
from molnet.models.potential import Potential
from molnet.models.registry import FAMILIES, build_model

__all__ = ["FAMILIES", "Potential", "build_model", "load_model_file", "read_metadata", "save_model"]
