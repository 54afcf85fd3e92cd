"""``babelsearch eval``: multilingual retrieval evaluation, recall@k per language, every rerank mode side by side.

An offline tool beside the query path: it reads ground truth (:mod:`.truth`), searches an index through
the engine's public read API (:mod:`.run`) and writes the report (:mod:`.report`). No evaluation data
ships with babelsearch; it reads whatever files it is given.
"""

from __future__ import annotations

from .report import EvalReport, LanguageResult, plot_recall, write_report
from .run import evaluate
from .truth import EvalSet, EvaluationError, load_eval_set

__all__ = [
    "EvalReport",
    "EvalSet",
    "EvaluationError",
    "LanguageResult",
    "evaluate",
    "load_eval_set",
    "plot_recall",
    "write_report",
]
