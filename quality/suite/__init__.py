"""Great Expectations gate for one window: row-level verdicts (curated vs quarantine) and the
blocking checks run on the curated window.

Row verdicts come from GX's ``unexpected_index_list`` (indexed by ``row_number``), never from
``success``: an expectation passing under ``mostly`` still lists its failing rows. The result
format keeps row *values* out of every result (``exclude_unexpected_values``), so texts (and any
PII in them) never reach validation results, statistics, logs or Data Docs.

GX is imported lazily (2.5-5 s) and a single ephemeral context is kept per process; validation
results are not kept in it, so calling ``curate_window`` for every window of a long-running process
does not grow memory. Analytics and progress bars are off.

Scores (lengths, control-character and U+FFFD counts, a 60-bit key of the normalized-text hash) are
computed with polars and GX makes the decisions on them, as NeMo-Curator separates
``score_document`` from ``keep_document``. The frame GX validates is all integers (no text): GX
hashes the whole batch and evaluates map expectations vectorized on int64/float64 columns only, so
this keeps the GX stage proportional to the row count at numpy speed.

Modules: ``config`` (rule ids, ``QualityConfig``, verdict and check outcome types), ``rules`` (row rules as
small classes, the score frame), ``gx`` (the GX runner) and ``data_docs`` (Data Docs views), ``curate``
(``curate_window``: GX, PII, dedup), ``checks`` (blocking check bodies on a curated window),
``user_expectations`` (the user's extra GX expectations file; the effective suite written as GX JSON).
"""

from quality.suite.checks import (
    check_pii_free,
    check_rows_conserved,
    check_text_length,
    check_text_not_null,
    check_window_expectations,
    check_window_not_empty,
)
from quality.suite.config import (
    CONTROL_CHARS_REGEX,
    LATER_RULES,
    REPLACEMENT_CHAR,
    RULES,
    WINDOW_RULES,
    CheckOutcome,
    QualityConfig,
    QualityGateError,
    WindowVerdict,
)
from quality.suite.curate import curate_window, rejudge_quarantined, verdict_metadata
from quality.suite.gx import RESULT_FORMAT
from quality.suite.rules import RowRule, row_rules
from quality.suite.user_expectations import USER_COLUMNS, UserExpectation, load_expectations_file, write_suite

__all__ = [
    "CONTROL_CHARS_REGEX",
    "LATER_RULES",
    "REPLACEMENT_CHAR",
    "RESULT_FORMAT",
    "RULES",
    "USER_COLUMNS",
    "WINDOW_RULES",
    "CheckOutcome",
    "QualityConfig",
    "QualityGateError",
    "RowRule",
    "UserExpectation",
    "WindowVerdict",
    "check_pii_free",
    "check_rows_conserved",
    "check_text_length",
    "check_text_not_null",
    "check_window_expectations",
    "check_window_not_empty",
    "curate_window",
    "load_expectations_file",
    "rejudge_quarantined",
    "row_rules",
    "verdict_metadata",
    "write_suite",
]
