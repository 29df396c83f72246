"""bench/adaptive.py end to end on a tiny real stream: every arm runs, the report, JSON and plot are written."""

import importlib.util
import json
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_ROOT))
_spec = importlib.util.spec_from_file_location("bench_adaptive", _ROOT / "bench" / "adaptive.py")
_bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_adaptive"] = _bench  # dataclasses look their module up while the class is built
_spec.loader.exec_module(_bench)

WORDS = ["parser", "client", "server", "async", "plotting", "numeric", "web", "schema", "cli", "cache"]
SHIFTED = ["mcp", "agent", "protocol", "llm", "tool", "prompt", "model", "context", "agentic", "claude"]


def _write_stream(root: Path) -> Path:
    """Five windows of 40 package summaries; the vocabulary changes at window 3 (an injected shift)."""
    stream = root / "stream"
    stream.mkdir()
    for w in range(5):
        vocab = SHIFTED if w >= 3 else WORDS
        with (stream / f"w-{w}.jsonl").open("w") as fh:
            for i in range(40):
                text = f"A {vocab[i % 10]} library for {vocab[(3 * i + w) % 10]} and {vocab[(7 * i) % 10]} tasks"
                fh.write(json.dumps({"id": f"w{w}-{i}", "text": text}) + "\n")
    return stream


def test_adaptive_bench_runs_every_arm_on_a_tiny_stream(tmp_path):
    out = tmp_path / "out"
    _bench.main(
        ["--stream", str(_write_stream(tmp_path)), "--out", str(out), "--seeds", "2", "--grid-seeds", "1",
         "--steps", "2", "--m0-steps", "2", "--batch", "4", "--seq-len", "32", "--n-embd", "16", "--vocab", "300",
         "--null-splits", "20", "--lex-rows", "40", "--eval-rows", "8", "--cadence", "2", "--staleness", "2",
         "--eval-fraction", "0.2"]
    )  # fmt: skip
    data = json.loads((out / "adaptive.json").read_text())
    arms = data["summary"]["arms"]
    main = ["every_window", "cadence_2", "drift", "drift+adaptive", "drift+meta"]
    assert set(main) <= set(arms) and sum(n.startswith("grid:") for n in arms) == 12
    assert all(arms[n]["seeds"] == [0, 1] for n in main)
    ew = data["results"]["every_window"]["0"]
    # every window updates after each of the 4 windows after W_0; cadence 2 after windows 2 and 4
    assert ew["updates"] == 4 and [u["t"] for u in ew["update_log"]] == [1, 2, 3, 4]
    assert [u["t"] for u in data["results"]["cadence_2"]["0"]["update_log"]] == [2, 4]
    # drift policy: an update at least once 2 windows pend (staleness bound) or on an alarm
    drift_ts = [u["t"] for u in data["results"]["drift"]["0"]["update_log"]]
    assert drift_ts and all(b - a <= 2 for a, b in zip([0, *drift_ts], drift_ts))
    assert ew["train_tokens"] == 4 * 2 * 4 * 32 and arms["every_window"]["tokens_vs_every_window"] == 1.0
    assert len(ew["curve"]) == 4 and all(0 < x < 20 for x in ew["curve"])
    meta_arms = {u["arm"] for r in data["results"]["drift+meta"].values() for u in r["update_log"]}
    assert meta_arms and all(a.startswith("lr") for a in meta_arms)
    t2 = data["summary"]["target_meta"]
    assert t2["best_grid"].startswith("grid:") and isinstance(t2["met"], bool)
    assert data["summary"]["pick"] in main
    md = (out / "adaptive.md").read_text()
    assert "| drift+adaptive | 2 |" in md and "## Targets" in md
    assert (out / "adaptive.png").stat().st_size > 10_000
    (out / "adaptive.md").unlink()
    _bench.main(["--report-only", "--out", str(out)])  # re-rendered from adaptive.json, no training
    assert (out / "adaptive.md").read_text() == md
