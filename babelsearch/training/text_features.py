"""The text tower's raw outputs for training: e5 query vectors of many texts, cached on disk.

Training never runs the text tower inside its loop (the tower is frozen), so every caption is embedded
once and kept in a cache folder as a ``texts.json`` + ``vectors.npy`` pair per part, appended as
it goes: an interrupted run resumes where it stopped. Texts are embedded in order of length, so that
the engine's batches hold texts of similar length and pad little (about 2x faster on captions).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from babelsearch.engine.bank import save_vectors
from babelsearch.engine.layout import atomic_write_bytes

BATCH = 64
PART = 4096  # texts per file on disk: the unit an interrupted run loses at most


def _parts(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("part-*.json"))


def load_cached(folder: Path) -> dict[str, np.ndarray]:
    """text -> vector for every complete part in ``folder`` (a part missing its vectors is ignored)."""
    found: dict[str, np.ndarray] = {}
    for number in _parts(folder):
        texts_file, vectors_file = folder / f"part-{number}.json", folder / f"part-{number}.npy"
        if not vectors_file.exists():
            continue
        texts = json.loads(texts_file.read_text("utf-8"))
        vectors = np.load(vectors_file)
        if len(texts) != len(vectors):
            continue
        found.update(zip(texts, vectors))
    return found


def embed_cached(
    texts: Iterable[str],
    folder: str | os.PathLike,
    embed: Callable[[Sequence[str]], np.ndarray],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """text -> float32 vector for every distinct text, embedding only those the cache lacks."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cached = load_cached(folder)
    missing = sorted({t for t in texts if t not in cached}, key=lambda t: (len(t), t))
    next_number = (_parts(folder) or [-1])[-1] + 1
    done = 0
    for start in range(0, len(missing), PART):
        chunk = missing[start : start + PART]
        vectors = np.concatenate(
            [np.asarray(embed(chunk[i : i + BATCH]), dtype=np.float32) for i in range(0, len(chunk), BATCH)]
        )
        # vectors first, then the texts: a part is complete only when both exist
        save_vectors(folder / f"part-{next_number}.npy", vectors)
        atomic_write_bytes(folder / f"part-{next_number}.json", json.dumps(chunk, ensure_ascii=False).encode())
        next_number += 1
        cached.update(zip(chunk, vectors))
        done += len(chunk)
        if progress:
            progress(done, len(missing))
    return cached
