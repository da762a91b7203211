"""The memory estimate beside the measured peak: core.train.hardware.estimate_peak_memory (what the Train page shows and
a launch checks) vs the peak RSS of a fresh process that trains the embedded model for two steps with the
project's trainer (core.train.train_job setup -> fit), on the demo data. Each case runs in its own process, so the
peak is that case's alone. Two optimizer steps reach the steady peak (weights, AdamW states, one step's
activations); more steps only add time.

    python bench/memory_estimate.py                         # quick preset: LoRA, batch 2 x 256 tokens
    python bench/memory_estimate.py --batch 4 --length 512 --method full
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def child(args) -> dict:
    """Train two steps in this process; return the estimate the worker made and the measured peak RSS."""
    from bench.train_throughput import demo_records
    from core.train.config import preset_config
    from core.train.train_job import fit, setup

    cfg = preset_config("quick", dataset_version_id=1, method=args.method, per_device_batch_size=args.batch,
                        max_length=args.length, max_steps=2, max_validation_examples=0, save_steps=1000,
                        packing="off")
    records = demo_records(4 * args.batch)
    # Every example filled to max_length, so the activations the estimate assumes are really there.
    for r in records:
        r["completion"] = [{"role": "assistant", "content": " ".join(["energy"] * args.length)}]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = setup(Path(tmp), cfg, {"train": records, "validation": []})
        fit(ctx)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"estimate": ctx.estimate, "measured_peak_mb": round(peak),
            "max_length": ctx.max_length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    out = subprocess.run([sys.executable, __file__, "--child", "--method", args.method, "--batch", str(args.batch),
                          "--length", str(args.length)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    est = got["estimate"]
    parts = ", ".join(f"{k[:-3]} {est[k]:,}" for k in est if k.endswith("_mb") and k != "peak_mb")
    print(f"embedded SmolLM2-135M-Instruct, {args.method}, batch {args.batch} x {got['max_length']} tokens, fp32 CPU")
    print(f"  parameters {est['params']:,} (trainable {est['trainable_params']:,})")
    print(f"  estimate  {est['peak_mb']:,} MB  ({parts})")
    print(f"  measured  {got['measured_peak_mb']:,} MB peak RSS  -> estimate / measured = "
          f"{est['peak_mb'] / got['measured_peak_mb']:.2f}")

if __name__ == "__main__":
    main()
