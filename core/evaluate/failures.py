"""Failures back to the experts: every eval prompt a run got wrong becomes a draft example in one action.

A prompt is a failure of a run when the reviewers' majority preferred the base model's answer over the run's
(``lost_to_base``: more than half of the reviewers who compared the two chose the base), or when the run's mean
score on a rubric criterion, over every reviewer who scored it on that prompt, is at or below a threshold
(``low_score``); ``either`` catches both. Each caught prompt becomes a draft (source ``eval_failure``) that
starts from the prompt's reference answer when it has one, else empty for the annotator to write: never from a
system's answer, since reviewers can open Annotate while the eval set is still scored blind on Compare (a system's
answer word for word would tell them which side is which). Its ``origin`` keeps the lineage for engineers: eval
set, prompt id and position, the run, the rule that caught it, the votes and mean scores, every reviewer's comment,
and the test-split example the prompt repeats (review.split_leak_warning), if any. Below engineer, the draft's note and
its provenance (core.curate.origins.describe) name no run, no score and no rule.

With ``judge_id`` the same rules read a trusted LLM judge's verdicts instead of the reviewers' (its both-orders
verdict against the base; its grade on the criterion): a judge not yet trusted on this eval set
(core.evaluate.judgeresults.judge_trust) is refused with the reason, and the draft's origin names the judge.

Sending is idempotent: a prompt already sent for the same run and eval set is skipped and counted, so a second
click after more reviews only adds the new failures. ``sent_failures`` says where the sent drafts are now.
"""
from __future__ import annotations

from collections import Counter
from statistics import mean
from typing import Any

from sqlmodel import Session, select

from core.accounts import can, require
from core.curate.curation import create_example
from core.curate.dedup import content_hash
from core.curate.origins import RULE_WORDS  # noqa: F401 - RULE_WORDS: for the pages
from core.errors import InvalidInput, NotFound
from core.evaluate.evalsets import eval_prompts, get_eval_set, latest_outputs
from core.evaluate.judges import get_judge
from core.evaluate.judgeresults import judge_outcomes, judge_trust
from core.evaluate.review import pair_key, prompt_record, rubric_of, scores_of, split_leak_warning
from core.evaluate.systems import BASE, parse_system, system_labels
from storage.models import Example, ExampleStatus, Project, Score, User

SOURCE = "eval_failure"
RULES = ("lost_to_base", "low_score", "either")
STATUSES = [s.value for s in ExampleStatus]


def _check_rule(rule: str, criterion: str | None, threshold, rubric: list[dict]) -> tuple[str | None, float | None]:
    if rule not in RULES:
        raise InvalidInput(f"Choose a rule: {', '.join(RULES)}.")
    if rule == "lost_to_base":
        return None, None
    names = {c["name"]: c for c in rubric}
    if criterion not in names:
        raise InvalidInput(f"Choose a rubric criterion for the score rule: {', '.join(names)}.")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise InvalidInput("The score threshold must be a number.") from None
    crit = names[criterion]
    if not crit["min"] <= threshold <= crit["max"]:
        raise InvalidInput(f"The {criterion} threshold must be between {crit['min']} and {crit['max']}.")
    return criterion, threshold


def _side_value(score: Score, system: str, criterion: str):
    side = "A" if score.system_a == system else "B" if score.system_b == system else None
    return (score.scores.get(criterion) or {}).get(side) if side else None


def _winner(score: Score) -> str:
    return {"A": score.system_a, "B": score.system_b}.get(score.preference, score.preference)


def _judgement(scores: list[Score], run: str, rubric: list[dict]) -> dict:
    """The votes of the run against the base on one prompt, and each criterion's mean score of both."""
    head_to_head = [s for s in scores if s.pair == pair_key(run, BASE)]
    votes = Counter("run" if w == run else "base" if w == BASE else w for w in map(_winner, head_to_head))
    means = {}
    for crit in rubric:
        per = {}
        for who, system in (("run", run), ("base", BASE)):
            values = [v for v in (_side_value(s, system, crit["name"]) for s in scores) if v is not None]
            per[who] = round(mean(values), 3) if values else None
        means[crit["name"]] = per
    return {"votes": {"run": votes["run"], "base": votes["base"], "tie": votes["tie"],
                      "both_bad": votes["both_bad"], "reviewers": len(head_to_head)}, "means": means}


def _reviewer_failures(scores: list[Score], run: str, rubric: list[dict], rule: str, criterion: str | None,
                       threshold: float | None) -> tuple[dict, list[str]]:
    """(judgement, what caught it) of one prompt by the reviewers' votes and scores."""
    judged = _judgement(scores, run, rubric)
    votes = judged["votes"]
    caught = []
    if rule in ("lost_to_base", "either") and votes["reviewers"] and votes["base"] * 2 > votes["reviewers"]:
        caught.append("lost_to_base")
    if rule in ("low_score", "either") and criterion:
        run_mean = judged["means"][criterion]["run"]
        if run_mean is not None and run_mean <= threshold:
            caught.append(f"low_score: {criterion} {run_mean:g} <= {threshold:g}")
    return judged, caught


def _judge_failures(session: Session, es, run: str, judge_id: int, rule: str, criterion: str | None,
                    threshold: float | None) -> dict[int, dict]:
    """Prompt id -> (``caught``, ``judgement``) by a trusted judge's verdicts on ``run``."""
    judge = get_judge(session, judge_id)
    verdict = judge_trust(session, judge.id, es.id)
    if not verdict["trusted"]:
        raise InvalidInput(f"Judge {judge.name} is not yet trusted on this eval set: {verdict['reason']} Send "
                           "failures by the reviewers' votes instead.")
    caught = {}
    for prompt_id, said in judge_outcomes(session, judge.id, es.id, run, BASE).items():
        why = []
        if rule in ("lost_to_base", "either") and said["winner"] == BASE:
            why.append(f"lost to the base model (judge {judge.name}'s verdict in both orders)")
        grade = said["scores"].get(criterion) if criterion else None
        if rule in ("low_score", "either") and grade is not None and grade <= threshold:
            why.append(f"judge {judge.name} graded {criterion} {grade}, at or below {threshold:g}")
        if why:
            caught[prompt_id] = {"caught": why, "judgement": {"judge": judge.name, "winner": said["winner"],
                                                              "scores": said["scores"]}}
    return caught


def find_failures(session: Session, user: User, eval_set_id: int, run: str, *, rule: str = "lost_to_base",
                  criterion: str | None = None, threshold: float | None = None,
                  judge_id: int | None = None) -> list[dict]:
    """The prompts of an eval set where ``run`` failed by ``rule``, in prompt order, each with what caught it
    (``caught``), the votes and mean scores (``judgement``), the reviewers' comments and the answer the draft
    would start from (``start``: "reference" or "empty", and ``answer``)."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    kind, _ = parse_system(run)
    if kind == BASE:
        raise InvalidInput("Choose a fine-tuned run: failures are what a run got wrong.")
    rubric = rubric_of(session.get(Project, es.project_id))
    criterion, threshold = _check_rule(rule, criterion, threshold, rubric)
    outputs = latest_outputs(session, es.id)
    if not any(system == run for _, system in outputs):
        raise NotFound(f"{run} has no outputs in this eval set; generate them on the Generate page first.")
    names = {u.id: u.username for u in session.exec(select(User))}
    by_judge = _judge_failures(session, es, run, judge_id, rule, criterion, threshold) if judge_id else None
    by_prompt: dict[int, list[Score]] = {}
    for s in scores_of(session, es.id):
        if run in (s.system_a, s.system_b):
            by_prompt.setdefault(s.prompt_id, []).append(s)
    if by_judge is None and rule == "lost_to_base" and not any(s.pair == pair_key(run, BASE)
                                                               for rows in by_prompt.values() for s in rows):
        raise InvalidInput("No reviewer has compared this run with the base model yet: generate the base model's "
                           "outputs too and score them on Compare, or use the score rule.")
    out = []
    for prompt in eval_prompts(session, es.id):
        scores = by_prompt.get(prompt.id, [])
        if (by_judge is None and not scores) or (prompt.id, run) not in outputs:
            continue
        if by_judge is not None:
            if prompt.id not in by_judge:
                continue
            judged, caught = by_judge[prompt.id]["judgement"], by_judge[prompt.id]["caught"]
        else:
            judged, caught = _reviewer_failures(scores, run, rubric, rule, criterion, threshold)
        if not caught:
            continue
        start, answer = ("reference", prompt.reference) if prompt.reference.strip() else ("empty", "")
        comments = [{"reviewer": names.get(s.reviewer_id, str(s.reviewer_id)), "pair": s.pair,
                     "preferred": _winner(s), "comment": s.comment} for s in scores if s.comment.strip()]
        out.append({"prompt": prompt, "caught": caught, "judgement": judged, "comments": comments, "start": start,
                    "answer": answer})
    return out


def _already_sent(session: Session, project_id: int, eval_set_id: int, run: str) -> set[int]:
    rows = session.exec(select(Example.origin).where(Example.project_id == project_id, Example.source == SOURCE))
    return {o.get("prompt_id") for o in rows if o.get("eval_set_id") == eval_set_id and o.get("run") == run}


def _check_assignee(session: Session, assignee: int | None) -> User | None:
    if not assignee:
        return None
    person = session.get(User, int(assignee))
    if person is None or not person.active or not can(person, "curate"):
        raise InvalidInput("Assign the drafts to an active user who can annotate, or to nobody.")
    return person


def send_failures(session: Session, user: User, eval_set_id: int, run: str, *, rule: str = "lost_to_base",
                  criterion: str | None = None, threshold: float | None = None,
                  assignee: int | None = None, judge_id: int | None = None) -> dict:
    """Turn every failure of ``run`` (``find_failures``) into a draft example, assigned to ``assignee`` (a user
    id; None leaves it to any annotator). Returns the counts: ``caught``, ``sent`` (new drafts, ids in
    ``example_ids``), ``already_sent`` (sent before for this run and eval set: skipped), ``duplicate_text``
    (the project already holds this prompt with this answer: skipped) and ``leaks`` (positions and example ids
    of sent prompts that are test-split examples)."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    project = session.get(Project, es.project_id)
    person = _check_assignee(session, assignee)
    failures = find_failures(session, user, es.id, run, rule=rule, criterion=criterion, threshold=threshold,
                             judge_id=judge_id)
    label = system_labels(session, [run])[run]
    done = _already_sent(session, project.id, es.id, run)
    report: dict[str, Any] = {"caught": len(failures), "sent": 0, "already_sent": 0, "duplicate_text": 0,
                              "example_ids": [], "leaks": [], "assignee": person.username if person else None}
    for item in failures:
        prompt = item["prompt"]
        if prompt.id in done:
            report["already_sent"] += 1
            continue
        system, turns = prompt_record(prompt, item["answer"])
        if session.exec(select(Example.id).where(Example.project_id == project.id,
                                                 Example.content_hash == content_hash(system, turns))).first():
            report["duplicate_text"] += 1
            continue
        leak = split_leak_warning(session, prompt)
        origin = {"kind": SOURCE, "eval_set_id": es.id, "eval_set": es.name, "prompt_id": prompt.id,
                  "position": prompt.position, "run": run, "run_label": label, "rule": rule,
                  "caught": item["caught"], "criterion": criterion, "threshold": threshold,
                  "judge": item["judgement"].get("judge"),
                  "scores": item["judgement"], "comments": item["comments"], "start": item["start"],
                  "test_split_example_id": prompt.example_id if leak else None}
        ex = create_example(session, user, project, system=system, turns=turns,
                            note=_note(es.name, prompt.position, item),
                            source=SOURCE, origin=origin, assigned_to=person.id if person else None,
                            answer_to_write=item["start"] == "empty")
        report["sent"] += 1
        report["example_ids"].append(ex.id)
        if leak:
            report["leaks"].append({"position": prompt.position, "example_id": prompt.example_id})
    return report


def _note(eval_set: str, position: int, item: dict) -> str:
    """The draft's note, for whoever opens it (reviewers too, while the review is still blind): which prompt came
    back and what the reviewers said; no run, no score, no rule (those stay in ``origin``, for engineers)."""
    lines = [f"A failure on prompt {position + 1} of eval set {eval_set}. "
             + ("It starts from the reference answer; correct it." if item["start"] == "reference"
                else "Write the answer.")]
    lines += [f"{c['reviewer']}: {c['comment'].strip()}" for c in item["comments"]]
    return "\n".join(lines)


def sent_failures(session: Session, user: User, eval_set_id: int) -> dict:
    """Where the drafts sent from this eval set's failures are now: ``total``, ``by_status`` (draft /
    submitted / approved / rejected) and ``by_run`` (run -> counts by status)."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    rows = session.exec(select(Example.status, Example.origin).where(Example.project_id == es.project_id,
                                                                     Example.source == SOURCE)).all()
    by_status = dict.fromkeys(STATUSES, 0)
    by_run: dict[str, dict] = {}
    for status, origin in rows:
        if origin.get("eval_set_id") != es.id:
            continue
        by_status[status] = by_status.get(status, 0) + 1
        run = by_run.setdefault(origin.get("run", "?"), dict.fromkeys(STATUSES, 0))
        run[status] = run.get(status, 0) + 1
    return {"total": sum(by_status.values()), "by_status": by_status, "by_run": by_run}


def assignees(session: Session, user: User) -> list[dict]:
    """Active users who can annotate (the assignee picker), by name."""
    require(user, "evaluate")
    return [{"id": u.id, "username": u.username, "role": u.role}
            for u in session.exec(select(User).where(User.active).order_by(User.username)) if can(u, "curate")]


def run_choices(session: Session, user: User, eval_set_id: int) -> list[str]:
    """The runs with outputs in this eval set (what failures can be sent for), in system order."""
    require(user, "evaluate")
    systems = {system for _, system in latest_outputs(session, eval_set_id)}
    return sorted((s for s in systems if parse_system(s)[0] != BASE), key=lambda s: (parse_system(s)[1] or 0, s))
