"""Recipe meta-learner: Thompson sampling over a small grid of update recipes, with the drift level as context.

Algorithm (Thompson 1933; Russo, Van Roy, Kazerouni, Osband & Wen 2018, "A Tutorial on Thompson Sampling",
sec. 3 and 7 for Gaussian bandits; regret bounds in Agrawal & Goyal 2013, "Further Optimal Regret Bounds for
Thompson Sampling"): each (drift bucket, arm) pair keeps a Normal-Inverse-Gamma posterior over the mean and
variance of its reward. To pick a recipe for an update whose shift falls in bucket ``b``, draw for every arm
``sigma^2 ~ InvGamma(alpha_n, beta_n)`` and ``mu ~ Normal(mu_n, sigma^2 / kappa_n)`` and take the arm with the
largest draw; once the update's reward is known, add it to that pair's sufficient statistics (count, mean and
sum of squared deviations, Welford's update), which is all the posterior needs (conjugate update, Murphy 2007
"Conjugate Bayesian analysis of the Gaussian distribution", sec. 6):

    kappa_n = kappa_0 + n,   mu_n = (kappa_0 mu_0 + n xbar) / kappa_n,   alpha_n = alpha_0 + n / 2,
    beta_n = beta_0 + M2 / 2 + kappa_0 n (xbar - mu_0)^2 / (2 kappa_n).

Reward (``reward``): the prequential gain in bits/byte per unit of training compute, i.e. (the champion's
bits/byte on the window before the update - the challenger's bits/byte on that window's held-out rows) per
1e6 training tokens; positive = the update paid.

Context: the shift strength s of ``training.recipe.shift_strength`` cut into ``BUCKETS`` (low < 1/3 <= mid <
2/3 <= high): the best recipe for a mild month need not be the best after a large shift.

Cost per update: one Gamma and one Normal draw per arm (12 arms in ``GRID``) and one row written per reward;
the state is ``len(BUCKETS) * len(GRID)`` = 36 sufficient statistics (``orchestration.store.meta`` keeps the
rewards as rows in DuckDB, so the posterior survives restarts). No torch, no Dagster.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from training.recipe import Recipe, RecipeBase

BUCKETS = ("low", "mid", "high")


@dataclass(frozen=True)
class RecipeArm:
    """One recipe of the grid, relative to the fixed recipe: peak lr and steps multipliers, replay share."""

    lr_mult: float
    replay_fraction: float
    steps_mult: float

    @property
    def name(self) -> str:
        return f"lr{self.lr_mult:g}-replay{self.replay_fraction:g}-steps{self.steps_mult:g}"

    def recipe(self, base: RecipeBase, bucket: str, shift: float = float("nan")) -> Recipe:
        """This arm applied to ``base`` as a ``Recipe`` (kind "meta")."""
        steps = None if base.max_steps is None else max(1, round(base.max_steps * self.steps_mult))
        reason = f"Thompson sampling, drift bucket {bucket}: arm {self.name}"
        return Recipe(
            base.peak_lr * self.lr_mult,
            base.epochs * self.steps_mult,
            steps,
            self.replay_fraction,
            True,
            reason,
            "meta",
            shift,
            self.name,
        )


GRID = tuple(
    RecipeArm(lr, replay, steps) for lr, replay, steps in itertools.product((0.5, 1.0, 1.5), (0.05, 0.25), (0.5, 1.0))
)
"""3 peak-lr multipliers x 2 replay shares (Ibrahim et al. 2024 sec. 5: 5% and 25%) x 2 step multipliers."""


def drift_bucket(shift: float) -> str:
    """``BUCKETS`` entry of a shift strength in [0, 1] (NaN or < 0 counts as low)."""
    if not shift >= 1 / 3:
        return "low"
    return "mid" if shift < 2 / 3 else "high"


def reward(bpb_before: float, bpb_after: float, train_tokens: int) -> float:
    """Prequential gain per unit of compute: ``(bpb_before - bpb_after) / (train_tokens / 1e6)``, in bits/byte per
    1e6 training tokens.

    Raises:
        ValueError: ``train_tokens`` < 1.
    """
    if train_tokens < 1:
        raise ValueError(f"train_tokens must be >= 1, got {train_tokens}")
    return (bpb_before - bpb_after) / (train_tokens / 1e6)


@dataclass(frozen=True)
class ArmStats:
    """Sufficient statistics of one (bucket, arm): count, mean and sum of squared deviations of its rewards."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> ArmStats:
        """With one more reward (Welford's update)."""
        n = self.n + 1
        delta = x - self.mean
        mean = self.mean + delta / n
        return ArmStats(n, mean, self.m2 + delta * (x - mean))


@dataclass(frozen=True)
class NigPrior:
    """Normal-Inverse-Gamma prior of every arm: mean ``mu0`` (no gain) with ``kappa0`` pseudo-observations, and
    ``alpha0``, ``beta0`` for the variance (prior mean variance ``beta0 / (alpha0 - 1)`` when ``alpha0 > 1``)."""

    mu0: float = 0.0
    kappa0: float = 1.0
    alpha0: float = 1.0
    beta0: float = 1.0

    def posterior(self, s: ArmStats) -> tuple[float, float, float, float]:
        """``(mu_n, kappa_n, alpha_n, beta_n)`` after the rewards summarized by ``s`` (module docstring)."""
        kappa = self.kappa0 + s.n
        mu = (self.kappa0 * self.mu0 + s.n * s.mean) / kappa
        alpha = self.alpha0 + s.n / 2
        beta = self.beta0 + s.m2 / 2 + self.kappa0 * s.n * (s.mean - self.mu0) ** 2 / (2 * kappa)
        return mu, kappa, alpha, beta


class ThompsonRecipeLearner:
    """Thompson sampling over ``grid`` per drift bucket (module docstring: algorithm, sources, cost).

    Args:
        stats: ``{(bucket, arm name): ArmStats}`` learned so far (missing pairs start at the prior).
        grid: the arms.
        prior: the Normal-Inverse-Gamma prior of every arm.
    """

    def __init__(
        self,
        stats: Mapping[tuple[str, str], ArmStats] | None = None,
        grid: Sequence[RecipeArm] = GRID,
        prior: NigPrior | None = None,
    ) -> None:
        self.grid = tuple(grid)
        self.prior = prior or NigPrior()
        self.stats: dict[tuple[str, str], ArmStats] = dict(stats or {})

    def _check_bucket(self, bucket: str) -> None:
        if bucket not in BUCKETS:
            raise ValueError(f"bucket must be one of {BUCKETS}, got {bucket!r}")

    def choose(self, bucket: str, rng: np.random.Generator) -> RecipeArm:
        """One Thompson draw per arm; the arm with the largest sampled mean reward.

        Raises:
            ValueError: an unknown bucket.
        """
        self._check_bucket(bucket)
        draws = []
        for arm in self.grid:
            mu, kappa, alpha, beta = self.prior.posterior(self.stats.get((bucket, arm.name), ArmStats()))
            sigma2 = beta / rng.gamma(alpha)  # InvGamma(alpha, beta)
            draws.append(rng.normal(mu, np.sqrt(sigma2 / kappa)))
        return self.grid[int(np.argmax(draws))]

    def update(self, bucket: str, arm: str, value: float) -> None:
        """Add one reward of ``arm`` (its name) in ``bucket``.

        Raises:
            ValueError: an unknown bucket or arm, or a non-finite reward.
        """
        self._check_bucket(bucket)
        if arm not in {a.name for a in self.grid}:
            raise ValueError(f"unknown arm {arm!r}")
        if not np.isfinite(value):
            raise ValueError(f"reward must be finite, got {value!r}")
        self.stats[(bucket, arm)] = self.stats.get((bucket, arm), ArmStats()).add(float(value))

    def best(self, bucket: str) -> RecipeArm:
        """The arm with the highest posterior mean reward in ``bucket`` (ties: grid order)."""
        self._check_bucket(bucket)
        means = [self.prior.posterior(self.stats.get((bucket, a.name), ArmStats()))[0] for a in self.grid]
        return self.grid[int(np.argmax(means))]
