"""The training job: ``python -m core.train.train_job --run-dir DIR``. Never imports streamlit.

The job reads only ``DIR/config.json`` (a TrainConfig) and the database (the dataset or preference version's
records), and runs a pipeline of small steps: prepare -> fit -> save -> cleanup, through the hooks of its
method (core.train.sft.Method: SFT here, DPO in core.train.dpo). SFT is TRL's SFTTrainer with a PEFT
LoraConfig (LoRA / QLoRA) or all weights (full); prompt/completion records make TRL compute the loss on the
assistant's answer only. Start, heartbeats, cancel and the recorded end are the job lifecycle's
(core.jobs.worker.run_worker); cleanup writes result.json however the run ended.

The run folder ends up holding exactly: config.json, result.json, train.log, metrics.jsonl, tb/ (TensorBoard
events), checkpoints/ (the last two complete ones, for resume), and the adapter (adapter_config.json,
adapter_model.safetensors) with the tokenizer files and chat template -- or model/ for full fine-tuning.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.basemodel import load_model, load_tokenizer
from core.curate.datasets import version_records
from core.curate.leakage import eval_derived_excluded
from core.errors import InvalidInput
from core.train.hardware import estimate_peak_memory, measured_peak_mb
from core.jobs import rundir
from core.jobs.worker import JobContext, KeepAlive, StopFlag, out_of_memory, run_worker, worker_main
from core.train import distributed, dpo
from core.train.config import TrainConfig, auto_max_length
from core.train.sft import (Method, answer_cut_away, log, lora_config, n_tokens, prepare_device, progress_callback,
                            sample, sft_config, studio_trainer_class, use_padding_free)
from storage.db import session_scope
from storage.models import DatasetVersion, Job, Project

STOP = StopFlag()  # set by SIGTERM: stop at the next step, save, mark canceled


@dataclass
class Context:
    """Everything the steps share inside one worker process."""

    run_dir: Path
    cfg: TrainConfig
    job_id: int | None = None
    model: Any = None
    tokenizer: Any = None
    train_ds: Any = None
    eval_ds: Any = None
    sft_args: Any = None
    peft_config: Any = None
    hw: Any = None
    precision: str = "fp32"
    max_length: int = 512
    padding_free: bool = False
    dataset: dict = field(default_factory=dict)
    estimate: dict = field(default_factory=dict)
    start_step: int = 0
    stop: StopFlag = field(default_factory=StopFlag)
    keep_alive: KeepAlive | None = None  # writes the step heartbeats (core.jobs.worker.KeepAlive.beat)


def version_data(session, version_id: int) -> dict[str, list[dict]]:
    """The version's TRL prompt/completion records per split, via core.curate.datasets.version_records."""
    return {split: list(version_records(session, version_id, split)) for split in ("train", "validation")}


def training_records(session, cfg: TrainConfig) -> tuple[dict[str, list[dict]], dict]:
    """The version's records less the examples this run leaves out: ``cfg.exclude_example_ids`` (e.g. leaks of eval
    prompts) and, unless ``cfg.include_eval_derived``, examples that came from an eval set still used for
    comparison (core.curate.leakage). Returns the records and the counts for result.json's ``dataset``."""
    records = version_data(session, cfg.dataset_version_id)
    excluded = set(cfg.exclude_example_ids)
    derived = set(eval_derived_excluded(session, cfg.dataset_version_id, cfg.include_eval_derived)) - excluded
    counts = {"n_excluded": 0, "n_eval_derived_excluded": 0}
    for split, rows in records.items():
        records[split] = [r for r in rows if r["example_id"] not in excluded | derived]
        counts["n_excluded"] += sum(r["example_id"] in excluded for r in rows)
        counts["n_eval_derived_excluded"] += sum(r["example_id"] in derived for r in rows)
    counts["include_eval_derived"] = cfg.include_eval_derived
    if not records.get("train") and (counts["n_excluded"] or counts["n_eval_derived_excluded"]):
        raise InvalidInput("Every training example of the dataset version is excluded (exclude_example_ids, or "
                           "examples that came from an eval item); nothing is left to train on.")
    if counts["n_excluded"]:
        log(f"data: {counts['n_excluded']} example(s) excluded by the run's settings (exclude_example_ids)")
    if counts["n_eval_derived_excluded"]:
        log(f"data: {counts['n_eval_derived_excluded']} example(s) that came from an eval item left out: their eval "
            "set is used for comparison (include_eval_derived trains on them)")
    return records, counts


def setup(run_dir: Path, cfg: TrainConfig, records: dict[str, list[dict]], project_max_length: int = 2048,
          job_id: int | None = None, model=None, tokenizer=None, stop: StopFlag | None = None) -> Context:
    """Hardware, precision, tokenizer, datasets, max length, model and the SFT/PEFT configs.

    ``model`` / ``tokenizer`` replace loading ``cfg.base_model`` (the throughput bench passes a random model)."""
    ctx = Context(run_dir=run_dir, cfg=cfg, job_id=job_id, stop=stop if stop is not None else StopFlag())
    setup_sft(ctx, records, project_max_length, _load_base, model, tokenizer)
    return ctx


def setup_sft(ctx: Context, records: dict[str, list[dict]], project_max_length: int, load_base, model=None,
              tokenizer=None) -> None:
    """Fill ``ctx`` for an SFT run (``setup``'s work, in the shape of core.train.dpo.setup)."""
    from datasets import Dataset

    cfg = ctx.cfg
    prepare_device(ctx)

    ctx.tokenizer = tokenizer or load_tokenizer(cfg.base_model)
    train, val = records.get("train") or [], records.get("validation") or []
    if not train:
        raise InvalidInput("The dataset version has no training examples.")
    ctx.dataset.update({"n_train_available": len(train), "n_validation_available": len(val)})
    train = sample(train, cfg.max_train_examples, cfg.seed)
    val = sample(val, cfg.max_validation_examples, cfg.seed)
    lengths = [n_tokens(ctx.tokenizer, r["prompt"] + r["completion"]) for r in train]
    ctx.max_length = cfg.max_length or auto_max_length(lengths, project_max_length)
    n_truncated = sum(n > ctx.max_length for n in lengths)
    ctx.dataset.update({"n_train": len(train), "n_validation": len(val), "max_length": ctx.max_length,
                        "n_truncated": n_truncated, "longest": max(lengths)})
    log(f"data: {len(train)} train / {len(val)} validation examples; max_length {ctx.max_length} "
         f"({n_truncated} truncated)")
    ctx.train_ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in train])
    ctx.eval_ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in val]) \
        if val else None

    ctx.estimate = estimate_peak_memory(model.config if model is not None else cfg.base_model, cfg.method,
                                        cfg.per_device_batch_size, ctx.max_length, cfg.gradient_checkpointing,
                                        ctx.precision, lora_r=cfg.lora_r, device=ctx.hw.kind,
                                        target_modules=cfg.target_modules_value())
    ctx.model = model if model is not None else load_base(cfg, ctx.precision, ctx.hw.kind)
    ctx.padding_free = use_padding_free(cfg, ctx.model)
    if not ctx.padding_free:
        _note_answerless(ctx, train, val)
    ctx.peft_config = lora_config(cfg) if cfg.method in ("lora", "qlora") else None
    ctx.sft_args = sft_config(ctx)


def _note_answerless(ctx: Context, train: list[dict], val: list[dict]) -> None:
    """Say which examples the trainer will leave out because their prompt fills max_length (nothing of the answer
    is left to learn or score). No training example left is refused; no validation example left means a run
    without validation loss (the trainer would otherwise fail on an empty validation set)."""
    n = ctx.max_length
    cut_train = answer_cut_away(ctx.tokenizer, train, n)
    if cut_train == len(train):
        raise InvalidInput(f"Every training example's prompt is {n} tokens or longer, so nothing of any answer is "
                           "left to learn: raise max_length (the longest example has "
                           f"{ctx.dataset['longest']} tokens).")
    cut_val = answer_cut_away(ctx.tokenizer, val, n) if val else 0
    ctx.dataset.update({"n_train_answer_cut": cut_train, "n_validation_answer_cut": cut_val})
    if cut_train:
        log(f"data: {cut_train} of {len(train)} training examples have a prompt of {n} tokens or more; they are "
            "left out (nothing of their answer fits)")
    if val and cut_val == len(val):
        log(f"data: every validation example has a prompt of {n} tokens or more: this run has no validation loss "
            "(raise max_length to get one)")
        ctx.eval_ds = None
        ctx.dataset["n_validation"] = 0
    elif cut_val:
        log(f"data: {cut_val} of {len(val)} validation examples have a prompt of {n} tokens or more; the "
            "validation loss leaves them out")


def _load_base(cfg: TrainConfig, precision: str, device: str = "cuda"):
    import torch

    kwargs: dict[str, Any] = {}
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    if cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        # NF4 storage with double quantisation; the matmuls run in the compute dtype: the run's precision on a
        # GPU, fp32 on a CPU (bitsandbytes >= 0.45 runs Linear4bit forward and backward there, dequantising
        # the weights at every step, which is why QLoRA trains slower than LoRA on a CPU).
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0")) if device == "cuda" else "cpu"}
        log(f"base weights in 4-bit NF4 (bitsandbytes), compute in {precision} on {device}")
    # Frozen LoRA bases may sit in half precision on a GPU; trained weights (full) stay fp32 under autocast.
    dtype = torch.float32
    if cfg.method == "lora" and precision == "bf16":
        dtype = torch.bfloat16
    elif cfg.method == "qlora":
        dtype = compute
    model = load_model(cfg.base_model, dtype=dtype, **kwargs)
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    return model


def build_trainer(ctx: Context):
    """The SFTTrainer for ``ctx`` (the same object bench/train_throughput.py measures)."""
    return studio_trainer_class()(model=ctx.model, args=ctx.sft_args, train_dataset=ctx.train_ds,
                                   eval_dataset=ctx.eval_ds, processing_class=ctx.tokenizer,
                                   peft_config=ctx.peft_config, callbacks=[progress_callback(ctx)])


def fit(ctx: Context):
    """Train (continuing from cfg.resume_from when set); returns the trainer."""
    trainer = method_of(ctx.cfg).build_trainer(ctx)
    ctx.model = trainer.model
    resume = ctx.cfg.resume_from or None
    if resume and not (Path(resume) / rundir.COMPLETE_MARKER).exists():
        raise InvalidInput(f"The checkpoint {resume} is incomplete; resume from an earlier one.")
    if resume and distributed.is_main():
        _carry_metrics(ctx.run_dir, resume)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _carry_metrics(run_dir: Path, checkpoint: str) -> None:
    """A resumed run starts its metrics.jsonl with the earlier run's lines up to the checkpoint's step, so its
    charts are continuous (the checkpoint lives in <earlier run>/checkpoints/checkpoint-N)."""
    ckpt = Path(checkpoint)
    old = ckpt.parent.parent / rundir.METRICS
    new = run_dir / rundir.METRICS
    if not old.exists() or new.exists():
        return
    step = rundir.checkpoint_step(ckpt)
    lines = [ln for ln in old.read_text(encoding="utf-8").splitlines() if _line_step(ln) <= step]
    new.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step") or 0)
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 30


def save(ctx: Context, trainer) -> None:
    """Adapter (or full model) with tokenizer and chat template into the run folder (by the main process only)."""
    if distributed.is_main():
        method_of(ctx.cfg).save(ctx, trainer)


def save_sft(ctx: Context, trainer) -> None:
    """The SFT run's adapter (or full model) with tokenizer and chat template into the run folder."""
    if ctx.cfg.method == "full":
        out = ctx.run_dir / rundir.FULL_MODEL_DIR
        trainer.model.save_pretrained(out, safe_serialization=True)
        ctx.tokenizer.save_pretrained(out)
        return
    trainer.model.save_pretrained(ctx.run_dir, safe_serialization=True)
    ctx.tokenizer.save_pretrained(ctx.run_dir)
    readme = ctx.run_dir / "README.md"  # peft's empty model-card template: not part of the run's record
    if readme.exists():
        readme.unlink()


def summarize(ctx: Context, trainer) -> dict:
    """Final metrics from the trainer's log history."""
    history = trainer.state.log_history if trainer is not None else []
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    final: dict = next((h for h in reversed(history) if "train_loss" in h), {})
    return {"train_loss": final.get("train_loss", train_losses[-1] if train_losses else None),
            "train_loss_last": train_losses[-1] if train_losses else None,
            "eval_loss_first": eval_losses[0] if eval_losses else None,
            "eval_loss_last": eval_losses[-1] if eval_losses else None,
            "global_step": trainer.state.global_step if trainer is not None else 0,
            "start_step": ctx.start_step,
            "epoch": trainer.state.epoch if trainer is not None else 0,
            "train_runtime_s": final.get("train_runtime"),
            **method_of(ctx.cfg).summary(history)}


def oom_advice(cfg: TrainConfig, max_length: int) -> str:
    """The training run's out-of-memory message: what to change in its own settings."""
    tips = [f"a smaller per_device_batch_size (now {cfg.per_device_batch_size}) with a larger grad_accum",
            f"a shorter max_length (now {max_length})"]
    if not cfg.gradient_checkpointing:
        tips.append("gradient_checkpointing on")
    if cfg.method != "qlora":
        tips.append("QLoRA (4-bit base weights)")
    return out_of_memory(tips, what="run")


def _package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def train(job: JobContext) -> dict:
    """The training job's body: prepare -> fit -> save; cleanup (result.json) runs however it ends."""
    t0 = time.time()
    # Many processes (torchrun): only rank 0 reads the database; the others get what it read (distributed).
    version, project_max = distributed.from_main(lambda: _data_info(job.job_id))
    state: dict = {"ctx": None, "trainer": None}
    job.canceled_message = "Canceled before training finished."
    job.oom_advice = lambda: oom_advice(state["ctx"].cfg if state["ctx"] else TrainConfig(),
                                        state["ctx"].max_length if state["ctx"] else 0)

    def end(status: str, error: str, _result: dict | None) -> dict | None:
        if not distributed.is_main():  # rank 0 writes result.json and the job row; this rank's end goes to the log
            distributed.rank_result(status, error)
            return None
        result = cleanup(job.run_dir, state["ctx"], state["trainer"], status, error, version, t0)
        job.memory.update(measured_peak_mb=result["memory"]["measured_peak_mb"],
                          estimated_peak_mb=result["memory"]["estimated_peak_mb"])
        return result

    job.on_end = end
    job.review_end = lambda status, error: distributed.peer_failure(job.job_id, job.run_dir, status, error)
    cfg = TrainConfig.from_dict(job.config)
    ctx = state["ctx"] = Context(run_dir=job.run_dir, cfg=cfg, job_id=job.job_id, stop=job.stop,
                                 keep_alive=job.keep_alive if job.job_id else None)
    method = method_of(cfg)
    method.prepare(ctx, project_max, _load_base)
    trainer = state["trainer"] = fit(ctx)
    method.save(ctx, trainer)
    if job.stop.is_set():
        job.canceled_message = ("Canceled; the adapter and a checkpoint were saved at step "
                                f"{trainer.state.global_step}, and Resume continues from there.")
    return {}


def prepare_sft(ctx: Context, project_max_length: int, load_base) -> None:
    """The SFT method's data (the dataset version less what the run leaves out) and setup."""
    def read() -> tuple[dict, dict]:
        with session_scope() as session:
            return training_records(session, ctx.cfg)

    records, excluded = distributed.from_main(read)  # rank 0 reads the database, every rank gets the records
    setup_sft(ctx, records, project_max_length, load_base)
    ctx.dataset.update(excluded)


SFT = Method(prepare=prepare_sft, build_trainer=build_trainer, save=save_sft, summary=lambda history: {})


def method_of(cfg: TrainConfig) -> Method:
    """The hooks of the run's method: DPO's for "dpo", SFT's for lora, qlora and full."""
    return {"dpo": dpo.METHOD}.get(cfg.method, SFT)


def _data_info(job_id: int | None) -> tuple[dict, int]:
    """The dataset version's facts and the project's max length, from the job row (none for a folder no job
    owns)."""
    if not job_id:
        return {}, 2048
    with session_scope() as session:
        job = session.get(Job, job_id)
        version = session.get(DatasetVersion, job.dataset_version_id) if job.dataset_version_id else None
        project = session.get(Project, job.project_id)
        info = {"version_id": version.id, "name": version.name, "content_hash": version.content_hash} \
            if version else {}
        return info, (project.max_length if project else 2048)


def cleanup(run_dir: Path, ctx: Context | None, trainer, status: str, error: str, version: dict,
            t0: float) -> dict:
    """Write result.json (status, error, metrics, dataset, versions, memory) and drop partial checkpoints."""
    metrics = summarize(ctx, trainer) if ctx is not None and trainer is not None else {}
    result = {
        "status": status,
        "error": error,
        "metrics": metrics,
        "dataset": {**version, **(ctx.dataset if ctx else {})},
        "resolved": ({"precision": ctx.precision, "max_length": ctx.max_length, "padding_free": ctx.padding_free,
                      "learning_rate": ctx.cfg.effective_lr, "lora_alpha": ctx.cfg.effective_alpha,
                      "device": ctx.hw.describe() if ctx.hw else ""} if ctx else {}),
        "resumed_from_checkpoint": ctx.cfg.resume_from if ctx else "",
        "memory": {"estimated_peak_mb": (ctx.estimate or {}).get("peak_mb") if ctx else None,
                   "measured_peak_mb": measured_peak_mb(),
                   "measured_how": "torch.cuda.max_memory_allocated" if ctx and ctx.hw and ctx.hw.kind == "cuda"
                   else "peak RSS"},
        "versions": _package_versions(),
        "git_commit": _git_commit(),
        "duration_s": round(time.time() - t0, 1),
    }
    # A checkpoint without our marker was cut off mid-save; it would only mislead a later resume.
    checkpoints = run_dir / rundir.CHECKPOINTS
    for ckpt in checkpoints.glob("checkpoint-*") if checkpoints.is_dir() else []:
        if not (ckpt / rundir.COMPLETE_MARKER).exists():
            shutil.rmtree(ckpt, ignore_errors=True)
    (run_dir / rundir.METRICS).touch()
    (run_dir / rundir.RESULT).write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    log(f"{status}" + (f": {error}" if error else "") + f" ({result['duration_s']} s)")
    return result


def main(argv: list[str] | None = None) -> int:
    if distributed.init():  # rank 0 (or the only process): the job's lifecycle, database and run folder
        return worker_main("python -m core.train.train_job", "Run one fine-tuning job.", train, argv, stop=STOP,
                           needs_job=False)
    return other_rank(argv)


def other_rank(argv: list[str] | None) -> int:
    """Another process of a many-process run: the same training without the database (no job row to write), its
    outcome a line of the shared log that rank 0 quotes if it failed."""
    import argparse

    from core.workspace import offline_env

    parser = argparse.ArgumentParser(prog="python -m core.train.train_job")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    offline_env()
    status, _ = run_worker(None, train, run_dir=args.run_dir, stop=STOP.install())
    return 0 if status in ("succeeded", "canceled") else 1


if __name__ == "__main__":
    sys.exit(main())
