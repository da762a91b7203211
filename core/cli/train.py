"""`finetune-studio train` and `finetune-studio runs`: launch, watch, cancel, resume and export runs."""
from __future__ import annotations

import sys
import time

from core.accounts import require
from core.curate.datasets import get_version
from core.errors import StudioError
from core.evaluate.evalsets import get_eval_set
from core.jobs.queue import TERMINAL, cancel, get_job, job_snapshot, reconcile
from core.projects import get_project
from core.curate.preference_versions import get_preference_version
from core.train.config import PRESETS, TrainConfig, preset_config
from core.train.settings import config_file_settings, parse_set
from core.ship.deploy import FORMATS, launch_export
from core.curate.leakage import leak_ids
from core.train.runs import get_run, launch, resume_note, resume_run, run_summary, runs_table, training_leaks
from storage.models import Job, JobStatus


def _run(session, args) -> Job:
    """The run an argument names: an id, or a run name (unique, within --project when given)."""
    project = get_project(session, args.project) if getattr(args, "project", None) else None
    return get_run(session, args.id, project.id if project else None)


def cmd_train(args, session, user):
    values, given = _settings(args)
    project = get_project(session, args.project) if args.project else None
    if values.get("method") == "dpo":
        cfg, project_id = _dpo_config(session, args, project, values, given)
    else:
        ref = args.version or values.get("dataset_version_id")
        if not ref:
            raise StudioError("--version is required (the dataset version to train on), or --config with a run's "
                              "config.json.")
        version = get_version(session, ref, project)
        _agree(values, given, "dataset_version_id", version.id if args.version else None, f"--version {args.version}")
        values["dataset_version_id"] = version.id
        cfg = TrainConfig.from_dict(values) if args.config else preset_config(args.preset or "quick", **values)
        project_id = version.project_id
    if args.exclude_leaked:
        report = training_leaks(session, cfg)
        leaked, field = leak_ids(report["leaks"]), report["field"]
        if leaked:
            print(f"excluding {len(leaked)} {report['unit']}(s) that repeat an eval prompt: "
                  f"{', '.join(f'#{i}' for i in leaked)}", file=sys.stderr, flush=True)
            cfg = cfg.with_overrides(**{field: sorted({*getattr(cfg, field), *leaked})})
    # --base-model is trusted: the CLI's user is the OS user (docs/SECURITY.md); the web keeps to the model folders.
    job = launch(session, user, project_id, cfg, name=args.name or "", trusted_paths=True)
    if not args.wait:
        return _row(session, job)
    return _wait(session, user, job.id)


def _settings(args) -> tuple[dict, set]:
    """The run's settings: --config's file (a run's config.json, re-run as it is), then --set, then --method and
    --base-model; and the keys --set gave (an option that disagrees with one of them is refused)."""
    if args.config and args.preset:
        raise StudioError("--config and --preset both give the settings; use one (--set still overrides --config).")
    values = config_file_settings(args.config) if args.config else {}
    overrides = parse_set(args.set)
    values.update(overrides)
    _agree(values, set(overrides), "method", args.method, f"--method {args.method}")
    _agree(values, set(overrides), "base_model", args.base_model, f"--base-model {args.base_model}")
    _agree(values, set(overrides), "nodes", args.nodes, f"--nodes {args.nodes}")
    _agree(values, set(overrides), "procs_per_node", args.procs_per_node, f"--procs-per-node {args.procs_per_node}")
    _agree(values, set(overrides), "target", args.target, f"--target {args.target}")
    return values, set(overrides)


def _agree(values: dict, given: set, key: str, option_value, option: str) -> None:
    """Apply ``option_value`` (an option's value for ``key``) unless --set gave ``key`` a different value."""
    if option_value is None:
        return
    if key in given and values[key] != option_value:
        raise StudioError(f"{option} and --set {key}={values[key]} disagree; give one of them.")
    values[key] = option_value


def _dpo_config(session, args, project, values: dict, given: set):
    """A DPO run's config: TrainConfig's DPO defaults (not a preset: their SFT learning rates are far too high for
    DPO) or --config's file, with --prefs, --from-run (its base model unless --base-model or the file says
    otherwise) and --set."""
    prefs = args.prefs or values.get("preference_version_id")
    if not prefs:
        raise StudioError("--method dpo needs --prefs (a preference version id; see `prefs list`).")
    pref = get_preference_version(session, prefs, project.id if project else None)
    _agree(values, given, "preference_version_id", pref.id if args.prefs else None, f"--prefs {args.prefs}")
    values["preference_version_id"] = pref.id
    if args.from_run:
        run = get_run(session, args.from_run, pref.project_id)
        _agree(values, given, "init_from_run", run.id, f"--from-run {args.from_run}")
        values["init_from_run"] = run.id
        if not (args.base_model or args.config or "base_model" in given):
            values["base_model"] = (run.config or {}).get("base_model") or values.get("base_model")
    return TrainConfig.from_dict({k: v for k, v in values.items() if v is not None}), pref.project_id


def _wait(session, user, job_id: int) -> dict:
    """Print a progress line to stderr until the run ends; exit non-zero unless it succeeded."""
    last = ""
    while True:
        session.expire_all()
        snap = job_snapshot(session, user, job_id)  # reconciles first, so the status is true
        job = snap["job"]
        if job.status == JobStatus.queued.value:
            line = f"run {job.id}: queued (position {snap['queue_position']})"
        else:
            rows = snap["metrics"]
            train = [r for r in rows if r.get("loss") is not None]
            evals = [r for r in rows if r.get("eval_loss") is not None]
            cur = train[-1] if train else {}
            line = (f"run {job.id}: {job.status} step {cur.get('step', 0)}/{cur.get('total_steps', '?')} "
                    f"loss {_fmt(cur.get('loss'))} val {_fmt(evals[-1]['eval_loss'] if evals else None)} "
                    f"eta {_fmt(cur.get('eta_s'), 0)}s"
                    + (f" reward margin {_fmt(cur['reward_margin'])} accuracy {_fmt(cur.get('reward_accuracy'), 2)}"
                       if cur.get("reward_margin") is not None else ""))
        if line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        if job.status in TERMINAL:
            break
        time.sleep(2)
    row = _row(session, job)
    if job.status != JobStatus.succeeded.value:
        raise StudioError(f"run {job.id} {job.status}: {_first_line(job.error)}".strip())
    return row


def _first_line(text: str) -> str:
    """A job's error can carry its log's last lines; the CLI's error stays one line (`runs show` has the rest)."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


ROW_KEYS = ("id", "name", "status", "method", "dataset_version", "queue_position", "train_loss", "eval_loss_first",
            "eval_loss_last", "duration_s", "run_dir")  # what a line of `runs` shows of core.train.runs.run_summary


def _short(summary: dict) -> dict:
    return {k: summary[k] for k in ROW_KEYS}


def _row(session, job) -> dict:
    return _short(run_summary(session, job))


def cmd_runs(args, session, user):
    require(user, "train")
    return [_short(row) for row in runs_table(session, user)]


def cmd_runs_show(args, session, user):
    require(user, "train")
    snap = job_snapshot(session, user, _run(session, args).id)
    job = snap["job"]
    out = _row(session, job)
    out.update({"config": job.config, "error": job.error, "estimated_peak_mb": job.estimated_peak_mb,
                "measured_peak_mb": job.measured_peak_mb, "log_tail": "\n".join(snap["log_tail"].splitlines()[-10:])})
    return out


def cmd_runs_cancel(args, session, user):
    return _row(session, cancel(session, user, _run(session, args).id))


def cmd_runs_resume(args, session, user):
    job = resume_run(session, user, _run(session, args).id)
    print(resume_note(job), file=sys.stderr, flush=True)
    return _wait(session, user, job.id) if args.wait else _row(session, job)


def _wait_export(session, job) -> dict:
    last = ""
    while job.status not in TERMINAL:  # a background job like any other; the CLI waits for it
        time.sleep(1)
        reconcile(session)
        session.expire_all()
        job = get_job(session, job.id)
        line = f"export {job.id}: {job.status} {(job.result or {}).get('progress', {}).get('step', '')}".strip()
        if line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
    if job.status != JobStatus.succeeded.value:
        raise StudioError(f"export {job.id} {job.status}: {_first_line(job.error)}".strip())
    return job.result or {}


def cmd_runs_merge(args, session, user):
    run = _run(session, args)
    # --out is trusted: the CLI's user is the OS user (docs/SECURITY.md); the web keeps to the export folders.
    job = launch_export(session, user, run.id, args.out, formats=["merged"], parity_check=False, trusted_paths=True)
    report = _wait_export(session, job)
    return {"run": run.id, "export_job": job.id, "exported_to": report["artifacts"]["merged"]["path"]}


def cmd_runs_export(args, session, user):
    run = _run(session, args)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    eval_set = get_eval_set(session, args.eval_set, run.project_id).id if args.eval_set else None
    job = launch_export(session, user, run.id, args.out, formats=formats, eval_set_id=eval_set,
                        parity_check=not args.no_parity, name=args.name or "",
                        parity_max_new_tokens=args.parity_max_new_tokens, parity_max_prompts=args.parity_prompts,
                        trusted_paths=True)
    report = _wait_export(session, job)
    out = {"run": run.id, "export_job": job.id, "exported_to": report["out_dir"]}
    for kind, artifact in report["artifacts"].items():
        for key in ("path", "zip", "missing", "error", "note"):
            if artifact.get(key):
                out[f"{kind} {key}"] = artifact[key]
        for i, f in enumerate(artifact.get("files", [])):
            out[f"{kind} command {i + 1}"] = f["command"]
        for i, command in enumerate(artifact.get("commands", [])):
            out[f"{kind} command {i + 1}"] = command
    for kind, verdict in ((report.get("parity") or {}).get("checks") or {}).items():
        out[f"parity {kind}"] = verdict.get("summary") or verdict.get("error")
    if getattr(args, "json", False):
        return report
    return out


def register(sub, common) -> None:
    """Add `train` and `runs` to the finetune-studio command line."""
    p = sub.add_parser("train", parents=[common], help="fine-tune on a frozen dataset version (background run)")
    p.add_argument("--version", help="dataset version name or id (SFT methods)")
    p.add_argument("--project", help="project name or id (to tell apart versions of the same name)")
    p.add_argument("--preset", choices=list(PRESETS), help="starting settings (default quick; not with --config)")
    p.add_argument("--config", metavar="FILE",
                   help="re-run a run exactly: its runs/<id>-<name>/config.json (any JSON object of TrainConfig "
                        "fields); --set and the options above override it")
    p.add_argument("--method", choices=["lora", "qlora", "full", "dpo"])
    p.add_argument("--prefs", type=int, help="dpo: preference version id (see `prefs list`)")
    p.add_argument("--from-run", help="dpo: continue this succeeded LoRA/QLoRA run's adapter (id or name)")
    p.add_argument("--base-model", help="embedded:SmolLM2-135M-Instruct (default), a local folder or a hub id")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, e.g. --set lora_r=8 --set num_epochs=2 (lists comma-separated, "
                        "none/auto clears an optional number, on/off for true/false)")
    p.add_argument("--procs-per-node", type=int, metavar="N",
                   help="processes trained together with DDP (torchrun): one per GPU, or CPU processes (default 1)")
    p.add_argument("--nodes", type=int, metavar="N", help="machines the run spans (1 on this machine, the default)")
    p.add_argument("--name", help="run name")
    p.add_argument("--target", help="compute target (see `targets list`; default this machine); its nodes and "
                                    "processes per node: --set nodes=N --set procs_per_node=P")
    p.add_argument("--exclude-leaked", action="store_true",
                   help="leave out the training examples (DPO: preference pairs) that repeat an eval prompt (else the "
                        "run is refused)")
    p.add_argument("--wait", action="store_true", help="print progress until the run ends")
    p.set_defaults(fn=cmd_train)

    runs = sub.add_parser("runs", parents=[common], help="list, show, cancel, resume or export training runs")
    runs.set_defaults(fn=cmd_runs)
    rsub = runs.add_subparsers(dest="runs_cmd")
    run_help = "run id, or run name when only one run has it"
    r = rsub.add_parser("show", parents=[common], help="one run's config, metrics and log tail")
    r.add_argument("id", metavar="RUN", help=run_help)
    r.add_argument("--project", help="project name or id (for run names)")
    r.set_defaults(fn=cmd_runs_show)
    r = rsub.add_parser("cancel", parents=[common], help="cancel a queued or running run")
    r.add_argument("id", metavar="RUN", help=run_help)
    r.add_argument("--project", help="project name or id (for run names)")
    r.set_defaults(fn=cmd_runs_cancel)
    r = rsub.add_parser("resume", parents=[common], help="continue a failed or canceled run from its checkpoint")
    r.add_argument("id", metavar="RUN", help=run_help)
    r.add_argument("--project", help="project name or id (for run names)")
    r.add_argument("--wait", action="store_true")
    r.set_defaults(fn=cmd_runs_resume)
    r = rsub.add_parser("merge", parents=[common], help="merge the adapter into the base and export a model folder")
    r.add_argument("id", metavar="RUN", help=run_help)
    r.add_argument("--project", help="project name or id (for run names)")
    r.add_argument("--out", required=True, help="new, empty folder (the model goes into its merged/ subfolder)")
    r.set_defaults(fn=cmd_runs_merge)
    r = rsub.add_parser("export", parents=[common],
                        help="export a run (adapter, merged, Ollama, vLLM, GGUF) with a parity check and a model card")
    r.add_argument("id", metavar="RUN", help=run_help)
    r.add_argument("--project", help="project name or id (for run names)")
    r.add_argument("--out", required=True, help="new, empty folder")
    r.add_argument("--formats", help=f"comma-separated, default all the run can give: {','.join(FORMATS)}")
    r.add_argument("--eval-set", help="eval set id or name for the parity check (default: the run's test split)")
    r.add_argument("--no-parity", action="store_true", help="skip the parity check")
    r.add_argument("--parity-max-new-tokens", type=int, default=256, help="longest answer the parity check compares")
    r.add_argument("--parity-prompts", type=int, default=6, help="the first N prompts are checked; 0 checks all")
    r.add_argument("--name", help="the model's name in Ollama and vLLM")
    r.set_defaults(fn=cmd_runs_export)


__all__ = ["register"]
