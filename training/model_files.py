"""Integrity of model directories: SHA-256 manifests of their files and a structural check of each file.

A registered version carries ``checksums.json`` (``CHECKSUMS_FILE``) next to its model files: for each file
name its size in bytes and SHA-256, recorded when the version was logged. ``verify_manifest`` compares a local
directory with it (sizes only, or sizes and hashes); ``check_structure`` checks what can be checked without a
manifest (a ``.safetensors`` header covers exactly the file, JSON parses, a ``.pt`` zip archive has its
central directory), for versions registered before manifests existed and to name the damaged file when a
load fails. Every failure is a ``ModelFileError`` (an ``OSError``) whose one-line message names the file.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

__all__ = [
    "CHECKSUMS_FILE",
    "LOCAL_COPY_MARKER",
    "ModelFileError",
    "build_manifest",
    "check_structure",
    "copy_label",
    "file_entry",
    "read_manifest",
    "verify_manifest",
    "write_manifest",
]

CHECKSUMS_FILE = "checksums.json"
"""Name of the manifest: ``{"files": {name: {"size": bytes, "sha256": hex}}}``."""

LOCAL_COPY_MARKER = ".complete"
"""File written last into a ``ModelRegistry.local_copy`` directory: present = the copy is whole. Holds
``"<model name> version <N>"``, which load errors quote."""

_CHUNK = 1 << 20


class ModelFileError(OSError):
    """A model file is missing, truncated, malformed or differs from its recorded checksum."""


def file_entry(path: Path) -> dict[str, int | str]:
    """``{"size": bytes, "sha256": hex}`` of one file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def build_manifest(directory: Path) -> dict[str, dict[str, int | str]]:
    """Entries (``file_entry``) of every regular file directly in ``directory``, except the manifest itself
    and dot files (markers, staging folders); name -> entry, sorted by name."""
    return {
        p.name: file_entry(p)
        for p in sorted(Path(directory).iterdir())
        if p.is_file() and not p.is_symlink() and p.name != CHECKSUMS_FILE and not p.name.startswith(".")
    }


def write_manifest(directory: Path, files: dict[str, dict[str, int | str]]) -> Path:
    """Write ``files`` as ``directory/checksums.json``; returns its path."""
    path = Path(directory) / CHECKSUMS_FILE
    path.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(directory: Path, label: str) -> dict[str, dict[str, int | str]] | None:
    """The manifest in ``directory`` (name -> ``{"size", "sha256"}``), or None if there is none.

    Raises:
        ModelFileError: the manifest is unreadable, or names a file outside ``directory``.
    """
    path = Path(directory) / CHECKSUMS_FILE
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
        entries = {str(n): {"size": int(e["size"]), "sha256": str(e["sha256"])} for n, e in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelFileError(f"{label}: {CHECKSUMS_FILE} is unreadable ({e})") from e
    for name in entries:
        if "/" in name or "\\" in name or name in {"", ".", ".."}:
            raise ModelFileError(f"{label}: {CHECKSUMS_FILE} names {name!r}, which is not a file of the model")
    return entries


def verify_manifest(directory: Path, files: dict[str, dict[str, int | str]], label: str, *, full: bool) -> None:
    """Check that every file of the manifest is in ``directory`` with its size, and with ``full`` its SHA-256.

    Args:
        label: who the files belong to, e.g. ``"version 3 of 'streamtune-lm'"``; starts every message.
        full: also hash every file (reads them all); else sizes only (one ``stat`` per file).

    Raises:
        ModelFileError: naming the first file that is missing, has another size or another hash.
    """
    directory = Path(directory)
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise ModelFileError(f"{label}: {name} is missing from {directory}")
        size = path.stat().st_size
        if size != entry["size"]:
            raise ModelFileError(
                f"{label}: {name} is {size} bytes, the registry recorded {entry['size']} (truncated or replaced)"
            )
        if full:
            actual = file_entry(path)["sha256"]
            if actual != entry["sha256"]:
                raise ModelFileError(
                    f"{label}: {name} does not match its recorded checksum "
                    f"(sha256 {str(actual)[:12]}... != {str(entry['sha256'])[:12]}...)"
                )


def check_structure(directory: Path, label: str) -> None:
    """Check what can be checked without a manifest, for every file directly in ``directory``:
    a ``.safetensors`` header parses and its tensors cover exactly the file, a ``.json`` file parses,
    a ``.pt`` zip archive (``torch.save``) has its central directory.

    Raises:
        ModelFileError: naming the first damaged file.
    """
    for path in sorted(Path(directory).iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            if path.suffix == ".safetensors":
                _check_safetensors(path)
            elif path.suffix == ".json":
                json.loads(path.read_bytes())
            elif path.suffix == ".pt" and not zipfile.is_zipfile(path):
                raise ValueError("not a complete torch.save archive (truncated?)")
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{label}: {path.name} is damaged: {e}") from e


def _check_safetensors(path: Path) -> None:
    """Raise ValueError unless ``path`` has a well-formed safetensors header whose tensor data ends at EOF."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, too short for a safetensors header (truncated)")
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            raise ValueError(f"header of {header_len} bytes runs past the end of the {size}-byte file (truncated)")
        header = json.loads(f.read(header_len))
    ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if expected != size:
        raise ValueError(f"the header describes {expected} bytes, the file holds {size} (truncated or padded)")


def copy_label(directory: Path) -> str:
    """``"<model> version <N> (<directory>)"`` for a local copy holding ``LOCAL_COPY_MARKER``, else the path."""
    marker = Path(directory) / LOCAL_COPY_MARKER
    try:
        version = marker.read_text().strip()
    except OSError:
        return str(directory)
    return f"{version} ({directory})" if version else str(directory)
