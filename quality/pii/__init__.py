"""PII and secret detection/redaction with Presidio on its offline pattern/checksum engine.

Engine: ``presidio_analyzer.AnalyzerEngine`` with ``NoOpNlpEngine`` (no spaCy model, no
download), ``presidio_anonymizer.AnonymizerEngine`` for the replacement. Built once per process,
lazily (first use ~1 s). tldextract (used by Presidio's e-mail recognizer) is pinned to its bundled
public-suffix snapshot so nothing reaches the network.

Entities (``ENTITIES``): Presidio's ``EMAIL_ADDRESS``, ``PHONE_NUMBER``, ``CREDIT_CARD`` (Luhn),
``US_SSN``, ``IP_ADDRESS`` (v4/v6), ``IBAN_CODE`` (checksum), plus two pattern recognizers added
here: ``API_KEY`` (AWS access key ids, GitHub/GitLab/Slack/Stripe/OpenAI/Google API tokens, JWTs;
patterns from gitleaks' and detect-secrets' rule sets) and ``PRIVATE_KEY`` (PEM ``-----BEGIN ...
PRIVATE KEY-----`` blocks, terminated or not).

Cost control: a recall-oriented regex prefilter (``PREFILTER_REGEX``, run by polars' Rust regex
engine over the whole column) picks candidate values; Presidio runs only on those. Every
Presidio recognizer above needs at least one prefilter trigger (``@``, a digit run, a ``h:h:``
IPv6 group, an IBAN country+check prefix, a token prefix or ``-----BEGIN``), so the prefilter
never hides a detection, with one deliberate exception: a phone number needs a digit run of at
least 6 characters (``_DIGIT_RUN``), so the ~30 four-digit German service numbers that
python-phonenumbers accepts as valid (e.g. ``1645``) are not searched for. The prefilter is the union of one trigger
per entity (``ENTITY_TRIGGERS``, also vectorized): each candidate value is analyzed only for the entities
whose trigger it matches (an e-mail-only text skips the phone recognizer, which is ~75% of
Presidio's cost: python-phonenumbers tries 8 regions), and ``text`` and ``metadata`` are analyzed
only when that value itself is a candidate.

Policy per entity (``PiiPolicy``): ``"redact"`` replaces each finding with ``<ENTITY>`` (e.g.
``<EMAIL_ADDRESS>``); ``"quarantine"`` sends the whole row to quarantine (rule ``pii_<entity>``,
lower-case) with its raw text. Counts are by entity only; values never leave this module.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from quality.pii.engine import _engine, _kept, build_engine
from quality.pii.policy import (
    ACTIONS,
    ENTITIES,
    ENTITY_TRIGGERS,
    PREFILTER_REGEX,
    SCORE_THRESHOLD,
    SECRET_PATTERNS,
    PiiOutcome,
    PiiPolicy,
    placeholder,
)
from quality.pii.scan import (
    DEFAULT_POLICY,
    PendingScan,
    _candidate_items,
    _marker_pattern,
    _routes,
    _scan_items,
    default_workers,
    start_scan,
)

__all__ = [
    "ACTIONS",
    "ENTITIES",
    "ENTITY_TRIGGERS",
    "PREFILTER_REGEX",
    "SCORE_THRESHOLD",
    "SECRET_PATTERNS",
    "PendingScan",
    "PiiOutcome",
    "PiiPolicy",
    "build_engine",
    "default_workers",
    "placeholder",
    "redact_rows",
    "redact_values",
    "scan_counts",
    "start_scan",
]


def redact_rows(rows: pl.DataFrame, policy: PiiPolicy = DEFAULT_POLICY, scan: PendingScan | None = None) -> PiiOutcome:
    """Detect and redact PII/secrets in ``text`` and ``metadata`` of a RAW_SCHEMA-like frame.

    Args:
        rows: columns ``row_number`` (Int64, unique), ``text`` (String, nullable), ``metadata`` (String).
        policy: per-entity action.
        scan: findings already computed for (a superset or subset of) these rows by ``start_scan``
            with the same policy, e.g. in a worker process while the caller ran GX; its prefilter
            verdicts are reused for the rows it covered, rows it did not cover are prefiltered and
            analyzed here. Values must be the same as in ``rows``.

    Returns:
        ``PiiOutcome``. A value already holding a quarantine-policy placeholder (``<PRIVATE_KEY>``)
        counts as that entity again, so re-curating a scrubbed row gives the same verdict.

    Raises:
        ValueError: ``row_number`` repeats a value that has a candidate row.
    """
    texts = rows.get_column("text")
    metas = rows.get_column("metadata")
    if not policy.enabled or rows.height == 0:
        return PiiOutcome(texts, metas, {}, {}, 0)
    if scan is None:
        done, items = {}, _candidate_items(rows, policy)
    else:
        done = scan.result()
        numbers = rows.get_column("row_number")
        covered = numbers.is_in(scan.prefiltered)
        wanted = pl.Series([it[0] for it in scan.items], dtype=pl.Int64).is_in(numbers.filter(covered))
        items = [it for it, keep in zip(scan.items, wanted) if keep]
        if not covered.all():
            items += _candidate_items(rows.filter(~covered), policy)
            order = {n: i for i, n in enumerate(numbers.to_list())}
            items.sort(key=lambda it: order[it[0]])
    todo = [it for it in items if it[0] not in done]
    if todo:
        done = {**done, **_scan_items(todo, _marker_pattern(policy))}
    quarantine: dict[int, list[str]] = {}
    redactions: Counter = Counter()
    updated: list[tuple[int, str | None, str | None]] = []
    for item in items:
        n = item[0]
        red_text, red_meta, entities, kept = done[n]
        q = [e for e in ENTITIES if e in entities and policy.action(e) == "quarantine"]
        if q:
            quarantine[n] = q
            continue
        updated.append((n, red_text, red_meta))
        redactions.update(kept)
    if updated:  # only the candidate rows change: a left join keeps the input's order and length
        new = pl.DataFrame(
            updated, schema={"row_number": pl.Int64, "_text": pl.String, "_meta": pl.String}, orient="row"
        ).with_columns(_hit=pl.lit(True))
        merged = rows.select("row_number", "text", "metadata").join(
            new, on="row_number", how="left", maintain_order="left"
        )
        if merged.height != rows.height:
            raise ValueError("redact_rows: row_number must be unique within the frame")
        hit = pl.col("_hit").fill_null(False)
        merged = merged.select(
            text=pl.when(hit).then("_text").otherwise("text"), metadata=pl.when(hit).then("_meta").otherwise("metadata")
        )
        texts, metas = merged.get_column("text"), merged.get_column("metadata")
    return PiiOutcome(
        texts.rename("text").cast(pl.String),
        metas.rename("metadata").cast(pl.String),
        quarantine,
        {e: redactions[e] for e in ENTITIES if redactions[e]},
        len(items),
    )


def redact_values(values: list[str | None]) -> list[str | None]:
    """Redact every finding (any entity) in free-form strings, e.g. the ``raw`` of parse rejects. The Presidio
    engine is built (imported, once per process) only when a value passes the prefilter: a window without
    rejects costs its ingest run nothing."""
    out = list(values)
    routes = _routes(pl.Series(values, dtype=pl.String), PREFILTER_REGEX) if values else {}
    engine = _engine() if any(routes.values()) else None
    for i, ents in routes.items():
        res = engine.analyze(out[i], ents) if ents else []
        if res:
            out[i] = engine.anonymize(out[i], res)
    return out


def scan_counts(texts: list[str | None]) -> dict[str, int]:
    """Findings by entity in ``texts`` (prefilter + Presidio); ``{}`` when clean. Counts only. The Presidio
    engine is built only when a text passes the prefilter."""
    routes = _routes(pl.Series(texts, dtype=pl.String), PREFILTER_REGEX) if texts else {}
    engine = _engine() if any(routes.values()) else None
    counts: Counter = Counter()
    for i, ents in routes.items():
        if ents:
            counts.update(r.entity_type for r in _kept(engine.analyze(texts[i], ents)))
    return {e: counts[e] for e in ENTITIES if counts[e]}
