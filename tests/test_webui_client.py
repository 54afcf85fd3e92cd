"""The Python client against live servers on 127.0.0.1 (waitress in a thread), and its typed errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from babelsearch.webui.client import (
    BadRequest,
    Client,
    ConnectionFailed,
    Hit,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Timeout,
    Unavailable,
)

from .conftest import COLOURS, live_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client(colour_index: Path):
    with live_server({"INDEX_DIR": colour_index, "MAX_CONTENT_LENGTH": 50_000}) as url:
        yield Client(url, timeout=10)


def test_search_returns_hits(client):
    # collapse=False: the index's three photos of each colour are near-duplicates, folded by default
    result = client.search("blue", k=3, collapse=False)
    assert len(result) == 3 and all(isinstance(hit, Hit) for hit in result)
    assert [Path(hit.path).name[:4] for hit in result] == ["blue"] * 3
    assert result[0].score >= result[1].score >= result[2].score and 0 < result[0].cosine <= 1 + 1e-6
    plain = client.search("blue", k=3, rerank="none", collapse=False)  # margin reranking off: the score is the cosine
    assert plain[0].cosine == plain[0].score and {h.id for h in plain} == {h.id for h in result}
    assert result.language["name"] and result.took_ms >= 0 and result.next_offset == 3
    page = client.search("blue", k=3, offset=3, lang="fr", collapse=False)
    assert page.language["code"] == "fr"
    assert [h.id for h in page] == [h.id for h in client.search("blue", k=6, collapse=False)][3:]
    # any script survives the round trip
    assert client.search("ein Hund im Schnee", k=2).raw["query"] == "ein Hund im Schnee"
    assert client.search("猫", k=1).raw["query"] == "猫"


def test_similar_image_search_and_records(client, tmp_path):
    first = client.search("yellow", k=1)[0]
    similar = client.similar(first.id, k=2, collapse=False)
    assert first.id not in [h.id for h in similar] and all(Path(h.path).name.startswith("yellow") for h in similar)
    query = tmp_path / "query image.png"
    Image.new("RGB", (32, 32), COLOURS["green"]).save(query)
    by_file = client.search_image(query, k=2, collapse=False)
    assert all(Path(h.path).name.startswith("green") for h in by_file)
    assert [h.id for h in client.search_image(query.read_bytes(), k=2, collapse=False)] == [h.id for h in by_file]
    record = client.image(first.id)
    assert record["path"] == first.path
    assert client.thumbnail(first.id)[:2] == b"\xff\xd8"  # a JPEG
    assert client.health()["status"] == "ok" and client.stats()["index"]["catalog_images"] == 12


def test_http_failures_are_typed(client, tmp_path):
    with pytest.raises(BadRequest) as caught:
        client.search("", k=3)
    assert caught.value.status == 400 and caught.value.code == "invalid_query" and "empty" in caught.value.message
    with pytest.raises(BadRequest, match="k must be"):
        client.search("red", k=0)
    with pytest.raises(NotFound) as missing:
        client.similar(4242)
    assert missing.value.status == 404 and missing.value.code == "not_found"
    with pytest.raises(NotFound):
        client.image(4242)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(BadRequest, match="invalid_image"):
        client.search_image(junk)
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 80_000)
    with pytest.raises(PayloadTooLarge) as too_large:
        client.search_image(big)
    assert too_large.value.status == 413


def test_a_server_without_an_index_is_unavailable(tmp_path):
    with live_server({"INDEX_DIR": tmp_path / "nothing"}) as url, pytest.raises(Unavailable) as caught:
        Client(url).search("red")
    assert isinstance(caught.value, ServerError) and caught.value.status == 503 and caught.value.code == "no_index"


def test_connection_refused_and_timeouts():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionFailed, match="cannot reach"):
        Client(f"http://127.0.0.1:{port}", timeout=2).health()

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(Timeout, match="within 0.3 s"):
            Client(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3).search("red")
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:8000")


def test_importing_the_client_stays_light():
    code = (
        "import sys, babelsearch.webui.client\n"
        "heavy = {'torch', 'faiss', 'numpy', 'flask', 'werkzeug', 'PIL', 'sqlite_utils',\n"
        "         'babelsearch.engine.search', 'babelsearch.indexer'}\n"
        "loaded = {m.split('.')[0] for m in sys.modules} | set(sys.modules)\n"
        "print(sorted(heavy & loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
