"""``finetune-studio evalsets | generate | results | export-dpo | send-failures | draft-answers``: evaluation
from the command line.

The same core functions and role checks as the Generate and Results pages.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from core.accounts import get_user
from core.cli.common import project_arg, wait_succeeded
from core.curate.datasets import get_version
from core.errors import InvalidInput, StudioError
from core.evaluate.evalsets import create_eval_set_from_file, create_eval_set_from_version, get_eval_set, list_eval_sets
from core.evaluate.generate import generation_progress, launch_generation
from core.evaluate.drafting import draft_edit_stats, launch_drafting
from core.evaluate.failures import RULES, send_failures, sent_failures
from core.evaluate.judges import get_judge
from core.evaluate.results import export_dpo, report_markdown, results, scores_csv
from core.jobs.queue import LIVE, reconcile
from core.systems import BASE, RUN, run_key
from core.train.runs import get_run
from core.workspace import local_path
from storage.models import JobStatus


def _eval_set(session, args):
    project_id = project_arg(session, args).id if getattr(args, "project", None) else None
    return get_eval_set(session, args.eval_set, project_id)


def cmd_evalsets(args, session, user):
    project = project_arg(session, args)
    if args.create:
        if bool(args.from_version) == bool(args.from_file):
            raise InvalidInput("Give either --from-version NAME|ID or --from-file FILE.")
        if args.from_version:
            version = get_version(session, args.from_version, project)
            es = create_eval_set_from_version(session, user, project.id, version.id, args.create, split=args.split,
                                              reviewers_per_item=args.reviewers_per_item, seed=args.seed)
        else:
            path = local_path(args.from_file)  # the OS decides what the CLI's user may read
            es = create_eval_set_from_file(session, user, project.id, args.create, path.read_bytes(),
                                           Path(args.from_file).name,
                                           reviewers_per_item=args.reviewers_per_item, seed=args.seed)
        rows = [r for r in list_eval_sets(session, user, project.id) if r["id"] == es.id]
        return _row(rows[0])
    return [_row(r) for r in list_eval_sets(session, user, project.id)]


def _row(r: dict) -> dict:
    return {"id": r["id"], "name": r["name"], "source": r["source"], "prompts": r["prompts"],
            "references": r["references"], "systems": ",".join(r["systems"]), "scores": r["scores"],
            "reviewers_per_item": r["reviewers_per_item"]}


def _systems(session, text: str, project_id: int) -> list[str]:
    """``--systems``: base, and runs as run:<id>, run:<name> or a bare id or name (names must be unique)."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item == BASE:
            out.append(item)
            continue
        out.append(run_key(get_run(session, item.removeprefix(f"{RUN}:"), project_id).id))
    return out


def cmd_generate(args, session, user):
    es = _eval_set(session, args)
    decoding = {"max_new_tokens": args.max_new_tokens, "seed": args.seed}
    if args.temperature is not None or args.top_p is not None:
        decoding.update(do_sample=True, temperature=args.temperature if args.temperature is not None else 0.7,
                        top_p=args.top_p if args.top_p is not None else 1.0)
    job = launch_generation(session, user, es.id, _systems(session, args.systems, es.project_id), decoding=decoding,
                            base_model=args.base_model, batch_size=args.batch_size, perplexity=not args.no_perplexity,
                            trusted_paths=True)  # the CLI's user is the OS user (docs/SECURITY.md)
    if args.wait:
        last = None
        while True:
            session.expire_all()
            reconcile(session)
            session.refresh(job)
            progress = generation_progress(session, job)
            line = f"{job.status} {progress.get('done', 0)}/{progress.get('total', '?')}"
            if line != last:
                print(line, file=sys.stderr, flush=True)
                last = line
            if job.status not in LIVE:
                break
            time.sleep(1.0)  # CLI polling only; the pages use st.fragment(run_every=...)
        if job.status != JobStatus.succeeded.value:
            raise StudioError(f"Generation job {job.id} {job.status}: {job.error.splitlines()[0] if job.error else ''}")
    out = {"job": job.id, "status": job.status, "eval_set": es.id, "systems": ",".join(job.config["systems"]),
           "run_dir": job.run_dir}
    if job.status == JobStatus.succeeded.value:
        out.update({k: job.result.get(k) for k in ("done", "new_tokens", "seconds", "perplexity")})
    return out


def cmd_results(args, session, user):
    es = _eval_set(session, args)
    res = results(session, user, es.id, bootstrap_rounds=args.bootstrap_rounds)
    if getattr(args, "json", False):
        return res
    return report_markdown(res)


def cmd_export_dpo(args, session, user):
    es = _eval_set(session, args)
    out = export_dpo(session, user, es.id, args.out)
    if args.scores_csv:
        Path(args.scores_csv).write_text(scores_csv(session, user, es.id), encoding="utf-8")
        out["scores_csv"] = args.scores_csv
    return out


def cmd_send_failures(args, session, user):
    es = _eval_set(session, args)
    run = _systems(session, args.run, es.project_id)
    if len(run) != 1 or run[0] == BASE:
        raise InvalidInput("Give one fine-tuned run with --run (its id or name).")
    assignee = get_user(session, args.assign).id if args.assign else None
    judge = get_judge(session, args.judge).id if args.judge else None
    out = send_failures(session, user, es.id, run[0], rule=args.rule, criterion=args.criterion,
                        threshold=args.threshold, assignee=assignee, judge_id=judge)
    status = sent_failures(session, user, es.id)
    row = {k: out[k] for k in ("caught", "sent", "already_sent", "duplicate_text")}
    row["test_split_prompts"] = ",".join(f"#{leak['position'] + 1}" for leak in out["leaks"])
    row["example_ids"] = ",".join(map(str, out["example_ids"]))
    row.update({f"now_{k}": v for k, v in status["by_status"].items()})
    if out["leaks"]:
        print(f"warning: {len(out['leaks'])} sent prompt(s) are test-split examples; keep their drafts out of "
              "training while this eval set is used for comparison.", file=sys.stderr)
    return row


def _decoding(args) -> dict:
    decoding = {"max_new_tokens": args.max_new_tokens, "seed": args.seed}
    if args.temperature is not None or args.top_p is not None:
        decoding.update(do_sample=True, temperature=args.temperature if args.temperature is not None else 0.7,
                        top_p=args.top_p if args.top_p is not None else 1.0)
    return decoding


def cmd_draft_answers(args, session, user):
    project = project_arg(session, args)
    systems = _systems(session, args.system, project.id)
    if len(systems) != 1:
        raise InvalidInput("Give one system with --system: base, or a finished run.")
    system = systems[0]
    ids = [int(i) for i in args.ids.split(",") if i.strip()] if args.ids else None
    job = launch_drafting(session, user, project.id, system, example_ids=ids, tag=args.tag, limit=args.limit,
                          base_model=args.base_model, decoding=_decoding(args), batch_size=args.batch_size)
    if args.wait:
        wait_succeeded(session, job, "Draft-answers job")
    out = {"job": job.id, "status": job.status, "system": system, "examples": len(job.config["example_ids"]),
           "run_dir": job.run_dir}
    out.update({k: job.result.get(k) for k in ("drafted", "empty", "skipped") if k in (job.result or {})})
    return out


def cmd_draft_stats(args, session, user):
    return draft_edit_stats(session, user, project_arg(session, args).id)


def _decoding_args(p) -> None:
    """The decoding options `generate` and `draft-answers` share (both answer with
    core.evaluate.generate.generate_outputs)."""
    p.add_argument("--base-model", help="model behind 'base' (default: the runs' base model, else the embedded one)")
    p.add_argument("--temperature", type=float, help="sample with this temperature (default: greedy)")
    p.add_argument("--top-p", type=float, help="nucleus sampling threshold (implies sampling)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)


def register(sub, common) -> None:
    """Add the evaluation subcommands to the main parser."""
    p = sub.add_parser("evalsets", parents=[common], help="list eval sets, or create one from a version or a file")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.add_argument("--create", metavar="NAME", help="create an eval set with this name")
    p.add_argument("--from-version", metavar="VERSION", help="dataset version name or id (its test split)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--from-file", metavar="FILE", help="JSONL or CSV with 'prompt' and optional 'reference'")
    p.add_argument("--reviewers-per-item", type=int, default=2, help="K: reviewers per item (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seeds the blind A/B order")
    p.set_defaults(fn=cmd_evalsets)

    p = sub.add_parser("generate", parents=[common], help="generate outputs of systems for an eval set (a job)")
    p.add_argument("--project")
    p.add_argument("--eval-set", required=True, help="eval set id or name")
    p.add_argument("--systems", required=True, help="comma-separated: base,run:12,run:my-run (run ids or names)")
    _decoding_args(p)
    p.add_argument("--no-perplexity", action="store_true", help="skip perplexity on the reference answers")
    p.add_argument("--wait", action="store_true", help="wait for the job, printing progress to stderr")
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("results", parents=[common], help="leaderboard, mean scores, agreement and metrics")
    p.add_argument("--project")
    p.add_argument("--eval-set", required=True)
    p.add_argument("--bootstrap-rounds", type=int, default=200)
    p.set_defaults(fn=cmd_results)

    p = sub.add_parser("export-dpo", parents=[common], help="write DPO pairs (JSONL + datasets folder)")
    p.add_argument("--project")
    p.add_argument("--eval-set", required=True)
    p.add_argument("--out", required=True, help="folder to write dpo.jsonl and dpo_dataset/ into")
    p.add_argument("--scores-csv", help="also write all scores to this CSV file")
    p.set_defaults(fn=cmd_export_dpo)

    p = sub.add_parser("send-failures", parents=[common],
                       help="turn every eval prompt a run failed into a draft example for the annotators")
    p.add_argument("--project")
    p.add_argument("--eval-set", required=True)
    p.add_argument("--run", required=True, help="the fine-tuned run: run:12, 12 or its name")
    p.add_argument("--rule", choices=RULES, default="lost_to_base",
                   help="lost_to_base: the reviewers' majority preferred the base; low_score: the run's mean score "
                        "on --criterion is at or below --threshold; either: both")
    p.add_argument("--criterion", help="rubric criterion for the score rule (e.g. accuracy)")
    p.add_argument("--threshold", type=float, help="catch mean scores at or below this")
    p.add_argument("--assign", metavar="USERNAME", help="the annotator whose queue the drafts go to")
    p.add_argument("--judge", metavar="JUDGE", help="use this trusted judge's verdicts instead of the reviewers'")
    p.set_defaults(fn=cmd_send_failures)

    p = sub.add_parser("draft-answers", parents=[common],
                       help="a job: a model drafts the answer of every example that needs one (prompt-only imports)")
    p.add_argument("--project")
    p.add_argument("--system", required=True, help="base, or a finished run: run:12, 12 or its name")
    p.add_argument("--tag", help="only examples with this tag")
    p.add_argument("--limit", type=int, help="at most this many examples")
    p.add_argument("--ids", help="exactly these example ids (comma-separated)")
    _decoding_args(p)
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.set_defaults(fn=cmd_draft_answers)

    p = sub.add_parser("draft-stats", parents=[common],
                       help="how much experts changed model-drafted answers: mean edit distance per system")
    p.add_argument("--project")
    p.set_defaults(fn=cmd_draft_stats)
