"""Faults around resume, each made real: a truncated or garbage checkpoint, a checkpoint of another run,
format or machine, SIGTERM sent to a training process, a full disk at each write of the run folder, and
a kill in the middle of the final save. The rule in every case: no traceback, the previous good files
stay, and `--resume` finishes with the same metrics as an uninterrupted run.

Checkpoint checks and RNG restoring are unit-tested on a tiny linear model (no GPU needed: CUDA's
presence is monkeypatched); the rest trains the tiny mean-pooled BERT on the 96 sentiment rows.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import invoke_cli, make_config, read_json, train_until_crash, without_timings

import tunewise
from tunewise.errors import DiskFull
from tunewise.runs import atomic
from tunewise.training import checkpointing
from tunewise.training.checkpointing import (
    CHECKPOINT_FILE,
    MANIFEST_FILE,
    checkpoint_identity,
    newest_readable,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    trainable_state,
)
from tunewise.training.loop import TrainingState
from tunewise.training.stopping import EarlyStopping

RESUME_TRAIN = {"epochs": 3, "learning_rate": 3e-3}  # 33 optimizer steps, 11 per epoch
SCHEDULE = {"batch_size": 8, "gradient_accumulation": 1, "steps_per_epoch": 11, "total_steps": 33}


def train(config: dict, **kwargs: Any) -> tunewise.Run:
    return tunewise.train(config, show_progress=False, **kwargs)


@pytest.fixture(autouse=True)
def wide_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's messages on one line each, so that long paths in them stay whole."""
    from tunewise import cli

    monkeypatch.setattr(cli.console, "_width", 1000)


# ------------------------------------------------------------------------------------------ checkpoints, unit


def linear_pieces() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def write_linear_checkpoint(folder: Path, step: int, model: torch.nn.Module, optimizer: Any, **identity: Any) -> Path:
    payload = {
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": {},
        "rng": [rng_state()],
        "training_state": TrainingState(stopping=EarlyStopping(None), step=step),
        "best_weights": None,
        "identity": checkpoint_identity(identity.get("fingerprint", "run-a"), SCHEDULE, 1, "cpu", "no")
        | identity.get("override", {}),
    }
    return save_checkpoint(folder, step, payload, keep_last=5)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def scramble(path: Path) -> None:  # the same size, other bytes: only the checksum can tell
    path.write_bytes(bytes(255 - b for b in path.read_bytes()))


def other_format(path: Path) -> None:
    manifest = path.parent / MANIFEST_FILE
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "format": 99, "versions": {"tunewise": "9.0"}}))


DAMAGE = {
    "truncated": (truncate, "truncated or damaged"),
    "scrambled": (scramble, "sha256 differs"),
    "garbage manifest": (lambda path: (path.parent / MANIFEST_FILE).write_text("{not json"), "damaged"),
    "another tunewise": (other_format, "checkpoint format 99"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_recognised_before_it_is_loaded(tmp_path: Path, damage: str) -> None:
    model, optimizer = linear_pieces()
    write_linear_checkpoint(tmp_path, 5, model, optimizer)
    newest = write_linear_checkpoint(tmp_path, 10, model, optimizer)
    harm, reason = DAMAGE[damage]
    harm(newest / CHECKPOINT_FILE)
    identity = checkpoint_identity("run-a", SCHEDULE, 1, "cpu", "no")
    found = newest_readable(tmp_path, identity, model, optimizer)
    assert found.folder == tmp_path / "checkpoint-00000005" and found.payload is not None
    assert [skipped.folder.name for skipped in found.skipped] == ["checkpoint-00000010"]
    assert reason in found.skipped[0].why


@pytest.mark.parametrize(
    ("identity", "model_shape", "reason"),
    [
        ({"fingerprint": "run-b"}, (4, 2), "another run wrote it"),
        ({"override": {"schedule": {**SCHEDULE, "batch_size": 32}}}, (4, 2), "batch_size 32 (this run: 8)"),
        ({}, (4, 3), "another model wrote it"),
    ],
)
def test_a_checkpoint_of_another_run_or_model_is_skipped(tmp_path: Path, identity, model_shape, reason) -> None:
    model, optimizer = linear_pieces()
    write_linear_checkpoint(tmp_path, 10, model, optimizer, **identity)
    here = torch.nn.Linear(*model_shape)
    found = newest_readable(
        tmp_path, checkpoint_identity("run-a", SCHEDULE, 1, "cpu", "no"), here, torch.optim.AdamW(here.parameters())
    )
    assert found.payload is None and reason in found.skipped[0].why


def test_a_checkpoint_from_before_manifests_loads_with_a_note(tmp_path: Path) -> None:
    model, optimizer = linear_pieces()
    (write_linear_checkpoint(tmp_path, 10, model, optimizer) / MANIFEST_FILE).unlink()
    found = newest_readable(tmp_path, checkpoint_identity("run-a", SCHEDULE, 1, "cpu", "no"), model, optimizer)
    assert found.payload is not None and "without verifying it" in found.notes[0]


def test_keep_last_never_counts_a_checkpoint_that_was_set_aside(tmp_path: Path) -> None:
    model, optimizer = linear_pieces()
    bad = write_linear_checkpoint(tmp_path, 10, model, optimizer)
    scramble(bad / CHECKPOINT_FILE)
    kept = checkpointing.set_aside(bad)
    for step in (15, 20):
        payload = {"model": trainable_state(model)}
        save_checkpoint(tmp_path, step, payload, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000020", "unreadable-checkpoint-00000010"]
    assert kept.is_dir()


# ------------------------------------------------------------------------------------------ RNG across devices


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_a_gpu_checkpoint_resumes_on_a_machine_without_one(monkeypatch) -> None:
    saved = {**rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)]}
    expected = draws()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = restore_rng_state([saved])
    assert draws() == expected  # the CPU, numpy and Python states came back
    assert not restored.exact and "GPU random state was skipped" in restored.notes[0]


def test_a_cpu_checkpoint_resumes_where_a_gpu_is_available(monkeypatch) -> None:
    saved = rng_state()
    expected = draws()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *args: pytest.fail("no GPU state to restore"))
    restored = restore_rng_state([saved])
    assert draws() == expected
    assert not restored.exact and "written without a GPU" in restored.notes[0]


def test_a_gpu_checkpoint_resumes_on_fewer_gpus(monkeypatch) -> None:
    saved = {**rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]}
    restored_devices: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored_devices.append(device))
    restored = restore_rng_state([saved])
    assert restored_devices == [0]
    assert not restored.exact and "2 GPU(s)" in restored.notes[0]
    monkeypatch.undo()
    assert restore_rng_state([rng_state()]).exact  # this machine's own states: exact


# ------------------------------------------------------------------------------------------ resume through train


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> tunewise.Run:
    folder = tmp_path_factory.mktemp("uninterrupted")
    return train(make_config(folder, tiny_mean_model_dir, single_label_data, train=RESUME_TRAIN))


def crashed_run(tmp_path_factory, model_dir, data, checkpoint_every: int, after: int) -> dict:
    folder = tmp_path_factory.mktemp(f"crashed-{checkpoint_every}")
    config = make_config(folder, model_dir, data, train={**RESUME_TRAIN, "checkpoint_every": checkpoint_every})
    with pytest.MonkeyPatch.context() as monkeypatch:
        train_until_crash(monkeypatch, config, after_checkpoints=after)
    return config


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> dict:
    """A run killed right after its checkpoints at steps 5 and 10."""
    return crashed_run(tmp_path_factory, tiny_mean_model_dir, single_label_data, checkpoint_every=5, after=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> dict:
    """A run killed right after the checkpoint of its last step: resuming it is the final evaluation and save."""
    return crashed_run(tmp_path_factory, tiny_mean_model_dir, single_label_data, checkpoint_every=33, after=1)


def copy_of(config: dict, tmp_path: Path) -> tuple[dict, Path]:
    """The crashed run copied into tmp_path (each test harms its own), its config and a YAML file of it."""
    run_dir = tmp_path / "run"
    shutil.copytree(config["output_dir"], run_dir)
    copied = {**config, "output_dir": str(run_dir)}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(copied), encoding="utf-8")
    return copied, path


def checkpoint_file(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"checkpoint-{step:08d}" / CHECKPOINT_FILE


def assert_same_run(run_dir: Path, uninterrupted: tunewise.Run) -> None:
    assert read_json(run_dir / "metrics.json") == uninterrupted.metrics
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert without_timings(history) == without_timings(uninterrupted.history)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, crashed, uninterrupted) -> None:
    _, path = copy_of(crashed, tmp_path)
    run_dir = tmp_path / "run"
    truncate(checkpoint_file(run_dir, 10))
    result = invoke_cli("train", path, "--resume")  # the command that ended in a traceback before
    assert result.exit_code == 0, result.output
    assert f"skipped {checkpoint_file(run_dir, 10)}: it is truncated or damaged" in result.output
    assert "unreadable-checkpoint-00000010" in result.output and "Traceback" not in result.output
    assert (run_dir / "checkpoints" / "unreadable-checkpoint-00000010" / CHECKPOINT_FILE).is_file()  # kept
    assert_same_run(run_dir, uninterrupted)  # resumed from step 5, exactly
    assert read_json(run_dir / "run.json")["resumed"] == {"step": 5, "exact": True, "notes": []}


def test_when_no_checkpoint_can_be_read_resume_says_how_to_start_over(tmp_path, crashed) -> None:
    _, path = copy_of(crashed, tmp_path)
    run_dir = tmp_path / "run"
    for step in (5, 10):
        checkpoint_file(run_dir, step).write_bytes(b"garbage " * 100)
    result = invoke_cli("train", path, "--resume")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "none of the 2 checkpoint(s)" in result.output and "Nothing was deleted" in result.output
    assert "--overwrite" in result.output and str(checkpoint_file(run_dir, 10)) in result.output
    assert all(checkpoint_file(run_dir, step).read_bytes() == b"garbage " * 100 for step in (5, 10))
    assert not (run_dir / "model").exists()


def test_resume_before_the_first_checkpoint_starts_from_step_0(tmp_path, crashed, uninterrupted) -> None:
    _, path = copy_of(crashed, tmp_path)
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # stopped before its first checkpoint: run.json, no checkpoint
    result = invoke_cli("train", path, "--resume")
    assert result.exit_code == 0, result.output
    assert "holds no checkpoint yet" in result.output and "training starts from step 0" in result.output
    assert_same_run(tmp_path / "run", uninterrupted)


def test_a_checkpoint_of_a_gpu_run_resumes_here_and_says_it_is_not_exact(tmp_path, crashed, uninterrupted) -> None:
    _, path = copy_of(crashed, tmp_path)
    folder = tmp_path / "run" / "checkpoints"
    payload = torch.load(folder / "checkpoint-00000010" / CHECKPOINT_FILE, weights_only=False)
    payload["rng"] = [{**state, "cuda": [torch.zeros(16, dtype=torch.uint8)]} for state in payload["rng"]]
    payload["identity"] = {**payload["identity"], "device": "cuda", "mixed_precision": "bf16"}
    save_checkpoint(folder, 10, payload, keep_last=2)  # as a GPU machine would have written it
    result = invoke_cli("train", path, "--resume")
    assert result.exit_code == 0, result.output
    assert "continuing from step 10" in result.output and "not exactly as an uninterrupted run would" in result.output
    assert "GPU random state was skipped" in result.output and "device cuda and this run has cpu" in result.output
    resumed = read_json(tmp_path / "run" / "run.json")["resumed"]
    assert resumed["step"] == 10 and resumed["exact"] is False and len(resumed["notes"]) == 3
    assert read_json(tmp_path / "run" / "metrics.json") == uninterrupted.metrics  # on a CPU, the same numbers


# ------------------------------------------------------------------------------------------ a full disk


def fail_writing(monkeypatch: pytest.MonkeyPatch, name: str, after: int = 0) -> None:
    """ENOSPC where the bytes of the file or folder called `name` go to the disk (its write number `after` + 1),
    as a full disk would."""
    real = atomic.flush_to_disk
    seen: list[Path] = []

    def flush(written: Path, target: Path | None = None) -> None:
        if target is not None and target.name == name:
            seen.append(target)
            if len(seen) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(written, target)

    monkeypatch.setattr(atomic, "flush_to_disk", flush)


def assert_nothing_half_written(run_dir: Path) -> None:
    assert [p for p in run_dir.rglob("*") if atomic.is_leftover(p.name)] == []
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())  # every JSON file whole
    model = run_dir / "model"
    assert not model.exists() or {"config.json", "model.safetensors"} <= {p.name for p in model.iterdir()}


def test_a_full_disk_at_a_checkpoint_keeps_the_ones_before(tmp_path, monkeypatch, crashed, uninterrupted) -> None:
    config, _ = copy_of(crashed, tmp_path)
    run_dir = tmp_path / "run"
    fail_writing(monkeypatch, "checkpoint-00000015")
    with pytest.raises(DiskFull, match="checkpoint-00000015") as full:
        train(config, resume=True)
    assert "needs about" in str(full.value) and "--resume" in str(full.value)
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["checkpoint-00000005", "checkpoint-00000010"]
    assert_nothing_half_written(run_dir)
    monkeypatch.undo()
    train(config, resume=True)
    assert_same_run(run_dir, uninterrupted)


# each file a run writes, in order (and which of its writes fails): run.json as it starts, the model, its outputs,
# run.json as it finishes, the report
WRITES = [("run.json", 0), ("model", 0), ("metrics.json", 0), ("history.jsonl", 0), ("predictions.csv", 0),
          ("loss.png", 0), ("run.json", 1), ("report.html", 0), ("model_card.md", 0)]  # fmt: skip


@pytest.mark.parametrize(("name", "after"), WRITES)
def test_a_full_disk_at_each_write_leaves_the_previous_files(tmp_path, monkeypatch, trained, name, after) -> None:
    config, _ = copy_of(trained, tmp_path)
    run_dir = tmp_path / "run"
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    fail_writing(monkeypatch, name, after)
    with pytest.raises(DiskFull) as full:
        train(config, resume=True)
    assert f"/{name} could not be written" in str(full.value)
    assert_nothing_half_written(run_dir)
    for path, content in before.items():  # what was there is there, unchanged (or replaced whole)
        assert path.exists(), path
        if path.name not in ("run.json", "config.yaml"):
            assert path.read_bytes() == content, path
    assert read_json(run_dir / "run.json")["status"] in ("training", "finished")


def test_after_a_full_disk_at_the_model_resume_finishes_the_run(tmp_path, monkeypatch, trained, uninterrupted) -> None:
    config, _ = copy_of(trained, tmp_path)
    fail_writing(monkeypatch, "model")
    with pytest.raises(DiskFull):
        train(config, resume=True)
    monkeypatch.undo()
    run = train(config, resume=True)
    assert run.metrics == uninterrupted.metrics
    assert tunewise.load(run.run_dir).predict(["the film was great"])[0]["label"] in ("positive", "negative")


# ------------------------------------------------------------------------------------------ signals and kills

SLOW_STEPS = """
import sys, time
from tunewise.training import steps

real = steps.PlainSteps.backward
def slow(self, indices, sync):  # ~0.1 s a batch, so the test's signal lands mid-training
    time.sleep(0.1)
    return real(self, indices, sync)
steps.PlainSteps.backward = slow
"""

KILL_DURING_SAVE = """
import os, signal
from tunewise.runs import atomic

real = atomic.flush_to_disk
def flush(written, target=None):  # model/ written in full beside its place, not yet renamed into it: die
    if target is not None and target.name == "model":
        os.kill(os.getpid(), signal.SIGKILL)
    real(written, target)
atomic.flush_to_disk = flush
"""


def tunewise_process(tmp_path: Path, patch: str, *arguments: str) -> subprocess.Popen:
    script = tmp_path / "run_tunewise.py"
    script.write_text(
        patch + "\nfrom tunewise.cli import app\nsys.argv = ['tunewise', *sys.argv[1:]]\napp()\n", encoding="utf-8"
    )
    return subprocess.Popen(
        [sys.executable, str(script), *arguments],
        env={**os.environ, "COLUMNS": "1000"},  # messages on one line each, paths whole
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


def test_sigterm_writes_a_checkpoint_and_resume_finishes_the_same_run(
    tmp_path, tiny_mean_model_dir, single_label_data, uninterrupted
) -> None:
    training = {**RESUME_TRAIN, "checkpoint_every": 2}
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, train=training)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    checkpoints = tmp_path / "run" / "checkpoints"
    process = tunewise_process(tmp_path, "import sys\n" + SLOW_STEPS, "train", str(path))
    deadline = time.monotonic() + 120
    while not (checkpoints / "checkpoint-00000002").is_dir():  # mid-training: the first checkpoint is written
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    message = " ".join(stderr.split())
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr and "SIGTERM: training stopped at step" in message
    assert f"Continue with: tunewise train {path} --resume" in message
    stopped_at = int(message.split("training stopped at step ")[1].split()[0])
    assert 2 <= stopped_at < 33 and (checkpoints / f"checkpoint-{stopped_at:08d}" / CHECKPOINT_FILE).is_file()
    assert not (tmp_path / "run" / "model").exists()

    resumed = invoke_cli("train", path, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(tmp_path / "run", uninterrupted)
    assert read_json(tmp_path / "run" / "run.json")["resumed"]["step"] == stopped_at


def test_a_kill_during_the_final_save_leaves_no_model_that_loads(tmp_path, trained, uninterrupted) -> None:
    _, path = copy_of(trained, tmp_path)
    run_dir = tmp_path / "run"
    process = tunewise_process(tmp_path, "import sys\n" + KILL_DURING_SAVE, "train", str(path), "--resume")
    process.communicate(timeout=180)
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "model").exists()  # nothing half-written under the name that loads
    assert [p.name[:15] for p in run_dir.iterdir() if atomic.is_leftover(p.name)] == [".model.partial-"]
    assert read_json(run_dir / "run.json")["status"] == "training"

    resumed = invoke_cli("train", path, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert read_json(run_dir / "metrics.json") == uninterrupted.metrics
    assert not [p for p in run_dir.iterdir() if atomic.is_leftover(p.name)]
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_a_second_signal_stops_at_once_and_the_handlers_come_back(monkeypatch) -> None:
    from tunewise.training import preemption

    monkeypatch.setattr(preemption, "SAME_REQUEST_SECONDS", 0.05)
    before = signal.getsignal(signal.SIGINT)
    with preemption.StopSignals(speak=False) as signals:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # at once after: the same request (a launcher passing it on)
        assert signals.agreed() == signal.SIGINT
        time.sleep(0.1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises here
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_or_a_full_disk_in_a_trial_stops_the_study(tmp_path, monkeypatch) -> None:
    from tunewise.errors import Stopped
    from tunewise.jobs.tuning import trial

    for error in (Stopped("SIGTERM: stopped", signal.SIGTERM, 3), DiskFull("The disk is full")):

        def train_then_fail(*args: Any, error: Exception = error, **kwargs: Any) -> None:
            raise error

        monkeypatch.setattr(trial, "train", train_then_fail)
        monkeypatch.setattr(trial, "trial_config", lambda *args: None)
        with pytest.raises(type(error)):  # not a failed trial and the next one: the study ends with it
            trial.run_trial(None, {}, tmp_path, None, False, None)  # type: ignore[arg-type]
