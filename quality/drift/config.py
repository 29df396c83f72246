"""Settings and result types of the drift monitor.

``DriftConfig``, ``StatResult``, ``WindowProfile`` and ``DriftDecision``.

The statistics themselves are in ``lexical.py`` / ``nulls.py``, their assembly per window in ``profile.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STAT_NAMES = (
    "token_js",
    "oov_rate",
    "length_ks",
    "emerging_z",
    "bytes_per_token",
    "lm_bpb",
    "embedding_mmd2",
    "quarantine_rate",
)
"""Every statistic a profile can hold, in report order."""

CHURN_STATS = ("token_js", "oov_rate", "length_ks", "emerging_z")
"""Statistics (all > 0) that also get the churn null from the earlier windows' values (``churn_test``)."""


@dataclass(frozen=True)
class DriftConfig:
    """Settings of the drift monitor (``[drift]`` in ``streamtune.toml``).

    Attributes:
        enabled: profile windows and run ``drift_sensor`` at all.
        reference_windows: the reference pool is the curated rows of this many windows that landed
            before the current one.
        min_reference_windows: no alarm is possible before this many earlier windows exist (the
            statistics are still computed).
        sample_rows: at most this many rows of the window and of the reference pool are used by the
            lexical statistics (uniform sample, seeded). 4000 is what ``bench/drift.py`` measured
            the MCP detection with; fewer texts give the emerging-term test less power.
        embed_rows: at most this many rows per side are embedded for the MMD test (1–2k per the
            research notes; embedding costs ~2–20 ms per text on a loaded CPU).
        lm_rows: at most this many rows per side are scored by the champion.
        null_splits: permutations of the pooled texts for the lexical nulls; needs
            ``>= n_stats / false_alarm_rate`` to be able to reject at all.
        permutations: permutations for the MMD / mean-difference nulls.
        false_alarm_rate: family-wise rate of windows that exceed on some statistic without drift.
        adwin_delta: confidence of the ADWIN change detector over each statistic's series.
        cooldown_s: ``drift_sensor`` requests at most one drift-triggered fine-tune per this many
            seconds.
        prior_scale: weight of the informative Dirichlet prior of ``emerging_z``: ``alpha_w =
            prior_scale * (reference + current texts containing w)`` (1.0 = the pooled sample as the
            background corpus, as in Monroe et al. 2008 sec. 3.5).
        top_terms: emerging terms (highest z) kept per window for the report and metadata.
        churn_windows: the churn null uses at most this many most recent earlier values of a statistic.
        churn_min_windows: the churn null is used once at least this many earlier values exist (below
            it, only the permutation null and the ADWIN / new-extreme confirmation apply).
        max_windows_without_retrain: staleness bound of ``drift_sensor``: it also requests a fine-tune
            (reason ``staleness``) once this many profiled windows passed since its last request,
            drift or not; 0 disables the bound.
        retrain_on: ``"new_window"`` (default): ``new_window_sensor`` requests a fine-tune for every
            approved window and ``drift_sensor`` adds one on confirmed drift; ``"drift"``: new
            windows only accumulate, and fine-tunes come from confirmed drift and the periodic
            schedule (drift-triggered retraining).
        near_dup_jaccard: ``emerging_z`` counts each text with weight 1 / (texts of the pooled sample whose
            word set has Jaccard similarity >= this with it; ``near_duplicate_weights``, Morcos et al. 2011),
            so a templated upload burst of one package family counts about once; 0 = every text weighs 1.
        emerging_windows: ``emerging_z`` compares the last this-many windows (the current one included)
            with the ``reference_windows`` windows before them (``profile_window(emerging_samples=...)``):
            2 = a term that rose last month and stays up this month gathers the evidence of both months,
            while a one-month burst is diluted; 1 = the window vs its reference like the other statistics.
            The alarm still fires at the current window (no waiting for persistence).
        seed: seed of every sample, split and permutation.
    """

    enabled: bool = True
    reference_windows: int = 3
    min_reference_windows: int = 2
    sample_rows: int = 4000
    embed_rows: int = 500
    lm_rows: int = 256
    null_splits: int = 400
    permutations: int = 400
    false_alarm_rate: float = 0.05
    adwin_delta: float = 0.05
    cooldown_s: float = 3600.0
    prior_scale: float = 1.0
    top_terms: int = 10
    churn_windows: int = 12
    churn_min_windows: int = 6
    max_windows_without_retrain: int = 0
    retrain_on: str = "new_window"
    near_dup_jaccard: float = 0.5
    emerging_windows: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm_rate < 1:
            raise ValueError(f"drift.false_alarm_rate must be in (0, 1), got {self.false_alarm_rate}")
        if self.reference_windows < 1 or self.min_reference_windows < 1:
            raise ValueError("drift.reference_windows and drift.min_reference_windows must be >= 1")
        if self.retrain_on not in {"new_window", "drift"}:
            raise ValueError(f"drift.retrain_on must be 'new_window' or 'drift', got {self.retrain_on!r}")
        if min(self.sample_rows, self.embed_rows, self.lm_rows, self.null_splits, self.permutations) < 1:
            raise ValueError("drift sample sizes, null_splits and permutations must be >= 1")
        if self.prior_scale <= 0 or self.top_terms < 0:
            raise ValueError("drift.prior_scale must be > 0 and drift.top_terms >= 0")
        if self.churn_min_windows < 3 or self.churn_windows < self.churn_min_windows:
            raise ValueError("drift.churn_min_windows must be >= 3 and <= drift.churn_windows")
        if self.emerging_windows < 1:
            raise ValueError(f"drift.emerging_windows must be >= 1, got {self.emerging_windows}")
        if not 0 <= self.near_dup_jaccard <= 1:
            raise ValueError(f"drift.near_dup_jaccard must be in [0, 1] (0 = off), got {self.near_dup_jaccard}")
        if self.max_windows_without_retrain < 0:
            raise ValueError("drift.max_windows_without_retrain must be >= 0 (0 = no staleness bound)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StatResult:
    """One statistic of one window: value, p-value under the no-drift null, and the threshold used.

    ``threshold`` is the value the statistic had to exceed at the Bonferroni level (the null's
    ``1 - alpha`` quantile) when the null is an explicit sample, else None (p-value tests).
    """

    value: float
    p_value: float
    threshold: float | None = None


@dataclass
class WindowProfile:
    """Statistics of one window against its reference.

    Attributes:
        window_key: the window (Dagster partition).
        reference_keys: windows pooled as reference, oldest first.
        rows: curated rows of the window; ``sample_rows`` of them were used.
        stats: statistic name -> ``StatResult`` (only the statistics that could be computed).
        alpha: per-statistic significance level (``false_alarm_rate / len(stats)``).
        exceeded: statistics with ``p_value < alpha``.
        info: descriptive numbers that are not tested (sizes, raw rates, seconds per part, and for
            churn-calibrated statistics ``<stat>_p_permutation`` / ``<stat>_p_churn`` and the two
            thresholds).
        emerging: the ``top_terms`` terms with the highest ``emerging_z`` z-scores, highest first:
            dicts ``{"term": str, "z": float, "reference_texts": int, "current_texts": int}``
            (texts of the two samples containing the term). Terms are raw vocabulary: redact them
            (``quality.pii.redact_values``) before they leave the process.
        emerging_over_threshold: number of terms whose z is above the final ``emerging_z`` threshold
            (family-wise over terms at ``alpha``; 0 when not tested).
        calibration: statistic -> ``"permutation"`` or ``"permutation+churn"`` (which nulls set its
            p-value).
    """

    window_key: str
    reference_keys: list[str]
    rows: int
    sample_rows: int
    stats: dict[str, StatResult] = field(default_factory=dict)
    alpha: float = 0.0
    exceeded: list[str] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)
    emerging: list[dict] = field(default_factory=list)
    emerging_over_threshold: int = 0
    calibration: dict[str, str] = field(default_factory=dict)

    def flat(self) -> dict[str, float | None]:
        """``{name: value, name_p: p_value, name_threshold: threshold}`` for every statistic in ``STAT_NAMES``."""
        out: dict[str, float | None] = {}
        for name in STAT_NAMES:
            r = self.stats.get(name)
            out[name] = None if r is None else float(r.value)
            out[f"{name}_p"] = None if r is None else float(r.p_value)
            out[f"{name}_threshold"] = None if r is None or r.threshold is None else float(r.threshold)
        return out


@dataclass(frozen=True)
class DriftDecision:
    """Whether a window's drift is confirmed, and why.

    Attributes:
        drift: True when at least one exceeded statistic is also a change of its series.
        confirmed: exceeded statistics confirmed by the series (ADWIN or a new extreme), report order.
        adwin: statistics whose ADWIN flagged a change at the current window.
        reason: one line for run tags / the UI.
    """

    drift: bool
    confirmed: list[str]
    adwin: list[str]
    reason: str
