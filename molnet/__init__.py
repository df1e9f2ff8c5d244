"""molnet: equivariant message-passing interatomic potentials.

>>> import molnet
>>> model = molnet.models.build_model({"name": "mpnn", "elements": ["H", "C", "O"]})
"""

from __future__ import annotations

from molnet import models
from molnet._version import __version__
from molnet.models.inference import predict
from molnet.models.io import save_model


def load_model(name_or_path, dtype=None, device="cpu"):
    """Load a model by pretrained name, path to a ``.safetensors`` model file, or URL.

    See :func:`molnet.pretrained.load` for names and URLs. Never unpickles.
    """
    from molnet.pretrained import load

    return load(name_or_path, dtype=dtype, device=device)


__all__ = ["__version__", "load_model", "models", "predict", "save_model"]
