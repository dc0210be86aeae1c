"""A fine-tuned model ready to use: predict on raw inputs or files, and evaluate on labelled data.

`tunewise.load(run_dir)` returns one; so does a finished `tunewise.train(...)` (as `run.model`), and
`tunewise.load(export_dir)` for a `tunewise export` folder, whose model is an ONNX Runtime session.
Prediction batches inputs longest-first, so almost no compute goes to padding.

`predict(..., explain=True)` adds each prediction's explanation (`tunewise.explain`: Captum attributions
per word, or an image's heat map); `faithfulness(file)` measures how far such explanations can be trusted
(the deletion test). Both need gradients, so they need the PyTorch model of a run folder, not an export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError, first_line
from tunewise.explain import explain_frame, explain_targets, measure_faithfulness
from tunewise.explain.results import IMAGE_METHODS, METHODS, WordAttribution
from tunewise.explain.settings import ExplainSettings
from tunewise.inference import model_device
from tunewise.prepare.defaults import cpu_computes_bf16
from tunewise.runs.exports import REEXPORT, check_export, export_root
from tunewise.runs.layout import MODEL_FOLDER, ONNX_FILE
from tunewise.runs.reader import run_config, run_folder
from tunewise.serving.onnx_model import OnnxModel
from tunewise.serving.screen import Screen, count_verdicts, screen_predictions
from tunewise.tasks import Task, explanation, make_task
from tunewise.types import EncodedSplit, ModelSource, Outputs, Processor, Purpose, TaskFacts, TextExplanationTarget

EXPLANATION_COLUMN = "explanation"  # predict_frame's column of explanations: a list of dicts per row
DEFAULT_HEATMAP_FOLDER = Path("explanations")  # image heat maps when no folder is named (under the working folder)
FAITHFULNESS_ROWS = 100


class FineTunedModel:
    """A model, its processor (tokenizer), and the task that turns its outputs into predictions."""

    def __init__(self, model: nn.Module, processor: Processor, task: Task, config: RunConfig):
        self.model = model.eval()
        self.processor = processor
        self.task = task
        self.config = config
        self._screen: Screen | None = None
        self.screen_counts: dict[str, Any] = {}  # the last screened prediction's decisions (count_verdicts)

    @property
    def facts(self) -> TaskFacts:
        return self.task.facts()

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def max_length(self) -> int:
        max_length = self.config.data.max_length
        assert isinstance(max_length, int), "a trained run's config has max_length resolved"
        return max_length

    def predict(
        self,
        inputs: Any,
        explain: bool = False,
        explain_label: str | None = None,
        explain_method: str = "auto",
        explain_dir: str | Path | None = None,
    ) -> list[dict[str, Any]]:
        """Predictions for raw inputs (texts, (text, pair) tuples, ... as the task takes them): one dict each.

        `explain`: each dict gains "explanation", a list (one per label explained, entity, or answer start
        and end) of {"target", "probability", "method", "convergence_delta", "words": [{"word", "text",
        "start", "end", "score"}]}, or for an image {"heatmap_png": path}, written under `explain_dir`
        (default ./explanations). `explain_label` explains that label instead of the predicted one;
        `explain_method` is auto or a Captum method (tunewise.explain.results.METHODS, IMAGE_METHODS)."""
        settings = self.explain_settings(explain_label, explain_method, explain_dir) if explain else None
        frame = self.task.data.from_inputs(inputs)
        return [as_prediction(record) for record in self.predict_frame(frame, settings).to_dict(orient="records")]

    def predict_frame(self, frame: pd.DataFrame, explain: ExplainSettings | None = None) -> pd.DataFrame:
        """The prediction columns; generated texts pass the content screen (`screen:`), which adds
        `screen_flagged` and `screen_reasons` and applies its action to `generated_text`. With `explain`
        (settings from `explain_settings`), an `explanation` column: each row's explanations as dicts."""
        if explain is not None:
            self.check_explainable()  # before any work: an export or a task that cannot explain says so at once
        screen = self.screen()  # built (and its classifier checked) before any text is generated
        encoded = self.encode(frame, "predict")
        presented = self.task.scoring.present(self.run(encoded), encoded)
        if explain is not None:
            explained = explain_frame(self.model, self.processor, self.task, frame, self.max_length, explain)
            presented[EXPLANATION_COLUMN] = [[item.as_dict() for item in row] for row in explained]
        if screen is None:
            return presented
        screened, verdicts = screen_predictions(screen, presented)
        self.screen_counts = count_verdicts(verdicts)
        return screened

    def check_explainable(self) -> None:
        """A ConfigError saying what to do when this model cannot be explained: an export (ONNX Runtime computes
        no gradients), or a task without explanations."""
        if isinstance(self.model, OnnxModel):
            raise ConfigError(
                f"{self.model.path.parent} is an ONNX export, which computes no gradients, so its predictions cannot "
                "be attributed. Load the run folder it was exported from to explain (tunewise.load(RUN), tunewise "
                "predict RUN --explain, tunewise serve RUN without --onnx)."
            )
        explanation(self.task)

    def explain_methods(self) -> tuple[str, ...]:
        """The methods that apply to this model's inputs (auto aside)."""
        return METHODS if self.facts.capabilities.reads_text else IMAGE_METHODS

    def explain_settings(
        self, label: str | None = None, method: str = "auto", folder: str | Path | None = None
    ) -> ExplainSettings:
        """Explanation settings checked against this model: it can explain, and the method fits its inputs (the
        task's explanation piece checks `label` against what it predicts: classes, entity types). Integrated
        gradients take the run's `explain.steps`; an image model's heat maps go to `folder` (default
        ./explanations)."""
        self.check_explainable()
        methods = self.explain_methods()
        if method != "auto" and method not in methods:
            raise ConfigError(f"explain method {method!r} does not apply to this model; choose auto or one of: "
                              f"{', '.join(methods)}.")  # fmt: skip
        if folder is None and not self.facts.capabilities.reads_text:
            folder = DEFAULT_HEATMAP_FOLDER
        return ExplainSettings(
            method=method,
            steps=self.config.explain.steps,
            label=label,
            folder=None if folder is None else Path(folder),
        )

    def faithfulness(
        self, source: str, rows: int = FAITHFULNESS_ROWS, method: str = "auto", seed: int = 0
    ) -> dict[str, Any]:
        """ERASER's deletion test (DeYoung et al. 2020) of this model's explanations on up to `rows` rows of a
        labelled file (a seeded sample): how much the predicted label's probability drops when the top-k
        attributed words are deleted (comprehensiveness) or kept alone (sufficiency), each beside k random words.
        Attributions that matter drop more than random when deleted, and less than random when kept."""
        settings = self.explain_settings(method=method)
        if not self.facts.capabilities.reads_text:
            raise ConfigError("the deletion test deletes words, so it measures text explanations, not image heat maps.")
        frame = self.task.data.read(source, "evaluation")
        self.task.data.check(frame, "evaluation", source)
        sample = frame.iloc[sample_positions(len(frame), rows, seed)].reset_index(drop=True)
        targets = explanation(self.task).targets(self.model, self.processor, sample, self.max_length, None)
        texts = [target for target in targets if isinstance(target, TextExplanationTarget)]
        explained = [item for item in explain_targets(self.model, texts, settings) if isinstance(item, WordAttribution)]
        return measure_faithfulness(self.model, texts, explained, seed=seed).as_dict()

    def screen(self) -> Screen | None:
        """The content screen of a generative run with `screen.enabled`, built once; None for other runs."""
        settings = getattr(self.config, "screen", None)
        if not self.facts.capabilities.generation or settings is None or not settings.enabled:
            return None
        if self._screen is None:
            self._screen = Screen.from_config(self.config, load_classifier)
        return self._screen

    def set_screen_action(self, action: str) -> None:
        """Screen with another action than the run's config says (flag, redact, block), or not at all (off)."""
        settings = getattr(self.config, "screen", None)
        if not self.facts.capabilities.generation or settings is None:
            raise ConfigError("--screen-action: this model does not generate text, so there is nothing to screen.")
        update = {"enabled": False} if action == "off" else {"enabled": True, "action": action}
        self.config = self.config.model_copy(update={"screen": settings.model_copy(update=update)})
        self._screen = None

    def predict_file(self, source: str, explain: ExplainSettings | None = None) -> pd.DataFrame:
        """The input rows (user's columns) followed by the prediction columns (and `explanation`, with `explain`)."""
        frame = self.task.data.read(source, "predict", labelled=False)
        return pd.concat([user_columns(frame), self.predict_frame(frame, explain)], axis=1)

    def evaluate(self, source: str, split: str = "evaluation") -> tuple[dict[str, Any], pd.DataFrame]:
        """Metrics on a labelled file, and the per-row predictions."""
        frame = self.task.data.read(source, split)
        self.task.data.check(frame, split, source)
        encoded = self.encode(frame, "evaluate")
        outputs = self.run(encoded)
        metrics = {**self.task.scoring.metrics(outputs, encoded), "loss": outputs.loss}
        if not outputs.answers:  # a language model's evaluation rows are scored, not answered
            return metrics, user_columns(frame)
        return metrics, pd.concat([user_columns(frame), self.task.scoring.present(outputs, encoded)], axis=1)

    def encode(self, frame: pd.DataFrame, purpose: Purpose) -> EncodedSplit:
        return self.task.data.encode(frame, self.processor, self.max_length, purpose)

    def run(self, encoded: EncodedSplit) -> Outputs:
        """The model's outputs for encoded rows, in bf16 autocast where training used it: on a GPU that has
        bf16, and on a CPU that computes it in hardware when the run trained in bf16 (the train job scored
        its test rows so, under the autocast Accelerate leaves on the model). Several times faster."""
        if self.device.type == "cuda":
            fast = torch.cuda.is_bf16_supported()
        else:
            fast = self.config.train.precision == "bf16" and cpu_computes_bf16()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=fast):
            return self.task.scoring.run(self.model, self.processor, encoded)


def as_prediction(record: dict[str, Any]) -> dict[str, Any]:
    """A pipeline-like record: {"label": ..., "score": ..., "probabilities": {name: p}}; a screened
    generation's {"generated_text": ..., "screen": {"flagged": ..., "reasons": [...]}}; an explained one's
    "explanation" as predict_frame made it."""
    prediction: dict[str, Any] = {}
    probabilities = {}
    screen = {}
    for key, value in record.items():
        if key.startswith("screen_"):
            screen[key.removeprefix("screen_")] = value
        elif key.startswith("prob_"):
            probabilities[key.removeprefix("prob_")] = float(value)
        elif key == "predicted_labels":
            prediction["labels"] = [name for name in value.split("|") if name]
        else:
            prediction[key.removeprefix("predicted_")] = value
    if probabilities:
        prediction["probabilities"] = probabilities
    if screen:
        prediction["screen"] = screen
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


def sample_positions(count: int, rows: int, seed: int) -> np.ndarray:
    """Up to `rows` of `count` row positions, drawn with `seed`, in file order: the rows explained when a whole
    evaluation split would cost too much (an explanation takes tens of forward passes)."""
    if count <= rows:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=rows, replace=False))


def user_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The user's own columns of a read frame, without tunewise's bookkeeping: the columns whose names
    start with an underscore (`_row`, the conversation a chat row became)."""
    return frame.drop(columns=[c for c in frame.columns if str(c).startswith("_")]).reset_index(drop=True)


def load(path: str | Path, device: str | None = None) -> FineTunedModel:
    """Load a run folder (or its `model/` folder) written by `tunewise train`, or an export folder written
    by `tunewise export` (then the model is the ONNX graph, run by ONNX Runtime on the CPU)."""
    export = export_root(Path(path))
    if export is not None:
        return load_export(export, device)
    run_dir = run_folder(path)
    config = run_config(run_dir)
    model_dir = run_dir / MODEL_FOLDER
    task = make_task(config)
    try:
        model = task.model.load(model_dir)
    except (OSError, ValueError, RuntimeError, KeyError) as error:  # truncated weights, a hand-edited config
        raise ConfigError(
            f"{model_dir}: the saved model cannot be loaded ({first_line(error, 300)}). The folder may be incomplete "
            "or damaged; train the run again, or restore model/ from a backup."
        ) from None
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    processor = task.model.processor(ModelSource(str(model_dir), str(model_dir), is_local=True))
    return FineTunedModel(model.to(target), processor, task, config)


def load_export(folder: Path, device: str | None = None) -> FineTunedModel:
    """An export folder: the run's config and the task's fitted settings from its copies, the tokenizer or
    image processor from its model/ folder, and the graph in an ONNX Runtime session."""
    if device not in (None, "cpu"):
        raise ConfigError(
            f"{folder} is an ONNX export, which runs on the CPU (ONNX Runtime); load the run folder it came from "
            f"to use {device}."
        )
    check_export(folder)
    config = run_config(folder)
    model_dir = folder / MODEL_FOLDER
    task = make_task(config)
    try:
        task.model.restore(model_dir)
    except (OSError, ValueError, KeyError) as error:  # a hand-edited or truncated config.json
        raise ConfigError(
            f"{model_dir / 'config.json'} cannot be read ({first_line(error, 300)}). {REEXPORT}, or restore the file."
        ) from None
    processor = task.model.processor(ModelSource(str(model_dir), str(model_dir), is_local=True))
    return FineTunedModel(OnnxModel.open(folder / ONNX_FILE), processor, task, config)


def load_classifier(run_dir: Path) -> FineTunedModel:
    """The screen's classifier: on the CPU, where a MiniLM classifies a batch of generations in milliseconds
    per text and leaves the accelerator to the generating model."""
    return load(run_dir, device="cpu")
