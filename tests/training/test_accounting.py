"""Differential-privacy accounting: Opacus's accountants reproduced, the noise for a budget, auto delta, the
budget checks, and the run's PrivacyPlan (`plan_privacy`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from tunewise.errors import ConfigError, DataError
from tunewise.training.accounting import (
    PrivacyPlan,
    auto_delta,
    noise_multiplier_for,
    plan_privacy,
    spent_epsilon,
)

# ------------------------------------------------------------------------------------------ accountants


def test_rdp_reproduces_opacus_reference_values() -> None:
    """The numbers Opacus's own test suite pins (opacus/tests/accountants_test.py)."""
    assert spent_epsilon(1.5, 0.04, int(90 / 0.04), 1e-5, "rdp") == pytest.approx(7.32911117143, abs=1e-7)
    assert noise_multiplier_for(8.0, 1e-5, 0.04, 2000, "rdp") == pytest.approx(1.3562, abs=1e-4)


@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
def test_spent_epsilon_equals_an_accountant_stepped_by_hand(mechanism: str) -> None:
    from opacus.accountants import PRVAccountant, RDPAccountant

    for sigma, q, steps, delta in [(1.0, 0.01, 300, 1e-5), (0.8, 0.1, 50, 1e-6)]:
        accountant = RDPAccountant() if mechanism == "rdp" else PRVAccountant()
        for _ in range(steps):  # as Opacus's optimizer hook records a run, one step at a time
            accountant.step(noise_multiplier=sigma, sample_rate=q)
        assert spent_epsilon(sigma, q, steps, delta, mechanism) == pytest.approx(accountant.get_epsilon(delta=delta))


def exact_gaussian_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Without subsampling, `steps` Gaussian mechanisms compose exactly into one with mu = sqrt(steps) / sigma,
    whose (epsilon, delta) curve is analytic (Balle & Wang 2018): an independent reference for the PRV."""
    mu = np.sqrt(steps) / sigma
    return brentq(lambda eps: norm.cdf(-eps / mu + mu / 2) - np.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta, 0, 100)


@pytest.mark.parametrize(("sigma", "steps", "delta"), [(1.0, 1, 1e-5), (2.0, 10, 1e-5), (5.0, 100, 1e-6)])
def test_prv_is_a_tight_upper_bound_on_the_exact_gaussian(sigma: float, steps: int, delta: float) -> None:
    exact = exact_gaussian_epsilon(sigma, steps, delta)
    prv = spent_epsilon(sigma, 1.0, steps, delta, "prv")
    rdp = spent_epsilon(sigma, 1.0, steps, delta, "rdp")
    assert exact <= prv <= exact + 0.02  # Opacus's eps_error is 0.01 and it reports the upper end
    assert prv <= rdp  # RDP's conversion to (epsilon, delta) is the looser bound


@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
def test_noise_multiplier_round_trip_meets_the_target(mechanism: str) -> None:
    sigma = noise_multiplier_for(3.0, 1e-5, 0.02, 500, mechanism)
    assert 3.0 - 0.02 <= spent_epsilon(sigma, 0.02, 500, 1e-5, mechanism) <= 3.0


# ------------------------------------------------------------------------------------------ budget checks


def test_impossible_budget_and_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="cannot be met"):
        noise_multiplier_for(1e-4, 1e-12, 1.0, 100_000, "rdp")
    with pytest.raises(ConfigError, match="accountant"):
        spent_epsilon(1.0, 0.1, 10, 1e-5, "gdp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="delta"):
        spent_epsilon(1.0, 0.1, 10, 0.0)
    assert spent_epsilon(1.0, 0.1, 0, 1e-5) == 0.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epsilon": 0.0}, "epsilon must be positive"),
        ({"epsilon": -1.0}, "epsilon must be positive"),
        ({"delta": 1.0}, "delta must be between 0 and 1"),
        ({"sample_rate": 0.0}, r"sample rate must be in \(0, 1\]"),
        ({"sample_rate": 1.5}, r"sample rate must be in \(0, 1\]"),
        ({"steps": -1}, "steps must be zero or more"),
        ({"accountant": "gdp"}, "accountant must be 'prv' or 'rdp'"),
    ],
)
def test_noise_multiplier_for_refuses_settings_outside_the_accountants_domain(arguments: dict, message: str) -> None:
    settings = {"epsilon": 3.0, "delta": 1e-5, "sample_rate": 0.02, "steps": 100, "accountant": "prv", **arguments}
    with pytest.raises(ConfigError, match=message):
        noise_multiplier_for(**settings)


@pytest.mark.parametrize(("rows", "delta"), [(1, 1e-1), (9, 1e-2), (10, 1e-2), (1000, 1e-4), (4127, 1e-5)])
def test_auto_delta_is_a_power_of_ten_at_most_a_tenth_of_one_over_n(rows: int, delta: float) -> None:
    assert auto_delta(rows) == pytest.approx(delta)
    assert auto_delta(rows) <= 1 / (10 * rows) + 1e-18


def test_auto_delta_needs_a_training_row() -> None:
    with pytest.raises(DataError, match="at least one training row"):
        auto_delta(0)


# ------------------------------------------------------------------------------------------ the run's plan


def test_plan_privacy_fixes_the_noise_for_exactly_the_planned_steps() -> None:
    plan = plan_privacy(3.0, auto_delta(1000), 1.0, "prv", None, rows=1000, batch_size=20, total_steps=500)
    assert isinstance(plan, PrivacyPlan)
    assert plan.sample_rate == pytest.approx(0.02)  # batch / rows: each row's chance per Poisson draw
    assert plan.delta == pytest.approx(1e-4)  # auto: the power of ten at most 1 / (10 N)
    assert plan.noise_multiplier == pytest.approx(noise_multiplier_for(3.0, 1e-4, 0.02, 500, "prv"))
    assert (plan.epsilon, plan.planned_steps, plan.max_grad_norm) == (3.0, 500, 1.0)
    assert (plan.accountant, plan.max_physical_batch_size) == ("prv", None)
    assert 3.0 - 0.02 <= plan.spent(500) <= 3.0  # all planned steps stay within the target
    assert plan.spent(0) == 0.0 and plan.spent(100) < plan.spent(500)
    assert plan.spent(500) == spent_epsilon(plan.noise_multiplier, 0.02, 500, 1e-4, "prv")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.epsilon = 8.0  # type: ignore[misc]


def test_plan_privacy_keeps_an_explicit_delta_and_caps_the_sample_rate() -> None:
    plan = plan_privacy(8.0, 1e-6, 0.5, "rdp", 4, rows=10, batch_size=16, total_steps=20)
    assert plan.delta == 1e-6 and plan.sample_rate == 1.0  # a batch larger than the data: every row, every step
    assert plan.noise_multiplier == pytest.approx(noise_multiplier_for(8.0, 1e-6, 1.0, 20, "rdp"))
    assert (plan.accountant, plan.max_physical_batch_size, plan.max_grad_norm) == ("rdp", 4, 0.5)


def test_plan_privacy_refuses_a_budget_that_cannot_be_met() -> None:
    with pytest.raises(ConfigError, match="cannot be met"):
        plan_privacy(1e-4, 1e-12, 1.0, "rdp", None, rows=10, batch_size=10, total_steps=100_000)


def test_the_plans_record_and_description_give_the_spent_budget() -> None:
    plan = plan_privacy(4.0, 1e-5, 1.0, "prv", 8, rows=4127, batch_size=64, total_steps=300)
    record = plan.record(150)
    assert record == {
        "epsilon": plan.spent(150),
        "target_epsilon": 4.0,
        "delta": 1e-5,
        "noise_multiplier": plan.noise_multiplier,
        "sample_rate": pytest.approx(64 / 4127),
        "steps": 150,
        "max_grad_norm": 1.0,
        "accountant": "prv",
    }
    assert record["epsilon"] < plan.record(300)["epsilon"] <= 4.0  # fewer steps taken, less spent
    described = plan.describe()
    assert described.startswith("DP-SGD: epsilon 4, delta 1e-05, noise multiplier ")
    assert f"{plan.noise_multiplier:.3f}" in described and "300 steps (prv accountant)" in described
