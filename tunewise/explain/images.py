"""Image explanations: which pixels moved the explained class (the predicted one, or a chosen label), as a
heat map at the photo's own size, optionally written as a PNG overlaid on the photo.

Two Captum methods (`results.IMAGE_METHODS`):

- `integrated_gradients`: the class probability (the number the user sees) attributed to each pixel along
  the straight path from a black image (zeros in pixel space, normalised as the model's inputs are). The
  channels' attributions are summed with their signs, so completeness holds per image: the map sums to
  p(photo) - p(black), up to the relative convergence delta reported. Black rather than a blurred copy:
  in bench/explain_images.py black is the only baseline whose top pixels, deleted, drop the probability
  more than random pixels do whichever fill the deletion uses (black or blurred); a blurred baseline is
  faithful only to blurring (below random when pixels are blacked out) and, by construction, gives flat
  regions nothing, whatever they show. Black's own blind spot: black pixels can receive no attribution.
- `grad_cam`: Captum's `LayerGradCam` of the class's logit (see `grad_cam` for why not the probability)
  on the feature map the model's global pooling reads (timm's `forward_features` output; other models:
  the last convolution whose output is still a map), with the original method's ReLU (evidence for the
  class only), upsampled bilinearly to the input size (`LayerAttribution.interpolate`): one forward and
  one backward pass per batch. A model without such a map (a ViT's tokens; a map pooled to 1x1 at this
  input size) is explained by integrated gradients instead, with a warning, and `HeatMap.method` says so.

The default (`settings.IMAGE_AUTO`, grad_cam) and its reasons are in settings.py and bench/README.md.

The model sees a resized, centre-cropped view of the photo (timm's evaluation transform). The map goes back
by the same geometry (`_view_box`, timm's rounding included): each photo pixel takes, bilinearly, the
attribution at the input position it was resampled to, times the input pixels per photo pixel, so a region
keeps its total; pixels the crop cut off get 0 and are dimmed in the PNG. The geometry (crop_pct,
crop_mode) and the normalisation are read from the model's timm data config, which is what the task's
processor was made from (the input size is the pixels' own), except for a hub model whose tag preprocesses
differently from its architecture's default; there the overlay can be shifted and the baseline not black.
"""

from __future__ import annotations

import math
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from tunewise.data.images import load_rgb
from tunewise.errors import ConfigError
from tunewise.explain.results import IMAGE_METHODS, HeatMap
from tunewise.explain.settings import ExplainSettings
from tunewise.inference import model_device, model_scores
from tunewise.types import ImageExplanationTarget

OVERLAY_ALPHA = 0.6  # opacity of the strongest attribution's colour over the photo
OVERLAY_COLOURS = "RdBu_r"  # red: toward the explained label, blue: against it (grad_cam: red only)
OVERLAY_SCALE_PERCENTILE = 99  # the colour scale saturates here: integrated gradients' maps have a few hot pixels
OUTSIDE_VIEW_DIMMING = 0.5  # pixels the model never saw (cut off by the crop) are darkened by this share
FOLDER_MARKER = ".tunewise-heatmaps"  # says a folder holds tunewise's heat maps, so replacing them is safe
DELTA_FLOOR = 1e-6  # a smaller probability change from the baseline leaves the relative delta undefined


@dataclass(frozen=True)
class InputView:
    """How a photo became the model's input: timm's evaluation transform settings."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    crop_mode: str  # center (resize the short side, centre crop), squash, or border (letterbox)


def explain_images(model: nn.Module, targets: list[ImageExplanationTarget], settings: ExplainSettings) -> list[HeatMap]:
    """One heat map per target, in order, at its photo's size; PNGs in `settings.folder` when it is set."""
    if not targets:
        return []
    method = settings.image_method()
    if method not in IMAGE_METHODS:
        raise ConfigError(
            f"explain.method {method!r} does not explain images; choose one of {', '.join(IMAGE_METHODS)}."
        )
    folder = _heat_map_folder(settings.folder) if settings.folder is not None else None
    view = input_view(model)
    pixels = torch.cat([target.pixel_values for target in targets]).to(model_device(model))
    maps, deltas, method = attribute_pixels(model, pixels, [t.index for t in targets], method, settings, view)
    heat_maps = []
    for target, scores, delta in zip(targets, maps, deltas, strict=True):
        photo = load_rgb(target.path)
        original, seen = to_photo_size(scores, photo.size, view)
        png = _write_overlay(folder, target, photo, original, seen) if folder is not None else None
        heat_maps.append(HeatMap(target.row, target.name, target.probability, method, original, png, delta))
    return heat_maps


def attribute_pixels(
    model: nn.Module,
    pixels: torch.Tensor,
    indices: list[int],
    method: str,
    settings: ExplainSettings,
    view: InputView,
) -> tuple[np.ndarray, list[float | None], str]:
    """Maps [images, height, width] at the input size, each image's relative convergence delta (None for
    Grad-CAM), and the method that computed them: grad_cam falls back to integrated gradients, with a
    warning, on a model without a spatial feature map."""
    with attributing(model):
        layer = feature_layer(model, pixels[:1]) if method == "grad_cam" else None
        if layer is not None:
            return grad_cam(model, layer, pixels, indices, settings.internal_batch_size), [None] * len(pixels), method
        if method == "grad_cam":
            warnings.warn(
                "grad_cam needs the spatial feature map a CNN pools (a ViT has tokens instead), and this model has "
                "none larger than 1x1 at this input size; its images are explained with integrated_gradients instead.",
                stacklevel=3,
            )
        baselines = black_baseline(pixels, view)
        maps, relative = integrated_gradients(
            model, pixels, indices, baselines, settings.steps, settings.internal_batch_size
        )
        return maps, [float(delta) for delta in relative], "integrated_gradients"


# ------------------------------------------------------------------------------------------ the methods


def class_scores(model: nn.Module, probabilities: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function Captum differentiates: pixel values -> [images, classes], probabilities or logits."""

    def forward(pixel_values: torch.Tensor) -> torch.Tensor:
        logits = model_scores(model(pixel_values=pixel_values)).float()
        return torch.softmax(logits, dim=-1) if probabilities else logits

    return forward


def integrated_gradients(
    model: nn.Module,
    pixels: torch.Tensor,
    indices: list[int],
    baselines: torch.Tensor,
    steps: int,
    internal_batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Attributions [images, height, width] (channels summed, signed) and each image's relative
    convergence delta: |sum of attributions - (p(image) - p(baseline))| / |p(image) - p(baseline)|.

    Images go to Captum a few at a time so that one forward pass holds about `internal_batch_size`
    path points (Captum would otherwise put every image's step in each pass)."""
    from captum.attr import IntegratedGradients

    explainer = IntegratedGradients(class_scores(model, probabilities=True))
    per_call = max(1, internal_batch_size // steps)
    maps, relative = [], []
    for start in range(0, len(pixels), per_call):
        chunk = slice(start, start + per_call)
        attributions, delta = explainer.attribute(
            pixels[chunk],
            baselines=baselines[chunk],
            target=indices[chunk],
            n_steps=steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
        total = attributions.sum(dim=(1, 2, 3))
        change = total - delta  # Captum's delta is sum - (p(image) - p(baseline))
        relative.append((delta.abs() / change.abs().clamp_min(DELTA_FLOOR)).detach().float().cpu().numpy())
        maps.append(attributions.sum(dim=1).detach().float().cpu().numpy())
    return np.concatenate(maps), np.concatenate(relative)


def grad_cam(
    model: nn.Module, layer: nn.Module, pixels: torch.Tensor, indices: list[int], batch_size: int
) -> np.ndarray:
    """Grad-CAM maps [images, height, width] at the input size, non-negative.

    The channel weights are the gradients of the class's logit, as in Grad-CAM's paper (Selvaraju et al.,
    2017), not of its probability: the probability's gradient carries a factor p(1 - p), which vanishes for
    a confident prediction (exactly 0 once p rounds to 1 in float32, leaving an empty map). A map's scale
    is not a probability either way; where it points is what Grad-CAM says."""
    from captum.attr import LayerAttribution, LayerGradCam

    explainer = LayerGradCam(class_scores(model, probabilities=False), layer)
    maps = []
    for start in range(0, len(pixels), batch_size):
        chunk = slice(start, start + batch_size)
        inputs = pixels[chunk].detach().requires_grad_()  # the layer's output must carry a gradient
        cam = explainer.attribute(inputs, target=indices[chunk], relu_attributions=True)
        upsampled = LayerAttribution.interpolate(cam.float(), tuple(pixels.shape[2:]), interpolate_mode="bilinear")
        maps.append(upsampled[:, 0].detach().cpu().numpy())  # float: a model trained in bf16 keeps its autocast
    return np.concatenate(maps)


def black_baseline(pixels: torch.Tensor, view: InputView) -> torch.Tensor:
    """A black image as the model takes it: (0 - mean) / std per channel, one per image."""
    mean = torch.tensor(view.mean, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(view.std, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
    return ((0.0 - mean) / std).expand_as(pixels)


def feature_layer(model: nn.Module, probe: torch.Tensor) -> nn.Module | None:
    """The layer Grad-CAM reads: the module whose output is the feature map global pooling reads.

    timm models say which through `forward_features` (its output, NCHW with `num_features` channels for
    a CNN; ViT tokens are not a map); other models: the last convolution run whose output is still a
    map larger than 1x1. None when there is no map larger than 1x1 (one forward pass of `probe` finds it)."""
    backbone: Any = getattr(model, "backbone", model)
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(backbone.named_modules())

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                outputs[name] = output

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in modules.items() if name]
    try:
        with torch.no_grad():
            if hasattr(backbone, "forward_features"):
                features = backbone.forward_features(probe)
                channels = getattr(backbone, "num_features", features.shape[1] if features.ndim == 4 else None)
                if not (_is_map(features) and features.shape[1] == channels):
                    return None
                # the outermost module that returned this very tensor (named_modules lists parents first)
                return next((module for name, module in modules.items() if outputs.get(name) is features), None)
            model(pixel_values=probe)
    finally:
        for handle in handles:
            handle.remove()
    convolutions = [name for name in outputs if isinstance(modules[name], nn.Conv2d) and _is_map(outputs[name])]
    return modules[convolutions[-1]] if convolutions else None  # hooks fire, and so insert, in execution order


def _is_map(tensor: torch.Tensor) -> bool:
    return tensor.ndim == 4 and tensor.shape[2] * tensor.shape[3] > 1


@contextmanager
def attributing(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients on (a caller may be under no_grad), and the parameters not requiring gradients:
    only the pixels' gradients are needed, and none is left on a parameter. Restored on the way out."""
    was_training = model.training
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    model.eval()
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
        model.train(was_training)


# ------------------------------------------------------------------------------------------ back to the photo


def input_view(model: nn.Module) -> InputView:
    """The model's preprocessing, from its timm data config (timm's ImageNet defaults for a model without one)."""
    import timm.data

    config = timm.data.resolve_model_data_config(getattr(model, "backbone", model))
    return InputView(
        tuple(config["mean"]), tuple(config["std"]), float(config["crop_pct"]), config.get("crop_mode") or "center"
    )


def _view_box(photo_size: tuple[int, int], input_size: tuple[int, int], view: InputView) -> tuple[float, ...]:
    """The input's place on the resized photo, as timm's evaluation transform computes it (its rounding
    included): the photo is resized to `input / crop_pct` (the short side for center, both sides for
    squash, the long side for border), then centre-cropped, or padded, to the input size. Returns
    (scale_x, scale_y, left, top): input pixel coordinate = photo coordinate * scale - offset."""
    width, height = photo_size
    in_height, in_width = input_size
    target_height, target_width = math.floor(in_height / view.crop_pct), math.floor(in_width / view.crop_pct)
    if view.crop_mode == "squash":
        resized_width, resized_height = target_width, target_height
    elif view.crop_mode == "center" and target_height == target_width:  # torchvision's Resize(short side)
        short, long = sorted((width, height))
        resized_long = int(target_height * long / short)
        resized_width, resized_height = (
            (target_width, resized_long) if width == short else (resized_long, target_height)
        )
    else:  # timm's ResizeKeepRatio: the short side to its target (center), or the long side (border)
        pick = max if view.crop_mode == "border" else min
        ratio = pick(height / target_height, width / target_width)
        resized_width, resized_height = round(width / ratio), round(height / ratio)
    return (
        resized_width / width,
        resized_height / height,
        float(_crop_offset(resized_width, in_width)),
        float(_crop_offset(resized_height, in_height)),
    )


def _crop_offset(size: int, crop: int) -> int:
    """Where a centre crop starts (torchvision's CenterCrop), or minus the padding before the image."""
    return round((size - crop) / 2.0) if size >= crop else -((crop - size) // 2)


def to_photo_size(scores: np.ndarray, photo_size: tuple[int, int], view: InputView) -> tuple[np.ndarray, np.ndarray]:
    """The input-sized map at the photo's size [height, width], and which photo pixels the model saw."""
    in_height, in_width = scores.shape
    width, height = photo_size
    scale_x, scale_y, left, top = _view_box(photo_size, (in_height, in_width), view)
    # each photo pixel's centre in input coordinates, then in grid_sample's [-1, 1]
    x = ((torch.arange(width) + 0.5) * scale_x - left) * 2 / in_width - 1
    y = ((torch.arange(height) + 0.5) * scale_y - top) * 2 / in_height - 1
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1).float()
    # border: a pixel within half an input pixel of the view's edge takes the edge's value (zeros would halve it)
    sampled = nn.functional.grid_sample(
        torch.from_numpy(scores).float()[None, None],
        grid[None],
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )[0, 0].numpy()
    seen = np.outer(np.abs(y.numpy()) <= 1, np.abs(x.numpy()) <= 1)
    sampled[~seen] = 0.0
    return sampled * (scale_x * scale_y), seen  # input pixels per photo pixel: a region keeps its total


# ------------------------------------------------------------------------------------------ the PNG


def _heat_map_folder(folder: Path) -> Path:
    """The folder heat maps go to, made if needed. It must be tunewise's own: new, empty, or marked by an
    earlier explanation, so a PNG replaced there is always one tunewise wrote, never a user's file."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"heat maps go to the folder {folder}, which is a file. Choose another folder.")
    if folder.is_dir() and not (folder / FOLDER_MARKER).is_file() and any(folder.iterdir()):
        raise ConfigError(
            f"heat maps go to {folder}, which already holds other files; tunewise will not write among them. "
            "Choose an empty or new folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FOLDER_MARKER).write_text("heat maps written by tunewise explain\n", encoding="utf-8")
    return folder


def heat_map_file_name(row: int, label: str) -> str:
    """`<row>-<label>.png` with anything but letters, digits, '.', '_' and '-' in the label made '_'."""
    safe = re.sub(r"[^\w.-]+", "_", label, flags=re.ASCII).strip("._") or "label"
    return f"{row}-{safe}.png"


def overlay(photo: Image.Image, scores: np.ndarray, seen: np.ndarray) -> Image.Image:
    """The photo under the heat map: colour by sign (red toward the label), opacity by strength on a
    scale that saturates at the 99th percentile of |score|; pixels the model did not see are dimmed."""
    from matplotlib import colormaps  # the colour map only: pyplot's figures are not thread-safe (the server)

    strength = np.abs(scores[seen]) if seen.any() else np.zeros(1)
    scale = float(np.percentile(strength, OVERLAY_SCALE_PERCENTILE)) or float(strength.max()) or 1.0
    normalised = np.clip(scores / scale, -1.0, 1.0)
    colours = colormaps[OVERLAY_COLOURS]((normalised + 1) / 2)[..., :3]
    alpha = (OVERLAY_ALPHA * np.abs(normalised))[..., None]
    base = np.asarray(photo, dtype=np.float32) / 255.0
    base = np.where(seen[..., None], base, base * (1 - OUTSIDE_VIEW_DIMMING))
    blended = base * (1 - alpha) + colours * alpha
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def _write_overlay(
    folder: Path, target: ImageExplanationTarget, photo: Image.Image, scores: np.ndarray, seen: np.ndarray
) -> str:
    """Written to a temporary name and moved into place, so a reader never sees half a PNG."""
    path = folder / heat_map_file_name(target.row, target.name)
    partial = folder / f".{path.name}.{uuid.uuid4().hex}.partial"
    overlay(photo, scores, seen).save(partial, format="PNG")
    os.replace(partial, path)
    return str(path)
