"""Bench: the time from pressing Train to the run's first step, on this machine and on a Ray cluster.

    .venv/bin/python bench/targets.py [--steps 3]

One fresh workspace (a temporary folder) with a tiny random Llama and a frozen 8-example dataset version; the same
run (LoRA, ``--steps`` steps, length 128) is launched through ``core.train.runs.launch``, the function the Train
page's button calls, three times: on this machine (the local queue: one process), and on a local Ray cluster
started here (a head and a second node, one CPU each, tests/fixtures_ray.py) with 1 node and with 2 nodes (one rank
each). Prints, for each, the seconds from the launch call to the first line of metrics.jsonl and to succeeded.
The Ray figures include what a cluster adds: the job's runtime environment, the driver, the placement group, one
actor per node and torchrun's rendezvous; the cluster itself is started before the clock runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed_run(session, user, project, cfg, name: str) -> tuple[float, float, str]:
    """(seconds to the first step, seconds to the end, final status) of one launch."""
    from core.jobs.queue import get_job, read_metrics, reconcile
    from core.train.runs import launch

    t0 = time.perf_counter()
    job = launch(session, user, project.id, cfg, name=name, trusted_paths=True)
    first = None
    while True:
        reconcile(session)
        session.expire_all()
        job = get_job(session, job.id)
        if first is None and read_metrics(job):
            first = time.perf_counter() - t0
        if job.status in ("succeeded", "failed", "canceled"):
            return first or float("nan"), time.perf_counter() - t0, job.status
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-targets-"))
    os.environ["FINETUNE_STUDIO_HOME"] = str(folder / "ws")
    os.environ.pop("DATABASE_URL", None)

    from sqlmodel import Session

    from core.accounts import first_admin
    from core.jobs.targets.registry import add_target
    from core.projects import create_project
    from core.startup import init_workspace
    from core.train.config import preset_config
    from storage.db import get_engine
    from tests.fixtures_models import build_tiny_model, make_dataset_version
    from tests.fixtures_ray import LocalRay, free_ports

    init_workspace(with_demo=False)
    model = build_tiny_model(folder / "tiny")
    cluster = LocalRay().start()
    try:
        with Session(get_engine(), expire_on_commit=False) as s:
            admin = first_admin(s)
            project = create_project(s, admin, "bench", "targets bench")
            version = make_dataset_version(s, project, admin, n_train=8, n_validation=1)
            add_target(s, admin, "ray-here", "ray", {"address": cluster.address, "same_host": True,
                                                    "master_port": free_ports(1)[0]})
            while len(cluster.alive_nodes()) < 2:
                time.sleep(0.5)
            base = dict(base_model=str(model), dataset_version_id=version.id, max_length=128, max_steps=args.steps)
            rows = []
            for label, extra in (("this machine", {}), ("Ray, 1 node", {"target": "ray-here"}),
                                 ("Ray, 2 nodes x 1 rank", {"target": "ray-here", "nodes": 2})):
                first, total, status = timed_run(s, admin, project, preset_config("quick", **base, **extra), label)
                rows.append((label, first, total, status))
                print(f"{label:24s} first step after {first:6.1f} s, {status} after {total:6.1f} s", flush=True)
    finally:
        cluster.stop()
    local = rows[0][1]
    print("\ntime from Train to the first step (same tiny run, same machine, 2 CPU cores):")
    for label, first, _, status in rows:
        print(f"  {label:24s} {first:6.1f} s   ({first - local:+.1f} s vs this machine; {status})")


if __name__ == "__main__":
    main()
