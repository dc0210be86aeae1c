"""Differential-privacy accounting: what DP-SGD promises, as pure functions of the noise, sampling and steps.

DP-SGD with noise multiplier sigma, Poisson sample rate q and T steps is (epsilon, delta)-differentially
private; `noise_multiplier_for` and `spent_epsilon` ask Opacus's own accountants (PRV by default: Gopi et
al. 2021, numerically tight; RDP: Mironov 2017, a looser upper bound) instead of reimplementing them, so
tunewise reports exactly what Opacus would. `PrivacyPlan` fixes the numbers for one run: preparation
computes it once, the training loop and run.json read it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tunewise.errors import ConfigError, DataError

Accountant = Literal["prv", "rdp"]
# The most noise per coordinate of a step's averaged gradient, in units of max_grad_norm, that still trains
# (`check_trainable`)
MAX_NOISE_PER_AVERAGED_GRADIENT = 1.0


@dataclass(frozen=True)
class PrivacyPlan:
    """What the accountant needs, fixed for the run."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    planned_steps: int
    max_grad_norm: float
    accountant: Accountant
    max_physical_batch_size: int | None

    def spent(self, steps: int) -> float:
        return spent_epsilon(self.noise_multiplier, self.sample_rate, steps, self.delta, self.accountant)

    def record(self, steps: int) -> dict[str, Any]:
        """The run's privacy facts, for run.json and the report."""
        return {
            "epsilon": self.spent(steps),
            "target_epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": steps,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant,
        }

    def describe(self) -> str:
        return (
            f"DP-SGD: epsilon {self.epsilon:g}, delta {self.delta:g}, noise multiplier {self.noise_multiplier:.3f}, "
            f"sample rate {self.sample_rate:.4f}, {self.planned_steps} steps ({self.accountant} accountant)"
        )


def plan_privacy(
    epsilon: float,
    delta: float,
    max_grad_norm: float,
    accountant: Accountant,
    max_physical_batch_size: int | None,
    rows: int,
    batch_size: int,
    total_steps: int,
) -> PrivacyPlan:
    """Noise for exactly the steps the loop will take (each a Poisson draw at rate batch / rows); a
    ConfigError when the budget cannot be met, or only with noise that would drown every step."""
    sample_rate = min(batch_size / rows, 1.0)
    sigma = noise_multiplier_for(epsilon, delta, sample_rate, total_steps, accountant)
    check_trainable(epsilon, delta, sigma, sample_rate, rows, total_steps, accountant)
    return PrivacyPlan(
        epsilon=epsilon,
        delta=delta,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        planned_steps=total_steps,
        max_grad_norm=max_grad_norm,
        accountant=accountant,
        max_physical_batch_size=max_physical_batch_size,
    )


def check_trainable(
    epsilon: float, delta: float, sigma: float, sample_rate: float, rows: int, steps: int, accountant: Accountant
) -> None:
    """Refuse a budget whose noise would drown every step's gradient, before any work.

    DP-SGD adds N(0, (sigma C)^2) to the sum of a step's clipped per-example gradients (each of norm at
    most C = max_grad_norm) and divides by the expected batch B = q x rows, so every coordinate of the
    averaged gradient carries noise of std (sigma / B) C, while the averaged gradient's whole norm is at
    most C. At sigma / B >= MAX_NOISE_PER_AVERAGED_GRADIENT (1.0) the noise on each single coordinate is
    as large as the entire signal could be, even were it all in that one coordinate: with the thousands
    of coordinates of even a LoRA adapter, no step moves the weights anywhere but at random. Settings
    that train sit two orders of magnitude lower: Abadi et al. 2016 (MNIST, sigma 4, B 600) 0.007; Li
    et al. 2022 (language-model fine-tuning, sigma near 1, batches near a thousand) about 0.001; this
    project's own DP tests (tiny data, B 16) about 0.05. So the bound refuses only budgets that cannot
    train, never a usable one; between the two, training runs and the report shows what it learnt."""
    expected_batch = sample_rate * rows
    noise = sigma / expected_batch
    if noise < MAX_NOISE_PER_AVERAGED_GRADIENT:
        return
    enough = spent_epsilon(MAX_NOISE_PER_AVERAGED_GRADIENT * expected_batch, sample_rate, steps, delta, accountant)
    raise ConfigError(
        f"privacy.dp.epsilon {epsilon:g} is too small to train: {steps} steps over {rows} rows at an expected batch "
        f"of {expected_batch:g} need noise multiplier {sigma:.3g}, so each step's averaged gradient gets noise of "
        f"std {noise:.3g} x max_grad_norm on every coordinate, more than the whole gradient's norm can be (1 x "
        f"max_grad_norm): nothing would be learnt. Raise privacy.dp.epsilon (above {enough:.2g} at these "
        "settings), raise train.batch_size (the noise on the average falls with the batch), lower train.epochs, "
        "or train on more rows."
    )


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
