"""What an explanation is, whatever computed it: the words (or the pixels) and how much each moved the
explained score. Every surface shows these: `predict(..., explain=True)`, the CLI, the server's JSON,
the report's Explanations section.

An attribution is signed: positive pushes the explained score up (toward the label), negative down.
`convergence_delta` is integrated gradients' completeness gap, |sum of attributions - (score(input) -
score(baseline))| over |score(input) - score(baseline)|: near 0 when enough steps were taken; None for
methods without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Method = Literal["integrated_gradients", "layer_integrated_gradients", "gradient_x_input", "occlusion"]
ImageMethod = Literal["integrated_gradients", "grad_cam"]
METHODS: tuple[str, ...] = ("integrated_gradients", "layer_integrated_gradients", "gradient_x_input", "occlusion")
IMAGE_METHODS: tuple[str, ...] = ("integrated_gradients", "grad_cam")


@dataclass(frozen=True)
class Word:
    """One of the user's words (its sub-word tokens merged): where it is and what it carried."""

    text: str
    source: int  # which of the row's texts it is in (0; 1 for a pair's second text or a QA context)
    start: int  # character span in that text
    end: int
    score: float  # summed attribution of its tokens


@dataclass(frozen=True)
class WordAttribution:
    """The explanation of one target of one row (a label, an entity, an answer's start or end)."""

    row: int
    target: str
    probability: float  # the explained score on the whole input
    method: str
    words: tuple[Word, ...]
    convergence_delta: float | None = None

    def top(self, k: int) -> list[Word]:
        """The k words with the largest attribution toward the target (positive first)."""
        return sorted(self.words, key=lambda word: word.score, reverse=True)[:k]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what predict() returns under "explanation" and the server sends."""
        return {
            "target": self.target,
            "probability": self.probability,
            "method": self.method,
            "convergence_delta": self.convergence_delta,
            "words": [
                {"word": w.text, "text": w.source, "start": w.start, "end": w.end, "score": w.score} for w in self.words
            ],
        }


@dataclass(frozen=True)
class HeatMap:
    """The explanation of one image: attribution per pixel at the image's own size, and the PNG it was
    overlaid on (when saved)."""

    row: int
    target: str
    probability: float
    method: str
    scores: np.ndarray = field(repr=False)  # [height, width], signed
    png: str | None = None
    convergence_delta: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "probability": self.probability,
            "method": self.method,
            "convergence_delta": self.convergence_delta,
            "heatmap_png": self.png,
        }


Explanation = WordAttribution | HeatMap
