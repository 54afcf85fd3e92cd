"""The pages in their user's language: Accept-Language, the switcher, right-to-left scripts, complete catalogs,
and the search page's filters, "weaker matches" divider, "+N similar" links, readings and duplicates page."""

from __future__ import annotations

import functools
import gettext
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from flask import render_template

from babelsearch.webui import create_app
from babelsearch.webui.i18n import LANGUAGES, supported

from .conftest import COLOURS

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "webui" / "translations"
TEMPLATES = ROOT / "webui" / "templates"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2)}


class Page(HTMLParser):
    """The parts of a page these tests read: <html>'s attributes, form fields, links."""

    def __init__(self) -> None:
        super().__init__()
        self.html: dict[str, str | None] = {}
        self.fields: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.options: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.html = attrs
        if tag in ("input", "select", "button"):
            self.fields.append({"tag": tag, **attrs})
        if tag == "option":
            self.options.append(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"].replace("&amp;", "&"))


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def app(colour_index: Path):
    return create_app({"INDEX_DIR": colour_index, "PAGE_SIZE": 5})


@pytest.fixture
def client(app):
    return app.test_client()


# Words each page shows in that language: the search button, the upload label, the results line, the
# language line, the filters, the footer's count (a plural form)
EXPECTED = {
    "ar": ("rtl", ["بحث", "البحث بصورة", "نتائج البحث عن", "عوامل التصفية", "اللغة: الإنجليزية", "12 صورة"]),
    "ja": ("ltr", ["検索", "画像で検索", "の検索結果", "絞り込み", "言語: 英語", "12 枚の画像"]),
    "de": ("ltr", ["Suchen", "Mit Bild suchen", "Ergebnisse für", "Filter", "Sprache: Englisch", "12 Bilder"]),
}


@pytest.mark.parametrize("language", sorted(EXPECTED))
def test_the_page_in_the_browsers_language(client, language):
    direction, words = EXPECTED[language]
    response = client.get("/?q=red", headers={"Accept-Language": f"{language},en;q=0.5"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    page = parse(html)
    assert page.html == {"lang": language, "dir": direction}
    for word in words:
        assert word in html, (language, word)
    for english in ("Search by image", "Results for", "More results", ">Search<", "12 images"):
        assert english not in html, (language, english)
    assert "Accept-Language" in response.headers["Vary"] and "Cookie" in response.headers["Vary"]
    # the query itself is shown as typed, in its own language and direction
    assert '<q dir="auto" lang="en">red</q>' in html


def test_empty_states_and_other_pages_are_translated(client):
    arabic = {"Accept-Language": "ar"}
    welcome = client.get("/", headers=arabic).get_data(as_text=True)
    assert "اكتب ما تبحث عنه" in welcome and "Type what you are looking for" not in welcome
    none = client.get("/?q=red&offset=20", headers=arabic).get_data(as_text=True)
    assert "لا توجد نتائج بعد رقم 20." in none
    detail = client.get("/image/4?q=green", headers={"Accept-Language": "ja"}).get_data(as_text=True)
    assert "パス" in detail and "似た画像を探す" in detail and '<q dir="auto">green</q> に戻る' in detail
    missing = client.get("/image/999", headers={"Accept-Language": "de"})
    html = missing.get_data(as_text=True)
    # the page's words are German; the engine's message stays English, marked as such
    assert missing.status_code == 404 and "Zurück zur Suche" in html
    assert '<span lang="en" dir="ltr">no image with id 999</span>' in html
    # the API is not localised
    api = client.get("/api/search?q=red&k=1", headers={"Accept-Language": "de"})
    assert api.status_code == 200 and api.headers.get("Set-Cookie") is None


@pytest.mark.parametrize(
    "header, code",
    [
        ("fr;q=0.5, ja;q=0.9", "ja"),  # by quality, not by order
        ("pt-BR,pt;q=0.9", "pt"),
        ("zh-CN", "zh_Hans"),
        ("zh-Hans-TW", "zh_Hans"),
        ("he-IL", "he"),
        ("iw", "he"),  # the old code for Hebrew
        ("en-GB,de;q=0.8", "en"),
        ("xx, *;q=0.1", "en"),
        ("", "en"),
    ],
)
def test_accept_language_best_match(client, header, code):
    html = client.get("/", headers={"Accept-Language": header}).get_data(as_text=True)
    assert parse(html).html["lang"] == LANGUAGES[code].tag


def test_right_to_left_languages():
    assert {code for code, language in LANGUAGES.items() if language.dir == "rtl"} == {"ar", "he", "fa", "ur"}
    assert len(LANGUAGES) >= 21 and {"en", "zh_Hans", "hi", "es", "sw", "ko"} <= set(LANGUAGES)
    assert supported("AR_eg") == "ar" and supported("klingon") is None and supported(None) is None


def test_the_switcher_works_without_javascript_and_is_remembered(client):
    html = client.get("/?q=red&k=3", headers={"Accept-Language": "de"}).get_data(as_text=True)
    page = parse(html)
    menu = [option for option in page.options if option.get("lang")]
    assert len(menu) == len(LANGUAGES) and {"العربية", "日本語", "Deutsch"} <= set(
        re.findall(r">([^<]+)</option>", html)
    )
    assert any("selected" in option and option["value"] == "de" for option in menu)
    # a plain GET form back to this page, its query kept in hidden fields
    form = re.search(r'<form class="ui-language"[^>]*action="([^"]+)"[^>]*method="get"', html)
    assert form and form.group(1) == "/"
    hidden = {(f["name"], f["value"]) for f in page.fields if f.get("type") == "hidden"}
    assert {("q", "red"), ("k", "3")} <= hidden
    assert any(f.get("name") == "ui" and f["tag"] == "select" for f in page.fields)

    # choosing Arabic: the page in Arabic, the choice kept in a cookie for the next pages
    chosen = client.get("/?q=red&k=3&ui=ar", headers={"Accept-Language": "de"})
    assert parse(chosen.get_data(as_text=True)).html == {"lang": "ar", "dir": "rtl"}
    assert "lang=ar" in chosen.headers["Set-Cookie"] and "SameSite=Lax" in chosen.headers["Set-Cookie"]
    later = client.get("/image/2", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert parse(later).html["lang"] == "ar" and "المسار" in later
    # the switcher's value is not carried into the page's own links
    assert not [link for link in parse(chosen.get_data(as_text=True)).links if "ui=" in link]
    # an unknown value changes nothing; back to English by the same menu
    assert parse(client.get("/?ui=qq").get_data(as_text=True)).html["lang"] == "ar"
    assert parse(client.get("/?ui=en").get_data(as_text=True)).html["lang"] == "en"
    assert parse(client.get("/", headers={"Accept-Language": "de"}).get_data(as_text=True)).html["lang"] == "en"


def test_switcher_on_an_upload_result_goes_to_the_search_page(app):
    with app.test_request_context("/search/image", method="POST", headers={"Accept-Language": "fa"}):
        html = render_template("search.html", query="")
    assert re.search(r'<form class="ui-language"[^>]*action="/"', html)
    assert parse(html).html == {"lang": "fa", "dir": "rtl"}


# ---- the catalogs --------------------------------------------------------------------------------


@functools.cache
def extracted_messages() -> dict[str, tuple[str, ...]]:
    """Every msgid the templates and views use, as `make translations` extracts them (babel.cfg)."""
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config, str(ROOT / "babel.cfg"))
    found: dict[str, tuple[str, ...]] = {}
    for _filename, _line, message, _comments, _context in extract_from_dir(
        ROOT,
        method_map,
        options_map,
        keywords=KEYWORDS,
        # only the web UI's folders: the checkout also holds data/ and virtual environments
        directory_filter=lambda path: Path(path).resolve() in (ROOT / "webui", TEMPLATES),
    ):
        forms = (message,) if isinstance(message, str) else tuple(message)
        found[forms[0]] = forms
    return found


def test_extraction_finds_the_pages_words():
    messages = extracted_messages()
    assert {"Search", "Search by image", "Results for %(query)s", "No results.", "weaker matches"} <= set(messages)
    assert messages["%(num)s image"] == ("%(num)s image", "%(num)s images")
    assert "unknown" in messages  # from views.py


@pytest.mark.parametrize("code", sorted(set(LANGUAGES) - {"en"}))
def test_every_catalog_translates_every_string(code):
    """Fails when a template or view gains a string that a catalog misses (run `make translations`
    and translate it), when an entry is fuzzy or empty, or when the .mo is older than its .po."""
    folder = TRANSLATIONS / code / "LC_MESSAGES"
    with (folder / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=code)
    expected = extracted_messages()
    entries = {(m.id if isinstance(m.id, str) else m.id[0]): m for m in catalog if m.id}
    missing = sorted(set(expected) - set(entries))
    assert not missing, f"{code}: not in the catalog: {missing}"
    assert not sorted(set(entries) - set(expected)), f"{code}: entries no page uses"
    plurals = catalog.num_plurals
    for msgid, message in entries.items():
        assert not message.fuzzy, f"{code}: fuzzy: {msgid!r}"
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(forms) and len(forms) == (plurals if message.pluralizable else 1), f"{code}: {msgid!r}"
        if message.pluralizable:
            assert expected[msgid] == tuple(message.id), f"{code}: plural of {msgid!r} changed"
    # placeholders (%(name)s) match their msgid's: Babel's own python-format checker
    problems = [(message.id, errors) for message, errors in catalog.check()]
    assert not problems, f"{code}: {problems}"
    # the compiled catalog says the same as the .po
    with (folder / "messages.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    plural = gettext.c2py(catalog.plural_expr)  # the .po header's rule, read independently of the .mo
    for msgid, message in entries.items():
        if message.pluralizable:
            for n in range(200):
                form = message.string[plural(n)]
                assert compiled.ngettext(message.id[0], message.id[1], n) == form, (code, msgid, n)
        else:
            assert compiled.gettext(msgid) == message.string, f"{code}: the .mo is out of date ({msgid!r})"


def test_every_catalog_is_a_supported_language():
    folders = {path.parent.parent.name for path in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po")}
    assert folders == set(LANGUAGES) - {"en"}


def test_templates_have_no_bare_words():
    """Every word a template shows goes through gettext: what is left of a template without its Jinja
    code and tags, and its shown attributes (placeholder, title, aria-label, alt), holds no words."""
    allowed = {"babelsearch", "babel", "search", "API", "SHA-256"}
    for template in TEMPLATES.glob("*.html"):
        source = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}", "", template.read_text(), flags=re.S)
        for name, value in re.findall(r'\b(placeholder|title|aria-label|alt)="([^"]*)"', source):
            assert not re.search(r"[^\W\d_]{2,}", value), (template.name, name, value)
        text = re.sub(r"<!doctype html>|<[^>]+>", " ", source)
        words = set(re.findall(r"[^\W\d_][\w-]*", text)) - allowed
        assert not words, (template.name, words)


# ---- the new controls ------------------------------------------------------------------------------

FILTER_FIELDS = ("folder", "exclude", "after", "before", "orientation", "min_width", "min_height", "type")


def test_filter_form_works_as_plain_get_and_keeps_its_values(client, colour_index):
    folder = str((colour_index.parent / "photos").resolve())  # where conftest wrote the twelve photos
    # values every one of the twelve photos meets: the same results with or without filtering
    query = {
        "q": "red",
        "folder": folder,
        "after": "2000-01-01",
        "orientation": "landscape",
        "type": "png",
        "min_score": "-1",
        "collapse": "off",
    }
    response = client.get("/", query_string=query)
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    page = parse(html)
    fields = {f.get("name"): f for f in page.fields if f.get("name")}
    assert set(FILTER_FIELDS) | {"min_score", "collapse"} <= set(fields)
    # every filter field belongs to the search form, so that Enter in the search box sends it too
    for name in (*FILTER_FIELDS, "min_score", "collapse"):
        assert fields[name].get("form") == "search-form", name
    assert fields["folder"]["value"] == folder and fields["after"]["value"] == "2000-01-01"
    assert fields["min_score"]["value"] == "-1" and "checked" in fields["collapse"]
    assert re.search(r'<option value="landscape" selected>', html) and re.search(r'<option value="png" selected>', html)
    assert '<details class="filters" id="filters" open>' in html
    # "More results" goes on with the same filters
    more = next(link for link in page.links if "offset=5" in link)
    carried = parse_qs(urlsplit(more).query)
    assert {name: values[0] for name, values in carried.items()} == {**query, "offset": "5", "k": "5"}
    second = client.get(more).get_data(as_text=True)
    assert 'name="folder" value="' + folder + '"' in second
    # without filters the form is closed and empty
    plain = client.get("/?q=red").get_data(as_text=True)
    assert '<details class="filters" id="filters">' in plain and 'id="clear-filters"' not in plain


@dataclass
class FakeHit:
    id: int
    path: str
    score: float
    relevant: bool | None = None
    similar: list[int] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeResults:
    hits: list[Any]
    took_ms: float = 1.0
    k: int = 5
    offset: int = 0
    query: str | None = "猫"
    language: Any = None
    next_offset: int | None = None
    readings: list[str] = field(default_factory=list)
    where: Any = None


def render_search(app, results, language="en", **context):
    with app.test_request_context("/?q=%E7%8C%AB", headers={"Accept-Language": language}):
        return render_template("search.html", query="猫", results=results, **context)


def test_weaker_matches_divider_similar_links_and_readings(app):
    hits = [
        FakeHit(1, "/p/cat.png", 0.9, True, similar=[5, 6]),
        FakeHit(2, "/p/cat2.png", 0.8, True),
        FakeHit(3, "/p/dog.png", 0.2, False),
        FakeHit(4, "/p/car.png", 0.1, False),
    ]
    html = render_search(app, FakeResults(hits, readings=["cat", "feline"]))
    # one divider, just before the first hit that is not likely relevant
    assert html.count('class="divider"') == 1
    order = re.findall(r'class="divider"|<span class="name" dir="auto">([^<]+)</span>', html)
    assert order == ["cat.png", "cat2.png", "", "dog.png", "car.png"]
    assert "weaker matches" in html
    # "+2 similar": a link to the images like that hit, uncollapsed
    assert re.search(r'<a class="similar" href="/\?like=1&amp;collapse=off"[^>]*>\+2 similar</a>', html)
    assert html.count('class="similar"') == 1
    assert 'Read as: <bdi lang="en">cat, feline</bdi>' in html
    arabic = render_search(app, FakeResults(hits, readings=["cat"]), "ar")
    assert "نتائج أضعف" in arabic and "+صورتان مشابهتان" in arabic and "فُهم على أنه:" in arabic
    russian = render_search(app, FakeResults([FakeHit(1, "/p/a.png", 0.9, True, similar=[2, 3, 4, 5, 6])]), "ru")
    assert "+5 похожих" in russian  # the plural form of 5


def test_without_calibration_or_collapse_nothing_extra_is_drawn(app):
    @dataclass
    class OldHit:  # a hit as the engine made them before relevant/similar existed
        id: int
        path: str
        score: float

    for hits in ([OldHit(1, "/p/a.png", 0.5)], [FakeHit(1, "/p/a.png", 0.5, None)]):
        html = render_search(app, FakeResults(hits))
        assert 'class="divider"' not in html and 'class="similar"' not in html and "Read as" not in html
        assert '<span class="name" dir="auto">a.png</span>' in html


def test_duplicates_page(colour_index, monkeypatch):
    # the real engine.duplicates over the twelve photos: each colour's three noisy copies are one group
    client = create_app({"INDEX_DIR": colour_index}).test_client()
    home = client.get("/").get_data(as_text=True)
    assert 'href="/duplicates"' in home  # linked from the header of every page
    response = client.get("/duplicates")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    groups = re.findall(r'<li class="group">(.*?)</li>\s*</ul>', html, flags=re.S)
    names = [re.findall(r'<span class="name" dir="auto">([a-z]+)\d\.png</span>', group) for group in groups]
    assert sorted(names) == [[colour] * 3 for colour in sorted(COLOURS)]
    assert "4 groups of near-duplicate images" in html and "similarity at least 0." in html
    german = client.get("/duplicates", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert "4 Gruppen fast gleicher Bilder" in german and "3 Bilder" in german

    from babelsearch.engine import duplicate_scan as finder

    monkeypatch.setattr(finder, "duplicate_groups", lambda engine, *args, **kwargs: [])
    fresh = create_app({"INDEX_DIR": colour_index}).test_client()  # the groups are kept per app and index
    empty = fresh.get("/duplicates", headers={"Accept-Language": "ja"}).get_data(as_text=True)
    assert "ほぼ同一の画像は見つかりませんでした。" in empty


def test_duplicates_page_without_an_index():
    response = create_app({"INDEX_DIR": None}).test_client().get("/duplicates", headers={"Accept-Language": "ar"})
    html = response.get_data(as_text=True)
    assert response.status_code == 503 and "لا يوجد فهرس محمَّل." in html
