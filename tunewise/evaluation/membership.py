"""Membership inference: can a model's losses tell the rows it trained on from rows it never saw?

Two sides of one question, "does the model give away who was in its training data?":

* **The promise.** DP-SGD is (epsilon, delta)-differentially private by its accounting
  (`tunewise.training.accounting`).
* **The measurement.** The loss-threshold membership-inference attack (Yeom et al. 2018) calls a row a
  training member when the model's loss on it is low. Its ROC AUC (0.5: nothing leaks) and its true-positive
  rate at low false-positive rates (Carlini et al. 2022: what matters is confidently exposing a few rows,
  not being right on average) measure what leaked, for any model, DP-trained or not.

The two meet in the hypothesis-testing view of DP (Kairouz et al. 2015): every membership test against an
(epsilon, delta)-DP model has TPR <= e^epsilon * FPR + delta, so a measured attack above that line means
the promised epsilon does not hold (`dp_bound_check`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

FPR_LEVELS = (0.01, 0.001)
ATTACK = (
    "loss threshold (Yeom et al. 2018): a row is called a training member when the model's loss on it is below a "
    "threshold; every threshold is tried, so the numbers describe the best such attacker"
)


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
    low, high = bootstrap_auc_interval(members_used, non_members_used, rng, bootstrap)

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


def bootstrap_auc_interval(
    members: np.ndarray, non_members: np.ndarray, rng: np.random.Generator, rounds: int
) -> tuple[float, float]:
    """The attack AUC's stratified bootstrap 95 % interval: members and non-members resampled apart, so
    every replicate has both. A replicate's AUC is its Mann-Whitney U over n x n (ties count one half,
    as in roc_auc_score), computed for all replicates in one vectorised call."""
    if not rounds:
        return float("nan"), float("nan")
    from scipy.stats import mannwhitneyu

    n = len(members)
    resampled_members, resampled_non_members = np.empty((rounds, n)), np.empty((rounds, n))
    for replicate in range(rounds):  # the draws in the order they always were: the same seed, the same interval
        resampled_members[replicate] = rng.choice(members, n)
        resampled_non_members[replicate] = rng.choice(non_members, n)
    # the attacker scores -loss: a member "wins" a pair when its loss is the lower one
    wins = mannwhitneyu(-resampled_members, -resampled_non_members, axis=1, method="asymptotic").statistic
    low, high = np.percentile(np.asarray(wins) / (n * n), [2.5, 97.5])
    return float(low), float(high)


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
