"""The judge job: ``python -m core.evaluate.judge_job --run-dir DIR``. Never imports streamlit or torch.

setup -> the tasks (core.evaluate.judging.judge_tasks: pairwise in both orders, rubric per criterion) less those
whose verdict is already stored (so a resumed job asks nothing twice) -> one request at a time to the judge's
endpoint, each answer parsed (NULL when unparseable) and stored at once with the raw answer -> finish. SIGTERM
(cancel) stops after the current request and keeps every verdict stored so far.
"""
from __future__ import annotations

import sys
from functools import partial
import threading
import time

from sqlalchemy.exc import IntegrityError

from core.evaluate.judges import ask, get_judge
from core.evaluate.judging import (JudgeConfig, judge_tasks, pairwise_messages, parse_pairwise, parse_rating,
                                   rubric_messages, stored_keys, task_key)
from core.jobs.worker import JobContext, StopFlag, run_worker, worker_main
from storage.db import retry_busy, session_scope
from storage.models import JudgeVerdict

STOP = StopFlag()  # set by SIGTERM (core.jobs.queue.cancel): stop after the current request


def _ask_or_stop(judge, messages: list[dict], max_tokens: int) -> str | None:
    """The judge's answer, or None when a cancel (SIGTERM) arrives first: the request runs in a daemon thread,
    so a slow endpoint never holds a cancel back (the abandoned connection closes when the process ends, and
    serve-model stops generating on disconnect)."""
    box: dict = {}

    def call() -> None:
        try:
            box["answer"] = ask(judge, messages, max_tokens=max_tokens)
        except Exception as err:  # noqa: BLE001 - raised again in the job's thread below
            box["error"] = err

    thread = threading.Thread(target=call, name="judge-request", daemon=True)
    thread.start()
    while thread.is_alive():
        if STOP.is_set():
            return None
        thread.join(0.2)
    if "error" in box:
        raise box["error"]
    return box["answer"]


def _ask(judge, task: dict, max_tokens: int) -> tuple[str, str | None, int | None] | None:
    """(raw answer, verdict, score) of one task; None when canceled while waiting for the answer."""
    prompt, crit = task["prompt"], task["criterion"]
    if task["mode"] == "pairwise":
        messages = pairwise_messages(prompt, task["output_a"].text, task["output_b"].text)
    else:
        messages = rubric_messages(prompt, crit, task["output_a"].text)
    raw = _ask_or_stop(judge, messages, max_tokens)
    if raw is None:
        return None
    if task["mode"] == "pairwise":
        return raw, parse_pairwise(raw), None
    return raw, None, parse_rating(raw, int(crit["min"]), int(crit["max"]))


def _store(job_id: int, cfg: JudgeConfig, task: dict, raw: str, verdict: str | None, score: int | None) -> None:
    row = JudgeVerdict(judge_id=cfg.judge_id, eval_set_id=cfg.eval_set_id, job_id=job_id, prompt_id=task["prompt"].id,
                       mode=task["mode"], criterion=(task["criterion"] or {}).get("name", ""),
                       system_a=task["system_a"], system_b=task["system_b"], output_a_id=task["output_a"].id,
                       output_b_id=task["output_b"].id if task["output_b"] is not None else 0, raw=raw,
                       verdict=verdict, score=score)
    try:
        with session_scope() as s:
            s.add(row)
    except IntegrityError:  # another job stored this verdict meanwhile: keep the first
        pass


def run_job(job_id: int) -> dict | None:
    """Run judge job ``job_id`` through the job lifecycle; returns the result it recorded."""
    return run_worker(job_id, judge_all, stop=STOP)[1]


def judge_all(ctx: JobContext) -> dict:
    """Ask the judge every task not yet answered; returns the job's result."""
    t_start = time.perf_counter()
    counts = {"done": 0, "asked": 0, "unparseable": 0, "already_stored": 0}
    result = ctx.result  # what a failure or a cancel keeps as the job's result, with the counts so far
    ctx.canceled_message = "Canceled; verdicts stored so far are kept."
    cfg = JudgeConfig.from_dict(ctx.config)
    with session_scope() as s:
        judge = get_judge(s, cfg.judge_id)
        tasks = judge_tasks(s, cfg)
        done = stored_keys(s, cfg.judge_id, cfg.eval_set_id)
    todo = [t for t in tasks if task_key(t) not in done]
    counts["already_stored"] = counts["done"] = len(tasks) - len(todo)
    result.update({"judge": judge.name, "total": len(tasks), "modes": cfg.modes}, **counts)
    ctx.beat(**counts, total=len(tasks))
    print(f"judge {judge.name} at {judge.base_url}: {len(todo)} requests ({counts['done']} already stored)",
          flush=True)
    for task in todo:
        if ctx.stop.is_set():
            break
        answered = _ask(judge, task, cfg.max_tokens)
        if answered is None:  # canceled mid-request: nothing stored for this task
            break
        raw, verdict, score = answered
        retry_busy(partial(_store, ctx.job_id, cfg, task, raw, verdict, score))
        counts["done"] += 1
        counts["asked"] += 1
        counts["unparseable"] += verdict is None and score is None
        result.update(counts)
        ctx.beat(**counts, total=len(tasks))
        print(f"{counts['done']}/{len(tasks)} {task['mode']} "
              f"{'unparseable' if verdict is None and score is None else verdict or score}", flush=True)
    result.update(counts, seconds=round(time.perf_counter() - t_start, 2))
    return result


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.evaluate.judge_job", __doc__.splitlines()[0], judge_all, argv, stop=STOP)


if __name__ == "__main__":
    sys.exit(main())
