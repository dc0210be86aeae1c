"""The content screen every generated text passes: personal data, blocklists, patterns, abusive language.

Personal data is found with the data check's presidio recognizers (`tunewise.audit.pii.PiiScanner`, with
the run's `audit.pii_patterns`), so a model is held to the same standard as its training data. Abusive
language is judged by a local text classifier (the guard `tunewise guard build` trains, or a run of the
user's own), never a remote service: generations never leave the machine.

What a flagged text becomes is `screen.action`: flag (kept, with the reasons), redact (each span replaced
by <TAG>; a text the classifier flags cannot be redacted in parts, so it is blocked), or block (the fixed
refusal `BLOCKED_TEXT`). Decisions are logged on the `tunewise.screen` logger; with redact or block the
log names reasons only, never the text or the blocklisted term it matched.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from tunewise.audit.pii import PiiScanner, Span, redact_text
from tunewise.config.safety import BLOCKED_TEXT, GUARD_AUTO, ScreenConfig
from tunewise.prepare.rules import raise_all
from tunewise.prepare.screen import BUILD_HINT, flag_labels, guard_folder, guard_record, screen_problems

logger = logging.getLogger("tunewise.screen")
BLOCKLIST_TAG = "BLOCKLIST"
CLASSIFIER_BATCH = 64


@dataclass(frozen=True)
class Verdict:
    """The screen's decision on one text."""

    text: str  # the text after the action (unchanged when action is flag or nothing was found)
    flagged: bool
    reasons: list[str]  # "pii:EMAIL_ADDRESS", "blocklist[:term]", "pattern:NAME", "abusive:offensive 0.93"
    action: str  # "none" | "flagged" | "redacted" | "blocked"
    abusive_score: float | None  # summed probability of the flag labels; None without a classifier


class TextClassifier(Protocol):
    """What the screen asks of its classifier: a loaded run's `predict` (tunewise.serving.predictor)."""

    def predict(self, inputs: Any) -> list[dict[str, Any]]: ...


# Loads a run folder: `tunewise.serving.predictor.load`. Passed in, not imported, because the predictor's
# models build their screen with this module: importing it back would make the two modules a cycle.
ClassifierLoader = Callable[[Path], TextClassifier]


@dataclass(frozen=True)
class Classifier:
    """A text-classification run the screen asks, with the labels that mean abusive."""

    model: TextClassifier
    path: Path
    flag_labels: list[str]
    threshold: float
    record: dict[str, Any] | None  # guard.json, for a guard built by `tunewise guard build`

    def scores(self, texts: list[str]) -> list[tuple[float, str]]:
        """For each text, the summed probability of the flag labels and the likeliest of them."""
        scored: list[tuple[float, str]] = []
        for start in range(0, len(texts), CLASSIFIER_BATCH):
            for prediction in self.model.predict(texts[start : start + CLASSIFIER_BATCH]):
                probabilities = prediction["probabilities"]
                top = max(self.flag_labels, key=lambda label: probabilities[label])
                scored.append((sum(probabilities[label] for label in self.flag_labels), top))
        return scored


class Screen:
    """Personal data, blocklist, patterns and an abusive-language classifier over generated texts."""

    def __init__(
        self,
        action: str,
        scanner: PiiScanner | None,
        blocklist: list[str],
        patterns: dict[str, str],
        classifier: Classifier | None,
        note: str | None = None,
    ):
        self.action = action
        self.scanner = scanner
        self.blocklist = blocklist
        # whole words, case-insensitively; lookarounds, not \b, so a term that starts or ends in a symbol matches too
        self._blocklist = (
            re.compile("|".join(rf"(?<!\w){re.escape(term)}(?!\w)" for term in blocklist), re.IGNORECASE)
            if blocklist
            else None
        )
        self._terms = {term.lower(): term for term in blocklist}
        self.patterns = {name: re.compile(pattern) for name, pattern in patterns.items()}
        self.classifier = classifier
        self.note = note

    @classmethod
    def from_config(cls, config: Any, load_classifier: ClassifierLoader) -> Screen:
        """The screen a generative run's config describes (`config.screen`, with `config.audit.pii_patterns`);
        a classifier that cannot serve is a ConfigError before any text is generated. `load_classifier`:
        `tunewise.serving.predictor.load` (a FineTunedModel's `screen()` passes it)."""
        settings: ScreenConfig = config.screen
        raise_all(screen_problems(settings))
        folder = guard_folder(settings)
        classifier, note = None, None
        if folder is not None:
            model = load_classifier(folder)
            classifier = Classifier(
                model, folder, flag_labels(settings, folder), settings.threshold, guard_record(folder)
            )
        elif settings.classifier == GUARD_AUTO:
            note = (
                "no abusive-language classifier: the guard is not built yet (tunewise does not ship its weights, "
                f"~90 MB, nor Davidson et al.'s data). Build it once with `{BUILD_HINT}`, or set screen.classifier "
                "to a text-classification run folder."
            )
        else:
            note = "no abusive-language classifier (screen.classifier: null)."
        scanner = PiiScanner(config.audit.pii_patterns) if settings.pii else None
        return cls(settings.action, scanner, settings.blocklist, settings.patterns, classifier, note)

    def screen(self, texts: list[str]) -> list[Verdict]:
        """One verdict per text; the classifier sees the texts in batches."""
        spans = self.scanner.scan_texts(texts) if self.scanner is not None else [[] for _ in texts]
        present = [i for i, text in enumerate(texts) if text.strip()]
        scores: dict[int, tuple[float, str]] = {}
        if self.classifier is not None and present:
            scores = dict(zip(present, self.classifier.scores([texts[i] for i in present]), strict=True))
        verdicts = []
        for i, text in enumerate(texts):
            found = [*spans[i], *self._rule_spans(text)]
            score = scores.get(i, (0.0, "")) if self.classifier is not None else None
            verdicts.append(self._decide(text, found, score))
        return verdicts

    def _rule_spans(self, text: str) -> list[Span]:
        """The blocklist's and the patterns' matches, as spans that redact to their tag."""
        found: list[Span] = []
        if self._blocklist is not None:
            found += [(BLOCKLIST_TAG, m.start(), m.end(), 1.0) for m in self._blocklist.finditer(text)]
        for name, pattern in self.patterns.items():
            found += [(name, m.start(), m.end(), 1.0) for m in pattern.finditer(text) if m.end() > m.start()]
        return found

    def _decide(self, text: str, spans: list[Span], score: tuple[float, str] | None) -> Verdict:
        reasons = list(dict.fromkeys(self._reason(text, span) for span in spans))
        abusive = score is not None and self.classifier is not None and score[0] >= self.classifier.threshold
        if abusive:
            assert score is not None
            reasons.append(f"abusive:{score[1]} {score[0]:.2f}")
        abusive_score = None if score is None else round(score[0], 4)
        if not reasons:
            return Verdict(text, False, [], "none", abusive_score)
        if self.action == "flag":
            verdict = Verdict(text, True, reasons, "flagged", abusive_score)
        elif self.action == "redact" and not abusive:
            verdict = Verdict(redact_text(text, spans, "replace", ""), True, reasons, "redacted", abusive_score)
        else:
            verdict = Verdict(BLOCKED_TEXT, True, reasons, "blocked", abusive_score)
        if self.action == "flag":
            logger.info("screen flagged (%s): %r", ", ".join(reasons), text)
        else:
            logger.info("screen %s (%s)", verdict.action, ", ".join(reasons))
        return verdict

    def _reason(self, text: str, span: Span) -> str:
        entity, start, end, _score = span
        if entity == BLOCKLIST_TAG:
            term = self._terms.get(text[start:end].lower(), text[start:end])
            return f"blocklist:{term}" if self.action == "flag" else "blocklist"
        return f"pattern:{entity}" if entity in self.patterns else f"pii:{entity}"

    def describe(self) -> dict[str, Any]:
        """What the screen is made of, for run records, the CLI and the server's health page."""
        classifier = None
        if self.classifier is not None:
            classifier = {
                "path": str(self.classifier.path),
                "flag_labels": self.classifier.flag_labels,
                "threshold": self.classifier.threshold,
            }
            held_out = (self.classifier.record or {}).get("held_out")
            if held_out:
                classifier["held_out"] = {
                    key: held_out[key] for key in ("rows", "abusive_precision", "abusive_recall", "abusive_f1")
                }
        described: dict[str, Any] = {
            "action": self.action,
            "pii": self.scanner is not None,
            "blocklist": len(self.blocklist),
            "patterns": sorted(self.patterns),
            "classifier": classifier,
        }
        if self.note:
            described["note"] = self.note
        return described


def screen_predictions(screen: Screen, predictions: pd.DataFrame) -> tuple[pd.DataFrame, list[Verdict]]:
    """Prediction columns with `generated_text` as the screen leaves it and the decision beside it
    (`screen_flagged`, `screen_reasons`), and the verdicts behind them, for counting."""
    verdicts = screen.screen([str(text) for text in predictions["generated_text"]])
    screened = predictions.copy()
    screened["generated_text"] = [verdict.text for verdict in verdicts]
    screened["screen_flagged"] = [verdict.flagged for verdict in verdicts]
    screened["screen_reasons"] = [verdict.reasons for verdict in verdicts]
    return screened, verdicts


def count_verdicts(verdicts: list[Verdict]) -> dict[str, Any]:
    """How many texts were screened, flagged, redacted and blocked, and flagged for which reasons: each
    reason's category (pii:EMAIL_ADDRESS, blocklist, pattern:NAME, abusive:offensive) once per text,
    never the matched term or the score."""
    by_reason: Counter[str] = Counter()
    for verdict in verdicts:
        by_reason.update({reason_category(reason) for reason in verdict.reasons})
    return {
        "screened": len(verdicts),
        "flagged": sum(verdict.flagged for verdict in verdicts),
        "redacted": sum(verdict.action == "redacted" for verdict in verdicts),
        "blocked": sum(verdict.action == "blocked" for verdict in verdicts),
        "by_reason": dict(sorted(by_reason.items())),
    }


def reason_category(reason: str) -> str:
    """A reason without its raw value: the blocklisted term and the classifier's score dropped."""
    if reason.startswith("blocklist"):
        return "blocklist"
    return reason.split(" ", 1)[0]
