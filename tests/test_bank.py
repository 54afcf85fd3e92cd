"""The query bank: image-side terms at index time, `bank update`, and what the manifest records."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from babelsearch.cli import cli
from babelsearch.engine import InvalidQuery, SearchEngine, SourceError
from babelsearch.engine.bank import read_image_terms
from babelsearch.engine.layout import read_manifest, write_manifest
from babelsearch.engine.rerank import DEFAULT_CANDIDATES, DEFAULT_MARGIN_K, DEFAULT_RERANK, MARGIN_KS
from babelsearch.engine.shards import ShardSet
from babelsearch.indexer import build_index
from babelsearch.indexer.bank_terms import default_bank_texts, update_image_terms

from .conftest import COLOURS, ColourEncoder, write_image


def stored_terms(index_dir: Path) -> dict[int, np.ndarray]:
    engine = SearchEngine.open(index_dir)
    return read_image_terms(engine.catalog, range(1000))


def brute_force_terms(index_dir: Path, texts: list[str]) -> dict[int, np.ndarray]:
    manifest = read_manifest(index_dir)
    ids, vectors = next(ShardSet.open(index_dir, manifest).iter_vectors())
    bank = ColourEncoder().encode_texts(texts)
    ranked = -np.sort(-(vectors @ bank.T), axis=1)
    terms = np.stack([ranked[:, : (None if k == "all" else k)].mean(axis=1) for k in MARGIN_KS], axis=1)
    return dict(zip(ids.tolist(), terms))


def test_default_bank_ships_many_languages_and_no_evaluation_data():
    texts = default_bank_texts()
    assert len(texts) > 2000 and len(set(texts)) == len(texts)
    for word in ("goldfish", "ein Foto von Hund", "犬の写真", "собака", "كلب"):
        assert word in texts


def test_index_gives_every_image_its_bank_term(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    terms = stored_terms(index_dir)
    expected = brute_force_terms(index_dir, default_bank_texts())
    assert sorted(terms) == sorted(expected) == list(range(8))
    for image_id, row in terms.items():
        assert row.shape == (len(MARGIN_KS),) and np.all(np.diff(row) <= 1e-4)  # wider means are lower
        assert np.allclose(row, expected[image_id], atol=1e-5)
    settings = read_manifest(index_dir).settings
    assert settings["query_bank"]["texts"] == len(default_bank_texts()) and settings["query_bank"]["default"]
    assert settings["rerank"] == {
        "mode": DEFAULT_RERANK,
        "margin_k": DEFAULT_MARGIN_K,
        "candidates": DEFAULT_CANDIDATES,
    }
    assert len(settings["query_bank"]["mean_terms"]) == len(MARGIN_KS)


def test_new_images_get_terms_and_old_ones_are_kept(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    with sqlite3.connect(index_dir / "catalog.db") as conn:  # mark the old rows to see they are kept
        conn.execute(
            "update margin_terms set terms = ? where id = 0", (np.full(len(MARGIN_KS), 0.5, np.float32).tobytes(),)
        )
    write_image(colour_folder / "more" / "red9.png", COLOURS["red"], noise_seed=42)
    build_index([colour_folder], index_dir)
    terms = stored_terms(index_dir)
    assert sorted(terms) == list(range(9)) and np.all(terms[0] == 0.5)
    assert np.allclose(terms[8], brute_force_terms(index_dir, default_bank_texts())[8], atol=1e-5)


def test_bank_update_with_a_user_bank_recomputes_without_re_embedding_images(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    bank = tmp_path / "my-bank.txt"
    bank.write_text("# my queries\nred\n\nblue\nred\n" + "\n".join(f"thing {i}" for i in range(20)), "utf-8")

    class Counting(ColourEncoder):
        images = 0

        def encode_images(self, images):
            Counting.images += len(images)
            return super().encode_images(images)

    report = update_image_terms(index_dir, encoder=Counting(), bank_files=[bank], include_default=False, recompute=True)
    assert Counting.images == 0 and report.updated == 8 and report.recomputed_all
    assert report.texts == 22  # comments, blanks and repeats dropped
    user_texts = ["red", "blue"] + [f"thing {i}" for i in range(20)]
    terms, expected = stored_terms(index_dir), brute_force_terms(index_dir, user_texts)
    assert all(np.allclose(terms[i], expected[i], atol=1e-5) for i in range(8))
    recorded = read_manifest(index_dir).settings["query_bank"]
    assert (recorded["default"], recorded["user_sources"], recorded["texts"]) == (False, ["my-bank.txt"], 22)

    # the CLI redoes it from the stored user texts (the file may be gone) and can set new defaults
    bank.unlink()
    result = CliRunner().invoke(cli, ["bank", "update", str(index_dir), "--default", "--margin-k", "4"])
    assert result.exit_code == 0, result.output
    assert "terms for all 8 images" in result.output and "default, my-bank.txt" in result.output
    settings = read_manifest(index_dir).settings
    assert settings["query_bank"]["texts"] == len(set(default_bank_texts()) | set(user_texts))
    assert settings["rerank"]["margin_k"] == 4
    assert SearchEngine.open(index_dir).rerank_defaults["margin_k"] == 4


def test_bad_banks_are_refused_clearly(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    small = tmp_path / "small.txt"
    small.write_text("red\nblue\n", "utf-8")
    with pytest.raises(SourceError, match="at least 16 distinct texts"):
        update_image_terms(index_dir, bank_files=[small], include_default=False)
    with pytest.raises(SourceError, match="does not exist"):
        update_image_terms(index_dir, bank_files=[tmp_path / "absent.txt"])
    result = CliRunner().invoke(
        cli, ["index", str(colour_folder), "--index", str(index_dir), "--query-bank", str(tmp_path / "absent.txt")]
    )
    assert result.exit_code == 1 and "query bank file" in result.output and "Traceback" not in result.output
    assert len(stored_terms(index_dir)) == 8  # nothing lost


def test_rerank_parameters_are_checked_and_old_indexes_search_plainly(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    engine = SearchEngine.open(index_dir)
    with pytest.raises(InvalidQuery, match="rerank must be one of"):
        engine.search("red", rerank="fancy")
    for bad in (0, 17, 100, 2.5, True, "most"):
        with pytest.raises(InvalidQuery, match="margin_k must be"):
            engine.search("red", margin_k=bad)

    # an index from before query banks: plain cosine by default, margin asks for `bank update`
    manifest = read_manifest(index_dir)
    manifest.settings.pop("query_bank")
    write_manifest(index_dir, manifest)
    engine = SearchEngine.open(index_dir)
    hits = engine.search("red", k=2)
    assert all(h.score == h.cosine for h in hits) and Path(hits[0].path).name.startswith("red")
    with pytest.raises(InvalidQuery, match="babelsearch bank update"):
        engine.search("red", rerank="margin")


def test_an_image_without_its_term_is_still_found(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    with sqlite3.connect(index_dir / "catalog.db") as conn:
        conn.execute("delete from margin_terms")
    hits = SearchEngine.open(index_dir).search("blue", k=2)
    assert {Path(h.path).name[:4] for h in hits} == {"blue"}
    payload = json.loads(
        CliRunner().invoke(cli, ["search", str(index_dir), "blue", "--json", "--rerank", "csls"]).output
    )
    assert Path(payload["results"][0]["path"]).name.startswith("blue")


def test_a_catalog_row_without_a_vector_does_not_stop_the_update(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    with sqlite3.connect(index_dir / "catalog.db") as conn:
        conn.execute("insert into images (id, path) values (50, '/gone.jpg')")
        conn.execute("delete from margin_terms where id = 3")
    report = update_image_terms(index_dir)
    assert report.updated == 1 and not report.recomputed_all
    assert sorted(stored_terms(index_dir)) == list(range(8))


def test_terms_of_removed_and_replaced_images_are_dropped(colour_folder, tmp_path):
    import sqlite3

    from babelsearch.indexer import build_index

    from .conftest import COLOURS, write_image

    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    (colour_folder / "red0.jpg").unlink()
    changed = next(colour_folder.glob("nested/green1.*"))
    write_image(changed, COLOURS["blue"], size=(70, 50), noise_seed=77)  # new content, same path
    report = build_index([colour_folder], index_dir)
    assert report.removed == 1 and report.changed == 1
    with sqlite3.connect(index_dir / "catalog.db") as conn:
        images = {row[0] for row in conn.execute("select id from images")}
        with_terms = {row[0] for row in conn.execute("select id from margin_terms")}
    assert len(images) == 7 and with_terms == images


def test_a_change_in_how_the_encoder_reads_text_redoes_the_terms(colour_folder: Path, tmp_path: Path):
    """babel-lite's glossary can change with an upgrade; the bank vectors then change, so must the terms."""
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")

    class Reread(ColourEncoder):
        text_revision = "glossary 2"

    assert not update_image_terms(index_dir, encoder=ColourEncoder()).recomputed_all  # same reading: kept
    report = update_image_terms(index_dir, encoder=Reread())
    assert report.recomputed_all and report.updated == 8
    assert not update_image_terms(index_dir, encoder=Reread()).recomputed_all  # recorded: kept next time
    bank_files = sorted(p.name for p in (index_dir / "bank").glob("default-*.npy"))
    assert len(bank_files) == 1  # the vectors of the old reading are not kept beside the new ones


def test_a_stored_user_bank_that_is_not_utf8_is_named_with_the_way_out(colour_folder: Path, tmp_path: Path):
    from babelsearch.engine.errors import IndexDamaged

    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    bank = tmp_path / "mine.txt"
    bank.write_text("\n".join(f"query {n}" for n in range(20)) + "\n")
    update_image_terms(index_dir, bank_files=[bank])
    (index_dir / "bank" / "user.txt").write_bytes(b"\xff\xfe\x00broken")  # damaged on disk
    with pytest.raises(IndexDamaged, match=r"bank/user.txt is not UTF-8 text; replace it with `babelsearch bank"):
        update_image_terms(index_dir)
    assert update_image_terms(index_dir, bank_files=[bank]).texts  # the way out works
