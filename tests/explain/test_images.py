"""Image explanations: each method finds the pixels a model reads (a model that can only see one quadrant),
the heat map lands on the photo where timm's evaluation transform took those pixels from, the PNG overlay,
the Grad-CAM layer of timm models, and the image-classification task's explanation piece end to end."""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import make_config
from torch import nn

pytest.importorskip("timm", reason="image explanations need timm (and a torchvision matching torch)")
pytest.importorskip("captum", reason="explanations need captum")

import timm
import timm.data
from PIL import Image
from safetensors.torch import save_file
from transformers.modeling_outputs import ImageClassifierOutput

from tunewise.errors import ConfigError
from tunewise.explain.images import (
    InputView,
    explain_images,
    feature_layer,
    heat_map_file_name,
    input_view,
    to_photo_size,
)
from tunewise.explain.results import IMAGE_METHODS
from tunewise.explain.settings import ExplainSettings
from tunewise.tasks import explanation, load_config, make_task
from tunewise.types import CheckpointHints, ImageExplanationTarget

PHOTO_SIZE = (128, 96)  # width, height: not square, twice the model's input
INPUT_SIZE = (48, 64)  # height, width
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
# Integrated gradients can put nothing outside the quadrant (the gradient there is exactly 0) but for the
# bilinear resampling to the photo's size across its edge (99 % inside, over 6 photos); Grad-CAM's 12x16 map,
# upsampled bilinearly, and the first 3x3 convolution reaching one pixel past the quadrant blur a band around
# it (94-96 % inside)
MIN_QUADRANT_MASS = {"integrated_gradients": 0.95, "grad_cam": 0.85}


class QuadrantModel(nn.Module):
    """Two classes, and only the top-left quadrant of the red channel can move them: the input is masked
    to it before a bias-free conv stack (so the zeros elsewhere stay zeros), and only the quadrant of the
    features is pooled. Class 0's logit grows with the features, class 1's falls: explaining class 0, every
    Grad-CAM weight is positive."""

    pretrained_cfg: ClassVar[dict] = {"mean": MEAN, "std": STD, "crop_pct": 1.0, "crop_mode": "center"}

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(4, 4, 4, stride=4, bias=False),
            nn.ReLU(),
        )
        for conv in (self.features[0], self.features[2]):
            nn.init.uniform_(conv.weight, 0.0, 0.5)
        self.classifier = nn.Linear(4, 2)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
            self.classifier.bias.zero_()

    def forward(self, pixel_values: torch.Tensor) -> ImageClassifierOutput:
        height, width = pixel_values.shape[2:]
        mask = torch.zeros_like(pixel_values[:, :1])
        mask[..., : height // 2, : width // 2] = 1
        maps = self.features(pixel_values[:, :1] * mask + mask)  # + mask: the quadrant's dark pixels count too
        pooled = maps[..., : maps.shape[2] // 2, : maps.shape[3] // 2].mean(dim=(2, 3))
        return ImageClassifierOutput(logits=self.classifier(pooled))


def noisy_photo(path: Path, size: tuple[int, int] = PHOTO_SIZE, seed: int = 0) -> Path:
    """Bright red blobs in every quadrant, so there is something to attribute everywhere."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 120, (size[1], size[0], 3))
    for _ in range(12):
        x, y = rng.integers(0, size[0] - 12), rng.integers(0, size[1] - 12)
        pixels[y : y + 12, x : x + 12, 0] = 250
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def target_of(
    photo: Path, model: nn.Module, row: int = 0, index: int = 0, name: str = "zero"
) -> ImageExplanationTarget:
    """The photo as the model takes it (timm's evaluation transform with the model's data config)."""
    config = {**timm.data.resolve_model_data_config(model), "input_size": (3, *INPUT_SIZE)}
    transform = timm.data.create_transform(**config, is_training=False)
    pixels = transform(Image.open(photo).convert("RGB"))[None]
    with torch.no_grad():
        probability = float(torch.softmax(model(pixel_values=pixels).logits, dim=-1)[0, index])
    return ImageExplanationTarget(row, name, pixels, index, str(photo), probability)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return noisy_photo(tmp_path_factory.mktemp("photos") / "photo.png")


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_the_heat_map_lies_in_the_quadrant_the_model_reads(method: str, photo: Path) -> None:
    model = QuadrantModel()
    target = target_of(photo, model)
    (heat_map,) = explain_images(model, [target], ExplainSettings(method=method, steps=32))
    assert heat_map.method == method and heat_map.target == "zero" and heat_map.row == 0
    assert heat_map.scores.shape == (PHOTO_SIZE[1], PHOTO_SIZE[0])  # the photo's own size, not the input's
    positive = np.clip(heat_map.scores, 0, None)
    quadrant = positive[: PHOTO_SIZE[1] // 2, : PHOTO_SIZE[0] // 2].sum() / positive.sum()
    assert quadrant > MIN_QUADRANT_MASS[method], quadrant
    if method == "integrated_gradients":  # completeness: the map sums to p(photo) - p(black), at the photo's size
        black = torch.full_like(target.pixel_values, -1.0)  # (0 - 0.5) / 0.5
        with torch.no_grad():
            change = target.probability - float(torch.softmax(model(pixel_values=black).logits, dim=-1)[0, 0])
        assert heat_map.convergence_delta is not None and heat_map.convergence_delta < 0.05
        assert heat_map.scores.sum() == pytest.approx(change, rel=0.1)
    else:
        assert heat_map.convergence_delta is None and (heat_map.scores >= 0).all()


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_a_model_that_kept_its_bf16_autocast_is_explained_in_float(method: str, photo: Path) -> None:
    """After bf16 training, Accelerate leaves the model's forward under autocast: the feature maps are bf16."""
    model = QuadrantModel()
    target = target_of(photo, model)
    model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)  # as accelerator.prepare does
    (heat_map,) = explain_images(model, [target], ExplainSettings(method=method, steps=8))
    positive = np.clip(heat_map.scores, 0, None)
    assert heat_map.scores.dtype.kind == "f"
    assert positive[: PHOTO_SIZE[1] // 2, : PHOTO_SIZE[0] // 2].sum() / positive.sum() > 0.5


def test_a_batch_is_explained_in_order_and_the_model_is_left_as_it_was(photo: Path, tmp_path: Path) -> None:
    model = QuadrantModel().train()
    targets = [target_of(noisy_photo(tmp_path / f"{i}.png", seed=i), model, row=i) for i in range(3)]
    for method in IMAGE_METHODS:
        together = explain_images(model, targets, ExplainSettings(method=method, steps=8, internal_batch_size=16))
        alone = [explain_images(model, [t], ExplainSettings(method=method, steps=8))[0] for t in targets]
        assert [h.row for h in together] == [0, 1, 2]
        for batched, single in zip(together, alone, strict=True):
            np.testing.assert_allclose(batched.scores, single.scores, rtol=1e-4, atol=1e-7)
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_the_png_is_the_photo_under_the_heat_map(photo: Path, tmp_path: Path) -> None:
    model = QuadrantModel()
    target = target_of(photo, model, row=7, name="honey bee/ü?")
    folder = tmp_path / "explanations" / "heat_maps"  # made, parents too
    (heat_map,) = explain_images(model, [target], ExplainSettings(method="grad_cam", folder=folder))
    assert heat_map.png == str(folder / "7-honey_bee.png") == str(folder / heat_map_file_name(7, "honey bee/ü?"))
    with Image.open(heat_map.png) as image:
        assert image.format == "PNG" and image.size == PHOTO_SIZE and image.mode == "RGB"
        overlaid = np.asarray(image, dtype=np.int16)
    original = np.asarray(Image.open(photo).convert("RGB"), dtype=np.int16)
    changed = np.abs(overlaid - original).sum(axis=-1) > 6
    assert changed[: PHOTO_SIZE[1] // 2, : PHOTO_SIZE[0] // 2].mean() > 0.5  # coloured where the model looks
    assert changed[PHOTO_SIZE[1] // 2 + 8 :, PHOTO_SIZE[0] // 2 + 8 :].mean() < 0.05  # the photo elsewhere
    assert heat_map.as_dict()["heatmap_png"] == heat_map.png
    again = explain_images(model, [target], ExplainSettings(method="integrated_gradients", steps=8, folder=folder))
    assert again[0].png == heat_map.png  # tunewise's own folder: its heat maps are replaced
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["7-honey_bee.png"]


def test_heat_maps_are_never_written_among_other_files(photo: Path, tmp_path: Path) -> None:
    model = QuadrantModel()
    target = target_of(photo, model)
    users = tmp_path / "holiday"
    users.mkdir()
    (users / "0-zero.png").write_bytes(b"a user's own picture")
    with pytest.raises(ConfigError, match="already holds other files"):
        explain_images(model, [target], ExplainSettings(method="grad_cam", folder=users))
    assert (users / "0-zero.png").read_bytes() == b"a user's own picture"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file"):
        explain_images(model, [target], ExplainSettings(method="grad_cam", folder=a_file))
    with pytest.raises(ConfigError, match="does not explain images"):
        explain_images(model, [target], ExplainSettings(method="occlusion"))


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_the_heat_map_lands_where_timms_transform_took_the_pixels_from(crop_mode: str, tmp_path: Path) -> None:
    """A white square in a 300x200 photo, through timm's evaluation transform (crop 0.875): an attribution
    on the square's place in the input maps back onto the square in the photo."""
    pixels = np.zeros((200, 300, 3), dtype=np.uint8)
    pixels[60:76, 200:216] = 255  # inside the centre crop of every mode
    view = InputView(MEAN, STD, 0.875, crop_mode)
    transform = timm.data.create_transform(
        input_size=(3, 64, 64), is_training=False, crop_pct=0.875, crop_mode=crop_mode, mean=MEAN, std=STD
    )
    seen_by_model = transform(Image.fromarray(pixels)).sum(dim=0).numpy()
    scores = (seen_by_model > 1.5).astype(np.float32)  # the square, where the input has it (white: 3)
    on_photo, seen = to_photo_size(scores, (300, 200), view)
    assert on_photo.shape == seen.shape == (200, 300)
    mass = on_photo[56:80, 196:220].sum() / on_photo.sum()
    assert mass > 0.9, mass
    assert on_photo.sum() == pytest.approx(scores.sum(), rel=0.05)  # a region keeps its total
    if crop_mode == "center":  # 300x200 -> 109x73 (64 / 0.875), of which the centre 64x64 is kept
        assert not seen[:, :55].any() and not seen[:, 245:].any() and not seen[:8].any() and not seen[-8:].any()
        assert seen[15:185, 65:235].all()
    if crop_mode == "border":  # 300x200 -> 73x49: padded to 64 high (every row seen), cut to 64 wide
        assert seen[:, 20:275].all() and not seen[:, :12].any() and not seen[:, -12:].any()


def test_grad_cam_reads_the_map_before_timms_global_pooling() -> None:
    """timm's forward_features output: the last stage (ResNet), the head conv's norm and activation
    (EfficientNet); a ViT's tokens are no map, so it has no Grad-CAM layer."""
    probe = torch.randn(1, 3, 64, 64)
    for architecture, layer in (("test_resnet", "layer4"), ("test_efficientnet", "bn2"), ("test_convnext", "stages")):
        backbone = timm.create_model(architecture, num_classes=0).eval()
        found = feature_layer(backbone, probe)
        assert found is dict(backbone.named_modules())[layer], (architecture, found)
    vit = timm.create_model("test_vit", num_classes=0, img_size=64).eval()
    assert feature_layer(vit, probe) is None
    assert input_view(vit).crop_pct == timm.data.resolve_model_data_config(vit)["crop_pct"]


# ------------------------------------------------------------------------------------------ the task


TINY_ARCHITECTURE = "test_efficientnet"
IMAGE_SIZE = 64  # the smallest size whose last feature map is larger than 1x1 (2x2)


def colour_photos(root: Path, per_class: int) -> Path:
    """A noisy non-square photo per row whose dominant channel is its class (an ImageFolder tree)."""
    rng = random.Random(0)
    for colour, channel in (("blue", 2), ("red", 0)):
        (root / colour).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 90, (60, 80, 3))
            pixels[..., channel] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / colour / f"{colour}{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The task, its processor and a model built from a config (random timm test weights, untrained head)."""
    folder = tmp_path_factory.mktemp("task")
    torch.manual_seed(0)
    weights = folder / "tiny.safetensors"
    save_file(timm.create_model(TINY_ARCHITECTURE).state_dict(), str(weights))
    train = colour_photos(folder / "train", 3)
    config = make_config(
        folder,
        weights,
        {"train": str(train)},
        task="image-classification",
        image={"architecture": TINY_ARCHITECTURE, "image_size": IMAGE_SIZE},
    )
    task = make_task(load_config(config))
    frame = task.data.read(str(train), "train")
    task.data.learn(frame)
    source = task.model.source(str(weights))
    model = task.model.build(source, CheckpointHints(), "mean")
    return task, task.model.processor(source), model, frame


def test_the_image_task_explains_its_predictions_end_to_end(tiny_task: tuple, tmp_path: Path) -> None:
    task, processor, model, frame = tiny_task
    model.eval()
    assert task.facts().capabilities.explanations
    piece = explanation(task)
    targets = piece.targets(model, processor, frame, max_length=0)
    assert [t.row for t in targets] == list(range(len(frame)))
    assert [t.path for t in targets] == frame["image"].tolist()
    assert all(t.pixel_values.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) for t in targets)
    with torch.no_grad():
        probabilities = torch.softmax(model(pixel_values=torch.cat([t.pixel_values for t in targets])).logits, -1)
    for target, row in zip(targets, probabilities, strict=True):
        assert target.index == int(row.argmax()) and target.name == task.labels.names[target.index]
        assert target.probability == pytest.approx(float(row[target.index]), abs=1e-5)

    chosen = piece.targets(model, processor, frame, max_length=0, label="red")
    assert {(t.name, t.index) for t in chosen} == {("red", task.labels.names.index("red"))}
    with pytest.raises(ConfigError, match=r"'green' is not one of the model's labels.*blue, red"):
        piece.targets(model, processor, frame, max_length=0, label="green")

    inputs = task.data.from_inputs(frame["image"].tolist()[:2])  # what predict() passes: image paths
    two = piece.targets(model, processor, inputs, max_length=0, label="red")
    for method in IMAGE_METHODS:
        heat_maps = explain_images(model, two, ExplainSettings(method=method, steps=4, folder=tmp_path / method))
        assert [h.method for h in heat_maps] == [method, method]  # a 2x2 map: Grad-CAM applies
        for heat_map in heat_maps:
            assert heat_map.scores.shape == (60, 80) and np.isfinite(heat_map.scores).all()
            assert heat_map.png is not None and Image.open(heat_map.png).size == (80, 60)
    assert all(p.grad is None for p in model.parameters())


def test_a_model_without_a_feature_map_is_explained_with_integrated_gradients(tiny_task: tuple) -> None:
    """At 32 px the test model's last map is 1x1: Grad-CAM would paint the whole image one colour."""
    task, processor, model, frame = tiny_task
    (target,) = explanation(task).targets(model, processor, frame.head(1), max_length=0)
    small = ImageExplanationTarget(
        0, target.name, target.pixel_values[..., 16:48, 16:48], target.index, target.path, 0.5
    )
    with pytest.warns(UserWarning, match="explained with integrated_gradients instead"):
        (heat_map,) = explain_images(model, [small], ExplainSettings(method="grad_cam", steps=4))
    assert heat_map.method == "integrated_gradients" and heat_map.convergence_delta is not None
