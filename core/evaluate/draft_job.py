"""The draft-answers job: ``python -m core.evaluate.draft_job --run-dir DIR``. Never imports streamlit.

setup -> load the model once (the base, a run's adapter on its base, or a full fine-tune's own model) -> batched
generation with the evaluation's machinery (core.evaluate.generate.generate_outputs: left-padded,
length-sorted batches) -> each batch's answers written into their examples -> finish. An example is written
only if it still needs an answer and nobody saved it since the job read it (the same version check as every
save), so an annotator who answered it meanwhile keeps their answer. A canceled or crashed job resumed later
drafts only what is still empty. Start, heartbeats, cancel and the recorded end are the job lifecycle's
(core.jobs.worker.run_worker).
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import update

from core.basemodel import EMBEDDED, load_model, load_tokenizer
from core.curate.dedup import record_hash, record_text, search_text
from core.curate.formats import chat_messages, make_record
from core.curate.hints import estimate_tokens
from core.curate.history import add_revision
from core.evaluate.drafting import DraftConfig, needs_answer
from core.evaluate.generate import generate_outputs
from core.evaluate.systems import BASE, parse_system, system_labels
from core.jobs import rundir
from core.jobs.worker import JobContext, StopFlag, out_of_memory, run_worker, worker_main
from storage.db import retry_busy, session_scope
from storage.models import Example, Job, User, utcnow

STOP = StopFlag()  # set by SIGTERM (core.jobs.queue.cancel): stop after the current batch, keep what was written


def drafting_model(system: str, base_model: str | None):
    """The model and tokenizer of ``system`` ("base" or "run:N") on ``base_model``: the base, with the run's
    adapter attached when the run has one (draft answers, generated drafts)."""
    import torch

    base = base_model or EMBEDDED
    use_cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer(base)
    model = load_model(base, dtype=torch.bfloat16 if use_cuda else torch.float32)
    if use_cuda:
        model = model.to("cuda")
    kind, run_id = parse_system(system)
    if kind != BASE:
        with session_scope() as s:
            run_dir = s.get(Job, run_id).run_dir
        if (Path(run_dir) / rundir.ADAPTER_FILES[0]).exists():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, run_dir)
            print(f"attached adapter of {system} from {run_dir}", flush=True)
    model.eval()
    return model, tokenizer


def _todo(cfg: DraftConfig) -> list[tuple[int, int, list[dict]]]:
    """(example id, version, conversation up to the answer) of the configured examples that still need one."""
    out = []
    with session_scope() as s:
        for ex_id in cfg.example_ids:
            ex = s.get(Example, ex_id)
            if ex is not None and needs_answer(ex):
                record = make_record(ex.system, ex.turns, ex.input, ex.tags, ex.note)
                out.append((ex.id, ex.version, chat_messages(record)[:-1]))
    return out


def _write(job: Job, label: str, items: list[tuple[int, int, list]], answers: list[dict], counts: dict) -> None:
    """Write a batch of drafted answers into their examples (one transaction), each as a new version."""
    with session_scope() as s:
        engineer = s.get(User, job.created_by) if job.created_by else None
        for (ex_id, version, _), answer in zip(items, answers):
            ex = s.get(Example, ex_id)
            text = answer["text"].strip()
            if not text:
                counts["empty"] += 1  # the model said nothing: the example still needs an answer
                continue
            if ex is None or ex.version != version or not needs_answer(ex):
                counts["skipped"] += 1  # answered or changed by someone since the job read it
                continue
            turns = [dict(t) for t in ex.turns]
            turns[-1]["content"] = text
            record = make_record(ex.system, turns, ex.input, ex.tags, ex.note)
            origin = dict(ex.origin or {})
            origin["drafted"] = {"system": job.config["system"], "label": label, "job_id": job.id, "text": text,
                                 "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            result = s.exec(update(Example).where(Example.id == ex_id, Example.version == version).values(
                turns=turns, origin=origin, content_hash=record_hash(record), search_text=search_text(record),
                token_count=estimate_tokens(record_text(record)), version=version + 1, updated_at=utcnow())
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:
                counts["skipped"] += 1
                continue
            s.refresh(ex)
            add_revision(s, ex, "drafted by model", engineer, reason=f"drafted by {label}")
            counts["drafted"] += 1


def run_job(job_id: int) -> dict | None:
    """Run draft-answers job ``job_id`` through the job lifecycle; returns the result it recorded."""
    return run_worker(job_id, draft, stop=STOP)[1]


def draft(ctx: JobContext) -> dict:
    """Draft an answer into every configured example that still needs one; returns the job's result."""
    t_start = time.perf_counter()
    counts = {"drafted": 0, "empty": 0, "skipped": 0}
    result = ctx.result  # what a failure keeps as the job's result, with the counts so far
    result.update(counts)
    cfg = DraftConfig.from_dict(ctx.config)
    ctx.canceled_message = "Canceled; answers drafted so far are kept."
    ctx.oom_advice = lambda: out_of_memory([f"a smaller batch size (now {cfg.batch_size})",
                                            "a shorter max_new_tokens"])
    with session_scope() as s:
        label = system_labels(s, [cfg.system])[cfg.system]
        job = s.get(Job, ctx.job_id)
    todo = _todo(cfg)
    result.update({"system": cfg.system, "total": len(todo), "already_answered": len(cfg.example_ids) - len(todo),
                   "decoding": cfg.decoding.stored()})
    ctx.beat(done=0, total=len(todo))
    if todo:
        print(f"loading {cfg.base_model or EMBEDDED} to draft {len(todo)} answers with {cfg.system}", flush=True)
        model, tokenizer = drafting_model(cfg.system, cfg.base_model)

        def on_batch(indices: list[int], batch: list[dict]) -> None:
            retry_busy(lambda: _write(job, label, [todo[i] for i in indices], batch, counts))
            result.update(counts)
            done = counts["drafted"] + counts["empty"] + counts["skipped"]
            ctx.beat(done=done, total=len(todo))
            print(f"{done}/{len(todo)} answers drafted", flush=True)

        generate_outputs(model, tokenizer, [conv for _, _, conv in todo], cfg.decoding,
                         batch_size=cfg.batch_size, on_batch=on_batch, should_stop=ctx.stop.is_set)
    result.update(counts, seconds=round(time.perf_counter() - t_start, 2))
    return result


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.evaluate.draft_job", __doc__.splitlines()[0], draft, argv, stop=STOP)


if __name__ == "__main__":
    sys.exit(main())
