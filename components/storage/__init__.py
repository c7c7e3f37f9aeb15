"""S3-compatible storage (AWS S3, MinIO, SeaweedFS), configured from the environment only.

`settings.S3Settings` reads the endpoint and credentials; `sync.sync_prefix` mirrors an
`s3://bucket/prefix` into a local cache, downloading only changed objects and checking each one;
`resolve_data_root` is what the prepare stage calls so that `data.root` may be an S3 URI.
"""

from components.storage.errors import StorageError
from components.storage.settings import S3Settings, parse_s3_uri
from components.storage.sync import SyncReport, resolve_data_root, sync_prefix

__all__ = ["S3Settings", "StorageError", "SyncReport", "parse_s3_uri", "resolve_data_root", "sync_prefix"]
