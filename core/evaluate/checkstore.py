"""Checks in the database: edit a prompt's checks, a project's facts to check, make checks from the facts, export
prompts with their checks, and score every system's answers (pass rates and the failing answers).

The pure parts (what a check is, how it passes, pass rates with intervals) are core.evaluate.checks.
"""
from __future__ import annotations

import csv
import io
import json

from sqlmodel import Session

from core.accounts import require
from core.errors import InvalidInput, NotFound
from core.evaluate.checks import Check, clean_checks, clean_facts, fact_checks, pass_rates
from core.evaluate.evalsets import eval_prompts, get_eval_set, latest_outputs
from core.evaluate.systems import system_labels
from storage.models import EvalPrompt, Project, User

EXPORT_FORMATS = ("jsonl", "csv")


def prompts_with_checks(session: Session, user: User, eval_set_id: int) -> list[EvalPrompt]:
    """The eval set's prompts with their checks, for the people who write checks (engineers and up)."""
    require(user, "evaluate")
    get_eval_set(session, eval_set_id)
    return eval_prompts(session, eval_set_id)


def set_prompt_checks(session: Session, user: User, prompt_id: int, checks: list[dict]) -> EvalPrompt:
    """Replace one eval prompt's checks (validated; nothing is saved if one is bad)."""
    require(user, "evaluate")
    prompt = session.get(EvalPrompt, prompt_id)
    if prompt is None:
        raise NotFound(f"No eval prompt {prompt_id}.")
    prompt.checks = clean_checks(checks)
    session.add(prompt)
    session.commit()
    session.refresh(prompt)
    return prompt


def set_project_facts(session: Session, user: User, project_id: int, facts: list[dict]) -> Project:
    """Replace a project's facts to check (name, keywords, match, about, when)."""
    require(user, "evaluate")
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"No project {project_id}.")
    project.facts = clean_facts(facts)
    session.add(project)
    session.commit()
    session.refresh(project)
    return project


def with_fact_checks(checks: list[dict], facts: list[dict], reference: str, messages: list[dict]) -> list[dict]:
    """A prompt's expert checks kept, its fact checks made afresh from ``facts``."""
    return [c for c in checks if c.get("source") != "fact"] + fact_checks(facts, reference, messages)


def apply_fact_checks(session: Session, user: User, eval_set_id: int) -> dict:
    """Make checks from the project's facts for every prompt of an eval set whose reference gives a fact (or whose
    question matches a fact's ``when``). Earlier fact checks are replaced; checks written by hand stay."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    facts = session.get(Project, es.project_id).facts or []
    if not facts:
        raise InvalidInput("This project has no facts to check yet: add some first.")
    n_prompts = n_checks = 0
    for prompt in eval_prompts(session, es.id):
        prompt.checks = with_fact_checks(prompt.checks or [], facts, prompt.reference, prompt.messages)
        made = sum(c.get("source") == "fact" for c in prompt.checks)
        n_prompts += made > 0
        n_checks += made
        session.add(prompt)
    session.commit()
    return {"prompts": n_prompts, "checks": n_checks}


def export_prompts(session: Session, user: User, eval_set_id: int, fmt: str = "jsonl") -> str:
    """The eval set's prompts, references and checks as JSONL or CSV text that Generate's upload reads back."""
    require(user, "evaluate")
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"Unknown format {fmt!r}; choose jsonl or csv.")
    es = get_eval_set(session, eval_set_id)
    rows = [{"prompt": [dict(m) for m in p.messages], "reference": p.reference, "checks": p.checks or []}
            for p in eval_prompts(session, es.id)]
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["prompt", "reference", "checks"])
    writer.writeheader()
    for r in rows:
        writer.writerow({"prompt": json.dumps(r["prompt"], ensure_ascii=False), "reference": r["reference"],
                         "checks": json.dumps(r["checks"], ensure_ascii=False)})
    return buf.getvalue()


def check_rows(session: Session, eval_set_id: int) -> list[dict]:
    """One row per (system, checked prompt, check) with whether the newest output passes it."""
    prompts = {p.id: p for p in eval_prompts(session, eval_set_id) if p.checks}
    rows = []
    for (prompt_id, system), output in sorted(latest_outputs(session, eval_set_id).items()):
        prompt = prompts.get(prompt_id)
        if prompt is None:
            continue
        for stored in prompt.checks:
            check = Check.from_dict(stored)
            rows.append({"system": system, "prompt_id": prompt_id, "position": prompt.position,
                         "check": check.label, "kind": check.kind, "passed": check.passes(output.text)})
    return rows


def check_results(session: Session, eval_set_id: int, *, seed: int = 0) -> dict:
    """Pass rates per system and per check (bootstrap 95% intervals) and the failing answers, systems named."""
    prompts = {p.id: p for p in eval_prompts(session, eval_set_id)}
    n_checked = sum(bool(p.checks) for p in prompts.values())
    rows = check_rows(session, eval_set_id)
    rates = pass_rates(rows, seed=seed)
    labels = system_labels(session, sorted({r["system"] for r in rows}))
    for row in rates["by_system"] + rates["by_check"]:
        row["label"] = labels.get(row["system"], row["system"])
    outputs = latest_outputs(session, eval_set_id)
    failures = []
    for r in rows:
        if r["passed"]:
            continue
        prompt = prompts[r["prompt_id"]]
        question = next((m["content"] for m in reversed(prompt.messages) if m["role"] == "user"), "")
        failures.append({"system": r["system"], "label": labels.get(r["system"], r["system"]),
                         "prompt_id": r["prompt_id"], "position": r["position"], "check": r["check"],
                         "prompt": question, "answer": outputs[(r["prompt_id"], r["system"])].text,
                         "reference": prompt.reference})
    return {"checked_prompts": n_checked, "prompts": len(prompts), **rates, "failures": failures}
