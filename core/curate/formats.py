"""Dataset file formats: detect, stream-parse and write Alpaca, ShareGPT, chat, TRL prompt/completion, CSV,
Parquet and Hugging Face ``save_to_disk`` folders.

Every format is read into one normalised record::

    {"system": str, "turns": [{"role": "user"|"assistant", "content": str}, ...], "input": str,
     "tags": [str], "note": str}

``turns`` alternate user/assistant, start with user and end with assistant. ``input`` is Alpaca's input,
kept apart so an Alpaca file round-trips; every other view merges it into the first user message
(instruction + blank line + input).

Reading streams: JSON Lines line by line, JSON arrays element by element with ``json.JSONDecoder.raw_decode``
on a sliding buffer (exact line numbers, and it can resynchronise after a malformed element, which a
streaming event parser cannot), CSV row by row, Parquet by record batches. Memory stays bounded by the
largest single record. ``read_file`` yields ``Parsed`` (a good record) or ``Rejected`` (line and reason);
the caller decides what to do with them.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from core.errors import InvalidInput

RECORD_FORMATS = ["alpaca", "sharegpt", "chat", "prompt_completion"]
FILE_FORMATS = RECORD_FORMATS + ["csv", "parquet", "hf_disk"]
EXPORT_FORMATS = ["alpaca_json", "alpaca_jsonl", "sharegpt", "chat_jsonl", "prompt_completion", "csv", "hf_disk"]
FORMAT_LABELS = {
    "alpaca": "Alpaca (instruction / input / output)",
    "sharegpt": "ShareGPT (conversations of from / value)",
    "chat": "Chat JSONL (messages of role / content)",
    "prompt_completion": "TRL prompt / completion (what training here uses)",
    "csv": "CSV with a column mapping",
    "parquet": "Parquet",
    "hf_disk": "Hugging Face save_to_disk folder",
    "alpaca_json": "Alpaca JSON array",
    "alpaca_jsonl": "Alpaca JSON Lines",
    "chat_jsonl": "Chat JSONL (TRL messages)",
}

# ShareGPT files in the wild name the two sides in many ways; anything else is refused, not guessed.
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant",
    "system": "system",
}
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

# CSV columns recognised without a mapping (first match wins).
CSV_DEFAULTS = {
    "instruction": ["instruction", "prompt", "question", "query"],
    "input": ["input", "context"],
    "output": ["output", "response", "answer", "completion"],
    "system": ["system", "system_prompt"],
    "tags": ["tags"],
    "note": ["note"],
    "conversation": ["conversation", "messages"],
}
CSV_FIELDS = list(CSV_DEFAULTS)

CHUNK = 1 << 20  # bytes read at a time
# One record may be at most this big: a JSON Lines line, a JSON array element (counted in characters) or a CSV
# field. A bigger one is rejected with its size and reading goes on with the next record, so memory stays a few
# times this limit whatever the file holds.
MAX_RECORD_BYTES = 16 << 20


class BadRecord(ValueError):
    """A record that cannot be imported; the message is the reason shown in the report."""


@dataclass
class Parsed:
    record: dict
    line: int | None = None  # 1-based line where the record starts
    byte: int | None = None  # byte offset where it starts (JSON arrays)
    repaired: str = ""  # what ShareGPT repair dropped to make it a valid conversation ("" when nothing)
    needs_answer: bool = False  # a prompt-only record: its last (assistant) answer is empty, to be written


@dataclass
class Rejected:
    reason: str
    line: int | None = None
    byte: int | None = None

    def as_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.line is not None:
            out["line"] = self.line
        if self.byte is not None:
            out["byte"] = self.byte
        out["reason"] = self.reason
        return out


@dataclass
class ReadInfo:
    """What the reader learnt about the file while reading it (filled in as it goes)."""

    format: str = ""
    container: str = ""  # "jsonl" | "json_array" | "csv" | "parquet" | "hf_disk"
    encoding: str = ""
    ended_early: str = ""  # "file ended early at line N / byte X" when the last record was cut off
    empty: bool = False
    # Set by the caller before reading: apply FastChat's ShareGPT repair (see repair_sharegpt_turns).
    repair_sharegpt: bool = False
    total_bytes: int = 0
    bytes_read: int = 0


# ---------------------------------------------------------------- normalised records


def make_record(system: str = "", turns: list | None = None, input: str = "", tags: Iterable | None = None,
                note: str = "") -> dict:
    """Build a normalised record (no validation)."""
    return {"system": system or "", "turns": list(turns or []), "input": input or "",
            "tags": [str(t) for t in (tags or [])], "note": note or ""}


def validate_turns(turns: list) -> list:
    """Check alternation user/assistant starting with user and ending with assistant; return the turns."""
    if not turns:
        raise BadRecord("no user/assistant messages")
    for i, turn in enumerate(turns, 1):
        expected = "user" if i % 2 else "assistant"
        if turn["role"] != expected:
            raise BadRecord(f"turns do not alternate user/assistant: message {i} is {turn['role']}, "
                            f"expected {expected}")
        if not turn["content"].strip():
            raise BadRecord(f"empty {turn['role']} message (message {i})")
    if turns[-1]["role"] != "assistant":
        raise BadRecord("the conversation does not end with an assistant reply")
    return turns


# A prompt-only record (no answer field at all, or messages ending on the user) is kept as a draft whose last
# answer is empty and still to be written, by an annotator or first drafted by a model (core.evaluate.drafting).
# The parsers mark it with this key; _parse moves it to Parsed.needs_answer. An answer field that is present
# but empty is still refused: that is a broken record, not a question waiting for its answer.
NEEDS_ANSWER = "_needs_answer"


def needs_answer_record(record: dict) -> dict:
    """Mark ``record`` (whose turns end on a user message) as prompt-only: an empty assistant answer is appended
    and the alternation of the turns before it is checked."""
    turns = list(record["turns"])
    validate_turns(turns + [{"role": "assistant", "content": "-"}])
    record["turns"] = turns + [{"role": "assistant", "content": ""}]
    record[NEEDS_ANSWER] = True
    return record


def _ends_on_user(turns: list) -> bool:
    return bool(turns) and turns[-1]["role"] == "user"


def _text(value: Any, name: str, required: bool) -> str:
    if value is None:
        if required:
            raise BadRecord(f"missing field '{name}'")
        return ""
    if isinstance(value, list):  # OpenAI content parts: [{"type": "text", "text": ...}]
        parts = [p.get("text", "") if isinstance(p, dict) else p for p in value]
        if all(isinstance(p, str) for p in parts):
            value = "".join(parts)
    if not isinstance(value, str):
        raise BadRecord(f"field '{name}' must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise BadRecord(f"empty field '{name}'")
    return value


def _tags(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        if value.startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # a tag that merely starts with "[" stays text
            except RecursionError:
                raise BadRecord(f"field 'tags': {TOO_DEEP}") from None
        if isinstance(value, str):
            return [t.strip() for t in value.split(";") if t.strip()]
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [str(t) for t in (value.tolist() if hasattr(value, "tolist") else value)]
    raise BadRecord("field 'tags' must be a list of text")


def _messages(messages: Any, field_name: str, role_key: str, content_key: str, roles: dict) -> tuple[str, list]:
    """(system, turns) from a list of role/content messages; unknown roles are refused."""
    system, turns = _message_turns(messages, field_name, role_key, content_key, roles)
    return system, validate_turns(turns)


def _message_turns(messages: Any, field_name: str, role_key: str, content_key: str, roles: dict
                   ) -> tuple[str, list]:
    """(system, turns) as the file has them, before the alternation check."""
    if messages is None:
        raise BadRecord(f"missing field '{field_name}'")
    if hasattr(messages, "tolist"):
        messages = messages.tolist()
    if not isinstance(messages, list):
        raise BadRecord(f"field '{field_name}' must be a list of messages")
    if not messages:
        raise BadRecord(f"empty field '{field_name}'")
    system_parts, turns = [], []
    for i, msg in enumerate(messages, 1):
        if not isinstance(msg, dict):
            raise BadRecord(f"message {i} is not an object")
        raw_role = msg.get(role_key)
        if raw_role is None:
            raise BadRecord(f"message {i} has no '{role_key}'")
        role = roles.get(str(raw_role).strip().lower())
        if role is None:
            raise BadRecord(f"unknown role {str(raw_role)!r} in message {i}")
        content = _text(msg.get(content_key), f"{field_name}[{i}].{content_key}", required=role != "system")
        if role == "system":
            if turns:
                raise BadRecord(f"system message {i} comes after the conversation started")
            system_parts.append(content)
        else:
            turns.append({"role": role, "content": content})
    return "\n\n".join(system_parts), turns


def _from_alpaca(raw: dict) -> dict:
    instruction = _text(raw.get("instruction"), "instruction", True)
    prompt_only = "output" not in raw  # no answer field at all: a question waiting for its answer
    output = "" if prompt_only else _text(raw.get("output"), "output", True)
    turns = []
    for i, pair in enumerate(raw.get("history") or [], 1):  # LLaMA-Factory's earlier turns
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadRecord(f"history item {i} is not a [user, assistant] pair")
        turns += [{"role": "user", "content": _text(pair[0], f"history[{i}][0]", True)},
                  {"role": "assistant", "content": _text(pair[1], f"history[{i}][1]", True)}]
    turns += [{"role": "user", "content": instruction}] + ([] if prompt_only else [{"role": "assistant",
                                                                                       "content": output}])
    record = make_record(_text(raw.get("system"), "system", False), turns, _text(raw.get("input"), "input", False),
                         _tags(raw.get("tags")), _text(raw.get("note"), "note", False))
    return needs_answer_record(record) if prompt_only else record


def repair_sharegpt_turns(turns: list) -> tuple[list, str]:
    """FastChat's rule for ShareGPT dumps (its trainer skips a conversation's leading non-human turns, and its
    split_long_conversation tool cuts chats into chunks that can start with the assistant or end on the user):
    drop the leading assistant turns and a trailing user turn. Returns (turns, what was dropped, "" for nothing)."""
    lead = 0
    while lead < len(turns) and turns[lead]["role"] == "assistant":
        lead += 1
    turns = turns[lead:]
    trail = bool(turns) and turns[-1]["role"] == "user"
    if trail:
        turns = turns[:-1]
    dropped = []
    if lead:
        dropped.append(f"{lead} leading assistant message{'s' if lead > 1 else ''}")
    if trail:
        dropped.append("a trailing user message")
    return turns, " and ".join(dropped)


def _from_sharegpt(raw: dict, repair: bool = False) -> dict:
    """A ShareGPT record; with ``repair``, FastChat's rule first (the record then carries "_repaired")."""
    system, turns = _message_turns(raw.get("conversations"), "conversations", "from", "value", SHAREGPT_ROLES)
    if len(turns) == 1 and _ends_on_user(turns):  # a lone question: prompt-only, not a chunk to repair
        top = _text(raw.get("system"), "system", False)
        return needs_answer_record(make_record("\n\n".join(p for p in (top, system) if p), turns, "",
                                               _tags(raw.get("tags")), _text(raw.get("note"), "note", False)))
    repaired = ""
    if repair:
        turns, repaired = repair_sharegpt_turns(turns)
    validate_turns(turns)
    top = _text(raw.get("system"), "system", False)
    system = "\n\n".join(p for p in (top, system) if p)
    record = make_record(system, turns, "", _tags(raw.get("tags")), _text(raw.get("note"), "note", False))
    if repaired:
        record["_repaired"] = repaired
    return record


def _from_chat(raw: dict) -> dict:
    system, turns = _message_turns(raw.get("messages"), "messages", "role", "content", CHAT_ROLES)
    record = make_record(system, turns, "", _tags(raw.get("tags")), _text(raw.get("note"), "note", False))
    if _ends_on_user(turns):  # messages ending on the user: the answer is still to be written
        return needs_answer_record(record)
    validate_turns(turns)
    return record


def _from_prompt_completion(raw: dict) -> dict:
    prompt, completion = raw.get("prompt"), raw.get("completion")
    if "completion" not in raw:  # a prompt without its completion: prompt-only
        if hasattr(prompt, "tolist"):
            prompt = prompt.tolist()
        if isinstance(prompt, list):
            system, turns = _message_turns(prompt, "prompt", "role", "content", CHAT_ROLES)
        else:
            system, turns = "", [{"role": "user", "content": _text(prompt, "prompt", True)}]
        if not _ends_on_user(turns):
            raise BadRecord("'prompt' has no completion and does not end with a user message")
        return needs_answer_record(make_record(system, turns, "", _tags(raw.get("tags")),
                                               _text(raw.get("note"), "note", False)))
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if hasattr(completion, "tolist"):
        completion = completion.tolist()
    if isinstance(prompt, list) or isinstance(completion, list):  # conversational form
        if not isinstance(prompt, list) or not isinstance(completion, list):
            raise BadRecord("'prompt' and 'completion' must both be message lists or both text")
        system, turns = _messages(prompt + completion, "prompt", "role", "content", CHAT_ROLES)
    else:
        system = ""
        turns = [{"role": "user", "content": _text(prompt, "prompt", True)},
                 {"role": "assistant", "content": _text(completion, "completion", True)}]
    return make_record(system, turns, "", _tags(raw.get("tags")), _text(raw.get("note"), "note", False))


PARSERS: dict[str, Callable[[dict], dict]] = {
    "alpaca": _from_alpaca,
    "sharegpt": _from_sharegpt,
    "chat": _from_chat,
    "prompt_completion": _from_prompt_completion,
}


def detect_record_format(raw: Any) -> str | None:
    """The record format a dict's keys point to, or None."""
    if not isinstance(raw, dict):
        return None
    keys = set(raw)
    if "messages" in keys:
        return "chat"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys or {"output", "input"} <= keys:
        return "alpaca"
    if "prompt" in keys:  # with "completion", or alone: a prompt-only record
        return "prompt_completion"
    return None


def parse_record(raw: Any, fmt: str, repair: bool = False) -> dict:
    """Normalise one raw record of format ``fmt``; raise BadRecord with the reason. ``repair`` applies
    FastChat's ShareGPT rule (repair_sharegpt_turns) to ShareGPT records."""
    if not isinstance(raw, dict):
        raise BadRecord(f"record is a JSON {type(raw).__name__}, not an object")
    if fmt == "sharegpt":
        return _from_sharegpt(raw, repair)
    return PARSERS[fmt](raw)


# ---------------------------------------------------------------- encodings and containers


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
            while chunk := fh.read(CHUNK):
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
        while line := fh.readline(MAX_RECORD_BYTES + 1):
            if len(line) > MAX_RECORD_BYTES and not line.endswith("\n"):  # too big to be a record: skip it
                while (piece := fh.readline(CHUNK)) and not piece.endswith("\n"):
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


# ---------------------------------------------------------------- readers


def read_file(path: str | Path, fmt: str | None = None, mapping: dict | None = None,
              info: ReadInfo | None = None, repair: bool = False) -> Iterator[Parsed | Rejected]:
    """Stream the records of ``path``. ``fmt`` None detects it; ``mapping`` maps CSV fields to columns;
    ``repair`` applies FastChat's rule to ShareGPT conversations (Parsed.repaired says what it dropped)."""
    path = Path(path)
    info = info if info is not None else ReadInfo()
    info.repair_sharegpt = repair
    fmt = fmt or detect_format(path)
    if fmt not in FILE_FORMATS:
        raise InvalidInput(f"Unknown format {fmt!r}; choose one of: {', '.join(FILE_FORMATS)}.")
    info.format = fmt
    if fmt == "hf_disk":
        return _read_hf_disk(path, info)
    if path.is_dir():
        return _read_split_files(split_files(path), fmt, mapping, info, repair)
    if not path.exists():
        raise InvalidInput(f"No file {path}.")
    info.total_bytes = path.stat().st_size
    if fmt == "parquet":
        return _read_parquet(path, info)
    if info.total_bytes == 0:
        info.empty = True
        return iter(())
    info.encoding = detect_encoding(path)
    if fmt == "csv":
        return _read_csv(path, mapping, info)
    return _read_json(path, lambda raw, line, byte: _parse(raw, fmt, line, byte, info), info)


SPLIT_NAMES = ("train", "validation", "test")


def split_files(folder: Path) -> list[Path]:
    """The split files of an export folder (core.curate.exporting): train, validation, test in that order."""
    return [f for name in SPLIT_NAMES for f in sorted(folder.glob(f"{name}.*"))
            if f.is_file() and f.suffix.lower() in (".json", ".jsonl", ".csv", ".parquet")]


def _read_split_files(files: list[Path], fmt: str, mapping: dict | None, info: ReadInfo, repair: bool
                      ) -> Iterator[Parsed | Rejected]:
    """The records of each split file in turn; a rejection names its file."""
    info.total_bytes = sum(f.stat().st_size for f in files)
    done, seen = 0, False
    for f in files:
        part = ReadInfo()
        for item in read_file(f, fmt, mapping, part, repair):
            if isinstance(item, Rejected):
                item.reason = f"{f.name}: {item.reason}"
            info.bytes_read, seen = done + part.bytes_read, True
            yield item
        done += part.total_bytes
        info.encoding, info.container = part.encoding, part.container
        info.ended_early = info.ended_early or (f"{f.name}: {part.ended_early}" if part.ended_early else "")
    info.empty = not seen


def _read_json(source: Path | bytes, convert: Callable, info: ReadInfo) -> Iterator:
    """The values of a JSON array or JSON Lines file, each passed through ``convert(value, line, byte)``."""
    if _first_char(source, info.encoding) == "[":
        info.container = "json_array"
        return _read_json_array(source, convert, info)
    info.container = "jsonl"
    return _read_jsonl(source, convert, info)


@dataclass
class Row:
    """One raw row of a file read by ``read_rows``: a JSON value, or a CSV row as {column: cell}."""

    value: Any
    line: int | None = None  # 1-based line where it starts (Parquet: the row number)
    byte: int | None = None  # byte offset where it starts (JSON arrays)


def read_rows(source: Path | bytes, filename: str, info: ReadInfo | None = None) -> Iterator[Row | Rejected]:
    """The raw rows of a JSON Lines, JSON array, CSV or Parquet file (told apart by ``filename``'s extension and
    the first character), read by the code that reads examples and so under the same limits: MAX_RECORD_BYTES per
    record or CSV field, and the JSON nesting Python's decoder takes. Preference pairs and eval-set prompts are
    imported through it. A row that breaks a limit or is not JSON comes as Rejected with its line and reason."""
    info = info if info is not None else ReadInfo()
    suffix = Path(filename).suffix.lower()
    info.total_bytes = _size(source)
    if suffix in (".parquet", ".pq"):
        info.container = "parquet"
        return (Row(raw, n) for n, raw in enumerate(_parquet_rows(source, filename), 1))
    if info.total_bytes == 0:
        info.empty = True
        return iter(())
    info.encoding = detect_encoding(source)
    if suffix == ".csv":
        return _csv_dicts(source, info)
    return _read_json(source, Row, info)


def _parse(raw: Any, fmt: str, line: int | None, byte: int | None, info: ReadInfo) -> Parsed | Rejected:
    try:
        record = parse_record(raw, fmt, info.repair_sharegpt)
        return Parsed(record, line, byte, record.pop("_repaired", ""), bool(record.pop(NEEDS_ANSWER, False)))
    except BadRecord as err:
        return Rejected(str(err), line, byte)
    except RecursionError:
        return Rejected(TOO_DEEP, line, byte)


TOO_DEEP = "value nested too deeply (JSON nesting deeper than Python's recursion limit)"


def _json_error(err: Exception) -> str:
    """The reason for a JSON value that could not be decoded. Besides JSONDecodeError, json raises a plain
    ValueError for a number with more digits than Python converts (4,300) and RecursionError for deep nesting."""
    if isinstance(err, RecursionError):
        return TOO_DEEP
    if isinstance(err, json.JSONDecodeError):
        return f"malformed JSON: {err.msg}"
    return f"unreadable JSON value: {str(err).split(';')[0]}"


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def _too_big(size: int) -> str:
    return (f"record too large: {_size_text(size)}, over the limit of {_size_text(MAX_RECORD_BYTES)} per record "
            "(split it, or shorten it)")


def _read_jsonl(path: Path | bytes, convert: Callable, info: ReadInfo) -> Iterator:
    any_line = False
    lineno = 0
    for text, offset, size in _lines(path, info):
        lineno += 1
        if text is None:  # longer than the per-record limit: skipped unread
            any_line = True
            yield Rejected(_too_big(size), lineno, offset)
            continue
        if isinstance(text, bytes):
            text = text.decode(info.encoding, errors="replace")
        if lineno == 1:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue
        any_line = True
        complete = text.endswith("\n")
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as err:
            if not complete and isinstance(err, json.JSONDecodeError):
                info.ended_early = f"file ended early at line {lineno}" + (f" / byte {offset}" if offset else "")
                yield Rejected(f"record cut off: {info.ended_early}", lineno, offset)
            elif isinstance(err, json.JSONDecodeError):
                yield Rejected(f"malformed JSON: {err.msg} (column {err.colno})", lineno)
            else:
                yield Rejected(_json_error(err), lineno)
            continue
        yield convert(raw, lineno, None)
    info.empty = not any_line


def _lines(path: Path | bytes, info: ReadInfo) -> Iterator[tuple[bytes | str | None, int | None, int]]:
    """(line, byte offset, size) for each line; a line over MAX_RECORD_BYTES comes as (None, offset, size) and
    is skipped in pieces, never held whole. UTF-16 cannot be split on b"\n": its lines come from the text layer
    (offsets are then None)."""
    utf16 = info.encoding == "utf-16"
    offset = 0
    with (_open(path, "utf-16", newline="") if utf16 else _open(path, buffering=CHUNK)) as fh:
        newline = "\n" if utf16 else b"\n"
        while True:
            line = fh.readline(MAX_RECORD_BYTES + 1)
            if not line:
                return
            size = len(line)
            if size > MAX_RECORD_BYTES and not line.endswith(newline):
                del line
                while (piece := fh.readline(CHUNK)) and not piece.endswith(newline):
                    size += len(piece)
                size += len(piece)
                yield None, None if utf16 else offset, size
            else:
                yield line, None if utf16 else offset, size
            offset += size * (2 if utf16 else 1)
            info.bytes_read = min(info.total_bytes, offset) if info.total_bytes else offset


class _ValueEnd:
    """Finds where one JSON value ends, fed text piece by piece: bracket depth outside strings, strings with
    their escapes, or a bare scalar up to the next comma or bracket. Only used after ``raw_decode`` failed, to
    step over a malformed, too deep or too large element to the next one. Linear in the text and constant in
    memory (str.find-style searches; no backtracking regex, no copy of the text)."""

    _SPECIAL = re.compile(r'["{}\[\]]')
    _IN_STRING = re.compile(r'["\\]')
    _SCALAR_END = re.compile(r"[,\]}\s]")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False  # a backslash ended the previous piece
        self.scalar = False
        self.started = False

    def feed(self, text: str, pos: int) -> int | None:
        """The index just past the value's end in ``text`` (scanning from ``pos``), or None if it goes on."""
        n = len(text)
        while True:
            if self.escape:
                if pos >= n:
                    return None
                pos, self.escape = pos + 1, False
            if not self.started:
                pos = _skip_ws(text, pos)
                if pos >= n:
                    return None
                self.started = True
                self.scalar = text[pos] not in '"{['
            if self.scalar:
                m = self._SCALAR_END.search(text, pos)
                return None if m is None else m.start()
            if self.in_string:
                m = self._IN_STRING.search(text, pos)
                if m is None:
                    return None
                if m.group() == "\\":
                    pos = m.end()
                    self.escape = True
                    continue
                self.in_string, pos = False, m.end()
                if self.depth == 0:
                    return pos  # the value was a string
                continue
            m = self._SPECIAL.search(text, pos)
            if m is None:
                return None
            ch, pos = m.group(), m.end()
            if ch == '"':
                self.in_string = True
                continue
            self.depth += 1 if ch in "{[" else -1
            if self.depth <= 0:
                return pos


def _element_end(buf: str, start: int) -> int | None:
    """End of the JSON value starting at ``start`` (ignoring brackets in strings), or None if it is cut off."""
    return _ValueEnd().feed(buf, start)


def _read_json_array(path: Path | bytes, convert: Callable, info: ReadInfo) -> Iterator:
    """Elements of a top-level JSON array, decoded one at a time from a sliding text buffer.

    The buffer holds one chunk plus the element being read. An element that does not decode is stepped over
    with ``_ValueEnd`` (its scan resumes where the last refill stopped, so a big element costs linear time); an
    element over MAX_RECORD_BYTES is rejected and skipped chunk by chunk without being held."""
    decoder = json.JSONDecoder()
    enc = "utf-16" if info.encoding == "utf-16" else info.encoding
    width = 2 if enc == "utf-16" else 1
    index = 0
    with _open(path, enc, errors="replace", newline="") as fh:
        buf = fh.read(CHUNK).lstrip("\ufeff")
        eof = len(buf) == 0
        pos = _skip_ws(buf, 0)
        if pos >= len(buf) or buf[pos] != "[":
            yield Rejected("the file does not start with a JSON array", 1)
            return
        pos += 1
        line = 1 + buf.count("\n", 0, pos)  # line number at ``pos``
        consumed = 0  # characters dropped from the front of ``buf``
        scan: _ValueEnd | None = None  # the scan of the current element after raw_decode failed on it
        scanned = 0  # characters of the current element that ``scan`` has seen
        while True:
            start = _skip_ws(buf, pos)
            if start < len(buf) and buf[start] == ",":
                start = _skip_ws(buf, start + 1)
            if start < len(buf) and buf[start] == "]":
                info.bytes_read = info.total_bytes
                info.empty = index == 0
                return
            need_more = start >= len(buf)
            if not need_more:
                rec_line = line + buf.count("\n", pos, start)
                here = (start + consumed) * width
                end = None
                if scan is not None:  # the element went on past the buffer: scan on, decode once it is whole
                    end = scan.feed(buf, start + scanned)
                    scanned = len(buf) - start
                    if end is not None:
                        scan = None
                if scan is None:
                    try:
                        value, end = decoder.raw_decode(buf, start)
                    except (ValueError, RecursionError) as err:
                        scan = _ValueEnd()
                        end = scan.feed(buf, start)
                        scanned = len(buf) - start
                        if end is not None:  # a complete element that is not valid JSON: skip just it
                            where = err.pos if isinstance(err, json.JSONDecodeError) else start
                            yield Rejected(_json_error(err), line + buf.count("\n", pos, where), here)
                            index += 1
                            line, pos, scan = rec_line + buf.count("\n", start, end), end, None
                            continue
                    else:
                        index += 1
                        line, pos = rec_line + buf.count("\n", start, end), end
                        info.bytes_read = min(info.total_bytes, (consumed + end) * width)
                        if end - start > CHUNK:  # a big element: drop its text before the caller works on it
                            buf, consumed, pos = buf[end:], consumed + end, 0
                        yield convert(value, rec_line, here)
                        del value
                        continue
                # The element is cut off by the end of the buffer.
                if eof:
                    info.ended_early = f"file ended early at line {rec_line} / byte {here}"
                    yield Rejected(f"record cut off: {info.ended_early}", rec_line, here)
                    return
                if len(buf) - start > MAX_RECORD_BYTES:
                    size, newlines, buf, eof = _skip_value(fh, scan, buf[start:])
                    if buf is None:
                        info.ended_early = f"file ended early at line {rec_line} / byte {here}"
                        yield Rejected(f"record cut off: {info.ended_early}", rec_line, here)
                        return
                    yield Rejected(_too_big(size), rec_line, here)
                    index += 1
                    consumed += start + size
                    line, pos, scan = rec_line + newlines, 0, None
                    info.bytes_read = min(info.total_bytes, consumed * width)
                    continue
                need_more = True
            if eof:
                if index == 0:
                    info.empty = True
                info.ended_early = f"file ended early at line {line + buf.count(chr(10), pos)} (the array is not closed)"
                if index:
                    yield Rejected(f"record cut off: {info.ended_early}", line + buf.count("\n", pos))
                return
            # Keep only the unread part, then read on: the buffer holds one chunk plus one element at most.
            line += buf.count("\n", pos, start)
            consumed += start
            more = fh.read(CHUNK)
            eof = not more
            buf, pos = buf[start:] + more, 0


def _skip_value(fh, scan: _ValueEnd, seen: str) -> tuple[int, int, str | None, bool]:
    """Read on past the end of an element too large to keep: ``scan`` has already seen ``seen`` (the element's
    start). Returns (its size in characters, newlines in it, the text after it, eof); the text is None when the
    file ended inside the element. Holds one chunk at a time."""
    size, newlines = len(seen), seen.count("\n")
    del seen
    while True:
        piece = fh.read(CHUNK)
        if not piece:
            return size, newlines, None, True
        end = scan.feed(piece, 0)
        if end is not None:
            return size + end, newlines + piece.count("\n", 0, end), piece[end:], False
        size += len(piece)
        newlines += piece.count("\n")


def guess_csv_mapping(columns: list[str]) -> dict[str, str]:
    """Field -> column for the well-known column names of CSV_DEFAULTS (case and spaces ignored); the mapping
    form starts from it."""
    lower = {c.strip().lower(): c for c in columns}
    out = {}
    for name in CSV_FIELDS:
        found = next((lower[c] for c in CSV_DEFAULTS[name] if c in lower), None)
        if found is not None:
            out[name] = found
    return out


def csv_mapping(columns: list[str], mapping: dict | None = None) -> dict:
    """Field -> column for a CSV: the given ``mapping`` first, then well-known column names."""
    out = guess_csv_mapping(columns)
    for name in CSV_FIELDS:
        if mapping and mapping.get(name):
            if mapping[name] not in columns:
                raise InvalidInput(f"The CSV has no column {mapping[name]!r} (columns: {', '.join(columns)}).")
            out[name] = mapping[name]
    if "conversation" not in out and "instruction" not in out:
        raise InvalidInput("Map the CSV columns: instruction (and output, unless the file holds prompts only) "
                           "is needed "
                           f"(columns: {', '.join(columns)}).")
    return out


def csv_columns(path: str | Path) -> list[str]:
    """The header of a CSV file (for the mapping form)."""
    path = Path(path)
    with open(path, encoding=detect_encoding(path), newline="") as fh:
        return next(csv.reader(fh), [])


def _csv_rows(reader) -> Iterator[tuple[int, list | Rejected]]:
    """(line, cells) for each row that is not blank, (line, Rejected) for one the csv module cannot read (a field
    over the per-record limit, csv.field_size_limit); reading goes on after it."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield reader.line_num, Rejected(f"unreadable CSV row: {err}", reader.line_num)
            continue
        if any(cell.strip() for cell in row):
            yield reader.line_num, row


def _csv_header(fh, info: ReadInfo):
    """A csv reader on ``fh`` under the per-record limit, and the header (None for an empty file)."""
    info.container = "csv"
    csv.field_size_limit(MAX_RECORD_BYTES)
    reader = csv.reader(fh)
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise InvalidInput(f"The CSV header is unreadable: {err}.") from None
    if not header:
        info.empty = True
    return reader, header


def _csv_dicts(source: Path | bytes, info: ReadInfo) -> Iterator[Row | Rejected]:
    """Each CSV row as {column: cell} (None for a missing cell), with its line."""
    with _open(source, info.encoding, newline="") as fh:
        reader, header = _csv_header(fh, info)
        if not header:
            return
        any_row = False
        for line, row in _csv_rows(reader):
            any_row = True
            yield row if isinstance(row, Rejected) else Row(
                {col: row[i] if i < len(row) else None for i, col in enumerate(header)}, line)
        info.empty = not any_row


def _read_csv(path: Path, mapping: dict | None, info: ReadInfo) -> Iterator[Parsed | Rejected]:
    with _open(path, info.encoding, newline="") as fh:
        reader, header = _csv_header(fh, info)
        if not header:
            return
        cols = csv_mapping(header, mapping)
        index = {c: i for i, c in enumerate(header)}
        any_row = False
        for line, row in _csv_rows(reader):
            any_row = True
            if isinstance(row, Rejected):
                yield row
                continue
            if len(row) < len(header):
                cut = fh.read(1) == ""
                if cut:
                    info.ended_early = f"file ended early at line {line}"
                    yield Rejected(f"record cut off: {info.ended_early}", line)
                else:
                    yield Rejected(f"row has {len(row)} columns, the header has {len(header)}", line)
                continue
            raw = {name: csv_cell_value(row[index[col]]) for name, col in cols.items()}
            try:
                record = _from_csv_row(raw)
                yield Parsed(record, line, needs_answer=bool(record.pop(NEEDS_ANSWER, False)))
            except BadRecord as err:
                yield Rejected(str(err), line)
            info.bytes_read = min(info.total_bytes, info.bytes_read + sum(map(len, row)) + len(row))
        info.empty = not any_row


def json_value(text: str, name: str = "") -> Any:
    """The JSON value in a text field (a CSV cell), or BadRecord (naming the column ``name`` if given): malformed,
    too deep, too long a number. Every importer decodes JSON text inside a record through this."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise BadRecord((f"column '{name}': " if name else "") + _json_error(err)) from None


def _from_csv_row(raw: dict) -> dict:
    conv = (raw.get("conversation") or "").strip()
    if conv:
        turns = json_value(conv, "conversation")
        system, turns = _messages(turns, "conversation", "role", "content", CHAT_ROLES)
        system = raw.get("system") or system
        return make_record(system, turns, "", _tags(raw.get("tags")), raw.get("note") or "")
    return _from_alpaca({k: v for k, v in raw.items() if k != "conversation"})


def _rows_to_records(rows: Iterable[dict], info: ReadInfo, fmt: str | None) -> Iterator[Parsed | Rejected]:
    n = 0
    for n, raw in enumerate(rows, 1):
        rfmt = fmt or detect_record_format(raw)
        if rfmt is None:
            raise InvalidInput("The dataset's columns match no known format "
                               f"(columns: {', '.join(raw)}); expected instruction/output, messages, "
                               "conversations or prompt/completion.")
        fmt = rfmt
        yield _parse(raw, rfmt, n, None, info)
    info.empty = n == 0


def _parquet_rows(source: Path | bytes, filename: str) -> Iterator[dict]:
    """The rows of a Parquet file as dicts, a record batch at a time."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise InvalidInput(f"{filename} is not a readable Parquet file: {err}") from None

    def rows():
        for batch in pf.iter_batches(batch_size=2048):
            yield from batch.to_pylist()

    return rows()


def _read_parquet(path: Path, info: ReadInfo) -> Iterator[Parsed | Rejected]:
    info.container = "parquet"
    return _rows_to_records(_parquet_rows(path, path.name), info, None)


def _read_hf_disk(path: Path, info: ReadInfo) -> Iterator[Parsed | Rejected]:
    from datasets import Dataset, DatasetDict, load_from_disk

    info.container = "hf_disk"
    try:
        ds = load_from_disk(str(path))
    except Exception as err:  # datasets raises FileNotFoundError or its own errors
        raise InvalidInput(f"{path.name} is not a dataset saved with save_to_disk: {err}") from None
    splits = list(ds.values()) if isinstance(ds, DatasetDict) else [ds]

    def rows():
        for split in splits:
            assert isinstance(split, Dataset)
            yield from split

    return _rows_to_records(rows(), info, None)


# ---------------------------------------------------------------- writers


def chat_messages(record: dict) -> list[dict]:
    """The record as chat messages: system (if any) then the turns, Alpaca input merged into the first user turn."""
    msgs = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    turns = [dict(t) for t in record["turns"]]
    if record.get("input") and turns:
        turns[-2 if len(turns) >= 2 else 0]["content"] += "\n\n" + record["input"]
    return msgs + [{"role": t["role"], "content": t["content"]} for t in turns]


def _with_meta(out: dict, record: dict) -> dict:
    # Every record of a file has the same keys: a column that only some records have is missing from a split
    # where none has it, and a loader that maps it (LLaMA-Factory's system or history) fails on that split.
    out["tags"] = list(record.get("tags") or [])
    out["note"] = record.get("note") or ""
    return out


def to_alpaca(record: dict) -> dict:
    """Alpaca with LLaMA-Factory's ``system`` and ``history`` (the earlier [user, assistant] pairs) columns."""
    turns = record["turns"]
    out = {"instruction": turns[-2]["content"], "input": record.get("input", ""), "output": turns[-1]["content"],
           "system": record.get("system") or "",
           "history": [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)]}
    return _with_meta(out, record)


def to_sharegpt(record: dict) -> dict:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return _with_meta({"conversations": [{"from": names[m["role"]], "value": m["content"]}
                                         for m in chat_messages(record)]}, record)


def to_chat(record: dict) -> dict:
    return _with_meta({"messages": chat_messages(record)}, record)


# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection"). CSV exports
# prefix such a cell with a single quote, which spreadsheets show as text; a cell that already starts with
# quotes before such a character gets one more, so ``csv_cell_value`` (used by the CSV importer) can remove
# exactly one quote and give back the original text.
FORMULA_START = re.compile(r"'*[=+\-@\t\r]")


def csv_safe_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula (other values pass unchanged)."""
    if isinstance(value, str) and FORMULA_START.match(value):
        return "'" + value
    return value


def csv_cell_value(text: str) -> str:
    """The inverse of ``csv_safe_cell`` for a cell read back from a CSV file."""
    if text.startswith("'") and FORMULA_START.match(text, 1):
        return text[1:]
    return text


def to_csv_row(record: dict) -> dict:
    """One record as a CSV row (cells neutralised against formula injection, see csv_safe_cell)."""
    turns = record["turns"]
    multi = len(turns) > 2
    row = {
        "system": record.get("system", ""),
        "instruction": "" if multi else turns[0]["content"],
        "input": "" if multi else record.get("input", ""),
        "output": "" if multi else turns[1]["content"],
        "conversation": json.dumps(chat_messages(record)[1 if record.get("system") else 0:], ensure_ascii=False)
        if multi else "",
        "tags": json.dumps(record.get("tags") or [], ensure_ascii=False),
        "note": record.get("note", ""),
    }
    return {key: csv_safe_cell(value) for key, value in row.items()}


def to_prompt_completion(record: dict) -> dict:
    """TRL conversational prompt/completion: everything before the final assistant message, and that message."""
    msgs = chat_messages(record)
    return _with_meta({"prompt": msgs[:-1], "completion": msgs[-1:]}, record)


def write_records(records: Iterable[dict], fmt: str, out: str | Path, splits: Iterable[str] | None = None) -> Path:
    """Write normalised ``records`` to ``out`` in export format ``fmt``; return the path written.

    ``hf_disk`` needs ``splits`` (one split name per record) and writes a DatasetDict folder.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "hf_disk":
        return _write_hf_disk(records, splits, out)
    if fmt == "csv":
        with open(out, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["system", "instruction", "input", "output", "conversation",
                                                    "tags", "note"])
            writer.writeheader()
            for rec in records:
                writer.writerow(to_csv_row(rec))
        return out
    convert = {"alpaca_json": to_alpaca, "alpaca_jsonl": to_alpaca, "sharegpt": to_sharegpt,
               "chat_jsonl": to_chat, "chat": to_chat, "alpaca": to_alpaca,
               "prompt_completion": to_prompt_completion}.get(fmt)
    if convert is None:
        raise InvalidInput(f"Unknown export format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}.")
    with open(out, "w", encoding="utf-8") as fh:
        if fmt in ("alpaca_json", "sharegpt"):
            # A JSON array written element by element: bounded memory however big the version.
            fh.write("[")
            for i, rec in enumerate(records):
                fh.write(",\n" if i else "\n")
                fh.write(json.dumps(convert(rec), ensure_ascii=False))
            fh.write("\n]\n")
        else:
            for rec in records:
                fh.write(json.dumps(convert(rec), ensure_ascii=False) + "\n")
    return out


def _write_hf_disk(records: Iterable[dict], splits: Iterable[str] | None, out: Path) -> Path:
    from datasets import Dataset, DatasetDict, Features, List, Value

    features = Features({
        "messages": List({"role": Value("string"), "content": Value("string")}),
        "tags": List(Value("string")),
        "note": Value("string"),
    })
    by_split: dict[str, list] = {"train": [], "validation": [], "test": []}
    split_iter = iter(splits) if splits is not None else None
    for rec in records:
        split = next(split_iter) if split_iter is not None else "train"
        by_split.setdefault(split, []).append({"messages": chat_messages(rec), "tags": rec.get("tags") or [],
                                               "note": rec.get("note") or ""})
    # from_dict (not from_list) so an empty split still has its columns.
    dd = DatasetDict({name: Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)
                      for name, rows in by_split.items()})
    # One shard per split: datasets writes zero shards for an empty split and then cannot load it back.
    dd.save_to_disk(str(out), num_shards={name: 1 for name in dd})
    return out


def export_suffix(fmt: str) -> str:
    return {"alpaca_json": ".json", "sharegpt": ".json", "csv": ".csv", "hf_disk": ""}.get(fmt, ".jsonl")
