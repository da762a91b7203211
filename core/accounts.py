"""Users, roles and the permission check every state-changing core action goes through.

Roles are workspace-wide and ordered: annotator < reviewer < engineer < admin; each includes the
rights of the ones before it. Passwords are hashed with Argon2 (argon2-cffi), never stored in clear.
"""
from __future__ import annotations

import re
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from core.errors import InvalidInput, NotFound, PermissionDenied, StudioError
from storage.models import Role, User, utcnow

_hasher = PasswordHasher()

ROLE_ORDER = [Role.annotator.value, Role.reviewer.value, Role.engineer.value, Role.admin.value]

# action -> least role allowed to do it
ACTIONS: dict[str, str] = {
    "curate": Role.annotator.value,  # import (uploads), edit, submit examples
    "import_server_files": Role.engineer.value,  # import a file by its path on the server (import roots only)
    "review_data": Role.reviewer.value,  # approve / reject examples
    "score": Role.reviewer.value,  # blind side-by-side scoring
    "freeze": Role.reviewer.value,  # freeze a dataset version
    "train": Role.engineer.value,  # launch, cancel, resume, merge runs
    "evaluate": Role.engineer.value,  # eval sets and generation jobs
    "manage_project": Role.admin.value,  # guidelines, rubric, create projects
    "manage_users": Role.admin.value,
}

ACTION_WORDS = {
    "curate": "curate data",
    "import_server_files": "import files from the server",
    "review_data": "approve or reject examples",
    "score": "score outputs",
    "freeze": "freeze dataset versions",
    "train": "train models",
    "evaluate": "run evaluations",
    "manage_project": "manage projects",
    "manage_users": "manage users",
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
    user.active = active
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def set_password(session: Session, actor: User, username: str, new_password: str) -> User:
    """Admins reset anyone's password; everyone may change their own."""
    if actor.username != username:
        require(actor, "manage_users")
    _check_password(new_password)
    user = get_user(session, username)
    user.password_hash = hash_password(new_password)
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def _active_admins(session: Session) -> int:
    return len(list(session.exec(select(User.id).where(User.role == Role.admin.value, User.active == True))))  # noqa: E712


def authenticate(session: Session, username: str, password: str) -> User:
    """The user whose password this is, or AuthError with one message for every failure."""
    user = session.exec(select(User).where(User.username == (username or "").strip())).first()
    failure = AuthError("Wrong username or password.")
    if user is None or not password:
        # Spend the same time as a real check so the answer does not reveal which users exist.
        try:
            _hasher.verify(_dummy_hash(), password or "x")
        except (VerificationError, InvalidHashError):
            pass
        raise failure
    if not user.active:
        raise AuthError("This account is disabled; ask an admin.")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise failure from None
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
