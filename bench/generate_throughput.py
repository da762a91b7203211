"""Bench: the generation job's batched generation vs a naive one-prompt-at-a-time ``model.generate`` loop.

    .venv/bin/python bench/generate_throughput.py [--random] [--prompts 32] [--max-new-tokens 64] [--batch-size 16]

Same model (the embedded SmolLM2-135M-Instruct by default; ``--random`` gives random weights of the same
shape, which never stops early), same prompts (the first user turns of the demo data, with their system
prompt, through the chat template), greedy, same max_new_tokens, in one run. Both count only real new tokens,
before the first end-of-sequence token. The project figure is ``core.evaluate.generate.generate_outputs``, the function
the generation job uses (left padding, length-sorted batches). Target: >= 2x new tokens/s on CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def demo_prompts(n: int) -> list[list[dict]]:
    """Prompts from the demo conversations: messages up to the first user turn (system prompt included)."""
    rows = [json.loads(line) for line in (ROOT / "core" / "curate" / "data" / "demo_utility.jsonl").read_text(
        encoding="utf-8").splitlines() if line.strip()]
    convs = []
    for rec in rows:
        msgs = rec["messages"]
        first_user = next(i for i, m in enumerate(msgs) if m["role"] == "user")
        convs.append([dict(m) for m in msgs[:first_user + 1]])
    return [convs[i % len(convs)] for i in range(n)]


def load(random_weights: bool, model_name: str | None):
    import torch
    from transformers import AutoModelForCausalLM

    from core.basemodel import load_config, load_model, load_tokenizer

    tokenizer = load_tokenizer(model_name)
    if random_weights:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(load_config(model_name), dtype=torch.float32)
    else:
        model = load_model(model_name)
    model.eval()
    return model, tokenizer


def naive(model, tokenizer, convs, max_new_tokens: int) -> tuple[int, float, list[str]]:
    """The baseline: one prompt at a time, no padding."""
    import torch

    from core.evaluate.generate import count_new_tokens, prompt_texts, stop_token_ids

    stops = stop_token_ids(model, tokenizer)
    tokens, texts = 0, []
    t0 = time.perf_counter()
    for text in prompt_texts(tokenizer, convs):
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=sorted(stops))
        new = out[0, enc["input_ids"].shape[1]:]
        n = count_new_tokens(new, stops)
        tokens += n
        texts.append(tokenizer.decode(new[:n], skip_special_tokens=True).strip())
    return tokens, time.perf_counter() - t0, texts


def batched(model, tokenizer, convs, max_new_tokens: int, batch_size: int) -> tuple[int, float, list[str]]:
    """The project: core.evaluate.generate.generate_outputs, as the generation job calls it."""
    from core.evaluate.generate_config import Decoding
    from core.evaluate.generate import generate_outputs

    t0 = time.perf_counter()
    res = generate_outputs(model, tokenizer, convs, Decoding(max_new_tokens=max_new_tokens), batch_size=batch_size)
    return sum(r["n_new_tokens"] for r in res), time.perf_counter() - t0, [r["text"] for r in res]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", action="store_true", help="random weights of the same shape")
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from core.workspace import offline_env

    offline_env()
    import torch

    model, tokenizer = load(args.random, args.model)
    convs = demo_prompts(args.prompts)
    print(f"model: {args.model or 'embedded SmolLM2-135M-Instruct'}{' (random weights)' if args.random else ''}; "
          f"{len(convs)} prompts, greedy, max_new_tokens={args.max_new_tokens}, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    batched(model, tokenizer, convs[:2], 4, 2)  # warm-up (first-call allocations), not timed

    b_tokens, b_secs, b_texts = batched(model, tokenizer, convs, args.max_new_tokens, args.batch_size)
    b_rate = b_tokens / b_secs
    print(f"batched (project)   : {b_tokens:6d} new tokens in {b_secs:7.2f} s = {b_rate:8.1f} tokens/s "
          f"(batch size {args.batch_size})", flush=True)
    n_tokens, n_secs, n_texts = naive(model, tokenizer, convs, args.max_new_tokens)
    n_rate = n_tokens / n_secs
    same = sum(a == b for a, b in zip(b_texts, n_texts))
    print(f"naive one-at-a-time : {n_tokens:6d} new tokens in {n_secs:7.2f} s = {n_rate:8.1f} tokens/s")
    print(f"ratio               : {b_rate / n_rate:.2f}x (target >= 2x on CPU)")
    print(f"identical greedy outputs: {same}/{len(convs)}")


if __name__ == "__main__":
    main()
