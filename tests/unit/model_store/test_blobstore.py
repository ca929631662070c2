"""Tests of the content-addressed blob store."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from model_store.blobstore import BlobStore
from model_store.errors import ArtifactNotFoundError, ArtifactTooLargeError, InvalidArtifactError


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return BlobStore(tmp_path / "blobs", cache_dir=tmp_path / "cache")
    return BlobStore(f"memory://blobs-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")


def _all_files(store: BlobStore) -> list[str]:
    return [str(p) for p in store._fs.find(store._root)]


def test_round_trip(store: BlobStore) -> None:
    data = b"model bytes " * 1000
    info = store.put_stream([data[:100], data[100:]], max_bytes=len(data))
    assert info.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert store.exists(info.digest)
    with store.open(info.digest) as f:
        assert f.read() == data
    assert store.local_path(info.digest).read_bytes() == data
    hexpart = info.digest.removeprefix("sha256:")
    assert _all_files(store) == [f"{store._root}/sha256/{hexpart[:2]}/{hexpart[2:]}"]


def test_async_stream(store: BlobStore) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"abc", b"def"):
            yield part

    info = asyncio.run(store.put_stream(chunks(), max_bytes=10))
    assert info.digest == "sha256:" + hashlib.sha256(b"abcdef").hexdigest()
    assert store.info(info.digest).size == 6


def test_same_bytes_twice_is_one_blob(store: BlobStore) -> None:
    first = store.put_stream([b"same"], max_bytes=None)
    second = store.put_stream([b"sa", b"me"], max_bytes=None)
    assert first == second
    assert store.list_digests() == [first.digest]
    assert len(_all_files(store)) == 1


def test_digest_mismatch_leaves_nothing(store: BlobStore) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(InvalidArtifactError, match="digest mismatch"):
        store.put_stream([b"payload"], max_bytes=None, expected_digest=wrong)
    assert _all_files(store) == []
    assert not store.exists(hashlib.sha256(b"payload").hexdigest())


def test_expected_digest_accepted(store: BlobStore) -> None:
    digest = hashlib.sha256(b"payload").hexdigest()
    info = store.put_stream([b"payload"], max_bytes=None, expected_digest=digest.upper())
    assert info.digest == f"sha256:{digest}"


def test_too_large_leaves_nothing(store: BlobStore) -> None:
    with pytest.raises(ArtifactTooLargeError):
        store.put_stream([b"x" * 60, b"x" * 60], max_bytes=100)
    assert _all_files(store) == []


def test_too_large_async_leaves_nothing(store: BlobStore) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 50

    with pytest.raises(ArtifactTooLargeError):
        asyncio.run(store.put_stream(chunks(), max_bytes=100))
    assert _all_files(store) == []


def test_put_file_delete_and_missing(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "artifact.bin"
    source.write_bytes(b"\x00\x01" * 5000)
    info = store.put_file(source)
    assert store.delete(info.digest) is True
    assert store.delete(info.digest) is False
    assert not store.exists(info.digest)
    with pytest.raises(ArtifactNotFoundError):
        store.open(info.digest)
    with pytest.raises(ArtifactNotFoundError):
        store.local_path(info.digest)


def test_malformed_digest_is_rejected(store: BlobStore) -> None:
    with pytest.raises(InvalidArtifactError, match="malformed digest"):
        store.open("sha256:../../etc/passwd")
