"""Mirror `s3://bucket/prefix` into a local folder: only changed objects are downloaded, each is checked.

An object is unchanged when the local file still has the size and modification time recorded when
it was last verified and the remote ETag is the one recorded then; a local file without a record is
kept if its size and computed ETag match the remote one. Every download lands in a temporary file
and is renamed into place only after its size and ETag check (MD5 for single-part uploads, the
multipart ETag for multipart uploads when the part size can be inferred, else size only, said in
the report). Local files the bucket no longer holds are removed, so the folder equals the prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.io import atomic_path, write_json_atomic
from components.safe_paths import UnsafePathError, safe_relative_path
from components.storage.errors import StorageError
from components.storage.settings import S3Settings, parse_s3_uri

MIB = 1 << 20
CHUNK = MIB
# Part sizes of common uploaders (boto3/aws cli 8 MiB, MinIO and s3cmd 5/15/16 MiB, rclone 5 MiB...).
COMMON_PART_SIZES = (8 * MIB, 5 * MIB, 16 * MIB, 15 * MIB, 64 * MIB, 100 * MIB, 128 * MIB)


@dataclass(frozen=True)
class RemoteObject:
    key: str
    relative: str
    size: int
    etag: str  # without quotes


@dataclass
class SyncReport:
    source: str
    target: Path
    downloaded: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    size_only: list[str] = field(default_factory=list)  # multipart ETags whose part size was unknown

    def summary(self) -> str:
        line = (
            f"{self.source}: {len(self.downloaded)} downloaded ({self.bytes_downloaded / MIB:.1f} MiB), "
            f"{self.unchanged} unchanged, {len(self.removed)} removed -> {self.target}"
        )
        if self.size_only:
            line += f"; {len(self.size_only)} multipart object(s) checked by size and ETag record only"
        return line


# --- errors ----------------------------------------------------------------------------------------


def storage_error(error: Exception, uri: str, settings: S3Settings) -> StorageError:
    """One clear message per failure kind, naming the object (or prefix) and the endpoint, never a secret."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    where = settings.where
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        if code in {"InvalidAccessKeyId", "InvalidClientTokenId", "UnrecognizedClientException"}:
            text = f"S3 at {where} does not know the access key in AWS_ACCESS_KEY_ID (reading {uri}); check the credentials"
        elif code in {"SignatureDoesNotMatch", "InvalidSignature", "AuthFailure"}:
            text = (
                f"S3 at {where} rejected the credentials: AWS_SECRET_ACCESS_KEY does not match AWS_ACCESS_KEY_ID (reading {uri})"
            )
        elif code in {"AccessDenied", "403", "AllAccessDisabled", "Forbidden"}:
            text = f"access denied to {uri} at {where}: these credentials may not read it (check the bucket policy or the key's permissions)"
        elif code == "NoSuchBucket":
            text = f"bucket of {uri} does not exist at {where}; check data.root and the endpoint"
        elif code in {"NoSuchKey", "404", "NotFound"}:
            text = f"object {uri} is missing at {where} (deleted or renamed while syncing?)"
        else:
            text = f"S3 error {code or 'unknown'} on {uri} at {where}: {info.get('Message', error)}"
    elif isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        text = f"cannot reach the S3 endpoint {where} for {uri} ({type(error).__name__}); check OESDN_S3_ENDPOINT_URL or AWS_ENDPOINT_URL and that the server is up"
    elif isinstance(error, NoCredentialsError):
        text = f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    else:
        text = f"S3 transfer of {uri} from {where} failed: {type(error).__name__}: {error}"
    for secret in settings.secrets():
        text = text.replace(secret, "***")
    return StorageError(text)


# --- ETags -----------------------------------------------------------------------------------------


def _md5_parts(path: Path, part_size: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while True:
            part = hashlib.md5(usedforsecurity=False)
            remaining = part_size
            while remaining > 0:
                chunk = handle.read(min(CHUNK, remaining))
                if not chunk:
                    break
                part.update(chunk)
                remaining -= len(chunk)
            if remaining == part_size:  # nothing read: end of file
                return
            yield part.digest()


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def etag_matches(path: Path, etag: str) -> bool | None:
    """Does the local file have this ETag? None when it cannot be told (multipart, unknown part size)."""
    etag = etag.strip('"')
    if "-" not in etag:
        return file_md5(path) == etag
    digest, _, count_text = etag.partition("-")
    if not count_text.isdigit():
        return None
    parts, size = int(count_text), path.stat().st_size
    inferred = -(-size // parts)  # ceil, then rounded up to whole MiB as uploaders do
    candidates = dict.fromkeys([*COMMON_PART_SIZES, -(-inferred // MIB) * MIB, inferred])
    for part_size in candidates:
        if part_size <= 0 or -(-size // part_size) != parts:
            continue
        combined = hashlib.md5(b"".join(_md5_parts(path, part_size)), usedforsecurity=False).hexdigest()
        if combined == digest:
            return True
    return None


# --- sync ------------------------------------------------------------------------------------------


def _record_path(target: Path) -> Path:
    return target.parent / f".{target.name}.s3sync.json"


def _read_record(target: Path, source: str) -> dict[str, dict[str, Any]]:
    path = _record_path(target)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record.get("objects", {}) if record.get("source") == source else {}


def list_objects(client: Any, bucket: str, prefix: str) -> list[RemoteObject]:
    """Every object under `prefix/` (folder markers skipped), with its path relative to the prefix."""
    start = f"{prefix}/" if prefix else ""
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):
                continue
            relative = key[len(start) :]
            try:
                safe_relative_path(relative, what=f"S3 object s3://{bucket}/{key}: name")
            except UnsafePathError as error:
                raise StorageError(str(error)) from error  # sync_prefix reports StorageError as is
            objects.append(RemoteObject(key, relative, int(item["Size"]), str(item["ETag"]).strip('"')))
    return objects


def _unchanged(local: Path, obj: RemoteObject, recorded: dict[str, Any] | None) -> bool:
    try:
        stat = local.stat()
    except FileNotFoundError:
        return False
    if stat.st_size != obj.size:
        return False
    if recorded and recorded.get("etag") == obj.etag and recorded.get("mtime_ns") == stat.st_mtime_ns:
        return True
    return bool(etag_matches(local, obj.etag))  # e.g. a cache copied from elsewhere: verify, don't refetch


def _download(client: Any, bucket: str, obj: RemoteObject, local: Path, bar: Any, lock: threading.Lock) -> bool:
    """Fetch one object atomically; returns whether its ETag was verified (False: size only)."""
    uri = f"s3://{bucket}/{obj.key}"
    with atomic_path(local) as tmp:
        response = client.get_object(Bucket=bucket, Key=obj.key)
        digest = hashlib.md5(usedforsecurity=False)
        written = 0
        with open(tmp, "wb") as handle:
            for chunk in response["Body"].iter_chunks(CHUNK):
                handle.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                with lock:
                    bar.update(len(chunk))
        if written != obj.size:
            raise StorageError(
                f"{uri}: downloaded {written} bytes but the listing says {obj.size}; the object changed while syncing, run again"
            )
        if "-" not in obj.etag:
            verified: bool | None = digest.hexdigest() == obj.etag
        else:
            verified = etag_matches(tmp, obj.etag)
        if verified is False:
            raise StorageError(
                f"{uri}: the downloaded bytes do not match the object's ETag {obj.etag}; the transfer was corrupted or the object changed, run again"
            )
    return verified is True


def sync_prefix(
    uri: str,
    target: Path,
    settings: S3Settings | None = None,
    client: Any | None = None,
    progress: bool = True,
    workers: int = 8,
) -> SyncReport:
    """Make `target` an exact, verified copy of the objects under `uri`; see the module docstring."""
    from tqdm.auto import tqdm

    settings = settings or S3Settings.from_env()
    bucket, prefix = parse_s3_uri(uri)
    source = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    report = SyncReport(source, target)
    try:
        client = client or settings.client()
        objects = list_objects(client, bucket, prefix)
    except StorageError:
        raise
    except Exception as error:  # botocore raises many types; each becomes one clear message
        raise storage_error(error, f"{source}/", settings) from error
    if not objects:
        raise StorageError(f"no objects under {source}/ at {settings.where}; check data.root and the category name")

    target.mkdir(parents=True, exist_ok=True)
    recorded = _read_record(target, source)
    todo = [obj for obj in objects if not _unchanged(target / obj.relative, obj, recorded.get(obj.relative))]
    report.unchanged = len(objects) - len(todo)
    lock = threading.Lock()
    with tqdm(
        total=sum(o.size for o in todo), unit="B", unit_scale=True, desc=f"fetch {source}", disable=not progress or not todo
    ) as bar:

        def fetch(obj: RemoteObject) -> tuple[RemoteObject, bool]:
            try:
                return obj, _download(client, bucket, obj, target / obj.relative, bar, lock)
            except StorageError:
                raise
            except Exception as error:
                raise storage_error(error, f"s3://{bucket}/{obj.key}", settings) from error

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for obj, verified in pool.map(fetch, todo):
                report.downloaded.append(obj.relative)
                report.bytes_downloaded += obj.size
                if not verified:
                    report.size_only.append(obj.relative)

    wanted = {obj.relative for obj in objects}
    for path in sorted(target.rglob("*"), reverse=True):
        relative = path.relative_to(target).as_posix()
        if path.is_file() and relative not in wanted:
            path.unlink()
            report.removed.append(relative)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    state = {}
    for obj in objects:
        state[obj.relative] = {"size": obj.size, "etag": obj.etag, "mtime_ns": (target / obj.relative).stat().st_mtime_ns}
    write_json_atomic(_record_path(target), {"source": source, "objects": state})
    return report


def default_cache() -> Path:
    """OESDN_DATA_CACHE, else the user's cache folder: outside the project, so git and DVC ignore it."""
    configured = os.environ.get("OESDN_DATA_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oesdn" / "datasets"


def resolve_data_root(
    root: str, category: str, progress: bool = True, cache: Path | None = None, settings: S3Settings | None = None
) -> Path:
    """A local folder holding `<category>/`: `root` itself, or for `s3://bucket/prefix` a synced cache."""
    if not root.startswith("s3://"):
        return Path(root)
    bucket, prefix = parse_s3_uri(root)
    local_root = (cache or default_cache()) / bucket / prefix
    source = f"s3://{bucket}/{prefix}/{category}" if prefix else f"s3://{bucket}/{category}"
    report = sync_prefix(source, local_root / category, settings=settings, progress=progress)
    print(report.summary())
    return local_root
