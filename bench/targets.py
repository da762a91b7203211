"""Bench: the time from pressing Train to the run's first step, on this machine, a Ray cluster and a Slurm cluster.

    .venv/bin/python bench/targets.py [--steps 3]

One fresh workspace (a temporary folder) with a tiny random Llama and a frozen 8-example dataset version; the same
run (LoRA, ``--steps`` steps, length 128) is launched through ``core.train.runs.launch``, the function the Train
page's button calls, three times: on this machine (the local queue: one process), and on a local Ray cluster
started here (a head and a second node, one CPU each, tests/fixtures_ray.py) with 1 node and with 2 nodes (one rank
each), then on a local Slurm (a controller and two slurmd nodes, tests/fixtures_slurm.py; skipped when slurm-wlm is
not installed) with 1 node and with 2 nodes. Prints, for each, the seconds from the launch call to the first line
of metrics.jsonl and to succeeded.
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
    from tests.fixtures_slurm import LocalSlurm, missing_programs

    init_workspace(with_demo=False)
    model = build_tiny_model(folder / "tiny")
    cluster = LocalRay().start()
    slurm = None if missing_programs() else LocalSlurm(folder / "slurm")
    try:
        with Session(get_engine(), expire_on_commit=False) as s:
            admin = first_admin(s)
            project = create_project(s, admin, "bench", "targets bench")
            version = make_dataset_version(s, project, admin, n_train=8, n_validation=1)
            add_target(s, admin, "ray-here", "ray", {"address": cluster.address, "same_host": True,
                                                    "master_port": free_ports(1)[0]})
            while len(cluster.alive_nodes()) < 2:
                time.sleep(0.5)
            runs = [("this machine", {}), ("Ray, 1 node", {"target": "ray-here"}),
                    ("Ray, 2 nodes x 1 rank", {"target": "ray-here", "nodes": 2})]
            if slurm is not None:
                (folder / "slurm").mkdir()
                slurm.start()
                add_target(s, admin, "slurm-here", "slurm", {"slurm_conf": str(slurm.conf), "nodes": 2,
                                                            "same_host": True, "time_limit": "00:10:00"})
                runs += [("Slurm, 1 node", {"target": "slurm-here"}),
                         ("Slurm, 2 nodes x 1 rank", {"target": "slurm-here", "nodes": 2})]
            else:
                print("Slurm is not installed (apt-get install -y slurm-wlm munge): its rows are left out", flush=True)
            base = dict(base_model=str(model), dataset_version_id=version.id, max_length=128, max_steps=args.steps)
            rows = []
            for label, extra in runs:
                first, total, status = timed_run(s, admin, project, preset_config("quick", **base, **extra), label)
                rows.append((label, first, total, status))
                print(f"{label:24s} first step after {first:6.1f} s, {status} after {total:6.1f} s", flush=True)
    finally:
        cluster.stop()
        if slurm is not None:
            slurm.stop()
    local = rows[0][1]
    print("\ntime from Train to the first step (same tiny run, same machine, 2 CPU cores):")
    for label, first, _, status in rows:
        print(f"  {label:24s} {first:6.1f} s   ({first - local:+.1f} s vs this machine; {status})")


if __name__ == "__main__":
    main()
