"""Property-based tests of the same readers the fuzzer drives (tests/fuzz/targets.py), with structured inputs
a byte mutator rarely makes: images Pillow writes then cuts or flips, path lists of valid lines mixed with
junk, manifests the writer makes then bent (wrong types, missing keys, huge and infinite numbers), request
values at every edge the web layer draws. Each input goes through its target, whose oracle says what is a
crash; a few properties say more than "no crash": an intact input is read whole, as written.

The profile is tests/fuzz/conftest.py's: small in CI, ``HYPOTHESIS_PROFILE=fuzz`` for a long hunt."""

from __future__ import annotations

import io
import json
import re
import string
from datetime import datetime
from urllib.parse import urlencode

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from babelsearch.engine.filters import ORIENTATIONS, Where
from babelsearch.engine.images import open_photo
from babelsearch.engine.language import given_language
from babelsearch.engine.layout import Manifest, ShardInfo, read_manifest, write_manifest
from babelsearch.indexer.bank_terms import read_bank_files
from babelsearch.indexer.sources import read_path_list
from babelsearch.webui.searching import LANG_CODE, TYPE_NAMES, search_options

from .conftest import PROFILE
from .targets import TARGETS, request_args, scratch

fuzz_settings = settings(settings.get_profile(PROFILE))

# -- images ---------------------------------------------------------------------------------------------
# what each format can write, and whether it keeps EXIF (orientation, DateTimeOriginal)
WRITABLE_MODES = {
    "JPEG": ("RGB", "L", "CMYK"),
    "PNG": ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"),
    "WEBP": ("RGB", "RGBA"),
    "TIFF": ("RGB", "RGBA", "L", "1", "CMYK"),
    "GIF": ("P", "L"),
    "BMP": ("RGB", "L", "1", "P"),
}
KEEPS_EXIF = ("JPEG", "PNG", "WEBP", "TIFF")
KEEPS_EXIF_IFD = ("JPEG", "PNG", "WEBP")  # Pillow's TIFF writer drops the Exif sub-IFD, DateTimeOriginal with it
EXIF_IFD, DATE_TIME_ORIGINAL, ORIENTATION, MAKE = 0x8769, 0x9003, 0x0112, 0x010F
camera_dates = st.datetimes(datetime(1800, 1, 1), datetime(9999, 12, 31)).map(lambda d: d.strftime("%Y:%m:%d %H:%M:%S"))
exif_dates = st.one_of(
    st.none(),
    camera_dates,
    st.sampled_from(
        [
            "0000:00:00 00:00:00",
            "2024:02:30 10:00:00",
            "2023:02:29 00:00:00",
            "2024:07:14 24:00:00",
            "2024-07-14T18:03:59",
            "    :  :     :  :  ",
        ]
    ),
    st.text(string.digits + ": -T", max_size=24),
)
CAMERA_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
orientations = st.one_of(st.none(), st.integers(0, 9), st.integers(0, 65535))


@st.composite
def written_images(draw) -> tuple[bytes, str, tuple[int, int], int | None, str | None]:
    """(bytes, format, size, orientation, DateTimeOriginal) of a small image Pillow wrote."""
    fmt = draw(st.sampled_from(sorted(WRITABLE_MODES)))
    mode = draw(st.sampled_from(WRITABLE_MODES[fmt]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    picture = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").convert(mode)
    orientation = draw(orientations) if fmt in KEEPS_EXIF else None
    date = draw(exif_dates) if fmt in KEEPS_EXIF_IFD else None
    exif = Image.Exif()
    exif[MAKE] = "babelsearch"  # as every camera does: Pillow writes no Exif sub-IFD under an empty IFD0
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if date is not None:
        exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = date
    out = io.BytesIO()
    picture.save(out, format=fmt, **({"exif": exif} if fmt in KEEPS_EXIF else {}))
    return out.getvalue(), fmt, size, orientation, date


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` cut short, with bits flipped, or with a run of bytes overwritten."""
    how = draw(st.sampled_from(["cut", "flip", "overwrite"]))
    if how == "cut":
        return data[: draw(st.integers(0, len(data)))]
    spoiled = bytearray(data)
    if how == "flip":
        for at in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            spoiled[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(spoiled)
    at = draw(st.integers(0, len(data) - 1))
    patch = draw(st.binary(min_size=1, max_size=16))
    return bytes(spoiled[:at] + patch + spoiled[at + len(patch) :])


@fuzz_settings
@given(image=written_images())
def test_an_intact_image_opens_with_its_size_as_shown_and_its_real_date(image):
    data, fmt, (width, height), orientation, date = image
    photo = open_photo(data, reduce_to=256)
    TARGETS["image"].check(data)
    swapped = orientation in (5, 6, 7, 8)
    assert (photo.width, photo.height) == ((height, width) if swapped else (width, height))
    assert photo.format == fmt.lower()
    real = _camera_date(date)
    assert photo.taken_at == (real.isoformat() if real else None)


def _camera_date(text: str | None) -> datetime | None:
    """The date a DateTimeOriginal starts with, when it is a real one from 1800 on (exif_taken_at's promise;
    a leap second, 60, is read as second 59)."""
    match = CAMERA_DATE.match((text or "").strip())
    if not match:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    if year < 1800 or second > 60:
        return None
    try:
        return datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return None


@fuzz_settings
@given(data=written_images().flatmap(lambda image: damaged(image[0])))
def test_a_damaged_image_opens_or_is_refused_as_invalid(data):
    TARGETS["image"].check(data)
    TARGETS["thumbnail"].check(data)


# -- path lists -------------------------------------------------------------------------------------------
names = st.text(string.ascii_letters + string.digits + "_-. ", min_size=1, max_size=12).filter(
    lambda s: s.strip(" .") != ""
)
relative_paths = st.lists(names, min_size=1, max_size=3).map(lambda parts: "/".join(p.strip() for p in parts) + ".jpg")
list_lines = st.one_of(
    relative_paths,
    relative_paths.map(lambda p: "/photos/" + p),
    st.sampled_from(["", "   ", "# a comment", "#", "\x00", "a\x00b.jpg", "\x7f"]),
    st.sampled_from(["~", "~/Pictures/a.jpg", "~root/a.jpg", "~nobody-at-all/a.jpg", "~\x00/a.jpg"]),
    st.sampled_from(['"quoted, name.jpg"', "path", "id,path", "x\tpath", "é/ü.png", "猫.png", "\ufeffbom.jpg"]),
    st.text(max_size=20),
)
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252"])


@fuzz_settings
@given(
    lines=st.lists(list_lines, max_size=12),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    encoding=encodings,
    kind=st.sampled_from("cpt"),
)
def test_a_path_list_of_valid_and_junk_lines_gives_absolute_paths_or_a_source_error(lines, end, encoding, kind):
    data = end.join(lines).encode(encoding, "replace")
    TARGETS["path_list"].check(kind.encode() + data)


@fuzz_settings
@given(paths=st.lists(relative_paths, min_size=1, max_size=10), end=st.sampled_from(["\n", "\r\n"]))
def test_a_list_of_plain_relative_names_gives_each_one_under_the_list_folder(paths, end):
    listed = scratch() / "plain.txt"
    listed.write_text(end.join(["# photos", *paths, ""]), "utf-8", newline="")
    base = listed.resolve().parent
    assert read_path_list(listed) == [base / path.strip() for path in paths]


# -- manifests ------------------------------------------------------------------------------------------------
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -1, 0, 2**63, 1e308, "576", "", "../x", "/etc/passwd", "shards/../../x", "a\\b", "c:x"]),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def written_manifest() -> dict:
    """A manifest as the indexer writes one: IVF, two shards, a trained index, search settings."""
    shards = [
        ShardInfo(f"shards/{n:05d}.faiss", count, f"shards/{n:05d}.ids.npy", f"shards/{n:05d}.vectors.npy")
        for n, count in ((3, 262144), (4, 100))
    ]
    manifest = Manifest(
        "babel-lite",
        576,
        factory="IVF256,PQ48x4fs",
        shards=shards,
        images=262244,
        trained="trained.faiss",
        trained_sha256="ab" * 32,
        trained_for=262244,
        refine_dtype="float16",
        shard_size=262144,
        settings={"nprobe": 16, "rerank": {"mode": "margin", "margin_k": 16}},
    )
    return manifest.to_json()


@st.composite
def bent_manifests(draw) -> dict:
    """The writer's manifest with keys dropped, values (its shards' too) replaced by any JSON value."""
    data = written_manifest()
    for key in draw(st.lists(st.sampled_from(sorted(data)), max_size=3)):
        data.pop(key, None)
    for key in draw(st.lists(st.sampled_from([*written_manifest(), "extra"]), max_size=3)):
        data[key] = draw(json_values)
    shards = data.get("shards")
    if isinstance(shards, list) and shards and isinstance(shards[0], dict) and draw(st.booleans()):
        shard = dict(shards[0])
        shard[draw(st.sampled_from(["file", "count", "ids", "vectors", "extra"]))] = draw(json_values)
        shards[0] = shard
    return data


@fuzz_settings
@given(data=bent_manifests())
def test_a_bent_manifest_reads_as_sane_values_or_is_refused_as_damaged(data):
    TARGETS["manifest"].check(json.dumps(data).encode())


@fuzz_settings
@given(depth=st.integers(1, 100_000), opener=st.sampled_from(["[", '{"a":']))
def test_a_deeply_nested_manifest_is_refused_as_damaged(depth, opener):
    TARGETS["manifest"].check((opener * depth).encode())


def test_a_manifest_the_writer_wrote_reads_back_the_same():
    index = scratch() / "written"
    index.mkdir(exist_ok=True)
    manifest = Manifest.from_json(written_manifest(), index)
    write_manifest(index, manifest)
    assert read_manifest(index) == manifest


# -- request parameters ----------------------------------------------------------------------------------------
PARAMS = ["q", "k", "offset", "like", "lang", "rerank", "margin_k", "nprobe", "refine_factor", "min_score", "collapse"]
PARAMS += ["folder", "exclude", "after", "before", "orientation", "min_width", "min_height", "type", "other"]


def words(*groups: str) -> list[str]:
    """Values that hold no space, written space-separated so that a long list reads as a few lines."""
    return [word for group in groups for word in group.split()]


EDGES = [
    *words(
        "0 1 -1 05 +5 1e3 1.0 ٥ 0x10 1_000 16 17 32 999 1000 1001 1048576 1048577 9223372036854775808 -100",
        "all ALL none margin csls de pt-BR pt_br d x-klingon zh-Hant-TW landscape square jpeg jpg JPG .png heic",
        "2024-07-14 2024-02-29 2023-02-29 0000-01-01 2024-07-14T18:00 2024-07-14T24:00 9999-12-31T23:59:59",
        "svg true false on off yes nan inf -inf 1e309 100.5 0.05 / . ./ a/b/ photos % 猫",
    ),
    *["", " ", " 5", "de\n", "2024-07-14 18:00", " Portrait", "\x00", "\ud7ff", "x" * 255, "x" * 256, "x" * 4097],
    *["9" * 30, "9" * 31, "9" * 4300, "1" * 4301],  # int() refuses more than 4300 digits
]
request_values = st.one_of(st.sampled_from(EDGES), st.text(max_size=16), st.integers(-(10**40), 10**40).map(str))


@fuzz_settings
@given(params=st.lists(st.tuples(st.sampled_from(PARAMS), request_values), max_size=10))
def test_request_parameters_are_read_or_refused_with_a_4xx(params):
    TARGETS["filters"].check(urlencode(params).encode())


documented_filters = st.fixed_dictionaries(
    {},
    optional={
        "after": st.dates().map(lambda d: d.isoformat()),
        "orientation": st.sampled_from(ORIENTATIONS),
        "min_width": st.integers(1, 1_000_000).map(str),
        "min_height": st.integers(1, 1_000_000).map(str),
        "type": st.lists(st.sampled_from(TYPE_NAMES), min_size=1, max_size=4),
        "folder": st.lists(
            st.text(string.ascii_letters + "/_", min_size=1, max_size=20).filter(lambda f: f.strip("/")),
            min_size=1,
            max_size=8,
        ),
    },
)


@fuzz_settings
@given(values=documented_filters)
def test_every_filter_the_api_documents_is_taken_as_given(values):
    args = request_args(urlencode(values, doseq=True).encode())
    options = search_options(args, 10, strict=True)
    assert options.where == Where.from_values(args)
    shown = options.where.to_json() if options.where else {}
    assert shown.get("orientation") == values.get("orientation")
    assert shown.get("min_width") == (int(values["min_width"]) if "min_width" in values else None)
    assert shown.get("after") == values.get("after")


# -- query banks and query texts ----------------------------------------------------------------------------------
bank_lines = st.one_of(
    st.text(max_size=30), st.sampled_from(["", "#", "# comment", "  cat  ", "cat", "猫", "\u2028", "a\x85b", "\x00"])
)


@fuzz_settings
@given(lines=st.lists(bank_lines, max_size=15), encoding=encodings)
def test_a_bank_file_gives_distinct_one_line_texts_or_a_source_error(lines, encoding):
    TARGETS["query_bank"].check("\n".join(lines).encode(encoding, "replace"))


one_line_texts = st.text(st.characters(exclude_categories=["Cs", "Zl", "Zp", "Cc"]), min_size=1, max_size=20).map(
    str.strip
)


@fuzz_settings
@given(texts=st.lists(one_line_texts.filter(lambda t: t and not t.startswith("#")), max_size=10))
def test_every_text_of_a_bank_file_comes_back_once_in_order(texts):
    assume(all(len(text.splitlines()) == 1 for text in texts))
    bank = scratch() / "every.txt"
    bank.write_text("\n".join(texts), "utf-8")
    assert read_bank_files([bank]) == list(dict.fromkeys(texts))


han = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
kana = st.characters(min_codepoint=0x3041, max_codepoint=0x30FF)
query_texts = st.one_of(
    st.text(max_size=40),
    st.text(st.one_of(han, kana, st.sampled_from(" 的了一只在")), max_size=12),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),  # a CLI argument that is not UTF-8
    st.sampled_from(["x" * 1000, "x" * 1001, " " * 1001, "\x00", "金魚", "猫\x00犬", "ｶﾀｶﾅ"]),
)
lang_tags = st.one_of(
    st.just(""), st.from_regex(LANG_CODE, fullmatch=True), st.text(max_size=12).filter(lambda t: "\x00" not in t)
)


@fuzz_settings
@given(text=query_texts, lang=lang_tags)
def test_a_query_text_is_read_or_refused_as_an_invalid_query(text, lang):
    TARGETS["query_text"].check(
        lang.encode("utf-8", "surrogateescape") + b"\x00" + text.encode("utf-8", "surrogateescape")
    )


@fuzz_settings
@given(code=st.from_regex(LANG_CODE, fullmatch=True), pad=st.sampled_from(["", " ", "\t"]))
def test_every_language_code_of_the_documented_shape_is_taken(code, pad):
    assert given_language(pad + code + pad).code == code


def test_the_property_tests_cover_every_target():
    covered = {"image", "thumbnail", "path_list", "manifest", "filters", "query_bank", "query_text"}
    assert covered == set(TARGETS), "a new target wants its property test here too"
