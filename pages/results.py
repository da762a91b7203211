"""Results: what the blind reviews say (engineers and up). The only page where systems are named.

The systems side by side with the cost of an answer (prompt tokens, seconds), automatic checks (pass rate per
system and per check with bootstrap intervals, the failing answers), the passages each +RAG answer was given, the
leaderboard (Bradley-Terry on an Elo scale with bootstrap intervals), mean scores per criterion with bootstrap
95% intervals, win/tie/loss per pair, agreement between reviewers, automatic metrics, exports, failures sent to
annotation and paraphrased into new drafts.
"""
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.accounts import can
from core.evaluate.evalsets import list_eval_sets
from core.evaluate.failures import RULE_WORDS, RULES, assignees, run_choices, send_failures, sent_failures
from core.evaluate.review import rubric_of
from core.evaluate.pairs_from_votes import (freeze_from_votes, generate_like_before, runs_to_generate,
                                      runs_trained_on_votes, vote_pairs)
from core.evaluate.results import (export_dpo, report_markdown, results, retrieved_passages, score_table, scores_csv,
                                    side_by_side_csv)
from core.evaluate.systemtable import display_rows
from core.evaluate.judgeresults import judge_trust
from core.evaluate.judges import list_judges
from ui.frame import db, md_literal, require_page, require_project, run_action
from ui.draftjobs import paraphrase_section
from ui.judging import judge_section
from ui.pilot_results import pilot_section

OUTCOMES = ("first wins", "tie", "both bad", "second wins")
ROW = alt.Step(34)  # the height of one labelled row in a chart with a row per system or pair


def show_table(rows: list[dict], columns: dict[str, str], *, digits: int = 3, widths: dict | None = None) -> None:
    """Every Results table: the chosen columns under human headers, numbers rounded, a missing value shown as "—"
    (never "None"), and fixed widths where given, so that long text columns stay on the page."""
    frame = pd.DataFrame(rows, columns=list(columns)).round(digits).rename(columns=columns)
    config = {columns[key]: st.column_config.Column(width=w) for key, w in (widths or {}).items()}
    st.dataframe(frame, hide_index=True, width="stretch", placeholder="—", column_config=config)
OUTCOME_COLOURS = ("#2e7d32", "#9e9e9e", "#ef6c00", "#c62828")


def win_tie_loss_chart(pairs: list[dict]) -> alt.Chart:
    """One stacked bar per pair, its four outcomes always in the same order and colours, the legend listing
    all four and the pair labels in full."""
    rows = []
    for r in pairs:
        pair = f"{r['label_a']} vs {r['label_b']}"
        shares = (r["a_win_rate"], r["tie_rate"] - r["both_bad_rate"], r["both_bad_rate"], r["b_win_rate"])
        rows += [{"pair": pair, "outcome": o, "order": i, "share": v, "n": r["n"]}
                 for i, (o, v) in enumerate(zip(OUTCOMES, shares))]
    return alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
        x=alt.X("share:Q", stack="normalize", axis=alt.Axis(format="%"), title=None),
        y=alt.Y("pair:N", title=None, axis=alt.Axis(labelLimit=0)),
        color=alt.Color("outcome:N", title=None, scale=alt.Scale(domain=list(OUTCOMES), range=list(OUTCOME_COLOURS)),
                        legend=alt.Legend(orient="bottom", direction="horizontal", labelLimit=0)),
        order=alt.Order("order:Q"),
        tooltip=["pair", "outcome", alt.Tooltip("share:Q", format=".0%"), "n"]).properties(height=ROW)


user = require_page("evaluate")
project = require_project()
st.title("Results")
pilot_section(user, project)  # agents' verdicts on piloted systems: shown even before any eval set

with db() as s:
    sets = list_eval_sets(s, user, project.id)
if not sets:
    st.info("No eval set yet: create one and generate outputs on the Generate page.")
    st.stop()
names = {r["id"]: r["name"] for r in sets}
es_id = st.selectbox("Eval set", list(names), format_func=names.get, key="results_eval_set")

with db() as s:
    res = run_action(results, s, user, es_id)
    table = score_table(s, user, es_id) if res else []
if res is None:
    st.stop()
labels = {row["system"]: row["label"] for row in res["systems"]}
progress = res["progress"]
c1, c2, c3, c4 = st.columns(4)
c1.metric("Prompts", res["eval_set"]["prompts"])
c2.metric("Systems", len(res["systems"]))
c3.metric("Scores", res["n_scores"])
c4.metric("Fully reviewed", f"{progress['complete']} / {progress['items']}",
          help=f"Items with at least {progress['reviewers_per_item']} reviewers")

if res["decoding"]["differences"]:
    st.warning("Not like with like: the systems' answers were generated with different decoding settings ("
               + md_literal(res["decoding"]["text"]) + "). Differences below may come from the settings rather than "
               "the models; generate again with the same settings to compare fairly.")

# ---------------------------------------------------------------- the systems side by side, with their cost
st.subheader("Systems side by side")
if res["side_by_side"]:
    st.dataframe(display_rows(res["side_by_side"], res["criteria"]), hide_index=True, width="stretch",
                 placeholder="—")
st.caption("Fact checks: the share of checked prompts whose answer passes every check; rubric means from the blind "
           "reviews; win rate: the share of a system's blind comparisons it won (Wilson interval). Costs are means "
           "per answer: the prompt's tokens as sent (a team prompt or retrieved passages make it longer), seconds "
           "and new tokens. \"—\": no such figure yet, or a cost not recorded (answers generated before it was).")

# ---------------------------------------------------------------- automatic checks
checks = res["checks"]
st.subheader("Automatic checks")
if not checks["by_system"]:
    st.caption(f"{checks['checked_prompts']} of {checks['prompts']} prompts have checks"
               + (", and no outputs yet." if checks["checked_prompts"] else
                  ": add some on the Generate page (or from the project's facts to check)."))
else:
    show_table(checks["by_system"], {"label": "system", "passed": "prompts passing every check",
                                     "prompts": "checked prompts", "pass_rate": "pass rate", "lo": "95% low",
                                     "hi": "95% high", "checks_passed": "checks passed", "checks": "checks"})
    bars = alt.Chart(pd.DataFrame(checks["by_system"])).encode(y=alt.Y("label:N", title=None,
                                                                       axis=alt.Axis(labelLimit=0)))
    rate = alt.X("pass_rate:Q", title="pass rate (95% interval)", scale=alt.Scale(domain=[0, 1]))
    st.altair_chart((bars.mark_bar(opacity=0.7).encode(x=rate)
                     + bars.mark_errorbar().encode(x=alt.X("lo:Q", title="pass rate (95% interval)"), x2="hi:Q"))
                    .properties(height=ROW), width="stretch")
    st.caption("A prompt passes when its answer passes every one of its checks; the interval is the 2.5-97.5 "
               "percentile of bootstrap resamples of the checked prompts.")
    with st.expander("Pass rate per check"):
        show_table(checks["by_check"], {"check": "check", "label": "system", "passed": "passed",
                                        "prompts": "prompts", "pass_rate": "pass rate", "lo": "95% low",
                                        "hi": "95% high"})
    failures = pd.DataFrame(checks["failures"])
    with st.expander(f"Failing answers ({len(failures)})"):
        if failures.empty:
            st.caption("Every answer passes its checks.")
        else:
            c1, c2 = st.columns(2)
            system_filter = c1.selectbox("System", ["all"] + sorted(failures["label"].unique()), key="fail_system")
            check_filter = c2.selectbox("Check", ["all"] + sorted(failures["check"].unique()), key="fail_check")
            shown = failures[((failures["label"] == system_filter) | (system_filter == "all"))
                             & ((failures["check"] == check_filter) | (check_filter == "all"))]
            show_table(shown.to_dict("records"), {"label": "system", "check": "check", "prompt_number": "prompt #",
                                                  "prompt": "prompt", "answer": "answer", "reference": "reference"},
                       widths={"label": 110, "check": 110, "prompt_number": 70, "prompt": 170, "answer": 210,
                               "reference": 170})

# ---------------------------------------------------------------- what each +RAG answer was given (engineers only)
with db() as s:
    given = run_action(retrieved_passages, s, user, es_id) or []
if given:
    with st.expander(f"Passages given to the +RAG answers ({len(given)} answers)"):
        number = st.selectbox("Prompt #", sorted({r["prompt_number"] for r in given}), key="rag_prompt")
        for row in (r for r in given if r["prompt_number"] == number):
            st.markdown(f"**{md_literal(row['label'])}**: {md_literal(row['prompt'])}")
            st.text(row["answer"])
            for passage in row["passages"]:
                st.caption(md_literal(f"{passage.get('document', '')} §{passage.get('chunk', '')} "
                                      f"{passage.get('heading', '')}".strip()))
                st.text(passage.get("text", ""))

# ---------------------------------------------------------------- leaderboard
st.subheader("Leaderboard")
if res["leaderboard"]:
    show_table(res["leaderboard"], {"label": "system", "rating": "rating", "lo": "95% low", "hi": "95% high",
                                    "n_votes": "votes"}, digits=0)
    base = alt.Chart(pd.DataFrame(res["leaderboard"])).encode(y=alt.Y("label:N", sort="-x", title=None,
                                                                      axis=alt.Axis(labelLimit=0)))
    elo = "Rating (Elo scale, 95% interval)"
    st.altair_chart((base.mark_rule().encode(x=alt.X("lo:Q", title=elo, scale=alt.Scale(zero=False)), x2="hi:Q")
                     + base.mark_point(filled=True, size=80).encode(x=alt.X("rating:Q", title=elo)))
                    .properties(height=ROW), width="stretch")
    st.caption("Bradley-Terry ratings fitted like Chatbot Arena (logistic regression, ties count half a win each "
               "way, 400 points = 10x odds, centred on 1000); the interval is the 2.5-97.5 percentile of "
               "bootstrap refits on resampled votes.")
else:
    st.caption("No scores yet: reviewers score items on the Compare page.")
with db() as s:
    on_votes = runs_trained_on_votes(s, es_id)
if on_votes:
    st.warning("Run " + ", ".join(f"#{i}" for i in on_votes) + " learned (DPO) from preference pairs voted on this "
               "eval set: its scores here are the before/after on the same prompts, not a held-out test. Measure it "
               "on another eval set too.")

# ---------------------------------------------------------------- mean scores
if res["means"]:
    st.subheader("Mean score per criterion (95% bootstrap interval)")
    means = pd.DataFrame(res["means"])
    show_table(res["means"], {"label": "system", "criterion": "criterion", "mean": "mean", "lo": "95% low",
                              "hi": "95% high", "n": "scores"}, digits=2)
    # Grouped bars (criterion, then system) instead of one facet per criterion: a single chart that takes the
    # page's width, so it never runs off a narrow window.
    enc = alt.Chart(means).encode(x=alt.X("criterion:N", title=None, axis=alt.Axis(labelAngle=0)),
                                  xOffset="label:N", color=alt.Color("label:N", title="system",
                                                                     legend=alt.Legend(orient="bottom",
                                                                                       labelLimit=0)))
    st.altair_chart(enc.mark_bar(opacity=0.7).encode(y=alt.Y("mean:Q", title="mean score"))
                    + enc.mark_errorbar().encode(y=alt.Y("lo:Q", title="mean score"), y2="hi:Q"), width="stretch")

# ---------------------------------------------------------------- win / tie / loss
if res["win_tie_loss"]:
    st.subheader("Win / tie / loss per pair")
    st.altair_chart(win_tie_loss_chart(res["win_tie_loss"]), width="stretch")
    st.caption("In each pair \"first vs second\", bars run from the first system's wins through ties and answers "
               "both bad to the second system's wins.")

# ---------------------------------------------------------------- distributions
if table:
    st.subheader("Score distributions")
    long = []
    for row in table:
        for key, value in row.items():
            if value is None:
                continue
            for side in ("a", "b"):
                if key.endswith(f"_{side}") and key[:-2] not in ("system",):
                    long.append({"system": labels.get(row[f"system_{side}"], row[f"system_{side}"]),
                                 "criterion": key[:-2], "score": value})
    if long:
        dist = pd.DataFrame(long)
        criteria = list(dict.fromkeys(dist["criterion"]))
        for col, crit in zip(st.columns(len(criteria)), criteria):
            col.caption(crit.capitalize())
            col.altair_chart(alt.Chart(dist[dist["criterion"] == crit]).mark_bar().encode(
                x=alt.X("score:O", axis=alt.Axis(labelAngle=0)), y=alt.Y("count():Q", title="scores"),
                color=alt.Color("system:N", legend=alt.Legend(orient="bottom", labelLimit=0)), xOffset="system:N"),
                width="stretch")

# ---------------------------------------------------------------- agreement and metrics
st.subheader("Agreement between reviewers")
show_table(res["agreement"], {"criterion": "criterion", "measure": "measure", "alpha": "alpha",
                              "percent_agreement": "% agreement"})
st.caption("Krippendorff's alpha: 1 is perfect agreement, 0 is chance level. Rubric scores are ordinal; the "
           "preference (which system, tie or both bad) is nominal. Empty when no item has two reviewers yet.")

st.subheader("Automatic metrics against references")
if res["metrics"]:
    show_table(res["metrics"], {"label": "system", "outputs": "outputs", "references": "references",
                                "rouge_l": "ROUGE-L", "bleu": "BLEU", "exact_match": "exact match",
                                "perplexity": "perplexity", "validation_perplexity": "validation perplexity",
                                "mean_new_tokens": "mean new tokens"})
    st.caption("ROUGE-L (rouge-score) and BLEU (sacrebleu) compare each output with its reference answer; "
               "perplexity is the system's perplexity on the reference answers, and validation perplexity on the "
               "validation split of the dataset version the eval set came from (computed by the generation job).")

# ---------------------------------------------------------------- the LLM judge, beside (never in) the above
judge_section(user, project, es_id)

# ---------------------------------------------------------------- preference training (DPO)
st.subheader("Preference training (DPO)")
with db() as s:
    built = run_action(vote_pairs, s, user, es_id)
if built:
    v = built["summary"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Pairs from votes", v["pairs"], help=f"Of {v['items_voted']} items with votes: one pair per item, "
              "the answer the majority of its reviewers preferred as chosen.")
    c2.metric("Disagreement", v["disagreements"], help="Items whose reviewers preferred different answers; the "
              "majority decides.")
    c3.metric("Even split (dropped)", v["even_split"], help="Items whose reviewers preferred each answer equally "
              "often: no pair.")
    c4.metric("Only tie / both bad", v["ties_or_both_bad"], help="Items no reviewer preferred an answer on: no pair.")
    if can(user, "train"):
        with st.form("prefs_from_votes"):
            c1, c2 = st.columns([2, 3])
            pref_name = c1.text_input("Preference version name", value=f"votes-{names[es_id]}"[:200])
            extra = c2.file_uploader("Add a preference file (optional)", type=["jsonl", "parquet"])
            if st.form_submit_button("Freeze preference version from these votes"):
                with db() as s:
                    pv = run_action(freeze_from_votes, s, user, project.id, pref_name, eval_set_id=es_id,
                                    file_data=extra.getvalue() if extra else None,
                                    filename=extra.name if extra else "")
                if pv is not None:
                    st.success(f"Froze {pv.n_pairs} pairs as preference version #{pv.id}. Train on it on the Train "
                               "page: method DPO, continuing from the run reviewers preferred.")
with db() as s:
    fresh = run_action(runs_to_generate, s, user, es_id) or []
if fresh:
    st.caption("Runs without answers on this eval set yet (a DPO run just trained comes first): generate their "
               "answers on the same prompts with the same decoding, then review them against the others.")
    run_pick = st.selectbox("Run", [r["run_id"] for r in fresh], key="gen_run",
                            format_func=lambda i: next(f"run {r['run_id']} ({r['method']}): {r['name']}"
                                                       for r in fresh if r["run_id"] == i))
    if st.button(f"Generate on {md_literal(names[es_id])}", key="gen_same_prompts"):
        with db() as s:
            gen = run_action(generate_like_before, s, user, es_id, run_pick)
        if gen is not None:
            st.success(f"Generation job {gen.id} queued; follow it on the Generate page.")

# ---------------------------------------------------------------- exports
st.subheader("Export")
c1, c2, c3, c4 = st.columns(4)
with db() as s:
    csv_text = run_action(scores_csv, s, user, es_id) or ""
c1.download_button("Scores (CSV)", csv_text, file_name=f"scores-evalset-{es_id}.csv", mime="text/csv")
c2.download_button("Systems side by side (CSV)", side_by_side_csv(res), file_name=f"systems-evalset-{es_id}.csv",
                   mime="text/csv")
c3.download_button("Comparison report (Markdown)", report_markdown(res), file_name=f"report-evalset-{es_id}.md",
                   mime="text/markdown")
if c4.button("Export DPO pairs", help="Preference pairs (prompt, chosen, rejected) in TRL format, as JSONL and a "
                                      "datasets folder in the workspace's exports."):
    with db() as s:
        out = run_action(export_dpo, s, user, es_id)
    if out:
        st.session_state.setdefault("dpo_exports", {})[es_id] = out
# Kept per eval set, so the download stays offered after a download (which reruns the page) until it is redone.
dpo = st.session_state.get("dpo_exports", {}).get(es_id)
if dpo and Path(dpo["jsonl"]).exists():
    st.success(f"{dpo['pairs']} pairs written to `{dpo['jsonl']}` and `{dpo['dataset']}`.")
    st.download_button("Download dpo.jsonl", Path(dpo["jsonl"]).read_bytes(), file_name=f"dpo-evalset-{es_id}.jsonl",
                       mime="application/jsonl", key="dpo_download")

# ---------------------------------------------------------------- failures back to the experts
st.subheader("Send failures to annotation")
with db() as s:
    runs = run_choices(s, user, es_id)
    people = assignees(s, user)
    sent = sent_failures(s, user, es_id)
if not runs:
    st.caption("No fine-tuned run has outputs in this eval set yet.")
else:
    st.caption("Every prompt the chosen run failed becomes a draft example for the annotators, starting from the "
               "reference answer (else empty, to write: reviewers can annotate, and a system's answer would "
               "unblind them), with the reviewers' comments. Its run, scores and rule are shown to engineers only. "
               "Prompts already sent for this run are skipped.")
    c1, c2 = st.columns(2)
    fail_run = c1.selectbox("Run", runs, format_func=lambda k: labels.get(k, k), key="fail_run")
    rule = c2.radio("Send the prompts where the run", RULES, format_func=RULE_WORDS.get, key="fail_rule")
    criteria = [c["name"] for c in rubric_of(project)]
    c1, c2, c3 = st.columns(3)
    criterion = c1.selectbox("Criterion", criteria, key="fail_criterion", disabled=rule == "lost_to_base")
    threshold = c2.number_input("At or below (mean score)", value=2.0, step=0.5, key="fail_threshold",
                                disabled=rule == "lost_to_base")
    names = {p["id"]: p["username"] for p in people}
    assignee = c3.selectbox("Assign to", [0] + list(names), format_func=lambda i: names.get(i, "anyone (no assignee)"),
                            key="fail_assignee")
    with db() as s:
        raters = {0: "the reviewers' votes and scores"} | {
            j.id: f"judge {j.name}" + ("" if judge_trust(s, j.id, es_id)["trusted"] else " (not yet trusted)")
            for j in list_judges(s, user)}
    by = st.selectbox("Judged by", list(raters), format_func=raters.get, key="fail_by",
                      help="A trusted LLM judge's verdicts (both orders) and grades may stand in for the reviewers'; "
                           "a judge not yet trusted is refused.")
    if st.button("Send failures to annotation", type="primary"):
        with db() as s:
            out = run_action(send_failures, s, user, es_id, fail_run, rule=rule,
                             criterion=None if rule == "lost_to_base" else criterion,
                             threshold=None if rule == "lost_to_base" else threshold, assignee=assignee or None,
                             judge_id=by or None)
            sent = sent_failures(s, user, es_id)
        if out is not None:
            st.success(f"{out['sent']} of {out['caught']} failing prompts sent to annotation as drafts; "
                       f"{out['already_sent']} already sent before and {out['duplicate_text']} already in the data "
                       "were skipped.")
            if out["leaks"]:
                numbers = ", ".join(f"#{leak['position'] + 1}" for leak in out["leaks"])  # counted from 1
                st.warning(f"{len(out['leaks'])} of the sent prompts are test-split examples (prompt {numbers}). "
                           "Keep their drafts out of training while this eval set is used for comparison.")
if sent["total"]:
    cols = st.columns(5)
    cols[0].metric("Sent to annotation", sent["total"])
    for col, status in zip(cols[1:], ("draft", "submitted", "approved", "rejected")):
        col.metric(status.capitalize(), sent["by_status"].get(status, 0))

# ---------------------------------------------------------------- failures reworded into new drafts
paraphrase_section(user, project, es_id, labels)
