"""The command line: same core actions and role checks as the pages, text or --json, honest exit codes."""
import json

import pytest

from tests.helpers import cli


@pytest.mark.slow
def test_init_prints_the_admin_password_once_then_users(tmp_path):
    ws = tmp_path / "ws"
    first = cli(ws, "init", "--no-demo")
    assert first.returncode == 0, first.stderr
    assert "one-time password" in first.stdout
    again = cli(ws, "init", "--no-demo")
    assert again.returncode == 0 and "password" not in again.stdout

    added = cli(ws, "users", "add", "alice", "--role", "reviewer", "--json")
    assert added.returncode == 0, added.stderr
    info = json.loads(added.stdout)
    assert info["role"] == "reviewer" and len(info["password"]) >= 8

    listed = json.loads(cli(ws, "users", "list", "--json").stdout)
    assert [(u["username"], u["role"]) for u in listed] == [("admin", "admin"), ("alice", "reviewer")]

    promoted = cli(ws, "users", "set-role", "alice", "engineer")
    assert promoted.returncode == 0 and "role: engineer" in promoted.stdout


@pytest.mark.slow
def test_refusals_are_one_line_and_non_zero(tmp_path):
    ws = tmp_path / "ws"
    assert cli(ws, "init", "--no-demo").returncode == 0
    assert cli(ws, "users", "add", "bob", "--role", "annotator").returncode == 0
    denied = cli(ws, "users", "add", "eve", "--role", "admin", "--user", "bob")
    assert denied.returncode == 1
    assert denied.stderr.strip().splitlines() == [
        "error: bob (annotator) may not manage users: that needs the admin role or higher."]
    unknown = cli(ws, "users", "list", "--user", "nobody")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: No user named 'nobody'."
    names = [u["username"] for u in json.loads(cli(ws, "users", "list", "--json").stdout)]
    assert "eve" not in names


def test_workspace_flag_and_not_a_database(tmp_path):
    ws = tmp_path / "elsewhere"
    ws.mkdir()
    (ws / "studio.db").write_text("hello")
    out = cli(tmp_path / "unused", "--workspace", str(ws), "init")
    assert out.returncode == 1
    assert "is not an SQLite database" in out.stderr and "Traceback" not in out.stderr
    assert (ws / "studio.db").read_text() == "hello"
