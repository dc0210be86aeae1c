"""Every surface of explanations on one tiny trained run: the `explain:` config (auto resolved, its rules),
`predict(explain=True)` and its choices and refusals, predict_file's JSON column, the deletion test on a
file, `tunewise predict --explain`, the server's explain flag (explained and plain requests in one burst,
never in one model call), the train job's explanations.json, and its aggregation (top words, examples,
identity terms) on hand-made explanations.

The engine itself (attributions, word merging, the deletion test's arithmetic, heat maps) is tested in
test_text.py, test_words.py, test_faithfulness.py and test_images.py.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, get_args

import pandas as pd
import pytest
from conftest import assert_close, invoke_cli, make_config, read_json, write_csv

import tunewise
from tunewise.config.sections import ExplainMethod
from tunewise.errors import ConfigError
from tunewise.explain.results import IMAGE_METHODS, METHODS, Word, WordAttribution
from tunewise.jobs.explanations import choose_examples, identity_attribution, top_words
from tunewise.prepare.rules import check_task_rules
from tunewise.serving.batching import BatchLimits
from tunewise.serving.http import ServerSettings
from tunewise.serving.predictor import FineTunedModel, csv_ready, load
from tunewise.tasks import load_config, make_task
from tunewise.types import TextExplanationTarget

POSITIVE = ["the film was really great overall", "this book was so excellent today"]
NEGATIVE = ["the movie was very awful again", "the hotel was rather terrible honestly"]
TEXTS = POSITIVE + NEGATIVE
WORD_KEYS = {"word", "text", "start", "end", "score"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir, single_label_data) -> tunewise.Run:
    folder = tmp_path_factory.mktemp("explained-run")
    config = make_config(folder, tiny_model_dir, single_label_data, train={"epochs": 5, "learning_rate": 3e-3})
    return tunewise.train(config, show_progress=False)


@pytest.fixture(scope="module")
def model(run) -> FineTunedModel:
    return load(run.run_dir, device="cpu")


# ------------------------------------------------------------------------------------------ config


def test_the_config_offers_exactly_the_engines_methods() -> None:
    assert set(get_args(ExplainMethod)) == {"auto", *METHODS, *IMAGE_METHODS}


def test_explain_auto_is_saved_concrete_and_rules_name_what_to_change(run) -> None:
    saved = tunewise.load_config(run.run_dir / "config.yaml").explain
    assert saved.enabled is True and saved.method == "occlusion"  # auto, as bench/explain_text.py chose
    requested = read_json(run.run_dir / "run.json")["requested_config"]["explain"]
    assert requested["enabled"] == "auto" and requested["method"] == "auto"

    generative = load_config({"task": "causal-lm", "data": {"train": "t.jsonl"}, "explain": {"enabled": True}})
    (problem,) = check_task_rules(generative, make_task(generative).facts(), {})
    assert "explain.enabled: true" in str(problem) and "explain.enabled: auto" in str(problem)
    image_method = load_config(
        {"task": "text-classification", "data": {"train": "t.csv"}, "explain": {"method": "grad_cam"}}
    )
    (problem,) = check_task_rules(image_method, make_task(image_method).facts(), {})
    assert "explain.method grad_cam" in str(problem) and "integrated_gradients" in str(problem)


# ------------------------------------------------------------------------------------------ predict


def test_predict_explains_each_prediction_toward_its_label(run, model) -> None:
    plain = model.predict(TEXTS)
    explained = run.predict(TEXTS, explain=True)
    assert all("explanation" not in p for p in plain)
    for text, without, prediction in zip(TEXTS, plain, explained, strict=True):
        assert_close({k: v for k, v in prediction.items() if k != "explanation"}, without)
        (item,) = prediction["explanation"]
        assert item["target"] == prediction["label"] and item["method"] == "occlusion"
        assert item["probability"] == pytest.approx(prediction["score"], abs=1e-5)
        assert item["convergence_delta"] is None  # occlusion has none; integrated gradients reports it
        assert [w["word"] for w in item["words"]] == text.split()
        assert all(set(w) == WORD_KEYS and text[w["start"] : w["end"]] == w["word"] for w in item["words"])
    json.dumps(explained)  # plain JSON all the way down


def test_a_chosen_label_and_method_are_explained_instead(model) -> None:
    (prediction,) = model.predict(
        POSITIVE[:1], explain=True, explain_label="negative", explain_method="integrated_gradients"
    )
    (item,) = prediction["explanation"]
    assert prediction["label"] == "positive" and item["target"] == "negative"
    assert item["method"] == "integrated_gradients" and isinstance(item["convergence_delta"], float)
    assert item["probability"] == pytest.approx(prediction["probabilities"]["negative"], abs=1e-5)


def test_unknown_labels_and_methods_are_refused_naming_the_choices(model) -> None:
    with pytest.raises(ConfigError, match="choose one of: negative, positive"):
        model.predict(TEXTS, explain=True, explain_label="neutral")
    with pytest.raises(ConfigError, match="choose auto or one of: integrated_gradients"):
        model.predict(TEXTS, explain=True, explain_method="grad_cam")


def test_files_get_an_explanation_column_of_json_and_the_deletion_test_runs_on_a_file(model, tmp_path) -> None:
    source = write_csv(tmp_path / "in.csv", [{"text": text} for text in TEXTS])
    frame = model.predict_file(source, model.explain_settings())
    assert list(frame["text"]) == TEXTS and len(frame["explanation"]) == len(TEXTS)
    written = csv_ready(frame)
    assert json.loads(written["explanation"][0]) == frame["explanation"][0]

    labelled = write_csv(tmp_path / "labelled.csv", [{"text": t, "label": "positive"} for t in POSITIVE] * 3)
    faithfulness = model.faithfulness(labelled, rows=4)
    assert faithfulness["explanations"] == 4 and set(faithfulness["by_k"]) == {"1", "3", "20%"}


# ------------------------------------------------------------------------------------------ CLI


def test_cli_predict_explain_prints_signed_word_scores_and_writes_json(run, tmp_path) -> None:
    printed = invoke_cli(
        "predict", run.run_dir, "--text", POSITIVE[0], "--explain", "--explain-method", "integrated_gradients"
    )
    assert printed.exit_code == 0, printed.output
    assert POSITIVE[0] in printed.output and "integrated_gradients, convergence delta" in printed.output
    assert "great +" in printed.output or "great -" in printed.output

    output = tmp_path / "out.csv"
    written = invoke_cli("predict", run.run_dir, "--text", NEGATIVE[0], "--explain", "--output", output)
    assert written.exit_code == 0, written.output
    (item,) = json.loads(pd.read_csv(output)["explanation"][0])
    assert item["target"] == "negative" and {w["word"] for w in item["words"]} == set(NEGATIVE[0].split())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--explain", "--explain-label", "neutral"], "choose one of: negative, positive"),
        (["--explain", "--explain-method", "shap"], "choose auto or one of"),
        (["--explain-label", "positive"], "go with --explain"),
    ],
)
def test_cli_predict_explain_mistakes_exit_1_with_a_message(run, options, message) -> None:
    result = invoke_cli("predict", run.run_dir, "--text", POSITIVE[0], *options)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------------------ the server


def test_explained_and_plain_requests_in_one_burst_never_share_a_model_call(serving, run, model) -> None:
    calls: list[tuple[bool, list[str]]] = []
    lock = threading.Lock()

    def spying_load(folder: Path) -> FineTunedModel:
        loaded = load(folder, device="cpu")
        predict_frame = loaded.predict_frame

        def recorded(frame: pd.DataFrame, explain: Any = None) -> pd.DataFrame:
            with lock:
                calls.append((explain is not None, frame["text"].tolist()))
            return predict_frame(frame, explain)

        loaded.predict_frame = recorded  # type: ignore[method-assign]
        return loaded

    server = serving(run.run_dir, ServerSettings(batching=BatchLimits(max_wait_ms=150)), spying_load)
    requests = [([text], index % 2 == 0) for index, text in enumerate(TEXTS * 3)]
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        answers = list(pool.map(lambda r: server.post(r[0], {"explain": r[1]}), requests))
    for (inputs, explain), answer in zip(requests, answers, strict=True):
        assert answer.status_code == 200, answer.text
        (got,) = answer.json()["predictions"]
        (want,) = model.predict(inputs, explain=explain)
        assert ("explanation" in got) is explain
        assert_close(got, want)
    explained_texts = {text for inputs, explain in requests if explain for text in inputs}
    assert {explain for explain, _ in calls} == {True, False}
    for explain, texts in calls:  # one model call holds one kind of request
        assert all((text in explained_texts) is explain for text in texts), calls
    assert any(len(texts) > 1 for _, texts in calls)  # the burst was batched


def test_explain_fields_are_checked_with_the_field_named(serving, run) -> None:
    server = serving(run.run_dir)
    cases = [
        ({"explain": True, "explain_label": "neutral"}, "explain_label", "choose one of: negative, positive"),
        ({"explain": True, "explain_method": "shap"}, "explain_method", "choose auto or one of"),
        ({"explain_label": "positive"}, "explain_label", '"explain": true'),
        ({"explain": "maybe"}, "explain", "valid boolean"),
    ]
    for body, field, message in cases:
        response = server.post(POSITIVE, body)
        assert response.status_code == 422 and response.json()["field"] == field, response.text
        assert message in response.json()["error"]
    explanations = server.get("/info").json()["explanations"]
    assert explanations["available"] is True and explanations["steps"] == 32
    assert explanations["methods"] == ["auto", *METHODS]


# ------------------------------------------------------------------------------------------ the train job


def test_the_train_job_writes_explanations_json(run, single_label_data) -> None:
    explained = read_json(run.run_dir / "explanations.json")
    assert explained["split"] == "test" and explained["rows"] == 8 == explained["explanations"]  # explain.rows
    assert explained["method"] == "occlusion" and explained["steps"] == 32
    assert explained["seconds"] >= 0 and explained["mean_convergence_delta"] is None  # integrated gradients' only
    assert set(explained["labels"]) <= {"negative", "positive"} and explained["min_word_rows"] == 3
    for entry in explained["labels"].values():
        assert all(w["rows"] >= 3 and w["mean"] > 0 for w in entry["toward"])
        assert all(w["rows"] >= 3 and w["mean"] < 0 for w in entry["against"])
    test_texts = set(pd.read_csv(single_label_data["test"])["text"])
    kinds = [example["kind"] for example in explained["examples"]]
    assert kinds == sorted(kinds) and set(kinds) <= {"correct", "wrong"} and kinds.count("correct") <= 2
    for example in explained["examples"]:
        assert example["texts"][0] in test_texts and example["label"] in {"negative", "positive"}
        assert (example["kind"] == "correct") == (example["label"] == example["target"])
        assert {w["word"] for w in example["words"]} == set(example["texts"][0].split())
    assert set(explained["faithfulness"]["by_k"]) == {"1", "3", "20%"}
    assert "explanations" in read_json(run.run_dir / "run.json")["durations_seconds"]


# ------------------------------------------------------------------------------------------ aggregation


def attribution(row: int, target: str, scored: list[tuple[str, float]], probability: float = 0.9) -> WordAttribution:
    words, at = [], 0
    for text, score in scored:
        words.append(Word(text, 0, at, at + len(text), score))
        at += len(text) + 1
    return WordAttribution(row, target, probability, "integrated_gradients", tuple(words), 0.01)


def target(row: int, positions: tuple[int, ...] = (), classes: tuple[int, ...] = (0,)) -> TextExplanationTarget:
    return TextExplanationTarget(row, "", {}, "logits", positions, classes, "softmax", (), (), ("",), 0.9)


def test_top_words_need_three_rows_and_per_entity_targets_count_toward_their_type() -> None:
    explained = [
        attribution(0, "spam", [("free", 0.5), ("prize", 0.4), ("call", -0.2)]),
        attribution(1, "spam", [("free", 0.3), ("Free!", 0.1), ("call", -0.1)]),
        attribution(2, "spam", [("free", 0.1), ("winner", 0.9), ("call", -0.3)]),
        attribution(3, "PER: Ada Lovelace", [("Ada", 0.6)]),
        attribution(4, "PER: Alan Turing", [("Alan", 0.5)]),
    ]
    targets = [target(i) for i in range(3)] + [target(3, (1,), (2,)), target(4, (1,), (2,))]
    words = top_words(targets, explained)
    assert set(words) == {"spam", "PER"} and words["PER"]["explanations"] == 2
    assert words["spam"]["toward"] == [{"word": "free", "mean": pytest.approx(1.0 / 3), "rows": 3}]  # with "Free!"
    assert words["spam"]["against"] == [{"word": "call", "mean": pytest.approx(-0.2), "rows": 3}]
    assert words["PER"]["toward"] == []  # each name occurs once: too rare to rank


def test_examples_are_the_most_confident_correct_and_wrong_the_labels_in_turn() -> None:
    predicted = [("a", 0.6), ("a", 0.9), ("b", 0.8), ("b", 0.7), ("a", 0.95), ("a", 0.99)]
    explained = [attribution(i, label, [("x", 0.1)], p) for i, (label, p) in enumerate(predicted)]
    truths = ["a", "a", "b", "b", "b", "a"]
    targets = [target(i) for i in range(len(predicted))]
    assert choose_examples(targets, explained, truths, per_kind=2) == [(5, "correct"), (2, "correct"), (4, "wrong")]
    assert choose_examples(targets, explained, None, per_kind=1) == [(5, "example"), (2, "example")]


def test_identity_terms_with_a_gap_get_their_share_of_the_attribution() -> None:
    explained = [
        attribution(0, "toxic", [("the", 0.1), ("woman", 0.6), ("was", -0.1), ("rude", 0.2)]),
        attribution(1, "toxic", [("Her,", -0.2), ("book", 0.2)]),
        attribution(2, "fine", [("a", 0.1), ("man", 0.1)]),
    ]
    fairness = {
        "split": "test",
        "identities": {"gender/female": {"n": 12, "auc_gap": 0.2}, "gender/male": {"n": 12, "auc_gap": 0.0}},
        "checks": [{"figure": "identity_auc_gap:gender/female", "status": "fail"}],
    }
    terms = {"gender": {"female": ["woman", "her"], "male": ["man"]}}
    identities = identity_attribution([target(i) for i in range(3)], explained, fairness, terms)
    assert set(identities) == {"gender/female"}  # no gap, no row
    female = identities["gender/female"]
    assert female["rows"] == 2 and female["status"] == "fail" and female["auc_gap"] == 0.2
    assert female["attribution_share"] == pytest.approx(0.8 / 1.4)  # |0.6| + |-0.2| of 1.0 + 0.4
    assert female["uniform_share"] == pytest.approx(2 / 6) and female["mean_attribution"] == pytest.approx(0.2)
