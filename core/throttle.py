"""Log-in back-off: failed attempts are counted per account name and per client address, and after a few free
failures each key must wait twice as long as the time before (1 s, 2 s, 4 s, ... up to 15 minutes).

A name that does not exist is counted like one that does, so the wait reveals nothing about which accounts
exist. An account's count is cleared by a successful log-in; a client's count is not (an attacker with one
valid account must not be able to wipe the count of the names they are guessing), it is forgotten an hour
after that client's last failure, as is an account's. OWASP's authentication cheat sheet describes the
scheme; the limits below are ours.

Counters live in the database (``LoginThrottle``) so a server restart does not reset them, and each change is
one UPDATE, so two attempts at the same moment cannot both slip under the limit.
"""
from __future__ import annotations

import ipaddress
import math
import os
from datetime import datetime, timedelta, timezone

from sqlalchemy import case, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from core.errors import InvalidInput, StudioError
from storage.models import LoginThrottle, utcnow

FREE_FAILURES = {"account": 5, "client": 20}  # failures allowed before the first wait
FIRST_WAIT_S = 1.0
MAX_WAIT_S = 15 * 60.0
FORGET_AFTER = timedelta(hours=1)
TRUSTED_PROXIES_ENV = "FINETUNE_STUDIO_TRUSTED_PROXIES"
"""Comma-separated addresses or networks of the reverse proxies in front of the server, named by an admin."""
SERVER_PROXY_ENV = "FORWARDED_ALLOW_IPS"
"""uvicorn's own setting: the peers whose X-Forwarded-For it believes (its default trusts loopback)."""


class LoginThrottled(StudioError):
    """Too many failed log-ins from this client or for this name; ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


def keys_for(username: str, client: str | None) -> list[str]:
    """The throttle keys of one attempt: the account name and, when known, the client's address."""
    keys = [f"account:{(username or '').strip()[:150]}"]
    if client:
        keys.append(f"client:{client[:150]}")
    return keys


def trusted_proxies(environ=None) -> str:
    """The proxies an admin named in FINETUNE_STUDIO_TRUSTED_PROXIES, normalized ("" when none).

    The client address the back-off counts is the TCP peer's, unless that peer is a named proxy: then it is the
    right-most address in X-Forwarded-For that is not a named proxy. Trusting loopback by default (uvicorn's
    default) let anyone on this machine, or any local tunnel, claim a fresh address on every attempt."""
    raw = (os.environ if environ is None else environ).get(TRUSTED_PROXIES_ENV, "")
    items = [item.strip() for item in raw.split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InvalidInput(f"{TRUSTED_PROXIES_ENV}: {item!r} is not an IP address or network "
                               "(e.g. 127.0.0.1,10.0.0.0/24).") from None
    return ",".join(items)


def server_environment(environ=None) -> dict[str, str]:
    """What the web server process needs in its environment so it trusts exactly the named proxies."""
    return {SERVER_PROXY_ENV: trusted_proxies(environ)}


def wait_after(kind: str, failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts (0 while under the free allowance)."""
    over = failures - FREE_FAILURES[kind] + 1
    if over <= 0:
        return 0.0
    return min(MAX_WAIT_S, FIRST_WAIT_S * 2 ** (over - 1))


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def check(session: Session, keys: list[str], now: datetime | None = None) -> None:
    """Raise LoginThrottled when any key must still wait; the message says for how long."""
    now = now or utcnow()
    longest = 0.0
    for key in keys:
        row = session.get(LoginThrottle, key)
        until = _aware(row.locked_until) if row else None
        if until is not None and until > now:
            longest = max(longest, (until - now).total_seconds())
    if longest > 0:
        raise LoginThrottled(f"Too many failed log-ins. Try again in {_say(longest)}.", retry_after=longest)


def failed(session: Session, keys: list[str], now: datetime | None = None) -> None:
    """Count one failed attempt against each key and set its wait."""
    now = now or utcnow()
    # Forgotten counters go, so guessing many names cannot grow the table without bound.
    session.exec(delete(LoginThrottle).where(
        LoginThrottle.last_failure_at < now - FORGET_AFTER,
        or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now)))
    for key in keys:
        failures = _bump(session, key, now)
        wait = wait_after(key.split(":", 1)[0], failures)
        if wait:
            session.exec(update(LoginThrottle).where(LoginThrottle.key == key)
                         .values(locked_until=now + timedelta(seconds=wait)))
    session.commit()


def succeeded(session: Session, username: str) -> None:
    """A correct password clears the account's count (never the client's: see the module docstring)."""
    row = session.get(LoginThrottle, keys_for(username, None)[0])
    if row is not None:
        session.delete(row)
        session.commit()


def _bump(session: Session, key: str, now: datetime) -> int:
    stale = LoginThrottle.last_failure_at < now - FORGET_AFTER
    for _ in range(2):
        result = session.exec(update(LoginThrottle).where(LoginThrottle.key == key).values(
            failures=case((stale, 1), else_=LoginThrottle.failures + 1), last_failure_at=now))
        if result.rowcount:
            break
        try:
            with session.begin_nested():
                session.add(LoginThrottle(key=key, failures=1, last_failure_at=now))
            break
        except IntegrityError:  # another attempt created the row first: count on it
            continue
    session.flush()
    row = session.get(LoginThrottle, key)
    session.refresh(row)
    return row.failures


def _say(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"
