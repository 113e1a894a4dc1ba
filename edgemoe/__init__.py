"""EdgeMoE: on-device inference for Mixture-of-Experts language models."""
from .errors import BudgetError, EdgeMoEError, FormatError, StorageError, UnsupportedModelError
from .api import ContextLengthError, Model, default_model_path, load

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "ContextLengthError",
    "Model",
    "default_model_path",
    "load",
    "EdgeMoEError",
    "FormatError",
    "StorageError",
    "UnsupportedModelError",
]
