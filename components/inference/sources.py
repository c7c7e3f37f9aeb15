"""Expand what the user names on the command line into a list of image files.

An image file, a folder (searched recursively for image extensions), a glob (`'line3/**/*.png'`), or
an S3 object or prefix (`s3://bucket/key.png`, `s3://bucket/prefix/`, `s3://bucket/prefix/*.png`).
S3 objects are downloaded into a temporary folder first; boto3 finds credentials as usual and the
endpoint in AWS_ENDPOINT_URL (MinIO, Ceph...) when set.

Every name that becomes an output path (`--maps`) passes `components.safe_paths`: an S3 key such as
`cam1/../../etc/x.png` becomes an error row and is never downloaded, and names are unique without
regard to case or extension (`x.png`, `x.PNG`, `x.jpg` -> `x`, `x-1`, `x-2`), so no output
overwrites another on any file system.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from components.data.images import IMAGE_EXTENSIONS
from components.safe_paths import UnsafePathError, safe_relative_path

_GLOB_CHARS = frozenset("*?[")


class SourceError(ValueError):
    """A source that names no images or cannot be read; the message names it."""


@dataclass(frozen=True)
class Source:
    location: str
    """As reported in predictions.csv: the local path or the s3:// URI."""
    path: Path
    """The local file to decode."""
    name: str
    """Relative name (POSIX, unique within one run) for per-image outputs such as heat maps."""
    error: str | None = None
    """Why the file cannot be scored, known before reading it (an unsafe name); it becomes an error row."""


def _named(location: str, path: Path, name: str, what: str) -> Source:
    """A source whose `name` is a safe relative path, or one that carries why it is not."""
    try:
        safe_relative_path(name, what=what)
    except UnsafePathError as error:
        return Source(location, path, name, f"unsafe name: {error}")
    return Source(location, path, name)


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def expand_sources(specs: Sequence[str], download_dir: Path) -> list[Source]:
    """All images named by `specs`, in order, duplicates removed; SourceError if a spec finds none."""
    found: list[Source] = []
    for spec in specs:
        expanded = _expand_s3(spec, download_dir) if spec.startswith("s3://") else _expand_local(spec)
        if not expanded:
            raise SourceError(f"no images found for {spec!r} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        found.extend(expanded)
    return _unique(found)


def _expand_local(spec: str) -> list[Source]:
    path = Path(spec)
    if path.is_file():
        # Named explicitly: always included, whatever its extension, so a bad file is reported.
        return [_named(spec, path, path.name, "file name")]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
        return [_named(str(p), p, p.relative_to(path).as_posix(), "file name") for p in files]
    if _GLOB_CHARS & set(spec):
        root = _glob_root(spec)
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
        files = [p for p in matches if p.is_file()]
        return [_named(str(p), p, _relative(p, root), "file name") for p in files]
    raise SourceError(f"{spec!r} is neither a file, a folder nor a glob that matches anything")


def _glob_root(spec: str) -> Path:
    """The folder above the first wildcard: outputs keep the structure below it."""
    parts = Path(spec).parts
    fixed = [part for part in _take_until_magic(parts)]
    return Path(*fixed) if fixed else Path(".")


def _take_until_magic(parts: Iterable[str]) -> Iterable[str]:
    for part in parts:
        if _GLOB_CHARS & set(part):
            return
        yield part


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _unique(sources: list[Source]) -> list[Source]:
    """Drop repeated files; give clashing output names a numeric suffix so no output overwrites another.

    Names clash when they differ only in case or extension: outputs drop the extension
    (`x_overlay.png`), and macOS and Windows file systems ignore case.
    """
    seen_files: set[str] = set()
    taken: set[str] = set()
    result = []
    for source in sources:
        if source.location in seen_files:
            continue
        seen_files.add(source.location)
        if source.error is not None:  # never written, so it takes no name
            result.append(source)
            continue
        name, n = source.name, 1
        while _output_key(name) in taken:
            stem = PurePosixPath(source.name)
            name = str(stem.with_name(f"{stem.stem}-{n}{stem.suffix}"))
            n += 1
        taken.add(_output_key(name))
        result.append(Source(source.location, source.path, name))
    return result


def _output_key(name: str) -> str:
    return PurePosixPath(name).with_suffix("").as_posix().casefold()


# --- S3 --------------------------------------------------------------------------------------------


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _expand_s3(uri: str, download_dir: Path, client: Any | None = None) -> list[Source]:
    """Download one object, every image under a prefix, or the keys matching a glob pattern."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise SourceError(f"{uri!r} names no bucket; use s3://bucket/key or s3://bucket/prefix/")
    client = client or _s3_client()
    current = key  # the key an error is about
    try:
        if _GLOB_CHARS & set(key):
            prefix = "/".join(_take_until_magic(key.split("/")))
            prefix = f"{prefix}/" if prefix else ""
            keys = [k for k in _list_keys(client, bucket, prefix) if fnmatch.fnmatchcase(k, key)]
        elif key and not key.endswith("/"):
            if _object_exists(client, bucket, key):
                keys, prefix = [key], key[: key.rfind("/") + 1]
            else:  # s3://bucket/folder without the trailing slash
                prefix = f"{key}/"
                keys = _list_keys(client, bucket, prefix)
                if not keys:
                    raise SourceError(f"s3://{bucket}/{key} not found: no such object or prefix (check the key and bucket)")
        else:
            prefix = key
            keys = _list_keys(client, bucket, prefix)
        sources = []
        for k in keys:
            if len(keys) > 1 and not is_image_name(k):
                continue
            location = f"s3://{bucket}/{k}"
            name = k[len(prefix) :] or PurePosixPath(k).name
            source = _named(location, _download_path(download_dir, location), name, f"S3 object {location}: name")
            if source.error is None:
                source.path.parent.mkdir(parents=True, exist_ok=True)
                current = k
                client.download_file(bucket, k, str(source.path))
            sources.append(source)
        return sources
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        where = f"s3://{bucket}/{current}"
        if code in {"403", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            raise SourceError(f"access denied to {where} ({code}): check AWS credentials and the bucket policy") from error
        if code in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}:
            raise SourceError(f"{where} not found ({code}): check the bucket and key") from error
        raise SourceError(f"cannot read {where}: {error}") from error
    except BotoCoreError as error:
        raise SourceError(f"cannot reach S3 for {uri} ({error}); set AWS_ENDPOINT_URL for a non-AWS store") from error


def _download_path(download_dir: Path, uri: str) -> Path:
    """A local file named by a digest of the URI: no key can reach outside `download_dir`, and keys
    such as `a.png` and `a.png/b.png` (a file and a folder locally) cannot collide."""
    digest = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:32]
    return download_dir / f"{digest}{PurePosixPath(uri).suffix.lower()}"


def _object_exists(client: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return True


def _list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
