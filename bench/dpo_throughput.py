"""DPO throughput: the project's DPO job path (core.train.dpo inside the worker's Context, with its progress
callback writing metrics.jsonl) vs a plain TRL DPOTrainer on the same model, pairs and settings.

Both run in this one process, alternating (and which runs first alternates too), on the same model weights, the
same new LoRA adapter config, the same
preference pairs in the same batch size and max length, beta, loss type, optimizer and precision. Throughput is
real (non-padding) tokens per second over the timed steps (the first step is a warm-up), counted by the Trainer's
``num_input_tokens_seen`` (chosen and rejected sequences of each pair), and pairs per second. Prints both, and the
ratio (target >= 0.9 on a CPU).

    python bench/dpo_throughput.py               # embedded SmolLM2-135M-Instruct (real weights)
    python bench/dpo_throughput.py --random      # the same shape with random weights
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def demo_pairs(n: int) -> list[dict]:
    """Preference pairs from the demo conversations: the real answer chosen, the next conversation's answer
    rejected (a wrong answer of the same style and length range)."""
    lines = [json.loads(ln) for ln in (ROOT / "core" / "curate" / "data" / "demo_utility.jsonl").read_text()
             .splitlines() if ln.strip()]
    lines = [r for r in lines if sum(m["role"] != "system" for m in r["messages"]) == 2]
    out = []
    for i in range(n):
        msgs, other = lines[i % len(lines)]["messages"], lines[(i + 1) % len(lines)]["messages"]
        out.append({"prompt": msgs[:-1], "chosen": msgs[-1:], "rejected": other[-1:]})
    return out


def make_model(args):
    import torch
    from transformers import AutoModelForCausalLM

    from core.basemodel import load_config, load_model

    torch.manual_seed(0)
    if args.random:
        return AutoModelForCausalLM.from_config(load_config(args.model), dtype=torch.float32)
    return load_model(args.model, dtype=torch.float32)


def config(args):
    from core.train.config import TrainConfig

    return TrainConfig(base_model=args.model, method="dpo", preference_version_id=1, max_steps=args.steps + 1,
                       per_device_batch_size=args.batch, max_length=args.max_length, learning_rate=5e-5,
                       save_steps=10_000, warmup_ratio=0.0, lr_scheduler="constant", dpo_beta=0.1,
                       dpo_loss_type="sigmoid")


class Clock:
    """(wall time, CPU time, tokens seen) at the end of every step."""

    def __init__(self):
        from transformers import TrainerCallback

        marks = self.marks = []

        class _Cb(TrainerCallback):
            def on_step_end(self, a, state, control, **kw):
                _sync()
                marks.append((time.perf_counter(), time.process_time(), state.num_input_tokens_seen))

        self.callback = _Cb()

    def result(self, batch: int) -> dict:
        (t0, c0, n0), (t1, c1, n1) = self.marks[0], self.marks[-1]
        steps = len(self.marks) - 1
        return {"tokens_per_s": (n1 - n0) / (t1 - t0), "pairs_per_s": steps * batch / (t1 - t0),
                "tokens_per_cpu_s": (n1 - n0) / (c1 - c0), "steps": steps}


def bench_project(args, tokenizer, pairs, model) -> dict:
    """The project's DPO path, built as `python -m core.train.train_job` builds a DPO run."""
    from core.train import dpo
    from core.train.train_job import Context

    ctx = Context(run_dir=Path(tempfile.mkdtemp(prefix="bench-dpo-")), cfg=config(args))
    dpo.setup(ctx, pairs, 2048, load_base=None, model=model, tokenizer=tokenizer)
    ctx.sft_args.report_to = []  # the bench measures training, not TensorBoard writes
    ctx.sft_args.save_strategy = "no"
    clock = Clock()
    trainer = dpo.build_trainer(ctx)
    trainer.add_callback(clock.callback)
    trainer.train()
    return clock.result(args.batch)


def bench_plain(args, tokenizer, pairs, model) -> dict:
    """TRL's DPOTrainer as its documentation uses it, with the same settings and a LoraConfig."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    cfg = config(args)
    dpo_args = DPOConfig(output_dir=tempfile.mkdtemp(prefix="bench-dpo-plain-"), learning_rate=cfg.learning_rate,
                         max_steps=cfg.max_steps, per_device_train_batch_size=args.batch, max_length=args.max_length,
                         beta=cfg.dpo_beta, loss_type=[cfg.dpo_loss_type], lr_scheduler_type="constant",
                         warmup_steps=0.0, bf16=False, fp16=False, report_to=[], save_strategy="no",
                         disable_tqdm=True, dataloader_num_workers=0, seed=cfg.seed,
                         include_num_input_tokens_seen="non_padding", logging_steps=1,
                         gradient_checkpointing=cfg.gradient_checkpointing)  # TRL defaults it on; ours is off
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.effective_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
    clock = Clock()
    trainer = DPOTrainer(model=model, args=dpo_args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tokenizer, peft_config=lora, callbacks=[clock.callback])
    trainer.train()
    return clock.result(args.batch)


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--random", action="store_true", help="same shape, random weights")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=2, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="alternate baseline/project this many times; best kept")
    args = parser.parse_args()

    import gc

    import torch

    from core.basemodel import load_tokenizer

    if torch.cuda.is_available():
        sys.exit("This bench measures the CPU path (fp32); run it on a CPU machine.")
    tokenizer = load_tokenizer()
    pairs = demo_pairs(args.batch * (args.steps + 1))
    results: dict[str, list[dict]] = {"plain": [], "project": []}
    runners = {"plain": bench_plain, "project": bench_project}
    for i in range(args.rounds):
        # Which side runs first alternates: the first trainer in a fresh process meets a fresh allocator.
        for key in (("plain", "project") if i % 2 == 0 else ("project", "plain")):
            results[key].append(runners[key](args, tokenizer, pairs, make_model(args)))
            gc.collect()
    best = {k: max(v, key=lambda r: r["tokens_per_s"]) for k, v in results.items()}
    what = f"{args.model} (random weights)" if args.random else args.model
    print(f"model: {what}; device: CPU ({torch.get_num_threads()} threads); fp32; {args.batch} pairs per step, "
          f"max_length {args.max_length}, {args.steps} timed steps x {args.rounds} rounds; new LoRA r=16, "
          "beta 0.1, sigmoid loss")
    for key, label in (("plain", "plain TRL DPOTrainer        "), ("project", "project DPO job path        ")):
        r = best[key]
        print(f"{label}: {r['tokens_per_s']:8.1f} tokens/s  {r['pairs_per_s']:6.3f} pairs/s   (rounds: "
              + ", ".join(f"{x['tokens_per_s']:.1f}" for x in results[key]) + " tokens/s)")
    print(f"ratio project / plain: {best['project']['tokens_per_s'] / best['plain']['tokens_per_s']:.2f}")
    # On a machine shared with other work one slow or fast round moves the best-of figure; the median of the
    # alternating rounds is the steadier comparison, so both are printed.
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in results.items()}
    print(f"median of rounds: plain {med['plain']:.1f}, project {med['project']:.1f} tokens/s, "
          f"ratio {med['project'] / med['plain']:.2f}")
    # CPU time counts only this process's work, so it is steadier than wall time on a machine shared with others.
    cpu = {k: max(r["tokens_per_cpu_s"] for r in v) for k, v in results.items()}
    print(f"tokens per CPU-second: plain {cpu['plain']:.1f}, project {cpu['project']:.1f}, "
          f"ratio {cpu['project'] / cpu['plain']:.2f}")


if __name__ == "__main__":
    main()
