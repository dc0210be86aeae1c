"""Atomic writes (tunewise.runs.atomic): a file or folder appears whole or not at all; a full disk is one
DiskFull naming the path and the space, with the previous file in place and nothing half-written left.

The full disk is made real where the test can mount a tiny tmpfs (root, as in the project's container),
and mocked (ENOSPC raised where the bytes are flushed) everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tunewise.errors import DiskFull
from tunewise.runs import atomic, guard
from tunewise.training.checkpointing import list_checkpoints, save_checkpoint


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if atomic.is_leftover(p.name))


def no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ------------------------------------------------------------------------------------------ files


def test_a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    atomic.write_json(path, {"accuracy": 0.5})
    with pytest.raises(RuntimeError), atomic.replacing(path) as temporary:
        temporary.write_text('{"accuracy": 0.9', encoding="utf-8")  # half of the new content, then a crash
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert leftovers(tmp_path) == []
    atomic.write_json(path, {"accuracy": 0.9})
    assert json.loads(path.read_text()) == {"accuracy": 0.9}


def test_the_temporary_file_keeps_the_suffix_and_a_killed_writes_leftover_goes_with_the_next_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plots" / "loss.png"
    with atomic.replacing(path) as temporary:
        assert temporary.parent == path.parent and temporary.suffix == ".png" and temporary.name.startswith(".")
        temporary.write_bytes(b"png")
    stale = path.parent / f".loss.png.partial-{uuid.uuid4().hex[:12]}.png"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half")
    atomic.write_bytes(path, b"png again")
    assert path.read_bytes() == b"png again" and not stale.exists()


def test_a_full_disk_names_the_path_and_the_space_and_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run.json"
    atomic.write_json(path, {"status": "training"})
    monkeypatch.setattr(atomic, "flush_to_disk", no_space)
    with pytest.raises(DiskFull) as full:
        atomic.write_bytes(path, b"x" * 5000)
    message = str(full.value)
    assert str(path) in message and "needs about 4.9 KiB" in message and "is free there" in message
    assert "--resume" in message and "keep_last" in message
    assert json.loads(path.read_text()) == {"status": "training"}
    assert leftovers(tmp_path) == []


def test_a_library_error_that_says_the_disk_is_full_is_recognised() -> None:
    class SafetensorError(Exception):
        pass

    safetensors = "Error while serializing: I/O error: No space left on device (os error 28)"
    assert atomic.disk_full(SafetensorError(safetensors))
    assert atomic.disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert atomic.disk_full(wrapped)
    assert not atomic.disk_full(OSError(errno.EACCES, "Permission denied"))


# ------------------------------------------------------------------------------------------ folders


def test_a_folder_is_swapped_in_only_when_complete(tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "model"
    with atomic.replacing_folder(model) as staging:
        (staging / "config.json").write_text("{}")
        (staging / "model.safetensors").write_bytes(b"old weights")
    with pytest.raises(RuntimeError), atomic.replacing_folder(model) as staging:
        (staging / "config.json").write_text("{}")
        raise RuntimeError("killed before the weights were written")
    assert (model / "model.safetensors").read_bytes() == b"old weights"
    monkeypatch.setattr(atomic, "flush_to_disk", no_space)
    with pytest.raises(DiskFull, match="model"), atomic.replacing_folder(model, expected_bytes=10**6) as staging:
        (staging / "model.safetensors").write_bytes(b"new weights")
    assert (model / "model.safetensors").read_bytes() == b"old weights"
    monkeypatch.undo()
    with atomic.replacing_folder(model) as staging:
        (staging / "model.safetensors").write_bytes(b"new weights")
    assert sorted(p.name for p in model.iterdir()) == ["model.safetensors"]  # the new folder, not a merge
    assert leftovers(tmp_path) == []


def test_new_files_appear_all_or_none_and_never_over_a_file(tmp_path: Path, monkeypatch) -> None:
    first, second = tmp_path / "train.csv", tmp_path / "test.csv"
    calls: list[Path] = []
    real_flush = atomic.flush_to_disk

    def second_fails(written: Path, target: Path | None = None) -> None:
        calls.append(written)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_flush(written, target)

    monkeypatch.setattr(atomic, "flush_to_disk", second_fails)
    with pytest.raises(DiskFull, match=r"test\.csv"):
        atomic.publish_new([(first, b"a,b\n"), (second, b"c,d\n")])
    assert list(tmp_path.iterdir()) == []  # neither copy, and no partial one
    monkeypatch.undo()
    second.write_bytes(b"the user's")
    with pytest.raises(FileExistsError):
        atomic.publish_new([(first, b"a,b\n"), (second, b"c,d\n")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.csv"] and second.read_bytes() == b"the user's"


def test_the_run_folder_guard_ignores_what_an_interrupted_write_left(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / f".run.json.partial-{uuid.uuid4().hex[:12]}.json").write_text("{")
    guard.check_run_dir(run_dir, {"task": "text-classification"}, {}, overwrite=False, resume=False)
    guard.start_run_dir(run_dir, overwrite=False)
    assert list(run_dir.iterdir()) == []


# ------------------------------------------------------------------------------------------ a real full disk


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real file system that fills up. Needs the right to mount (root)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here (needs root): {mounted.stderr.decode().strip()[:120]}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_real_full_disk_keeps_the_previous_files(tiny_disk: Path) -> None:
    path = tiny_disk / "metrics.json"
    atomic.write_json(path, {"accuracy": 0.5})
    with pytest.raises(DiskFull) as full:
        atomic.write_bytes(path, b"x" * 400_000)
    assert "needs about 390.6 KiB" in str(full.value) and str(path) in str(full.value)
    assert json.loads(path.read_text()) == {"accuracy": 0.5} and leftovers(tiny_disk) == []

    from safetensors.torch import save_file  # the model's weights: safetensors says "No space left" its own way

    with pytest.raises(DiskFull, match="model"), atomic.replacing_folder(tiny_disk / "model") as staging:
        save_file({"weight": torch.zeros(100_000)}, str(staging / "model.safetensors"))
    assert not (tiny_disk / "model").exists() and leftovers(tiny_disk) == []


def test_a_checkpoint_that_does_not_fit_leaves_the_previous_one(tiny_disk: Path) -> None:
    folder = tiny_disk / "checkpoints"
    save_checkpoint(folder, 5, {"model": {"w": torch.zeros(1000)}}, keep_last=1)
    with pytest.raises(DiskFull, match="checkpoint-00000010") as full:
        save_checkpoint(folder, 10, {"model": {"w": torch.zeros(100_000)}}, keep_last=1)
    assert "needs about 390.6 KiB" in str(full.value)
    assert [p.name for p in list_checkpoints(folder)] == ["checkpoint-00000005"]
    assert leftovers(tiny_disk) == []
