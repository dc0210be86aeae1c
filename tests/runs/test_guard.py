"""The run-folder guard (tunewise.runs.guard): nothing in an output_dir is replaced without being asked,
a folder with other files is never cleared, and an output_dir that cannot take a run (a file, another
task's run, a damaged run.json, no write permission) is refused before any model work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config, read_json

import tunewise
import tunewise.runs.guard as guard
from tunewise.errors import ConfigError
from tunewise.tasks.text_classification import TextClassifierModel


def train(config: dict, **kwargs: Any) -> tunewise.Run:
    return tunewise.train(config, show_progress=False, **kwargs)


class ModelBuilt(Exception):
    """Raised if a refused run got as far as building its model."""


@pytest.fixture
def no_model_work(monkeypatch):
    """Building the model fails the test: refusals must come before it."""

    def build(*args: Any, **kwargs: Any) -> None:
        raise ModelBuilt

    monkeypatch.setattr(TextClassifierModel, "build", build)


@pytest.fixture(scope="module")
def protected_run(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("protected")
    config = make_config(folder, tiny_mean_model_dir, single_label_data, train={"epochs": 1})
    train(config)
    return Path(config["output_dir"]), config


@pytest.fixture
def existing_run(tmp_path, protected_run) -> tuple[Path, dict]:
    """A finished run copied into tmp_path, and its config pointing there."""
    source, config = protected_run
    run_dir = tmp_path / "existing"
    shutil.copytree(source, run_dir)
    return run_dir, {**config, "output_dir": str(run_dir)}


# ------------------------------------------------------------------------------------------ an existing run


def test_training_into_an_existing_run_is_refused(existing_run):
    run_dir, config = existing_run
    before = (run_dir / "run.json").read_bytes()
    with pytest.raises(ConfigError) as excinfo:
        train(config)
    message = str(excinfo.value)
    assert "--overwrite" in message and "--resume" in message and "this run already" in message
    assert (run_dir / "run.json").read_bytes() == before


def test_a_different_config_into_an_existing_run_is_refused(existing_run):
    _, config = existing_run
    changed = {**config, "train": {**config["train"], "learning_rate": 1e-3}}
    with pytest.raises(ConfigError, match="holds a different run"):
        train(changed)


def test_overwrite_replaces_the_run_and_keeps_user_files(existing_run):
    run_dir, config = existing_run
    (run_dir / "notes.txt").write_text("my notes", encoding="utf-8")
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "stale").write_text("old", encoding="utf-8")
    (run_dir / "export" / "onnx").mkdir(parents=True)  # an export of the old weights would be stale
    (run_dir / "export" / "onnx" / "export.json").write_text("{}", encoding="utf-8")
    changed = {**config, "train": {**config["train"], "seed": 5}}
    run = train(changed, overwrite=True)
    assert (run_dir / "notes.txt").read_text(encoding="utf-8") == "my notes"
    assert not (run_dir / "checkpoints" / "stale").exists()
    assert not (run_dir / "export").exists()
    assert read_json(run_dir / "run.json")["seed"] == 5
    assert read_json(run_dir / "run.json")["status"] == "finished"
    assert run.run_dir == run_dir


def test_overwrite_keeps_the_old_run_when_the_new_config_fails_its_checks(existing_run):
    run_dir, config = existing_run
    before = (run_dir / "metrics.json").read_bytes()
    broken = {**config, "strategy": {"method": "lora", "lora": {"target_modules": ["no_such_module"]}}}
    with pytest.raises(ConfigError, match="no_such_module"):
        train(broken, overwrite=True)
    assert (run_dir / "metrics.json").read_bytes() == before
    assert (run_dir / "model" / "config.json").is_file()


def test_a_folder_with_other_files_is_never_cleared(tmp_path, tiny_mean_model_dir, single_label_data):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "thesis.tex").write_text("precious", encoding="utf-8")
    (run_dir / "model").mkdir()
    (run_dir / "model" / "weights.bin").write_text("also precious", encoding="utf-8")
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(run_dir))
    for kwargs in ({}, {"overwrite": True}):
        with pytest.raises(ConfigError, match="already holds other files") as excinfo:
            train(config, **kwargs)
        assert "thesis.tex" in str(excinfo.value)
    assert (run_dir / "thesis.tex").read_text(encoding="utf-8") == "precious"
    assert (run_dir / "model" / "weights.bin").read_text(encoding="utf-8") == "also precious"


# ------------------------------------------------------------------------------------------ resume


def test_resume_with_a_changed_config_is_refused(existing_run):
    _, config = existing_run
    changed = {**config, "train": {**config["train"], "batch_size": 4}}
    with pytest.raises(ConfigError) as excinfo:
        train(changed, resume=True)
    assert "train.batch_size" in str(excinfo.value)


def test_resume_needs_a_run_and_excludes_overwrite(tmp_path, existing_run, tiny_mean_model_dir, single_label_data):
    _, config = existing_run
    with pytest.raises(ConfigError, match="not both"):
        train(config, resume=True, overwrite=True)
    fresh = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(tmp_path / "never-ran"))
    with pytest.raises(ConfigError, match="holds no run to resume"):
        train(fresh, resume=True)


# ------------------------------------------------------------------------------------------ output_dir itself


def test_an_output_dir_that_is_a_file_is_refused_before_any_model_work(
    tmp_path, tiny_mean_model_dir, single_label_data, no_model_work
):
    target = tmp_path / "results.txt"
    target.write_text("not a folder", encoding="utf-8")
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(target))
    for kwargs in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(ConfigError) as excinfo:
            train(config, **kwargs)
        message = str(excinfo.value)
        assert f"output_dir {target} is a file, not a folder" in message
        assert "Choose another output_dir" in message
    assert target.read_text(encoding="utf-8") == "not a folder"
    assert not (tmp_path / "run").exists()


def test_an_output_dir_inside_a_file_is_refused(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x", encoding="utf-8")
    run_dir = blocker / "runs" / "new"
    with pytest.raises(ConfigError) as excinfo:
        guard.check_output_dir(run_dir)
    assert f"{blocker} is a file, so no folder can be made inside it" in str(excinfo.value)
    assert blocker.read_text(encoding="utf-8") == "x"


def unwritable(monkeypatch, folder: Path) -> None:
    """As if this user could not write into `folder` (tests run as root, where os.access always says yes)."""
    real_access = guard.os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if Path(path).resolve() == folder.resolve():
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr("tunewise.runs.guard.os.access", access)


def test_an_unwritable_output_dir_is_refused(tmp_path, monkeypatch):
    parent = tmp_path / "read-only"
    parent.mkdir()
    unwritable(monkeypatch, parent)
    with pytest.raises(ConfigError) as excinfo:
        guard.check_output_dir(parent / "run")
    message = str(excinfo.value)
    assert f"output_dir {parent / 'run'}: {parent} is not writable by this user" in message
    assert "Choose an output_dir you can write to" in message


def test_an_unwritable_output_dir_is_refused_by_train_before_any_model_work(
    tmp_path, monkeypatch, tiny_mean_model_dir, single_label_data, no_model_work
):
    parent = tmp_path / "read-only"
    parent.mkdir()
    unwritable(monkeypatch, parent)
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(parent / "run"))
    with pytest.raises(ConfigError, match=r"is not writable by this user"):
        train(config)
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_an_output_dir_problem_is_reported_once(
    tmp_path, monkeypatch, tiny_mean_model_dir, single_label_data, no_model_work, kind
):
    """The one problem with output_dir is one line of the error, not the same line twice."""
    if kind == "file":
        output_dir = tmp_path / "results.txt"
        output_dir.write_text("not a folder", encoding="utf-8")
        phrase = "is a file, not a folder"
    else:
        (tmp_path / "read-only").mkdir()
        unwritable(monkeypatch, tmp_path / "read-only")
        output_dir = tmp_path / "read-only" / "run"
        phrase = "is not writable by this user"
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(output_dir))
    with pytest.raises(ConfigError) as excinfo:
        train(config)
    message = str(excinfo.value)
    assert message.count(phrase) == 1, message
    assert "problems, all to fix" not in message  # a single problem raises as itself


# ------------------------------------------------------------------------------------------ what run.json says


def write_run_record(run_dir: Path, record: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(record), encoding="utf-8")


def test_a_run_of_another_task_is_refused_unless_overwrite(tmp_path, tiny_mean_model_dir, single_label_data):
    run_dir = tmp_path / "ner-run"
    other = {"status": "finished", "requested_config": {"task": "token-classification", "model": "bert"}}
    write_run_record(run_dir, other)
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(run_dir), train={"epochs": 1})
    for kwargs in ({}, {"resume": True}):
        with pytest.raises(ConfigError) as excinfo:
            train(config, **kwargs)
        message = str(excinfo.value)
        assert "holds a token-classification run" in message
        assert "this config is a text-classification run" in message and "--overwrite" in message
        assert read_json(run_dir / "run.json") == other

    run = train(config, overwrite=True)
    record = read_json(run_dir / "run.json")
    assert record["status"] == "finished"
    assert record["requested_config"]["task"] == "text-classification"
    assert record["task"]["name"] == "text-classification"
    assert run.run_dir == run_dir


def test_a_run_of_another_task_is_refused_by_the_guard(tmp_path):
    run_dir = tmp_path / "lm-run"
    write_run_record(run_dir, {"requested_config": {"task": "causal-lm"}})
    requested = {"task": "text-classification"}
    with pytest.raises(ConfigError, match="holds a causal-lm run"):
        guard.check_run_dir(run_dir, requested, {}, overwrite=False, resume=False)
    guard.check_run_dir(run_dir, requested, {}, overwrite=True, resume=False)  # overwrite: allowed
    # a run.json from before tasks were recorded is a text-classification run
    write_run_record(run_dir, {"requested_config": {"model": "bert"}})
    with pytest.raises(ConfigError, match="holds a different run"):
        guard.check_run_dir(run_dir, requested, {}, overwrite=False, resume=False)


@pytest.mark.parametrize(
    "content",
    [b'{"status": "fini', b"\xff\xfe\x00 not text", b"[]", b"null", b'{"requested_config": null}'],
    ids=["truncated", "not-utf8", "a-list", "null", "config-null"],
)
def test_a_damaged_run_json_is_a_config_error(tmp_path, content):
    run_dir = tmp_path / "damaged"
    run_dir.mkdir()
    (run_dir / "run.json").write_bytes(content)
    for overwrite, resume in ((False, False), (True, False), (False, True)):
        with pytest.raises(ConfigError) as excinfo:
            guard.check_run_dir(run_dir, {"task": "text-classification"}, {}, overwrite=overwrite, resume=resume)
        message = str(excinfo.value)
        assert f"output_dir {run_dir} holds a run.json that cannot be read" in message
        assert "Choose another output_dir" in message
    assert (run_dir / "run.json").read_bytes() == content


def test_a_damaged_run_json_is_refused_by_train(tmp_path, tiny_mean_model_dir, single_label_data, no_model_work):
    run_dir = tmp_path / "damaged"
    run_dir.mkdir()
    (run_dir / "run.json").write_text('{"status": "trai', encoding="utf-8")
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(run_dir))
    for kwargs in ({}, {"overwrite": True}):
        with pytest.raises(ConfigError, match=r"holds a run\.json that cannot be read"):
            train(config, **kwargs)
    assert (run_dir / "run.json").read_text(encoding="utf-8") == '{"status": "trai'
