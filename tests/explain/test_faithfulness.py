"""ERASER's deletion test: on a model whose answer is known, deleting the top word drops the probability far
more than deleting a random one and keeping it alone keeps the probability; the random baseline is
reproducible by seed; rows with too few words are skipped and counted; a target's own words are never
deleted; positions are re-indexed when words before them go."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import KeyWordModel, build_tokenizer

from tunewise.explain import Faithfulness, explain_targets, measure_faithfulness
from tunewise.explain.settings import TEXT_AUTO, ExplainSettings
from tunewise.tasks import load_config, make_task
from tunewise.types import CheckpointHints

KEY = "good"
SENTENCES = [
    "the film was really good today",
    "our trip was good and very lovely",
    "this book is quite good for us honestly",
    "good food at lunch with you",
    "the song was so good in the end",
    "i see it was good again",
    "the hotel is good overall",
    "the show was rather good",
]


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyWordModel, list, list]:
    """The known-answer model's targets (the predicted class, positive) and their integrated gradients."""
    tokenizer = build_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    task = make_task(load_config({"task": "text-classification", "data": {"train": "train.csv"}}))
    task.data.learn(pd.DataFrame({"text": ["a", "b"], "label": ["negative", "positive"], "_row": [1, 2]}))
    model = KeyWordModel(len(tokenizer), tokenizer.convert_tokens_to_ids(KEY), tokenizer.pad_token_id)
    frame = pd.DataFrame({"text": [*SENTENCES, "good day", "so good"]})  # the last two: 2 words, skipped at k=3
    targets = task.explanation.targets(model, tokenizer, frame, 32)
    return model, targets, explain_targets(model, targets, ExplainSettings(steps=16))


def test_deleting_the_top_word_drops_far_more_than_a_random_one_and_it_alone_suffices(explained: tuple) -> None:
    model, targets, explanations = explained
    result = measure_faithfulness(model, targets, explanations, ks=(1, 3), fraction=0.2, seed=0)
    assert isinstance(result, Faithfulness)
    one = result.as_dict()["by_k"]["1"]
    assert one["rows"] == len(targets) and one["skipped"] == 0
    assert one["comprehensiveness_top"] > 0.8  # p(positive) from 0.95 to 0.05 without "good"
    assert one["comprehensiveness_top"] - one["comprehensiveness_random"] > 0.5
    assert abs(one["sufficiency_top"]) < 0.05  # "good" alone keeps the probability
    assert one["sufficiency_random"] - one["sufficiency_top"] > 0.5
    assert result.as_dict()["method"] == TEXT_AUTO and result.explanations == len(targets)
    assert "0.9" in result.summary() and "1 word " in result.summary()


def test_rows_with_fewer_words_than_k_are_skipped_and_counted(explained: tuple) -> None:
    model, targets, explanations = explained
    by_k = measure_faithfulness(model, targets, explanations, ks=(3, 20), fraction=0.5).as_dict()["by_k"]
    assert (by_k["3"]["rows"], by_k["3"]["skipped"]) == (len(SENTENCES), 2)
    assert (by_k["20"]["rows"], by_k["20"]["skipped"]) == (0, len(targets))
    assert by_k["20"]["comprehensiveness_top"] is None  # strict JSON: null, not NaN
    assert by_k["50%"]["rows"] == len(targets)  # half of each row's words, rounded up: at least one


def test_the_random_baseline_is_reproducible_by_seed(explained: tuple) -> None:
    model, targets, explanations = explained
    first = measure_faithfulness(model, targets, explanations, seed=3).as_dict()
    assert measure_faithfulness(model, targets, explanations, seed=3).as_dict() == first
    others = [measure_faithfulness(model, targets, explanations, seed=seed).as_dict() for seed in (4, 5, 6)]
    assert any(other["by_k"]["1"] != first["by_k"]["1"] for other in others)  # the draw does depend on the seed


def test_a_named_entitys_own_words_are_never_deleted(tiny_model_dir: Path) -> None:
    """Every word is its own entity here: each target has one word fewer to delete than its row has."""
    task = make_task(load_config({"task": "token-classification", "data": {"train": "train.jsonl"}}))
    rows = pd.DataFrame({"tokens": [["the", "senate"], ["a", "robot"]], "tags": [["O", "B-POL"], ["O", "B-TECH"]]})
    task.data.learn(rows.assign(text=rows.tokens.str.join(" "), _row=[1, 2]))
    source = task.model.source(str(tiny_model_dir))
    model = task.model.build(source, CheckpointHints(), "cls")
    with torch.no_grad():
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[task.tags.names.index("B-POL")] = 10.0
    frame = task.data.from_inputs(["the senate vote", "robot chip"])
    targets = task.explanation.targets(model, task.model.processor(source), frame, 32)
    explanations = explain_targets(model, targets, ExplainSettings(method="gradient_x_input"))
    by_k = measure_faithfulness(model, targets, explanations, ks=(1, 2)).as_dict()["by_k"]
    assert (by_k["1"]["rows"], by_k["1"]["skipped"]) == (5, 0)
    assert (by_k["2"]["rows"], by_k["2"]["skipped"]) == (3, 2)  # "robot chip": one word besides the entity


def test_answer_positions_are_re_indexed_when_words_before_them_are_deleted(tiny_model_dir: Path) -> None:
    """With the question's first word made the top one, the deletion test's score of the answer start is that
    token's probability in the window without it (one position earlier), computed here by hand."""
    config = {"task": "question-answering", "data": {"train": "train.json", "max_length": 32}}
    task = make_task(load_config({**config, "question_answering": {"stride": 8}}))
    source = task.model.source(str(tiny_model_dir))
    torch.manual_seed(0)
    model = task.model.build(source, CheckpointHints(), "cls").eval()
    frame = task.data.from_inputs([("what was the film ?", "the film was good . the meal was bad .")])
    start, _ = task.explanation.targets(model, task.model.processor(source), frame, 32)
    (explanation,) = explain_targets(model, [start], ExplainSettings(method="gradient_x_input"))
    first, *rest = explanation.words
    assert (first.source, first.text) == (0, "what")
    explanation = replace(explanation, words=(replace(first, score=10.0), *rest))
    figures = measure_faithfulness(model, [start], [explanation], ks=(1,)).as_dict()["by_k"]["1"]

    (position,) = start.positions
    kept = [i for i in range(len(start.offsets)) if i != 1]  # [CLS] what ...: "what" is token 1
    with torch.no_grad():
        logits = model(**{name: tensor[:, kept] for name, tensor in start.features.items()}).start_logits[0]
    shortened = logits.softmax(-1)[position - 1].item()
    assert figures["comprehensiveness_top"] == pytest.approx(start.probability - shortened, abs=1e-5)
