"""What a judge is asked and how its answers are read: the prompts (files in core/evaluate/judge_prompts, shown on
the Results page), the parsing of verdicts and grades, the both-orders rule, and the judge job's config, launch
and resume (the process itself: core.evaluate.judge_job).

- **pairwise**: two systems' answers to one prompt, asked twice, each system once as A (MT-Bench's remedy for
  position bias). ``combine_orders``: a verdict counts only when both orders name the same winner (or both say
  tie); otherwise the item is a tie and counted as *flipped*, and the share of flipped items is the judge's
  position bias.
- **rubric**: one answer, one criterion of the project's rubric at a time, with the criterion's text and the
  reference answer in the prompt; a whole-number grade within the criterion's range.
- An answer the parser cannot read gives NULL: counted and shown as unparseable, never guessed.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

from sqlmodel import Session, select

from core.accounts import require
from core.configs import strict_from_dict
from core.errors import InvalidInput
from core.evaluate.evalsets import eval_prompts, get_eval_set, latest_outputs
from core.evaluate.judges import get_judge
from core.evaluate.review import rubric_of
from core.evaluate.systems import BASE, parse_system, system_labels
from core.jobs.queue import NO_DEVICE, resume_kind, submit
from storage.models import EvalPrompt, Job, JudgeVerdict, Project, User

KIND = "judge"
WORKER = "core.evaluate.judge_job"
MODES = ("pairwise", "rubric")
PROMPTS_DIR = Path(__file__).resolve().parent / "judge_prompts"
PAIRWISE_RE = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
RATING_RE = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
TIE = "tie"


def prompt_template(mode: str) -> str:
    """The judge's prompt for ``mode`` ("pairwise" or "rubric"), as stored in the repository."""
    if mode not in MODES:
        raise InvalidInput(f"A judge mode is one of: {', '.join(MODES)}.")
    return (PROMPTS_DIR / f"{mode}.txt").read_text(encoding="utf-8")


def fill(template: str, **values) -> str:
    """The template with each ``{name}`` it knows replaced in one pass (braces in the inserted text stay as
    they are)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def conversation_text(messages: list[dict]) -> str:
    """The messages before the answer as plain text, one ``role: content`` block each."""
    return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


def pairwise_messages(prompt: EvalPrompt, answer_a: str, answer_b: str) -> list[dict]:
    text = fill(prompt_template("pairwise"), conversation=conversation_text(prompt.messages),
                reference=prompt.reference.strip() or "(none)", answer_a=answer_a, answer_b=answer_b)
    return [{"role": "user", "content": text}]


def rubric_messages(prompt: EvalPrompt, criterion: dict, answer: str) -> list[dict]:
    text = fill(prompt_template("rubric"), criterion=criterion["name"], description=criterion.get("description", ""),
                min=criterion["min"], max=criterion["max"], conversation=conversation_text(prompt.messages),
                reference=prompt.reference.strip() or "(none)", answer=answer)
    return [{"role": "user", "content": text}]


def parse_pairwise(text: str) -> str | None:
    """"A", "B" or "tie" from a ``[[A]]`` / ``[[B]]`` / ``[[C]]`` verdict; None when there is none or the answer
    names more than one (the last line of an explanation that quotes the format is not a verdict)."""
    found = {m.upper() for m in PAIRWISE_RE.findall(text or "")}
    found = {"tie" if v in ("C", "TIE") else v for v in found}
    return found.pop() if len(found) == 1 else None


def parse_rating(text: str, lo: int = 1, hi: int = 5) -> int | None:
    """The whole-number grade of a ``[[N]]`` rating within ``lo``..``hi``; None when there is none, more than
    one different grade, a fraction or a grade out of range."""
    found = set(RATING_RE.findall(text or ""))
    if len(found) != 1:
        return None
    raw = found.pop()
    if not raw.lstrip("-").isdigit():
        return None
    value = int(raw)
    return value if lo <= value <= hi else None


def combine_orders(first: str, second: str, verdict_1: str | None, verdict_2: str | None) -> dict:
    """The both-orders rule. ``verdict_1`` was given with ``first`` shown as A, ``verdict_2`` with ``second`` as
    A. Returns ``winner`` (a system, "tie", or None when either answer was unparseable) and ``flipped`` (the two
    orders disagreed, so the item is a tie)."""
    if verdict_1 is None or verdict_2 is None:
        return {"winner": None, "flipped": False}
    w1 = {"A": first, "B": second}.get(verdict_1, TIE)
    w2 = {"A": second, "B": first}.get(verdict_2, TIE)
    if w1 == w2:
        return {"winner": w1, "flipped": False}
    return {"winner": TIE, "flipped": True}


@dataclass
class JudgeConfig:
    """A judge job's config.json."""

    judge_id: int
    eval_set_id: int
    modes: list[str] = field(default_factory=lambda: list(MODES))
    """"pairwise" (every two systems, both orders) and/or "rubric" (every criterion, every answer)."""
    systems: list[str] = field(default_factory=list)
    """The systems whose answers are judged (at least two for pairwise); empty: every system with outputs."""
    criteria: list[str] = field(default_factory=list)
    """The rubric criteria graded; empty: all of the project's."""
    max_tokens: int = 512
    """The longest answer the judge may give (its explanation and verdict)."""

    def __post_init__(self):
        self.modes = [m for m in MODES if m in set(self.modes)]
        if not self.modes:
            raise InvalidInput("Choose what the judge does: pairwise, rubric or both.")
        self.systems = [s for s in dict.fromkeys(self.systems)]
        for s in self.systems:
            parse_system(s)
        if not 1 <= int(self.max_tokens) <= 8192:
            raise InvalidInput("The judge's answer length must be between 1 and 8192 tokens.")
        self.max_tokens = int(self.max_tokens)

    @classmethod
    def from_dict(cls, data: dict) -> "JudgeConfig":
        return strict_from_dict(cls, data, "judge")


def judge_tasks(session: Session, cfg: JudgeConfig) -> list[dict]:
    """Every request the job makes, in prompt order: ``{mode, prompt, criterion, system_a, system_b, output_a,
    output_b}`` (output rows; pairwise tasks come in both orders, rubric ones have no B)."""
    es = get_eval_set(session, cfg.eval_set_id)
    outputs = latest_outputs(session, es.id)
    systems = cfg.systems or sorted({s for _, s in outputs}, key=lambda s: (s != BASE, parse_system(s)[1] or 0))
    rubric = [c for c in rubric_of(session.get(Project, es.project_id))
              if not cfg.criteria or c["name"] in cfg.criteria]
    tasks = []
    for prompt in eval_prompts(session, es.id):
        have = [s for s in systems if (prompt.id, s) in outputs]
        if "pairwise" in cfg.modes:
            for s1, s2 in combinations(have, 2):
                for a, b in ((s1, s2), (s2, s1)):
                    tasks.append({"mode": "pairwise", "prompt": prompt, "criterion": None, "system_a": a,
                                  "system_b": b, "output_a": outputs[(prompt.id, a)],
                                  "output_b": outputs[(prompt.id, b)]})
        if "rubric" in cfg.modes:
            for system in have:
                for crit in rubric:
                    tasks.append({"mode": "rubric", "prompt": prompt, "criterion": crit, "system_a": system,
                                  "system_b": "", "output_a": outputs[(prompt.id, system)], "output_b": None})
    return tasks


def task_key(task: dict) -> tuple:
    """What makes a verdict unique (the table's unique key): resuming skips tasks whose key is stored."""
    return (task["mode"], (task["criterion"] or {}).get("name", ""), task["output_a"].id,
            task["output_b"].id if task["output_b"] is not None else 0)


def stored_keys(session: Session, judge_id: int, eval_set_id: int) -> set[tuple]:
    rows = session.exec(select(JudgeVerdict.mode, JudgeVerdict.criterion, JudgeVerdict.output_a_id,
                               JudgeVerdict.output_b_id).where(JudgeVerdict.judge_id == judge_id,
                                                               JudgeVerdict.eval_set_id == eval_set_id)).all()
    return {tuple(r) for r in rows}


def launch_judging(session: Session, user: User, eval_set_id: int, judge_id: int | str, *,
                   modes: list[str] | tuple[str, ...] = MODES, systems: list[str] | None = None,
                   criteria: list[str] | None = None, max_tokens: int = 512) -> Job:
    """Queue a judge job on an eval set's stored outputs. It runs on no device (the judge is an endpoint), so it
    never waits behind training or a serving job, including the serve-model that may be the judge itself."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    judge = get_judge(session, judge_id)
    cfg = JudgeConfig(judge_id=judge.id, eval_set_id=es.id, modes=list(modes), systems=list(systems or []),
                      criteria=list(criteria or []), max_tokens=max_tokens)
    known = {c["name"] for c in rubric_of(session.get(Project, es.project_id))}
    unknown = [c for c in cfg.criteria if c not in known]
    if unknown:
        raise InvalidInput(f"Not a criterion of the project's rubric: {', '.join(unknown)}.")
    with_outputs = {s for _, s in latest_outputs(session, es.id)}
    missing = [s for s in cfg.systems if s not in with_outputs]
    if missing:
        raise InvalidInput(f"No outputs of {', '.join(missing)} in this eval set: generate them first.")
    tasks = judge_tasks(session, cfg)
    if not tasks:
        raise InvalidInput("Nothing to judge: pairwise needs two systems with outputs on the same prompts, rubric "
                           "at least one system with outputs.")
    label = ", ".join(system_labels(session, cfg.systems or sorted(with_outputs)).values())
    return submit(session, user, project_id=es.project_id, kind=KIND, action="evaluate",
                  name=f"judge {judge.name}: {es.name} ({label})"[:200], config=asdict(cfg), module=WORKER,
                  slots=NO_DEVICE, eval_set_id=es.id)


def resume_judging(session: Session, user: User, job_id: int) -> Job:
    """Continue a failed or canceled judge job: verdicts already stored are not asked again."""
    return resume_kind(session, user, job_id, KIND, "a judge job")


def judging_jobs(session: Session, user: User, eval_set_id: int, limit: int = 20) -> list[Job]:
    """The eval set's judge jobs, newest first."""
    require(user, "evaluate")
    return list(session.exec(select(Job).where(Job.kind == KIND, Job.eval_set_id == eval_set_id)
                             .order_by(Job.id.desc()).limit(limit)))


def judging_progress(job: Job) -> dict:
    """``done``/``total`` requests of a judge job and its unparseable answers so far (from its heartbeat)."""
    progress = (job.result or {}).get("progress") or {}
    result = job.result or {}
    return {"done": result.get("done", progress.get("done", 0)), "total": result.get("total", progress.get("total", 0)),
            "unparseable": result.get("unparseable", progress.get("unparseable", 0))}
