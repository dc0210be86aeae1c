"""presidio's recognizers, as the PII scan runs them: built with the first `PiiScanner`, never at import.

Why a module of their own: importing presidio imports spaCy, thinc and blis, whose wheels are 53 MB. A
machine that never scans text (a GPU machine sent a benchmark with the data check off, a server without a
content screen) needs none of them, and a command that never scans skips their import (`import
tunewise.api` 9.0 -> 8.3 s on 2 CPU cores; most of presidio's import time was transformers modules that
tunewise imports anyway). `tunewise.audit.pii` keeps what needs no recognizer (spans, overlaps, redaction)
and imports this module in `PiiScanner`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tldextract
from presidio_analyzer import BatchAnalyzerEngine, Pattern, PatternRecognizer
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

Finding = tuple[str, int, int, float]  # tunewise.audit.pii's Span: (entity, start, end, score)

# What the spaCy model finds, in presidio's names (its mapping: PER/PERSON -> PERSON; LOC, GPE, FAC -> LOCATION).
NER_ENTITY_TYPES: tuple[str, ...] = ("PERSON", "LOCATION")
NER_LANGUAGE = "en"  # presidio's key for the one loaded model; the model's own language is whatever it was trained on
NER_BATCH_SIZE = 256

# Phone numbers are found by `phonenumbers`, which only reports numbers valid for a region (leniency 1), yet
# presidio scores them 0.4 because without an NLP engine it cannot add its +0.35 "context word" boost; at the
# default threshold of 0.5 every phone would be dropped (measured: recall 0). A validated number is lifted just
# over the threshold but kept below every other validated type, because `phonenumbers` also accepts dotted IPv4
# addresses and SSN-shaped digits as numbers of some region, and there the more specific reading must win.
VALIDATED_PHONE_SCORE = 0.55
# presidio's only SSN pattern that scores 0.5 is the 3-2-4 shape with one delimiter, past its SSA checks (the
# bare-digit patterns score 0.05); it is more specific than a phone number, so it outranks one in an overlap.
SSN_SHAPE_SCORE = 0.8

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
class Entry:
    """A recognizer, the entity it reports, and a cheap test that the text could contain a match at all.

    Why the prefilter: presidio's URL regex alone lists hundreds of TLD alternatives and `phonenumbers`
    scans eight regions; most dataset rows have no '@' or digits, so skipping them keeps a 67k-row audit fast.
    It is called with the text and its number of digits (`str.isdigit`), counted once per text.
    """

    entity: str
    recognizer: EntityRecognizer
    could_match: Callable[[str, int], bool]

    def spans(self, text: str) -> list[Finding]:
        """The recognizer's findings in `text`, with the scores lifted as the constants above say."""
        # pattern recognizers need no NLP artifacts (the spaCy engine is only for the NER entries)
        results = self.recognizer.analyze(text, [self.entity], nlp_artifacts=None)  # type: ignore[arg-type]
        spans = []
        for result in results:
            score = float(result.score)
            if self.entity == "PHONE_NUMBER":
                score = max(score, VALIDATED_PHONE_SCORE)
            elif self.entity == "US_SSN" and score >= UsSsnRecognizer.PATTERNS[-1].score:
                score = max(score, SSN_SHAPE_SCORE)
            spans.append((self.entity, int(result.start), int(result.end), score))
        return spans


def builtin_entries() -> list[Entry]:
    return [
        Entry("EMAIL_ADDRESS", OfflineEmailRecognizer(), lambda text, digits: "@" in text),
        Entry("PHONE_NUMBER", PhoneRecognizer(), _digits_at_least(7)),
        Entry("CREDIT_CARD", CreditCardRecognizer(), _digits_at_least(12)),
        Entry("IBAN_CODE", IbanRecognizer(), _digits_at_least(2)),
        Entry("IP_ADDRESS", IpRecognizer(), lambda text, digits: ":" in text or ("." in text and digits > 0)),
        Entry("US_SSN", UsSsnRecognizer(), _digits_at_least(9)),
        Entry("URL", UrlRecognizer(), lambda text, digits: _URL_HINT.search(text) is not None),
    ]


def custom_entries(custom_patterns: dict[str, str]) -> list[Entry]:
    """Each custom regex becomes a presidio `PatternRecognizer` that reports its own name as the entity.

    Custom patterns are the user's own rule, so a match counts with full confidence (score 1.0).
    """
    entries = []
    for name, regex in custom_patterns.items():
        recognizer = PatternRecognizer(supported_entity=name, patterns=[Pattern(name, regex, 1.0)], name=name)
        entries.append(Entry(name, recognizer, lambda text, digits: True))
    return entries


def ner_finder(model: str) -> NerFinder:
    """presidio's analyzer with a spaCy NLP engine and only its spaCy recognizer (PERSON, LOCATION).

    Raises `ConfigError` when the model is neither an installed spaCy package nor a pipeline folder,
    before presidio can try to download it.
    """
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
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
    return NerFinder(BatchAnalyzerEngine(engine))


@dataclass(frozen=True)
class NerFinder:
    """Person names and places found by presidio's batch analyzer over a spaCy pipeline (spaCy's `nlp.pipe`)."""

    engine: BatchAnalyzerEngine

    def spans(self, texts: Sequence[str]) -> list[list[Finding]]:
        """The findings in each text; empty and blank texts are not sent to the model."""
        present = [i for i, text in enumerate(texts) if text and not text.isspace()]
        results = self.engine.analyze_iterator(
            [texts[i] for i in present],
            language=NER_LANGUAGE,
            batch_size=NER_BATCH_SIZE,
            entities=list(NER_ENTITY_TYPES),
        )
        spans: list[list[Finding]] = [[] for _ in texts]
        for i, found in zip(present, results, strict=True):
            spans[i] = [(r.entity_type, int(r.start), int(r.end), float(r.score)) for r in found]
        return spans
