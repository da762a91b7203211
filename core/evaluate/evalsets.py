"""Eval sets: frozen prompt lists (with optional reference answers and automatic checks) from a dataset version's
test split or an uploaded JSONL/CSV file, and the outputs generated for them (one Output per prompt and system,
written by the generation jobs of core.evaluate.generate)."""
from __future__ import annotations

import json
from collections import Counter

from sqlalchemy import func
from sqlmodel import Session, select

from core.accounts import can, require
from core.curate.datasets import version_records
from core.curate.formats import TOO_DEEP, BadRecord, Rejected, json_value, read_rows
from core.errors import InvalidInput, NotFound
from core.evaluate.checks import checks_from_row, fact_checks
from core.evaluate.generate_config import decoding_arguments
from core.evaluate.systems import BASE
from core.names import check_name
from storage.models import DatasetVersion, EvalPrompt, EvalSet, Output, Project, Score, User

DEFAULT_REVIEWERS_PER_ITEM = 2
MAX_PROMPTS = 5000


def _check_name(session: Session, project_id: int, name: str) -> str:
    name = check_name(name, "eval set")
    if session.exec(select(EvalSet).where(EvalSet.project_id == project_id, EvalSet.name == name)).first():
        raise InvalidInput(f"An eval set named {name!r} already exists in this project.")
    return name


def _check_k(reviewers_per_item: int) -> int:
    k = int(reviewers_per_item)
    if not 1 <= k <= 20:
        raise InvalidInput("Reviewers per item must be between 1 and 20.")
    return k


def _save_eval_set(session: Session, eval_set: EvalSet, prompts: list[dict]) -> EvalSet:
    if not prompts:
        raise InvalidInput("No prompts to put in the eval set.")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidInput(f"An eval set holds at most {MAX_PROMPTS} prompts; this has {len(prompts)}.")
    session.add(eval_set)
    session.flush()
    for i, p in enumerate(prompts):
        session.add(EvalPrompt(eval_set_id=eval_set.id, position=i, messages=p["messages"],
                               reference=p.get("reference") or "", example_id=p.get("example_id"),
                               checks=p.get("checks") or []))
    session.commit()
    session.refresh(eval_set)
    return eval_set


def create_eval_set_from_version(session: Session, user: User, project_id: int, version_id: int, name: str, *,
                                 split: str = "test", reviewers_per_item: int = DEFAULT_REVIEWERS_PER_ITEM,
                                 seed: int = 0, with_fact_checks: bool = True) -> EvalSet:
    """Freeze the prompts of a dataset version's split (default test) with their answers as references; with
    ``with_fact_checks``, each prompt whose reference gives one of the project's facts to check gets a check."""
    require(user, "evaluate")
    version = session.get(DatasetVersion, version_id)
    if version is None or version.project_id != project_id:
        raise NotFound(f"No dataset version {version_id} in this project.")
    name = _check_name(session, project_id, name)
    facts = (session.get(Project, project_id).facts or []) if with_fact_checks else []
    prompts = []
    for rec in version_records(session, version_id, split):
        completion = rec.get("completion") or []
        messages = [dict(m) for m in rec["prompt"]]
        reference = completion[-1]["content"] if completion else ""
        prompts.append({"messages": messages, "reference": reference, "example_id": rec.get("example_id"),
                        "checks": fact_checks(facts, reference, messages)})
    if not prompts:
        raise InvalidInput(f"Version {version.name!r} has no {split} examples; freeze it with a {split} share "
                           "or upload prompts instead.")
    es = EvalSet(project_id=project_id, name=name, source="version", dataset_version_id=version_id,
                 created_by=user.id, reviewers_per_item=_check_k(reviewers_per_item), seed=int(seed))
    return _save_eval_set(session, es, prompts)


def _prompt_messages(raw, system: str, where: str) -> list[dict]:
    if isinstance(raw, str):
        if not raw.strip():
            raise InvalidInput(f"{where}: the prompt is empty.")
        msgs = [{"role": "user", "content": raw}]
    elif isinstance(raw, list) and raw and all(isinstance(m, dict) for m in raw):
        msgs = []
        for m in raw:
            role, content = m.get("role"), m.get("content")
            if role not in ("system", "user", "assistant") or not isinstance(content, str):
                raise InvalidInput(f"{where}: prompt messages need a role (system/user/assistant) and text content.")
            msgs.append({"role": role, "content": content})
        if msgs[-1]["role"] != "user":
            raise InvalidInput(f"{where}: the prompt's last message must be from the user.")
    else:
        raise InvalidInput(f"{where}: 'prompt' must be text or a list of chat messages.")
    if system and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def parse_prompt_file(data: bytes | str, filename: str) -> list[dict]:
    """Prompts from an uploaded JSONL or CSV file: a ``prompt`` field (text, or chat messages in JSONL or as JSON
    text in a CSV cell), an optional ``reference`` (also ``response``/``answer``/``completion``), an optional
    ``system``, and optional checks (``checks``, or the shorthands of core.evaluate.checks.checks_from_row)."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    name = (filename or "").lower()
    if not name.endswith((".csv", ".jsonl", ".json")):
        raise InvalidInput("Upload a .jsonl or .csv file with a 'prompt' field.")
    rows: list[tuple[str, dict]] = []
    for row in read_rows(data, name):  # the example importer's reader and limits (core.curate.formats)
        if isinstance(row, Rejected):
            raise InvalidInput(f"line {row.line}: {row.reason}.")
        if name.endswith(".csv"):
            if not rows and "prompt" not in [(k or "").strip().lower() for k in row.value]:
                raise InvalidInput("The CSV needs a 'prompt' column (and optionally 'reference').")
            rows.append((f"line {row.line}", {(k or "").strip().lower(): v for k, v in row.value.items()}))
        elif not isinstance(row.value, dict):
            raise InvalidInput(f"line {row.line}: each line must be a JSON object with a 'prompt'.")
        else:
            rows.append((f"line {row.line}", row.value))
    prompts = []
    for where, fields in rows:
        if "prompt" not in fields:
            raise InvalidInput(f"{where}: no 'prompt' field.")
        reference = next((fields[k] for k in ("reference", "response", "answer", "completion") if fields.get(k)), "")
        if isinstance(reference, list):  # TRL conversational completion
            reference = reference[-1].get("content", "") if reference and isinstance(reference[-1], dict) else ""
        raw = fields["prompt"]
        if isinstance(raw, str) and raw.lstrip().startswith("[{"):  # chat messages as JSON text (a CSV cell)
            try:
                raw = json_value(raw, "prompt")
            except BadRecord as err:  # a prompt that merely starts like JSON stays text; one too deep is refused
                if TOO_DEEP in str(err):
                    raise InvalidInput(f"{where}: {err}.") from None
        prompts.append({"messages": _prompt_messages(raw, str(fields.get("system") or ""), where),
                        "reference": str(reference or ""), "checks": checks_from_row(fields, where)})
    if not prompts:
        raise InvalidInput("The file has no prompts.")
    return prompts


def create_eval_set_from_file(session: Session, user: User, project_id: int, name: str, data: bytes | str,
                              filename: str, *, reviewers_per_item: int = DEFAULT_REVIEWERS_PER_ITEM,
                              seed: int = 0) -> EvalSet:
    """Freeze an uploaded list of prompts (JSONL/CSV) with optional reference answers."""
    require(user, "evaluate")
    if session.get(Project, project_id) is None:
        raise NotFound(f"No project {project_id}.")
    name = _check_name(session, project_id, name)
    prompts = parse_prompt_file(data, filename)
    es = EvalSet(project_id=project_id, name=name, source="upload", created_by=user.id,
                 reviewers_per_item=_check_k(reviewers_per_item), seed=int(seed))
    return _save_eval_set(session, es, prompts)


def get_eval_set(session: Session, eval_set_id_or_name: int | str, project_id: int | None = None) -> EvalSet:
    """An eval set by id, or by name: within ``project_id``, or in any project when the name is unique."""
    es = None
    if isinstance(eval_set_id_or_name, int) or str(eval_set_id_or_name).isdigit():
        es = session.get(EvalSet, int(eval_set_id_or_name))
    if es is None:
        q = select(EvalSet).where(EvalSet.name == str(eval_set_id_or_name))
        if project_id is not None:
            q = q.where(EvalSet.project_id == project_id)
        found = session.exec(q.limit(2)).all()
        if len(found) > 1:
            raise InvalidInput(f"Several projects have an eval set named {str(eval_set_id_or_name)!r}; name the "
                               "project (--project) or give the eval set's id.")
        es = found[0] if found else None
    if es is None or (project_id is not None and es.project_id != project_id):
        raise NotFound(f"No eval set {eval_set_id_or_name!r}.")
    return es


def eval_prompts(session: Session, eval_set_id: int) -> list[EvalPrompt]:
    return list(session.exec(select(EvalPrompt).where(EvalPrompt.eval_set_id == eval_set_id)
                             .order_by(EvalPrompt.position)))


def list_eval_sets(session: Session, user: User, project_id: int) -> list[dict]:
    """Eval sets of a project with prompt, output and score counts, for reviewers and up (Compare lists them).
    Which systems have outputs is for engineers only (``n_systems`` for everyone): reviewers score blind."""
    require(user, "score")
    reveal = can(user, "evaluate")
    rows = []
    for es in session.exec(select(EvalSet).where(EvalSet.project_id == project_id).order_by(EvalSet.id)):
        n_prompts = session.exec(select(func.count()).select_from(EvalPrompt)
                                 .where(EvalPrompt.eval_set_id == es.id)).one()
        n_refs = session.exec(select(func.count()).select_from(EvalPrompt)
                              .where(EvalPrompt.eval_set_id == es.id, EvalPrompt.reference != "")).one()
        systems = session.exec(select(Output.system).join(EvalPrompt, Output.prompt_id == EvalPrompt.id)
                               .where(EvalPrompt.eval_set_id == es.id).distinct()).all()
        n_scores = session.exec(select(func.count()).select_from(Score)
                                .join(EvalPrompt, Score.prompt_id == EvalPrompt.id)
                                .where(EvalPrompt.eval_set_id == es.id)).one()
        rows.append({"id": es.id, "name": es.name, "source": es.source, "dataset_version_id": es.dataset_version_id,
                     "prompts": n_prompts, "references": n_refs, "n_systems": len(systems),
                     "systems": sorted(systems) if reveal else [], "scores": n_scores,
                     "reviewers_per_item": es.reviewers_per_item, "created_at": es.created_at})
    return rows


def set_reviewers_per_item(session: Session, user: User, eval_set_id: int, k: int) -> EvalSet:
    """Change K, the number of reviewers each item gets before any item gets one more."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    es.reviewers_per_item = _check_k(k)
    session.add(es)
    session.commit()
    session.refresh(es)
    return es


def latest_outputs(session: Session, eval_set_id: int) -> dict[tuple[int, str], Output]:
    """The newest output per (prompt id, system) in the eval set."""
    rows = session.exec(select(Output).join(EvalPrompt, Output.prompt_id == EvalPrompt.id)
                        .where(EvalPrompt.eval_set_id == eval_set_id).order_by(Output.id)).all()
    return {(o.prompt_id, o.system): o for o in rows}


def output_decodings(session: Session, eval_set_id: int, *, prompt_id: int | None = None) -> dict[str, list[dict]]:
    """The decoding stored with each system's newest outputs in the eval set (of one prompt with ``prompt_id``),
    for ``generate_config.decoding_differences``."""
    out: dict[str, list[dict]] = {}
    for (pid, system), output in latest_outputs(session, eval_set_id).items():
        if prompt_id is None or pid == prompt_id:
            out.setdefault(system, []).append(output.decoding or {})
    return out


def comparison_decoding(session: Session, eval_set_id: int) -> dict | None:
    """``Decoding`` arguments of the outputs a new generation on this eval set will be compared with: the decoding
    most of its newest outputs were made with (the base model's on a tie); None when no output records one."""
    # The base model's outputs first: on a tie, the base model's decoding (every run is compared with it) wins.
    outputs = sorted(latest_outputs(session, eval_set_id).values(), key=lambda o: (o.system != BASE, o.id))
    counts = Counter(json.dumps(o.decoding, sort_keys=True) for o in outputs if o.decoding)
    if not counts:
        return None
    return decoding_arguments(json.loads(counts.most_common(1)[0][0]))
