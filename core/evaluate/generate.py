"""Generation: queueing a generation job (one output per prompt of an eval set and per system, written by the
process core.evaluate.generate_job), where it stands, and the batched generation every job that generates
uses (the generation and draft-answers jobs, the export's parity check, bench/). Never imports streamlit; torch
and transformers are imported inside the functions that need them.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

from sqlalchemy import func
from sqlmodel import Session, select

from core.accounts import require
from core.basemodel import web_model_name
from core.errors import InvalidInput, NotFound
from core.evaluate.augment import check_variant
from core.evaluate.evalsets import comparison_decoding, get_eval_set
from core.evaluate.generate_config import Decoding, GenerateConfig
from core.evaluate.systems import BASE, parse_system, parse_systems, run_base_model
from core.jobs import rundir
from core.jobs.queue import resume_kind, submit
from core.jobs.rundir import PROGRESS, read_jsonl
from core.train.runs import KIND as TRAIN_KIND
from storage.models import EvalPrompt, Job, JobStatus, Output, Project, User

KIND = "generate"
WORKER = "core.evaluate.generate_job"  # python -m core.evaluate.generate_job --run-dir DIR
MAX_PROMPT_TOKENS = 4096


# ---------------------------------------------------------------- the generation job: queue, resume, progress


def launch_generation(session: Session, user: User, eval_set_id: int, systems: Iterable[str] | str, *,
                      decoding: dict | None = None, base_model: str | None = None, batch_size: int = 8,
                      perplexity: bool = True, name: str = "", trusted_paths: bool = False) -> Job:
    """Queue a generation job: one output per prompt for each system, written to the Output table. Without
    ``decoding``, the decoding of the outputs already in the eval set (``comparison_decoding``), so the new
    answers compare like with like. A ``base_model`` given keeps to the web's rule (core.basemodel.web_model_name:
    inside the model folders) unless ``trusted_paths`` (the command line's --base-model)."""
    require(user, "evaluate")
    if base_model is not None and not trusted_paths:
        base_model = web_model_name(base_model)
    es = get_eval_set(session, eval_set_id)
    keys = parse_systems(systems)
    project = session.get(Project, es.project_id)
    bases: dict[str, str | None] = {}
    for key in keys:
        check_variant(session, project, key)  # +prompt needs a team prompt, +rag documents
        kind, job_id = parse_system(key)
        if kind == BASE:
            continue
        run = session.get(Job, job_id)
        if run is None or run.project_id != es.project_id or run.kind != TRAIN_KIND:
            raise NotFound(f"No training run {job_id} in this project.")
        if run.status != JobStatus.succeeded.value:
            raise InvalidInput(f"Run {job_id} has not finished successfully ({run.status}); only finished runs "
                               "can be evaluated.")
        if not rundir.has_model(run.run_dir):  # a LoRA/QLoRA adapter, or a full fine-tune's model/ folder
            raise InvalidInput(f"Run {job_id} has no saved adapter or model in its run folder ({run.run_dir}).")
        bases[key] = run_base_model(run)
    if base_model is None:
        found = [b for b in bases.values() if b]
        base_model = found[0] if found else None
    if decoding is None:
        decoding = comparison_decoding(session, es.id)
    dec = Decoding(**(decoding or {}))
    cfg = GenerateConfig(eval_set_id=es.id, systems=keys, run_bases=bases, base_model=base_model,
                         decoding=dec, batch_size=int(batch_size), perplexity=bool(perplexity))
    label = name.strip() or f"generate {es.name}: {', '.join(keys)}"
    return submit(session, user, project_id=es.project_id, kind=KIND, action="evaluate", name=label[:200],
                  config=asdict(cfg), module=WORKER, eval_set_id=es.id)


def resume_generation(session: Session, user: User, job_id: int) -> Job:
    """Continue a failed or canceled generation job: outputs it already wrote are kept and skipped."""
    return resume_kind(session, user, job_id, KIND, "a generation job")


def generation_jobs(session: Session, eval_set_id: int) -> list[Job]:
    return list(session.exec(select(Job).where(Job.kind == KIND, Job.eval_set_id == eval_set_id)
                             .order_by(Job.id.desc())))


def job_chain(session: Session, job: Job) -> list[int]:
    """This job and the jobs it resumes: their outputs count as done."""
    ids, current = [], job
    while current is not None and current.id not in ids:
        ids.append(current.id)
        current = session.get(Job, current.resumed_from) if current.resumed_from else None
    return ids


def generation_progress(session: Session, job: Job) -> dict:
    """Where a generation job stands, true from its first second: ``done`` / ``total`` outputs counted in the
    database (outputs of earlier attempts it resumes count as done), the ``stage`` and ``system`` its worker
    last reported (progress.jsonl), its speed and ``eta_s`` (seconds per output so far times those left)."""
    cfg = job.config or {}
    systems = list(cfg.get("systems") or [])
    n_prompts = session.exec(select(func.count()).select_from(EvalPrompt)
                             .where(EvalPrompt.eval_set_id == cfg.get("eval_set_id"))).one()
    done = session.exec(select(func.count()).select_from(Output).join(EvalPrompt, Output.prompt_id == EvalPrompt.id)
                        .where(EvalPrompt.eval_set_id == cfg.get("eval_set_id"), Output.system.in_(systems),
                               Output.job_id.in_(job_chain(session, job)))).one()
    total = n_prompts * len(systems)
    rows = read_jsonl(Path(job.run_dir) / PROGRESS) if job.run_dir else []
    batches = [r for r in rows if r.get("batch")]
    last = rows[-1] if rows else {}
    generated, seconds = sum(r["batch"] for r in batches), sum(r.get("seconds") or 0 for r in batches)
    eta = seconds / generated * (total - done) if generated and seconds and total > done else None
    return {"done": int(done), "total": int(total), "stage": last.get("stage") or ("generating" if batches else
                                                                                   "starting"),
            "system": last.get("system"), "tokens_per_s": last.get("tokens_per_s"),
            "eta_s": round(eta, 1) if eta is not None else None}


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
    """Generate an answer per conversation; returns ``{"text", "n_new_tokens", "seconds", "prompt_tokens"}`` in
    input order (None for any left undone because ``should_stop`` said so).

    Batches hold prompts of similar length (sorted, longest first) and are padded on the left, so every
    answer starts right after its prompt. ``on_batch(indices, results)`` is called as each batch finishes.
    ``seconds`` is the batch's wall time shared equally by its prompts; ``prompt_tokens`` the tokens of the prompt
    as sent (chat template applied, after truncation).
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
        for i, row in zip(idx, new):
            n = count_new_tokens(row, stops)
            batch.append({"text": tokenizer.decode(row[:n], skip_special_tokens=True).strip(), "n_new_tokens": n,
                          "seconds": seconds / len(idx), "prompt_tokens": min(lengths[i], MAX_PROMPT_TOKENS)})
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
