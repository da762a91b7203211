"""The generated-drafts job: ``python -m core.evaluate.docdraft_job --run-dir DIR``. Never imports streamlit.

setup -> load the model once -> per batch of sources: ask for questions (from a chunk) or paraphrases (of a
failing prompt), parse one per line -> (documents) answer each question from its chunk alone -> screen the new
prompts through the import's gate (core.curate.screening) -> store what passes as drafts with their origin ->
finish with the counts (drafts, unparseable answers, withheld by reason). A resumed job skips the sources that
already gave drafts in the same batch.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from functools import partial

from sqlmodel import select

from core.basemodel import EMBEDDED
from core.curate.curation import create_example
from core.curate.screening import Withheld, held_out_prompts, screen
from core.errors import InvalidInput
from core.evaluate.docdrafts import (ANSWER_PROMPT, PARAPHRASE_PROMPT, QUESTIONS_PROMPT, GenerateDraftsConfig,
                                     parse_lines)
from core.evaluate.draft_job import drafting_model
from core.evaluate.generate import generate_outputs
from core.evaluate.systems import system_labels
from core.jobs.worker import JobContext, StopFlag, out_of_memory, run_worker, worker_main
from storage.db import retry_busy, session_scope
from storage.models import Example, Job, Project, User

STOP = StopFlag()
SOURCE = {"documents": "document", "paraphrases": "paraphrase"}


def _done_sources(project_id: int, batch: str) -> set[int]:
    """Indices of the sources that already gave drafts in this batch (a resumed job skips them)."""
    with session_scope() as s:
        rows = s.exec(select(Example.origin).where(Example.project_id == project_id,
                                                   Example.source.in_(list(SOURCE.values())))).all()
    return {o["source_index"] for o in rows if isinstance(o, dict) and o.get("batch") == batch}


def _ask(cfg: GenerateDraftsConfig, source: dict) -> list[dict]:
    if cfg.mode == "documents":
        system = QUESTIONS_PROMPT.format(document=source["document"], n=cfg.per_source)
        user = f"{source['heading']}\n\n{source['text']}".strip()
    else:
        system, user = PARAPHRASE_PROMPT.format(n=cfg.per_source), source["text"]
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _origin(cfg: GenerateDraftsConfig, job: Job, label: str, index: int, source: dict, answer: str) -> dict:
    origin = {"kind": SOURCE[cfg.mode], "batch": cfg.batch, "source_index": index, "job_id": job.id}
    if cfg.mode == "documents":
        origin.update({k: source[k] for k in ("document_id", "document", "version", "chunk_id", "ordinal",
                                              "heading")})
    else:
        origin.update({k: source.get(k) for k in ("eval_set_id", "prompt_id", "position", "run", "caught")},
                      paraphrase_of=source["text"])
    origin["generated_by"] = {"system": cfg.system, "label": label}
    if answer:  # a model-written answer: the Datasets page measures how much the experts change it
        origin["drafted"] = {"system": cfg.system, "label": label, "job_id": job.id, "text": answer,
                             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return origin


def _store(job: Job, cfg: GenerateDraftsConfig, label: str, items: list[tuple[int, str, str]], held_out: list,
           counts: dict, withheld: Withheld) -> None:
    """Screen and store (source index, question, answer) items as drafts of the job's project (one transaction)."""
    with session_scope() as s:
        project, engineer = s.get(Project, job.project_id), s.get(User, job.created_by)
        prompts = [[{"role": "user", "content": q}] for _, q, _ in items]
        keep = screen(s, project.id, prompts, withheld, held_out)
        for (index, question, answer), ok in zip(items, keep):
            if not ok:
                continue
            turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            try:
                ex = create_example(s, engineer, project, turns=turns, source=SOURCE[cfg.mode],
                                    origin=_origin(cfg, job, label, index, cfg.sources[index], answer),
                                    answer_to_write=not answer)
            except InvalidInput as err:  # an example already has the same text
                withheld.add("duplicate", question, str(err))
                continue
            counts["drafts"] += 1
            counts["example_ids"].append(ex.id)


def run_job(job_id: int) -> dict | None:
    """Run generated-drafts job ``job_id`` through the job lifecycle; returns the result it recorded."""
    return run_worker(job_id, generate_drafts, stop=STOP)[1]


def generate_drafts(ctx: JobContext) -> dict:
    """Generate from every source not yet done, screen, store; returns the job's result."""
    t_start = time.perf_counter()
    counts: dict = {"drafts": 0, "unparseable": 0, "example_ids": []}
    withheld = Withheld()
    result = ctx.result  # what a failure or a cancel keeps as the job's result, with the counts so far
    cfg = GenerateDraftsConfig.from_dict(ctx.config)
    ctx.canceled_message = "Canceled; the drafts made so far are kept."
    ctx.oom_advice = lambda: out_of_memory([f"a smaller batch size (now {cfg.batch_size})", "fewer questions per "
                                            "chunk", "a shorter max_new_tokens"])
    with session_scope() as s:
        job = s.get(Job, ctx.job_id)
        label = system_labels(s, [cfg.system])[cfg.system]
        held_out = held_out_prompts(s, job.project_id)
    done = _done_sources(job.project_id, cfg.batch)
    todo = [i for i in range(len(cfg.sources)) if i not in done]
    result.update({"system": cfg.system, "mode": cfg.mode, "sources": len(cfg.sources), "already_done": len(done)},
                  **counts, withheld=withheld.counts)
    ctx.beat(done=0, total=len(todo))
    if todo:
        print(f"loading {cfg.base_model or EMBEDDED} to generate from {len(todo)} sources", flush=True)
        model, tokenizer = drafting_model(cfg.system, cfg.base_model)
        for start in range(0, len(todo), cfg.batch_size):
            if ctx.stop.is_set():
                break
            batch = todo[start:start + cfg.batch_size]
            asked = generate_outputs(model, tokenizer, [_ask(cfg, cfg.sources[i]) for i in batch], cfg.decoding,
                                     batch_size=cfg.batch_size, should_stop=ctx.stop.is_set)
            items: list[tuple[int, str, str]] = []
            for i, out in zip(batch, asked):
                lines = parse_lines((out or {}).get("text", ""), cfg.per_source)
                counts["unparseable"] += out is not None and not lines
                items.extend((i, line, "") for line in lines)
            if cfg.mode == "documents" and items and not ctx.stop.is_set():
                convs = [[{"role": "system", "content": ANSWER_PROMPT.format(
                    document=cfg.sources[i]["document"], text=cfg.sources[i]["text"])},
                          {"role": "user", "content": q}] for i, q, _ in items]
                answers = generate_outputs(model, tokenizer, convs, cfg.decoding, batch_size=cfg.batch_size,
                                           should_stop=ctx.stop.is_set)
                items = [(i, q, (a or {}).get("text", "").strip()) for (i, q, _), a in zip(items, answers)
                         if a is not None]
            retry_busy(partial(_store, job, cfg, label, items, held_out, counts, withheld))
            result.update(counts, withheld=withheld.counts)
            finished = min(start + cfg.batch_size, len(todo))
            ctx.beat(done=finished, total=len(todo), drafts=counts["drafts"])
            print(f"{finished}/{len(todo)} sources; {counts['drafts']} drafts, {withheld.total} withheld", flush=True)
    result.update(counts, withheld=withheld.counts, withheld_samples=withheld.samples,
                  seconds=round(time.perf_counter() - t_start, 2))
    return result


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.evaluate.docdraft_job", __doc__.splitlines()[0], generate_drafts, argv,
                       stop=STOP)


if __name__ == "__main__":
    sys.exit(main())
