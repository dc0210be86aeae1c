"""What preparation hands to the jobs: the data read once, the model found once, every setting concrete."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tunewise.audit.duplicates import Leak
from tunewise.config.sections import RunConfig
from tunewise.errors import TunewiseError
from tunewise.prepare.safety import SafetyPlan
from tunewise.tasks import Task
from tunewise.training.settings import TrainingSettings
from tunewise.types import CheckpointHints, EncodedSplit, ModelSource, Processor, TaskFacts


@dataclass(frozen=True)
class PreparedData:
    """Every data file parsed once, and the splits the run trains and evaluates on.

    `files` are the frames as the user named them (train whole): what the data check audits.
    `frames` are the splits after a validation share is held out of train when no validation file
    is named. `members` are the training rows actually trained on (data.dedupe applied): the
    membership-inference audit's members. `training_rows` add the counterfactual copies of
    fairness.augment: what is encoded for training."""

    files: dict[str, pd.DataFrame]
    frames: dict[str, pd.DataFrame]
    members: pd.DataFrame | None
    training_rows: pd.DataFrame | None
    sources: dict[str, str]  # split -> where it came from, for messages ("x.csv (held out)" when held out)
    fingerprints: dict[str, str]  # split -> sha256 of the file the user named
    dropped_rows: int = 0  # data.dedupe
    augmented_rows: int = 0  # fairness.augment
    problems: list[TunewiseError] = field(default_factory=list)  # what could not be read or checked
    # data.dedupe: per evaluation split, its rows that also stand in train (found on `frames`)
    leaks: dict[str, list[Leak]] | None = None


@dataclass(frozen=True)
class ModelPlan:
    """The pretrained model: where it is, what it declares, its processor, and the resolved input settings."""

    source: ModelSource
    hints: CheckpointHints
    processor: Processor
    max_length: int
    pooling: str
    method: str  # the adaptation strategy (strategy.method resolved)


@dataclass(frozen=True)
class TrainingPlan:
    """The encoded splits and the loop's concrete settings."""

    encoded: dict[str, EncodedSplit]
    settings: TrainingSettings
    device_type: str
    num_processes: int
    encode_seconds: float  # tokenising (or reading the token cache): part of preparation's time


@dataclass(frozen=True)
class Plan:
    """One run, resolved: the jobs start here and never re-read, re-load or re-decide anything."""

    requested: RunConfig  # as the user wrote it: run.json keeps it, --resume compares against it
    config: RunConfig  # every auto replaced by its value: saved as the run's config.yaml
    task: Task
    facts: TaskFacts
    data: PreparedData
    model: ModelPlan
    run_dir: Path
    training: TrainingPlan | None = None  # set for training
    safety: SafetyPlan | None = None  # generative tasks: the red-team prompts and the canaries

    @property
    def seed(self) -> int:
        return self.config.train.seed

    def describe(self) -> dict[str, Any]:
        """The resolved plan as run.json records it."""
        record: dict[str, Any] = {
            "task": self.facts.record(),
            "model_source": self.model.source.location,
            "model_family": self.model.source.family,
            "max_length": self.model.max_length,
            "strategy": self.model.method,
            "rows": {split: len(frame) for split, frame in self.data.frames.items()},
            "data_sha256": self.data.fingerprints,
            "data_sources": self.data.sources,
            "seed": self.seed,
        }
        if "test" in self.data.fingerprints and "test" not in self.data.frames:
            record["test_withheld"] = True  # a trial of `tunewise tune`: the test file was read, never used
        if self.data.members is not None and self.data.training_rows is not None:
            record["rows"]["train"] = len(self.data.training_rows)
        if self.safety is not None and self.safety.canaries is not None:
            record["canary_rows"] = len(self.safety.canaries.training_pairs())
        if self.training is not None:
            settings = self.training.settings
            record.update(
                batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                planned_epochs=settings.epochs,
                planned_steps=settings.total_steps,
                mixed_precision=settings.mixed_precision,
                compiled=settings.compile,
                device=self.training.device_type,
                processes=self.training.num_processes,
            )
        return record
