"""The Great Expectations runner: one ephemeral context per process, one validation definition per suite.

Results are parsed into row numbers per rule (``unexpected_index_list``), counts and observed values; row
values never leave GX (``RESULT_FORMAT``). Data Docs are rendered on request (``quality.suite.data_docs``).
"""

import hashlib
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from quality.lazy import lazy_singleton
from quality.suite.config import QualityGateError

RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["row_number"],
    "exclude_unexpected_values": True,  # row numbers only: no text in results
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}


@dataclass(frozen=True)
class _Run:
    run_id: str
    success: bool
    statistics: dict
    summaries: tuple[dict, ...]
    _rows: dict[str, list[int]] = field(repr=False)
    _observed: dict[str, Any] = field(repr=False)
    docs_index: str | None = None
    suite_json: dict = field(default_factory=dict, repr=False)
    """The validated suite as GX JSON (``ExpectationSuite.to_json_dict()``)."""

    def failing_rows(self, rule: str) -> list[int]:
        """row_numbers failing ``rule`` (empty if the rule was not evaluated)."""
        return self._rows.get(rule, [])

    def observed_value(self, rule: str) -> Any:
        return self._observed[rule]


class _Gx:
    """One ephemeral GX context per process; one validation definition per distinct suite."""

    def __init__(self) -> None:
        os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before the import reads it
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx, self.RunIdentifier = gx, RunIdentifier
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.batch_definition = (
            self.ctx.data_sources.add_pandas("streamtune")
            .add_dataframe_asset("window")
            .add_batch_definition_whole_dataframe("whole")
        )
        self.definitions: dict[str, Any] = {}
        self.lock = threading.Lock()

    def _definition(self, kind: str, specs: list[tuple[str, str, dict]]) -> Any:
        import great_expectations.expectations as gxe

        name = f"{kind}-{hashlib.sha256(repr(specs).encode()).hexdigest()[:16]}"
        if name not in self.definitions:
            suite = self.ctx.suites.add(self.gx.ExpectationSuite(name=name))
            for rule, expectation, kwargs in specs:
                suite.add_expectation(getattr(gxe, expectation)(**kwargs, meta={"rule": rule}))
            self.definitions[name] = self.ctx.validation_definitions.add(
                self.gx.ValidationDefinition(name=name, data=self.batch_definition, suite=suite)
            )
        return self.definitions[name]

    def validate(
        self,
        kind: str,
        specs: list[tuple[str, str, dict]],
        frame: pl.DataFrame,
        docs_dir: str | os.PathLike | None = None,
    ) -> _Run:
        run_id = f"{kind}-{uuid.uuid4().hex}"
        docs_index = None
        with self.lock:
            definition = self._definition(kind, specs)
            suite_json = definition.suite.to_json_dict()
            result = definition.run(
                batch_parameters={"dataframe": frame.to_pandas()},
                result_format=RESULT_FORMAT,
                run_id=self.RunIdentifier(run_name=run_id, run_time=datetime.now(UTC)),
            )
            store = self.ctx.validation_results_store
            try:
                if docs_dir is not None:
                    docs_index = self._build_docs(docs_dir)
            finally:
                for key in store.list_keys():  # keep the context from accumulating results
                    store.remove_key(key)

        rows: dict[str, list[int]] = {}
        observed: dict[str, Any] = {}
        summaries = []
        for r in result.results:
            rule = (r.expectation_config.meta or {}).get("rule")
            raised = _raised_exception(r.exception_info)
            res = r.result or {}
            if raised is not None or not res:
                raise QualityGateError(
                    f"GX could not evaluate {r.expectation_config.type} (rule {rule})", gx_exception_message=raised
                )
            ids: list[int] = []
            for entry in res.get("unexpected_index_list") or []:
                value = entry["row_number"] if isinstance(entry, dict) else entry
                ids.extend(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
            if "unexpected_count" in res and res["unexpected_count"] != len(ids):
                raise QualityGateError(
                    f"GX listed {len(ids)} rows for rule {rule} but counted {res['unexpected_count']}"
                )
            rows[rule] = sorted(ids)
            observed[rule] = res.get("observed_value")
            summaries.append(
                {
                    "rule": rule,
                    "expectation_type": r.expectation_config.type,
                    "success": bool(r.success),
                    "element_count": int(res.get("element_count") or 0),
                    "unexpected_count": int(res.get("unexpected_count") or 0),
                    "missing_count": int(res.get("missing_count") or 0),
                }
            )
        order = {rule: i for i, (rule, _, _) in enumerate(specs)}
        missing = set(order) - set(rows)
        if missing:
            raise QualityGateError(f"GX returned no result for rules {sorted(missing)}")
        return _Run(
            run_id=run_id,
            success=bool(result.success),
            statistics={
                k: (float(v) if k == "success_percent" and v is not None else v)
                for k, v in dict(result.statistics).items()
            },
            summaries=tuple(sorted(summaries, key=lambda s: order[s["rule"]])),
            _rows=rows,
            _observed=observed,
            docs_index=docs_index,
            suite_json=suite_json,
        )

    def _build_docs(self, docs_dir: str | os.PathLike) -> str:
        """Render the stored validation result(s) as a Data Docs site in ``docs_dir`` (replaced)."""
        import shutil
        from pathlib import Path

        from quality.suite.data_docs import site_config

        site = f"window-{uuid.uuid4().hex[:12]}"
        target = Path(docs_dir)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        self.ctx.add_data_docs_site(site_name=site, site_config=site_config(target))
        try:
            self.ctx.build_data_docs(site_names=[site])
        finally:
            self.ctx.delete_data_docs_site(site)
        return str(target / "index.html")


def _raised_exception(info: dict | None) -> str | None:
    """The exception message if GX raised; ``exception_info`` is either flat or keyed by metric."""
    if not info:
        return None
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    for candidate in candidates:
        if candidate.get("raised_exception"):
            return str(candidate.get("exception_message") or "")
    return None


_gx: Callable[[], _Gx] = lazy_singleton(_Gx)
"""The process's one ``_Gx``, built on first use."""
