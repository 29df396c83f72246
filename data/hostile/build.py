"""Write the hostile window corpus into ``data/hostile/files/`` (deterministic; committed).

``python data/hostile/build.py`` rewrites the small files. The 10 MB single-line file is not
committed: ``write_big_line(dir)`` creates it where a test needs it. ``expected.json`` gives each
file's expected outcome (row accounting, rules, errors); tests/orchestration/test_quality_hostile.py
runs every file through the landing sensor and the ingest assets and compares.
"""

import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"


def good(i: int, tag: str) -> str:
    return json.dumps({"id": f"{tag}-{i}", "text": f"{tag} sample record number {i} about streaming parsers"})


def write_big_line(directory: Path) -> Path:
    """``big-line.jsonl``: two good records around one ~10 MB record (text_too_long)."""
    directory.mkdir(parents=True, exist_ok=True)
    big = json.dumps({"id": "big", "text": "lorem ipsum " * (10 * 1024 * 1024 // 12)})
    path = directory / "big-line.jsonl"
    path.write_text("\n".join([good(1, "big"), big, good(2, "big")]) + "\n")
    return path


def build(directory: Path = FILES) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    w = lambda name, data: (directory / name).write_bytes(data if isinstance(data, bytes) else data.encode())  # noqa: E731

    w(
        "malformed-json.jsonl",
        "\n".join(
            [
                good(1, "mal"),
                "{bad json",
                "[1, 2]",
                '"just a string"',
                '{"text": "unterminated',
                good(2, "mal"),
                "",
                '{"text": NaN}',
                good(3, "mal"),
            ]
        )
        + "\n",
    )
    # bad bytes inside a value: a row, quarantined by valid_utf8; bad bytes breaking the JSON: a reject
    w(
        "invalid-utf8.jsonl",
        (good(1, "utf") + "\n").encode()
        + b'{"id": "bad-bytes", "text": "caf\xe9 latin-1 bytes \xff\xfe"}\n'
        + b'{"id": "bad-structure", \xff\xfe "text": "bytes where a key should start"}\n'
        + (good(2, "utf") + "\n").encode(),
    )
    w(
        "nul-bytes.jsonl",
        "\n".join(
            [
                good(1, "nul"),
                json.dumps({"id": "nul-escaped", "text": "a\u0000b escaped NUL inside the text"}),
                '{"id": "nul-raw", "text": "raw\x00byte"}',
                good(2, "nul"),
            ]
        )
        + "\n",
    )
    w("empty.jsonl", b"")
    full = gzip.compress(("\n".join(good(i, "gz") for i in range(50)) + "\n").encode(), mtime=0)
    w("truncated.jsonl.gz", full[: len(full) // 2])
    w(
        "embedded.csv",
        "id,text,source\r\n"
        'c1,"a text with a newline\ninside it and ""quotes""",web\r\n'
        'c2,"commas, inside, quotes",api\r\n'
        "c3,plain text row,api\r\n"
        'c4,"only two fields"\r\n',
    )
    w(
        "bom-crlf.jsonl",
        b"\xef\xbb\xbf" + "\r\n".join([good(1, "bom"), good(2, "bom"), good(3, "bom")]).encode() + b"\r\n",
    )
    w(
        "missing-text.jsonl",
        "\n".join(
            [
                good(1, "mis"),
                json.dumps({"id": "no-text", "body": "text is under another key"}),
                json.dumps({"id": "null-text", "text": None}),
                good(2, "mis"),
            ]
        )
        + "\n",
    )
    w(
        "wrong-types.jsonl",
        "\n".join(
            [
                good(1, "typ"),
                json.dumps({"id": "int-text", "text": 42}),
                json.dumps({"id": 1.5, "text": "float id"}),
                json.dumps({"id": "bad-ts", "text": "bad timestamp", "ts": "yesterday"}),
                json.dumps({"id": "list-text", "text": ["a", "b"]}),
                json.dumps({"id": 7, "text": "integer id is fine"}),
            ]
        )
        + "\n",
    )
    w(
        "extra-fields.jsonl",
        "\n".join(
            [
                json.dumps(
                    {
                        "id": "x1",
                        "text": "extra fields are kept as metadata",
                        "lang": "en",
                        "score": 0.5,
                        "nested": {"a": [1, 2]},
                    }
                ),
                json.dumps({"id": "x2", "text": "another one with extras", "tags": ["a", "b"], "ok": True}),
            ]
        )
        + "\n",
    )
    # the same bytes as bom-crlf.jsonl under another name
    w("bom-crlf redelivered.jsonl", (directory / "bom-crlf.jsonl").read_bytes())
    for name in ("name with spaces.jsonl", "naïve ünïcode 窓.jsonl", 'it\'s "quoted"; DROP TABLE raw.events;--.jsonl'):
        w(name, "\n".join(good(i, name[:4]) for i in range(3)) + "\n")


if __name__ == "__main__":
    build()
