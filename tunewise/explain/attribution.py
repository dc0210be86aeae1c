"""The Captum methods that attribute one text target's score to its tokens.

Every method explains the same number, the target's score as `TextExplanationTarget` defines it
(`tasks.token_places.explained_score`), and answers one signed score per token: the attribution summed
over the embedding dimension. The reference input of the path and ablation methods is the same
sequence with every word token replaced by the pad token and the special tokens ([CLS], [SEP]) kept,
so the model still sees a well-formed input of the same length, only without the words.

- integrated_gradients: IG on the input embeddings (`inputs_embeds`) from that reference.
- layer_integrated_gradients: IG on the output of the embedding layer, from the reference's ids; the
  same path as the first for BERT-style models, computed through the layer hook instead.
- gradient_x_input: the gradient at the input times the input embedding (one backward pass).
- occlusion: each word ablated at once (its tokens to the pad embedding, Captum's FeatureAblation with
  one feature per word), the drop in the score spread evenly over the word's tokens.

The model runs in eval mode with gradients enabled (even under a caller's inference mode), and only
`torch.autograd.grad` is used, so no parameter's `.grad` is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients, LayerIntegratedGradients
from torch import nn

from tunewise.explain.settings import ExplainSettings
from tunewise.inference import model_device
from tunewise.tasks.token_places import explained_score
from tunewise.types import TextExplanationTarget

# integrated gradients' completeness gap is reported relative to the change in the score along the
# path; a change below this (a word-less input scoring like the text) is measured against it instead,
# so a flat path reads as a small gap rather than a division by almost nothing
DELTA_FLOOR = 0.01


@dataclass(frozen=True)
class TokenAttribution:
    scores: np.ndarray  # [tokens], signed; 0 for special tokens
    convergence_delta: float | None  # relative completeness gap (integrated gradients only)


def attribute_tokens(
    model: nn.Module, target: TextExplanationTarget, words: np.ndarray, method: str, settings: ExplainSettings
) -> TokenAttribution:
    """One attribution per token of `target` by `method` (one of `results.METHODS`); `words` is the word
    of each token (-1 for special tokens), which occlusion ablates together."""
    with _explaining(model):
        scorer = _Scorer(model, target)
        if method == "integrated_gradients":
            return _integrated_gradients(scorer, settings)
        if method == "layer_integrated_gradients":
            return _layer_integrated_gradients(scorer, settings)
        if method == "gradient_x_input":
            inputs = scorer.embed(scorer.ids).requires_grad_()
            attributions = InputXGradient(scorer.from_embeddings).attribute(
                inputs, additional_forward_args=scorer.extra
            )
            return TokenAttribution(_per_token(attributions), None)
        if method == "occlusion":
            return _occlusion(scorer, words, settings)
    raise ValueError(f"unknown text attribution method {method!r}")  # explain.text checks the name first


class _Scorer:
    """The target's score as a function of the input ids or of the input embeddings, batched: what the
    Captum methods differentiate or ablate. The attention mask and token types are extra arguments that
    Captum repeats along its batch of path points or ablations."""

    def __init__(self, model: nn.Module, target: TextExplanationTarget):
        device = model_device(model)
        features = {name: tensor.clone().to(device) for name, tensor in target.features.items()}
        self.model, self.target = model, target
        self.ids = features["input_ids"]
        self.extra_names = tuple(name for name in ("attention_mask", "token_type_ids") if name in features)
        self.extra = tuple(features[name] for name in self.extra_names)
        special = torch.tensor([source is None for source in target.sequence_ids], device=device).unsqueeze(0)
        self.baseline_ids = torch.where(special, self.ids, torch.full_like(self.ids, pad_token_id(model)))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return input_embeddings(self.model)(ids).detach()

    def from_embeddings(self, embeddings: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self._score({"inputs_embeds": embeddings}, extra)

    def from_ids(self, ids: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self._score({"input_ids": ids}, extra)

    def _score(self, inputs: dict[str, torch.Tensor], extra: tuple[torch.Tensor, ...]) -> torch.Tensor:
        named = dict(zip(self.extra_names, extra, strict=True))
        outputs = getattr(self.model(**inputs, **named), self.target.output)
        return explained_score(
            outputs, self.target.positions, self.target.classes, self.target.activation, named.get("attention_mask")
        )

    def change(self, score: Callable[..., torch.Tensor], inputs: torch.Tensor, baseline: torch.Tensor) -> float:
        """score(inputs) - score(baseline), in one forward pass of both."""
        with torch.no_grad():
            both = score(torch.cat([inputs, baseline]), *(tensor.expand(2, -1) for tensor in self.extra))
        return float(both[0] - both[1])


def _integrated_gradients(scorer: _Scorer, settings: ExplainSettings) -> TokenAttribution:
    inputs, baseline = scorer.embed(scorer.ids), scorer.embed(scorer.baseline_ids)
    attributions, delta = IntegratedGradients(scorer.from_embeddings).attribute(
        inputs,
        baselines=baseline,
        additional_forward_args=scorer.extra,
        n_steps=settings.steps,
        internal_batch_size=settings.internal_batch_size,
        return_convergence_delta=True,
    )
    change = scorer.change(scorer.from_embeddings, inputs, baseline)
    return TokenAttribution(_per_token(attributions), _relative(delta, change))


def _layer_integrated_gradients(scorer: _Scorer, settings: ExplainSettings) -> TokenAttribution:
    method = LayerIntegratedGradients(scorer.from_ids, input_embeddings(scorer.model))
    attributions, delta = method.attribute(
        scorer.ids,
        baselines=scorer.baseline_ids,
        additional_forward_args=scorer.extra,
        n_steps=settings.steps,
        internal_batch_size=settings.internal_batch_size,
        return_convergence_delta=True,
    )
    change = scorer.change(scorer.from_ids, scorer.ids, scorer.baseline_ids)
    return TokenAttribution(_per_token(attributions), _relative(delta, change))


def _occlusion(scorer: _Scorer, words: np.ndarray, settings: ExplainSettings) -> TokenAttribution:
    """FeatureAblation over words; special tokens form one more feature whose reference is themselves,
    so ablating it changes nothing. The model scores `internal_batch_size` ablations per pass."""
    count = int(words.max()) + 1
    mask = torch.as_tensor(np.where(words < 0, count, words), device=scorer.ids.device).view(1, -1, 1)
    with torch.no_grad():
        attributions = FeatureAblation(scorer.from_embeddings).attribute(
            scorer.embed(scorer.ids),
            baselines=scorer.embed(scorer.baseline_ids),
            additional_forward_args=scorer.extra,
            feature_mask=mask,
            perturbations_per_eval=max(1, min(settings.internal_batch_size, count + 1)),
        )
    drops = attributions[0, :, 0].double().cpu().numpy()  # each token carries its whole word's drop
    sizes = np.bincount(np.maximum(words, 0), minlength=max(count, 1))[np.maximum(words, 0)]
    return TokenAttribution(np.where(words < 0, 0.0, drops / sizes), None)


def pad_token_id(model: nn.Module) -> int:
    """The token a word becomes in the reference input: the embedding's padding index (BERT sets it from
    its config), else the config's pad token, else 0."""
    padding_idx = getattr(input_embeddings(model), "padding_idx", None)
    if padding_idx is not None:
        return int(padding_idx)
    config: Any = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def input_embeddings(model: nn.Module) -> nn.Module:
    """The model's token embedding layer (transformers' `get_input_embeddings`; a model wrapping a
    transformers encoder, such as tunewise's pooled head, answers it for its encoder)."""
    layer = model.get_input_embeddings()  # type: ignore[operator]
    assert isinstance(layer, nn.Module)
    return layer


@contextmanager
def in_eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) inside, the caller's mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode and gradients on, whatever the caller runs under (inference mode included)."""
    with in_eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        yield


def _per_token(attributions: torch.Tensor) -> np.ndarray:
    """[1, tokens, hidden] -> [tokens]: a token's attribution is the sum over its embedding."""
    return attributions[0].sum(-1).detach().double().cpu().numpy()


def _relative(delta: torch.Tensor, change: float) -> float:
    return float(delta.abs().sum()) / max(abs(change), DELTA_FLOOR)
