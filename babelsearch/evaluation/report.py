"""What ``babelsearch eval`` found: recall per language and mode, as markdown, JSON and a PNG chart."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .truth import ENGLISH, EvaluationError

PER_PANEL = 48  # languages per row of the chart
MODE_COLOURS = {"none": "#9e9e9e", "margin": "#1f77b4", "distance": "#ff7f0e", "csls": "#2ca02c"}


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
    margin_k: int | str
    candidates: int
    languages: list[LanguageResult] = field(default_factory=list)
    truth_images: int = 0
    matched_images: int = 0
    seconds: float = 0.0
    # mode -> counts over all queries of the "likely relevant" flag in the top max(ks): hits flagged,
    # flagged hits that are relevant, queries with a relevant hit there, and with one flagged
    flags: dict[str, dict[str, int]] = field(default_factory=dict)

    def relevance(self, mode: str) -> dict[str, float] | None:
        """The flag's precision (flagged hits that are relevant) and recall (queries whose relevant hit
        in the top k is flagged, of those that have one), or None where the index has no calibration."""
        counts = self.flags.get(mode)
        if not counts or counts.get("unflaggable"):
            return None
        return {
            "precision": round(counts["flagged_relevant"] / max(counts["flagged"], 1), 4),
            "recall": round(counts["queries_flagged"] / max(counts["queries_found"], 1), 4),
            "flagged_per_query": round(counts["flagged"] / max(counts["queries"], 1), 3),
        }

    def mean(self, mode: str, k: int, non_english: bool = False) -> float:
        """Macro average of recall@k over the languages (English left out with ``non_english``)."""
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
            "relevance_flag": {mode: self.relevance(mode) for mode in self.modes},
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

        def row(label: str, queries: str, value: Callable[..., float]) -> str:
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
        flag_lines = []
        for mode in self.modes:
            measured = self.relevance(mode)
            if measured:
                flag_lines.append(
                    f"- {mode}: precision {measured['precision']:.3f}, recall {measured['recall']:.3f}, "
                    f"{measured['flagged_per_query']:.2f} hits flagged per query"
                )
        flags = ""
        if flag_lines:
            flags = (
                f'\n"Likely relevant" flag in the top {max(self.ks)} (precision: flagged hits that are the '
                "query's relevant images; recall: queries whose relevant image there is flagged):\n\n"
                + "\n".join(flag_lines)
                + "\n"
            )
        return intro + "\n\n" + "\n".join(lines) + "\n" + flags


def chart_k(ks: list[int]) -> int:
    """The cut-off the chart and the Δ columns show: 10 when measured, else the largest."""
    return 10 if 10 in ks else max(ks)


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
    fig, axes = plt.subplots(
        panels, 1, figsize=(max(6.0, 0.12 * per_panel * (m + 1) + 1.5), 2.8 * panels + 0.6), squeeze=False
    )
    top = max(100 * r.recall[mode][k] for r in rows for mode in report.modes)
    for panel, ax in enumerate(axes[:, 0]):
        chunk = rows[panel * per_panel : (panel + 1) * per_panel]
        x = np.arange(len(chunk))
        for j, mode in enumerate(report.modes):
            mean = 100 * report.mean(mode, k, non_english=True)
            label = f"{mode} (non-English mean {mean:.1f})" if panel == 0 else None
            ax.bar(
                x + (j - (m - 1) / 2) * width,
                [100 * r.recall[mode][k] for r in chunk],
                width,
                label=label,
                color=MODE_COLOURS.get(mode),
            )
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
