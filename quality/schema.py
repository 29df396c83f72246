"""Polars schemas shared by the reader, the quality gate and the DuckDB tables built from them.

Row identity is ``(window_key, row_number)``: ``row_number`` is the 1-based position of the record
in its file (line number for JSON Lines, data-row number for CSV and Parquet).
"""

import polars as pl

RAW_SCHEMA: dict[str, pl.DataType] = {
    "window_key": pl.String(),
    "row_number": pl.Int64(),
    "record_id": pl.String(),  # the record's `id`, else sha256(text).hexdigest()[:32]
    "text": pl.String(),  # null when the record has no text (the gate quarantines it)
    "ts": pl.Datetime("us", "UTC"),  # the record's `ts`, else ingestion time
    "metadata": pl.String(),  # JSON object text of the record's other fields, "{}" if none
}

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "window_key": pl.String(),
    "row_number": pl.Int64(),
    "raw": pl.String(),  # the record verbatim (undecodable bytes as backslash escapes)
    "error": pl.String(),  # why it could not be parsed
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    **RAW_SCHEMA,
    "rule": pl.String(),  # first failing rule id, in quality.suite.RULES priority order
    "reason": pl.String(),  # every failing rule, "; "-separated
    "gx_run_id": pl.String(),  # run name of the Great Expectations validation that judged the row
    "duplicate_of_window": pl.String(),  # duplicate_* rules: window of the kept copy, else null
    "duplicate_of_row": pl.Int64(),  # duplicate_* rules: row_number of the kept copy, else null
}
