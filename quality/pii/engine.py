"""The Presidio engine of the PII gate: offline analyzer and anonymizer, built once per process, plus the phone
recognizer that searches only digit runs (see ``quality.pii``)."""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from quality.lazy import lazy_singleton
from quality.pii.policy import _DIGIT_RUN, ENTITIES, SCORE_THRESHOLD, SECRET_PATTERNS, placeholder


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


OPTIONAL_BACKENDS = ("transformers", "torch")
"""Modules Presidio imports only for NLP engines the gate never uses (its ``TransformersNlpEngine`` imports
``transformers.pipeline``, spaCy's ``thinc`` imports torch). With ``NoOpNlpEngine`` nothing calls them."""


@contextlib.contextmanager
def _without_optional_backends() -> Iterator[None]:
    """Import Presidio as if ``OPTIONAL_BACKENDS`` were not installed: each one not imported yet is hidden
    (``sys.modules[name] = None`` makes ``import name`` raise ImportError, which Presidio and thinc catch) and
    unhidden on exit, so a later ``import torch`` in the same process imports it normally.

    Why: ``import presidio_analyzer`` pulled in transformers (image processing, pipelines) and torch, 9-17 s
    of a loaded 2-core machine's CPU and most of an ingest run (issue 18); hidden, 2.2-2.6 s on the same
    machine. A process that has imported them already (a fine-tune) keeps them; the findings are the same
    (the gate's recognizers are regex/phonenumbers, ``NoOpNlpEngine``). Called under the engine's build lock.
    """
    hidden = [name for name in OPTIONAL_BACKENDS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


class _Engine:
    def __init__(self) -> None:
        import tldextract.tldextract as tlde

        with _without_optional_backends():
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


_engine: Callable[[], _Engine] = lazy_singleton(_Engine)
"""The process's one ``_Engine``, built on first use."""


def build_engine() -> None:
    """Build the process's Presidio engine now rather than at the first value that passes the prefilter
    (about 1.2 s on the 2-core machine: the Presidio imports and the recognizers). A process that forks
    workers afterwards (the run workers' fork server, ``orchestration.run_workers``; the parallel scan,
    ``quality.pii.scan.start_scan``) hands it to each of them. Idempotent; no thread is started."""
    _engine()
