"""``finetune-studio import | export | versions | freeze``: the data commands, through the same core functions."""
from __future__ import annotations

import sys

from core.cli.common import project_arg
from core.curate.datasets import export, get_version, list_versions
from core.curate.formats import EXPORT_FORMATS, FILE_FORMATS
from core.curate.importing import check_format, import_file
from core.curate.leakage import freeze_checked
from core.errors import InvalidInput


def _mapping(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        field, sep, col = part.partition("=")
        if not sep or not field.strip() or not col.strip():
            raise InvalidInput(f"Bad mapping {part!r}: write field=column, e.g. instruction=question,output=answer.")
        out[field.strip()] = col.strip()
    return out


def cmd_import(args, session, user):
    project = project_arg(session, args)

    def progress(fraction: float, message: str) -> None:
        print(f"\r{fraction:5.0%}  {message}", end="" if fraction < 1 else "\n", file=sys.stderr, flush=True)

    # The CLI's user is the OS user: any file it can read (core.workspace.local_path), not only the import folders.
    report = import_file(session, user, project, args.file, check_format(args.format), strict=args.strict,
                         mapping=_mapping(args.mapping), progress=progress, os_user=True)
    out = {"import": report.import_id, "project": project.name, "format": report.format,
           "encoding": report.encoding, "read": report.n_read, "imported": report.n_imported,
           "rejected": report.n_rejected, "duplicates": report.n_duplicates,
           "near_duplicates": report.n_near_duplicates, "repaired": report.n_repaired, "message": report.message}
    if report.ended_early:
        out["ended_early"] = report.ended_early
    if getattr(args, "json", False):
        out["rejected_records"] = report.rejected
        out["repaired_records"] = report.repaired
    else:
        for rej in report.rejected[:50]:
            where = f"line {rej['line']}" if "line" in rej else f"byte {rej.get('byte')}"
            print(f"rejected {where}: {rej['reason']}", file=sys.stderr)
    return out


def cmd_export(args, session, user):
    project = project_arg(session, args)
    if bool(args.version) == bool(args.status):
        raise InvalidInput("Give either --version NAME|ID or --status STATUS.")
    version_id = get_version(session, args.version, project).id if args.version else None
    path = export(session, user, project, args.format, args.out, version_id=version_id, status=args.status)
    return {"written": str(path), "format": args.format}


def cmd_versions(args, session, user):
    project = project_arg(session, args)
    return [{"id": v.id, "name": v.name, "train": v.n_train, "validation": v.n_validation, "test": v.n_test,
             "seed": v.seed, "hash": v.content_hash[:12], "created": v.created_at.isoformat(timespec="seconds")}
            for v in list_versions(session, project)]


def cmd_freeze(args, session, user):
    project = project_arg(session, args)
    fractions = None
    if args.split:
        parts = [float(x) for x in args.split.split("/")]
        if len(parts) != 3:
            raise InvalidInput("--split needs three numbers: train/validation/test, e.g. 0.8/0.1/0.1.")
        fractions = dict(zip(("train", "validation", "test"), parts))
    report = freeze_checked(session, user, project, args.name, fractions=fractions, seed=args.seed)
    v = report["version"]
    out = {"id": v.id, "name": v.name, "train": v.n_train, "validation": v.n_validation, "test": v.n_test,
           "hash": v.content_hash, "eval_leaks": len(report["eval_leaks"]), "split_leaks": len(report["split_leaks"])}
    if getattr(args, "json", False):
        out["eval_leaks"], out["split_leaks"] = report["eval_leaks"], report["split_leaks"]
        return out
    for leak in report["eval_leaks"]:
        print(f"{leak['split']} example #{leak['example_id']} repeats prompt #{leak['eval_prompt_id']} of eval set "
              f"#{leak['eval_set_id']} ({leak['kind']}, {leak['similarity']:.2f})", file=sys.stderr)
    for leak in report["split_leaks"]:
        print(f"{leak['split']} example #{leak['example_id']} repeats train example #{leak['train_example_id']} "
              f"({leak['kind']}, {leak['similarity']:.2f})", file=sys.stderr)
    return out


def register(sub, common) -> None:
    """Add the data subcommands to the main parser."""
    p = sub.add_parser("import", parents=[common], help="import a dataset file into a project")
    p.add_argument("file")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.add_argument("--format", choices=FILE_FORMATS, help="default: detected")
    p.add_argument("--strict", action="store_true", help="import nothing unless every record is valid")
    p.add_argument("--mapping", help="CSV columns: instruction=col,input=col,output=col,system=col,tags=col")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("export", parents=[common], help="export a dataset version or a selection")
    p.add_argument("--project")
    p.add_argument("--version", help="version name or id")
    p.add_argument("--status", choices=["draft", "submitted", "approved", "rejected"])
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--out", required=True, help="folder to write: a file per split (train, validation, test), "
                   "README.md for datasets.load_dataset and LLaMA-Factory's dataset_info.json; hf_disk: a DatasetDict")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("versions", parents=[common], help="list dataset versions")
    p.add_argument("--project")
    p.set_defaults(fn=cmd_versions)

    p = sub.add_parser("freeze", parents=[common], help="freeze the approved examples into a dataset version")
    p.add_argument("name")
    p.add_argument("--project")
    p.add_argument("--split", help="train/validation/test fractions, default 0.8/0.1/0.1")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_freeze)
