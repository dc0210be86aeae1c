"""Chat tuning end to end on a tiny Llama: it learns the reply and to stop, it is scored beside the base
model and the trivial baselines, and the saved model generates the same way in plain transformers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import STORY_WORDS, make_config, read_json, train_until_crash, write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
from typer.testing import CliRunner

import tunewise
from tunewise.cli import app
from tunewise.errors import DataError

WORDS = STORY_WORDS[:6]


def exchange(word: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"say {word}"}, {"role": "assistant", "content": f"{word} {word}"}]


def chat_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": exchange(rng.choice(WORDS))} for _ in range(n)]


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("chat-data")
    return {
        "train": write_jsonl(folder / "train.jsonl", chat_rows(240, seed=1)),
        "test": write_jsonl(folder / "test.jsonl", chat_rows(12, seed=2)),
    }


def chat_config(tmp_path: Path, model_dir: Path, files: dict, **overrides) -> dict:
    """Six epochs at 5e-3 teach the tiny Llama the reply (measured: exact match 100 on test in ~2 s)."""
    return make_config(
        tmp_path,
        model_dir,
        {**files, "chat_template": "chatml", **overrides.pop("data", {})},
        task="causal-lm",
        train={"epochs": 6, "learning_rate": 5e-3, **overrides.pop("train", {})},
        generation={"max_new_tokens": 12, **overrides.pop("generation", {})},
        **overrides,
    )


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, chat_data: dict) -> tunewise.Run:
    return tunewise.train(
        chat_config(tmp_path_factory.mktemp("chat-run"), tiny_llama_dir, chat_data), show_progress=False
    )


def test_the_tuned_model_answers_with_the_trained_reply_and_stops(chat_run: tunewise.Run) -> None:
    folder = chat_run.run_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(folder)  # plain transformers: no tunewise needed
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template is not None  # the template training used is saved with the model
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id not in (end_of_turn, tokenizer.eos_token_id)
    prompt = tokenizer.apply_chat_template(exchange("film")[:1], add_generation_prompt=True, return_tensors="pt")
    prompt = prompt["input_ids"] if not isinstance(prompt, torch.Tensor) else prompt
    output = model.generate(prompt, max_new_tokens=12, do_sample=False)  # stopping comes from generation_config
    new = output[0, prompt.shape[1] :].tolist()
    assert new == [*tokenizer("film film", add_special_tokens=False)["input_ids"], end_of_turn]  # then it stops
    generator = pipeline("text-generation", model=str(folder))
    reply = generator([exchange("movie")[:1]], max_new_tokens=12)[0][0]["generated_text"][-1]
    assert reply["role"] == "assistant" and reply["content"].strip() == "movie movie"


def test_no_repeat_ngram_size_stops_a_reply_repeating_itself(chat_run: tunewise.Run) -> None:
    """The trained reply repeats its word ("film film"): forbidding a repeated token in the answer must change
    it, while the word may still be copied from the prompt ("say film") once."""
    import numpy as np

    from tunewise.tasks.generation import GenerationConfig, generate_texts

    folder = chat_run.run_dir / "model"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer.apply_chat_template(exchange("film")[:1], add_generation_prompt=True, return_dict=True)
    prompts, stops = [np.asarray(encoded["input_ids"])], list(model.generation_config.eos_token_id)

    def reply(**settings: int) -> str:
        return generate_texts(model, tokenizer, prompts, GenerationConfig(max_new_tokens=6, **settings), stops, True)[0]

    assert reply() == "film film"
    assert reply(no_repeat_ngram_size=1).split().count("film") == 1
    # transformers' own setting would count the prompt's n-grams: a causal LM's generation_config leaves it out
    assert json.loads((folder / "generation_config.json").read_text()).get("no_repeat_ngram_size", 0) == 0


def test_generation_is_scored_beside_the_base_model_and_the_trivial_baselines(chat_run: tunewise.Run) -> None:
    test = read_json(chat_run.run_dir / "metrics.json")["test"]
    assert test["exact_match"] == 100.0 and test["generated_rows"] == 12
    baselines = test["baselines"]
    assert set(baselines) == {"base_model", "copy_source", "lead_3"}
    assert baselines["base_model"]["exact_match"] == 0.0  # the pretrained model never says it
    assert baselines["base_model"]["perplexity"] > 10 * test["perplexity"]
    assert baselines["copy_source"]["rouge1"] == pytest.approx(50.0)  # "say good" shares one word of "good good"
    assert "version:" in test["sacrebleu"]["bleu"] and "nc:6" in test["sacrebleu"]["chrf"]
    predictions = pd.read_csv(chat_run.run_dir / "predictions.csv", keep_default_na=False)
    assert {"prompt", "reference", "generated_text", "base_generated_text"} <= set(predictions.columns)
    assert (predictions["generated_text"] == predictions["reference"]).all()
    page = (chat_run.run_dir / "report.html").read_text(encoding="utf-8")
    card = (chat_run.run_dir / "model_card.md").read_text(encoding="utf-8")
    for text in (page, card):
        assert "test: base model" in text and "Generations (first 5 test rows)" in text
    assert chat_run.config.data.format == "messages" and chat_run.config.data.chat_template == "chatml"


def test_predict_takes_prompts_and_conversations(chat_run: tunewise.Run) -> None:
    model = tunewise.load(chat_run.run_dir, device="cpu")
    answers = model.predict(["say good", exchange("movie")[:1], [*exchange("bad"), *exchange("great")[:1]]])
    assert [a["generated_text"] for a in answers[:2]] == ["good good", "movie movie"]
    assert isinstance(answers[2]["generated_text"], str)  # a longer conversation than any it was trained on
    with pytest.raises(tunewise.TunewiseError, match="prompt strings or conversations"):
        model.predict([3])


def test_the_cli_predicts_from_a_jsonl_file_into_jsonl(chat_run: tunewise.Run, tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": exchange("film")[:1]}, {"prompt": "x"}])
    result = CliRunner().invoke(app, ["predict", str(chat_run.run_dir), "--input", prompts])
    assert result.exit_code == 1 and "line 2: expected a non-empty list of turns" in result.output
    rows = [{"messages": exchange("film")[:1]}, {"messages": exchange("awful")}]
    prompts = write_jsonl(tmp_path / "good.jsonl", rows)
    output = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["predict", str(chat_run.run_dir), "--input", prompts, "--output", str(output)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["generated_text"] for row in rows] == ["film film", "awful awful"]  # a trailing answer is the reference
    assert rows[0]["messages"] == exchange("film")[:1]  # the user's own columns, kept as JSON
    text = CliRunner().invoke(app, ["predict", str(chat_run.run_dir), "--text", "say bad"])
    assert text.exit_code == 0 and "bad bad" in text.output


@pytest.mark.parametrize(
    ("data_format", "row"),
    [
        (
            "sharegpt",
            lambda w: {"conversations": [{"from": "human", "value": f"say {w}"}, {"from": "gpt", "value": f"{w} {w}"}]},
        ),
        ("alpaca", lambda w: {"instruction": f"say {w}", "input": "", "output": f"{w} {w}"}),
        ("prompt_completion", lambda w: {"prompt": f"say {w}", "completion": f"{w} {w}"}),
    ],
)
def test_every_chat_format_trains_to_the_same_reply(tmp_path, tiny_llama_dir, data_format, row) -> None:
    rng = random.Random(3)
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", [row(rng.choice(WORDS)) for _ in range(240)]),
        "test": write_jsonl(tmp_path / "test.jsonl", [row(word) for word in WORDS]),
    }
    run = tunewise.train(chat_config(tmp_path, tiny_llama_dir, data), show_progress=False)
    assert run.config.data.format == data_format
    assert run.metrics["test"]["exact_match"] == 100.0


def test_prompt_completion_without_a_template_learns_to_stop_at_eos(tmp_path: Path, tiny_gpt2_dir: Path) -> None:
    rng = random.Random(4)
    rows = [{"prompt": f"say {w}", "completion": f"{w} {w}"} for w in (rng.choice(WORDS) for _ in range(240))]
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows),
        "test": write_jsonl(tmp_path / "test.jsonl", rows[:8]),
    }
    run = tunewise.train(
        chat_config(tmp_path, tiny_gpt2_dir, data, data={"chat_template": "none"}), show_progress=False
    )
    assert run.metrics["test"]["exact_match"] == 100.0
    folder = run.run_dir / "model"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer("say good", return_tensors="pt")["input_ids"]
    new = model.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1] :].tolist()
    assert new == [*tokenizer("good good", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def long_rows(tmp_path: Path) -> dict[str, str]:
    rows = chat_rows(40, seed=5)
    rows[3] = {"messages": [{"role": "user", "content": "say " + " ".join(WORDS * 8)}, *exchange("good")[1:]]}
    rows[7] = {
        "messages": [{"role": "user", "content": "say good"}, {"role": "assistant", "content": " ".join(WORDS * 8)}]
    }
    return {"train": write_jsonl(tmp_path / "train.jsonl", rows)}


def test_conversations_longer_than_max_length_are_errors_that_name_the_rows(tmp_path, tiny_llama_dir) -> None:
    from tunewise.jobs.check import run_check
    from tunewise.prepare import prepare_check
    from tunewise.tasks import load_config

    config = chat_config(tmp_path, tiny_llama_dir, long_rows(tmp_path), data={"max_length": 32})
    audit = run_check(prepare_check(load_config(config)))
    [cut] = [finding for finding in audit.findings if finding.check == "response_truncated"]
    assert cut.severity == "error" and cut.rows == [4, 8] and "data.truncation: drop" in cut.fix
    assert any(finding.check == "loss_mask" for finding in audit.findings)
    with pytest.raises(DataError, match=r"lines 4, 8: longer than max_length"):  # the check skipped: still refused
        tunewise.train(config, show_progress=False)


@pytest.mark.parametrize(("policy", "kept"), [("drop", 38), ("cut_prompt", 39)])
def test_a_truncation_policy_drops_or_cuts_the_long_ones(tmp_path, tiny_llama_dir, policy, kept) -> None:
    from tunewise.jobs.check import run_check
    from tunewise.prepare import prepare_check
    from tunewise.tasks import load_config

    config = chat_config(tmp_path, tiny_llama_dir, long_rows(tmp_path), data={"max_length": 32, "truncation": policy})
    plan = prepare_check(load_config(config))
    report = plan.task.data.render(plan.data.files["train"], plan.model.processor, 32)
    assert sum(example is not None for example in report.examples) == kept
    findings = {finding.check: finding for finding in run_check(plan).findings}
    if policy == "drop":
        assert findings["truncation"].rows == [4, 8] and "response_truncated" not in findings
    else:  # the long prompt is cut; the long answer cannot be
        assert findings["truncation"].rows == [4] and findings["response_truncated"].rows == [8]
    assert all(len(example.ids) <= 32 for example in report.examples if example is not None)


def test_every_split_must_hold_one_format(tmp_path: Path, tiny_llama_dir: Path, chat_data: dict) -> None:
    other = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "say good", "completion": "good good"}])
    with pytest.raises(DataError, match="holds prompt_completion rows, but the training data holds messages rows"):
        tunewise.train(chat_config(tmp_path, tiny_llama_dir, {**chat_data, "test": other}), show_progress=False)


def test_same_seed_same_run_and_resume_continues_it(tmp_path, monkeypatch, tiny_llama_dir, chat_data) -> None:
    small = {"train": {"epochs": 2, "checkpoint_every": 5}}
    first = tunewise.train(chat_config(tmp_path / "a", tiny_llama_dir, chat_data, **small), show_progress=False)
    again = tunewise.train(chat_config(tmp_path / "b", tiny_llama_dir, chat_data, **small), show_progress=False)
    assert first.metrics == again.metrics
    config = chat_config(tmp_path / "c", tiny_llama_dir, chat_data, **small)
    assert train_until_crash(monkeypatch, config, after_checkpoints=1) == [5]
    assert tunewise.train(config, resume=True, show_progress=False).metrics == first.metrics


def test_check_shows_the_tokens_and_their_loss_mask(tmp_path: Path, tiny_llama_dir: Path, chat_data: dict) -> None:
    import yaml

    config_file = tmp_path / "chat.yaml"
    config_file.write_text(yaml.safe_dump(chat_config(tmp_path, tiny_llama_dir, chat_data)))
    result = CliRunner().invoke(app, ["check", str(config_file), "--show-tokens", "2"])
    first = json.loads(Path(chat_data["train"]).read_text().splitlines()[0])["messages"][1]["content"].split()[0]
    lines = [line for line in result.output.splitlines() if line.startswith("row ")]
    assert len(lines) == 2 and lines[0].startswith("row 1: <|im_start|>|")
    assert f"[[{first}|{first}|<|im_end|>|]]" in lines[0]  # the answer and the end of its turn, nothing else
