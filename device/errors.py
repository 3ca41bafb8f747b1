"""The one exception root of Glimpse and its subclasses.

Every error a user can cause derives from :class:`GlimpseError`, and also from
the matching built-in, so callers may catch either.
"""


class GlimpseError(Exception):
    """Root of every error Glimpse raises on purpose.

    Attributes:
        exit_status: what a command line exits with when this error ends it.
    """

    exit_status = 2


class BundleInvalid(GlimpseError, ValueError):
    """A bundle is missing, of the wrong version, altered, or inconsistent."""


class BundleNameInvalid(GlimpseError, ValueError):
    """A bundle name given to reload is not a plain directory name (empty, a path,
    hidden, too long, or with control characters): a bad request, not a bad bundle."""


class ModelInvalid(GlimpseError, ValueError):
    """A model directory or ``.tflite`` file cannot be used."""


class ModelUnsupported(GlimpseError, ValueError):
    """A model cannot be used for what was asked (e.g. exported for a runtime that cannot run it)."""


class QueryInvalid(GlimpseError, ValueError):
    """A search query is empty, too long, or not text."""


class ImageUnreadable(GlimpseError, ValueError):
    """A file is not an image Glimpse can read (corrupt, truncated, too large...).

    ``str()`` names the file; :attr:`reason` is the problem alone, for lists
    that show the file's name beside it.
    """

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


class ItemNotFound(GlimpseError, KeyError):
    """No item with that id exists in the bundle."""

    def __str__(self):  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "item not found"


class RuntimeMissing(GlimpseError, ImportError):
    """No TFLite interpreter (ai-edge-litert or tflite-runtime) is installed."""


class HardwareInvalid(GlimpseError, ValueError):
    """A front-panel setting (pin, display, command) cannot be used as written."""


class PortInUse(GlimpseError, OSError):
    """The daemon's address is taken by another program."""


class OutputRefused(GlimpseError, ValueError):
    """An output cannot be written there: it is, holds or lies inside an input, or is not Glimpse's own to replace."""


class BundleUnreadable(BundleInvalid):
    """This process may not read a bundle's files (owner and mode); the message says how to fix it."""


class CameraUnavailable(GlimpseError, RuntimeError):
    """No camera is configured or found, or it could not take a photo."""
