"""The write side of the query bank: bank texts, their vectors, and every image's margin terms.

What is stored where is described in ``babelsearch.engine.bank`` (the read side). The terms are
written to the catalog before the manifest records the bank's hash, so an interrupted update is
simply redone in full by the next one. Every update runs under the index lock: inside an indexing
run with the writer's own manifest (``refresh_image_terms``), or on its own (``update_image_terms``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from babelsearch.engine.bank import (
    BANK_DIR,
    BANK_SETTINGS,
    RERANK_SETTINGS,
    USER_TEXTS,
    bank_key,
    embed_texts_cached,
    save_vectors,
    text_revision,
    vectors_key,
)
from babelsearch.engine.cache import user_cache_dir
from babelsearch.engine.catalog import (
    all_terms,
    delete_terms,
    ensure_terms_table,
    ids_without_terms,
    open_catalog,
    write_terms,
)
from babelsearch.engine.encoders import Encoder
from babelsearch.engine.encoders.matryoshka import index_encoder
from babelsearch.engine.errors import InvalidQuery, SourceError
from babelsearch.engine.layout import (
    Manifest,
    atomic_write_bytes,
    damaged,
    expand_home,
    manifest_path,
    read_manifest,
    write_manifest,
)
from babelsearch.engine.rerank import (
    DEEPEST_K,
    DEFAULT_CANDIDATES,
    DEFAULT_MARGIN_K,
    DEFAULT_RERANK,
    MARGIN_KS,
    term_ladder,
)

from .files import DEFAULT_LOCK_WAIT, debug_point, index_lock

MIN_BANK_TEXTS = 16
# Past this many new images one pass over all stored vectors beats fetching them one id at a time.
_BY_ID_LIMIT = 20_000


@dataclass
class BankReport:
    """What one update of the image-side terms did."""

    texts: int = 0
    updated: int = 0
    recomputed_all: bool = False
    seconds: float = 0.0
    sources: list[str] = field(default_factory=list)

    def summary(self) -> str:
        scope = f"all {self.updated} images" if self.recomputed_all else f"{self.updated} new images"
        return f"query bank: {self.texts} texts ({', '.join(self.sources)}); terms for {scope}, {self.seconds:.1f} s"


# -- bank texts -----------------------------------------------------------------------------------
def parse_bank_text(text: str) -> list[str]:
    """One query a line; blank lines and lines starting with '#' are skipped; each text once."""
    lines = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def default_bank_texts() -> list[str]:
    """The shipped default bank (class lemmas, prompt shapes, everyday concepts in 15 languages)."""
    return parse_bank_text(
        resources.files("babelsearch.engine").joinpath("resources/query_bank.txt").read_text("utf-8")
    )


def read_bank_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The texts of user bank files (UTF-8, one query a line), each text once, in file order."""
    texts: list[str] = []
    for path in paths:
        path = expand_home(path)
        try:
            texts.extend(parse_bank_text(path.read_text("utf-8")))
        except FileNotFoundError:
            raise SourceError(f"query bank file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"query bank file {path} cannot be read as UTF-8 text ({exc})") from None
    return list(dict.fromkeys(texts))


# -- image-side terms -----------------------------------------------------------------------------
def bank_terms(image_vectors: np.ndarray, bank_vectors: np.ndarray, batch_size: int = 16384) -> np.ndarray:
    """(n_images, len(MARGIN_KS)) r(y) for every k in MARGIN_KS: exact FAISS search of the bank for
    the nearest texts, and the cosine to the bank's mean vector for the whole bank."""
    import faiss

    bank_vectors = np.ascontiguousarray(bank_vectors, dtype=np.float32)
    bank = faiss.IndexFlatIP(bank_vectors.shape[1])
    bank.add(bank_vectors)
    depth = min(DEEPEST_K, bank.ntotal)
    bank_mean = bank_vectors.mean(axis=0)  # mean over the bank of x . t == x . mean(t)
    out = np.empty((len(image_vectors), len(MARGIN_KS)), dtype=np.float32)
    for start in range(0, len(image_vectors), batch_size):
        chunk = np.ascontiguousarray(image_vectors[start : start + batch_size], dtype=np.float32)
        top, _ = bank.search(chunk, depth)  # best first
        out[start : start + len(chunk)] = term_ladder(top, chunk @ bank_mean)
    return out


def update_image_terms(
    index_dir: str | os.PathLike,
    encoder: Encoder | None = None,
    bank_files: list[str | os.PathLike] | None = None,
    include_default: bool | None = None,
    recompute: bool = False,
    rerank_defaults: dict[str, Any] | None = None,
    lock_wait: float = DEFAULT_LOCK_WAIT,
) -> BankReport:
    """Give every indexed image its bank term; images that have one for this bank are left alone.

    ``bank_files`` replaces the index's user bank (None keeps it); ``include_default`` None keeps the
    index's choice (default: included). A bank that differs from the one recorded in the manifest,
    or ``recompute``, redoes every image. Image vectors are read back from the shards, never
    re-embedded. Holds the index lock throughout; another run writing the index is waited for up to
    ``lock_wait`` seconds, then IndexBusy.
    """
    _check_rerank_defaults(rerank_defaults or {})
    index_dir = Path(index_dir)
    if not manifest_path(index_dir).is_file():
        read_manifest(index_dir)  # says why there is no index, before a lock file is made there
    with index_lock(index_dir, "babelsearch bank update", lock_wait):
        manifest = read_manifest(index_dir)  # under the lock: the manifest written back is this one
        encoder = encoder or index_encoder(manifest.model, manifest.settings)  # the index's --dim too
        db = open_catalog(index_dir)
        try:
            return refresh_image_terms(
                index_dir, manifest, db, encoder, bank_files, include_default, recompute, rerank_defaults
            )
        finally:
            db.close()


def refresh_image_terms(
    index_dir: Path,
    manifest: Manifest,
    db,
    encoder: Encoder,
    bank_files: list[str | os.PathLike] | None = None,
    include_default: bool | None = None,
    recompute: bool = False,
    rerank_defaults: dict[str, Any] | None = None,
) -> BankReport:
    """``update_image_terms`` for a caller that holds the index lock, with its manifest and catalog;
    records the bank in ``manifest`` and writes it."""
    from babelsearch.engine.shards import ShardSet

    started = time.perf_counter()
    _check_rerank_defaults(rerank_defaults or {})
    recorded = manifest.settings.get(BANK_SETTINGS, {})
    if include_default is None:
        include_default = bool(recorded.get("default", True))
    user_path = index_dir / USER_TEXTS
    if bank_files is not None:
        user_texts = read_bank_files(bank_files)
        user_sources = [Path(p).name for p in bank_files]
    else:
        user_texts = _stored_user_texts(index_dir, user_path)
        user_sources = list(recorded.get("user_sources", []))
    default_texts = default_bank_texts() if include_default else []
    texts = list(dict.fromkeys(default_texts + user_texts))
    if len(texts) < MIN_BANK_TEXTS:
        raise SourceError(f"a query bank needs at least {MIN_BANK_TEXTS} distinct texts, this one has {len(texts)}")

    vectors = _bank_vectors(index_dir, encoder, default_texts, user_texts)
    # a change in how the encoder reads text (a new glossary) changes the bank's vectors: redo the terms
    revision = text_revision(encoder)
    key = bank_key(f"{manifest.model}|{revision}" if revision else manifest.model, texts)
    report = BankReport(texts=len(texts), sources=(["default"] if include_default else []) + user_sources)
    report.recomputed_all = recompute or recorded.get("sha256") != key

    ensure_terms_table(db)
    shards = ShardSet.open(index_dir, manifest)
    # images removed or replaced since lose their terms: those would skew the typical row
    delete_terms(db, stale_only=not report.recomputed_all)
    for ids, image_vectors in _vectors_of(shards, ids_without_terms(db)):
        write_terms(db, ids, bank_terms(image_vectors, vectors))
        report.updated += len(ids)
    mean_terms = _mean_terms(db)

    if bank_files is not None:
        atomic_write_bytes(user_path, ("\n".join(user_texts) + "\n").encode("utf-8"))
    _record(manifest, key, texts, include_default, user_sources, len(user_texts), mean_terms, rerank_defaults)
    debug_point("bank-before-manifest")
    write_manifest(index_dir, manifest)
    report.seconds = time.perf_counter() - started
    return report


def _stored_user_texts(index_dir: Path, user_path: Path) -> list[str]:
    """The user bank this index keeps (written by ``bank update --from``); IndexDamaged if not UTF-8."""
    if not user_path.exists():
        return []
    try:
        return parse_bank_text(user_path.read_text("utf-8"))
    except UnicodeDecodeError:
        raise damaged(
            index_dir,
            USER_TEXTS,
            "is not UTF-8 text",
            "replace it with `babelsearch bank update {index_dir} --from FILE`",
        ) from None


def _bank_vectors(index_dir: Path, encoder: Encoder, default_texts: list[str], user_texts: list[str]) -> np.ndarray:
    """The bank's vectors (default part, then the user texts not already in it), cached in bank/."""
    bank_dir = index_dir / BANK_DIR
    seen = set(default_texts)
    parts = {"default": default_texts, "user": [t for t in user_texts if t not in seen]}
    vectors = []
    for name, texts in parts.items():
        key = vectors_key(encoder, texts)
        local = bank_dir / f"{name}-{key}.npy"
        for stale in bank_dir.glob(f"{name}-*.npy"):
            if stale != local:
                stale.unlink(missing_ok=True)
        if not texts:
            continue
        if name == "default":
            if not local.exists():
                save_vectors(local, default_bank_vectors(encoder, texts, key))
            vectors.append(embed_texts_cached(encoder, texts, local))
        else:
            vectors.append(embed_texts_cached(encoder, texts, local))
    return np.concatenate(vectors)


def default_bank_vectors(encoder: Encoder, texts: list[str] | None = None, key: str | None = None) -> np.ndarray:
    """The shipped bank's vectors: embedded once per machine and model into the per-user cache (by
    ``babelsearch prepare`` at install, else by the first index run), then copied into each index."""
    texts = default_bank_texts() if texts is None else texts
    shared = user_cache_dir() / f"bank-{key or vectors_key(encoder, texts)}.npy"
    try:
        return embed_texts_cached(encoder, texts, shared)
    except OSError:  # an unwritable per-user cache only costs time later
        return np.ascontiguousarray(encoder.encode_texts(texts), dtype=np.float32)


def _vectors_of(shards, ids: list[int], batch_size: int = 65536):
    """(ids, vectors) batches of the given ids that have vectors: by id when few, else one pass
    over all vectors."""
    if not ids:
        return
    if len(ids) <= _BY_ID_LIMIT:
        try:
            batches = [
                (chunk, shards.vectors_for_ids(chunk))
                for chunk in np.array_split(np.asarray(ids, dtype=np.int64), -(-len(ids) // batch_size))
            ]
        except KeyError:
            pass  # a catalog row without its vector: the full pass below simply skips it
        else:
            yield from batches
            return
    wanted = np.asarray(ids, dtype=np.int64)
    for batch_ids, batch_vectors in shards.iter_vectors(batch_size):
        keep = np.isin(batch_ids, wanted)
        if keep.any():
            yield batch_ids[keep], batch_vectors[keep]


def _mean_terms(db) -> list[float]:
    """The average stored terms row: stands in for an image whose terms are not there yet."""
    total = np.zeros(len(MARGIN_KS), dtype=np.float64)
    count = 0
    for row in all_terms(db):
        total += row
        count += 1
    return [round(float(x), 6) for x in (total / max(count, 1))]


def _check_rerank_defaults(chosen: dict[str, Any]) -> None:
    from babelsearch.engine.rerank import RERANK_MODES, check_margin_k

    if "mode" in chosen and chosen["mode"] not in RERANK_MODES:
        raise InvalidQuery(f"rerank must be one of {', '.join(RERANK_MODES)}, got {chosen['mode']!r}")
    if "margin_k" in chosen:
        try:
            check_margin_k(chosen["margin_k"])
        except ValueError as exc:
            raise InvalidQuery(str(exc)) from None
    candidates = chosen.get("candidates", 1)
    if not isinstance(candidates, int) or isinstance(candidates, bool) or not 1 <= candidates <= 1000:
        raise InvalidQuery(f"candidates must be an integer from 1 to 1000, got {candidates!r}")


def _record(
    manifest: Manifest,
    key: str,
    texts: list[str],
    include_default: bool,
    user_sources: list[str],
    user_count: int,
    mean_terms: list[float],
    rerank_defaults: dict[str, Any] | None,
) -> None:
    manifest.settings[BANK_SETTINGS] = {
        "sha256": key,
        "texts": len(texts),
        "default": include_default,
        "user_sources": user_sources,
        "user_texts": user_count,
        "margin_ks": list(MARGIN_KS),
        "mean_terms": mean_terms,
    }
    defaults = {"mode": DEFAULT_RERANK, "margin_k": DEFAULT_MARGIN_K, "candidates": DEFAULT_CANDIDATES}
    defaults.update(manifest.settings.get(RERANK_SETTINGS, {}))
    defaults.update(rerank_defaults or {})
    manifest.settings[RERANK_SETTINGS] = defaults
