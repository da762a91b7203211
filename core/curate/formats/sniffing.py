"""Opening a file or an upload's bytes, and telling what it holds: its encoding, its container (the first
character) and its record format (a folder's contents, the extension, then the keys of the first record)."""
from __future__ import annotations

import codecs
import io
import json
from pathlib import Path
from typing import Any

from core.curate.formats import limits
from core.curate.formats.records import detect_record_format
from core.errors import InvalidInput


def _open(source: Path | bytes, encoding: str | None = None, errors: str = "strict", newline: str | None = None,
          buffering: int = -1):
    """``source`` (a file, or an upload's bytes: both are read by the same code) opened for reading: binary without
    ``encoding``, else text."""
    if isinstance(source, (bytes, bytearray)):
        raw = io.BytesIO(source)
        return raw if encoding is None else io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline=newline)
    if encoding is None:
        return open(source, "rb", buffering=buffering)
    return open(source, encoding=encoding, errors=errors, newline=newline)


def _size(source: Path | bytes) -> int:
    return len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size


def detect_encoding(path: Path | bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with a BOM; else Latin-1. Scans the file in chunks."""
    with _open(path) as fh:
        head = fh.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
            return "utf-16"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := fh.read(limits.CHUNK):
                decoder.decode(chunk)
        except UnicodeDecodeError:
            return "latin-1"
    # A multi-byte character cut by the end of a truncated file is not an encoding error.
    return "utf-8"


def _first_char(path: Path | bytes, encoding: str) -> str:
    with _open(path, encoding=encoding, errors="replace") as fh:
        while chunk := fh.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]
    return ""


def _peek_first_record(path: Path, encoding: str) -> Any:
    """The first JSON record of a JSON Lines or JSON array file (None if unreadable)."""
    with open(path, encoding=encoding, errors="replace") as fh:
        first = _first_char(path, encoding)
        if first == "[":
            text = fh.read(1 << 20)
            start = text.index("[") + 1
            try:
                value, _ = json.JSONDecoder().raw_decode(text, _skip_ws(text, start))
                return value
            except (ValueError, IndexError, RecursionError):
                return None
        while line := fh.readline(limits.MAX_RECORD_BYTES + 1):
            if len(line) > limits.MAX_RECORD_BYTES and not line.endswith("\n"):  # too big to be a record: skip it
                while (piece := fh.readline(limits.CHUNK)) and not piece.endswith("\n"):
                    pass
                continue
            if line.strip():
                try:
                    return json.loads(line)
                except (ValueError, RecursionError):
                    continue
    return None


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\r\n":
        pos += 1
    return pos


def detect_format(path: str | Path) -> str:
    """The file format of ``path``: by folder contents, extension, then the keys of its first record."""
    path = Path(path)
    if path.is_dir():
        if any((path / name).exists() for name in ("state.json", "dataset_dict.json")):
            return "hf_disk"
        files = split_files(path)
        if files:
            return detect_format(files[0])
        raise InvalidInput(f"{path.name} is a folder but neither a Hugging Face dataset saved with save_to_disk nor "
                           "an export with a file per split (train, validation, test).")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if not path.exists():
        raise InvalidInput(f"No file {path}.")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path.name} is empty: there is nothing to import.")
    encoding = detect_encoding(path)
    fmt = detect_record_format(_peek_first_record(path, encoding))
    if fmt is None:
        raise InvalidInput(
            f"Could not tell the format of {path.name} from its first record; choose it by hand "
            "(Alpaca needs instruction/output, ShareGPT conversations, chat messages, TRL prompt/completion).")
    return fmt


SPLIT_NAMES = ("train", "validation", "test")


def split_files(folder: Path) -> list[Path]:
    """The split files of an export folder (core.curate.exporting): train, validation, test in that order."""
    return [f for name in SPLIT_NAMES for f in sorted(folder.glob(f"{name}.*"))
            if f.is_file() and f.suffix.lower() in (".json", ".jsonl", ".csv", ".parquet")]
