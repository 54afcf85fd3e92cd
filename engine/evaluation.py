"""Multilingual retrieval evaluation: recall@k per language, every rerank mode side by side.

Two kinds of ground truth, both read from whatever files the caller gives (no evaluation data
ships with babelsearch):

* class truth, the Babel-ImageNet protocol: LABELS.json maps a language to
  ``[[class indices], [class names]]``; TRUTH.tsv maps an image path to its class index
  (``path<TAB>class_idx``, or a table with a header naming ``path``/``file`` and ``class_idx``
  columns, like the shared sample's labels.tsv). Every class name in a language is one query; the
  relevant images are those of its class.
* caption truth (XTD10, Crossmodal-3600 style): a TSV with a header naming ``query`` and ``path``
  columns and optionally ``language``; each row gives a query text and one or more relevant image
  paths (the path column and every column after it); rows repeating a query add paths.

Paths are absolute or relative to the TRUTH file's folder. recall@k is the share of queries with at
least one relevant image among the first k results, averaged per language; the means are macro
averages over languages.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .bank import embed_texts_cached, vectors_key
from .catalog import IMAGES
from .errors import BabelsearchError
from .rerank import RERANK_MODES

PATH_COLUMNS = ("path", "file", "image", "filename")
CLASS_COLUMNS = ("class_idx", "class", "label", "class_index")
QUERY_COLUMNS = ("query", "text", "caption")
LANGUAGE_COLUMNS = ("language", "lang")
ENGLISH = frozenset({"en", "eng", "english"})
ALL_LANGUAGES = "all"
PER_PANEL = 48  # languages per row of the chart
MODE_COLOURS = {"none": "#9e9e9e", "margin": "#1f77b4", "distance": "#ff7f0e", "csls": "#2ca02c"}


class EvaluationError(BabelsearchError):
    """Evaluation input that cannot be used (missing file, unknown language, no matching images)."""


@dataclass
class EvalSet:
    """Queries per language, each with the set of relevant image paths (resolved)."""

    queries: dict[str, list[tuple[str, frozenset[str]]]]
    kind: str  # "class" or "caption"
    truth_images: int = 0


@dataclass
class LanguageResult:
    language: str
    queries: int
    recall: dict[str, dict[int, float]]  # mode -> k -> recall@k
    skipped: int = 0  # queries with no relevant image in the index


@dataclass
class EvalReport:
    index_dir: str
    model: str
    kind: str
    modes: list[str]
    ks: list[int]
    margin_k: int
    candidates: int
    languages: list[LanguageResult] = field(default_factory=list)
    truth_images: int = 0
    matched_images: int = 0
    seconds: float = 0.0

    def mean(self, mode: str, k: int, non_english: bool = False) -> float:
        rows = [r for r in self.languages if not (non_english and r.language.lower() in ENGLISH)]
        return float(np.mean([r.recall[mode][k] for r in rows])) if rows else float("nan")

    def summary(self) -> dict[str, Any]:
        non_english = [r for r in self.languages if r.language.lower() not in ENGLISH]
        return {
            "all": {"languages": len(self.languages), **self._means(False)},
            "non_english": {"languages": len(non_english), **self._means(True)},
        }

    def _means(self, non_english: bool) -> dict[str, dict[str, float]]:
        return {
            mode: {f"recall@{k}": round(self.mean(mode, k, non_english), 4) for k in self.ks} for mode in self.modes
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index_dir,
            "model": self.model,
            "truth": self.kind,
            "modes": self.modes,
            "ks": self.ks,
            "margin_k": self.margin_k,
            "candidates": self.candidates,
            "truth_images": self.truth_images,
            "matched_images": self.matched_images,
            "seconds": round(self.seconds, 1),
            "means": self.summary(),
            "languages": [
                {
                    "language": r.language,
                    "queries": r.queries,
                    "skipped": r.skipped,
                    "recall": {m: {str(k): round(v, 4) for k, v in r.recall[m].items()} for m in self.modes},
                }
                for r in self.languages
            ],
        }

    def markdown(self) -> str:
        """A table: one row per language, recall@k per mode, the two means at the bottom."""
        delta_modes = [m for m in self.modes if m != "none"] if "none" in self.modes else []
        top_k = chart_k(self.ks)
        head = ["language", "queries"]
        for mode in self.modes:
            head += [f"{mode} R@{k}" for k in self.ks]
        head += [f"Δ R@{top_k} {m}−none" for m in delta_modes]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]

        def row(label: str, queries: str, value) -> str:
            cells = [label, queries]
            for mode in self.modes:
                cells += [f"{100 * value(mode, k):.1f}" for k in self.ks]
            cells += [f"{100 * (value(m, top_k) - value('none', top_k)):+.1f}" for m in delta_modes]
            return "| " + " | ".join(cells) + " |"

        for r in self.languages:
            lines.append(row(r.language, str(r.queries), lambda m, k, r=r: r.recall[m][k]))
        summary = self.summary()
        for key, label in (("all", "mean, all"), ("non_english", "mean, non-English")):
            count = summary[key]["languages"]
            if count:
                lines.append(
                    row(f"**{label} ({count})**", "", lambda m, k, ne=(key == "non_english"): self.mean(m, k, ne))
                )
        intro = (
            f"Index `{self.index_dir}`, model `{self.model}`, {self.kind} truth, "
            f"{self.matched_images} of {self.truth_images} truth images indexed; "
            f"margin_k {self.margin_k}, {self.candidates} candidates. Recall in %."
        )
        return intro + "\n\n" + "\n".join(lines) + "\n"


def chart_k(ks: list[int]) -> int:
    return 10 if 10 in ks else max(ks)


# -- reading ground truth -------------------------------------------------------------------------
def load_eval_set(
    truth: str | os.PathLike, labels: str | os.PathLike | None = None, languages: Iterable[str] | None = None
) -> EvalSet:
    """Read class truth (with ``labels``) or caption truth (a ``query`` column) into queries."""
    truth = Path(truth)
    rows = _read_tsv(truth)
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    wanted = _normalise_languages(languages)
    if _find(header, QUERY_COLUMNS) is not None:
        return _caption_set(truth, header, rows[1:], wanted)
    if labels is None:
        raise EvaluationError(f"{truth} maps images to classes: give the class names with --labels LABELS.json")
    return _class_set(truth, rows, Path(labels), wanted)


def _read_tsv(path: Path) -> list[list[str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = [row for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if any(c.strip() for c in row)]
    except FileNotFoundError:
        raise EvaluationError(f"truth file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"truth file {path} cannot be read as UTF-8 TSV ({exc})") from None
    if not rows:
        raise EvaluationError(f"truth file {path} is empty")
    return rows


def _find(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _normalise_languages(languages: Iterable[str] | None) -> list[str] | None:
    if languages is None:
        return None
    wanted = [lang.strip() for lang in languages if lang.strip()]
    return wanted or None


def _pick_languages(available: list[str], wanted: list[str] | None, where: Path) -> list[str]:
    if wanted is None:
        return sorted(available)
    by_lower = {lang.lower(): lang for lang in available}
    unknown = [lang for lang in wanted if lang.lower() not in by_lower]
    if unknown:
        raise EvaluationError(
            f"{where} has no language {', '.join(unknown)}; it has {', '.join(sorted(available))}"
        )
    return list(dict.fromkeys(by_lower[lang.lower()] for lang in wanted))


def _resolve(base: Path, path: str) -> str:
    p = Path(path.strip()).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def _class_set(truth: Path, rows: list[list[str]], labels: Path, wanted: list[str] | None) -> EvalSet:
    header = [cell.strip().lower() for cell in rows[0]]
    path_col, class_col = _find(header, PATH_COLUMNS), _find(header, CLASS_COLUMNS)
    if path_col is not None and class_col is not None:
        body = rows[1:]
    elif len(rows[0]) >= 2 and rows[0][1].strip().lstrip("-").isdigit():
        path_col, class_col, body = 0, 1, rows  # no header: path<TAB>class_idx
    else:
        raise EvaluationError(
            f"{truth}: expected path<TAB>class_idx lines, or a header with a path/file column and a "
            f"class_idx column, or (caption truth) a query column"
        )
    images_of: dict[int, set[str]] = {}
    base = truth.parent
    for number, row in enumerate(body, 2 if body is not rows else 1):
        try:
            images_of.setdefault(int(row[class_col]), set()).add(_resolve(base, row[path_col]))
        except (IndexError, ValueError):
            raise EvaluationError(f"{truth} line {number}: expected a path and an integer class index") from None
    try:
        table = json.loads(labels.read_text("utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"labels file {labels} does not exist") from None
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"labels file {labels} is not readable JSON ({exc})") from None
    if not isinstance(table, dict) or not table:
        raise EvaluationError(f"{labels} must map each language to [[class indices], [class names]]")
    queries: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for language in _pick_languages(list(table), wanted, labels):
        try:
            indices, names = table[language]
            pairs = list(zip([int(i) for i in indices], [str(n) for n in names], strict=True))
        except (TypeError, ValueError):
            raise EvaluationError(f"{labels}: {language} is not [[class indices], [class names]]") from None
        queries[language] = [(name, frozenset(images_of.get(idx, ()))) for idx, name in pairs]
    return EvalSet(queries=queries, kind="class", truth_images=sum(len(v) for v in images_of.values()))


def _caption_set(truth: Path, header: list[str], body: list[list[str]], wanted: list[str] | None) -> EvalSet:
    query_col, path_col = _find(header, QUERY_COLUMNS), _find(header, PATH_COLUMNS + ("paths", "images"))
    lang_col = _find(header, LANGUAGE_COLUMNS)
    if path_col is None:
        raise EvaluationError(f"{truth}: caption truth needs a path column next to its query column")
    relevant: dict[str, dict[str, set[str]]] = {}
    for number, row in enumerate(body, 2):
        language = row[lang_col].strip() if lang_col is not None and lang_col < len(row) else ALL_LANGUAGES
        query = row[query_col].strip() if query_col < len(row) else ""
        paths = [cell for cell in row[path_col:] if cell.strip()]
        if not query or not paths:
            raise EvaluationError(f"{truth} line {number}: expected a query and at least one image path")
        relevant.setdefault(language, {}).setdefault(query, set()).update(_resolve(truth.parent, p) for p in paths)
    queries = {
        language: [(q, frozenset(p)) for q, p in relevant[language].items()]
        for language in _pick_languages(list(relevant), wanted, truth)
    }
    images = {p for by_query in relevant.values() for paths in by_query.values() for p in paths}
    return EvalSet(queries=queries, kind="caption", truth_images=len(images))


# -- running it -----------------------------------------------------------------------------------
def evaluate(
    engine,
    eval_set: EvalSet,
    ks: Iterable[int] = (1, 5, 10),
    modes: Iterable[str] = ("distance", "margin", "none"),
    margin_k: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> EvalReport:
    """Search every query of every language once per rerank mode; recall@k per language and mode.

    Queries are encoded once per language (and cached in ``cache_dir`` when given) and then searched
    with each mode, so the modes differ only in their reranking.
    """
    started = time.perf_counter()
    ks = sorted({int(k) for k in ks})
    modes = list(dict.fromkeys(modes))
    if not ks or ks[0] < 1:
        raise EvaluationError("k values must be positive integers")
    bad = [m for m in modes if m not in RERANK_MODES]
    if bad or not modes:
        raise EvaluationError(f"rerank modes must be among {', '.join(RERANK_MODES)}, got {', '.join(bad) or 'none'}")
    id_of = {row["path"]: row["id"] for row in engine._catalog.query(f"select id, path from {IMAGES}")}
    all_truth = {p for queries in eval_set.queries.values() for _, paths in queries for p in paths}
    matched = all_truth & id_of.keys()
    if not matched:
        raise EvaluationError(
            f"none of the {len(all_truth)} images named by the truth file is in {engine.index_dir}; "
            f"index them first (paths must match: absolute, or relative to the truth file)"
        )
    defaults = engine.rerank_defaults
    margin_k = defaults["margin_k"] if margin_k is None else margin_k
    report = EvalReport(
        index_dir=str(engine.index_dir), model=engine.manifest.model, kind=eval_set.kind, modes=modes, ks=ks,
        margin_k=margin_k, candidates=defaults["candidates"], truth_images=len(all_truth), matched_images=len(matched),
    )
    from tqdm import tqdm

    for language in tqdm(list(eval_set.queries), unit="lang", disable=not progress, dynamic_ncols=True):
        pairs = [(text, {id_of[p] for p in paths if p in id_of}) for text, paths in eval_set.queries[language]]
        usable = [(text, ids) for text, ids in pairs if ids and text.strip()]
        result = LanguageResult(language, len(usable), {m: {} for m in modes}, skipped=len(pairs) - len(usable))
        if usable:
            vectors = _query_vectors(engine, [text for text, _ in usable], cache_dir)
            for mode in modes:
                hits = engine.search_vectors(vectors, k=max(ks), rerank=mode, margin_k=margin_k)
                for k in ks:
                    found = [any(h.id in ids for h in row[:k]) for row, (_, ids) in zip(hits, usable)]
                    result.recall[mode][k] = float(np.mean(found))
            report.languages.append(result)
    if not report.languages:
        raise EvaluationError("no language has a query whose relevant images are in the index")
    report.seconds = time.perf_counter() - started
    return report


def _query_vectors(engine, texts: list[str], cache_dir: str | os.PathLike | None) -> np.ndarray:
    if cache_dir is None:
        return np.concatenate([engine.encoder.encode_texts(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    path = Path(cache_dir) / f"queries-{vectors_key(engine.encoder, texts)}.npy"
    return embed_texts_cached(engine.encoder, texts, path)


# -- writing the report ---------------------------------------------------------------------------
def write_report(report: EvalReport, out_dir: str | os.PathLike) -> list[Path]:
    """eval.md (the table), eval.json (everything), recall_at_K.png (per language, a bar per mode)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "eval.md", out / "eval.json"
    md.write_text(report.markdown(), "utf-8")
    js.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    png = out / f"recall_at_{chart_k(report.ks)}.png"
    plot_recall(report, png)
    return [md, js, png]


def plot_recall(report: EvalReport, path: str | os.PathLike) -> None:
    """Bar chart of per-language recall@10 (or the largest k), one bar per rerank mode."""
    try:
        import matplotlib
    except ImportError:
        raise EvaluationError("the chart needs matplotlib: pip install 'babelsearch[eval]'") from None

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    k = chart_k(report.ks)
    first = "none" if "none" in report.modes else report.modes[0]
    rows = sorted(report.languages, key=lambda r: -r.recall[first][k])
    m = len(report.modes)
    panels = -(-len(rows) // PER_PANEL)  # long language lists wrap onto several rows of bars
    per_panel = -(-len(rows) // panels)
    width = 0.8 / m
    fig, axes = plt.subplots(panels, 1, figsize=(max(6.0, 0.12 * per_panel * (m + 1) + 1.5), 2.8 * panels + 0.6),
                             squeeze=False)
    top = max(100 * r.recall[mode][k] for r in rows for mode in report.modes)
    for panel, ax in enumerate(axes[:, 0]):
        chunk = rows[panel * per_panel : (panel + 1) * per_panel]
        x = np.arange(len(chunk))
        for j, mode in enumerate(report.modes):
            mean = 100 * report.mean(mode, k, non_english=True)
            label = f"{mode} (non-English mean {mean:.1f})" if panel == 0 else None
            ax.bar(x + (j - (m - 1) / 2) * width, [100 * r.recall[mode][k] for r in chunk], width,
                   label=label, color=MODE_COLOURS.get(mode))
        ax.set_xticks(x, [r.language for r in chunk], rotation=90, fontsize=7)
        ax.set_xlim(-0.6, per_panel - 0.4)
        ax.set_ylim(0, min(100, top * 1.1 + 1))
        ax.set_ylabel(f"recall@{k} (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(
        f"Per-language recall@{k}: {report.model}, {report.matched_images} images ({report.kind} truth)"
    )
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
