"""Accounts: hashing, log-in failures, role checks in core (not only hidden pages)."""
import pytest
from sqlmodel import select

from core.accounts import AuthError, authenticate, can, create_user, set_role
from core.errors import InvalidInput, PermissionDenied
from core.projects import create_project, update_project
from storage.models import User
from tests.helpers import PASSWORD


def test_password_is_hashed_not_stored(session, users):
    row = session.exec(select(User).where(User.username == "engineer1")).one()
    assert PASSWORD not in row.password_hash
    assert row.password_hash.startswith("$argon2")
    assert authenticate(session, "engineer1", PASSWORD).id == row.id


@pytest.mark.parametrize("username,password", [("engineer1", "wrong-password"), ("nobody", PASSWORD), ("", "")])
def test_bad_login_gives_one_clear_message_and_writes_nothing(session, users, username, password):
    before = {u.username: u.last_login_at for u in session.exec(select(User))}
    with pytest.raises(AuthError, match="Wrong username or password"):
        authenticate(session, username, password)
    session.expire_all()
    assert {u.username: u.last_login_at for u in session.exec(select(User))} == before


def test_roles_are_ordered():
    roles = {r: User(username=r, password_hash="x", role=r) for r in ("annotator", "reviewer", "engineer", "admin")}
    assert can(roles["annotator"], "curate") and not can(roles["annotator"], "review_data")
    assert can(roles["reviewer"], "score") and not can(roles["reviewer"], "train")
    assert can(roles["engineer"], "train") and not can(roles["engineer"], "manage_users")
    assert can(roles["admin"], "manage_users")


@pytest.mark.parametrize("role", ["annotator", "reviewer", "engineer"])
def test_only_admins_manage_users_and_projects(session, users, role):
    actor = users[role]
    with pytest.raises(PermissionDenied, match="may not manage users"):
        create_user(session, actor, "mallory", PASSWORD, "admin")
    with pytest.raises(PermissionDenied):
        set_role(session, actor, actor.username, "admin")
    with pytest.raises(PermissionDenied, match="may not manage projects"):
        create_project(session, actor, "sneaky")
    assert session.exec(select(User).where(User.username == "mallory")).first() is None


def test_last_admin_cannot_be_demoted(session, users):
    with pytest.raises(InvalidInput, match="last admin"):
        set_role(session, users["admin"], users["admin"].username, "reviewer")


def test_rubric_validation(session, users, project):
    with pytest.raises(InvalidInput, match="appears twice"):
        update_project(session, users["admin"], project, rubric=[{"name": "tone"}, {"name": "Tone"}])
    updated = update_project(session, users["admin"], project,
                             rubric=[{"name": "Accuracy", "description": "right facts", "min": 1, "max": 7}])
    assert updated.rubric == [{"name": "accuracy", "description": "right facts", "min": 1, "max": 7}]
