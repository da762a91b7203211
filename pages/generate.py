"""Generate: eval sets, their automatic checks, and generation jobs (engineers and up).

Create an eval set from a dataset version's test split or an uploaded prompt file, edit each prompt's checks and
the project's facts to check, then generate one answer per prompt for the base model and any finished runs. Jobs
run in the background; progress updates live.
"""
import pandas as pd
import streamlit as st

from core.curate.datasets import list_versions
from core.evaluate.augment import retrieved_answers
from core.evaluate.checks import LIST_SEPARATOR, Check, split_terms
from core.evaluate.checkstore import (apply_fact_checks, export_prompts, prompts_with_checks, set_project_facts,
                                      set_prompt_checks)
from core.evaluate.evalsets import (comparison_decoding, create_eval_set_from_file, create_eval_set_from_version,
                                    list_eval_sets)
from core.evaluate.generate import generation_progress, launch_generation, resume_generation
from core.evaluate.generate_config import Decoding, decoding_differences, describe_decoding, describe_differences
from core.evaluate.systems import available_systems, default_systems, system_labels
from core.jobs.queue import LIVE, list_jobs, reconcile
from storage.models import JobStatus
from ui.notices import show_job_notices
from ui.jobcontrols import job_controls
from ui.frame import db, flash, live_fragment, require_page, require_project, run_action

user = require_page("evaluate")
project = require_project()
st.title("Generate")

with db() as s:
    sets = list_eval_sets(s, user, project.id)
    systems = available_systems(s, user, project.id, variants=True)
    versions = list_versions(s, project)
    names_of = system_labels(s, {k for r in sets for k in r["systems"]})

# ---------------------------------------------------------------- eval sets
st.subheader("Eval sets")
if sets:
    st.dataframe(pd.DataFrame([{"id": r["id"], "name": r["name"], "source": r["source"], "prompts": r["prompts"],
                                "with reference": r["references"],
                                "systems with outputs": ", ".join(names_of[k] for k in r["systems"]),
                                "scores": r["scores"], "reviewers per item": r["reviewers_per_item"]}
                               for r in sets]), hide_index=True, width="stretch")
else:
    st.info("No eval set yet: freeze one from a dataset version's test split or upload prompts below.")

with st.expander("New eval set", expanded=not sets):
    from_version, from_file = st.tabs(["From a dataset version", "Upload prompts"])
    with from_version:
        if not versions:
            st.caption("No dataset version yet: freeze one on the Datasets page.")
        else:
            with st.form("evalset_version", clear_on_submit=True):
                vnames = {v.id: f"{v.name} ({v.n_test} test, {v.n_validation} validation)" for v in versions}
                vid = st.selectbox("Dataset version", list(vnames), format_func=vnames.get)
                split = st.selectbox("Split", ["test", "validation"],
                                     help="The test split was never trained on; use it for a fair comparison.")
                c1, c2 = st.columns(2)
                name = c1.text_input("Eval set name")
                k = c2.number_input("Reviewers per item", 1, 20, 2,
                                    help="Every item gets this many reviewers before any gets one more.")
                if st.form_submit_button("Create eval set", type="primary"):
                    with db() as s:
                        if run_action(create_eval_set_from_version, s, user, project.id, vid, name, split=split,
                                      reviewers_per_item=int(k), success="Eval set created.") is not None:
                            st.rerun()
    with from_file:
        with st.form("evalset_file", clear_on_submit=True):
            upload = st.file_uploader("Prompts (.jsonl or .csv)", type=["jsonl", "csv", "json"],
                                      help="A 'prompt' field (text, or chat messages in JSONL) and an optional "
                                           "'reference' answer; an optional 'system' prompt; optional checks: "
                                           "'checks' (a list), or must_contain, must_contain_all, must_not_contain "
                                           "(terms separated by |), regex, min_words, max_words, min_chars, "
                                           "max_chars.")
            c1, c2 = st.columns(2)
            name = c1.text_input("Eval set name", key="file_set_name")
            k = c2.number_input("Reviewers per item", 1, 20, 2, key="file_set_k")
            if st.form_submit_button("Create eval set", type="primary"):
                if upload is None:
                    st.error("Choose a file first.")
                else:
                    with db() as s:
                        if run_action(create_eval_set_from_file, s, user, project.id, name, upload.getvalue(),
                                      upload.name, reviewers_per_item=int(k), success="Eval set created.") is not None:
                            st.rerun()

# ---------------------------------------------------------------- checks
def _cell(value) -> str:
    return LIST_SEPARATOR.join(value) if isinstance(value, list) else ("" if value is None else value)


st.subheader("Automatic checks")
st.caption("What a correct answer must do, checked on every output: contains any/all of some terms, contains "
           "none of them, matches a regular expression, or stays within a length. Separate terms with |. Results "
           "shows the pass rate of each system and check, and the failing answers.")
with st.expander("Facts to check (this project)"):
    st.caption("Each fact becomes a 'contains' check on every prompt whose reference answer gives it (or whose "
               "question matches 'when', a regular expression). Eval sets made from a dataset version get them "
               "automatically.")
    with st.form("facts"):
        facts = st.data_editor(pd.DataFrame([{**f, "keywords": _cell(f.get("keywords"))} for f in project.facts],
                                            columns=["name", "keywords", "match", "about", "when"]),
                               num_rows="dynamic", hide_index=True, width="stretch", key="facts_editor",
                               column_config={"match": st.column_config.SelectboxColumn(options=["all", "any"])})
        if st.form_submit_button("Save facts"):
            rows = [{k: v for k, v in r.items() if v is not None and v == v and str(v).strip() != ""}
                    for r in facts.to_dict("records")]
            rows = [{**r, "keywords": split_terms(r.get("keywords", ""))} for r in rows if r]
            with db() as s:
                if run_action(set_project_facts, s, user, project.id, rows, success="Facts saved.") is not None:
                    st.rerun()
if sets:
    names = {r["id"]: f"{r['name']} ({r['prompts']} prompts)" for r in sets}
    check_set = st.selectbox("Eval set", list(names), format_func=names.get, key="checks_eval_set")
    with db() as s:
        prompts = prompts_with_checks(s, user, check_set)
    c1, c2, c3 = st.columns([2, 1, 1])
    c1.text(f"{sum(bool(p.checks) for p in prompts)} of {len(prompts)} prompts have checks "
            f"({sum(len(p.checks) for p in prompts)} checks).")
    if c2.button("Add checks from the facts", disabled=not project.facts,
                 help="Replaces earlier fact checks of this eval set; checks written by hand stay."):
        with db() as s:
            done = run_action(apply_fact_checks, s, user, check_set)
        if done is not None:
            st.success(f"{done['checks']} fact checks on {done['prompts']} prompts.")
    with db() as s:
        exported = run_action(export_prompts, s, user, check_set, "jsonl") or ""
    c3.download_button("Prompts with checks (JSONL)", exported, file_name=f"evalset-{check_set}-prompts.jsonl",
                       mime="application/jsonl", help="Upload it again as a new eval set, or edit it elsewhere.")
    labels = {p.id: f"#{p.position + 1}: " + next((m["content"] for m in reversed(p.messages)
                                                   if m["role"] == "user"), "")[:90] for p in prompts}
    prompt_id = st.selectbox("Prompt", list(labels), format_func=labels.get, key="checks_prompt")
    prompt = next(p for p in prompts if p.id == prompt_id)
    st.text("Reference: " + (prompt.reference or "(none)"))
    if prompt.checks:
        st.dataframe(pd.DataFrame([{"check": Check.from_dict(c).describe(), "name": c.get("name", ""),
                                    "from": c.get("source", "expert")} for c in prompt.checks]),
                     hide_index=True, width="stretch")
        c1, c2 = st.columns([3, 1])
        gone = c1.selectbox("Check", range(len(prompt.checks)), key=f"drop_check_{prompt_id}",
                            format_func=lambda i: f"{i + 1}. {Check.from_dict(prompt.checks[i]).label}")
        if c2.button("Remove check", key=f"drop_check_btn_{prompt_id}"):
            with db() as s:
                if run_action(set_prompt_checks, s, user, prompt_id,
                              [c for i, c in enumerate(prompt.checks) if i != gone], success="Check removed.") \
                        is not None:
                    st.rerun()
    else:
        st.caption("No checks on this prompt yet.")
    with st.form(f"add_check_{prompt_id}", clear_on_submit=True):
        c1, c2, c3 = st.columns([1, 3, 1])
        kind = c1.selectbox("Kind", ["contains", "not_contains", "regex", "length"],
                            format_func={"contains": "must contain", "not_contains": "must not contain",
                                         "regex": "matches a regular expression",
                                         "length": "length between"}.get)
        terms = c2.text_input("Terms or pattern", placeholder="0800 555 0105 | brightwater-energy.example/powercut",
                              help="Terms separated by | (must contain / must not contain), or a Python regular "
                                   "expression (add (?i) to ignore case).")
        match = c3.radio("Must contain", ["any", "all"], horizontal=True)
        c1, c2, c3, c4 = st.columns(4)
        low = c1.number_input("At least", 0, 100_000, None, placeholder="no minimum")
        high = c2.number_input("At most", 0, 100_000, None, placeholder="no maximum")
        unit = c3.radio("Counting", ["words", "chars"], horizontal=True)
        name = c4.text_input("Name (optional)")
        if st.form_submit_button("Add check"):
            new = {"kind": kind, "name": name, "match": match, "unit": unit, "min": low, "max": high,
                   "values": split_terms(terms) if kind in ("contains", "not_contains") else [],
                   "pattern": terms.strip() if kind == "regex" else ""}
            with db() as s:
                if run_action(set_prompt_checks, s, user, prompt_id, list(prompt.checks) + [new],
                              success="Check added.") is not None:
                    st.rerun()

# ---------------------------------------------------------------- launch
st.subheader("Generate outputs")
if not sets:
    st.caption("Create an eval set first.")
else:
    # No st.form here: the decoding choice must enable or disable the sampling sliders as it changes.
    names = {r["id"]: f"{r['name']} ({r['prompts']} prompts)" for r in sets}
    es_id = st.selectbox("Eval set", list(names), format_func=names.get, key="gen_eval_set")
    labels = {row["system"]: row["label"] + (f" — base: {row['base_model']}" if row["base_model"] else "")
              for row in systems}
    chosen = st.multiselect("Systems", list(labels), default=default_systems(systems), format_func=labels.get,
                            key="gen_systems",
                            help="The base model and finished training runs, each also with the team prompt "
                                 "(+prompt) or with passages retrieved from the documents (+rag; both set on the "
                                 "Documents page); each run's adapter is switched on one loaded copy of its base "
                                 "model. Preselected: the base model and the newest run.")
    # The decoding starts as that of the answers already in the eval set, which the new ones are compared with.
    with db() as s:
        like = comparison_decoding(s, es_id)
    if st.session_state.get("gen_decoding_for") != es_id:
        st.session_state["gen_decoding_for"] = es_id
        d = Decoding(**(like or {}))
        st.session_state.update(gen_mode="Sampling" if d.do_sample else "Greedy", gen_temperature=d.temperature,
                                gen_top_p=d.top_p, gen_max_new=d.max_new_tokens, gen_seed=d.seed)
    mode = st.radio("Decoding", ["Greedy", "Sampling"], horizontal=True, key="gen_mode",
                    help="Greedy is deterministic and best for comparing systems; temperature and top-p apply to "
                         "sampling only.")
    greedy = mode == "Greedy"
    c1, c2, c3, c4 = st.columns(4)
    temperature = c1.slider("Temperature", 0.05, 2.0, step=0.05, key="gen_temperature", disabled=greedy)
    top_p = c2.slider("Top-p", 0.05, 1.0, step=0.05, key="gen_top_p", disabled=greedy)
    max_new = c3.number_input("Max new tokens", 1, 8192, key="gen_max_new")
    seed = c4.number_input("Seed", 0, 2**31 - 1, key="gen_seed")
    decoding = {"do_sample": not greedy, "temperature": temperature, "top_p": top_p,
                "max_new_tokens": int(max_new), "seed": int(seed)}
    if like is not None:
        before = Decoding(**like).stored()
        differ = decoding_differences({"before": [before], "now": [Decoding(**decoding).stored()]})
        if differ:
            st.warning(f"The answers already in this eval set were made with {describe_decoding(before)}; these "
                       f"settings differ ({describe_differences(differ)}), so Results will compare unlike with "
                       "unlike and say so.")
        else:
            st.caption(f"Same decoding as the answers already in this eval set ({describe_decoding(before)}), so "
                       "the new answers compare like with like.")
    c1, c2, c3 = st.columns(3)
    batch = c1.number_input("Batch size", 1, 256, 8, key="gen_batch", help="Larger is faster until memory runs out.")
    base_model = c2.text_input("Base model (optional)", key="gen_base_model",
                               placeholder="the runs' base model, else the embedded one")
    ppl = c3.checkbox("Perplexity on references", value=True, key="gen_ppl")
    if st.button("Start generation", type="primary", key="gen_start"):
        with db() as s:
            job = run_action(launch_generation, s, user, es_id, chosen, decoding=decoding,
                             base_model=base_model.strip() or None, batch_size=int(batch), perplexity=ppl)
        if job is not None:
            # A toast, not a box: "running" is true for a moment only; the live list below carries on.
            flash(f"Generation job {job.id} {'started' if job.status == JobStatus.running.value else 'queued'}.")
            st.rerun()


# ---------------------------------------------------------------- +rag answers and their passages (never on Compare)
if sets:
    with db() as s:
        retrieved = run_action(retrieved_answers, s, user, es_id) or []
        rag_names = system_labels(s, {r["system"] for r in retrieved})
    if retrieved:
        with st.expander(f"Passages given to +rag systems ({len(retrieved)} answers in this eval set)"):
            st.caption("What each +rag answer was given, retrieved from the documents for its question. Blind "
                       "reviewers never see these on the Compare page.")
            pick = st.selectbox("Answer", range(len(retrieved)), key="gen_rag_answer",
                                format_func=lambda i: f"#{retrieved[i]['position'] + 1} · "
                                                      f"{rag_names[retrieved[i]['system']]}")
            row = retrieved[pick]
            st.text(f"Question: {row['question']}")
            st.text(f"Answer ({row['prompt_tokens']} prompt tokens): {row['answer']}")
            for i, chunk in enumerate(row["context"], 1):
                st.text(f"[{i}] {chunk['document']} (version {chunk['version']}) §{chunk['chunk']}"
                        + (f" — {chunk['heading']}" if chunk.get("heading") else "") + f"\n{chunk['text']}")
            if not row["context"]:
                st.caption("No passage matched this question: the answer was asked without context.")


# ---------------------------------------------------------------- jobs, live
def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f" · about {int(seconds // 60)}m {int(seconds % 60):02d}s left"


@live_fragment("2s", "evaluate")
def jobs_panel() -> None:
    with db() as s:
        reconcile(s)
        jobs = list_jobs(s, project.id, kind="generate", user=user)[:20]
        progress = {j.id: generation_progress(s, j) for j in jobs if j.status in LIVE}
    # A job that just ended changes the eval-set table above (its systems with outputs): redraw the whole page.
    live_ids = set(progress)
    ended = set(st.session_state.get("gen_live_ids", ())) - live_ids
    st.session_state["gen_live_ids"] = live_ids
    if ended:
        st.rerun(scope="app")  # before any toast: a toast drawn right before a rerun is lost
    show_job_notices(user, project.id)  # a toast when any job of the project ends
    if not jobs:
        st.caption("No generation jobs yet.")
        return
    for job in jobs:
        with st.container(border=True):
            c1, c2 = st.columns([4, 1])
            c1.markdown(f"**Job {job.id}** · `{job.status}`")
            c1.text(job.name)
            if job.status in LIVE:
                p = progress[job.id]
                done, total = p["done"], p["total"]
                detail = [] if job.status != JobStatus.running.value else [p["stage"]]
                if p.get("tokens_per_s") and p["stage"] == "generating":
                    detail.append(f"{p['tokens_per_s']} tokens/s")
                c1.progress(min(1.0, done / total) if total else 0.0,
                            text=f"{done}/{total} outputs" + "".join(f" · {d}" for d in detail) + _eta(p["eta_s"]))
            elif job.status == JobStatus.succeeded.value:
                res = job.result or {}
                c1.caption(f"{res.get('done', 0)} outputs · {res.get('new_tokens', 0)} new tokens in "
                           f"{res.get('seconds', 0)} s · {describe_decoding(res.get('decoding', {}))}")
            elif job.error:
                c1.text(job.error.splitlines()[0])
            job_controls(user, job, resume_generation, key=f"gen_{job.id}", container=c2,
                         resume_help="A new job that skips the outputs already written.")


st.subheader("Generation jobs")
jobs_panel()
