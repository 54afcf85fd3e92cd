"""The API and the client take what the engine and the CLI take: per-call nprobe and refine_factor on
image queries, the filters, min_score and collapse on all three searches, each checked exactly (a 400
with the reason), in the OpenAPI document, and passed through by the Python client."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib import parse, request

import numpy as np
import pytest
from PIL import Image

from babelsearch.engine import SearchEngine
from babelsearch.engine.encoders import register_encoder
from babelsearch.engine.filters import FILE_TYPES, Where
from babelsearch.indexer import IndexOptions, build_index
from babelsearch.webui import create_app
from babelsearch.webui.client import BadRequest, Client
from babelsearch.webui.searching import MAX_FOLDER_CHARS, MAX_FOLDERS, TYPE_NAMES
from babelsearch.webui.server import MAX_HEADER_BYTES

from .conftest import COLOURS, ColourEncoder, live_server, write_image


class GlossingColours(ColourEncoder):
    """test-colours that reads "红" as "red", as babel-lite reads a Chinese-character query by its glosses."""

    name = "test-colours-glossing"

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return super().encode_texts(["red" if text == "红" else text for text in texts])

    def query_readings(self, texts: list[str]) -> list[list[str]]:
        return [["red"] if text == "红" else [] for text in texts]


register_encoder("test-colours-glossing", lambda spec: GlossingColours())

# (folder, name, colour, size, taken): three near-identical reds (one shot, three files), the rest apart
PHOTOS = [
    ("2023/beach", "red_a.png", "red", (64, 48), (2023, 7, 1)),
    ("2023/beach", "red_b.png", "red", (64, 48), (2023, 7, 2)),
    ("2023/beach", "yellow.jpg", "yellow", (48, 64), (2023, 8, 1)),
    ("2024/city", "blue.jpg", "blue", (64, 64), (2024, 3, 1)),
    ("2024/city", "green.webp", "green", (96, 48), (2024, 5, 1)),
    ("2024/park", "red_c.png", "red", (40, 30), (2024, 6, 1)),
    ("2024/park", "blue_small.png", "blue", (40, 30), (2024, 6, 2)),
]


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parity")
    for seed, (folder, name, colour, size, day) in enumerate(PHOTOS):
        path = write_image(root / "photos" / folder / name, COLOURS[colour], size=size, noise_seed=seed)
        taken = time.mktime((*day, 12, 0, 0, 0, 0, -1))  # noon, local time: the date without EXIF
        os.utime(path, (taken, taken))
    build_index([root / "photos"], root / "index", model="test-colours-glossing", progress=False)
    return root / "index"


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory) -> Path:
    """40 photos in an IVF index of 4 lists with 4-bit codes: nprobe and refine_factor change answers."""
    root = tmp_path_factory.mktemp("parity-ivf")
    seed = 0
    for colour, rgb in COLOURS.items():
        for n in range(10):
            write_image(root / "photos" / f"{colour}{n}.png", rgb, size=(32, 24), noise_seed=seed)
            seed += 1
    build_index([root / "photos"], root / "index", model="test-colours", options=IndexOptions(index_factory="IVF4,SQ4"))
    return root / "index"


@pytest.fixture(scope="module")
def api(photo_index: Path):
    return create_app({"INDEX_DIR": photo_index}).test_client()


@pytest.fixture(scope="module")
def photo_ids(photo_index: Path) -> dict[str, int]:
    engine = SearchEngine.open(photo_index)
    return {Path(engine.get(i)["path"]).name: i for i in range(len(PHOTOS))}


def png(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(out, format="PNG")
    return out.getvalue()


def upload(client, colour, **fields):
    data = {"image": (io.BytesIO(png(COLOURS[colour])), "query.png"), **fields}
    return client.post("/api/search/image", data=data, content_type="multipart/form-data")


def names(payload) -> list[str]:
    return [Path(hit["path"]).name for hit in payload["results"]]


def all_three(api, photo_ids, query: str) -> Iterator[tuple[str, dict]]:
    """The answers of the text, more-like-this and image searches to the same parameters (a query string)."""
    multi = parse.parse_qsl(query, keep_blank_values=True)
    fields = dict(multi)
    yield "search", api.get(f"/api/search?q=red&k=20&{query}").get_json()
    yield "similar", api.get(f"/api/similar/{photo_ids['red_a.png']}?k=20&{query}").get_json()
    data: dict = {"image": (io.BytesIO(png(COLOURS["red"])), "q.png"), "k": "20"}
    if len(multi) != len(fields):  # a repeated name: the form gets every value
        data = {**data, **{name: [v for n, v in multi if n == name] for name in fields}}
    else:
        data.update(fields)
    yield "image", api.post("/api/search/image", data=data, content_type="multipart/form-data").get_json()


# -- nprobe and refine_factor on image queries -------------------------------------------------------
def test_similar_and_image_uploads_take_nprobe_and_refine_factor(ivf_index: Path):
    api = create_app({"INDEX_DIR": ivf_index}).test_client()
    engine = SearchEngine.open(ivf_index)
    assert engine.default_nprobe == 4 and engine.default_refine_factor > 1  # every list; exact re-scoring

    def ids_scores(payload) -> list[tuple[int, float]]:
        return [(hit["id"], hit["score"]) for hit in payload["results"]]

    def engine_ids_scores(hits) -> list[tuple[int, float]]:
        return [(hit.id, round(hit.score, 6)) for hit in hits]

    everything = api.get("/api/similar/0?k=39&collapse=false").get_json()
    one_list = api.get("/api/similar/0?k=39&collapse=false&nprobe=1").get_json()
    assert len(everything["results"]) == 39 and len(one_list["results"]) < 39  # one list of four: fewer found
    assert ids_scores(one_list) == engine_ids_scores(engine.similar(0, k=39, nprobe=1))
    default = api.get("/api/similar/0?k=3&collapse=false").get_json()
    coarse = api.get("/api/similar/0?k=3&collapse=false&refine_factor=1").get_json()
    assert ids_scores(coarse) != ids_scores(default)  # 4-bit codes' scores, not re-scored exactly
    assert ids_scores(coarse) == engine_ids_scores(engine.similar(0, k=3, refine_factor=1))
    assert ids_scores(default) == engine_ids_scores(engine.similar(0, k=3))

    query = Image.open(io.BytesIO(png(COLOURS["green"])))
    full = upload(api, "green", k="39", collapse="false").get_json()
    probed = upload(api, "green", k="39", collapse="false", nprobe="1").get_json()
    assert len(full["results"]) == 39 and len(probed["results"]) < 39
    assert ids_scores(probed) == engine_ids_scores(engine.search_image(query, k=39, nprobe=1))
    coarse = upload(api, "green", k="3", collapse="false", refine_factor="1").get_json()
    assert ids_scores(coarse) == engine_ids_scores(engine.search_image(query, k=3, refine_factor=1))
    assert ids_scores(coarse) != ids_scores(upload(api, "green", k="3", collapse="false").get_json())
    # the same checks as a text search's
    for bad, message in [("nprobe=0", "nprobe must be"), ("refine_factor=101", "refine_factor must be an integer")]:
        for response in (api.get(f"/api/similar/0?{bad}"), upload(api, "green", **dict([bad.split("=")]))):
            assert response.status_code == 400 and message in response.get_json()["error"]["message"]


def test_image_queries_rank_by_plain_cosine_whatever_rerank_says(api, photo_ids):
    # rerank and margin_k are not image-query parameters: not read, so neither refused nor applied
    red = photo_ids["red_a.png"]
    plain = api.get(f"/api/similar/{red}?collapse=false").get_json()["results"]
    assert api.get(f"/api/similar/{red}?collapse=false&rerank=margin&margin_k=1").get_json()["results"] == plain
    assert all(hit["score"] == hit["cosine"] and hit["relevant"] is None for hit in plain)
    uploaded = upload(api, "red", collapse="false", rerank="margin").get_json()["results"]
    assert all(hit["score"] == hit["cosine"] for hit in uploaded)


# -- filters ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query, expected, filters",
    [
        ("folder=2024", {"blue.jpg", "green.webp", "red_c.png", "blue_small.png"}, {"folder": ["2024"]}),
        ("folder=2023&folder=park", {"red_a.png", "red_b.png", "yellow.jpg", "red_c.png", "blue_small.png"}, None),
        ("exclude=beach&exclude=city", {"red_c.png", "blue_small.png"}, {"exclude": ["beach", "city"]}),
        ("folder=2024&exclude=park", {"blue.jpg", "green.webp"}, None),
        ("after=2024-01-01", {"blue.jpg", "green.webp", "red_c.png", "blue_small.png"}, {"after": "2024-01-01"}),
        ("before=2023-07-02", {"red_a.png"}, None),
        # after inclusive, before exclusive, to the second
        ("after=2023-07-02T12:00&before=2024-03-01T12:00:00", {"red_b.png", "yellow.jpg"}, None),
        ("orientation=portrait", {"yellow.jpg"}, {"orientation": "portrait"}),
        ("orientation=square", {"blue.jpg"}, None),
        ("min_width=64", {"red_a.png", "red_b.png", "blue.jpg", "green.webp"}, None),
        ("min_height=64", {"yellow.jpg", "blue.jpg"}, {"min_height": 64}),
        ("type=jpg", {"yellow.jpg", "blue.jpg"}, {"type": ["jpeg"]}),
        ("type=webp&type=jpeg&min_width=60", {"blue.jpg", "green.webp"}, {"type": ["webp", "jpeg"], "min_width": 60}),
        ("folder=2025", set(), None),
    ],
)
def test_filters_narrow_all_three_searches(api, photo_ids, photo_index, query, expected, filters):
    for route, payload in all_three(api, photo_ids, query + "&collapse=false"):
        found = set(names(payload))
        if route == "similar":  # the query image itself is left out
            expected_here = expected - {"red_a.png"}
        else:
            expected_here = expected
        assert found == expected_here, (route, query)
        assert payload["filters"] == (filters or Where.from_values(parse_multi(query)).to_json()), route


def parse_multi(query: str):
    from werkzeug.datastructures import MultiDict

    return MultiDict(parse.parse_qsl(query))


def test_an_absolute_folder_matches_below_it_and_no_filter_is_null(api, photo_ids, photo_index):
    beach = str(photo_index.parent / "photos" / "2023" / "beach")
    for route, payload in all_three(api, photo_ids, parse.urlencode({"folder": beach, "collapse": "false"})):
        assert {name for name in names(payload)} <= {"red_a.png", "red_b.png", "yellow.jpg"} and payload["results"]
        assert payload["filters"] == {"folder": [beach]}, route
    for _, payload in all_three(api, photo_ids, "collapse=false"):
        assert payload["filters"] is None and len(payload["results"]) >= len(PHOTOS) - 1


def test_filters_with_paging_and_collapse(api):
    whole = api.get("/api/search?q=red&k=4&folder=2024&collapse=false").get_json()
    assert len(whole["results"]) == 4 and whole["next_offset"] is None
    page = api.get("/api/search?q=red&k=2&offset=2&folder=2024&collapse=false").get_json()
    assert page["results"] == whole["results"][2:]


# -- min_score -------------------------------------------------------------------------------------------
def test_min_score_cuts_hard(api, photo_ids):
    for route, payload in all_three(api, photo_ids, "rerank=none&collapse=false&min_score=0.9"):
        found = names(payload)
        reds = {"red_a.png", "red_b.png", "red_c.png"} - ({"red_a.png"} if route == "similar" else set())
        assert set(found) == reds and all(hit["score"] >= 0.9 for hit in payload["results"]), route
    for _, payload in all_three(api, photo_ids, "collapse=false&min_score=100"):
        assert payload["results"] == []
    for _, payload in all_three(api, photo_ids, "collapse=false&min_score=-100"):
        assert len(payload["results"]) >= len(PHOTOS) - 1


# -- collapse --------------------------------------------------------------------------------------------
def test_collapse_is_on_by_default_and_off_with_false(api, photo_ids):
    # near-identical: the three reds, and the two blues; yellow and green stand alone
    groups = [
        {photo_ids[name] for name in group}
        for group in [("red_a.png", "red_b.png", "red_c.png"), ("blue.jpg", "blue_small.png")]
    ]
    groups.append({photo_ids["yellow.jpg"]})
    groups.append({photo_ids["green.webp"]})
    for route, payload in all_three(api, photo_ids, ""):
        hits = payload["results"]
        # each group is one hit carrying the others (for more-like-this, the query image is not among them)
        assert len(hits) == len(groups), route
        folded = [{hit["id"], *hit["similar"]} for hit in hits]
        left_out = {photo_ids["red_a.png"]} if route == "similar" else set()
        assert sorted(map(sorted, folded)) == sorted(sorted(group - left_out) for group in groups), route
    for route, payload in all_three(api, photo_ids, "collapse=false"):
        assert len(payload["results"]) == len(PHOTOS) - (route == "similar"), route
        assert all(hit["similar"] == [] for hit in payload["results"])
    assert all_json_equal(api, "collapse=true", "")


def all_json_equal(api, query: str, other: str) -> bool:
    one = api.get(f"/api/search?q=red&{query}").get_json()
    two = api.get(f"/api/search?q=red&{other}").get_json()
    return one["results"] == two["results"]


# -- readings and relevant -------------------------------------------------------------------------------
def test_a_rewritten_query_says_how_it_was_read(api):
    read = api.get("/api/search?q=%E7%BA%A2&k=3").get_json()  # 红
    assert read["readings"] == ["red"] and Path(read["results"][0]["path"]).name.startswith("red")
    assert api.get("/api/search?q=red&k=3").get_json()["readings"] == []
    hit = read["results"][0]
    assert set(hit) == {"id", "path", "score", "cosine", "relevant", "similar"}
    assert hit["relevant"] in (True, False, None)


# -- bad values ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query, status, message",
    [
        ("folder=", 400, "folder must be a folder path of 1 to 255 characters, got ''"),
        ("exclude=" + "x" * 256, 400, "exclude must be a folder path of 1 to 255 characters"),
        ("folder=a%00b", 400, "not a folder path"),
        ("&".join(["folder=a"] * 9), 400, "folder is given 9 times; at most 8"),
        ("after=2023-02-29", 400, "after must be a date such as 2024-07-14"),
        ("after=2024-07-14%2018:00", 400, "after must be a date"),  # the API writes the T
        ("before=2024-7-1", 400, "before must be a date"),
        ("after=2024-01-02&before=2024-01-01", 400, "after (2024-01-02) must be earlier than before (2024-01-01)"),
        ("after=2024-01-01&after=2024-02-01", 400, "after is given 2 times; give it once"),
        ("orientation=Landscape", 400, "orientation must be one of landscape, portrait, square, got 'Landscape'"),
        ("orientation=round", 400, "orientation must be one of"),
        ("min_width=0", 400, "min_width must be a whole number of pixels from 1 to 1000000, got 0"),
        ("min_height=05", 400, "min_height must be a whole number of pixels, got '05'"),
        ("min_width=1000001", 400, "from 1 to 1000000"),
        ("type=svg", 400, "type must be one of jpeg, png"),
        ("type=JPG", 400, "type must be one of"),
        ("min_score=abc", 400, "min_score must be a number such as 0.05, got 'abc'"),
        ("min_score=nan", 400, "min_score must be a number"),
        ("min_score=%2B1", 400, "min_score must be a number"),
        ("min_score=101", 400, "min_score must be a number from -100 to 100, got 101.0"),
        ("min_score=0.1&min_score=0.2", 400, "min_score is given 2 times"),
        ("collapse=1", 400, "collapse must be true or false, got '1'"),
        ("collapse=", 400, "collapse must be true or false"),
        ("collapse=True", 400, "collapse must be true or false"),
    ],
)
def test_bad_values_are_a_400_with_the_reason(api, photo_ids, query, status, message):
    for route, payload in all_three(api, photo_ids, query):
        assert set(payload) == {"error"}, (route, payload)
        assert message in payload["error"]["message"], route
    assert api.get(f"/api/search?q=red&{query}").status_code == status


def test_the_pages_read_the_same_parameters_loosely(api):
    # a form's values: spaces around, 1/0 for collapse, an empty field for "not given"
    assert api.get("/?q=red&collapse=0&min_score=&folder=&orientation=%20portrait%20").status_code == 200
    assert api.get("/?q=red&after=2023-02-29").status_code == 400


def test_repeated_filters_are_lists(api):
    payload = api.get("/api/search?q=red&type=png&type=jpeg&type=png&collapse=false").get_json()
    assert payload["filters"] == {"type": ["png", "jpeg"]}
    assert {Path(n).suffix for n in names(payload)} == {".png", ".jpg"}
    assert api.get("/api/search?q=red&" + "&".join(f"type={t}" for t in TYPE_NAMES)).status_code == 200


# -- the OpenAPI document --------------------------------------------------------------------------------
FILTERS = {"folder", "exclude", "after", "before", "orientation", "min_width", "min_height", "type"}
IMAGE_QUERY = {"k", "nprobe", "refine_factor", "min_score", "collapse", *FILTERS}


def test_the_document_lists_every_parameter_with_its_range(api):
    document = api.get("/api/openapi.json").get_json()
    paths = document["paths"]
    params = {
        "search": {p["name"]: p for p in paths["/api/search"]["get"]["parameters"]},
        "similar": {p["name"]: p for p in paths["/api/similar/{image_id}"]["get"]["parameters"]},
    }
    body = paths["/api/search/image"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(params["search"]) == {"q", "offset", "lang", "rerank", "margin_k", *IMAGE_QUERY}
    assert set(params["similar"]) == {"image_id", *IMAGE_QUERY}
    assert set(body["properties"]) == {"image", *IMAGE_QUERY}
    for route in ("search", "similar"):
        schemas = {name: param["schema"] for name, param in params[route].items()}
        assert schemas["nprobe"]["maximum"] == 2**20 and schemas["refine_factor"]["maximum"] == 100
        assert schemas["folder"] == {**schemas["exclude"]} and schemas["folder"]["type"] == "array"
        assert schemas["folder"]["maxItems"] == MAX_FOLDERS
        assert schemas["folder"]["items"]["maxLength"] == MAX_FOLDER_CHARS
        assert schemas["type"]["items"]["enum"] == [*FILE_TYPES, "jpg", "heic", "tif"]
        assert schemas["orientation"]["enum"] == ["landscape", "portrait", "square"]
        assert schemas["min_width"] == schemas["min_height"] == {"type": "integer", "minimum": 1, "maximum": 10**6}
        assert schemas["min_score"] == {"type": "number", "minimum": -100, "maximum": 100}
        assert schemas["collapse"] == {"type": "boolean", "default": True}
        assert "earlier" in params[route]["after"]["description"]
        assert all(param["description"] for param in params[route].values())
        assert {name: schema for name, schema in schemas.items() if name in IMAGE_QUERY - {"k"}} == {
            name: schema for name, schema in body["properties"].items() if name in IMAGE_QUERY - {"k"}
        }
    for path, method in [("/api/similar/{image_id}", "get"), ("/api/search/image", "post")]:
        assert "rerank and margin_k do not apply" in paths[path][method]["description"]
    hit = document["components"]["schemas"]["Hit"]
    assert {"relevant", "similar"} <= set(hit["required"])
    text = document["components"]["schemas"]["TextResults"]["properties"]
    assert {"readings", "filters"} <= set(text)


def test_the_longest_request_the_document_allows_is_answered(photo_index):
    """Every documented parameter at its longest, each character a 4-byte UTF-8 one (12 bytes escaped),
    fits the server's request-line limit: answered, not a 431."""
    document = create_app({"INDEX_DIR": photo_index}).test_client().get("/api/openapi.json").get_json()
    schemas = {p["name"]: p["schema"] for p in document["paths"]["/api/search"]["get"]["parameters"]}
    wide = "😀"
    lang = "abc" + "-abcdefgh" * 3 + "-abcd"
    assert len(lang) == schemas["lang"]["maxLength"]
    params = [
        ("q", wide * schemas["q"]["maxLength"]),
        ("k", "1000"),
        ("offset", "999"),
        ("lang", lang),
        ("rerank", "distance"),
        ("margin_k", "all"),
        ("nprobe", str(schemas["nprobe"]["maximum"])),
        ("refine_factor", "100"),
        # distinct folders (Where keeps one of each)
        *[(name, wide * (MAX_FOLDER_CHARS - 1) + str(n)) for name in ("folder", "exclude") for n in range(MAX_FOLDERS)],
        ("after", "2024-01-01T00:00:00"),
        ("before", "2024-12-31T23:59:59"),
        ("orientation", "landscape"),
        ("min_width", "1000000"),
        ("min_height", "1000000"),
        *[("type", name) for name in schemas["type"]["items"]["enum"]],
        ("min_score", "-1.2345678901234567e-10"),
        ("collapse", "false"),
    ]
    assert {name for name, _ in params} == set(schemas)
    assert len(params) - len(schemas) == 2 * MAX_FOLDERS - 2 + len(TYPE_NAMES) - 1
    url_query = parse.urlencode(params)
    assert MAX_HEADER_BYTES - 8192 < len(url_query) < MAX_HEADER_BYTES - 1024  # near the limit, with room for headers
    with live_server({"INDEX_DIR": photo_index}) as url:
        response = request.urlopen(f"{url}/api/search?{url_query}", timeout=10)
        with response:
            payload = json.loads(response.read())
    assert response.status == 200 and payload["results"] == [] and len(payload["filters"]["folder"]) == MAX_FOLDERS


# -- the client ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(photo_index: Path) -> Iterator[Client]:
    with live_server({"INDEX_DIR": photo_index}) as url:
        yield Client(url, timeout=10)


def test_the_client_passes_every_filter_through(client, photo_ids):
    result = client.search(
        "red",
        k=20,
        folder=["2023", "park"],
        exclude="yellow-free",
        after=dt.date(2023, 7, 1),
        before=dt.datetime(2024, 6, 2, 12, 0),
        orientation="landscape",
        min_width=40,
        min_height=30,
        type=["png", "jpg"],
        collapse=False,
    )
    assert result.filters == {
        "folder": ["2023", "park"],
        "exclude": ["yellow-free"],
        "after": "2023-07-01",
        "before": "2024-06-02T12:00:00",
        "orientation": "landscape",
        "min_width": 40,
        "min_height": 30,
        "type": ["png", "jpeg"],
    }
    assert {Path(hit.path).name for hit in result} == {"red_a.png", "red_b.png", "red_c.png"}
    red = photo_ids["red_a.png"]
    similar = client.similar(red, folder="2024", collapse=False)
    assert similar.filters == {"folder": ["2024"]} and all("/2024/" in hit.path for hit in similar)
    image = png(COLOURS["blue"])
    by_image = client.search_image(image, folder=["city", "park"], type="png", collapse=False)
    assert by_image.filters == {"folder": ["city", "park"], "type": ["png"]}
    assert {Path(hit.path).name for hit in by_image} == {"red_c.png", "blue_small.png"}
    # where= as one object (a babelsearch.Where or a dict); a keyword wins over it name by name
    assert client.search("red", where=Where(folders=("2024",)), type="png").filters == {
        "folder": ["2024"],
        "type": ["png"],
    }
    assert client.similar(red, where={"orientation": "portrait"}).filters == {"orientation": "portrait"}
    with pytest.raises(TypeError, match="unknown filter 'colour'"):
        client.search("red", where={"colour": "red"})


def test_the_client_passes_every_option_through(client, photo_ids, ivf_index):
    red = photo_ids["red_a.png"]
    image = png(COLOURS["red"])
    # collapse: on by the server's default, off when False
    folded = client.search("red", k=5)
    assert [len(hit.similar) for hit in folded][:1] == [2] and isinstance(folded[0].similar, tuple)
    assert all(hit.similar == () for hit in client.search("red", k=5, collapse=False))
    assert len(client.similar(red, collapse=True)[0].similar) == 1  # red_b and red_c: one hit
    assert len(client.search_image(image, collapse=True)[0].similar) == 2
    # min_score
    assert len(client.search("red", rerank="none", min_score=0.9, collapse=False)) == 3
    assert len(client.similar(red, min_score=0.9, collapse=False)) == 2
    assert len(client.search_image(image, min_score=0.9, collapse=False)) == 3
    # readings, relevant
    read = client.search("红", k=3)
    assert read.readings == ["red"] and read[0].relevant in (True, False, None)
    # each option reaches the server: a bad value comes back as the server's 400, under its name
    for call in (
        lambda **kw: client.search("red", **kw),
        lambda **kw: client.similar(red, **kw),
        lambda **kw: client.search_image(image, **kw),
    ):
        for name, bad in [
            ("nprobe", 0),
            ("refine_factor", 101),
            ("min_score", float("inf")),
            ("folder", ""),
            ("exclude", [""]),
            ("after", "2023-02-29"),
            ("before", "soon"),
            ("orientation", "round"),
            ("min_width", 0),
            ("min_height", -1),
            ("type", ["png", "svg"]),
        ]:
            with pytest.raises(BadRequest, match=name):
                call(**{name: bad})
    for name, bad in [("rerank", "fancy"), ("margin_k", 17), ("lang", "<b>")]:
        with pytest.raises(BadRequest, match=name):
            client.search("red", **{name: bad})
    # nprobe and refine_factor change what an IVF index answers
    with live_server({"INDEX_DIR": ivf_index}) as url:
        ivf = Client(url, timeout=10)
        assert len(ivf.similar(0, k=39, collapse=False)) == 39
        assert len(ivf.similar(0, k=39, nprobe=1, collapse=False)) < 39
        assert len(ivf.search_image(png(COLOURS["green"]), k=39, nprobe=1, collapse=False)) < 39
        assert len(ivf.search("green", k=39, nprobe=1, rerank="none", collapse=False)) < 39
        coarse = [(h.id, h.score) for h in ivf.similar(0, k=3, refine_factor=1, collapse=False)]
        assert coarse != [(h.id, h.score) for h in ivf.similar(0, k=3, collapse=False)]


def test_the_client_takes_the_engines_options_under_their_names_and_types():
    import inspect

    from babelsearch.engine.filters import FILTER_PARAMS
    from babelsearch.engine.options import IMAGE_KEYWORDS, TEXT_KEYWORDS, ImageKeywords, SearchKeywords

    def annotations(method) -> dict[str, str]:
        return {name: str(p.annotation) for name, p in inspect.signature(method).parameters.items()}

    for method, keywords, typed in [
        (Client.search, TEXT_KEYWORDS, SearchKeywords),
        (Client.similar, IMAGE_KEYWORDS, ImageKeywords),
        (Client.search_image, IMAGE_KEYWORDS, ImageKeywords),
    ]:
        taken = annotations(method)
        assert set(keywords) | set(FILTER_PARAMS) <= set(taken), method.__name__
        for name in set(keywords) - {"where", "collapse"}:  # where: a Where or a dict; collapse: None = the server's
            assert taken[name] == typed.__annotations__[name].__forward_arg__, (method.__name__, name)
        assert taken["collapse"] == "bool | None" and taken["min_width"] == taken["min_height"] == "int | None"
        if method is not Client.search:
            assert not {"rerank", "margin_k", "lang"} & set(taken)  # image queries rank by plain cosine
