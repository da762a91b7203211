"""Many processes on one machine: tokens/s of a run of ``--procs`` DDP processes (torchrun; gloo on a CPU, NCCL on
GPUs) beside the 1-process run on the same data, and the time from launch to the first step of each.

    .venv/bin/python bench/ddp.py [--procs 2] [--steps 12] [--batch 4] [--model embedded:SmolLM2-135M-Instruct]
    .venv/bin/python bench/ddp.py --tiny      # a small random Llama (2 layers, hidden 64): the path, not the model

One fresh workspace (a temporary folder) with the demo project; both runs go through the real queue
(core.train.runs.launch, as the Train page's button), the 1-process run first. They share the global batch:
``--batch`` examples per step for one process, ``--batch / --procs`` on each of the ``--procs`` processes.
tokens/s is the mean of the live panel's figure (metrics.jsonl, real tokens of every process) over the steps after
the first; "launch to first step" is from the launch call to the first step's metrics line (process start, imports,
model load, data, the first evaluation and the first step: what a user waits for after pressing Train).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_once(user_id: int, project_id: int, version_id: int, args, procs: int) -> dict:
    """One run through the queue; its tokens/s, launch-to-first-step and duration."""
    from sqlmodel import Session

    from core.jobs.queue import get_job, read_metrics, reconcile
    from core.train.config import preset_config
    from core.train.runs import launch
    from storage.db import get_engine
    from storage.models import User

    cfg = preset_config("quick", base_model=args.model, dataset_version_id=version_id, max_steps=args.steps,
                        per_device_batch_size=args.batch // procs, procs_per_node=procs, max_validation_examples=4,
                        logging_steps=1, save_steps=args.steps)
    with Session(get_engine(), expire_on_commit=False) as session:
        t0 = time.time()
        job = launch(session, session.get(User, user_id), project_id, cfg, name=f"bench-{procs}", trusted_paths=True)
        while job.status not in ("succeeded", "failed", "canceled"):
            time.sleep(1)
            reconcile(session)
            session.expire_all()
            job = get_job(session, job.id)
        if job.status != "succeeded":
            raise SystemExit(f"the {procs}-process run {job.status}: {job.error}")
        rows = [r for r in read_metrics(job) if r.get("loss") is not None]
    speeds = [r["tokens_per_s"] for r in rows if r["step"] > 1 and r.get("tokens_per_s")]
    return {"procs": procs, "tokens_per_s": round(statistics.mean(speeds), 1) if speeds else None,
            "launch_to_first_step_s": round(rows[0]["time"] - t0, 1), "steps": rows[-1]["step"],
            "loss_last": rows[-1]["loss"], "duration_s": round(time.time() - t0, 1)}


def tiny_model(out: Path) -> str:
    """A randomly initialised 2-layer Llama (hidden 64) with the embedded tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.basemodel import load_tokenizer

    tokenizer = load_tokenizer()
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=len(tokenizer), max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2, help="processes of the DDP run (default 2)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps of each run")
    parser.add_argument("--batch", type=int, default=4, help="global batch (examples per step), split over --procs")
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct", help="base model of both runs")
    parser.add_argument("--tiny", action="store_true", help="a small random Llama with the embedded tokenizer "
                        "instead of --model (on a busy CPU: measures the launch path and DDP's overhead)")
    args = parser.parse_args()
    if args.batch % args.procs:
        raise SystemExit("--batch must be a multiple of --procs (the same global batch for both runs).")
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as home:
        os.environ["FINETUNE_STUDIO_HOME"] = home
        os.environ.pop("DATABASE_URL", None)
        from sqlmodel import Session, select

        from core.curate.datasets import get_version
        from core.train.hardware import detect
        from core.projects import get_project
        from core.startup import init_workspace
        from storage.db import get_engine
        from storage.models import User

        init = init_workspace(with_demo=True)
        if args.tiny:
            args.model = tiny_model(Path(home) / "models" / "tiny-llama")
        with Session(get_engine(), expire_on_commit=False) as session:
            user = session.exec(select(User).where(User.username == init.admin_username)).one()
            project = get_project(session, init.demo_project_id)
            version = get_version(session, "demo-v1", project)
        hw = detect()
        print(f"machine: {hw.describe()}; model {args.model}; {args.steps} steps of global batch {args.batch}")
        results = [run_once(user.id, project.id, version.id, args, procs) for procs in (1, args.procs)]
    base = results[0]["tokens_per_s"] or 0
    for r in results:
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base and r["tokens_per_s"] else "-"
        print(f"{r['procs']} process(es): {r['tokens_per_s']} tokens/s ({ratio} of 1 process), launch to first step "
              f"{r['launch_to_first_step_s']} s, {r['steps']} steps in {r['duration_s']} s, last loss {r['loss_last']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
