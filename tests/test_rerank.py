"""Margin reranking: hand-computed scores, and a planted hub that plain cosine puts first everywhere."""

from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine import SearchEngine
from babelsearch.engine import rerank as rr
from babelsearch.engine.encoders import Encoder, normalize_rows, register_encoder
from babelsearch.indexer import build_index

from .conftest import write_image

# One query, three candidates (ids 10, 11, 12), each candidate's best-first bank cosines.
COS = np.array([[0.9, 0.8, 0.5]])
IDS = np.array([[10, 11, 12]])
BANK_TOP = np.array([[0.9, 0.7, 0.1], [0.5, 0.3, 0.1], [0.2, 0.2, 0.0]])
# k = 2: r(q) = (0.9 + 0.8) / 2 = 0.85; r(y) = 0.8, 0.4, 0.2; so (r(q) + r(y)) / 2 = 0.825, 0.625, 0.525
R_Y = rr.term_ladder(BANK_TOP, BANK_TOP.mean(axis=1))[:, rr.ladder_column(2)][None, :]
EXPECTED = {
    "margin": ([11, 10, 12], [0.8 / 0.625, 0.9 / 0.825, 0.5 / 0.525]),
    "distance": ([11, 10, 12], [0.8 - 0.625, 0.9 - 0.825, 0.5 - 0.525]),
    "csls": ([11, 10, 12], [1.6 - 1.25, 1.8 - 1.65, 1.0 - 1.05]),
    "none": ([10, 11, 12], [0.9, 0.8, 0.5]),
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_hand_computed_scores(mode: str):
    assert R_Y[0].tolist() == pytest.approx([0.8, 0.4, 0.2])
    scores, ids, cosines = rr.rerank(COS, IDS, R_Y, mode, k=2, keep=3)
    order, expected = EXPECTED[mode]
    assert ids[0].tolist() == order
    assert scores[0] == pytest.approx(expected)
    assert cosines[0].tolist() == pytest.approx([COS[0][[10, 11, 12].index(i)] for i in order])


def test_terms_use_the_k_best_and_skip_missing_candidates():
    cos = np.array([[0.2, 0.9, -np.inf, 0.4], [-np.inf, -np.inf, -np.inf, -np.inf]])
    assert rr.query_terms(cos, 2).tolist() == pytest.approx([0.65, 0.0])
    assert rr.query_terms(cos, 10).tolist() == pytest.approx([0.5, 0.0])  # fewer than k: the ones there
    ladder = rr.term_ladder(BANK_TOP, np.array([0.3, 0.2, 0.1]))
    assert ladder.shape == (3, len(rr.MARGIN_KS))
    assert ladder[:, rr.ladder_column(1)].tolist() == pytest.approx([0.9, 0.5, 0.2])
    # k beyond what a (small) bank holds averages all of it; "all" is the whole-bank mean given
    assert ladder[:, rr.ladder_column(256)].tolist() == pytest.approx([1.7 / 3, 0.9 / 3, 0.4 / 3])
    assert ladder[:, rr.ladder_column("all")].tolist() == pytest.approx([0.3, 0.2, 0.1])
    for bad in (0, 17, 100, 2.5, True, "ALL", None):
        with pytest.raises(ValueError):
            rr.ladder_column(bad)
    # with k = "all" the query side averages every candidate there is
    assert rr.query_terms(np.array([[0.9, 0.3, -np.inf]]), "all").tolist() == pytest.approx([0.6])


def test_missing_slots_stay_last_and_keep_only_the_best():
    cos = np.array([[0.9, 0.8, -np.inf]])
    ids = np.array([[10, 11, -1]])
    scores, out_ids, _ = rr.rerank(cos, ids, R_Y, "margin", k=2, keep=3)
    assert out_ids[0].tolist() == [11, 10, -1] and scores[0, 2] == -np.inf
    _, top, _ = rr.rerank(COS, IDS, R_Y, "margin", k=2, keep=1)
    assert top.tolist() == [[11]]


# -- a planted hub, end to end --------------------------------------------------------------------
N_CONCEPTS, DIM = 12, 32
_rng = np.random.default_rng(7)
_E = np.linalg.qr(_rng.normal(size=(DIM, DIM)))[0][: N_CONCEPTS + 1]  # orthonormal directions
_U, _CONCEPT = _E[-1], _E[:N_CONCEPTS]  # _U: a direction every query leans towards


class HubEncoder(Encoder):
    """Images are concept photos (red channel = 10 x concept) or the hub (blue); texts "cN" are
    concept queries that, like real text embeddings, share a common direction; the hub lies along it."""

    name = "test-hub"
    dim = DIM

    def encode_images(self, images: list) -> np.ndarray:
        rows = []
        for image in images:
            r, _, b = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
            if b > 100:
                rows.append(_U + 0.3 * _CONCEPT.mean(axis=0))
            else:
                rows.append(_CONCEPT[int(round(r / 10)) - 1])
        return normalize_rows(np.array(rows).reshape(-1, DIM))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            text = text.strip()
            concept = int(text[1:]) if text[:1] == "c" and text[1:].isdigit() else None
            rows.append(0.6 * _CONCEPT[concept] + 0.8 * _U if concept is not None else _U)
        return normalize_rows(np.array(rows).reshape(-1, DIM))


register_encoder("test-hub", lambda spec: HubEncoder())


@pytest.fixture
def hub_index(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    for c in range(N_CONCEPTS):
        write_image(photos / f"concept{c:02d}.png", (10 * (c + 1), 0, 0), noise_seed=c)
    write_image(photos / "hub.png", (0, 0, 200), noise_seed=99)
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(f"c{c}" for c in range(N_CONCEPTS)) + "\n", "utf-8")
    build_index([photos], tmp_path / "index", model="test-hub", query_bank=[bank])
    return tmp_path / "index"


def test_planted_hub_tops_every_cosine_list_but_no_margin_list(hub_index: Path):
    engine = SearchEngine.open(hub_index)
    queries = [f"c{c}" for c in range(N_CONCEPTS)]
    plain = engine.search_many(queries, k=3, rerank="none")
    assert all(Path(hits[0].path).name == "hub.png" for hits in plain)
    for mode in ("margin", "distance", "csls"):
        reranked = engine.search_many(queries, k=3, rerank=mode)
        tops = [Path(hits[0].path).name for hits in reranked]
        assert tops == [f"concept{c:02d}.png" for c in range(N_CONCEPTS)], mode
        # the final score changed the order; the raw cosine still says the hub is closer
        hub = next(h for h in reranked[0] if Path(h.path).name == "hub.png")
        assert hub.cosine > reranked[0][0].cosine and hub.score < reranked[0][0].score
    # reranking is on by default, as recorded in the index's manifest
    assert engine.rerank_defaults["mode"] == rr.DEFAULT_RERANK != "none"
    assert Path(engine.search("c3", k=1)[0].path).name == "concept03.png"


def test_margin_k_is_a_per_call_parameter(hub_index: Path):
    engine = SearchEngine.open(hub_index)
    for margin_k in (2, 4, 16, 64, 256, "all"):
        hits = engine.search("c5", k=2, margin_k=margin_k)
        assert Path(hits[0].path).name == "concept05.png"
    none = engine.search("c5", k=2, rerank="none")
    assert all(h.score == pytest.approx(h.cosine) for h in none)
