"""serve-model --pilot over real HTTP: each chat completion (plain and streamed) lands in the pilot under the
completion id the client got, and POST /v1/feedback attaches ratings to it, with clear 4xx for bad feedback."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests
from sqlmodel import select

from tests.fixtures_serve import HELLO, WAIT_S, post
from tests.helpers import cli


def _pilot(session, project, system: str):
    from storage.models import Pilot

    now = datetime.now(timezone.utc)
    # Stored as the Pilot page stores one; the page only offers the project's systems, this one is the tiny model.
    pilot = Pilot(project_id=project.id, name="help desk", system=system, starts_at=now - timedelta(days=1),
                  ends_at=now + timedelta(days=20))
    session.add(pilot)
    session.commit()
    session.refresh(pilot)
    return pilot


def _exchanges(session, pilot_id):
    from storage.models import PilotExchange

    session.expire_all()
    return list(session.exec(select(PilotExchange).where(PilotExchange.pilot_id == pilot_id)
                             .order_by(PilotExchange.id)))


def _streamed(url: str, body: dict, headers: dict) -> tuple[str, str]:
    """(completion id, text) of a streamed chat completion."""
    text, cid = "", None
    with requests.post(f"{url}/chat/completions", json={**body, "stream": True}, headers=headers, stream=True,
                       timeout=WAIT_S) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:") and line[5:].strip() != "[DONE]":
                event = json.loads(line[5:])
                cid = cid or event.get("id")
                text += "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices") or [])
    return cid, text


@pytest.mark.slow
def test_serve_model_records_answers_into_the_pilot_and_takes_feedback(session, serve, tiny_model, project,
                                                                       workspace):
    pilot = _pilot(session, project, f"base:{tiny_model}")
    refused = cli(workspace, "serve-model", "base", "--pilot", str(pilot.id), "--port", "0")
    assert refused.returncode != 0 and "pilots base:" in refused.stdout + refused.stderr

    url = serve(tiny_model, "--pilot", str(pilot.id))
    headers = {"X-Conversation-Id": "ticket-4711", "X-Request-Id": "fixed"}
    plain = requests.post(f"{url}/chat/completions", json={"messages": HELLO, "max_tokens": 6}, headers=headers,
                          timeout=WAIT_S)
    assert plain.status_code == 200, plain.text
    follow_up = HELLO + [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "My bill?"}]
    streamed_id, streamed_text = _streamed(url, {"messages": follow_up, "max_tokens": 6, "user": "desk-7"}, headers)

    rows = _exchanges(session, pilot.id)
    assert [r.completion_id for r in rows] == [plain.json()["id"], streamed_id]
    assert len({plain.json()["id"], streamed_id, "fixed"}) == 3  # a client's X-Request-Id never names two answers
    assert rows[0].answer == plain.json()["choices"][0]["message"]["content"] and rows[1].answer == streamed_text
    assert [(r.conversation_id, r.turn_index) for r in rows] == [("ticket-4711", 0), ("ticket-4711", 1)]
    assert rows[1].client == "desk-7" and rows[1].messages[-1] == {"role": "user", "content": "My bill?"}
    assert rows[0].escalate is None

    ok = post(url, "/feedback", {"completion_id": streamed_id, "ratings": {"accuracy": 2, "tone": 4},
                                 "escalate": True, "correction": "Your tariff changed."})
    assert ok.status_code == 200 and ok.json()["exchange_id"] == rows[1].id, ok.text
    for body, status, words in (
            ({"completion_id": "chatcmpl-unknown", "ratings": {}, "escalate": False}, 404, "No answer with"),
            ({"completion_id": streamed_id, "ratings": {"accuracy": 9}, "escalate": False}, 400, "from 1 to 5"),
            ({"completion_id": streamed_id, "ratings": {"speed": 3}, "escalate": False}, 400, "Unknown criterion"),
            ({"completion_id": streamed_id, "ratings": {}, "escalate": "yes"}, 400, "true or false"),
            ({"ratings": {}, "escalate": False}, 400, "completion_id is required")):
        bad = post(url, "/feedback", body)
        assert bad.status_code == status and words in bad.json()["detail"], bad.text
    not_json = requests.post(f"{url}/feedback", data=b"{oops", timeout=WAIT_S)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]

    rated = _exchanges(session, pilot.id)[1]
    assert (rated.ratings, rated.escalate, rated.correction) == ({"accuracy": 2, "tone": 4}, True,
                                                                 "Your tariff changed.")
