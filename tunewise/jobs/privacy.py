"""The privacy audit job: membership inference against a trained model, its members against non-members.

Members are the rows the run trained on; non-members are the test file when there is one (never used
by training), else the validation rows (evaluated during training, never trained on). Right after
training it runs on the model and frames in memory, reusing the final evaluation's per-row losses
for the non-members; `tunewise audit privacy RUN` rebuilds the same frames from the run's config
through the same preparation code, so both see exactly the rows training saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError, DataError
from tunewise.evaluation.membership import membership_inference
from tunewise.prepare import PreparedData, prepare_data
from tunewise.runs.atomic import write_json
from tunewise.runs.layout import PRIVACY_FILE
from tunewise.runs.reader import changed_since_training, run_record
from tunewise.serving.predictor import load
from tunewise.tasks import Task
from tunewise.types import Outputs, Processor


def audit_membership(
    task: Task,
    model: nn.Module,
    processor: Processor,
    config: RunConfig,
    data: PreparedData,
    budget: dict[str, Any] | None,
    non_member_outputs: Outputs | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The attack's numbers (see `membership_inference`), which rows were members and non-members, and,
    with the run's DP budget (`budget`: epsilon, delta), whether the attack stays within it.

    `non_member_outputs`: the model's outputs for the whole non-member split, when already computed."""
    facts = task.facts()
    if not facts.capabilities.membership_inference:
        raise ConfigError(f"the privacy audit scores classifiers' per-row losses; this is a {facts.name} run.")
    members, non_members, kept, described = audit_frames(task, config, data)
    if len(members) < 2 or len(non_members) < 2:
        raise DataError(
            f"the privacy audit needs at least 2 member and 2 non-member rows (found {len(members)} and "
            f"{len(non_members)}). Give the run a test or validation file."
        )
    rng = np.random.default_rng(seed)
    available = {"members": len(members), "non_members": len(non_members)}
    n = min(available.values())  # score only as many rows as the attack will use: training sets can be large
    member_rows = np.sort(rng.choice(len(members), n, replace=False))
    non_member_rows = np.sort(rng.choice(len(non_members), n, replace=False))

    def losses(frame: pd.DataFrame) -> np.ndarray:
        max_length = config.data.max_length
        assert isinstance(max_length, int)
        encoded = task.data.encode(frame, processor, max_length, "evaluate")
        row_losses = task.scoring.run(model, processor, encoded).row_losses
        assert row_losses is not None
        return row_losses

    if non_member_outputs is not None and non_member_outputs.row_losses is not None:
        non_member_losses = non_member_outputs.row_losses[kept][non_member_rows]
    else:
        non_member_losses = losses(non_members.iloc[non_member_rows])
    budget = budget or {}
    result = membership_inference(
        losses(members.iloc[member_rows]),
        non_member_losses,
        seed=seed,
        epsilon=budget.get("epsilon"),
        delta=budget.get("delta"),
    )
    result["members_available"] = available["members"]
    result["non_members_available"] = available["non_members"]
    result.update(described)
    return result


def audit_frames(
    task: Task, config: RunConfig, data: PreparedData
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, dict[str, str]]:
    """(members, non-members, positions of the non-members in their split, descriptions of both).

    Non-member rows whose text is also a training text are left out: the model has seen that text, so
    calling it a non-member would understate the attack."""
    assert data.members is not None
    text_columns = list(task.facts().text_columns)
    members, frames, settings = data.members, data.frames, config.data
    train_description = f"rows of {settings.train}"
    if settings.validation is None:
        train_description += (
            f" less the {len(frames['validation'])} held out for validation (validation_ratio "
            f"{settings.validation_ratio}, seed {config.train.seed})"
        )
    if settings.dedupe:
        train_description += f" less the {data.dropped_rows} dropped by data.dedupe"
    split = "test" if "test" in frames else "validation"
    source = settings.test if split == "test" else settings.validation
    non_members = frames[split]
    seen = set(members[text_columns].itertuples(index=False, name=None))
    texts = non_members[text_columns].itertuples(index=False, name=None)
    repeated = np.fromiter((row in seen for row in texts), dtype=bool, count=len(non_members))
    non_description = f"{split} rows of {source}" if source else f"validation rows held out of {settings.train}"
    if repeated.any():
        non_description += f" less {int(repeated.sum())} whose text is also a training text"
    non_description += (
        " (evaluated during training, never trained on)" if split == "validation" else " (never trained on)"
    )
    described = {"member_data": train_description + " (trained on)", "non_member_data": non_description}
    return members, non_members[~repeated].reset_index(drop=True), np.flatnonzero(~repeated), described


def audit_run(run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """`tunewise audit privacy RUN`: the attack against a finished run folder; writes its privacy.json."""
    run_dir = Path(run_dir)
    fine_tuned = load(run_dir)
    record = run_record(run_dir)
    data = prepare_data(fine_tuned.task, fine_tuned.config, labels_known=True)
    if data.problems:
        raise data.problems[0]
    result = audit_membership(
        fine_tuned.task,
        fine_tuned.model,
        fine_tuned.processor,
        fine_tuned.config,
        data,
        record.get("privacy"),
        seed=seed,
    )
    result["data_changed_since_training"] = changed_since_training(run_dir, data.fingerprints)
    return write_privacy(result, run_dir)


def write_privacy(result: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    result["run_dir"] = str(run_dir)
    write_json(run_dir / PRIVACY_FILE, result)
    return result


def privacy_summary(leakage: dict[str, Any]) -> str:
    text = (
        f"membership inference: AUC {leakage['auc']:.3f} (95 % CI {leakage['auc_ci95'][0]:.3f}-"
        f"{leakage['auc_ci95'][1]:.3f}; 0.5 = nothing learnt about who was in training)"
    )
    if "within_dp_bound" in leakage:
        text += f"; {'within' if leakage['within_dp_bound'] else 'BEYOND'} what epsilon allows"
    return text
