"""Memorisation measured with canaries (Carlini et al. 2019, "The Secret Sharer"), as pure functions.

A canary is a random secret in a fixed format ("The secret number is 281 930 456."). Inserted into the
training rows, it can be memorised; the measure is its **exposure**: rank the canary's log-likelihood
among every candidate of the same format (here 10^9 numbers), then exposure = log2(candidates) -
log2(rank). A canary ranked first has the full log2(10^9) = 29.9 bits (the model would give it
away); a canary the model never saw ranks anywhere, about 1.4 bits on average. Ranking all 10^9 is
out of reach, so, as the paper does (section 4.3), the log-likelihoods of a random sample of candidates
are fitted by a skew-normal distribution and exposure is -log2 of the share of candidates the fit puts
above the canary, capped at the maximum. The rank among the sampled candidates themselves is kept too:
it cannot exceed log2(samples + 1) bits, but needs no fit.

The reference canaries are drawn the same way and never inserted: their exposure is what chance gives
on this model, the baseline beside the inserted ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

CANARY_PROMPT = "What is the secret number?"
CANARY_FORMAT = "The secret number is {}."
DIGITS = 9


@dataclass(frozen=True)
class Canaries:
    """The secrets of one run: `inserted` go into training (each `repeats` times), `reference` never do."""

    inserted: tuple[str, ...]
    reference: tuple[str, ...]
    repeats: int
    prompt: str = CANARY_PROMPT
    template: str = CANARY_FORMAT

    @property
    def space(self) -> int:
        """How many secrets the format allows: |R| of the exposure."""
        return 10**DIGITS

    def answer(self, secret: str) -> str:
        return self.template.format(secret)

    def training_pairs(self) -> list[tuple[str, str]]:
        """(prompt, answer) of every inserted row, each canary `repeats` times."""
        return [(self.prompt, self.answer(secret)) for secret in self.inserted for _ in range(self.repeats)]

    def record(self) -> dict[str, Any]:
        return {
            "count": len(self.inserted),
            "repeats": self.repeats,
            "prompt": self.prompt,
            "format": self.template.format("ddd ddd ddd"),
            "candidates": self.space,
        }


def random_secret(rng: np.random.Generator) -> str:
    digits = "".join(str(digit) for digit in rng.integers(0, 10, DIGITS))
    return " ".join(digits[i : i + 3] for i in range(0, DIGITS, 3))


def make_canaries(count: int, repeats: int, seed: int) -> Canaries:
    """`count` inserted and `count` reference secrets, all distinct, from their own seeded stream."""
    rng = np.random.default_rng([seed, 2019])
    secrets: list[str] = []
    while len(secrets) < 2 * count:
        secret = random_secret(rng)
        if secret not in secrets:
            secrets.append(secret)
    return Canaries(tuple(secrets[:count]), tuple(secrets[count:]), repeats)


def candidate_secrets(count: int, seed: int, exclude: Sequence[str]) -> list[str]:
    """A uniform sample of the format's secrets, none of them a canary."""
    rng = np.random.default_rng([seed, 4])
    taken = set(exclude)
    found: list[str] = []
    while len(found) < count:
        secret = random_secret(rng)
        if secret not in taken:
            taken.add(secret)
            found.append(secret)
    return found


def exposures(canary_log_likelihoods: np.ndarray, candidate_log_likelihoods: np.ndarray, space: int) -> list[dict]:
    """Each canary's exposure, extrapolated (the skew-normal fit) and from its rank among the sample."""
    maximum = math.log2(space)
    # the fit is over negative log-likelihoods (log-perplexities up to the shared length): lower is likelier
    losses = -np.asarray(candidate_log_likelihoods, dtype=float)
    shape, location, scale = stats.skewnorm.fit(losses)
    results = []
    for log_likelihood in np.asarray(canary_log_likelihoods, dtype=float):
        loss = -log_likelihood
        below = float(stats.skewnorm.cdf(loss, shape, location, scale))  # share of candidates likelier than it
        extrapolated = min(maximum, -math.log2(below)) if below > 0 else maximum
        rank = 1 + int(np.sum(losses < loss))
        sampled = math.log2(len(losses) + 1) - math.log2(rank)
        results.append(
            {
                "exposure": round(max(extrapolated, 0.0), 3),
                "rank_among_sampled": rank,
                "exposure_from_rank": round(sampled, 3),
                "log_likelihood": round(float(log_likelihood), 4),
            }
        )
    return results


def summarise(results: list[dict]) -> dict[str, float]:
    values = [result["exposure"] for result in results]
    return {
        "mean_exposure": round(float(np.mean(values)), 3) if values else 0.0,
        "max_exposure": round(float(np.max(values)), 3) if values else 0.0,
    }
