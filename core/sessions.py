"""Signed-in browser sessions that survive a refresh, a second tab and a deep link, and end when they must.

Why this shape. A Streamlit script cannot set a cookie: ``st.context.cookies`` is read-only (streamlit#861,
#14730), ``st.login`` needs an outside OpenID Connect provider, and ``st.session_state`` dies with the
websocket, which is why a refresh used to log people out. What Streamlit 1.53+ does allow is serving the app
as an ASGI ``st.App`` with routes of our own (``asgi.py``): an ordinary HTTP response there can set an
HttpOnly cookie, and every later websocket of that browser carries it, where ``st.context.cookies`` reads it.
So a log-in takes two steps:

1. The log-in form checks the password in the script (``core.accounts.authenticate``, throttled) and calls
   ``start``: a ``LoginSession`` row with a one-time *ticket* (random, valid for ``TICKET_SECONDS``).
2. The page mounts a few lines of JavaScript (``ui.browser.store_session_cookie``) that POST the ticket to
   ``/_fts/session``. That route calls ``exchange_ticket``, which makes the long-lived token and answers
   ``Set-Cookie: fts_session=<token>; HttpOnly; SameSite=Strict; Path=/; Max-Age=<lifetime>`` (``Secure`` over
   HTTPS). Page JavaScript never sees the token, and the ticket is useless once spent or after a minute.

A new websocket (refresh, second tab, a link such as ``/annotate``) then finds the cookie and ``resume`` turns
it into the user, and every script run, timed live-panel refreshes included (ui.frame.live_fragment), re-checks
the row (``check``), so ending a session takes effect at the next click or refresh: log-out ends that row;
changing one's own password ends the other rows; an admin's password reset, disabling the account or lowering
its role ends all of them (``end_all``, called by core.accounts).

The token is 256 random bits looked up by its SHA-256, the way Django keeps database sessions: a signature
would only repeat the lookup's check, and hashing means a copy of the database holds no usable cookie.

Not chosen: a cookie written by page JavaScript (``document.cookie``) or a token in localStorage (what the
community cookie components do) cannot be HttpOnly, so any injected script could read it; Starlette
middleware that sets the cookie on the page load cannot know about a log-in that happens later over the
websocket; ``st.login`` would need an identity provider this self-hosted app does not have.
Sessions last ``FINETUNE_STUDIO_SESSION_HOURS`` (default 12) from log-in, not from last use, so a cookie's
Max-Age and the row agree.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete
from sqlmodel import Session, select

from core.errors import WorkspaceError
from storage.models import LoginSession, User, utcnow

COOKIE_NAME = "fts_session"
ENV_HOURS = "FINETUNE_STUDIO_SESSION_HOURS"
DEFAULT_HOURS = 12.0
TICKET_SECONDS = 60


def lifetime() -> timedelta:
    """How long a log-in lasts (``FINETUNE_STUDIO_SESSION_HOURS``, default 12 hours)."""
    raw = os.environ.get(ENV_HOURS, "").strip()
    if not raw:
        return timedelta(hours=DEFAULT_HOURS)
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not 0 < hours <= 24 * 366:
        raise WorkspaceError(f"{ENV_HOURS} must be a number of hours above 0 (at most a year), not {raw!r}.")
    return timedelta(hours=hours)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def _live(row: LoginSession | None, now: datetime) -> bool:
    return row is not None and row.revoked_at is None and _aware(row.expires_at) > now


def start(session: Session, user: User, client: str = "", now: datetime | None = None) -> tuple[LoginSession, str]:
    """A new session for ``user`` (already authenticated) and the one-time ticket its browser trades for the
    cookie. Only the ticket's hash is stored."""
    now = now or utcnow()
    _prune(session, now)
    ticket = secrets.token_urlsafe(32)
    row = LoginSession(user_id=user.id, ticket_hash=_digest(ticket), client=(client or "")[:64],
                       ticket_expires_at=now + timedelta(seconds=TICKET_SECONDS), created_at=now,
                       expires_at=now + lifetime())
    session.add(row)
    session.commit()
    session.refresh(row)
    return row, ticket


KEEP_ENDED = timedelta(days=30)  # ended and expired sessions stay this long for a look at who signed in when


def _prune(session: Session, now: datetime) -> None:
    session.exec(delete(LoginSession).where(LoginSession.expires_at < now - KEEP_ENDED))


def exchange_ticket(session: Session, ticket: str, now: datetime | None = None) -> tuple[str, int] | None:
    """Spend a ticket: ``(cookie token, seconds it stays valid)``, or None for an unknown, spent, expired or
    revoked one. The token is made here and only its hash is kept."""
    now = now or utcnow()
    if not isinstance(ticket, str) or not ticket or len(ticket) > 200:
        return None
    row = session.exec(select(LoginSession).where(LoginSession.ticket_hash == _digest(ticket))).first()
    if not _live(row, now) or _aware(row.ticket_expires_at) is None or _aware(row.ticket_expires_at) < now:
        return None
    token = secrets.token_urlsafe(32)
    row.ticket_hash, row.ticket_expires_at, row.token_hash = None, None, _digest(token)
    session.add(row)
    session.commit()
    return token, max(1, int((_aware(row.expires_at) - now).total_seconds()))


def resume(session: Session, token: str | None, now: datetime | None = None) -> tuple[User, LoginSession] | None:
    """The user and session a cookie token stands for, if the session is live and the account active."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    row = session.exec(select(LoginSession).where(LoginSession.token_hash == _digest(token))).first()
    return _owner(session, row, now or utcnow())


def check(session: Session, session_id: int, now: datetime | None = None) -> User | None:
    """The user of a live session (run on every page load and live-panel refresh, so an ended session stops there)."""
    found = _owner(session, session.get(LoginSession, session_id), now or utcnow())
    return found[0] if found else None


def _owner(session: Session, row: LoginSession | None, now: datetime) -> tuple[User, LoginSession] | None:
    if not _live(row, now):
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    return user, row


def end(session: Session, session_id: int | None, reason: str = "logged out", token: str | None = None) -> None:
    """End one session, named by id or by its cookie token (log-out)."""
    row = session.get(LoginSession, session_id) if session_id else None
    if row is None and token:
        row = session.exec(select(LoginSession).where(LoginSession.token_hash == _digest(token))).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at, row.revoke_reason, row.ticket_hash = utcnow(), reason[:64], None
        session.add(row)
        session.commit()


def end_all(session: Session, user_id: int, reason: str, keep: int | None = None, commit: bool = True) -> int:
    """End every open session of a user except ``keep``; how many ended. Used when the password changes, the
    account is disabled or its role lowered."""
    rows = session.exec(select(LoginSession).where(LoginSession.user_id == user_id,
                                                   LoginSession.revoked_at.is_(None))).all()
    now = utcnow()
    ended = 0
    for row in rows:
        if row.id == keep:
            continue
        row.revoked_at, row.revoke_reason, row.ticket_hash = now, reason[:64], None
        session.add(row)
        ended += 1
    if commit:
        session.commit()
    return ended


def open_sessions(session: Session, user_id: int, now: datetime | None = None) -> list[LoginSession]:
    """A user's live sessions, newest first."""
    now = now or utcnow()
    rows = session.exec(select(LoginSession).where(LoginSession.user_id == user_id,
                                                   LoginSession.revoked_at.is_(None))
                        .order_by(LoginSession.id.desc())).all()
    return [r for r in rows if _aware(r.expires_at) > now]
