"""The caption set babel-lite trains on: photos, their captions per language, and the split.

The input is a folder like ``../shared/data/captions``: ``captions.tsv`` (``file``, ``split``, ``lang``,
``source``, ``caption``; several rows per photo) and ``images/FILE``. Only ``split == "train"`` rows
are ever read for training; a validation share of them can be held out (chosen by a hash of the
file name, so the same photos every time) to compare recipes without touching ``test``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from babelsearch.engine.errors import BabelsearchError


class TrainingDataError(BabelsearchError):
    """The caption folder is missing or not in the expected shape."""


COLUMNS = ("file", "split", "lang", "source", "caption")


@dataclass
class CaptionSet:
    """Photos (file names, in a fixed order) and, per photo, language -> captions."""

    root: Path
    files: list[str]
    sources: list[str]
    captions: list[dict[str, list[str]]] = field(repr=False)

    def path(self, index: int) -> Path:
        return self.root / "images" / self.files[index]

    @property
    def caption_count(self) -> int:
        return sum(len(texts) for by_language in self.captions for texts in by_language.values())

    def subset(self, indices: list[int]) -> CaptionSet:
        return CaptionSet(
            self.root,
            [self.files[i] for i in indices],
            [self.sources[i] for i in indices],
            [self.captions[i] for i in indices],
        )


def without_languages(captions: CaptionSet, languages: set[str]) -> CaptionSet:
    """The same photos without the captions in ``languages`` (a photo left with none is dropped):
    how a language with no training captions at all is measured."""
    kept = [
        (i, {language: texts for language, texts in by_language.items() if language not in languages})
        for i, by_language in enumerate(captions.captions)
    ]
    kept = [(i, by_language) for i, by_language in kept if by_language]
    return CaptionSet(
        captions.root,
        [captions.files[i] for i, _ in kept],
        [captions.sources[i] for i, _ in kept],
        [by_language for _, by_language in kept],
    )


def _source_family(source: str) -> str:
    """The photo collection a caption source belongs to (Flickr8k's photos carry four sources)."""
    return "cc3m" if source == "cc3m" else "flickr8k"


def read_caption_set(root: str | os.PathLike, split: str = "train") -> CaptionSet:
    """The photos of ``split`` with their captions, in file-name order."""
    root = Path(root)
    table = root / "captions.tsv"
    if not table.is_file():
        raise TrainingDataError(f"{table} not found: give the caption folder (with captions.tsv and images/)")
    by_file: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    source_of: dict[str, str] = {}
    with table.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(header[: len(COLUMNS)]) != COLUMNS:
            raise TrainingDataError(f"{table}: expected the columns {', '.join(COLUMNS)}, found {header}")
        for row in reader:
            if len(row) < len(COLUMNS) or row[1] != split or not row[4].strip():
                continue
            by_file[row[0]][row[2]].append(row[4])
            source_of.setdefault(row[0], _source_family(row[3]))
    if not by_file:
        raise TrainingDataError(f"{table} has no captions in split {split!r}")
    files = sorted(by_file)
    return CaptionSet(root, files, [source_of[f] for f in files], [dict(by_file[f]) for f in files])


def _rank(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def hold_out(captions: CaptionSet, per_source: int) -> tuple[CaptionSet, CaptionSet]:
    """(training, validation): ``per_source`` photos of each source held out, chosen by file-name hash."""
    held: set[int] = set()
    for source in sorted(set(captions.sources)):
        members = [i for i, s in enumerate(captions.sources) if s == source]
        held.update(sorted(members, key=lambda i: _rank(captions.files[i]))[:per_source])
    keep = [i for i in range(len(captions.files)) if i not in held]
    return captions.subset(keep), captions.subset(sorted(held))
