"""The server-rendered pages: everything a browser without JavaScript needs, and the empty states."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from babelsearch.webui import create_app

from .conftest import COLOURS


class Links(HTMLParser):
    """Collects every URL a page loads or links to, and the thumbnails' image ids."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inputs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[name] for name in ("src", "href", "action") if attrs.get(name)]
        if tag == "input":
            self.inputs.append(attrs)


def parse(html: str) -> Links:
    links = Links()
    links.feed(html)
    return links


@pytest.fixture(scope="module")
def client(colour_index: Path):
    return create_app({"INDEX_DIR": colour_index, "PAGE_SIZE": 5}).test_client()


def test_home_page_has_a_search_box_for_any_script(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    box = next(i for i in parse(html).inputs if i.get("name") == "q")
    assert box["dir"] == "auto" and box["type"] == "search"
    assert "12 images" in html and "test-colours" in html


def test_results_page_without_javascript(client):
    html = client.get("/?q=red&collapse=off").get_data(as_text=True)  # each near-identical red on its own
    thumbs = re.findall(r'src="/images/(\d+)/thumb"', html)
    assert len(thumbs) == 5  # PAGE_SIZE
    shown = re.findall(r'<span class="name" dir="auto">([^<]+)</span>', html)
    assert sorted(shown[:3]) == ["red0.png", "red1.png", "red2.png"]
    assert 'id="query-language" data-code="en"' in html and "English" in html
    # the "More results" link is a plain link to the next page
    more = re.search(r'id="more" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert "offset=5" in more
    second = client.get(more).get_data(as_text=True)
    assert re.findall(r'src="/images/(\d+)/thumb"', second) and not set(
        re.findall(r'src="/images/(\d+)/thumb"', second)
    ) & set(thumbs)


def test_query_in_another_script_is_shown_as_typed(client):
    html = client.get("/?q=%D7%97%D7%AA%D7%95%D7%9C").get_data(as_text=True)  # Hebrew "cat"
    assert '<q dir="auto" lang="he">חתול</q>' in html and "Hebrew" in html


def test_empty_states_and_errors_on_the_page(client):
    welcome = client.get("/").get_data(as_text=True)
    assert "Type what you are looking for" in welcome
    none = client.get("/?q=red&offset=20")
    assert none.status_code == 200 and "No results" in none.get_data(as_text=True)
    long = client.get("/?q=" + "y" * 1001)
    assert long.status_code == 400 and "the query is too long" in long.get_data(as_text=True)
    bad_k = client.get("/?q=red&k=zero")
    assert bad_k.status_code == 400 and "k must be a whole number" in bad_k.get_data(as_text=True)
    missing = client.get("/image/999")
    assert missing.status_code == 404 and "no image with id 999" in missing.get_data(as_text=True)
    assert client.get("/?like=999").status_code == 404
    assert client.get("/no-such-page").status_code == 404


def test_detail_page_and_more_like_this(client):
    html = client.get("/image/4?q=green").get_data(as_text=True)
    urls = parse(html).urls
    assert "/images/4/file" in urls  # the full image
    assert "/?like=4" in urls  # "More like this"
    assert "SHA-256" in html and "pixels" in html
    assert 'href="/?q=green"' in html  # back to the results
    like = client.get("/?like=4&collapse=off").get_data(as_text=True)
    assert "More like" in like and 'src="/images/4/thumb"' not in like  # the image itself is left out
    assert len(re.findall(r'src="/images/\d+/thumb"', like)) == 5


def test_search_by_image_form(client):
    out = io.BytesIO()
    Image.new("RGB", (30, 30), COLOURS["blue"]).save(out, format="PNG")
    page = client.post(
        "/search/image", data={"image": (io.BytesIO(out.getvalue()), "mine.png")}, content_type="multipart/form-data"
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "mine.png" in html
    assert re.findall(r'<span class="name" dir="auto">([^<]+)</span>', html)[0].startswith("blue")
    junk = client.post(
        "/search/image", data={"image": (io.BytesIO(b"junk"), "junk.png")}, content_type="multipart/form-data"
    )
    assert junk.status_code == 400 and "not a readable image" in junk.get_data(as_text=True)


def test_upload_over_the_limit_on_the_page(colour_index):
    client = create_app({"INDEX_DIR": colour_index, "MAX_CONTENT_LENGTH": 5000}).test_client()
    page = client.post(
        "/search/image", data={"image": (io.BytesIO(b"\0" * 9000), "big.png")}, content_type="multipart/form-data"
    )
    assert page.status_code == 413 and "too large" in page.get_data(as_text=True)


def test_pages_load_nothing_from_elsewhere(client):
    for url in ["/", "/?q=red", "/image/2"]:
        response = client.get(url)
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        for link in parse(response.get_data(as_text=True)).urls:
            assert link.startswith("/") and not link.startswith("//"), (url, link)
    for asset in ["/static/style.css", "/static/app.js", "/static/favicon.svg"]:
        body = client.get(asset).get_data(as_text=True).replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert body and not re.search(r"https?:|//[a-z]", body), asset


def test_webui_modules_import_in_one_direction():
    # each module's imports of its siblings, at any depth in the file: no cycle, and nothing imports
    # the package's __init__ (create_app), which imports them all
    import ast

    folder = Path(__file__).resolve().parent.parent / "webui"
    siblings = {path.stem for path in folder.glob("*.py")} - {"__init__"}
    graph = {}
    for name in siblings:
        tree = ast.parse((folder / f"{name}.py").read_text())
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level == 1 or target.startswith("babelsearch.webui"):
                    target = target.removeprefix("babelsearch.webui").lstrip(".")
                    assert target, f"webui/{name}.py imports the package itself"
                    graph[name].add(target.split(".")[0])
    assert "app" not in siblings  # the old module that was factory, state, errors and searches at once

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    assert not [name for name in siblings if reaches(name, name)], graph
