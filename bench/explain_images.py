"""Which image explanation is faithful, and what does it cost? Grad-CAM against integrated gradients (black
baseline, as tunewise computes it, and a blurred-image baseline as the alternative) on ants vs bees.

Fine-tunes the built-in efficientnet-lite0 (real ImageNet weights) on ../shared/data/hymenoptera_256/train with
tunewise's defaults for `--epochs` epochs, then explains the predicted class of `--images` validation photos
(half ants, half bees, a seeded sample) with each method, and measures, at the model's 224 px input:

- seconds per explanation (the attribution only, after one warm-up: prediction's forward is not counted);
- the deletion test: the drop in the predicted class's probability when the 20 % most-attributed pixels are
  blanked, beside the drop when 20 % random pixels are (higher than random = the pixels mattered). Blanked to
  black (integrated gradients' baseline in tunewise) and, separately, to the photo's blurred copy (the other
  baseline), so neither baseline is scored only on its own terms;
- the quadrant test: each of `--collages` photos is shrunk into one quadrant of a collage whose other three
  are smooth random colour; the share of the positive attribution that lands on the photo's quadrant
  (0.25 by chance).

    python bench/explain_images.py                                   # about 4 minutes on 2 CPU cores
    python bench/explain_images.py --images 4 --collages 2 --epochs 1   # smoke run

Writes bench/results/explain_images.json and prints the table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared/data/hymenoptera_256"
RESULTS_FILE = REPO / "bench/results/explain_images.json"
DELETED_SHARE = 0.2
BLUR_SIGMA = 10.0  # pixels at 224: ants and bees become blobs of their colour
SEED = 0
CONTENDERS = ("grad_cam", "integrated_gradients", "integrated_gradients (blur baseline)")


def train(work: Path, epochs: int) -> Any:
    import tunewise

    config = {
        "task": "image-classification",
        "model": "efficientnet-lite0",
        "data": {"train": str(DATA_DIR / "train"), "validation": str(DATA_DIR / "val")},
        "train": {"epochs": epochs, "seed": SEED},
        "audit": {"before_training": False},
        "explain": {"enabled": False},  # measured here, method by method
        "output_dir": str(work / "run"),
    }
    return tunewise.train(config, show_progress=False, console=Console(file=io.StringIO()))


def blurred(pixels: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    size = int(BLUR_SIGMA * 3) * 2 + 1
    return gaussian_blur(pixels, [size, size], [BLUR_SIGMA, BLUR_SIGMA])


def attribute(model: Any, pixels: torch.Tensor, indices: list[int], contender: str, steps: int) -> np.ndarray:
    """Maps [images, 224, 224] as tunewise computes them (attribute_pixels), or with the blurred baseline."""
    from tunewise.explain.images import attribute_pixels, attributing, input_view, integrated_gradients
    from tunewise.explain.settings import ExplainSettings

    settings = ExplainSettings(method=contender.split(" ")[0], steps=steps)
    if contender == "integrated_gradients (blur baseline)":
        with attributing(model):
            maps, _ = integrated_gradients(model, pixels, indices, blurred(pixels), steps, settings.internal_batch_size)
        return maps
    maps, _, method = attribute_pixels(model, pixels, indices, settings.method, settings, input_view(model))
    assert method == settings.method, f"{contender} fell back to {method}"
    return maps


def class_probability(model: Any, pixels: torch.Tensor, indices: list[int]) -> np.ndarray:
    with torch.inference_mode():
        probabilities = torch.softmax(model(pixel_values=pixels).logits.float(), dim=-1)
    return probabilities[torch.arange(len(indices)), torch.tensor(indices)].numpy()


def deletion(
    model: Any, pixels: torch.Tensor, indices: list[int], maps: np.ndarray, fill: torch.Tensor, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's drop in the class probability with the top 20 % (by attribution) and with 20 % random
    pixels set to `fill`, all channels."""
    count = int(DELETED_SHARE * maps[0].size)
    before = class_probability(model, pixels, indices)
    top, random = pixels.clone(), pixels.clone()
    for i, scores in enumerate(maps):
        for deleted, chosen in (
            (top, np.argsort(-scores, axis=None)[:count]),
            (random, rng.choice(scores.size, count, replace=False)),
        ):
            mask = torch.zeros(scores.size, dtype=torch.bool)
            mask[torch.from_numpy(chosen)] = True
            mask = mask.view(scores.shape)
            deleted[i][:, mask] = fill[i][:, mask]
    return before - class_probability(model, top, indices), before - class_probability(model, random, indices)


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    """The mean and its standard error."""
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def collages(pixels: torch.Tensor, view: Any, rng: np.random.Generator) -> tuple[torch.Tensor, list[int]]:
    """Each photo at half size in a random quadrant; the other quadrants smooth random colour (an 8x8 grid of
    random colours, upsampled), normalised as the photos are."""
    size = pixels.shape[-1]
    half = size // 2
    colours = torch.from_numpy(rng.random((len(pixels), 3, 8, 8))).float()
    background = torch.nn.functional.interpolate(colours, size=(size, size), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(view.mean).view(1, -1, 1, 1), torch.tensor(view.std).view(1, -1, 1, 1)
    collage = (background - mean) / std
    quadrants = rng.integers(0, 4, len(pixels)).tolist()
    small = torch.nn.functional.interpolate(pixels, size=(half, half), mode="area")
    for i, quadrant in enumerate(quadrants):
        top, left = (quadrant // 2) * half, (quadrant % 2) * half
        collage[i, :, top : top + half, left : left + half] = small[i]
    return collage, quadrants


def quadrant_mass(maps: np.ndarray, quadrants: list[int]) -> np.ndarray:
    """Each collage's share of positive attribution on the photo's quadrant."""
    half = maps.shape[-1] // 2
    shares = []
    for scores, quadrant in zip(maps, quadrants, strict=True):
        positive = np.clip(scores, 0, None)
        top, left = (quadrant // 2) * half, (quadrant % 2) * half
        shares.append(positive[top : top + half, left : left + half].sum() / max(positive.sum(), 1e-12))
    return np.array(shares)


def predicted(model: Any, pixels: torch.Tensor) -> list[int]:
    with torch.inference_mode():
        return model(pixel_values=pixels).logits.argmax(dim=-1).tolist()


def sample_frame(run: Any, count: int) -> Any:
    """`count` validation photos, half of each class, a seeded sample."""
    frame = run.model.task.data.read(str(DATA_DIR / "val"), "validation")
    label = run.model.task.data.config.label_column
    per_class = max(1, count // 2)
    parts = [group.sample(n=min(per_class, len(group)), random_state=SEED) for _, group in frame.groupby(label)]
    return pd.concat(parts).reset_index(drop=True)


def measure(run: Any, images: int, collage_count: int, steps: int) -> dict[str, Any]:
    from tunewise.explain.images import black_baseline, input_view
    from tunewise.tasks import explanation

    model, task = run.model.model.eval(), run.model.task
    frame = sample_frame(run, images)
    targets = explanation(task).targets(model, run.model.processor, frame, run.model.max_length)
    pixels = torch.cat([t.pixel_values for t in targets])
    indices = [t.index for t in targets]
    view = input_view(model)
    black = black_baseline(pixels, view)
    fills = {"black": black, "blur": blurred(pixels)}
    mosaic, quadrants = collages(pixels[:collage_count], view, np.random.default_rng(SEED))
    mosaic_indices = predicted(model, mosaic)
    rows = []
    for contender in CONTENDERS:
        attribute(model, pixels[:1], indices[:1], contender, steps)  # warm-up: the first call allocates
        start = time.perf_counter()
        maps = attribute(model, pixels, indices, contender, steps)
        seconds = (time.perf_counter() - start) / len(targets)
        row: dict[str, Any] = {"method": contender, "seconds_per_explanation": seconds}
        for name, fill in fills.items():
            top, random = deletion(model, pixels, indices, maps, fill, np.random.default_rng(SEED))
            row[f"drop_top20_{name}"], row[f"drop_top20_{name}_se"] = mean_and_error(top)
            row[f"drop_random20_{name}"], row[f"drop_random20_{name}_se"] = mean_and_error(random)
            row[f"top_minus_random_{name}"], row[f"top_minus_random_{name}_se"] = mean_and_error(top - random)
        mosaic_maps = attribute(model, mosaic, mosaic_indices, contender, steps)
        row["quadrant_mass"], row["quadrant_mass_se"] = mean_and_error(quadrant_mass(mosaic_maps, quadrants))
        rows.append(row)
        print(f"{contender}: {row}", flush=True)
    correct = [t.name == name for t, name in zip(targets, frame[task.data.config.label_column], strict=True)]
    return {
        "explained_images": len(targets),
        "collages": len(quadrants),
        "accuracy_on_explained": float(np.mean(correct)),
        "mean_probability_explained": float(np.mean([t.probability for t in targets])),
        "methods": rows,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Means ± standard errors; "top - random" is paired by photo."""
    lines = [
        "| method | s / explanation | black: drop, top 20 % | random 20 % | top - random | blurred: drop, top 20 % "
        "| random 20 % | top - random | quadrant mass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["method"], f"{r['seconds_per_explanation']:.2f}"]
        for fill in ("black", "blur"):
            for key in (f"drop_top20_{fill}", f"drop_random20_{fill}", f"top_minus_random_{fill}"):
                cells.append(f"{r[key]:.3f} ± {r[key + '_se']:.3f}")
        cells.append(f"{r['quadrant_mass']:.2f} ± {r['quadrant_mass_se']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (tunewise's defaults otherwise)")
    parser.add_argument("--images", type=int, default=24, help="validation photos explained, half of each class")
    parser.add_argument("--collages", type=int, default=12, help="photos of those made into quadrant collages")
    parser.add_argument("--steps", type=int, default=32, help="integrated gradients' steps (tunewise's default)")
    args = parser.parse_args()
    if not (DATA_DIR / "val").is_dir():
        raise SystemExit(f"error: hymenoptera data not found at {DATA_DIR} (the shared data folder beside the repo).")
    torch.manual_seed(SEED)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-explain-images-") as work:
        run = train(Path(work), args.epochs)
        trained = time.perf_counter() - started
        result = measure(run, args.images, min(args.collages, args.images), args.steps)
        validation = run.metrics["validation"]
    report = {
        "benchmark": "explain_images",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": "efficientnet-lite0 (timm tf_efficientnet_lite0, ImageNet weights), tunewise defaults",
        "data": "hymenoptera_256: train (244 photos) to fine-tune, val (153) to explain",
        "settings": {**vars(args), "deleted_share": DELETED_SHARE, "blur_sigma": BLUR_SIGMA, "seed": SEED},
        "hardware": {
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_end": os.getloadavg(),
        },
        "validation_accuracy": validation["accuracy"],
        "seconds": {"training": round(trained, 1), "total": round(time.perf_counter() - started, 1)},
        **result,
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(result["methods"]))
    print(
        f"validation accuracy {validation['accuracy']:.4f}; {result['explained_images']} photos explained "
        f"(accuracy on them {result['accuracy_on_explained']:.2f}), {result['collages']} collages; "
        f"{report['seconds']['total']:.0f} s in all"
    )
    print(f"wrote {RESULTS_FILE}")


if __name__ == "__main__":
    main()
