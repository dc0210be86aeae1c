"""Privacy measurements: what DP-SGD promises (Opacus's accountants) and what an attacker can see.

Two sides of one question, "does the model give away who was in its training data?":

* **The promise.** DP-SGD with noise multiplier sigma, Poisson sample rate q and T steps is
  (epsilon, delta)-differentially private; `noise_multiplier_for` and `spent_epsilon` ask Opacus's own
  accountants (PRV by default: Gopi et al. 2021, numerically tight; RDP: Mironov 2017, a looser upper
  bound) instead of reimplementing them, so tunewise reports exactly what Opacus would.
* **The measurement.** The loss-threshold membership-inference attack (Yeom et al. 2018) calls a row a
  training member when the model's loss on it is low. Its ROC AUC (0.5: nothing leaks) and its true-positive
  rate at low false-positive rates (Carlini et al. 2022: what matters is confidently exposing a few rows,
  not being right on average) measure what leaked, for any model, DP-trained or not.

The two meet in the hypothesis-testing view of DP (Kairouz et al. 2015): every membership test against an
(epsilon, delta)-DP model has TPR <= e^epsilon * FPR + delta, so a measured attack above that line means
the promised epsilon does not hold (`dp_bound_check`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tunewise.errors import ConfigError, DataError
from tunewise.training.batching import EncodedSplit, collate, sorted_batches

if TYPE_CHECKING:
    from tunewise.serving.predictor import FineTunedModel

Accountant = Literal["prv", "rdp"]
FPR_LEVELS = (0.01, 0.001)
PRIVACY_FILE = "privacy.json"
LOSS_BATCH_SIZE = 64
ATTACK = (
    "loss threshold (Yeom et al. 2018): a row is called a training member when the model's loss on it is below a "
    "threshold; every threshold is tried, so the numbers describe the best such attacker"
)


# ------------------------------------------------------------------------------------------ accounting


def noise_multiplier_for(
    epsilon: float, delta: float, sample_rate: float, steps: int, accountant: Accountant = "prv"
) -> float:
    """The smallest noise multiplier (Opacus's binary search, to within 0.01 of epsilon) that keeps `steps`
    DP-SGD steps at Poisson sample rate `sample_rate` within (epsilon, delta)."""
    _check_budget(delta, sample_rate, steps, accountant)
    if epsilon <= 0:
        raise ConfigError(f"epsilon must be positive (got {epsilon}); 1 to 10 are common choices.")
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with _quiet():
            return float(
                get_noise_multiplier(
                    target_epsilon=epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                )
            )
    except ValueError as error:  # Opacus: "The privacy budget is too low." (noise above 1e6 would be needed)
        raise ConfigError(
            f"epsilon {epsilon} (delta {delta:g}) cannot be met in {steps} steps at sample rate {sample_rate:g}: "
            f"Opacus found no noise multiplier up to 1e6 ({error}). Raise epsilon, or train fewer steps or with "
            "smaller batches."
        ) from error


def spent_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: Accountant = "prv"
) -> float:
    """Epsilon spent after `steps` DP-SGD steps, from the accountant's history as Opacus's optimizer hook
    would have recorded it ((sigma, q, steps): one entry, since sigma and q stay fixed during a run)."""
    _check_budget(delta, sample_rate, steps, accountant)
    if steps == 0:
        return 0.0
    from opacus.accountants import create_accountant

    tracker = create_accountant(mechanism=accountant)
    tracker.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with _quiet():
        return float(tracker.get_epsilon(delta=delta))


def auto_delta(n_rows: int) -> float:
    """The largest power of ten at or below 1 / (10 N): 1e-4 for 1,000 rows, 1e-5 for 4,127.

    A mechanism that publishes each row outright with probability delta is (0, delta)-DP, so delta * N is
    the expected number of rows such a mechanism exposes: delta must be well below 1/N to mean anything.
    1/(10 N) keeps that expectation at 0.1 or less; rounding down to a power of ten gives the report a
    readable number that does not change with every few rows added. Epsilon grows only like
    sqrt(log(1/delta)), so the extra factor costs little."""
    if n_rows < 1:
        raise DataError("auto delta needs at least one training row.")
    exponent = 0
    while 10**exponent < 10 * n_rows:  # integers: no rounding trouble at exact powers of ten
        exponent += 1
    return 10.0**-exponent


def _check_budget(delta: float, sample_rate: float, steps: int, accountant: str) -> None:
    if accountant not in ("prv", "rdp"):
        raise ConfigError(f"accountant must be 'prv' or 'rdp' (got {accountant!r}).")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be between 0 and 1 (got {delta}); below 1/N for N training rows.")
    if not 0.0 < sample_rate <= 1.0:
        raise ConfigError(f"sample rate must be in (0, 1] (got {sample_rate}): batch size / training rows.")
    if steps < 0:
        raise ConfigError(f"steps must be zero or more (got {steps}).")


@contextmanager
def _quiet() -> Iterator[None]:
    """Opacus warns when its best RDP order is the largest it tries (usual for small epsilon: the bound is
    still valid, only less tight), and its PRV takes log(0) at sample rate 1: both are harmless here."""
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the")
        yield


# ------------------------------------------------------------------------------------------ the attack


def membership_inference(
    member_losses: np.ndarray,
    non_member_losses: np.ndarray,
    seed: int = 0,
    bootstrap: int = 1000,
    epsilon: float | None = None,
    delta: float | None = None,
) -> dict[str, Any]:
    """Score the loss-threshold attack: AUC with a bootstrap 95 % interval, TPR at 1 % and 0.1 % FPR.

    The larger group is subsampled (seeded) to the smaller one's size, so that an AUC of 0.5 and a
    TPR equal to the FPR mean "no better than guessing" whatever the group sizes. The attacker's score is
    -loss. TPR at a FPR level is read off the full ROC curve (`drop_intermediate=False`: dropped collinear
    points could hide a better point under the level) as the largest TPR whose FPR is at or below the
    level; with n non-members no FPR between 0 and 1/n exists, so a level below 1/n is read at FPR 0.

    With `epsilon` (and `delta`), each operating point is checked against the DP bound
    TPR <= e^epsilon * FPR + delta on one-sided 95 % Clopper-Pearson limits (the TPR's lower limit, the
    FPR's upper limit): the point estimates alone would cry "violation" on small samples by chance, e.g.
    one member below every non-member is a TPR of 1/n at FPR 0, above a delta of 1e-5."""
    from sklearn.metrics import roc_auc_score, roc_curve

    members = np.asarray(member_losses, dtype=np.float64).ravel()
    non_members = np.asarray(non_member_losses, dtype=np.float64).ravel()
    if len(members) < 1 or len(non_members) < 1:
        raise ValueError("membership inference needs at least one member and one non-member loss.")
    if not (np.isfinite(members).all() and np.isfinite(non_members).all()):
        raise ValueError("losses must be finite.")
    rng = np.random.default_rng(seed)
    n = min(len(members), len(non_members))
    members_used = np.sort(rng.choice(members, n, replace=False)) if len(members) > n else members
    non_members_used = np.sort(rng.choice(non_members, n, replace=False)) if len(non_members) > n else non_members

    truth = np.concatenate([np.ones(n), np.zeros(n)])
    scores = -np.concatenate([members_used, non_members_used])
    auc = float(roc_auc_score(truth, scores))
    # stratified bootstrap: members and non-members resampled separately, so every replicate has both
    replicates = [
        roc_auc_score(truth, -np.concatenate([rng.choice(members_used, n), rng.choice(non_members_used, n)]))
        for _ in range(bootstrap)
    ]
    low, high = np.percentile(replicates, [2.5, 97.5]) if bootstrap else (float("nan"), float("nan"))

    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    points: dict[str, dict[str, Any]] = {}
    for level in FPR_LEVELS:
        allowed = np.flatnonzero(fpr <= level + 1e-12)  # fpr[0] is 0, so never empty
        best = int(allowed[np.argmax(tpr[allowed])])
        true_pos, false_pos = round(tpr[best] * n), round(fpr[best] * n)
        points[str(level)] = {
            "tpr": float(tpr[best]),
            "fpr": float(fpr[best]),
            "members_flagged": true_pos,
            "non_members_flagged": false_pos,
            "tpr_lower95": _clopper_pearson(true_pos, n, "lower"),
            "fpr_upper95": _clopper_pearson(false_pos, n, "upper"),
        }
    result: dict[str, Any] = {
        "attack": ATTACK,
        "members": n,
        "non_members": n,
        "members_available": len(members),
        "non_members_available": len(non_members),
        "member_loss_mean": float(members_used.mean()),
        "non_member_loss_mean": float(non_members_used.mean()),
        "auc": auc,
        "auc_ci95": [float(low), float(high)],
        "bootstrap": bootstrap,
        "seed": seed,
        "tpr_at_fpr": {level: point["tpr"] for level, point in points.items()},
        "operating_points": points,
        "min_resolvable_fpr": 1.0 / n,
    }
    unresolved = [level for level in FPR_LEVELS if level < 1.0 / n]
    if unresolved:
        result["note"] = (
            f"with {n} non-members the smallest FPR above 0 is {1.0 / n:.2g}, so TPR at FPR "
            f"{', '.join(f'{level:g}' for level in unresolved)} is the TPR at FPR 0 (members below every "
            f"non-member's loss); {math.ceil(1 / min(unresolved))} rows per group would resolve every level."
        )
    if epsilon is not None:
        delta = 0.0 if delta is None else float(delta)
        for point in points.values():
            point["dp_bound_tpr"] = min(1.0, math.exp(epsilon) * point["fpr_upper95"] + delta)
            point["within_dp_bound"] = dp_bound_check(point["tpr_lower95"], point["fpr_upper95"], epsilon, delta)
        result["epsilon"] = float(epsilon)
        result["delta"] = delta
        result["within_dp_bound"] = all(point["within_dp_bound"] for point in points.values())
        result["dp_bound"] = (
            f"A model that is ({epsilon:g}, {delta:g})-DP allows no membership test with TPR > e^{epsilon:g} x FPR + "
            f"{delta:g}. "
            + (
                "The attack stays within that bound at every reported FPR level (compared on 95 % confidence "
                "limits: a lower limit for the TPR, an upper one for the FPR), so this measurement does not "
                "contradict the promised epsilon; it cannot prove it either."
                if result["within_dp_bound"]
                else "The attack exceeds that bound even on 95 % confidence limits (lower for the TPR, upper for "
                "the FPR): the promised epsilon does not hold for this model. Check the DP training setup "
                "(per-example clipping, noise, sampling, accounting)."
            )
        )
    return result


def dp_bound_check(tpr: float, fpr: float, epsilon: float, delta: float) -> bool:
    """Whether a membership test's (TPR, FPR) is possible against an (epsilon, delta)-DP model:
    TPR <= e^epsilon * FPR + delta (Kairouz et al. 2015, the hypothesis-testing view of DP)."""
    return bool(tpr <= math.exp(epsilon) * fpr + delta + 1e-12)


def _clopper_pearson(successes: int, trials: int, side: Literal["lower", "upper"]) -> float:
    """One-sided 95 % Clopper-Pearson limit of a binomial proportion (exact, conservative)."""
    from scipy.stats import beta

    if side == "lower":
        return 0.0 if successes == 0 else float(beta.ppf(0.05, successes, trials - successes + 1))
    return 1.0 if successes == trials else float(beta.ppf(0.95, successes + 1, trials - successes))


# ------------------------------------------------------------------------------------------ losses


@torch.inference_mode()
def per_example_losses(
    model: nn.Module, split: EncodedSplit, batch_size: int, device: torch.device, pad_token_id: int
) -> np.ndarray:
    """Each row's loss, in input order: what the attacker thresholds.

    The loss the model was trained on, row by row: cross-entropy for single-label classes, binary
    cross-entropy averaged over labels for multi-label, squared error for regression (class weights from
    data.balance are left out: they are a training device, not the model's fit to a row). Computed here in
    float32 from the logits, since the model's own loss is already averaged over the batch."""
    if split.labels is None:
        raise ValueError("per-example losses need labels.")
    if not isinstance(split.labels, np.ndarray):
        raise ValueError("per-example losses score classifiers and regressors, not token-sequence labels.")
    was_training = model.training
    model.eval()
    losses = np.empty(len(split), dtype=np.float64)
    try:
        for indices in sorted_batches(split.lengths, batch_size):
            batch = {name: tensor.to(device) for name, tensor in collate(split, indices, pad_token_id).items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            if labels.is_floating_point() and labels.dim() == 2:  # multi-label: one 0/1 target per class
                row_loss = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(-1)
            elif labels.is_floating_point():  # regression: one output
                row_loss = F.mse_loss(logits.squeeze(-1), labels.float(), reduction="none")
            else:
                row_loss = F.cross_entropy(logits, labels, reduction="none")
            losses[indices] = row_loss.cpu().numpy()
    finally:
        model.train(was_training)
    return losses


# ------------------------------------------------------------------------------------------ a run


def audit_privacy(run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Attack a finished run: its training rows (members) against rows it never trained on (non-members).

    Writes `run_dir/privacy.json` and returns the same dict: the attack's numbers (see
    `membership_inference`), which data were members and non-members, and, when run.json records the
    run's DP budget (`privacy: {epsilon, delta}`), whether the attack stays within it."""
    from tunewise.serving.predictor import load

    run_dir = Path(run_dir)
    model = load(run_dir)
    if model.task.name != "text-classification":
        raise ConfigError(
            f"the privacy audit scores classifiers' per-row losses; {run_dir} is a {model.task.name} run."
        )
    record_file = run_dir / "run.json"
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    members, non_members, described = audit_frames(model)
    if len(members) < 2 or len(non_members) < 2:
        raise DataError(
            f"the privacy audit needs at least 2 member and 2 non-member rows (found {len(members)} and "
            f"{len(non_members)}). Give the run a test or validation file."
        )
    rng = np.random.default_rng(seed)
    available = {"members": len(members), "non_members": len(non_members)}
    n = min(available.values())  # score only as many rows as the attack will use: training sets can be large
    members = members.iloc[np.sort(rng.choice(len(members), n, replace=False))]
    non_members = non_members.iloc[np.sort(rng.choice(len(non_members), n, replace=False))]

    pad = model.tokenizer.pad_token_id or 0

    def losses(frame: pd.DataFrame) -> np.ndarray:
        encoded = model.task.encode(frame, model.tokenizer, model.max_length)
        return per_example_losses(model.model, encoded, LOSS_BATCH_SIZE, model.device, pad)

    budget = record.get("privacy") or {}
    result = membership_inference(
        losses(members), losses(non_members), seed=seed, epsilon=budget.get("epsilon"), delta=budget.get("delta")
    )
    result["members_available"] = available["members"]
    result["non_members_available"] = available["non_members"]
    result.update(described)
    result["data_changed_since_training"] = changed_data(model, record)
    result["run_dir"] = str(run_dir)
    (run_dir / PRIVACY_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def audit_frames(model: FineTunedModel) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """The rows the run trained on (members) and rows it never saw (non-members), rebuilt from the run's
    config exactly as `tunewise train` split them: a held-out validation share is re-drawn with the same
    validation_ratio and seed, and data.dedupe's dropped rows are dropped again.

    Non-members are the test file when there is one (never used by training), else the validation rows
    (evaluated during training, e.g. for early stopping, but never trained on). Non-member rows whose text
    is also a training text are left out: the model has seen that text, so calling it a non-member would
    understate the attack."""
    from tunewise.data.splits import split_train_validation

    config, task = model.config, model.task
    data = config.data
    frames = {"train": task.read_split(data.train, "train")}
    if data.validation:
        frames["validation"] = task.read_split(data.validation, "validation")
    if data.test:
        frames["test"] = task.read_split(data.test, "test")
    train_description = f"rows of {data.train}"
    if "validation" not in frames:
        frames["train"], frames["validation"] = split_train_validation(
            frames["train"], data.label_column, data.validation_ratio, config.train.seed, stratify=task.stratifies()
        )
        train_description += (
            f" less the {len(frames['validation'])} held out for validation (validation_ratio "
            f"{data.validation_ratio}, seed {config.train.seed})"
        )
    if data.dedupe:
        from tunewise.audit.runner import leaked_train_rows

        leaked = leaked_train_rows(frames, task.text_columns, config)
        frames["train"] = frames["train"][~frames["train"]["_row"].isin(leaked)].reset_index(drop=True)
        train_description += f" less the {len(leaked)} dropped by data.dedupe"
    split = "test" if "test" in frames else "validation"
    source = data.test if split == "test" else data.validation
    non_members = frames[split]
    task.check_split(non_members, split, source or f"{data.train} (held out)")
    seen = set(frames["train"][task.text_columns].itertuples(index=False, name=None))
    texts = non_members[task.text_columns].itertuples(index=False, name=None)
    repeated = np.fromiter((row in seen for row in texts), dtype=bool, count=len(non_members))
    non_members = non_members[~repeated]
    non_description = f"{split} rows of {source}" if source else f"validation rows held out of {data.train}"
    if repeated.any():
        non_description += f" less {int(repeated.sum())} whose text is also a training text"
    if split == "validation":
        non_description += " (evaluated during training, never trained on)"
    else:
        non_description += " (never trained on)"
    described = {"member_data": train_description + " (trained on)", "non_member_data": non_description}
    return frames["train"], non_members.reset_index(drop=True), described


def changed_data(model: FineTunedModel, record: dict[str, Any]) -> list[str]:
    """Data files whose sha256 differs from run.json's: members and non-members may then be wrong."""
    from tunewise.data.readers import file_fingerprint

    recorded = record.get("data_sha256", {})
    data = model.config.data
    return [
        split
        for split in ("train", "validation", "test")
        if (path := getattr(data, split)) and split in recorded and file_fingerprint(path) != recorded[split]
    ]
