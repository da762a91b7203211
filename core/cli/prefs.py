"""``finetune-studio prefs freeze | import | list``: preference versions (pairs for DPO runs) from reviewers'
votes and/or preference files, through the same core functions as the pages. DPO runs start with
``finetune-studio train --method dpo --prefs ID [--from-run RUN]``."""
from __future__ import annotations

import sys
from pathlib import Path

from core.cli.common import project_arg
from core.curate.preference_versions import import_preference_file, list_preference_versions, source_text
from core.evaluate.evalsets import get_eval_set
from core.evaluate.pairs_from_votes import freeze_from_votes
from core.workspace import local_path


def _row(version) -> dict:
    return {"id": version.id, "name": version.name, "pairs": version.n_pairs, "sources": source_text(version.sources)}


def _file(args, user):
    path = local_path(args.file)  # the OS decides what the CLI's user may read
    return path.read_bytes(), Path(args.file).name


def cmd_prefs_freeze(args, session, user):
    project = project_arg(session, args)
    es = get_eval_set(session, args.eval_set, project.id)
    data, filename = _file(args, user) if args.file else (None, "")
    version = freeze_from_votes(session, user, project.id, args.name or f"votes-{es.name}", eval_set_id=es.id,
                                file_data=data, filename=filename, skip_bad=args.skip_bad)
    return _row(version)


def cmd_prefs_import(args, session, user):
    project = project_arg(session, args)
    data, filename = _file(args, user)
    version = import_preference_file(session, user, project.id, args.name or Path(filename).stem, data, filename,
                                     skip_bad=args.skip_bad)
    for err in version.sources[0].get("errors", []):
        print(f"skipped {err}", file=sys.stderr)
    return _row(version)


def cmd_prefs_list(args, session, user):
    project = project_arg(session, args)
    return [{"id": v["id"], "name": v["name"], "pairs": v["pairs"], "sources": source_text(v["sources"]),
             "created": v["created_at"].isoformat(timespec="seconds")}
            for v in list_preference_versions(session, user, project.id)]


def register(sub, common) -> None:
    """Add `prefs` to the finetune-studio command line."""
    prefs = sub.add_parser("prefs", parents=[common], help="preference versions for DPO: freeze, import, list")
    psub = prefs.add_subparsers(dest="prefs_cmd", required=True)
    p = psub.add_parser("freeze", parents=[common], help="freeze reviewers' votes on an eval set (and a file)")
    p.add_argument("--eval-set", required=True, help="eval set name or id")
    p.add_argument("--file", help="also add the pairs of this preference file (JSONL or Parquet)")
    p.add_argument("--name", help="version name (default votes-<eval set>)")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.add_argument("--skip-bad", action="store_true", help="leave bad file rows out (counted) instead of stopping")
    p.set_defaults(fn=cmd_prefs_freeze)
    p = psub.add_parser("import", parents=[common], help="freeze a preference file (prompt/chosen/rejected)")
    p.add_argument("file", help="JSONL or Parquet; text strings or message lists")
    p.add_argument("--name", help="version name (default: the file's name)")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.add_argument("--skip-bad", action="store_true", help="leave bad rows out (counted) instead of stopping")
    p.set_defaults(fn=cmd_prefs_import)
    p = psub.add_parser("list", parents=[common], help="list preference versions")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.set_defaults(fn=cmd_prefs_list)
