"""A small job for the Slurm target's tests: ``python -m tests.slurm_job --run-dir DIR``.

It prints and records (``<run_dir>/ranks/<rank>.json``) which rank of how many it is and on which Slurm node; with
more than one rank it joins the process group torchrun set up (gloo) and sums the ranks, proving the rendezvous;
then it sleeps ``<run_dir>/job.json``'s "sleep" seconds (a job to cancel or to kill a node under) and exits with its
"exit" code."""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    run_dir = Path(parser.parse_args().run_dir)
    plan = json.loads((run_dir / "job.json").read_text()) if (run_dir / "job.json").is_file() else {}
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    record = {"rank": rank, "world_size": world, "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
              "node": os.environ.get("SLURMD_NODENAME", ""), "job_id": os.environ.get("FINETUNE_STUDIO_JOB_ID"),
              "hostile": os.environ.get("HOSTILE")}
    if world > 1:
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo")
        total = torch.tensor([rank])
        dist.all_reduce(total)
        record["rank_sum"] = int(total.item())
        dist.destroy_process_group()
    print("rank", json.dumps(record), flush=True)
    (run_dir / "ranks").mkdir(exist_ok=True)
    (run_dir / "ranks" / f"{rank}.json").write_text(json.dumps(record))
    time.sleep(float(plan.get("sleep", 0)))
    return int(plan.get("exit", 0))


if __name__ == "__main__":
    raise SystemExit(main())
