"""``finetune-studio``: the command line for what engineers script.

Every command acts as a named user (``--user NAME``, default the first admin) and goes through the same
core functions and role checks as the pages. Plain text for people, ``--json`` for scripts. Exit code 0 on
success; non-zero with a one-line reason on failure.

This module holds the workspace, user and project commands; each stage's subcommands live in their own module
(core/cli/data.py, docs.py, train.py, eval.py, judges.py, prefs.py, ship.py, targets.py; core/cli/common.py holds
what they share). Each exposes ``register(subparsers, common)`` and handlers ``fn(args, session, user) -> object``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session

from core.accounts import (ROLE_ORDER, create_user, first_admin, generate_password, get_user, list_users, require,
                           set_password, set_role)
from core.cli import data as cli_data
from core.cli import docs as cli_docs
from core.cli import eval as cli_eval
from core.cli import judges as cli_judges
from core.cli import prefs as cli_prefs
from core.cli import targets as cli_targets
from core.cli import ship as cli_ship
from core.cli import train as cli_train
from core.errors import StudioError
from core.jobs.queue import reconcile_on_start
from core.projects import create_project, list_projects
from core.startup import UPKEEP_BY_SERVE, init_workspace, start_upkeep
from core.throttle import server_environment
from core.workspace import offline_env, set_workspace
from storage.db import get_engine, init_db

EXIT_ERROR = 1
EXIT_USAGE = 2


def _emit(args, result) -> None:
    """Print ``result`` as JSON (``--json``) or as text for people."""
    if result is None:
        return
    if getattr(args, "json", False):
        print(json.dumps(_jsonable(result), indent=2, default=str))
        return
    if isinstance(result, str):
        print(result)
    elif isinstance(result, list):
        for row in result:
            print(_text_row(row))
    elif isinstance(result, dict):
        for key, value in result.items():
            print(f"{key}: {value}")
    else:
        print(result)


def _text_row(row) -> str:
    row = _jsonable(row)
    if isinstance(row, dict):
        return "  ".join(f"{k}={v}" for k, v in row.items())
    return str(row)


def _jsonable(value):
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _user_row(user) -> dict:
    return {"username": user.username, "role": user.role, "active": user.active}


# ---------------------------------------------------------------- foundation commands


def cmd_init(args, session, user):
    res = init_workspace(with_demo=not args.no_demo)
    out = {"workspace": res.workspace}
    if res.admin_password:
        out["admin"] = res.admin_username
        out["one-time password"] = res.admin_password
    if res.demo_project_id:
        out["demo project id"] = res.demo_project_id
    return out


def cmd_serve(args, session, user):
    proxies = server_environment()  # X-Forwarded-For counts only from the proxies an admin named; checked first
    res = init_workspace()
    if res.admin_password:
        # Shown once, like a notebook server's token; never stored in clear.
        print(f"First start: log in as '{res.admin_username}' with the one-time password: {res.admin_password}",
              flush=True)
        print("Change it on the Account page; create more users with `finetune-studio users add`.", flush=True)
    # asgi.py serves app.py plus the route that sets the session cookie (see core.sessions).
    app = Path(__file__).resolve().parent.parent.parent / "asgi.py"
    argv = [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.address", args.host, "--server.port", str(args.port),
            # Headless: Streamlit's first-run e-mail prompt would otherwise wait on the terminal before serving.
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false"]
    print(f"finetune-studio on http://{args.host}:{args.port}  (workspace {res.workspace})", flush=True)
    reconcile_on_start()  # jobs whose process died while the server was down become failed now
    start_upkeep()  # and from now on every few seconds, whether or not a page is open
    env = dict(os.environ, **{UPKEEP_BY_SERVE: "1"})  # the app need not start its own
    env.update(proxies)
    return subprocess.call(argv, env=env) or None


def cmd_users_add(args, session, user):
    password = args.password or os.environ.get("FINETUNE_STUDIO_NEW_PASSWORD") or generate_password()
    new = create_user(session, user, args.username, password, args.role)
    out = _user_row(new)
    if not args.password:
        out["password"] = password
    return out


def cmd_users_list(args, session, user):
    require(user, "manage_users")
    return [_user_row(u) for u in list_users(session)]


def cmd_users_set_role(args, session, user):
    return _user_row(set_role(session, user, args.username, args.role))


def cmd_users_set_password(args, session, user):
    password = args.password or os.environ.get("FINETUNE_STUDIO_NEW_PASSWORD")
    if not password:
        raise StudioError("Give the new password with --password or FINETUNE_STUDIO_NEW_PASSWORD.")
    set_password(session, user, args.username, password)
    return {"username": args.username, "password": "changed"}


def cmd_projects(args, session, user):
    if args.create:
        p = create_project(session, user, args.create, args.description or "")
        return {"id": p.id, "name": p.name}
    return [{"id": p.id, "name": p.name} for p in list_projects(session)]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the subcommand is not reset by the subcommand's own default.
    common.add_argument("--workspace", default=argparse.SUPPRESS,
                        help="workspace folder (default $FINETUNE_STUDIO_HOME or ./workspace)")
    common.add_argument("--user", default=argparse.SUPPRESS, help="act as this user (default: the first admin)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")

    parser = argparse.ArgumentParser(prog="finetune-studio", description=__doc__.splitlines()[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", parents=[common], help="start the web app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(fn=cmd_serve, needs_db=False)

    p = sub.add_parser("init", parents=[common], help="create the workspace, first admin and demo project")
    p.add_argument("--no-demo", action="store_true")
    p.set_defaults(fn=cmd_init, needs_db=False)

    users = sub.add_parser("users", parents=[common], help="manage accounts").add_subparsers(dest="users_cmd",
                                                                                             required=True)
    p = users.add_parser("add", parents=[common], help="create a user (prints a generated password)")
    p.add_argument("username")
    p.add_argument("--role", default="annotator", choices=ROLE_ORDER)
    p.add_argument("--password", help="default: generated and printed once")
    p.set_defaults(fn=cmd_users_add)
    p = users.add_parser("list", parents=[common], help="list users")
    p.set_defaults(fn=cmd_users_list)
    p = users.add_parser("set-role", parents=[common], help="change a user's role")
    p.add_argument("username")
    p.add_argument("role", choices=ROLE_ORDER)
    p.set_defaults(fn=cmd_users_set_role)
    p = users.add_parser("set-password", parents=[common], help="reset a user's password")
    p.add_argument("username")
    p.add_argument("--password")
    p.set_defaults(fn=cmd_users_set_password)

    p = sub.add_parser("projects", parents=[common], help="list or create projects")
    p.add_argument("--create", metavar="NAME")
    p.add_argument("--description")
    p.set_defaults(fn=cmd_projects)

    for stage in (cli_data, cli_docs, cli_prefs, cli_train, cli_eval, cli_judges, cli_ship, cli_targets):
        stage.register(sub, common)
    return parser


def _acting_user(session, name: str | None):
    if name:
        return get_user(session, name)
    user = first_admin(session)
    if user is None:
        raise StudioError("No users yet: run `finetune-studio init` first.")
    return user


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "workspace", None):
        set_workspace(args.workspace)
    offline_env()
    try:
        if getattr(args, "needs_db", True):
            init_db()
            with Session(get_engine(), expire_on_commit=False) as session:
                user = _acting_user(session, getattr(args, "user", None))
                result = args.fn(args, session, user)
        else:
            result = args.fn(args, None, None)
        _emit(args, result)
        return getattr(args, "exit_code", 0)  # a command may report a failure it printed (targets check)
    except StudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
