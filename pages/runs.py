"""Runs: every training run of the project; compare runs; export (adapter, merged, Ollama, vLLM, GGUF) with a
parity check and a model card; logs."""
from pathlib import Path

import pandas as pd
import streamlit as st

from core.jobs.queue import LIVE, job_snapshot
from core.jobs.rundir import has_model
from core.evaluate.evalsets import list_eval_sets
from core.ship.deploy import FORMATS, default_formats, exports_of, launch_export
from core.ship.gguf import INSTALL as GGUF_INSTALL, find_converter
from core.train.runs import DASH, LOSS_HELP, LOSS_LABEL, compare_runs, format_loss, runs_table
from core.workspace import default_export_folder, export_roots
from storage.models import JobStatus
from ui.notices import show_job_notices
from ui.frame import db, flash, live_fragment, md_literal, require_page, require_project, run_action

user = require_page("train")
project = require_project()
st.title("Runs")


# What the table shows, under the names people use (core.train.runs.run_summary has the rest). Every cell but the
# run number is text made by ``cell``: a value not known yet (a running run's validation loss) reads "—", not
# "None".
TABLE_COLUMNS = {  # widths in px, so the whole table fits a laptop window (the name takes what is left)
    "id": st.column_config.NumberColumn("Run", format="#%d", width=56),
    "name": st.column_config.TextColumn("Name"),
    "status": st.column_config.TextColumn("Status", width=84),
    "method": st.column_config.TextColumn("Method", width=72),
    "dataset_version_name": st.column_config.TextColumn("Version", width=100, help="The dataset version trained on"),
    "train_loss_last": st.column_config.TextColumn(LOSS_LABEL, width=116, help=LOSS_HELP),
    "eval_loss_last": st.column_config.TextColumn("Val. loss", width=72,
                                                  help="Validation loss at the last evaluation"),
    "reward_accuracy": st.column_config.TextColumn("Reward acc.", width=88,
                                                   help="DPO runs: how often the chosen answer's reward was above "
                                                        "the rejected one's, at the last step"),
    "steps": st.column_config.TextColumn("Steps", width=56),
    "peak_gib": st.column_config.TextColumn("Peak GiB", width=72,
                                            help="Peak memory measured (estimated before launch while none is "
                                                 "measured)"),
    "started": st.column_config.TextColumn("Started", width=100, help="When the run started (UTC)"),
}


def cell(key: str, row: dict) -> str:
    """One cell of the Runs table as text; a dash for a value not known (yet)."""
    value = row.get(key)
    if key in ("train_loss_last", "eval_loss_last"):
        return format_loss(value)
    if value is None or value != value:
        return DASH
    if key == "reward_accuracy":
        return f"{value:.2f}"
    if key == "peak_gib":
        return f"{value:.2f}"
    if key == "started":
        return f"{value:%b} {value.day} {value:%H:%M}"
    return f"{value:,}" if key == "steps" else str(value)


def table_frame(rows: list[dict]) -> pd.DataFrame:
    """The runs as the table shows them: fewer, human columns, so it fits a laptop screen (the reward column only
    when a DPO run is listed)."""
    columns = [c for c in TABLE_COLUMNS if c != "reward_accuracy" or any(r.get(c) is not None for r in rows)]
    out = []
    for row in rows:
        peak = row.get("measured_peak_mb") or row.get("estimated_peak_mb")
        shown = {**row, "peak_gib": peak / 1024 if peak else None, "status": row["state"]}  # "stopping" too
        out.append({c: row["id"] if c == "id" else cell(c, shown) for c in columns})
    return pd.DataFrame(out, columns=columns)


@live_fragment("5s", "train")
def table() -> None:
    show_job_notices(user, project.id)  # a toast when any job of the project ends
    with db() as s:
        rows = runs_table(s, user, project.id)
    if not rows:
        st.info("No training runs yet: start one on the Train page.")
        return
    st.dataframe(table_frame(rows), hide_index=True, width="stretch", column_config=TABLE_COLUMNS)


table()
with db() as s:
    rows = runs_table(s, user, project.id)
if not rows:
    st.stop()
# No status in these labels: they are drawn once per page run and would go stale while the table above updates.
labels = {r["id"]: f"#{r['id']} {r['name']}" for r in rows}

st.subheader("Compare runs")
picked = st.multiselect("Runs to compare (2 or more)", list(labels), format_func=labels.get, key="compare_ids")
if len(picked) >= 2:
    with db() as s:
        cmp = run_action(compare_runs, s, user, picked)
    if cmp:
        st.markdown("**Settings that differ**")
        if cmp["config_diff"]:
            st.dataframe(pd.DataFrame(cmp["config_diff"]).astype(str), hide_index=True, width="stretch")
        else:
            st.caption("Same settings.")
        st.markdown("**Final metrics**")
        st.dataframe(pd.DataFrame(cmp["metrics"]), hide_index=True, width="stretch")
        if cmp["curves"]:
            st.markdown("**Loss curves**")
            st.line_chart(pd.DataFrame(cmp["curves"]), x="step", y="value", color="series", height=320)
elif picked:
    st.caption("Pick at least one more run.")


def _first_line(text: str | None) -> str:
    """A job's error can carry its log's last lines; the panel shows the first (the log below has the rest)."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


FORMAT_LABELS = {"adapter": "PEFT adapter folder (download)", "merged": "Merged model folder",
                 "ollama": "Ollama Modelfile", "vllm": "vLLM commands", "gguf": "GGUF (llama.cpp)"}


def export_report(report: dict) -> None:
    """What one finished export wrote: folders, the adapter download, the exact commands, GGUF, parity."""
    artifacts = report.get("artifacts", {})
    for kind in ("adapter", "merged"):
        if kind in artifacts:
            st.text(f"{FORMAT_LABELS[kind]} (with README.md model card):")
            st.code(artifacts[kind]["path"], language=None)
    zip_path = artifacts.get("adapter", {}).get("zip")
    if zip_path and Path(zip_path).is_file():
        with open(zip_path, "rb") as fh:
            st.download_button("Download the adapter (.zip)", fh, file_name=Path(zip_path).name,
                               key=f"dl_{zip_path}", mime="application/zip")
    ollama = artifacts.get("ollama", {})
    for item in ollama.get("files", []):
        st.text(f"Ollama: {item['modelfile']}")
        if Path(item["modelfile"]).is_file():
            st.code(Path(item["modelfile"]).read_text(encoding="utf-8"), language=None)
        st.code(item["command"], language="bash")
    if ollama.get("files"):
        (st.info if ollama.get("template") == "ollama" else st.caption)(md_literal(ollama["note"]))
    if ollama.get("template_mismatches"):
        st.warning(f"The Ollama TEMPLATE renders {len(ollama['template_mismatches'])} sample conversation(s) "
                   "differently from the model's chat template; check it before use.")
    if ollama.get("error"):
        st.warning(md_literal(ollama["error"]))
    for command in artifacts.get("vllm", {}).get("commands", []):
        st.code(command, language="bash")
    gguf = artifacts.get("gguf", {})
    if gguf.get("missing"):
        st.warning(gguf["missing"])
    elif gguf.get("path"):
        st.code(gguf["path"], language=None)
        meta = gguf.get("metadata") or {}
        if meta:
            st.text("GGUF metadata (as llama.cpp and Ollama read it): "
                    + "; ".join(f"{key.removeprefix('general.')}: {value}" for key, value in meta.items()))
    parity = report.get("parity") or {}
    checks = parity.get("checks", {})
    if checks:
        n, available = len(parity.get("prompts") or []), parity.get("prompts_available") or 0
        st.text(f"Parity check on {n} prompt(s) of the {parity.get('prompts_from', '')}"
                + (f" (the first {n} of {available})" if available > n else ""))
    for kind, verdict in checks.items():
        if verdict.get("error"):
            st.error(f"Parity ({kind}): could not check: {md_literal(verdict['error'])}")
        elif verdict["identical"] == verdict["total"]:
            st.success(f"Parity ({kind}): {verdict['summary']} greedy answers identical to the run's.")
        else:
            diff = verdict["first_difference"]
            st.error(f"Parity ({kind}): {verdict['summary']}; first difference at prompt {diff['index'] + 1}:")
            st.text(diff["prompt"])
            left, right = st.columns(2)
            left.caption("The run")
            left.text(diff["run"])
            right.caption("This export")
            right.text(diff["export"])


@live_fragment("2s", "train")
def exports_panel(run_id: int) -> None:
    """This run's exports, live: a background job each (artifacts, parity check, model card)."""
    with db() as s:
        exports = exports_of(s, user, run_id)
    for e in exports:
        job, progress = e["job"], e["progress"]
        if job.status in LIVE:
            done, total = progress.get("done", 0), progress.get("total", 1) or 1
            st.progress(min(done / total, 1.0), text=f"Export {job.id}: {job.status}"
                                                     f"{' - ' + progress['step'] if progress.get('step') else ''}")
        elif job.status == JobStatus.succeeded.value:
            with st.expander(f"Export {job.id}", expanded=e is exports[0]):
                st.code(e["out_dir"], language=None)
                export_report(e["report"])
        else:
            st.error(f"Export {job.id} {job.status}: {md_literal(_first_line(job.error))}")


st.subheader("One run")
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="detail_id")
row = next(r for r in rows if r["id"] == run_id)
st.caption(f"Run folder: `{row['run_dir']}`")
with db() as s:
    snap = run_action(job_snapshot, s, user, run_id)
if snap:
    job = snap["job"]
    if job.error:
        (st.info if job.status == JobStatus.canceled.value else st.error)(md_literal(_first_line(job.error)))
    c1, c2 = st.columns(2)
    c1.metric("Estimated peak memory", f"{job.estimated_peak_mb:.0f} MB" if job.estimated_peak_mb else "-")
    c2.metric("Measured peak memory", f"{job.measured_peak_mb or 0:.0f} MB" if job.measured_peak_mb else "-")
    if job.status in (JobStatus.succeeded.value, JobStatus.canceled.value) and has_model(job.run_dir or ""):
        with db() as s:
            eval_sets = {es["id"]: es["name"] for es in list_eval_sets(s, user, project.id)}
        with st.form("export"):
            st.markdown("**Export**")
            # The web exports only inside the export folders (core.workspace.export_folder).
            out = st.text_input("Export folder (new, empty)", str(default_export_folder(f"run-{run_id}")),
                                help=f"A new folder inside {', '.join(map(str, export_roots()))}.")
            formats = st.multiselect("Formats", FORMATS, default=default_formats(job), format_func=FORMAT_LABELS.get)
            if find_converter() is None:
                st.caption(md_literal(GGUF_INSTALL))
            c1, c2, c3 = st.columns([3, 1, 1])
            eval_set = c1.selectbox("Parity prompts", [None, *eval_sets],
                                    format_func=lambda i: "the run's test split" if i is None else eval_sets[i])
            n_prompts = c2.number_input("How many", 0, 100000, 6, help="The first N prompts; 0 checks them all "
                                        "(each artifact answers every one, which takes minutes on a CPU).")
            check = c3.checkbox("Parity check", True, help="Answer the prompts greedily with each export loaded as "
                                                           "a user loads it and compare with the run's answers.")
            if st.form_submit_button("Export", help="A background job: artifacts, parity check, model card."):
                with db() as s:
                    started = run_action(launch_export, s, user, run_id, out, formats=formats,
                                         eval_set_id=eval_set, parity_check=check,
                                         parity_max_prompts=int(n_prompts))
                if started is not None:
                    flash(f"Export job {started.id} queued.")
                    st.rerun()
        exports_panel(run_id)
    with st.expander("Config"):
        st.json(job.config)
    st.markdown("**Log (last lines)**")
    st.code(snap["log_tail"] or "(empty)", language=None)
