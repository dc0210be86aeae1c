"""Extractive question answering: find the answer to a question as a span of its context.

A context longer than one window (data.max_length tokens, question included) is read in
overlapping windows (question_answering.stride tokens shared), so an answer cut by one window
stands whole in the next. Each window is one training row whose target is the answer's first and
last token, or the [CLS] token when the answer is not inside it (or there is none: SQuAD 2.0).

To answer, every window proposes spans from its n_best highest start and end scores (start before
end, at most max_answer_length tokens, inside the context); the span with the highest start + end
score over all windows of a question wins, and its tokens' character offsets cut the answer out
of the context. A model trained with unanswerable questions abstains when the [CLS] ("no answer")
score beats the best span by more than a threshold tuned on validation for the best F1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn
from transformers import AutoConfig, AutoModelForQuestionAnswering, PreTrainedModel

from tunewise.config.rules import Rule, rule
from tunewise.config.sections import RunConfig, Section
from tunewise.data.readers import ROW_COLUMN
from tunewise.data.squad import ANSWERS, CONTEXT, QUESTION, read_qa
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.evaluation.squad import best_null_threshold, squad_metrics
from tunewise.inference import predict_logits
from tunewise.models.registry import load_text_tokenizer, resolve_model, save_pretrained
from tunewise.tasks.base import TextExplanation
from tunewise.tasks.token_places import encoded_places, row_features, row_score
from tunewise.types import (
    Capabilities,
    CheckpointHints,
    EncodedSplit,
    Finding,
    ModelSource,
    Outputs,
    Purpose,
    TaskFacts,
    TextExplanationTarget,
)

NAME: Final = "question-answering"

# ------------------------------------------------------------------------------------------ config


class QuestionAnsweringSection(Section):
    stride: int = Field(
        default=128,
        ge=0,
        description="Tokens shared by consecutive windows when a context is longer than "
        "data.max_length (question included), so an answer cut by one window stands whole in the next.",
    )
    max_answer_length: int = Field(default=30, ge=1, description="Longest answer span considered, in tokens.")
    n_best: int = Field(
        default=20,
        ge=1,
        description="Start and end candidates per window (the highest-scoring of each) "
        "whose combinations are searched for the best span.",
    )


@rule(NAME, "question_answering.stride")
def windows_add_more_than_they_repeat(config: QuestionAnsweringConfig) -> str | None:
    stride, max_length = config.question_answering.stride, config.data.max_length
    if isinstance(max_length, int) and 2 * stride >= max_length:
        return (
            f"stride ({stride}) must be less than half of data.max_length ({max_length}): windows would repeat more "
            "context than they add. Lower the stride (e.g. 128 for max_length 384)"
        )
    return None


class QuestionAnsweringConfig(RunConfig):
    """Extractive question answering: find each answer as a span of its context (SQuAD v1.1/v2.0)."""

    rules: ClassVar[tuple[Rule, ...]] = (*RunConfig.rules, windows_add_more_than_they_repeat)

    task: Literal["question-answering"] = Field(
        default=NAME, description="question-answering: extractive, answer spans in a context (SQuAD v1.1/v2.0)."
    )
    question_answering: QuestionAnsweringSection = Field(
        default_factory=QuestionAnsweringSection, description="Windows over long contexts and answer search."
    )


# ------------------------------------------------------------------------------------------ the task

CLS_INDEX = 0  # BERT-style inputs: [CLS] question [SEP] context [SEP]
SETTINGS_KEY = "tunewise_question_answering"  # in the saved model's config.json


@dataclass
class Answer:
    """A question's best span over all its windows, and how strongly the model prefers no answer."""

    text: str
    start: int  # character offsets in the context
    end: int
    score: float  # the span's probability in its window (start x end softmax)
    null_margin: float  # no-answer score minus the best span's score (start + end logits)
    null_score: float  # the no-answer probability in the window that favours it most
    window: int = -1  # the window the span is read from (-1: no span), and its first and last token there
    tokens: tuple[int, int] = (CLS_INDEX, CLS_INDEX)
    null_window: int = 0  # the window that favours no answer most


@dataclass
class AnswerSettings:
    """What a question-answering model learns beside its weights: whether it may abstain, and when."""

    unanswerable: bool = False  # trained on unanswerable questions too (SQuAD 2.0): may abstain
    null_threshold: float = 0.0


class QuestionAnsweringTask:
    def __init__(self, config: QuestionAnsweringConfig):
        self.answers = AnswerSettings()
        self.data = QaReader(config.question_answering, self.answers)
        self.model = QaModel(self.answers)
        self.scoring = QaScoring(config.question_answering, self.answers)
        self.explanation: TextExplanation = QaExplanation(self.data, self.scoring)

    def facts(self) -> TaskFacts:
        return TaskFacts(
            name=NAME,
            problem_type="extractive_question_answering",
            text_columns=(QUESTION, CONTEXT),
            label_names=(),
            targets="the answer's character span in the context (SQuAD `answers`: text and answer_start)",
            metrics=("exact_match", "f1", "loss"),
            default_metric="f1",
            # long contexts are read in overlapping windows, so nothing is cut; the reader's group column
            # (the article) shapes a held-out validation split instead of stratification
            capabilities=Capabilities(truncates=False, explanations=True),
        )


class QaReader:
    def __init__(self, settings: QuestionAnsweringSection, answers: AnswerSettings):
        self.settings = settings
        self.answers = answers

    def read(self, source: str, split: str, labelled: bool = True) -> pd.DataFrame:
        return read_qa(source, split, with_answers=labelled)

    def learn(self, train: pd.DataFrame) -> None:
        """The only 'label space' is whether the model may answer nothing (any unanswerable question)."""
        answered = train[ANSWERS].map(len) > 0
        if not answered.any():
            raise DataError(
                f"{train.attrs.get('source', 'train')}: no training question has an answer, so there is no span to "
                "learn. Add answered questions (answers with text and answer_start)."
            )
        self.answers.unanswerable = not answered.all()

    def check(self, frame: pd.DataFrame, split: str, source: str) -> None:
        if self.answers.unanswerable:
            return
        impossible = frame.loc[frame[ANSWERS].map(len) == 0, ROW_COLUMN].tolist()
        if impossible:
            unit = frame.attrs.get("row_unit", "row")
            shown = ", ".join(map(str, impossible[:5]))
            raise DataError(
                f"{source}: {len(impossible)} {split} question(s) have no answer ({unit} {shown}), but every training "
                "question has one, so the model never learns to abstain and is bound to miss them. Add unanswerable "
                "questions to train (SQuAD 2.0 style, answers: []) or remove these."
            )

    def findings(self, frames: dict[str, pd.DataFrame], processor: Any, max_length: int) -> list[Finding]:
        """Per split: questions too long to leave room for context (error), contexts read in several
        windows, answers longer than max_answer_length (the model cannot produce them), unanswerable share."""
        findings = []
        for split, frame in frames.items():
            try:
                windows = self._tokenize(frame, processor, max_length, offsets=False)
            except DataError as error:
                findings.append(Finding("validity", "error", str(error), split=split))
                continue
            per_question = np.bincount(windows["overflow_to_sample_mapping"], minlength=len(frame))
            long = frame.loc[per_question > 1, ROW_COLUMN].tolist()
            if long:
                findings.append(
                    Finding(
                        "length",
                        "note",
                        f"{split}: {len(long)} of {len(frame)} questions have a context longer than one window of "
                        f"{max_length} tokens; they are read in {int(per_question[per_question > 1].sum())} "
                        f"overlapping windows (stride {self.settings.stride}), so no context is cut.",
                        "Nothing to fix; a larger data.max_length means fewer windows.",
                        split,
                        len(long),
                        long,
                    )
                )
            findings += self._answer_findings(frame, split, processor)
        return findings

    def _answer_findings(self, frame: pd.DataFrame, split: str, tokenizer: Any) -> list[Finding]:
        answers = frame[ANSWERS] if ANSWERS in frame.columns else pd.Series([], dtype=object)
        findings = []
        first = [(row, a[0]["text"]) for row, a in zip(frame[ROW_COLUMN], answers, strict=False) if a]
        if first:
            lengths = [len(ids) for ids in tokenizer([t for _, t in first], add_special_tokens=False)["input_ids"]]
            too_long = [row for (row, _), n in zip(first, lengths, strict=True) if n > self.settings.max_answer_length]
            if too_long:
                findings.append(
                    Finding(
                        "length",
                        "warning",
                        f"{split}: {len(too_long)} answer(s) are longer than question_answering.max_answer_length "
                        f"({self.settings.max_answer_length} tokens); the model can never predict them whole.",
                        "Raise question_answering.max_answer_length, or check that these answers are spans, not "
                        "paragraphs.",
                        split,
                        len(too_long),
                        too_long,
                    )
                )
        impossible = int((answers.map(len) == 0).sum()) if len(answers) else 0
        if impossible:
            findings.append(
                Finding(
                    "balance",
                    "note",
                    f"{split}: {impossible} of {len(frame)} questions ({impossible / len(frame):.1%}) are unanswerable "
                    "(SQuAD 2.0 style); the model learns to abstain, with a threshold tuned on validation.",
                    "Nothing to fix; keep a similar share in validation so the tuned threshold transfers.",
                    split,
                    impossible,
                    frame.loc[answers.map(len).to_numpy() == 0, ROW_COLUMN].tolist(),
                )
            )
        return findings

    def encode(
        self, frame: pd.DataFrame, processor: Any, max_length: int, purpose: Purpose, use_cache: bool = False
    ) -> EncodedSplit:
        """One row per window. The token cache is not used: windows need offsets, which it does not keep."""
        windows = self._tokenize(frame, processor, max_length, offsets=True)
        examples = list(windows["overflow_to_sample_mapping"])
        offsets = [context_offsets(spans, windows.sequence_ids(i)) for i, spans in enumerate(windows["offset_mapping"])]
        sequences = {"input_ids": [np.asarray(ids, dtype=np.int32) for ids in windows["input_ids"]]}
        if "token_type_ids" in windows:
            sequences["token_type_ids"] = [np.asarray(ids, dtype=np.int8) for ids in windows["token_type_ids"]]
        golds = frame[ANSWERS].tolist() if purpose != "predict" and ANSWERS in frame.columns else None
        labels = None
        if golds is not None:
            labels = np.array(
                [answer_tokens(golds[e], spans) for e, spans in zip(examples, offsets, strict=True)], dtype=np.int64
            )
            labels = labels.reshape(-1, 2)
        contexts = frame[CONTEXT].tolist()
        meta = {
            "example": examples,
            "offsets": offsets,
            "context": [contexts[e] for e in examples],
            "answers": [golds[e] for e in examples] if golds is not None else [None] * len(examples),
        }
        return EncodedSplit(
            sequences=sequences,
            labels=labels,
            label_keys=("start_positions", "end_positions"),
            meta=meta,
            pad_token_id=processor.pad_token_id or 0,
        )

    def _tokenize(self, frame: pd.DataFrame, tokenizer: Any, max_length: int, offsets: bool) -> Any:
        """Question + context windows; a question that leaves no room for context is a DataError."""
        questions = [q.lstrip() for q in frame[QUESTION]]  # leading spaces waste window room
        self._check_room(frame, questions, tokenizer, max_length)
        return tokenizer(
            questions,
            frame[CONTEXT].tolist(),
            truncation="only_second",
            max_length=max_length,
            stride=self.settings.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=offsets,
            padding=False,
        )

    def _check_room(self, frame: pd.DataFrame, questions: list[str], tokenizer: Any, max_length: int) -> None:
        specials = tokenizer.num_special_tokens_to_add(pair=True)
        lengths = np.array([len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]])
        room = max_length - specials - lengths
        crowded = np.flatnonzero(room <= self.settings.stride)
        if len(crowded):
            rows = frame[ROW_COLUMN].to_numpy() if ROW_COLUMN in frame.columns else np.arange(1, len(frame) + 1)
            unit = frame.attrs.get("row_unit", "input")
            shown = ", ".join(f"{unit} {rows[i]} ({lengths[i]} tokens)" for i in crowded[:5])
            raise DataError(
                f"{frame.attrs.get('source', 'data')}: {len(crowded)} question(s) leave no room for the context in a "
                f"window of data.max_length {max_length} tokens with question_answering.stride "
                f"{self.settings.stride} ({shown}). Raise data.max_length, lower the stride, or shorten those "
                "questions."
            )

    def resolve(self, config: QuestionAnsweringConfig) -> QuestionAnsweringConfig:
        """Reading the data settles no setting of this task."""
        return config

    def from_inputs(self, inputs: Any) -> pd.DataFrame:
        """(question, context) tuples or {"question", "context"} dicts, one or a list of them."""
        items = [inputs] if isinstance(inputs, (tuple, dict)) else list(inputs) if isinstance(inputs, list) else []
        pairs = [_pair(item) for item in items]
        rows = [pair for pair in pairs if pair is not None]
        if not items or len(rows) < len(pairs):
            raise TunewiseError(
                "A question-answering model takes (question, context) pairs: "
                'predict([("Who won?", "The Broncos won the game.")]) or {"question": ..., "context": ...}. '
                "On the command line, put them in a JSONL file with question and context fields and use --input."
            )
        empty = [
            i for i, (question, context) in enumerate(rows, start=1) if not question.strip() or not context.strip()
        ]
        if empty:
            raise TunewiseError(f"input(s) {', '.join(map(str, empty))}: empty question or context; give both texts.")
        return pd.DataFrame(rows, columns=[QUESTION, CONTEXT])


class QaModel:
    def __init__(self, answers: AnswerSettings):
        self.answers = answers

    def source(self, name: str) -> ModelSource:
        return resolve_model(name)

    def processor(self, source: ModelSource) -> Any:
        return load_text_tokenizer(source, "question answering needs for the character offsets of answers")

    def build(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """The encoder with a fresh start/end head (`qa_outputs`), in float32 whatever the checkpoint stores."""
        return AutoModelForQuestionAnswering.from_pretrained(source.location, dtype=torch.float32)

    def save(self, model: Any, processor: Any, folder: Path) -> None:
        setattr(
            model.config,
            SETTINGS_KEY,
            {"unanswerable": self.answers.unanswerable, "null_threshold": self.answers.null_threshold},
        )
        save_pretrained(model, processor, folder)

    def load(self, folder: Path) -> PreTrainedModel:
        model = AutoModelForQuestionAnswering.from_pretrained(folder)
        self.restore(folder)
        return model

    def restore(self, folder: Path) -> None:
        """Whether the model abstains, and the no-answer threshold tuned on validation."""
        saved = getattr(AutoConfig.from_pretrained(folder), SETTINGS_KEY, None) or {}
        self.answers.unanswerable = bool(saved.get("unanswerable", False))
        self.answers.null_threshold = float(saved.get("null_threshold", 0.0))


class QaScoring:
    def __init__(self, settings: QuestionAnsweringSection, answers: AnswerSettings):
        self.settings = settings
        self.answers = answers

    def run(self, model: nn.Module, processor: Any, split: EncodedSplit) -> Outputs:
        logits, loss = predict_logits(model, split)
        return Outputs(logits=logits, loss=loss)

    def calibrate(self, outputs: Outputs, split: EncodedSplit) -> None:
        """Tune the no-answer threshold for the best validation F1 (models trained to abstain only)."""
        if not self.answers.unanswerable:
            return
        answers = self.best_answers(_per_window(outputs), split)
        self.answers.null_threshold = best_null_threshold(
            [a.text for a in answers], [a.null_margin for a in answers], gold_texts(split)
        )

    def metrics(self, outputs: Outputs, split: EncodedSplit) -> dict[str, Any]:
        """exact_match and f1 over questions (not windows), as the official SQuAD scripts compute them."""
        answers = self.best_answers(_per_window(outputs), split)
        metrics: dict[str, Any] = squad_metrics([self.final_text(a) for a in answers], gold_texts(split))
        if self.answers.unanswerable:
            metrics["null_threshold"] = self.answers.null_threshold
        return metrics

    def present(self, outputs: Outputs, split: EncodedSplit) -> pd.DataFrame:
        """One row per question; an abstention is an empty answer with the no-answer probability as score."""
        rows = []
        for answer in self.best_answers(_per_window(outputs), split):
            text = self.final_text(answer)
            if text:
                rows.append((text, answer.start, answer.end, answer.score))
            else:
                rows.append(("", 0, 0, answer.null_score))
        return pd.DataFrame(rows, columns=["predicted_answer", "predicted_start", "predicted_end", "score"])

    def final_text(self, answer: Answer) -> str:
        abstain = self.answers.unanswerable and answer.null_margin > self.answers.null_threshold
        return "" if abstain else answer.text

    def best_answers(self, logits: list[np.ndarray], split: EncodedSplit) -> list[Answer]:
        """Each question's best span over its windows (in question order)."""
        examples = split.meta["example"]
        count = max(examples) + 1 if examples else 0
        best: dict[int, tuple[float, Answer]] = {}  # question -> (span logit sum, answer)
        null_logit, null_prob = np.full(count, np.inf), np.full(count, -1.0)
        null_window = np.zeros(count, dtype=np.int64)
        for window, scores in enumerate(logits):
            e = examples[window]
            candidate, window_null_logit, window_null_prob = self._window_best(scores, split.meta["offsets"][window])
            null_logit[e] = min(null_logit[e], window_null_logit)  # the window most sure there is an answer
            if window_null_prob > null_prob[e]:
                null_prob[e], null_window[e] = window_null_prob, window
            if candidate is not None and (e not in best or candidate[0] > best[e][0]):
                total, start, end, probability, tokens = candidate
                text = split.meta["context"][window][start:end]
                best[e] = (total, Answer(text, start, end, probability, 0.0, 0.0, window, tokens))
        answers = []
        for e in range(count):
            total, answer = best.get(e, (-np.inf, Answer("", 0, 0, 0.0, 0.0, 0.0)))
            answer.null_margin = float(null_logit[e] - total)  # +inf: no span at all, nothing but abstaining
            answer.null_score = float(null_prob[e])
            answer.null_window = int(null_window[e])
            answers.append(answer)
        return answers

    def _window_best(
        self, scores: np.ndarray, offsets: np.ndarray
    ) -> tuple[tuple[float, int, int, float, tuple[int, int]] | None, float, float]:
        """((logit sum, start char, end char, probability, (start token, end token)) of the window's best
        span or None, the no-answer logit sum, the no-answer probability)."""
        start_logits, end_logits = scores[:, 0].astype(np.float64), scores[:, 1].astype(np.float64)
        context = np.flatnonzero(offsets[:, 0] >= 0)
        allowed = np.concatenate([[CLS_INDEX], context])
        log_start = start_logits - _logsumexp(start_logits[allowed])
        log_end = end_logits - _logsumexp(end_logits[allowed])
        null_logit = float(start_logits[CLS_INDEX] + end_logits[CLS_INDEX])
        null_prob = float(np.exp(log_start[CLS_INDEX] + log_end[CLS_INDEX]))
        if not len(context):
            return None, null_logit, null_prob
        n_best = self.settings.n_best
        starts = context[np.argsort(-start_logits[context], kind="stable")[:n_best]]
        ends = context[np.argsort(-end_logits[context], kind="stable")[:n_best]]
        pairs = (starts[:, None] <= ends[None, :]) & (ends[None, :] - starts[:, None] < self.settings.max_answer_length)
        if not pairs.any():
            return None, null_logit, null_prob
        totals = np.where(pairs, start_logits[starts][:, None] + end_logits[ends][None, :], -np.inf)
        i, j = np.unravel_index(int(np.argmax(totals)), totals.shape)
        start, end = starts[i], ends[j]
        probability = float(np.exp(log_start[start] + log_end[end]))
        span = (float(totals[i, j]), int(offsets[start, 0]), int(offsets[end, 1]), probability, (int(start), int(end)))
        return span, null_logit, null_prob


class QaExplanation:
    """Two targets per question, the predicted answer's start and its end: the probability of that token
    over the window's tokens (start_logits, end_logits), in the window the answer was read from, with the
    question and the context as the two texts. An abstention explains the no-answer ([CLS]) start and end
    in the window that favours no answer most."""

    def __init__(self, reader: QaReader, scoring: QaScoring):
        self.reader = reader
        self.scoring = scoring

    def targets(
        self, model: nn.Module, processor: Any, frame: pd.DataFrame, max_length: int, label: str | None = None
    ) -> list[TextExplanationTarget]:
        if label is not None:
            raise ConfigError(
                f"a question-answering model explains its answer; it has no labels to choose (got {label!r}). "
                "Leave the label out."
            )
        split = self.reader.encode(frame, processor, max_length, "predict")
        windows = self.reader._tokenize(frame, processor, max_length, offsets=True)  # the same windows, with places
        logits = _per_window(self.scoring.run(model, processor, split))
        questions, contexts = [q.lstrip() for q in frame[QUESTION]], frame[CONTEXT].tolist()  # as _tokenize reads them
        targets = []
        for row, answer in enumerate(self.scoring.best_answers(logits, split)):
            if self.scoring.final_text(answer):
                window, (start, end), names = answer.window, answer.tokens, ("answer start", "answer end")
            else:
                window, (start, end) = answer.null_window, (CLS_INDEX, CLS_INDEX)
                names = ("no answer (start)", "no answer (end)")
            offsets, sequence_ids = encoded_places(windows, window)
            for column, (output, name, position) in enumerate(
                (("start_logits", names[0], start), ("end_logits", names[1], end))
            ):
                targets.append(
                    TextExplanationTarget(
                        row=row,
                        name=name,
                        features=row_features(split, window),
                        output=output,
                        positions=(position,),
                        classes=(),
                        activation="softmax",
                        offsets=offsets,
                        sequence_ids=sequence_ids,
                        texts=(questions[row], contexts[row]),
                        probability=row_score(logits[window][:, column], (position,), (), "softmax"),
                    )
                )
        return targets


def context_offsets(spans: list[tuple[int, int]], sequence_ids: list[int | None]) -> np.ndarray:
    """A window's character offsets [tokens, 2] in the context; -1 for tokens outside it (question, specials)."""
    offsets = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    offsets[np.array([sequence != 1 for sequence in sequence_ids], dtype=bool)] = -1
    return offsets


def answer_tokens(answers: list[dict[str, Any]], offsets: np.ndarray) -> tuple[int, int]:
    """The first gold answer's (first token, last token) in this window; [CLS] when it is not wholly inside."""
    context = np.flatnonzero(offsets[:, 0] >= 0)
    if not answers or not len(context):
        return CLS_INDEX, CLS_INDEX
    start_char = answers[0]["answer_start"]
    end_char = start_char + len(answers[0]["text"])
    if offsets[context[0], 0] > start_char or offsets[context[-1], 1] < end_char:
        return CLS_INDEX, CLS_INDEX
    first = context[offsets[context, 0] <= start_char][-1]
    last = context[offsets[context, 1] >= end_char][0]
    return int(first), int(last)


def gold_texts(split: EncodedSplit) -> list[list[str]]:
    """Each question's gold answer texts (empty for unanswerable), in question order."""
    golds: dict[int, list[str]] = {}
    for example, answers in zip(split.meta["example"], split.meta["answers"], strict=True):
        golds.setdefault(example, [a["text"] for a in answers or []])
    return [golds[e] for e in range(len(golds))]


def _pair(item: Any) -> tuple[str, str] | None:
    if isinstance(item, dict):
        item = (item.get(QUESTION), item.get(CONTEXT))
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return item[0], item[1]
    return None


def _logsumexp(values: np.ndarray) -> float:
    peak = values.max()
    return float(peak + np.log(np.exp(values - peak).sum()))


def _per_window(outputs: Outputs) -> list[np.ndarray]:
    assert isinstance(outputs.logits, list), "question answering scores every token of every window"
    return outputs.logits
