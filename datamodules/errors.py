"""The errors a user's data input raises: one line naming the input and the fix.

``datamodules`` imports nothing from ``lightning_ssl``, so the command line recognises these
classes (rather than its own ``UsageError``) to print them as one line with exit status 2.
"""

from __future__ import annotations


class DataInputError(ValueError):
    """A wrong data option or file (a path, a folder layout, an image): the message names it and the fix."""


class DataNotFoundError(DataInputError, FileNotFoundError):
    """Data files that are not where the options say (a wrong ``root``, a missing folder)."""
