"""``finetune-studio targets add|list|remove|check``: the compute targets runs may go to (Ray, Slurm clusters)."""
from __future__ import annotations

from core.accounts import require
from core.jobs.targets import TARGET_KINDS
from core.jobs.targets.registry import add_target, check_target, get_target, list_targets, remove_target, update_target


def _row(target, offer=None) -> dict:
    row = {"name": target.name, "kind": target.kind, "settings": target.settings}
    if offer is not None:
        row.update(reachable=offer.reachable, offers=offer.describe())
    return row


def cmd_targets_add(args, session, user):
    if args.replace:
        return _row(update_target(session, user, args.name, args.settings))
    return _row(add_target(session, user, args.name, args.kind, args.settings))


def cmd_targets_list(args, session, user):
    require(user, "manage_targets")
    return [_row(t) for t in list_targets(session)]


def cmd_targets_remove(args, session, user):
    return f"removed {remove_target(session, user, args.name)}"


def cmd_targets_check(args, session, user):
    """What each target (or the one named) offers now, or why it is unreachable; exit code 1 when one is."""
    require(user, "manage_targets")
    rows = [get_target(session, args.name)] if args.name else list_targets(session)
    checked = [_row(t, check_target(t)) for t in rows]
    if any(not r["reachable"] for r in checked):
        args.exit_code = 1
    return checked


def register(sub, common) -> None:
    """Add `targets` to the finetune-studio command line."""
    targets = sub.add_parser("targets", parents=[common], help="compute targets: Ray and Slurm clusters")
    tsub = targets.add_subparsers(dest="targets_cmd", required=True)
    p = tsub.add_parser("add", parents=[common], help="register a target (admins)")
    p.add_argument("name")
    p.add_argument("--kind", choices=list(TARGET_KINDS), required=True)
    p.add_argument("--settings", default="{}", metavar="JSON",
                   help='e.g. \'{"address": "http://head-node:8265"}\' (Ray) or \'{"partition": "gpu"}\' (Slurm)')
    p.add_argument("--replace", action="store_true", help="change the settings of an existing target instead")
    p.set_defaults(fn=cmd_targets_add)
    p = tsub.add_parser("list", parents=[common], help="list the targets")
    p.set_defaults(fn=cmd_targets_list)
    p = tsub.add_parser("remove", parents=[common], help="remove a target (none of its runs may be live)")
    p.add_argument("name")
    p.set_defaults(fn=cmd_targets_remove)
    p = tsub.add_parser("check", parents=[common], help="what each target offers now, or why it is unreachable")
    p.add_argument("name", nargs="?")
    p.set_defaults(fn=cmd_targets_check)
