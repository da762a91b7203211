"""`finetune-studio train` and `finetune-studio runs`: launch, watch, cancel, resume and export runs."""
from __future__ import annotations

import sys
import time

from core.errors import NotFound, StudioError


def _project_of_version(session, version_id: int) -> int:
    from storage.models import DatasetVersion

    version = session.get(DatasetVersion, version_id)
    if version is None:
        raise NotFound(f"Dataset version {version_id} does not exist; list versions with `finetune-studio datasets`.")
    return version.project_id


def cmd_train(args, session, user):
    from core.train import launch
    from core.train_config import parse_set, preset_config

    overrides = parse_set(args.set)
    if args.method:
        overrides["method"] = args.method
    if args.base_model:
        overrides["base_model"] = args.base_model
    cfg = preset_config(args.preset, dataset_version_id=args.version, **overrides)
    job = launch(session, user, _project_of_version(session, args.version), cfg, name=args.name or "")
    if not args.wait:
        return _row(session, job)
    return _wait(session, job.id)


def _wait(session, job_id: int) -> dict:
    """Print a progress line to stderr until the run ends; exit non-zero unless it succeeded."""
    from core.jobs import get_job, queue_position, read_metrics, reconcile

    last = ""
    while True:
        reconcile(session)
        session.expire_all()
        job = get_job(session, job_id)
        if job.status == "queued":
            line = f"run {job.id}: queued (position {queue_position(session, job)})"
        else:
            rows = read_metrics(job)
            train = [r for r in rows if r.get("loss") is not None]
            evals = [r for r in rows if r.get("eval_loss") is not None]
            cur = train[-1] if train else {}
            line = (f"run {job.id}: {job.status} step {cur.get('step', 0)}/{cur.get('total_steps', '?')} "
                    f"loss {_fmt(cur.get('loss'))} val {_fmt(evals[-1]['eval_loss'] if evals else None)} "
                    f"eta {_fmt(cur.get('eta_s'), 0)}s")
        if line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        if job.status in ("succeeded", "failed", "canceled"):
            break
        time.sleep(2)
    row = _row(session, job)
    if job.status != "succeeded":
        raise StudioError(f"run {job.id} {job.status}: {job.error}".strip())
    return row


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(session, job) -> dict:
    from core.jobs import queue_position

    metrics = (job.result or {}).get("metrics", {})
    duration = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    return {"id": job.id, "name": job.name, "status": job.status, "method": (job.config or {}).get("method"),
            "dataset_version": job.dataset_version_id, "queue_position": queue_position(session, job),
            "train_loss": metrics.get("train_loss"), "eval_loss_first": metrics.get("eval_loss_first"),
            "eval_loss_last": metrics.get("eval_loss_last"),
            "duration_s": round(duration, 1) if duration is not None else None, "run_dir": job.run_dir}


def cmd_runs(args, session, user):
    from core.accounts import require
    from core.jobs import list_jobs, reconcile

    require(user, "train")
    reconcile(session)
    return [_row(session, j) for j in list_jobs(session, kind="train")]


def cmd_runs_show(args, session, user):
    from core.accounts import require
    from core.jobs import get_job, log_tail, reconcile

    require(user, "train")
    reconcile(session)
    job = get_job(session, args.id)
    out = _row(session, job)
    out.update({"config": job.config, "error": job.error, "estimated_peak_mb": job.estimated_peak_mb,
                "measured_peak_mb": job.measured_peak_mb, "log_tail": log_tail(job, 10)})
    return out


def cmd_runs_cancel(args, session, user):
    from core.jobs import cancel

    return _row(session, cancel(session, user, args.id))


def cmd_runs_resume(args, session, user):
    from core.jobs import resume

    job = resume(session, user, args.id)
    return _wait(session, job.id) if args.wait else _row(session, job)


def cmd_runs_merge(args, session, user):
    from core.train import merge_and_export

    out = merge_and_export(session, user, args.id, args.out)
    return {"run": args.id, "exported_to": str(out)}


def register(sub, common) -> None:
    """Add `train` and `runs` to the finetune-studio command line."""
    from core.train_config import PRESETS

    p = sub.add_parser("train", parents=[common], help="fine-tune on a frozen dataset version (background run)")
    p.add_argument("--version", type=int, required=True, help="dataset version id")
    p.add_argument("--preset", default="quick", choices=list(PRESETS))
    p.add_argument("--method", choices=["lora", "qlora", "full"])
    p.add_argument("--base-model", help="embedded:SmolLM2-135M-Instruct (default), a local folder or a hub id")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, e.g. --set lora_r=8 --set num_epochs=2")
    p.add_argument("--name", help="run name")
    p.add_argument("--wait", action="store_true", help="print progress until the run ends")
    p.set_defaults(fn=cmd_train)

    runs = sub.add_parser("runs", parents=[common], help="list, show, cancel, resume or export training runs")
    runs.set_defaults(fn=cmd_runs)
    rsub = runs.add_subparsers(dest="runs_cmd")
    r = rsub.add_parser("show", parents=[common], help="one run's config, metrics and log tail")
    r.add_argument("id", type=int)
    r.set_defaults(fn=cmd_runs_show)
    r = rsub.add_parser("cancel", parents=[common], help="cancel a queued or running run")
    r.add_argument("id", type=int)
    r.set_defaults(fn=cmd_runs_cancel)
    r = rsub.add_parser("resume", parents=[common], help="continue a failed or canceled run from its checkpoint")
    r.add_argument("id", type=int)
    r.add_argument("--wait", action="store_true")
    r.set_defaults(fn=cmd_runs_resume)
    r = rsub.add_parser("merge", parents=[common], help="merge the adapter into the base and export a model folder")
    r.add_argument("id", type=int)
    r.add_argument("--out", required=True, help="new, empty folder")
    r.set_defaults(fn=cmd_runs_merge)


__all__ = ["register"]
