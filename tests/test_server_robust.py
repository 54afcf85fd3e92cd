"""The server under change, slow clients and hostile requests (issue 14): new index generations are
picked up while it runs, idle connections cannot starve it, no redirect names a host from the request,
and a file replaced after indexing (a symlink to /etc/passwd, a FIFO) is never served."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import redirect

from babelsearch.engine import SearchEngine
from babelsearch.engine.layout import read_manifest, write_manifest
from babelsearch.indexer import build_index
from babelsearch.webui import create_app
from babelsearch.webui.server import create_server

from .conftest import COLOURS, write_image


def build(photos: Path, index: Path) -> None:
    build_index([photos], index, model="test-colours", progress=False)


def ids_named(index: Path, prefix: str) -> list[int]:
    engine = SearchEngine.open(index)
    return sorted(i for i in range(64) if (row := engine.get(i)) and Path(row["path"]).name.startswith(prefix))


@contextmanager
def serving(app, **limits: Any) -> Iterator[tuple[str, int]]:
    """``app`` on a free 127.0.0.1 port through webui.server (the limits `babelsearch serve` sets)."""
    server = create_server(app, "127.0.0.1", 0, threads=2, **limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.effective_port
    finally:
        server.close()
        thread.join(timeout=5)


def get(address: tuple[str, int], path: str, timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- a running server picks up every new generation ------------------------------------------------
@pytest.fixture
def growing(tmp_path: Path) -> tuple[Path, Path]:
    photos, index = tmp_path / "photos", tmp_path / "index"
    for n, colour in enumerate(["red", "red", "green", "green"]):
        write_image(photos / f"{colour}{n}.png", COLOURS[colour], noise_seed=n)
    build(photos, index)
    return photos, index


def add_blue(photos: Path, index: Path) -> list[int]:
    for n in range(2):
        write_image(photos / f"blue{n}.png", COLOURS["blue"], noise_seed=10 + n)
    build(photos, index)  # the same directory, as `babelsearch index` does while the server runs
    return ids_named(index, "blue")


def test_new_images_are_served_without_a_restart(growing):
    photos, index = growing
    app = create_app({"INDEX_DIR": index, "INDEX_CHECK_INTERVAL": 0})
    client = app.test_client()
    before = client.get("/api/health").get_json()
    assert before["images"] == 4
    assert not Path(client.get("/api/search?q=blue&k=1").get_json()["results"][0]["path"]).name.startswith("blue")

    blue = add_blue(photos, index)
    assert len(blue) == 2
    health = client.get("/api/health").get_json()
    assert health["images"] == 6 and health["generation"] > before["generation"]
    stats = client.get("/api/stats").get_json()
    assert stats["index"]["catalog_images"] == 6 and stats["index"]["vectors"] == 6 and stats["generations"] >= 1
    top = client.get("/api/search?q=blue&k=2&collapse=false").get_json()["results"]
    assert sorted(hit["id"] for hit in top) == blue
    for image_id in blue:  # the record, its neighbours and its bytes: one generation, all consistent
        assert client.get(f"/api/images/{image_id}").status_code == 200
        similar = client.get(f"/api/similar/{image_id}?k=1")
        assert similar.status_code == 200 and similar.get_json()["results"][0]["id"] in blue
        assert client.get(f"/images/{image_id}/thumb").status_code == 200
    assert "blue0.png" in client.get(f"/image/{blue[0]}").get_data(as_text=True)


def test_a_request_in_flight_finishes_on_the_generation_it_started_with(growing):
    photos, index = growing
    app = create_app({"INDEX_DIR": index, "INDEX_CHECK_INTERVAL": 0})
    client = app.test_client()
    old = app.extensions["babelsearch"].engine
    started, release = threading.Event(), threading.Event()
    search_page = old.search_page

    def slow_search_page(*args, **kwargs):
        started.set()
        assert release.wait(30)
        return search_page(*args, **kwargs)

    old.search_page = slow_search_page  # only the old engine is slow; the new one is opened fresh
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(client.get("/api/search?q=blue&k=6")))
    thread.start()
    assert started.wait(30)
    blue = add_blue(photos, index)
    assert client.get("/api/health").get_json()["images"] == 6  # a new request: the new generation
    assert app.extensions["babelsearch"].engine is not old
    release.set()
    thread.join(30)
    (response,) = answers
    assert response.status_code == 200  # the old shards are still readable after the writer replaced them
    assert not {hit["id"] for hit in response.get_json()["results"]} & set(blue)  # and it searched those


def test_a_generation_that_cannot_be_opened_keeps_the_old_one_serving(growing, caplog):
    photos, index = growing
    app = create_app({"INDEX_DIR": index, "INDEX_CHECK_INTERVAL": 0})
    client = app.test_client()
    good = read_manifest(index)
    broken = read_manifest(index)
    broken.shards[0].file = "shards/99999.faiss"  # as a writer mid-commit or a damaged disk could leave it
    write_manifest(index, broken)
    assert client.get("/api/search?q=red&k=1").status_code == 200  # still the old generation
    stats = client.get("/api/stats").get_json()
    assert stats["generations"] == 0 and "99999" in stats["reload_error"]
    assert "still serving the previous one" in caplog.text
    write_manifest(index, good)  # repaired: picked up at the next check
    assert client.get("/api/health").status_code == 200
    stats = client.get("/api/stats").get_json()
    assert stats["generations"] == 1 and stats["reload_error"] is None


def test_an_index_built_after_the_server_started_is_served(tmp_path):
    client = create_app({"INDEX_DIR": tmp_path / "index", "INDEX_CHECK_INTERVAL": 0}).test_client()
    assert client.get("/api/health").status_code == 503
    write_image(tmp_path / "photos" / "red.png", COLOURS["red"])
    build(tmp_path / "photos", tmp_path / "index")
    assert client.get("/api/health").get_json()["images"] == 1
    assert client.get("/images/0/thumb").status_code == 200


def test_a_live_server_picks_up_a_generation_within_its_check_interval(growing):
    photos, index = growing
    with serving(create_app({"INDEX_DIR": index, "INDEX_CHECK_INTERVAL": 0.2})) as address:
        assert b'"images":4' in get(address, "/api/health", 10)[1]
        blue = add_blue(photos, index)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, _ = get(address, f"/api/similar/{blue[0]}", 10)
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200
        assert b'"images":6' in get(address, "/api/health", 10)[1]


# -- slow and idle clients -------------------------------------------------------------------------
def idle_sockets(address: tuple[str, int], n: int, stack: ExitStack) -> list[socket.socket]:
    """n connections that never finish a request: half of them send part of one, half nothing."""
    sockets = []
    for i in range(n):
        s = stack.enter_context(socket.create_connection(address, timeout=10))
        if i % 2:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sockets.append(s)
    return sockets


def test_idle_and_half_sent_connections_do_not_starve_the_server(colour_index):
    app = create_app({"INDEX_DIR": colour_index})
    with serving(app) as address, ExitStack() as stack:  # the limits `babelsearch serve` uses
        idle_sockets(address, 150, stack)  # far past waitress' own default limit of 100
        started = time.monotonic()
        status, body = get(address, "/api/health", timeout=10)
        assert status == 200 and b'"status":"ok"' in body
        assert time.monotonic() - started < 10


def test_waitress_defaults_would_have_starved_it(colour_index):
    # the same siege against waitress' default limit: no answer (this is what the limits above prevent)
    app = create_app({"INDEX_DIR": colour_index})
    with serving(app, connection_limit=100, channel_timeout=120) as address, ExitStack() as stack:
        idle_sockets(address, 110, stack)
        with pytest.raises(TimeoutError):
            get(address, "/api/health", timeout=2)


def test_at_the_connection_limit_idle_connections_are_closed_and_a_request_is_answered(colour_index):
    app = create_app({"INDEX_DIR": colour_index})
    with serving(app, connection_limit=20, channel_timeout=1) as address, ExitStack() as stack:
        sockets = idle_sockets(address, 40, stack)
        started = time.monotonic()
        status, _ = get(address, "/api/health", timeout=15)  # waits for the idle ones to be timed out
        assert status == 200 and time.monotonic() - started < 15
        for s in sockets[:10]:  # those accepted first were closed by the server: a read sees the end
            s.settimeout(10)
            try:
                assert s.recv(1024) == b""
            except ConnectionResetError:
                pass


def test_oversized_request_headers_are_refused_before_the_app(colour_index):
    with serving(create_app({"INDEX_DIR": colour_index})) as address:
        status, body = get(address, "/api/search?q=" + "x" * 70_000, timeout=10)
        assert status == 431
        # on an API route, the API's one error shape (the OpenAPI document's), not waitress' plain text
        error = json.loads(body)["error"]
        assert error["code"] == "request_header_fields_too_large" and "64 KiB" in error["message"]
        status, body = get(address, "/search?q=" + "x" * 70_000, timeout=10)  # a page: waitress' own text
        assert status == 431 and b"Request Header Fields Too Large" in body
        assert get(address, "/api/health", timeout=10)[0] == 200


def test_a_body_over_the_servers_limit_on_an_api_route_is_answered_in_json(colour_index):
    app = create_app({"INDEX_DIR": colour_index, "MAX_CONTENT_LENGTH": 1024})
    with serving(app) as address:
        connection = http.client.HTTPConnection(*address, timeout=10)
        try:
            headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(10**9)}
            connection.request("POST", "/api/search/image", body=b"", headers=headers)
            response = connection.getresponse()
            assert response.status == 413
            assert response.getheader("Content-Type") == "application/json"
            assert json.loads(response.read())["error"]["code"] == "payload_too_large"
        finally:
            connection.close()


def test_serve_passes_the_limits_to_waitress(colour_index, monkeypatch):
    seen: dict[str, Any] = {}
    monkeypatch.setattr("waitress.create_server", lambda app, **options: seen.update(options))
    create_server(create_app({"INDEX_DIR": colour_index}), "127.0.0.1", 0)
    assert seen["connection_limit"] == 1000 and seen["channel_timeout"] == 30 and seen["cleanup_interval"] == 10
    assert seen["asyncore_use_poll"] is True and seen["max_request_header_size"] == 64 * 1024


# -- redirects never name a host from the request --------------------------------------------------
HOSTILE = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize(
    "url",
    [
        "/static//etc/passwd",
        "//static/app.js",
        "//evil.example/",
        "///evil.example/x",
        "//api/health",
        "/api//health",
        "/api/health/",
        "/image/1/",
        "/static/../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
    ],
)
def test_no_redirect_points_to_a_host_from_the_request(colour_index, url):
    client = create_app({"INDEX_DIR": colour_index}).test_client()
    response = client.get(url, headers=HOSTILE)
    assert not 300 <= response.status_code < 400, (url, response.status_code, response.headers.get("Location"))
    assert "evil.example" not in response.headers.get("Location", "")
    assert b"root:" not in response.data


def test_a_redirect_made_by_the_app_is_kept_on_this_server(colour_index):
    app = create_app({"INDEX_DIR": colour_index})
    targets = ["http://evil.example/a?b=1", "//evil.example/c", "/\\evil.example/d"]
    app.add_url_rule("/go/<int:n>", "go", lambda n: redirect(targets[n]))
    client = app.test_client()
    assert [client.get(f"/go/{n}", headers=HOSTILE).headers["Location"] for n in range(3)] == [
        "/a?b=1",
        "/c",
        "/evil.example/d",
    ]


def test_the_static_double_slash_over_a_live_server(colour_index):
    with serving(create_app({"INDEX_DIR": colour_index})) as address:
        connection = http.client.HTTPConnection(*address, timeout=10)
        connection.putrequest("GET", "/static//etc/passwd", skip_host=True)
        connection.putheader("Host", "evil.example")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 404 and response.getheader("Location") is None and b"root:" not in response.read()
        connection.close()


# -- a file replaced after indexing is not served --------------------------------------------------
@pytest.fixture
def one_photo(tmp_path: Path) -> tuple[Path, Any]:
    photo = write_image(tmp_path / "photos" / "red.png", COLOURS["red"])
    build(tmp_path / "photos", tmp_path / "index")
    client = create_app({"INDEX_DIR": tmp_path / "index"}).test_client()
    assert client.get("/images/0/file").data == photo.read_bytes()
    assert client.get("/images/0/thumb").status_code == 200  # a thumbnail already cached
    return photo, client


def secret_file(tmp_path: Path) -> Path:
    path = Path("/etc/passwd")
    if not path.is_file():
        path = tmp_path / "secret.txt"
        path.write_text("root:x:0:0:secret\n")
    return path


def assert_refused(client, path: Path, what: str) -> None:
    for url in ("/images/0/file", "/images/0/thumb", "/images/0/thumb?size=1024"):
        response = client.get(url)
        assert response.status_code == 410, (url, response.data)
        error = response.get_json()["error"]
        assert error["code"] == "file_changed" and what in error["message"]
        assert b"root:" not in response.data
    page = client.get("/image/0").get_data(as_text=True)
    assert "/images/0/file" not in page and "changed or replaced" in page


def test_a_file_replaced_by_a_symlink_is_not_served(one_photo, tmp_path):
    photo, client = one_photo
    photo.unlink()
    photo.symlink_to(secret_file(tmp_path))
    assert_refused(client, photo, "symbolic link")
    thumbs = list((tmp_path / "index" / ".thumbs").iterdir())
    assert len(thumbs) == 1  # the one made before; nothing made of what the link leads to


def test_a_symlink_to_an_identical_copy_is_not_served_either(one_photo, tmp_path):
    photo, client = one_photo
    copy = tmp_path / "copy.png"
    shutil.copy2(photo, copy)  # same bytes, size and mtime: only the link gives it away
    photo.unlink()
    photo.symlink_to(copy)
    assert_refused(client, photo, "symbolic link")


def test_a_file_replaced_by_another_or_changed_is_not_served(one_photo, tmp_path):
    photo, client = one_photo
    photo.write_bytes(secret_file(tmp_path).read_bytes())
    assert_refused(client, photo, "another size")
    write_image(photo, COLOURS["red"])  # the same bytes again, but written anew: another mtime
    stat = photo.stat()
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert_refused(client, photo, "modified after it was indexed")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_file_replaced_by_a_fifo_or_a_folder_is_refused_at_once(one_photo):
    photo, client = one_photo
    photo.unlink()
    os.mkfifo(photo)  # opening it for reading would block until a writer came: never here
    started = time.monotonic()
    assert_refused(client, photo, "no longer a regular file")
    assert time.monotonic() - started < 10
    photo.unlink()
    photo.mkdir()
    assert_refused(client, photo, "no longer a regular file")
