"""Image classification: one label per image, with any timm backbone.

Data is an ImageFolder tree or a table of image paths and labels (`tunewise.data.images`). Files
that are not readable images are left out with a warning naming each, and the data check lists
them, so one truncated download never stops a run. Rows become tensors only when a batch needs
them (`EncodedSplit.loader`): timm's evaluation transform for the model's data config, and for the
training split random resized crops, flips and optional RandAugment. Images are decoded in a
thread pool (PIL releases the GIL), the random transforms run in order on the calling thread, so
a batch is a pure function of the RNG state and a resumed run sees the same pixels.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from tunewise.audit.findings import Finding
from tunewise.config.schema import RunConfig
from tunewise.data.images import UnreadableImage, file_sha256, load_rgb, read_images, unreadable_images
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.evaluation.metrics import metric_names, single_label_metrics
from tunewise.models.registry import CheckpointHints, ModelSource
from tunewise.tasks.text_classification import normalise_label, sort_label_names
from tunewise.training.batching import EncodedSplit

if TYPE_CHECKING:  # timm is imported when an image task runs, not whenever tunewise loads
    from tunewise.models.vision import ImageProcessor, TimmImageClassifier, VisionSource

DECODE_THREADS = 8
SHOWN_FILES = 10  # unreadable files named in a data-check message or an error (the finding's details: all)


class ImageClassificationTask:
    name = "image-classification"
    problem_type = "single_label"
    keeps_logits = True
    truncates = False  # images are resized, never cut

    def __init__(self, config: RunConfig):
        self.data = config.data
        self.image = config.image
        self.text_columns: list[str] = []  # no text: the data check's text checks do not apply
        self.label_names: list[str] = []
        self.unreadable: dict[str, list[UnreadableImage]] = {}  # split -> files left out
        self._sources: dict[str, VisionSource] = {}

    @property
    def targets(self) -> str:
        return f"label column `{self.data.label_column}` (an ImageFolder tree: each image's class folder)"

    # ----- model source -----------------------------------------------------------------------
    def resolve_source(self, name: str) -> ModelSource:
        from tunewise.models.vision import resolve_vision_model

        vision = resolve_vision_model(name, self.image.architecture)
        self._sources[name] = vision
        location = str(vision.weights) if vision.weights is not None else vision.hub_name
        return ModelSource(name, location, is_local=vision.hub_name is None)

    def load_tokenizer(self, source: ModelSource) -> ImageProcessor:
        from tunewise.models.vision import PROCESSOR_FILE, Augmentation, ImageProcessor

        augmentation = Augmentation(
            scale=tuple(self.image.crop_scale), hflip=self.image.hflip, auto_augment=self.image.randaugment
        )
        if source.is_local and (Path(source.location) / PROCESSOR_FILE).is_file() and source.name not in self._sources:
            return ImageProcessor.from_pretrained(source.location)  # a saved run: its own evaluation transform
        return ImageProcessor.for_model(self._vision(source), self.image.image_size, augmentation)

    def _vision(self, source: ModelSource) -> VisionSource:
        if source.name not in self._sources:
            self.resolve_source(source.name)
        return self._sources[source.name]

    # ----- data -----------------------------------------------------------------------------
    def read_split(self, source: str, split: str, with_labels: bool = True) -> pd.DataFrame:
        """The split's images; unreadable files are left out with a warning naming each."""
        label_column = self.data.label_column if with_labels else None
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

    def fit_labels(self, train: pd.DataFrame) -> None:
        self.label_names = sort_label_names(set(train[self.data.label_column]))
        if len(self.label_names) < 2:
            raise DataError(
                f"train: every image has the label {self.label_names[0]!r}; a classifier needs at least two classes "
                "(an ImageFolder tree needs two class folders)."
            )

    def check_split(self, frame: pd.DataFrame, split: str, source: str) -> None:
        unseen = frame[~frame[self.data.label_column].isin(self.label_names)]
        if len(unseen):
            names = sorted(set(unseen[self.data.label_column]))
            raise DataError(
                f"{source}: label(s) {', '.join(map(repr, names))} in {len(unseen)} {split} image(s) (e.g. "
                f"{unseen[self.image.path_column].iloc[0]}) never occur in training, so the model cannot predict "
                f"them. Add training images of those classes or remove these. Training labels: "
                f"{', '.join(self.label_names)}."
            )

    def audit_findings(self, frames: dict[str, pd.DataFrame], tokenizer: Any, max_length: int) -> list[Finding]:
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

    def stratifies(self) -> bool:
        return True

    def metric_names(self) -> list[str]:
        binary = len(self.label_names) == 2  # ROC-AUC is binary, its one-vs-rest form multiclass
        return [n for n in metric_names("single_label") if n != ("roc_auc_ovr" if binary else "roc_auc")] + ["loss"]

    def default_metric(self) -> str:
        return "f1_macro"

    # ----- model ----------------------------------------------------------------------------
    def build_model(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> TimmImageClassifier:
        """The pretrained backbone with a fresh classifier; timm's pooling, so `pooling` does not apply."""
        from tunewise.models.vision import TimmImageConfig, build_image_classifier

        config = TimmImageConfig(architecture=self._vision(source).architecture)
        self.save_settings(config)
        model = build_image_classifier(self._vision(source), config)
        model.mixup_alpha = self.image.mixup_alpha
        return model

    def load_trained(self, model_dir: Path) -> TimmImageClassifier:
        from tunewise.models.vision import load_image_classifier

        return load_image_classifier(model_dir)

    def save_settings(self, model_config: Any) -> None:
        model_config.num_labels = len(self.label_names)
        model_config.id2label = dict(enumerate(self.label_names))
        model_config.label2id = {name: i for i, name in enumerate(self.label_names)}

    def restore(self, model_config: Any) -> None:
        self.label_names = [model_config.id2label[i] for i in range(len(model_config.id2label))]

    # ----- encoding ---------------------------------------------------------------------------
    def encode(
        self, frame: pd.DataFrame, tokenizer: Any, max_length: int, use_cache: bool = False, training: bool = False
    ) -> EncodedSplit:
        """No pixels yet: a loader that decodes and transforms a batch's images when it is needed."""
        if not hasattr(tokenizer, "transform"):
            raise ConfigError("image-classification needs an image processor; check model and task in the config.")
        paths = frame[self.image.path_column].tolist()
        labels = None
        if self.data.label_column in frame.columns:
            index = {name: i for i, name in enumerate(self.label_names)}
            labels = np.array([index[value] for value in frame[self.data.label_column]], dtype=np.int64)
        transform = tokenizer.transform(training)

        def loader(indices: np.ndarray) -> dict[str, torch.Tensor]:
            images = list(_decoder().map(load_rgb, [paths[i] for i in indices]))
            return {"pixel_values": torch.stack([transform(image) for image in images])}

        return EncodedSplit(sequences={}, labels=labels, fixed_shape=True, loader=loader, rows=len(paths))

    def frame_from_inputs(self, inputs: list[str] | str) -> pd.DataFrame:
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

    # ----- outputs ------------------------------------------------------------------------------
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return torch.from_numpy(logits).float().softmax(-1).numpy()

    def calibrate(self, logits: np.ndarray, split: EncodedSplit) -> None:
        """The argmax needs no threshold."""

    def compute_metrics(self, logits: np.ndarray, split: EncodedSplit, loss: float | None = None) -> dict[str, Any]:
        return single_label_metrics(self.probabilities(logits), split.labels, self.label_names)

    def present(self, logits: np.ndarray, split: EncodedSplit) -> pd.DataFrame:
        outputs = self.probabilities(logits)
        best = outputs.argmax(axis=1)
        return pd.DataFrame(
            {
                "predicted_label": [self.label_names[i] for i in best],
                "score": outputs.max(axis=1),
                **{f"prob_{name}": outputs[:, i] for i, name in enumerate(self.label_names)},
            }
        )


_POOL: list[ThreadPoolExecutor] = []


def _decoder() -> ThreadPoolExecutor:
    """One shared pool for decoding: JPEG decoding releases the GIL, so threads overlap it."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="tunewise-decode"))
    return _POOL[0]
