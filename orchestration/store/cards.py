"""Model-card reads: each training window's row accounting, quarantine by rule and redactions by entity.

Counts only: the card (``training.model_card``) never sees a row. A plain function over a ``Connector`` (the
``Warehouse``), so the card's SQL sits in the store beside the tables it reads.
"""

from __future__ import annotations

from orchestration.store.connection import Connector

_ACCOUNTING_SQL = """
SELECT k.window_key,
       coalesce(r.parsed_rows, 0) AS parsed_rows,
       coalesce(r.rejected_rows, 0) AS rejected_rows,
       (SELECT count(*) FROM curated.events e WHERE e.window_key = k.window_key) AS curated_rows,
       (SELECT count(*) FROM curated.quarantine q WHERE q.window_key = k.window_key) AS quarantined_rows
FROM (SELECT unnest(?::VARCHAR[]) AS window_key) k
LEFT JOIN raw.windows r USING (window_key)
"""

_QUARANTINE_SQL = """
SELECT window_key, rule, count(*) AS n FROM curated.quarantine
WHERE window_key IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL ORDER BY ALL
"""

_REDACTIONS_SQL = """
SELECT window_key, entity, count(*) AS n FROM (
    SELECT window_key,
           unnest(regexp_extract_all(text || ' ' || coalesce(metadata, ''), '<([A-Z_]+)>', 1)) AS entity
    FROM curated.events WHERE window_key IN (SELECT unnest(?::VARCHAR[]))
) WHERE entity IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL ORDER BY ALL
"""


def window_card_rows(store: Connector, window_keys: list[str], entities: list[str]) -> list[dict]:
    """Row accounting of ``window_keys`` for a model card, in the order given.

    Args:
        store: the warehouse (read-only connection).
        window_keys: the update's windows.
        entities: PII entity names whose ``<ENTITY>`` placeholders count as redactions (``quality.pii.ENTITIES``);
            other ``<WORD>`` tokens in the text are not counted.

    Returns:
        One dict per window: ``window_key``, ``parsed_rows``, ``rejected_rows``, ``curated_rows``,
        ``quarantined_rows`` (ints), ``quarantine_by_rule`` and ``redactions_by_entity`` (name -> int; the
        placeholders in the window's curated text and metadata).
    """
    keys = list(window_keys)
    with store.connect(read_only=True) as con:
        accounting = con.execute(_ACCOUNTING_SQL, [keys]).fetchall()
        quarantine = con.execute(_QUARANTINE_SQL, [keys]).fetchall()
        redactions = con.execute(_REDACTIONS_SQL, [keys, list(entities)]).fetchall()
    rows = {
        key: {
            "window_key": key,
            "parsed_rows": int(parsed),
            "rejected_rows": int(rejected),
            "curated_rows": int(curated),
            "quarantined_rows": int(quarantined),
            "quarantine_by_rule": {},
            "redactions_by_entity": {},
        }
        for key, parsed, rejected, curated, quarantined in accounting
    }
    for key, rule, n in quarantine:
        rows[key]["quarantine_by_rule"][rule] = int(n)
    for key, entity, n in redactions:
        rows[key]["redactions_by_entity"][entity] = int(n)
    return [rows[k] for k in keys if k in rows]
