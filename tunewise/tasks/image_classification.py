"""Image classification: one label per image, with any timm backbone.

Data is an ImageFolder tree or a table of image paths and labels (`tunewise.data.images`). Files
that are not readable images are left out with a warning naming each, and the data check lists
them, so one truncated download never stops a run. Rows become tensors only when a batch needs
them (`EncodedSplit.loader`): timm's evaluation transform for the model's data config, and for the
training split random resized crops, flips and optional RandAugment. Images are decoded in a
thread pool (PIL releases the GIL), the random transforms run in order on the calling thread, so
a batch is a pure function of the RNG state and a resumed run sees the same pixels. Explanations
(`ImageExplainer`) take each row through the same evaluation transform, so a heat map explains exactly
the input and the probability that prediction saw.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from tunewise.config.rules import Rule, rule
from tunewise.config.sections import RunConfig, Section
from tunewise.data.images import UnreadableImage, file_sha256, load_rgb, read_images, unreadable_images
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.inference import predict_logits
from tunewise.models.registry import save_pretrained
from tunewise.tasks.classes import ClassLabels, ClassScoring, normalise_label, sort_label_names
from tunewise.types import (
    Capabilities,
    CheckpointHints,
    EncodedSplit,
    Finding,
    ImageExplanationTarget,
    ModelSource,
    Purpose,
    TaskFacts,
)

if TYPE_CHECKING:  # timm is imported when an image task runs, not whenever tunewise loads
    from tunewise.models.vision import ImageProcessor, TimmImageClassifier, VisionSource

NAME: Final = "image-classification"
DECODE_THREADS = 8
SHOWN_FILES = 10  # unreadable files named in a data-check message or an error (the finding's details: all)


# ------------------------------------------------------------------------------------------ config


class ImageSection(Section):
    path_column: str = Field(
        default="image",
        description="CSV/JSONL/Parquet data: the column holding each image's path; relative "
        "paths are resolved against the data file's folder. An ImageFolder tree (root/<class>/<image>) needs none.",
    )
    architecture: str | None = Field(
        default=None,
        description="the timm architecture of a bare state_dict given as model (a .pth or "
        ".safetensors file), e.g. resnet18. Built-in, hub and saved-run models know their own.",
    )
    image_size: int | None = Field(
        default=None,
        ge=16,
        description="train and predict at this square input size (pixels); null: the "
        "pretrained model's own (timm's data config, 224 for efficientnet-lite0).",
    )
    crop_scale: tuple[float, float] = Field(
        default=(0.08, 1.0),
        description="training crops cover this range of each image's area (random resized "
        "crop), then are resized to the input size.",
    )
    hflip: float = Field(default=0.5, ge=0, le=1, description="probability of a horizontal flip in training.")
    randaugment: str | None = Field(
        default=None,
        description="timm RandAugment policy for training images, e.g. rand-m9-mstd0.5 "
        "(magnitude 9 with noise); null: none.",
    )
    mixup_alpha: float = Field(
        default=0.0,
        ge=0,
        description="mixup strength; each training batch is blended with a shuffled copy of "
        "itself (weight drawn from Beta(alpha, alpha)), and the loss with the same blend of the labels. 0: off; "
        "0.2 is usual.",
    )

    @field_validator("randaugment")
    @classmethod
    def _randaugment(cls, value: str | None) -> str | None:
        # timm reads the policy leniently (an unknown part is silently ignored), so check it here
        part = r"(m|mstd|mmax|p)\d+(\.\d+)?|n\d+|w\d+|inc[01]"
        if value is not None and not re.fullmatch(rf"rand(-({part}))*", value):
            raise ValueError(
                f"randaugment {value!r} is not a RandAugment policy: write rand- then parts joined by '-': m9 "
                "(magnitude, 0-10), n2 (operations per image), mstd0.5 (magnitude noise), e.g. rand-m9-mstd0.5"
            )
        return value

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError("crop_scale must be [low, high] with 0 < low <= high <= 1, e.g. [0.08, 1.0]")
        return value


@rule(NAME, "data.label_column")
def label_is_not_the_path_column(config: ImageClassificationConfig) -> str | None:
    if config.data.label_column == config.image.path_column:
        return "must differ from image.path_column"
    return None


@rule(NAME, "data.dedupe")
def dedupe_compares_texts(config: ImageClassificationConfig) -> str | None:
    if config.data.dedupe:
        return (
            "data.dedupe compares texts; image-classification reports identical image files across splits in the "
            "data check instead. Set data.dedupe: false and remove the copies it lists"
        )
    return None


@rule(NAME, "image.mixup_alpha")
def mixup_keeps_the_model_loss(config: ImageClassificationConfig) -> str | None:
    if config.image.mixup_alpha > 0 and config.data.balance == "reweight":
        return (
            "image.mixup_alpha blends labels inside the model's loss, which data.balance: reweight replaces; use "
            "data.balance: oversample with mixup, or set image.mixup_alpha: 0"
        )
    return None


class ImageClassificationConfig(RunConfig):
    """One class per image, with any timm backbone, from an ImageFolder tree or a table of image paths."""

    rules: ClassVar[tuple[Rule, ...]] = (
        *RunConfig.rules,
        label_is_not_the_path_column,
        dedupe_compares_texts,
        mixup_keeps_the_model_loss,
    )

    task: Literal["image-classification"] = Field(
        default=NAME, description="image-classification: one class per image (timm models)."
    )
    model: str = Field(
        default="efficientnet-lite0",
        description="The built-in efficientnet-lite0 (offline ImageNet weights), any timm model name (e.g. "
        "timm/resnet18.a1_in1k, from the Hugging Face hub), a .pth/.safetensors state_dict (with "
        "image.architecture), or a tunewise run's model/ folder.",
    )
    image: ImageSection = Field(
        default_factory=ImageSection, description="The path column, input size and training augmentation."
    )


# ------------------------------------------------------------------------------------------ the task


class ImageClassificationTask:
    def __init__(self, config: ImageClassificationConfig):
        self.labels = ClassLabels(problem_type="single_label")
        self.data = ImageReader(config, self.labels)
        self.model = ImageModel(config.image, self.labels)
        self.scoring = ClassScoring(self.labels)
        self.explanation = ImageExplainer(self.data, self.labels)
        self._label_column = config.data.label_column

    def facts(self) -> TaskFacts:
        return TaskFacts(
            name=NAME,
            problem_type="single_label",
            text_columns=(),  # no text: the data check's text checks do not apply
            label_names=tuple(self.labels.names),
            targets=f"label column `{self._label_column}` (an ImageFolder tree: each image's class folder)",
            metrics=self.labels.metric_names(),
            default_metric="f1_macro",
            capabilities=Capabilities(
                stratified_split=True,
                class_labels=True,
                truncates=False,
                reads_text=False,  # resized, never cut
                explanations=True,
            ),
        )


class ImageReader:
    def __init__(self, config: ImageClassificationConfig, labels: ClassLabels):
        self.config = config.data
        self.image = config.image
        self.labels = labels
        self.unreadable: dict[str, list[UnreadableImage]] = {}  # split -> files left out

    def read(self, source: str, split: str, labelled: bool = True) -> pd.DataFrame:
        """The split's images; unreadable files are left out with a warning naming each."""
        label_column = self.config.label_column if labelled else None
        frame = read_images(source, split, self.image.path_column, label_column)
        if label_column is not None:
            frame[label_column] = [normalise_label(value) for value in frame[label_column]]
        bad = unreadable_images(frame, self.image.path_column)
        self.unreadable[split] = bad
        if not bad:
            return frame
        if len(bad) == len(frame):
            raise DataError(
                f"{split} data {source!r}: none of its {len(frame)} image(s) can be read (e.g. {bad[0].path}: "
                f"{bad[0].reason}). Relative paths are resolved against the data file's folder; check "
                f"image.path_column ({self.image.path_column})."
            )
        listed = "".join(f"\n  {item.path} ({item.reason})" for item in bad)
        warnings.warn(f"{split}: skipping {len(bad)} unreadable image file(s):{listed}", stacklevel=2)
        skipped = {item.row for item in bad}
        return frame[~frame["_row"].isin(skipped)].reset_index(drop=True)

    def learn(self, train: pd.DataFrame) -> None:
        self.labels.names = sort_label_names(set(train[self.config.label_column]))
        if len(self.labels.names) < 2:
            raise DataError(
                f"train: every image has the label {self.labels.names[0]!r}; a classifier needs at least two classes "
                "(an ImageFolder tree needs two class folders)."
            )

    def check(self, frame: pd.DataFrame, split: str, source: str) -> None:
        unseen = frame[~frame[self.config.label_column].isin(self.labels.names)]
        if len(unseen):
            names = sorted(set(unseen[self.config.label_column]))
            raise DataError(
                f"{source}: label(s) {', '.join(map(repr, names))} in {len(unseen)} {split} image(s) (e.g. "
                f"{unseen[self.image.path_column].iloc[0]}) never occur in training, so the model cannot predict "
                f"them. Add training images of those classes or remove these. Training labels: "
                f"{', '.join(self.labels.names)}."
            )

    def findings(self, frames: dict[str, pd.DataFrame], processor: Any, max_length: int) -> list[Finding]:
        """Unreadable files, and identical image files repeated in train or shared between splits."""
        findings = [self._unreadable_finding(split, bad) for split, bad in self.unreadable.items() if bad]
        return findings + self._identical_files(frames)

    def _unreadable_finding(self, split: str, bad: list[UnreadableImage]) -> Finding:
        listed = "; ".join(f"{item.path} ({item.reason})" for item in bad[:SHOWN_FILES])
        return Finding(
            "validity",
            "warning",
            f"{split}: {len(bad)} file(s) are not readable images and are skipped in training and evaluation: "
            f"{listed}{' ...' if len(bad) > SHOWN_FILES else ''}",
            "Replace each with a valid image (re-download truncated files) or remove it from the data.",
            split,
            len(bad),
            [item.row for item in bad],
            {"files": [{"path": item.path, "reason": item.reason} for item in bad]},
        )

    def _identical_files(self, frames: dict[str, pd.DataFrame]) -> list[Finding]:
        column = self.image.path_column
        owners: dict[str, list[tuple[str, str]]] = defaultdict(list)  # sha256 -> (split, path)
        for split, frame in frames.items():
            for path in frame[column]:
                owners[file_sha256(path)].append((split, path))
        findings = []
        repeated = [places for places in owners.values() if len(places) > 1 and {s for s, _ in places} == {"train"}]
        if repeated:
            findings.append(
                Finding(
                    "duplicates",
                    "warning",
                    f"train: {sum(len(p) - 1 for p in repeated)} image file(s) repeat an earlier one byte for byte "
                    f"(e.g. {repeated[0][0][1]} and {repeated[0][1][1]}).",
                    "Remove the copies: they weigh those images more than the rest.",
                    "train",
                    sum(len(p) - 1 for p in repeated),
                    details={"groups": [[path for _, path in places] for places in repeated[:20]]},
                )
            )
        for split in [s for s in frames if s != "train"]:
            shared = [places for places in owners.values() if {"train", split} <= {s for s, _ in places}]
            if shared:
                example = [path for s, path in shared[0] if s in ("train", split)]
                findings.append(
                    Finding(
                        "leakage",
                        "warning",
                        f"{split}: {len(shared)} image(s) are also in train, byte for byte (e.g. {example[0]} and "
                        f"{example[-1]}); every {split} metric is inflated by them.",
                        f"Remove these images from {split} or from train.",
                        split,
                        len(shared),
                        details={"files": [[path for _, path in places] for places in shared[:20]]},
                    )
                )
        return findings

    def encode(
        self, frame: pd.DataFrame, processor: Any, max_length: int, purpose: Purpose, use_cache: bool = False
    ) -> EncodedSplit:
        """No pixels yet: a loader that decodes and transforms a batch's images when it is needed."""
        if not hasattr(processor, "transform"):
            raise ConfigError("image-classification needs an image processor; check model and task in the config.")
        paths = frame[self.image.path_column].tolist()
        labels = None
        if purpose != "predict" and self.config.label_column in frame.columns:
            index = {name: i for i, name in enumerate(self.labels.names)}
            labels = np.array([index[value] for value in frame[self.config.label_column]], dtype=np.int64)
        transform = processor.transform(purpose == "train")

        def loader(indices: np.ndarray) -> dict[str, torch.Tensor]:
            images = list(_decoder().map(load_rgb, [paths[i] for i in indices]))
            return {"pixel_values": torch.stack([transform(image) for image in images])}

        return EncodedSplit(sequences={}, labels=labels, fixed_shape=True, loader=loader, rows=len(paths))

    def resolve(self, config: ImageClassificationConfig) -> ImageClassificationConfig:
        """Reading the data settles no setting of this task."""
        return config

    def from_inputs(self, inputs: list[str] | str) -> pd.DataFrame:
        """Image paths as a frame; a path that is not a readable image is an error naming it."""
        paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        if not all(isinstance(p, (str, Path)) for p in paths):
            raise TunewiseError("predict() takes an image path or a list of image paths.")
        frame = pd.DataFrame({self.image.path_column: [str(Path(p).expanduser().resolve()) for p in paths]})
        frame["_row"] = range(1, len(frame) + 1)
        bad = unreadable_images(frame, self.image.path_column)
        if bad:
            listed = "; ".join(f"{item.path} ({item.reason})" for item in bad[:SHOWN_FILES])
            more = f" and {len(bad) - SHOWN_FILES} more" if len(bad) > SHOWN_FILES else ""
            raise DataError(
                f"{len(bad)} of the given file(s) cannot be read as images: {listed}{more}. Pass image files "
                "(JPEG, PNG, ...) that open in an image viewer."
            )
        return frame.drop(columns="_row")


class ImageModel:
    def __init__(self, image: ImageSection, labels: ClassLabels):
        self.image = image
        self.labels = labels
        self._sources: dict[str, VisionSource] = {}

    def source(self, name: str) -> ModelSource:
        from tunewise.models.vision import architecture_family, resolve_vision_model

        vision = resolve_vision_model(name, self.image.architecture)
        self._sources[name] = vision
        location = str(vision.weights) if vision.weights is not None else vision.hub_name
        assert location is not None
        return ModelSource(name, location, is_local=vision.hub_name is None, family=architecture_family(vision))

    def processor(self, source: ModelSource) -> ImageProcessor:
        from tunewise.models.vision import PROCESSOR_FILE, Augmentation, ImageProcessor

        augmentation = Augmentation(
            scale=(self.image.crop_scale[0], self.image.crop_scale[1]),
            hflip=self.image.hflip,
            auto_augment=self.image.randaugment,
        )
        if source.is_local and (Path(source.location) / PROCESSOR_FILE).is_file() and source.name not in self._sources:
            return ImageProcessor.from_pretrained(source.location)  # a saved run: its own evaluation transform
        return ImageProcessor.for_model(self._vision(source), self.image.image_size, augmentation)

    def _vision(self, source: ModelSource) -> VisionSource:
        if source.name not in self._sources:
            self.source(source.name)
        return self._sources[source.name]

    def build(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> TimmImageClassifier:
        """The pretrained backbone with a fresh classifier; timm's pooling, so `pooling` does not apply."""
        from tunewise.models.vision import TimmImageConfig, build_image_classifier

        config = TimmImageConfig(architecture=self._vision(source).architecture)
        self.labels.save_to(config)
        model = build_image_classifier(self._vision(source), config)
        model.mixup_alpha = self.image.mixup_alpha
        return model

    def save(self, model: Any, processor: Any, folder: Path) -> None:
        self.labels.save_to(model.config)
        save_pretrained(model, processor, folder)

    def load(self, folder: Path) -> TimmImageClassifier:
        from tunewise.models.vision import load_image_classifier

        model = load_image_classifier(folder)
        self.restore(folder)
        return model

    def restore(self, folder: Path) -> None:
        """The class names, from config.json."""
        from tunewise.models.vision import TimmImageConfig

        self.labels.restore_from(TimmImageConfig.from_pretrained(folder))


class ImageExplainer:
    """Each row's image as the model takes it (the evaluation transform, through `ImageReader.encode`)
    and the class to explain: the predicted one, or `label`. The probabilities come from the same
    `predict_logits` pass prediction uses, so the explained probability is the one the user sees."""

    def __init__(self, reader: ImageReader, labels: ClassLabels):
        self.reader = reader
        self.labels = labels

    def targets(
        self, model: Any, processor: Any, frame: pd.DataFrame, max_length: int, label: str | None = None
    ) -> list[ImageExplanationTarget]:
        """One target per row of `frame`, in row order; an unknown `label` is an error naming the labels."""
        chosen = self._label_index(label)
        encoded = self.reader.encode(frame, processor, max_length, "predict")
        assert encoded.loader is not None, "image rows are encoded as a loader"
        logits, _ = predict_logits(model, encoded)
        assert isinstance(logits, np.ndarray), "an image classifier has one row of logits per image"
        probabilities = torch.softmax(torch.from_numpy(logits).float(), dim=-1).numpy()
        paths = frame[self.reader.image.path_column].tolist()
        targets = []
        for row, scores in enumerate(probabilities):
            index = chosen if chosen is not None else int(scores.argmax())
            targets.append(
                ImageExplanationTarget(
                    row=row,
                    name=self.labels.names[index],
                    pixel_values=encoded.loader(np.array([row]))["pixel_values"],
                    index=index,
                    path=paths[row],
                    probability=float(scores[index]),
                )
            )
        return targets

    def _label_index(self, label: str | None) -> int | None:
        if label is None:
            return None
        name = normalise_label(label)
        if name not in self.labels.names:
            raise ConfigError(
                f"label {label!r} is not one of the model's labels; explain one of: {', '.join(self.labels.names)}."
            )
        return self.labels.names.index(name)


_POOL: list[ThreadPoolExecutor] = []


def _decoder() -> ThreadPoolExecutor:
    """One shared pool for decoding: JPEG decoding releases the GIL, so threads overlap it."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="tunewise-decode"))
    return _POOL[0]
