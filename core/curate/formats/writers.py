"""Writing normalised records in each export format, with CSV cells made safe against formula injection."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterable

from core.curate.formats.records import EXPORT_FORMATS
from core.errors import InvalidInput


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
