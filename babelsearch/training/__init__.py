"""Training babel-lite's caption heads (``make train-model``): beside the query path, never imported by it.

``python -m babelsearch.training CAPTIONS_DIR`` runs ``recipe.train_model`` and writes the model file
the package ships (``engine/resources/babel_lite_captions.npz``). Needs torch (training only).
"""

from .data import CaptionSet, TrainingDataError, hold_out, read_caption_set
from .heads import HeadSettings, train_heads
from .recipe import Recipe, TrainingResult, train_model

__all__ = [
    "CaptionSet",
    "HeadSettings",
    "Recipe",
    "TrainingDataError",
    "TrainingResult",
    "hold_out",
    "read_caption_set",
    "train_heads",
    "train_model",
]
