"""The CLIP backends (open_clip, sentence-transformers) end to end, on tiny models built here, offline.

``tests/tiny_models.py`` builds, once per module, randomly initialised models in the layouts a user
hands to ``--model local:DIR``: open_clip with an XLM-R text tower, open_clip with an NLLB text tower,
and a sentence-transformers CLIP image model with a multilingual student for texts. Each goes
through the CLI (index, search, margin rerank, info, eval) and the web API. The network is cut for
the whole module (sockets refuse anything but loopback) and every cache points into tmp dirs, so a
test that reached for a hub would fail, not download.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from .conftest import COLOURS, require_module, write_image

require_module("open_clip")
require_module("sentence_transformers")

from babelsearch.cli import cli  # noqa: E402
from babelsearch.engine.encoders import Encoder, get_encoder  # noqa: E402
from babelsearch.engine.errors import InvalidSetting  # noqa: E402

from .tiny_models import EMBED_DIM, build_openclip, build_sentence_transformers  # noqa: E402

KINDS = ("xlmr", "nllb", "st")
OFFLINE_SPEC = "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"


def run(*args, catch: bool = False):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=catch)


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory):
    """No network, empty model caches, babelsearch's own cache in a tmp dir: for the whole module."""
    root = tmp_path_factory.mktemp("offline")
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost") or "/" in host):
            return real_connect(self, address)
        raise OSError(101, "network disabled in tests")

    def create_connection(address, *args, **kwargs):
        raise OSError(101, f"network disabled in tests ({address[0]})")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket, "create_connection", create_connection)
        for name in ("BABELSEARCH_MODELS", "HF_HOME", "HF_HUB_CACHE", "SENTENCE_TRANSFORMERS_HOME"):
            mp.setenv(name, str(root / name.lower()))
        mp.setenv("BABELSEARCH_CACHE", str(root / "babelsearch-cache"))
        mp.setenv("BABELSEARCH_DEVICE", "cpu")
        mp.delenv("HF_HUB_OFFLINE", raising=False)
        for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            mp.delenv(name, raising=False)
        yield root
    get_encoder.cache_clear()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "xlmr": build_openclip(root / "xlmr", "xlmr"),
        "nllb": build_openclip(root / "nllb", "nllb"),
        "st": build_sentence_transformers(root / "st"),
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip-photos")
    seed = 0
    for colour, rgb in COLOURS.items():
        for n in range(2):
            write_image(folder / f"{colour}{n}.png", rgb, size=(48 + 8 * n, 40), noise_seed=seed)
            seed += 1
    return folder


def spec_of(models: dict[str, Path], kind: str) -> str:
    return f"local:{models[kind]}"


# -- the spec table --------------------------------------------------------------------------------
def test_documented_specs_match_open_clip():
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    from babelsearch.engine.encoders.specs import MODEL_SPECS, XM3600, XTD10, find_spec

    listed = set(open_clip.list_pretrained())
    rows = [row for row in MODEL_SPECS if row.backend == "openclip"]
    assert len(rows) == 8 and any("SigLIP2" in row.spec for row in rows)
    for row in rows:
        arch, tag = row.spec[len("openclip:") :].split("/")
        assert (arch, tag) in listed, row.spec
        config = open_clip.get_model_config(arch)
        assert config["embed_dim"] == row.dim, row.spec
        assert get_pretrained_cfg(arch, tag)["hf_hub"].rstrip("/") == row.files[0][0], row.spec
        text = config["text_cfg"]
        for name in (text.get("hf_model_name"), text.get("hf_tokenizer_name")):
            assert name is None or name in {repo for repo, _ in row.files}, (row.spec, name)
        assert row.language_tokens == ("nllb" in arch)
        assert row.matryoshka == (tag == "mrl")
    # the figures, from open_clip's multilingual retrieval table
    figures = {
        "openclip:nllb-clip-large-siglip/mrl": (0.950, 0.892),
        "openclip:xlm-roberta-large-ViT-H-14/frozen_laion5b_s13b_b90k": (0.932, 0.760),
        "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k": (0.892, 0.717),
        "openclip:ViT-B-16-SigLIP-i18n-256/webli": (0.890, 0.726),
    }
    for spec, (xtd, xm) in figures.items():
        row = find_spec(spec)
        assert row is not None
        assert round(row.figure(XTD10).value, 3) == xtd and round(row.figure(XM3600).value, 3) == xm


def test_flores_table_covers_babel_imagenet_and_nllb_knows_every_code():
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    from babelsearch.engine.encoders.flores import FLORES, flores_code

    babel_imagenet = [
        "af",
        "am",
        "ar",
        "as",
        "az",
        "be",
        "bg",
        "bn",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "eo",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fr",
        "fy",
        "ga",
        "gd",
        "gl",
        "gu",
        "ha",
        "he",
        "hi",
        "hr",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jv",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "ku",
        "ky",
        "la",
        "lo",
        "lt",
        "lv",
        "mg",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "my",
        "ne",
        "nl",
        "no",
        "om",
        "or",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "th",
        "tl",
        "tr",
        "ug",
        "uk",
        "ur",
        "uz",
        "vi",
        "xh",
        "yi",
        "zh",
    ]
    assert len(babel_imagenet) == 93 and set(babel_imagenet) <= set(FLORES)
    assert set(FLORES.values()) <= set(FAIRSEQ_LANGUAGE_CODES)
    assert flores_code("de") == "deu_Latn" and flores_code("ru") == "rus_Cyrl" and flores_code("DE") == "deu_Latn"
    assert (
        flores_code("pt-BR") == "por_Latn" and flores_code("zh-Hant") == "zho_Hant" and flores_code("deu") == "deu_Latn"
    )
    assert flores_code("kor_Hang") == "kor_Hang" and flores_code("xx") is None and flores_code(None) is None


# -- the encoders ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_encoder_shapes_normalisation_determinism(models, kind):
    from PIL import Image

    spec = spec_of(models, kind)
    encoder = get_encoder(spec)
    assert encoder.name == spec and encoder.dim == EMBED_DIM
    assert isinstance(encoder.version, str) and len(encoder.version) == 16
    images = [Image.new("RGB", (40, 30), (200, 20, 20)), Image.new("L", (30, 50), 90), Image.new("RGBA", (33, 33))]
    texts = ["red", "ein roter Hund im Schnee", "красный квадрат", "一只红色的猫", ""]
    vectors = encoder.encode_images(images)
    words = encoder.encode_texts(texts)
    for got, n in ((vectors, len(images)), (words, len(texts))):
        assert got.shape == (n, EMBED_DIM) and got.dtype == np.float32
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert encoder.encode_images([]).shape == (0, EMBED_DIM) and encoder.encode_texts([]).shape == (0, EMBED_DIM)
    # the same inputs give the same vectors: again, in another batch (float sums may differ in the last
    # bits), and from a fresh load
    assert np.array_equal(encoder.encode_texts(texts), words) and np.array_equal(encoder.encode_images(images), vectors)
    assert np.allclose(encoder.encode_texts(texts[1:3]), words[1:3], atol=1e-6)
    assert np.allclose(encoder.encode_images(images[:1]), vectors[:1], atol=1e-6)
    get_encoder.cache_clear()
    again = get_encoder(spec)
    assert again is not encoder and again.version == encoder.version
    assert np.allclose(again.encode_texts(texts), words, atol=1e-6)
    assert np.allclose(again.encode_images(images), vectors, atol=1e-6)


def test_nllb_language_token_reaches_the_tokenizer_output(models):
    encoder = get_encoder(spec_of(models, "nllb"))
    assert encoder.language_tokens
    hf = encoder.tokenizer.tokenizer
    german, russian = hf.convert_tokens_to_ids("deu_Latn"), hf.convert_tokens_to_ids("rus_Cyrl")
    assert german != hf.unk_token_id and russian != hf.unk_token_id
    for code, token in (("deu_Latn", german), ("rus_Cyrl", russian), ("deu_Latn", german)):
        ids = encoder.tokenize(["ein roter Hund", "rot"], code)
        assert (ids[:, 0] == token).all(), (code, ids[:, :4])  # NLLB's layout: <code> tokens </s>
        assert not (ids == (russian if token == german else german)).any()
    # detected offline, overridable per call, in ISO or FLORES form; unknown -> English
    texts = ["ein roter Hund im Schnee", "красный квадрат на фото", "a red square on the photo"]
    assert encoder.text_languages(texts) == ["deu_Latn", "rus_Cyrl", "eng_Latn"]
    assert encoder.text_languages(texts, "de") == ["deu_Latn"] * 3
    assert encoder.text_languages(texts, [None, "uk", "fra_Latn"]) == ["deu_Latn", "ukr_Cyrl", "fra_Latn"]
    assert encoder.text_languages(["rot"], ["xx"])[0] in ("deu_Latn", "eng_Latn")
    # the token is part of what is encoded: the same word in two languages gives two vectors
    as_german = encoder.encode_texts(["rot"], languages="de")
    assert not np.allclose(as_german, encoder.encode_texts(["rot"], languages="fr"))
    assert np.array_equal(as_german, encoder.encode_texts(["rot"], languages=["deu_Latn"]))


def test_a_dropped_language_token_is_an_error_not_silence(models, monkeypatch):
    encoder = get_encoder(spec_of(models, "nllb"))
    real = encoder.tokenizer

    class DropsLanguage:
        """What open_clip's HFTokenizer does after set_language() with transformers 5: English always."""

        tokenizer = real.tokenizer

        def __call__(self, texts):
            real.tokenizer.src_lang = "eng_Latn"
            return real(texts)

    monkeypatch.setattr(encoder, "tokenizer", DropsLanguage())
    with pytest.raises(RuntimeError, match="dropped the language token deu_Latn"):
        encoder.encode_texts(["ein roter Hund"], languages="de")


def test_matryoshka_truncation_keeps_a_renormalised_prefix(models):
    from babelsearch.engine.encoders.matryoshka import truncate_dims

    encoder = get_encoder(spec_of(models, "nllb"))
    short = truncate_dims(encoder, 8)
    assert short.dim == 8 and short.name == encoder.name and short.version == encoder.version
    full = encoder.encode_texts(["ein roter Hund", "red"])
    cut = short.encode_texts(["ein roter Hund", "red"])
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    assert cut.shape == (2, 8) and np.allclose(cut, expected, atol=1e-6)
    assert truncate_dims(encoder, None) is encoder and truncate_dims(encoder, EMBED_DIM) is encoder
    with pytest.raises(InvalidSetting, match="between 1 and"):
        truncate_dims(encoder, EMBED_DIM + 1)

    class NotMatryoshka(Encoder):
        name, dim, matryoshka = "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", 512, False

    with pytest.raises(InvalidSetting, match="not a Matryoshka model"):
        truncate_dims(NotMatryoshka(), 128)


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_index_search_rerank_serve_eval_through_the_cli(models, photos, tmp_path, kind):
    spec = spec_of(models, kind)
    index_dir = tmp_path / "index"
    result = run("index", photos, "--index", index_dir, "--model", spec, "-q")
    assert result.exit_code == 0, result.output
    assert "indexed 8" in result.output

    manifest = json.loads((index_dir / "manifest.json").read_text("utf-8"))
    assert manifest["model"] == spec and manifest["dim"] == EMBED_DIM
    assert manifest["settings"]["model_version"] == get_encoder(spec).version
    assert manifest["settings"]["query_bank"]["texts"] > 2000  # the bank, encoded by this model's text tower

    outputs = {}
    for rerank in ("distance", "margin", "none"):
        result = run("search", index_dir, "red", "--k", "5", "--json", "--rerank", rerank)
        assert result.exit_code == 0, result.output
        payload = json.loads(result.output)
        hits = payload["results"]
        assert len(hits) == 5 and all(Path(hit["path"]).exists() for hit in hits)
        assert all(np.isfinite(hit["score"]) and -1.0001 <= hit["cosine"] <= 1.0001 for hit in hits)
        outputs[rerank] = [hit["id"] for hit in hits]
    assert run("search", index_dir, "red", "--k", "5", "--json", "--rerank", "distance").exit_code == 0
    again = json.loads(run("search", index_dir, "red", "--k", "5", "--json", "--rerank", "distance").output)
    assert [hit["id"] for hit in again["results"]] == outputs["distance"]  # deterministic

    result = run("search", index_dir, "ein roter Hund im Schnee", "--k", "3")
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 3
    assert spec in run("info", index_dir).output

    # the web API (what `serve` runs), on the same index
    from babelsearch.webui import create_app

    client = create_app({"INDEX_DIR": str(index_dir)}).test_client()
    response = client.get("/api/search", query_string={"q": "красный квадрат", "k": 4})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert len(body["results"]) == 4 and body["language"]["code"] == "ru"

    # eval with a tiny caption truth file
    truth = tmp_path / "truth.tsv"
    truth.write_text(
        "query\tpath\tlanguage\n"
        f"red\t{photos / 'red0.png'}\ten\n"
        f"rot\t{photos / 'red1.png'}\tde\n"
        f"blue\t{photos / 'blue0.png'}\ten\n",
        "utf-8",
    )
    result = run("eval", index_dir, "--truth", truth, "--rerank", "distance,none", "--k", "1,5", "--json", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert json.dumps(report)  # a full report; its numbers are noise for random weights


def test_another_model_or_other_weights_are_refused(models, photos, tmp_path):
    index_dir = tmp_path / "index"
    assert run("index", photos, "--index", index_dir, "--model", spec_of(models, "xlmr"), "-q").exit_code == 0
    result = run("index", photos, "--index", index_dir, "--model", spec_of(models, "nllb"), "-q", catch=True)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "was built with model" in result.output and str(models["xlmr"]) in result.output

    # same spec, other weights: the manifest's fingerprint refuses them
    copy = tmp_path / "copy"
    shutil.copytree(models["xlmr"], copy)
    spec = f"local:{copy}"
    copy_index = tmp_path / "copy-index"
    assert run("index", photos, "--index", copy_index, "--model", spec, "-q").exit_code == 0
    build_openclip(copy, "xlmr", seed=1)
    get_encoder.cache_clear()  # as a new process would: the spec now loads the new weights
    result = run("search", copy_index, "red", catch=True)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "do not match" in result.output and len(result.output.strip().splitlines()) == 1
    result = run("index", photos, "--index", copy_index, "-q", catch=True)
    assert result.exit_code == 1 and "do not match" in result.output


# -- offline failures ------------------------------------------------------------------------------
@pytest.mark.parametrize("hub_offline", [True, False], ids=["HF_HUB_OFFLINE", "no-route"])
@pytest.mark.parametrize(
    "spec", [OFFLINE_SPEC, "openclip:nllb-clip-base-siglip/mrl", "st:clip-ViT-B-32-multilingual-v1"]
)
def test_uncached_hub_model_without_network_is_one_line_and_exit_2(photos, tmp_path, monkeypatch, spec, hub_offline):
    if hub_offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run("index", photos, "--index", tmp_path / "index", "--model", spec, "-q", catch=True)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert spec in lines[0] and "local:" in lines[0] and "not available" in lines[0]
    assert not (tmp_path / "index" / "manifest.json").exists()


def test_search_and_serve_of_an_index_whose_model_is_unavailable_exit_2(models, photos, tmp_path):
    index_dir = tmp_path / "index"
    assert run("index", photos, "--index", index_dir, "--model", spec_of(models, "xlmr"), "-q").exit_code == 0
    manifest = json.loads((index_dir / "manifest.json").read_text("utf-8"))
    manifest["model"] = OFFLINE_SPEC  # as if built on a machine that had downloaded it
    (index_dir / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    for args in (["search", index_dir, "red"], ["serve", index_dir, "--port", "0"]):
        result = run(*args, catch=True)
        assert result.exit_code == 2, (args, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and OFFLINE_SPEC in errors[0] and "Traceback" not in result.output


def test_canonical_spec_makes_local_paths_absolute(tmp_path, monkeypatch):
    from babelsearch.engine.encoders.local import canonical_spec

    monkeypatch.chdir(tmp_path)
    assert canonical_spec("local:models/x") == f"local:{tmp_path / 'models' / 'x'}"
    assert canonical_spec(" openclip:a/b ") == "openclip:a/b" and canonical_spec("babel-lite") == "babel-lite"


def test_bad_specs_are_clear_errors(tmp_path, photos):
    cases = [
        ("openclip:no-such-arch/x", "no architecture 'no-such-arch'"),
        ("openclip:xlm-roberta-base-ViT-B-32/nope", "no pretrained 'nope'"),
        ("openclip:ViT-B-32", "expected openclip:ARCH/PRETRAINED"),
        (f"local:{tmp_path / 'absent'}", "does not exist"),
        (f"local:{photos}", "is not a model directory"),
    ]
    for spec, message in cases:
        result = run("index", photos, "--index", tmp_path / "index", "--model", spec, "-q", catch=True)
        assert result.exit_code == 1, (spec, result.output)
        assert message in result.output and "Traceback" not in result.output, (spec, result.output)


def test_local_openclip_dir_without_its_text_config_says_what_is_missing(models, tmp_path, photos):
    copy = tmp_path / "no-config"
    shutil.copytree(models["nllb"], copy)
    (copy / "config.json").unlink()
    result = run("index", photos, "--index", tmp_path / "index", "--model", f"local:{copy}", "-q", catch=True)
    assert (
        result.exit_code == 1 and "no config.json for its facebook/nllb-200-distilled-600M text tower" in result.output
    )


# -- openclip:ARCH/TAG through the hub cache ------------------------------------------------------
def _publish(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """Files in the Hugging Face cache layout, as a finished download leaves them (blobs named by SHA-256)."""
    import hashlib

    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = hashlib.sha1(repo.encode()).hexdigest()
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "blobs").mkdir(exist_ok=True)
    for name, source in files.items():
        data = Path(source).read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)


@pytest.fixture
def tiny_hub(models, monkeypatch, tmp_path):
    """open_clip told of a tiny architecture and tag whose files sit in an offline hub cache."""
    import open_clip.factory
    from open_clip import pretrained

    source = models["xlmr"]
    model_cfg = json.loads((source / "open_clip_config.json").read_text("utf-8"))["model_cfg"]
    model_cfg["text_cfg"].update(
        hf_model_name="tiny-org/tiny-xlm-roberta", hf_tokenizer_name="tiny-org/tiny-xlm-roberta"
    )
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "tiny-xlmr-clip", model_cfg)
    monkeypatch.setitem(
        pretrained._PRETRAINED, "tiny-xlmr-clip", {"tiny": pretrained._pcfg(hf_hub="tiny-org/tiny-clip/")}
    )
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("BABELSEARCH_MODELS", str(cache))
    _publish(
        cache, "tiny-org/tiny-clip", {"open_clip_model.safetensors": source / "open_clip_pytorch_model.safetensors"}
    )
    return cache


def test_openclip_hub_spec_loads_from_the_cache_with_no_network(models, photos, tiny_hub):
    source = models["xlmr"]
    spec = "openclip:tiny-xlmr-clip/tiny"
    # weights cached, the text tower's config and tokenizer not: unavailable, exit 2, one line
    result = run("index", photos, "--index", tiny_hub / "i", "--model", spec, "-q", catch=True)
    assert result.exit_code == 2 and "tiny-org/tiny-xlm-roberta is not in the model cache" in result.output

    names = ("config.json", "tokenizer.json", "tokenizer_config.json")
    _publish(tiny_hub, "tiny-org/tiny-xlm-roberta", {name: source / name for name in names})
    encoder = get_encoder(spec)
    local = get_encoder(spec_of(models, "xlmr"))
    # the same weights: the same fingerprint (a blob's name is its SHA-256; a local file is hashed)
    assert encoder.version == local.version and encoder.dim == EMBED_DIM
    texts = ["red", "ein roter Hund"]
    assert np.allclose(encoder.encode_texts(texts), local.encode_texts(texts), atol=1e-6)
    # the tag's own preprocessing (OpenAI mean/std), not the local dir's
    assert encoder.model.visual.preprocess_cfg["mean"] != local.model.visual.preprocess_cfg["mean"]


# -- babelsearch models ----------------------------------------------------------------------------
def _fake_cached(cache: Path, repo: str, names: list[str]) -> None:
    """Files in the Hugging Face cache layout, as a finished download leaves them."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in names:
        (snapshot / name).write_text("{}")


def test_models_command_lists_every_spec_with_figures_and_presence(offline, monkeypatch, tmp_path):
    from babelsearch.engine.encoders.specs import MODEL_SPECS

    cache = tmp_path / "cache"
    monkeypatch.setenv("BABELSEARCH_MODELS", str(cache))
    _fake_cached(cache, "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", ["open_clip_model.safetensors"])
    _fake_cached(cache, "xlm-roberta-base", ["config.json", "tokenizer.json"])
    result = run("models")
    assert result.exit_code == 0, result.output
    for row in MODEL_SPECS:
        assert row.spec in result.output
    assert (
        "0.950" in result.output
        and "0.892" in result.output
        and "openclip_multilingual_retrieval_results.csv" in result.output
    )
    assert str(cache) in result.output

    payload = json.loads(run("models", "--json").output)
    present = {row["spec"]: row["present"] for row in payload["models"]}
    assert present["babel-lite"] and present[OFFLINE_SPEC]
    assert not present["openclip:nllb-clip-large-siglip/mrl"] and not present["st:clip-ViT-B-32-multilingual-v1"]
    large = next(row for row in payload["models"] if row["spec"] == "openclip:nllb-clip-large-siglip/mrl")
    assert large["dim"] == 1152 and large["licence"] and large["languages"] and large["matryoshka"]
    assert {f["benchmark"]: f["value"] for f in large["figures"]} == {
        "XTD10 text->image R@10": 0.9503,
        "XM3600 text->image R@10": 0.8922,
    }


# -- issue 11, phase 2: the query language, --dim, canonical specs, an unavailable model at create_app ----
@pytest.fixture(scope="module")
def nllb_index(models, photos, tmp_path_factory) -> Path:
    index_dir = tmp_path_factory.mktemp("nllb-index") / "index"
    result = run("index", photos, "--index", index_dir, "--model", spec_of(models, "nllb"), "-q")
    assert result.exit_code == 0, result.output
    return index_dir


def _spy_languages(monkeypatch, encoder) -> list:
    """What the engine hands the encoder as languages=, one entry per encode_texts call."""
    seen: list = []
    real = encoder.encode_texts

    def encode_texts(texts, languages=None):
        seen.append(languages)
        return real(texts, languages=languages)

    monkeypatch.setattr(encoder, "encode_texts", encode_texts)
    return seen


def test_query_language_reaches_the_nllb_token(models, nllb_index, monkeypatch):
    from babelsearch.engine import SearchEngine
    from babelsearch.engine.errors import InvalidQuery
    from babelsearch.webui import create_app

    engine = SearchEngine.open(nllb_index)
    german, russian = engine._encode(["rot"], "de"), engine._encode(["rot"], "ru")
    assert not np.allclose(german, russian)  # the token reached the tokenizer
    assert np.array_equal(german, engine.encoder.encode_texts(["rot"], languages="deu_Latn"))
    assert engine.model_languages(["rot", "красный квадрат на фото"], "de") == ["deu_Latn", "deu_Latn"]
    assert engine.model_languages(["ein roter Hund im Schnee", "красный квадрат на фото"]) == ["deu_Latn", "rus_Cyrl"]
    as_de = engine.search("rot", k=8, lang="de", rerank="none")
    as_ru = engine.search("rot", options=babelsearch_options(lang="ru", rerank="none"))
    assert [h.cosine for h in as_de] != [h.cosine for h in as_ru]
    page = engine.search_page("rot", k=3, offset=1, lang="de", rerank="none")
    assert [h.id for h in page] == [h.id for h in as_de[1:4]]
    assert len(engine.search_many(["rot", "blau"], k=2, lang="de")) == 2
    with pytest.raises(InvalidQuery, match="lang must be"):
        engine.search("rot", lang="not a code!")

    # the API: lang= reaches the model, and a detected language is the one the model was given
    seen = _spy_languages(monkeypatch, get_encoder(spec_of(models, "nllb")))
    client = create_app({"INDEX_DIR": str(nllb_index)}).test_client()
    body = client.get("/api/search", query_string={"q": "rot", "k": 3, "lang": "de"}).get_json()
    assert body["language"]["code"] == "de" and seen[-1] == ["de"]
    body = client.get("/api/search", query_string={"q": "красный квадрат на фото", "k": 3}).get_json()
    assert body["language"]["code"] == "ru" and seen[-1] == ["ru"]

    result = run("search", nllb_index, "rot", "--lang", "de", "--json", "--rerank", "none", "--k", "8")
    assert result.exit_code == 0, result.output
    assert [hit["cosine"] for hit in json.loads(result.output)["results"]] == [
        round(h.cosine, 6)
        for h in as_de  # type: ignore[arg-type]
    ]
    result = run("search", nllb_index, "rot", "--lang", "x y", catch=True)
    assert result.exit_code == 1 and "lang must be" in result.output and "Traceback" not in result.output


def babelsearch_options(**values):
    from babelsearch.engine.options import SearchOptions

    return SearchOptions(k=8, **values)


def test_models_without_language_tokens_ignore_lang(models, photos, tmp_path, monkeypatch):
    from babelsearch.engine import SearchEngine

    index_dir = tmp_path / "st-index"
    assert run("index", photos, "--index", index_dir, "--model", spec_of(models, "st"), "-q").exit_code == 0
    engine = SearchEngine.open(index_dir)
    seen = _spy_languages(monkeypatch, engine.encoder)
    plain = engine.search("red", k=5, rerank="none")
    assert seen == [None]  # nothing detected for a model that reads no language
    assert [h.id for h in engine.search("red", k=5, rerank="none", lang="de")] == [h.id for h in plain]


def test_index_dim_truncates_every_vector_and_is_kept(models, photos, tmp_path, monkeypatch):
    from babelsearch.engine import SearchEngine
    from babelsearch.indexer import build_index
    from babelsearch.indexer.bank_terms import update_image_terms

    spec, short = spec_of(models, "xlmr"), EMBED_DIM // 2
    index_dir = tmp_path / "index"
    result = run("index", photos, "--index", index_dir, "--model", spec, "--dim", short, "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((index_dir / "manifest.json").read_text("utf-8"))
    assert manifest["dim"] == short and manifest["settings"]["truncate_dim"] == short

    engine = SearchEngine.open(index_dir)
    assert engine.encoder.dim == short
    full = get_encoder(spec).encode_texts(["red"])
    prefix = full[:, :short] / np.linalg.norm(full[:, :short], axis=1, keepdims=True)
    assert np.allclose(engine._encode(["red"]), prefix, atol=1e-6)
    # stored image vectors are the re-normalised prefix of the model's
    from PIL import Image

    first = engine.search("red", k=8, rerank="none")[0]
    stored = engine.shards.vectors_for_ids([first.id])
    image = get_encoder(spec).encode_images([Image.open(first.path).convert("RGB")])
    expected = image[:, :short] / np.linalg.norm(image[:, :short])
    # the indexer decodes reduced to the model's size (and may store float16): close, not equal
    assert stored.shape == (1, short) and abs(float(np.linalg.norm(stored)) - 1) < 1e-2
    assert float((stored @ expected.T)[0, 0]) > 0.999
    result = run("search", index_dir, "red", "--k", "3", "--json")
    assert result.exit_code == 0 and len(json.loads(result.output)["results"]) == 3

    # a later run keeps N; another N is refused; bank update encodes at N too
    extra = tmp_path / "more"
    write_image(extra / "more.png", (10, 200, 10))
    assert build_index([photos, extra], index_dir).indexed == 1
    assert json.loads((index_dir / "manifest.json").read_text("utf-8"))["dim"] == short
    result = run("index", photos, "--index", index_dir, "--dim", 8, "-q", catch=True)
    assert result.exit_code == 1 and f"keeps {short} dimensions" in result.output and "Traceback" not in result.output
    assert update_image_terms(index_dir, recompute=True).updated == 9


def test_dim_is_refused_for_a_model_that_is_not_matryoshka(models, photos, tmp_path, monkeypatch):
    encoder = get_encoder(spec_of(models, "xlmr"))
    monkeypatch.setattr(encoder, "matryoshka", False)
    index_dir = tmp_path / "index"
    result = run("index", photos, "--index", index_dir, "--model", spec_of(models, "xlmr"), "--dim", 8, catch=True)
    assert result.exit_code == 1 and "not a Matryoshka model" in result.output
    assert not (index_dir / "manifest.json").exists()


def test_a_relative_local_spec_is_recorded_absolute(models, photos, tmp_path, monkeypatch):
    from babelsearch.engine.encoders.local import canonical_spec

    workdir = tmp_path / "work"
    shutil.copytree(models["xlmr"], workdir / "models" / "tiny")
    monkeypatch.chdir(workdir)
    assert run("index", photos, "--index", "idx", "--model", "local:./models/tiny", "-q").exit_code == 0
    manifest = json.loads((workdir / "idx" / "manifest.json").read_text("utf-8"))
    assert manifest["model"] == canonical_spec("local:./models/tiny") == f"local:{(workdir / 'models' / 'tiny')}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    get_encoder.cache_clear()
    result = run("search", workdir / "idx", "red", "--k", "2")
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 2, result.output
    # a rerun naming the model by the same relative path is the same model
    monkeypatch.chdir(workdir)
    assert run("index", photos, "--index", "idx", "--model", "local:./models/tiny", "-q").exit_code == 0


def test_create_app_reports_an_unavailable_model_as_the_load_error(models, photos, tmp_path):
    from babelsearch.webui import create_app

    index_dir = tmp_path / "index"
    assert run("index", photos, "--index", index_dir, "--model", spec_of(models, "xlmr"), "-q").exit_code == 0
    manifest = json.loads((index_dir / "manifest.json").read_text("utf-8"))
    manifest["model"] = OFFLINE_SPEC
    (index_dir / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    client = create_app({"INDEX_DIR": str(index_dir)}).test_client()
    for path in ("/api/search?q=red", "/api/health"):
        response = client.get(path)
        assert response.status_code == 503, (path, response.get_data(as_text=True))
        error = response.get_json()["error"]
        assert error["code"] == "no_index" and OFFLINE_SPEC in error["message"] and "not available" in error["message"]


def test_batch_size_defaults_to_the_encoders(models, photos, tmp_path, monkeypatch):
    from babelsearch.indexer import build
    from babelsearch.indexer.build import build_index

    sizes: list[int] = []
    real = build._batches

    def batches(items, size):
        sizes.append(size)
        return real(items, size)

    monkeypatch.setattr(build, "_batches", batches)
    encoder = get_encoder(spec_of(models, "xlmr"))
    monkeypatch.setattr(encoder, "image_batch_size", 3)
    build_index([photos], tmp_path / "a", model=spec_of(models, "xlmr"))
    build_index([photos], tmp_path / "b", model=spec_of(models, "xlmr"), batch_size=5)
    assert sizes == [3, 5]


def test_ray_workers_load_the_index_dims(models):
    import pickle

    require_module("ray")
    from babelsearch.engine.encoders.matryoshka import truncate_dims
    from babelsearch.indexer.distributed import RayBuild

    spec = spec_of(models, "xlmr")
    short = truncate_dims(get_encoder(spec), 8)
    # what travels to each actor, and what it loads there (no Ray needed to check that)
    factory = pickle.loads(pickle.dumps(RayBuild("local")._encoder_factory(short, spec)))
    loaded = factory()
    assert loaded.dim == 8 and loaded.full_dim == EMBED_DIM
    assert np.allclose(loaded.encode_texts(["red"]), short.encode_texts(["red"]), atol=1e-6)
    assert RayBuild("local", encoder=get_encoder(spec))._encoder_factory(short, spec)().dim == 8  # a given encoder
