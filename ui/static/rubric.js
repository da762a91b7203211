// The blind review's score sheet (ui.browser.rubric_sheet): the rubric rows, the overall preference and their
// keys, all handled here in the browser. A key press changes what is shown at once and never waits on a server
// rerun, so presses made while the server is busy are neither lost nor applied to a stale row. Each change is
// sent to the server as the component's state ("draft"); the page's submit reads it. Text reaches the DOM through
// textContent only.
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};
const typing = (t) => t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT"
                            || t.isContentEditable);
const DIGIT = (e) => {
  const m = /^(?:Digit|Numpad)(\d)$/.exec(e.code || "");
  return m ? Number(m[1]) : null;
};

function slotsOf(d) {
  const out = [];
  for (const c of d.rubric) for (const side of ["A", "B"]) out.push({ crit: c, side: side });
  return out;
}

function firstOpen(state) {
  const i = state.slots.findIndex((s) => (state.scores[s.crit.name] || {})[s.side] == null);
  return i < 0 ? state.slots.length : i;
}

function send(state) {
  state.setStateValue("draft", { token: state.token, scores: state.scores, pref: state.pref });
}

function say(state, text, refused) {
  state.status.textContent = text;
  state.status.className = "fts-status" + (refused ? " fts-refused" : "");
  state.status.setAttribute("data-refused", refused ? "1" : "0");
}

function where(state) {
  const d = state.data;
  if (state.focus >= state.slots.length) return d.texts.all_scored;
  const s = state.slots[state.focus];
  return d.texts.next.replace("{criterion}", s.crit.label).replace("{side}", s.side);
}

function draw(state) {
  state.slots.forEach((s, i) => {
    const row = state.rows[i];
    const chosen = (state.scores[s.crit.name] || {})[s.side];
    row.box.classList.toggle("fts-focus", i === state.focus);
    row.box.setAttribute("aria-current", i === state.focus ? "true" : "false");
    row.mark.textContent = i === state.focus ? "▶" : "";
    for (const b of row.buttons) {
      const on = Number(b.getAttribute("data-value")) === chosen;
      b.classList.toggle("fts-chosen", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
  });
  for (const b of state.prefButtons) {
    const on = b.getAttribute("data-pref") === state.pref;
    b.classList.toggle("fts-chosen", on);
    b.setAttribute("aria-pressed", on ? "true" : "false");
  }
}

function score(state, index, value) {
  if (state.sent) return say(state, state.data.texts.wait, true);
  const s = state.slots[index];
  if (value < s.crit.min || value > s.crit.max) {
    say(state, state.data.texts.out_of_range.replace("{value}", value).replace("{criterion}", s.crit.label)
      .replace("{min}", s.crit.min).replace("{max}", s.crit.max), true);
    return;
  }
  (state.scores[s.crit.name] = state.scores[s.crit.name] || {})[s.side] = value;
  state.focus = index + 1;
  send(state);
  draw(state);
  say(state, where(state), false);
}

function prefer(state, pref) {
  if (state.sent) return say(state, state.data.texts.wait, true);
  state.pref = pref;
  send(state);
  draw(state);
}

function build(state, root) {
  const d = state.data;
  const box = el("div", "fts-rubric");
  box.setAttribute("data-testid", "ftsRubric");
  state.rows = [];
  for (const c of d.rubric) {
    const head = el("div", "fts-crit");
    head.append(el("b", "", c.label), el("span", "fts-desc", " — " + c.description));
    box.append(head);
    for (const side of ["A", "B"]) {
      const index = state.rows.length;
      const row = el("div", "fts-row");
      row.setAttribute("data-slot", c.name + "_" + side);
      const mark = el("span", "fts-mark");
      const label = el("span", "fts-side", side + ":");
      label.addEventListener("click", () => { state.focus = index; draw(state); say(state, where(state), false); });
      row.append(mark, label);
      const buttons = [];
      for (let v = c.min; v <= c.max; v++) {
        const b = el("button", "fts-score", String(v));
        b.type = "button";
        b.setAttribute("data-value", String(v));
        b.setAttribute("aria-label", c.label + " " + side + " " + v);
        b.addEventListener("click", () => score(state, index, v));
        buttons.push(b);
        row.append(b);
      }
      box.append(row);
      state.rows.push({ box: row, mark: mark, buttons: buttons });
    }
  }
  const overall = el("div", "fts-overall");
  overall.append(el("b", "", d.texts.overall));
  box.append(overall);
  const prefs = el("div", "fts-prefs");
  state.prefButtons = d.prefs.map((p) => {
    const b = el("button", "fts-pref", p.label);
    b.append(el("kbd", "", p.key));
    b.type = "button";
    b.setAttribute("data-pref", p.value);
    b.addEventListener("click", () => prefer(state, p.value));
    prefs.append(b);
    return b;
  });
  box.append(prefs);
  state.status = el("div", "fts-status");
  state.status.setAttribute("role", "status");
  state.status.setAttribute("aria-live", "polite");
  state.status.setAttribute("data-testid", "ftsRubricStatus");
  box.append(state.status);
  // The root also holds the component's <style>: replace only the sheet's own element.
  if (state.box) state.box.remove();
  state.box = box;
  root.append(box);
}

function onKey(state, e) {
  if (e.ctrlKey && !e.altKey && (e.code === "Enter" || e.code === "NumpadEnter")) {
    state.sent = true;  // the page's submit: the sheet is on its way; keys now wait for the next item
    return;
  }
  if (e.defaultPrevented || e.ctrlKey || e.altKey || e.metaKey || typing(e.target)) return;
  if (e.code === "KeyS" && !e.shiftKey) {  // the page's skip
    state.sent = true;
    return;
  }
  const digit = DIGIT(e);
  const arrow = e.code === "ArrowUp" || e.code === "ArrowDown";
  const isPref = state.data.prefs.some((p) => e.code === "Key" + p.key.toUpperCase()) && !e.shiftKey;
  if (state.sent && (digit !== null || arrow || isPref)) {
    e.preventDefault();
    say(state, state.data.texts.wait, true);
    return;
  }
  if (digit !== null) {
    e.preventDefault();
    if (state.focus < state.slots.length) score(state, state.focus, digit);
    else say(state, state.data.texts.refused_all_scored.replace("{value}", digit), true);
    return;
  }
  if (e.code === "ArrowUp" || e.code === "ArrowDown") {
    e.preventDefault();
    const n = state.slots.length;
    const step = e.code === "ArrowUp" ? -1 : 1;
    state.focus = state.focus >= n ? (step < 0 ? n - 1 : 0) : (state.focus + step + n) % n;
    draw(state);
    say(state, where(state), false);
    return;
  }
  const pref = state.data.prefs.find((p) => e.code === "Key" + p.key.toUpperCase());
  if (pref && !e.shiftKey) {
    e.preventDefault();
    prefer(state, pref.value);
  }
}

export default function ({ parentElement, data, setStateValue }) {
  const state = parentElement.__fts || (parentElement.__fts = {});
  state.setStateValue = setStateValue;
  if (state.data) state.data.lock_on = data.lock_on;
  if (state.run !== data.run) {  // the server ran the page again: a refused submit leaves the sheet open
    state.run = data.run;
    if (state.sent && state.status) say(state, where(state), false);
    state.sent = false;
  }
  if (state.token !== data.token) {  // a new item: start from what the server holds for it
    state.token = data.token;
    state.data = data;
    state.slots = slotsOf(data);
    state.scores = JSON.parse(JSON.stringify(data.scores || {}));
    state.pref = data.pref || null;
    state.focus = firstOpen(state);
    build(state, parentElement);
    draw(state);
    say(state, where(state), false);
  }
  if (!state.listener) {
    state.listener = (e) => onKey(state, e);
    state.clicks = (e) => {  // the page's submit or skip button, clicked
      const t = e.target;
      if (t && t.closest && (state.data.lock_on || []).some((sel) => t.closest(sel))) state.sent = true;
    };
    window.addEventListener("keydown", state.listener);
    window.addEventListener("click", state.clicks, true);
  }
  return () => {
    window.removeEventListener("keydown", state.listener);
    window.removeEventListener("click", state.clicks, true);
    state.listener = null;
  };
}
