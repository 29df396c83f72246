"""Drift history as a picture and a table: every statistic over windows, thresholds and alarms marked.

No Dagster or MLflow imports; used by the ``drift_report`` asset and ``bench/drift.py``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path

from quality.drift.config import STAT_NAMES

__all__ = ["plot_drift_history", "history_markdown", "png_data_uri"]

LABELS = {
    "token_js": "unigram JS divergence (bits)",
    "oov_rate": "OOV rate vs reference",
    "length_ks": "length KS statistic",
    "emerging_z": "top emerging-term z (log-odds)",
    "bytes_per_token": "Δ bytes/token",
    "lm_bpb": "Δ champion bits/byte",
    "embedding_mmd2": "MiniLM MMD²",
    "quarantine_rate": "Δ quarantine share",
}


def _num(v) -> float:
    return math.nan if v is None else float(v)


def plot_drift_history(rows: Sequence[dict], path: str | Path, title: str = "drift per window") -> Path:
    """Write a PNG: one panel per statistic present, value per window, its threshold, and alarms.

    Args:
        rows: ``monitor.window_profile`` rows (dicts) in window order; uses ``window_key``, every
            ``<stat>``, ``<stat>_threshold``, ``<stat>_p``, ``alpha``, ``exceeded``, ``drift``.
        path: PNG file to write (parent created).
        title: figure title.

    Returns:
        ``path``. Exceeded windows are orange dots, confirmed drift windows red vertical lines; for
        statistics tested by a p-value (no threshold series) the lower panel shows -log10 p with the
        ``alpha`` line instead.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [r["window_key"] for r in rows]
    present = [s for s in STAT_NAMES if any(r.get(s) is not None for r in rows)]
    n = max(1, len(present))
    fig, axes = plt.subplots(n, 2, figsize=(13, 2.1 * n + 0.8), sharex=True, squeeze=False)
    x = list(range(len(keys)))
    drift_x = [i for i, r in enumerate(rows) if r.get("drift")]
    for ax_row, stat in zip(axes, present):
        ax, axp = ax_row
        vals = [_num(r.get(stat)) for r in rows]
        ax.plot(x, vals, marker=".", lw=1, color="tab:blue", label="value")
        thr = [_num(r.get(f"{stat}_threshold")) for r in rows]
        if any(not math.isnan(t) for t in thr):
            ax.plot(x, thr, ls="--", lw=1, color="gray", label="calibrated threshold")
        exc = [i for i, r in enumerate(rows) if stat in (r.get("exceeded") or [])]
        ax.scatter(exc, [vals[i] for i in exc], color="tab:orange", zorder=3, s=18, label="exceeded")
        ps = [_num(r.get(f"{stat}_p")) for r in rows]
        axp.plot(x, [-math.log10(p) if p and p > 0 else math.nan for p in ps], marker=".", lw=1, color="tab:green")
        axp.plot(
            x, [-math.log10(r["alpha"]) if r.get("alpha") else math.nan for r in rows], ls="--", lw=1, color="gray"
        )
        for a in (ax, axp):
            for i in drift_x:
                a.axvline(i, color="red", alpha=0.35, lw=2)
        ax.set_ylabel(LABELS.get(stat, stat), fontsize=8)
        axp.set_ylabel("-log10 p", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper left")
    axes[0][0].set_title("value (red lines: confirmed drift)", fontsize=9)
    axes[0][1].set_title("-log10 p-value vs Bonferroni alpha", fontsize=9)
    step = max(1, len(keys) // 24)
    for a in axes[-1]:
        a.set_xticks(x[::step])
        a.set_xticklabels(keys[::step], rotation=60, fontsize=7, ha="right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def png_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` of a PNG file (for a Markdown image in Dagster metadata)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def history_markdown(rows: Sequence[dict], image_uri: str | None = None, last: int = 24) -> str:
    """Markdown: the plot (if given) and a table of the last ``last`` windows: drift, exceeded statistics,
    the top 5 emerging terms (``emerging_terms`` JSON column, already PII-redacted) and the reason."""
    import json

    lines = []
    if image_uri:
        lines += [f"![drift history]({image_uri})", ""]
    lines += ["| window | drift | exceeded | top emerging terms (z) | reason |", "|---|---|---|---|---|"]
    for r in list(rows)[-last:]:
        exc = ", ".join(r.get("exceeded") or []) or "-"
        reason = str(r.get("reason", "")).replace("|", "/")
        terms = r.get("emerging_terms")
        terms = json.loads(terms) if isinstance(terms, str) else (terms or [])
        top = ", ".join(f"{t['term']} ({t['z']:.1f})" for t in terms[:5]).replace("|", "/") or "-"
        lines.append(f"| {r['window_key']} | {'**yes**' if r.get('drift') else 'no'} | {exc} | {top} | {reason} |")
    return "\n".join(lines)
