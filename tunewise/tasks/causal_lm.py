"""Causal language modelling: continued pre-training on raw text, and instruction tuning.

Each row is one example: `text_column` alone, or a prompt (`prompt_column`) followed by its
response (`text_column`), where the loss covers the response only. With `data.packing` (the
default) examples are concatenated into rows of exactly max_length tokens, so no compute goes to
padding and every batch has one shape. Packing must not let an example see the one before it:
position ids restart at 0 at every example, and transformers turns such position ids into a
block-diagonal causal mask (or variable-length attention with FlashAttention). The first token of
each example is never a target, so nothing is predicted across a boundary either.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from tunewise.audit.findings import Finding
from tunewise.config.schema import RunConfig
from tunewise.data.readers import read_table
from tunewise.data.token_cache import tokenize
from tunewise.errors import DataError, TunewiseError
from tunewise.models.registry import CheckpointHints, ModelSource, load_text_tokenizer, resolve_model
from tunewise.training.batching import LABEL_PAD, EncodedSplit

GENERATE_MAX_NEW_TOKENS = 64


class CausalLMTask:
    name = "causal-lm"
    problem_type = "causal_lm"
    keeps_logits = False  # a vocabulary-wide logit per token: evaluation keeps the loss only
    truncates = True  # without packing, longer examples are cut; packed ones are split across rows
    targets = "the next token of the text itself"

    def __init__(self, config: RunConfig):
        self.data = config.data
        self.label_names: list[str] = []

    # ----- model source -----------------------------------------------------------------------
    def resolve_source(self, name: str) -> ModelSource:
        return resolve_model(name)

    def load_tokenizer(self, source: ModelSource) -> Any:
        return load_text_tokenizer(source)

    # ----- data -----------------------------------------------------------------------------
    @property
    def text_columns(self) -> list[str]:
        return ([self.data.prompt_column] if self.data.prompt_column else []) + [self.data.text_column]

    def read_split(self, source: str, split: str, with_labels: bool = True) -> pd.DataFrame:
        columns = self.text_columns if with_labels else self.text_columns[:1]
        return read_table(source, split, columns, None)

    def fit_labels(self, train: pd.DataFrame) -> None:
        """A language model's targets are its own text: there is no label space to learn."""

    def check_split(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Any text is a valid target."""

    def audit_findings(self, frames: dict[str, pd.DataFrame], tokenizer: Any, max_length: int) -> list[Finding]:
        """Text quality, lengths, duplicates and personal data are the shared checks: nothing more."""
        return []

    def stratifies(self) -> bool:
        return False

    def metric_names(self) -> list[str]:
        return ["perplexity", "loss"]

    def default_metric(self) -> str:
        return "loss"

    # ----- model ----------------------------------------------------------------------------
    def build_model(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        # float32 master weights whatever the checkpoint stores; bf16 autocast does the arithmetic
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32)
        # Without a key/value cache, transformers reads packed examples from the restarting position
        # ids and masks attention between them; with one (its default), it would not. Training never
        # needs the cache; generate() turns it on through the generation config.
        model.config.use_cache = False
        return model

    def load_trained(self, model_dir: Path) -> PreTrainedModel:
        return AutoModelForCausalLM.from_pretrained(model_dir)

    def restore(self, model_config: Any) -> None:
        """Nothing beyond the weights and the tokenizer is needed to use the model."""

    def save_settings(self, model_config: Any) -> None:
        """No task settings to store."""

    # ----- encoding ---------------------------------------------------------------------------
    def encode(
        self, frame: pd.DataFrame, tokenizer: Any, max_length: int, use_cache: bool = False, training: bool = False
    ) -> EncodedSplit:
        if tokenizer.pad_token_id is None:  # GPT-2 and Llama ship none; padding is masked out anyway
            tokenizer.pad_token = tokenizer.eos_token
        responses = tokenize(tokenizer, self._texts(frame, self.data.text_column), use_cache=use_cache)
        examples, targets = [], []
        if self.data.prompt_column:
            prompts = tokenize(tokenizer, self._texts(frame, self.data.prompt_column), use_cache=use_cache)
            for prompt, response in zip(prompts["input_ids"], responses["input_ids"], strict=True):
                examples.append(np.concatenate([prompt, response, self._eos(tokenizer)]))
                targets.append(np.concatenate([np.full(len(prompt), LABEL_PAD), response, self._eos(tokenizer)]))
        else:
            for ids in responses["input_ids"]:
                examples.append(np.concatenate([ids, self._eos(tokenizer)]))
                targets.append(examples[-1])
        if self.data.packing:
            return pack(examples, targets, max_length)
        examples = [ids[:max_length] for ids in examples]
        targets = [ids[:max_length] for ids in targets]
        return EncodedSplit(sequences={"input_ids": examples}, labels=targets)

    def frame_from_inputs(self, inputs: list[str] | str) -> pd.DataFrame:
        """Prompts to continue, in the first text column."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not all(isinstance(t, str) for t in texts):
            raise TunewiseError("predict() takes a prompt string or a list of them.")
        return pd.DataFrame({self.text_columns[0]: texts})

    def _texts(self, frame: pd.DataFrame, column: str) -> list[str]:
        texts = frame[column].astype(str).tolist()
        if not any(text.strip() for text in texts):
            raise DataError(f"column {column!r} holds no text in any row; a language model needs text to learn from.")
        return texts

    @staticmethod
    def _eos(tokenizer: Any) -> np.ndarray:
        return np.array([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [], dtype=np.int32)

    # ----- outputs ----------------------------------------------------------------------------
    def calibrate(self, logits: Any, split: EncodedSplit) -> None:
        """Nothing to fit after training."""

    def compute_metrics(self, logits: Any, split: EncodedSplit, loss: float | None = None) -> dict[str, Any]:
        return {"perplexity": math.exp(min(loss, 50.0)) if loss is not None else None}

    def present(self, logits: Any, split: EncodedSplit) -> pd.DataFrame:
        raise NotImplementedError("causal-lm predictions are generated text: use generate()")

    @torch.no_grad()
    def generate(self, model: PreTrainedModel, tokenizer: Any, frame: pd.DataFrame, max_length: int) -> pd.DataFrame:
        """Greedy continuations of the first text column (the prompt, for instruction-tuned models)."""
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # generation continues from the right edge of each row
        device = next(model.parameters()).device
        completions = []
        for prompt in frame[self.text_columns[0]].astype(str):
            inputs = tokenizer(prompt, return_tensors="pt", truncation=True, max_length=max_length).to(device)
            output = model.generate(
                **inputs, max_new_tokens=GENERATE_MAX_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            completions.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
        return pd.DataFrame({"generated_text": completions})


def pack(examples: list[np.ndarray], targets: list[np.ndarray], max_length: int) -> EncodedSplit:
    """Concatenate examples into rows of max_length tokens (an example longer than a row is split).

    position_ids restart at 0 at each example (and at each row), and the first token of every
    example is not a target, so neither attention nor the loss crosses from one example into the next.
    """
    ids = np.concatenate(examples) if examples else np.zeros(0, dtype=np.int32)
    labels = np.concatenate(targets).astype(np.int64) if targets else np.zeros(0, dtype=np.int64)
    positions = np.concatenate([np.arange(len(example)) for example in examples]) if examples else ids
    starts = np.cumsum([0] + [len(example) for example in examples[:-1]])
    labels[starts] = LABEL_PAD
    rows = range(0, len(ids), max_length)
    positions_per_row = []
    for start in rows:  # an example cut by a row boundary restarts its positions in the new row
        chunk = positions[start : start + max_length].copy()
        if chunk[0] != 0:
            next_example = np.flatnonzero(chunk == 0)
            end = next_example[0] if len(next_example) else len(chunk)
            chunk[:end] -= chunk[0]
        positions_per_row.append(chunk)
    split = EncodedSplit(
        sequences={
            "input_ids": [ids[start : start + max_length] for start in rows],
            "position_ids": positions_per_row,
        },
        labels=[labels[start : start + max_length] for start in rows],
        attention_mask=False,
        fixed_shape=True,
    )
    for row in split.labels:  # a row's first token has nothing before it to be predicted from
        row[0] = LABEL_PAD
    return split
