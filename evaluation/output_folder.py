"""Checking, before any work, that a run can write its results: a folder that turns out read-only after hours of
embedding or training loses all of it."""

import os
import tempfile
from pathlib import Path

__all__ = ["OutputFolderError", "ensure_writable_directory"]


class OutputFolderError(OSError):
    """An output folder that cannot be created or written; the message names it."""


def ensure_writable_directory(path, what: str = "output folder") -> Path:
    """Create `path` if needed and prove it writable by writing and removing a small file there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFolderError(f"{path}: cannot create the {what} ({error.strerror or error})") from error
    if not path.is_dir():
        raise OutputFolderError(f"{path}: the {what} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OutputFolderError(f"{path}: the {what} is not writable ({error.strerror or error})") from error
    if not os.access(path, os.W_OK | os.X_OK):  # e.g. a root-run check of a folder the real user cannot write
        raise OutputFolderError(f"{path}: the {what} is not writable")
    return path
