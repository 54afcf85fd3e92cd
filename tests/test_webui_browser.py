"""A real browser (Debian's headless Chromium, driven by Playwright) against `babelsearch serve`.

Six demo photos indexed with the real babel-lite model; queries in Russian and German, and the page once in
Arabic (right to left, its own words, the filters and the language menu).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import require_module, require_path

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
PHOTOS = {
    "chelsea": "cat-chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.png",
    "astronaut": "astronaut.png",
    "clock": "clock.png",
    "coins": "coins.png",
}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _chromium() -> None:
    require_path(CHROMIUM, "Debian's chromium (apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m babelsearch serve` on a free loopback port over six demo photos."""
    require_module("skimage")
    import skimage.data
    from PIL import Image

    from babelsearch.indexer import build_index

    root = tmp_path_factory.mktemp("browser")
    (root / "photos").mkdir()
    for function, name in PHOTOS.items():
        Image.fromarray(getattr(skimage.data, function)()).save(root / "photos" / name)
    build_index([root / "photos"], root / "index", model="babel-lite", progress=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "babelsearch", "serve", str(root / "index"), "--port", "0", "--threads", "4"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url, deadline, seen = None, time.monotonic() + 120, []
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line)
            match = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            url = match.group(1) if match else None
        assert url, "the server did not start:\n" + "".join(seen)
        yield {"url": url, "photos": root / "photos"}
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    playwright_api = require_module("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def loopback_only(context, base: str) -> list[str]:
    """Block and record every request that is not to the test server (no CDN, nothing online)."""
    elsewhere: list[str] = []

    def route(route):
        if route.request.url.startswith(base + "/") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    return elsewhere


def loaded_images(page, selector: str) -> list[int]:
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")


def card_names(page) -> list[str]:
    return page.eval_on_selector_all("#results .name", "spans => spans.map(s => s.textContent)")


def test_search_open_a_result_and_more_like_this(server, browser):
    base = server["url"]
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    elsewhere = loopback_only(context, base)
    page = context.new_page()
    page.goto(base + "/")
    page.fill("input[name=q]", "кошка")  # Russian: cat
    page.press("input[name=q]", "Enter")
    page.wait_for_selector("#results img")
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete)")
    assert card_names(page)[0] == "cat-chelsea.png"
    assert len(card_names(page)) == 6 and all(width > 0 for width in loaded_images(page, "#results img"))
    assert "Russian" in page.inner_text("#query-language")

    page.fill("input[name=q]", "قطة")  # Arabic: cat, typed and shown right to left
    page.press("input[name=q]", "Enter")
    page.wait_for_selector("#results img")
    assert card_names(page)[0] == "cat-chelsea.png" and "Arabic" in page.inner_text("#query-language")
    assert page.eval_on_selector(".summary q", "q => getComputedStyle(q).direction") == "rtl"
    assert page.eval_on_selector("input[name=q]", "i => getComputedStyle(i).direction") == "rtl"

    page.click("#results li:first-child a")
    page.wait_for_selector("#full-image")
    page.wait_for_function("() => document.getElementById('full-image').complete")
    assert page.inner_text("h1") == "cat-chelsea.png"
    assert page.eval_on_selector("#full-image", "i => i.naturalWidth") == 451  # the full image, not a thumbnail

    page.click("#more-like-this")
    page.wait_for_selector("#results img")
    assert "More like" in page.inner_text(".summary")
    names = card_names(page)
    assert len(names) == 5 and "cat-chelsea.png" not in names and set(names) < set(PHOTOS.values())
    assert elsewhere == []
    context.close()


def test_more_results_and_search_by_image(server, browser):
    base = server["url"]
    context = browser.new_context()
    elsewhere = loopback_only(context, base)
    page = context.new_page()
    page.goto(base + "/?q=Kaffee&k=2")  # German: coffee
    assert card_names(page)[0] == "coffee.png" and len(card_names(page)) == 2
    page.click("#more")  # appended in place by app.js
    page.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 4")
    assert page.url == base + "/?q=Kaffee&k=2"  # no page load
    assert len(set(card_names(page))) == 4

    page.set_input_files("#upload-input", str(server["photos"] / "rocket.png"))  # submits on choice
    page.wait_for_url(base + "/search/image")
    page.wait_for_selector("#results img")
    assert card_names(page)[0] == "rocket.png" and "rocket.png" in page.inner_text(".summary")

    # dropping an image file anywhere on the page searches by it
    page.goto(base + "/")
    coffee_id = page.evaluate("async () => (await (await fetch('/api/search?q=Kaffee&k=1')).json()).results[0].id")
    drop = page.evaluate_handle(
        """async (id) => {
            const blob = await (await fetch('/images/' + id + '/file')).blob();
            const transfer = new DataTransfer();
            transfer.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
            return transfer;
        }""",
        coffee_id,
    )
    page.dispatch_event("body", "dragenter", {"dataTransfer": drop})
    assert page.is_visible("#drop-hint")
    page.dispatch_event("body", "drop", {"dataTransfer": drop})
    page.wait_for_url(base + "/search/image")
    assert card_names(page)[0] == "coffee.png" and "dropped.png" in page.inner_text(".summary")
    assert elsewhere == []
    context.close()


def test_searching_works_without_javascript(server, browser):
    base = server["url"]
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(base + "/")
    page.fill("input[name=q]", "Kaffee")
    page.press("input[name=q]", "Enter")
    page.wait_for_selector("#results img")
    assert card_names(page)[0] == "coffee.png"
    page.goto(base + "/?q=Kaffee&k=2")
    page.click("#more")  # a plain link to the next page
    page.wait_for_url(re.compile(r"offset=2"))
    assert len(card_names(page)) == 2 and "coffee.png" not in card_names(page)

    # the filters are plain GET values: only PNG files, and the form keeps the choice on the results page
    page.goto(base + "/?q=Kaffee")
    page.click("#filters summary")
    page.select_option("select[name=type]", "png")
    page.click("#apply-filters")
    page.wait_for_url(re.compile(r"type=png"))
    assert card_names(page)[0] == "coffee.png" and page.eval_on_selector("select[name=type]", "s => s.value") == "png"
    # the language menu's button (hidden when JavaScript runs) switches the page, kept in a cookie
    page.select_option("#ui-select", "ja")
    page.click(".ui-go")
    page.wait_for_function("() => document.documentElement.lang === 'ja'")
    assert "の検索結果" in page.inner_text(".summary") and "type=png" in page.url
    page.goto(base + "/")
    assert page.get_attribute("html", "lang") == "ja"
    context.close()


def test_readings_and_where_relevance_ends(server, browser):
    base = server["url"]
    context = browser.new_context()
    page = context.new_page()
    page.goto(base + "/?q=" + "猫")  # Chinese characters: babel-lite reads them through CC-CEDICT's glosses
    page.wait_for_selector("#results img")
    assert card_names(page)[0] == "cat-chelsea.png"
    assert page.inner_text("#readings").startswith("Read as:") and "cat" in page.inner_text("#readings bdi")
    # the cat, then the divider, then the five unrelated photos
    order = page.eval_on_selector_all("#results > li", "items => items.map(i => i.className)")
    assert order[0] == "hit" and "divider" in order and order.index("divider") < len(order) - 1
    assert page.inner_text("#weaker") == "weaker matches"
    context.close()


def test_the_page_in_arabic(server, browser):
    base = server["url"]
    context = browser.new_context(locale="ar", viewport={"width": 1200, "height": 900})  # Accept-Language: ar
    elsewhere = loopback_only(context, base)
    page = context.new_page()
    page.goto(base + "/")
    assert page.get_attribute("html", "lang") == "ar" and page.get_attribute("html", "dir") == "rtl"
    assert page.evaluate("() => getComputedStyle(document.body).direction") == "rtl"
    # laid out right to left: the brand at the right end of the header, the language menu at the left
    brand, menu = page.locator(".brand").bounding_box(), page.locator("#ui-language").bounding_box()
    assert brand["x"] > menu["x"] + menu["width"]
    assert page.inner_text("#search-form button") == "بحث" and "البحث بصورة" in page.inner_text(".upload")

    page.fill("input[name=q]", "قطة")  # Arabic: cat
    page.press("input[name=q]", "Enter")
    page.wait_for_selector("#results img")
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete)")
    assert card_names(page)[0] == "cat-chelsea.png" and all(w > 0 for w in loaded_images(page, "#results img"))
    assert "نتائج البحث عن" in page.inner_text(".summary") and "العربية" in page.inner_text("#query-language")
    # the results grid runs right to left too: in a row of cards, each next one is left of the one before
    boxes = page.eval_on_selector_all("#results li.hit", "items => items.map(i => [i.offsetTop, i.offsetLeft])")
    row = [left for top, left in boxes if top == boxes[-1][0]]
    assert len(row) >= 2 and row == sorted(row, reverse=True), boxes

    # the language menu applies at once with JavaScript, and the choice is remembered
    page.select_option("#ui-select", "de")
    page.wait_for_function("() => document.documentElement.lang === 'de'")
    assert page.get_attribute("html", "dir") == "ltr" and "Ergebnisse für" in page.inner_text(".summary")
    page.goto(base + "/")
    assert page.get_attribute("html", "lang") == "de"
    assert elsewhere == []
    context.close()
