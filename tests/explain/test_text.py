"""Text explanations end to end: every Captum method on a model whose answer is known, the text tasks'
explanation pieces (classes, labels, pairs, named entities, answer start and end) on tiny random BERTs
with the stock and the pooled head, integrated gradients' convergence, and one list per row."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from conftest import KeyWordModel, build_tokenizer
from torch import nn

from tunewise.errors import ConfigError
from tunewise.explain import WordAttribution, explain_frame, explain_targets
from tunewise.explain.results import METHODS
from tunewise.explain.settings import ExplainSettings
from tunewise.tasks import load_config, make_task
from tunewise.types import Capabilities, CheckpointHints, TextExplanationTarget

KEY = "good"  # the one word the known-answer model reads
SENTENCES = [
    "the film was really good today",
    "our trip was good and very lovely",
    "this book is quite good for us honestly",
]


def classifier_task(problem_type: str = "single_label", pair: bool = False) -> Any:
    """A text-classification task whose labels are learnt from a few rows (no training)."""
    data: dict[str, Any] = {"train": "train.csv", "problem_type": problem_type}
    if pair:
        data["text_pair_column"] = "pair"
    task = make_task(load_config({"task": "text-classification", "data": data}))
    labels: dict[str, list[Any]] = {
        "single_label": ["negative", "positive", "neutral"],
        "multi_label": [["sports"], ["tech", "politics"], ["tech"]],
        "regression": [0.25, 0.5, 0.75],
    }
    frame = pd.DataFrame({"text": ["a", "b", "c"], "pair": ["d", "e", "f"], "label": labels[problem_type]})
    task.data.learn(frame.assign(_row=[1, 2, 3]))
    return task


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, KeyWordModel]:
    """The known-answer model behind a binary text-classification task (classes negative, positive)."""
    tokenizer = build_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    task = make_task(load_config({"task": "text-classification", "data": {"train": "train.csv"}}))
    task.data.learn(pd.DataFrame({"text": ["a", "b"], "label": ["negative", "positive"], "_row": [1, 2]}))
    model = KeyWordModel(len(tokenizer), tokenizer.convert_tokens_to_ids(KEY), tokenizer.pad_token_id)
    return task, tokenizer, model


def tiny_classifier(task: Any, model_dir: Path, pooling: str) -> nn.Module:
    torch.manual_seed(0)
    return task.model.build(task.model.source(str(model_dir)), CheckpointHints(), pooling)


# ------------------------------------------------------------------------------------------ known answer


@pytest.mark.parametrize("method", METHODS)
def test_every_method_puts_the_word_the_model_reads_on_top(known: tuple, method: str) -> None:
    task, tokenizer, model = known
    frame = pd.DataFrame({"text": [*SENTENCES, "the zorbly film was good"]})  # zorbly: letter pieces
    targets = task.explanation.targets(model, tokenizer, frame, 32)
    assert [t.name for t in targets] == ["positive"] * len(frame)
    explanations = explain_targets(model, targets, ExplainSettings(method=method, steps=16))
    for text, explained in zip(frame["text"], explanations, strict=True):
        assert isinstance(explained, WordAttribution) and explained.method == method
        assert [w.text for w in explained.words] == text.split()
        best, second = explained.top(2)
        assert best.text == KEY, explained
        assert best.score > 0.2 and best.score > 10 * abs(second.score), explained


def test_integrated_gradients_converge_and_complete(known: tuple) -> None:
    """64 steps: the attributions add up to the change in probability from the word-less input."""
    task, tokenizer, model = known
    targets = task.explanation.targets(model, tokenizer, pd.DataFrame({"text": SENTENCES}), 32)
    for method in ("integrated_gradients", "layer_integrated_gradients"):
        for target, explained in zip(
            targets, explain_targets(model, targets, ExplainSettings(method=method, steps=64)), strict=True
        ):
            assert explained.convergence_delta is not None and explained.convergence_delta < 0.05, explained
            word_less = torch.sigmoid(torch.tensor(-3.0)).item()  # no key token: logit -3 (the pad token reads 0)
            assert sum(w.score for w in explained.words) == pytest.approx(target.probability - word_less, abs=0.02)


def test_explaining_leaves_the_model_as_it_was(known: tuple) -> None:
    """No parameter gradient, the training mode restored, and it works under the caller's inference mode."""
    task, tokenizer, model = known
    model.train()
    with torch.inference_mode():
        targets = task.explanation.targets(model, tokenizer, pd.DataFrame({"text": SENTENCES[:1]}), 32)
        for method in METHODS:
            explain_targets(model, targets, ExplainSettings(method=method, steps=8))
    assert model.training
    assert all(parameter.grad is None for parameter in model.parameters())
    model.eval()


def test_an_unknown_method_is_refused_naming_the_methods(known: tuple) -> None:
    task, tokenizer, model = known
    targets = task.explanation.targets(model, tokenizer, pd.DataFrame({"text": SENTENCES[:1]}), 32)
    with pytest.raises(ConfigError, match=r"grad_cam.*integrated_gradients"):
        explain_targets(model, targets, ExplainSettings(method="grad_cam"))


# ------------------------------------------------------------------------------------------ text classification


@pytest.mark.parametrize(("fixture", "pooling"), [("tiny_model_dir", "cls"), ("tiny_mean_model_dir", "mean")])
def test_classifier_targets_the_predicted_class_or_a_chosen_label(request, fixture: str, pooling: str) -> None:
    """The stock [CLS] head and tunewise's pooled head both take embeddings (integrated gradients)."""
    task = classifier_task()
    model = tiny_classifier(task, request.getfixturevalue(fixture), pooling)
    tokenizer = task.model.processor(task.model.source(str(request.getfixturevalue(fixture))))
    frame = pd.DataFrame({"text": ["the film was good", "a terrible meal , honestly"]})
    split = task.data.encode(frame, tokenizer, 32, "predict")
    predicted = task.scoring.present(task.scoring.run(model, tokenizer, split), split)
    targets = task.explanation.targets(model, tokenizer, frame, 32)
    assert [t.name for t in targets] == predicted["predicted_label"].tolist()
    assert [t.probability for t in targets] == pytest.approx(predicted["score"].tolist(), abs=1e-5)
    assert all(t.activation == "softmax" and t.output == "logits" and t.positions == () for t in targets)
    explanations = explain_targets(model, targets, ExplainSettings(steps=8))
    assert [[w.text for w in e.words] for e in explanations] == [
        ["the", "film", "was", "good"], ["a", "terrible", "meal", ",", "honestly"]
    ]  # fmt: skip
    chosen = task.explanation.targets(model, tokenizer, frame, 32, label="neutral")
    assert [t.name for t in chosen] == ["neutral", "neutral"]
    assert [t.probability for t in chosen] == pytest.approx(predicted["prob_neutral"].tolist(), abs=1e-5)
    with pytest.raises(ConfigError, match=r"'joyful'.*negative, neutral, positive"):
        task.explanation.targets(model, tokenizer, frame, 32, label="joyful")


def test_multi_label_targets_each_predicted_label_and_regression_the_value(tiny_mean_model_dir: Path) -> None:
    frame = pd.DataFrame({"text": ["the vote on the chip"]})
    task = classifier_task("multi_label")
    tokenizer = task.model.processor(task.model.source(str(tiny_mean_model_dir)))
    model = tiny_classifier(task, tiny_mean_model_dir, "mean")
    task.labels.threshold = 0.0  # every label predicted: one target each, most likely first
    targets = task.explanation.targets(model, tokenizer, frame, 32)
    assert sorted(t.name for t in targets) == ["politics", "sports", "tech"]
    assert [t.probability for t in targets] == sorted((t.probability for t in targets), reverse=True)
    assert all(t.activation == "sigmoid" for t in targets)
    task.labels.threshold = 1.0  # none predicted: the most likely one
    assert [t.name for t in task.explanation.targets(model, tokenizer, frame, 32)] == [targets[0].name]
    assert [t.name for t in task.explanation.targets(model, tokenizer, frame, 32, label="tech")] == ["tech"]

    task = classifier_task("regression")
    model = tiny_classifier(task, tiny_mean_model_dir, "mean")
    (target,) = task.explanation.targets(model, tokenizer, frame, 32)
    value = task.scoring.run(model, tokenizer, task.data.encode(frame, tokenizer, 32, "predict")).logits[0, 0]
    assert (target.name, target.activation, target.classes) == ("value", "identity", (0,))
    assert target.probability == pytest.approx(float(value), abs=1e-5)
    with pytest.raises(ConfigError, match="regression"):
        task.explanation.targets(model, tokenizer, frame, 32, label="value")


def test_a_pairs_two_texts_are_both_explained(tiny_mean_model_dir: Path) -> None:
    task = classifier_task(pair=True)
    model = tiny_classifier(task, tiny_mean_model_dir, "mean")
    tokenizer = task.model.processor(task.model.source(str(tiny_mean_model_dir)))
    frame = pd.DataFrame({"text": ["the film was good"], "pair": ["the movie is bad"]})
    (target,) = task.explanation.targets(model, tokenizer, frame, 32)
    assert target.texts == ("the film was good", "the movie is bad")
    (explained,) = explain_targets(model, [target], ExplainSettings(method="layer_integrated_gradients", steps=8))
    assert [(w.source, w.text) for w in explained.words] == [(0, w) for w in frame.text[0].split()] + [
        (1, w) for w in frame.pair[0].split()
    ]


# ------------------------------------------------------------------------------------------ named entities


def ner_task_and_model(model_dir: Path, favoured: str) -> tuple[Any, nn.Module, Any]:
    """A tiny random NER model whose head is biased to tag every word `favoured` (known entities)."""
    task = make_task(load_config({"task": "token-classification", "data": {"train": "train.jsonl"}}))
    rows = pd.DataFrame(
        {"tokens": [["the", "senate", "vote"], ["a", "robot"]], "tags": [["O", "B-POL", "I-POL"], ["O", "B-TECH"]]}
    )
    task.data.learn(rows.assign(text=rows.tokens.str.join(" "), _row=[1, 2]))
    source = task.model.source(str(model_dir))
    model = task.model.build(source, CheckpointHints(), "cls")
    with torch.no_grad():
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[task.tags.names.index(favoured)] = 10.0
    return task, model, task.model.processor(source)


def test_every_predicted_entity_is_a_target_on_its_words_first_tokens(tiny_model_dir: Path) -> None:
    task, model, tokenizer = ner_task_and_model(tiny_model_dir, "B-POL")  # every word its own POL entity
    frame = task.data.from_inputs(["the zorbly vote", "robot"])
    targets = task.explanation.targets(model, tokenizer, frame, 32)
    assert [(t.row, t.name) for t in targets] == [
        (0, "POL: the"),
        (0, "POL: zorbly"),
        (0, "POL: vote"),
        (1, "POL: robot"),
    ]
    b_pol = task.tags.names.index("B-POL")
    assert [t.positions for t in targets] == [(1,), (2,), (8,), (1,)]  # zorbly: z ##o ##r ##b ##l ##y
    assert all(t.classes == (b_pol,) and t.activation == "softmax" and t.output == "logits" for t in targets)
    assert all(t.probability > 0.99 for t in targets)
    explained = explain_targets(model, targets[:3], ExplainSettings(steps=8))
    assert [w.text for w in explained[1].words] == ["the", "zorbly", "vote"]
    assert task.explanation.targets(model, tokenizer, frame, 32, label="TECH") == []
    with pytest.raises(ConfigError, match=r"'PER'.*POL, TECH"):
        task.explanation.targets(model, tokenizer, frame, 32, label="PER")


def test_a_multi_word_entity_is_one_target_over_its_words(tiny_model_dir: Path) -> None:
    task, model, tokenizer = ner_task_and_model(tiny_model_dir, "I-TECH")  # one entity over the whole sentence
    frame = task.data.from_inputs(["the robot chip !"])
    (target,) = task.explanation.targets(model, tokenizer, frame, 32)
    assert target.name == "TECH: the robot chip !" and target.positions == (1, 2, 3, 4)
    assert target.offsets[1:5] == ((0, 3), (4, 9), (10, 14), (15, 16))


# ------------------------------------------------------------------------------------------ question answering


def qa_task_and_model(model_dir: Path) -> tuple[Any, nn.Module, Any]:
    config = {"task": "question-answering", "data": {"train": "train.json", "max_length": 24}}
    task = make_task(load_config({**config, "question_answering": {"stride": 6}}))
    source = task.model.source(str(model_dir))
    torch.manual_seed(0)
    return task, task.model.build(source, CheckpointHints(), "cls"), task.model.processor(source)


def test_the_answers_start_and_end_in_the_window_that_holds_the_answer(tiny_model_dir: Path) -> None:
    task, model, tokenizer = qa_task_and_model(tiny_model_dir)
    context = "the film was good . the meal was bad . our trip was lovely . the song was awful . the show was poor ."
    frame = task.data.from_inputs([("what was the film ?", context), ("was the meal bad ?", "the meal was bad .")])
    split = task.data.encode(frame, tokenizer, 24, "predict")
    assert split.meta["example"].count(0) > 1  # the long context is read in several windows
    presented = task.scoring.present(task.scoring.run(model, tokenizer, split), split)
    targets = task.explanation.targets(model, tokenizer, frame, 24)
    assert [(t.row, t.name, t.output) for t in targets] == [
        (row, name, output)
        for row in (0, 1)
        for name, output in (("answer start", "start_logits"), ("answer end", "end_logits"))
    ]
    for start, end in zip(targets[::2], targets[1::2], strict=True):
        answer = presented.iloc[start.row]
        assert start.texts == tuple(frame.iloc[start.row])  # (question, context)
        assert start.classes == () and start.activation == "softmax"
        assert start.features["input_ids"].equal(end.features["input_ids"])
        (s,), (e,) = start.positions, end.positions
        assert start.sequence_ids[s] == 1 and start.sequence_ids[e] == 1  # inside the context
        assert (start.offsets[s][0], end.offsets[e][1]) == (answer.predicted_start, answer.predicted_end)
        assert 0 < start.probability < 1 and 0 < end.probability < 1
    explained = explain_targets(model, targets[:2], ExplainSettings(method="gradient_x_input"))
    assert {w.source for w in explained[0].words} == {0, 1}
    with pytest.raises(ConfigError, match="no labels"):
        task.explanation.targets(model, tokenizer, frame, 24, label="x")


def test_an_abstention_explains_the_no_answer_token(tiny_model_dir: Path) -> None:
    task, model, tokenizer = qa_task_and_model(tiny_model_dir)
    task.answers.unanswerable, task.answers.null_threshold = True, -1e9  # abstains whatever the scores
    frame = task.data.from_inputs([("was the meal bad ?", "the meal was bad .")])
    targets = task.explanation.targets(model, tokenizer, frame, 24)
    assert [(t.name, t.positions) for t in targets] == [("no answer (start)", (0,)), ("no answer (end)", (0,))]


# ------------------------------------------------------------------------------------------ one list per row


@dataclass
class _Piece:
    targets_made: list[TextExplanationTarget]

    def targets(self, model, processor, frame, max_length, label=None) -> list[TextExplanationTarget]:
        return [t for t in self.targets_made if label is None or t.name == label]


@dataclass
class _Task:
    """A task stand-in whose explanation piece returns given targets: rows with none, one and two."""

    wrapped: Any
    explanation: _Piece

    def facts(self) -> Any:
        return replace(self.wrapped.facts(), capabilities=Capabilities(explanations=True))


def test_explain_frame_gives_one_list_per_row_even_for_rows_without_targets(known: tuple) -> None:
    task, tokenizer, model = known
    frame = pd.DataFrame({"text": SENTENCES})
    first, _, third = task.explanation.targets(model, tokenizer, frame, 32)
    also = replace(third, name="negative", classes=(0,))
    stand_in = _Task(task, _Piece([first, third, also]))
    rows = explain_frame(model, tokenizer, stand_in, frame, 32, ExplainSettings(steps=8))
    assert [[e.target for e in row] for row in rows] == [["positive"], [], ["positive", "negative"]]
    (key,) = [w for w in rows[2][1].words if w.text == KEY]
    assert key.score < -0.2 and key.score == min(w.score for w in rows[2][1].words)  # it pulls "negative" down
    real = explain_frame(model, tokenizer, task, frame, 32, ExplainSettings(method="occlusion", label="negative"))
    assert [[(e.row, e.target) for e in row] for row in real] == [[(i, "negative")] for i in range(3)]
