"""Entities, prefilter triggers, secret patterns and the per-entity policy of the PII gate (see ``quality.pii``)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)",
        ),
    ],
}
"""Vetted secret patterns (gitleaks / detect-secrets rule families), one Presidio PatternRecognizer
per entity. A PEM header without its END line redacts to the end of the value."""

_DIGIT_RUN = r"\d[\d\s().+/\-]{4,}\d"
_IP = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}"
_IBAN = r"[A-Z]{2}\d{2}"
_TOKEN = (
    r"(?:^|[^0-9A-Za-z_])"
    r"(?:AKIA|ASIA|ABIA|ACCA|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|[sr]k_(?:live|test)_|sk-|AIza|eyJ)"
)
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
