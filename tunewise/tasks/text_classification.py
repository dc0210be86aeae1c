"""Text classification: single-label, multi-label and regression, on one text or a sentence pair.

The problem type follows from the labels unless the config fixes it: lists of labels are
multi-label (sigmoid outputs and a threshold tuned on validation), non-integer numbers are
regression, anything else is single-label (string or integer class names, kept as `id2label`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel

from tunewise.config.rules import Rule, rule
from tunewise.config.sections import DataConfig, RunConfig
from tunewise.data.readers import read_table
from tunewise.data.token_cache import tokenize
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.models.pooled_classifier import (
    PooledEncoderConfig,
    PooledModelForSequenceClassification,
    register_auto_class,
)
from tunewise.models.registry import load_text_tokenizer, resolve_model, save_pretrained
from tunewise.tasks.base import TextExplanation
from tunewise.tasks.classes import ClassLabels, ClassScoring, normalise_label, sort_label_names
from tunewise.tasks.token_places import row_features, row_score, text_places
from tunewise.types import (
    Capabilities,
    CheckpointHints,
    EncodedSplit,
    Finding,
    ModelSource,
    Purpose,
    TaskFacts,
    TextExplanationTarget,
)

NAME: Final = "text-classification"
# what a problem type's explained score is: a class's softmax probability, a label's sigmoid, the value itself
ACTIVATIONS: Final[dict[str, Literal["softmax", "sigmoid", "identity"]]] = {
    "single_label": "softmax",
    "multi_label": "sigmoid",
    "regression": "identity",
}


# ------------------------------------------------------------------------------------------ config


class TextClassificationData(DataConfig):
    text_pair_column: str | None = Field(
        default=None, description="A second text column for sentence-pair tasks (entailment, paraphrase)."
    )
    problem_type: Literal["auto", "single_label", "multi_label", "regression"] = Field(
        default="auto",
        description="auto: lists of labels -> multi_label, non-integer numbers -> regression, "
        "anything else -> single_label.",
    )


@rule(NAME, "data.text_pair_column")
def text_pair_is_another_column(config: TextClassificationConfig) -> str | None:
    data = config.data
    if data.text_pair_column is not None and data.text_pair_column == data.text_column:
        return "must name a different column than data.text_column"
    return None


@rule(NAME, "data.label_column")
def label_is_not_a_text_column(config: TextClassificationConfig) -> str | None:
    if config.data.label_column in (config.data.text_column, config.data.text_pair_column):
        return "must differ from the text column(s)"
    return None


class TextClassificationConfig(RunConfig):
    """Classify texts or text pairs into classes, label sets, or a number."""

    rules: ClassVar[tuple[Rule, ...]] = (*RunConfig.rules, text_pair_is_another_column, label_is_not_a_text_column)

    task: Literal["text-classification"] = Field(
        default=NAME,
        description="text-classification: one class per text (or text pair), a set of labels, or a number.",
    )
    data: TextClassificationData = Field(description="Where the data is and which columns to use.")


# ------------------------------------------------------------------------------------------ the task


class TextClassificationTask:
    def __init__(self, config: TextClassificationConfig):
        self.labels = ClassLabels(problem_type=config.data.problem_type)
        self.data = TextClassificationReader(config.data, self.labels)
        self.model = TextClassifierModel(self.labels)
        self.scoring = ClassScoring(self.labels)
        self.explanation: TextExplanation = TextClassificationExplanation(self.data, self.labels, self.scoring)
        self._config = config.data

    def facts(self) -> TaskFacts:
        problem_type, single_text = self.labels.problem_type, self._config.text_pair_column is None
        single_label = problem_type == "single_label"
        return TaskFacts(
            name=NAME,
            problem_type=problem_type,
            text_columns=tuple(self.data.text_columns),
            label_names=tuple(self.labels.names),
            targets=f"label column `{self._config.label_column}`",
            metrics=self.labels.metric_names() if problem_type != "auto" else (),
            default_metric=self.labels.default_metric() if problem_type != "auto" else "loss",
            capabilities=Capabilities(
                stratified_split=single_label,
                class_labels=single_label,
                fairness=single_label and single_text,
                private_training=True,
                membership_inference=True,
                explanations=True,
            ),
        )


class TextClassificationReader:
    def __init__(self, config: TextClassificationData, labels: ClassLabels):
        self.config = config
        self.labels = labels

    @property
    def text_columns(self) -> list[str]:
        return [self.config.text_column] + ([self.config.text_pair_column] if self.config.text_pair_column else [])

    def read(self, source: str, split: str, labelled: bool = True) -> pd.DataFrame:
        return read_table(source, split, self.text_columns, self.config.label_column if labelled else None)

    def learn(self, train: pd.DataFrame) -> None:
        values = train[self.config.label_column]
        if self.labels.problem_type == "auto":
            self.labels.problem_type = infer_problem_type(values)
        if self.labels.problem_type == "regression":
            self.labels.names = [self.config.label_column]
            self._regression_targets(train, "train")
        elif self.labels.problem_type == "multi_label":
            self.labels.names = sorted({name for labels in self._label_lists(train, "train") for name in labels})
        else:
            self.labels.names = sort_label_names({normalise_label(value) for value in values})
            if len(self.labels.names) < 2:
                raise DataError(
                    f"train: every row has the label {self.labels.names[0]!r}; a classifier needs at least two "
                    f"classes. Check data.label_column ({self.config.label_column})."
                )

    def check(self, frame: pd.DataFrame, split: str, source: str) -> None:
        if self.labels.problem_type == "regression":
            self._regression_targets(frame, source)
            return
        known = set(self.labels.names)
        if self.labels.problem_type == "multi_label":
            row_labels = self._label_lists(frame, source)
        else:
            row_labels = [[normalise_label(value)] for value in frame[self.config.label_column]]
        unseen = [(row, set(labels) - known) for row, labels in zip(frame["_row"], row_labels, strict=True)]
        unseen = [(row, unknown) for row, unknown in unseen if unknown]
        if unseen:
            names = sorted({name for _, unknown in unseen for name in unknown})
            examples = ", ".join(str(row) for row, _ in unseen[:5])
            raise DataError(
                f"{source}: label(s) {', '.join(map(repr, names))} in {len(unseen)} {split} row(s) (e.g. row "
                f"{examples}) never occur in training, so the model cannot predict them. Add training rows with "
                f"those labels or remove these rows. Training labels: {', '.join(self.labels.names)}."
            )

    def findings(self, frames: dict[str, pd.DataFrame], processor: Any, max_length: int) -> list[Finding]:
        """Balance, label noise and the text checks are shared (tunewise.audit): nothing task-specific."""
        return []

    def resolve(self, config: TextClassificationConfig) -> TextClassificationConfig:
        """data.problem_type auto becomes the problem type the labels showed."""
        if config.data.problem_type != "auto" or self.labels.problem_type == "auto":
            return config
        return config.model_copy(
            update={"data": config.data.model_copy(update={"problem_type": self.labels.problem_type})}
        )

    def from_inputs(self, inputs: list[str] | list[tuple[str, str]] | str) -> pd.DataFrame:
        """Raw texts (or (text, pair) tuples) as a frame in the columns the model was trained on."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if self.config.text_pair_column:
            if not all(
                isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in texts
            ):
                raise TunewiseError(
                    "This model classifies sentence pairs: pass (text, pair) tuples, "
                    'e.g. predict([("A man is sleeping.", "A person rests.")]).'
                )
            return pd.DataFrame(texts, columns=[self.config.text_column, self.config.text_pair_column])
        if not all(isinstance(t, str) for t in texts):
            raise TunewiseError("predict() takes a string or a list of strings.")
        return pd.DataFrame({self.config.text_column: texts})

    def encode(
        self, frame: pd.DataFrame, processor: Any, max_length: int, purpose: Purpose, use_cache: bool = False
    ) -> EncodedSplit:
        texts = frame[self.config.text_column].tolist()
        pairs = frame[self.config.text_pair_column].tolist() if self.config.text_pair_column else None
        columns = ("input_ids", "token_type_ids") if pairs is not None else ("input_ids",)
        sequences = tokenize(processor, texts, pairs, max_length, columns, use_cache=use_cache)
        labelled = purpose != "predict" and self.config.label_column in frame.columns
        return EncodedSplit(
            sequences=sequences,
            labels=self._targets(frame) if labelled else None,
            pad_token_id=processor.pad_token_id or 0,
        )

    def _targets(self, frame: pd.DataFrame) -> np.ndarray:
        if self.labels.problem_type == "regression":
            return self._regression_targets(frame, "data")
        index = {name: i for i, name in enumerate(self.labels.names)}
        if self.labels.problem_type == "multi_label":
            targets = np.zeros((len(frame), len(self.labels.names)), dtype=np.float32)
            for row, labels in enumerate(self._label_lists(frame, "data")):
                targets[row, [index[name] for name in labels]] = 1.0
            return targets
        return np.array([index[normalise_label(v)] for v in frame[self.config.label_column]], dtype=np.int64)

    def _regression_targets(self, frame: pd.DataFrame, source: str) -> np.ndarray:
        values = pd.to_numeric(frame[self.config.label_column], errors="coerce")
        bad = frame["_row"][values.isna()].tolist()
        if bad:
            raise DataError(
                f"{source}: {len(bad)} label(s) in column {self.config.label_column!r} are not numbers (row "
                f"{', '.join(map(str, bad[:5]))}); regression needs a number in every row."
            )
        return values.to_numpy(dtype=np.float32)

    def _label_lists(self, frame: pd.DataFrame, source: str) -> list[list[str]]:
        return [
            parse_label_list(value, row, source)
            for value, row in zip(frame[self.config.label_column], frame["_row"], strict=True)
        ]


class TextClassificationExplanation:
    """What to explain in each row: the predicted class (softmax), or `label`; for multi-label, every
    predicted label (sigmoid; the most likely when none reaches the fitted threshold), or `label`; for
    regression, the value itself. A pair's two texts are both explained (sequence ids 0 and 1)."""

    def __init__(self, reader: TextClassificationReader, labels: ClassLabels, scoring: ClassScoring):
        self.reader = reader
        self.labels = labels
        self.scoring = scoring

    def targets(
        self, model: Any, processor: Any, frame: pd.DataFrame, max_length: int, label: str | None = None
    ) -> list[TextExplanationTarget]:
        chosen = self._label_index(label)
        split = self.reader.encode(frame, processor, max_length, "predict")
        columns = self.reader.text_columns
        texts = [frame[column].astype(str).tolist() for column in columns]
        places = text_places(processor, *texts, truncation=True, max_length=max_length)
        logits = self.scoring.run(model, processor, split).logits
        assert isinstance(logits, np.ndarray)
        activation = ACTIVATIONS[self.labels.problem_type]
        targets = []
        for row, (offsets, sequence_ids) in enumerate(places):
            for index in self._classes(logits[row], activation, chosen):
                targets.append(
                    TextExplanationTarget(
                        row=row,
                        name="value" if self.labels.problem_type == "regression" else self.labels.names[index],
                        features=row_features(split, row),
                        output="logits",
                        positions=(),
                        classes=(index,),
                        activation=activation,
                        offsets=offsets,
                        sequence_ids=sequence_ids,
                        texts=tuple(column[row] for column in texts),
                        probability=row_score(logits[row], (), (index,), activation),
                    )
                )
        return targets

    def _classes(self, logits: np.ndarray, activation: str, chosen: int | None) -> list[int]:
        """The classes explained in one row, most likely first."""
        if chosen is not None:
            return [chosen]
        if activation != "sigmoid":
            return [int(np.argmax(logits))]
        probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
        order = np.argsort(-probabilities, kind="stable")
        predicted = [int(i) for i in order if probabilities[i] >= self.labels.threshold]
        return predicted or [int(order[0])]

    def _label_index(self, label: str | None) -> int | None:
        if label is None:
            return None
        if self.labels.problem_type == "regression":
            raise ConfigError(
                f"a regression model predicts one value, so there is no label to choose (got {label!r}); "
                "leave the label out to explain the value."
            )
        name = normalise_label(label)
        if name not in self.labels.names:
            raise ConfigError(
                f"label {label!r} is not one this model predicts; choose one of: {', '.join(self.labels.names)}."
            )
        return self.labels.names.index(name)


class TextClassifierModel:
    def __init__(self, labels: ClassLabels):
        self.labels = labels

    def source(self, name: str) -> ModelSource:
        return resolve_model(name)

    def processor(self, source: ModelSource) -> Any:
        return load_text_tokenizer(source)

    def build(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """Weights load in float32 whatever the checkpoint stores (transformers 5 would keep its bf16 or
        fp16): mixed precision trains float32 master weights under autocast."""
        encoder_config = AutoConfig.from_pretrained(source.location)
        if pooling == "cls":  # the stock head: loads in transformers with no extra argument
            self.labels.save_to(encoder_config)
            return AutoModelForSequenceClassification.from_pretrained(
                source.location, config=encoder_config, dtype=torch.float32
            )
        encoder_settings = {k: v for k, v in encoder_config.to_dict().items() if k != "_name_or_path"}
        model_config = PooledEncoderConfig(encoder=encoder_settings, pooling=pooling)
        self.labels.save_to(model_config)
        model = PooledModelForSequenceClassification(model_config)
        backbone = AutoModel.from_pretrained(source.location, dtype=torch.float32)
        missing, _ = model.encoder.load_state_dict(backbone.state_dict(), strict=False)
        if missing:
            raise ConfigError(
                f"model: {source.name} does not hold a complete {type(backbone).__name__} ({len(missing)} weights "
                f"missing, e.g. {missing[0]}). Point model at a pretrained encoder checkpoint."
            )
        return model

    def save(self, model: Any, processor: Any, folder: Path) -> None:
        """The pooled head is saved as remote code beside the weights (auto_map), so plain transformers
        loads it with trust_remote_code=True; the stock head needs nothing."""
        self.labels.save_to(model.config)
        register_auto_class()
        save_pretrained(model, processor, folder)

    def load(self, folder: Path) -> PreTrainedModel:
        """tunewise's own head class is imported here, so its remote code is never executed."""
        if _is_pooled(folder):
            model = PooledModelForSequenceClassification.from_pretrained(folder)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder)
        self.restore(folder)
        return model

    def restore(self, folder: Path) -> None:
        """Labels, problem type and the multi-label threshold, from config.json (the pooled head's config
        read with tunewise's own class, as `load` reads it)."""
        config = (
            PooledEncoderConfig.from_pretrained(folder) if _is_pooled(folder) else AutoConfig.from_pretrained(folder)
        )
        self.labels.restore_from(config)


def _is_pooled(folder: Path) -> bool:
    """Whether a saved model has tunewise's pooled head (its own model_type) rather than a stock one."""
    settings = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return settings.get("model_type") == PooledEncoderConfig.model_type


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
