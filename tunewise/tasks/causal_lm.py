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
from typing import Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from tunewise.config.rules import Rule, rule
from tunewise.config.sections import DataConfig, RunConfig
from tunewise.data.readers import read_table
from tunewise.data.token_cache import tokenize
from tunewise.errors import DataError, TunewiseError
from tunewise.inference import predict_logits
from tunewise.models.registry import load_text_tokenizer, resolve_model, save_pretrained
from tunewise.types import (
    LABEL_PAD,
    Capabilities,
    CheckpointHints,
    EncodedSplit,
    Finding,
    ModelSource,
    Outputs,
    Purpose,
    TaskFacts,
)

NAME: Final = "causal-lm"
GENERATE_MAX_NEW_TOKENS = 64


# ------------------------------------------------------------------------------------------ config


class CausalLMData(DataConfig):
    prompt_column: str | None = Field(
        default=None,
        description="A column of prompts placed before text_column; the loss covers the text (the response) only, "
        "as instruction tuning needs.",
    )
    packing: bool = Field(
        default=True,
        description="Pack several examples into each max_length row (no padding); position ids restart at every "
        "example, so attention never crosses from one example into the next.",
    )


@rule(NAME, "data.prompt_column")
def prompt_is_another_column(config: CausalLMConfig) -> str | None:
    if config.data.prompt_column is not None and config.data.prompt_column == config.data.text_column:
        return "must name a different column than data.text_column"
    return None


class CausalLMConfig(RunConfig):
    """Continue pre-training a causal language model, or tune it on prompt/response pairs."""

    rules: ClassVar[tuple[Rule, ...]] = (*RunConfig.rules, prompt_is_another_column)

    task: Literal["causal-lm"] = Field(
        default=NAME,
        description="causal-lm: continued pre-training on text, or instruction tuning on prompt/response pairs.",
    )
    data: CausalLMData = Field(description="Where the data is and which columns to use.")


# ------------------------------------------------------------------------------------------ the task


class CausalLMTask:
    def __init__(self, config: CausalLMConfig):
        self.data = CausalLMReader(config.data)
        self.model = CausalLMModel()
        self.scoring = CausalLMScoring()

    def facts(self) -> TaskFacts:
        config = self.data.config
        targets = f"the next token of `{config.text_column}`"
        if config.prompt_column:
            targets += f", after a prompt from `{config.prompt_column}` (loss on the response only)"
        if config.packing:
            targets += "; examples packed into rows of max_length tokens"
        return TaskFacts(
            name=NAME,
            problem_type="causal_lm",
            text_columns=tuple(self.data.text_columns),
            label_names=(),
            targets=targets,
            metrics=("perplexity", "loss"),
            default_metric="loss",
            # without packing, longer examples are cut; packed ones are split across rows
            capabilities=Capabilities(generation=True, truncates=True),
        )


class CausalLMReader:
    def __init__(self, config: CausalLMData):
        self.config = config

    @property
    def text_columns(self) -> list[str]:
        return ([self.config.prompt_column] if self.config.prompt_column else []) + [self.config.text_column]

    def read(self, source: str, split: str, labelled: bool = True) -> pd.DataFrame:
        columns = self.text_columns if labelled else self.text_columns[:1]
        return read_table(source, split, columns, None)

    def learn(self, train: pd.DataFrame) -> None:
        """A language model's targets are its own text: there is no label space to learn."""

    def check(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Any text is a valid target."""

    def findings(self, frames: dict[str, pd.DataFrame], processor: Any, max_length: int) -> list[Finding]:
        """Text quality, lengths, duplicates and personal data are the shared checks: nothing more."""
        return []

    def resolve(self, config: CausalLMConfig) -> CausalLMConfig:
        """Reading the data settles no setting of this task."""
        return config

    def from_inputs(self, inputs: list[str] | str) -> pd.DataFrame:
        """Prompts to continue, in the first text column."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not all(isinstance(t, str) for t in texts):
            raise TunewiseError("predict() takes a prompt string or a list of them.")
        return pd.DataFrame({self.text_columns[0]: texts})

    def encode(
        self, frame: pd.DataFrame, processor: Any, max_length: int, purpose: Purpose, use_cache: bool = False
    ) -> EncodedSplit:
        """Training and evaluation rows: examples (packed, or cut at max_length) whose targets are their own
        tokens (the response only, after a prompt). Prediction rows: the prompts to continue."""
        pad = processor.pad_token_id or 0
        if purpose == "predict":
            prompts = tokenize(processor, self._texts(frame, self.text_columns[0]), max_length=max_length)
            return EncodedSplit(sequences=prompts, labels=None, pad_token_id=pad)
        responses = tokenize(processor, self._texts(frame, self.config.text_column), use_cache=use_cache)
        eos = _eos(processor)
        examples, targets = [], []
        if self.config.prompt_column:
            prompts = tokenize(processor, self._texts(frame, self.config.prompt_column), use_cache=use_cache)
            for prompt, response in zip(prompts["input_ids"], responses["input_ids"], strict=True):
                examples.append(np.concatenate([prompt, response, eos]))
                targets.append(np.concatenate([np.full(len(prompt), LABEL_PAD), response, eos]))
        else:
            for ids in responses["input_ids"]:
                examples.append(np.concatenate([ids, eos]))
                targets.append(examples[-1])
        if self.config.packing:
            return pack(examples, targets, max_length, pad)
        examples = [ids[:max_length] for ids in examples]
        targets = [ids[:max_length] for ids in targets]
        return EncodedSplit(sequences={"input_ids": examples}, labels=targets, pad_token_id=pad)

    @staticmethod
    def _texts(frame: pd.DataFrame, column: str) -> list[str]:
        texts = frame[column].astype(str).tolist()
        if not any(text.strip() for text in texts):
            raise DataError(f"column {column!r} holds no text in any row; a language model needs text to learn from.")
        return texts


class CausalLMModel:
    def source(self, name: str) -> ModelSource:
        return resolve_model(name)

    def processor(self, source: ModelSource) -> Any:
        tokenizer = load_text_tokenizer(source)
        if tokenizer.pad_token_id is None:  # GPT-2 and Llama ship none; padding is masked out anyway
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def build(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """float32 master weights whatever the checkpoint stores; bf16 autocast does the arithmetic."""
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32)
        # Without a key/value cache, transformers reads packed examples from the restarting position
        # ids and masks attention between them; with one (its default), it would not. Training never
        # needs the cache; generate() turns it on through the generation config.
        model.config.use_cache = False
        return model

    def save(self, model: Any, processor: Any, folder: Path) -> None:
        save_pretrained(model, processor, folder)

    def load(self, folder: Path) -> PreTrainedModel:
        return AutoModelForCausalLM.from_pretrained(folder)


class CausalLMScoring:
    def run(self, model: nn.Module, processor: Any, split: EncodedSplit) -> Outputs:
        """Labelled rows: the mean loss (a vocabulary-wide logit per token is not kept). Prompts: their
        greedy continuations."""
        if split.labels is None:
            return Outputs(texts=self._generate(model, processor, split))
        _, loss = predict_logits(model, split, keep_logits=False)
        return Outputs(loss=loss)

    def calibrate(self, outputs: Outputs, split: EncodedSplit) -> None:
        """Nothing to fit after training."""

    def metrics(self, outputs: Outputs, split: EncodedSplit) -> dict[str, Any]:
        loss = outputs.loss
        return {"perplexity": math.exp(min(loss, 50.0)) if loss is not None else None}

    def present(self, outputs: Outputs, split: EncodedSplit) -> pd.DataFrame:
        return pd.DataFrame({"generated_text": outputs.texts or []})

    @torch.no_grad()
    def _generate(self, model: nn.Module, processor: Any, split: EncodedSplit) -> list[str]:
        """Greedy continuations of each prompt (the instruction, for instruction-tuned models)."""
        device = next(model.parameters()).device
        completions = []
        for ids in split.sequences["input_ids"]:
            input_ids = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device).unsqueeze(0)
            output = model.generate(  # type: ignore[operator]
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=GENERATE_MAX_NEW_TOKENS,
                do_sample=False,
                pad_token_id=processor.pad_token_id,
            )
            completions.append(processor.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True))
        return completions


def _eos(processor: Any) -> np.ndarray:
    return np.array([processor.eos_token_id] if processor.eos_token_id is not None else [], dtype=np.int32)


def pack(examples: list[np.ndarray], targets: list[np.ndarray], max_length: int, pad_token_id: int = 0) -> EncodedSplit:
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
        pad_token_id=pad_token_id,
    )
    for row in split.labels or []:  # a row's first token has nothing before it to be predicted from
        row[0] = LABEL_PAD
    return split
