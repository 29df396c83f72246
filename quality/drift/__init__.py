"""Per-window drift statistics, calibrated thresholds and a change detector over the window series.

No Dagster or MLflow imports: the monitor step (``orchestration.pipeline.monitor``) reads rows from
DuckDB, calls ``profile_window`` here, and stores the result. Modules: ``config`` (settings and result
types), ``lexical`` (unigram statistics), ``nulls`` (churn, permutation and Fisher tests), ``profile`` (one
window), ``confirm`` (the second stage over the series), ``embeddings`` (MiniLM), ``report`` (plot, table).

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
is a comparison with the series); the others keep the second stage below. Drift is *confirmed* only
when the exceedance is also a change of the per-window series:
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

from quality.drift.config import CHURN_STATS, STAT_NAMES, DriftConfig, DriftDecision, StatResult, WindowProfile
from quality.drift.confirm import confirm_drift
from quality.drift.lexical import (
    LexicalResult,
    lexical_tests,
    log_odds_dirichlet,
    near_duplicate_weights,
    token_js_null,
    words,
)
from quality.drift.nulls import churn_test, mean_difference_permutation_test, mmd2_permutation_test, quarantine_test
from quality.drift.profile import profile_window, sample

__all__ = [
    "DriftConfig",
    "DriftDecision",
    "StatResult",
    "WindowProfile",
    "LexicalResult",
    "profile_window",
    "confirm_drift",
    "sample",
    "words",
    "token_js_null",
    "mmd2_permutation_test",
    "mean_difference_permutation_test",
    "quarantine_test",
    "log_odds_dirichlet",
    "lexical_tests",
    "near_duplicate_weights",
    "churn_test",
    "STAT_NAMES",
    "CHURN_STATS",
]
