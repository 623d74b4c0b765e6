"""Both storages behind one interface: a local folder, and GCS through a real emulator over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinserve.storage import GCSStorage, LocalStorage, StorageError, open_storage


@pytest.fixture(params=["local", "gcs"])
def storage(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    bucket = request.getfixturevalue("gcs_bucket")
    return open_storage(f"gs://{bucket}/images/v1")


def test_put_get_exists_round_trip(storage):
    assert not storage.exists("a/b/face.png")
    url = storage.put("a/b/face.png", b"\x89PNG-bytes", content_type="image/png")
    assert storage.exists("a/b/face.png")
    assert storage.get("a/b/face.png") == b"\x89PNG-bytes"
    assert url == storage.url("a/b/face.png")


def test_put_overwrites_the_same_key(storage):
    storage.put("k.bin", b"one")
    storage.put("k.bin", b"two")
    assert storage.get("k.bin") == b"two"


def test_missing_key_is_a_storage_error(storage):
    with pytest.raises(StorageError, match="nope.png"):
        storage.get("nope.png")


@pytest.mark.parametrize("key", ["../escape.png", "/etc/passwd", "", "a/../../b"])
def test_keys_cannot_escape_the_root(storage, key):
    with pytest.raises(StorageError):
        storage.put(key, b"x")


def test_local_urls_and_paths_point_at_the_file(tmp_path: Path):
    storage = open_storage(str(tmp_path / "store"))
    storage.put("x/y.png", b"data")
    path = storage.local_path("x/y.png")
    assert path == tmp_path / "store" / "x" / "y.png"
    assert path.read_bytes() == b"data"
    assert storage.url("x/y.png") == path.as_uri()
    assert not list(path.parent.glob(".*"))  # no temporary files left behind


def test_gcs_urls_name_bucket_and_prefix(gcs_bucket: str):
    storage = open_storage(f"gs://{gcs_bucket}/pre/fix/")
    assert isinstance(storage, GCSStorage)
    storage.put("k.png", b"x")
    assert storage.url("k.png") == f"gs://{gcs_bucket}/pre/fix/k.png"
    blob_names = [b.name for b in storage.client.list_blobs(gcs_bucket)]
    assert blob_names == ["pre/fix/k.png"]


@pytest.mark.parametrize("url", ["s3://bucket/x", "gs:///nobucket"])
def test_unsupported_urls_are_refused(url: str):
    with pytest.raises(StorageError):
        open_storage(url)
