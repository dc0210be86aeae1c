"""How explanations are computed: the method and its cost. `auto` is the method the faithfulness
benchmarks chose (bench/explain_text.py, bench/explain_images.py); integrated gradients' 32 steps keep
its convergence delta near 6 % at a third of a second per short text on 2 CPU cores (bench/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# chosen by measurement (bench/explain_text.py, SST-2 and the planted bias, 200 rows each): occlusion is the
# most comprehensive and sufficient at every k, puts the planted word first for 0.74 of the biased predictions
# (integrated gradients: 0.09, mostly second) and costs 0.12 s per sentence against 0.32 s
TEXT_AUTO = "occlusion"
# bench/explain_images.py (EfficientNet-Lite0 fine-tuned on ants/bees, 2 CPU cores): Grad-CAM puts 0.82 of its
# mass on the photo in a quadrant collage (integrated gradients 0.52, chance 0.25), costs 0.06 s a photo against
# 2.4 s (100 photos after training: 6 s, not 4 minutes), and blurring its top 20 % drops the probability 0.11
# more than blurring random pixels. Integrated gradients is the pixel-precise choice: above random deletion
# with both a black and a blurred fill, where Grad-CAM is not above random with black pixels.
IMAGE_AUTO = "grad_cam"


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
