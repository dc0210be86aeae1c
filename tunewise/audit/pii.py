"""Offline PII scan of text columns, built on presidio's pattern-based recognizers.

Why presidio's recognizers and not an `AnalyzerEngine`: the engine runs an NLP engine on every text, and the
ones presidio ships load a spaCy (or stanza/transformers) model, which an offline audit cannot download. The
pattern recognizers run on their own (`analyze(text, entities, nlp_artifacts=None)`), so this module keeps
their regexes and validators (Luhn for cards, mod-97 for IBANs, `phonenumbers` for phones, `ipaddress` for
IPs, the SSA rules for SSNs) while skipping everything that needs a model.

Why nothing reaches the network: presidio's `EmailRecognizer.validate_result` calls the module-level
`tldextract.extract`, whose default extractor downloads the public suffix list on first use. The email
recognizer here is a subclass whose validator uses a `TLDExtract` built with no suffix-list URLs and no
cache directory, so it reads the snapshot bundled with tldextract and writes nothing to disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import tldextract
from presidio_analyzer import Pattern, PatternRecognizer
from presidio_analyzer.entity_recognizer import EntityRecognizer
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)

ENTITY_TYPES: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "URL",
)

NER_NOTE: str = (
    "Person names and street addresses need a named-entity-recognition (NER) model, which this offline "
    "regex scan does not run, so they are not detected; configure one (presidio with a spaCy model) to "
    "detect them."
)

# Phone numbers are found by `phonenumbers`, which only reports numbers valid for a region (leniency 1), yet
# presidio scores them 0.4 because without an NLP engine it cannot add its +0.35 "context word" boost; at the
# default threshold of 0.5 every phone would be dropped (measured: recall 0). A validated number is lifted just
# over the threshold but kept below every other validated type, because `phonenumbers` also accepts dotted IPv4
# addresses and SSN-shaped digits as numbers of some region, and there the more specific reading must win.
VALIDATED_PHONE_SCORE = 0.55
# presidio's only SSN pattern that scores 0.5 is the 3-2-4 shape with one delimiter, past its SSA checks (the
# bare-digit patterns score 0.05); it is more specific than a phone number, so it outranks one in an overlap.
SSN_SHAPE_SCORE = 0.8

Span = tuple[str, int, int, float]
RedactMode = Literal["replace", "mask", "hash"]


@dataclass(frozen=True)
class PiiMatch:
    """One PII finding, located by the user-visible row number and the column it was found in."""

    row: int
    column: str
    entity: str
    start: int
    end: int
    score: float


# One offline extractor for the whole process: snapshot only, no download, no cache on disk.
_OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class OfflineEmailRecognizer(EmailRecognizer):
    """presidio's email recognizer, validating the domain against tldextract's bundled suffix snapshot."""

    def validate_result(self, pattern_text: str) -> bool:
        """True when the domain ends in a known public suffix (read from the snapshot, never downloaded)."""
        return _OFFLINE_TLD_EXTRACT(pattern_text).fqdn != ""


def _has_digit(text: str) -> bool:
    return any(char.isdigit() for char in text)


def _digits_at_least(count: int) -> Callable[[str], bool]:
    """Prefilter: a text with fewer digits than the shortest match of a recognizer cannot hold one."""

    def check(text: str) -> bool:
        return sum(char.isdigit() for char in text) >= count

    return check


@dataclass(frozen=True)
class _Entry:
    """A recognizer, the entity it reports, and a cheap test that the text could contain a match at all.

    Why the prefilter: presidio's URL regex alone lists hundreds of TLD alternatives and `phonenumbers`
    scans eight regions; most dataset rows have no '@' or digits, so skipping them keeps a 67k-row audit fast.
    """

    entity: str
    recognizer: EntityRecognizer
    could_match: Callable[[str], bool]


def _builtin_entries() -> list[_Entry]:
    return [
        _Entry("EMAIL_ADDRESS", OfflineEmailRecognizer(), lambda text: "@" in text),
        _Entry("PHONE_NUMBER", PhoneRecognizer(), _digits_at_least(7)),
        _Entry("CREDIT_CARD", CreditCardRecognizer(), _digits_at_least(12)),
        _Entry("IBAN_CODE", IbanRecognizer(), _digits_at_least(2)),
        _Entry("IP_ADDRESS", IpRecognizer(), lambda text: ":" in text or ("." in text and _has_digit(text))),
        _Entry("US_SSN", UsSsnRecognizer(), _digits_at_least(9)),
        _Entry("URL", UrlRecognizer(), lambda text: "." in text),
    ]


def _custom_entries(custom_patterns: dict[str, str]) -> list[_Entry]:
    """Each custom regex becomes a presidio `PatternRecognizer` that reports its own name as the entity.

    Custom patterns are the user's own rule, so a match counts with full confidence (score 1.0).
    """
    entries = []
    for name, regex in custom_patterns.items():
        recognizer = PatternRecognizer(supported_entity=name, patterns=[Pattern(name, regex, 1.0)], name=name)
        entries.append(_Entry(name, recognizer, lambda text: True))
    return entries


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep one finding per stretch of text: the higher score wins, then the longer span.

    Why: several recognizers fire on the same characters (an email's domain is also a URL, an IP can parse
    as a phone number); reporting all of them would double-count PII and break redaction.
    """
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (-s[3], -(s[2] - s[1]), s[1])):
        if all(span[2] <= other[1] or span[1] >= other[2] for other in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: (s[1], s[2]))


class PiiScanner:
    """Find PII in free text with presidio's offline pattern recognizers plus optional custom regexes."""

    def __init__(self, custom_patterns: dict[str, str] | None = None, min_score: float = 0.5) -> None:
        self.min_score = min_score
        self._entries = _builtin_entries() + _custom_entries(custom_patterns or {})

    def scan_text(self, text: str) -> list[Span]:
        """(entity, start, end, score) for every finding at or above `min_score`, overlaps resolved."""
        if not text:
            return []
        spans: list[Span] = []
        for entry in self._entries:
            if entry.could_match(text):
                spans.extend(self._run(entry, text))
        return resolve_overlaps(span for span in spans if span[3] >= self.min_score)

    @staticmethod
    def _run(entry: _Entry, text: str) -> list[Span]:
        results = entry.recognizer.analyze(text, [entry.entity], nlp_artifacts=None)
        spans = []
        for result in results:
            score = float(result.score)
            if entry.entity == "PHONE_NUMBER":
                score = max(score, VALIDATED_PHONE_SCORE)
            elif entry.entity == "US_SSN" and score >= UsSsnRecognizer.PATTERNS[-1].score:
                score = max(score, SSN_SHAPE_SCORE)
            spans.append((entry.entity, int(result.start), int(result.end), score))
        return spans

    def scan(self, frame: pd.DataFrame, text_columns: Sequence[str]) -> list[PiiMatch]:
        """Findings for every cell of `text_columns`, located by the frame's `_row` column.

        Without a `_row` column (a frame not read by tunewise's readers) the index labels stand in.
        """
        missing = [column for column in text_columns if column not in frame.columns]
        if missing:
            raise KeyError(f"text columns not in the data: {missing}")
        rows = frame["_row"].tolist() if "_row" in frame.columns else frame.index.tolist()
        matches: list[PiiMatch] = []
        for column in text_columns:
            for row, value in zip(rows, frame[column].tolist(), strict=True):
                if not isinstance(value, str):
                    continue
                for entity, start, end, score in self.scan_text(value):
                    matches.append(PiiMatch(int(row), column, entity, start, end, score))
        return matches


def _as_span(span: Span | PiiMatch) -> Span:
    if isinstance(span, PiiMatch):
        return (span.entity, span.start, span.end, span.score)
    return span


def _pseudonym(entity: str, value: str, salt: str) -> str:
    """A stable tag: the same value and salt always give the same tag, so joins and counts survive redaction."""
    digest = hashlib.sha256((salt + value).encode("utf-8")).hexdigest()[:12]
    return f"<{entity}:{digest}>"


def _replacement(entity: str, value: str, mode: RedactMode, salt: str) -> str:
    if mode == "replace":
        return f"<{entity}>"
    if mode == "mask":
        return "*" * len(value)
    if mode == "hash":
        return _pseudonym(entity, value, salt)
    raise ValueError(f"unknown redaction mode {mode!r}; use 'replace', 'mask' or 'hash'")


def redact_text(
    text: str,
    spans: Sequence[Span] | Sequence[PiiMatch],
    mode: RedactMode,
    salt: str,
) -> str:
    """Replace each span of `text` by its entity tag, a same-length mask, or a salted hash pseudonym.

    Spans may overlap (callers can pass raw findings); overlaps are resolved first so the text is rewritten
    once per stretch. Replacement runs right to left so earlier offsets stay valid.
    """
    if mode not in ("replace", "mask", "hash"):
        raise ValueError(f"unknown redaction mode {mode!r}; use 'replace', 'mask' or 'hash'")
    resolved = resolve_overlaps(_as_span(span) for span in spans)
    for entity, start, end, _score in reversed(resolved):
        text = text[:start] + _replacement(entity, text[start:end], mode, salt) + text[end:]
    return text
