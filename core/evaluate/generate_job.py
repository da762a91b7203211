"""The generation job: ``python -m core.evaluate.generate_job --run-dir DIR``. Never imports streamlit.

setup -> for each base model: load it once -> attach every run's adapter (PEFT multi-adapter) -> for each
system: batched generation (core.evaluate.generate.generate_outputs), outputs written to the database batch by
batch -> perplexity on references -> the result. A system is ``"base"`` (adapters disabled) or ``"run:<job id>"``
(that run's adapter switched on), either one plain or as a ``+prompt`` / ``+rag`` variant (the same model and
adapter, sent the messages core.evaluate.augment builds; each output keeps its prompt tokens and, for +rag, the
passages it was given). Start, heartbeats, cancel and the recorded end are the job lifecycle's
(core.jobs.worker.run_worker).

Fast by design: one model load per base model rather than per run; left-padded, length-sorted batches;
each finished batch is committed, so a crashed or canceled job resumed later skips prompts already answered.
Progress is appended to ``progress.jsonl`` in the run folder and sent as heartbeats.
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from sqlmodel import select

from core.basemodel import EMBEDDED, load_model, load_tokenizer
from core.curate.datasets import version_records
from core.errors import InvalidInput
from core.evaluate.augment import Augmented, augment
from core.evaluate.evalsets import eval_prompts
from core.evaluate.generate import generate_outputs, job_chain, reference_nll
from core.evaluate.generate_config import GenerateConfig
from core.evaluate.stats import perplexity
from core.evaluate.systems import BASE, parse_system
from core.jobs import rundir
from core.jobs.worker import JobContext, StopFlag, out_of_memory, run_worker, worker_main
from core.systems import SystemKey
from storage.db import retry_busy, session_scope
from storage.models import EvalSet, Job, Output, Project, utcnow

STOP = StopFlag()  # set by SIGTERM (core.jobs.queue.cancel): stop after the current batch, keep what was written


def _adapter_name(system: str) -> str:
    return system.replace(":", "_")


def _append_progress(run_dir: Path, row: dict) -> None:
    with open(run_dir / rundir.PROGRESS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def _load(base: str | None):
    import torch

    use_cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer(base)
    model = load_model(base, dtype=torch.bfloat16 if use_cuda else torch.float32)
    if use_cuda:
        model = model.to("cuda")
    model.eval()
    return model, tokenizer


MAX_VALIDATION = 200


def _validation_records(session, eval_set_id: int) -> list[dict]:
    """The validation split of the dataset version an eval set was frozen from (capped), for validation
    perplexity; [] for uploaded eval sets."""
    es = session.get(EvalSet, eval_set_id)
    if es is None or not es.dataset_version_id:
        return []
    return version_records(session, es.dataset_version_id, "validation")[:MAX_VALIDATION]


def run_job(job_id: int) -> dict | None:
    """Run generation job ``job_id`` through the job lifecycle; returns the result it recorded."""
    return run_worker(job_id, generate, stop=STOP)[1]


def generate(ctx: JobContext) -> dict:
    """Generate every missing output of a generation job; returns the job's result."""
    t_start = time.perf_counter()
    cfg = GenerateConfig.from_dict(ctx.config)
    ctx.canceled_message = "Canceled; outputs written so far are kept."
    ctx.oom_advice = lambda: out_of_memory([f"a smaller batch size (now {cfg.batch_size})",
                                            "fewer systems in one job", "a shorter max_new_tokens"])
    with session_scope() as s:
        prompts = eval_prompts(s, cfg.eval_set_id)
        validation = _validation_records(s, cfg.eval_set_id) if cfg.perplexity else []
        chain = job_chain(s, s.get(Job, ctx.job_id))
        done = set(s.exec(select(Output.prompt_id, Output.system).where(Output.job_id.in_(chain))).all())
        prepared = _prepare(s, cfg, prompts)
    if not prompts:
        raise InvalidInput(f"Eval set {cfg.eval_set_id} has no prompts.")
    default_base = cfg.base_model or next((b for b in cfg.run_bases.values() if b), None) or EMBEDDED
    groups: dict[str, list[str]] = {}
    for system in cfg.systems:
        plain = str(SystemKey.parse(system).plain)
        base = default_base if plain == BASE else (cfg.run_bases.get(system) or cfg.run_bases.get(plain)
                                                   or default_base)
        groups.setdefault(base, []).append(system)
    total = len(prompts) * len(cfg.systems)
    counters = {"done": sum(1 for p in prompts for sys_ in cfg.systems if (p.id, sys_) in done),
                "new_tokens": 0, "gen_seconds": 0.0}
    result = ctx.result  # what a failure keeps as the job's result
    result.update({"systems": cfg.systems, "decoding": cfg.decoding.stored(), "total": total,
                   "skipped_existing": counters["done"], "perplexity": {}, "validation_perplexity": {},
                   "tokens_per_s": {}})
    ctx.beat(done=counters["done"], total=total)
    _append_progress(ctx.run_dir, {"stage": "starting", "done": counters["done"], "total": total,
                                   "time": time.time()})
    for base, systems in groups.items():
        if ctx.stop.is_set():
            break
        _run_group(ctx, cfg, base, systems, prompts, prepared, done, counters, total, validation)
    result.update(done=counters["done"], new_tokens=counters["new_tokens"],
                  seconds=round(time.perf_counter() - t_start, 2))
    return result


def _prepare(session, cfg: GenerateConfig, prompts: list) -> dict[str, dict[int, Augmented]]:
    """system -> prompt id -> the messages it sends and the passages it was given (core.evaluate.augment): the
    prompt's own messages for a plain system, the team prompt or the retrieved chunks for a +prompt or +rag one.
    Built once, before any model loads, so a variant that cannot answer fails the job at once."""
    project = session.get(Project, session.get(EvalSet, cfg.eval_set_id).project_id)
    return {system: {p.id: augment(session, project, system, p.messages) for p in prompts}
            for system in cfg.systems}


def _run_group(ctx: JobContext, cfg: GenerateConfig, base: str, systems: list[str], prompts: list,
               prepared: dict[str, dict[int, Augmented]], done: set, counters: dict, total: int,
               validation: list[dict]) -> None:
    """All systems on one base model: load it once, attach each run's adapter, switch between them (a +prompt or
    +rag variant uses its plain system's model and adapter, with its own messages). Outputs are
    written batch by batch (retried while another writer holds the database); heartbeats go through
    ``ctx.beat`` so generation never waits on them."""
    job_id, run_dir, result = ctx.job_id, ctx.run_dir, ctx.result
    print(f"loading base model {base} for {', '.join(systems)}", flush=True)
    _append_progress(run_dir, {"stage": "loading the model", "done": counters["done"], "total": total,
                               "time": time.time()})
    model, tokenizer = _load(base)
    peft_model = None
    plain_of = {system: str(SystemKey.parse(system).plain) for system in systems}
    attached: set[str] = set()  # runs with an adapter; the others are the loaded model itself (base, full runs)
    for system in dict.fromkeys(plain_of.values()):
        if system == BASE:
            continue
        _, run_id = parse_system(system)
        with session_scope() as s:
            adapter_dir = s.get(Job, run_id).run_dir
        if not (Path(adapter_dir) / rundir.ADAPTER_FILES[0]).exists():
            continue
        if peft_model is None:
            from peft import PeftModel

            peft_model = PeftModel.from_pretrained(model, adapter_dir, adapter_name=_adapter_name(system))
        else:
            peft_model.load_adapter(adapter_dir, adapter_name=_adapter_name(system))
        attached.add(system)
        print(f"attached adapter of {system} from {adapter_dir}", flush=True)
    if peft_model is not None:
        peft_model.eval()
    decoding = cfg.decoding
    stored = decoding.stored()
    for system in systems:
        if ctx.stop.is_set():
            return
        todo = [p for p in prompts if (p.id, system) not in done]
        sends = prepared[system]
        if plain_of[system] not in attached:
            active = peft_model or model
            context = peft_model.disable_adapter() if peft_model is not None else nullcontext()
        else:
            peft_model.set_adapter(_adapter_name(plain_of[system]))
            active, context = peft_model, nullcontext()
        sys_tokens, sys_seconds = 0, 0.0

        def write(indices: list[int], batch: list[dict], system=system, todo=todo, sends=sends) -> None:
            nonlocal sys_tokens, sys_seconds

            def save() -> None:
                with session_scope() as s:
                    for i, r in zip(indices, batch):
                        s.add(Output(prompt_id=todo[i].id, system=system, job_id=job_id, text=r["text"],
                                     decoding=stored, n_new_tokens=r["n_new_tokens"], seconds=r["seconds"],
                                     prompt_tokens=r["prompt_tokens"], context=sends[todo[i].id].context,
                                     created_at=utcnow()))

            retry_busy(save)
            tokens = sum(r["n_new_tokens"] for r in batch)
            seconds = sum(r["seconds"] for r in batch)
            sys_tokens += tokens
            sys_seconds += seconds
            counters["done"] += len(batch)
            counters["new_tokens"] += tokens
            row = {"stage": "generating", "system": system, "done": counters["done"], "total": total,
                   "batch": len(batch),
                   "new_tokens": tokens, "seconds": round(seconds, 3),
                   "tokens_per_s": round(tokens / seconds, 1) if seconds else None, "time": time.time()}
            _append_progress(run_dir, row)
            ctx.beat(done=counters["done"], total=total, system=system)

        with context:
            if todo:
                print(f"{system}: generating {len(todo)} outputs", flush=True)
                generate_outputs(active, tokenizer, [sends[p.id].messages for p in todo], decoding,
                                 batch_size=cfg.batch_size, on_batch=write, should_stop=ctx.stop.is_set)
            if sys_seconds:
                result["tokens_per_s"][system] = round(sys_tokens / sys_seconds, 1)
            with_refs = [p for p in prompts if p.reference.strip()]
            if cfg.perplexity and with_refs and not ctx.stop.is_set():
                _append_progress(run_dir, {"stage": "perplexity on the references", "system": system,
                                           "done": counters["done"], "total": total, "time": time.time()})
                nll, n = reference_nll(active, tokenizer, [sends[p.id].messages for p in with_refs],
                                       [p.reference for p in with_refs], batch_size=cfg.batch_size)
                result["perplexity"][system] = perplexity(nll, n)
                ctx.beat(done=counters["done"], total=total, system=system)
            if validation and not ctx.stop.is_set():
                nll, n = reference_nll(active, tokenizer, [r["prompt"] for r in validation],
                                       [r["completion"][-1]["content"] for r in validation], batch_size=cfg.batch_size)
                result["validation_perplexity"][system] = perplexity(nll, n)
    del model, peft_model


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.evaluate.generate_job", __doc__.splitlines()[0], generate, argv, stop=STOP)


if __name__ == "__main__":
    sys.exit(main())
