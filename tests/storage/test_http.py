"""`HttpBlobStore` against the real server app, served by uvicorn on a loopback port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from dstack.api.blobs import HttpBlobStore
from dstack.errors import AuthError, NotFoundError, ServerUnreachableError, StorageError
from dstack.storage import LocalBlobStore
from dstack.storage.manifests import scan
from dstack.storage.transfer import place, push

from .conftest import TOKEN, sha, write_tree


def test_push_and_place_through_the_server(
    server: tuple[str, LocalBlobStore], tmp_path: Path
) -> None:
    url, server_blobs = server
    write_tree(tmp_path / "out", {"a": b"a" * 3_000_000, "b/c": b"c"})
    manifest = scan(tmp_path / "out", "out")

    with HttpBlobStore(url, TOKEN) as store:
        first = push(manifest, tmp_path / "out", store)
        second = push(manifest, tmp_path / "out", store)
        place(manifest, tmp_path / "copy", store)
        size = store.size(sha(b"c"))

    assert (first.files, second.files, second.skipped_files) == (2, 0, 2)
    assert sorted(server_blobs.list_digests()) == sorted([sha(b"a" * 3_000_000), sha(b"c")])
    assert (tmp_path / "copy" / "a").read_bytes() == b"a" * 3_000_000
    assert size == 1


def test_missing_blob_and_bad_token(server: tuple[str, LocalBlobStore], tmp_path: Path) -> None:
    url, _ = server
    with HttpBlobStore(url, TOKEN) as store, HttpBlobStore(url, "wrong") as intruder:
        assert not store.exists(sha(b"nothing"))
        with pytest.raises(NotFoundError):
            store.get_file(sha(b"nothing"), tmp_path / "t")
        with pytest.raises(AuthError):
            intruder.exists(sha(b"nothing"))
    assert not (tmp_path / "t").exists()


def test_upload_of_content_that_does_not_match_is_refused(
    server: tuple[str, LocalBlobStore], tmp_path: Path
) -> None:
    url, server_blobs = server
    (tmp_path / "f").write_bytes(b"real")

    with HttpBlobStore(url, TOKEN) as store, pytest.raises(StorageError, match="does not match"):
        store.put_file(tmp_path / "f", sha(b"claimed"))

    assert list(server_blobs.list_digests()) == []


def test_corrupt_blob_on_the_server_is_detected_on_download(
    server: tuple[str, LocalBlobStore], tmp_path: Path
) -> None:
    url, server_blobs = server
    server_blobs.put_bytes(b"payload", sha(b"payload"))
    server_blobs.path(sha(b"payload")).chmod(0o644)
    server_blobs.path(sha(b"payload")).write_bytes(b"paylaod")

    with HttpBlobStore(url, TOKEN) as store, pytest.raises(StorageError, match=sha(b"payload")):
        store.get_file(sha(b"payload"), tmp_path / "t")

    assert not (tmp_path / "t").exists()


def test_unreachable_server_is_the_one_unreachable_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    with (
        HttpBlobStore(f"http://127.0.0.1:{port}", TOKEN) as store,
        pytest.raises(ServerUnreachableError, match="cannot reach the dstack server"),
    ):
        store.exists(sha(b"x"))


def test_missing_is_one_batch_request() -> None:
    have = sha(b"have")
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        asked = json.loads(request.content)["digests"]
        return httpx.Response(200, json={"missing": [d for d in asked if d != have]})

    with HttpBlobStore("http://server", TOKEN, transport=httpx.MockTransport(handler)) as store:
        assert store.missing([sha(b"a"), have, sha(b"a")]) == [sha(b"a")]
    assert [(r.method, r.url.path) for r in requests] == [("POST", "/api/blobs/missing")]
    assert requests[0].headers["authorization"] == f"Bearer {TOKEN}"
