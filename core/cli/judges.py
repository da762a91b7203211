"""``finetune-studio judges add | list | remove | check | run | results``: LLM judges from the command line.

The same core functions and role checks as the Admin page (register, remove: admins) and the Results page (run a
judge job, read its figures and agreement: engineers).
"""
from __future__ import annotations

from core.cli.common import project_arg, wait_succeeded
from core.evaluate.evalsets import get_eval_set
from core.evaluate.judgeresults import judge_results
from core.evaluate.judges import add_judge, check_judge, get_judge, list_judges, remove_judge, verdict_counts
from core.evaluate.judging import MODES, judging_progress, launch_judging


def _row(judge, counts: dict | None = None) -> dict:
    row = {"id": judge.id, "name": judge.name, "base_url": judge.base_url, "model": judge.model,
           "api_key_env": judge.api_key_env or "", "min_kappa": judge.min_kappa, "min_items": judge.min_items}
    if counts is not None:
        row["verdicts"] = counts.get(judge.id, 0)
    return row


def cmd_add(args, session, user):
    return _row(add_judge(session, user, args.name, args.base_url, args.model or "", args.api_key_env or "",
                          min_kappa=args.min_kappa, min_items=args.min_items))


def cmd_list(args, session, user):
    counts = verdict_counts(session)
    return [_row(j, counts) for j in list_judges(session, user)]


def cmd_remove(args, session, user):
    return remove_judge(session, user, args.judge)


def cmd_check(args, session, user):
    return check_judge(session, user, args.judge)


def cmd_run(args, session, user):
    project = project_arg(session, args) if args.project else None
    es = get_eval_set(session, args.eval_set, project.id if project else None)
    systems = [s.strip() for s in (args.systems or "").split(",") if s.strip()]
    criteria = [c.strip() for c in (args.criteria or "").split(",") if c.strip()]
    job = launch_judging(session, user, es.id, get_judge(session, args.judge).id, modes=args.modes.split(","),
                         systems=systems, criteria=criteria, max_tokens=args.max_tokens)
    if args.wait:
        wait_succeeded(session, job, "Judge job")
    return {"job": job.id, "status": job.status, **judging_progress(job)}


def cmd_results(args, session, user):
    es = get_eval_set(session, args.eval_set)
    res = judge_results(session, user, es.id, args.judge, rounds=args.bootstrap_rounds)
    if getattr(args, "json", False):
        return res
    out = {"judge": res["judge"]["name"], "trust": f"{res['trust']['label']}: {res['trust']['reason']}",
           **{k: v for k, v in res["counts"].items()}}
    for row in res["leaderboard"]:
        out[f"rating {row['label']}"] = f"{row['rating']:.0f} ({row['lo']:.0f} to {row['hi']:.0f})"
    for row in res["agreement"]:
        kappa = row["kappa"]
        out[f"kappa {row['criterion']}"] = ("n/a" if kappa["value"] is None else
                                            f"{kappa['value']:.2f} ({kappa['lo']:.2f} to {kappa['hi']:.2f})") + \
            f" on {row['n']} items"
    return out


def register(sub, common) -> None:
    """Add `judges` to the finetune-studio command line."""
    judges = sub.add_parser("judges", parents=[common], help="LLM judges: register, check, run, read agreement")
    jsub = judges.add_subparsers(dest="judges_cmd", required=True)
    p = jsub.add_parser("add", parents=[common], help="register an OpenAI-compatible endpoint as a judge (admins)")
    p.add_argument("name")
    p.add_argument("base_url", help="e.g. http://127.0.0.1:8000/v1 (serve-model prints it)")
    p.add_argument("--model", help="the model name the endpoint expects")
    p.add_argument("--api-key-env", metavar="VAR", help="NAME of the environment variable holding the API key")
    p.add_argument("--min-kappa", type=float, default=0.6, help="kappa the judge must reach to be trusted")
    p.add_argument("--min-items", type=int, default=30, help="on at least this many items")
    p.set_defaults(fn=cmd_add)
    p = jsub.add_parser("list", parents=[common], help="list judges")
    p.set_defaults(fn=cmd_list)
    p = jsub.add_parser("remove", parents=[common], help="remove a judge and its verdicts (admins)")
    p.add_argument("judge", help="name or id")
    p.set_defaults(fn=cmd_remove)
    p = jsub.add_parser("check", parents=[common], help="send the judge one tiny request and show its answer")
    p.add_argument("judge", help="name or id")
    p.set_defaults(fn=cmd_check)
    p = jsub.add_parser("run", parents=[common], help="a judge job on an eval set's outputs")
    p.add_argument("judge", help="name or id")
    p.add_argument("--eval-set", required=True, help="eval set id or name")
    p.add_argument("--project", help="project name or id (for an eval set given by name)")
    p.add_argument("--modes", default=",".join(MODES), help="pairwise,rubric (default both)")
    p.add_argument("--systems", help="comma-separated systems (default: every system with outputs)")
    p.add_argument("--criteria", help="comma-separated rubric criteria (default: all)")
    p.add_argument("--max-tokens", type=int, default=512, help="longest judge answer")
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.set_defaults(fn=cmd_run)
    p = jsub.add_parser("results", parents=[common], help="the judge's figures, agreement and trust on an eval set")
    p.add_argument("judge", help="name or id")
    p.add_argument("--eval-set", required=True)
    p.add_argument("--bootstrap-rounds", type=int, default=200)
    p.set_defaults(fn=cmd_results)
