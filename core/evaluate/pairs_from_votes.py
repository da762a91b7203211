"""Preference pairs from an eval set's blind votes, and freezing them (with an optional preference file) into a
preference version (core.curate.preference_versions) that DPO runs train on.

One pair per reviewed item (prompt x pair of systems) by majority of the reviewers' A/B preferences: ties and
"both bad" votes say neither answer is better, so they count for neither side; an item whose A/B votes split
evenly gives no pair. What was left out is counted, so the page can say how many items had disagreement and how
many were dropped for an even split."""
from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from core.accounts import require
from core.errors import InvalidInput
from core.curate.preference_versions import file_source, freeze_preferences, read_preference_file
from core.evaluate.evalsets import eval_prompts, get_eval_set, latest_outputs
from core.evaluate.generate import generation_jobs, launch_generation
from core.evaluate.review import scores_of, split_pair
from core.evaluate.systems import finished_runs
from core.systems import run_key
from storage.models import JobStatus, PreferencePair, PreferenceVersion, User


def winner(preference: str, system_a: str, system_b: str) -> str:
    """The system a vote prefers ("A" -> system_a, "B" -> system_b), else the vote itself ("tie", "both_bad")."""
    return {"A": system_a, "B": system_b}.get(preference, preference)


def majority(votes: list[str]) -> dict:
    """The majority of one item's votes (each a system, "tie" or "both_bad").

    Returns {"chosen": system or None, "disagreement": bool, "even_split": bool, "no_preference": bool}:
    ``disagreement`` when the A/B votes name both systems (resolved by majority), ``even_split`` when they do so
    equally often (no pair), ``no_preference`` when only ties / both-bad votes were given (no pair)."""
    counts: dict[str, int] = {}
    for v in votes:
        if v not in ("tie", "both_bad"):
            counts[v] = counts.get(v, 0) + 1
    if not counts:
        return {"chosen": None, "disagreement": False, "even_split": False, "no_preference": True}
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    even = len(ranked) > 1 and ranked[0][1] == ranked[1][1]
    return {"chosen": None if even else ranked[0][0], "disagreement": len(ranked) > 1, "even_split": even,
            "no_preference": False}


def vote_pairs(session: Session, user: User, eval_set_id: int) -> dict:
    """Preference pairs from the eval set's votes, with counts of what was left out and why.

    Returns {"pairs": [{prompt, chosen, rejected, eval_set_id, eval_prompt_id}], "summary": {...}}; the summary
    counts items voted on, pairs, items with disagreement (resolved by majority), even splits and items with only
    ties / both-bad (dropped), and items whose answers are no longer stored (dropped)."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    outputs = latest_outputs(session, es.id)
    prompts = {p.id: p for p in eval_prompts(session, es.id)}
    items: dict[tuple[int, str], list[str]] = {}
    for s in scores_of(session, es.id):
        items.setdefault((s.prompt_id, s.pair), []).append(winner(s.preference, s.system_a, s.system_b))
    summary: dict[str, Any] = {"eval_set_id": es.id, "eval_set": es.name, "items_voted": len(items), "pairs": 0,
                               "disagreements": 0, "even_split": 0, "ties_or_both_bad": 0, "missing_answers": 0}
    pairs = []
    for (pid, pair), votes in sorted(items.items()):
        m = majority(votes)
        summary["disagreements"] += m["disagreement"]
        summary["even_split"] += m["even_split"]
        summary["ties_or_both_bad"] += m["no_preference"]
        if m["chosen"] is None:
            continue
        chosen = m["chosen"]
        rejected = next(s for s in split_pair(pair) if s != chosen)
        if (pid, chosen) not in outputs or (pid, rejected) not in outputs or pid not in prompts:
            summary["missing_answers"] += 1
            continue
        pairs.append({"prompt": [dict(m) for m in prompts[pid].messages],
                      "chosen": [{"role": "assistant", "content": outputs[(pid, chosen)].text}],
                      "rejected": [{"role": "assistant", "content": outputs[(pid, rejected)].text}],
                      "eval_set_id": es.id, "eval_prompt_id": pid})
    summary["pairs"] = len(pairs)
    return {"pairs": pairs, "summary": summary}


def freeze_from_votes(session: Session, user: User, project_id: int, name: str, *, eval_set_id: int | None = None,
                      file_data: bytes | None = None, filename: str = "", skip_bad: bool = False
                      ) -> PreferenceVersion:
    """Freeze a preference version from an eval set's votes, a preference file, or both; engineers and up.

    The version's ``sources`` keep the vote summary (disagreements, even splits, ties) and the file's counts."""
    require(user, "train")
    pairs: list[dict] = []
    sources: list[dict] = []
    if eval_set_id:
        if get_eval_set(session, eval_set_id).project_id != project_id:
            raise InvalidInput(f"Eval set {eval_set_id} belongs to another project.")
        built = vote_pairs(session, user, eval_set_id)
        pairs += built["pairs"]
        sources.append({"kind": "votes", **built["summary"]})
    if file_data is not None:
        read = read_preference_file(file_data, filename, skip_bad=skip_bad)
        pairs += [{**p, "source_file": filename} for p in read["pairs"]]
        sources.append(file_source(filename, read))
    if not sources:
        raise InvalidInput("Choose an eval set with votes, a preference file, or both.")
    return freeze_preferences(session, user, project_id, name, pairs, sources)


# ---------------------------------------------------------------- before / after on the same prompts


def runs_to_generate(session: Session, user: User, eval_set_id: int) -> list[dict]:
    """Succeeded runs of the eval set's project that have no answers on it yet, newest first (a DPO run just
    trained from its votes comes first): each one click from ``generate_like_before``."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    answered = {system for _, system in latest_outputs(session, es.id)}
    return [{"system": run_key(job.id), "run_id": job.id, "name": job.name,
             "method": (job.config or {}).get("method")}
            for job in reversed(finished_runs(session, es.project_id)) if run_key(job.id) not in answered]


def generate_like_before(session: Session, user: User, eval_set_id: int, run_id: int):
    """Queue the eval set's generation job for run ``run_id`` with the decoding of the outputs it will be compared
    with (launch_generation's default: not the latest job's, which may have made other systems' answers) and the
    batch size and perplexity setting of the eval set's latest successful generation job."""
    require(user, "evaluate")
    earlier = next((j for j in generation_jobs(session, eval_set_id) if j.status == JobStatus.succeeded.value), None)
    cfg = (earlier.config or {}) if earlier else {}
    kwargs = {key: cfg[key] for key in ("batch_size", "perplexity") if key in cfg}
    return launch_generation(session, user, eval_set_id, [run_key(run_id)], **kwargs)


def runs_trained_on_votes(session: Session, eval_set_id: int) -> list[int]:
    """Succeeded DPO runs whose preference version holds pairs voted on this eval set (the leakage check lets
    them through: measuring them on the same prompts is the before/after), so Results can say their scores here
    are not a held-out test."""
    es = get_eval_set(session, eval_set_id)
    versions = set(session.exec(select(PreferencePair.version_id).where(PreferencePair.eval_set_id == es.id)))
    return [job.id for job in finished_runs(session, es.project_id)
            if (job.config or {}).get("method") == "dpo"
            and (job.config or {}).get("preference_version_id") in versions]
