"""The layout of a dataset file export: a folder with one file per split, as the tools that read it expect.

::

    <export>/train.jsonl        (or .json / .csv: the format's own extension; an empty split has no file)
    <export>/validation.jsonl
    <export>/test.jsonl
    <export>/README.md          a dataset card whose ``configs`` name the split files (the Hugging Face Hub's
                                 layout), so ``datasets.load_dataset("<export>")`` returns the splits as frozen
    <export>/dataset_info.json  LLaMA-Factory's entries, one per split (Alpaca, ShareGPT and chat formats), mapping
                                 the system prompt and the earlier turns: ``dataset_dir: <export>``,
                                 ``dataset: train``, ``eval_dataset: validation``

A single file would either mix the test examples into what another tool trains on or need a ``split`` column every
tool ignores; a file per split is what ``datasets``, LLaMA-Factory and TRL load as splits without edits.
"""
from __future__ import annotations

import copy
import json
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Iterator

from core.curate.formats import SPLIT_NAMES, export_suffix, write_records
from core.errors import InvalidInput

# LLaMA-Factory's dataset_info.json attributes per format (its data/README.md; the names are the fields its
# parser.DatasetAttr reads). Alpaca: the system prompt and the earlier [user, assistant] pairs are columns, which
# a minimal entry leaves unmapped (so LLaMA-Factory drops them). ShareGPT and chat: a leading message whose role is
# ``system_tag`` is the system prompt; ``tags`` name the role and content keys and the role values.
_ALPACA = {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                             "system": "system", "history": "history"}}
LLAMAFACTORY = {
    "alpaca_json": _ALPACA,
    "alpaca_jsonl": _ALPACA,
    "sharegpt": {"formatting": "sharegpt", "columns": {"messages": "conversations"},
                 "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                          "system_tag": "system"}},
    "chat_jsonl": {"formatting": "sharegpt", "columns": {"messages": "messages"},
                   "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant", "system_tag": "system"}},
}


def llamafactory_entries(fmt: str, files: dict[str, str]) -> dict:
    """LLaMA-Factory ``dataset_info.json`` content for split files ``{split: file name}`` of format ``fmt``; {} for
    a format LLaMA-Factory cannot read with every turn (CSV keeps multi-turn chats in one JSON cell; TRL's
    prompt/completion has no LLaMA-Factory formatting)."""
    attrs = LLAMAFACTORY.get(fmt)
    if attrs is None:
        return {}
    return {split: {"file_name": name, **copy.deepcopy(attrs)} for split, name in files.items()}


def _card(fmt: str, files: dict[str, str], counts: dict[str, int], llamafactory: bool) -> str:
    """README.md: YAML ``configs`` naming the split files (read by ``datasets``), then how to load them."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"] if files else []
    for split, name in files.items():
        lines += [f"  - split: {split}", f"    path: {name}"]
    lines += (["---", ""] if files else []) + ["# Dataset export", "", f"Format: `{fmt}`. One file per split:", ""]
    lines += [f"- {s}: `{files[s]}`, {counts[s]:,} record{'s' if counts[s] != 1 else ''}" for s in files]
    lines += ["", "Load the splits with `datasets.load_dataset(\"<this folder>\")`."]
    if llamafactory:
        evaluate = ", `eval_dataset: validation`" if "validation" in files else ""
        lines += ["", f"LLaMA-Factory: `dataset_dir: <this folder>`, `dataset: train`{evaluate} "
                      "(`dataset_info.json` maps the system prompt and every turn)."]
    return "\n".join(lines) + "\n"


def _first(records: Iterator[dict]) -> Iterator[dict] | None:
    """``records`` again, or None when it is empty (an empty split gets no file)."""
    for head in records:
        return chain([head], records)
    return None


def _counting(records: Iterable[dict], counts: dict, split: str) -> Iterator[dict]:
    counts[split] = 0
    for rec in records:
        counts[split] += 1
        yield rec


def write_split_folder(split_records: Callable[[str], Iterable[dict]], fmt: str, out: str | Path) -> Path:
    """Write the folder described in the module docstring: ``split_records(split)`` gives that split's
    normalised records (streamed, one split at a time); returns the folder."""
    out = Path(out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        # Split files left from another export would be loaded as this one's splits.
        raise InvalidInput(f"{out} already exists and is not an empty folder: give a new folder to export to.")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    counts: dict[str, int] = {}
    for split in SPLIT_NAMES:
        records = _first(iter(split_records(split)))
        if records is None:
            continue
        files[split] = split + export_suffix(fmt)
        write_records(_counting(records, counts, split), fmt, out / files[split])
    entries = llamafactory_entries(fmt, files)
    if entries:
        (out / "dataset_info.json").write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_card(fmt, files, counts, bool(entries)), encoding="utf-8")
    return out
