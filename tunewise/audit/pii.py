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

Names and places (optional, `audit.pii_ner_model`): with an installed spaCy model, a presidio `AnalyzerEngine`
over a `SpacyNlpEngine` adds PERSON and LOCATION spans, run in batches (`BatchAnalyzerEngine`, spaCy's
`nlp.pipe`). The model must already be installed: presidio would otherwise try to download it, so a missing
model is a `ConfigError` that says how to install it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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

from tunewise.errors import ConfigError

if TYPE_CHECKING:
    from presidio_analyzer import BatchAnalyzerEngine

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
# What the spaCy model finds, in presidio's names (its mapping: PER/PERSON -> PERSON; LOC, GPE, FAC -> LOCATION).
NER_ENTITY_TYPES: tuple[str, ...] = ("PERSON", "LOCATION")
NER_LANGUAGE = "en"  # presidio's key for the one loaded model; the model's own language is whatever it was trained on
NER_BATCH_SIZE = 256


def ner_note(model: str) -> str:
    """What the audit says about names and places when an NER model ran."""
    return (
        f"Person names and places (PERSON, LOCATION: cities, countries, facilities) were looked for with the "
        f"spaCy model {model!r} through presidio; NER misses some names and flags some non-names, and full "
        "street addresses are not an entity type of their own, so review before relying on it."
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


# Every presidio URL pattern ends in `[a-z0-9.\-]{1,253}[.](?:tld)` (case-insensitive) with letter-only TLDs, so
# a text without a dot between such a character and a letter holds no URL; in SST-2, where "." is mostly a
# spaced full stop, this runs the URL regex (hundreds of TLD alternatives) on 0.2 % of rows instead of 20 %.
_URL_HINT = re.compile(r"[a-z0-9.\-]\.[a-z]", re.IGNORECASE)


def _digits_at_least(count: int) -> Callable[[str, int], bool]:
    """Prefilter: a text with fewer digits than the shortest match of a recognizer cannot hold one."""

    def check(text: str, digits: int) -> bool:
        return digits >= count

    return check


@dataclass(frozen=True)
class _Entry:
    """A recognizer, the entity it reports, and a cheap test that the text could contain a match at all.

    Why the prefilter: presidio's URL regex alone lists hundreds of TLD alternatives and `phonenumbers`
    scans eight regions; most dataset rows have no '@' or digits, so skipping them keeps a 67k-row audit fast.
    It is called with the text and its number of digits (`str.isdigit`), counted once per text.
    """

    entity: str
    recognizer: EntityRecognizer
    could_match: Callable[[str, int], bool]


def _builtin_entries() -> list[_Entry]:
    return [
        _Entry("EMAIL_ADDRESS", OfflineEmailRecognizer(), lambda text, digits: "@" in text),
        _Entry("PHONE_NUMBER", PhoneRecognizer(), _digits_at_least(7)),
        _Entry("CREDIT_CARD", CreditCardRecognizer(), _digits_at_least(12)),
        _Entry("IBAN_CODE", IbanRecognizer(), _digits_at_least(2)),
        _Entry("IP_ADDRESS", IpRecognizer(), lambda text, digits: ":" in text or ("." in text and digits > 0)),
        _Entry("US_SSN", UsSsnRecognizer(), _digits_at_least(9)),
        _Entry("URL", UrlRecognizer(), lambda text, digits: _URL_HINT.search(text) is not None),
    ]


def _custom_entries(custom_patterns: dict[str, str]) -> list[_Entry]:
    """Each custom regex becomes a presidio `PatternRecognizer` that reports its own name as the entity.

    Custom patterns are the user's own rule, so a match counts with full confidence (score 1.0).
    """
    entries = []
    for name, regex in custom_patterns.items():
        recognizer = PatternRecognizer(supported_entity=name, patterns=[Pattern(name, regex, 1.0)], name=name)
        entries.append(_Entry(name, recognizer, lambda text, digits: True))
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


def _ner_engine(model: str) -> BatchAnalyzerEngine:
    """presidio's analyzer with a spaCy NLP engine and only its spaCy recognizer (PERSON, LOCATION).

    Raises `ConfigError` when the model is neither an installed spaCy package nor a pipeline folder,
    before presidio can try to download it.
    """
    import spacy
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    if not (spacy.util.is_package(model) or Path(model).is_dir()):
        raise ConfigError(
            f"audit.pii_ner_model: the spaCy model {model!r} is not installed. Install it with "
            f"`python -m spacy download {model}` (or pip install its wheel, or give the path of a saved spaCy "
            "pipeline folder), or remove audit.pii_ner_model to scan with patterns only."
        )
    nlp_engine = SpacyNlpEngine(models=[{"lang_code": NER_LANGUAGE, "model_name": model}])
    try:
        nlp_engine.load()
    except (OSError, ValueError) as error:  # a folder that is not a spaCy pipeline, an incompatible model
        raise ConfigError(f"audit.pii_ner_model: the spaCy model {model!r} could not be loaded: {error}") from None
    registry = RecognizerRegistry(supported_languages=[NER_LANGUAGE])
    registry.add_recognizer(SpacyRecognizer(supported_language=NER_LANGUAGE, supported_entities=list(NER_ENTITY_TYPES)))
    engine = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[NER_LANGUAGE])
    return BatchAnalyzerEngine(engine)


class PiiScanner:
    """Find PII in free text with presidio's offline pattern recognizers plus optional custom regexes and,
    with `ner_model` (an installed spaCy model name or pipeline folder), person names and places."""

    def __init__(
        self, custom_patterns: dict[str, str] | None = None, min_score: float = 0.5, ner_model: str | None = None
    ) -> None:
        self.min_score = min_score
        self._entries = _builtin_entries() + _custom_entries(custom_patterns or {})
        self.ner_model = ner_model
        self._ner = _ner_engine(ner_model) if ner_model else None

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
            for found, ner_spans in zip(spans, self._ner_spans(texts), strict=True):
                found.extend(ner_spans)
        return [resolve_overlaps(span for span in found if span[3] >= self.min_score) for found in spans]

    def _pattern_spans(self, text: str) -> list[Span]:
        if not text:
            return []
        digits = sum(map(str.isdigit, text))
        spans: list[Span] = []
        for entry in self._entries:
            if entry.could_match(text, digits):
                spans.extend(self._run(entry, text))
        return spans

    def _ner_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        assert self._ner is not None
        present = [i for i, text in enumerate(texts) if text and not text.isspace()]
        results = self._ner.analyze_iterator(
            [texts[i] for i in present],
            language=NER_LANGUAGE,
            batch_size=NER_BATCH_SIZE,
            entities=list(NER_ENTITY_TYPES),
        )
        spans: list[list[Span]] = [[] for _ in texts]
        for i, found in zip(present, results, strict=True):
            spans[i] = [(r.entity_type, int(r.start), int(r.end), float(r.score)) for r in found]
        return spans

    @staticmethod
    def _run(entry: _Entry, text: str) -> list[Span]:
        # pattern recognizers need no NLP artifacts (the spaCy engine is only for the NER entries)
        results = entry.recognizer.analyze(text, [entry.entity], nlp_artifacts=None)  # type: ignore[arg-type]
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
