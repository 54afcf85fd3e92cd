"""Training babel-lite's two caption heads on frozen tower outputs (torch, CPU, deterministic).

The recipe is LiT's ("Locked-image Tuning", Zhai et al. 2022) taken one step further for a small
machine: both towers stay locked and only two residual MLP heads learn, with the symmetric InfoNCE
loss of CLIP over in-batch negatives and a learned temperature. Each epoch visits every training
photo once, with one of its captions drawn language first (so German, French, Czech and Chinese
weigh as much as English, whatever their caption counts), and the photo's features taken from the
plain or the mirrored crop at random. The other ~90 languages ride on e5's own cross-lingual
alignment: the text head sees only e5 vectors, never a language.

Determinism: seeded numpy and torch generators, torch's deterministic algorithms, a fixed thread
count. The same inputs give the same weights, bit for bit, on the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from babelsearch.engine.encoders.caption_space import ResidualHead


@dataclass(frozen=True)
class HeadSettings:
    """What the trainer was told; recorded in the model file's metadata."""

    hidden: int = 2048  # the image head's hidden units
    text_hidden: int = 1024  # the text head's (2048 measured no better on held-out photos)
    dim: int = 384
    epochs: int = 30
    batch: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    dropout: float = 0.5
    input_dropout: float = 0.2
    initial_scale: float = 20.0
    seed: int = 0
    threads: int = 2


def _head_module(torch, in_dim: int, settings: HeadSettings, dropout: bool):
    """A residual MLP; the image head (``dropout``) also drops inputs and hidden units while training."""
    nn = torch.nn
    hidden = settings.hidden if dropout else settings.text_hidden
    module: Any = nn.Module  # torch is imported here, not at the top: mypy cannot see the base class

    class Head(module):
        def __init__(self) -> None:
            super().__init__()
            layers = [nn.Dropout(settings.input_dropout)] if dropout else []
            layers += [nn.Linear(in_dim, hidden), nn.GELU(approximate="tanh")]
            layers += [nn.Dropout(settings.dropout)] if dropout else []
            layers += [nn.Linear(hidden, settings.dim)]
            self.mlp = nn.Sequential(*layers)
            self.skip = nn.Linear(in_dim, settings.dim)

        def forward(self, x):
            return nn.functional.normalize(self.mlp(x) + self.skip(x), dim=-1)

        def export(self) -> ResidualHead:
            linear = [layer for layer in self.mlp if isinstance(layer, nn.Linear)]

            def matrix(layer) -> np.ndarray:
                return layer.weight.detach().numpy().T.copy()

            def bias(layer) -> np.ndarray:
                return layer.bias.detach().numpy().copy()

            return ResidualHead(
                w1=matrix(linear[0]),
                b1=bias(linear[0]),
                w2=matrix(linear[1]),
                b2=bias(linear[1]),
                ws=matrix(self.skip),
                bs=bias(self.skip),
            )

    return Head()


def train_heads(
    images: np.ndarray,
    mirrored: np.ndarray,
    texts: np.ndarray,
    captions: Mapping[int, Mapping[str, Sequence[int]]],
    settings: HeadSettings = HeadSettings(),
    progress: Callable[[int, float], None] | None = None,
) -> tuple[ResidualHead, ResidualHead, dict]:
    """Train the image and text heads; return them with a summary (final loss, temperature, seconds).

    ``images``/``mirrored``: standardised features (n_photos, F) of the plain and mirrored crops;
    ``texts``: e5 query vectors (n_texts, 384); ``captions``: photo row -> language -> text rows.
    """
    import torch

    torch.manual_seed(settings.seed)
    torch.use_deterministic_algorithms(True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        rng = np.random.default_rng(settings.seed)
        image_head = _head_module(torch, images.shape[1], settings, dropout=True)
        text_head = _head_module(torch, texts.shape[1], settings, dropout=False)
        log_scale = torch.nn.Parameter(torch.tensor(float(np.log(settings.initial_scale))))
        parameters = [*image_head.parameters(), *text_head.parameters(), log_scale]
        optimiser = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        photos = np.array(sorted(captions), dtype=np.int64)
        steps = -(-len(photos) // settings.batch) * settings.epochs
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=settings.learning_rate, total_steps=steps, pct_start=0.05, anneal_strategy="cos"
        )
        plain, flipped, text_rows = (
            torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (images, mirrored, texts)
        )
        languages = {photo: sorted(captions[photo]) for photo in photos.tolist()}

        def draw(photo: int) -> int:
            chosen = languages[photo][int(rng.integers(len(languages[photo])))]
            rows = captions[photo][chosen]
            return int(rows[int(rng.integers(len(rows)))])

        started = time.perf_counter()
        loss = torch.tensor(0.0)
        for epoch in range(settings.epochs):
            image_head.train()
            order = rng.permutation(photos)
            for start in range(0, len(order), settings.batch):
                batch = order[start : start + settings.batch]
                caption_rows = torch.from_numpy(np.array([draw(int(p)) for p in batch], dtype=np.int64))
                mirror = torch.from_numpy(rng.random(len(batch)) < 0.5)
                rows = torch.from_numpy(batch)
                image_in = torch.where(mirror[:, None], flipped[rows], plain[rows])
                logits = log_scale.exp().clamp(max=100) * image_head(image_in) @ text_head(text_rows[caption_rows]).T
                target = torch.arange(len(batch))
                loss = (
                    torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)
                ) / 2
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
            if progress:
                progress(epoch + 1, float(loss.detach()))
        image_head.eval()
        summary = {
            "loss": round(float(loss.detach()), 4),
            "scale": round(float(log_scale.detach().exp()), 3),
            "seconds": round(time.perf_counter() - started, 1),
        }
        return image_head.export(), text_head.export(), summary
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(False)
