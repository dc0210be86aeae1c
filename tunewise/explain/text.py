"""A text target explained: its tokens attributed (`attribution`), the tokens merged into the user's
words (`words`), as the `WordAttribution` every surface shows."""

from __future__ import annotations

from torch import nn

from tunewise.errors import ConfigError
from tunewise.explain.attribution import attribute_tokens
from tunewise.explain.results import METHODS, WordAttribution
from tunewise.explain.settings import ExplainSettings
from tunewise.explain.words import merge, token_words, word_spans
from tunewise.types import TextExplanationTarget


def explain_text(model: nn.Module, target: TextExplanationTarget, settings: ExplainSettings) -> WordAttribution:
    """The words of `target`'s row(s) with how much each moved the target's score, by `settings`' method."""
    method = text_method(settings)
    spans = word_spans(target.offsets, target.sequence_ids, target.texts)
    tokens = attribute_tokens(model, target, token_words(spans, len(target.offsets)), method, settings)
    return WordAttribution(
        row=target.row,
        target=target.name,
        probability=target.probability,
        method=method,
        words=merge(spans, target.texts, tokens.scores),
        convergence_delta=tokens.convergence_delta,
    )


def text_method(settings: ExplainSettings) -> str:
    method = settings.text_method()
    if method not in METHODS:
        raise ConfigError(f"explanation method {method!r} does not apply to text; choose one of: {', '.join(METHODS)}.")
    return method
