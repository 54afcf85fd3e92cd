"""The JSON API and the image routes, through Flask's test client, error paths included."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from babelsearch.cli import cli
from babelsearch.engine import SearchEngine
from babelsearch.indexer import build_index
from babelsearch.webui import create_app

from .conftest import COLOURS, write_image


@pytest.fixture(scope="module")
def app(colour_index: Path):
    return create_app({"INDEX_DIR": colour_index})


@pytest.fixture
def client(app):
    return app.test_client()


def names(payload) -> list[str]:
    return [Path(hit["path"]).name for hit in payload["results"]]


def png_bytes(colour, size=(40, 30), mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format="PNG")
    return out.getvalue()


def assert_error(response, status: int, code: str, message_part: str = "") -> dict:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"code", "message"} and error["code"] == code
    assert message_part in error["message"]
    return error


# -- search ----------------------------------------------------------------------------------------
def test_search_has_the_cli_json_shape_plus_language_and_cosine(client, colour_index):
    # collapse=false: the CLI does not fold near-duplicates unless asked, the API does unless told not to
    payload = client.get("/api/search?q=red&k=4&collapse=false").get_json()
    cli_payload = json.loads(CliRunner().invoke(cli, ["search", str(colour_index), "red", "-k", "4", "--json"]).output)
    assert set(cli_payload) <= set(payload)
    assert {"language", "offset", "next_offset", "readings", "filters"} <= set(payload)
    assert payload["readings"] == [] and payload["filters"] is None
    assert payload["query"] == "red" and payload["k"] == 4 and payload["took_ms"] >= 0
    assert payload["results"] == cli_payload["results"]
    assert all(set(hit) == {"id", "path", "score", "cosine", "relevant", "similar"} for hit in payload["results"])
    assert all(hit["similar"] == [] for hit in payload["results"])
    assert sorted(names(payload)[:3]) == ["red0.png", "red1.png", "red2.png"]
    assert payload["language"]["code"] == "en" and payload["language"]["source"] == "model"


def test_paging_slices_one_ranking(client):
    # collapse=false: the index's three photos of each colour are near-duplicates, folded by default
    whole = client.get("/api/search?q=blue&k=12&collapse=false").get_json()
    assert len(whole["results"]) == 12 and whole["next_offset"] is None  # all twelve images seen
    page = client.get("/api/search?q=blue&k=5&offset=5&collapse=false").get_json()
    assert page["offset"] == 5 and page["next_offset"] == 10
    assert page["results"] == whole["results"][5:10]
    tail = client.get("/api/search?q=blue&k=5&offset=10&collapse=false").get_json()
    assert tail["results"] == whole["results"][10:] and tail["next_offset"] is None
    past = client.get("/api/search?q=blue&k=5&offset=20&collapse=false").get_json()
    assert past["results"] == [] and past["next_offset"] is None


def test_lang_overrides_detection_and_rerank_is_accepted(client):
    payload = client.get("/api/search?q=red&k=2&lang=de").get_json()
    assert payload["language"] == {"code": "de", "name": "German", "confidence": 1.0, "source": "given"}
    assert client.get("/api/search?q=red&k=2&rerank=none").status_code == 200


def test_search_parameter_errors(client):
    assert_error(client.get("/api/search"), 400, "bad_parameter", "q")
    assert_error(client.get("/api/search?q=%20%20"), 400, "invalid_query", "empty")
    assert_error(client.get("/api/search?q=" + "x" * 1001), 400, "invalid_query", "too long")
    assert_error(client.get("/api/search?q=red&k=abc"), 400, "bad_parameter", "k must be a whole number")
    assert_error(client.get("/api/search?q=red&k=0"), 400, "bad_parameter", "k must be from 1")
    assert_error(client.get("/api/search?q=red&k=1001"), 400, "bad_parameter")
    assert_error(client.get("/api/search?q=red&offset=-1"), 400, "bad_parameter", "offset")
    assert_error(client.get("/api/search?q=red&offset=1000"), 400, "bad_parameter", "offset must be from 0 to 999")
    assert_error(client.get("/api/search?q=red&lang=%3Cscript%3E"), 400, "invalid_query", "lang")


def test_a_page_past_the_last_rank_is_cut_short_not_refused(client):
    # every k and offset the OpenAPI document allows is answered; ranks end at 1000
    payload = client.get("/api/search?q=red&k=600&offset=600").get_json()
    assert payload["k"] == 600 and payload["offset"] == 600 and payload["results"] == []
    assert payload["next_offset"] is None


@pytest.mark.parametrize(
    "query, message",
    [
        ("k=", "k must be a whole number, got ''"),  # the API's default is for an absent k, not an empty one
        ("k=05", "k must be a whole number, got '05'"),
        ("k=%205", "k must be a whole number, got ' 5'"),
        ("k=%2B5", "k must be a whole number, got '+5'"),
        ("k=%D9%A5", "k must be a whole number, got '٥'"),
        ("k=1&k=2", "k is given 2 times"),
        ("offset=", "offset must be a whole number"),
        ("rerank=", "rerank must be one of"),
        ("rerank=%20none", "rerank must be one of"),
        ("margin_k=01", "margin_k must be"),
        ("nprobe=", "nprobe must be an integer"),
        ("nprobe=1048577", "nprobe must be an integer from 1 to 1048576"),
        ("lang=%20de", "lang must be a language code"),
        ("lang=de%0A", "lang must be a language code"),
    ],
)
def test_the_api_reads_each_value_exactly_as_documented(client, query, message):
    response = client.get(f"/api/search?q=red&{query}")
    assert response.status_code == 400 and message in response.get_json()["error"]["message"]
    assert client.get(f"/?q=red&{query.replace('&k=2', '')}").status_code in (200, 400)  # pages stay lenient


def test_long_values_are_not_echoed_whole(client):
    error = assert_error(client.get("/api/search?q=red&k=" + "9" * 5000), 400, "bad_parameter")
    assert len(error["message"]) < 200


# -- similar, image search, records ----------------------------------------------------------------
def test_similar_leaves_the_image_out_and_finds_its_colour(client, colour_index):
    engine = SearchEngine.open(colour_index, model="test-colours")
    green = next(hit for hit in engine.search("green", k=1))
    payload = client.get(f"/api/similar/{green.id}?k=2&collapse=false").get_json()
    assert payload["id"] == green.id and payload["k"] == 2
    assert green.id not in [hit["id"] for hit in payload["results"]]
    assert all(name.startswith("green") for name in names(payload))
    assert_error(client.get("/api/similar/9999"), 404, "not_found", "9999")
    assert_error(client.get(f"/api/similar/{green.id}?k=x"), 400, "bad_parameter")


def test_search_by_uploaded_image(client):
    data = {"image": (io.BytesIO(png_bytes(COLOURS["yellow"])), "query.png"), "k": "3", "collapse": "false"}
    payload = client.post("/api/search/image", data=data, content_type="multipart/form-data").get_json()
    assert payload["k"] == 3 and payload["took_ms"] >= 0
    assert len(names(payload)) == 3 and all(name.startswith("yellow") for name in names(payload))
    # palette images with transparency are searched too (made RGB on a white ground)
    rgba = {"image": (io.BytesIO(png_bytes((0, 0, 0, 0), mode="RGBA")), "clear.png")}
    assert client.post("/api/search/image", data=rgba, content_type="multipart/form-data").status_code == 200


def test_image_upload_errors(client, app, monkeypatch):
    post = lambda data: client.post("/api/search/image", data=data, content_type="multipart/form-data")  # noqa: E731
    assert_error(post({}), 400, "bad_parameter", "no image uploaded")
    assert_error(post({"image": (io.BytesIO(b""), "empty.png")}), 400, "invalid_image", "empty")
    assert_error(post({"image": (io.BytesIO(b"not an image at all"), "junk.jpg")}), 400, "invalid_image")
    assert_error(post({"image": (io.BytesIO(png_bytes((1, 2, 3))), "q.png"), "k": "0"}), 400, "bad_parameter")
    # decompression-bomb guard: more pixels than allowed is refused before decoding
    monkeypatch.setattr("babelsearch.engine.images.MAX_PIXELS", 100)
    assert_error(post({"image": (io.BytesIO(png_bytes((1, 2, 3))), "big.png")}), 400, "invalid_image", "too large")


def test_upload_over_the_size_limit_is_413_json(colour_index):
    small = create_app({"INDEX_DIR": colour_index, "MAX_CONTENT_LENGTH": 10_000}).test_client()
    data = {"image": (io.BytesIO(b"\0" * 20_000), "huge.png")}
    error = assert_error(
        small.post("/api/search/image", data=data, content_type="multipart/form-data"), 413, "payload_too_large"
    )
    assert "at most" in error["message"]


def test_image_record(client):
    record = client.get("/api/images/0").get_json()
    assert {"id", "path", "bytes", "mtime", "sha256", "width", "height", "name"} <= set(record)
    assert record["id"] == 0 and Path(record["path"]).name == record["name"]
    assert record["thumb_url"] == "/images/0/thumb" and record["file_url"] == "/images/0/file"
    assert client.get(record["page_url"]).status_code == 200
    assert_error(client.get("/api/images/12345"), 404, "not_found")


# -- files and thumbnails --------------------------------------------------------------------------
def test_file_is_the_indexed_file(client):
    record = client.get("/api/images/3").get_json()
    response = client.get("/images/3/file")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.data == Path(record["path"]).read_bytes()
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert int(response.headers["Content-Length"]) == record["bytes"] and response.headers["ETag"]
    assert client.get("/images/3/file", headers={"If-None-Match": response.headers["ETag"]}).status_code == 304
    part = client.get("/images/3/file", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.data == response.data[:10]


def test_thumbnails_are_made_once_and_cached_next_to_the_index(client, colour_index, monkeypatch):
    record = client.get("/api/images/5").get_json()
    response = client.get("/images/5/thumb")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.data))
    assert thumb.size == (record["width"], record["height"])  # small images are never enlarged
    cached = list((colour_index / ".thumbs").glob("5-*-256.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == response.data
    # a second request is served from the cache, without decoding the image again
    monkeypatch.setattr("babelsearch.webui.thumbs.render_thumbnail", lambda *a: pytest.fail("not cached"))
    again = client.get("/images/5/thumb")
    assert again.data == response.data
    assert client.get("/images/5/thumb", headers={"If-None-Match": again.headers["ETag"]}).status_code == 304
    for path in (colour_index / ".thumbs").iterdir():  # names come from catalog ids and hashes only
        assert re.fullmatch(r"\d+-[0-9a-f]{16}-(256|1024)\.jpg", path.name), path.name


def test_large_thumbnail_fits_its_box(tmp_path):
    write_image(tmp_path / "photos" / "wide.png", (10, 200, 10), size=(2400, 600))
    build_index([tmp_path / "photos"], tmp_path / "index", model="test-colours", progress=False)
    client = create_app({"INDEX_DIR": tmp_path / "index"}).test_client()
    assert Image.open(io.BytesIO(client.get("/images/0/thumb").data)).size == (256, 64)
    assert Image.open(io.BytesIO(client.get("/images/0/thumb?size=1024").data)).size == (1024, 256)
    assert_error(client.get("/images/0/thumb?size=300"), 400, "bad_parameter", "256, 1024")


def test_only_catalog_ids_reach_files(client):
    for url in [
        "/images/..%2F..%2Fetc%2Fpasswd/file",
        "/images/%2Fetc%2Fpasswd/file",
        "/images/-1/file",
        "/images/99999999999999999999999/file",
        "/images/1e3/thumb",
        "/images/12345/file",
        "/images/12345/thumb",
        "/api/images/../../etc/passwd",
    ]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.get_json()["error"]["code"] == "not_found"


def test_a_vanished_or_damaged_file_is_a_clear_error(tmp_path):
    write_image(tmp_path / "photos" / "gone.png", (200, 10, 10))
    write_image(tmp_path / "photos" / "damaged.png", (10, 10, 200))
    build_index([tmp_path / "photos"], tmp_path / "index", model="test-colours", progress=False)
    (tmp_path / "photos" / "gone.png").unlink()
    damaged = tmp_path / "photos" / "damaged.png"
    before = damaged.stat()
    damaged.write_bytes(b"\0" * before.st_size)  # rotted in place: same size and mtime, so still "the" file
    os.utime(damaged, ns=(before.st_atime_ns, before.st_mtime_ns))
    client = create_app({"INDEX_DIR": tmp_path / "index"}).test_client()
    ids = {Path(client.get(f"/api/images/{i}").get_json()["path"]).name: i for i in (0, 1)}
    assert_error(client.get(f"/images/{ids['gone.png']}/file"), 404, "file_missing", "gone.png")
    assert_error(client.get(f"/images/{ids['gone.png']}/thumb"), 404, "file_missing")
    assert_error(client.get(f"/images/{ids['damaged.png']}/thumb"), 500, "file_unreadable")
    damaged.write_bytes(b"no longer a png")  # rewritten: another file now, not served as the indexed one
    assert_error(client.get(f"/images/{ids['damaged.png']}/thumb"), 410, "file_changed", "another size")
    assert "no longer at its indexed path" in client.get(f"/image/{ids['gone.png']}").get_data(as_text=True)


def test_thumbnails_without_a_writable_cache(colour_index):
    client = create_app({"INDEX_DIR": colour_index, "THUMB_DIR": False}).test_client()
    assert client.get("/images/1/thumb").status_code == 200


# -- service endpoints, errors ---------------------------------------------------------------------
def test_health_stats_and_unknown_routes(client):
    health = client.get("/api/health").get_json()
    assert health == {"status": "ok", "images": 12, "model": "test-colours", "generation": health["generation"]}
    assert health["generation"] > 0
    client.get("/api/search?q=red")
    stats = client.get("/api/stats").get_json()
    assert stats["index"]["catalog_images"] == 12 and stats["index"]["model"] == "test-colours"
    assert stats["requests"]["api.search"] >= 1 and stats["statuses"]["200"] >= 1
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_error(client.post("/api/search?q=red"), 405, "method_not_allowed")
    assert_error(client.get("/api/search/image"), 405, "method_not_allowed")
    # RFC 9110: a 405 says what is allowed
    assert set(client.post("/api/search?q=red").headers["Allow"].split(", ")) >= {"GET", "HEAD"}
    assert "POST" in client.get("/api/search/image").headers["Allow"]
    assert "GET" in client.open("/images/0/file", method="TRACE").headers["Allow"]


def test_no_index_loaded(tmp_path):
    for config, reason in [({}, "babelsearch serve"), ({"INDEX_DIR": tmp_path / "absent"}, "absent")]:
        client = create_app(config).test_client()
        for url in ["/api/search?q=red", "/api/health", "/api/similar/1", "/api/images/1", "/images/1/thumb"]:
            assert_error(client.get(url), 503, "no_index", reason)
        page = client.get("/?q=red")
        assert page.status_code == 503 and "No index loaded" in page.get_data(as_text=True)
        assert client.get("/api/stats").get_json()["load_error"].startswith("no index loaded")


def test_unexpected_errors_are_500_json_without_details(colour_index, monkeypatch, caplog):
    app = create_app({"INDEX_DIR": colour_index})

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.extensions["babelsearch"].engine, "search_page", broken)
    error = assert_error(app.test_client().get("/api/search?q=red"), 500, "internal_error")
    assert "secret" not in error["message"]
    assert "secret internal detail" in caplog.text  # but the server log has it
    page = app.test_client().get("/?q=red")
    assert page.status_code == 500 and "secret" not in page.get_data(as_text=True)


def test_openapi_documents_every_route(app, client):
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/api/", "/images/")):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    assert {path: set(ops) for path, ops in document["paths"].items()} == routes
    refs = re.findall(r'"#/components/(\w+)/(\w+)"', json.dumps(document))
    assert refs and all(name in document["components"][kind] for kind, name in refs)
    search = {param["name"]: param for param in document["paths"]["/api/search"]["get"]["parameters"]}
    filters = {"folder", "exclude", "after", "before", "orientation", "min_width", "min_height", "type"}
    options = {"nprobe", "refine_factor", "min_score", "collapse", *filters}
    assert set(search) == {"q", "k", "offset", "lang", "rerank", "margin_k", *options}
    assert search["rerank"]["schema"]["enum"] == ["margin", "distance", "csls", "none"]
    assert "all" in search["margin_k"]["schema"]["enum"] and search["refine_factor"]["schema"]["maximum"] == 100


def test_search_options_are_passed_through(client):
    # margin_k, nprobe and refine_factor reach the engine like rerank: the same hits as the engine gives
    plain = client.get("/api/search?q=red&k=3&rerank=none").get_json()["results"]
    tuned = client.get("/api/search?q=red&k=3&rerank=none&nprobe=4&refine_factor=2").get_json()["results"]
    assert [h["id"] for h in tuned] == [h["id"] for h in plain]
    wide = client.get("/api/search?q=red&k=3&rerank=margin&margin_k=all").get_json()["results"]
    narrow = client.get("/api/search?q=red&k=3&rerank=margin&margin_k=1").get_json()["results"]
    assert wide and narrow and wide[0]["score"] != narrow[0]["score"]
    assert client.get("/api/search?q=red&nprobe=1048576&lang=&refine_factor=100").status_code == 200
    # a form's empty fields are "not given" on the pages; the API refuses them (its document says integer)
    assert client.get("/?q=red&margin_k=&nprobe=&refine_factor=&rerank=&k=&offset=").status_code == 200
    assert client.get("/api/search?q=red&margin_k=&nprobe=&refine_factor=&rerank=").status_code == 400


@pytest.mark.parametrize(
    "query, message",
    [
        ("rerank=fancy", "rerank must be one of margin, distance, csls, none, got 'fancy'"),
        ("margin_k=17", "margin_k must be 1 to 16, 32, 64, 128, 256 or 'all', got 17"),
        ("margin_k=most", "margin_k must be 1 to 16, 32, 64, 128, 256 or 'all', got 'most'"),
        ("nprobe=0", "nprobe must be an integer from 1 to 1048576, got 0"),
        ("nprobe=abc", "nprobe must be an integer from 1 to 1048576, got 'abc'"),
        ("refine_factor=101", "refine_factor must be an integer from 1 to 100, got 101"),
    ],
)
def test_bad_search_options_are_400_with_the_engines_message(client, query, message):
    error = assert_error(client.get(f"/api/search?q=red&{query}"), 400, "invalid_query")
    assert error["message"] == message
    page = client.get(f"/?q=red&{query}")  # the page says the same, above an empty grid
    assert page.status_code == 400 and message.replace("'", "&#39;") in page.get_data(as_text=True)


def test_thumbnails_are_written_without_fsync_and_remade_when_damaged(tmp_path, monkeypatch):
    write_image(tmp_path / "photos" / "one.png", (10, 200, 10))
    build_index([tmp_path / "photos"], tmp_path / "index", model="test-colours", progress=False)
    client = create_app({"INDEX_DIR": tmp_path / "index"}).test_client()
    monkeypatch.setattr("os.fsync", lambda fd: pytest.fail("a cached thumbnail needs no fsync"))
    first = client.get("/images/0/thumb")
    assert first.status_code == 200
    (cached,) = (tmp_path / "index" / ".thumbs").iterdir()
    assert cached.read_bytes() == first.data
    cached.write_bytes(first.data[: len(first.data) // 2])  # as a power loss may leave it
    assert client.get("/images/0/thumb").data == first.data and cached.read_bytes() == first.data


def test_thumbnails_from_a_cache_that_cannot_be_written(tmp_path):
    write_image(tmp_path / "photos" / "one.png", (10, 200, 10))
    build_index([tmp_path / "photos"], tmp_path / "index", model="test-colours", progress=False)
    (tmp_path / "not-a-folder").write_text("")  # a directory that cannot be made below it, even as root
    client = create_app({"INDEX_DIR": tmp_path / "index", "THUMB_DIR": tmp_path / "not-a-folder" / "t"}).test_client()
    for _ in range(2):
        response = client.get("/images/0/thumb")
        assert response.status_code == 200 and response.mimetype == "image/jpeg"


def test_rerank_is_passed_through_and_checked(client):
    plain = client.get("/api/search?q=red&k=2&rerank=none").get_json()["results"]
    assert all(hit["score"] == hit["cosine"] for hit in plain)
    margin = client.get("/api/search?q=red&k=2&rerank=margin").get_json()["results"]
    assert [h["id"] for h in margin] and margin[0]["score"] != margin[0]["cosine"]
    response = client.get("/api/search?q=red&rerank=fancy")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_query"
