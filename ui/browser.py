"""The few things a page needs the browser itself to do, as Streamlit v2 components (plain JavaScript in the
page, no iframe, nothing fetched from elsewhere):

- ``commit_typing_before_shortcuts``: a text field sends its value to the server only when it loses focus (or
  on Enter), but a button shortcut such as Alt+X fires at once, so "type a reason, press Alt+X" used to run
  the action with the old, empty value. A capture-phase key listener takes the focus off the field first,
  which sends the value, and the shortcut's click follows it to the server in order.
- ``live_hints``: the editor's length and short-answer hints, recomputed on every keystroke (Streamlit would
  only rerun when the field loses focus). While typing, the token count is the server's exact count scaled
  by the word-count estimate; the server's exact figures replace it as soon as the text is sent.
- ``store_session_cookie`` / ``forget_session_cookie``: trade a log-in ticket for the HttpOnly session cookie
  at ``/_fts/session`` and clear it on log-out (core.sessions says why a route is needed).

Everything user-written reaches the DOM through ``textContent``, never as HTML.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

SESSION_ROUTE = "/_fts/session"

_GUARD_JS = """
const COMBO = (e) => {
  let key = e.code || "";
  if (key.startsWith("Key")) key = key.slice(3);
  else if (key.startsWith("Digit")) key = key.slice(5);
  else if (key.startsWith("Arrow")) key = key.slice(5);
  else if (key === "NumpadEnter") key = "Enter";
  const mods = [];
  if (e.ctrlKey) mods.push("ctrl");
  if (e.altKey) mods.push("alt");
  if (e.shiftKey) mods.push("shift");
  if (e.metaKey) mods.push("meta");
  return mods.concat([key.toLowerCase()]).join("+");
};
export default function ({ parentElement, data }) {
  const state = parentElement.__fts || (parentElement.__fts = {});
  state.combos = new Set((data && data.combos) || []);
  if (!state.listener) {
    state.listener = (e) => {
      const el = document.activeElement;
      if (!el || !(el.tagName === "TEXTAREA" || el.tagName === "INPUT")) return;
      if (state.combos.has(COMBO(e))) el.blur();  // sends the typed value before the shortcut's click
    };
    window.addEventListener("keydown", state.listener, true);
  }
  return () => {
    window.removeEventListener("keydown", state.listener, true);
    state.listener = null;
  };
}
"""

_HINTS_CSS = """
.fts-hints { font-size: 0.875rem; line-height: 1.5; }
.fts-tokens { color: rgba(49, 51, 63, 0.6); }
.fts-hint { margin: 0.25rem 0; padding: 0.35rem 0.75rem; border-radius: 0.5rem; }
.fts-error { background: rgba(255, 43, 43, 0.09); color: rgb(125, 53, 59); }
.fts-warning { background: rgba(255, 227, 18, 0.12); color: rgb(146, 108, 5); }
.fts-info { background: rgba(28, 131, 225, 0.1); color: rgb(0, 66, 128); }
"""

_HINTS_JS = """
const words = (text) => (text || "").split(/\\s+/).filter(Boolean).length;
const fill = (tpl, values) => tpl.replace(/\\{(\\w+)\\}/g, (m, k) => (k in values ? String(values[k]) : m));
function liveView(d, scope) {
  let total = 0;
  const answers = [];
  for (const f of d.fields) {
    const el = [...scope.querySelectorAll("textarea, input")].find((x) => x.getAttribute("aria-label") === f.label);
    const text = el ? el.value : (f.value || "");
    total += words(text);
    if (f.role === "assistant") answers.push(text);
  }
  const estimate = Math.ceil(total * 4 / 3);
  const tokens = d.estimate > 0 ? Math.round(estimate * d.tokens / d.estimate) : estimate;
  const hints = [];
  const v = { tokens: tokens, max: d.max_length, words: d.short_words };
  if (tokens > d.max_length) hints.push({ level: "error", text: fill(d.texts.too_long, v) });
  else if (tokens > 0.9 * d.max_length) hints.push({ level: "warning", text: fill(d.texts.near_max, v) });
  if (!answers.length || answers.some((a) => !a.trim())) hints.push({ level: "error", text: d.texts.empty });
  else if (answers.some((a) => words(a) < d.short_words))
    hints.push({ level: "warning", text: fill(d.texts.short, v) });
  for (const h of d.hints) if (h.kind === "duplicate") hints.push(h);
  return { line: fill(d.texts.live_line, v), hints: hints };
}
function draw(state, view) {
  state.line.textContent = view.line;
  state.list.replaceChildren(...view.hints.map((h) => {
    const p = document.createElement("div");
    p.className = "fts-hint fts-" + h.level;
    p.setAttribute("data-level", h.level);
    p.textContent = h.text;
    return p;
  }));
}
export default function ({ parentElement, data }) {
  const state = parentElement.__fts || (parentElement.__fts = {});
  if (!state.box) {
    state.box = document.createElement("div");
    state.box.className = "fts-hints";
    state.box.setAttribute("data-testid", "ftsHints");
    state.line = document.createElement("div");
    state.line.className = "fts-tokens";
    state.list = document.createElement("div");
    state.box.append(state.line, state.list);
    parentElement.append(state.box);
  }
  state.data = data;
  const host = parentElement.host || parentElement;
  const scope = () => host.closest("[role=tabpanel]") || document;
  draw(state, { line: data.line, hints: data.hints });
  if (!state.listener) {
    state.listener = (e) => {
      const t = e.target;
      if (!t || !(t.tagName === "TEXTAREA" || t.tagName === "INPUT") || !scope().contains(t)) return;
      const label = t.getAttribute("aria-label");
      if (!state.data.fields.some((f) => f.label === label)) return;
      draw(state, liveView(state.data, scope()));
    };
    document.addEventListener("input", state.listener, true);
  }
  return () => {
    document.removeEventListener("input", state.listener, true);
    state.listener = null;
  };
}
"""

_COOKIE_JS = """
export default function ({ parentElement, data, setStateValue }) {
  const state = parentElement.__fts || (parentElement.__fts = {});
  if (!data || !data.nonce || state.sent === data.nonce) return;
  state.sent = data.nonce;
  const options = { method: data.method, credentials: "same-origin", cache: "no-store",
                    headers: { "Content-Type": "application/json" } };
  if (data.ticket) options.body = JSON.stringify({ ticket: data.ticket });
  fetch(data.url, options)
    .then((r) => setStateValue("done", { nonce: data.nonce, ok: r.ok }))
    .catch(() => setStateValue("done", { nonce: data.nonce, ok: false }));
}
"""

_guard = st.components.v2.component("fts_commit_before_shortcuts", js=_GUARD_JS)
_hints = st.components.v2.component("fts_live_hints", js=_HINTS_JS, css=_HINTS_CSS)
_cookie = st.components.v2.component("fts_session_cookie", js=_COOKIE_JS)


def _combo(shortcut: str) -> str:
    """Streamlit's "Ctrl+Shift+Enter" / "Alt+Right" as the listener spells a key event: "ctrl+shift+enter"."""
    parts = [p.strip().lower() for p in shortcut.split("+") if p.strip()]
    order = ["ctrl", "alt", "shift", "meta"]
    mods = sorted((p for p in parts if p in order), key=order.index)
    keys = [p for p in parts if p not in order]
    return "+".join(mods + keys)


def commit_typing_before_shortcuts(shortcuts: list[str], key: str) -> None:
    """Make these button shortcuts send the text being typed before they act (mounted once per page)."""
    _guard(key=key, data={"combos": [_combo(s) for s in shortcuts]}, height=0)


def live_hints(key: str, *, fields: list[dict], tokens: int, estimate: int, max_length: int, line: str,
               hints: list[dict], texts: dict, short_words: int) -> None:
    """The editor's hints, kept current while typing.

    ``fields``: ``{"label", "role", "value"}`` of each text area that counts (the label finds it on the page);
    ``line`` and ``hints`` are the server's exact view of the saved-to-server text; ``texts`` holds the message
    templates the server uses too, so both speak alike.
    """
    _hints(key=key, data={"fields": fields, "tokens": tokens, "estimate": estimate, "max_length": max_length,
                          "line": line, "hints": hints, "texts": texts, "short_words": short_words})


def request_session_cookie(ticket: str) -> None:
    """Have the browser trade a log-in ticket for the session cookie (done by ``sync_session_cookie``)."""
    st.session_state["_cookie_call"] = {"method": "POST", "ticket": ticket, "nonce": ticket[:12]}


def request_cookie_removal(nonce: str) -> None:
    """Have the browser end its cookie's session on the server and drop the cookie (log-out)."""
    st.session_state["_cookie_call"] = {"method": "DELETE", "nonce": nonce}


def sync_session_cookie() -> None:
    """Mounted by the frame on each run while a cookie call is pending, until the browser reports it done
    (a run cut short by a rerun mounts it again; the nonce keeps the call from being sent twice)."""
    pending = st.session_state.get("_cookie_call")
    if pending is None:
        return
    result = _cookie(key="fts_session_cookie", height=0, on_done_change=lambda: None,
                     data={"url": SESSION_ROUTE, "method": pending["method"], "ticket": pending.get("ticket"),
                           "nonce": pending["nonce"]})
    done = result.get("done")
    if isinstance(done, dict) and done.get("nonce") == pending["nonce"]:
        st.session_state.pop("_cookie_call", None)


# ---------------------------------------------------------------- the blind review's score sheet (Compare)

_RUBRIC_CSS = """
.fts-rubric { font-size: 0.875rem; line-height: 1.3; }
.fts-crit { margin-top: 0.3rem; }
.fts-desc { color: rgba(49, 51, 63, 0.65); font-size: 0.78rem; }
.fts-row { display: flex; align-items: center; gap: 0.25rem; padding: 0.08rem 0.25rem; border-radius: 0.4rem;
           border: 1px solid transparent; }
.fts-row.fts-focus { border-color: var(--st-primary-color, #ff4b4b); background: rgba(255, 75, 75, 0.06); }
.fts-mark { width: 0.8rem; color: var(--st-primary-color, #ff4b4b); }
.fts-side { width: 1.5rem; cursor: pointer; font-weight: 600; }
.fts-score, .fts-pref { font: inherit; line-height: 1.25; cursor: pointer; border-radius: 0.4rem; background: #fff;
                        border: 1px solid rgba(49, 51, 63, 0.25); color: inherit; }
.fts-score { min-width: 1.9rem; padding: 0.1rem 0; }
.fts-pref { padding: 0.1rem 0.4rem; text-align: left; white-space: nowrap; }
.fts-pref kbd { margin-left: 0.35rem; font-size: 0.7rem; opacity: 0.7; font-family: inherit; }
.fts-chosen { background: var(--st-primary-color, #ff4b4b); border-color: var(--st-primary-color, #ff4b4b);
              color: #fff; }
.fts-overall { margin-top: 0.45rem; }
.fts-prefs { display: grid; grid-template-columns: repeat(auto-fill, minmax(5.2rem, 1fr)); gap: 0.25rem;
             margin-top: 0.2rem; }
.fts-status { margin-top: 0.35rem; min-height: 1.2rem; color: rgba(49, 51, 63, 0.7); font-size: 0.8rem; }
.fts-status.fts-refused { color: rgb(125, 53, 59); background: rgba(255, 43, 43, 0.09); border-radius: 0.4rem;
                          padding: 0.1rem 0.5rem; }
"""
_rubric = st.components.v2.component(
    "fts_rubric_sheet", css=_RUBRIC_CSS,
    js=(Path(__file__).parent / "static" / "rubric.js").read_text(encoding="utf-8"))


def rubric_sheet(key: str, *, token: str, rubric: list[dict], scores: dict, pref: str | None, prefs: list[dict],
                 texts: dict, run: int, lock_on: list[str]) -> None:
    """Draw the score sheet of one review item, scored by mouse or keys in the browser (ui/static/rubric.js).

    ``rubric``: ``{"name", "label", "description", "min", "max"}`` per criterion; ``scores`` / ``pref``: the
    item's saved answers to start from; ``prefs``: ``{"value", "label", "key"}`` per overall preference. After
    Ctrl+Enter, S or a click inside ``lock_on`` (CSS selectors of the page's submit and skip buttons) the sheet
    refuses keys (``texts["wait"]``) until the next item replaces it, or until it is drawn with another ``run``
    (the page's submit was refused and the sheet is open again).
    """
    _rubric(key=key, on_draft_change=lambda: None,
            data={"token": token, "rubric": rubric, "scores": scores, "pref": pref, "prefs": prefs, "texts": texts,
                  "run": run, "lock_on": lock_on})


def rubric_draft(key: str, token: str) -> dict | None:
    """The sheet as the browser last sent it, ``{"scores", "pref"}``, or None before its first change. The
    browser sends each change as it happens, so a submit button's click carries the sheet the reviewer saw;
    it can be read before the sheet is drawn in this run (a submit that succeeds then never redraws it)."""
    state = st.session_state.get(key)
    draft = state.get("draft") if hasattr(state, "get") else None
    if isinstance(draft, dict) and draft.get("token") == token:
        return {"scores": draft.get("scores") or {}, "pref": draft.get("pref")}
    return None
