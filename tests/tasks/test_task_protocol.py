"""Every registered task builds from a minimal config and declares facts that shared code can rely on:
its name, and a default metric (what picks the best step) among the metrics it reports, once it has
learnt its label space. Cheap: no model, no tokenizer, no training; the label space is learnt from a
few hand-made training rows."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from tunewise.errors import ConfigError
from tunewise.tasks import TASKS, explanation, load_config, make_task

# A few training rows per task (and problem type), as `task.data.read` returns them (with `_row`).
TRAIN_ROWS: dict[str, list[dict[str, Any]]] = {
    "text-classification/single_label": [
        {"text": "a good film", "label": "positive"},
        {"text": "a bad film", "label": "negative"},
    ],
    "text-classification/multi_label": [
        {"text": "the vote on the chip", "label": ["politics", "tech"]},
        {"text": "the match", "label": ["sports"]},
    ],
    "text-classification/regression": [
        {"text": "a good film", "label": 0.85},
        {"text": "a bad film", "label": 0.15},
    ],
    "causal-lm": [{"text": "the film was good and great"}],
    "seq2seq": [{"source": "the film was good", "target": "about the film yes"}],
    "token-classification": [
        {"tokens": ["the", "senate", "vote"], "tags": ["O", "B-POL", "I-POL"], "text": "the senate vote"},
        {"tokens": ["a", "robot"], "tags": ["O", "B-TECH"], "text": "a robot"},
    ],
    "question-answering": [
        {
            "question": "what was the prize ?",
            "context": "the prize was good .",
            "answers": [{"text": "good", "answer_start": 14}],
        }
    ],
    "image-classification": [
        {"image": "/photos/red/0.png", "label": "red"},
        {"image": "/photos/blue/0.png", "label": "blue"},
    ],
}
CASES = sorted(TRAIN_ROWS)
LABELLED = {"text-classification", "token-classification", "image-classification"}  # they learn a label space
# their predictions can be explained (tunewise.explain): the classifiers, named entities, answers
EXPLAINED = {"text-classification", "token-classification", "question-answering", "image-classification"}


def train_frame(case: str) -> pd.DataFrame:
    frame = pd.DataFrame(TRAIN_ROWS[case])
    frame["_row"] = range(1, len(frame) + 1)
    frame.attrs["source"] = "train"
    return frame


def test_every_registered_task_has_a_case_here() -> None:
    """A new task in TASKS must be added to TRAIN_ROWS, so the checks below cover it too."""
    assert {case.split("/")[0] for case in CASES} == set(TASKS)


@pytest.mark.parametrize("case", CASES)
def test_task_builds_from_a_minimal_config_and_declares_its_default_metric(case: str) -> None:
    name = case.split("/")[0]
    config = load_config({"task": name, "data": {"train": "train.jsonl"}})
    assert isinstance(config, TASKS[name].config)
    task = make_task(config)
    assert task.facts().name == name  # the facts are available before any label is learnt
    task.data.learn(train_frame(case))
    facts = task.facts()
    assert facts.name == name
    assert facts.default_metric, facts
    assert facts.default_metric in facts.metrics, (facts.default_metric, facts.metrics)
    assert len(set(facts.metrics)) == len(facts.metrics) and all(facts.metrics)
    assert bool(facts.label_names) == (name in LABELLED), facts.label_names
    if facts.capabilities.class_labels:  # one class per row: the classes learnt are declared
        assert len(facts.label_names) >= 2, facts.label_names
    if "/" in case:
        assert facts.problem_type == case.split("/")[1]
    assert facts.record()["default_metric"] == facts.default_metric  # run.json keeps it


@pytest.mark.parametrize("case", CASES)
def test_a_task_that_declares_explanations_has_the_piece_and_the_others_refuse(case: str) -> None:
    name = case.split("/")[0]
    task = make_task(load_config({"task": name, "data": {"train": "train.jsonl"}}))
    task.data.learn(train_frame(case))
    assert task.facts().capabilities.explanations == (name in EXPLAINED)
    if name in EXPLAINED:
        assert callable(explanation(task).targets)
    else:
        with pytest.raises(ConfigError, match="cannot explain"):
            explanation(task)
