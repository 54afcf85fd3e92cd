"""The image tower's outputs for training photos, plain and mirrored, cached on disk.

Each photo is cut exactly as the encoder cuts it at indexing (``BabelLiteEncoder.crop``) and run
through the same tower (``image_runtime``), so the heads train on what they will see. The mirrored
crop is the one augmentation: it doubles the views of each photo at no cost to the index.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from babelsearch.engine.encoders.babel_lite import IMAGE_SHORT_SIDE
from babelsearch.engine.encoders.image_runtime import EXPORT_FORMAT, ImageTower
from babelsearch.engine.images import open_image
from babelsearch.engine.layout import atomic_write

BATCH = 32


@dataclass
class TowerOutputs:
    """Per photo (rows in the caption set's order): logits and pooled features, plain and mirrored."""

    logits: np.ndarray
    features: np.ndarray
    mirrored_logits: np.ndarray
    mirrored_features: np.ndarray


def _key(paths: list[Path]) -> str:
    digest = hashlib.sha256(f"tower-export-{EXPORT_FORMAT}".encode())
    for path in paths:
        digest.update(str(path.name).encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


def tower_outputs(
    paths: list[Path],
    tower: ImageTower,
    crop: Callable,
    cache_dir: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
) -> TowerOutputs:
    """Logits and features of every photo (float32), from ``cache_dir`` when it holds them for these files."""
    cache = Path(cache_dir) / f"images-{_key(paths)}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            return TowerOutputs(**{name: stored[name].astype(np.float32) for name in stored.files})
    parts: dict[str, list[np.ndarray]] = {name: [] for name in TowerOutputs.__dataclass_fields__}
    for start in range(0, len(paths), BATCH):
        # decoded as the indexer decodes (EXIF orientation, RGB, a large JPEG reduced in draft mode)
        plain = np.stack([crop(open_image(path, reduce_to=IMAGE_SHORT_SIDE)) for path in paths[start : start + BATCH]])
        for prefix, batch in (("", plain), ("mirrored_", np.ascontiguousarray(plain[:, :, ::-1, :]))):
            logits, features = tower.run(batch)
            parts[prefix + "logits"].append(logits)
            parts[prefix + "features"].append(features.astype(np.float16))
        if progress:
            progress(min(start + BATCH, len(paths)), len(paths))
    outputs = {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(handle, **outputs)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle

    atomic_write(cache, write, durable=False)  # a cache: made again if a power loss takes it
    return TowerOutputs(**{name: array.astype(np.float32) for name, array in outputs.items()})
