"""The normalised record every format is read into, and the per-format parsers.

::

    {"system": str, "turns": [{"role": "user"|"assistant", "content": str}, ...], "input": str,
     "tags": [str], "note": str}

``turns`` alternate user/assistant, start with user and end with assistant. ``input`` is Alpaca's input,
kept apart so an Alpaca file round-trips; every other view merges it into the first user message
(instruction + blank line + input). Readers yield ``Parsed`` (a good record) or ``Rejected`` (line and reason).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from core.curate.formats.limits import TOO_DEEP, _json_error


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


@dataclass
class Row:
    """One raw row of a file read by ``read_rows``: a JSON value, or a CSV row as {column: cell}."""

    value: Any
    line: int | None = None  # 1-based line where it starts (Parquet: the row number)
    byte: int | None = None  # byte offset where it starts (JSON arrays)


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
    system_parts: list[str] = []
    turns: list[dict] = []
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


def _parse(raw: Any, fmt: str, line: int | None, byte: int | None, info: ReadInfo) -> Parsed | Rejected:
    try:
        record = parse_record(raw, fmt, info.repair_sharegpt)
        return Parsed(record, line, byte, record.pop("_repaired", ""), bool(record.pop(NEEDS_ANSWER, False)))
    except BadRecord as err:
        return Rejected(str(err), line, byte)
    except RecursionError:
        return Rejected(TOO_DEEP, line, byte)
