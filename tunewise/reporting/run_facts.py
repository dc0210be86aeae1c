"""What a finished run folder records, read once: the facts both the report and the model card draw on.

Reading is kept apart from drawing: `read_run` reads config.yaml, run.json, metrics.json, the history,
the audit and the fairness, privacy and explanations files; `report.py` draws the HTML page and `model_card.py` the
Markdown card from the same `RunFacts`. What the task is and can do comes from run.json's `task`
(the facts the task declared while training), so nothing here rebuilds a task or asks its name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tunewise.runs.layout import (
    AUDIT_FILE,
    CONFIG_FILE,
    EXPLANATIONS_FILE,
    FAIRNESS_FILE,
    HISTORY_FILE,
    MEMORISATION_FILE,
    METRICS_FILE,
    PRIVACY_FILE,
    RUN_FILE,
    SAFETY_FILE,
)
from tunewise.runs.reader import finished_run, read_json

NOT_MEASURED = "so nothing here says whether the model works equally well for different groups of people"
PRIVACY_NOT_RUN = (
    "No privacy audit ran on this run (there is no privacy.json in the run folder), so nothing here measures whether "
    "the model gives away which texts it was trained on. `tunewise audit privacy RUN` runs the membership-inference "
    "audit and rebuilds this page with its figures."
)


@dataclass
class RunFacts:
    """Everything a finished run folder records, read once and shared by the report and the model card."""

    run_dir: Path
    config: dict[str, Any]
    record: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]
    audit: dict[str, Any] | None
    fairness: Any | None
    privacy: Any | None
    safety: Any | None = None  # generative runs: the red team before and after, the screen
    memorisation: Any | None = None  # generative runs: canary exposure, personal-data extraction
    explanations: Any | None = None  # attributions: top words per label, examples, faithfulness, identity terms

    @property
    def task(self) -> str:
        return str(self.config.get("task", "text-classification"))

    @property
    def facts(self) -> dict[str, Any]:
        """The task's declared facts (run.json `task`); a run written before they were recorded has none."""
        facts = self.record.get("task")
        return facts if isinstance(facts, dict) else {}

    def can(self, capability: str) -> bool:
        """Whether the task declared a capability (tunewise.types.Capabilities) for this run."""
        return bool((self.facts.get("capabilities") or {}).get(capability, False))

    @property
    def headline_split(self) -> str | None:
        """Test when there is one (never seen during training), else validation."""
        return next((s for s in ("test", "validation") if s in self.metrics), next(iter(self.metrics), None))

    @property
    def problem_type(self) -> str:
        """The task's problem type in words' form (e.g. token_classification), for display."""
        return str(self.facts.get("problem_type") or self.record.get("problem_type") or "unknown")

    def section(self, name: str) -> dict[str, Any]:
        return self.config.get(name) or {}

    @property
    def text_columns(self) -> list[str]:
        """The task's raw text inputs ([] when it reads none, e.g. images), as the task itself declared."""
        if "text_columns" in self.facts:
            return list(self.facts["text_columns"])
        return [self.section("data").get("text_column", "text")]

    @property
    def targets(self) -> str:
        """What the model learns to predict, as the task describes it."""
        return str(self.facts.get("targets") or f"label column `{self.section('data').get('label_column', 'label')}`")

    @property
    def truncates(self) -> bool:
        """Whether inputs longer than max_length were cut (False: read whole, e.g. in overlapping windows)."""
        capabilities = self.facts.get("capabilities") or {}
        return bool(capabilities.get("truncates", True))

    def privacy_absent(self) -> str:
        """Why there is no privacy.json: a membership-inference audit not run, or one that does not apply."""
        if self.can("membership_inference") or not self.can("generation"):
            return PRIVACY_NOT_RUN
        return (
            "Membership inference scores a classifier's per-row losses and does not apply to this generative run; "
            "what the model memorised of its training data is measured under Memorisation (canary exposure with "
            "privacy.canaries, personal data completed verbatim)."
        )

    def fairness_absent(self) -> str:
        """Why there is no fairness.json, and what would produce one."""
        if not self.can("fairness"):
            kind = f"is {self.problem_type.replace('_', ' ')}" if self.text_columns else "reads no text"
            return (
                "Fairness was not measured: tunewise measures it for single-label classification of one text "
                f"column, and this run {kind}; {NOT_MEASURED}."
            )
        if self.section("fairness").get("enabled") is False:
            return f"Fairness was not measured: the config sets `fairness.enabled: false`; {NOT_MEASURED}."
        return (
            f"Fairness was not measured for this run (there is no fairness.json); {NOT_MEASURED}. Train again with "
            "`fairness.enabled: true` (and `fairness.group_column` for per-group metrics), then `tunewise report RUN`."
        )

    def explanations_absent(self) -> str:
        """Why there is no explanations.json, and what would produce one."""
        if not self.can("explanations"):
            return (
                f"No explanations: this {self.task} run's task does not attribute its predictions (tunewise explains "
                "text and sentence-pair classification, named entities, question answering and image classification)."
            )
        if self.section("explain").get("enabled") is False:
            return (
                "No explanations: the config sets `explain.enabled: false`. Train with `explain.enabled: auto` for "
                "this section, or explain single predictions with `tunewise predict RUN --text ... --explain`."
            )
        return (
            "No explanations for this run (there is no explanations.json): it was a trial of `tunewise tune` (only "
            "the best trial is explained), or its explanation step was skipped (the training log says why). "
            "`tunewise predict RUN --text ... --explain` explains single predictions."
        )


SAFETY_NOT_RUN = (
    "No safety check ran on this run (there is no safety.json): nothing here measures whether fine-tuning changed "
    "how the model answers harmful requests. Generative runs answer red-team prompts before and after training "
    "(config `safety.prompts`)."
)


def read_run(run_dir: Path) -> RunFacts:
    """Read a finished run folder; a folder that is not one (yet) is a DataError that says what to do."""
    run_dir = finished_run(Path(run_dir))
    history_file = run_dir / HISTORY_FILE
    lines = history_file.read_text(encoding="utf-8").splitlines() if history_file.is_file() else []
    config_file = run_dir / CONFIG_FILE
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    record = read_json(run_dir / RUN_FILE)
    return RunFacts(
        run_dir=run_dir,
        config=config or record.get("requested_config") or {},
        record=record,
        metrics=read_json(run_dir / METRICS_FILE),
        history=[json.loads(line) for line in lines if line.strip()],
        audit=read_json(run_dir / AUDIT_FILE),
        fairness=read_json(run_dir / FAIRNESS_FILE),
        privacy=read_json(run_dir / PRIVACY_FILE),
        safety=read_json(run_dir / SAFETY_FILE),
        memorisation=read_json(run_dir / MEMORISATION_FILE),
        explanations=read_json(run_dir / EXPLANATIONS_FILE),
    )


def run_date(facts: RunFacts) -> str:
    """When the run finished: its own record if it has one, else when run.json was last written."""
    for key in ("finished_at", "finished", "date"):
        if facts.record.get(key):
            return str(facts.record[key])
    written = datetime.fromtimestamp(os.path.getmtime(facts.run_dir / RUN_FILE), tz=UTC)
    return f"{written:%Y-%m-%d %H:%M} UTC (when run.json was written)"
