"""Glimpse on the device: open a bundle, encode text, search, serve.

Nothing happens at import time; the daemon (``glimpse serve``) owns the model
and the index.
"""

__version__ = "0.1.0"
