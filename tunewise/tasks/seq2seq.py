"""Sequence-to-sequence generation: translation, summarisation, rewriting, with T5, BART, Marian, mT5 and
any other checkpoint `AutoModelForSeq2SeqLM` loads.

Each row is a source text and its target. The encoder reads `data.prefix` + source (T5 was pre-trained
with task prefixes such as "summarize: "), cut at data.max_length; the labels are the target's ids
from `tokenizer(text_target=...)`, which matters where the target side has its own vocabulary or
language tokens (Marian, mBART, NLLB), cut at data.max_target_length with the tokenizer's EOS kept
last, so the model learns where a target ends. The model builds its decoder inputs from the labels
itself (shifted right behind its decoder start token), so a batch is only encoder ids and labels.

Scoring is `tasks.generation`'s: the mean loss over target tokens, then text generated from every
test source beside the copy and lead-3 baselines. The saved model carries the generation settings in
its generation_config, so plain transformers generates from it the way the run scored it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

from tunewise.config.rules import Rule, rule
from tunewise.config.sections import DataConfig
from tunewise.data.readers import ROW_COLUMN, read_table
from tunewise.data.token_cache import tokenize
from tunewise.errors import ConfigError, TunewiseError
from tunewise.evaluation.generation import normalise_whitespace
from tunewise.models.registry import load_text_tokenizer, resolve_model, save_pretrained
from tunewise.tasks.base import TextGeneration
from tunewise.tasks.generation import (
    GENERATION_METRICS,
    GenerationConfig,
    GenerationScoring,
    GenerativeRunConfig,
    audit_decoding,
    decoding,
    encoder_decoder_log_likelihoods,
    generate_texts,
    generation_rows,
)
from tunewise.types import Capabilities, CheckpointHints, EncodedSplit, Finding, ModelSource, Purpose, TaskFacts

NAME: Final = "seq2seq"


# ------------------------------------------------------------------------------------------ config


class Seq2SeqData(DataConfig):
    source_column: str = Field(default="source", description="Column holding the input text (what the encoder reads).")
    target_column: str = Field(
        default="target", description="Column holding the text the model learns to write (translation, summary)."
    )
    prefix: str = Field(
        default="",
        description='Text put before every source, e.g. "summarize: " or "translate English to German: " for T5, '
        "whose pre-training used such task prefixes; counts towards max_length. Empty for BART and Marian.",
    )
    max_target_length: int = Field(
        default=128,
        ge=2,
        description="Longest target in tokens, end-of-sequence token included; longer targets are cut for "
        "training (the data check says how many). Generation length is generation.max_new_tokens.",
    )


@rule(NAME, "data.target_column")
def source_and_target_are_two_columns(config: Seq2SeqConfig) -> str | None:
    if config.data.source_column == config.data.target_column:
        return f"must name a different column than data.source_column ({config.data.source_column!r})"
    return None


@rule(NAME, "data.text_column")
def source_and_target_name_the_columns(config: Seq2SeqConfig) -> str | None:
    """text_column and label_column are inherited from the shared data section but read by no seq2seq code:
    a user who sets them expects them to work, and would otherwise be told the source column is missing."""
    data, defaults = config.data, Seq2SeqData.model_fields
    changed = [name for name in ("text_column", "label_column") if getattr(data, name) != defaults[name].default]
    if changed:
        return (
            f"seq2seq reads data.source_column and data.target_column, not data.{' or data.'.join(changed)}; "
            "name your columns there"
        )
    return None


@rule(NAME, "strategy.method")
def freezing_the_backbone_trains_nothing(config: Seq2SeqConfig) -> str | None:
    if config.strategy.method == "freeze_backbone":
        return (
            "freeze_backbone trains a new task head only, and a seq2seq model has none (its language-model head is "
            "pretrained): nothing would learn. Use full, last_n_layers or lora"
        )
    return None


class Seq2SeqConfig(GenerativeRunConfig):
    """Learn to write a target text from a source text (translation, summarisation) with an encoder-decoder."""

    rules: ClassVar[tuple[Rule, ...]] = (
        *GenerativeRunConfig.rules,
        source_and_target_are_two_columns,
        source_and_target_name_the_columns,
        freezing_the_backbone_trains_nothing,
    )

    task: Literal["seq2seq"] = Field(
        default=NAME,
        description="seq2seq: write a target text from a source text (translation, summarisation) with an "
        "encoder-decoder model (T5, BART, Marian, mT5).",
    )
    model: str = Field(
        default="t5-small",
        description="A Hugging Face hub id or a local folder of an encoder-decoder checkpoint (t5-small, "
        "facebook/bart-base, Helsinki-NLP/opus-mt-en-de, google/mt5-small); no built-in offline name is one.",
    )
    data: Seq2SeqData = Field(description="Where the data is, its source and target columns, and their lengths.")


# ------------------------------------------------------------------------------------------ the task


class Seq2SeqTask:
    def __init__(self, config: Seq2SeqConfig):
        self.data = Seq2SeqReader(config)
        self.model = Seq2SeqModel(config.generation)
        self.scoring = GenerationScoring(
            config.generation,
            decoder_only=False,
            stop_ids=lambda tokenizer: [tokenizer.eos_token_id],
            seed=config.train.seed,
        )
        self.generation: TextGeneration = Seq2SeqGeneration(self.data, config)

    def facts(self) -> TaskFacts:
        data = self.data.config
        targets = f"the text of `{data.target_column}`, generated from `{data.source_column}`"
        if data.prefix:
            targets += f" after the prefix {data.prefix!r}"
        return TaskFacts(
            name=NAME,
            problem_type="seq2seq",
            text_columns=(data.source_column, data.target_column),
            label_names=(),
            targets=targets,
            metrics=("loss", "perplexity", *GENERATION_METRICS),
            default_metric="loss",
            capabilities=Capabilities(generation=True, zero_shot=True, measures_own_lengths=True),
        )


class Seq2SeqReader:
    def __init__(self, config: Seq2SeqConfig):
        self.config = config.data
        self.generation = config.generation
        self.truncation_warning_share = config.audit.truncation_warning_share

    def read(self, source: str, split: str, labelled: bool = True) -> pd.DataFrame:
        """Source and target must hold text in every row (read_table names the file, row and column)."""
        columns = [self.config.source_column] + ([self.config.target_column] if labelled else [])
        return read_table(source, split, columns, None, column_keys=("data.source_column", "data.target_column"))

    def learn(self, train: pd.DataFrame) -> None:
        """The targets are free text: there is no label space to learn."""

    def check(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Any text is a valid target."""

    def resolve(self, config: Seq2SeqConfig) -> Seq2SeqConfig:
        """Reading the data settles no setting of this task."""
        return config

    def from_inputs(self, inputs: str | list[str]) -> pd.DataFrame:
        """Source texts to generate from (the prefix is added when they are encoded, as in training)."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts or not all(isinstance(text, str) for text in texts):
            raise TunewiseError('predict() takes a source text or a list of them, e.g. predict("The house is small.").')
        return pd.DataFrame({self.config.source_column: texts})

    def encode(
        self, frame: pd.DataFrame, processor: Any, max_length: int, purpose: Purpose, use_cache: bool = False
    ) -> EncodedSplit:
        """Encoder ids of prefix + source; target ids (ending in EOS) as labels, except for prediction.
        Only the sources use the token cache: the cache tokenises plain text, not `text_target`."""
        sources = frame[self.config.source_column].astype(str).tolist()
        encoder_texts = [self.config.prefix + text for text in sources]
        inputs = tokenize(processor, encoder_texts, max_length=max_length, use_cache=use_cache)
        meta: dict[str, list] = {
            "prompts": inputs["input_ids"],
            "sources": sources,
            "generate": generation_rows(purpose, len(frame), self.generation),
        }
        labels = None
        if purpose != "predict" and self.config.target_column in frame.columns:
            meta["references"] = frame[self.config.target_column].astype(str).tolist()
            labels = target_ids(processor, meta["references"], self.config.max_target_length)
        return EncodedSplit(sequences=inputs, labels=labels, meta=meta, pad_token_id=processor.pad_token_id or 0)

    def findings(self, frames: dict[str, pd.DataFrame], processor: Any, max_length: int) -> list[Finding]:
        """Per split: sources and targets cut by their length limits, and targets holding characters the
        tokenizer cannot write; then evaluation sources the model was trained on with another target."""
        findings = []
        for split, frame in frames.items():
            targets = frame[self.config.target_column].astype(str).tolist()
            ids = target_ids(processor, targets, None)
            findings += self._source_length(split, frame, processor, max_length)
            findings += self._target_length(split, frame, ids)
            findings += self._unknown_tokens(split, frame, ids, processor.unk_token_id)
        return findings + self._source_leakage(frames)

    def _source_length(self, split: str, frame: pd.DataFrame, processor: Any, max_length: int) -> list[Finding]:
        """The encoder's own view: prefix + source alone (the shared length check reads source and target as
        one text pair)."""
        texts = [self.config.prefix + text for text in frame[self.config.source_column].astype(str)]
        lengths = np.array([len(ids) for ids in processor(texts)["input_ids"]])
        cut = np.flatnonzero(lengths > max_length)
        if len(cut) <= self.truncation_warning_share * len(frame):
            return []
        return [
            Finding(
                "length",
                "warning",
                f"{split}: {len(cut)} of {len(frame)} sources (with the prefix) are longer than max_length "
                f"{max_length} tokens; the encoder reads only their first {max_length} (longest: {lengths.max()}).",
                "Raise data.max_length (costs memory), or check that what the target needs is at the start.",
                split,
                len(cut),
                frame[ROW_COLUMN].to_numpy()[cut].tolist(),
                {"longest": int(lengths.max()), "max_length": max_length},
            )
        ]

    def _target_length(self, split: str, frame: pd.DataFrame, ids: list[np.ndarray]) -> list[Finding]:
        """Targets cut at max_target_length still end in EOS, so the model learns to stop early on them and
        generates shorter texts than the references: a warning above audit.truncation_warning_share."""
        limit = self.config.max_target_length
        lengths = np.array([len(row) for row in ids])
        cut = np.flatnonzero(lengths > limit)
        if not len(cut):
            return []
        severe = len(cut) > self.truncation_warning_share * len(frame)
        p95 = float(np.percentile(lengths, 95))
        return [
            Finding(
                "length",
                "warning" if severe else "note",
                f"{split}: {len(cut)} of {len(frame)} targets ({len(cut) / len(frame):.1%}) are longer than "
                f"data.max_target_length {limit} tokens and are cut for training (95th percentile: {p95:.0f}, "
                f"longest: {lengths.max()}); the model learns to stop early on them.",
                "Raise data.max_target_length (and generation.max_new_tokens with it), or shorten the long targets.",
                split,
                len(cut),
                frame[ROW_COLUMN].to_numpy()[cut].tolist(),
                {"max_target_length": limit, "p95": p95, "longest": int(lengths.max())},
            )
        ]

    def _unknown_tokens(self, split: str, frame: pd.DataFrame, ids: list[np.ndarray], unk: int | None) -> list[Finding]:
        """Characters outside the vocabulary (T5's has no curly braces or newlines) become the unknown token,
        which the model can learn to write but which decodes to nothing: those targets can never be matched."""
        if unk is None:  # byte-level vocabularies can write anything
            return []
        rows = [i for i, row in enumerate(ids) if unk in row]
        if not rows:
            return []
        return [
            Finding(
                "unknown_tokens",
                "warning",
                f"{split}: {len(rows)} target(s) hold characters the tokenizer does not know (first: "
                f"{frame[self.config.target_column].iloc[rows[0]]!r}); the model can never write them.",
                "Choose a checkpoint whose vocabulary covers them, or replace those characters in the data.",
                split,
                len(rows),
                frame[ROW_COLUMN].to_numpy()[rows].tolist(),
            )
        ]

    def _source_leakage(self, frames: dict[str, pd.DataFrame]) -> list[Finding]:
        """Evaluation sources that stand in train with another target: the shared leakage check compares
        source and target together, so it misses them, yet the model has read these inputs."""
        source, target = self.config.source_column, self.config.target_column
        seen: dict[str, set[str]] = defaultdict(set)
        for text, reference in zip(frames["train"][source], frames["train"][target], strict=True):
            seen[_normalised(text)].add(_normalised(reference))
        findings = []
        for split, frame in frames.items():
            if split == "train":
                continue
            rows = [
                row
                for row, text, reference in zip(frame[ROW_COLUMN], frame[source], frame[target], strict=True)
                if _normalised(text) in seen and _normalised(reference) not in seen[_normalised(text)]
            ]
            if rows:
                findings.append(
                    Finding(
                        "leakage",
                        "warning",
                        f"{split}: {len(rows)} source(s) also stand in train, with another target; the model has "
                        "read these inputs, so scores on them overstate how it does on new text.",
                        "Remove those rows from train or from this split.",
                        split,
                        len(rows),
                        rows,
                    )
                )
        return findings


def target_ids(tokenizer: Any, targets: list[str], max_target_length: int | None) -> list[np.ndarray]:
    """Each target's ids as the tokenizer writes targets (its EOS last, kept when cut at max_target_length)."""
    if not targets:
        return []
    cut = max_target_length is not None
    encoded = tokenizer(text_target=targets, truncation=cut, max_length=max_target_length)
    return [np.asarray(row, dtype=np.int32) for row in encoded["input_ids"]]


def _normalised(text: Any) -> str:
    return normalise_whitespace(str(text)).casefold()


class Seq2SeqModel:
    def __init__(self, settings: GenerationConfig):
        self.settings = settings

    def source(self, name: str) -> ModelSource:
        """Refused in preparation, before any work, when the checkpoint has no sequence-to-sequence head
        (an encoder such as MiniLM, a decoder-only language model)."""
        source = resolve_model(name)
        model_type = AutoConfig.from_pretrained(source.location).model_type
        if model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            raise ConfigError(
                f"model: {name} is a {model_type} model, which has no encoder-decoder (AutoModelForSeq2SeqLM) "
                "form. Choose a sequence-to-sequence checkpoint, e.g. t5-small, facebook/bart-base or "
                "Helsinki-NLP/opus-mt-en-de (or a local folder of one)."
            )
        return source

    def processor(self, source: ModelSource) -> Any:
        tokenizer = load_text_tokenizer(source)
        if tokenizer.eos_token_id is None:
            raise ConfigError(
                f"model: the tokenizer of {source.name} has no end-of-sequence token, so a target cannot say where "
                "it ends and generation would never stop. Choose a checkpoint whose tokenizer defines eos_token."
            )
        return tokenizer

    def build(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """The pretrained encoder-decoder with its own language-model head (nothing new to add); float32
        master weights whatever the checkpoint stores, as for the other tasks."""
        return AutoModelForSeq2SeqLM.from_pretrained(source.location, dtype=torch.float32)

    def save(self, model: Any, processor: Any, folder: Path) -> None:
        """With generation.* written into generation_config, so `model.generate(ids)` and `pipeline` in plain
        transformers decode as the run's evaluation did."""
        model.generation_config.update(
            **decoding(self.settings, decoder_only=False),
            eos_token_id=processor.eos_token_id,
            pad_token_id=processor.pad_token_id,
        )
        save_pretrained(model, processor, folder)

    def load(self, folder: Path) -> PreTrainedModel:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder)
        self.restore(folder)
        return model

    def restore(self, folder: Path) -> None:
        """Nothing is fitted after training: the generation settings come with the run's config, the
        source prefix with data.prefix."""


class Seq2SeqGeneration:
    """The safety and memorisation audits' view of a seq2seq model (`tunewise.tasks.base.TextGeneration`):
    sources read with the prefix, as in training; an answer's start is forced on the decoder's side."""

    def __init__(self, reader: Seq2SeqReader, config: Seq2SeqConfig):
        self.reader = reader
        self.settings = config.generation
        self.seed = config.train.seed

    def examples(self, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
        data = self.reader.config
        return pd.DataFrame(
            {
                ROW_COLUMN: np.arange(len(pairs)),
                data.source_column: [source for source, _ in pairs],
                data.target_column: [target for _, target in pairs],
            }
        )

    def answers(self, frame: pd.DataFrame) -> list[tuple[str, str]]:
        data = self.reader.config
        return list(zip(frame[data.source_column].astype(str), frame[data.target_column].astype(str), strict=True))

    def answer_log_likelihoods(
        self, model: nn.Module, processor: Any, frame: pd.DataFrame, max_length: int
    ) -> np.ndarray:
        encoded = self.reader.encode(frame, processor, max_length, "evaluate")
        assert isinstance(encoded.labels, list)
        pad = processor.pad_token_id or 0
        return encoder_decoder_log_likelihoods(model, encoded.sequences["input_ids"], encoded.labels, pad)

    @torch.inference_mode()
    def continue_answers(
        self,
        model: nn.Module,
        processor: Any,
        frame: pd.DataFrame,
        prefixes: Sequence[str],
        max_length: int,
        max_new_tokens: int,
    ) -> list[str]:
        """One row at a time: each decoder starts from its own forced prefix, which batches would pad."""
        device = next(model.parameters()).device
        encoded = self.reader.encode(frame, processor, max_length, "predict")
        start = model.config.decoder_start_token_id  # type: ignore[union-attr]
        settings = audit_decoding(self.settings, max_new_tokens)
        texts = []
        for source, prefix in zip(encoded.sequences["input_ids"], prefixes, strict=True):
            forced = [start, *processor(text_target=prefix, add_special_tokens=False)["input_ids"]]
            output = model.generate(  # type: ignore[operator]
                input_ids=torch.as_tensor([list(source)], device=device),
                decoder_input_ids=torch.as_tensor([forced], device=device),
                max_new_tokens=max_new_tokens,
                num_beams=1,
                do_sample=False,
                repetition_penalty=settings.repetition_penalty,
                eos_token_id=processor.eos_token_id,
                pad_token_id=processor.pad_token_id,
            )
            texts.append(processor.decode(output[0, len(forced) :], skip_special_tokens=True).strip())
        return texts

    def respond(
        self, model: nn.Module, processor: Any, prompts: Sequence[str], max_length: int, max_new_tokens: int
    ) -> list[str]:
        encoded = self.reader.encode(self.reader.from_inputs(list(prompts)), processor, max_length, "predict")
        settings = audit_decoding(self.settings, max_new_tokens)
        stops = [processor.eos_token_id]
        return generate_texts(model, processor, encoded.meta["prompts"], settings, stops, False, self.seed)
