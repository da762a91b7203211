"""Helpers shared by several test modules (plain functions; fixtures live in conftest.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from core.evaluate import evalsets, review
from storage.models import Example, Job, JobStatus, Output

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery"
PROMPTS = ["My bill doubled, why?", "How do I read my meter?", "I smell gas.", "Can I pay monthly?"]


def cli(ws: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, FINETUNE_STUDIO_HOME=str(ws), **(env or {}))
    full_env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, timeout=120)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str],
               interval: float = 0.2) -> Any:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy, and return that; after
    ``timeout`` seconds fail, saying what was awaited (``what``, or its call for a message built at the end, such
    as a log). The one wait of the suite: tests wait for a state, never sleep a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def wait_for(session, job_id, statuses=("succeeded", "failed", "canceled"), timeout=300):
    """The job once it is in one of ``statuses``, reconciled on every poll as the Runs page does."""
    from core.jobs.queue import get_job, reconcile

    def ended():
        reconcile(session)
        session.expire_all()
        job = get_job(session, job_id)
        return job if job.status in statuses else None

    def still() -> str:
        from core.jobs.queue import log_tail

        job = get_job(session, job_id)
        return f"job {job_id} (still {job.status}):\n" + log_tail(job)  # the kind's own log (train.log, job.log)

    return wait_until(ended, timeout, still, interval=0.3)


def make_outputs(session, project, engineer, *, n_prompts=4, runs=1, k=2, references=True):
    """An eval set with outputs of 'base' and ``runs`` finished runs (as a generation job would write them)."""
    lines = "\n".join(json.dumps({"prompt": f"{PROMPTS[i % 4]} (#{i})",
                                  "reference": "Call us on 0800 000." if references else ""})
                      for i in range(n_prompts))
    es = evalsets.create_eval_set_from_file(session, engineer, project.id, f"set-{n_prompts}-{runs}", lines,
                                      "prompts.jsonl", reviewers_per_item=k)
    run_ids = []
    for r in range(runs):
        job = Job(project_id=project.id, kind="train", name=f"secret-lora-{r}", status=JobStatus.succeeded.value,
                  run_dir=f"/nonexistent/run{r}", created_by=engineer.id)
        session.add(job)
        session.commit()
        run_ids.append(job.id)
    gen = Job(project_id=project.id, kind="generate", name="gen", status=JobStatus.succeeded.value,
              eval_set_id=es.id, result={"perplexity": {"base": 12.5}})
    session.add(gen)
    session.commit()
    systems = ["base"] + [f"run:{i}" for i in run_ids]
    for p in evalsets.eval_prompts(session, es.id):
        for s in systems:
            text = "Call us on 0800 000." if s != "base" else f"I am not sure about {p.id}."
            session.add(Output(prompt_id=p.id, system=s, job_id=gen.id, text=text, decoding={"mode": "greedy"},
                               n_new_tokens=7, seconds=0.1))
    session.commit()
    return es, systems


def full_scores(a: int, b: int) -> dict:
    return {c: {"A": a, "B": b} for c in ("accuracy", "tone", "helpfulness")}


def score_all(session, es, reviewers, prefer_run=True, vary=None):
    for i, rev in enumerate(reviewers):
        while (item := review.next_item(session, rev, es.id)) is not None:
            run_side = "A" if item._system_a.startswith("run") else "B"
            base_side = "B" if run_side == "A" else "A"
            delta = (vary or (lambda r, p: 0))(i, item.prompt_id)
            scores = {c: {run_side: min(5, 4 + delta), base_side: max(1, 2 - delta)}
                      for c in ("accuracy", "tone", "helpfulness")}
            pref = run_side if prefer_run or (item.prompt_id + i) % 3 else "tie"
            review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=scores, preference=pref,
                            comment=f"r{i}")


def score_sheet_key(at) -> str:
    """The widget key of the Compare page's score sheet (a browser component, drawn as an unknown element)."""
    def walk(node):
        for child in getattr(node, "children", {}).values():
            key = getattr(child, "key", None)
            if isinstance(key, str) and key.startswith("cmp_sheet_"):
                return key
            found = walk(child)
            if found:
                return found
        return None
    key = walk(at._tree)
    assert key, "no score sheet on the page"
    return key


def fill_score_sheet(at, scores: dict, preference: str | None) -> None:
    """What the browser's score sheet sends when a reviewer scores the open item: ``scores`` and ``preference``
    in the reviewer's A/B terms, as the component's state (the page reads it on the next run)."""
    key = score_sheet_key(at)
    at.session_state[key] = {"draft": {"token": key.removeprefix("cmp_sheet_"), "scores": scores,
                                       "pref": preference}}


# ---------------------------------------------------------------- AppTest pages


def page(name: str, user) -> AppTest:
    """``pages/<name>`` under AppTest, signed in as ``user`` (not run yet)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def rendered_text(at: AppTest) -> str:
    """Every string the page sends to the browser: values, labels, bodies, help, options, placeholders."""
    parts: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for attr in ("value", "label", "body", "help", "options", "placeholder", "caption"):
            try:
                val = getattr(node, attr, None)
            except Exception:  # some elements compute values lazily and refuse when not applicable
                val = None
            if val is not None and not callable(val):
                parts.append(str(val))
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                walk(child)

    walk(at._tree)
    return "\n".join(parts)


def status_line(at: AppTest) -> str:
    """The Train page's live panel status ("**Status:** ...")."""
    return next(m.value for m in at.markdown if m.value.startswith("**Status:**"))


def area(at, label):
    return next(t for t in at.text_area if t.label == label)


def click(at, label):
    next(b for b in at.button if b.label == label).click()
    return at.run()


def heading(at) -> str:
    """The annotate/review pages' "Example #N · status" heading."""
    return next(h.value for h in at.subheader if h.value.startswith("Example #"))


# ---------------------------------------------------------------- leakage: a bicycle shop's questions

BIKE_SHOP = "You are the support assistant of a small bicycle shop."
# Distinct questions: no two share many word 3-grams, so only what a test plants is a duplicate.
QUESTIONS = [
    "How long does it take to true a buckled rear wheel after a crash on a gravel road near the river bank",
    "Which tyre pressure should a sixty kilo rider use on twenty eight millimetre road tyres in wet weather",
    "Can you order a replacement derailleur hanger for a twenty nineteen aluminium frame touring bike soon",
    "My hydraulic disc brakes squeal loudly when descending steep hills, what could be contaminating the pads",
    "Do you offer a winter service package that includes chain cleaning, cable replacement and a bearing check",
    "Is it safe to ride an electric cargo bike with two toddlers seated in the front box on icy mornings",
    "What size frame fits a person one metre seventy tall with a rather short inseam and long arms",
    "How often should tubeless sealant be topped up when the bike is stored indoors through humid summers",
    "Could the creaking noise from my bottom bracket come from a dry thread or a worn out cartridge bearing",
    "Are clip in pedals a good idea for a nervous beginner commuting through heavy city traffic every day",
    "Why does my front light flicker whenever I ride over cobblestones on the old market square at night",
    "Will you buy back my old steel racing bike in part exchange for a new gravel bike from your shop",
]
ALL_TRAIN = {"train": 1.0, "validation": 0.0, "test": 0.0}


def leak_example(session, project, user, question: str, answer: str = "Bring it in and we will look.",
                 **kw) -> Example:
    """An approved bicycle-shop example asking ``question``."""
    ex = Example(project_id=project.id, system=BIKE_SHOP, turns=[{"role": "user", "content": question},
                                                                 {"role": "assistant", "content": answer}],
                 status="approved", created_by=user.id, **kw)
    session.add(ex)
    session.commit()
    session.refresh(ex)
    return ex


def leak_eval_set(session, project, user, name: str, prompts: list[str]):
    lines = "\n".join(json.dumps({"prompt": p, "reference": "Come by the shop."}) for p in prompts)
    return evalsets.create_eval_set_from_file(session, user, project.id, name, lines, "prompts.jsonl")


def near_copy(question: str) -> str:
    """The question as a user might send it again: other case and spacing, one word more at the end."""
    return "  " + question.upper().replace(" ", "   ") + " thanks"


# ---------------------------------------------------------------- failures: a scored eval set with losses

# Per prompt position, per reviewer: (preferred: "run" | "base" | "tie", the run's accuracy score, comment).
FAILURE_PLAN = {
    0: [("base", 2, "too vague"), ("base", 2, "")],  # lost (2 of 2), accuracy mean 2
    1: [("base", 3, ""), ("tie", 2, "")],  # not lost (1 of 2), accuracy mean 2.5
    2: [("run", 4, ""), ("run", 5, "")],  # won, scored well
    3: [("run", 1, "wrong number"), ("run", 2, "")],  # won, yet accuracy mean 1.5
}


def score_failures(session, es, reviewers):
    """Score ``es`` (run vs base) as FAILURE_PLAN says; returns its prompts by position."""
    prompts = evalsets.eval_prompts(session, es.id)
    for p in prompts:
        for rev, (pref, acc, comment) in zip(reviewers, FAILURE_PLAN[p.position]):
            pair = review.review_items(session, es.id)[0][1]
            item = review.get_item(session, rev, es.id, p.id, pair)
            run_side = "A" if item._system_a.startswith("run") else "B"
            base_side = "B" if run_side == "A" else "A"
            scores = {c: {run_side: acc if c == "accuracy" else 3, base_side: 3}
                      for c in ("accuracy", "tone", "helpfulness")}
            choice = {"run": run_side, "base": base_side, "tie": "tie"}[pref]
            review.submit_score(session, rev, es.id, p.id, pair, scores=scores, preference=choice, comment=comment)
    return {p.position: p for p in prompts}


@contextmanager
def studio_home(folder: Path) -> Iterator[Path]:
    """The app pointed at the workspace ``folder`` (SQLite there, any DATABASE_URL ignored) for fixtures wider than
    one test, whose ``monkeypatch`` is function-scoped; the database engines are closed on the way in and out (the
    WAL checkpointed into the file) and the environment restored."""
    import pytest

    from storage.db import reset_engines

    mp = pytest.MonkeyPatch()
    mp.setenv("FINETUNE_STUDIO_HOME", str(folder))
    mp.delenv("DATABASE_URL", raising=False)
    try:
        reset_engines()
        yield folder
    finally:
        reset_engines()
        mp.undo()
