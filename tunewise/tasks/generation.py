"""What the generative tasks share: the `generation:` config section, batched generation, and scoring.

Causal LMs and seq2seq models are scored the same way: the mean loss (and perplexity) over the
target tokens of every row, then text generated from each row's prompt and compared with its
reference (`tunewise.evaluation.generation`), beside the trivial baselines of the task (the source
copied, its lead-3 sentences) so no run claims a gain a baseline already has. The task's encoding
puts what scoring needs in `EncodedSplit.meta`, one entry per example:

    prompts     the token ids generation starts from (a conversation up to the assistant's turn,
                a seq2seq source)
    references  the text the model should produce (absent for prediction inputs)
    sources     the input as text, for the copy and lead-3 baselines
    generate    which examples to generate for: all, except during training, where validation
                generates for the first `generation.eval_rows` only (generation is the slow part)

Generation runs in batches of prompts sorted by length. A decoder-only model's prompts are padded
on the left, so every row's last prompt token sits at the same position and generation continues
each row from its own end; a seq2seq model's encoder inputs are padded on the right as usual.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList, NoRepeatNGramLogitsProcessor

from tunewise.config.rules import Rule, rule
from tunewise.config.safety import SafetyConfig, ScreenConfig
from tunewise.config.sections import RunConfig, Section
from tunewise.evaluation.generation import baseline_predictions, generation_metrics
from tunewise.inference import eval_batch_size, predict_logits
from tunewise.types import EncodedSplit, Outputs, Purpose

LOGITS_BUDGET_BYTES = 1 << 30  # one evaluation batch's logits: 1 GiB
GENERATION_METRICS = ("exact_match", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf")


class GenerationConfig(Section):
    max_new_tokens: int = Field(default=128, ge=1, description="Most tokens generated per prompt.")
    num_beams: int = Field(default=1, ge=1, description="Beam search width; 1: greedy (or sampling) decoding.")
    do_sample: bool = Field(
        default=False,
        description="Sample the next token instead of taking the most likely one (seeded by train.seed). Off: "
        "the same prompt always gives the same text, as evaluation needs.",
    )
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature (do_sample only).")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling: keep this much probability mass.")
    repetition_penalty: float = Field(
        default=1.0, ge=1, description="Penalise tokens already generated (1.0: off; 1.1-1.3 curbs loops)."
    )
    no_repeat_ngram_size: int = Field(
        default=0,
        ge=0,
        description="Never generate the same n tokens twice within one answer (0: off); n-grams of the prompt "
        "may still be copied, as summaries must. Summaries want 3 or 4: a small model tuned on extractive "
        "summaries otherwise repeats a sentence until max_new_tokens (bench/generation.py); it would forbid "
        "legitimate repeats in code or lists.",
    )
    eval_rows: int = Field(
        default=16,
        ge=0,
        description="Validation rows generated for at each evaluation during training (loss covers every "
        "row); 0: loss only. The test split is always generated for in full.",
    )
    batch_size: int = Field(default=16, ge=1, description="Prompts generated together.")


@rule("generation", "generation.temperature")
def sampling_settings_need_sampling(config: Any) -> str | None:
    settings = config.generation
    if not settings.do_sample and (settings.temperature != 1.0 or settings.top_p != 1.0):
        return "temperature and top_p shape sampling; they have no effect unless generation.do_sample is true"
    return None


class GenerativeRunConfig(RunConfig):
    """The base of every generative task's config: a run with a `generation:` section and its rules."""

    rules: ClassVar[tuple[Rule, ...]] = (*RunConfig.rules, sampling_settings_need_sampling)

    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="How text is generated at evaluation and by predict."
    )
    screen: ScreenConfig = Field(
        default_factory=ScreenConfig,
        description="The content screen every generated text passes: personal data, blocklists, patterns, and an "
        "abusive-language classifier.",
    )
    safety: SafetyConfig = Field(
        default_factory=SafetyConfig,
        description="Red-team prompts answered by the base and the fine-tuned model: refusal rates, and the gate.",
    )


def generation_rows(purpose: Purpose, examples: int, settings: GenerationConfig) -> list[int]:
    """The examples to generate for: a sample of validation during training, every other split whole."""
    if purpose == "train":
        return []
    if purpose == "validate":
        return list(range(min(settings.eval_rows, examples)))
    return list(range(examples))


@torch.inference_mode()
def generate_texts(
    model: nn.Module,
    processor: Any,
    prompts: Sequence[np.ndarray],
    settings: GenerationConfig,
    stop_ids: list[int],
    decoder_only: bool,
    seed: int = 0,
) -> list[str]:
    """The generated continuation of each prompt, in input order, without its special tokens."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad = processor.pad_token_id if processor.pad_token_id is not None else 0
    order = np.argsort([-len(prompt) for prompt in prompts], kind="stable")
    texts = [""] * len(prompts)
    if settings.do_sample:
        torch.manual_seed(seed)
    context = _context_length(model)
    for start in range(0, len(order), settings.batch_size):
        rows = order[start : start + settings.batch_size]
        batch = [prompts[i] for i in rows]
        new_tokens_limit = settings.max_new_tokens
        if context is not None:  # positions past the model's context do not exist (learned position embeddings)
            if decoder_only:  # prompt and answer share the context: keep at least half of it for the prompt
                longest = max(len(prompt) for prompt in batch)
                new_tokens_limit = min(new_tokens_limit, context - min(longest, context // 2))
                batch = [prompt[-(context - new_tokens_limit) :] for prompt in batch]
            else:
                new_tokens_limit = min(new_tokens_limit, context - 1)
        ids, mask = _padded(batch, pad, left=decoder_only)
        processors = LogitsProcessorList()
        if decoder_only and settings.no_repeat_ngram_size:  # transformers' own would count the prompt's n-grams
            processors.append(NoRepeatInAnswer(settings.no_repeat_ngram_size, ids.shape[1]))
        output = model.generate(  # type: ignore[operator]
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            **{**decoding(settings, decoder_only), "max_new_tokens": new_tokens_limit},
            logits_processor=processors,
            eos_token_id=stop_ids or None,
            pad_token_id=pad,
            use_cache=True,
        )
        new_tokens = output[:, ids.shape[1] :] if decoder_only else output
        for row, tokens in zip(rows, new_tokens, strict=True):
            texts[row] = processor.decode(tokens, skip_special_tokens=True).strip()
    model.train(was_training)
    return texts


class NoRepeatInAnswer(LogitsProcessor):
    """no_repeat_ngram_size over the generated tokens only. A decoder-only model's input_ids start with
    the prompt (left-padded to one length in a batch), and transformers' NoRepeatNGramLogitsProcessor
    would forbid every n-gram of it, so a summary could not quote its article."""

    def __init__(self, ngram_size: int, prompt_length: int):
        self.inner = NoRepeatNGramLogitsProcessor(ngram_size)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        answer = input_ids[:, self.prompt_length :]
        return self.inner(answer, scores) if answer.shape[1] else scores


def decoding(settings: GenerationConfig, decoder_only: bool) -> dict[str, Any]:
    """The generate() settings of the generation section: what evaluation decodes with, and what a
    saved model's generation_config carries, so plain transformers decodes as the run was scored.
    A decoder-only model gets no_repeat_ngram_size from NoRepeatInAnswer instead: transformers' setting
    would count the prompt's n-grams too, so it is not written into its generation_config either."""
    return {
        "max_new_tokens": settings.max_new_tokens,
        "num_beams": settings.num_beams,
        "do_sample": settings.do_sample,
        "temperature": settings.temperature if settings.do_sample else None,
        "top_p": settings.top_p if settings.do_sample else None,
        "repetition_penalty": settings.repetition_penalty,
        "no_repeat_ngram_size": 0 if decoder_only else settings.no_repeat_ngram_size,
    }


def _context_length(model: nn.Module) -> int | None:
    """The most positions the model has (learned position embeddings); None when it has no fixed limit."""
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _padded(prompts: list[np.ndarray], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        span = slice(longest - len(prompt), longest) if left else slice(0, len(prompt))
        ids[row, span] = torch.as_tensor(np.asarray(prompt, dtype=np.int64))
        mask[row, span] = 1
    return ids, mask


def loss_batch_size(model: nn.Module, split: EncodedSplit) -> int:
    """Rows per batch for the evaluation loss, so that one batch's float32 logits (rows x tokens x
    vocabulary) stay within LOGITS_BUDGET_BYTES. A language model's logits dwarf the rest: SmolLM2's
    49,152-token vocabulary at 1,024 tokens is 200 MB per row, and the 32 rows of the usual
    evaluation batch took 14 GB at peak."""
    vocabulary = model.get_output_embeddings().weight.shape[0]  # type: ignore[operator]
    label_lengths = [len(labels) for labels in split.labels or ()] if isinstance(split.labels, list) else []
    longest = int(max([*split.lengths, *label_lengths], default=1))  # seq2seq: the decoder's side counts
    rows = LOGITS_BUDGET_BYTES // max(1, longest * vocabulary * 4)
    device = next(model.parameters()).device
    return int(min(max(rows, 1), eval_batch_size(device)))


def _headline(scores: dict[str, Any]) -> dict[str, float]:
    return {name: scores[name] for name in GENERATION_METRICS}


class GenerationScoring:
    """Scoring for generative tasks: loss and perplexity over the targets, generated text against the
    references, and the trivial baselines on the same rows. `stop_ids` gives the tokens that end a
    generation (the end-of-turn token of a chat template, the model's EOS)."""

    def __init__(
        self, settings: GenerationConfig, decoder_only: bool, stop_ids: Callable[[Any], list[int]], seed: int = 0
    ):
        self.settings = settings
        self.decoder_only = decoder_only
        self.stop_ids = stop_ids
        self.seed = seed

    def run(self, model: nn.Module, processor: Any, split: EncodedSplit) -> Outputs:
        loss = None
        if split.labels is not None:
            loss = predict_logits(model, split, loss_batch_size(model, split), keep_logits=False)[1]
        rows = split.meta.get("generate", [])
        if not rows:
            return Outputs(loss=loss)
        prompts = [split.meta["prompts"][row] for row in rows]
        stops = self.stop_ids(processor)
        texts = generate_texts(model, processor, prompts, self.settings, stops, self.decoder_only, self.seed)
        return Outputs(loss=loss, texts=texts)

    def calibrate(self, outputs: Outputs, split: EncodedSplit) -> None:
        """Nothing is fitted after training."""

    def metrics(self, outputs: Outputs, split: EncodedSplit) -> dict[str, Any]:
        """perplexity, and with generated text and references: the generation metrics, the rows they
        cover, and the same metrics for each trivial baseline under `baselines`."""
        loss = outputs.loss
        metrics: dict[str, Any] = {"perplexity": math.exp(min(loss, 50.0)) if loss is not None else None}
        references = split.meta.get("references")
        if outputs.texts is None or not references:
            return metrics
        rows = split.meta["generate"]
        wanted = [references[row] for row in rows]
        scores = generation_metrics(outputs.texts, wanted)
        metrics.update(_headline(scores))
        metrics["generated_rows"] = scores["rows"]
        metrics["sacrebleu"] = scores["sacrebleu"]
        sources = [split.meta["sources"][row] for row in rows]
        metrics["baselines"] = {
            name: _headline(generation_metrics(texts, wanted)) for name, texts in baseline_predictions(sources).items()
        }
        return metrics

    def present(self, outputs: Outputs, split: EncodedSplit) -> pd.DataFrame:
        """One row per generated example: the reference (when known) and the generated text."""
        rows = split.meta.get("generate", [])
        columns: dict[str, list[Any]] = {}
        if split.meta.get("references"):
            columns["reference"] = [split.meta["references"][row] for row in rows]
        columns["generated_text"] = list(outputs.texts or [])
        return pd.DataFrame(columns)


def audit_decoding(settings: GenerationConfig, max_new_tokens: int) -> GenerationConfig:
    """The run's decoding for the audits, greedy and capped at `max_new_tokens`: the base and the fine-tuned
    model are compared on the same prompts, so the same prompt must always give the same text."""
    return settings.model_copy(
        update={"max_new_tokens": max_new_tokens, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "num_beams": 1}
    )


@torch.inference_mode()
def decoder_log_likelihoods(
    model: nn.Module, rows: Sequence[tuple[Sequence[int], Sequence[bool]]], pad: int
) -> np.ndarray:
    """Each row's sum of log p(token | the tokens before it) over its target tokens (the mask), for a
    decoder-only model: rows are (ids, target mask), padded on the right in batches of similar length."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    vocabulary = model.get_output_embeddings().weight.shape[0]  # type: ignore[operator]
    order = np.argsort([-len(ids) for ids, _ in rows], kind="stable")
    totals = np.zeros(len(rows))
    start = 0
    while start < len(order):
        longest = len(rows[order[start]][0])
        size = max(1, min(64, LOGITS_BUDGET_BYTES // max(1, 2 * longest * vocabulary * 4)))
        batch = order[start : start + size]
        ids, attention = _padded([np.asarray(rows[i][0], dtype=np.int64) for i in batch], pad, left=False)
        targets = torch.zeros_like(ids, dtype=torch.bool)
        for row, index in enumerate(batch):
            mask = torch.as_tensor(np.asarray(rows[index][1], dtype=bool))
            targets[row, : len(mask)] = mask
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = log_probs.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        totals[batch] = (picked * targets[:, 1:].to(device)).sum(dim=1).cpu().numpy()
        start += size
    model.train(was_training)
    return totals


@torch.inference_mode()
def encoder_decoder_log_likelihoods(
    model: nn.Module, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad: int
) -> np.ndarray:
    """Each row's sum of log p(target token | source, target tokens before it), for an encoder-decoder model."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = np.zeros(len(sources))
    for start in range(0, len(sources), 16):
        rows = list(range(start, min(start + 16, len(sources))))
        ids, attention = _padded([np.asarray(sources[i], dtype=np.int64) for i in rows], pad, left=False)
        labels, _ = _padded([np.asarray(targets[i], dtype=np.int64) for i in rows], -100, left=False)
        logits = model(
            input_ids=ids.to(device), attention_mask=attention.to(device), labels=labels.to(device)
        ).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        known = labels.to(device) != -100
        picked = log_probs.gather(-1, labels.to(device).clamp(min=0).unsqueeze(-1)).squeeze(-1)
        totals[rows] = (picked * known).sum(dim=1).cpu().numpy()
    model.train(was_training)
    return totals
