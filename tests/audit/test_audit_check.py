"""`tunewise check` end to end: problems planted in real SMS data are found, counted and located."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import make_config, sms_rows
from typer.testing import CliRunner

import tunewise
from tunewise.cli import app
from tunewise.jobs.check import run_check, write_check
from tunewise.prepare import prepare_check


def findings_of(audit, check: str) -> list:
    return [f for f in audit.findings if f.check == check]


def test_planted_problems_are_found_with_counts_and_rows(tmp_path, tiny_model_dir, planted):
    config = tunewise.load_config(make_config(tmp_path, tiny_model_dir, planted["paths"]))
    audit = tunewise.check(config).audit
    n_train = len(planted["train"])

    duplicates = findings_of(audit, "duplicates")
    repeated = next(f for f in duplicates if "repeat an earlier text" in f.message)
    assert repeated.count == 2  # the upper-cased copy and the conflicting copy
    # data rows start at line 2, so the copies appended at positions 260 and 261 are rows 262 and 263
    assert set(repeated.rows) == {n_train - 3, n_train - 2}
    conflict = next(f for f in duplicates if "different labels" in f.message)
    assert conflict.count == 1 and set(conflict.rows) == {11, n_train - 2}  # the original (position 9) and its copy

    leakage = findings_of(audit, "leakage")
    assert len(leakage) == 1 and leakage[0].severity == "error" and leakage[0].split == "test"
    assert leakage[0].count == 1 and leakage[0].rows == [len(planted["test"]) + 1]

    validity = {f.details["kind"]: f for f in findings_of(audit, "validity")}
    assert validity["mojibake"].rows == [n_train]
    assert n_train + 1 in validity["near-empty"].rows  # the real data has a few ("Ok") too

    personal = next(f for f in findings_of(audit, "personal_data") if f.severity == "warning" and f.split == "train")
    assert personal.details["by_type"]["EMAIL_ADDRESS"] == 1
    assert personal.details["by_type"]["PHONE_NUMBER"] >= 1
    assert any("named-entity" in f.message for f in findings_of(audit, "personal_data") if f.severity == "note")

    assert audit.statistics["train"]["class_counts"] == planted["train"].label.value_counts().sort_index().to_dict()
    assert audit.statistics["train"]["rows"] == len(planted["train"])
    assert not audit.passed()


def test_check_output_saves_json_and_plots(tmp_path, tiny_model_dir, planted):
    config = tunewise.load_config(make_config(tmp_path, tiny_model_dir, planted["paths"]))
    result = tunewise.check(config, output=tmp_path / "audit")
    path = result.audit_file
    assert path == tmp_path / "audit" / "audit.json"
    assert (tmp_path / "audit" / "datasheet.md").is_file()
    payload = json.loads(path.read_text())
    assert payload["summary"]["error"] == 1
    assert "lengths" not in payload["statistics"]["train"]
    assert sum(payload["statistics"]["train"]["length_histogram"]["counts"]) == len(planted["train"])
    for plot in ("class_balance.png", "token_lengths.png"):
        assert (tmp_path / "audit" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_check_writes_what_tunewise_check_writes(tmp_path, tiny_model_dir, planted):
    config = tunewise.load_config(make_config(tmp_path, tiny_model_dir, planted["paths"]))
    plan = prepare_check(config)
    path = write_check(run_check(plan), plan, tmp_path / "by-job")
    assert path == tmp_path / "by-job" / "audit.json"
    through_api = tunewise.check(config, output=tmp_path / "by-api").audit_file
    assert json.loads(path.read_text()) == json.loads(through_api.read_text())
    for name in ("datasheet.md", "class_balance.png", "token_lengths.png"):
        assert (tmp_path / "by-job" / name).is_file(), name


def test_cli_check_exits_1_on_errors_and_leaves_the_data_alone(tmp_path, tiny_model_dir, planted):
    before = {split: Path(p).read_bytes() for split, p in planted["paths"].items()}
    config_file = tmp_path / "run.yaml"
    config_file.write_text(json.dumps(make_config(tmp_path, tiny_model_dir, planted["paths"])))
    result = CliRunner().invoke(app, ["check", str(config_file)])
    assert result.exit_code == 1, result.output
    assert "leakage" in result.output and "Traceback" not in result.output
    assert {split: Path(p).read_bytes() for split, p in planted["paths"].items()} == before


def test_strict_fails_on_warnings_only_when_asked(tmp_path, tiny_model_dir):
    paths = {"train": str(tmp_path / "train.tsv")}  # one split: spam templates leak nearly across any split
    sms_rows().to_csv(paths["train"], sep="\t", index=False, quoting=csv.QUOTE_NONE)
    config = make_config(tmp_path, tiny_model_dir, paths, audit={"label_noise": False})
    config_file = tmp_path / "run.yaml"
    config_file.write_text(json.dumps(config))
    audit = tunewise.check(config).audit
    assert audit.passed() and audit.by_severity("warning")  # real spam texts carry phone numbers and URLs
    assert CliRunner().invoke(app, ["check", str(config_file)]).exit_code == 0
    assert CliRunner().invoke(app, ["check", str(config_file), "--strict"]).exit_code == 1


def test_unreadable_data_is_an_error_finding_not_a_crash(tmp_path, tiny_model_dir, planted):
    paths = {**planted["paths"], "test": str(tmp_path / "missing.tsv")}
    audit = tunewise.check(make_config(tmp_path, tiny_model_dir, paths)).audit
    errors = audit.by_severity("error")
    assert any("missing.tsv" in f.message and "not found" in f.message for f in errors)
    assert findings_of(audit, "duplicates")  # the readable splits were still audited


def test_datasheet_has_every_section_filled_where_measured_and_asks_the_rest(tmp_path, tiny_model_dir, planted):
    from tunewise.audit.datasheet import SECTIONS, write_datasheet

    config = tunewise.load_config(make_config(tmp_path, tiny_model_dir, planted["paths"]))
    text = write_datasheet(tunewise.check(config).audit, config, tmp_path / "datasheet.md").read_text()
    assert len(SECTIONS) == 7  # Gebru et al.'s seven sections
    for section in SECTIONS:
        assert f"## {section}" in text
    assert f"| train | {len(planted['train'])} |" in text
    assert "Overlap between splits:** error" in text
    assert text.count("To answer (only you can)") >= 10


def test_cli_redact_writes_copies_without_touching_the_data(tmp_path, tiny_model_dir, planted):
    before = {split: Path(p).read_bytes() for split, p in planted["paths"].items()}
    config_file = tmp_path / "run.yaml"
    config_file.write_text(json.dumps(make_config(tmp_path, tiny_model_dir, planted["paths"])))
    out = tmp_path / "redacted"
    result = CliRunner().invoke(app, ["check", str(config_file), "--redact", str(out), "--redact-mode", "hash"])
    assert result.exit_code == 1  # the planted leak is still an error; the copies are written all the same
    train_copy = (out / "train.tsv").read_text()
    assert "jane.doe@example.com" not in train_copy and "<EMAIL_ADDRESS:" in train_copy
    assert (tmp_path / ".tunewise-salt").is_file()
    assert {split: Path(p).read_bytes() for split, p in planted["paths"].items()} == before
    refused = CliRunner().invoke(app, ["check", str(config_file), "--redact", str(out), "--redact-mode", "blur"])
    assert refused.exit_code == 1 and "replace, mask or hash" in refused.output
