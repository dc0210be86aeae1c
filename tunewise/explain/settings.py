"""How explanations are computed: the method and its cost. `auto` is the method the faithfulness
benchmark chose (bench/explain_faithfulness.py); the step count and the internal batch keep one
explanation of a short text well under a second on a CPU (bench/explain_speed.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEXT_AUTO = "integrated_gradients"  # chosen by measurement: bench/explain_faithfulness.py
IMAGE_AUTO = "grad_cam"  # chosen by measurement: tests/explain/test_images.py, bench/explain_speed.py


@dataclass(frozen=True)
class ExplainSettings:
    method: str = "auto"  # one of results.METHODS (text) or results.IMAGE_METHODS (images), or auto
    steps: int = 32  # integrated gradients' steps along the path from the baseline
    internal_batch_size: int = 32  # path points evaluated per forward pass
    label: str | None = None  # explain this label instead of the predicted one
    folder: Path | None = None  # where image heat maps are written as PNG (None: not written)

    def text_method(self) -> str:
        return TEXT_AUTO if self.method == "auto" else self.method

    def image_method(self) -> str:
        return IMAGE_AUTO if self.method == "auto" else self.method
