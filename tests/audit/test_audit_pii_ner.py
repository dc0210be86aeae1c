"""Names and places with an NER model (audit.pii_ner_model): presidio's AnalyzerEngine over a spaCy pipeline.

No trained spaCy model can be downloaded here, so the wiring is tested with a real spaCy pipeline built in the
test: a blank English pipeline whose entity ruler tags a few known names and places, saved to a folder and
loaded by path exactly as an installed model is loaded by name. The missing-model path is tested with a name
that is not installed; it must be a ConfigError that says how to install the model, and never a download.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_config
from typer.testing import CliRunner

import tunewise
from tunewise.audit.pii import NER_NOTE, PiiScanner
from tunewise.audit.redact import write_redacted_copies
from tunewise.cli import app
from tunewise.errors import ConfigError

spacy = pytest.importorskip("spacy")

MISSING_MODEL = "en_tunewise_missing_model_sm"
TEXT = "Alice Smith moved to Paris, mail alice@example.com"


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved spaCy pipeline that tags 'Alice Smith' as PERSON and 'Paris' / 'Lisbon' as GPE (-> LOCATION)."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": "Alice Smith"},
            {"label": "PERSON", "pattern": "Bob"},
            {"label": "GPE", "pattern": "Paris"},
            {"label": "GPE", "pattern": "Lisbon"},
            {"label": "ORG", "pattern": "Acme"},  # not a personal-data entity: never reported
        ]
    )
    folder = tmp_path_factory.mktemp("spacy") / "ner"
    nlp.to_disk(folder)
    return str(folder)


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """presidio calls spacy.cli.download for a model it cannot find; tunewise must refuse before that."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a spaCy model download was attempted: {args}")

    monkeypatch.setattr(spacy.cli, "download", refuse)


def test_missing_model_is_a_config_error_that_says_how_to_install_it(no_download) -> None:
    with pytest.raises(ConfigError) as error:
        PiiScanner(ner_model=MISSING_MODEL)
    message = str(error.value)
    assert "audit.pii_ner_model" in message and MISSING_MODEL in message
    assert f"python -m spacy download {MISSING_MODEL}" in message


def test_a_folder_that_is_not_a_spacy_pipeline_is_a_config_error(tmp_path: Path, no_download) -> None:
    with pytest.raises(ConfigError, match="could not be loaded"):
        PiiScanner(ner_model=str(tmp_path))


def test_names_and_places_are_found_beside_the_patterns(ner_model: str, no_download) -> None:
    scanner = PiiScanner(ner_model=ner_model)
    assert scanner.scan_text(TEXT) == [
        ("PERSON", 0, 11, 0.85),
        ("LOCATION", 21, 26, 0.85),
        ("EMAIL_ADDRESS", 33, 50, 1.0),
    ]
    batch = scanner.scan_texts(["", "  ", "nothing at Acme", "Bob flew to Lisbon", TEXT])
    assert batch[:3] == [[], [], []]
    assert [span[0] for span in batch[3]] == ["PERSON", "LOCATION"]
    assert batch[4] == scanner.scan_text(TEXT)
    assert ner_model in scanner.note and "PERSON" in scanner.note
    assert PiiScanner().note == NER_NOTE  # patterns only: the default, and it says names are not detected


def _write(tmp_path: Path, rows: list[tuple[str, str]], name: str) -> str:
    path = tmp_path / name
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_NONE)
    return str(path)


def test_check_reports_names_and_redacts_them(tmp_path: Path, tiny_model_dir: Path, ner_model: str) -> None:
    rows = [(f"the film was good number {i}", "pos") for i in range(30)] + [
        (f"the film was bad number {i}", "neg") for i in range(30)
    ]
    rows[3] = ("Alice Smith loved the film in Paris", "pos")
    paths = {"train": _write(tmp_path, rows, "train.tsv")}
    config = tunewise.load_config(
        make_config(tmp_path, tiny_model_dir, paths, audit={"label_noise": False, "pii_ner_model": ner_model})
    )
    audit = tunewise.check(config).audit
    personal = [f for f in audit.findings if f.check == "personal_data"]
    warning = next(f for f in personal if f.severity == "warning")
    assert warning.details["by_type"] == {"PERSON": 1, "LOCATION": 1} and warning.rows == [5]
    assert any(ner_model in f.message for f in personal if f.severity == "note")

    (written,) = write_redacted_copies(config, ["text"], tmp_path / "redacted", "replace", salt_file=tmp_path / ".salt")
    assert "<PERSON> loved the film in <LOCATION>" in written.read_text()
    (through_check,) = tunewise.check(
        config, output=tmp_path / "audit", redact=tmp_path / "by-check", salt_file=tmp_path / ".salt"
    ).redacted
    assert through_check.read_text() == written.read_text()


def test_cli_check_with_a_missing_model_exits_1_with_the_fix(tmp_path: Path, tiny_model_dir: Path, no_download):
    rows = [(f"text number {i}", "a" if i % 2 else "b") for i in range(60)]
    config = make_config(
        tmp_path, tiny_model_dir, {"train": _write(tmp_path, rows, "train.tsv")}, audit={"pii_ner_model": MISSING_MODEL}
    )
    with pytest.raises(ConfigError, match="spacy download"):
        tunewise.check(config)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["check", str(config_file)])
    output = " ".join(result.output.split())  # rich wraps the message at the terminal width
    assert result.exit_code == 1
    assert f"python -m spacy download {MISSING_MODEL}" in output
    assert "Traceback" not in output
