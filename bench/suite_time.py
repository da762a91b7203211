"""The whole test suite's wall time at two commits, back to back, on this machine.

    .venv/bin/python bench/suite_time.py 0f54ecd 93c9151

Each commit is checked out into its own temporary git worktree; the suite runs there with this checkout's virtual
environment and PYTHONPATH set to the worktree (job processes the tests start import that tree's code too). Run it
on an idle machine: the figures are only comparable when nothing else competes for the cores.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_suite(commit: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="fs-suite-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
        try:
            env = dict(os.environ, PYTHONPATH=str(tree))
            env.pop("DATABASE_URL", None)
            t = time.time()
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=1200"],
                                  cwd=tree, env=env, capture_output=True, text=True)
            wall = time.time() - t
            last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
            if proc.returncode != 0:
                last += f"  [exit {proc.returncode}]"
            return wall, last
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline", help="the commit to compare against")
    ap.add_argument("candidate", nargs="?", default="HEAD")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    for label, commit in (("baseline", args.baseline), ("candidate", args.candidate)):
        wall, summary = run_suite(commit)
        rows.append((label, commit, wall, summary))
        print(f"{label:<10} {commit:<12} {wall:8.1f} s   {summary}", flush=True)
    base, cand = rows[0][2], rows[1][2]
    tests = [re.search(r"(\d+) passed", r[3]) for r in rows]
    print(f"\ncandidate is {100 * (base - cand) / base:.1f}% faster than baseline"
          + ("" if not all(tests) else f" ({tests[0].group(1)} vs {tests[1].group(1)} tests)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
