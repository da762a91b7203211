"""What the default loop buys: the base model beside the fine-tuned one, measured by the demo's own fact checks.

From a fresh temporary workspace, through the core functions the pages call (no browser): seed the demo project
(import, approve, freeze demo-v1: what the first start does), launch the quick preset on demo-v1 as the Train
button does (a background job), freeze the test split as an eval set (its prompts get checks from the project's
facts to check), generate base + run answers (one background job, greedy), then read Results: the fact-check pass
rate with its bootstrap interval and ROUGE-L. Prints both systems side by side and the time each step took.

With ``--five-systems`` it answers "fine-tune or RAG?" (issue 24): it generates for base, base+prompt (the project's
team prompt, the fact sheet unless one is set), base+rag (the fact sheet's chunks retrieved per question), the run
and run+rag, and prints the five side by side: fact-check pass rate with its interval, ROUGE-L, prompt tokens and
seconds per answer (core.evaluate.systemtable, as Results shows them).

    .venv/bin/python bench/outcome.py [--preset quick] [--set learning_rate=1e-3 ...] [--max-new-tokens 160]
                                      [--workspace DIR] [--json out.json] [--no-base] [--five-systems]
                                      [--max-prompts N]

Targets (issue 11): quick wall time < 600 s on 2 CPU cores; run pass rate >= 0.5 and >= base + 0.4; ROUGE-L above
the base's.
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

TARGET_S = 600


def wait(job_id: int, label: str, poll_s: float = 2.0):
    """Poll the job row as the pages do (reconcile first) until it ends; returns the job."""
    from sqlmodel import Session

    from core.jobs.queue import LIVE, get_job, reconcile
    from storage.db import get_engine

    last = 0.0
    start = time.time()
    while True:
        with Session(get_engine(), expire_on_commit=False) as s:
            reconcile(s)
            job = get_job(s, job_id)
        if job.status not in LIVE:
            return job
        if time.time() - last > 60:
            print(f"  {label}: {job.status} after {time.time() - start:.0f} s", flush=True)
            last = time.time()
        time.sleep(poll_s)


def load_info() -> str:
    """The machine's load when the run starts: time figures on a shared machine need it beside them."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) / {five:.2f} (5 min)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="generation length (the Generate page default)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workspace", type=Path, help="where to build the workspace (default: a temporary folder)")
    ap.add_argument("--no-base", action="store_true", help="generate for the run only (faster when comparing recipes)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--run", type=int, help="evaluate this finished run of --workspace instead of training one")
    ap.add_argument("--five-systems", action="store_true", help="base, base+prompt, base+rag, run and run+rag, with "
                    "prompt tokens and seconds per answer")
    ap.add_argument("--max-prompts", type=int, default=0, help="evaluate the first N test prompts only (a dry check)")
    args = ap.parse_args()
    if args.five_systems and args.no_base:
        ap.error("--five-systems compares with the base model: drop --no-base")

    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="fs-outcome-")) / "ws"
    os.environ["FINETUNE_STUDIO_HOME"] = str(workspace)
    from sqlmodel import Session

    from core.accounts import first_admin
    from core.curate.datasets import get_version
    from core.evaluate.evalsets import create_eval_set_from_version
    from core.evaluate.generate import launch_generation
    from core.evaluate.results import results
    from core.projects import list_projects
    from core.startup import init_workspace
    from core.train.config import preset_config
    from core.train.settings import parse_set
    from core.train.runs import launch
    from storage.db import get_engine

    print(f"workspace: {workspace}\nmachine: {load_info()}")
    times: dict[str, float] = {}
    t = time.time()
    init_workspace()
    times["seed demo (import, approve, freeze demo-v1)"] = time.time() - t
    with Session(get_engine(), expire_on_commit=False) as s:
        admin = first_admin(s)
        project = list_projects(s)[0]
        version = get_version(s, "demo-v1", project)
        project_id, version_id = project.id, version.id
        cfg = preset_config(args.preset, dataset_version_id=version.id, **parse_set(args.set))
        print(f"demo-v1: {version.n_train} train / {version.n_validation} validation / {version.n_test} test")
        print(f"training: preset {args.preset} " + json.dumps({k: v for k, v in cfg.to_dict().items()
                                                                if k in parse_set(args.set) or k in (
                                                                    "learning_rate", "num_epochs", "lora_r",
                                                                    "max_length", "target_modules",
                                                                    "max_train_examples", "max_validation_examples")}))
        t = time.time()
        run_id = args.run or launch(s, admin, project_id, cfg).id
    run = wait(run_id, "training")
    train_s = time.time() - t if not args.run else (run.finished_at - run.created_at).total_seconds()
    times[f"{args.preset} training job (from the button, model load included)"] = train_s
    if run.status != "succeeded":
        print(f"training {run.status}: {run.error}")
        return 1
    metrics = (run.result or {}).get("metrics", {})
    systems = ([] if args.no_base else ["base"]) + [f"run:{run.id}"]
    if args.five_systems:
        systems = five_systems(run.id)
    with Session(get_engine(), expire_on_commit=False) as s:
        admin = first_admin(s)  # a fresh copy: the queue's commits expire the earlier session's rows
        if args.five_systems:
            print(team_prompt(s, project_id))
        t = time.time()
        es = create_eval_set_from_version(s, admin, project_id, version_id, f"held-out {time.time():.0f}")
        if args.max_prompts:
            keep_first(s, es.id, args.max_prompts)
        times["eval set from the test split, with fact checks"] = time.time() - t
        t = time.time()
        es_id = es.id
        gen = launch_generation(s, admin, es_id, systems, batch_size=args.batch_size,
                                decoding={"max_new_tokens": args.max_new_tokens})
    gen = wait(gen.id, "generation")
    times[f"generation ({', '.join(systems)}; greedy, {args.max_new_tokens} new tokens)"] = time.time() - t
    if gen.status != "succeeded":
        print(f"generation {gen.status}: {gen.error}")
        return 1
    with Session(get_engine(), expire_on_commit=False) as s:
        admin = first_admin(s)
        t = time.time()
        res = results(s, admin, es_id)
        times["results (checks, ROUGE-L, BLEU)"] = time.time() - t

    if args.five_systems:
        return print_five(res, times, args.json, {"workspace": str(workspace), "machine": load_info(),
                                                  "train_wall_s": round(train_s, 1), "train_metrics": metrics})
    checks = {r["system"]: r for r in res["checks"]["by_system"]}
    rouge = {r["system"]: r for r in res["metrics"]}
    print(f"\nquick steps: {metrics.get('global_step')}, train loss {metrics.get('train_loss'):.3f}, validation loss "
          f"{metrics.get('eval_loss_first'):.3f} -> {metrics.get('eval_loss_last'):.3f}")
    print(f"\n{'system':<28} {'fact checks passed':>20} {'95% interval':>14} {'ROUGE-L':>8} {'new tokens':>10}")
    figures = {"workspace": str(workspace), "machine": load_info(), "train_wall_s": round(train_s, 1),
               "train_metrics": metrics, "config": cfg.to_dict(), "times_s": {k: round(v, 1) for k, v in times.items()},
               "systems": {}}
    for system in systems:
        c, r = checks.get(system, {}), rouge.get(system, {})
        label = "base model" if system == "base" else f"fine-tuned ({args.preset}, run {run.id})"
        print(f"{label:<28} {c.get('passed', 0):>4}/{c.get('prompts', 0):<4} = {c.get('pass_rate', 0):.2f} "
              f"{c.get('lo', 0):>6.2f}-{c.get('hi', 0):.2f} {r.get('rouge_l') or 0:>8.3f} "
              f"{r.get('mean_new_tokens') or 0:>10.0f}")
        figures["systems"][system] = {"pass_rate": c.get("pass_rate"), "lo": c.get("lo"), "hi": c.get("hi"),
                                      "passed": c.get("passed"), "prompts": c.get("prompts"),
                                      "rouge_l": r.get("rouge_l"), "mean_new_tokens": r.get("mean_new_tokens")}
    print("\ntime per step:")
    for step, seconds in times.items():
        print(f"  {seconds:8.1f} s  {step}")
    verdict = train_s < TARGET_S
    print(f"\nquick wall time {train_s:.0f} s (target < {TARGET_S} s): {'met' if verdict else 'NOT met'}")
    if not args.no_base:
        base, tuned = checks["base"]["pass_rate"], checks[f"run:{run.id}"]["pass_rate"]
        ok = tuned >= 0.5 and tuned >= base + 0.4
        print(f"fact checks {base:.2f} -> {tuned:.2f} (target >= 0.5 and >= base + 0.4): {'met' if ok else 'NOT met'}")
        rl_base, rl_run = rouge["base"]["rouge_l"], rouge[f"run:{run.id}"]["rouge_l"]
        print(f"ROUGE-L {rl_base:.3f} -> {rl_run:.3f}: {'above' if rl_run > rl_base else 'NOT above'} the base")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    return 0


def five_systems(run_id: int) -> list[str]:
    """The five systems of issue 24, as generation names them (core.systems keys with their variants)."""
    return ["base", "base+prompt", "base+rag", f"run:{run_id}", f"run:{run_id}+rag"]


def team_prompt(session, project_id: int) -> str:
    """Give the demo project a team prompt for base+prompt when it has none: its fact sheet, whole."""
    from core.curate.demo import FACT_SHEET
    from storage.models import Project

    project = session.get(Project, project_id)
    if (project.team_prompt or "").strip():
        return f"team prompt: the project's own ({len(project.team_prompt)} characters)"
    project.team_prompt = FACT_SHEET.read_text(encoding="utf-8")
    session.add(project)
    session.commit()
    return f"team prompt: the fact sheet ({len(project.team_prompt)} characters)"


def keep_first(session, eval_set_id: int, n: int) -> None:
    """Drop every prompt of a fresh eval set (no outputs yet) after the first ``n``: a quick dry check."""
    from core.evaluate.evalsets import eval_prompts

    for prompt in eval_prompts(session, eval_set_id)[n:]:
        session.delete(prompt)
    session.commit()


def print_five(res: dict, times: dict, out: Path | None, figures: dict) -> int:
    """The five systems side by side (fact checks with their interval, ROUGE-L, prompt tokens and seconds per
    answer), the time of each step, and the figures as JSON when asked."""
    rows = res["side_by_side"]
    print(f"\n{res['eval_set']['prompts']} test prompts\n")
    print(f"{'system':<46} {'fact checks passed':>18} {'95% interval':>13} {'ROUGE-L':>8} {'prompt tok':>10} "
          f"{'s/answer':>9}")
    dash = "—"
    for r in rows:
        rate = f"{r['passed'] or 0:>3}/{r['checked_prompts'] or 0:<3} = {r['pass_rate'] or 0:.2f}"
        interval = f"{r['pass_lo'] or 0:.2f}-{r['pass_hi'] or 0:.2f}"
        tokens = dash if r["prompt_tokens"] is None else f"{r['prompt_tokens']:.0f}"
        seconds = dash if r["seconds"] is None else f"{r['seconds']:.2f}"
        print(f"{r['label'][:46]:<46} {rate:>18} {interval:>13} {r['rouge_l'] or 0:>8.3f} {tokens:>10} {seconds:>9}")
    print("\ntime per step:")
    for step, seconds in times.items():
        print(f"  {seconds:8.1f} s  {step}")
    if out:
        figures.update(times_s={k: round(v, 1) for k, v in times.items()}, systems=rows)
        out.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
