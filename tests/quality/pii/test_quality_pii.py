"""PII/secret detection and redaction (Presidio, offline NoOpNlpEngine) and the pii_free check."""

import polars as pl
import pytest

from quality.pii import ENTITIES, PiiPolicy, redact_rows, redact_values, scan_counts
from quality.suite import check_pii_free

# One value per entity; every value must disappear from redacted text.
SAMPLES = {
    "EMAIL_ADDRESS": "jane.roe.1987@example.org",
    "PHONE_NUMBER": "+1 (415) 555-0132",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "US_SSN": "536-22-8726",
    "IP_ADDRESS": "192.168.13.77",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "API_KEY": "AKIAQ7YX3EXAMPLEKEY9",
}
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x3Jexample\n-----END RSA PRIVATE KEY-----"


def frame(texts, metas=None):
    n = len(texts)
    return pl.DataFrame(
        {"row_number": list(range(1, n + 1)), "text": texts, "metadata": metas or ["{}"] * n},
        schema={"row_number": pl.Int64, "text": pl.String, "metadata": pl.String},
    )


@pytest.mark.parametrize("entity", list(SAMPLES))
def test_each_entity_is_redacted_with_its_placeholder(entity):
    value = SAMPLES[entity]
    context = "my social security number is " if entity == "US_SSN" else "contact: "
    out = redact_rows(frame([context + value + " thanks"]))
    text = out.text[0]
    assert value not in text and f"<{entity}>" in text
    assert out.redactions.get(entity, 0) >= 1
    assert not out.quarantine


def test_private_key_quarantines_the_row_by_default_and_can_be_redacted():
    out = redact_rows(frame(["deploy key " + PEM, "clean row"]))
    assert out.quarantine == {1: ["PRIVATE_KEY"]}
    assert out.text[0].startswith("deploy key -----BEGIN")  # untouched: the raw row goes to quarantine
    red = redact_rows(frame(["deploy key " + PEM]), PiiPolicy(actions={}))
    assert red.text[0] == "deploy key <PRIVATE_KEY>" and red.redactions == {"PRIVATE_KEY": 1}


def test_policy_can_quarantine_any_entity_and_a_scrubbed_placeholder_still_quarantines():
    policy = PiiPolicy(actions={"EMAIL_ADDRESS": "quarantine"})
    out = redact_rows(frame([f"mail {SAMPLES['EMAIL_ADDRESS']}", "mail <EMAIL_ADDRESS>"]), policy)
    assert out.quarantine == {1: ["EMAIL_ADDRESS"], 2: ["EMAIL_ADDRESS"]}


def test_metadata_is_redacted_too_and_stays_json():
    import json

    out = redact_rows(frame(["hello"], ['{"contact":"jane.roe.1987@example.org","n":1}']))
    assert json.loads(out.metadata[0]) == {"contact": "<EMAIL_ADDRESS>", "n": 1}


def test_prefilter_skips_plain_text_and_nothing_is_flagged():
    texts = ["A fast JSON parser for data pipelines", "Async client library for the web API", None]
    out = redact_rows(frame(texts))
    assert out.candidates == 0 and out.redactions == {} and out.text.to_list() == texts


def test_luhn_invalid_card_is_not_redacted():
    out = redact_rows(frame(["order 1234 5678 9012 3456"]))
    assert "<CREDIT_CARD>" not in out.text[0]


def test_redact_values_and_scan_counts():
    raw = ['{"text": "mail jane.roe.1987@example.org", broken']
    red = redact_values(raw)
    assert "jane.roe" not in red[0] and "<EMAIL_ADDRESS>" in red[0]
    assert scan_counts(red) == {}
    assert scan_counts(raw) == {"EMAIL_ADDRESS": 1}


def test_check_pii_free_fails_on_remaining_pii_and_reports_counts_only():
    rows = pl.DataFrame({"text": ["ok", "mail jane.roe.1987@example.org"], "metadata": ["{}", "{}"]})
    outcome = check_pii_free(rows)
    assert not outcome.passed and outcome.metadata["findings_email_address"] == 1
    assert "jane" not in str(outcome.metadata) + outcome.description
    assert check_pii_free(rows.head(1)).passed


def test_policy_validation():
    with pytest.raises(ValueError, match="unknown entities"):
        PiiPolicy(actions={"NAME": "redact"})
    with pytest.raises(ValueError, match="actions must be one of"):
        PiiPolicy(actions={"EMAIL_ADDRESS": "drop"})
    assert set(SAMPLES) | {"PRIVATE_KEY"} == set(ENTITIES)


def test_entity_routing_finds_exactly_what_a_full_analysis_finds():
    """Each candidate is analyzed only for the entities whose trigger it matches: same findings."""
    from quality import pii

    texts = [f"see {v} today" for v in SAMPLES.values()] + [
        PEM,
        "mail a@b.co or call 020 7946 0958",
        "phone 415.555.0132, ip 2001:db8::8a2e:370:7334",
        "social security number 536-22-8726 and card 4111-1111-1111-1111",
        "ghp_" + "a" * 36 + " and x@y.org",
        "iban GB82 WEST 1234 5698 7654 32 and +44 20 7946 0958",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijk",
        "no pii here at all",
        "version 1.2.3 released 2024-01-01",
        "call me maybe at 555 0100",
        "::1 and 10.0.0.1",
    ]
    engine = pii._engine()
    routes = pii._routes(pl.Series(texts), pii.PREFILTER_REGEX)
    for i, t in enumerate(texts):
        full = sorted((r.entity_type, r.start, r.end, r.score) for r in engine.analyze(t))
        ents = routes.get(i)
        routed = sorted((r.entity_type, r.start, r.end, r.score) for r in engine.analyze(t, ents)) if ents else []
        assert routed == full, t


def test_phone_last_and_international_shortcut_redact_what_stock_presidio_redacts():
    """The engine runs the phone recognizer last, on text with other findings masked, and skips
    regions once only international (+) numbers are left: the redacted text equals stock
    Presidio's (AnalyzerEngine defaults) on phone/card/IP mixes, and the phone spans equal those of
    Presidio's own PhoneRecognizer."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    from quality import pii

    numbers = [
        "+1 (415) 555-0134",
        "415.555.0100",
        "+44 20 7946 0958",
        "030 12345678",
        "+49 30 12345678",
        "(212) 555-7890",
        "4111 1111 1111 1111",
        "10.0.3.4",
        "+91 98765 43210",
        "11 98765-4321",
        "+33 1 42 68 53 00",
        "01 42 68 53 00",
        "2023-2025",
        "192.168.100.200",
    ]
    texts = [f"call {a} or {b}, ref {i}" for i, (a, b) in enumerate(zip(numbers, numbers[3:] + numbers[:3]))]
    texts += [f"fax {n}" for n in numbers] + ["+1 415 555 0134 +44 20 7946 0958 then 030 12345678"]
    ents = [e for e in pii.ENTITIES if e not in ("API_KEY", "PRIVATE_KEY")]
    stock = AnalyzerEngine(
        nlp_engine=NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}]), supported_languages=["en"]
    )
    engine = pii._engine()
    generic = "<X>"
    for t in texts:
        ours = engine.analyze(t, ents)
        theirs = stock.analyze(text=t, language="en", entities=ents, score_threshold=pii.SCORE_THRESHOLD)
        redact = [engine.anonymize(t, res) if res else t for res in (ours, theirs)]
        for e in ("PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS"):
            redact = [r.replace(f"<{e}>", generic) for r in redact]
        assert redact[0] == redact[1], t
        phone_ours = sorted((r.start, r.end) for r in engine.analyzer.analyze(t, "en", entities=["PHONE_NUMBER"]))
        phone_stock = sorted((r.start, r.end) for r in PhoneRecognizer().analyze(t, ["PHONE_NUMBER"]))
        assert phone_ours == phone_stock, t
    assert any(r.entity_type == "PHONE_NUMBER" for r in engine.analyze(texts[0], ents))


def test_phone_region_skipping_matches_stock_phone_recognizer_on_real_summaries():
    """Regions whose shortest valid national number has more digits than the text are skipped:
    on every bundled PyPI summary with a digit run, the same phone spans as Presidio's own
    PhoneRecognizer (8 regions, no skipping), and fewer phonenumbers calls."""
    import json
    from pathlib import Path

    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    from quality.pii import engine as pii_engine

    demo = Path(__file__).resolve().parents[3] / "data" / "demo"
    texts = [json.loads(line)["text"] for f in sorted(demo.glob("pypi-*.jsonl")) for line in f.open()]
    texts = [t for t in texts if t and pii_engine._PHONE_TRIGGER.search(t)]
    texts += [
        "call 1645 0123 now",
        "tel 030 1234",
        "+49 30 1234",
        "12 34 56",
        "phone 555-0134 or 415 555 0134",
        # digits split over runs (per-run bound) and runs joined by phone punctuation, x/X, brackets
        "numpy 1.26, released 2024-01-02",
        "v2.31.0 (2024), 415/555/0134",
        "call 030 1234567x89",
        "tel: 0301234567, 0301234568",
        "(030) 1234 5678 / +49 30 1234",
        "ext 1234567 at 030-1234-5678",
        "415X555X0134",
        "[415] 555.0134",
        "４１５ ５５５ ０１３４",
        "+1\t415\n555 0134",
        "a1b2c3d4e5f6g7h8i9j0",
    ]
    assert len(texts) > 50
    ours, stock = pii_engine._phone_recognizer_class()(), PhoneRecognizer()
    for t in texts:
        assert sorted((r.start, r.end) for r in ours.analyze(t, ["PHONE_NUMBER"])) == sorted(
            (r.start, r.end) for r in stock.analyze(t, ["PHONE_NUMBER"])
        ), t
    assert pii_engine._min_national_length("DE") == 4 and pii_engine._min_national_length("US") == 10
    assert (
        pii_engine._max_run_digits("numpy 1.26, released 2024-01-02") == 8
        and pii_engine._max_run_digits("no digits") == 0
    )


def test_a_failed_presidio_worker_falls_back_to_inline_analysis():
    """A worker that dies (here: exits mid-task) loses no verdict: redact_rows analyzes its rows inline."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from quality import pii

    rows = frame([f"mail {SAMPLES['EMAIL_ADDRESS']}", f"card {SAMPLES['CREDIT_CARD']}", "plain", PEM])
    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    broken = pii.PendingScan(
        executor,
        [executor.submit(os._exit, 1)],
        pii._candidate_items(rows, pii.PiiPolicy()),
        rows.get_column("row_number"),
    )
    got, want = redact_rows(rows, scan=broken), redact_rows(rows)
    assert got.text.to_list() == want.text.to_list() and got.quarantine == want.quarantine == {4: ["PRIVATE_KEY"]}
    assert got.redactions == want.redactions == {"EMAIL_ADDRESS": 1, "CREDIT_CARD": 1}


def test_a_scan_of_a_subset_or_superset_gives_the_inline_verdict():
    """redact_rows reuses a scan's prefilter for the rows it covered and prefilters the others itself."""
    from quality import pii

    rows = frame(
        [
            f"mail {SAMPLES['EMAIL_ADDRESS']}",
            "plain",
            f"card {SAMPLES['CREDIT_CARD']}",
            PEM,
            f"ip {SAMPLES['IP_ADDRESS']}",
            "x" * 50 + f" {SAMPLES['EMAIL_ADDRESS']}",
        ]
    )
    want = redact_rows(rows)
    for scanned, judged in ((rows.head(3), rows), (rows, rows.tail(4)), (rows, rows)):
        # max_chars leaves the long last row out of the scan: redact_rows must prefilter it itself
        scan = pii.start_scan(scanned, workers=1, min_candidates=1, max_chars=40)
        got = redact_rows(judged, scan=scan)
        inline = redact_rows(judged)
        assert got.text.to_list() == inline.text.to_list() and got.metadata.to_list() == inline.metadata.to_list()
        assert got.quarantine == inline.quarantine and got.redactions == inline.redactions
        assert got.candidates == inline.candidates
    assert want.quarantine == {4: ["PRIVATE_KEY"]} and want.redactions["EMAIL_ADDRESS"] == 2


def test_result_takes_back_the_chunks_no_worker_started():
    """Work stealing: with the only worker busy, result() analyzes every chunk that never reached
    it in the caller's process; the verdict equals the inline one."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    from quality import pii

    texts = [f"row {i}: mail {SAMPLES['EMAIL_ADDRESS']}, card {SAMPLES['CREDIT_CARD']}" for i in range(10)]
    rows = frame(texts + ["plain", PEM] + [f"call {SAMPLES['PHONE_NUMBER']} ({i})" for i in range(10)])
    items = pii._candidate_items(rows, pii.PiiPolicy())
    chunks = [items[k : k + 2] for k in range(0, len(items), 2)]
    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    executor.submit(time.sleep, 1.0)  # keeps the worker busy while result() steals
    marker = pii._marker_pattern(pii.PiiPolicy())
    futures = [executor.submit(pii._scan_items, chunk, marker) for chunk in chunks]
    scan = pii.PendingScan(executor, futures, items, rows.get_column("row_number"), marker, chunks)
    got, want = redact_rows(rows, scan=scan), redact_rows(rows)
    assert len(chunks) >= 10 and scan.stolen >= len(chunks) - 3  # the call queue holds up to 2 more
    assert got.text.to_list() == want.text.to_list() and got.metadata.to_list() == want.metadata.to_list()
    assert got.quarantine == want.quarantine == {12: ["PRIVATE_KEY"]}
    assert got.redactions == want.redactions and got.redactions["PHONE_NUMBER"] == 10
    assert scan.steal() is False  # nothing left once the result is in


def test_api_key_trigger_skips_package_names_but_keeps_every_token():
    """The API_KEY trigger needs a non-word character (or the start) before a token prefix, as the
    patterns' leading \\b does: task-/flask- package names are not candidates, tokens after
    punctuation, quotes, non-ASCII letters or at the start still are."""
    from quality import pii

    token = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    texts = [
        "vector-task-mcp",
        "flask-reqcheck",
        "odoo-addon-risk-analysis",
        token,
        f"key={token}",
        f'{{"k":"{token}"}}',
        f"é{token}",
        f"(ghp_{'a' * 36})",
        "prefix_sk-notakey",
    ]
    routes = pii._routes(pl.Series(texts), pii.PREFILTER_REGEX)
    engine = pii._engine()
    for i, t in enumerate(texts):
        found = [r.entity_type for r in engine.analyze(t)]
        if "API_KEY" in found:
            assert "API_KEY" in routes.get(i, []), t
    assert not any(i in routes for i in (0, 1, 2, 8))
    assert all("API_KEY" in routes[i] for i in (3, 4, 5, 6, 7))
