"""Training throughput: the project's trainer (core.train, TRL SFTTrainer) vs a plain transformers+peft loop.

Both run in this one process on the same model, the same LoRA config, the same examples in the same batch
size and max length, the same optimizer (AdamW) and precision. The baseline is a hand-written torch loop:
padded batches, loss on the answer tokens only. Throughput counts real (non-padding) tokens per second over
the timed steps (the first step is a warm-up). Prints tokens/s for each, the ratio, and MFU on a GPU.

    python bench/train_throughput.py                 # embedded SmolLM2-135M-Instruct (real weights)
    python bench/train_throughput.py --random        # the same shape with random weights
    python bench/train_throughput.py --shape llama3-8b   # GPU: random Llama-3-8B-shaped model in bf16
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def demo_records(n: int) -> list[dict]:
    text = (ROOT / "core" / "curate" / "data" / "demo_utility.jsonl").read_text()
    lines = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    out = []
    for i in range(n):
        msgs = lines[i % len(lines)]["messages"]
        out.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
    return out


def make_model(args, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from core.basemodel import load_config, load_model

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    if args.shape == "llama3-8b":
        config = LlamaConfig(**LLAMA3_8B)
        # Meta-device construction, then materialise directly on the GPU: no 32 GB of fp32 on the host.
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model = model.to_empty(device="cuda")
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
        model.model.rotary_emb.__init__(config, device="cuda")  # buffers are not parameters: rebuild them
        return model
    if args.random:
        config = load_config(args.model)
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)
    return load_model(args.model, dtype=dtype)


def flops_per_token(config, seq: int) -> float:
    """6N for a training step (forward + backward) plus attention's 12 * layers * hidden * seq."""
    from core.train.hardware import param_counts

    n = param_counts(config)["total"]
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq


def bench_project(args, tokenizer, records, model) -> dict:
    """The project's trainer, built exactly as `python -m core.train` builds it."""
    from transformers import TrainerCallback

    from core.train.train_job import build_trainer, setup
    from core.train.config import TrainConfig

    cfg = TrainConfig(dataset_version_id=1, base_model=args.model, method="lora", max_steps=args.steps + 1,
                      per_device_batch_size=args.batch, max_length=args.max_length, learning_rate=2e-4,
                      save_steps=10_000, packing=args.packing, precision=args.precision, warmup_ratio=0.0,
                      lr_scheduler="constant")
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    ctx = setup(run_dir, cfg, {"train": records, "validation": []}, model=model, tokenizer=tokenizer)
    ctx.sft_args.report_to = []  # the bench measures training, not TensorBoard writes
    ctx.sft_args.save_strategy = "no"
    marks: list[tuple[float, float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            _sync()
            marks.append((time.perf_counter(), time.process_time(), state.num_input_tokens_seen))

    trainer = build_trainer(ctx)
    trainer.add_callback(Clock())
    trainer.train()
    (t0, c0, n0), (t1, c1, n1) = marks[0], marks[-1]
    return {"tokens_per_s": (n1 - n0) / (t1 - t0), "tokens_per_cpu_s": (n1 - n0) / (c1 - c0),
            "steps": len(marks) - 1, "padding_free": ctx.padding_free}


def bench_plain(args, tokenizer, records, model) -> dict:
    """A hand-written loop: same LoRA config, batches, precision, AdamW; loss on the answer tokens only."""
    import torch
    from peft import LoraConfig, get_peft_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM")).to(device)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    examples = []
    for rec in records:
        prompt = tokenizer.apply_chat_template(rec["prompt"], tokenize=True, add_generation_prompt=False)
        full = tokenizer.apply_chat_template(rec["prompt"] + rec["completion"], tokenize=True)
        prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
        full = (full["input_ids"] if hasattr(full, "keys") else full)[:args.max_length]
        labels = [-100] * min(len(prompt), len(full)) + full[len(prompt):]
        examples.append((full, labels))
    pad = tokenizer.pad_token_id
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if args.precision == "bf16" else _null()
    marks = []
    for step in range(args.steps + 1):
        batch = [examples[(step * args.batch + i) % len(examples)] for i in range(args.batch)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch], device=device)
        labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch], device=device)
        with autocast:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync()
        marks.append((time.perf_counter(), time.process_time(), int(mask.sum())))
    tokens = sum(n for _, _, n in marks[1:])
    return {"tokens_per_s": tokens / (marks[-1][0] - marks[0][0]),
            "tokens_per_cpu_s": tokens / (marks[-1][1] - marks[0][1]), "steps": len(marks) - 1}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--random", action="store_true", help="same shape, random weights")
    parser.add_argument("--shape", choices=["llama3-8b"], help="random weights in this shape (GPU)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--packing", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--rounds", type=int, default=2, help="alternate baseline/project this many times; best kept")
    args = parser.parse_args()

    import torch

    from core.basemodel import load_tokenizer

    if args.shape and not torch.cuda.is_available():
        sys.exit("--shape llama3-8b needs a GPU")
    args.precision = "bf16" if torch.cuda.is_available() else "fp32"
    tokenizer = load_tokenizer()
    records = demo_records(args.batch * (args.steps + 1))
    results: dict[str, list[dict]] = {"plain": [], "project": []}
    for _ in range(args.rounds):
        results["plain"].append(bench_plain(args, tokenizer, records, make_model(args, tokenizer)))
        _free()
        results["project"].append(bench_project(args, tokenizer, records, make_model(args, tokenizer)))
        _free()
    plain = max(r["tokens_per_s"] for r in results["plain"])
    project = max(r["tokens_per_s"] for r in results["project"])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    what = args.shape or (f"{args.model} (random weights)" if args.random else args.model)
    print(f"model: {what}; device: {device}; precision {args.precision}; batch {args.batch}, "
          f"max_length {args.max_length}, {args.steps} timed steps x {args.rounds} rounds; "
          f"project padding-free: {results['project'][0]['padding_free']}")
    print(f"plain transformers+peft loop: {plain:10.1f} tokens/s   (rounds: "
          + ", ".join(f"{r['tokens_per_s']:.1f}" for r in results["plain"]) + ")")
    print(f"project trainer (core.train): {project:10.1f} tokens/s   (rounds: "
          + ", ".join(f"{r['tokens_per_s']:.1f}" for r in results["project"]) + ")")
    print(f"ratio project / plain: {project / plain:.2f}")
    if not torch.cuda.is_available():
        # Wall time swings when other processes share the cores; CPU seconds spent by this process do much less.
        plain_cpu = max(r["tokens_per_cpu_s"] for r in results["plain"])
        project_cpu = max(r["tokens_per_cpu_s"] for r in results["project"])
        print(f"per CPU-second of this process: plain {plain_cpu:.1f}, project {project_cpu:.1f} tokens; "
              f"ratio {project_cpu / plain_cpu:.2f}")
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak:
            from transformers import LlamaConfig

            from core.basemodel import load_config

            config = LlamaConfig(**LLAMA3_8B) if args.shape else load_config(args.model)
            fpt = flops_per_token(config, args.max_length)
            print(f"MFU (6N + attention, peak {peak:.0f} TFLOP/s bf16): plain {plain * fpt / peak / 1e12:.1%}, "
                  f"project {project * fpt / peak / 1e12:.1%}")


def _free():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
