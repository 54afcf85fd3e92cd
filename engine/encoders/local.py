"""The one place that knows where model weights live: ``local:`` directories, the download cache,
weights fingerprints, and the device a model runs on.

Cache. Downloaded weights go into the Hugging Face cache that open_clip, transformers and
sentence-transformers share: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``. ``$BABELSEARCH_MODELS`` overrides that for babelsearch alone (same
layout, passed to every download as its cache directory). ``HF_HUB_OFFLINE=1`` forbids downloads.

Offline. A hub model is looked up in the cache first, so a cached model never touches the network.
When something is missing and the hub cannot be reached (offline mode, no DNS, no route), loading
ends with one ``ModelUnavailable`` line naming the model and the ``local:`` way out, at once rather
than after the hub client's retries.

``local:DIR`` is a model directory the user already has:

- open_clip's local-dir layout: ``open_clip_config.json`` and ``open_clip_pytorch_model.bin`` (or
  ``.safetensors``), the tokenizer files beside them, and for an HF text tower (XLM-R, NLLB) its
  ``config.json``, so no hub is ever asked;
- a sentence-transformers folder (``modules.json``) of a CLIP model, which encodes both images and
  texts;
- or a folder with ``text/`` and ``image/`` sentence-transformers folders (a multilingual student
  for texts, the CLIP model it was distilled against for images).

Fingerprint. ``version`` of a CLIP encoder is the first 16 hex digits of the SHA-256 over its weights
files, recorded in each index's manifest; other weights under the same spec are then refused. A hub
file's blob name in the cache already is its SHA-256; a local file is hashed once and the digest kept
in the user cache under its path, size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..cache import user_cache_dir
from ..errors import InvalidSetting, ModelUnavailable, UnknownModel
from ..layout import expand_home

__all__ = [
    "MODELS_ENV",
    "DEVICE_ENV",
    "LocalModel",
    "batch_size_for",
    "cached_hub_file",
    "canonical_spec",
    "fingerprint",
    "hub_cache_dir",
    "hub_file",
    "hub_snapshot",
    "hub_unreachable_reason",
    "is_missing_error",
    "models_cache_dir",
    "raise_unavailable",
    "resolve_device",
    "resolve_local",
    "weights_present",
]

MODELS_ENV = "BABELSEARCH_MODELS"
DEVICE_ENV = "BABELSEARCH_DEVICE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# -- the cache -------------------------------------------------------------------------------------
def models_cache_dir() -> str | None:
    """``$BABELSEARCH_MODELS`` when set, else None: the libraries' shared Hugging Face cache."""
    value = os.environ.get(MODELS_ENV, "").strip()
    return str(expand_home(value)) if value else None


def hub_cache_dir() -> str:
    """The directory downloads go to (for messages and ``babelsearch models``)."""
    chosen = models_cache_dir()
    if chosen:
        return chosen
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
        )
        return os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")


def cached_hub_file(repo: str, names: tuple[str, ...] | list[str]) -> Path | None:
    """The cached path of the first of ``names`` that repo ``repo`` has in the cache, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=models_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def weights_present(files: tuple[tuple[str, tuple[str, ...]], ...]) -> bool:
    """Whether every (repo, alternatives) entry of a documented spec is in the cache."""
    return bool(files) and all(cached_hub_file(repo, names) is not None for repo, names in files)


def _offline_mode() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached now, or None when it may be (a quick probe, not a download)."""
    if _offline_mode():
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy decides; let the client try
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or type(exc).__name__})"
    return None


def raise_unavailable(spec: str, why: str, cause: BaseException | None = None) -> None:
    """Raise the one-line error: which model, why, and how to provide it."""
    raise ModelUnavailable(
        f"model {spec} is not available: {why}; connect once to download it into {hub_cache_dir()} "
        f"({MODELS_ENV} sets another directory), or use a copy you already have: --model local:DIR"
    ) from cause


def is_missing_error(exc: BaseException) -> bool:
    """Whether a loading error means "not in the cache and not downloadable" (anywhere in its chain)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 20:
        if isinstance(current, OSError):  # FileNotFoundError, LocalEntryNotFoundError, ConnectionError
            return True
        name = type(current).__name__
        if name in ("OfflineModeIsEnabled", "ConnectError", "ConnectTimeout", "HTTPError", "HfHubHTTPError"):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def hub_file(spec: str, repo: str, names: tuple[str, ...]) -> Path:
    """One of ``names`` from hub repo ``repo``: from the cache, else downloaded; ModelUnavailable if neither."""
    found = cached_hub_file(repo, names)
    if found is not None:
        return found
    why = hub_unreachable_reason()
    if why:
        raise_unavailable(spec, f"{repo} is not in the model cache and {why}")
    from huggingface_hub import hf_hub_download

    last: BaseException | None = None
    for name in names:
        try:
            return Path(hf_hub_download(repo, name, cache_dir=models_cache_dir()))
        except Exception as exc:
            last = exc
            if not is_missing_error(exc):
                raise
    raise_unavailable(spec, f"{repo} has none of {', '.join(names)} or cannot be downloaded ({last})", last)
    raise AssertionError("unreachable")


_TEXT_FILES = ["*.json", "*.model", "*.txt", "*.tiktoken"]


def hub_snapshot(spec: str, repo: str, required: tuple[str, ...] = ("config.json",)) -> Path:
    """A cached snapshot folder of repo ``repo``'s small files (configs, tokenizers; never weights),
    holding at least one of ``required``: from the cache, else downloaded."""
    from huggingface_hub import snapshot_download

    def complete(folder: Path) -> bool:
        return any((folder / name).is_file() for name in required)

    try:
        folder = Path(
            snapshot_download(repo, allow_patterns=_TEXT_FILES, cache_dir=models_cache_dir(), local_files_only=True)
        )
        if complete(folder):
            return folder
    except Exception as exc:
        if not is_missing_error(exc):
            raise
    why = hub_unreachable_reason()
    if why:
        raise_unavailable(spec, f"{repo} is not in the model cache and {why}")
    try:
        folder = Path(snapshot_download(repo, allow_patterns=_TEXT_FILES, cache_dir=models_cache_dir()))
    except Exception as exc:
        if not is_missing_error(exc):
            raise
        raise_unavailable(spec, f"{repo} cannot be downloaded ({exc})", exc)
        raise AssertionError("unreachable") from None
    if not complete(folder):
        raise_unavailable(spec, f"{repo} has none of {', '.join(required)}")
    return folder


# -- local: directories ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalModel:
    """What a ``local:`` directory holds."""

    kind: str  # "openclip", "sentence-transformers" (one CLIP folder) or "sentence-transformers-pair"
    path: Path
    text: Path | None = None  # the pair's text/ folder
    image: Path | None = None  # the pair's image/ folder


def canonical_spec(spec: str) -> str:
    """The spec as an index should record it: ``local:`` paths made absolute (``~`` expanded), so the
    index opens from any working directory; every other spec unchanged (but stripped)."""
    spec = spec.strip()
    if spec.startswith("local:") and spec[len("local:") :].strip():
        return "local:" + str(expand_home(spec[len("local:") :].strip()).resolve())
    return spec


def resolve_local(spec: str) -> LocalModel:
    """Classify ``local:PATH``; a missing or unrecognised directory is a clear UnknownModel."""
    raw = spec[len("local:") :].strip() if spec.startswith("local:") else spec
    if not raw:
        raise UnknownModel("local: needs a directory, e.g. --model local:/models/my-clip")
    path = expand_home(raw)
    if not path.is_dir():
        raise UnknownModel(f"model directory {path} does not exist (from --model {spec})")
    if (path / "open_clip_config.json").is_file():
        return LocalModel("openclip", path)
    if (path / "modules.json").is_file():
        return LocalModel("sentence-transformers", path)
    if (path / "text" / "modules.json").is_file() and (path / "image" / "modules.json").is_file():
        return LocalModel("sentence-transformers-pair", path, text=path / "text", image=path / "image")
    raise UnknownModel(
        f"{path} is not a model directory babelsearch knows: expected open_clip_config.json with "
        "open_clip_pytorch_model.bin or .safetensors (open_clip), modules.json (sentence-transformers), "
        "or text/ and image/ sentence-transformers folders"
    )


def hf_config_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a transformers ``config.json`` (an HF text tower's architecture)."""
    try:
        data = json.loads((directory / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model_type" in data


def weight_files(directory: Path) -> list[Path]:
    """The weights files a model folder loads (sentence-transformers keeps some in sub-folders).

    Per folder, the .safetensors files when there are any, else the .bin/.pt/.pth ones: the libraries
    prefer safetensors, and a second format fetched later must not change the fingerprint. Exports
    for other runtimes (onnx/, openvino/) are not what torch loads.
    """
    by_folder: dict[Path, list[Path]] = {}
    for path in sorted(Path(directory).rglob("*")):
        if (
            path.suffix in WEIGHT_SUFFIXES
            and path.is_file()
            and not {"onnx", "openvino"} & set(path.relative_to(directory).parts)
        ):
            by_folder.setdefault(path.parent, []).append(path)
    chosen: list[Path] = []
    for files in by_folder.values():
        safe = [p for p in files if p.suffix == ".safetensors"]
        chosen.extend(safe or files)
    return chosen


# -- fingerprints ----------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """A file's SHA-256: a hub blob's own name, else hashed once and remembered by path, size, mtime."""
    real = Path(os.path.realpath(path))
    if _SHA256.match(real.name) and real.parent.name == "blobs":
        return real.name
    stat = real.stat()
    key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    store = user_cache_dir() / "weights-sha256.json"
    try:
        known = json.loads(store.read_text("utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key in known:
        return str(known[key])
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    known[key] = digest.hexdigest()
    try:
        from ..layout import atomic_write_bytes

        atomic_write_bytes(store, json.dumps(known, indent=0).encode("utf-8"))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return known[key]


def fingerprint(files: list[Path]) -> str:
    """16 hex digits naming these weights (order-independent of where they are stored)."""
    if not files:
        raise ValueError("no weights files to fingerprint")
    digests = sorted(file_sha256(path) for path in files)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


# -- device ----------------------------------------------------------------------------------------
def resolve_device(asked: str | None = None) -> str:
    """``$BABELSEARCH_DEVICE`` or ``asked`` ("auto", "cpu", "cuda", "cuda:N"): auto is CUDA when torch sees it."""
    import torch

    choice = (asked or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidSetting(f"device {choice} asked for ({DEVICE_ENV}), but torch sees no CUDA GPU")
        return choice
    if choice == "cpu":
        return "cpu"
    raise InvalidSetting(f"{DEVICE_ENV} must be auto, cpu, cuda or cuda:N, not {choice!r}")


def batch_size_for(device: str, kind: str) -> int:
    """Rows per forward pass: a GPU takes far more at once; on a CPU large batches only cost memory."""
    gpu = device.startswith("cuda")
    return {"image": 256 if gpu else 32, "text": 1024 if gpu else 128}[kind]


def autocast_for(device: str):
    """float16 autocast on a CUDA device (the GPU path of every torch encoder), else no change."""
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()
