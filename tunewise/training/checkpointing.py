"""Resumable checkpoints: everything that makes a resumed run bit-identical to an uninterrupted one.

A checkpoint holds the trainable weights, optimiser and scheduler state, every RNG state, the
position in the data (epoch and batch), the history so far and the early-stopping state. Frozen
weights never change, so they are not stored: LoRA checkpoints stay small. BatchNorm running
statistics are buffers, not parameters, yet training changes them: they are stored too, or the
best model would come back with the last step's statistics.

`checkpoint-<step>/` holds `state.pt` and, written last, `checkpoint.json`: the sha256 and size of
state.pt, the checkpoint format, the tunewise and torch versions, and what the run it belongs to is
(its config fingerprint, the schedule its position refers to, the device and the processes). The folder
is written beside its place and renamed into it whole (`runs.atomic`). Resume reads the newest
checkpoint whose manifest, size and checksum agree and whose contents fit this run and this model,
before anything is loaded into the model; one that does not is skipped with its reason, never deleted
(`set_aside` moves it out of the rotation), and the one before it is tried.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import numpy as np
import torch
from torch import nn

from tunewise.errors import first_line
from tunewise.runs.atomic import replacing_folder

CHECKPOINT_FILE = "state.pt"
MANIFEST_FILE = "checkpoint.json"
PREFIX = "checkpoint-"
UNREADABLE = "unreadable-"  # a checkpoint resume could not use, kept under this prefix outside the rotation
# The layout of state.pt. Raise it whenever the payload changes (TrainingState's fields included): a resume by
# another format then skips the checkpoint with a reason instead of loading something it cannot use.
# 1: state.pt alone, before checkpoints had a manifest (still read, without verification).
FORMAT = 2
PAYLOAD_KEYS = ("model", "optimizer", "scheduler", "rng", "training_state")
SCHEDULE = ("batch_size", "gradient_accumulation", "steps_per_epoch", "total_steps")  # what a position refers to


# ------------------------------------------------------------------------------------------ weights


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies (on CPU) of the weights that training changes, and of the normalisation statistics."""
    state = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}
    state.update({name: b.detach().to("cpu", copy=True) for name, b in running_statistics(model)})
    return state


def trainable_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The names and shapes `trainable_state` would copy, without copying."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}
    shapes.update({name: tuple(b.shape) for name, b in running_statistics(model)})
    return shapes


def running_statistics(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """BatchNorm's running mean, variance and batch count: buffers that training updates."""
    return [
        (f"{module_name}.{name}" if module_name else name, buffer)
        for module_name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._NormBase)
        for name, buffer in module.named_buffers(recurse=False)
        if buffer is not None
    ]


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    tensors = {**dict(model.named_parameters()), **dict(running_statistics(model))}
    with torch.no_grad():
        for name, value in state.items():
            tensors[name].copy_(value)


# ------------------------------------------------------------------------------------------ random states


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@dataclass(frozen=True)
class RngRestored:
    """What restoring a checkpoint's RNG states did: `exact` when every state this process draws from came
    back; otherwise `notes` say which did not, and training continues, but not exactly as it would have."""

    exact: bool
    notes: tuple[str, ...] = ()


def restore_rng_state(saved: list[dict[str, Any]] | dict[str, Any], rank: int = 0, processes: int = 1) -> RngRestored:
    """Put back this process's RNG states from a checkpoint's (one per process, in rank order; a single
    state in checkpoints written before several processes were supported).

    Written by another number of processes: each takes the first one's. Written on other hardware: the
    CPU, numpy and Python states always come back; a GPU state that this machine has no GPU for is skipped,
    and a checkpoint written without a GPU leaves this GPU's generator as it is. Either way the weights and
    the position resume; only exactness is lost, and the notes say why."""
    states = saved if isinstance(saved, list) else [saved]
    notes: list[str] = []
    exact = len(states) == processes
    if not exact:
        notes.append(
            f"the checkpoint was written by {len(states)} process(es) and this run has {processes}: each takes "
            "the first process's random state"
        )
    state = states[rank] if exact else states[0]
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda_here = torch.cuda.is_available()
    if "cuda" in state and cuda_here:
        saved_gpus, gpus = len(state["cuda"]), torch.cuda.device_count()
        for device, gpu_state in enumerate(state["cuda"][:gpus]):
            torch.cuda.set_rng_state(gpu_state, device)
        if saved_gpus != gpus:
            exact = False
            notes.append(f"the checkpoint holds the random state of {saved_gpus} GPU(s) and this machine has {gpus}")
    elif "cuda" in state:
        exact = False
        notes.append("the checkpoint's GPU random state was skipped: this machine has no GPU")
    elif cuda_here:
        exact = False
        notes.append("the checkpoint was written without a GPU, so the GPU's random numbers start afresh")
    return RngRestored(exact, tuple(notes))


# ------------------------------------------------------------------------------------------ writing


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep_last: int) -> Path:
    """Write `checkpoint-<step>/` (state.pt, then its manifest) whole, and prune all but the newest `keep_last`.

    `payload["identity"]` (what run wrote it: `checkpoint_identity`) goes into the manifest too, so a
    resume can tell a checkpoint of another run before loading it. A full disk is a DiskFull and leaves
    the checkpoints that were there as they were (pruning happens only after the new one is in place)."""
    target = folder / f"{PREFIX}{step:08d}"
    with replacing_folder(target, expected_bytes=payload_bytes(payload)) as staging:
        with open(staging / CHECKPOINT_FILE, "wb") as handle:
            hashing = _Hashing(handle)  # a file object: torch then reports a full disk as the OSError it is
            torch.save(payload, cast(IO[bytes], hashing))
        manifest = {
            "format": FORMAT,
            "step": step,
            "files": {CHECKPOINT_FILE: {"bytes": hashing.size, "sha256": hashing.digest.hexdigest()}},
            "versions": _versions(),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **payload.get("identity", {}),
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for old in checkpoint_folders(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def checkpoint_identity(
    fingerprint: str | None, schedule: dict[str, int], processes: int, device: str, mixed_precision: str
) -> dict[str, Any]:
    """What a checkpoint says about the run that wrote it (its manifest and payload keep it)."""
    return {
        "run_fingerprint": fingerprint,
        "schedule": schedule,
        "processes": processes,
        "device": device,
        "mixed_precision": mixed_precision,
    }


def payload_bytes(payload: Any) -> int:
    """The bytes of the tensors in a checkpoint's payload: about what state.pt takes on the disk."""
    if isinstance(payload, torch.Tensor):
        return payload.element_size() * payload.nelement()
    if isinstance(payload, dict):
        return sum(payload_bytes(value) for value in payload.values())
    if isinstance(payload, (list, tuple)):
        return sum(payload_bytes(value) for value in payload)
    return 0


class _Hashing(io.RawIOBase):
    """A file that hashes what passes through it, so state.pt's checksum costs no second read."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += view.nbytes
        return self.handle.write(view)


# ------------------------------------------------------------------------------------------ reading


def checkpoint_folders(folder: Path) -> list[Path]:
    """Every `checkpoint-<step>` folder, oldest first (readable or not: `newest_readable` judges them)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{PREFIX}*") if p.is_dir())


def list_checkpoints(folder: Path) -> list[Path]:
    """The checkpoint folders that hold a state.pt, oldest first."""
    return [p for p in checkpoint_folders(folder) if (p / CHECKPOINT_FILE).is_file()]


@dataclass(frozen=True)
class Skipped:
    """A checkpoint resume could not use: the file at fault and why."""

    folder: Path
    file: Path
    why: str


@dataclass
class Found:
    """What resume found: the newest usable checkpoint's payload (None when there is none), the newer ones it
    skipped, and notes on the one it took (versions, verification)."""

    payload: dict[str, Any] | None
    folder: Path | None
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


class Unusable(Exception):
    """Raised inside `read_checkpoint`: this checkpoint cannot be resumed from (never leaves this module)."""

    def __init__(self, file: Path, why: str):
        super().__init__(why)
        self.file, self.why = file, why


def newest_readable(
    folder: Path, identity: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
) -> Found:
    """The newest checkpoint in `folder` that is whole, belongs to this run and fits `model` and `optimizer`;
    newer ones that do not are listed in `skipped` with the reason. Nothing is loaded into the model here."""
    skipped: list[Skipped] = []
    for checkpoint in reversed(checkpoint_folders(folder)):
        try:
            payload, manifest, notes = read_checkpoint(checkpoint, identity, model, optimizer)
        except Unusable as problem:
            skipped.append(Skipped(checkpoint, problem.file, problem.why))
            continue
        return Found(payload, checkpoint, skipped, notes, manifest)
    return Found(None, None, skipped)


def load_latest_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The newest checkpoint's payload, unverified against a model (inspection and tests)."""
    checkpoints = list_checkpoints(folder)
    if not checkpoints:
        return None
    return torch.load(checkpoints[-1] / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def read_checkpoint(
    checkpoint: Path, identity: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The payload, the manifest and notes of one checkpoint folder, after every check; `Unusable` says why not."""
    state_file, manifest_file = checkpoint / CHECKPOINT_FILE, checkpoint / MANIFEST_FILE
    if not state_file.is_file():
        raise Unusable(state_file, "it is missing")
    notes: list[str] = []
    manifest: dict[str, Any] = {}
    if manifest_file.is_file():
        manifest = _read_manifest(manifest_file)
        _verify(state_file, manifest)
        _same_run(state_file, manifest, identity)
        notes += _version_notes(manifest)
    else:
        notes.append(
            f"{checkpoint.name} has no {MANIFEST_FILE} (a tunewise from before checkpoints carried checksums wrote "
            "it), so it was loaded without verifying it"
        )
    try:
        payload = torch.load(state_file, map_location="cpu", weights_only=False)
    except Exception as error:  # a damaged or foreign file: whatever torch or pickle raises
        raise Unusable(state_file, f"torch {torch.__version__} cannot load it ({first_line(error, 160)})") from None
    why = does_not_fit(payload, model, optimizer)
    if why is not None:
        raise Unusable(state_file, why)
    if not manifest:
        _same_run(state_file, payload.get("identity") or {}, identity)
    return payload, manifest, notes


def does_not_fit(payload: Any, model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why a loaded payload cannot go into this model and optimizer (None: it can)."""
    if not isinstance(payload, dict) or any(key not in payload for key in PAYLOAD_KEYS):
        return "it holds no tunewise training state"
    weights = payload["model"]
    if not isinstance(weights, dict):
        return "it holds no weights"
    expected = trainable_shapes(model)
    missing, unknown = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unknown:
        example = (missing or unknown)[0]
        return (
            f"its weights do not fit this model ({len(missing)} trainable tensor(s) missing, {len(unknown)} this "
            f"model does not train, e.g. {example}): another model or strategy wrote it"
        )
    for name, shape in expected.items():
        saved = getattr(weights[name], "shape", None)
        if saved is None or tuple(saved) != shape:
            return f"its {name} has shape {tuple(saved or ())} and this model's has {shape}: another model wrote it"
    groups = payload["optimizer"].get("param_groups") if isinstance(payload["optimizer"], dict) else None
    if not isinstance(groups, list) or [len(g.get("params", ())) for g in groups] != [
        len(g["params"]) for g in optimizer.param_groups
    ]:
        return "its optimizer state does not fit this run's optimizer (its parameter groups differ)"
    if not hasattr(payload["training_state"], "step"):
        return "its training state is not one this tunewise writes"
    return None


def set_aside(checkpoint: Path) -> Path:
    """Move a checkpoint resume could not use out of the rotation (`unreadable-checkpoint-<step>`), so that
    neither resume nor `keep_last` counts it and it is there to inspect; returns where it went."""
    target = checkpoint.with_name(f"{UNREADABLE}{checkpoint.name}")
    number = 2
    while target.exists():
        target = checkpoint.with_name(f"{UNREADABLE}{checkpoint.name}-{number}")
        number += 1
    checkpoint.rename(target)
    return target


def _read_manifest(manifest_file: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Unusable(manifest_file, f"it is damaged ({first_line(error, 120)})") from None
    if not isinstance(manifest, dict):
        raise Unusable(manifest_file, "it is damaged (not a JSON object)")
    return manifest


def _verify(state_file: Path, manifest: dict[str, Any]) -> None:
    """The format this tunewise reads, and the size and sha256 state.pt had when it was written."""
    written_by = manifest.get("versions", {}).get("tunewise", "another version")
    if manifest.get("format") != FORMAT:
        raise Unusable(
            state_file,
            f"tunewise {written_by} wrote it in checkpoint format {manifest.get('format')}, and this tunewise "
            f"({_versions()['tunewise']}) reads format {FORMAT}; resume it with the version that wrote it",
        )
    recorded = manifest.get("files", {}).get(CHECKPOINT_FILE, {})
    size, written = state_file.stat().st_size, recorded.get("bytes")
    if size != written:
        was = f"{written:,}" if isinstance(written, int) else "an unrecorded number of"
        raise Unusable(state_file, f"it is truncated or damaged: {size:,} bytes where {was} were written")
    if sha256_of(state_file) != recorded.get("sha256"):
        raise Unusable(state_file, "its sha256 differs from the one recorded when it was written: the file is damaged")


def _same_run(state_file: Path, recorded: dict[str, Any], identity: dict[str, Any]) -> None:
    """A checkpoint of another config or data, or whose position refers to another schedule, cannot continue
    this run."""
    theirs, ours = recorded.get("run_fingerprint"), identity.get("run_fingerprint")
    if theirs and ours and theirs != ours:
        raise Unusable(
            state_file,
            "another run wrote it: its config or data differ from this run's (config fingerprint "
            f"{str(theirs)[:12]}, this run's {str(ours)[:12]})",
        )
    schedule, wanted = recorded.get("schedule") or {}, identity.get("schedule") or {}
    shared = [key for key in SCHEDULE if key in schedule and key in wanted]
    changed = [f"{key} {schedule[key]} (this run: {wanted[key]})" for key in shared if schedule[key] != wanted[key]]
    if changed:
        raise Unusable(
            state_file,
            f"it was written with {', '.join(changed)}, so its position in the data means another place in this "
            "run's schedule (an `auto` batch size resolves per device); resume where it was written, or set the "
            "values explicitly when you start a run",
        )


def _version_notes(manifest: dict[str, Any]) -> list[str]:
    theirs, ours = manifest.get("versions", {}), _versions()
    changed = [
        f"{name} {theirs[name]} (now {ours[name]})" for name in ours if theirs.get(name, ours[name]) != ours[name]
    ]
    return [f"the checkpoint was written with {', '.join(changed)}"] if changed else []


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    try:
        tunewise = metadata.version("tunewise")
    except metadata.PackageNotFoundError:
        tunewise = "unknown"
    return {"tunewise": tunewise, "torch": torch.__version__}
