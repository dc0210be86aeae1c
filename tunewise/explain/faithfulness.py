"""Are the explanations faithful? ERASER's deletion test (DeYoung et al., 2020), against a random baseline.

For each explanation and each k, the target is scored again with words deleted:

- comprehensiveness: the drop in the explained probability when the k most-attributed words are
  deleted (did the model need them?), beside the drop when k random words are deleted;
- sufficiency: the drop when only those k words are kept (are they enough?), beside k random words kept.

An explanation is faithful when its top words are more comprehensive (larger drop) and more sufficient
(smaller drop) than random ones; the random baseline is what "more" is measured against, since deleting
any k words of a short text moves a model somewhat. k is each of `ks` and `fraction` of each
explanation's candidate words (rounded up). The candidates are the words that are not the target
itself: a named entity's own words, or the answer tokens a QA target reads, are never deleted. An
explanation with fewer candidates than k is skipped for that k and counted.

Words are deleted in token space: their tokens leave the input ids, the attention mask and the token
types, the special tokens stay, and the target's positions are re-indexed. The changed inputs are
scored in padded batches, longest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tunewise.explain.attribution import in_eval_mode, pad_token_id
from tunewise.explain.results import WordAttribution
from tunewise.explain.words import token_words, word_spans
from tunewise.inference import eval_batch_size, model_device
from tunewise.tasks.token_places import explained_score
from tunewise.types import TextExplanationTarget

VARIANTS = ("drop_top", "drop_random", "keep_top", "keep_random")


@dataclass(frozen=True)
class DeletionFigures:
    """The deletion test at one k: mean drops in the explained probability over the explanations measured."""

    k: str  # "3" (words), or "20%" (of each explanation's candidate words)
    rows: int  # explanations measured at this k
    skipped: int  # explanations with fewer candidate words than k
    comprehensiveness_top: float | None  # None when no explanation was measured at this k
    comprehensiveness_random: float | None
    sufficiency_top: float | None
    sufficiency_random: float | None


@dataclass(frozen=True)
class Faithfulness:
    """The deletion test over a set of explanations.

    `as_dict()` is JSON-ready:

        {"method": "integrated_gradients",   # the explanations' method(s), joined by "+" when mixed
         "explanations": 200, "seed": 0, "fraction": 0.2,
         "by_k": {"1": {"k": "1", "rows": 200, "skipped": 0,
                        "comprehensiveness_top": 0.41, "comprehensiveness_random": 0.05,
                        "sufficiency_top": 0.10, "sufficiency_random": 0.38},
                  "3": {...}, "20%": {...}}}

    Each figure is a mean drop in the explained probability (the probability on the whole input minus
    the probability on the changed input; negative when the change raised it), over the `rows`
    explanations measured at that k. Faithful: comprehensiveness_top > comprehensiveness_random and
    sufficiency_top < sufficiency_random. The figures are null (None) when no explanation could be measured
    at that k (strict JSON has no NaN)."""

    method: str
    explanations: int
    seed: int
    fraction: float
    by_k: tuple[DeletionFigures, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "explanations": self.explanations,
            "seed": self.seed,
            "fraction": self.fraction,
            "by_k": {figures.k: dict(figures.__dict__) for figures in self.by_k},
        }

    def summary(self) -> str:
        """One sentence: the first k at which explanations were measured."""
        measured = [figures for figures in self.by_k if figures.rows]
        if not measured:
            return "No explanation had enough words to delete for the faithfulness test."
        f = measured[0]
        assert f.comprehensiveness_top is not None and f.comprehensiveness_random is not None
        assert f.sufficiency_top is not None and f.sufficiency_random is not None
        words = f"{f.k} of the words" if f.k.endswith("%") else f"{f.k} word{'s' if f.k != '1' else ''}"
        return (
            f"Deleting the top {words} lowers the explained probability by {f.comprehensiveness_top:.3f} on "
            f"average against {f.comprehensiveness_random:.3f} for random words; keeping only them loses "
            f"{f.sufficiency_top:.3f} against {f.sufficiency_random:.3f} ({f.rows} explanations, {self.method})."
        )


@dataclass(frozen=True)
class _Variant:
    """One input to score: the explanation it belongs to, which variant, at which k, and the tokens kept."""

    explanation: int
    kind: str  # "full" or one of VARIANTS
    k: str
    kept: np.ndarray  # token positions kept, in order


def measure_faithfulness(
    model: nn.Module,
    targets: Sequence[TextExplanationTarget],
    explanations: Sequence[WordAttribution],
    ks: Sequence[int] = (1, 3),
    fraction: float = 0.2,
    seed: int = 0,
) -> Faithfulness:
    """The deletion test of `explanations` (one per target, in the same order: what `explain_targets`
    returned for `targets`). The random words are drawn from `seed` and the explanation's place in the
    list, so a second call measures the same deletions."""
    if len(targets) != len(explanations):
        raise ValueError(f"{len(targets)} targets but {len(explanations)} explanations; give one per target")
    sizes = [(str(k), k) for k in ks] + [(f"{fraction:.0%}", None)]
    variants: list[_Variant] = []
    skipped = dict.fromkeys((name for name, _ in sizes), 0)
    for index, (target, explanation) in enumerate(zip(targets, explanations, strict=True)):
        variants.append(_Variant(index, "full", "", np.arange(len(target.offsets))))
        words, candidates, ranked = _candidates(target, explanation)
        rng = np.random.default_rng([seed, index])
        for name, size in sizes:
            k = size if size is not None else math.ceil(fraction * len(candidates))
            if k < 1 or len(candidates) < k:
                skipped[name] += 1
                continue
            random = rng.choice(candidates, size=k, replace=False).tolist()
            variants += _deletions(index, name, words, candidates, ranked[:k], random)
    scores = _score(model, targets, variants)
    full = {v.explanation: score for v, score in zip(variants, scores, strict=True) if v.kind == "full"}
    drops: dict[tuple[str, str], list[float]] = {}
    for variant, score in zip(variants, scores, strict=True):
        if variant.kind != "full":
            drops.setdefault((variant.k, variant.kind), []).append(full[variant.explanation] - score)
    figures = tuple(_figures(name, drops, skipped[name]) for name, _ in sizes)
    methods = "+".join(dict.fromkeys(e.method for e in explanations))
    return Faithfulness(methods, len(explanations), seed, fraction, figures)


def _candidates(target: TextExplanationTarget, explanation: WordAttribution) -> tuple[np.ndarray, list[int], list[int]]:
    """Each token's word (-1: special), the words that may be deleted in text order (what random words are
    drawn from, so the draw does not depend on the method), and the same most-attributed first."""
    spans = word_spans(target.offsets, target.sequence_ids, target.texts)
    if len(spans) != len(explanation.words):
        raise ValueError(f"row {target.row}, {target.name}: the explanation is not of this target's words")
    protected = set(target.positions)
    candidates = [index for index, span in enumerate(spans) if not protected.intersection(span.tokens)]
    ranked = sorted(candidates, key=lambda index: -explanation.words[index].score)  # stable: ties in text order
    return token_words(spans, len(target.offsets)), candidates, ranked


def _deletions(
    index: int, name: str, words: np.ndarray, candidates: list[int], top: list[int], random: list[int]
) -> list[_Variant]:
    """The four changed inputs at one k: the top or the random words deleted, or only they kept (the same
    random words for both; the words that are not candidates always stay)."""
    deleted = {
        "drop_top": top,
        "drop_random": random,
        "keep_top": [w for w in candidates if w not in top],
        "keep_random": [w for w in candidates if w not in random],
    }
    return [
        _Variant(index, kind, name, np.flatnonzero(~np.isin(words, deleted[kind]) | (words < 0))) for kind in VARIANTS
    ]


def _score(model: nn.Module, targets: Sequence[TextExplanationTarget], variants: list[_Variant]) -> list[float]:
    """Each variant's explained score, the model run over padded batches of variants, longest first."""
    device = model_device(model)
    lengths = np.array([len(v.kept) for v in variants])
    order = np.argsort(-lengths, kind="stable")
    batch_size = eval_batch_size(device)
    scores = [0.0] * len(variants)
    with in_eval_mode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [variants[i] for i in order[start : start + batch_size]]
            features = _batch(model, targets, batch, device)
            outputs = model(**features)
            for row, (i, variant) in enumerate(zip(order[start : start + batch_size], batch, strict=True)):
                target = targets[variant.explanation]
                positions = np.searchsorted(variant.kept, target.positions)  # kept positions, re-indexed
                score = explained_score(
                    getattr(outputs, target.output)[row : row + 1],
                    positions.tolist(),
                    target.classes,
                    target.activation,
                    features["attention_mask"][row : row + 1],
                )
                scores[int(i)] = float(score[0])
    return scores


def _batch(
    model: nn.Module, targets: Sequence[TextExplanationTarget], batch: list[_Variant], device: torch.device
) -> dict[str, torch.Tensor]:
    """The variants' kept tokens, padded to the longest: the pad token for ids, 0 for token types, and an
    attention mask that leaves the padding out."""
    lengths = torch.tensor([len(variant.kept) for variant in batch])
    longest = int(lengths.max())
    features: dict[str, torch.Tensor] = {}
    for name in targets[batch[0].explanation].features:
        fill = pad_token_id(model) if name == "input_ids" else 0
        padded = torch.full((len(batch), longest), fill, dtype=torch.long)
        for row, variant in enumerate(batch):
            kept = torch.as_tensor(variant.kept)
            padded[row, : len(kept)] = targets[variant.explanation].features[name][0, kept]
        features[name] = padded
    features["attention_mask"] = (torch.arange(longest).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return {name: tensor.to(device) for name, tensor in features.items()}


def _figures(name: str, drops: dict[tuple[str, str], list[float]], skipped: int) -> DeletionFigures:
    def mean(kind: str) -> float | None:
        values = drops.get((name, kind), [])
        return float(np.mean(values)) if values else None

    return DeletionFigures(
        k=name,
        rows=len(drops.get((name, "drop_top"), [])),
        skipped=skipped,
        comprehensiveness_top=mean("drop_top"),
        comprehensiveness_random=mean("drop_random"),
        sufficiency_top=mean("keep_top"),
        sufficiency_random=mean("keep_random"),
    )
