"""The offline PII scan: recall on synthetic PII of every core type, silence on clean review text, redaction.

The synthetic values are generated (seeded) to be *valid* PII: Luhn-correct card numbers, mod-97-correct
IBANs, SSNs that obey the SSA's issuing rules. That way a miss is the scanner's fault, not the generator's.
"""

from __future__ import annotations

import ipaddress
import random
import string
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pandas as pd
import pytest
from conftest import SST2

from tunewise.audit import pii_recognizers
from tunewise.audit.pii import ENTITY_TYPES, NER_NOTE, PiiMatch, PiiScanner, redact_text

SST2_TRAIN = SST2 / "train.tsv"  # ../shared/data/sst2, beside the project
CORE_TYPES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "URL")
PER_TYPE = 40
TEMPLATES = (
    "Contact me at {value} tomorrow",
    "please use {value} for the refund",
    "my details are {value} , thanks",
    "{value} is what I gave them",
    "I wrote down {value} on the form yesterday",
)


# --- generators of valid synthetic PII ---------------------------------------------------------------------


def luhn_check_digit(body: str) -> str:
    """The digit that makes `body + digit` pass the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:  # these positions are doubled once the check digit is appended
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str((10 - total % 10) % 10)


def make_card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "52", "53", "54", "55"])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(15 - len(prefix)))
    number = body + luhn_check_digit(body)
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain":
        return number
    groups = [number[i : i + 4] for i in range(0, 16, 4)]
    return (" " if style == "space" else "-").join(groups)


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 check digits: move the country code and '00' to the end, letters to numbers, mod 97."""
    rearranged = bban + country + "00"
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return f"{98 - int(numeric) % 97:02d}"


def make_iban(rng: random.Random) -> str:
    digits = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    country = rng.choice(["DE", "GB", "FR"])
    if country == "DE":
        bban = digits(18)
    elif country == "GB":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + digits(14)
    else:
        bban = digits(23)
    iban = country + iban_check_digits(country, bban) + bban
    if rng.random() < 0.5:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def make_phone(rng: random.Random) -> str:
    area = rng.choice(["212", "415", "312", "617", "206", "303", "713", "404"])
    exchange = str(rng.randint(200, 999))
    line = f"{rng.randint(0, 9999):04d}"
    formats = [
        f"({area}) {exchange}-{line}",
        f"{area}-{exchange}-{line}",
        f"+1 {area}-{exchange}-{line}",
        f"+1 ({area}) {exchange} {line}",
        f"{area}.{exchange}.{line}",
        f"+44 20 7946 {rng.randint(0, 999):04d}",
        f"+44 7911 {rng.randint(0, 999_999):06d}",  # not Ofcom's 7700 900 drama range: phonenumbers calls it invalid
        f"+44 161 496 {rng.randint(0, 999):04d}",
    ]
    return rng.choice(formats)


def make_ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area == 666:
            continue
        ssn = f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        digits = ssn.replace("-", "")
        if len(set(digits)) > 1 and digits not in ("123456789", "078051120"):
            return ssn


def make_ip(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if rng.random() < 0.5:
        return ipaddress.IPv6Address(rng.getrandbits(128)).exploded
    return str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(32)))  # compressed, e.g. 2001:db8::1f


def _word(rng: random.Random, length: int = 7) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(length))


def make_email(rng: random.Random) -> str:
    local = rng.choice([_word(rng), f"{_word(rng, 5)}.{_word(rng, 6)}", f"{_word(rng, 4)}{rng.randint(1, 99)}"])
    return f"{local}@{_word(rng, 6)}.{rng.choice(['com', 'org', 'co.uk', 'de', 'net', 'io'])}"


def make_url(rng: random.Random) -> str:
    host = f"{_word(rng, 8)}.{rng.choice(['com', 'org', 'net', 'de'])}"
    return rng.choice(
        [
            f"https://www.{host}/{_word(rng, 5)}",
            f"http://{host}",
            f"www.{host}",
            f"https://{host}/a/{_word(rng, 4)}?id=7",
        ]
    )


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "EMAIL_ADDRESS": make_email,
    "PHONE_NUMBER": make_phone,
    "CREDIT_CARD": make_card,
    "IBAN_CODE": make_iban,
    "IP_ADDRESS": make_ip,
    "US_SSN": make_ssn,
    "URL": make_url,
}


def synthetic_pii(seed: int = 13) -> list[tuple[str, str, int, int]]:
    """(entity, sentence, value start, value end) for PER_TYPE values of every core type."""
    rng = random.Random(seed)
    cases = []
    for entity in CORE_TYPES:
        for _ in range(PER_TYPE):
            value = GENERATORS[entity](rng)
            template = rng.choice(TEMPLATES)
            sentence = template.format(value=value)
            start = template.index("{value}")
            cases.append((entity, sentence, start, start + len(value)))
    return cases


@pytest.fixture(scope="module")
def scanner() -> PiiScanner:
    return PiiScanner()


# --- recall and precision ------------------------------------------------------------------------------------


def per_type_recall(scanner: PiiScanner) -> dict[str, float]:
    """A value counts as found when a finding of the right type covers it."""
    found: Counter[str] = Counter()
    for entity, sentence, start, end in synthetic_pii():
        spans = scanner.scan_text(sentence)
        if any(kind == entity and s <= start and e >= end for kind, s, e, _ in spans):
            found[entity] += 1
    return {entity: found[entity] / PER_TYPE for entity in CORE_TYPES}


def test_recall_on_synthetic_pii_is_high_and_types_match(scanner: PiiScanner) -> None:
    recall = per_type_recall(scanner)
    overall = sum(recall.values()) / len(recall)
    print("per-type recall:", recall, "overall:", overall)
    assert len(synthetic_pii()) >= 200
    assert overall >= 0.95, recall
    assert min(recall.values()) >= 0.9, recall


def sst2_sentences(count: int) -> list[str]:
    if not SST2_TRAIN.exists():
        pytest.skip(f"SST-2 train split not found at {SST2_TRAIN} (needs ../shared/data)")
    frame = pd.read_csv(SST2_TRAIN, sep="\t", quoting=3, nrows=count)
    return frame["sentence"].astype(str).tolist()


def test_no_pii_reported_on_clean_sst2_sentences(scanner: PiiScanner) -> None:
    flagged = {sentence: scanner.scan_text(sentence) for sentence in sst2_sentences(500)}
    assert {s: spans for s, spans in flagged.items() if spans} == {}


def test_scanning_5000_sentences_is_fast(scanner: PiiScanner) -> None:
    sentences = sst2_sentences(5000)
    started = time.perf_counter()
    for sentence in sentences:
        scanner.scan_text(sentence)
    elapsed = time.perf_counter() - started
    print(f"scanned {len(sentences)} SST-2 sentences in {elapsed:.2f}s")
    assert elapsed < 10.0


# --- specific behaviour --------------------------------------------------------------------------------------


def test_luhn_invalid_card_is_not_reported(scanner: PiiScanner) -> None:
    body = "411111111111111"
    valid = body + luhn_check_digit(body)
    invalid = body + str((int(luhn_check_digit(body)) + 1) % 10)
    assert [s[0] for s in scanner.scan_text(f"card {valid} ok")] == ["CREDIT_CARD"]
    assert all(kind != "CREDIT_CARD" for kind, *_ in scanner.scan_text(f"card {invalid} ok"))


def test_custom_pattern_is_found() -> None:
    custom = PiiScanner(custom_patterns={"EMPLOYEE_ID": r"\bEMP-\d{6}\b"})
    text = "ticket raised by EMP-004211 on monday"
    assert custom.scan_text(text) == [("EMPLOYEE_ID", 17, 27, 1.0)]
    assert PiiScanner().scan_text(text) == []


def test_email_domain_is_not_also_reported_as_url(scanner: PiiScanner) -> None:
    text = "write to jane.roe@example.com today"
    spans = scanner.scan_text(text)
    assert [(kind, text[s:e]) for kind, s, e, _ in spans] == [("EMAIL_ADDRESS", "jane.roe@example.com")]


def test_specific_types_win_over_phone_numbers(scanner: PiiScanner) -> None:
    """`phonenumbers` also parses SSN-shaped digits and dotted IPv4 addresses; those must keep their real type."""
    assert [s[0] for s in scanner.scan_text("my ssn is 078-05-1121 ok")] == ["US_SSN"]
    assert [s[0] for s in scanner.scan_text("server at 178.244.51.29 is down")] == ["IP_ADDRESS"]


def test_redact_text_modes(scanner: PiiScanner) -> None:
    text = "mail bob@example.com or bob@example.com"
    spans = scanner.scan_text(text)
    assert redact_text(text, spans, "replace", salt="s") == "mail <EMAIL_ADDRESS> or <EMAIL_ADDRESS>"
    assert redact_text(text, spans, "mask", salt="s") == "mail " + "*" * 15 + " or " + "*" * 15
    hashed = redact_text(text, spans, "hash", salt="s")
    first, second = hashed.removeprefix("mail ").split(" or ")
    assert first == second and first.startswith("<EMAIL_ADDRESS:") and len(first) == len("<EMAIL_ADDRESS:>") + 12
    assert redact_text(text, spans, "hash", salt="s") == hashed
    assert redact_text(text, spans, "hash", salt="other") != hashed
    with pytest.raises(ValueError):
        redact_text(text, spans, "blur", salt="s")  # type: ignore[arg-type]


def test_scan_frame_reports_user_rows_and_columns(scanner: PiiScanner) -> None:
    frame = pd.DataFrame(
        {
            "_row": [2, 3, 4],
            "text": ["fine movie", "mail amy@example.org now", None],
            "note": ["call +44 20 7946 0958", "nothing", "ok"],
            "label": [1, 0, 1],
        }
    )
    matches = scanner.scan(frame, ["text", "note"])
    assert [(m.row, m.column, m.entity) for m in matches] == [(3, "text", "EMAIL_ADDRESS"), (2, "note", "PHONE_NUMBER")]
    assert isinstance(matches[0], PiiMatch)
    assert redact_text("mail amy@example.org now", [matches[0]], "replace", salt="") == "mail <EMAIL_ADDRESS> now"


def test_constants_describe_the_scan() -> None:
    assert ENTITY_TYPES == CORE_TYPES
    assert "NER" in NER_NOTE and "spaCy" in NER_NOTE


def test_scan_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """tldextract (email validation) would download the public suffix list by default; ours must not."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    fresh = pii_recognizers.OfflineEmailRecognizer()
    assert fresh.validate_result("ann@example.co.uk") is True
    assert pii_recognizers._OFFLINE_TLD_EXTRACT.suffix_list_urls == ()
    assert PiiScanner().scan_text("mail ann@example.co.uk at https://example.org/x") == [
        ("EMAIL_ADDRESS", 5, 22, 1.0),
        ("URL", 26, 47, 0.6),
    ]


def test_presidio_loads_with_the_first_scanner() -> None:
    """tests/test_architecture.py checks that importing tunewise does not load it."""
    code = (
        "import sys\n"
        "from tunewise.audit.pii import PiiScanner\n"
        "assert 'presidio_analyzer' not in sys.modules\n"
        "PiiScanner()\n"
        "assert 'presidio_analyzer' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
