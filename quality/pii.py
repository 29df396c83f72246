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
python-phonenumbers accepts as valid (e.g. ``1645``) are not searched for. The prefilter is the union of one trigger per entity
(``ENTITY_TRIGGERS``, also vectorized): each candidate value is analyzed only for the entities
whose trigger it matches (an e-mail-only text skips the phone recognizer, which is ~75% of
Presidio's cost: python-phonenumbers tries 8 regions), and ``text`` and ``metadata`` are analyzed
only when that value itself is a candidate.

Policy per entity (``PiiPolicy``): ``"redact"`` replaces each finding with ``<ENTITY>`` (e.g.
``<EMAIL_ADDRESS>``); ``"quarantine"`` sends the whole row to quarantine (rule ``pii_<entity>``,
lower-case) with its raw text. Counts are by entity only; values never leave this module.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IP_ADDRESS",
    "IBAN_CODE",
    "API_KEY",
    "PRIVATE_KEY",
)
"""Entity types detected, in reporting order."""

ACTIONS = ("redact", "quarantine")

SECRET_PATTERNS: dict[str, list[tuple[str, str]]] = {
    "API_KEY": [
        ("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
        ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),
        ("github_fine_grained", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),
        ("gitlab_token", r"\bglpat-[A-Za-z0-9_\-]{20,}\b"),
        ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}\b"),
        ("stripe_key", r"\b[sr]k_(?:live|test)_[0-9A-Za-z]{16,}\b"),
        ("openai_key", r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}\b"),
        ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
        ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ],
    "PRIVATE_KEY": [
        (
            "pem_block",
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)",
        ),
    ],
}
"""Vetted secret patterns (gitleaks / detect-secrets rule families), one Presidio PatternRecognizer
per entity. A PEM header without its END line redacts to the end of the value."""

_DIGIT_RUN = r"\d[\d\s().+/\-]{4,}\d"
_IP = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}"
_IBAN = r"[A-Z]{2}\d{2}"
_TOKEN = r"(?:^|[^0-9A-Za-z_])(?:AKIA|ASIA|ABIA|ACCA|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|[sr]k_(?:live|test)_|sk-|AIza|eyJ)"
# Every API_KEY pattern starts with ``\b`` before its prefix: Python's ``\b`` there needs a non-word
# character (or the start) before it, and every ASCII letter, digit and ``_`` is a word character,
# so this trigger (ASCII class, same verdict in Rust regex, RE2 and Python) matches wherever a
# pattern can. Without it, ``sk-`` alone sent every ``task-``/``flask-`` package name to Presidio.

ENTITY_TRIGGERS: dict[str, str] = {
    "EMAIL_ADDRESS": r"@",
    "PHONE_NUMBER": "|".join([_DIGIT_RUN, _IP, _IBAN]),  # any digit-bearing trigger
    "CREDIT_CARD": _DIGIT_RUN,
    "US_SSN": _DIGIT_RUN,
    "IP_ADDRESS": "|".join([_DIGIT_RUN, _IP]),
    "IBAN_CODE": _IBAN,
    "API_KEY": _TOKEN,
    "PRIVATE_KEY": r"-----BEGIN",
}
"""Per entity, the prefilter alternatives its recognizer needs (at least one must match)."""

PREFILTER_REGEX = "|".join([r"@", _DIGIT_RUN, _IP, _IBAN, _TOKEN, r"-----BEGIN"])
"""Recall-oriented candidate test: the union of ``ENTITY_TRIGGERS`` (polars/Rust regex syntax,
also valid for DuckDB RE2)."""

SCORE_THRESHOLD = 0.4
"""Minimum Presidio score (phone numbers score 0.4, IPs 0.6, SSNs with context 0.5; e-mail,
Luhn-valid cards and IBANs 1.0)."""


@dataclass(frozen=True)
class PiiPolicy:
    """What to do with each entity type. ``actions`` maps entity -> ``"redact"`` | ``"quarantine"``;
    entities not listed use ``default`` (``"redact"``). Default: private keys quarantine the row."""

    actions: dict[str, str] = field(default_factory=lambda: {"PRIVATE_KEY": "quarantine"})
    default: str = "redact"
    enabled: bool = True

    def __post_init__(self) -> None:
        bad = [f"{k}={v!r}" for k, v in {**self.actions, "default": self.default}.items() if v not in ACTIONS]
        unknown = sorted(set(self.actions) - set(ENTITIES))
        if bad or unknown:
            raise ValueError(
                f"invalid PiiPolicy: actions must be one of {ACTIONS} (got {bad}); "
                f"unknown entities {unknown}; known {list(ENTITIES)}"
            )

    def action(self, entity: str) -> str:
        return self.actions.get(entity, self.default)

    @property
    def quarantine_entities(self) -> list[str]:
        return [e for e in ENTITIES if self.action(e) == "quarantine"]


@dataclass(frozen=True, eq=False)
class PiiOutcome:
    """Result of ``redact_rows``."""

    text: pl.Series
    """Redacted ``text`` (String), same order/length as the input; unchanged where nothing was found."""
    metadata: pl.Series
    """Redacted ``metadata`` JSON text (String), same order/length."""
    quarantine: dict[int, list[str]]
    """row_number -> quarantine-policy entities found in it (rows to quarantine)."""
    redactions: dict[str, int]
    """Findings replaced by a placeholder, by entity (in redacted rows only)."""
    candidates: int
    """Values the prefilter sent to Presidio."""


def placeholder(entity: str) -> str:
    return f"<{entity}>"


def redact_rows(rows: pl.DataFrame, policy: PiiPolicy = PiiPolicy(), scan: PendingScan | None = None) -> PiiOutcome:
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


_Item = tuple  # (row_number, text, text entities | None, metadata, metadata entities | None)
_Scanned = tuple  # (redacted text, redacted metadata, entities found, entity of each redaction)


def _marker_pattern(policy: PiiPolicy) -> str | None:
    qents = policy.quarantine_entities
    return "|".join(re.escape(placeholder(e)) for e in qents) if qents else None


def _candidate_items(rows: pl.DataFrame, policy: PiiPolicy) -> list[_Item]:
    """Prefilter: the rows with at least one candidate value, with the entities to analyze per value
    (None = not a candidate)."""
    texts, metas = rows.get_column("text"), rows.get_column("metadata")
    marker = _marker_pattern(policy)
    pattern = PREFILTER_REGEX + ("|" + marker if marker else "")
    routes = {"text": _routes(texts, pattern), "metadata": _routes(metas, pattern)}
    numbers = rows.get_column("row_number")
    items = []
    for i in sorted(set(routes["text"]) | set(routes["metadata"])):
        items.append((numbers[i], texts[i], routes["text"].get(i), metas[i], routes["metadata"].get(i)))
    return items


def _scan_items(items: list[_Item], marker: str | None) -> dict[int, _Scanned]:
    """Presidio on candidate values: row_number -> (redacted text, redacted metadata, entities found
    (including quarantine placeholders already present), entity type of each kept redaction).
    Runs in the caller's process or in a ``start_scan`` worker (arguments and results pickle)."""
    engine = _engine()
    rx = re.compile(marker) if marker else None
    out: dict[int, _Scanned] = {}
    for n, text, text_ents, meta, meta_ents in items:
        values = {"text": text, "metadata": meta}
        found = {}
        for col, ents in (("text", text_ents), ("metadata", meta_ents)):
            if ents is not None and values[col]:
                found[col] = engine.analyze(values[col], ents) if ents else []
        entities = {r.entity_type for res in found.values() for r in res}
        if rx is not None:
            for value in values.values():
                if value:
                    entities |= {m.group(0)[1:-1] for m in rx.finditer(value)}
        kept: list[str] = []
        for col, res in found.items():
            if res:
                values[col] = engine.anonymize(values[col], res)
                kept += [r.entity_type for r in _kept(res)]
        out[n] = (values["text"], values["metadata"], tuple(sorted(entities)), tuple(kept))
    return out


class PendingScan:
    """Findings of ``start_scan``: computed in worker processes, or in this process at the first
    ``result()`` call (an inline scan: the caller decides when, e.g. while a DuckDB query runs in a
    thread). ``result()`` maps row_number -> scanned row.

    Forked scans are split into chunks that the workers take in order; ``result()`` first takes
    back, from the end, every chunk no worker has started and analyzes it in this process (work
    stealing: the caller has finished its own stages by then, so both cores stay busy until the
    last chunk), then waits for the rest and shuts the workers down. A chunk whose worker failed
    (killed, out of memory) is left out with a warning; ``redact_rows`` then analyzes those rows
    inline, so a lost worker costs time, never a verdict."""

    def __init__(
        self,
        executor: Any,
        futures: list | None,
        items: list[_Item],
        prefiltered: pl.Series,
        marker: str | None = None,
        chunks: list[list[_Item]] | None = None,
    ) -> None:
        self._executor, self._marker, self._result = executor, marker, None
        self.items = items
        """The candidate values (``_candidate_items`` of the prefiltered rows)."""
        self.prefiltered = prefiltered
        """row_number (Int64) of every row the prefilter saw (all rows but those over ``max_chars``)."""
        self.stolen = 0
        """Chunks of a forked scan analyzed in this process (``steal`` or ``result``)."""
        # (future, the chunk it analyzes) still to collect; without ``chunks`` none can be taken back
        self._pending = list(itertools.zip_longest(futures or [], chunks or []))
        self._stolen: dict[int, _Scanned] = {}

    @property
    def forked(self) -> bool:
        return self._executor is not None

    def steal(self) -> bool:
        """Analyze in this process the last chunk no worker has started; False when there is none
        (every chunk is taken, the scan is inline or its result is in). ``result()`` calls it until
        it returns False. (Stealing while the caller's DuckDB hash thread ran instead was measured
        slower: the hash then waited for a core, and GX for the hash.)"""
        if self._result is not None or not self._pending:
            return False
        future, chunk = self._pending[-1]
        # A chunk can be cancelled only while no worker has taken it; workers take from the front.
        if chunk is None or not future.cancel():
            return False
        self._pending.pop()
        self._stolen.update(_scan_items(chunk, self._marker))
        self.stolen += 1
        return True

    def result(self) -> dict[int, _Scanned]:
        if self._result is not None:
            return self._result
        if not self.forked:
            self._result = _scan_items(self.items, self._marker)
            return self._result
        try:
            while self.steal():
                pass
            merged = self._stolen
            for f, _ in self._pending:
                try:
                    merged.update(f.result())
                except Exception as exc:  # BrokenProcessPool, a pickling error, ...
                    logging.getLogger(__name__).warning(
                        "a Presidio worker failed (%s: %s); its rows are analyzed inline", type(exc).__name__, exc
                    )
            self._result = merged
        finally:
            self._executor.shutdown(wait=True)
        return self._result

    def close(self) -> None:
        """Cancel what has not started and stop the workers (the caller failed before ``result``)."""
        if self.forked:
            self._executor.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """Worker processes for ``start_scan``: one per core beside the caller's, at most 4 (0 on one
    core). The caller hashes the texts (DuckDB), runs GX and renders Data Docs meanwhile; a worker on
    every core made three busy processes on two cores, and the hash stage ran 2.4x slower
    (``bench/ingest.py``)."""
    cores = os.cpu_count() or 1
    return min(4, cores - 1)


def start_scan(
    rows: pl.DataFrame,
    policy: PiiPolicy = PiiPolicy(),
    *,
    workers: int | None = None,
    min_candidates: int = 1500,
    max_chars: int | None = None,
    chunk_items: int = 50,
) -> PendingScan | None:
    """Prefilter ``rows`` and start Presidio on the candidates in ``workers`` forked processes,
    returning at once so the caller can run other gates meanwhile; pass the handle to ``redact_rows``.

    Presidio is pure Python (it holds the GIL), so threads would not overlap it with GX; forked
    workers inherit the already-built engine (no re-import). The workers run Presidio only (no
    polars/DuckDB calls after the fork). When ``workers`` is 0, fewer than ``min_candidates`` values
    are candidates (a fork costs more than a small scan) or the platform cannot fork, the scan is
    inline: nothing runs until ``result()``. Returns None when PII is disabled.

    Args:
        rows: as for ``redact_rows``.
        workers: processes (None = ``default_workers()``).
        min_candidates: below this many candidate rows, scan inline.
        max_chars: rows whose text is longer are left out (the caller quarantines them first).
        chunk_items: candidate rows per chunk (at least; at most 64 chunks per worker). The
            workers take chunks in order, and ``PendingScan.result`` analyzes in the caller the
            chunks no worker has started yet (about 15 ms of Presidio per 50 real candidates).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if not policy.enabled:
        return None
    workers = default_workers() if workers is None else workers
    if max_chars is not None:  # the gate quarantines longer texts before PII
        rows = rows.filter(pl.col("text").is_null() | (pl.col("text").str.len_chars() <= max_chars))
    items, seen = _candidate_items(rows, policy), rows.get_column("row_number")
    marker = _marker_pattern(policy)
    if workers < 1 or len(items) < max(1, min_candidates) or "fork" not in multiprocessing.get_all_start_methods():
        return PendingScan(None, None, items, seen, marker)
    _engine()  # built before the fork: the workers inherit it
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    size = max(chunk_items, -(-len(items) // (workers * 64)))
    chunks = [items[k : k + size] for k in range(0, len(items), size)]
    futures = [executor.submit(_scan_items, chunk, marker) for chunk in chunks]
    return PendingScan(executor, futures, items, seen, marker, chunks)


def _routes(values: pl.Series, pattern: str) -> dict[int, list[str]]:
    """Candidate positions of ``values`` (``pattern`` matches) -> entities whose trigger matches
    there (possibly none: a value that only holds a quarantine placeholder). Vectorized."""
    frame = pl.DataFrame({"v": values.fill_null("")}).with_row_index("i")
    frame = frame.filter(pl.col("v").str.contains(pattern))
    if frame.height == 0:
        return {}
    flags = frame.select("i", *[pl.col("v").str.contains(rx).alias(e) for e, rx in ENTITY_TRIGGERS.items()])
    out = {}
    for row in flags.iter_rows():
        out[row[0]] = [e for e, hit in zip(ENTITY_TRIGGERS, row[1:]) if hit]
    return out


def redact_values(values: list[str | None]) -> list[str | None]:
    """Redact every finding (any entity) in free-form strings, e.g. the ``raw`` of parse rejects."""
    engine = _engine()
    out = list(values)
    for i, ents in _routes(pl.Series(values, dtype=pl.String), PREFILTER_REGEX).items():
        res = engine.analyze(out[i], ents) if ents else []
        if res:
            out[i] = engine.anonymize(out[i], res)
    return out


def scan_counts(texts: list[str | None]) -> dict[str, int]:
    """Findings by entity in ``texts`` (prefilter + Presidio); ``{}`` when clean. Counts only."""
    engine = _engine()
    counts: Counter = Counter()
    for i, ents in _routes(pl.Series(texts, dtype=pl.String), PREFILTER_REGEX).items():
        if ents:
            counts.update(r.entity_type for r in _kept(engine.analyze(texts[i], ents)))
    return {e: counts[e] for e in ENTITIES if counts[e]}


def _kept(results: list) -> list:
    """Drop findings fully inside a longer one (the anonymizer merges them the same way)."""
    out = []
    for r in results:
        if not any(
            o is not r and o.start <= r.start and r.end <= o.end and (o.end - o.start) > (r.end - r.start)
            for o in results
        ):
            out.append(r)
    return out


_PHONE_TRIGGER = re.compile(_DIGIT_RUN)
"""A digit run with phone separators (6+ characters): the phone recognizer searches only texts with one."""


_DIGIT = re.compile(r"\d")


@functools.lru_cache(maxsize=1)
def _phone_run() -> re.Pattern:
    """A maximal run of digits, whitespace, ``+`` and python-phonenumbers' phone punctuation
    (``_VALID_PUNCTUATION``: dashes, dots, slashes, brackets, ``x``, ...). The matcher's candidates
    are digit groups joined by at most 4 of those characters (plus a leading ``+`` or bracket), so
    every candidate lies inside one run, and its digits are digits of that run."""
    from phonenumbers.phonenumberutil import _VALID_PUNCTUATION

    # as in phonenumbers: the class opens with "-", and matching ignores case (x and X)
    return re.compile("[" + _VALID_PUNCTUATION + r"\d\s+\uFF0B]+", re.IGNORECASE)


def _max_run_digits(text: str) -> int:
    """Most digits in one ``_phone_run`` of ``text``: an upper bound on the digits of any phone
    number python-phonenumbers can match in it."""
    return max((len(_DIGIT.findall(run)) for run in _phone_run().findall(text)), default=0)


def _mask(text: str, spans: Any) -> str:
    """``text`` with each ``(start, end)`` span replaced by as many ``_`` (offsets hold)."""
    for start, end in spans:
        text = text[:start] + "_" * (end - start) + text[end:]
    return text


@functools.cache
def _min_national_length(region: str) -> int:
    """Fewest digits of a valid national significant number in ``region`` (phonenumbers metadata;
    0 = unknown region: never skip it)."""
    from phonenumbers import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region)
    lengths = [n for n in (meta.general_desc.possible_length if meta and meta.general_desc else ()) if n > 0]
    return min(lengths) if lengths else 0


def _phone_recognizer_class() -> type:
    from presidio_analyzer import EntityRecognizer
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class _Recognizer(PhoneRecognizer):
        """Presidio's ``PhoneRecognizer`` (python-phonenumbers, leniency VALID, the same 8 default
        regions and context words) that skips regions that cannot add a match: a number in
        international format (leading ``+``) parses and validates the same in every region
        (phonenumbers reads the country from the number), so after each region its ``+`` matches
        are masked, and the remaining regions run only while a digit run (``_PHONE_TRIGGER``) is
        left. A region is also skipped when no run of digits and phone punctuation in the text
        (``_max_run_digits``) has as many digits as the shortest national significant number valid
        there (phonenumbers metadata ``possible_length``; a match's national number is made of the
        digits of one such run, and the matcher does not read vanity letters): a version string
        like ``3.10.12`` (5 digits) is tried in DE (4) only, not in the 7 regions that need 7–10
        digits, and neither is ``numpy 1.26, released 2024-01-02`` (8 digits in all, at most 6 in one
        run). Same findings as the parent on every text with a
        ``_PHONE_TRIGGER`` digit run (tested on phone/card/IP mixes and on the bundled PyPI
        summaries), at a fraction of the cost; texts without one are not searched (see the
        module docstring)."""

        def analyze(self, text, entities, nlp_artifacts=None):
            import phonenumbers

            results = []
            masked = text
            digits = _max_run_digits(text)
            for region in self.supported_regions:
                if not _PHONE_TRIGGER.search(masked):
                    break
                if digits < _min_national_length(region):
                    continue
                plus_spans = []
                for match in phonenumbers.PhoneNumberMatcher(masked, region, leniency=self.leniency):
                    try:
                        found_region = phonenumbers.region_code_for_number(
                            phonenumbers.parse(text[match.start : match.end])
                        )
                    except phonenumbers.NumberParseException:
                        found_region = region
                    results.append(self._get_recognizer_result(match, text, found_region, nlp_artifacts))
                    if match.raw_string.lstrip().startswith("+"):
                        plus_spans.append((match.start, match.end))
                if plus_spans:
                    masked = _mask(masked, plus_spans)
                    digits = _max_run_digits(masked)
            return EntityRecognizer.remove_duplicates(results)

    return _Recognizer


def _context_enhancer_class() -> type:
    """A context enhancer that returns the findings as they are when it has nothing to compare: no
    tokens around the match (``NoOpNlpEngine`` makes none) and no context words passed to
    ``analyze``; otherwise Presidio's default ``LemmaContextAwareEnhancer`` runs. The stock enhancer
    deep-copies the findings and walks them to reach the same result (Presidio itself warns that it
    cannot use context words with ``NoOpNlpEngine``)."""
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer, LemmaContextAwareEnhancer

    class _Enhancer(ContextAwareEnhancer):
        def __init__(self) -> None:
            self._lemma = LemmaContextAwareEnhancer()
            super().__init__(
                self._lemma.context_similarity_factor,
                self._lemma.min_score_with_context_similarity,
                self._lemma.context_prefix_count,
                self._lemma.context_suffix_count,
            )

        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
            if not context and nlp_artifacts is not None and not nlp_artifacts.tokens and not nlp_artifacts.lemmas:
                return raw_results
            return self._lemma.enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)

    return _Enhancer


class _Engine:
    def __init__(self) -> None:
        import tldextract.tldextract as tlde
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        # Offline: the bundled public-suffix snapshot, no fetch, no cache writes. Loaded now (the
        # first lookup parses the snapshot, ~40 ms), so forked workers inherit it.
        tlde.TLD_EXTRACTOR = tlde.TLDExtract(suffix_list_urls=(), cache_dir=None)
        tlde.TLD_EXTRACTOR("example.com")
        self.analyzer = AnalyzerEngine(
            nlp_engine=NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}]),
            supported_languages=["en"],
            context_aware_enhancer=_context_enhancer_class()(),
        )
        self.analyzer.registry.remove_recognizer("PhoneRecognizer")
        self.analyzer.registry.add_recognizer(_phone_recognizer_class()())
        for entity, patterns in SECRET_PATTERNS.items():
            self.analyzer.registry.add_recognizer(
                PatternRecognizer(
                    supported_entity=entity,
                    name=f"streamtune_{entity.lower()}",
                    patterns=[Pattern(name, rx, 0.9) for name, rx in patterns],
                )
            )
        self.anonymizer = AnonymizerEngine()
        self.operators = {e: OperatorConfig("replace", {"new_value": placeholder(e)}) for e in ENTITIES}
        self.lock = threading.Lock()

    def analyze(self, text: str, entities: list[str] | None = None) -> list[Any]:
        """Presidio findings (score >= SCORE_THRESHOLD) of ``entities`` (default: all ``ENTITIES``);
        only the recognizers of those entities run.

        Phone numbers last: the other recognizers run first, their findings are masked (``_``, same
        length, so offsets hold), and the phone recognizer (python-phonenumbers, the costly one) runs
        on the masked text only if a digit run is left (``_PHONE_TRIGGER``). A card number or IP
        address is therefore never re-reported as a phone number inside its own span (the
        anonymizer would have merged the overlap anyway; the span is redacted either way)."""
        entities = list(entities or ENTITIES)
        others = [e for e in entities if e != "PHONE_NUMBER"]
        with self.lock:
            found = (
                self.analyzer.analyze(text=text, language="en", entities=others, score_threshold=SCORE_THRESHOLD)
                if others
                else []
            )
            if len(others) == len(entities):
                return found
            masked = _mask(text, ((r.start, r.end) for r in found))
            if not _PHONE_TRIGGER.search(masked):
                return found
            return found + self.analyzer.analyze(
                text=masked, language="en", entities=["PHONE_NUMBER"], score_threshold=SCORE_THRESHOLD
            )

    def anonymize(self, text: str, results: list[Any]) -> str:
        with self.lock:
            return self.anonymizer.anonymize(text=text, analyzer_results=results, operators=self.operators).text


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE
