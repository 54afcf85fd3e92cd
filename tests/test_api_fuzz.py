"""Generated requests against the JSON API: hypothesis over the query parameters (Flask's test client),
and schemathesis over the OpenAPI document against a live 127.0.0.1 server, with all its checks.

Never a 5xx, always the one JSON error shape on a 4xx, and the document and the server agree both ways:
what it allows is answered, what it does not is refused (schemathesis' positive and negative data)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from babelsearch.engine.options import MAX_K
from babelsearch.webui import create_app
from babelsearch.webui.openapi_schemas import NOT_ONLY_SPACE, SPACE_CLASS, UPLOAD_TYPES
from babelsearch.webui.searching import DATE_TEXT

from .conftest import live_server

FILTERS = ["folder", "exclude", "after", "before", "orientation", "min_width", "min_height", "type"]
IMAGE_PARAMS = ["k", "nprobe", "refine_factor", *FILTERS, "min_score", "collapse"]
SEARCH_PARAMS = ["q", "offset", "lang", "rerank", "margin_k", *IMAGE_PARAMS]
# values near every edge the server draws, besides arbitrary text
EDGES = [
    *["", " ", "0", "1", "-1", "05", "+5", " 5", "5 ", "1e3", "1.0", "٥", "0x10", "9" * 40],
    *[str(n) for n in (10, 16, 17, 32, 999, 1000, 1001, 2**20, 2**20 + 1, 2**63)],
    *["all", "none", "margin", "distance", "csls", "NONE", "de", "pt-BR", "pt_br", "d", "de\n", "<script>"],
    *["red", "blue", "ein Hund", "猫", "ракета", "\u3000", "\x00", "%", "\ud7ff", "x" * 1000, "x" * 1001],
    # the filters, min_score and collapse
    *["2024-07-14", "2024-02-29", "2023-02-29", "0000-01-01", "2024-07-14T18:00", "2024-07-14 18:00", "2024-13-01"],
    *["landscape", "portrait", "square", "Landscape", "jpeg", "jpg", "heic", "JPG", ".png", "svg", "true", "false"],
    *["yes", "True", "0.5", "-0.5", "1e-3", "1E2", "100", "100.5", "-101", ".5", "nan", "inf", "/", ".", "photos"],
    *["/tmp", "a/b/", "x" * 4097, "1000000", "1000001"],
]
DATE = re.compile(DATE_TEXT)
values = st.one_of(st.sampled_from(EDGES), st.text(max_size=30), st.integers(-(10**20), 10**20).map(str))


@pytest.fixture(scope="module")
def client(colour_index: Path):
    return create_app({"INDEX_DIR": colour_index}).test_client()


def assert_answer(response, k_default: int = 10) -> None:
    """A 2xx, or a 4xx with the JSON error shape; never a 5xx."""
    assert response.status_code < 500, response.data
    assert response.mimetype == "application/json"
    payload = response.get_json()
    if response.status_code >= 400:
        assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
        assert isinstance(payload["error"]["code"], str) and payload["error"]["message"]
        return
    assert response.status_code == 200
    assert 1 <= payload["k"] <= MAX_K and len(payload["results"]) <= payload["k"]
    offset = payload.get("offset", 0)
    assert offset + len(payload["results"]) <= MAX_K
    if payload.get("next_offset") is not None:
        assert payload["next_offset"] == offset + payload["k"] <= MAX_K - 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.lists(st.tuples(st.sampled_from([*SEARCH_PARAMS, "q", "q", "other"]), values), max_size=8))
def test_search_parameters_never_make_a_5xx(client, params):
    assert_answer(client.get("/api/search", query_string=params))


@settings(max_examples=150, deadline=None)
@given(raw=st.lists(st.tuples(st.sampled_from([b"q", b"k", b"lang", b"rerank", b"margin_k"]), st.binary(max_size=12))))
def test_undecodable_query_strings_are_answered(client, raw):
    # bytes that are not UTF-8, percent signs, NULs: the query string as a client may really send it
    query = "&".join(f"{quote_from_bytes(name)}={quote_from_bytes(value)}" for name, value in [(b"q", b"red"), *raw])
    assert_answer(client.get("/api/search?" + query))


@settings(max_examples=150, deadline=None)
@given(
    image_id=st.one_of(st.integers(0, 20), st.integers(0, 2**70)),
    params=st.lists(st.tuples(st.sampled_from(IMAGE_PARAMS), values), max_size=6),
    size=values,
)
def test_similar_and_image_parameters_never_make_a_5xx(client, image_id, params, size):
    assert_answer(client.get(f"/api/similar/{image_id}", query_string=params))
    thumb = client.get(f"/images/{image_id}/thumb", query_string={"size": size})
    assert thumb.status_code < 500 and (thumb.mimetype == "image/jpeg") == (thumb.status_code in (200, 304))


def test_the_query_pattern_matches_what_the_engine_calls_empty():
    # the OpenAPI pattern lists the characters str.strip() removes: the same set, character for character
    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    pattern = re.compile(f"[{SPACE_CLASS}]")
    assert {chr(c) for c in range(0x3001) if pattern.fullmatch(chr(c))} == spaces
    assert re.search(NOT_ONLY_SPACE, " \u3000x") and not re.search(NOT_ONLY_SPACE, " \u3000\t\x1f")


# -- schemathesis over the OpenAPI document, against a live server -------------------------------
@pytest.fixture(scope="module")
def live_url(colour_index: Path) -> Iterator[str]:
    with live_server({"INDEX_DIR": colour_index}) as url:
        yield url


FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


@st.composite
def image_files(draw, image_format: str) -> bytes:
    """Small real images of a format, any size, mode and colour: what the document says an upload is."""
    from PIL import Image

    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P"] if image_format != "JPEG" else ["RGB", "L"]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    colour = draw(st.tuples(*[st.integers(0, 255)] * 3))
    image = Image.new("RGB", size, colour).convert(mode)
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


def test_openapi_fuzz_with_all_checks(live_url, tmp_path):
    """schemathesis' examples, coverage, fuzzing and stateful phases with --checks all; bounded: at most
    40 examples per operation and phase (825 requests), a 10 s timeout per request: about 20 s."""
    import schemathesis
    from schemathesis.cli import schemathesis as schemathesis_cli

    assert set(FORMATS) == set(UPLOAD_TYPES)
    # JSON Schema cannot say "a decodable image", so uploads are drawn as real images of the media types
    # the document declares for the part (encoding.contentType); everything else comes from the document
    for media_type, image_format in FORMATS.items():
        schemathesis.openapi.media_type(media_type, image_files(image_format))
    # nor "after earlier than before" (the parameters' description says it; the answer otherwise is a 400,
    # tested in test_api_parity): a generated pair of real dates in the wrong order loses its before
    hook = schemathesis.hook("map_case")(dates_in_order)
    try:
        result = run_schemathesis(schemathesis_cli, live_url, tmp_path)
    finally:
        schemathesis.hooks.GLOBAL_HOOK_DISPATCHER.unregister(hook)
    summary = result.output[result.output.rfind("SUMMARY") :]
    assert result.exit_code == 0, result.output[-6000:]
    generated = re.search(r"(\d+) generated", summary)
    assert generated and int(generated.group(1)) >= 300, summary  # it did test, not skip
    assert "Tested: 9" in summary and "failure" not in summary.replace("0 failures", "")


def dates_in_order(context, case):
    for values in (case.query, case.body):
        dates = [values.get(name) for name in ("after", "before")] if isinstance(values, dict) else []
        if len(dates) == 2 and all(isinstance(d, str) and DATE.fullmatch(d) for d in dates) and dates[0] >= dates[1]:
            del values["before"]
    return case


def run_schemathesis(schemathesis_cli, live_url: str, tmp_path: Path):
    args = [
        "run",
        f"{live_url}/api/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "40",
        "--seed",
        "14",
        "--workers",  # one: hypothesis' lazy imports are not safe from two threads at once (an ImportError)
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    return CliRunner().invoke(schemathesis_cli, args, catch_exceptions=False)
