"""EdgeMoE: on-device inference for Mixture-of-Experts language models."""
from .errors import BudgetError, Cancelled, EdgeMoEError, FormatError, ImageError, StorageError, UnsupportedModelError
from .api import CancelToken, ContextLengthError, Model, default_model_path, load
from .options import LoadOptions

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "CancelToken",
    "Cancelled",
    "ContextLengthError",
    "LoadOptions",
    "Model",
    "default_model_path",
    "load",
    "EdgeMoEError",
    "FormatError",
    "ImageError",
    "StorageError",
    "UnsupportedModelError",
]
