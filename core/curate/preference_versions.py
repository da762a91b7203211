"""Preference versions: frozen (prompt, chosen, rejected) pairs that DPO runs train on, and the preference import
format.

A preference version is frozen like a dataset version: its pairs are copied into PreferencePair rows and never
change, so a DPO run's config names exactly what it learned from. Pairs are stored in TRL's conversational
preference format -- ``prompt`` the messages before the answer, ``chosen``/``rejected`` one assistant message
each -- whatever they came from: a pair from plain-text strings becomes a user message and assistant messages, so
pairs from votes and from files can sit in one version (TRL needs one format per dataset) and a DPO run sees the
chat template its SFT run and the generation job use.

Building pairs from an eval set's votes lives in core.evaluate.pairs_from_votes (it reads the evaluation tables); this
module only validates, imports, freezes and reads, so core.train can read pairs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from core.accounts import require
from core.errors import InvalidInput, NotFound
from core.curate.formats import Rejected, read_rows
from core.curate.leakage import find_leaks
from core.names import check_name
from storage.models import PreferencePair, PreferenceVersion, User, utcnow

FORMAT = "preference"  # the import format's name: JSONL or Parquet rows with prompt, chosen, rejected
ROLES = ("system", "user", "assistant")
MAX_FILE_BYTES = 512 * 1024 * 1024


class BadPair(ValueError):
    """One row that is not a usable preference pair; its message is one line naming the field."""


def _message_list(value: Any, field: str, *, answer: bool) -> list[dict]:
    """Messages from a list of {"role", "content"} dicts, or one plain string (a user prompt / assistant answer)."""
    if isinstance(value, str):
        if not value.strip():
            raise BadPair(f"'{field}' is empty")
        return [{"role": "assistant" if answer else "user", "content": value}]
    if hasattr(value, "tolist"):  # a Parquet list column arrives as a numpy array
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise BadPair(f"'{field}' must be a text or a non-empty list of messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str) or msg.get("role") not in ROLES:
            raise BadPair(f"'{field}' message {i + 1} needs a role (system, user or assistant) and a text content")
        out.append({"role": msg["role"], "content": msg["content"]})
    if answer:
        if len(out) != 1 or out[0]["role"] != "assistant" or not out[0]["content"].strip():
            raise BadPair(f"'{field}' must be one non-empty assistant message")
    elif out[-1]["role"] == "assistant":
        raise BadPair(f"'{field}' ends with an assistant message; the answer goes in chosen/rejected")
    return out


def check_pair(raw: Any) -> dict:
    """A preference row as a stored pair {prompt, chosen, rejected}, or BadPair saying what is wrong."""
    if not isinstance(raw, dict):
        raise BadPair("a row must be an object with prompt, chosen and rejected")
    missing = [k for k in ("prompt", "chosen", "rejected") if raw.get(k) is None]
    if missing:
        raise BadPair(f"missing {', '.join(repr(k) for k in missing)}")
    pair = {"prompt": _message_list(raw["prompt"], "prompt", answer=False),
            "chosen": _message_list(raw["chosen"], "chosen", answer=True),
            "rejected": _message_list(raw["rejected"], "rejected", answer=True)}
    if pair["chosen"][0]["content"].strip() == pair["rejected"][0]["content"].strip():
        raise BadPair("chosen and rejected are the same answer")
    return pair


def _rows(data: bytes, filename: str):
    """(line or row number, raw row or a BadPair) for each row of a JSONL, JSON or Parquet file, read by the
    example importer's reader (core.curate.formats.read_rows) under its limits per record."""
    if not filename.lower().endswith((".jsonl", ".json", ".parquet")):
        raise InvalidInput(f"{filename}: a preference file must be .jsonl or .parquet.")
    for row in read_rows(data, filename):
        yield row.line, (BadPair(row.reason) if isinstance(row, Rejected) else row.value)


def read_preference_file(data: bytes | str | Path, filename: str = "", *, skip_bad: bool = False) -> dict:
    """Pairs of a preference file (JSONL or Parquet; conversational message lists or plain text strings).

    A bad row stops the import with one line naming the file, its line and what is wrong, so a frozen version
    never silently lacks pairs; with ``skip_bad`` bad rows are left out and counted (the first few reasons are
    kept). Returns {"pairs": [... with "source_line"], "rejected": n, "errors": [...], "rows": n}."""
    if isinstance(data, Path) or (isinstance(data, str) and not filename):
        path = Path(data)
        filename = filename or path.name
        data = path.read_bytes()
    elif isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(f"{filename} is larger than {MAX_FILE_BYTES // 2**20} MB.")
    pairs, errors, rows = [], [], 0
    for line, raw in _rows(data, filename):
        rows += 1
        try:
            if isinstance(raw, BadPair):
                raise raw
            pairs.append({**check_pair(raw), "source_line": line})
        except BadPair as err:
            if not skip_bad:
                raise InvalidInput(f"{filename} line {line}: {err}.") from None
            errors.append(f"line {line}: {err}")
    if not pairs:
        raise InvalidInput(f"{filename} holds no usable preference pair (each row needs prompt, chosen and "
                           "rejected)." + (f" First problem: {errors[0]}." if errors else ""))
    return {"pairs": pairs, "rejected": len(errors), "errors": errors[:20], "rows": rows}


def _pair_hash(pairs: list[dict]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p["prompt"], p["chosen"], p["rejected"]], sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def freeze_preferences(session: Session, user: User, project_id: int, name: str, pairs: list[dict],
                       sources: list[dict]) -> PreferenceVersion:
    """Freeze ``pairs`` (each {prompt, chosen, rejected} and its source fields) as a new named version; engineers
    and up. ``sources`` records where they came from and what was left out, shown with the version."""
    require(user, "train")
    name = check_name(name, "preference version")
    if session.exec(select(PreferenceVersion.id).where(PreferenceVersion.project_id == project_id,
                                                       PreferenceVersion.name == name)).first():
        raise InvalidInput(f"A preference version named {name!r} already exists in this project.")
    if not pairs:
        raise InvalidInput("No preference pairs to freeze: pairs come from items where reviewers preferred one "
                           "answer (ties and both-bad votes give none), or from a preference file.")
    version = PreferenceVersion(project_id=project_id, name=name, content_hash=_pair_hash(pairs),
                                n_pairs=len(pairs), sources=sources, created_by=user.id, created_at=utcnow())
    session.add(version)
    session.flush()
    for i, p in enumerate(pairs):
        session.add(PreferencePair(version_id=version.id, position=i, prompt=p["prompt"], chosen=p["chosen"],
                                   rejected=p["rejected"], eval_set_id=p.get("eval_set_id"),
                                   eval_prompt_id=p.get("eval_prompt_id"), source_file=p.get("source_file", "")[:300],
                                   source_line=p.get("source_line")))
    session.commit()
    session.refresh(version)
    return version


def file_source(filename: str, read: dict) -> dict:
    """The ``sources`` entry of an imported file."""
    return {"kind": "file", "file": filename, "pairs": len(read["pairs"]), "rows": read["rows"],
            "rejected_rows": read["rejected"], "errors": read["errors"]}


def source_text(sources: list[dict]) -> str:
    """Where a version's pairs came from, in one line (pages and CLI)."""
    parts = []
    for s in sources or []:
        if s.get("kind") == "votes":
            parts.append(f"eval set {s['eval_set']!r}: {s['pairs']} pairs from {s['items_voted']} voted items, "
                         f"{s['disagreements']} with disagreement (majority), {s['even_split']} dropped for an even "
                         f"split, {s['ties_or_both_bad']} only tie/both bad"
                         + (f", {s['missing_answers']} without stored answers" if s.get("missing_answers") else ""))
        elif s.get("kind") == "file":
            parts.append(f"file {s['file']}: {s['pairs']} pairs"
                         + (f", {s['rejected_rows']} bad rows skipped" if s.get("rejected_rows") else ""))
    return "; ".join(parts)


def import_preference_file(session: Session, user: User, project_id: int, name: str, data: bytes | str | Path,
                           filename: str = "", *, skip_bad: bool = False) -> PreferenceVersion:
    """Freeze a preference file (JSONL/Parquet, conversational or text) as a new preference version."""
    require(user, "train")
    read = read_preference_file(data, filename, skip_bad=skip_bad)
    filename = filename or Path(str(data)).name
    pairs = [{**p, "source_file": filename} for p in read["pairs"]]
    return freeze_preferences(session, user, project_id, name, pairs, [file_source(filename, read)])


def list_preference_versions(session: Session, user: User, project_id: int) -> list[dict]:
    """The project's preference versions, newest first, with where their pairs came from."""
    require(user, "train")
    rows = session.exec(select(PreferenceVersion).where(PreferenceVersion.project_id == project_id)
                        .order_by(PreferenceVersion.id.desc())).all()
    return [{"id": v.id, "name": v.name, "pairs": v.n_pairs, "sources": v.sources, "created_at": v.created_at,
             "content_hash": v.content_hash} for v in rows]


def get_preference_version(session: Session, version_id: int, project_id: int | None = None) -> PreferenceVersion:
    version = session.get(PreferenceVersion, version_id) if version_id else None
    if version is None or (project_id is not None and version.project_id != project_id):
        raise NotFound(f"Preference version {version_id or '(none)'} does not exist in this project; freeze one "
                       "from reviewers' votes (Results) or import a preference file (Datasets) first.")
    return version


def preference_records(session: Session, version_id: int, exclude_ids=()) -> list[dict]:
    """The version's pairs in order, as TRL's conversational preference records {prompt, chosen, rejected}, less
    the pairs ``exclude_ids`` names (a run's exclude_pair_ids)."""
    rows = session.exec(select(PreferencePair).where(PreferencePair.version_id == version_id)
                        .order_by(PreferencePair.position)).all()
    skip = set(exclude_ids)
    return [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in rows if r.id not in skip]


def preference_leaks(session: Session, version_id: int, exclude_ids=()) -> dict:
    """Pairs whose prompt repeats a prompt of one of the project's eval sets (core.curate.leakage.find_leaks,
    key = pair id), less ``exclude_ids``. The eval sets the pairs were voted on are not counted: training on a set's
    votes and measuring the run on the same prompts is the before/after the loop asks for, and Results says so
    beside such a run. ``{"leaks", "excluded", "vote_sets"}``."""
    version = get_preference_version(session, version_id)
    rows = session.exec(select(PreferencePair).where(PreferencePair.version_id == version_id)
                        .order_by(PreferencePair.position)).all()
    vote_sets = sorted({r.eval_set_id for r in rows if r.eval_set_id})
    leaks = find_leaks(session, version.project_id, [{"key": r.id, "messages": r.prompt} for r in rows],
                       ignore_eval_sets=vote_sets)
    skip = set(exclude_ids)
    return {"leaks": [x for x in leaks if x["key"] not in skip], "excluded": [x for x in leaks if x["key"] in skip],
            "vote_sets": vote_sets}


def preference_pairs_table(session: Session, user: User, version_id: int, limit: int = 200) -> list[dict]:
    """The first ``limit`` pairs with their sources, as rows for a table."""
    require(user, "train")
    rows = session.exec(select(PreferencePair).where(PreferencePair.version_id == version_id)
                        .order_by(PreferencePair.position).limit(limit)).all()
    return [{"#": r.position + 1, "prompt": r.prompt[-1]["content"], "chosen": r.chosen[0]["content"],
             "rejected": r.rejected[0]["content"],
             "source": (f"eval set {r.eval_set_id}, prompt {r.eval_prompt_id}" if r.eval_set_id
                        else f"{r.source_file} line {r.source_line}")} for r in rows]
