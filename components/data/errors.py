"""The one exception for unusable datasets, shared by the image readers and the layout scanner."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset problem the user must fix; every message names the file or folder and the fix."""
