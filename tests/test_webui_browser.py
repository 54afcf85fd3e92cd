"""A real browser (Debian's headless Chromium, driven by Playwright) against `babelsearch serve`.

Six demo photos indexed with the real babel-lite model; queries in Russian and German.
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
    page.wait_for_function("() => document.querySelectorAll('#results li').length === 4")
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
    context.close()
