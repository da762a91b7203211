"""Fine-tuning: ``python -m core.train --run-dir DIR`` (the worker) and the launcher-side helpers.

The worker reads only ``DIR/config.json`` (a TrainConfig) and the database (the dataset version's records),
and runs a pipeline of small steps: setup -> fit -> save -> cleanup. Training is TRL's SFTTrainer with a
PEFT LoraConfig (LoRA / QLoRA) or all weights (full); prompt/completion records make TRL compute the loss on
the assistant's answer only. It never imports streamlit.

The run folder ends up holding exactly: config.json, result.json, train.log, metrics.jsonl, tb/ (TensorBoard
events), checkpoints/ (the last two complete ones, for resume), and the adapter (adapter_config.json,
adapter_model.safetensors) with the tokenizer files and chat template -- or model/ for full fine-tuning.

Launcher side (called by pages and the CLI, cheap imports only): ``launch``, ``estimate``, ``resume_run``,
``merge_and_export``, ``load_finetuned``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InvalidInput, NotFound, StudioError
from core.train_config import TrainConfig, auto_max_length

CHECKPOINTS = "checkpoints"
TB_DIR = "tb"
COMPLETE_MARKER = ".complete"  # written into a checkpoint folder after the Trainer finished saving it
FULL_MODEL_DIR = "model"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
STOP = threading.Event()  # set by SIGTERM: stop at the next step, save, mark canceled


# ============================================================== launcher side (no torch at import time)


def estimate(cfg: TrainConfig, hw=None, max_length: int | None = None) -> dict:
    """Peak-memory estimate for ``cfg`` on this machine's hardware, with whether it fits."""
    from core.hardware import detect, estimate_peak_memory, resolve_precision

    hw = hw or detect()
    precision = resolve_precision(cfg.precision, hw)
    length = cfg.max_length or max_length or 512
    est = estimate_peak_memory(cfg.base_model, cfg.method, cfg.per_device_batch_size, length,
                               cfg.gradient_checkpointing, precision, lora_r=cfg.lora_r, device=hw.kind)
    est.update({"available_mb": round(hw.free_mb, 1), "device": hw.describe(), "precision": precision,
                "max_length": length, "fits": est["peak_mb"] <= hw.free_mb})
    return est


def check_launch(cfg: TrainConfig, hw=None) -> dict:
    """Refuse settings that cannot run here (QLoRA or half precision on a CPU, a clearly too-big run);
    returns the memory estimate."""
    from core.basemodel import check_model_name
    from core.hardware import detect

    hw = hw or detect()
    if hw.kind != "cuda" and cfg.method == "qlora":
        raise InvalidInput("QLoRA is not available on this machine: its 4-bit NF4 layers (bitsandbytes) need an "
                           "NVIDIA GPU, and none was found. Choose LoRA, which trains the same adapters on a CPU.")
    if hw.kind != "cuda" and cfg.precision in ("bf16", "fp16"):
        raise InvalidInput(f"{cfg.precision} needs a GPU; on a CPU training runs in fp32 (precision=auto).")
    if hw.kind == "cuda" and cfg.num_gpus > hw.gpu_count:
        raise InvalidInput(f"num_gpus={cfg.num_gpus} but only {hw.gpu_count} GPU(s) are visible.")
    check_model_name(cfg.base_model)
    est = estimate(cfg, hw)
    if not est["fits"]:
        raise InvalidInput(
            f"This run needs about {est['peak_mb'] / 1024:.1f} GiB (weights {est['weights_mb']:.0f} MB, gradients "
            f"{est['gradients_mb']:.0f} MB, optimizer {est['optimizer_mb']:.0f} MB, activations "
            f"{est['activations_mb']:.0f} MB at batch {cfg.per_device_batch_size} x {est['max_length']} tokens) but "
            f"only {est['available_mb'] / 1024:.1f} GiB is free ({est['device']}). Lower the batch size or max "
            "length, turn on gradient checkpointing, or use QLoRA on a GPU."
        )
    return est


def launch(session, user, project_id: int, cfg: TrainConfig, name: str = ""):
    """Check ``cfg`` against the user's role, the data and the hardware, then queue the run (core.jobs.submit)."""
    from core.accounts import require
    from core.jobs import submit
    from storage.models import DatasetVersion

    require(user, "train")
    version = session.get(DatasetVersion, cfg.dataset_version_id) if cfg.dataset_version_id else None
    if version is None or version.project_id != project_id:
        raise NotFound(f"Dataset version {cfg.dataset_version_id or '(none)'} does not exist in this project; "
                       "freeze one on the Datasets page first.")
    if version.n_train < 1:
        raise InvalidInput(f"Dataset version {version.name} has no training examples.")
    est = check_launch(cfg)
    name = name or f"{cfg.method}-{version.name}"
    return submit(session, user, project_id=project_id, kind="train", name=name, config=cfg.to_dict(),
                  module="core.train", dataset_version_id=version.id, estimated_peak_mb=est["peak_mb"])


def last_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that finished saving (trainer_state.json and our marker present); a checkpoint
    cut off mid-save is skipped, never loaded."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = []
    for ckpt in folder.glob("checkpoint-*"):
        try:
            step = int(ckpt.name.split("-")[-1])
        except ValueError:
            continue
        if (ckpt / "trainer_state.json").exists() and (ckpt / COMPLETE_MARKER).exists():
            found.append((step, ckpt))
    return max(found)[1] if found else None


def resume_run(session, user, job):
    """Queue a new run that continues ``job`` from its last complete checkpoint (or starts over without one)."""
    from core.accounts import require
    from core.jobs import submit

    require(user, "train")
    ckpt = last_complete_checkpoint(job.run_dir)
    cfg = TrainConfig.from_dict({**job.config, "resume_from": str(ckpt) if ckpt else ""})
    est = check_launch(cfg)
    return submit(session, user, project_id=job.project_id, kind="train", name=job.name, config=cfg.to_dict(),
                  module="core.train", dataset_version_id=job.dataset_version_id, resumed_from=job.id,
                  estimated_peak_mb=est["peak_mb"])


def _carry_metrics(run_dir: Path, checkpoint: str) -> None:
    """A resumed run starts its metrics.jsonl with the earlier run's lines up to the checkpoint's step, so its
    charts are continuous (the checkpoint lives in <earlier run>/checkpoints/checkpoint-N)."""
    ckpt = Path(checkpoint)
    old = ckpt.parent.parent / "metrics.jsonl"
    new = run_dir / "metrics.jsonl"
    if not old.exists() or new.exists():
        return
    step = _checkpoint_step(ckpt)
    lines = [ln for ln in old.read_text(encoding="utf-8").splitlines() if _line_step(ln) <= step]
    new.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


def _checkpoint_step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[-1])


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step") or 0)
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 30


def load_finetuned(run_dir: str | Path, dtype=None, merge: bool = False):
    """(model, tokenizer) of a finished run: the base model with the run's adapter (merged when ``merge``),
    or the full fine-tuned model. Used by generation and by merge_and_export."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.basemodel import load_model

    run_dir = Path(run_dir)
    cfg = TrainConfig.from_json((run_dir / "config.json").read_text(encoding="utf-8"))
    if (run_dir / FULL_MODEL_DIR / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(run_dir / FULL_MODEL_DIR, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(run_dir / FULL_MODEL_DIR)
        return model, tokenizer
    if not (run_dir / ADAPTER_FILES[0]).exists():
        raise NotFound(f"{run_dir} holds no adapter yet (the run did not save one).")
    from peft import PeftModel

    base = load_model(cfg.base_model, dtype=dtype or torch.float32)
    model = PeftModel.from_pretrained(base, run_dir)
    if merge:
        model = model.merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    return model, tokenizer


def merge_and_export(session, user, job_id: int, out_dir: str | Path) -> Path:
    """Write a standalone model folder (adapter merged into the base weights, with tokenizer and chat template)
    that AutoModelForCausalLM.from_pretrained loads without peft; for full fine-tuning, the saved model."""
    from core.accounts import require
    from core.jobs import get_job

    require(user, "train")
    job = get_job(session, job_id)
    if job.kind != "train":
        raise InvalidInput(f"Job {job_id} is not a training run.")
    run_dir = Path(job.run_dir)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out} is not empty; choose a new folder.")
    if not (run_dir / ADAPTER_FILES[0]).exists() and not (run_dir / FULL_MODEL_DIR / "config.json").exists():
        raise InvalidInput(f"Run {job_id} has no saved model yet ({job.status}).")
    model, tokenizer = load_finetuned(run_dir, merge=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


# ============================================================== worker side


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


def version_data(session, version_id: int) -> dict[str, list[dict]]:
    """The version's TRL prompt/completion records per split, via core.datasets.version_records."""
    from core.datasets import version_records

    return {split: list(version_records(session, version_id, split)) for split in ("train", "validation")}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def setup(run_dir: Path, cfg: TrainConfig, records: dict[str, list[dict]], project_max_length: int = 2048,
          job_id: int | None = None, model=None, tokenizer=None) -> Context:
    """Hardware, precision, tokenizer, datasets, max length, model and the SFT/PEFT configs.

    ``model`` / ``tokenizer`` replace loading ``cfg.base_model`` (the throughput bench passes a random model)."""
    import torch
    from datasets import Dataset

    from core.basemodel import load_tokenizer
    from core.hardware import detect, estimate_peak_memory, resolve_precision

    ctx = Context(run_dir=run_dir, cfg=cfg, job_id=job_id)
    ctx.hw = detect()
    ctx.precision = resolve_precision(cfg.precision, ctx.hw)
    if ctx.hw.kind != "cuda" and (ctx.precision != "fp32" or cfg.method == "qlora"):
        raise InvalidInput("QLoRA and half precision need an NVIDIA GPU; this machine has none.")
    torch.manual_seed(cfg.seed)
    _log(f"hardware: {ctx.hw.describe()}; precision {ctx.precision}")

    ctx.tokenizer = tokenizer or load_tokenizer(cfg.base_model)
    train, val = records.get("train") or [], records.get("validation") or []
    if not train:
        raise InvalidInput("The dataset version has no training examples.")
    lengths = [_n_tokens(ctx.tokenizer, r) for r in train]
    ctx.max_length = cfg.max_length or auto_max_length(lengths, project_max_length)
    n_truncated = sum(n > ctx.max_length for n in lengths)
    ctx.dataset.update({"n_train": len(train), "n_validation": len(val), "max_length": ctx.max_length,
                        "n_truncated": n_truncated, "longest": max(lengths)})
    _log(f"data: {len(train)} train / {len(val)} validation examples; max_length {ctx.max_length} "
         f"({n_truncated} truncated)")
    ctx.train_ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in train])
    ctx.eval_ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in val]) \
        if val else None

    ctx.estimate = estimate_peak_memory(model.config if model is not None else cfg.base_model, cfg.method,
                                        cfg.per_device_batch_size, ctx.max_length, cfg.gradient_checkpointing,
                                        ctx.precision, lora_r=cfg.lora_r, device=ctx.hw.kind)
    ctx.model = model if model is not None else _load_base(cfg, ctx.precision)
    ctx.padding_free = _use_padding_free(cfg, ctx.model)
    ctx.peft_config = _lora_config(cfg) if cfg.method in ("lora", "qlora") else None
    ctx.sft_args = _sft_config(ctx)
    return ctx


def _n_tokens(tokenizer, record: dict) -> int:
    ids = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def _load_base(cfg: TrainConfig, precision: str):
    import torch

    from core.basemodel import load_model

    kwargs: dict[str, Any] = {}
    if cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    # Frozen LoRA bases may sit in half precision on a GPU; trained weights (full) stay fp32 under autocast.
    dtype = torch.float32
    if cfg.method == "lora" and precision == "bf16":
        dtype = torch.bfloat16
    elif cfg.method == "qlora":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    model = load_model(cfg.base_model, dtype=dtype, **kwargs)
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    return model


def _use_padding_free(cfg: TrainConfig, model) -> bool:
    """Whether to pack examples into padding-free rows (no compute spent on padding).

    "auto" packs only with FlashAttention, whose varlen kernels keep packed examples apart at no extra cost.
    SDPA/eager would be correct too (transformers >= 4.56 builds a block-diagonal mask from the restarting
    position_ids), but that dense mask makes attention over the whole row cost more than the padding it saves:
    bench/train_throughput.py measured 0.79 vs 0.87 of the plain loop's tokens/s on 2 CPU cores. Padded batches
    are grouped by length instead (see _sft_config)."""
    if cfg.packing != "auto":
        return cfg.packing == "on"
    return "flash" in (getattr(model.config, "_attn_implementation", "") or "")


def _lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.effective_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules_value(), bias="none", task_type="CAUSAL_LM")


def _sft_config(ctx: Context):
    from trl import SFTConfig

    cfg = ctx.cfg
    # transformers 5 takes the TensorBoard folder from the environment (TrainingArguments lost logging_dir).
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(ctx.run_dir / TB_DIR)
    has_eval = ctx.eval_ds is not None and len(ctx.eval_ds) > 0
    eval_strategy = "no" if not has_eval else ("steps" if cfg.eval_steps else "epoch")
    save_strategy = "steps" if cfg.save_steps else "epoch"
    return SFTConfig(
        output_dir=str(ctx.run_dir / CHECKPOINTS),
        # Precision is chosen here, never left to TRL's bf16 default (wrong and slow on a CPU).
        bf16=ctx.precision == "bf16",
        fp16=ctx.precision == "fp16",
        learning_rate=cfg.effective_lr,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_length=ctx.max_length,
        # Best-fit-decreasing packing: whole examples (cut at max_length) share padding-free rows.
        packing=ctx.padding_free,
        packing_strategy="bfd",
        padding_free=ctx.padding_free,
        eval_packing=False,  # validation loss per example, comparable across runs with and without packing
        # Padded batches of similar lengths waste little compute on padding (HF's LengthGroupedSampler).
        train_sampling_strategy="random" if ctx.padding_free else "group_by_length",
        completion_only_loss=True,  # loss on the assistant's answer only
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps or None,
        eval_on_start=has_eval,  # the base model's validation loss is the curve's first point
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy=save_strategy,
        save_steps=cfg.save_steps or 500,
        save_total_limit=2,
        report_to=["tensorboard"],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=ctx.hw.kind == "cuda",
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=False if ctx.cfg.num_gpus != 1 else None,
    )


def _progress_callback(ctx: Context):
    from transformers import TrainerCallback

    from core.hardware import measured_peak_mb

    class ProgressCallback(TrainerCallback):
        """Appends metrics.jsonl, heartbeats the job row, stops on SIGTERM, marks complete checkpoints."""

        def __init__(self) -> None:
            self.t0 = time.time()
            self.first_step: int | None = None
            self.last_beat = 0.0
            self.last_tokens = (time.time(), 0)
            self.path = ctx.run_dir / "metrics.jsonl"

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.time()
            self.first_step = state.global_step
            ctx.start_step = state.global_step
            self.last_tokens = (time.time(), state.num_input_tokens_seen or 0)
            _log(f"training: {state.max_steps} steps (from step {state.global_step})")

        def on_step_end(self, args, state, control, **kw):
            if STOP.is_set():
                control.should_training_stop = True
                control.should_save = True  # a checkpoint to resume from
            if ctx.job_id and time.time() - self.last_beat > 2:
                self.last_beat = time.time()
                from core.jobs import heartbeat

                heartbeat(ctx.job_id, step=state.global_step, total_steps=state.max_steps)

        def on_save(self, args, state, control, **kw):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if (ckpt / "trainer_state.json").exists():
                (ckpt / COMPLETE_MARKER).write_text(str(state.global_step))

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs and "eval_loss" not in logs:
                return  # the end-of-training summary; result.json holds it
            now = time.time()
            done = state.global_step - (self.first_step or 0)
            eta = (now - self.t0) / done * (state.max_steps - state.global_step) if done > 0 else None
            t_prev, n_prev = self.last_tokens
            tokens = state.num_input_tokens_seen or 0
            tps = (tokens - n_prev) / (now - t_prev) if now > t_prev and tokens > n_prev else None
            if "loss" in logs:
                self.last_tokens = (now, tokens)
            row = {"step": state.global_step, "total_steps": state.max_steps, "epoch": round(state.epoch or 0, 4),
                   "loss": logs.get("loss"), "eval_loss": logs.get("eval_loss"),
                   "learning_rate": logs.get("learning_rate"),
                   "tokens_per_s": round(tps, 1) if tps and "loss" in logs else None,
                   "eta_s": round(eta, 1) if eta is not None else None,
                   "gpu_mem_mb": measured_peak_mb() if ctx.hw.kind == "cuda" else None,
                   "time": round(now, 3)}
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            shown = {k: v for k, v in row.items() if v is not None and k not in ("time", "total_steps")}
            _log(f"step {state.global_step}/{state.max_steps} " + " ".join(f"{k}={v}" for k, v in shown.items()
                                                                        if k != "step"))

    return ProgressCallback()


def _studio_trainer_class():
    """SFTTrainer with a leaner loss on devices without Triton kernels (CPU, MPS).

    TRL 1.16's SFTTrainer scores every position through a chunked "fused LM head" so the full logits are never
    held at once. On CUDA its Triton kernels score only the answer positions, and that is kept as is. Elsewhere the
    same chunked code runs as plain torch ops on *every* position (prompt and padding too), recomputes the
    49k-wide vocabulary projection in the backward pass, and folds in entropy and top-1 accuracy for logging:
    bench/train_throughput.py measured it at 0.86 of a hand-written loop's tokens/s on 2 CPU cores. There this
    trainer asks the model for the logits of the answer positions only (transformers' boolean ``logits_to_keep``)
    and takes the summed cross-entropy over them divided by the answer-token count -- the same loss, same labels
    (the collator's completion mask), same gradients. What it drops there: the per-step ``entropy`` and
    ``mean_token_accuracy`` log entries, which nothing in the studio shows (metrics.jsonl keeps loss/eval_loss).
    The full logits it holds are answer tokens x vocabulary, within core.hardware's memory estimate."""
    import sys as _sys

    import torch
    from transformers.utils import is_triton_available
    from trl import SFTTrainer

    class StudioSFTTrainer(SFTTrainer):
        def _lean_loss_applies(self, model, inputs, return_outputs) -> bool:
            device = inputs["input_ids"].device if "input_ids" in inputs else None
            base = self.accelerator.unwrap_model(model)
            base = base.get_base_model() if hasattr(base, "get_base_model") else base
            return (device is not None and not (device.type in ("cuda", "xpu") and is_triton_available())
                    and not return_outputs and inputs.get("labels") is not None
                    and self.compute_loss_func is None and self.label_smoother is None
                    and self.args.loss_type == "nll" and not self.aux_loss_enabled
                    # models whose forward slices hidden states with transformers' slice_logits_to_keep
                    # accept the boolean (batch, length) mask used below
                    and "slice_logits_to_keep" in vars(_sys.modules.get(type(base).__module__, object)))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self._lean_loss_applies(model, inputs, return_outputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"]
            targets = labels[:, 1:]
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = targets != -100  # logits at position t predict the token at t + 1
            model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            logits = model(**model_inputs, use_cache=False, logits_to_keep=keep).logits  # (answer tokens, vocab)
            count = torch.as_tensor(keep.sum() if num_items_in_batch is None else num_items_in_batch)
            # As transformers' ForCausalLMLoss: fp32 cross-entropy summed, divided by the batch's answer tokens.
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[targets != -100], reduction="sum")
            loss = loss / count.to(loss.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as SFTTrainer: DDP averages
            if self.model.training:  # the "num_tokens" log entry, as SFTTrainer keeps it
                if "attention_mask" in inputs:
                    n = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                else:
                    n = self.accelerator.gather_for_metrics(
                        torch.tensor(inputs["input_ids"].numel(), device=labels.device)).sum().item()
                self._total_train_tokens += n // self._tp_size
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

    return StudioSFTTrainer


def build_trainer(ctx: Context):
    """The SFTTrainer for ``ctx`` (the same object bench/train_throughput.py measures)."""
    return _studio_trainer_class()(model=ctx.model, args=ctx.sft_args, train_dataset=ctx.train_ds,
                                   eval_dataset=ctx.eval_ds, processing_class=ctx.tokenizer,
                                   peft_config=ctx.peft_config, callbacks=[_progress_callback(ctx)])


def fit(ctx: Context):
    """Train (continuing from cfg.resume_from when set); returns the trainer."""
    trainer = build_trainer(ctx)
    ctx.model = trainer.model
    resume = ctx.cfg.resume_from or None
    if resume and not (Path(resume) / COMPLETE_MARKER).exists():
        raise InvalidInput(f"The checkpoint {resume} is incomplete; resume from an earlier one.")
    if resume:
        _carry_metrics(ctx.run_dir, resume)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def save(ctx: Context, trainer) -> None:
    """Adapter (or full model) with tokenizer and chat template into the run folder."""
    if ctx.cfg.method == "full":
        out = ctx.run_dir / FULL_MODEL_DIR
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
            "train_runtime_s": final.get("train_runtime")}


def oom_advice(cfg: TrainConfig, max_length: int) -> str:
    tips = [f"a smaller per_device_batch_size (now {cfg.per_device_batch_size}) with a larger grad_accum",
            f"a shorter max_length (now {max_length})"]
    if not cfg.gradient_checkpointing:
        tips.append("gradient_checkpointing on")
    if cfg.method != "qlora":
        tips.append("QLoRA on an NVIDIA GPU (4-bit base weights)")
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
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _heartbeat_thread(job_id: int, stop: threading.Event) -> threading.Thread:
    """Heartbeats every 30 s while the model loads or a long step/eval runs."""
    from core.jobs import heartbeat

    def beat():
        while not stop.wait(30):
            try:
                heartbeat(job_id)
            except Exception:  # a busy database must not kill the run
                pass

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    return thread


def run(run_dir: str | Path) -> dict:
    """The worker: setup -> fit -> save -> cleanup, always ending with result.json and the job's final status."""
    from core.workspace import offline_env

    offline_env()
    run_dir = Path(run_dir).resolve()
    cfg_text = (run_dir / "config.json").read_text(encoding="utf-8")
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    t0 = time.time()
    job_id, version, project_max = _job_and_data_info(run_dir)
    stop_beat = threading.Event()
    if job_id:
        from core.jobs import worker_start

        worker_start(job_id)
        _heartbeat_thread(job_id, stop_beat)
    ctx = None
    trainer = None
    status, error = "failed", ""
    try:
        cfg = TrainConfig.from_json(cfg_text)
        records = _records(cfg.dataset_version_id)
        ctx = setup(run_dir, cfg, records, project_max, job_id)
        trainer = fit(ctx)
        save(ctx, trainer)
        status = "canceled" if STOP.is_set() else "succeeded"
        if STOP.is_set():
            error = "Canceled; the adapter and a checkpoint were saved at step " \
                    f"{trainer.state.global_step}, and Resume continues from there."
    except BaseException as err:  # noqa: BLE001 - every failure must end as a truthful status
        traceback.print_exc()
        if isinstance(err, KeyboardInterrupt) or STOP.is_set() and not is_oom(err):
            status, error = "canceled", "Canceled before training finished."
        elif is_oom(err):
            error = oom_advice(ctx.cfg if ctx else TrainConfig(), ctx.max_length if ctx else 0)
        elif isinstance(err, StudioError):
            error = str(err)
        else:
            error = f"{type(err).__name__}: {err}".strip()[:2000]
    finally:
        stop_beat.set()
        result = cleanup(run_dir, ctx, trainer, status, error, version, t0)
        if job_id:
            from core.jobs import worker_finish

            worker_finish(job_id, status, error, result=result,
                          measured_peak_mb=result["memory"]["measured_peak_mb"],
                          estimated_peak_mb=result["memory"]["estimated_peak_mb"])
    return result


def _job_and_data_info(run_dir: Path) -> tuple[int | None, dict, int]:
    """Job id, dataset version facts and the project's max length from the database."""
    from storage.db import session_scope
    from storage.models import DatasetVersion, Project

    from core.jobs import job_id_for_run_dir

    try:
        with session_scope() as session:
            job = job_id_for_run_dir(session, run_dir)
            version = session.get(DatasetVersion, job.dataset_version_id) if job.dataset_version_id else None
            project = session.get(Project, job.project_id)
            info = {"version_id": version.id, "name": version.name, "content_hash": version.content_hash} \
                if version else {}
            return job.id, info, (project.max_length if project else 2048)
    except NotFound:
        return None, {}, 2048


def _records(version_id: int) -> dict[str, list[dict]]:
    from storage.db import session_scope

    with session_scope() as session:
        return version_data(session, version_id)


def cleanup(run_dir: Path, ctx: Context | None, trainer, status: str, error: str, version: dict,
            t0: float) -> dict:
    """Write result.json (status, error, metrics, dataset, versions, memory) and drop partial checkpoints."""
    from core.hardware import measured_peak_mb

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
    for ckpt in (run_dir / CHECKPOINTS).glob("checkpoint-*") if (run_dir / CHECKPOINTS).is_dir() else []:
        if not (ckpt / COMPLETE_MARKER).exists():
            shutil.rmtree(ckpt, ignore_errors=True)
    for name in ("metrics.jsonl",):
        (run_dir / name).touch()
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    _log(f"{status}" + (f": {error}" if error else "") + f" ({result['duration_s']} s)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train", description="Run one fine-tuning job.")
    parser.add_argument("--run-dir", required=True, help="run folder holding config.json")
    args = parser.parse_args(argv)
    result = run(args.run_dir)
    return 0 if result["status"] in ("succeeded", "canceled") else 1


if __name__ == "__main__":
    sys.exit(main())


# ============================================================== run history (Runs page, CLI)


def runs_table(session, project_id: int) -> list[dict]:
    """One row per training run of the project, newest first (reconciled first, so statuses are true)."""
    from core.jobs import list_jobs, reconcile

    reconcile(session)
    rows = []
    for job in list_jobs(session, project_id=project_id, kind="train"):
        metrics = (job.result or {}).get("metrics", {})
        cfg = job.config or {}
        duration = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
        rows.append({"id": job.id, "name": job.name, "status": job.status, "method": cfg.get("method"),
                     "base_model": cfg.get("base_model"), "dataset_version": job.dataset_version_id,
                     "train_loss": metrics.get("train_loss"), "eval_loss_first": metrics.get("eval_loss_first"),
                     "eval_loss_last": metrics.get("eval_loss_last"), "steps": metrics.get("global_step"),
                     "duration_min": round(duration / 60, 1) if duration is not None else None,
                     "estimated_peak_mb": job.estimated_peak_mb, "measured_peak_mb": job.measured_peak_mb,
                     "resumed_from": job.resumed_from, "started": job.started_at, "run_dir": job.run_dir})
    return rows


def compare_runs(session, job_ids: list[int]) -> dict:
    """Config differences, final metrics and loss curves (long format) of several runs."""
    from core.jobs import get_job, read_metrics

    jobs = [get_job(session, i) for i in job_ids]
    if any(j.kind != "train" for j in jobs):
        raise InvalidInput("Only training runs can be compared here.")
    keys = sorted({k for j in jobs for k in (j.config or {})})
    diff = []
    for key in keys:
        values = [(j.config or {}).get(key) for j in jobs]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            diff.append({"setting": key, **{f"run {j.id}": v for j, v in zip(jobs, values)}})
    metrics = []
    curves = []
    for job in jobs:
        m = (job.result or {}).get("metrics", {})
        metrics.append({"run": job.id, "status": job.status, "train_loss": m.get("train_loss"),
                        "eval_loss_first": m.get("eval_loss_first"), "eval_loss_last": m.get("eval_loss_last"),
                        "steps": m.get("global_step"), "measured_peak_mb": job.measured_peak_mb})
        for row in read_metrics(job):
            for series in ("loss", "eval_loss"):
                if row.get(series) is not None:
                    curves.append({"step": row["step"], "value": row[series],
                                   "series": f"run {job.id} {'train' if series == 'loss' else 'validation'}"})
    return {"config_diff": diff, "metrics": metrics, "curves": curves}
