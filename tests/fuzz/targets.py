"""The fuzz targets: each feeds bytes to one real reader of babelsearch and lets through only the error that
reader documents. Anything else it raises, a value that breaks what the reader promises (InvariantBroken),
a hang or a blow-up of memory is a crash.

One registry serves three users: scripts/fuzz.py (coverage-guided fuzzing with atheris), test_corpus.py
(every seed and every crash ever found, replayed) and test_properties.py (hypothesis, structured inputs).
Adding a target is one function here under ``@target`` and a folder of seed inputs,
tests/fuzz/corpus/<name>/.

No target loads a model or imports torch: a fuzzer needs thousands of runs a second.
"""

from __future__ import annotations

import atexit
import functools
import io
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from PIL import Image
from werkzeug.datastructures import MultiDict

from babelsearch.engine import glossary
from babelsearch.engine.encoders.babel_lite import normalize_query_text, query_length
from babelsearch.engine.errors import IncompatibleIndex, InvalidImage, InvalidQuery, SourceError
from babelsearch.engine.filters import Where
from babelsearch.engine.images import Photo, open_photo
from babelsearch.engine.language import Language, detect_language, given_language
from babelsearch.engine.layout import MANIFEST, Manifest, check_readable, inside_index, read_manifest
from babelsearch.engine.options import MAX_K, SearchOptions, check_text
from babelsearch.indexer.bank_terms import read_bank_files
from babelsearch.indexer.sources import read_path_list
from babelsearch.webui import SETTINGS
from babelsearch.webui.errors import WebError
from babelsearch.webui.searching import int_arg, lang_arg, search_options, single_values
from babelsearch.webui.thumbs import render_thumbnail

Check = Callable[[bytes], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """One reader under fuzzing: ``check(data)`` returns, or raises a crash. ``max_len``: the longest input
    libFuzzer makes (it grows inputs up to this), as large as the reader's interesting inputs need."""

    name: str
    check: Check
    description: str
    max_len: int = 4096


TARGETS: dict[str, Target] = {}


def target(description: str, max_len: int = 4096) -> Callable[[Check], Check]:
    """Register the decorated function as the target of its own name."""

    def register(check: Check) -> Check:
        TARGETS[check.__name__] = Target(check.__name__, check, description, max_len)
        return check

    return register


class InvariantBroken(AssertionError):
    """A reader returned without an error, but what it returned breaks what it promises. ``args[0]`` is a
    fixed text naming the promise (the fuzzer tells crashes apart by it), the rest the values seen."""


def expect(condition: bool, promise: str, *seen: object) -> None:
    if not condition:
        raise InvariantBroken(promise, *seen)


@functools.cache
def scratch() -> Path:
    """A folder for the readers that take a file, made once per process: a fuzzer calls them thousands of
    times a second, and a fresh temporary folder for each call would cost more than the read."""
    folder = Path(tempfile.mkdtemp(prefix="babelsearch-fuzz-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# -- images -----------------------------------------------------------------------------------------------
REDUCE_TO = 256  # what the indexer and the thumbnails ask of open_photo
WEB_DECODE_PIXELS = SETTINGS["MAX_DECODE_PIXELS"][0]
ISO_SECOND = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


@target("open_photo(data, reduce_to=256): a Photo (RGB, its size as shown, a real taken_at) or InvalidImage")
def image(data: bytes) -> None:
    """Image headers of every format Pillow reads, EXIF orientation and DateTimeOriginal (exif_taken_at)."""
    try:
        photo = open_photo(data, reduce_to=REDUCE_TO)
    except InvalidImage:
        return
    check_photo(photo)


def check_photo(photo: Photo) -> None:
    """What the indexer relies on: an RGB image, the size as shown (EXIF orientation applied) positive and
    not smaller than the decoded image, a JPEG reduced no further than asked, and a taken_at that is a real
    date (the catalog's date filters compare it with real dates)."""
    width, height = photo.image.size
    expect(photo.image.mode == "RGB", "open_photo returns RGB", photo.image.mode)
    expect(photo.width > 0 and photo.height > 0, "the size as shown is positive", photo.width, photo.height)
    expect(
        0 < width <= photo.width and 0 < height <= photo.height,
        "the decoded image fits the size as shown",
        (width, height),
        (photo.width, photo.height),
    )
    expect(
        min(width, height) >= min(REDUCE_TO, photo.width, photo.height),
        "reduce_to keeps the shorter side",
        (width, height),
        (photo.width, photo.height),
    )
    expect(photo.format is None or photo.format == photo.format.lower(), "the format is lower case", photo.format)
    if photo.taken_at is not None:
        expect(ISO_SECOND.fullmatch(photo.taken_at) is not None, "taken_at is YYYY-MM-DDTHH:MM:SS", photo.taken_at)
        expect(_real_date(photo.taken_at), "taken_at is a real date", photo.taken_at)


def _real_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


@target("render_thumbnail(data, 256) under the web UI's decode ceiling: a JPEG fitted into 256x256, or InvalidImage")
def thumbnail(data: bytes) -> None:
    """The thumbnails the web UI serves (the grid's size), rendered from an image file's bytes with the
    app's default MAX_DECODE_PIXELS (ImageTooLarge, an InvalidImage, past it)."""
    try:
        out = render_thumbnail(data, REDUCE_TO, WEB_DECODE_PIXELS)
    except InvalidImage:
        return
    expect(out[:2] == b"\xff\xd8" and out[-2:] == b"\xff\xd9", "a thumbnail is a whole JPEG", out[:4], out[-4:])
    with Image.open(io.BytesIO(out)) as thumb:
        expect(min(thumb.size) >= 1 and max(thumb.size) <= REDUCE_TO, "a thumbnail fits its size", thumb.size)


# -- path lists, manifests, query banks: files ------------------------------------------------------------
# The first byte picks the list's kind and the rest is the file: "c" (99) .csv, "p" (112) .txt, "t" (116) .tsv.
LIST_SUFFIXES = (".csv", ".txt", ".tsv")


@target("read_path_list (first byte: list.csv/.txt/.tsv, the rest the file): absolute Paths or SourceError")
def path_list(data: bytes) -> None:
    """A path list given as a SOURCE to ``babelsearch index``; see LIST_SUFFIXES for the first byte."""
    suffix = LIST_SUFFIXES[data[0] % 3] if data else ".txt"
    listed = scratch() / f"list{suffix}"
    listed.write_bytes(data[1:])
    try:
        paths = read_path_list(listed)
    except SourceError:
        return
    expect(all(isinstance(path, Path) and path.is_absolute() for path in paths), "listed paths are absolute", paths[:3])


@target("read_manifest + check_readable: a Manifest that writes back as read, or IncompatibleIndex (IndexDamaged)")
def manifest(data: bytes) -> None:
    """An index's manifest.json, which every reader and writer opens first."""
    index = scratch() / "index"
    index.mkdir(exist_ok=True)
    (index / MANIFEST).write_bytes(data)
    try:
        found = read_manifest(index)
        check_readable(found, index)
    except IncompatibleIndex:
        return
    check_manifest(found, index / MANIFEST)


def check_manifest(found: Manifest, where: Path) -> None:
    """The types the engine then relies on, every file named inside the index, and a round trip: the
    indexer writes back what it read (to_json), and reading that gives the same manifest."""
    expect(
        isinstance(found.model, str) and isinstance(found.dim, int),
        "model is text, dim a whole number",
        found.model,
        found.dim,
    )
    expect(
        isinstance(found.images, int) and isinstance(found.shard_size, int),
        "counts are whole numbers",
        found.images,
        found.shard_size,
    )
    expect(
        all(isinstance(shard.count, int) and shard.count >= 0 for shard in found.shards),
        "shard counts are whole numbers >= 0",
    )
    for shard in found.shards:
        for name in (shard.file, shard.ids, shard.vectors):
            if name is not None:
                inside_index(name, where)  # IndexDamaged here, after the reader took it, is a crash
    expect(Manifest.from_json(found.to_json(), where) == found, "a manifest reads back as written")


@target("read_bank_files over a user bank file: distinct, trimmed, one-line texts, or SourceError")
def query_bank(data: bytes) -> None:
    """A query-bank file of ``babelsearch bank update --bank FILE`` (UTF-8, one query a line)."""
    bank = scratch() / "bank.txt"
    bank.write_bytes(data)
    try:
        texts = read_bank_files([bank])
    except SourceError:
        return
    for text in texts:
        expect(
            isinstance(text, str) and text != "" and text == text.strip(), "bank texts are trimmed and not empty", text
        )
        expect(not text.startswith("#") and len(text.splitlines()) == 1, "bank texts are one line, no comment", text)
    expect(len(set(texts)) == len(texts), "each bank text is kept once")


# -- the web layer's request parameters -------------------------------------------------------------------
PAGE_K = 20  # a page's default k (the app's PAGE_SIZE); the API's is 10
API_K = 10


def request_args(data: bytes) -> MultiDict[str, str]:
    """The bytes as a request's query string, decoded as the web server decodes one (invalid UTF-8 replaced)."""
    return MultiDict(parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True))


@target("request parameters as the pages and the API read them: SearchOptions, or InvalidQuery / a 4xx", max_len=8192)
def filters(data: bytes) -> None:
    """The bytes as a query string, read as the pages read a form (loose) and as the API reads one (strict):
    int_arg (k, offset), search_options (text and image queries: the options and the filters, Where),
    single_values and lang_arg. max_len past 4300: int() refuses longer digit strings with a ValueError."""
    args = request_args(data)
    for strict in (False, True):
        default_k = API_K if strict else PAGE_K
        k = attempt(int_arg, args, "k", default_k, 1, MAX_K, strict=strict)
        offset = attempt(int_arg, args, "offset", 0, 0, MAX_K - 1, strict=strict)
        expect(k is None or 1 <= k <= MAX_K, "k from 1 to MAX_K", k)
        expect(offset is None or 0 <= offset < MAX_K, "offset from 0 to MAX_K - 1", offset)
        for image_query in (False, True):
            options = attempt(search_options, args, k or default_k, strict=strict, image=image_query)
            if options is not None:
                check_options(options, image_query)
    attempt(single_values, args)
    lang = attempt(lang_arg, args)
    if lang:
        given_language(lang)  # what the API takes, the engine takes (Engine.query_language)


def attempt(parse: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``parse(...)``, or None when it refuses the request as the web layer may: the engine's InvalidQuery
    (a 400) or a WebError of a 4xx status."""
    try:
        return parse(*args, **kwargs)
    except InvalidQuery:
        return None
    except WebError as exc:
        expect(400 <= exc.status < 500, "a refused parameter is a 4xx", exc.status, exc.message)
        return None


def check_options(options: SearchOptions, image_query: bool) -> None:
    """Checked values, and a filter that survives the round trip a results page makes of it (to_json into
    the next page's links, read back by Where.from_values)."""
    expect(isinstance(options, SearchOptions) and 1 <= options.k <= MAX_K, "k from 1 to MAX_K", options)
    if image_query:
        expect(options.rerank is None and options.margin_k is None, "an image query takes no rerank", options)
    if options.min_score is not None:
        expect(
            math.isfinite(options.min_score) and abs(options.min_score) <= 100,
            "min_score from -100 to 100",
            options.min_score,
        )
    where = options.where
    if where is not None:
        expect(isinstance(where, Where) and not where.is_empty, "an empty filter is None", where)
        expect(Where.from_values(where.to_json()) == where, "a filter reads back as shown", where)


# -- query texts --------------------------------------------------------------------------------------------
LANGUAGE_SOURCES = ("model", "script", "given", "none")


@target("a query text (lang NUL text) as the engine reads it before encoding: values, or InvalidQuery")
def query_text(data: bytes) -> None:
    """check_text, the language as Engine.query_language finds it (given_language, else detect_language),
    normalize_query_text, query_length and the Chinese glosses. The bytes up to the first NUL are lang=
    (none: detected), the rest the text, decoded with surrogateescape as Python decodes a CLI argument."""
    lang_bytes, nul, text_bytes = data.partition(b"\x00")
    if not nul:
        lang_bytes, text_bytes = b"", data
    lang = lang_bytes.decode("utf-8", "surrogateescape")
    text = text_bytes.decode("utf-8", "surrogateescape")
    try:
        language = given_language(lang) if lang else detect_language(check_text(text))
    except InvalidQuery:
        return
    check_language(language)
    cleaned = normalize_query_text(text)
    expect(0 <= query_length(cleaned) <= 3 * len(cleaned), "a query's length is at most 3 per character", cleaned)
    readings = glossary.glosses(cleaned) if glossary.has_han(cleaned) else []
    expect(all(isinstance(reading, str) and reading.strip() for reading in readings), "glosses are text", readings)


def check_language(language: Language) -> None:
    expect(
        isinstance(language.code, str) and language.code.strip() == language.code != "",
        "a language code is text",
        language,
    )
    expect(0.0 <= language.confidence <= 1.0, "confidence from 0 to 1", language)
    expect(
        language.source in LANGUAGE_SOURCES and isinstance(language.name, str),
        "a language says how it was found",
        language,
    )
