"""Tiny, randomly initialised multilingual CLIP models built offline at test time.

Each builder writes a model directory in the layout a user would hand to ``--model local:DIR``:

- ``build_openclip(dir, "xlmr")``: open_clip's local-dir layout (``open_clip_config.json``,
  ``open_clip_pytorch_model.safetensors``) with an HF text tower of the XLM-R kind: its ``config.json``
  (a tiny ``XLMRobertaConfig``) and a Unigram tokenizer trained here on a few sentences, beside them.
- ``build_openclip(dir, "nllb")``: the same with an NLLB (M2M100 encoder) text tower and an
  ``NllbTokenizer`` whose FLORES-200 language codes are special tokens.
- ``build_sentence_transformers(dir)``: ``image/`` a sentence-transformers CLIP model (a tiny
  ``CLIPModel``), ``text/`` a multilingual student (tiny XLM-R, mean pooling, dense to CLIP's dim).

The configs name hub models (``xlm-roberta-base``, ``facebook/nllb-200-distilled-600M``) exactly as
real open_clip checkpoints do, so a test proves the local files are read and the hub never is.
Everything is seeded and the tokenizers are made deterministic: the same call writes the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

EMBED_DIM = 32
IMAGE_SIZE = 32
SPECIALS_XLMR = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
SPECIALS_NLLB = ["<s>", "<pad>", "</s>", "<unk>"]

# A few sentences in several scripts: enough for the tokenizers to have pieces for the test queries.
SENTENCES = [
    "a red photo",
    "a photo of a red square",
    "green grass and a blue sky",
    "yellow sun over the sea",
    "ein roter Hund im Schnee",
    "eine grüne Wiese und ein blauer Himmel",
    "красный квадрат на фото",
    "зелёная трава и синее небо",
    "un chat rouge sur la photo",
    "一只红色的猫",
    "赤い猫の写真",
    "빨간 고양이",
    "قطة حمراء",
    "एक लाल बिल्ली",
]


def _corpus() -> list[str]:
    from importlib import resources

    # part of the shipped query bank: its texts get real pieces, not only <unk>, so the tiny vectors vary
    bank = resources.files("babelsearch.engine").joinpath("resources/query_bank.txt").read_text("utf-8")
    lines = [line.strip() for line in bank.splitlines() if line.strip() and not line.startswith("#")]
    return SENTENCES + lines[::4]


def _train_unigram(vocab_size: int, specials: list[str]) -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(_corpus(), trainer)
    pieces = [piece for piece, _ in json.loads(tok.to_str())["model"]["vocab"]]
    # the trained pieces are the same every run, their scores differ in the last digits (parallel sums):
    # a fixed order and one score for every piece (fewest pieces win) keep the built files identical
    return [(piece, 0.0) for piece in specials] + [(piece, -1.0) for piece in sorted(set(pieces) - set(specials))]


def _train_bpe(vocab_size: int, specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials)
    tok.train_from_iterator(_corpus(), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def xlmr_tokenizer():
    from transformers import XLMRobertaTokenizer

    return XLMRobertaTokenizer(vocab=_train_unigram(600, SPECIALS_XLMR))


def nllb_tokenizer():
    from transformers import NllbTokenizer

    vocab, merges = _train_bpe(600, SPECIALS_NLLB)
    return NllbTokenizer(vocab=vocab, merges=merges)


def _vision_cfg() -> dict:
    return {"image_size": IMAGE_SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}


def build_openclip(directory: Path, kind: str, seed: int = 0) -> Path:
    """An open_clip local-dir model with an HF text tower of ``kind`` "xlmr" or "nllb"."""
    import torch
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "xlmr":
        from transformers import XLMRobertaConfig

        tokenizer = xlmr_tokenizer()
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=80,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        hub_name, text_extra = "xlm-roberta-base", {"hf_pooler_type": "mean_pooler"}
    elif kind == "nllb":
        from transformers import M2M100Config

        tokenizer = nllb_tokenizer()
        config = M2M100Config(
            vocab_size=len(tokenizer),
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=80,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,
            scale_embedding=True,
        )
        hub_name = "facebook/nllb-200-distilled-600M"
        text_extra = {"hf_proj_type": "linear", "hf_pooler_type": "cls_pooler"}
    else:
        raise ValueError(kind)
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)

    model_cfg = {
        "embed_dim": EMBED_DIM,
        "vision_cfg": _vision_cfg(),
        "text_cfg": {"hf_model_name": hub_name, "hf_tokenizer_name": hub_name, "context_length": 24, **text_extra},
    }
    if kind == "nllb":
        model_cfg.update({"custom_text": True, "init_logit_bias": -10})
    torch.manual_seed(seed)
    # built from the local text config; the saved open_clip_config.json names the hub, as real ones do
    local_text = {**model_cfg["text_cfg"], "hf_model_name": str(directory), "hf_model_pretrained": False}
    built = {key: value for key, value in model_cfg.items() if key != "custom_text"}
    model = CustomTextCLIP(**{**built, "text_cfg": local_text})
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_pytorch_model.safetensors"))
    preprocess = {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2), "utf-8"
    )
    return directory


def _clip_tokenizer():
    """A byte-level CLIP tokenizer without merges: every byte, alone or ending a word. Only the image
    tower of this CLIP model is used; the tokenizer just has to be a valid one (and the same every run)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    pieces = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [f"{char}</w>" for char in alphabet]
    return CLIPTokenizer(vocab={piece: i for i, piece in enumerate(pieces)}, merges=[])


def build_sentence_transformers(directory: Path, seed: int = 0) -> Path:
    """``image/``: a sentence-transformers CLIP model; ``text/``: a multilingual student to the same dim."""
    import tempfile

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, XLMRobertaConfig, XLMRobertaModel

    directory = Path(directory)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch)
        clip_tok = _clip_tokenizer()
        clip_config = CLIPConfig(
            text_config={
                "vocab_size": len(clip_tok),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "max_position_embeddings": 32,
                "bos_token_id": clip_tok.bos_token_id,
                "eos_token_id": clip_tok.eos_token_id,
                "pad_token_id": clip_tok.pad_token_id,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": IMAGE_SIZE,
                "patch_size": 16,
            },
            projection_dim=EMBED_DIM,
        )
        CLIPModel(clip_config).save_pretrained(raw / "clip")
        processor = CLIPProcessor(
            image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE),
            tokenizer=clip_tok,
        )
        processor.save_pretrained(raw / "clip")
        SentenceTransformer(modules=[Transformer(str(raw / "clip"))], device="cpu").save(str(directory / "image"))

        tokenizer = xlmr_tokenizer()
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=80,
            pad_token_id=tokenizer.pad_token_id,
        )
        XLMRobertaModel(config).save_pretrained(raw / "student")
        tokenizer.save_pretrained(raw / "student")
        student = Transformer(str(raw / "student"), max_seq_length=32)
        pooling = Pooling(32, "mean")
        dense = Dense(32, EMBED_DIM, bias=False, activation_function=torch.nn.Identity())
        SentenceTransformer(modules=[student, pooling, dense], device="cpu").save(str(directory / "text"))
    return directory
