"""The SFT pieces the training job assembles: TRL's SFTConfig and PEFT's LoraConfig from a TrainConfig,
the progress callback (metrics.jsonl, heartbeats, stop on SIGTERM, complete-checkpoint markers), the
SFTTrainer subclass with a lean loss on devices without Triton, and ``Method``: the few hooks by which the
training job runs SFT and DPO alike. ``ctx`` is core.train.train_job.Context."""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.errors import InvalidInput
from core.jobs import rundir
from core.train import distributed
from core.train.config import TrainConfig
from core.train.hardware import measured_peak_mb


DPO_LOGS = (("reward_margin", "rewards/margins"), ("reward_accuracy", "rewards/accuracies"),
            ("reward_chosen", "rewards/chosen"), ("reward_rejected", "rewards/rejected"))


@dataclass(frozen=True)
class Method:
    """What one training method brings to the training job (core.train.train_job), which calls only these."""

    prepare: Callable[..., None]
    """``prepare(ctx, project_max_length, load_base)``: read the method's data from the database and fill ``ctx``
    (hardware, precision, tokenizer, datasets, max length, model, trainer arguments)."""
    build_trainer: Callable[[Any], Any]
    """``build_trainer(ctx)``: the TRL trainer, with the studio's progress callback."""
    save: Callable[[Any, Any], None]
    """``save(ctx, trainer)``: the adapter (or full model) with the tokenizer into the run folder."""
    summary: Callable[[list[dict]], dict]
    """``summary(log_history)``: the method's own final metrics for result.json (beside the losses)."""


def sample(records: list[dict], n: int, seed: int) -> list[dict]:
    """A seeded random sample of ``n`` records in their original order (all of them when n is 0 or too big)."""
    if not 0 < n < len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


def n_tokens(tokenizer, messages: list[dict]) -> int:
    """The length in tokens of a conversation through the model's chat template."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def log(msg: str) -> None:
    """A timestamped line in the run's log (naming the rank in a run of many processes: they share the log)."""
    print(f"[{time.strftime('%H:%M:%S')}] {distributed.log_prefix()}{msg}", flush=True)


def use_padding_free(cfg: TrainConfig, model) -> bool:
    """Whether to pack examples into padding-free rows (no compute spent on padding).

    "auto" packs only with FlashAttention, whose varlen kernels keep packed examples apart at no extra cost.
    SDPA/eager would be correct too (transformers >= 4.56 builds a block-diagonal mask from the restarting
    position_ids), but that dense mask makes attention over the whole row cost more than the padding it saves:
    bench/train_throughput.py measured 0.79 vs 0.87 of the plain loop's tokens/s on 2 CPU cores. Padded batches
    are grouped by length instead (see sft_config)."""
    if cfg.packing != "auto":
        return cfg.packing == "on"
    return "flash" in (getattr(model.config, "_attn_implementation", "") or "")


def answer_cut_away(tokenizer, records: list[dict], max_length: int) -> int:
    """How many prompt/completion records TRL will drop: cut at ``max_length`` from the end (keep_start), a
    record whose prompt alone (chat template with the generation prompt) fills max_length keeps no answer token,
    has no loss, and is removed from the dataset when the trainer prepares it. Packed rows are not truncated,
    so with packing nothing is dropped (the caller checks)."""
    cut = 0
    for record in records:
        ids = tokenizer.apply_chat_template(record["prompt"], tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        cut += len(ids) >= max_length
    return cut


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.effective_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules_value(), bias="none", task_type="CAUSAL_LM")


def trainer_args(ctx) -> dict:
    """Trainer arguments every run shares (SFT here, DPO in core.train.dpo): checkpoints in the run folder, the
    precision chosen from the hardware (never TRL's bf16 default: wrong and ~30x slower on a CPU without native
    bf16), TrainConfig's optimisation settings, logging to the live panel and TensorBoard, two checkpoints kept."""
    cfg = ctx.cfg
    return dict(
        output_dir=str(ctx.run_dir / rundir.CHECKPOINTS),
        bf16=ctx.precision == "bf16",
        fp16=ctx.precision == "fp16",
        learning_rate=cfg.effective_lr,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_length=ctx.max_length,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_steps=cfg.save_steps or 500,
        save_total_limit=2,
        report_to=["tensorboard"],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=ctx.hw.kind == "cuda",
        include_num_input_tokens_seen="non_padding",
        # Many processes (torchrun): DDP over NCCL on GPUs, gloo on a CPU, which accelerate only takes with use_cpu.
        ddp_find_unused_parameters=False if distributed.is_distributed() else None,
        ddp_backend=distributed.backend() if distributed.is_distributed() else None,
        use_cpu=distributed.is_distributed() and ctx.hw.kind == "cpu",
    )


def prepare_device(ctx) -> None:
    """Detect the hardware, choose the precision from it (refusing half precision off an NVIDIA GPU) and seed."""
    import torch

    from core.train.hardware import detect, resolve_precision

    ctx.hw = detect()
    ctx.precision = resolve_precision(ctx.cfg.precision, ctx.hw)
    if ctx.hw.kind != "cuda" and ctx.precision != "fp32":
        raise InvalidInput("Half precision needs an NVIDIA GPU; on this machine training runs in fp32.")
    torch.manual_seed(ctx.cfg.seed)
    log(f"hardware: {ctx.hw.describe()}; precision {ctx.precision}" + (
        f"; one of {distributed.world_size()} processes (DDP over {distributed.backend()})"
        if distributed.is_distributed() else ""))


def sft_config(ctx):
    from trl import SFTConfig

    cfg = ctx.cfg
    # transformers 5 takes the TensorBoard folder from the environment (TrainingArguments lost logging_dir).
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(ctx.run_dir / rundir.TB_DIR)
    has_eval = ctx.eval_ds is not None and len(ctx.eval_ds) > 0
    eval_strategy = "no" if not has_eval else ("steps" if cfg.eval_steps else "epoch")
    save_strategy = "steps" if cfg.save_steps else "epoch"
    return SFTConfig(
        **trainer_args(ctx),
        per_device_eval_batch_size=cfg.per_device_batch_size,
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
        save_strategy=save_strategy,
    )


def progress_callback(ctx):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Appends metrics.jsonl, heartbeats the job row, stops on SIGTERM, marks complete checkpoints."""

        def __init__(self) -> None:
            self.t0 = time.time()
            self.first_step: int | None = None
            self.last_beat = 0.0
            self.last_tokens = (time.time(), 0)
            self.path = ctx.run_dir / rundir.METRICS

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.time()
            self.first_step = state.global_step
            ctx.start_step = state.global_step
            self.last_tokens = (time.time(), state.num_input_tokens_seen or 0)
            log(f"training: {state.max_steps} steps (from step {state.global_step})")

        def on_step_end(self, args, state, control, **kw):
            if distributed.any_rank(ctx.stop.is_set()):  # every rank stops at the same step
                control.should_training_stop = True
                control.should_save = True  # a checkpoint to resume from
            if ctx.keep_alive is not None and time.time() - self.last_beat > 2:
                self.last_beat = time.time()
                # Handed to the keep-alive thread: a step never waits on a busy database.
                ctx.keep_alive.beat(step=state.global_step, total_steps=state.max_steps)

        def on_save(self, args, state, control, **kw):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if distributed.is_main() and (ckpt / "trainer_state.json").exists():
                (ckpt / rundir.COMPLETE_MARKER).write_text(str(state.global_step))

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if not distributed.is_main() or "loss" not in logs and "eval_loss" not in logs:
                return  # another rank's (the main one writes), or the end-of-training summary (result.json)
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
                   # Peak so far (CUDA allocations on a GPU, the process's RSS on a CPU): the live panel's Memory.
                   "mem_mb": measured_peak_mb(),
                   "time": round(now, 3)}
            # DPO runs (TRL's DPOTrainer) also log how far the chosen answer's implicit reward is above the
            # rejected one's and how often it is: the Train page charts them beside the loss.
            row.update({key: round(logs[src], 6) for key, src in DPO_LOGS if logs.get(src) is not None})
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            shown = {k: v for k, v in row.items() if v is not None and k not in ("time", "total_steps")}
            log(f"step {state.global_step}/{state.max_steps} " + " ".join(f"{k}={v}" for k, v in shown.items()
                                                                        if k != "step"))

    return ProgressCallback()


def studio_trainer_class():
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
    The full logits it holds are answer tokens x vocabulary, within core.train.hardware's memory estimate."""
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
                    and self.args.loss_type == "nll"  # type: ignore[attr-defined]  # SFTConfig's
                    and not self.aux_loss_enabled
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
