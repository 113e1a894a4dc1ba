"""Exception types raised by edgemoe. Every error a user's input can cause is one of these."""


class EdgeMoEError(Exception):
    """Base class of all edgemoe errors."""


class FormatError(EdgeMoEError, ValueError):
    """A model file (container, checkpoint, config) is malformed, truncated, corrupt or unsupported."""


class UnsupportedModelError(FormatError):
    """The checkpoint uses an architecture or config feature edgemoe does not support."""


class ImageError(EdgeMoEError, ValueError):
    """An image is unreadable, corrupt, truncated, too large, or cannot go to this model."""


class StorageError(EdgeMoEError, OSError):
    """Reading model data from storage failed (I/O error, short read, checksum mismatch)."""


class BudgetError(EdgeMoEError, MemoryError):
    """The memory budget cannot hold what the model needs."""


class Cancelled(EdgeMoEError):
    """A call was stopped through its edgemoe.CancelToken (from another thread)."""
