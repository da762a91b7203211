"""LLM judges: OpenAI-compatible endpoints an admin registers to grade eval-set outputs (core.evaluate.judging).

A judge is a base URL (``http://host:port/v1``, as OpenAI clients take it: this app's own ``serve-model`` prints
one), a model name and the NAME of the environment variable that holds its API key, read when a request is sent:
the key itself is never stored in the database. ``check_judge`` sends one tiny request and returns the answer,
or raises JudgeError with what went wrong. Each judge carries the bar its agreement with the reviewers must reach
before its figures are trusted (``min_kappa`` on at least ``min_items`` items; core.evaluate.judgeresults).
"""
from __future__ import annotations

from typing import Any

import os
import re
import time

from sqlalchemy import func
from sqlmodel import Session, select

from core.accounts import require
from core.errors import Conflict, InvalidInput, NotFound, StudioError
from storage.models import Judge, JudgeVerdict, User

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:@-]{0,99}$")
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 300  # the first request to this app's own serve-model waits while it loads the model
CHECK_MESSAGES = [{"role": "user", "content": "Reply with the single word OK."}]


class JudgeError(StudioError):
    """The judge's endpoint refused a request, broke off or answered something that is not a chat completion."""


def _check_fields(name: str, base_url: str, model: str, api_key_env: str, min_kappa, min_items) -> dict:
    name, base_url, model, api_key_env = (name or "").strip(), (base_url or "").strip(), (model or "").strip(), \
        (api_key_env or "").strip()
    if not NAME_RE.match(name):
        raise InvalidInput("A judge's name is 1-100 letters, digits, spaces or _ . : @ - (starting with a letter "
                           "or digit).")
    if not re.match(r"^https?://[^\s/]+", base_url) or len(base_url) > 500:
        raise InvalidInput("The base URL must start with http:// or https:// and name a host, e.g. "
                           "http://127.0.0.1:8000/v1 (serve-model prints it).")
    if len(model) > 200:
        raise InvalidInput("The model name is at most 200 characters.")
    if api_key_env and not ENV_NAME_RE.match(api_key_env):
        raise InvalidInput("Give the NAME of the environment variable that holds the API key (letters, digits "
                           "and _), e.g. JUDGE_API_KEY, never the key itself.")
    try:
        min_kappa, min_items = float(min_kappa), int(min_items)
    except (TypeError, ValueError):
        raise InvalidInput("The trust bar is a kappa (a number) and a number of items.") from None
    if not -1.0 <= min_kappa <= 1.0:
        raise InvalidInput("The kappa a judge must reach is between -1 and 1 (0.6 by default).")
    if not 1 <= min_items <= 100_000:
        raise InvalidInput("The number of items the agreement needs is between 1 and 100000 (30 by default).")
    return {"name": name, "base_url": base_url.rstrip("/"), "model": model, "api_key_env": api_key_env,
            "min_kappa": min_kappa, "min_items": min_items}


def add_judge(session: Session, user: User, name: str, base_url: str, model: str = "", api_key_env: str = "", *,
              min_kappa: float = 0.6, min_items: int = 30) -> Judge:
    """Register a judge (admins). ``api_key_env`` is the name of an environment variable, never a key."""
    require(user, "manage_project")
    fields = _check_fields(name, base_url, model, api_key_env, min_kappa, min_items)
    if session.exec(select(Judge).where(Judge.name == fields["name"])).first():
        raise Conflict(f"A judge named {fields['name']!r} exists already.")
    judge = Judge(**fields, created_by=user.id)
    session.add(judge)
    session.commit()
    session.refresh(judge)
    return judge


def list_judges(session: Session, user: User) -> list[Judge]:
    """Every registered judge, by name (engineers and up: they run judge jobs and read the figures)."""
    require(user, "evaluate")
    return list(session.exec(select(Judge).order_by(Judge.name)))


def get_judge(session: Session, judge_id_or_name: int | str) -> Judge:
    """A judge by id or by name."""
    judge = None
    if str(judge_id_or_name).isdigit():
        judge = session.get(Judge, int(judge_id_or_name))
    if judge is None:
        judge = session.exec(select(Judge).where(Judge.name == str(judge_id_or_name))).first()
    if judge is None:
        raise NotFound(f"No judge {judge_id_or_name!r}.")
    return judge


def set_trust_bar(session: Session, user: User, judge_id: int, *, min_kappa: float, min_items: int) -> Judge:
    """Change the agreement a judge must reach before its figures are trusted (admins)."""
    require(user, "manage_project")
    judge = get_judge(session, judge_id)
    fields = _check_fields(judge.name, judge.base_url, judge.model, judge.api_key_env, min_kappa, min_items)
    judge.min_kappa, judge.min_items = fields["min_kappa"], fields["min_items"]
    session.add(judge)
    session.commit()
    return judge


def remove_judge(session: Session, user: User, judge_id_or_name: int | str) -> dict:
    """Remove a judge and its verdicts (admins); says how many verdicts went with it."""
    require(user, "manage_project")
    judge = get_judge(session, judge_id_or_name)
    verdicts = session.exec(select(JudgeVerdict).where(JudgeVerdict.judge_id == judge.id)).all()
    for v in verdicts:
        session.delete(v)
    session.delete(judge)
    session.commit()
    return {"removed": judge.name, "verdicts_removed": len(verdicts)}


def verdict_counts(session: Session) -> dict[int, int]:
    """Judge id -> how many verdicts it has stored."""
    rows = session.exec(select(JudgeVerdict.judge_id, func.count()).group_by(JudgeVerdict.judge_id)).all()
    return {judge_id: n for judge_id, n in rows}


def api_key(judge: Judge) -> str:
    """The judge's API key from its environment variable; a clear error when the variable is not set."""
    if not judge.api_key_env:
        return ""
    key = os.environ.get(judge.api_key_env, "")
    if not key:
        raise JudgeError(f"The environment variable {judge.api_key_env} (judge {judge.name}'s API key) is not set "
                         "where the app runs: set it before starting finetune-studio.")
    return key


def ask(judge: Judge, messages: list[dict], *, max_tokens: int = 512, timeout: float = READ_TIMEOUT_S) -> str:
    """One chat completion from the judge, greedy (temperature 0): the answer's text."""
    import requests

    key = api_key(judge)
    body: dict[str, Any] = {"messages": messages, "temperature": 0, "max_tokens": int(max_tokens)}
    if judge.model:
        body["model"] = judge.model
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = requests.post(f"{judge.base_url}/chat/completions", json=body, headers=headers,
                                 timeout=(CONNECT_TIMEOUT_S, timeout))
    except requests.RequestException as err:
        raise JudgeError(f"Judge {judge.name} at {judge.base_url} did not answer ({type(err).__name__}).") from None
    if response.status_code != 200:
        detail = response.text[:300].strip()
        raise JudgeError(f"Judge {judge.name} answered HTTP {response.status_code}: {detail}")
    try:
        return response.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"Judge {judge.name} answered something that is not a chat completion: "
                         f"{response.text[:200]!r}") from None


def check_judge(session: Session, user: User, judge_id_or_name: int | str, *, max_tokens: int = 8) -> dict:
    """Send one tiny request to the judge: its answer and how long it took (JudgeError says what failed)."""
    require(user, "evaluate")
    judge = get_judge(session, judge_id_or_name)
    started = time.perf_counter()
    answer = ask(judge, CHECK_MESSAGES, max_tokens=max_tokens)
    return {"judge": judge.name, "answer": answer, "seconds": round(time.perf_counter() - started, 2)}
