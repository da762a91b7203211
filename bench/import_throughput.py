"""Bench: import a generated 100,000-record chat JSONL; print records/s and peak RSS beside a baseline.

    .venv/bin/python bench/import_throughput.py [--records 100000]

Baseline (same run, same file): ``json.loads`` of every line plus a plain sqlite3 ``executemany`` of the
raw lines into a one-column table: the least any importer has to do. The project figure includes
validation, normalisation, content hashes, exact and near-duplicate detection (MinHash LSH), token
estimates and the ImportRecord. Targets: >= 5,000 records/s and < 300 MB peak RSS. Each measurement runs
in its own subprocess so the peak RSS of one does not hide the other.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("account bill meter reading tariff payment refund engineer visit outage gas electric smart direct debit "
         "balance credit estimate supply boiler safety emergency move home contract switch price cap discount "
         "warm home priority register vulnerable password login app portal complaint ombudsman").split()


def generate(path: Path, n: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            q = " ".join(rnd.choices(WORDS, k=rnd.randint(8, 30)))
            a = " ".join(rnd.choices(WORDS, k=rnd.randint(30, 90)))
            rec = {"messages": [{"role": "system", "content": "You are a helpful support assistant."},
                                {"role": "user", "content": f"#{i} {q}?"},
                                {"role": "assistant", "content": a + "."}],
                   "tags": [rnd.choice(["billing", "meter", "outage", "moving"])]}
            fh.write(json.dumps(rec) + "\n")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_baseline(path: Path, tmp: Path) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    conn = sqlite3.connect(tmp / "baseline.db")
    conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, data TEXT)")
    batch, n = [], 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            json.loads(line)
            batch.append((line,))
            n += 1
            if len(batch) >= 2000:
                conn.executemany("INSERT INTO raw (data) VALUES (?)", batch)
                batch = []
    conn.executemany("INSERT INTO raw (data) VALUES (?)", batch)
    conn.commit()
    conn.close()
    seconds = time.perf_counter() - t0
    return {"records": n, "seconds": seconds, "cpu_s": time.process_time() - c0, "records_per_s": n / seconds,
            "peak_rss_mb": peak_mb()}


def run_project(path: Path, tmp: Path) -> dict:
    os.environ["FINETUNE_STUDIO_HOME"] = str(tmp / "ws")
    os.environ["FINETUNE_STUDIO_IMPORT_ROOTS"] = str(tmp)  # the generated file lives here (import by path)
    sys.path.insert(0, str(ROOT))
    from sqlmodel import Session

    from core.accounts import first_admin
    from core.curate.importing import import_file
    from core.projects import create_project
    from core.startup import init_workspace
    from storage.db import get_engine

    init_workspace(with_demo=False)
    with Session(get_engine(), expire_on_commit=False) as session:
        admin = first_admin(session)
        project = create_project(session, admin, "bench", "")
        last = [0.0]

        def progress(fraction, message):
            if fraction - last[0] >= 0.25 or fraction >= 1.0:
                last[0] = fraction
                print(f"  {fraction:4.0%} {message}", file=sys.stderr, flush=True)

        t0, c0 = time.perf_counter(), time.process_time()
        report = import_file(session, admin, project, path, progress=progress)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"records": report.n_read, "imported": report.n_imported, "near_duplicates": report.n_near_duplicates,
            "seconds": seconds, "cpu_s": cpu, "records_per_s": report.n_read / seconds, "peak_rss_mb": peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--_child", choices=["baseline", "project"], help=argparse.SUPPRESS)
    parser.add_argument("--_file", help=argparse.SUPPRESS)
    parser.add_argument("--_tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        fn = run_baseline if args._child == "baseline" else run_project
        print(json.dumps(fn(Path(args._file), Path(args._tmp))))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "chat.jsonl"
        generate(data, args.records)
        print(f"file: {args.records:,} chat records, {data.stat().st_size / 2**20:.1f} MiB; cpus: {os.cpu_count()}")
        results = {}
        for kind in ("baseline", "project"):
            out = subprocess.run([sys.executable, __file__, "--_child", kind, "--_file", str(data), "--_tmp", tmp_name],
                                 check=True, stdout=subprocess.PIPE, text=True)
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        b, p = results["baseline"], results["project"]
        # CPU seconds beside wall seconds: on a shared machine the wall clock also counts other processes.
        print(f"{'':10} {'records/s':>10} {'seconds':>8} {'cpu s':>6} {'records/cpu-s':>14} {'peak RSS MB':>12}")
        for name, r, what in (("baseline", b, "json.loads + sqlite3 executemany of raw lines"),
                              ("project", p, "core.curate.importing.import_file")):
            print(f"{name:10} {r['records_per_s']:>10,.0f} {r['seconds']:>8.1f} {r['cpu_s']:>6.1f} "
                  f"{r['records'] / r['cpu_s']:>14,.0f} {r['peak_rss_mb']:>12.0f}   {what}")
        print(f"project: {p['imported']:,} imported, {p['near_duplicates']} near duplicates flagged")
        ok = p["records_per_s"] >= 5000 and p["peak_rss_mb"] < 300
        print(f"target >= 5,000 records/s and < 300 MB peak RSS: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
