"""What every classifier shares: its label space and its scoring, for text and images alike.

A classifier's outputs are one row of scores per input row. `ClassLabels` is the label space the
data piece learns (class names, problem type, the multi-label threshold calibrated on validation),
and `ClassScoring` turns the model's outputs into probabilities, per-row losses (what the
membership-inference attack thresholds), metrics and prediction columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tunewise.evaluation.metrics import (
    MULTI_LABEL_METRICS,
    REGRESSION_METRICS,
    SINGLE_LABEL_METRICS,
    multi_label_metrics,
    regression_metrics,
    single_label_metrics,
    tune_threshold,
)
from tunewise.inference import predict_logits
from tunewise.types import EncodedSplit, Outputs

PROBLEM_TYPES = {  # tunewise's problem types -> transformers' config.problem_type
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}
DEFAULT_METRICS = {"single_label": "f1_macro", "multi_label": "f1_micro", "regression": "mse"}
METRICS = {"single_label": SINGLE_LABEL_METRICS, "multi_label": MULTI_LABEL_METRICS, "regression": REGRESSION_METRICS}


@dataclass
class ClassLabels:
    """A classifier's label space: learnt from training rows, stored in the saved model's config."""

    problem_type: str = "single_label"  # or multi_label, regression ("auto" until learnt)
    names: list[str] = field(default_factory=list)
    threshold: float = 0.5  # multi-label: a label is predicted at or above this probability

    def metric_names(self) -> tuple[str, ...]:
        names = list(METRICS[self.problem_type])
        if self.problem_type == "single_label":  # ROC-AUC is binary, its one-vs-rest form multiclass
            names = [n for n in names if n != ("roc_auc_ovr" if len(self.names) == 2 else "roc_auc")]
        return (*names, "loss")

    def default_metric(self) -> str:
        return DEFAULT_METRICS[self.problem_type]

    def save_to(self, model_config: Any) -> None:
        """Labels, problem type and threshold into a transformers config (id2label, as pipelines read it)."""
        model_config.num_labels = len(self.names)
        model_config.id2label = dict(enumerate(self.names))
        model_config.label2id = {name: i for i, name in enumerate(self.names)}
        model_config.problem_type = PROBLEM_TYPES[self.problem_type]
        if self.problem_type == "multi_label":
            model_config.tunewise_threshold = self.threshold

    def restore_from(self, model_config: Any) -> None:
        by_transformers_name = {v: k for k, v in PROBLEM_TYPES.items()}
        self.problem_type = by_transformers_name[model_config.problem_type or PROBLEM_TYPES["single_label"]]
        self.names = [model_config.id2label[i] for i in range(len(model_config.id2label))]
        self.threshold = getattr(model_config, "tunewise_threshold", 0.5)


class ClassScoring:
    """Scores per row: softmax classes, sigmoid labels, or a regression value."""

    def __init__(self, labels: ClassLabels):
        self.labels = labels

    def run(self, model: nn.Module, processor: Any, split: EncodedSplit) -> Outputs:
        logits, loss = predict_logits(model, split)
        assert isinstance(logits, np.ndarray)
        outputs = Outputs(logits=logits, loss=loss, probabilities=self.probabilities(logits))
        if split.labels is not None:
            outputs.row_losses = self.row_losses(logits, np.asarray(split.labels))
        return outputs

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        if self.labels.problem_type == "regression":
            return logits[:, 0]
        tensor = torch.from_numpy(logits).float()
        return (torch.sigmoid(tensor) if self.labels.problem_type == "multi_label" else tensor.softmax(-1)).numpy()

    def row_losses(self, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Each row's loss, as the model was trained on it: cross-entropy for classes, binary cross-entropy
        averaged over labels for multi-label, squared error for regression (data.balance's class weights
        are left out: they are a training device, not the model's fit to a row). float32 from the logits,
        since the model's own loss is averaged over the batch."""
        scores, truth = torch.from_numpy(logits).float(), torch.from_numpy(targets)
        if self.labels.problem_type == "multi_label":
            losses = F.binary_cross_entropy_with_logits(scores, truth.float(), reduction="none").mean(-1)
        elif self.labels.problem_type == "regression":
            losses = F.mse_loss(scores.squeeze(-1), truth.float(), reduction="none")
        else:
            losses = F.cross_entropy(scores, truth.long(), reduction="none")
        return losses.double().numpy()

    def calibrate(self, outputs: Outputs, split: EncodedSplit) -> None:
        if self.labels.problem_type == "multi_label":
            assert outputs.probabilities is not None
            self.labels.threshold = tune_threshold(outputs.probabilities, np.asarray(split.labels))

    def metrics(self, outputs: Outputs, split: EncodedSplit) -> dict[str, Any]:
        probabilities, labels = outputs.probabilities, np.asarray(split.labels)
        assert probabilities is not None
        if self.labels.problem_type == "regression":
            return regression_metrics(probabilities, labels)
        if self.labels.problem_type == "multi_label":
            return multi_label_metrics(probabilities, labels, self.labels.names, self.labels.threshold)
        return single_label_metrics(probabilities, labels, self.labels.names)

    def present(self, outputs: Outputs, split: EncodedSplit) -> pd.DataFrame:
        """Prediction columns, prefixed so they never collide with the user's own columns."""
        probabilities = outputs.probabilities
        assert probabilities is not None
        if self.labels.problem_type == "regression":
            return pd.DataFrame({"prediction": probabilities})
        names = self.labels.names
        probability_columns = {f"prob_{name}": probabilities[:, i] for i, name in enumerate(names)}
        if self.labels.problem_type == "multi_label":
            chosen = [
                "|".join(n for n, p in zip(names, row, strict=True) if p >= self.labels.threshold)
                for row in probabilities
            ]
            return pd.DataFrame({"predicted_labels": chosen, **probability_columns})
        best = probabilities.argmax(axis=1)
        return pd.DataFrame(
            {"predicted_label": [names[i] for i in best], "score": probabilities.max(axis=1), **probability_columns}
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
