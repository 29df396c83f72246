"""Per-window drift statistics, calibrated thresholds and a change detector over the window series.

No Dagster or MLflow imports: the ``window_profile`` asset (``assets/monitor.py``) reads rows from
DuckDB, calls ``profile_window`` here, and stores the result.

Each window (the *current* sample) is compared with a *reference* pool (rows of the most recent
earlier curated windows). Every statistic comes with a p-value from a null distribution built on the
data itself, never a guessed cut-off:

=====================  =========================================================  ==========================
statistic              value                                                      null / p-value
=====================  =========================================================  ==========================
``token_js``           Jensen–Shannon divergence (bits, in [0, 1]) between the    permutation of texts
                       word-unigram distributions of reference and current         between the two samples
``oov_rate``           share of current word tokens not in the reference          same permutations
                       vocabulary (in [0, 1])
``length_ks``          two-sample Kolmogorov–Smirnov statistic of text lengths     same permutations
                       (characters)
``emerging_z``         largest per-term z-score of the log-odds ratio with an      same permutations (max-T:
                       informative Dirichlet prior, current vs reference, over     the null of the *maximum*
                       terms (Monroe, Colaresi & Quinn 2008, sec. 3.5): the most   over terms, so the count of
                       strongly *emerging* word of the window. Texts are counted   terms above it is
                       with near-duplicate weights (``near_duplicate_weights``,    family-wise over terms)
                       one package family's templated burst counts ~once), and
                       "current" = the last ``emerging_windows`` windows vs the
                       ``reference_windows`` before them
``bytes_per_token``    change of UTF-8 bytes per token under the current           permutation of texts
                       tokenizer (current − reference; optional)                   between the two samples
``lm_bpb``             change of the champion's bits per byte (current −           permutation of texts
                       reference; optional)
``embedding_mmd2``     unbiased MMD² with a Gaussian kernel (median-heuristic      permutation of texts
                       bandwidth) on sentence embeddings (optional)
``quarantine_rate``    quarantined share of the window minus the reference's      Fisher's exact test
=====================  =========================================================  ==========================

A window *exceeds* on a statistic when its p-value is below ``false_alarm_rate / k`` (Bonferroni over
the ``k`` statistics computed), so without drift at most ``false_alarm_rate`` of windows exceed on
anything.

*Churn calibration.* A real stream always moves a little, so the permutation null (which only knows
sampling noise) is exceeded by the lexical statistics almost every month. When at least
``churn_min_windows`` earlier windows have a value of a lexical statistic (``CHURN_STATS``; each of
them measured against *its* reference the same way, i.e. the stream's own month-to-month variation),
the statistic gets a second null: a one-sided Student-t prediction interval for the next value of
log(statistic) from the last ``churn_windows`` values (exact for i.i.d. log-normal values; see
``churn_test``). The p-value used is then the larger of the two (the window must be unusual both
against sampling noise and against ordinary churn), and the threshold the larger of the two
quantiles. A statistic calibrated this way is confirmed as soon as it exceeds (the churn null already
is a comparison with the series); the others keep the second stage below. Drift is *confirmed* only when the exceedance is also a change of the per-window series:
ADWIN (Bifet & Gavaldà, "Learning from time-changing data with adaptive windowing", SDM 2007; the
``river`` implementation) runs over each statistic's history of values and must flag the current
window, or the current value must exceed every earlier value of that statistic (a new extreme);
this stage applies to statistics without a churn null (too little history, or not lexical). This
second stage keeps a stream that drifts slowly and steadily (every month differs a bit from the
last) from asking for a retrain every window.

MMD: Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A kernel two-sample test", JMLR 13 (2012),
unbiased estimator (eq. 3) with a permutation null. Jensen–Shannon: Lin, IEEE Trans. Inf. Theory 37
(1991). Token-frequency JS, cross-entropy and embedding distances as drift families: Chang et al.,
"Characterizing and measuring linguistic dataset drift", ACL 2023. Log-odds with an informative
Dirichlet prior: Monroe, Colaresi, Quinn, "Fightin' words: lexical feature selection and evaluation
for identifying the content of political conflict", Political Analysis 16(4), 2008, sec. 3.5
(eqs. 16–22). Max-T permutation thresholds over many terms: Westfall & Young, "Resampling-based
multiple testing", 1993.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = [
    "DriftConfig",
    "StatResult",
    "WindowProfile",
    "profile_window",
    "confirm_drift",
    "token_js_null",
    "mmd2_permutation_test",
    "mean_difference_permutation_test",
    "quarantine_test",
    "log_odds_dirichlet",
    "lexical_tests",
    "churn_test",
    "STAT_NAMES",
    "CHURN_STATS",
]

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

_WORD = re.compile(r"\w+", re.UNICODE)


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


# -- lexical statistics ----------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` tokens of a text (the unit of the unigram statistics)."""
    return _WORD.findall(text.lower())


def _doc_term(texts: Sequence[str]) -> sp.csr_matrix:
    """Sparse (n_texts, n_words) count matrix, int64."""
    return _doc_term_vocab(texts)[0]


def _doc_term_vocab(texts: Sequence[str]) -> tuple[sp.csr_matrix, list[str]]:
    """Sparse (n_texts, n_words) int64 count matrix and its vocabulary (column order)."""
    vocab: dict[str, int] = {}
    indptr, indices = [0], []
    for t in texts:
        for w in words(t):
            indices.append(vocab.setdefault(w, len(vocab)))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.int64)
    m = sp.csr_matrix((data, np.asarray(indices, dtype=np.int64), np.asarray(indptr)), shape=(len(texts), len(vocab)))
    m.sum_duplicates()
    return m, list(vocab)


def _js_bits(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits of two count vectors over the same vocabulary (0 if either is empty)."""
    ps, qs = p_counts.sum(), q_counts.sum()
    if ps == 0 or qs == 0:
        return 0.0
    p, q = p_counts / ps, q_counts / qs
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def _oov(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    total = cur_counts.sum()
    return float(cur_counts[ref_counts == 0].sum() / total) if total else 0.0


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic sup |F_a - F_b| (0 if either side is empty)."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def _lexical(
    x: sp.csr_matrix, lengths: np.ndarray, ref_idx: np.ndarray, cur_idx: np.ndarray
) -> tuple[float, float, float]:
    ref = np.asarray(x[ref_idx].sum(axis=0)).ravel()
    cur = np.asarray(x[cur_idx].sum(axis=0)).ravel()
    return _js_bits(ref, cur), _oov(ref, cur), _ks(lengths[ref_idx], lengths[cur_idx])


def _presence(x: sp.csr_matrix) -> sp.csr_matrix:
    """0/1 copy of a count matrix (a text contains the term or not), int64."""
    b = x.copy()
    b.data = np.ones_like(b.data)
    return b


def near_duplicate_weights(presence: sp.spmatrix, threshold: float, *, block: int = 1024) -> np.ndarray:
    """Per-text weight ``1 / (texts whose word set has Jaccard similarity >= threshold with it)``.

    Sequence reweighting as in direct-coupling analysis of protein families (Morcos et al., "Direct-coupling
    analysis of residue coevolution captures native contacts across many protein families", PNAS 108(49),
    2011, Methods, "effective number of sequences" M_eff = sum_a 1/m_a with m_a the sequences at >= 80%
    identity to a; Weigt et al., PNAS 106(1), 2009): a cluster of m near-identical texts (one package
    family's templated upload burst, "<service> data for botocore", "Dataclass for boto3 <service>.")
    weighs 1 in total, while m texts that merely share one word (a real topic) keep weight ~m. Each text
    counts itself, so every weight is in (0, 1]. Two texts without words have Jaccard 1.

    Args:
        presence: (N, V) sparse 0/1 text-term matrix (``_presence``), any numeric dtype.
        threshold: Jaccard similarity in (0, 1] at or above which two texts are near duplicates.
        block: rows per dense (block, N) similarity block (memory ``8 * block * N`` bytes).

    Returns:
        (N,) float64 weights in (0, 1].

    Raises:
        ValueError: if ``threshold`` is not in (0, 1].
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate Jaccard threshold must be in (0, 1], got {threshold}")
    x = sp.csr_matrix(presence, dtype=np.float64)
    x.data[:] = 1.0
    n = x.shape[0]
    sizes = np.asarray(x.sum(axis=1)).ravel()
    xt = x.T.tocsc()
    neighbours = np.zeros(n)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        inter = (x[lo:hi] @ xt).toarray()
        union = sizes[lo:hi, None] + sizes[None, :] - inter
        jac = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
        neighbours[lo:hi] = np.sum(jac >= threshold - 1e-12, axis=1)
    return 1.0 / np.maximum(neighbours, 1.0)


def log_odds_dirichlet(
    ref_counts: np.ndarray, cur_counts: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-term log-odds ratio (current vs reference) with an informative Dirichlet prior, and its z-score.

    Monroe, Colaresi & Quinn (2008), sec. 3.5, eqs. 16–22: with counts ``y`` of term ``w`` in
    each group, group totals ``n`` and prior ``alpha_w`` (``alpha_0 = sum alpha``),

        delta_w = log((y_cur + a_w) / (n_cur + a_0 - y_cur - a_w)) - log((y_ref + a_w) / (n_ref + a_0 - y_ref - a_w))
        var_w  ~= 1 / (y_cur + a_w) + 1 / (y_ref + a_w),      z_w = delta_w / sqrt(var_w).

    Args:
        ref_counts: (V,) non-negative counts of each term in the reference (float or int).
        cur_counts: (V,) counts in the current sample, same vocabulary.
        prior: (V,) Dirichlet pseudo-counts ``alpha_w`` > 0 (terms with prior 0 get z = 0).

    Returns:
        ``(delta, z)``, two (V,) float64 arrays; z > 0 = more frequent in the current sample
        (emerging), z < 0 = fading.

    Raises:
        ValueError: if the three arrays differ in shape.
    """
    ref = np.asarray(ref_counts, np.float64)
    cur = np.asarray(cur_counts, np.float64)
    a = np.asarray(prior, np.float64)
    if not (ref.shape == cur.shape == a.shape):
        raise ValueError(f"counts and prior must have one shape, got {ref.shape}, {cur.shape}, {a.shape}")
    a0 = a.sum()
    ok = a > 0
    delta = np.zeros_like(a)
    z = np.zeros_like(a)
    yc, yr, aw = cur[ok], ref[ok], a[ok]
    d = np.log((yc + aw) / (cur.sum() + a0 - yc - aw)) - np.log((yr + aw) / (ref.sum() + a0 - yr - aw))
    delta[ok] = d
    z[ok] = d / np.sqrt(1.0 / (yc + aw) + 1.0 / (yr + aw))
    return delta, z


def _max_z_rows(ref: np.ndarray, cur: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``max_w z_w`` of ``log_odds_dirichlet`` for each row of (B, V) count arrays (vectorised null)."""
    a0 = a.sum()
    nr, nc = ref.sum(axis=1, keepdims=True), cur.sum(axis=1, keepdims=True)
    d = np.log((cur + a) / (nc + a0 - cur - a)) - np.log((ref + a) / (nr + a0 - ref - a))
    return (d / np.sqrt(1.0 / (cur + a) + 1.0 / (ref + a))).max(axis=1)


@dataclass
class LexicalResult:
    """``lexical_tests`` output: statistics plus the per-term emerging table of the observed split.

    Attributes:
        stats: ``{"token_js", "oov_rate", "length_ks", "emerging_z"}`` -> ``StatResult`` (permutation null).
        terms: vocabulary, (V,) list of str.
        z: (V,) float64 z-scores of the observed split (``log_odds_dirichlet``).
        ref_texts, cur_texts: (V,) int64 texts of each sample containing the term.
        ref_effective, cur_effective: (V,) float64 near-duplicate-weighted texts containing the term (the
            counts ``z`` was computed from; equal to the raw counts without ``near_dup_jaccard``).
        ref_effective_texts, cur_effective_texts: effective sample sizes (sum of the text weights).
    """

    stats: dict[str, StatResult]
    terms: list[str]
    z: np.ndarray
    ref_texts: np.ndarray
    cur_texts: np.ndarray
    ref_effective: np.ndarray | None = None
    cur_effective: np.ndarray | None = None
    ref_effective_texts: float = 0.0
    cur_effective_texts: float = 0.0

    def top(self, k: int, threshold: float | None = None) -> tuple[list[dict], int]:
        """The ``k`` highest-z terms (z > 0) and the number of terms with z above ``threshold``."""
        order = np.argsort(-self.z, kind="stable")[:k]
        eff = self.cur_effective if self.cur_effective is not None else self.cur_texts
        top = [
            {
                "term": self.terms[i],
                "z": round(float(self.z[i]), 3),
                "reference_texts": int(self.ref_texts[i]),
                "current_texts": int(self.cur_texts[i]),
                "current_effective_texts": round(float(eff[i]), 1),
            }
            for i in order
            if self.z[i] > 0
        ]
        over = int(np.sum(self.z > threshold)) if threshold is not None else 0
        return top, over


def lexical_tests(
    reference: Sequence[str],
    current: Sequence[str],
    *,
    splits: int,
    alpha: float,
    seed: int = 0,
    prior_scale: float = 1.0,
    near_dup_jaccard: float | None = None,
) -> LexicalResult:
    """Unigram JS, OOV rate, length KS and emerging-term max z of ``current`` vs ``reference``, permutation p-values.

    ``emerging_z`` works on *text presence* (how many texts contain the term, so one long text or a
    repeated word cannot dominate) with the prior ``alpha_w = prior_scale * (texts of both samples
    containing w)`` (Monroe et al. 2008 sec. 3.5; the prior is invariant under relabelling, so it is
    the same in every permutation). Its null is the permutation distribution of the *maximum* z over
    the vocabulary (Westfall–Young max-T), so its ``threshold`` is a per-term z cut-off with
    family-wise level ``alpha`` over all terms.

    With ``near_dup_jaccard`` set, each text's presence counts with its near-duplicate weight
    (``near_duplicate_weights`` over the *pooled* sample, so the weights, like the prior, do not depend on
    the labels and the permutation null stays exact): a burst of m templated texts from one package
    family counts about once, a term spreading over m unrelated texts counts about m times.

    Args:
        reference: reference texts (>= 2).
        current: current texts (>= 1).
        splits: number of relabellings of the pooled texts.
        alpha: level whose null quantile is reported as ``threshold``.
        seed: RNG seed.
        prior_scale: weight of the Dirichlet prior (> 0).
        near_dup_jaccard: Jaccard threshold of ``near_duplicate_weights`` for ``emerging_z``, or None
            (every text weighs 1). JS, OOV and length KS are unweighted either way.

    Returns:
        ``LexicalResult``.

    Raises:
        ValueError: if ``reference`` has fewer than 2 texts or ``current`` is empty.
    """
    if len(reference) < 2 or len(current) < 1:
        raise ValueError(f"need >= 2 reference and >= 1 current texts, got {len(reference)} and {len(current)}")
    rng = np.random.default_rng(seed)
    texts = list(reference) + list(current)
    n_ref = len(reference)
    x, vocab = _doc_term_vocab(texts)
    xp = _presence(x).astype(np.float64)
    raw = xp.tocsc()
    if near_dup_jaccard is not None:
        weights = near_duplicate_weights(xp, near_dup_jaccard)
        xb = sp.diags(weights).dot(xp).tocsc()
    else:
        weights = np.ones(len(texts))
        xb = raw
    prior = prior_scale * np.asarray(xb.sum(axis=0)).ravel()
    lengths = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
    ref_idx, cur_idx = np.arange(n_ref), np.arange(n_ref, len(texts))
    observed = list(_lexical(x, lengths, ref_idx, cur_idx))
    ref_b = np.asarray(xb[ref_idx].sum(axis=0)).ravel()
    cur_b = np.asarray(xb[cur_idx].sum(axis=0)).ravel()
    _, z = log_odds_dirichlet(ref_b, cur_b, prior)
    observed.append(float(z.max()) if len(z) else 0.0)
    null = np.empty((splits, 4))
    # relabellings as a (splits, n) 0/1 membership matrix: the presence sums of all of them in one product
    perms = [rng.permutation(len(texts)) for _ in range(splits)]
    member = np.zeros((splits, len(texts)))
    for b, perm in enumerate(perms):
        null[b, :3] = _lexical(x, lengths, perm[:n_ref], perm[n_ref:])
        member[b, perm[:n_ref]] = 1.0
    total_b = ref_b + cur_b
    ref_null = np.asarray(xb.T.dot(member.T).T) if len(total_b) else np.zeros((splits, 0))
    for lo in range(0, splits, 64):  # (64, V) blocks keep memory flat for large vocabularies
        r = ref_null[lo : lo + 64]
        null[lo : lo + 64, 3] = _max_z_rows(r, total_b[None, :] - r, prior[None, :]) if len(total_b) else 0.0
    stats = {}
    for j, name in enumerate(("token_js", "oov_rate", "length_ks", "emerging_z")):
        p = (1 + int(np.sum(null[:, j] >= observed[j] - 1e-12))) / (splits + 1)
        stats[name] = StatResult(float(observed[j]), p, float(np.quantile(null[:, j], 1 - alpha, method="higher")))
    ref_raw = np.asarray(raw[ref_idx].sum(axis=0)).ravel().astype(np.int64)
    cur_raw = np.asarray(raw[cur_idx].sum(axis=0)).ravel().astype(np.int64)
    return LexicalResult(
        stats, vocab, z, ref_raw, cur_raw, ref_b, cur_b, float(weights[:n_ref].sum()), float(weights[n_ref:].sum())
    )


def churn_test(value: float, past: Sequence[float], alpha: float) -> StatResult:
    """Is ``value`` unusual against the stream's own window-to-window variation of the statistic?

    Null: ``log(value)`` and the ``H`` earlier values ``log(past)`` are i.i.d. normal (the statistic
    of each earlier window against its own reference = ordinary churn). Then
    ``(log v - mean) / (sd * sqrt(1 + 1/H))`` follows Student's t with ``H - 1`` degrees of freedom
    (the one-sided prediction interval for a new observation), which gives the p-value and the
    threshold ``exp(mean + t_{1-alpha, H-1} * sd * sqrt(1 + 1/H))``.

    Args:
        value: the current value (> 0).
        past: earlier values (> 0), at least 3; non-positive or non-finite ones are dropped.
        alpha: level of the threshold.

    Returns:
        ``StatResult(value, p_value, threshold)``.

    Raises:
        ValueError: fewer than 3 usable past values.
    """
    from scipy.stats import t as student_t

    logs = np.log([v for v in past if v is not None and math.isfinite(v) and v > 0])
    h = len(logs)
    if h < 3:
        raise ValueError(f"churn_test needs >= 3 positive past values, got {h}")
    m, sd = float(logs.mean()), float(logs.std(ddof=1))
    scale = max(sd, 1e-12) * math.sqrt(1 + 1 / h)
    lv = math.log(value) if value > 0 else -math.inf
    p = float(student_t.sf((lv - m) / scale, df=h - 1))
    return StatResult(float(value), p, float(math.exp(m + student_t.ppf(1 - alpha, df=h - 1) * scale)))


def token_js_null(
    reference: Sequence[str], current: Sequence[str], *, splits: int, alpha: float, seed: int = 0
) -> dict[str, StatResult]:
    """Unigram JS divergence, OOV rate and length KS of ``current`` vs ``reference``, with permutation p-values.

    Null: the texts of both samples are pooled and randomly relabelled ``splits`` times into groups
    of the original sizes ("records permuted across windows"); the same three statistics are
    computed on each relabelling and the p-value is ``(1 + #{null >= observed}) / (splits + 1)``.
    This is exact under exchangeability whatever the statistic's small-sample bias (unigram
    statistics are strongly biased by sample size); a null built only from splits of the reference
    is conditional on the reference sample and measured anti-conservative on shuffled PyPI windows
    (18% of windows exceeded at a 5% family-wise level), so it is not used.

    Args:
        reference: reference texts (>= 2).
        current: current texts (>= 1).
        splits: number of relabellings.
        alpha: level whose null quantile is reported as ``threshold``.
        seed: RNG seed.

    Returns:
        ``{"token_js", "oov_rate", "length_ks"}`` -> ``StatResult``.

    Raises:
        ValueError: if ``reference`` has fewer than 2 texts or ``current`` is empty.
    """
    res = lexical_tests(reference, current, splits=splits, alpha=alpha, seed=seed)
    return {k: res.stats[k] for k in ("token_js", "oov_rate", "length_ks")}


# -- permutation tests ----------------------------------------------------------------------------


def mean_difference_permutation_test(
    ref_num: np.ndarray,
    ref_den: np.ndarray,
    cur_num: np.ndarray,
    cur_den: np.ndarray,
    *,
    permutations: int,
    seed: int = 0,
) -> StatResult:
    """Two-sided permutation test of a ratio-of-sums difference ``sum(cur_num)/sum(cur_den) - sum(ref_num)/sum(ref_den)``.

    Used for bits per byte (num = bits of a text, den = its bytes) and bytes per token (num = bytes,
    den = tokens): pooled per-text pairs are reassigned to the two sides at random.

    Args:
        ref_num, ref_den, cur_num, cur_den: 1-D float arrays, one entry per text; dens > 0.
        permutations: number of random reassignments.

    Returns:
        ``StatResult(value=difference, p_value)``.
    """
    num = np.concatenate([ref_num, cur_num]).astype(np.float64)
    den = np.concatenate([ref_den, cur_den]).astype(np.float64)
    n_ref = len(ref_num)

    def diff(idx_ref: np.ndarray, idx_cur: np.ndarray) -> float:
        return num[idx_cur].sum() / den[idx_cur].sum() - num[idx_ref].sum() / den[idx_ref].sum()

    observed = diff(np.arange(n_ref), np.arange(n_ref, len(num)))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        perm = rng.permutation(len(num))
        hits += abs(diff(perm[:n_ref], perm[n_ref:])) >= abs(observed) - 1e-12
    return StatResult(float(observed), (1 + hits) / (permutations + 1))


def mmd2_permutation_test(ref: np.ndarray, cur: np.ndarray, *, permutations: int, seed: int = 0) -> StatResult:
    """Unbiased MMD² with a Gaussian kernel and its permutation p-value (Gretton et al., JMLR 2012).

    The bandwidth is the median pairwise Euclidean distance of the pooled sample (median heuristic);
    the kernel matrix is computed once and permutations reindex it (O(permutations * n²)).

    Args:
        ref: (n, d) float32/64 embeddings of the reference sample, n >= 2.
        cur: (m, d) embeddings of the current sample, m >= 2.
        permutations: number of random relabelings.

    Returns:
        ``StatResult(value=MMD²_u, p_value)``; MMD²_u can be slightly negative under the null.

    Raises:
        ValueError: if either side has fewer than 2 rows or the dimensions differ.
    """
    if len(ref) < 2 or len(cur) < 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError(f"need two (>=2, d) samples of the same d, got {ref.shape} and {cur.shape}")
    z = np.concatenate([ref, cur]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    iu = np.triu_indices(len(z), k=1)
    med = float(np.median(d2[iu]))
    k = np.exp(-d2 / (2 * (med if med > 0 else 1.0)))  # exp(-||x-y||² / (2 σ²)), σ = median distance
    np.fill_diagonal(k, 0.0)
    n, m = len(ref), len(cur)

    def mmd2(mask: np.ndarray) -> float:
        a = mask.astype(np.float64)
        b = 1.0 - a
        kxx = a @ k @ a / (n * (n - 1))
        kyy = b @ k @ b / (m * (m - 1))
        kxy = a @ k @ b / (n * m)
        return float(kxx + kyy - 2 * kxy)

    labels = np.zeros(n + m, dtype=bool)
    labels[:n] = True
    observed = mmd2(labels)
    rng = np.random.default_rng(seed)
    hits = sum(mmd2(rng.permutation(labels)) >= observed - 1e-15 for _ in range(permutations))
    return StatResult(observed, (1 + hits) / (permutations + 1))


def quarantine_test(ref_quarantined: int, ref_total: int, cur_quarantined: int, cur_total: int) -> StatResult:
    """Change of the quarantined share (current − reference) with a two-sided Fisher exact p-value.

    Args:
        ref_quarantined, ref_total: quarantined and (curated + quarantined) rows of the reference windows.
        cur_quarantined, cur_total: the same for the current window.

    Returns:
        ``StatResult(value=rate difference in [-1, 1], p_value)``; p = 1 when either total is 0.

    Raises:
        ValueError: a quarantined count is negative or above its total.
    """
    from scipy.stats import fisher_exact

    if not (0 <= ref_quarantined <= max(ref_total, 0) and 0 <= cur_quarantined <= max(cur_total, 0)):
        raise ValueError(
            f"quarantined rows must be within [0, total], got {ref_quarantined}/{ref_total} "
            f"and {cur_quarantined}/{cur_total}"
        )
    if ref_total <= 0 or cur_total <= 0:
        return StatResult(0.0, 1.0)
    diff = cur_quarantined / cur_total - ref_quarantined / ref_total
    table = [[cur_quarantined, cur_total - cur_quarantined], [ref_quarantined, ref_total - ref_quarantined]]
    return StatResult(float(diff), float(fisher_exact(table).pvalue))


# -- one window ----------------------------------------------------------------------------------


def sample(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """At most ``n`` texts, uniformly without replacement, in their original order (deterministic per seed)."""
    if len(texts) <= n:
        return list(texts)
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
    return [texts[i] for i in idx]


def profile_window(
    window_key: str,
    current: Sequence[str],
    reference: Sequence[str],
    *,
    reference_keys: Sequence[str],
    cfg: DriftConfig,
    quarantine: tuple[int, int, int, int] | None = None,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    count_tokens: Callable[[Sequence[str]], np.ndarray] | None = None,
    score_bits: Callable[[Sequence[str]], np.ndarray] | None = None,
    timer: Callable[[], float] | None = None,
    history: Sequence[Mapping[str, float | None]] | None = None,
    emerging_samples: tuple[Sequence[str], Sequence[str]] | None = None,
) -> WindowProfile:
    """All statistics of one window against its reference pool.

    Args:
        window_key: the window.
        current: curated texts of the window (all of them; sampled here).
        reference: curated texts of the reference windows (sampled here); may be empty, then only
            the sizes are recorded and nothing is tested.
        reference_keys: the windows ``reference`` came from.
        cfg: sample sizes, null sizes, false-alarm rate.
        quarantine: ``(ref_quarantined, ref_total, cur_quarantined, cur_total)`` row counts, or None.
        embed: texts -> (n, d) L2-normalised embeddings (``quality.embeddings.MiniLMEmbedder``), or None
            to skip ``embedding_mmd2``.
        count_tokens: texts -> (n,) token counts under the current tokenizer, or None to skip
            ``bytes_per_token``.
        score_bits: texts -> (n,) total bits the champion assigns to each text (eos-prefixed, as in
            training.evaluate), or None to skip ``lm_bpb`` (no champion yet).
        timer: monotonic clock for the per-part seconds in ``info`` (default ``time.perf_counter``).
        history: ``WindowProfile.flat()`` rows of the earlier windows, oldest first, or None. With at
            least ``cfg.churn_min_windows`` values of a ``CHURN_STATS`` statistic, the last
            ``cfg.churn_windows`` of them give its churn null (``churn_test``): p-value = max(permutation
            p, churn p), threshold = max of the two thresholds.
        emerging_samples: ``(recent, before)`` texts for ``emerging_z`` when ``cfg.emerging_windows`` > 1:
            ``recent`` = the current window and the ``emerging_windows - 1`` windows just before it,
            ``before`` = the ``reference_windows`` windows before those (each side sampled to
            ``sample_rows``); None, or ``emerging_windows == 1``: the window vs its reference, like the
            other lexical statistics. The permutation and churn nulls are unchanged (same relabelling
            of the two samples; the series of earlier values).

    Returns:
        ``WindowProfile`` with p-values, ``alpha``, ``exceeded``, ``calibration`` and the emerging
        terms filled in.
    """
    import time

    timer = timer or time.perf_counter
    cur = sample(current, cfg.sample_rows, cfg.seed)
    ref = sample(reference, cfg.sample_rows, cfg.seed + 1)
    prof = WindowProfile(window_key, list(reference_keys), len(current), len(cur))
    prof.info.update({"reference_rows": len(reference), "reference_sample_rows": len(ref)})
    stats: dict[str, StatResult] = {}
    n_planned = 4 + sum(f is not None for f in (embed, count_tokens, score_bits)) + (quarantine is not None)
    alpha = cfg.false_alarm_rate / n_planned
    if quarantine is not None:
        rq, rt, cq, ct = quarantine
        stats["quarantine_rate"] = quarantine_test(rq, rt, cq, ct)
        prof.info["quarantine_share"] = cq / ct if ct else 0.0
    if len(ref) >= 2 and len(cur) >= 2:
        t0 = timer()
        e_cur = e_ref = []
        if cfg.emerging_windows > 1 and emerging_samples is not None:
            e_cur = sample(emerging_samples[0], cfg.sample_rows, cfg.seed + 6)
            e_ref = sample(emerging_samples[1], cfg.sample_rows, cfg.seed + 7)
        multi_window = len(e_ref) >= 2 and len(e_cur) >= 2
        near_dup = cfg.near_dup_jaccard or None
        # the near-duplicate weights (O(n²) word-set Jaccard) only enter emerging_z: skip them here when the
        # multi-window test below supplies emerging_z (JS, OOV and length KS do not use them)
        lex = lexical_tests(
            ref,
            cur,
            splits=cfg.null_splits,
            alpha=alpha,
            seed=cfg.seed,
            prior_scale=cfg.prior_scale,
            near_dup_jaccard=None if multi_window else near_dup,
        )
        terms = lex
        if multi_window:
            terms = lexical_tests(
                e_ref,
                e_cur,
                splits=cfg.null_splits,
                alpha=alpha,
                seed=cfg.seed,
                prior_scale=cfg.prior_scale,
                near_dup_jaccard=near_dup,
            )
            lex.stats["emerging_z"] = terms.stats["emerging_z"]
            prof.info["emerging_windows"] = cfg.emerging_windows
        prof.info.update(
            {
                "reference_effective_texts": terms.ref_effective_texts,
                "current_effective_texts": terms.cur_effective_texts,
            }
        )
        for name, res in lex.stats.items():
            stats[name] = res
            prof.calibration[name] = "permutation"
            past = [
                float(h[name])
                for h in (history or [])
                if h.get(name) is not None and math.isfinite(float(h[name])) and float(h[name]) > 0
            ][-cfg.churn_windows :]
            if name in CHURN_STATS and len(past) >= cfg.churn_min_windows:
                churn = churn_test(res.value, past, alpha)
                prof.info.update(
                    {
                        f"{name}_p_permutation": res.p_value,
                        f"{name}_p_churn": churn.p_value,
                        f"{name}_threshold_permutation": res.threshold,
                        f"{name}_threshold_churn": churn.threshold,
                    }
                )
                stats[name] = StatResult(
                    res.value, max(res.p_value, churn.p_value), max(res.threshold, churn.threshold)
                )
                prof.calibration[name] = "permutation+churn"
        prof.emerging, prof.emerging_over_threshold = terms.top(cfg.top_terms, stats["emerging_z"].threshold)
        prof.info["emerging_terms_over_threshold"] = prof.emerging_over_threshold
        prof.info["seconds_lexical"] = timer() - t0
        if count_tokens is not None:
            t0 = timer()
            rb = np.array([len(t.encode("utf-8")) for t in ref], dtype=np.float64)
            cb = np.array([len(t.encode("utf-8")) for t in cur], dtype=np.float64)
            rt_, ct_ = np.asarray(count_tokens(ref), np.float64), np.asarray(count_tokens(cur), np.float64)
            keep_r, keep_c = rt_ > 0, ct_ > 0
            if keep_r.sum() >= 1 and keep_c.sum() >= 1:
                stats["bytes_per_token"] = mean_difference_permutation_test(
                    rb[keep_r], rt_[keep_r], cb[keep_c], ct_[keep_c], permutations=cfg.permutations, seed=cfg.seed
                )
                prof.info["bytes_per_token"] = float(cb[keep_c].sum() / ct_[keep_c].sum())
            prof.info["seconds_tokenizer"] = timer() - t0
        if score_bits is not None:
            t0 = timer()
            rs, cs = sample(ref, cfg.lm_rows, cfg.seed + 2), sample(cur, cfg.lm_rows, cfg.seed + 3)
            rbits, cbits = np.asarray(score_bits(rs), np.float64), np.asarray(score_bits(cs), np.float64)
            rbytes = np.array([len(t.encode("utf-8")) + 1 for t in rs], dtype=np.float64)
            cbytes = np.array([len(t.encode("utf-8")) + 1 for t in cs], dtype=np.float64)
            stats["lm_bpb"] = mean_difference_permutation_test(
                rbits, rbytes, cbits, cbytes, permutations=cfg.permutations, seed=cfg.seed
            )
            prof.info["lm_bpb_window"] = float(cbits.sum() / cbytes.sum())
            prof.info["lm_bpb_reference"] = float(rbits.sum() / rbytes.sum())
            prof.info["seconds_lm"] = timer() - t0
        if embed is not None:
            t0 = timer()
            rs, cs = sample(ref, cfg.embed_rows, cfg.seed + 4), sample(cur, cfg.embed_rows, cfg.seed + 5)
            e = np.asarray(embed(rs + cs))
            prof.info["seconds_embed"] = timer() - t0
            t0 = timer()
            stats["embedding_mmd2"] = mmd2_permutation_test(
                e[: len(rs)], e[len(rs) :], permutations=cfg.permutations, seed=cfg.seed
            )
            prof.info["seconds_mmd"] = timer() - t0
    for k in stats:
        prof.calibration.setdefault(k, "permutation" if k != "quarantine_rate" else "fisher")
    prof.stats = {k: stats[k] for k in STAT_NAMES if k in stats}
    prof.alpha = alpha
    prof.exceeded = [k for k, r in prof.stats.items() if r.p_value < alpha]
    return prof


# -- confirmation over the series -----------------------------------------------------------------


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


def _adwin_flags(series: Sequence[float], delta: float) -> bool:
    """True if river's ADWIN flags a change when the last value of ``series`` arrives."""
    from river.drift import ADWIN

    det = ADWIN(delta=delta, clock=1, grace_period=2, min_window_length=1)
    flagged = False
    for v in series:
        det.update(float(v))
        flagged = det.drift_detected
    return flagged


def confirm_drift(
    profile: WindowProfile,
    history: Sequence[Mapping[str, float | None]],
    cfg: DriftConfig,
    n_reference_windows: int,
) -> DriftDecision:
    """Second stage: is an exceedance of this window also a change of the per-window series?

    Args:
        profile: the current window's profile (``exceeded`` filled in).
        history: ``WindowProfile.flat()`` rows of earlier windows, oldest first (missing statistics
            are None and skipped).
        cfg: ``adwin_delta`` and ``min_reference_windows``.
        n_reference_windows: how many earlier windows exist (no alarm below ``min_reference_windows``).

    Returns:
        ``DriftDecision``. A statistic is confirmed when it exceeded its calibrated threshold and
        either its threshold already includes the churn null (``profile.calibration[name] ==
        "permutation+churn"``: the value is unusual against the earlier windows' own variation), or
        ADWIN over ``history + [current]`` values flags the current window, or the current value is
        above every earlier value of the statistic (or there are fewer than 3 earlier values).
    """
    if n_reference_windows < cfg.min_reference_windows:
        return DriftDecision(
            False, [], [], f"only {n_reference_windows} earlier windows (< {cfg.min_reference_windows})"
        )
    confirmed, adwin = [], []
    for name, res in profile.stats.items():
        past = [float(h[name]) for h in history if h.get(name) is not None and math.isfinite(float(h[name]))]
        value = abs(res.value) if name in {"lm_bpb", "bytes_per_token", "quarantine_rate"} else res.value
        past_v = [abs(v) for v in past] if name in {"lm_bpb", "bytes_per_token", "quarantine_rate"} else past
        changed = _adwin_flags(past_v + [value], cfg.adwin_delta) if past_v else False
        if changed:
            adwin.append(name)
        churned = profile.calibration.get(name) == "permutation+churn"
        if name in profile.exceeded and (churned or changed or len(past_v) < 3 or value > max(past_v)):
            confirmed.append(name)
    if confirmed:
        parts = [f"{n}={profile.stats[n].value:.4g} (p={profile.stats[n].p_value:.3g})" for n in confirmed]
        reason = "drift: " + ", ".join(parts)
        if "emerging_z" in confirmed and profile.emerging:
            reason += "; emerging terms: " + ", ".join(t["term"] for t in profile.emerging[:5])
    elif profile.exceeded:
        reason = "exceeded but not a change of the series: " + ", ".join(profile.exceeded)
    else:
        reason = "no statistic exceeded its calibrated threshold"
    return DriftDecision(bool(confirmed), confirmed, adwin, reason)
