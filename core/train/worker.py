"""The training process: ``python -m core.train.worker --run-dir DIR``. Never imports streamlit.

The worker reads only ``DIR/config.json`` (a TrainConfig) and the database (the dataset version's records),
and runs a pipeline of small steps: setup -> fit -> save -> cleanup. Training is TRL's SFTTrainer with a
PEFT LoraConfig (LoRA / QLoRA) or all weights (full); prompt/completion records make TRL compute the loss on
the assistant's answer only.

The run folder ends up holding exactly: config.json, result.json, train.log, metrics.jsonl, tb/ (TensorBoard
events), checkpoints/ (the last two complete ones, for resume), and the adapter (adapter_config.json,
adapter_model.safetensors) with the tokenizer files and chat template -- or model/ for full fine-tuning.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.basemodel import load_model, load_tokenizer
from core.curate.datasets import version_records
from core.curate.leakage import eval_derived_excluded
from core.curate.preferences import preference_records
from core.errors import InvalidInput, NotFound, StudioError
from core.hardware import estimate_peak_memory, measured_peak_mb
from core.jobs import rundir
from core.jobs.worker import KeepAlive, StopFlag, job_for_run_dir, worker_finish, worker_start
from core.train import distributed, dpo
from core.train.config import TrainConfig, auto_max_length
from core.train.sft import (answer_cut_away, log, lora_config, prepare_device, progress_callback, sft_config,
                            studio_trainer_class, use_padding_free)
from core.workspace import offline_env
from storage.db import session_scope
from storage.models import DatasetVersion, JobStatus, Project

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
    from datasets import Dataset


    ctx = Context(run_dir=run_dir, cfg=cfg, job_id=job_id, stop=stop if stop is not None else StopFlag())
    prepare_device(ctx)

    ctx.tokenizer = tokenizer or load_tokenizer(cfg.base_model)
    train, val = records.get("train") or [], records.get("validation") or []
    if not train:
        raise InvalidInput("The dataset version has no training examples.")
    ctx.dataset.update({"n_train_available": len(train), "n_validation_available": len(val)})
    train = _sample(train, cfg.max_train_examples, cfg.seed)
    val = _sample(val, cfg.max_validation_examples, cfg.seed)
    lengths = [_n_tokens(ctx.tokenizer, r) for r in train]
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
    ctx.model = model if model is not None else _load_base(cfg, ctx.precision, ctx.hw.kind)
    ctx.padding_free = use_padding_free(cfg, ctx.model)
    if not ctx.padding_free:
        _note_answerless(ctx, train, val)
    ctx.peft_config = lora_config(cfg) if cfg.method in ("lora", "qlora") else None
    ctx.sft_args = sft_config(ctx)
    return ctx


def _note_answerless(ctx: Context, train: list[dict], val: list[dict]) -> None:
    """Say which examples the trainer will leave out because their prompt fills max_length (nothing of the answer
    is left to learn or score). No training example left is refused; no validation example left means a run
    without validation loss (the trainer would otherwise fail on an empty validation set)."""
    n = ctx.max_length
    cut_train = answer_cut_away(ctx.tokenizer, train, n)
    if cut_train == len(train):
        raise InvalidInput(f"Every training example's prompt is {n} tokens or longer, so nothing of any answer is "
                           f"left to learn: raise max_length (the longest example has {ctx.dataset['longest']} tokens).")
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


def _sample(records: list[dict], n: int, seed: int) -> list[dict]:
    """A seeded random sample of ``n`` records in their original order (all of them when n is 0 or too big)."""
    if not 0 < n < len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


def _n_tokens(tokenizer, record: dict) -> int:
    ids = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


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
    trainer = (dpo.build_trainer if ctx.cfg.method == "dpo" else build_trainer)(ctx)
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
    """Adapter (or full model) with tokenizer and chat template into the run folder (by the main process)."""
    if not distributed.is_main():
        return
    if ctx.cfg.method == "dpo":
        dpo.save_adapter(ctx, trainer)
        return
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
    final = next((h for h in reversed(history) if "train_loss" in h), {})
    return {"train_loss": final.get("train_loss", train_losses[-1] if train_losses else None),
            "train_loss_last": train_losses[-1] if train_losses else None,
            "eval_loss_first": eval_losses[0] if eval_losses else None,
            "eval_loss_last": eval_losses[-1] if eval_losses else None,
            "global_step": trainer.state.global_step if trainer is not None else 0,
            "start_step": ctx.start_step,
            "epoch": trainer.state.epoch if trainer is not None else 0,
            "train_runtime_s": final.get("train_runtime"),
            **(dpo.reward_summary(history) if ctx.cfg.method == "dpo" else {})}


def oom_advice(cfg: TrainConfig, max_length: int) -> str:
    tips = [f"a smaller per_device_batch_size (now {cfg.per_device_batch_size}) with a larger grad_accum",
            f"a shorter max_length (now {max_length})"]
    if not cfg.gradient_checkpointing:
        tips.append("gradient_checkpointing on")
    if cfg.method != "qlora":
        tips.append("QLoRA (4-bit base weights)")
    return "Out of memory: the run needed more memory than the device has. Try " + ", ".join(tips) + "."


def is_oom(err: BaseException) -> bool:
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(err, MemoryError) or "out of memory" in str(err).lower()


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


def run(run_dir: str | Path) -> dict:
    """The worker: setup -> fit -> save -> cleanup, always ending with result.json and the job's final status."""
    offline_env()
    run_dir = Path(run_dir).resolve()
    cfg_text = (run_dir / rundir.CONFIG).read_text(encoding="utf-8")
    STOP.install()
    t0 = time.time()
    main = distributed.init()  # many processes (torchrun): only rank 0 touches the database and the run folder
    job_id, version, project_max = distributed.from_main(lambda: _job_and_data_info(run_dir))
    if job_id and main:
        worker_start(job_id)
    ctx = None
    trainer = None
    status, error = JobStatus.failed.value, ""
    with KeepAlive(job_id if main else None) as alive:
        try:
            cfg = TrainConfig.from_json(cfg_text)
            if cfg.method == "dpo":
                ctx = Context(run_dir=run_dir, cfg=cfg, job_id=job_id, stop=STOP)
                dpo.setup(ctx, distributed.from_main(lambda: _preference_records(cfg)), project_max, _load_base)
            else:
                records, excluded = distributed.from_main(lambda: _records(cfg))
                ctx = setup(run_dir, cfg, records, project_max, job_id, stop=STOP)
                ctx.dataset.update(excluded)
            ctx.keep_alive = alive if job_id and main else None
            trainer = fit(ctx)
            save(ctx, trainer)
            status = JobStatus.canceled.value if STOP.is_set() else JobStatus.succeeded.value
            if STOP.is_set():
                error = "Canceled; the adapter and a checkpoint were saved at step " \
                        f"{trainer.state.global_step}, and Resume continues from there."
        except BaseException as err:  # noqa: BLE001 - every failure must end as a truthful status
            traceback.print_exc()
            if isinstance(err, KeyboardInterrupt) or STOP.is_set() and not is_oom(err):
                status, error = JobStatus.canceled.value, "Canceled before training finished."
            elif is_oom(err):
                error = oom_advice(ctx.cfg if ctx else TrainConfig(), ctx.max_length if ctx else 0)
            elif isinstance(err, StudioError):
                error = str(err)
            else:
                error = f"{type(err).__name__}: {err}".strip()[:2000]
            status, error = distributed.peer_failure(job_id, run_dir, status, error) if main else (status, error)
        finally:
            if not main:  # the main process writes the result; this rank's outcome goes to the shared log
                return distributed.rank_result(status, error)
            result = cleanup(run_dir, ctx, trainer, status, error, version, t0)
            if job_id:
                worker_finish(job_id, status, error, result=result,
                              measured_peak_mb=result["memory"]["measured_peak_mb"],
                              estimated_peak_mb=result["memory"]["estimated_peak_mb"])
    return result


def _job_and_data_info(run_dir: Path) -> tuple[int | None, dict, int]:
    """Job id, dataset version facts and the project's max length from the database."""
    try:
        with session_scope() as session:
            job = job_for_run_dir(session, run_dir)
            version = session.get(DatasetVersion, job.dataset_version_id) if job.dataset_version_id else None
            project = session.get(Project, job.project_id)
            info = {"version_id": version.id, "name": version.name, "content_hash": version.content_hash} \
                if version else {}
            return job.id, info, (project.max_length if project else 2048)
    except NotFound:
        return None, {}, 2048


def _records(cfg: TrainConfig) -> tuple[dict[str, list[dict]], dict]:
    with session_scope() as session:
        return training_records(session, cfg)


def _preference_records(cfg: TrainConfig) -> list[dict]:
    with session_scope() as session:
        records = preference_records(session, cfg.preference_version_id, cfg.exclude_pair_ids)
    if cfg.exclude_pair_ids:
        log(f"data: {len(cfg.exclude_pair_ids)} preference pair(s) excluded by the run's settings (exclude_pair_ids)")
    if not records:
        raise InvalidInput("Every pair of the preference version is excluded (exclude_pair_ids); nothing is left "
                           "to train on.")
    return records


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
    parser = argparse.ArgumentParser(prog="python -m core.train.worker", description="Run one fine-tuning job.")
    parser.add_argument("--run-dir", required=True, help="run folder holding config.json")
    args = parser.parse_args(argv)
    result = run(args.run_dir)
    return 0 if result["status"] in (JobStatus.succeeded.value, JobStatus.canceled.value) else 1


if __name__ == "__main__":
    sys.exit(main())
