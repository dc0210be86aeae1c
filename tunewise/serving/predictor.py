"""A fine-tuned model ready to use: predict on texts or files, and evaluate on labelled data.

`tunewise.load(run_dir)` returns one; so does a finished `tunewise.train(...)` (as `run.model`).
Prediction batches inputs longest-first, so almost no compute goes to padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tunewise.config.loading import load_config
from tunewise.config.schema import RunConfig
from tunewise.errors import ConfigError
from tunewise.models.registry import ModelSource
from tunewise.tasks import Task, make_task
from tunewise.training.batching import EncodedSplit
from tunewise.training.loop import predict_logits

PREDICT_BATCH_SIZE = 64


class FineTunedModel:
    """A model, its tokenizer, and the task that turns its outputs into labels."""

    def __init__(self, model: nn.Module, tokenizer: Any, task: Task, config: RunConfig):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.task = task
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_length(self) -> int:
        return int(self.config.data.max_length)

    def predict(self, inputs: Any) -> list[dict[str, Any]]:
        """Predictions for raw inputs (texts, (text, pair) tuples, ... as the task takes them): one dict each."""
        frame = self.task.frame_from_inputs(inputs)
        return [as_prediction(record) for record in self.predict_frame(frame).to_dict(orient="records")]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Class probabilities for raw texts, one row per text (classification models)."""
        logits, _ = self._logits(self.task.encode(self.task.frame_from_inputs(texts), self.tokenizer, self.max_length))
        return self.task.probabilities(logits)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        if not self.task.keeps_logits:  # generative tasks answer with text, not with scores
            return self.task.generate(self.model, self.tokenizer, frame, self.max_length)
        encoded = self.task.encode(frame, self.tokenizer, self.max_length)
        logits, _ = self._logits(encoded)
        return self.task.present(logits, encoded)

    def predict_file(self, source: str) -> pd.DataFrame:
        """The input rows (user's columns) followed by the prediction columns."""
        frame = self.task.read_split(source, "predict", with_labels=False)
        return pd.concat([user_columns(frame), self.predict_frame(frame)], axis=1)

    def evaluate(self, source: str, split: str = "evaluation") -> tuple[dict[str, Any], pd.DataFrame]:
        """Metrics on a labelled file, and the per-row predictions."""
        frame = self.task.read_split(source, split)
        self.task.check_split(frame, split, source)
        encoded = self.task.encode(frame, self.tokenizer, self.max_length)
        logits, loss = self._logits(encoded)
        metrics = {**self.task.compute_metrics(logits, encoded, loss), "loss": loss}
        if logits is None:
            return metrics, user_columns(frame)
        return metrics, pd.concat([user_columns(frame), self.task.present(logits, encoded)], axis=1)

    def _logits(self, encoded: EncodedSplit) -> tuple[Any, float | None]:
        pad = getattr(self.tokenizer, "pad_token_id", None) or 0
        device = self.device
        # on a GPU, bf16 arithmetic (as in training) is several times faster than float32
        fast = device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=fast):
            return predict_logits(self.model, encoded, PREDICT_BATCH_SIZE, device, pad, self.task.keeps_logits)


def as_prediction(record: dict[str, Any]) -> dict[str, Any]:
    """A pipeline-like record: {"label": ..., "score": ..., "probabilities": {name: p}}."""
    prediction: dict[str, Any] = {}
    probabilities = {}
    for key, value in record.items():
        if key.startswith("prob_"):
            probabilities[key.removeprefix("prob_")] = float(value)
        elif key == "predicted_labels":
            prediction["labels"] = [name for name in value.split("|") if name]
        else:
            prediction[key.removeprefix("predicted_")] = value
    if probabilities:
        prediction["probabilities"] = probabilities
    return prediction


def csv_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """List and dict cells (a sentence's words, tags and entities) as JSON text, which a CSV cell holds
    losslessly and json.loads reads back (pandas would write Python's repr)."""
    nested = [c for c in frame.columns if frame[c].map(lambda v: isinstance(v, (list, dict, tuple))).any()]
    if not nested:
        return frame
    frame = frame.copy()
    for column in nested:
        frame[column] = [
            json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict, tuple)) else v for v in frame[column]
        ]
    return frame


def user_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The user's own columns of a read frame, without tunewise's `_row` bookkeeping."""
    return frame.drop(columns="_row").reset_index(drop=True)


def load(path: str | Path, device: str | None = None) -> FineTunedModel:
    """Load a run folder (or its `model/` folder) written by `tunewise train`."""
    path = Path(path)
    run_dir = path.parent if (path / "config.json").is_file() and not (path / "model").is_dir() else path
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise ConfigError(
            f"{path} is not a tunewise run folder: {model_dir}/config.json is missing. Point at the output_dir of a "
            "finished `tunewise train`."
        )
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} has no config.yaml; it was not written by tunewise train.")
    config = load_config(config_file)
    task = make_task(config)
    model = task.load_trained(model_dir)
    task.restore(model.config)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = task.load_tokenizer(ModelSource(str(model_dir), str(model_dir), is_local=True))
    return FineTunedModel(model.to(target), tokenizer, task, config)
