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

The recognizers themselves are built in `tunewise.audit.pii_recognizers`, imported with the first scanner.

Names and places (optional, `audit.pii_ner_model`): with an installed spaCy model, a presidio `AnalyzerEngine`
over a `SpacyNlpEngine` adds PERSON and LOCATION spans, run in batches (`BatchAnalyzerEngine`, spaCy's
`nlp.pipe`). The model must already be installed: presidio would otherwise try to download it, so a missing
model is a `ConfigError` that says how to install it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pandas as pd

if TYPE_CHECKING:
    from tunewise.audit.pii_recognizers import Entry, NerFinder

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
    "detect them: audit.pii_ner_model: en_core_web_sm after `python -m spacy download en_core_web_sm`."
)


def ner_note(model: str) -> str:
    """What the audit says about names and places when an NER model ran."""
    return (
        f"Person names and places (PERSON, LOCATION: cities, countries, facilities) were looked for with the "
        f"spaCy model {model!r} through presidio; NER misses some names and flags some non-names, and full "
        "street addresses are not an entity type of their own, so review before relying on it."
    )


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
    """Find PII in free text with presidio's offline pattern recognizers plus optional custom regexes and,
    with `ner_model` (an installed spaCy model name or pipeline folder), person names and places."""

    def __init__(
        self, custom_patterns: dict[str, str] | None = None, min_score: float = 0.5, ner_model: str | None = None
    ) -> None:
        from tunewise.audit import pii_recognizers as recognizers  # presidio loads with the first scanner

        self.min_score = min_score
        self._entries: list[Entry] = recognizers.builtin_entries() + recognizers.custom_entries(custom_patterns or {})
        self.ner_model = ner_model
        self._ner: NerFinder | None = recognizers.ner_finder(ner_model) if ner_model else None

    @property
    def note(self) -> str:
        """What this scan cannot see (no NER model) or how it looked for names (with one)."""
        return ner_note(self.ner_model) if self.ner_model else NER_NOTE

    def scan_text(self, text: str) -> list[Span]:
        """(entity, start, end, score) for every finding at or above `min_score`, overlaps resolved."""
        return self.scan_texts([text])[0]

    def scan_texts(self, texts: Sequence[str]) -> list[list[Span]]:
        """`scan_text` of each text; the NER model, when there is one, runs over them in batches."""
        spans = [self._pattern_spans(text) for text in texts]
        if self._ner is not None:
            for found, ner_spans in zip(spans, self._ner.spans(texts), strict=True):
                found.extend(ner_spans)
        return [resolve_overlaps(span for span in found if span[3] >= self.min_score) for found in spans]

    def _pattern_spans(self, text: str) -> list[Span]:
        if not text:
            return []
        digits = sum(map(str.isdigit, text))
        spans: list[Span] = []
        for entry in self._entries:
            if entry.could_match(text, digits):
                spans.extend(entry.spans(text))
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
            cells = [
                (row, value) for row, value in zip(rows, frame[column].tolist(), strict=True) if isinstance(value, str)
            ]
            found = self.scan_texts([value for _, value in cells])
            for (row, _), spans in zip(cells, found, strict=True):
                for entity, start, end, score in spans:
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
