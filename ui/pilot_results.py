"""The Results page's Pilots section (engineers and up): what agents said about each piloted system.

Escalation rate with its Wilson interval and rubric means with bootstrap intervals per system, per pilot and by
week; the before/after of two pilots; the questions that escalated; "Send to annotation" and the exports
(core.ship.pilot_results does every figure; this only draws).
"""
from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.ship.pilot_results import (EXPORT_FORMATS, before_after, escalated_questions, export_exchanges,
                                     pilot_figures, send_to_annotation)
from storage.models import Project, User
from ui.frame import db, run_action


def _rate(interval) -> str:
    """A rate with its interval, in percent: "28% (20%-37%)"; "—" without data."""
    if not interval.n or math.isnan(interval.value):
        return "—"
    return f"{interval.value:.0%} ({interval.lo:.0%}-{interval.hi:.0%})"


def _points(interval) -> str:
    """A difference of two rates in percentage points: "-17 points (-30 to -4)"."""
    if not interval.n or math.isnan(interval.value):
        return "—"
    return f"{interval.value * 100:+.0f} points ({interval.lo * 100:+.0f} to {interval.hi * 100:+.0f})"


def _mean(interval, signed: bool = False) -> str:
    if not interval.n or math.isnan(interval.value):
        return "—"
    fmt = "+.2f" if signed else ".2f"
    return f"{interval.value:{fmt}} ({interval.lo:{fmt}} to {interval.hi:{fmt}})"


def _row(label: str, figures: dict, criteria: list[str], **extra) -> dict:
    return {label: extra.pop("name"), **extra, "rated answers": figures["n"], "escalated": figures["escalated"],
            "escalation rate (95% interval)": _rate(figures["escalation"]),
            **{f"{c} mean": _mean(figures["means"][c]) for c in criteria}}


def _table(rows: list[dict]) -> None:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def pilot_section(user: User, project: Project) -> None:
    """Draw the section (nothing but a caption while the project has no pilot)."""
    with db() as s:
        figures = run_action(pilot_figures, s, user, project.id)
    if not figures or not figures["by_pilot"]:
        st.caption("No pilot yet: create one on the Pilot page to see what support agents make of a system.")
        return
    criteria = figures["criteria"]
    with st.expander("Pilots: escalations and ratings by support agents", expanded=True):
        st.caption("Rated answers only. Escalation rate: the share of answers an agent would hand to a human "
                   "(Wilson 95% interval); rubric means with bootstrap 95% intervals.")
        st.markdown("**Per system**")
        _table([_row("system", f, criteria, name=f["system_label"]) for f in figures["by_system"]])
        st.markdown("**Per pilot**")
        _table([_row("pilot", f, criteria, name=f["pilot"].name, system=f["system_label"],
                     window=f"{f['pilot'].starts_at:%Y-%m-%d} to {f['pilot'].ends_at:%Y-%m-%d}",
                     blind="yes" if f["pilot"].blind else "no", exchanges=f["exchanges"])
                for f in figures["by_pilot"]])
        st.markdown("**By week** (weeks named by their Monday)")
        _table([_row("system", w, criteria, name=f["system_label"], week=w["week"])
                for f in figures["by_system"] for w in f["weeks"]])
        _before_after(user, figures)
        _send_and_export(user, project)  # before the escalated questions, so their drafts show at once
        _escalated(user, project)


def _before_after(user: User, figures: dict) -> None:
    pilots = {f["pilot"].id: f"{f['pilot'].name} ({f['system_label']})" for f in figures["by_pilot"]}
    if len(pilots) < 2:
        return
    st.markdown("**Before and after** (after minus before, bootstrap 95% intervals)")
    ids = list(pilots)
    c1, c2 = st.columns(2)
    first = c1.selectbox("Before", ids, format_func=pilots.get, key="pilot_before")
    second = c2.selectbox("After", ids, index=1, format_func=pilots.get, key="pilot_after")
    with db() as s:
        diff = run_action(before_after, s, user, first, second)
    if diff is None:
        return
    rows = [{"measure": "escalation rate", "before": _rate(diff["before"]["escalation"]),
             "after": _rate(diff["after"]["escalation"]), "difference": _points(diff["escalation"])}]
    rows += [{"measure": f"{c} mean", "before": _mean(diff["before"]["means"][c]),
              "after": _mean(diff["after"]["means"][c]), "difference": _mean(diff["means"][c], signed=True)}
             for c in diff["means"]]
    _table(rows)


def _escalated(user: User, project: Project) -> None:
    with db() as s:
        rows = run_action(escalated_questions, s, user, project.id) or []
    st.markdown(f"**Questions that escalated** ({len(rows)})")
    if rows:
        _table([{"exchange": r["id"], "pilot": r["pilot"], "question": r["question"], "answer": r["answer"],
                 "correction": r["correction"],
                 "draft": f"#{r['sent_example_id']}" if r["sent_example_id"] else "not sent"} for r in rows])


def _send_and_export(user: User, project: Project) -> None:
    c1, c2, c3 = st.columns([2, 1, 1])
    if c1.button("Send escalations and corrections to annotation", key="pilot_send",
                 help="Each escalated or corrected answer becomes a draft example (its origin names the pilot); "
                      "one already sent is skipped."):
        with db() as s:
            out = run_action(send_to_annotation, s, user, project.id)
        if out is not None:
            st.success(f"{out['sent']} of {out['candidates']} escalated or corrected answers sent to annotation as "
                       f"drafts; {out['already_sent']} already sent and {out['duplicate_text']} already in the data "
                       f"were skipped.")
    fmt = c2.selectbox("Format", EXPORT_FORMATS, key="pilot_export_format", label_visibility="collapsed")
    with db() as s:
        exported = run_action(export_exchanges, s, user, project.id, fmt)
    if exported is not None:
        c3.download_button("Export every exchange", exported[1], file_name=exported[0], key="pilot_export")
