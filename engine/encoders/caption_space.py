"""babel-lite's caption-trained space: two small heads over the frozen towers, run in numpy.

The heads were trained on photos with human captions (``babelsearch.training``; README, "The bundled
model"): the image head maps the image tower's pooled features, the text head maps e5's query vector,
into one space where a photo lies near the sentences people write about it. Each head is a residual
MLP, ``x -> W2 gelu(W1 x + b1) + b2 + Ws x + bs``, L2-normalised; the image head's inputs are first
standardised with the training set's mean and spread.

All of it lives in one ``.npz`` shipped with the package (``engine/resources``). The weight matrices
are stored as int8 with one float32 scale per output column (symmetric, the largest magnitude to 127)
and used as float32: 4x smaller than float32 on disk; the trainer records the lowest cosine between
vectors made with the float32 and the stored weights (``meta["int8_min_cosine"]``, tested >= 0.999). No torch is needed to apply it, so a
text query stays a numpy matrix product away from e5's vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from . import normalize_rows

MODEL_FILE = "babel_lite_captions.npz"
# arrays every model file holds, per head ("image_", "text_"); the matrices are stored quantised
HEAD_ARRAYS = ("w1", "b1", "w2", "b2", "ws", "bs")
MATRICES = ("w1", "w2", "ws")


def quantise(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 scale per column): column j is codes[:, j] * scale[j]."""
    matrix = np.asarray(matrix, dtype=np.float32)
    scale = np.abs(matrix).max(axis=0) / np.float32(127)
    scale = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)
    return np.clip(np.rint(matrix / scale), -127, 127).astype(np.int8), scale


def dequantise(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.asarray(codes, dtype=np.float32) * np.asarray(scale, dtype=np.float32)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form: the one torch trains with (``nn.GELU(approximate="tanh")``)."""
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)))


@dataclass(frozen=True)
class ResidualHead:
    """``x -> normalize(W2 gelu(W1 x + b1) + b2 + Ws x + bs)``; weights as (in, out) matrices."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    ws: np.ndarray
    bs: np.ndarray

    @property
    def in_dim(self) -> int:
        return int(self.w1.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.w2.shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        hidden = gelu(x @ self.w1 + self.b1)
        return normalize_rows(hidden @ self.w2 + self.b2 + x @ self.ws + self.bs)


@dataclass(frozen=True)
class CaptionSpace:
    """The trained heads, the standardisation of image features, the class space and the query gate."""

    image_head: ResidualHead
    text_head: ResidualHead
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    # babel-lite's ImageNet concept space (class prototypes and centring means), shipped so that the
    # first run needs no minute of e5 over the class names
    classes: np.ndarray
    image_mean: np.ndarray
    query_mean: np.ndarray
    # share of the concept part in a query's vector: ``gate_short`` up to ``gate_lengths[0]`` length units,
    # ``gate_long`` from ``gate_lengths[1]``, linear between (a name is read by concepts, a sentence by
    # captions); a query's length is ``babel_lite.query_length``
    gate_short: float
    gate_long: float
    gate_lengths: tuple[int, int]
    meta: dict
    # (caption dims, kept): the caption part's main directions over the training images, as columns;
    # a caption vector is projected onto them and renormalised (the concept part is kept whole, so a
    # name query ranks images exactly as the concept space alone does)
    basis: np.ndarray

    @property
    def dim(self) -> int:
        """The final vectors' size: 384 concept dimensions and the kept caption ones."""
        return 384 + int(self.basis.shape[1])

    def caption_image_vectors(self, features: np.ndarray) -> np.ndarray:
        """The image head's unit vectors in the kept caption directions, from the tower's pooled features."""
        standardised = (np.asarray(features, dtype=np.float32) - self.feature_mean) / self.feature_scale
        return normalize_rows(self.image_head(standardised) @ self.basis)

    def caption_text_vectors(self, e5_vectors: np.ndarray) -> np.ndarray:
        """The text head's unit vectors in the kept caption directions, from e5 query vectors."""
        return normalize_rows(self.text_head(e5_vectors) @ self.basis)

    def image_vectors(self, concepts: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Final image vectors: the concept part and the caption part at equal weight (unit length)."""
        both = np.concatenate([concepts, self.caption_image_vectors(features)], axis=1) * np.float32(np.sqrt(0.5))
        return normalize_rows(both)

    def text_vectors(self, concepts: np.ndarray, e5_vectors: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Final query vectors: each part scaled by the square root of its share (``concept_share``)."""
        share = self.concept_share(lengths)[:, None]
        caption = self.caption_text_vectors(e5_vectors)
        return normalize_rows(np.concatenate([np.sqrt(share) * concepts, np.sqrt(1 - share) * caption], axis=1))

    def concept_share(self, lengths: np.ndarray) -> np.ndarray:
        """Per query, the weight of the concept part (its square root scales that half of the vector)."""
        low, high = self.gate_lengths
        along = np.clip((np.asarray(lengths, dtype=np.float32) - low) / max(high - low, 1), 0.0, 1.0)
        return (self.gate_short + (self.gate_long - self.gate_short) * along).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for prefix, head in (("image_", self.image_head), ("text_", self.text_head)):
            for name in HEAD_ARRAYS:
                if name in MATRICES:
                    arrays[prefix + name], arrays[prefix + name + "_scale"] = quantise(getattr(head, name))
                else:
                    arrays[prefix + name] = getattr(head, name).astype(np.float32)
        arrays.update(
            feature_mean=self.feature_mean.astype(np.float32),
            feature_scale=self.feature_scale.astype(np.float32),
            classes=self.classes.astype(np.float16),  # unit vectors: float16 moves a cosine by < 1e-3
            image_mean=self.image_mean.astype(np.float32),
            query_mean=self.query_mean.astype(np.float32),
            gate=np.array([self.gate_short, self.gate_long, *self.gate_lengths], dtype=np.float32),
            basis=self.basis.astype(np.float16),
            meta=np.frombuffer(json.dumps(self.meta, sort_keys=True).encode("utf-8"), dtype=np.uint8),
        )
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> CaptionSpace:
        def array(name: str) -> np.ndarray:
            if name.split("_")[-1] in MATRICES:
                return dequantise(arrays[name], arrays[name + "_scale"])
            return np.asarray(arrays[name], dtype=np.float32)

        def head(prefix: str) -> ResidualHead:
            return ResidualHead(**{name: array(prefix + name) for name in HEAD_ARRAYS})

        gate = np.asarray(arrays["gate"], dtype=np.float32)
        return cls(
            image_head=head("image_"),
            text_head=head("text_"),
            feature_mean=np.asarray(arrays["feature_mean"], dtype=np.float32),
            feature_scale=np.asarray(arrays["feature_scale"], dtype=np.float32),
            classes=np.asarray(arrays["classes"], dtype=np.float32),
            image_mean=np.asarray(arrays["image_mean"], dtype=np.float32),
            query_mean=np.asarray(arrays["query_mean"], dtype=np.float32),
            gate_short=float(gate[0]),
            gate_long=float(gate[1]),
            gate_lengths=(int(gate[2]), int(gate[3])),
            meta=json.loads(bytes(np.asarray(arrays["meta"], dtype=np.uint8)).decode("utf-8")),
            basis=np.asarray(arrays["basis"], dtype=np.float32),
        )

    def save(self, path: str | Path) -> None:
        from ..layout import atomic_write

        arrays = self.to_arrays()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a file object: np.savez would add ".npz" to a bare name
                np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

        atomic_write(Path(path), write)


def shipped_path() -> Path:
    return Path(str(resources.files("babelsearch.engine").joinpath(f"resources/{MODEL_FILE}")))


def load_caption_space(path: str | Path | None = None) -> CaptionSpace:
    """The shipped model file (or another one, for tests and training runs)."""
    with np.load(shipped_path() if path is None else Path(path), allow_pickle=False) as arrays:
        return CaptionSpace.from_arrays(arrays)
