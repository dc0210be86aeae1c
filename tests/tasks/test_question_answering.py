"""Extractive question answering: SQuAD reading and validation, windows and offsets, the official
EM/F1, span search across windows, no-answer thresholding, and the whole job on tiny models."""

from __future__ import annotations

import gzip
import json
import random
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import (
    FILLERS,
    NEGATIVE,
    POSITIVE,
    SUBJECTS,
    make_config,
    requires_shared,
    shared_path,
    train_until_crash,
    write_jsonl,
)
from typer.testing import CliRunner

import tunewise
from tunewise.cli import app
from tunewise.data.splits import split_train_validation
from tunewise.data.squad import read_qa
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.evaluation.metrics import is_better
from tunewise.evaluation.squad import (
    best_null_threshold,
    exact_match,
    f1_score,
    normalize_answer,
    question_scores,
    squad_metrics,
)
from tunewise.jobs.check import run_check
from tunewise.prepare import prepare_check
from tunewise.tasks import load_config, make_task
from tunewise.types import Outputs

WORDS = POSITIVE + NEGATIVE  # the answers: single words the tiny vocabulary knows


# ------------------------------------------------------------------------------------------ data


def filler_sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} was {rng.choice(FILLERS)} {rng.choice(WORDS)} ."


def qa_example(rng: random.Random, answerable: bool = True, sentences: int = 3) -> dict[str, Any]:
    """'... the prize was <word> ...': the answer is the word after 'prize was' (absent: unanswerable)."""
    parts = [filler_sentence(rng) for _ in range(sentences)]
    answers = []
    if answerable:
        word = rng.choice(WORDS)
        position = rng.randrange(len(parts) + 1)
        prefix = " ".join([*parts[:position], "the prize was "])
        parts.insert(position, f"the prize was {word} .")
        answers = [{"text": word, "answer_start": len(prefix)}]
    return {"question": "what was the prize ?", "context": " ".join(parts), "answers": answers}


def qa_rows(n: int, seed: int, unanswerable_share: float = 0.0, sentences: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [qa_example(rng, rng.random() >= unanswerable_share, sentences) for _ in range(n)]


def squad_document(rows: list[dict[str, Any]], articles: int = 4, version_2: bool = False) -> dict:
    """Rows as SQuAD JSON: one paragraph per row, spread over `articles` titled articles."""
    data = [{"title": f"Article_{a}", "paragraphs": []} for a in range(articles)]
    for i, row in enumerate(rows):
        qa = {"id": f"q{i}", "question": row["question"], "answers": row["answers"]}
        if version_2:
            qa["is_impossible"] = not row["answers"]
        data[i % articles]["paragraphs"].append({"context": row["context"], "qas": [qa]})
    return {"version": "v2.0" if version_2 else "1.1", "data": data}


def write_json(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """SQuAD v1.1 JSON: train (160 questions in 8 articles) and test (40)."""
    folder = tmp_path_factory.mktemp("qa-data")
    return {
        "train": write_json(folder / "train.json", squad_document(qa_rows(160, seed=1), articles=8)),
        "test": write_json(folder / "test.json", squad_document(qa_rows(40, seed=2))),
    }


LEARN = {"epochs": 6, "learning_rate": 3e-3, "batch_size": 8}


def qa_config(tmp_path: Path, model_dir: Path, data: dict, **overrides: Any) -> dict:
    return make_config(
        tmp_path,
        model_dir,
        {"max_length": 48, **data, **overrides.pop("data", {})},
        task="question-answering",
        question_answering={"stride": 16, **overrides.pop("question_answering", {})},
        train={**LEARN, **overrides.pop("train", {})},
        **overrides,
    )


def train(config: dict, **kwargs: Any) -> tunewise.Run:
    return tunewise.train(config, show_progress=False, **kwargs)


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, tiny_model_dir, qa_data) -> tunewise.Run:
    return train(qa_config(tmp_path_factory.mktemp("qa-run"), tiny_model_dir, qa_data))


def task_for(model_dir: Path, **overrides: Any):
    config = load_config(qa_config(Path("unused"), model_dir, {"train": "unused.json"}, **overrides))
    task = make_task(config)
    return task, task.model.processor(task.model.source(str(model_dir)))


# ------------------------------------------------------------------------------------------ official metrics


def test_normalisation_is_the_official_one() -> None:
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theatre") == "theatre"  # 'the' only as a whole word


def test_exact_match_and_f1_follow_the_squad_script() -> None:
    assert exact_match("the Broncos", "Broncos") == 1.0
    assert f1_score("Denver Broncos won", "the Denver Broncos") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert f1_score("Panthers", "Broncos") == 0.0
    # best over the gold answers, as the official evaluation scores a question
    assert question_scores("Denver", ["Denver Broncos", "Denver"]) == (1.0, 1.0)


def test_unanswerable_questions_score_only_the_empty_answer() -> None:
    assert question_scores("", []) == (1.0, 1.0)
    assert question_scores("Broncos", []) == (0.0, 0.0)
    assert question_scores("", ["Broncos"]) == (0.0, 0.0)
    metrics = squad_metrics(["", "Broncos", "Denver"], [[], [], ["Denver"]])
    assert metrics["exact_match"] == pytest.approx(2 / 3) and metrics["n"] == 3
    assert (metrics["has_answer_n"], metrics["no_answer_n"]) == (1, 2)
    assert metrics["has_answer_f1"] == 1.0 and metrics["no_answer_exact_match"] == 0.5


def test_null_threshold_abstains_where_that_raises_f1() -> None:
    # questions 0 and 1 are unanswerable and have the largest no-answer margins; 2 and 3 are answered right
    answers, margins, golds = ["x", "y", "Denver", "Broncos"], [5.0, 3.0, 1.0, -2.0], [[], [], ["Denver"], ["Broncos"]]
    threshold = best_null_threshold(answers, margins, golds)
    assert 1.0 < threshold < 3.0
    abstaining = [m > threshold for m in margins]
    assert abstaining == [True, True, False, False]


def test_every_question_answering_metric_can_select_the_best_step(tiny_model_dir: Path) -> None:
    task, _ = task_for(tiny_model_dir)
    facts = task.facts()
    assert facts.default_metric in facts.metrics
    assert all(is_better(name, 0.6, 0.5) == (name != "loss") for name in facts.metrics)


# ------------------------------------------------------------------------------------------ reading


def test_squad_json_zip_and_gzip_read_alike(tmp_path: Path) -> None:
    document = squad_document(qa_rows(12, seed=3), articles=3)
    plain = write_json(tmp_path / "plain.json", document)
    with zipfile.ZipFile(tmp_path / "zipped.zip", "w") as archive:
        archive.writestr("dev.json", json.dumps(document))
    (tmp_path / "squad.json.gz").write_bytes(gzip.compress(json.dumps(document).encode()))
    frames = [read_qa(path, "train") for path in (plain, str(tmp_path / "zipped.zip"), str(tmp_path / "squad.json.gz"))]
    for frame in frames:
        assert len(frame) == 12 and frame.attrs["group_column"] == "title" and frame.attrs["row_unit"] == "question"
        assert frame[["id", "title", "question", "context"]].equals(frames[0][["id", "title", "question", "context"]])
    assert frames[0]["title"].nunique() == 3


def test_squad_v2_impossible_questions_have_no_answer(tmp_path: Path) -> None:
    rows = qa_rows(10, seed=4)
    document = squad_document(rows, version_2=True)
    qa = document["data"][0]["paragraphs"][0]["qas"][0]
    qa["is_impossible"] = True  # v2.0 keeps a plausible answer beside impossible questions: never a target
    qa["plausible_answers"] = qa["answers"]
    frame = read_qa(write_json(tmp_path / "v2.json", document), "train")
    assert frame.loc[0, "answers"] == []
    assert all(len(a) == 1 for a in frame["answers"][1:])


def test_jsonl_takes_answer_records_or_the_hugging_face_columns(tmp_path: Path) -> None:
    rows = qa_rows(4, seed=5)
    rows[1]["answers"] = {
        "text": [a["text"] for a in rows[1]["answers"]],
        "answer_start": [a["answer_start"] for a in rows[1]["answers"]],
    }
    frame = read_qa(write_jsonl(tmp_path / "qa.jsonl", rows), "train")
    assert frame.loc[1, "answers"] == qa_rows(4, seed=5)[1]["answers"]
    assert "id" not in frame.columns and "group_column" not in frame.attrs  # nothing added to the user's columns


def test_answer_start_that_misses_the_text_names_the_question_and_the_fix(tmp_path: Path) -> None:
    rows = qa_rows(6, seed=6)
    rows[2]["answers"][0]["answer_start"] += 2
    with pytest.raises(DataError) as excinfo:
        read_qa(write_jsonl(tmp_path / "bad.jsonl", rows), "train")
    message = str(excinfo.value)
    assert "bad.jsonl" in message and "line 3" in message and "answer_start" in message
    assert "first occurs at" in message and "correct it" in message


def test_empty_context_is_an_error_in_squad_json_and_jsonl(tmp_path: Path) -> None:
    rows = qa_rows(5, seed=7)
    document = squad_document(rows, articles=1)
    document["data"][0]["paragraphs"][3]["context"] = "  "
    with pytest.raises(DataError, match=r"empty, missing or non-text context: question 4 \(id q3\)"):
        read_qa(write_json(tmp_path / "empty.json", document), "train")
    rows[1]["context"], rows[1]["answers"] = "", []
    with pytest.raises(DataError, match="empty, missing or non-text context: line 2"):
        read_qa(write_jsonl(tmp_path / "empty.jsonl", rows), "train")


def test_missing_columns_and_malformed_answers_say_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'answers' not found.*rename the columns"):
        read_qa(write_jsonl(tmp_path / "a.jsonl", [{"question": "q?", "context": "c"}]), "train")
    with pytest.raises(DataError, match=r'line 1: the answer .* needs a "text" string and an integer "answer_start"'):
        read_qa(write_jsonl(tmp_path / "b.jsonl", [{"question": "q?", "context": "c", "answers": ["c"]}]), "train")
    prediction_input = read_qa(str(tmp_path / "a.jsonl"), "predict", with_answers=False)
    assert prediction_input["question"].tolist() == ["q?"]


def test_held_out_validation_never_splits_an_article(tmp_path: Path) -> None:
    frame = read_qa(write_json(tmp_path / "s.json", squad_document(qa_rows(200, seed=8), articles=10)), "train")
    train_part, validation = split_train_validation(frame, "label", 0.2, seed=0, stratify=False)
    assert not set(train_part["title"]) & set(validation["title"])
    assert 20 <= len(validation) <= 40 and len(train_part) + len(validation) == 200
    again = split_train_validation(frame, "label", 0.2, seed=0, stratify=False)[1]
    assert again["id"].tolist() == validation["id"].tolist()  # deterministic for a seed


def test_one_article_cannot_be_held_out_from_itself(tmp_path: Path) -> None:
    frame = read_qa(write_json(tmp_path / "one.json", squad_document(qa_rows(20, seed=9), articles=1)), "train")
    with pytest.raises(DataError, match=r"every row belongs to one title.*data.validation"):
        split_train_validation(frame, "label", 0.1, seed=0, stratify=False)


# ------------------------------------------------------------------------------------------ windows


def test_long_contexts_split_into_windows_that_map_back_to_the_answer(tiny_model_dir: Path) -> None:
    task, tokenizer = task_for(tiny_model_dir)
    frame = pd.DataFrame(qa_rows(30, seed=10, sentences=12))  # ~60 context tokens: several windows of 48
    encoded = task.data.encode(frame, tokenizer, 48, "evaluate")
    assert len(encoded) > len(frame) and encoded.label_keys == ("start_positions", "end_positions")
    assert max(len(ids) for ids in encoded.sequences["input_ids"]) <= 48
    found = set()
    for window, (start, end) in enumerate(encoded.labels):
        offsets = encoded.meta["offsets"][window]
        assert (offsets[:, 0] >= 0).any()  # every window holds context
        if start == 0:
            assert end == 0  # a window without the answer points at [CLS]
            continue
        example = encoded.meta["example"][window]
        gold = frame.loc[example, "answers"][0]
        assert frame.loc[example, "context"][offsets[start, 0] : offsets[end, 1]] == gold["text"]
        found.add(example)
    assert found == set(range(len(frame)))  # every answer stands whole in at least one window


def test_best_span_is_chosen_across_windows(tiny_model_dir: Path) -> None:
    task, tokenizer = task_for(tiny_model_dir)
    frame = pd.DataFrame(qa_rows(1, seed=11, sentences=12))
    encoded = task.data.encode(frame, tokenizer, 48, "evaluate")
    assert len(encoded) >= 2
    logits = [np.zeros((len(ids), 2)) for ids in encoded.sequences["input_ids"]]
    labelled = next(w for w, (s, _) in enumerate(encoded.labels) if s > 0)
    other = next(w for w in range(len(encoded)) if w != labelled)
    start, end = encoded.labels[labelled]
    logits[labelled][start, 0] = logits[labelled][end, 1] = 5.0
    decoy = np.flatnonzero(encoded.meta["offsets"][other][:, 0] >= 0)[0]
    logits[other][decoy, 0] = logits[other][decoy, 1] = 4.0  # good, but not the best
    presented = task.scoring.present(Outputs(logits=logits), encoded)
    gold = frame.loc[0, "answers"][0]
    assert presented.loc[0, "predicted_answer"] == gold["text"]
    assert presented.loc[0, "predicted_start"] == gold["answer_start"]
    assert presented.loc[0, "predicted_end"] == gold["answer_start"] + len(gold["text"])
    assert task.scoring.metrics(Outputs(logits=logits), encoded)["exact_match"] == 1.0
    # an answer longer than max_answer_length is never chosen
    task.scoring.settings.max_answer_length = 1
    logits[labelled][end, 1], logits[labelled][start, 1] = -5.0, -5.0
    logits[labelled][start + 2, 1] = 9.0
    assert (
        task.scoring.present(Outputs(logits=logits), encoded).loc[0, "predicted_answer"]
        == encoded.meta["context"][other][
            encoded.meta["offsets"][other][decoy, 0] : encoded.meta["offsets"][other][decoy, 1]
        ]
    )


def test_a_question_that_fills_the_window_is_refused(tiny_model_dir: Path) -> None:
    task, tokenizer = task_for(tiny_model_dir)
    rows = qa_rows(2, seed=12)
    rows[1]["question"] = "what " * 40 + "?"
    frame = pd.DataFrame(rows)
    with pytest.raises(DataError, match=r"leave no room for the context.*input 2 \(41 tokens\).*Raise data.max_length"):
        task.data.encode(frame, tokenizer, 48, "evaluate")


def test_stride_must_leave_windows_room_to_advance(tmp_path: Path, tiny_model_dir: Path, qa_data) -> None:
    with pytest.raises(ConfigError, match=r"stride .*less than half of data.max_length"):
        load_config(qa_config(tmp_path, tiny_model_dir, qa_data, question_answering={"stride": 24}))


# ------------------------------------------------------------------------------------------ the whole job


def test_training_learns_to_point_at_the_answer(qa_run: tunewise.Run) -> None:
    test = qa_run.metrics["test"]
    assert test["n"] == 40
    assert test["exact_match"] > 0.6 and test["f1"] >= test["exact_match"]
    assert qa_run.metrics["validation"]["n"] > 0


def test_run_folder_report_and_card_show_exact_match_and_f1(qa_run: tunewise.Run) -> None:
    run_dir = qa_run.run_dir
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert len(predictions) == 40 and {"question", "predicted_answer", "predicted_start"} <= set(predictions.columns)
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    card = (run_dir / "model_card.md").read_text(encoding="utf-8")
    assert "exact_match" in report and "exact_match" in card
    assert "confusion" not in card.lower()
    assert "read in overlapping windows, so no text is cut" in card
    assert "targets: the answer's character span in the context" in card and "label column" not in card


def test_predict_takes_pairs_and_dicts_and_load_gives_the_same(qa_run: tunewise.Run) -> None:
    context = "the film was very good . the prize was superb . the song was awful ."
    question = "what was the prize ?"
    first, second = qa_run.predict([(question, context), {"question": question, "context": context}])
    assert first == second
    assert set(first) == {"answer", "start", "end", "score"}
    assert first["answer"] == "superb" and context[first["start"] : first["end"]] == "superb"
    assert 0 < first["score"] <= 1
    assert tunewise.load(qa_run.run_dir).predict((question, context)) == [first]


def test_predict_refuses_plain_strings_and_empty_contexts(qa_run: tunewise.Run) -> None:
    with pytest.raises(TunewiseError, match=r"\(question, context\) pairs.*--input"):
        qa_run.predict(["what was the prize ?"])
    with pytest.raises(TunewiseError, match=r"input.* 1: empty question or context"):
        qa_run.predict([("what?", " ")])


def test_cli_predict_and_evaluate(qa_run: tunewise.Run, qa_data, tmp_path: Path) -> None:
    questions = write_jsonl(
        tmp_path / "ask.jsonl", [{k: r[k] for k in ("question", "context")} for r in qa_rows(5, 13)]
    )
    result = CliRunner().invoke(app, ["predict", str(qa_run.run_dir), "--input", questions])
    assert result.exit_code == 0, result.output
    assert "predicted_answer" in result.output.splitlines()[0]
    text = CliRunner().invoke(app, ["predict", str(qa_run.run_dir), "--text", "what was the prize ?"])
    assert text.exit_code == 1 and "--input" in text.output
    scores = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["evaluate", str(qa_run.run_dir), "--data", qa_data["test"], "--output", scores])
    assert result.exit_code == 0, result.output
    metrics = json.loads(scores.read_text())
    assert metrics["exact_match"] == pytest.approx(qa_run.metrics["test"]["exact_match"])


@pytest.mark.parametrize("strategy", [{"method": "freeze_backbone"}, {"method": "last_n_layers", "n_layers": 1},
                                      {"method": "lora", "lora": {"r": 4}}])  # fmt: skip
def test_every_strategy_trains_a_question_answering_head(tmp_path, tiny_model_dir, qa_data, strategy) -> None:
    run = train(qa_config(tmp_path, tiny_model_dir, qa_data, strategy=strategy, train={"epochs": 1}))
    parameters = json.loads((run.run_dir / "run.json").read_text())["parameters"]
    assert 0 < parameters["trainable"] < parameters["total"]
    assert {"exact_match", "f1"} <= set(run.metrics["test"])
    assert len(run.predict(("what was the prize ?", "the prize was good ."))) == 1


def test_resume_continues_a_question_answering_run(tmp_path, monkeypatch, tiny_model_dir, qa_data) -> None:
    config = qa_config(tmp_path, tiny_model_dir, qa_data, train={"epochs": 2, "checkpoint_every": 5})
    reference = train(qa_config(tmp_path / "ref", tiny_model_dir, qa_data, train={"epochs": 2}))
    assert train_until_crash(monkeypatch, config, after_checkpoints=1) == [5]
    resumed = train(config, resume=True)
    assert resumed.metrics == reference.metrics


def test_unanswerable_questions_tune_a_threshold_that_load_restores(tmp_path, tiny_model_dir) -> None:
    folder = tmp_path / "v2"
    folder.mkdir()
    data = {
        "train": write_json(folder / "train.json", squad_document(qa_rows(160, 14, 0.3), 8, version_2=True)),
        "test": write_json(folder / "test.json", squad_document(qa_rows(40, 15, 0.3), version_2=True)),
    }
    run = train(qa_config(tmp_path, tiny_model_dir, data))
    test = run.metrics["test"]
    assert test["no_answer_n"] > 0 and "no_answer_f1" in test and "null_threshold" in test
    assert run.metrics["validation"]["null_threshold"] == test["null_threshold"]
    loaded = tunewise.load(run.run_dir)
    answers = loaded.task.answers
    assert answers.unanswerable and answers.null_threshold == pytest.approx(test["null_threshold"])
    metrics, _ = loaded.evaluate(data["test"])
    assert metrics["f1"] == pytest.approx(test["f1"])


def test_unanswerable_evaluation_questions_need_unanswerable_training(tmp_path, tiny_model_dir, qa_data) -> None:
    v2_test = write_json(tmp_path / "v2.json", squad_document(qa_rows(20, 16, 0.5), version_2=True))
    with pytest.raises(DataError, match=r"question.* have no answer .*never learns to abstain"):
        train(qa_config(tmp_path, tiny_model_dir, {**qa_data, "test": v2_test}))


# ------------------------------------------------------------------------------------------ data check


def test_data_check_reports_windows_unanswerable_share_and_bad_answers(tmp_path, tiny_model_dir) -> None:
    rows = qa_rows(40, 17, unanswerable_share=0.25, sentences=12)
    train_file = write_json(tmp_path / "train.json", squad_document(rows, version_2=True))
    audit = run_check(prepare_check(load_config(qa_config(tmp_path, tiny_model_dir, {"train": train_file}))))
    messages = [f.message for f in audit.findings]
    assert any("context longer than one window" in m and "overlapping windows" in m for m in messages)
    assert any("are unanswerable" in m for m in messages)
    assert not any("will be cut" in m for m in messages)  # windows cut nothing: no truncation warning
    assert audit.passed()

    rows[0] = {**qa_example(random.Random(1)), "answers": [{"text": "prize", "answer_start": 0}]}
    bad_file = write_json(tmp_path / "bad.json", squad_document(rows, version_2=True))
    audit = run_check(prepare_check(load_config(qa_config(tmp_path, tiny_model_dir, {"train": bad_file}))))
    errors = [f.message for f in audit.by_severity("error")]
    assert any("do not match their context at answer_start" in m and "question 1" in m for m in errors)


# ------------------------------------------------------------------------------------------ real weights


YEAR_QUESTION = re.compile(r"(When|In what year|What year)\b")


@pytest.mark.integration
@requires_shared("data/squad_v1.1")
def test_minilm_learns_squad_spans_far_beyond_chance(tmp_path: Path) -> None:
    """MiniLM (real weights) on SQuAD's 'when / what year' questions answered by a year: trained on
    ~150 of them from 40 articles, tested on those of the other 8 articles."""
    document = json.loads(zipfile.ZipFile(shared_path("data/squad_v1.1/dev-v1.1.json.zip")).read("dev-v1.1.json"))
    articles = document["data"]
    train_file = write_json(tmp_path / "train.json", year_questions(articles[:40], max_words=90, limit=150))
    test_file = write_json(tmp_path / "test.json", year_questions(articles[40:], max_words=10_000, limit=10_000))
    config = qa_config(
        tmp_path,
        "minilm-l6",
        {"train": train_file, "test": test_file, "max_length": 160},
        question_answering={"stride": 64},
        train={"epochs": 3, "learning_rate": 3e-4, "batch_size": 16, "num_threads": 2, "warmup_ratio": 0.1},
        explain={"rows": 1},  # real weights explained end to end; a long context costs seconds per row
    )
    run = train(config)
    test = run.metrics["test"]
    chance = random_span_f1(test_file)
    assert test["n"] >= 50
    assert test["f1"] > max(0.3, 5 * chance), (test, chance)


def year_questions(articles: list[dict], max_words: int, limit: int) -> dict:
    """SQuAD restricted to year questions (answer: four digits) on contexts of at most `max_words`."""
    data, count = [], 0
    for article in articles:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = [
                qa
                for qa in paragraph["qas"]
                if YEAR_QUESTION.match(qa["question"]) and re.fullmatch(r"\d{4}", qa["answers"][0]["text"].strip())
            ]
            if qas and len(paragraph["context"].split()) <= max_words and count < limit:
                paragraphs.append({"context": paragraph["context"], "qas": qas})
                count += len(qas)
        if paragraphs:
            data.append({"title": article["title"], "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


def random_span_f1(source: str, seed: int = 0) -> float:
    """F1 of answering with a random run of 1-4 words of the context (the chance level)."""
    rng = random.Random(seed)
    frame = read_qa(source, "test")
    scores = []
    for context, answers in zip(frame["context"], frame["answers"], strict=True):
        words = context.split()
        start = rng.randrange(len(words))
        guess = " ".join(words[start : start + rng.randint(1, 4)])
        scores.append(question_scores(guess, [a["text"] for a in answers])[1])
    return float(np.mean(scores))


def test_a_model_without_a_fast_tokenizer_is_refused_with_the_reason(monkeypatch, tiny_model_dir: Path) -> None:
    """Offsets come from the fast (Rust) tokenizer only; a slow one is a ConfigError naming why it is needed."""
    from tunewise.models import registry

    monkeypatch.setattr(registry, "_text_tokenizer", lambda source: SimpleNamespace(is_fast=False))
    task = make_task(load_config({"task": "question-answering", "data": {"train": "x.jsonl"}}))
    with pytest.raises(ConfigError, match="no fast \\(Rust\\) tokenizer, which question answering needs"):
        task.model.processor(task.model.source(str(tiny_model_dir)))
