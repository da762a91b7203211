"""Preference training (method "dpo"): launch checks (cheap imports) and the pieces the training worker assembles
for TRL's DPOTrainer (torch, transformers, TRL and PEFT are imported inside the functions that need them).

A DPO run is a LoRA run like any other: the same job machinery (core.train.train_job: metrics.jsonl, heartbeats,
cancel, checkpoints and resume, result.json) and the same run folder, holding one complete adapter on the base
model, so generation, the Playground and merge/export load it exactly like an SFT run's adapter.

Starting point and reference model:
- ``init_from_run = 0``: a new LoRA adapter on the base; the reference is the base (TRL disables the adapter).
- ``init_from_run = N``: the SFT run's adapter is loaded *trainable* and DPO keeps training it, so the saved
  adapter already holds SFT + DPO (a second adapter stacked on the first would not load as "base + this run's
  folder"). The reference must be the SFT model, not the base: DPO's implicit reward is measured against the policy
  it starts from. TRL 1.16 does exactly this when handed a PeftModel without a ``ref_model``: it copies the
  "default" adapter into a frozen "ref" adapter and computes the reference log-probs with it (DPOTrainer.__init__,
  "If the model is a PEFT model with a pretrained adapter..."). That costs one extra adapter's memory, not a second
  model. Only the "default" adapter is saved into the run folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from core.errors import InvalidInput, NotFound
from core.jobs import rundir
from core.train import distributed
from core.train.config import TrainConfig
from core.train.sft import (Method, log, lora_config, n_tokens, prepare_device, progress_callback, sample,
                            trainer_args)
from storage.models import Job, JobStatus

ADAPTER_METHODS = ("lora", "qlora", "dpo")  # runs whose folder holds a LoRA adapter DPO can continue


def init_run(session, project_id: int, cfg: TrainConfig) -> Job | None:
    """The run a DPO config continues (None for a new adapter), refused with a clear reason when it cannot be:
    it must be a succeeded LoRA/QLoRA (or DPO) run of this project, on the same base model, with its adapter."""
    if not cfg.init_from_run:
        return None
    job = session.get(Job, cfg.init_from_run)
    if job is None or job.project_id != project_id or job.kind != "train":
        raise NotFound(f"Run {cfg.init_from_run} is not a training run of this project.")
    method = (job.config or {}).get("method")
    if job.status != JobStatus.succeeded.value:
        raise InvalidInput(f"Run {job.id} {job.status}; DPO continues only a succeeded run.")
    if method not in ADAPTER_METHODS:
        raise InvalidInput(f"Run {job.id} is a {method} run; DPO continues a LoRA or QLoRA run's adapter "
                           "(a full fine-tune has none).")
    if (job.config or {}).get("base_model") != cfg.base_model:
        raise InvalidInput(f"Run {job.id} was trained on {job.config.get('base_model')!r}, not on "
                           f"{cfg.base_model!r}; DPO must use the same base model as the run it continues.")
    if not job.run_dir or not (Path(job.run_dir) / rundir.ADAPTER_FILES[0]).exists():
        raise InvalidInput(f"Run {job.id} has no saved adapter in its run folder ({job.run_dir or 'none'}).")
    return job


def continuable_runs(session, user, project_id: int) -> list[Job]:
    """Runs a DPO run can continue (the Train page's picker): the project's succeeded LoRA/QLoRA/DPO runs, newest
    first; engineers and up."""
    from sqlmodel import select

    from core.accounts import require

    require(user, "train")
    jobs = session.exec(select(Job).where(Job.project_id == project_id, Job.kind == "train",
                                          Job.status == JobStatus.succeeded.value).order_by(Job.id.desc())).all()
    return [j for j in jobs if (j.config or {}).get("method") in ADAPTER_METHODS]


def init_adapter_method(run_dir: str) -> str:
    """"qlora" when the continued run trained on a 4-bit base (its config.json says so), else "lora"."""
    try:
        method = json.loads((Path(run_dir) / rundir.CONFIG).read_text(encoding="utf-8")).get("method")
    except (OSError, ValueError):
        method = None
    return "qlora" if method == "qlora" else "lora"


def memory_method(cfg: TrainConfig, init_method: str = "lora") -> tuple[str, int]:
    """(method, batch) for core.train.hardware.estimate_peak_memory: DPO trains a LoRA adapter and every step runs the
    chosen and the rejected answer of each pair in one batch, so twice the pairs."""
    return init_method, 2 * cfg.per_device_batch_size


def setup(ctx, records: list[dict], project_max_length: int, load_base, model=None, tokenizer=None) -> None:
    """Fill ``ctx`` (core.train.train_job.Context) for a DPO run: hardware and precision as SFT chooses them, the
    pairs as a dataset, max length, model (new LoRA, or the continued run's adapter as trainable) and DPOConfig.
    ``load_base(cfg, precision, device)`` is the worker's base loader; ``model``/``tokenizer`` replace loading
    (the throughput bench passes them)."""
    from datasets import Dataset

    from core.basemodel import load_tokenizer
    from core.train.hardware import estimate_peak_memory
    from core.train.config import auto_max_length

    cfg = ctx.cfg
    prepare_device(ctx)
    ctx.tokenizer = tokenizer or load_tokenizer(cfg.base_model)
    if not records:
        raise InvalidInput("The preference version has no pairs.")
    ctx.dataset.update({"preference_version_id": cfg.preference_version_id, "n_pairs_available": len(records)})
    records = sample(records, cfg.max_train_examples, cfg.seed)
    lengths = [max(n_tokens(ctx.tokenizer, r["prompt"] + r["chosen"]),
                   n_tokens(ctx.tokenizer, r["prompt"] + r["rejected"])) for r in records]
    ctx.max_length = cfg.max_length or auto_max_length(lengths, project_max_length)
    n_truncated = sum(n > ctx.max_length for n in lengths)
    ctx.dataset.update({"n_train": len(records), "n_validation": 0, "max_length": ctx.max_length,
                        "n_truncated": n_truncated, "longest": max(lengths)})
    log(f"data: {len(records)} preference pairs; max_length {ctx.max_length} ({n_truncated} truncated)")
    ctx.train_ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records])
    ctx.eval_ds = None  # a preference version has no validation split; the reward accuracy is the live signal

    init_dir = _init_dir(cfg)
    method = init_adapter_method(init_dir) if init_dir else "lora"
    est_method, est_batch = memory_method(cfg, method)
    ctx.estimate = estimate_peak_memory(model.config if model is not None else cfg.base_model, est_method,
                                        est_batch, ctx.max_length, cfg.gradient_checkpointing, ctx.precision,
                                        lora_r=cfg.lora_r, device=ctx.hw.kind,
                                        target_modules=cfg.target_modules_value())
    if model is None:
        model = load_base(TrainConfig.from_dict({**cfg.to_dict(), "method": method, "preference_version_id": 0,
                                                 "init_from_run": 0}), ctx.precision, ctx.hw.kind)
    if init_dir:
        from peft import PeftModel

        log(f"continuing run {cfg.init_from_run}'s adapter ({init_dir}); the reference model is that adapter, "
            "frozen")
        model = PeftModel.from_pretrained(model, init_dir, is_trainable=True)
        ctx.peft_config = None
    else:
        ctx.peft_config = lora_config(cfg)
    ctx.model = model
    ctx.sft_args = dpo_config(ctx)


def _init_dir(cfg: TrainConfig) -> str:
    """The continued run's folder (from the database), or "" for a new adapter."""
    if not cfg.init_from_run:
        return ""
    return distributed.from_main(lambda: _run_folder(cfg.init_from_run))  # only rank 0 reads the database


def _run_folder(job_id: int) -> str:
    from storage.db import session_scope

    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or not job.run_dir or not (Path(job.run_dir) / rundir.ADAPTER_FILES[0]).exists():
            raise InvalidInput(f"Run {job_id}'s adapter is gone, so there is nothing to continue.")
        return job.run_dir


def dpo_config(ctx):
    """TRL's DPOConfig from the run's TrainConfig, with the same precision, schedule, logging and checkpoint
    choices as core.train.sft.sft_config."""
    from trl import DPOConfig

    cfg = ctx.cfg
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(ctx.run_dir / rundir.TB_DIR)
    return DPOConfig(
        **trainer_args(ctx),
        beta=cfg.dpo_beta,
        loss_type=[cfg.dpo_loss_type],
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        eval_strategy="no",
        save_strategy="steps" if cfg.save_steps else "epoch",
    )


def build_trainer(ctx):
    """TRL's DPOTrainer for ``ctx``, with the studio's progress callback (the object the bench measures)."""
    from trl import DPOTrainer

    return DPOTrainer(model=ctx.model, ref_model=None, args=ctx.sft_args, train_dataset=ctx.train_ds,
                      processing_class=ctx.tokenizer, peft_config=ctx.peft_config,
                      callbacks=[progress_callback(ctx)])


def save_adapter(ctx, trainer) -> None:
    """The trained "default" adapter (never TRL's frozen "ref" copy) with the tokenizer into the run folder."""
    model = trainer.model
    kwargs = {"selected_adapters": ["default"]} if "ref" in getattr(model, "peft_config", {}) else {}
    model.save_pretrained(ctx.run_dir, safe_serialization=True, **kwargs)
    ctx.tokenizer.save_pretrained(ctx.run_dir)
    readme = ctx.run_dir / "README.md"
    if readme.exists():
        readme.unlink()


def reward_summary(history: list[dict]) -> dict:
    """Last reward margin and accuracy of the training log (result.json's metrics)."""
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    accuracies = [h["rewards/accuracies"] for h in history if "rewards/accuracies" in h]
    return {"reward_margin_first": margins[0] if margins else None,
            "reward_margin_last": margins[-1] if margins else None,
            "reward_accuracy_last": accuracies[-1] if accuracies else None}


def preference_data(cfg: TrainConfig) -> list[dict]:
    """The preference version's pairs less ``cfg.exclude_pair_ids``, refused when none is left."""
    from core.curate.preference_versions import preference_records
    from storage.db import session_scope

    with session_scope() as session:
        records = preference_records(session, cfg.preference_version_id, cfg.exclude_pair_ids)
    if cfg.exclude_pair_ids:
        log(f"data: {len(cfg.exclude_pair_ids)} preference pair(s) excluded by the run's settings (exclude_pair_ids)")
    if not records:
        raise InvalidInput("Every pair of the preference version is excluded (exclude_pair_ids); nothing is left "
                           "to train on.")
    return records


def prepare(ctx, project_max_length: int, load_base) -> None:
    """The DPO method's data and setup (core.train.sft.Method.prepare)."""
    # Only rank 0 of a many-process run reads the database; every rank gets the pairs.
    setup(ctx, distributed.from_main(lambda: preference_data(ctx.cfg)), project_max_length, load_base)


METHOD = Method(prepare=prepare, build_trainer=build_trainer, save=save_adapter, summary=reward_summary)

