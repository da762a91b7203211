"""Users, roles and the permission check every state-changing core action goes through.

Roles are workspace-wide and ordered: agent < annotator < reviewer < engineer < admin; each includes the
rights of the ones before it. An agent (a support agent in a pilot) may only pilot a model and see their account;
the order being one line, every role above may pilot too. Passwords are hashed with Argon2 (argon2-cffi), never
stored in clear.

Log-ins back off after repeated failures (core.throttle), and answer the same for an unknown name, a wrong
password and a disabled account. Changing a password, disabling an account or lowering its role ends that
user's open sessions (core.sessions), so the change holds in browsers already signed in.
"""
from __future__ import annotations

import re
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from core import sessions, throttle
from core.errors import InvalidInput, NotFound, PermissionDenied, StudioError
from storage.models import Role, User, utcnow

_hasher = PasswordHasher()

ROLE_ORDER = [Role.agent.value, Role.annotator.value, Role.reviewer.value, Role.engineer.value, Role.admin.value]

# action -> least role allowed to do it
ACTIONS: dict[str, str] = {
    "pilot": Role.agent.value,  # ask a pilot's system questions and rate its answers (the Pilot page)
    "curate": Role.annotator.value,  # import (uploads), edit, submit examples
    "import_server_files": Role.engineer.value,  # import a file by its path on the server (import roots only)
    "review_data": Role.reviewer.value,  # approve / reject examples
    "score": Role.reviewer.value,  # blind side-by-side scoring
    "freeze": Role.reviewer.value,  # freeze a dataset version
    "train": Role.engineer.value,  # launch, cancel, resume, merge runs
    "evaluate": Role.engineer.value,  # eval sets and generation jobs
    "manage_project": Role.admin.value,  # guidelines, rubric, create projects
    "manage_users": Role.admin.value,
    "manage_targets": Role.admin.value,  # register compute targets (Ray, Slurm clusters)
}

ACTION_WORDS = {
    "pilot": "pilot a model",
    "curate": "curate data",
    "import_server_files": "import files from the server",
    "review_data": "approve or reject examples",
    "score": "score outputs",
    "freeze": "freeze dataset versions",
    "train": "train models",
    "evaluate": "run evaluations",
    "manage_project": "manage projects",
    "manage_users": "manage users",
    "manage_targets": "manage compute targets",
}

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
MIN_PASSWORD = 8


class AuthError(StudioError):
    """Log-in failed. The message never says whether the user exists."""


def can(user: User | None, action: str) -> bool:
    """Whether ``user`` may perform ``action``."""
    if user is None or not user.active:
        return False
    return ROLE_ORDER.index(user.role) >= ROLE_ORDER.index(ACTIONS[action])


def require(user: User | None, action: str) -> User:
    """Raise PermissionDenied unless ``user`` may perform ``action``; return the user."""
    if not can(user, action):
        who = f"{user.username} ({user.role})" if user else "nobody"
        need = ACTIONS[action]
        raise PermissionDenied(f"{who} may not {ACTION_WORDS[action]}: that needs the {need} role or higher.")
    return user


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def _check_role(role: str) -> str:
    if role not in ROLE_ORDER:
        raise InvalidInput(f"Unknown role {role!r}; choose one of: {', '.join(ROLE_ORDER)}.")
    return role


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"Passwords need at least {MIN_PASSWORD} characters.")


def get_user(session: Session, username: str) -> User:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFound(f"No user named {username!r}.")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(User.id)))


def first_admin(session: Session) -> User | None:
    return session.exec(
        select(User).where(User.role == Role.admin.value, User.active == True).order_by(User.id)  # noqa: E712
    ).first()


def _insert_user(session: Session, username: str, password: str, role: str) -> User:
    if not USERNAME_RE.match(username or ""):
        raise InvalidInput("Usernames are 2-64 characters: letters, digits, and . _ @ -")
    _check_role(role)
    _check_password(password)
    if session.exec(select(User).where(User.username == username)).first():
        raise InvalidInput(f"A user named {username!r} already exists.")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def create_user(session: Session, actor: User, username: str, password: str, role: str) -> User:
    """An admin creates an account."""
    require(actor, "manage_users")
    return _insert_user(session, username, password, role)


def bootstrap_admin(session: Session, username: str = "admin") -> tuple[User, str] | None:
    """On first start only (no users yet): create an admin with a one-time password.

    Returns (user, password) when it created one, else None. The caller prints the password once.
    """
    if session.exec(select(User)).first() is not None:
        return None
    password = generate_password()
    return _insert_user(session, username, password, Role.admin.value), password


def set_role(session: Session, actor: User, username: str, role: str) -> User:
    require(actor, "manage_users")
    user = get_user(session, username)
    _check_role(role)
    if user.role == Role.admin.value and role != Role.admin.value and _active_admins(session) <= 1:
        raise InvalidInput("This is the last admin; make another admin first.")
    if ROLE_ORDER.index(role) < ROLE_ORDER.index(user.role):  # rights removed: signed-in browsers sign in again
        sessions.end_all(session, user.id, "role lowered", commit=False)
    user.role = role
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def set_active(session: Session, actor: User, username: str, active: bool) -> User:
    require(actor, "manage_users")
    user = get_user(session, username)
    if not active and user.role == Role.admin.value and _active_admins(session) <= 1:
        raise InvalidInput("This is the last admin; make another admin first.")
    if not active:
        sessions.end_all(session, user.id, "account disabled", commit=False)
    user.active = active
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def set_password(session: Session, actor: User, username: str, new_password: str,
                 keep_session: int | None = None) -> User:
    """Admins reset anyone's password; everyone may change their own.

    Every open session of that user ends, except ``keep_session`` (the browser where users change their own
    password stays signed in; an admin's reset signs the user out everywhere).
    """
    if actor.username != username:
        require(actor, "manage_users")
        keep_session = None
    _check_password(new_password)
    user = get_user(session, username)
    sessions.end_all(session, user.id, "password changed", keep=keep_session, commit=False)
    user.password_hash = hash_password(new_password)
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def reset_password(session: Session, actor: User, username: str) -> str:
    """An admin gives a user a new generated password (returned, to be shown once and handed over); like every
    password change (``set_password``, which the CLI's ``users set-password`` calls too) it ends all of that
    user's sessions. Admins change their own password on the Account page, which asks for the current one."""
    require(actor, "manage_users")
    if actor.username == username:
        raise InvalidInput("Change your own password on the Account page (it asks for the current one).")
    password = generate_password()
    set_password(session, actor, username, password)
    return password


def _active_admins(session: Session) -> int:
    return len(list(session.exec(select(User.id).where(User.role == Role.admin.value, User.active == True))))  # noqa: E712


def authenticate(session: Session, username: str, password: str, client: str | None = None) -> User:
    """The user whose password this is, or AuthError with one message for every failure.

    An unknown name, a wrong password and a disabled account get the same answer in about the same time (a
    disabled account's hash is still checked). Repeated failures for the name or from ``client`` (an address)
    make the next attempts wait (throttle.LoginThrottled, which says for how long).
    """
    name = (username or "").strip()
    keys = throttle.keys_for(name, client)
    throttle.check(session, keys)
    user = session.exec(select(User).where(User.username == name)).first()
    try:
        _hasher.verify(user.password_hash if user is not None and password else _dummy_hash(), password or "x")
        correct = user is not None and bool(password)
    except (VerificationError, InvalidHashError):
        correct = False
    if not correct or not user.active:
        throttle.failed(session, keys)
        raise AuthError("Wrong username or password.")
    throttle.succeeded(session, name)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Made on first use, not at import: hashing costs ~0.1 s and every page imports this module.
    return _hasher.hash("not-a-real-password")
