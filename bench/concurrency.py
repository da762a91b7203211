"""Bench: 20 annotators saving while a 300,000-record import and a training heartbeat run beside them.

    .venv/bin/python bench/concurrency.py [--savers 20] [--seconds 30] [--records 300000]

One run, two phases on one fresh workspace (a temporary folder):

- baseline: ``--savers`` annotator processes save their own example through ``core.curate.curation.save_example``
  (optimistic locking, as the Annotate page does) for ``--seconds``, each pausing ``--think`` seconds between saves
  like a person pressing Save; nothing else runs;
- project: the same savers again, while one process imports a generated ``--records``-record chat JSONL through
  ``core.curate.importing.import_file`` (short batches, rows hidden until the end) and another heartbeats a
  running job every second the way a training worker's keep-alive thread does (``storage.db.retry_busy`` around
  ``core.jobs.worker.heartbeat``).

Prints saves/s, errors and p50/p99/max save latency for both phases, the import's duration and the heartbeats'
worst latency. Targets: 0 errors, p99 < 250 ms with the import running.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.import_throughput import generate  # noqa: E402 - the same generated chat records as the import bench


def _fresh_engine():
    from storage.db import reset_engines

    reset_engines()  # a forked child must not share the parent's SQLite connections


def saver(user_id: int, example_id: int, seconds: float, think: float, start_at: float, out) -> None:
    """One annotator: save, pause, save... until the time is up; report every latency and error."""
    from sqlmodel import Session

    from core.curate.curation import save_example
    from storage.db import get_engine
    from storage.models import Example, User

    _fresh_engine()
    latencies, errors = [], []
    with Session(get_engine(), expire_on_commit=False) as s:
        user = s.get(User, user_id)
        version = s.get(Example, example_id).version
    while time.time() < start_at:
        time.sleep(0.01)
    deadline = start_at + seconds
    n = 0
    while time.time() < deadline:
        n += 1
        t0 = time.perf_counter()
        try:
            with Session(get_engine(), expire_on_commit=False) as s:
                version = save_example(s, user, example_id, expected_version=version, system="", turns=[
                    {"role": "user", "content": f"Question of {user.username}?"},
                    {"role": "assistant", "content": f"Answer {n} of {user.username}."}]).version
        except Exception as err:  # noqa: BLE001 - every failure is counted and printed
            errors.append(f"{type(err).__name__}: {err}")
        latencies.append(time.perf_counter() - t0)
        time.sleep(think)
    out.put({"latencies": latencies, "errors": errors})


def importer(user_id: int, project_id: int, path: str, out) -> None:
    from sqlmodel import Session

    from core.curate.importing import import_file
    from storage.db import get_engine
    from storage.models import Project, User

    _fresh_engine()
    t0 = time.perf_counter()
    with Session(get_engine(), expire_on_commit=False) as s:
        report = import_file(s, s.get(User, user_id), s.get(Project, project_id), path)
    out.put({"imported": report.n_imported, "read": report.n_read, "seconds": time.perf_counter() - t0})


def heartbeater(job_id: int, stop_at: float, out) -> None:
    """A training worker's keep-alive: a heartbeat with the step every second, retried while the database is busy."""
    from core.jobs.worker import heartbeat
    from storage.db import retry_busy

    _fresh_engine()
    latencies, errors, step = [], [], 0
    while time.time() < stop_at:
        step += 1
        t0 = time.perf_counter()
        try:
            retry_busy(lambda: heartbeat(job_id, step=step, total_steps=10_000), give_up_after_s=90)  # noqa: B023 - called in this iteration
        except Exception as err:  # noqa: BLE001
            errors.append(f"{type(err).__name__}: {err}")
        latencies.append(time.perf_counter() - t0)
        time.sleep(1.0)
    out.put({"latencies": latencies, "errors": errors})


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_savers(ctx, savers: list[tuple[int, int]], seconds: float, think: float, extra=()) -> dict:
    out = ctx.Queue()
    start_at = time.time() + 2.0  # every saver is forked and connected before the clock starts
    procs = [ctx.Process(target=saver, args=(uid, ex_id, seconds, think, start_at, out)) for uid, ex_id in savers]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r["latencies"])
    errors = [e for r in results for e in r["errors"]]
    return {"saves": len(lat) - len(errors), "errors": len(errors), "first_errors": errors[:3],
            "saves_per_s": (len(lat) - len(errors)) / seconds, "p50_ms": 1000 * percentile(lat, 0.50),
            "p99_ms": 1000 * percentile(lat, 0.99), "max_ms": 1000 * (lat[-1] if lat else float("nan"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--savers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--think", type=float, default=0.4, help="pause between one annotator's saves (s)")
    parser.add_argument("--records", type=int, default=300_000)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    os.environ["FINETUNE_STUDIO_HOME"] = str(tmp / "ws")
    os.environ["FINETUNE_STUDIO_IMPORT_ROOTS"] = str(tmp)
    os.environ.pop("DATABASE_URL", None)
    from sqlmodel import Session

    from core.accounts import create_user, first_admin
    from core.curate.curation import create_example
    from core.projects import create_project
    from core.startup import init_workspace
    from storage.db import get_engine, reset_engines
    from storage.models import Job, JobStatus, utcnow

    t0 = time.time()
    data = tmp / "import.jsonl"
    generate(data, args.records)
    print(f"generated {args.records:,} records ({data.stat().st_size / 2**20:.0f} MiB) in {time.time() - t0:.0f} s",
          flush=True)
    init_workspace(with_demo=False)
    with Session(get_engine(), expire_on_commit=False) as s:
        admin = first_admin(s)
        project = create_project(s, admin, "Bench", "")
        savers = []
        for i in range(args.savers):
            user = create_user(s, admin, f"annotator{i}", "bench-password-1", "annotator")
            ex = create_example(s, user, project, turns=[{"role": "user", "content": f"Question {i}?"},
                                                         {"role": "assistant", "content": f"Answer {i}."}])
            savers.append((user.id, ex.id))
        job = Job(project_id=project.id, kind="train", name="heartbeat", status=JobStatus.running.value,
                  started_at=utcnow(), heartbeat_at=utcnow())
        s.add(job)
        s.commit()
        admin_id, project_id, job_id = admin.id, project.id, job.id
    reset_engines()
    ctx = mp.get_context("fork")

    base = run_savers(ctx, savers, args.seconds, args.think)
    out = ctx.Queue()
    imp = ctx.Process(target=importer, args=(admin_id, project_id, str(data), out))
    imp.start()
    beat_out = ctx.Queue()
    beats = ctx.Process(target=heartbeater, args=(job_id, time.time() + args.seconds + 2, beat_out))
    beats.start()
    time.sleep(1.0)  # the import is reading and writing its first batches
    busy = run_savers(ctx, savers, args.seconds, args.think)
    beat = beat_out.get()
    beats.join()
    imported = out.get()
    imp.join()

    beat_lat = sorted(beat["latencies"])
    print(f"\n{args.savers} annotators saving for {args.seconds:.0f} s each phase (think time {args.think} s)")
    print(f"{'':<34}{'saves':>7}{'saves/s':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for label, r in (("baseline: savers only", base), ("project: + import + heartbeat", busy)):
        print(f"{label:<34}{r['saves']:>7}{r['saves_per_s']:>9.1f}{r['errors']:>8}{r['p50_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}")
        for err in r["first_errors"]:
            print("   error:", err)
    print(f"import: {imported['imported']:,} of {imported['read']:,} records in {imported['seconds']:.1f} s "
          f"({imported['read'] / imported['seconds']:,.0f} records/s, beside the savers)")
    print(f"heartbeat: {len(beat_lat)} beats, {len(beat['errors'])} errors, worst {1000 * beat_lat[-1]:.0f} ms")
    ok = busy["errors"] == 0 and busy["p99_ms"] < 250 and not beat["errors"]
    print("target (0 errors, p99 < 250 ms with the import running):", "met" if ok else "NOT met")
    print(json.dumps({"baseline": base, "project": busy, "import": imported,
                      "heartbeat": {"beats": len(beat_lat), "errors": len(beat["errors"]),
                                    "worst_ms": 1000 * beat_lat[-1]}}, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
