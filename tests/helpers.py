"""Helpers shared by several test modules (plain functions; fixtures live in conftest.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from core.evaluate import evalsets, review
from storage.models import Job, JobStatus, Output

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery"
PROMPTS = ["My bill doubled, why?", "How do I read my meter?", "I smell gas.", "Can I pay monthly?"]


def cli(ws: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, FINETUNE_STUDIO_HOME=str(ws), **(env or {}))
    full_env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, timeout=120)


def wait_for(session, job_id, statuses=("succeeded", "failed", "canceled"), timeout=300):
    from core.jobs.queue import get_job, reconcile

    deadline = time.time() + timeout
    while time.time() < deadline:
        reconcile(session)  # as the Runs page does on every poll
        session.expire_all()
        job = get_job(session, job_id)
        if job.status in statuses:
            return job
        time.sleep(0.3)
    log = Path(job.run_dir, "train.log").read_text()
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s:\n{log}")


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
