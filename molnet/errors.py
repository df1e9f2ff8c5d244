"""Error types raised by molnet.

Every error a user can trigger with bad input derives from :class:`MolnetError`
and says what was wrong, where (file, frame, atom index) and, where possible,
what to do about it.
"""

from __future__ import annotations


class MolnetError(Exception):
    """Base class of all molnet errors."""


class InputError(MolnetError, ValueError):
    """A structure given to molnet is not usable (NaN positions, overlapping atoms, ...)."""


class UnknownElementError(InputError):
    """A structure contains an element that the model was not trained on."""


class DataError(MolnetError, ValueError):
    """A data file is unreadable or lacks a required key or has arrays of the wrong shape."""


class ConfigError(MolnetError, ValueError):
    """A model or training configuration is invalid (unknown key, unknown family, ...)."""


class ModelFileError(MolnetError, ValueError):
    """A model file is missing, corrupt, truncated, foreign (e.g. a pickle) or of a newer format."""


class NonFiniteError(MolnetError, FloatingPointError):
    """A model produced NaN or infinite energies, forces or stress."""


class UnsafeModelFileError(ModelFileError):
    """A pickled model file names code outside the allowlist of classes such files hold."""


class UnsupportedModelError(ModelFileError):
    """A foreign model file uses a feature molnet cannot represent (named in the message)."""


class SimulationError(MolnetError):
    """A simulation went wrong (atoms flying apart); the trajectory written so far is kept."""
