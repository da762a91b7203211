"""The generation job: ``python -m core.evaluate.generate --run-dir DIR``. Never imports streamlit.

setup -> for each base model: load it once -> attach every run's adapter (PEFT multi-adapter) -> for each
system: batched generation, outputs written to the database batch by batch -> perplexity on references ->
finish. A system is ``"base"`` (adapters disabled) or ``"run:<job id>"`` (that run's adapter switched on).

Fast by design: one model load per base model rather than per run; left-padded, length-sorted batches;
each finished batch is committed, so a crashed or canceled job resumed later skips prompts already answered.
Progress is appended to ``progress.jsonl`` in the run folder and sent as heartbeats through core.jobs.worker.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Sequence

from sqlmodel import select

from core.basemodel import EMBEDDED, load_model, load_tokenizer
from core.curate.datasets import version_records
from core.errors import InvalidInput
from core.evaluate.evalsets import eval_prompts, job_chain
from core.evaluate.generate_config import Decoding, GenerateConfig
from core.evaluate.stats import perplexity
from core.evaluate.systems import BASE, parse_system
from core.jobs import rundir
from core.jobs.worker import KeepAlive, StopFlag, worker_finish, worker_main, worker_start
from storage.db import retry_busy, session_scope
from storage.models import EvalSet, Job, JobStatus, Output, utcnow

MAX_PROMPT_TOKENS = 4096


# ---------------------------------------------------------------- batched generation (shared with bench/)


def prompt_texts(tokenizer, conversations: Sequence[list[dict]]) -> list[str]:
    """Each conversation through the model's chat template, ending where the assistant's answer starts."""
    return [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
            for c in conversations]


def count_new_tokens(row, stop_ids: set[int]) -> int:
    """Generated tokens before the first end-of-sequence (or padding) token."""
    for i, tok in enumerate(row.tolist()):
        if tok in stop_ids:
            return i
    return len(row)


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids


def _generation_kwargs(model, tokenizer, decoding: Decoding) -> dict:
    import copy

    gc = copy.deepcopy(model.generation_config)
    gc.max_new_tokens = decoding.max_new_tokens
    gc.do_sample = decoding.do_sample
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = sorted(stop_token_ids(model, tokenizer))
    if decoding.do_sample:
        gc.temperature, gc.top_p, gc.top_k = decoding.temperature, decoding.top_p, None
    else:  # greedy: clear sampling knobs a model's defaults may carry, so nothing warns or differs
        gc.temperature, gc.top_p, gc.top_k = None, None, None
    return {"generation_config": gc}


def generate_outputs(model, tokenizer, conversations: Sequence[list[dict]], decoding: Decoding, *,
                     batch_size: int = 8, on_batch: Callable[[list[int], list[dict]], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> list[dict | None]:
    """Generate an answer per conversation; returns ``{"text", "n_new_tokens", "seconds"}`` in input order
    (None for any left undone because ``should_stop`` said so).

    Batches hold prompts of similar length (sorted, longest first) and are padded on the left, so every
    answer starts right after its prompt. ``on_batch(indices, results)`` is called as each batch finishes.
    ``seconds`` is the batch's wall time shared equally by its prompts.
    """
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = prompt_texts(tokenizer, conversations)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    kwargs = _generation_kwargs(model, tokenizer, decoding)
    stops = stop_token_ids(model, tokenizer) | ({tokenizer.pad_token_id} if tokenizer.pad_token_id is not None
                                                else set())
    device = next(model.parameters()).device
    results: list[dict | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        if should_stop and should_stop():
            break
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False,
                        truncation=True, max_length=MAX_PROMPT_TOKENS).to(device)
        if decoding.do_sample:
            torch.manual_seed(decoding.seed + start)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        seconds = time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1]:].cpu()
        batch = []
        for row in new:
            n = count_new_tokens(row, stops)
            batch.append({"text": tokenizer.decode(row[:n], skip_special_tokens=True).strip(), "n_new_tokens": n,
                          "seconds": seconds / len(idx)})
        for i, r in zip(idx, batch):
            results[i] = r
        if on_batch:
            on_batch(idx, batch)
    return results


def reference_nll(model, tokenizer, conversations: Sequence[list[dict]], references: Sequence[str], *,
                  batch_size: int = 8) -> tuple[float, int]:
    """Summed negative log-likelihood of each reference answer given its prompt, and the number of answer
    tokens (teacher forcing; the prompt's tokens are not scored)."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    seqs = []
    for conv, ref in zip(conversations, references):
        prompt = tokenizer.apply_chat_template(list(conv), add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(list(conv) + [{"role": "assistant", "content": ref}], tokenize=False)
        answer = full[len(prompt):] if full.startswith(prompt) else ref
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][-MAX_PROMPT_TOKENS:]
        a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:MAX_PROMPT_TOKENS]
        if a_ids:
            seqs.append((p_ids, a_ids))
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(p) + len(a) for p, a in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, (p, a) in enumerate(chunk):  # right padding: positions start at 0 for every row
            seq = p + a
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
            labels[r, len(p):len(seq)] = torch.tensor(a)
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1).to(device),
                               ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((labels[:, 1:] != -100).sum())
    return total, count


# ---------------------------------------------------------------- the job


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


def run_job(job_id: int) -> dict:
    """Generate every missing output of a generation job; returns the job's result."""
    job = worker_start(job_id)
    run_dir = Path(job.run_dir)
    t_start = time.perf_counter()
    result: dict = {}
    keep_alive = KeepAlive(job_id).start()
    try:
        cfg = GenerateConfig.from_dict(job.config)
        with session_scope() as s:
            prompts = eval_prompts(s, cfg.eval_set_id)
            validation = _validation_records(s, cfg.eval_set_id) if cfg.perplexity else []
            chain = job_chain(s, s.get(Job, job_id))
            done = set(s.exec(select(Output.prompt_id, Output.system).where(Output.job_id.in_(chain))).all())
        if not prompts:
            raise InvalidInput(f"Eval set {cfg.eval_set_id} has no prompts.")
        default_base = cfg.base_model or next((b for b in cfg.run_bases.values() if b), None) or EMBEDDED
        groups: dict[str, list[str]] = {}
        for system in cfg.systems:
            base = default_base if system == BASE else (cfg.run_bases.get(system) or default_base)
            groups.setdefault(base, []).append(system)
        total = len(prompts) * len(cfg.systems)
        counters = {"done": sum(1 for p in prompts for sys_ in cfg.systems if (p.id, sys_) in done),
                    "new_tokens": 0, "gen_seconds": 0.0}
        result = {"systems": cfg.systems, "decoding": cfg.decoding.stored(), "total": total,
                  "skipped_existing": counters["done"], "perplexity": {}, "validation_perplexity": {},
                  "tokens_per_s": {}}
        keep_alive.beat(done=counters["done"], total=total)
        _append_progress(run_dir, {"stage": "starting", "done": counters["done"], "total": total, "time": time.time()})
        for base, systems in groups.items():
            if STOP.is_set():
                break
            _run_group(job_id, run_dir, cfg, base, systems, prompts, done, counters, total, result, validation,
                       keep_alive)
        result.update(done=counters["done"], new_tokens=counters["new_tokens"],
                      seconds=round(time.perf_counter() - t_start, 2))
        status = JobStatus.canceled.value if STOP.is_set() else JobStatus.succeeded.value
        worker_finish(job_id, status, error="Canceled; outputs written so far are kept." if STOP.is_set() else "",
                      result=result)
        return result
    except Exception as err:  # the job's truth goes to the database, the traceback to the log
        traceback.print_exc()
        message = str(err) if isinstance(err, InvalidInput) else f"{type(err).__name__}: {err}"
        worker_finish(job_id, JobStatus.failed.value, error=message, result=result or None)
        raise
    finally:
        keep_alive.stop()


def _run_group(job_id: int, run_dir: Path, cfg: GenerateConfig, base: str, systems: list[str], prompts: list,
               done: set, counters: dict, total: int, result: dict, validation: list[dict],
               keep_alive: KeepAlive) -> None:
    """All systems on one base model: load it once, attach each run's adapter, switch between them. Outputs are
    written batch by batch (retried while another writer holds the database); heartbeats go through
    ``keep_alive`` so generation never waits on them."""
    print(f"loading base model {base} for {', '.join(systems)}", flush=True)
    _append_progress(run_dir, {"stage": "loading the model", "done": counters["done"], "total": total,
                               "time": time.time()})
    model, tokenizer = _load(base)
    peft_model = None
    plain = {BASE}  # systems that are the loaded model itself: the base, or a full fine-tuned run's own model
    for system in systems:
        if system == BASE:
            continue
        _, run_id = parse_system(system)
        with session_scope() as s:
            adapter_dir = s.get(Job, run_id).run_dir
        if not (Path(adapter_dir) / rundir.ADAPTER_FILES[0]).exists():
            plain.add(system)
            continue
        if peft_model is None:
            from peft import PeftModel

            peft_model = PeftModel.from_pretrained(model, adapter_dir, adapter_name=_adapter_name(system))
        else:
            peft_model.load_adapter(adapter_dir, adapter_name=_adapter_name(system))
        print(f"attached adapter of {system} from {adapter_dir}", flush=True)
    if peft_model is not None:
        peft_model.eval()
    decoding = cfg.decoding
    stored = decoding.stored()
    for system in systems:
        if STOP.is_set():
            return
        todo = [p for p in prompts if (p.id, system) not in done]
        if system in plain:
            active = peft_model or model
            context = peft_model.disable_adapter() if peft_model is not None else nullcontext()
        else:
            peft_model.set_adapter(_adapter_name(system))
            active, context = peft_model, nullcontext()
        sys_tokens, sys_seconds = 0, 0.0

        def write(indices: list[int], batch: list[dict], system=system, todo=todo) -> None:
            nonlocal sys_tokens, sys_seconds

            def save() -> None:
                with session_scope() as s:
                    for i, r in zip(indices, batch):
                        s.add(Output(prompt_id=todo[i].id, system=system, job_id=job_id, text=r["text"],
                                     decoding=stored, n_new_tokens=r["n_new_tokens"], seconds=r["seconds"],
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
            keep_alive.beat(done=counters["done"], total=total, system=system)

        with context:
            if todo:
                print(f"{system}: generating {len(todo)} outputs", flush=True)
                generate_outputs(active, tokenizer, [p.messages for p in todo], decoding,
                                 batch_size=cfg.batch_size, on_batch=write, should_stop=lambda: STOP.is_set())
            if sys_seconds:
                result["tokens_per_s"][system] = round(sys_tokens / sys_seconds, 1)
            with_refs = [p for p in prompts if p.reference.strip()]
            if cfg.perplexity and with_refs and not STOP.is_set():
                _append_progress(run_dir, {"stage": "perplexity on the references", "system": system,
                                           "done": counters["done"], "total": total, "time": time.time()})
                nll, n = reference_nll(active, tokenizer, [p.messages for p in with_refs],
                                       [p.reference for p in with_refs], batch_size=cfg.batch_size)
                result["perplexity"][system] = perplexity(nll, n)
                keep_alive.beat(done=counters["done"], total=total, system=system)
            if validation and not STOP.is_set():
                nll, n = reference_nll(active, tokenizer, [r["prompt"] for r in validation],
                                       [r["completion"][-1]["content"] for r in validation], batch_size=cfg.batch_size)
                result["validation_perplexity"][system] = perplexity(nll, n)
    del model, peft_model


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.evaluate.generate", __doc__.splitlines()[0], STOP,
                       lambda job_id: run_job(job_id) is not None, argv)


if __name__ == "__main__":
    sys.exit(main())
