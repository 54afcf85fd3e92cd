"""Recall@10 on held-out training photos: how recipes are compared without touching ``test``.

One pool per source, one caption per photo and language (the first), as in the XTD10 protocol that
``babelsearch eval`` runs on the test split.
"""

from __future__ import annotations

import numpy as np

from babelsearch.engine.encoders import normalize_rows
from babelsearch.engine.encoders.caption_space import CaptionSpace

from .data import CaptionSet
from .image_features import TowerOutputs


def recall_at(scores: np.ndarray, targets: np.ndarray, k: int = 10) -> float:
    """Share of rows whose target column is among the row's k highest scores (ties count against)."""
    hit = scores[np.arange(len(targets)), targets]
    return float(((scores > hit[:, None]).sum(axis=1) < k).mean())


def validation_recall(space: CaptionSpace, captions: CaptionSet, outputs: TowerOutputs, k: int = 10) -> dict:
    """{source: {language: recall@k}} over the held-out photos."""
    from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder, normalize_query_text

    from .recipe import concept_vectors

    encoder = BabelLiteEncoder()  # its towers and query cleaning; the space is the one just trained
    spaced = {"classes": space.classes, "image_mean": space.image_mean}
    images = space.image_vectors(concept_vectors(encoder, outputs.logits, spaced), outputs.features)
    result: dict[str, dict[str, float]] = {}
    for source in sorted(set(captions.sources)):
        pool = [i for i, s in enumerate(captions.sources) if s == source]
        languages = sorted({language for i in pool for language in captions.captions[i]})
        result[source] = {}
        for language in languages:
            members = [(position, i) for position, i in enumerate(pool) if language in captions.captions[i]]
            texts = [normalize_query_text(captions.captions[i][language][0]) for _, i in members]
            e5 = encoder.e5_query_vectors(texts)
            queries = space.text_vectors(normalize_rows(e5 - space.query_mean), e5, encoder.query_lengths(texts))
            scores = queries @ images[pool].T
            result[source][language] = recall_at(scores, np.array([position for position, _ in members]), k)
    return result


def validation_report(space: CaptionSpace, captions: CaptionSet, outputs: TowerOutputs) -> str:
    lines = ["validation recall@10 (held-out training photos):"]
    for source, by_language in validation_recall(space, captions, outputs).items():
        lines.append(f"  {source}: " + ", ".join(f"{language} {value:.3f}" for language, value in by_language.items()))
    return "\n".join(lines)


def write_pool_files(captions: CaptionSet, folder) -> list:
    """One XTD-style truth file per source (``language``, ``query``, ``path``; absolute paths), the
    first caption per photo and language: a path list for ``babelsearch index`` and caption truth for
    ``babelsearch eval``, over held-out training photos (how search settings are chosen without ``test``)."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(set(captions.sources)):
        lines = ["language\tquery\tpath"]
        for i, s in enumerate(captions.sources):
            if s != source:
                continue
            for language, texts in sorted(captions.captions[i].items()):
                query = " ".join(texts[0].split())
                lines.append(f"{language}\t{query}\t{captions.path(i).resolve()}")
        path = folder / f"validation-{source}.tsv"
        path.write_text("\n".join(lines) + "\n", "utf-8")
        written.append(path)
    return written
