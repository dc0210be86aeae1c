"""DP-SGD for causal language models: LoRA on a tiny Llama with one example per row, a loss whose
per-example gradients are each row's own, and a budget too small to train refused before any work."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import STORY_WORDS, make_config, write_jsonl
from transformers import AutoModelForCausalLM

import tunewise
from tunewise.config.sections import StrategyConfig
from tunewise.errors import ConfigError
from tunewise.inference import collate
from tunewise.models.strategies import apply_strategy
from tunewise.tasks import load_config, make_task
from tunewise.training.accounting import auto_delta, plan_privacy
from tunewise.training.dp import per_example_loss
from tunewise.types import LABEL_PAD, EncodedSplit


def chat_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        word = rng.choice(STORY_WORDS[:6])
        rows.append({"messages": [{"role": "user", "content": f"say {word}"}, {"role": "assistant", "content": word}]})
    return rows


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("dp-chat")
    return {
        "train": write_jsonl(folder / "train.jsonl", chat_rows(240, seed=1)),
        "test": write_jsonl(folder / "test.jsonl", chat_rows(8, seed=2)),
    }


def dp_config(tmp_path: Path, model_dir: Path, files: dict, **overrides) -> dict:
    """chatml adds tokens to the tiny tokenizer: under DP they keep their initial rows (no trainable tokens)."""
    return make_config(
        tmp_path,
        model_dir,
        {**files, "chat_template": "chatml", **overrides.pop("data", {})},
        task="causal-lm",
        strategy={"method": "lora", **overrides.pop("strategy", {})},
        train={"epochs": 2, "batch_size": 16, "learning_rate": 5e-3},
        generation={"max_new_tokens": 4},
        privacy={"dp": {"epsilon": 8.0}, **overrides.pop("privacy", {})},
        **overrides,
    )


def test_a_private_causal_lm_run_spends_at_most_its_epsilon_on_unpacked_rows(
    tmp_path: Path, tiny_llama_dir: Path, chat_data: dict
) -> None:
    config = dp_config(tmp_path, tiny_llama_dir, chat_data)
    run = tunewise.train(config, show_progress=False)
    privacy = json.loads((run.run_dir / "run.json").read_text())["privacy"]
    assert 0 < privacy["epsilon"] <= privacy["target_epsilon"] == 8.0
    assert privacy["delta"] < 1 / 240 and privacy["noise_multiplier"] > 0
    assert [h["epsilon"] for h in run.history if h.get("split") == "privacy"][-1] == pytest.approx(privacy["epsilon"])
    saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert saved["data"]["packing"] is False and run.config.data.packing is False  # data.packing defaults to true
    adapter = json.loads((run.run_dir / "adapter" / "adapter_config.json").read_text())
    assert not adapter.get("trainable_token_indices")  # peft's trainable tokens have no per-example gradient
    # the rows training reads: one example each, padded with a mask, never packed
    task = make_task(load_config(config))
    frame = task.data.read(chat_data["train"], "train")
    split = task.data.encode(frame, tunewise.load(run.run_dir, device="cpu").processor, 64, "train")
    assert len(split) == len(frame) and split.attention_mask and "position_ids" not in split.sequences
    assert "packed" not in task.facts().targets


def test_per_example_gradients_of_a_lora_llama_are_each_rows_own(tiny_llama_dir: Path) -> None:
    """The mean over rows of each row's mean token loss: the per-sample gradient Opacus computes for a row
    equals the gradient of that row's loss alone, whatever the other rows' token counts."""
    from opacus import GradSampleModule

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    strategy = StrategyConfig.model_validate({"method": "lora", "lora": {"dropout": 0.0}})  # identical forwards
    model = apply_strategy(model, strategy).train()
    torch.manual_seed(0)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name, _ in trainable)
    for name, parameter in trainable:
        if ".lora_B." in name:  # peft starts B at zero, which would leave A's gradients zero
            torch.nn.init.normal_(parameter, std=0.1)
    rng = np.random.default_rng(0)
    ids = [rng.integers(5, 60, length).astype(np.int32) for length in (3, 9, 5, 7)]  # token counts differ
    labels = [np.where(rng.random(len(row)) < 0.6, row, LABEL_PAD).astype(np.int64) for row in ids]
    for row in labels:
        row[-1] = 7  # every row keeps a target after the shift by one
    split = EncodedSplit(sequences={"input_ids": ids}, labels=labels, pad_token_id=0)
    parameters = [p for _, p in trainable]
    alone = [
        torch.autograd.grad(
            per_example_loss(model, collate(split, np.array([row]), per_row_positions=True)), parameters
        )
        for row in range(len(ids))
    ]
    private = GradSampleModule(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        per_example_loss(private, collate(split, np.arange(len(ids)), per_row_positions=True)).backward()
    for position, parameter in enumerate(parameters):
        expected = torch.stack([gradients[position] for gradients in alone])
        torch.testing.assert_close(parameter.grad_sample, expected, atol=1e-6, rtol=1e-4)


def test_a_budget_too_small_to_train_is_refused_before_the_run_folder_exists(
    tmp_path: Path, tiny_llama_dir: Path, chat_data: dict
) -> None:
    config = dp_config(
        tmp_path, tiny_llama_dir, chat_data, privacy={"dp": {"epsilon": 0.05}, "canaries": 2}, data={"max_length": 128}
    )
    with pytest.raises(ConfigError, match=r"privacy\.dp\.epsilon 0\.05 is too small to train") as caught:
        tunewise.train(config, show_progress=False)
    assert "train.batch_size" in str(caught.value) and "train.epochs" in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_the_noise_bound_refuses_only_budgets_that_drown_the_gradient() -> None:
    """Noise std sigma / batch on the averaged gradient: 0.036 at epsilon 8 trains; 1.6 at 0.05 cannot."""
    assert plan_privacy(8.0, auto_delta(240), 1.0, "prv", None, rows=240, batch_size=16, total_steps=30)
    with pytest.raises(ConfigError, match=r"noise of std 1\.5\d x max_grad_norm.*above 0\.0\d"):
        plan_privacy(0.05, auto_delta(240), 1.0, "prv", None, rows=240, batch_size=16, total_steps=30)


def test_dp_with_full_fine_tuning_of_a_causal_lm_asks_for_lora(
    tmp_path: Path, tiny_llama_dir: Path, chat_data: dict
) -> None:
    config = dp_config(tmp_path, tiny_llama_dir, chat_data, strategy={"method": "full"})
    with pytest.raises(
        ConfigError, match=r"strategy\.method: privacy\.dp trains a causal language model with LoRA"
    ) as caught:
        tunewise.train(config, show_progress=False)
    assert "set strategy.method: lora (now 'full')" in str(caught.value)
