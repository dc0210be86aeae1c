"""Causal language modelling: packing keeps examples apart, training learns, the run folder is usable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STORY_WORDS, SUBJECTS, lm_config, make_config, story_rows, write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

import tunewise
from tunewise.errors import ConfigError
from tunewise.inference import collate
from tunewise.tasks import load_config, make_task
from tunewise.tasks.packing import pack, pack_whole
from tunewise.types import LABEL_PAD, CheckpointHints


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("lm-data")
    return {
        "train": write_jsonl(folder / "train.jsonl", story_rows(240, seed=1)),
        "test": write_jsonl(folder / "test.jsonl", story_rows(30, seed=2)),
    }


def build_model(model_dir: Path, config: dict) -> torch.nn.Module:
    task = make_task(load_config(config))
    return task.model.build(task.model.source(str(model_dir)), CheckpointHints(), "auto")


# ------------------------------------------------------------------------------------------ packing


def test_pack_fills_rows_and_restarts_positions_at_every_example() -> None:
    examples = [np.arange(1, 6), np.arange(10, 13), np.arange(20, 29)]  # 5 + 3 + 9 = 17 tokens
    split = pack(examples, [e.copy() for e in examples], max_length=8)
    assert [len(row) for row in split.sequences["input_ids"]] == [8, 8, 1]
    assert np.concatenate(split.sequences["input_ids"]).tolist() == np.concatenate(examples).tolist()
    positions = split.sequences["position_ids"]
    assert positions[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert positions[1].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # example 3 starts the row
    assert positions[2].tolist() == [0]  # its last token, cut by the row boundary, restarts at 0
    labels = split.labels
    assert labels[0][0] == LABEL_PAD and labels[0][5] == LABEL_PAD  # no target at an example's first token
    assert labels[0][1:5].tolist() == [2, 3, 4, 5]
    assert labels[2][0] == LABEL_PAD
    assert split.attention_mask is False


@pytest.mark.parametrize("architecture_fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_packed_rows_give_each_example_exactly_its_own_logits(architecture_fixture, request) -> None:
    """Attention never crosses an example boundary: packed logits equal those of each example alone."""
    model_dir = request.getfixturevalue(architecture_fixture)
    model = build_model(model_dir, lm_config(Path("unused"), model_dir, {"train": "unused.jsonl"})).eval()
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(5, 60, (n,), generator=generator).numpy() for n in (7, 5, 11, 9)]
    split = pack(examples, [e.copy() for e in examples], max_length=16)
    with torch.no_grad():
        batch = collate(split, np.arange(len(split)))
        assert "attention_mask" not in batch
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        flat = packed.reshape(-1, packed.shape[-1])[: sum(len(e) for e in examples)]
        offset = 0
        for example in examples:
            alone = model(input_ids=torch.as_tensor(example).unsqueeze(0)).logits[0]
            piece = flat[offset : offset + len(example)]
            cut = 16 - offset % 16  # an example split across rows restarts there: compare the first part
            length = min(len(example), cut)
            torch.testing.assert_close(piece[:length], alone[:length], atol=1e-5, rtol=1e-4)
            offset += len(example)


@pytest.mark.parametrize("architecture_fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_whole_examples_share_rows_and_batch_padding_changes_no_logit(architecture_fixture, request) -> None:
    """Conversations are packed whole into rows of their own length; in a batch the shorter rows are padded,
    and neither the padding nor a row's other examples change any example's logits."""
    model_dir = request.getfixturevalue(architecture_fixture)
    model = build_model(model_dir, lm_config(Path("unused"), model_dir, {"train": "unused.jsonl"})).eval()
    generator = torch.Generator().manual_seed(1)
    examples = [torch.randint(5, 60, (n,), generator=generator).numpy() for n in (9, 5, 12, 3, 14)]
    split = pack_whole(examples, [e.copy() for e in examples], max_length=16, pad_token_id=0)
    assert [len(row) for row in split.sequences["input_ids"]] == [14, 15, 14]  # 9+5, 12+3, 14: no tail padding
    assert not split.fixed_shape
    with torch.no_grad():
        batch = collate(split, np.arange(len(split)))
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        placed = [(0, 0), (0, 9), (1, 0), (1, 12), (2, 0)]  # (row, offset) of each example
        for example, (row, offset) in zip(examples, placed, strict=True):
            alone = model(input_ids=torch.as_tensor(example).unsqueeze(0)).logits[0]
            torch.testing.assert_close(logits[row, offset : offset + len(example)], alone, atol=1e-5, rtol=1e-4)
    assert all(labels[0] == LABEL_PAD for labels in split.labels)  # no example's first token is a target


# ------------------------------------------------------------------------------------------ training


def test_causal_lm_trains_packed_and_generates(tmp_path: Path, tiny_gpt2_dir: Path, lm_data: dict) -> None:
    run = tunewise.train(lm_config(tmp_path, tiny_gpt2_dir, lm_data), show_progress=False)
    losses = [h["loss"] for h in run.history if "loss" in h]
    assert losses[-1] < 0.75 * losses[0], losses  # the pattern is learnable
    test = run.metrics["test"]
    assert test["perplexity"] == pytest.approx(np.exp(test["loss"]), rel=1e-6)
    assert test["perplexity"] < 30  # a random model over 172 tokens scores about 172
    assert not (run.run_dir / "predictions.csv").exists()  # no per-row scores for a language model
    assert "perplexity" in json.loads((run.run_dir / "metrics.json").read_text())["test"]
    model = tunewise.load(run.run_dir, device="cpu")
    generated = model.predict(["the film was"])
    assert isinstance(generated[0]["generated_text"], str) and generated[0]["generated_text"].strip()
    # generation is the scoring's run on a "predict" split: prompts without labels give texts
    task = model.task
    prompts = task.data.encode(task.data.from_inputs(["the film was"]), model.processor, model.max_length, "predict")
    assert prompts.labels is None
    texts = task.scoring.run(model.model, model.processor, prompts).texts
    assert texts == [generated[0]["generated_text"]]  # greedy: the same continuation every time


def test_instruction_tuning_scores_the_response_only(tmp_path: Path, tiny_gpt2_dir: Path) -> None:
    rows = [{"prompt": f"{s} was", "response": w} for s, w in zip(SUBJECTS * 20, STORY_WORDS * 16, strict=False)]
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows)}
    config = lm_config(tmp_path, tiny_gpt2_dir, data, data={"prompt_column": "prompt", "completion_column": "response"})
    task = make_task(load_config(config))
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    frame = task.data.read(data["train"], "train")
    split = task.data.encode(frame.head(3), tokenizer, 32, "evaluate")
    prompt_ids = tokenizer(rows[0]["prompt"])["input_ids"]
    assert (split.labels[0][: len(prompt_ids)] == LABEL_PAD).all()  # prompt tokens are never targets
    assert (split.labels[0][len(prompt_ids) : len(prompt_ids) + 2] != LABEL_PAD).all()
    run = tunewise.train(config, show_progress=False)
    assert run.metrics["validation"]["perplexity"] > 0


def test_unpacked_rows_are_padded_with_a_mask(tmp_path: Path, tiny_gpt2_dir: Path, lm_data: dict) -> None:
    config = lm_config(tmp_path, tiny_gpt2_dir, lm_data, data={"packing": False}, train={"epochs": 1})
    run = tunewise.train(config, show_progress=False)
    assert run.config.train.compile is False
    assert run.metrics["test"]["loss"] > 0


def test_lora_adapts_gpt2_conv1d_attention_and_keeps_the_lm_head_frozen(
    tmp_path: Path, tiny_gpt2_dir: Path, lm_data: dict
) -> None:
    config = lm_config(tmp_path, tiny_gpt2_dir, lm_data, strategy={"method": "lora"}, train={"epochs": 1})
    run = tunewise.train(config, show_progress=False)
    assert (run.run_dir / "adapter" / "adapter_config.json").is_file()
    adapter = json.loads((run.run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["c_attn"] or set(adapter["target_modules"]) == {"c_attn"}
    assert not adapter.get("modules_to_save")


def test_prompt_column_outside_causal_lm_is_refused(tmp_path: Path, tiny_model_dir: Path, single_label_data) -> None:
    config = make_config(tmp_path, tiny_model_dir, {**single_label_data, "prompt_column": "text"})
    message = "data.prompt_column: not a setting of task text-classification; it belongs to task causal-lm"
    with pytest.raises(ConfigError, match=message):
        tunewise.train(config, show_progress=False)


def test_a_bf16_checkpoint_trains_with_float32_master_weights(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """transformers 5 keeps a checkpoint's stored dtype; tunewise loads float32 and lets autocast do bf16."""
    stored = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    stored.save_pretrained(tmp_path / "bf16")
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path / "bf16")
    model = build_model(tmp_path / "bf16", lm_config(tmp_path, tmp_path / "bf16", {"train": "unused.jsonl"}))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_the_data_check_runs_on_unlabelled_text(tmp_path: Path, tiny_gpt2_dir: Path, lm_data: dict) -> None:
    """No label column: balance and label noise are skipped, duplicates and leakage still found."""
    from tunewise.jobs.check import run_check
    from tunewise.prepare import prepare_check

    audit = run_check(prepare_check(load_config(lm_config(tmp_path, tiny_gpt2_dir, lm_data))))
    checks = {finding.check for finding in audit.findings}
    assert {"duplicates", "leakage"} <= checks  # the template texts repeat within and across splits
    assert "label_noise" not in checks and "class_counts" not in audit.statistics["train"]
