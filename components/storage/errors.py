"""Storage errors: subclasses of DatasetError so that `oesdn` reports them as one clear line."""

from __future__ import annotations

from components.data.errors import DatasetError


class StorageError(DatasetError):
    """An S3 problem the user must fix; the message names the object or endpoint, never a secret."""
