"""Atomic writes: every file of a run folder appears whole or not at all.

A file is written under a hidden name beside it (`.<name>.partial-<random><suffix>`: the same folder, so
the same file system), flushed to the disk (fsync), then renamed over its target. A reader sees the old
file or the new one, never part of one; a kill, a crash or a full disk in the middle of a write leaves the
previous file as it was, and at worst a hidden `.partial-` file, which the next write of the same file
removes (and which the run folder's guard ignores). A folder (`model/`, a checkpoint, an export) is
written into a hidden staging folder beside it and moved into place only once complete; a folder already
there is moved aside first and removed only after the new one is in place, so at every moment the old
folder or the new one is whole on the disk (between those two renames, microseconds apart, `model/`
is absent, never half-written).

A full disk or quota is recognised here and nowhere else (`disk_full`: `OSError` ENOSPC or EDQUOT, or a
library's error that says so, as safetensors' does) and becomes one `DiskFull`, naming the path, the
space the write needed and the space free. Nothing half-written is left behind it.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunewise.errors import DiskFull

PARTIAL = ".partial-"  # a file or folder being written
PREVIOUS = ".previous-"  # a folder being replaced, moved aside until the new one is in place
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# what libraries that wrap the OS error in their own say (safetensors: "I/O error: No space left on device (os
# error 28)"); torch.save to a path says only "unexpected pos", so tunewise hands torch a file object instead
FULL_MESSAGES = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), f"os error {errno.ENOSPC})")


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path, expected_bytes=len(data)) as temporary, open(temporary, "wb") as handle:
        handle.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload: Any) -> None:
    """JSON as tunewise writes it everywhere: indented, anything else as its str(), a final newline."""
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Text lines (each given without its newline), streamed: history.jsonl, red_team.jsonl."""
    with replacing(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


@contextmanager
def replacing(path: Path, expected_bytes: int | None = None) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to (any writer: a library's `to_csv`, `savefig`); when
    the block ends without an error the file is synced and renamed over `path`, else removed. It keeps
    `path`'s suffix, so writers that go by the extension write the same format."""
    path = Path(path)
    temporary = _beside(path, PARTIAL, path.suffix)
    try:
        yield temporary
        flush_to_disk(temporary, path)
        os.replace(temporary, path)
    except BaseException as error:
        _failed(error, temporary, path, expected_bytes)
        raise
    _sync_folder(path.parent)


@contextmanager
def replacing_folder(path: Path, expected_bytes: int | None = None) -> Iterator[Path]:
    """An empty staging folder beside `path` to write the new folder into; when the block ends without an
    error every file in it is synced and it takes `path`'s place (the folder there before is moved aside,
    then removed), else it is removed and `path` stays as it was."""
    path = Path(path)
    staging = _beside(path, PARTIAL, "")
    try:
        staging.mkdir()
        yield staging
        flush_to_disk(staging, path)
        if path.exists():
            previous = _beside(path, PREVIOUS, "")
            path.rename(previous)
            staging.rename(path)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            staging.rename(path)
    except BaseException as error:
        _failed(error, staging, path, expected_bytes)
        raise
    _sync_folder(path.parent)


@contextmanager
def space_for(path: Path, expected_bytes: int | None = None) -> Iterator[None]:
    """Writes that manage their own files (a staging folder made elsewhere, a library's own file): a full
    disk inside the block becomes `DiskFull` naming `path`."""
    try:
        yield
    except Exception as error:
        if disk_full(error):
            raise full_disk(Path(path), expected_bytes, 0) from None
        raise


def create_new(path: Path, data: bytes) -> None:
    """A new file that must not replace one already there (redacted copies): written under a hidden name, then
    linked into place, which fails if `path` exists. See `publish_new` for several files at once."""
    publish_new([(path, data)])


def publish_new(files: list[tuple[Path, bytes]]) -> None:
    """Several new files, all or none: each is written and synced under a hidden name first (a full disk
    here leaves none of them); then each is linked to its name, which refuses a name that exists
    (FileExistsError), and a refusal removes the ones already linked."""
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path, data in files:
            temporary = _beside(Path(path), PARTIAL, Path(path).suffix)
            staged.append((temporary, Path(path)))
            try:
                with open(temporary, "xb") as handle:
                    handle.write(data)
                flush_to_disk(temporary, Path(path))
            except OSError as error:
                if disk_full(error):
                    _remove(temporary)
                    needed = sum(len(content) for _, content in files)
                    raise full_disk(Path(path), needed, 0) from None
                raise
        for temporary, path in staged:
            _link_new(temporary, path)
            placed.append(path)
    except BaseException:
        for path in placed:
            _remove(path)
        raise
    finally:
        for temporary, _ in staged:
            _remove(temporary)
    if staged:
        _sync_folder(staged[0][1].parent)


def is_leftover(name: str) -> bool:
    """A hidden file or folder that a write stopped by a kill left behind (never one of the user's)."""
    return name.startswith(".") and (PARTIAL in name or PREVIOUS in name)


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove what interrupted writes left in `folder` (not below it); returns what was removed."""
    removed = [entry for entry in Path(folder).iterdir() if is_leftover(entry.name)] if Path(folder).is_dir() else []
    for entry in removed:
        _remove(entry)
    return removed


def disk_full(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from, says the disk (or the user's quota) is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if any(message in str(current) for message in FULL_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def full_disk(path: Path, expected_bytes: int | None, written: int) -> DiskFull:
    """The error for a write of `path` that found the disk full: what it needed, what is free now (after the
    partial write was removed), and how to go on."""
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if expected_bytes:
        need = f"it needs about {human_bytes(expected_bytes)}"
    elif written:
        need = f"it needs more than the {human_bytes(written)} written before the disk filled"
    else:
        need = "it needs more space than is left"
    have = f", and {human_bytes(free)} is free there" if free is not None else ""
    missing = expected_bytes - free if expected_bytes and free is not None else 0
    short = f"at least {human_bytes(missing)}" if missing > 0 else "space"
    return DiskFull(
        f"The disk is full: {path} could not be written ({need}{have}). Nothing was half-written: the files that "
        f"were there before are unchanged. Free {short} on that disk (old runs, old checkpoints: train.keep_last "
        "keeps fewer) or point output_dir at a larger disk, then run the command again (`tunewise train CONFIG "
        "--resume` continues a training run from its last checkpoint).",
        path,
        expected_bytes,
        free,
    )


def human_bytes(count: int) -> str:
    value = float(max(count, 0))
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# ------------------------------------------------------------------------------------------ the mechanics


def _beside(path: Path, mark: str, suffix: str) -> Path:
    """A new hidden name next to `path`, after the leftovers of earlier interrupted writes of it are removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}{mark}*"):
        _remove(leftover)
    return path.parent / f".{path.name}{mark}{uuid.uuid4().hex[:12]}{suffix}"


def flush_to_disk(written: Path, target: Path | None = None) -> None:
    """Put what was written into `written` (a file, or a folder of them) on the disk before it is renamed to
    `target`: a rename that reaches the disk before the data would leave an empty file after a power cut."""
    if written.is_dir():
        for root, _, names in os.walk(written):
            for name in names:
                _sync_file(Path(root) / name)
            _sync_folder(Path(root))
    else:
        _sync_file(written)


def _sync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems (and Windows) cannot sync a folder; the rename still stands
        pass
    finally:
        os.close(descriptor)


def _link_new(temporary: Path, path: Path) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a race here is the user's own)
        if path.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(temporary, path)


def _failed(error: BaseException, temporary: Path, path: Path, expected_bytes: int | None) -> None:
    """Remove what a failed write left; a full disk becomes DiskFull (raised from here)."""
    written = _size(temporary)
    _remove(temporary)
    if isinstance(error, Exception) and disk_full(error):
        raise full_disk(path, expected_bytes, written) from None


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size if path.exists() else 0
    except OSError:
        return 0


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
