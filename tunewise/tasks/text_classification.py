"""Text classification: single-label, multi-label and regression, on one text or a sentence pair.

The problem type follows from the labels unless the config fixes it: lists of labels are
multi-label (sigmoid outputs and a threshold tuned on validation), non-integer numbers are
regression, anything else is single-label (string or integer class names, kept as `id2label`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel

from tunewise.audit.findings import Finding
from tunewise.config.schema import RunConfig
from tunewise.data.readers import read_table
from tunewise.data.token_cache import tokenize
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.evaluation.metrics import (
    metric_names,
    multi_label_metrics,
    regression_metrics,
    single_label_metrics,
    tune_threshold,
)
from tunewise.models.pooled_classifier import PooledEncoderConfig, PooledModelForSequenceClassification
from tunewise.models.registry import CheckpointHints, ModelSource, load_text_tokenizer, resolve_model
from tunewise.training.batching import EncodedSplit

PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}
DEFAULT_METRICS = {"single_label": "f1_macro", "multi_label": "f1_micro", "regression": "mse"}


class TextClassificationTask:
    name = "text-classification"
    keeps_logits = True  # metrics need every row's logits
    truncates = True

    def __init__(self, config: RunConfig):
        self.data = config.data
        self.problem_type = config.data.problem_type
        self.label_names: list[str] = []
        self.threshold = 0.5

    @property
    def targets(self) -> str:
        return f"label column `{self.data.label_column}`"

    # ----- model source -----------------------------------------------------------------------
    def resolve_source(self, name: str) -> ModelSource:
        return resolve_model(name)

    def load_tokenizer(self, source: ModelSource) -> Any:
        return load_text_tokenizer(source)

    # ----- data -----------------------------------------------------------------------------
    @property
    def text_columns(self) -> list[str]:
        return [self.data.text_column] + ([self.data.text_pair_column] if self.data.text_pair_column else [])

    def read_split(self, source: str, split: str, with_labels: bool = True) -> pd.DataFrame:
        label = self.data.label_column if with_labels else None
        return read_table(source, split, self.text_columns, label)

    def fit_labels(self, train: pd.DataFrame) -> None:
        values = train[self.data.label_column]
        if self.problem_type == "auto":
            self.problem_type = infer_problem_type(values)
        if self.problem_type == "regression":
            self.label_names = [self.data.label_column]
            self._regression_targets(train, "train")
        elif self.problem_type == "multi_label":
            self.label_names = sorted({name for labels in self._label_lists(train, "train") for name in labels})
        else:
            self.label_names = sort_label_names({normalise_label(value) for value in values})
            if len(self.label_names) < 2:
                raise DataError(
                    f"train: every row has the label {self.label_names[0]!r}; a classifier needs at least two "
                    f"classes. Check data.label_column ({self.data.label_column})."
                )

    def check_split(self, frame: pd.DataFrame, split: str, source: str) -> None:
        if self.problem_type == "regression":
            self._regression_targets(frame, source)
            return
        known = set(self.label_names)
        if self.problem_type == "multi_label":
            row_labels = self._label_lists(frame, source)
        else:
            row_labels = [[normalise_label(value)] for value in frame[self.data.label_column]]
        unseen = [(row, set(labels) - known) for row, labels in zip(frame["_row"], row_labels, strict=True)]
        unseen = [(row, unknown) for row, unknown in unseen if unknown]
        if unseen:
            names = sorted({name for _, unknown in unseen for name in unknown})
            examples = ", ".join(str(row) for row, _ in unseen[:5])
            raise DataError(
                f"{source}: label(s) {', '.join(map(repr, names))} in {len(unseen)} {split} row(s) (e.g. row "
                f"{examples}) never occur in training, so the model cannot predict them. Add training rows with "
                f"those labels or remove these rows. Training labels: {', '.join(self.label_names)}."
            )

    def audit_findings(self, frames: dict[str, pd.DataFrame], tokenizer: Any, max_length: int) -> list[Finding]:
        """Balance, label noise and the text checks are shared (tunewise.audit): nothing task-specific."""
        return []

    def normalised_labels(self, frame: pd.DataFrame) -> list[str]:
        """A single-label frame's labels as class names (1, 1.0 and "1" are the same class)."""
        return [normalise_label(value) for value in frame[self.data.label_column]]

    def stratifies(self) -> bool:
        return self.problem_type == "single_label"

    def metric_names(self) -> list[str]:
        names = metric_names(self.problem_type)
        if self.problem_type == "single_label":  # ROC-AUC is binary, its one-vs-rest form multiclass
            names = [n for n in names if n != ("roc_auc_ovr" if len(self.label_names) == 2 else "roc_auc")]
        return [*names, "loss"]

    def default_metric(self) -> str:
        return DEFAULT_METRICS[self.problem_type]

    # ----- model ----------------------------------------------------------------------------
    def build_model(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """Weights load in float32 whatever the checkpoint stores (transformers 5 would keep its bf16 or
        fp16): mixed precision trains float32 master weights under autocast."""
        encoder_config = AutoConfig.from_pretrained(source.location)
        if pooling == "cls":  # the stock head: loads in transformers with no extra argument
            self.save_settings(encoder_config)
            return AutoModelForSequenceClassification.from_pretrained(
                source.location, config=encoder_config, dtype=torch.float32
            )
        encoder_settings = {k: v for k, v in encoder_config.to_dict().items() if k != "_name_or_path"}
        model_config = PooledEncoderConfig(encoder=encoder_settings, pooling=pooling)
        self.save_settings(model_config)
        model = PooledModelForSequenceClassification(model_config)
        backbone = AutoModel.from_pretrained(source.location, dtype=torch.float32)
        missing, _ = model.encoder.load_state_dict(backbone.state_dict(), strict=False)
        if missing:
            raise ConfigError(
                f"model: {source.name} does not hold a complete {type(backbone).__name__} ({len(missing)} weights "
                f"missing, e.g. {missing[0]}). Point model at a pretrained encoder checkpoint."
            )
        return model

    def load_trained(self, model_dir: Path) -> PreTrainedModel:
        """tunewise's own head class is imported here, so its remote code is never executed."""
        settings = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if settings.get("model_type") == PooledEncoderConfig.model_type:
            return PooledModelForSequenceClassification.from_pretrained(model_dir)
        return AutoModelForSequenceClassification.from_pretrained(model_dir)

    def save_settings(self, model_config: Any) -> None:
        model_config.num_labels = len(self.label_names)
        model_config.id2label = dict(enumerate(self.label_names))
        model_config.label2id = {name: i for i, name in enumerate(self.label_names)}
        model_config.problem_type = PROBLEM_TYPES[self.problem_type]
        if self.problem_type == "multi_label":
            model_config.tunewise_threshold = self.threshold

    def restore(self, model_config: Any) -> None:
        self.problem_type = {v: k for k, v in PROBLEM_TYPES.items()}[
            model_config.problem_type or PROBLEM_TYPES["single_label"]
        ]
        self.label_names = [model_config.id2label[i] for i in range(len(model_config.id2label))]
        self.threshold = getattr(model_config, "tunewise_threshold", 0.5)

    # ----- encoding ---------------------------------------------------------------------------
    def encode(
        self, frame: pd.DataFrame, tokenizer: Any, max_length: int, use_cache: bool = False, training: bool = False
    ) -> EncodedSplit:
        texts = frame[self.data.text_column].tolist()
        pairs = frame[self.data.text_pair_column].tolist() if self.data.text_pair_column else None
        columns = ("input_ids", "token_type_ids") if pairs is not None else ("input_ids",)
        sequences = tokenize(tokenizer, texts, pairs, max_length, columns, use_cache=use_cache)
        labels = self._targets(frame) if self.data.label_column in frame.columns else None
        return EncodedSplit(sequences=sequences, labels=labels)

    def frame_from_inputs(self, inputs: list[str] | list[tuple[str, str]] | str) -> pd.DataFrame:
        """Raw texts (or (text, pair) tuples) as a frame in the columns the model was trained on."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if self.data.text_pair_column:
            if not all(
                isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in texts
            ):
                raise TunewiseError(
                    "This model classifies sentence pairs: pass (text, pair) tuples, "
                    'e.g. predict([("A man is sleeping.", "A person rests.")]).'
                )
            return pd.DataFrame(texts, columns=[self.data.text_column, self.data.text_pair_column])
        if not all(isinstance(t, str) for t in texts):
            raise TunewiseError("predict() takes a string or a list of strings.")
        return pd.DataFrame({self.data.text_column: texts})

    def _targets(self, frame: pd.DataFrame) -> np.ndarray:
        if self.problem_type == "regression":
            return self._regression_targets(frame, "data")
        index = {name: i for i, name in enumerate(self.label_names)}
        if self.problem_type == "multi_label":
            targets = np.zeros((len(frame), len(self.label_names)), dtype=np.float32)
            for row, labels in enumerate(self._label_lists(frame, "data")):
                targets[row, [index[name] for name in labels]] = 1.0
            return targets
        return np.array([index[normalise_label(v)] for v in frame[self.data.label_column]], dtype=np.int64)

    def _regression_targets(self, frame: pd.DataFrame, source: str) -> np.ndarray:
        values = pd.to_numeric(frame[self.data.label_column], errors="coerce")
        bad = frame["_row"][values.isna()].tolist()
        if bad:
            raise DataError(
                f"{source}: {len(bad)} label(s) in column {self.data.label_column!r} are not numbers (row "
                f"{', '.join(map(str, bad[:5]))}); regression needs a number in every row."
            )
        return values.to_numpy(dtype=np.float32)

    def _label_lists(self, frame: pd.DataFrame, source: str) -> list[list[str]]:
        return [
            parse_label_list(value, row, source)
            for value, row in zip(frame[self.data.label_column], frame["_row"], strict=True)
        ]

    # ----- outputs ------------------------------------------------------------------------------
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        if self.problem_type == "regression":
            return logits[:, 0]
        tensor = torch.from_numpy(logits).float()
        return (torch.sigmoid(tensor) if self.problem_type == "multi_label" else tensor.softmax(-1)).numpy()

    def calibrate(self, logits: np.ndarray, split: EncodedSplit) -> None:
        if self.problem_type == "multi_label":
            self.threshold = tune_threshold(self.probabilities(logits), split.labels)

    def compute_metrics(self, logits: np.ndarray, split: EncodedSplit, loss: float | None = None) -> dict[str, Any]:
        outputs, labels = self.probabilities(logits), split.labels
        if self.problem_type == "regression":
            return regression_metrics(outputs, labels)
        if self.problem_type == "multi_label":
            return multi_label_metrics(outputs, labels, self.label_names, self.threshold)
        return single_label_metrics(outputs, labels, self.label_names)

    def present(self, logits: np.ndarray, split: EncodedSplit) -> pd.DataFrame:
        """Prediction columns, prefixed so they never collide with the user's own columns."""
        outputs = self.probabilities(logits)
        if self.problem_type == "regression":
            return pd.DataFrame({"prediction": outputs})
        probability_columns = {f"prob_{name}": outputs[:, i] for i, name in enumerate(self.label_names)}
        if self.problem_type == "multi_label":
            chosen = [
                "|".join(n for n, p in zip(self.label_names, row, strict=True) if p >= self.threshold)
                for row in outputs
            ]
            return pd.DataFrame({"predicted_labels": chosen, **probability_columns})
        best = outputs.argmax(axis=1)
        return pd.DataFrame(
            {
                "predicted_label": [self.label_names[i] for i in best],
                "score": outputs.max(axis=1),
                **probability_columns,
            }
        )


def normalise_label(value: Any) -> str:
    """Class names as strings; 1, 1.0 and "1" are the same class."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def sort_label_names(names: set[str]) -> list[str]:
    """Numeric class names sort numerically (0, 1, 2, 10), others alphabetically."""
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def infer_problem_type(values: pd.Series) -> str:
    sample = values.iloc[0]
    if isinstance(sample, (list, tuple, np.ndarray)) or (isinstance(sample, str) and sample.strip().startswith("[")):
        return "multi_label"
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all() and not np.allclose(numbers, numbers.round()):
        return "regression"
    return "single_label"


def parse_label_list(value: Any, row: int, source: str) -> list[str]:
    """A row's labels: a list (JSONL/Parquet), a JSON list in a string, or names separated by '|'."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [normalise_label(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise DataError(
                f'{source}, row {row}: label {text!r} is not a valid JSON list; write it as ["a", "b"] or a|b.'
            ) from None
        return [normalise_label(v) for v in parsed]
    return [normalise_label(v) for v in text.split("|") if v.strip()]
