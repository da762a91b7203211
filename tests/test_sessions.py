"""Log-in sessions and back-off on the real database: a cookie token outlives the websocket but not a log-out,
a password change or reset, a disabled account or a lowered role; failed log-ins make the next ones wait."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from core import sessions, throttle
from core.accounts import AuthError, authenticate, set_active, set_password, set_role
from core.errors import WorkspaceError
from storage.models import LoginSession, LoginThrottle, utcnow
from tests.conftest import PASSWORD


def signed_in(session, user, client="10.0.0.1"):
    """A session whose browser already traded its ticket for the cookie token."""
    row, ticket = sessions.start(session, user, client)
    token, _ = sessions.exchange_ticket(session, ticket)
    return row, token


def test_ticket_buys_one_cookie_token_and_only_hashes_are_stored(session, users):
    row, ticket = sessions.start(session, users["annotator"], "10.0.0.1")
    token, max_age = sessions.exchange_ticket(session, ticket)
    assert 11.9 * 3600 < max_age <= 12 * 3600  # the default lifetime
    assert sessions.exchange_ticket(session, ticket) is None  # spent
    stored = session.exec(select(LoginSession)).one()
    assert token not in (stored.token_hash or "") and ticket not in str(stored.model_dump())
    user, resumed = sessions.resume(session, token)
    assert (user.username, resumed.id) == ("annotator1", row.id)
    assert sessions.resume(session, token + "x") is None and sessions.resume(session, "") is None


def test_a_late_ticket_is_refused(session, users):
    _, ticket = sessions.start(session, users["annotator"])
    assert sessions.exchange_ticket(session, ticket, now=utcnow() + timedelta(seconds=61)) is None


def test_sessions_last_the_configured_hours(session, users, monkeypatch):
    monkeypatch.setenv(sessions.ENV_HOURS, "0.5")
    row, token = signed_in(session, users["annotator"])
    assert sessions.resume(session, token, now=utcnow() + timedelta(minutes=29)) is not None
    assert sessions.resume(session, token, now=utcnow() + timedelta(minutes=31)) is None
    assert sessions.check(session, row.id, now=utcnow() + timedelta(minutes=31)) is None
    monkeypatch.setenv(sessions.ENV_HOURS, "soon")
    with pytest.raises(WorkspaceError, match="FINETUNE_STUDIO_SESSION_HOURS must be a number"):
        sessions.lifetime()


def test_log_out_ends_only_that_session(session, users):
    a, token_a = signed_in(session, users["annotator"])
    b, token_b = signed_in(session, users["annotator"])
    sessions.end(session, None, token=token_a)
    assert sessions.resume(session, token_a) is None
    assert sessions.check(session, b.id).username == "annotator1"


def test_own_password_change_keeps_this_browser_and_ends_the_others(session, users):
    here, token_here = signed_in(session, users["annotator"])
    there, token_there = signed_in(session, users["annotator"])
    set_password(session, users["annotator"], "annotator1", "a-new-password", keep_session=here.id)
    assert sessions.check(session, here.id) is not None
    assert sessions.resume(session, token_there) is None


@pytest.mark.parametrize("change", ["reset", "disable", "demote"])
def test_reset_disable_and_demotion_end_every_open_session(session, users, change):
    admin, target = users["admin"], users["reviewer"]
    rows = [signed_in(session, target) for _ in range(2)]
    other, other_token = signed_in(session, users["annotator"])
    if change == "reset":
        set_password(session, admin, "reviewer1", "reset-by-admin", keep_session=rows[0][0].id)  # keep is ignored
    elif change == "disable":
        set_active(session, admin, "reviewer1", False)
    else:
        set_role(session, admin, "reviewer1", "annotator")
    assert all(sessions.check(session, row.id) is None for row, _ in rows)
    assert all(sessions.resume(session, token) is None for _, token in rows)
    assert sessions.resume(session, other_token) is not None  # nobody else is signed out
    session.expire_all()
    assert {r.revoke_reason for r in session.exec(select(LoginSession).where(LoginSession.user_id == target.id))} \
        == {{"reset": "password changed", "disable": "account disabled", "demote": "role lowered"}[change]}


def test_promotion_keeps_the_session(session, users):
    row, _ = signed_in(session, users["annotator"])
    set_role(session, users["admin"], "annotator1", "reviewer")
    assert sessions.check(session, row.id).role == "reviewer"


def test_disabled_account_answers_exactly_like_a_wrong_password(session, users):
    set_active(session, users["admin"], "annotator1", False)
    with pytest.raises(AuthError) as disabled:
        authenticate(session, "annotator1", PASSWORD)
    with pytest.raises(AuthError) as wrong:
        authenticate(session, "engineer1", "not-the-password")
    assert str(disabled.value) == str(wrong.value) == "Wrong username or password."


def test_failed_log_ins_back_off_per_account_even_with_the_right_password(session, users):
    for _ in range(throttle.FREE_FAILURES["account"]):
        with pytest.raises(AuthError, match="Wrong username or password"):
            authenticate(session, "engineer1", "guess-guess", client="10.0.0.9")
    with pytest.raises(throttle.LoginThrottled, match=r"Too many failed log-ins\. Try again in 1 second\.") as err:
        authenticate(session, "engineer1", PASSWORD, client="10.0.0.7")  # another client, the right password
    assert 0 < err.value.retry_after <= 1
    # Other accounts are not locked by it, and each further failure doubles the wait.
    assert authenticate(session, "reviewer1", PASSWORD, client="10.0.0.9").username == "reviewer1"
    row = session.get(LoginThrottle, "account:engineer1")
    row.locked_until = None
    session.add(row)
    session.commit()
    with pytest.raises(AuthError):
        authenticate(session, "engineer1", "guess-again", client="10.0.0.9")
    with pytest.raises(throttle.LoginThrottled, match="Try again in 2 seconds"):
        authenticate(session, "engineer1", PASSWORD)


def test_unknown_names_back_off_like_real_ones(session, users):
    for _ in range(throttle.FREE_FAILURES["account"]):
        for name in ("nobody", "engineer1"):
            with pytest.raises(AuthError):
                authenticate(session, name, "guess-guess")
    messages = set()
    for name in ("nobody", "engineer1"):
        with pytest.raises(throttle.LoginThrottled) as err:
            authenticate(session, name, "guess-guess")
        messages.add(str(err.value))
    assert len(messages) == 1


@pytest.mark.slow
def test_a_client_spraying_many_names_is_slowed_down(session, users):
    for i in range(throttle.FREE_FAILURES["client"]):
        with pytest.raises(AuthError):
            authenticate(session, f"user{i}", "guess-guess", client="203.0.113.5")
    with pytest.raises(throttle.LoginThrottled):
        authenticate(session, "engineer1", PASSWORD, client="203.0.113.5")
    assert authenticate(session, "engineer1", PASSWORD, client="198.51.100.1").username == "engineer1"


def test_success_clears_the_account_count_and_old_failures_are_forgotten(session, users):
    for _ in range(throttle.FREE_FAILURES["account"] - 1):
        with pytest.raises(AuthError):
            authenticate(session, "engineer1", "guess-guess")
    authenticate(session, "engineer1", PASSWORD)
    assert session.get(LoginThrottle, "account:engineer1") is None
    keys = throttle.keys_for("reviewer1", None)
    long_ago = utcnow() - throttle.FORGET_AFTER - timedelta(minutes=1)
    for _ in range(throttle.FREE_FAILURES["account"] + 3):
        throttle.failed(session, keys, now=long_ago)
    throttle.failed(session, keys)
    session.expire_all()
    assert session.get(LoginThrottle, keys[0]).failures == 1


def test_waits_double_up_to_a_cap():
    free = throttle.FREE_FAILURES["account"]
    assert [throttle.wait_after("account", free - 1 + i) for i in range(4)] == [0.0, 1.0, 2.0, 4.0]
    assert throttle.wait_after("account", 500) == throttle.MAX_WAIT_S


def test_old_sessions_and_forgotten_counters_are_pruned(session, users):
    long_ago = utcnow() - sessions.KEEP_ENDED - timedelta(days=1)
    sessions.start(session, users["annotator"], now=long_ago)
    signed_in(session, users["annotator"])  # starting a session prunes the ones long expired
    session.expire_all()
    created = [r.created_at for r in session.exec(select(LoginSession))]
    assert len(created) == 1 and created[0] > long_ago
    throttle.failed(session, throttle.keys_for("ghost", None), now=utcnow() - throttle.FORGET_AFTER * 2)
    throttle.failed(session, throttle.keys_for("someone", None))
    session.expire_all()
    assert session.get(LoginThrottle, "account:ghost") is None
    assert session.get(LoginThrottle, "account:someone").failures == 1
