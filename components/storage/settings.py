"""S3 connection settings from environment variables, so one code path serves AWS S3, MinIO and SeaweedFS.

Variables: OESDN_S3_ENDPOINT_URL (else AWS_ENDPOINT_URL; unset means AWS itself), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_DEFAULT_REGION. Without keys, boto3's own chain
(profile, instance role) applies. The secret is never part of a repr, a message or a log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.storage.errors import StorageError

ENDPOINT_VARIABLES = ("OESDN_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    """Per socket read, not per transfer: a hung endpoint costs at most about 3 x 20 s plus backoff."""
    max_attempts: int = 3
    """Attempts in all (botocore's standard mode), so a down endpoint is reported within about a minute."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if environ is None else environ
        endpoint = next((env[name] for name in ENDPOINT_VARIABLES if env.get(name)), None)
        key, secret = env.get("AWS_ACCESS_KEY_ID") or None, env.get("AWS_SECRET_ACCESS_KEY") or None
        if bool(key) != bool(secret):
            missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
            raise StorageError(
                f"S3 credentials are incomplete: {missing} is not set (set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        return cls(
            endpoint_url=endpoint,
            region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1",
            access_key_id=key,
            secret_access_key=secret,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    @property
    def where(self) -> str:
        """The endpoint for messages: the URL, or 'AWS S3' when none is set."""
        return self.endpoint_url or "AWS S3 (no endpoint URL set)"

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in output (tests check messages against these)."""
        return tuple(value for value in (self.secret_access_key, self.session_token) if value)

    def client(self) -> Any:
        """A boto3 S3 client; path-style addressing, since MinIO and SeaweedFS serve buckets as paths."""
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if self.endpoint_url else {},
            max_pool_connections=16,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            config=config,
        )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> ("bucket", "some/prefix"); the prefix has no slashes at its ends."""
    if not uri.startswith("s3://"):
        raise StorageError(f"{uri!r} is not an S3 URI; use s3://bucket/prefix")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket; use s3://bucket/prefix")
    return bucket, prefix.strip("/")
