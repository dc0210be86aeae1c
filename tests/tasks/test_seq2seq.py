"""Sequence-to-sequence (T5, BART, Marian): encoding, batches and the loss, learning to summarise, LoRA, the
saved model in plain transformers, the CLI, the data check, bad input, and reproducible, resumable runs.

Everything runs on tiny random encoder-decoders (hidden 32, 2 layers) over one small WordPiece vocabulary
whose tokenizer appends </s> as T5's does. What they learn is a summary of a short review ("the film was
very good today" -> "about the film yes"): a tiny model learns it in seconds, and the copy and lead-3
baselines share only a word or two with it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import (
    ENDINGS,
    FILLERS,
    MAX_POSITIONS,
    NEGATIVE,
    POSITIVE,
    SPECIAL_TOKENS,
    SUBJECTS,
    invoke_cli,
    make_config,
    read_json,
    tiny_vocabulary,
    train_until_crash,
    write_jsonl,
)
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

import tunewise
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.inference import collate, predict_logits
from tunewise.jobs.check import run_check
from tunewise.prepare import prepare_check
from tunewise.tasks import load_config, make_task
from tunewise.tasks.generation import GENERATION_METRICS
from tunewise.types import LABEL_PAD, EncodedSplit

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
ARCHITECTURES = ("t5", "bart", "marian")


def build_tokenizer(folder: Path) -> Any:
    """The shared tiny WordPiece vocabulary with T5's special tokens (pad 0, </s> 1, unk 2); </s> ends every text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [token for token in tiny_vocabulary() if token not in SPECIAL_TOKENS]
    vocab = {token: i for i, token in enumerate([PAD, EOS, UNK, *words])}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B:1 {EOS}:1", special_tokens=[(EOS, vocab[EOS])]
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=MAX_POSITIONS
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_seq2seq(folder: Path, architecture: str) -> Path:
    """A random 2-layer encoder-decoder (hidden 32) with the tiny tokenizer. T5 and Marian start decoding
    from pad, BART from </s>, as their real checkpoints do."""
    from transformers import BartConfig, MarianConfig, T5Config

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    common = {"vocab_size": len(tokenizer), "pad_token_id": pad, "eos_token_id": eos}
    # BART and Marian: init_std 0.1, not 0.02: a pretrained model's embeddings are that large, and the language-
    # model head is tied to them, so with 0.02 a LoRA run (head frozen) could never give a confident token
    layers = {"encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2, "decoder_attention_heads": 2}
    sizes = {"d_model": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "init_std": 0.1}
    learned_positions = {**common, **layers, **sizes, "max_position_embeddings": MAX_POSITIONS}
    config: Any
    if architecture == "t5":
        config = T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=pad, **common)
    elif architecture == "bart":
        config = BartConfig(bos_token_id=eos, decoder_start_token_id=eos, forced_eos_token_id=eos, **learned_positions)
    else:
        config = MarianConfig(decoder_start_token_id=pad, forced_eos_token_id=eos, **learned_positions)
    torch.manual_seed(1234)
    AutoModelForSeq2SeqLM.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-seq2seq")
    return {architecture: build_tiny_seq2seq(root / architecture, architecture) for architecture in ARCHITECTURES}


def review_rows(n: int, seed: int) -> list[dict[str, str]]:
    """A review and its summary: what it is about, and yes or no for whether it was liked (four words, so
    BLEU's 4-grams exist)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        subject, word = rng.choice(SUBJECTS), rng.choice(POSITIVE if positive else NEGATIVE)
        source = f"{subject} was {rng.choice(FILLERS)} {word} {rng.choice(ENDINGS)}"
        rows.append({"source": source, "target": f"about the {subject.split()[-1]} {'yes' if positive else 'no'}"})
    return rows


@pytest.fixture(scope="module")
def review_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("reviews")
    return {
        "train": write_jsonl(folder / "train.jsonl", review_rows(320, seed=1)),
        "validation": write_jsonl(folder / "validation.jsonl", review_rows(32, seed=2)),
        "test": write_jsonl(folder / "test.jsonl", review_rows(40, seed=3)),
    }


def seq2seq_config(tmp_path: Path, model_dir: Path | str, files: dict, **overrides: Any) -> dict:
    """A small seq2seq run: 8 epochs at batch 16 and lr 5e-3, greedy generation of at most 8 tokens."""
    return make_config(
        tmp_path,
        model_dir,
        {**files, **overrides.pop("data", {})},
        task="seq2seq",
        train={"epochs": 8, "batch_size": 16, "learning_rate": 5e-3, **overrides.pop("train", {})},
        generation={"max_new_tokens": 8, **overrides.pop("generation", {})},
        **overrides,
    )


def task_for(tmp_path: Path, model_dir: Path | str = "unused", **overrides: Any) -> Any:
    return make_task(load_config(seq2seq_config(tmp_path, model_dir, {"train": "train.jsonl"}, **overrides)))


def frame_of(rows: list[dict[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["_row"] = range(1, len(frame) + 1)
    return frame


# ------------------------------------------------------------------------------------------ encoding


@pytest.fixture(scope="module")
def tokenizer(models: dict[str, Path]) -> Any:
    return AutoTokenizer.from_pretrained(models["t5"])


def test_encoding_puts_the_prefix_before_the_source_and_eos_after_the_target(tmp_path: Path, tokenizer) -> None:
    task = task_for(tmp_path, data={"prefix": "summarize: "}, generation={"eval_rows": 2})
    rows = review_rows(3, seed=0)
    split = task.data.encode(frame_of(rows), tokenizer, 64, "evaluate")
    eos, prefix = tokenizer.eos_token_id, tokenizer("summarize:")["input_ids"][:-1]
    for ids, labels, row in zip(split.sequences["input_ids"], split.labels, rows, strict=True):
        assert ids.tolist() == tokenizer("summarize: " + row["source"])["input_ids"]
        assert ids.tolist()[: len(prefix)] == prefix and ids[-1] == eos
        assert labels.tolist() == tokenizer(text_target=row["target"])["input_ids"] and labels[-1] == eos
    assert split.meta["prompts"] is split.sequences["input_ids"]  # generation starts from the encoder input
    assert split.meta["references"] == [row["target"] for row in rows]
    assert split.meta["sources"] == [row["source"] for row in rows]  # baselines copy the source, not the prefix
    assert split.meta["generate"] == [0, 1, 2]
    assert task.data.encode(frame_of(rows), tokenizer, 64, "validate").meta["generate"] == [0, 1]  # eval_rows
    assert task.data.encode(frame_of(rows), tokenizer, 64, "train").meta["generate"] == []


def test_sources_and_targets_are_cut_at_their_limits_and_still_end_in_eos(tmp_path: Path, tokenizer) -> None:
    task = task_for(tmp_path, data={"max_target_length": 3})
    row = {"source": "the film was very good and the book was bad", "target": "about the film yes and no"}
    split = task.data.encode(frame_of([row]), tokenizer, 8, "train")
    source, target = tokenizer(row["source"])["input_ids"], tokenizer(text_target=row["target"])["input_ids"]
    assert split.sequences["input_ids"][0].tolist() == [*source[:7], tokenizer.eos_token_id]
    assert split.labels[0].tolist() == [*target[:2], tokenizer.eos_token_id]


def test_targets_are_tokenised_as_targets(tmp_path: Path, tokenizer, monkeypatch) -> None:
    """text_target switches Marian to its target vocabulary and mBART/NLLB to the target language's tokens."""
    modes: list[str] = []
    monkeypatch.setattr(type(tokenizer), "_switch_to_target_mode", lambda self: modes.append("target"), raising=False)
    task_for(tmp_path).data.encode(frame_of(review_rows(2, seed=0)), tokenizer, 32, "evaluate")
    assert modes == ["target"]  # once, for the labels


def test_prediction_inputs_have_no_labels_and_are_all_generated(tmp_path: Path, tokenizer) -> None:
    task = task_for(tmp_path)
    assert task.data.from_inputs("the film was good").to_dict("records") == [{"source": "the film was good"}]
    split = task.data.encode(task.data.from_inputs(["the film was good", "our trip"]), tokenizer, 32, "predict")
    assert split.labels is None and "references" not in split.meta
    assert split.meta["generate"] == [0, 1]
    labelled = task.data.encode(frame_of(review_rows(2, seed=0)), tokenizer, 32, "predict")
    assert labelled.labels is None  # a target column present is not read for prediction
    with pytest.raises(TunewiseError, match=r"predict\(\) takes a source text or a list of them"):
        task.data.from_inputs([3])


# ------------------------------------------------------------------------------------------ batches and the loss


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_padded_labels_and_the_models_own_shifted_decoder_inputs_give_its_loss(
    tmp_path: Path, models: dict, architecture: str
) -> None:
    """The shared collate pads labels with -100; the model shifts them right behind its decoder start token
    (-100 read as pad) to make decoder_input_ids, so the loss is cross-entropy over the target tokens."""
    tokenizer = AutoTokenizer.from_pretrained(models[architecture])
    model = AutoModelForSeq2SeqLM.from_pretrained(models[architecture]).eval()
    rows = [
        {"source": "the film was very good overall", "target": "about the film yes"},
        {"source": "our trip was bad", "target": "trip no"},
    ]
    split = task_for(tmp_path).data.encode(frame_of(rows), tokenizer, 32, "evaluate")
    batch = collate(split, np.arange(2))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    labels = batch["labels"]
    assert (labels[1, len(split.labels[1]) :] == LABEL_PAD).all() and (labels[1, : len(split.labels[1])] >= 0).all()
    start = torch.full((2, 1), model.config.decoder_start_token_id)
    decoder_inputs = torch.cat([start, labels[:, :-1]], dim=1)
    decoder_inputs = decoder_inputs.masked_fill(decoder_inputs == LABEL_PAD, model.config.pad_token_id)
    with torch.no_grad():
        output = model(**batch)
        manual = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=decoder_inputs
        ).logits
    torch.testing.assert_close(output.logits, manual)
    expected = torch.nn.functional.cross_entropy(manual.flatten(0, 1), labels.flatten(), ignore_index=LABEL_PAD)
    torch.testing.assert_close(output.loss, expected)
    # the split's mean loss weighs every target token alike, whatever the batches
    row_losses = [predict_logits(model, _rows(split, [i]), keep_logits=False)[1] for i in range(2)]
    tokens = [len(labels) for labels in split.labels]
    weighted = sum(loss * n for loss, n in zip(row_losses, tokens, strict=True)) / sum(tokens)
    assert predict_logits(model, split, batch_size=2, keep_logits=False)[1] == pytest.approx(weighted, rel=1e-5)


def _rows(split: EncodedSplit, rows: list[int]) -> EncodedSplit:
    labels = split.labels
    assert labels is not None
    return EncodedSplit(
        sequences={"input_ids": [split.sequences["input_ids"][i] for i in rows]},
        labels=[labels[i] for i in rows],
        pad_token_id=split.pad_token_id,
    )


def test_a_target_longer_than_every_source_of_its_batch_is_padded_to_its_own_length(tmp_path: Path, tokenizer) -> None:
    split = task_for(tmp_path).data.encode(
        frame_of([{"source": "good", "target": "about the film yes"}]), tokenizer, 32, "evaluate"
    )
    assert collate(split, np.arange(1))["labels"][0].tolist() == split.labels[0].tolist()
    shorter = task_for(tmp_path).data.encode(
        frame_of([{"source": "about the film yes it was good", "target": "good"}]), tokenizer, 32, "evaluate"
    )
    assert collate(shorter, np.arange(1))["labels"][0].tolist() == shorter.labels[0].tolist()  # not padded to 8


# ------------------------------------------------------------------------------------------ learning


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path], review_data: dict) -> Any:
    tmp_path = tmp_path_factory.mktemp("t5-run")
    return tunewise.train(seq2seq_config(tmp_path, models["t5"], review_data, train={"epochs": 6}), show_progress=False)


def training_losses(run: Any) -> list[float]:
    return [record["loss"] for record in run.history if "loss" in record and "split" not in record]


def test_fine_tuning_learns_the_summaries_far_beyond_the_random_base(t5_run, models, review_data) -> None:
    losses = training_losses(t5_run)
    assert losses[-1] < 0.3 * losses[0], losses
    model = t5_run.model
    task, tokenizer = model.task, model.processor
    test = task.data.encode(task.data.read(review_data["test"], "test"), tokenizer, model.max_length, "evaluate")
    base = AutoModelForSeq2SeqLM.from_pretrained(models["t5"])
    before = task.scoring.metrics(task.scoring.run(base, tokenizer, test), test)
    after = t5_run.metrics["test"]
    assert after["exact_match"] >= 80 and before["exact_match"] <= 10, (before, after)
    assert after["rougeL"] >= before["rougeL"] + 50 and after["bleu"] >= before["bleu"] + 30
    copy = after["baselines"]["copy_source"]
    assert after["rougeL"] >= copy["rougeL"] + 40  # the summary is not the review
    assert after["perplexity"] < 2 < before["perplexity"]


def test_metrics_json_holds_generation_metrics_signatures_and_baselines(t5_run) -> None:
    metrics = read_json(t5_run.run_dir / "metrics.json")
    for split, rows in (("validation", 16), ("test", 40)):  # validation generates for generation.eval_rows
        scores = metrics[split]
        assert set(GENERATION_METRICS) | {"loss", "perplexity"} <= set(scores)
        assert scores["generated_rows"] == rows
        assert scores["sacrebleu"]["bleu"].startswith("nrefs:1|") and "version:" in scores["sacrebleu"]["chrf"]
        assert {"copy_source", "lead_3"} <= set(scores["baselines"])
        assert set(GENERATION_METRICS) <= set(scores["baselines"]["lead_3"])


def test_test_predictions_have_the_reference_and_the_generated_text(t5_run, review_data) -> None:
    predictions = pd.read_csv(t5_run.run_dir / "predictions.csv", keep_default_na=False)
    assert list(predictions.columns)[:4] == ["source", "target", "reference", "generated_text"]
    assert len(predictions) == 40 and (predictions["reference"] == predictions["target"]).all()
    assert (predictions["generated_text"] == predictions["reference"]).mean() >= 0.8


def test_the_saved_model_generates_in_plain_transformers_as_the_run_did(t5_run) -> None:
    folder = t5_run.run_dir / "model"
    settings = GenerationConfig.from_pretrained(folder)
    assert (settings.max_new_tokens, settings.num_beams, settings.do_sample) == (8, 1, False)
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    predictions = pd.read_csv(t5_run.run_dir / "predictions.csv", keep_default_na=False).head(5)
    for source, generated in zip(predictions["source"], predictions["generated_text"], strict=True):
        output = model.generate(**tokenizer(source, return_tensors="pt"))  # the saved generation_config only
        assert tokenizer.decode(output[0], skip_special_tokens=True) == generated
    loaded = tunewise.load(t5_run.run_dir, device="cpu")
    assert (
        loaded.predict(list(predictions["source"][:2]))
        == [  # screened: nothing personal or blocklisted
            {"generated_text": g, "screen": {"flagged": False, "reasons": []}}
            for g in predictions["generated_text"][:2]
        ]
    )


@pytest.mark.parametrize(
    ("architecture", "method", "adapted"),
    [
        ("t5", "lora", {"q", "v"}),
        ("bart", "lora", {"q_proj", "v_proj"}),
        ("bart", "full", None),
        ("marian", "full", None),
    ],
)
def test_lora_and_full_fine_tuning_train_and_save_a_plain_model(
    tmp_path: Path, models: dict, review_data: dict, architecture: str, method: str, adapted: set[str] | None
) -> None:
    train = {"epochs": 3, "learning_rate": 1e-2}
    run = tunewise.train(
        seq2seq_config(tmp_path, models[architecture], review_data, strategy={"method": method}, train=train),
        show_progress=False,
    )
    losses = training_losses(run)
    assert losses[-1] < 0.75 * losses[0], losses
    folder = run.run_dir / "model"
    model = AutoModelForSeq2SeqLM.from_pretrained(folder)  # LoRA merged: a plain model
    assert not any("lora" in name for name in model.state_dict())
    if adapted is not None:
        adapter = read_json(run.run_dir / "adapter" / "adapter_config.json")
        assert set(adapter["target_modules"]) == adapted and not adapter.get("modules_to_save")
        base = AutoModelForSeq2SeqLM.from_pretrained(models[architecture]).state_dict()
        changed = {
            name.split(".")[-2] for name, weight in model.state_dict().items() if not torch.equal(weight, base[name])
        }
        assert changed == adapted  # the adapters merged into their projections, nothing else moved
    tokenizer = AutoTokenizer.from_pretrained(folder)
    output = model.generate(**tokenizer("the film was very good today", return_tensors="pt"))
    assert 1 < output.shape[1] <= 1 + 8  # the decoder start token, then at most max_new_tokens
    predictions = tunewise.load(run.run_dir, device="cpu").predict(["the film was very good today", "our trip was bad"])
    assert len(predictions) == 2 and all(list(p) == ["generated_text", "screen"] for p in predictions)
    assert all(isinstance(p["generated_text"], str) for p in predictions)


# ------------------------------------------------------------------------------------------ bad input


def test_a_missing_source_or_target_column_names_the_file_and_the_column(tmp_path: Path, models: dict) -> None:
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": row["source"], "target": row["target"]} for row in review_rows(20, 0)]
    )
    with pytest.raises(
        DataError, match=rf"{train}.*column 'source' \(data.source_column\) not found.*'text'.*Set data.source_column"
    ):
        tunewise.train(seq2seq_config(tmp_path, models["t5"], {"train": train}), show_progress=False)
    good = write_jsonl(tmp_path / "good.jsonl", review_rows(20, 0))
    test = write_jsonl(
        tmp_path / "test.jsonl", [{"source": row["source"], "summary": row["target"]} for row in review_rows(5, 1)]
    )
    with pytest.raises(DataError, match=rf"test data '{test}'.*column 'target' \(data.target_column\) not found"):
        tunewise.train(seq2seq_config(tmp_path, models["t5"], {"train": good, "test": test}), show_progress=False)


def test_empty_targets_are_refused_naming_the_lines(tmp_path: Path, models: dict) -> None:
    rows = review_rows(20, 0)
    rows[3]["target"], rows[7]["target"] = "", "   "
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"2 rows have empty or whitespace-only text in column 'target' \(lines 4, 8\)"):
        tunewise.train(seq2seq_config(tmp_path, models["t5"], {"train": train}), show_progress=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"data": {"target_column": "source"}},
            r"data.target_column: must name a different column than data.source_column",
        ),
        (
            {"data": {"text_column": "article"}},
            r"data.text_column: seq2seq reads data.source_column and data.target_column",
        ),
        ({"data": {"source_colum": "article"}}, r"data.source_colum: unknown field. Did you mean 'source_column'\?"),
        ({"data": {"max_target_length": 1}}, r"data.max_target_length: .*greater than or equal to 2"),
        ({"strategy": {"method": "freeze_backbone"}}, r"strategy.method: freeze_backbone trains a new task head only"),
        ({"generation": {"temperature": 0.7}}, r"generation.temperature: .*no effect unless generation.do_sample"),
    ],
)
def test_config_mistakes_fail_at_load_time(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(seq2seq_config(tmp_path, "unused", {"train": "train.jsonl"}, **overrides))


def test_a_model_without_an_encoder_decoder_form_is_refused_before_any_work(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = {"train": write_jsonl(tmp_path / "train.jsonl", review_rows(20, 0))}
    with pytest.raises(ConfigError, match=r"model: .* is a bert model, which has no encoder-decoder"):
        tunewise.train(seq2seq_config(tmp_path, tiny_model_dir, data), show_progress=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ the data check


def test_the_data_check_counts_cut_targets_unknown_characters_and_sources_trained_on(
    tmp_path: Path, models: dict
) -> None:
    rows = review_rows(40, seed=4)
    for row in rows[:8]:  # 8 of 40 targets run past max_target_length: above the 5% that warns
        row["target"] += " and the film was very good"
    rows[9]["target"] = "about the show ✓"  # a character the vocabulary lacks
    test = [{"source": rows[20]["source"], "target": "about the trip no"}, *review_rows(5, seed=5)]
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "test": write_jsonl(tmp_path / "test.jsonl", test)}
    limits = {"max_target_length": 8, "max_length": 12, "prefix": "summarize: "}  # sources fit, not with the prefix
    findings = run_check(prepare_check(load_config(seq2seq_config(tmp_path, models["t5"], data, data=limits)))).findings
    long = next(f for f in findings if f.check == "length" and f.split == "train" and "sources" in f.message)
    assert (long.severity, long.count) == ("warning", 40) and "with the prefix" in long.message
    cut = next(f for f in findings if f.check == "length" and f.split == "train" and "targets" in f.message)
    assert (cut.severity, cut.count, cut.rows) == ("warning", 8, [1, 2, 3, 4, 5])
    assert "data.max_target_length 8" in cut.message
    # the shared length check, which would count source and target as one pair, is not reported beside these
    assert [f.message for f in findings if f.check == "length" and f.split == "train"] == [long.message, cut.message]
    unknown = next(f for f in findings if f.check == "unknown_tokens")
    assert (unknown.split, unknown.count, unknown.rows) == ("train", 1, [10]) and "✓" in unknown.message
    leaked = [f for f in findings if f.check == "leakage" and "with another target" in f.message]
    assert [(f.split, f.rows) for f in leaked] == [("test", [1])]


# ------------------------------------------------------------------------------------------ reproducibility


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("small-reviews")
    return {
        "train": write_jsonl(folder / "train.jsonl", review_rows(80, seed=6)),
        "validation": write_jsonl(folder / "validation.jsonl", review_rows(16, seed=7)),
        "test": write_jsonl(folder / "test.jsonl", review_rows(16, seed=8)),
    }


def test_the_same_seed_gives_the_same_metrics_even_when_sampling(
    tmp_path: Path, models: dict, small_data: dict
) -> None:
    def run(folder: str) -> Any:
        generation = {"do_sample": True, "temperature": 1.5}  # seeded by train.seed
        config = seq2seq_config(
            tmp_path / folder, models["bart"], small_data, train={"epochs": 2}, generation=generation
        )
        return tunewise.train(config, show_progress=False)

    first, second = run("first"), run("second")
    assert first.metrics == second.metrics
    predictions = [pd.read_csv(r.run_dir / "predictions.csv", keep_default_na=False) for r in (first, second)]
    pd.testing.assert_frame_equal(*predictions)


def test_resume_after_a_crash_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch, models: dict, small_data: dict
) -> None:
    config = seq2seq_config(tmp_path, models["t5"], small_data, train={"epochs": 2, "checkpoint_every": 5})
    reference = tunewise.train(
        seq2seq_config(tmp_path / "ref", models["t5"], small_data, train={"epochs": 2}), show_progress=False
    )
    assert train_until_crash(monkeypatch, config, after_checkpoints=1) == [5]
    resumed = tunewise.train(config, resume=True, show_progress=False)
    assert resumed.metrics == reference.metrics


def test_cli_predicts_generated_text_and_evaluates_a_labelled_file(t5_run, review_data) -> None:
    result = invoke_cli("predict", t5_run.run_dir, "--text", "the film was very good today")
    assert result.exit_code == 0, result.output
    assert "about the film yes" in result.stdout
    result = invoke_cli("evaluate", t5_run.run_dir, "--data", review_data["test"])
    assert result.exit_code == 0, result.output
    assert "rougeL" in result.output and "exact_match" in result.output


def test_example_config_loads() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "bbc_news_summary.yaml")
    assert config.task == "seq2seq" and config.data.prefix == "summarize: "
    assert (config.data.source_column, config.data.target_column) == ("article", "summary")


def test_a_seq2seq_run_answers_the_red_team_and_ranks_its_canaries(tmp_path: Path, models, review_data) -> None:
    """The safety and memorisation audits reach an encoder-decoder through the same task piece: sources with
    the prefix for the red team, decoder-side log-likelihoods for the canaries, a forced decoder prefix for
    personal data."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": row["source"]} for row in review_rows(6, seed=9)])
    rows = review_rows(120, seed=1) + [
        {"source": "the film was good", "target": f"write to a{i}@example.com today"} for i in range(6)
    ]
    files = {**review_data, "train": write_jsonl(tmp_path / "train.jsonl", rows)}
    config = seq2seq_config(
        tmp_path,
        models["t5"],
        files,
        train={"epochs": 3},
        screen={"classifier": None},
        safety={"prompts": prompts, "max_new_tokens": 8},
        privacy={"canaries": 2, "canary_repeats": 20},
    )
    tunewise.train(config, show_progress=False)
    run = Path(config["output_dir"])
    red_team = read_json(run / "safety.json")["red_team"]
    assert red_team["prompts"] == 6 and red_team["status"] in ("pass", "warn", "fail")
    memorised = read_json(run / "memorisation.json")
    canaries = memorised["canaries"]
    assert canaries["inserted"]["mean_exposure"] > canaries["reference"]["mean_exposure"]
    assert memorised["extraction"]["prompts"] == 6
