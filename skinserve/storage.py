"""Where image files live: a local directory (the default) or `gs://bucket/prefix`, behind one small interface."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlparse

from skinserve.errors import SkinserveError


class StorageError(SkinserveError):
    pass


def content_key(prefix: str, sha256: str, suffix: str) -> str:
    """`<prefix>/<ab>/<sha256><suffix>`: content-addressed, so the same bytes are stored once; the two-character
    fan-out keeps any one folder (or GCS listing prefix) small."""
    return f"{prefix}/{sha256[:2]}/{sha256}{suffix}"


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        """Store `data` under `key` and return its URL."""

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def url(self, key: str) -> str: ...

    def local_path(self, key: str) -> Path | None:
        """The file on this machine holding `key`, where there is one."""


def clean_key(key: str) -> str:
    """A relative posix key; absolute paths and '..' are refused so a key can never escape its root."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\\" in key:
        raise StorageError(f"invalid storage key {key!r}")
    return path.as_posix()


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        return self.root / clean_key(key)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a file even if the process dies mid-write.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.url(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as err:
            raise StorageError(f"no object {key!r} in {self.root}") from err

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class GCSStorage:
    """Google Cloud Storage through google-cloud-storage; honours STORAGE_EMULATOR_HOST for local emulators."""

    def __init__(self, bucket: str, prefix: str = "", client=None) -> None:
        from google.cloud import storage as gcs  # imported here: the local default must not need it

        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.client = client or _gcs_client(gcs)
        self.bucket = self.client.bucket(bucket)

    def _name(self, key: str) -> str:
        key = clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        self.bucket.blob(self._name(key)).upload_from_string(data, content_type=content_type)
        return self.url(key)

    def get(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._name(key)).download_as_bytes()
        except NotFound as err:
            raise StorageError(f"no object {key!r} in gs://{self.bucket_name}/{self.prefix}") from err

    def exists(self, key: str) -> bool:
        return self.bucket.blob(self._name(key)).exists()

    def url(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"

    def local_path(self, key: str) -> Path | None:
        return None


def _gcs_client(gcs):
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "skinserve-local")
        return gcs.Client(project=project, credentials=AnonymousCredentials())
    return gcs.Client()


def open_storage(url: str) -> Storage:
    """`gs://bucket/prefix` or a local directory (a plain path or `file://`)."""
    parsed = urlparse(url)
    if parsed.scheme == "gs":
        if not parsed.netloc:
            raise StorageError(f"storage URL {url!r} names no bucket")
        return GCSStorage(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a plain path (or a Windows drive letter)
        return LocalStorage(Path(url))
    raise StorageError(f"unsupported storage URL {url!r}: use a directory or gs://bucket/prefix")
