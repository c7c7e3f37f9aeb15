"""One rule for names that come from outside the project and become local paths.

S3 keys, dataset file and folder names, category names and `oesdn predict` output names are joined
onto a local folder. A name that is absolute, climbs with `..`, or hides a segment (`a//b`, `./a`)
could read or write outside that folder, or make two names land on one file; a backslash or a
control character means one thing here and another on the machine that made the name. Every caller
goes through this module, so the rule cannot drift between the S3 sync, the dataset scanner, the
params validation and predict.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from components.data.errors import DatasetError

PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""What a single folder name we create from settings (a category) may hold: portable everywhere."""


class UnsafePathError(DatasetError):
    """A name from outside that cannot be used as a local path; the message names it and its origin.

    A DatasetError (so a ValueError), because `oesdn` reports those as one clear line and pydantic
    turns a ValueError raised in a validator into an error that names the params key.
    """


def safe_relative_path(name: str, *, what: str) -> PurePosixPath:
    """`name` as a relative POSIX path that stays inside whatever folder it is joined to.

    `what` says where the name came from (e.g. "S3 object s3://b/k: name"); it starts the message.
    """
    reason = _unsafe_reason(name)
    if reason:
        raise UnsafePathError(f"{what} {name!r} cannot be used as a local path: {reason}; rename it")
    return PurePosixPath(name)


def plain_folder_name(name: object, *, what: str) -> str:
    """A single folder name of letters, digits, '_', '.' and '-', not starting with '-'.

    Stricter than `safe_relative_path`, for names the project turns into folders and command-line
    arguments itself (`dvc.yaml` passes `--category NAME`): a leading '-' reads as an option there.
    """
    text = name if isinstance(name, str) else ""
    reason = "" if isinstance(name, str) else f"it is not text (YAML read it as {type(name).__name__}; quote it)"
    reason = reason or _unsafe_reason(text)
    if not reason and "/" in text:
        reason = "it holds '/'"
    if not reason and text.startswith("-"):
        reason = "it starts with '-', which command lines read as an option"
    if not reason and not PLAIN_NAME.fullmatch(text):
        reason = "it holds other characters"
    if reason:
        raise UnsafePathError(
            f"{what} {name!r} is not a plain folder name ({reason}); use only letters, digits, '_', '.' and '-', "
            "not starting with '-' (e.g. 'bottle')"
        )
    return text


def is_inside(path: Path, roots: tuple[Path, ...]) -> bool:
    """Whether `path`, with every symbolic link followed, lies in one of the (resolved) `roots`."""
    real = path.resolve()
    return any(real.is_relative_to(root) for root in roots)


def _unsafe_reason(name: str) -> str:
    """Why `name` is not a safe relative path, or "" when it is."""
    if not name:
        return "it is empty"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "it holds a control character (NUL, newline, ...)"
    if "\\" in name:
        return "it holds a backslash, which is a folder separator on Windows"
    if name.startswith("/"):
        return "it is an absolute path"
    segments = name.split("/")
    if "" in segments:
        return "it has an empty segment ('//' or a trailing '/')"
    if "." in segments or ".." in segments:
        return "it has a '.' or '..' segment"
    return ""
