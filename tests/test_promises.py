"""The README's promises about searching, as behaviour: the defaults an index records, what each per-call option
and `bank update` flag changes in the scores (by the documented formulas, computed here from the stored vectors
and terms), image queries by plain cosine, removal only inside a run's sources, and Ctrl-C.

The index here has a planted hub (see HubEncoder), so that plain cosine and the margin disagree on the order: a
test that only asked for a 200 or some hits could not tell them apart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from babelsearch.cli import cli
from babelsearch.engine import SearchEngine, SourceError
from babelsearch.engine.bank import read_image_terms
from babelsearch.engine.encoders import Encoder, normalize_rows, register_encoder
from babelsearch.engine.layout import read_manifest
from babelsearch.engine.rerank import MARGIN_KS
from babelsearch.indexer import IndexOptions, build_index, index_embeddings
from babelsearch.indexer.bank_terms import default_bank_texts
from babelsearch.indexer.factory import FLAT, default_search_settings, make_index
from babelsearch.indexer.files import DEBUG_KILL_ENV, DEBUG_PAUSE_ENV

from .conftest import COLOURS, clustered_vectors, exact_top_k, recall, write_image

ROOT = Path(__file__).resolve().parent.parent

# -- an index where plain cosine and the margin disagree ------------------------------------------
DIM, N_CONCEPTS = 16, 6
_BASIS = np.linalg.qr(np.random.default_rng(3).normal(size=(DIM, DIM)))[0]
CONCEPTS, COMMON = _BASIS[:N_CONCEPTS], _BASIS[N_CONCEPTS]  # orthonormal directions


class HubEncoder(Encoder):
    """Concept photos (red = 40 x (n + 1)) each on its own axis; the hub photo (blue) along the direction every
    text leans towards. So plain cosine puts the hub first for every query, text or image, and the margin
    (the hub is close to the whole query bank) puts it down."""

    name = "test-promise-hub"
    dim = DIM

    def encode_images(self, images: list) -> np.ndarray:
        rows = []
        for image in images:
            r, _, b = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
            rows.append(COMMON + 0.3 * CONCEPTS.mean(axis=0) if b > 100 else CONCEPTS[round(r / 40) - 1])
        return normalize_rows(np.array(rows, dtype=np.float32).reshape(-1, DIM))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            text = text.strip()
            concept = int(text[1:]) if text[:1] == "c" and text[1:].isdigit() else None
            rows.append(0.6 * CONCEPTS[concept] + 0.8 * COMMON if concept is not None else COMMON)
        return normalize_rows(np.array(rows, dtype=np.float32).reshape(-1, DIM))


register_encoder("test-promise-hub", lambda spec: HubEncoder())


def concept_colour(n: int) -> tuple[int, int, int]:
    return (40 * (n + 1), 0, 0)


def make_hub_index(root: Path) -> Path:
    for n in range(N_CONCEPTS):
        write_image(root / "photos" / f"concept{n}.png", concept_colour(n), noise_seed=n)
    write_image(root / "photos" / "hub.png", (0, 0, 200), noise_seed=99)
    bank = root / "concepts.txt"
    bank.write_text("\n".join(f"c{n}" for n in range(N_CONCEPTS)) + "\n", "utf-8")
    build_index([root / "photos"], root / "index", model="test-promise-hub", query_bank=[bank])
    return root / "index"


@pytest.fixture(scope="module")
def hub_index(tmp_path_factory) -> Path:
    return make_hub_index(tmp_path_factory.mktemp("promise-hub"))


@pytest.fixture(scope="module")
def engine(hub_index: Path) -> SearchEngine:
    return SearchEngine.open(hub_index)


def stored_vectors(engine: SearchEngine) -> tuple[np.ndarray, np.ndarray]:
    ids, vectors = zip(*engine.shards.iter_vectors())
    return np.concatenate(ids), np.concatenate(vectors).astype(np.float64)


def name(hit) -> str:
    return Path(hit.path).name


def hand_scores(engine: SearchEngine, text: str, mode: str, margin_k: int | str, pool: int) -> dict[int, float]:
    """Every image's score for a text query by the README's formulas: r(q) the mean of the query's margin_k best
    cosines among the ``pool`` candidates, r(y) the image's stored term for margin_k."""
    ids, vectors = stored_vectors(engine)
    cos = vectors @ HubEncoder().encode_texts([text])[0].astype(np.float64)
    best = np.sort(cos)[::-1][:pool]
    r_q = best.mean() if margin_k == "all" else best[:margin_k].mean()
    terms = read_image_terms(engine.catalog, ids.tolist())
    r_y = np.array([terms[int(i)][MARGIN_KS.index(margin_k)] for i in ids], dtype=np.float64)
    scores = {
        "none": cos,
        "distance": cos - (r_q + r_y) / 2,
        "margin": cos / ((r_q + r_y) / 2),
        "csls": 2 * cos - r_q - r_y,
    }[mode]
    return dict(zip(ids.tolist(), scores.tolist()))


def assert_ranked_by(hits, expected: dict[int, float], k: int) -> None:
    """The hits are the k best by ``expected``, in its order, each with its expected score."""
    assert len(hits) == k
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.id], abs=1e-5), name(hit)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0].id == max(expected, key=expected.get)  # the best one is unique by construction
    left_out = [score for i, score in expected.items() if i not in {hit.id for hit in hits}]
    assert min(scores) >= max(left_out, default=-np.inf) - 1e-5


# -- defaults recorded in the manifest ------------------------------------------------------------
def test_a_new_index_records_the_documented_rerank_and_search_defaults(hub_index: Path, engine: SearchEngine):
    settings = read_manifest(hub_index).settings
    assert settings["rerank"] == {"mode": "distance", "margin_k": "all", "candidates": 200}  # README, literally
    assert settings.get("refine_factor", 1) == 1 and "nprobe" not in settings  # exact Flat: nothing to probe or refine
    assert (engine.default_refine_factor, engine.default_nprobe) == (1, None)
    # and a call that says nothing searches with them: distance, margin_k all, over 200 candidates
    assert_ranked_by(engine.search("c2", k=3), hand_scores(engine, "c2", "distance", "all", 200), 3)


def test_ivf_pq_starting_defaults_are_nprobe_nlist_over_64_at_least_16_and_refine_factor_50():
    # README "Large collections": nprobe = nlist/64 (at least 16, at most nlist), refine factor 50 for PQ codes;
    # a run that changed an IVF index then tunes them on the index itself (indexer/tuning.py), see below
    documented = {"IVF4096,PQ32": 64, "IVF2048,PQ8": 32, "IVF512,PQ8": 16, "IVF8,PQ8": 8}
    for factory, nprobe in documented.items():
        dim = 384 if factory == "IVF4096,PQ32" else 16
        assert default_search_settings(make_index(factory, dim), factory) == {"nprobe": nprobe, "refine_factor": 50}
    assert default_search_settings(make_index("IVF256,Flat", 16), "IVF256,Flat") == {"nprobe": 16, "refine_factor": 1}
    assert default_search_settings(None, FLAT) == {"refine_factor": 1}


def test_an_ivf_pq_index_searches_with_the_recorded_defaults_and_per_call_nprobe_and_refine_factor(tmp_path: Path):
    x = clustered_vectors(1600, dim=16, seed=5)
    np.save(tmp_path / "base.npy", x[:1500])
    index_embeddings(tmp_path / "base.npy", tmp_path / "ivf", options=IndexOptions(index_factory="IVF32,PQ4"))
    settings = read_manifest(tmp_path / "ivf").settings
    engine = SearchEngine.open(tmp_path / "ivf")
    nprobe, refine_factor = settings["nprobe"], settings["refine_factor"]
    assert (engine.default_nprobe, engine.default_refine_factor) == (nprobe, refine_factor)
    assert refine_factor > 1  # PQ codes are always re-scored exactly unless a call says otherwise

    queries, base = x[1500:1520], x[:1500].astype(np.float64)

    def found(**options) -> tuple[list[list[int]], np.ndarray]:
        hits = engine.search_vectors(queries, k=10, **options)
        errors = np.array([abs(h.score - base[h.id] @ q) for q, row in zip(queries, hits) for h in row])
        return [[h.id for h in row] for row in hits], errors

    default, default_errors = found()
    assert default == found(nprobe=nprobe, refine_factor=refine_factor)[0]  # what the manifest says is used
    assert default_errors.max() < 2e-3  # exact cosines (float16 refine vectors), not PQ estimates
    # refine_factor per call: 1 returns the PQ estimates, 50 the exact cosines
    assert found(refine_factor=1)[1].max() > 1e-2 and found(refine_factor=50)[1].max() < 2e-3
    # nprobe per call: every list scanned finds the true top 10, one list misses many of them
    truth = exact_top_k(x[:1500], queries, 10)
    assert recall(found(nprobe=32, refine_factor=50)[0], truth) >= 0.99 > recall(found(nprobe=1)[0], truth) + 0.2


# -- per-call rerank and margin_k, by the formulas --------------------------------------------------
@pytest.mark.parametrize("mode", ["distance", "margin", "csls", "none"])
def test_rerank_and_margin_k_per_call_change_the_scores_as_the_formulas_say(engine: SearchEngine, mode: str):
    for margin_k in (4, 1, "all"):
        hits = engine.search("c2", k=4, rerank=mode, margin_k=margin_k)
        assert_ranked_by(hits, hand_scores(engine, "c2", mode, margin_k, 200), 4)
        assert all(
            hit.cosine == pytest.approx(hand_scores(engine, "c2", "none", 4, 200)[hit.id], abs=1e-5) for hit in hits
        )
    if mode != "none":  # the neighbourhood matters: k = 4 is not k = all
        four = {h.id: h.score for h in engine.search("c2", k=7, rerank=mode, margin_k=4)}
        every = {h.id: h.score for h in engine.search("c2", k=7, rerank=mode, margin_k="all")}
        assert max(abs(four[i] - every[i]) for i in four) > 0.05
    top = name(engine.search("c2", k=1, rerank=mode)[0])
    assert top == ("hub.png" if mode == "none" else "concept2.png")


# -- image queries: plain cosine, whatever the index's default rerank -------------------------------
def test_image_queries_are_ranked_and_scored_by_plain_cosine_of_the_stored_vectors(engine: SearchEngine):
    assert engine.rerank_defaults["mode"] == "distance"  # the index reranks text queries by default
    ids, vectors = stored_vectors(engine)
    by_id = dict(zip(ids.tolist(), vectors))
    concept2 = next(h.id for h in engine.search("c2", k=7, rerank="none") if name(h) == "concept2.png")

    similar = engine.similar(concept2, k=4)
    cosines = {i: float(v @ by_id[concept2]) for i, v in by_id.items() if i != concept2}
    assert_ranked_by(similar, cosines, 4)
    assert name(similar[0]) == "hub.png"  # nearest by cosine; the margin would have put it last
    assert all(hit.score == hit.cosine for hit in similar)

    query = Image.new("RGB", (30, 20), concept_colour(2))
    vector = HubEncoder().encode_images([query])[0].astype(np.float64)
    found = engine.search_image(query, k=4)
    assert_ranked_by(found, {i: float(v @ vector) for i, v in by_id.items()}, 4)
    assert [name(h) for h in found[:2]] == ["concept2.png", "hub.png"]


# -- bank update: each flag changes the manifest and the searches' defaults --------------------------
def brute_force_terms(engine: SearchEngine, texts: list[str]) -> dict[int, np.ndarray]:
    ids, vectors = stored_vectors(engine)
    ranked = -np.sort(-(vectors @ HubEncoder().encode_texts(texts).T.astype(np.float64)), axis=1)
    columns = [ranked[:, : (None if k == "all" else k)].mean(axis=1) for k in MARGIN_KS]
    return dict(zip(ids.tolist(), np.stack(columns, axis=1)))


def test_each_bank_update_flag_changes_the_manifest_and_the_search_defaults(tmp_path: Path):
    index = make_hub_index(tmp_path)
    mine = [f"c{n}" for n in range(N_CONCEPTS)] + [f"x{n}" for n in range(10)]  # 16 texts, the fewest allowed
    (tmp_path / "mine.txt").write_text("\n".join(mine) + "\n", "utf-8")
    (tmp_path / "other.txt").write_text("\n".join(f"y{n}" for n in range(16)) + "\n", "utf-8")

    def update(*flags: str) -> tuple[dict, SearchEngine]:
        result = CliRunner().invoke(cli, ["bank", "update", str(index), *flags])
        assert result.exit_code == 0, result.output
        engine = SearchEngine.open(index)
        return read_manifest(index).settings, engine

    def terms_are_of(engine: SearchEngine, texts: list[str]) -> bool:
        stored = read_image_terms(engine.catalog, range(100))
        expected = brute_force_terms(engine, texts)
        return sorted(stored) == sorted(expected) and all(
            np.allclose(stored[i], expected[i], atol=1e-5) for i in stored
        )

    settings, engine = update("--no-default", "--from", str(tmp_path / "mine.txt"))
    bank = settings["query_bank"]
    assert (bank["default"], bank["user_sources"], bank["texts"]) == (False, ["mine.txt"], 16)
    assert terms_are_of(engine, mine)
    assert_ranked_by(engine.search("c2", k=3), hand_scores(engine, "c2", "distance", "all", 200), 3)

    settings, engine = update()  # nothing said: the bank stays as it is
    assert (settings["query_bank"]["default"], settings["query_bank"]["user_sources"]) == (False, ["mine.txt"])
    assert terms_are_of(engine, mine)

    settings, engine = update("--from", str(tmp_path / "other.txt"))  # --from replaces the user bank
    assert (settings["query_bank"]["user_sources"], settings["query_bank"]["texts"]) == (["other.txt"], 16)
    assert terms_are_of(engine, [f"y{n}" for n in range(16)])

    settings, engine = update("--default")
    assert settings["query_bank"]["default"] and settings["query_bank"]["texts"] == len(default_bank_texts()) + 16
    assert terms_are_of(engine, default_bank_texts() + [f"y{n}" for n in range(16)])

    settings, engine = update("--candidates", "3")
    assert settings["rerank"] == {"mode": "distance", "margin_k": "all", "candidates": 3}
    assert_ranked_by(engine.search("c2", k=2), hand_scores(engine, "c2", "distance", "all", 3), 2)

    settings, engine = update("--margin-k", "4")
    assert settings["rerank"] == {"mode": "distance", "margin_k": 4, "candidates": 3}
    assert_ranked_by(engine.search("c2", k=2), hand_scores(engine, "c2", "distance", 4, 3), 2)

    settings, engine = update("--rerank", "margin")
    assert settings["rerank"] == {"mode": "margin", "margin_k": 4, "candidates": 3}
    assert_ranked_by(engine.search("c2", k=2), hand_scores(engine, "c2", "margin", 4, 3), 2)

    settings, engine = update("--rerank", "none")
    assert name(engine.search("c2", k=1)[0]) == "hub.png"  # plain cosine by default now


# -- removal only inside this run's sources --------------------------------------------------------
def indexed_names(index: Path) -> set[str]:
    rows = SearchEngine.open(index).catalog.query("select path from images")
    return {Path(row["path"]).name for row in rows}


def test_a_path_list_run_removes_only_the_listed_images_that_are_gone(tmp_path: Path):
    photos = tmp_path / "photos"
    for n, colour in enumerate(COLOURS):
        write_image(photos / f"{colour}.png", COLOURS[colour], noise_seed=n)
    index = tmp_path / "index"
    build_index([photos], index, model="test-colours")
    (photos / "red.png").unlink()
    (photos / "green.png").unlink()
    listed = photos / "some.txt"  # beside the photos: its folder is not a source, only what it lists
    listed.write_text("red.png\nblue.png\n", "utf-8")
    report = build_index([listed], index)
    assert report.removed == 1 and indexed_names(index) == {"green.png", "blue.png", "yellow.png"}
    assert build_index([photos], index).removed == 1 and indexed_names(index) == {"blue.png", "yellow.png"}


def test_an_unmounted_disk_or_a_folder_beside_the_source_loses_nothing(tmp_path: Path):
    disk, beside, home = tmp_path / "mnt" / "disk", tmp_path / "photos-old", tmp_path / "photos"
    for n, (folder, colour) in enumerate([(disk, "red"), (beside, "green"), (home, "blue")]):
        write_image(folder / f"{colour}.png", COLOURS[colour], noise_seed=n)
    index = tmp_path / "index"
    build_index([disk, beside, home], index, model="test-colours")
    before = (tmp_path / "index" / "catalog.db").read_bytes()
    disk.rename(tmp_path / "mnt" / "elsewhere")  # the disk is not mounted
    with pytest.raises(SourceError, match="does not exist"):
        build_index([disk, home], index)
    assert (tmp_path / "index" / "catalog.db").read_bytes() == before
    (beside / "green.png").unlink()  # photos-old/ begins like photos/ but is not inside it
    assert build_index([home], index).removed == 0
    assert indexed_names(index) == {"red.png", "green.png", "blue.png"}


# -- Ctrl-C ------------------------------------------------------------------------------------------
def test_ctrl_c_in_an_index_run_exits_130_with_one_line_and_the_next_run_resumes(tmp_path: Path):
    photos = tmp_path / "photos"
    for n in range(6):
        write_image(photos / f"red{n}.png", COLOURS["red"], noise_seed=n)
    index, handshake = tmp_path / "index", tmp_path / "handshake"
    env = {k: v for k, v in os.environ.items() if k not in (DEBUG_KILL_ENV, DEBUG_PAUSE_ENV)}
    env.update({DEBUG_PAUSE_ENV: f"before-catalog:{handshake}", "BABELSEARCH_CACHE": str(tmp_path / "cache")})
    # a job started in the background (`cmd &`, as CI runners may) inherits SIGINT ignored; a terminal's
    # Ctrl-C reaches a foreground process with Python's default handler, so the child restores it
    code = (
        "import signal, sys, tests.conftest; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from babelsearch.cli import main; sys.argv[0] = 'babelsearch'; main()"
    )
    args = ["index", str(photos), "--index", str(index), "--model", "test-colours", "-q"]
    run = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (handshake / "before-catalog.paused").exists() or run.poll() is not None, 120)
        assert run.poll() is None, run.stderr.read()
        run.send_signal(signal.SIGINT)  # what Ctrl-C sends, while the run holds a shard without catalog rows
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted; what was saved before stays indexed, run again to resume"
    assert "Traceback" not in stderr
    report = build_index([photos], index)
    assert report.indexed == 6 and SearchEngine.open(index).count == 6


def test_ctrl_c_in_a_search_exits_130(colour_index: Path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SearchEngine, "search", interrupted)
    result = CliRunner().invoke(cli, ["search", str(colour_index), "red"])
    assert result.exit_code == 130 and "interrupted;" in result.output and "Traceback" not in result.output


def wait_for(condition, timeout: float) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.02)
