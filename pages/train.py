"""Train: pick a frozen dataset version and a base model, set hyperparameters, press Train; watch it live."""
import pandas as pd
import streamlit as st

from core.basemodel import EMBEDDED
from core.curate.datasets import list_versions
from core.curate.preference_versions import list_preference_versions
from core.train.hardware import detect, estimate_sum_text
from core.jobs.queue import LIVE, job_snapshot, list_jobs
from core.jobs.states import describe_state
from core.jobs.targets.registry import LOCAL, THIS_MACHINE, list_targets
from core.curate.leakage import leak_ids
from core.train.runs import (DASH, LOSS_HELP, LOSS_LABEL, check_launch, format_loss, latest_losses, launch,
                             resume_note, resume_run, training_leaks)
from core.train.config import (DEFAULT_LR, DPO_LOSS_TYPES, PRESET_HELP, PRESETS, TrainConfig, field_docs,
                               preset_config)
from core.train.dpo import continuable_runs
from core.workspace import model_roots
from storage.models import JobStatus
from ui.notices import show_job_notices
from ui.jobcontrols import job_controls
from ui.frame import db, flash, live_fragment, require_page, require_project, run_action

user = require_page("train")
project = require_project()
st.title("Train")
DOCS = field_docs()


@st.cache_data(ttl=30, show_spinner=False)
def _hardware():
    return detect()


@st.cache_data(ttl=600, show_spinner="Estimating memory...")
def _checked_estimate(cfg_json: str) -> dict:
    cfg = TrainConfig.from_json(cfg_json)
    # A typed base model keeps to the model folders; DPO continuing a run uses that run's base (launch re-checks).
    return check_launch(cfg, _hardware(), trusted_paths=bool(cfg.init_from_run))


def _estimate(cfg_json: str):
    """(estimate, None), or (None, why not). A refusal is not cached (st.cache_data keeps no exception), so a
    passing failure (a model folder being written, an import race on a fresh server) is retried on the next rerun
    instead of disabling Train for the cache's ten minutes."""
    try:
        return _checked_estimate(cfg_json), None
    except Exception as err:  # StudioError: shown as the reason; anything else: the model could not be read
        return None, str(err)


def follow(job_id: int) -> None:
    """Make the live panel show ``job_id`` on its next draw. The selector's own state would win over any
    index= given to it, so the choice is handed over through session state before the selector is drawn."""
    st.session_state["watch_next"] = job_id


def leak_key(cfg: TrainConfig) -> str:
    """Session-state key of the exclusions chosen on this page for the data ``cfg`` trains on."""
    if cfg.method == "dpo":
        return f"exclude-pairs-{cfg.preference_version_id}"
    return f"exclude-{cfg.dataset_version_id}"


def leak_panel(cfg: TrainConfig | None) -> None:
    """Before launch: the training data that repeats an eval prompt (a launch with it is refused: examples of the
    version, or for DPO preference pairs), one button that excludes them all, and what this run already leaves out
    (core.train.runs.training_leaks)."""
    if cfg is None:
        return
    with db() as s:
        report = run_action(training_leaks, s, cfg)
    if report is None:
        return
    key, unit, field = leak_key(cfg), report["unit"], report["field"]
    chosen = getattr(cfg, field)
    leaks = report["leaks"]
    if leaks:
        ids = leak_ids(leaks)
        data = "preference version" if unit == "pair" else "version"
        st.warning(f"{len(ids)} {unit}(s) of this {data} repeat an eval prompt. Trained on, they would make a "
                   "comparison on that eval set unfair, so the run is refused until they are excluded.")
        st.dataframe(pd.DataFrame([{unit: leak["key"], "split": leak.get("split", "pairs"),
                                    "eval set": leak["eval_set"], "eval set id": leak["eval_set_id"],
                                    "eval prompt": leak["eval_prompt_id"], "match": leak["kind"],
                                    "similarity": leak["similarity"]} for leak in leaks]),
                     hide_index=True, width="stretch")
        if st.button(f"Exclude these {len(ids)} {unit}s", key="exclude_leaked",
                     help=f"Adds them to the run's {field}: the run leaves them out of its data."):
            st.session_state[key] = sorted({*chosen, *ids})
            st.rerun()
    if chosen:
        c1, c2 = st.columns([4, 1])
        c1.caption(f"Excluded from this run: {len(chosen)} {unit}(s), " + ", ".join(f"#{i}" for i in chosen))
        if c2.button("Clear", key="clear_excluded", help=f"Train on every {unit} again."):
            st.session_state.pop(key, None)
            st.rerun()
    if report.get("vote_sets"):
        st.caption("These pairs were voted on eval set(s) " + ", ".join(f"#{i}" for i in report["vote_sets"])
                   + ": the run's answers there measure the before/after on the same prompts (Results marks it), "
                   "not a held-out test.")
    if report["eval_derived_excluded"]:
        st.caption(f"{len(report['eval_derived_excluded'])} example(s) that came from an eval item are left out: "
                   "their eval set is used for comparison (More settings: include examples that came from eval items).")


def status_panel(snap: dict, rows: list[dict]) -> None:
    """What is happening to the watched run, from the database (describe_state), and what can be done about it:
    Cancel, or Resume when no continuation of the run is queued or running."""
    job = snap["job"]
    status, b1, b2 = st.columns([4, 1, 1], vertical_alignment="center")  # one row: compact enough for 768 px
    status.markdown(f"**Status:** {describe_state(job, snap['queue_position'], reported=bool(rows))}")
    with b2.popover("Log", help="The last lines of the run's log"):
        st.code(snap["log_tail"] or "(empty)", language=None)
    job_controls(user, job, resume_run, key=str(job.id), container=b1, unit="run", on_resumed=_resumed)


def _resumed(new) -> None:
    flash(resume_note(new))  # from its checkpoint, or from step 0 when it saved none: say which
    follow(new.id)
    st.rerun(scope="app")


@live_fragment("2s", "train")
def live() -> None:
    """The run selector and the watched run, redrawn together every 2 s, so a label never says "(running)"
    after the run ended; a run just started or resumed is followed (``follow``)."""
    show_job_notices(user, project.id)  # a toast when any job of the project ends
    with db() as s:
        recent = list_jobs(s, project_id=project.id, kind="train", user=user)[:30]
    if not recent:
        st.caption("No runs yet.")
        return
    ids = [j.id for j in recent]
    wanted = st.session_state.pop("watch_next", None)
    if wanted in ids:
        st.session_state["watch_select"] = wanted
    if st.session_state.get("watch_select") not in ids:
        active = [j.id for j in recent if j.status in LIVE]
        st.session_state["watch_select"] = active[0] if active else ids[0]
    labels = {j.id: f"#{j.id} {j.name} ({j.status})" for j in recent}
    with st.container(key="live-summary"):  # the part that must be in view: which run, its state, its controls
        job_id = st.selectbox("Run", ids, format_func=labels.get, key="watch_select")
        with db() as s:
            snap = run_action(job_snapshot, s, user, job_id)
        if snap is None:
            return
        job, rows = snap["job"], snap["metrics"]
        status_panel(snap, rows)
        train = [r for r in rows if r.get("loss") is not None]
        evals = [r for r in rows if r.get("eval_loss") is not None]
        last = train[-1] if train else (rows[-1] if rows else {})
        total = last.get("total_steps") or 0
        step = last.get("step") or 0
        st.progress(min(1.0, step / total) if total else 0.0, text=f"step {step} / {total or '?'}")
        c = [*st.columns(3), *st.columns(3)]  # two rows: whole labels on a 1024 px window too
        c[0].metric("Epoch", f"{last.get('epoch', 0):.2f}" if last else DASH)
        c[1].metric(LOSS_LABEL, format_loss(latest_losses(rows)["train_loss_last"]), help=LOSS_HELP)
        c[2].metric("Validation loss", format_loss(evals[-1]["eval_loss"]) if evals else DASH,
                    delta=f"{evals[-1]['eval_loss'] - evals[0]['eval_loss']:+.3f}" if len(evals) > 1 else None,
                    delta_color="inverse")
        c[3].metric("Tokens/s", f"{train[-1]['tokens_per_s']:.0f}" if train and train[-1].get("tokens_per_s")
                    else DASH)
        eta = last.get("eta_s")
        running = job.status == JobStatus.running.value
        c[4].metric("ETA", f"{int(eta // 60)}m {int(eta % 60)}s" if eta is not None and running else DASH)
        mem = job.measured_peak_mb if not running and job.measured_peak_mb else \
            next((r.get("mem_mb") or r.get("gpu_mem_mb") for r in reversed(rows)
                  if r.get("mem_mb") or r.get("gpu_mem_mb")), None)
        c[5].metric("Memory", f"{mem / 1024:.2f} GiB" if mem else DASH,
                    help=f"Peak so far (GPU allocations, or the process's RAM on a CPU); estimated "
                         f"{job.estimated_peak_mb or 0:,.0f} MB before launch.")
        if job.error:
            (st.info if job.status == JobStatus.canceled.value else st.error)(job.error.split("\n")[0])
    curves(rows, train)


def curves(rows: list[dict], train: list[dict]) -> None:
    """Loss, DPO reward and learning-rate curves of the watched run."""
    if not rows:
        return
    long = pd.DataFrame([{"step": r["step"], "loss": r[key], "curve": name}
                         for r in rows for key, name in (("loss", "train"), ("eval_loss", "validation"))
                         if r.get(key) is not None])
    if not long.empty:
        st.line_chart(long, x="step", y="loss", color="curve", height=260)
    rewards = pd.DataFrame([{"step": r["step"], "value": r[key], "curve": name} for r in train
                            for key, name in (("reward_margin", "reward margin (chosen - rejected)"),
                                              ("reward_accuracy", "reward accuracy"))
                            if r.get(key) is not None])
    if not rewards.empty:  # DPO runs: is the chosen answer pulling ahead of the rejected one?
        st.line_chart(rewards, x="step", y="value", color="curve", height=220)
    lrs = pd.DataFrame([{"step": r["step"], "learning rate": r["learning_rate"]} for r in train
                        if r.get("learning_rate") is not None])
    if not lrs.empty:
        st.line_chart(lrs, x="step", y="learning rate", height=160)


def live_section(heading: bool) -> None:
    """The live panel; without its heading when it tops the page (the run selector says what it is)."""
    with st.container(key="live-panel"):
        if heading:
            st.subheader("Live run")
        live()


hw = _hardware()
with db() as s:
    versions = list_versions(s, project)
    prefs = list_preference_versions(s, user, project.id)
    adapter_runs = continuable_runs(s, user, project.id)
    train_jobs = list_jobs(s, project_id=project.id, kind="train", user=user)
# While a run is queued or running (or one was just started), its live panel comes first and the form folds away,
# so the run is where the user looks, on a laptop screen too, without scrolling.
live_first = "watch_next" in st.session_state or any(j.status in LIVE for j in train_jobs)
if live_first:
    live_section(heading=False)
if live_first and st.session_state.pop("fold_form", False):
    st.session_state["new_run_open"] = False  # folded after a launch, even when it had been opened to launch
form_box = st.expander("New run", icon=":material/add_circle:", key="new_run_open", on_change="rerun") \
    if live_first else st.container()
left, right = form_box.columns([3, 2])
with right:
    st.subheader("Hardware")
    st.caption(hw.describe())

if not versions and not prefs:
    left.info("No frozen dataset version yet. On the **Datasets** page, freeze the approved examples into a "
              "version (with train / validation / test splits); it appears here to train on.")
else:
    with left:
        if not live_first:
            st.subheader("New run")
        names = list(PRESETS)
        preset = st.segmented_control("Preset", names, default="quick", key="preset",
                                      help="\n".join(f"**{n}**: {PRESET_HELP[n]}" for n in names)) or "quick"
        st.caption(PRESET_HELP[preset])
        base = preset_config(preset)
        k = f"{preset}-"  # widget keys per preset, so choosing a preset refills the form with its values

        methods = ["lora", "qlora", "full", "dpo"]
        method = st.radio("Method", methods, index=methods.index(base.method), horizontal=True, key=k + "method",
                          format_func={"lora": "LoRA", "qlora": "QLoRA (4-bit)", "full": "Full fine-tuning",
                                       "dpo": "DPO (preferences)"}.get, help=DOCS["method"])
        dpo_values: dict = {}
        init_run = None
        if method == "dpo":
            pref = st.selectbox("Preference version", prefs, key="prefs_version", help=DOCS["preference_version_id"],
                                format_func=lambda v: f"{v['name']} (#{v['id']}: {v['pairs']} pairs)")
            init_run = st.selectbox("Continue from run", [None, *adapter_runs], key="init_run",
                                    help=DOCS["init_from_run"],
                                    format_func=lambda j: "none: a new LoRA adapter on the base model" if j is None
                                    else f"#{j.id} {j.name} ({j.config.get('method')})")
            c1, c2 = st.columns(2)
            beta = c1.number_input("Beta", 0.001, 10.0, 0.1, step=0.05, format="%.3f", key="dpo_beta",
                                   help=DOCS["dpo_beta"])
            loss_type = c2.selectbox("Loss type", DPO_LOSS_TYPES, key="dpo_loss", help=DOCS["dpo_loss_type"])
            dpo_values = dict(preference_version_id=pref["id"] if pref else 0,
                              init_from_run=init_run.id if init_run else 0, dpo_beta=float(beta),
                              dpo_loss_type=loss_type)
            version = None
            if not prefs:
                st.info("No preference version yet: freeze one from reviewers' votes on the Results page, or import "
                        "a preference file on the Datasets page.")
        else:
            version = st.selectbox("Dataset version", versions, key="version",
                                   format_func=lambda v: f"{v.name} (#{v.id}: {v.n_train} train / "
                                                         f"{v.n_validation} validation)")
        source = st.radio("Base model", ["Embedded SmolLM2-135M-Instruct", "Local model folder",
                                         "Hugging Face hub id (online only)"], horizontal=True, key="source")
        if init_run is not None:
            base_model = init_run.config.get("base_model") or EMBEDDED
            st.caption("DPO continues that run's adapter, on the base model it was trained from.")
        elif source.startswith("Embedded"):
            base_model = EMBEDDED
        else:
            local = source.startswith("Local")
            # The web reads a local base model only inside the model folders (basemodel.web_model_name): the
            # placeholder shows the first; a refusal names them all. (No help icon: it would share the label.)
            roots = model_roots()
            base_model = st.text_input("Folder path" if local else "Hub id", key="model_path",
                                       placeholder=str(roots[0] / "Llama-3.2-1B-Instruct") if local
                                       else "HuggingFaceTB/SmolLM2-360M-Instruct").strip()
        if hw.kind != "cuda" and method == "qlora":
            st.caption("QLoRA on this CPU keeps the base weights in 4-bit NF4 (bitsandbytes): a quarter of their "
                       "memory, but each step turns them back into fp32, so it trains somewhat slower than LoRA "
                       "(about 1.1x the CPU time per step on the embedded model). Choose it when LoRA does not fit "
                       "in memory.")

        c1, c2, c3 = st.columns(3)
        lr_default = DEFAULT_LR["dpo"] if method == "dpo" else base.learning_rate or DEFAULT_LR[method]
        learning_rate = c1.number_input("Learning rate", 1e-7, 0.5, float(lr_default), step=1e-5, format="%.1e",
                                        key=k + "lr" + method, help=DOCS["learning_rate"])
        num_epochs = c2.number_input("Epochs", 0.1, 100.0, float(base.num_epochs), step=1.0, key=k + "epochs",
                                     help=DOCS["num_epochs"])
        batch = c3.number_input("Batch size", 1, 512, base.per_device_batch_size, key=k + "batch",
                                help=DOCS["per_device_batch_size"])
        c1, c2, c3 = st.columns(3)
        auto_len = c1.checkbox("Length from data", base.max_length is None, key=k + "autolen",
                               help=DOCS["max_length"])
        max_length = None if auto_len else int(c1.number_input("Max length (tokens)", 16, 131072,
                                                               base.max_length or 512, step=64, key=k + "len"))
        lora_r = c2.number_input("LoRA rank r", 1, 1024, base.lora_r, key=k + "r", help=DOCS["lora_r"],
                                 disabled=method == "full" or init_run is not None)
        grad_accum = c3.number_input("Gradient accumulation", 1, 1024, base.grad_accum, key=k + "accum",
                                     help=DOCS["grad_accum"])
        # Where and on how many processes: this machine (one node, its GPUs or CPU cores), or a registered Ray or
        # Slurm cluster (its nodes x processes per node).
        with db() as s:
            targets = [t.name for t in list_targets(s)]
        c1, c2, c3, c4 = st.columns(4)
        target = c1.selectbox("Compute target", [LOCAL, *targets], format_func=lambda t: THIS_MACHINE if t == LOCAL
                              else t, key="target", help=DOCS["target"])
        nodes = int(c2.number_input("Nodes", 1, 256, 1, key="nodes", help=DOCS["nodes"], disabled=target == LOCAL))
        nodes = nodes if target != LOCAL else 1
        max_procs = (hw.gpu_count if hw.kind == "cuda" else max(1, hw.cpu_cores)) if target == LOCAL else 64
        procs = c3.number_input("Processes per node", 1, max_procs, min(base.procs_per_node, max_procs),
                                key=k + "procs", help=DOCS["procs_per_node"])
        world = int(procs) * nodes
        c4.metric("Effective batch", int(batch) * int(grad_accum) * world,
                  help=f"Examples per optimizer step: batch {int(batch)} x accumulation {int(grad_accum)} x "
                       f"{world} process(es). {DOCS['grad_accum']}")
        with st.expander("More settings"):
            c1, c2, c3 = st.columns(3)
            lora_alpha = c1.number_input("LoRA alpha (0 = 2r)", 0, 4096, base.lora_alpha or 0, key=k + "alpha",
                                         help=DOCS["lora_alpha"])
            lora_dropout = c2.number_input("LoRA dropout", 0.0, 0.9, base.lora_dropout, key=k + "dropout",
                                           help=DOCS["lora_dropout"])
            target_modules = c3.text_input("Target modules", base.target_modules, key=k + "targets",
                                           help=DOCS["target_modules"])
            c1, c2, c3 = st.columns(3)
            warmup = c1.number_input("Warm-up ratio", 0.0, 0.9, base.warmup_ratio, key=k + "warmup",
                                     help=DOCS["warmup_ratio"])
            weight_decay = c2.number_input("Weight decay", 0.0, 1.0, base.weight_decay, key=k + "wd",
                                           help=DOCS["weight_decay"])
            scheduler = c3.selectbox("LR schedule", ["cosine", "linear", "constant", "constant_with_warmup"],
                                     key=k + "sched", help=DOCS["lr_scheduler"])
            c1, c2, c3 = st.columns(3)
            max_steps = c1.number_input("Max steps (-1 = epochs)", -1, 10_000_000, base.max_steps, key=k + "steps",
                                        help=DOCS["max_steps"])
            eval_steps = c2.number_input("Evaluate every N steps (0 = each epoch)", 0, 1_000_000, base.eval_steps,
                                         key=k + "evalsteps", help=DOCS["eval_steps"])
            save_steps = c3.number_input("Checkpoint every N steps (0 = each epoch)", 0, 1_000_000, base.save_steps,
                                         key=k + "savesteps", help=DOCS["save_steps"])
            c1, c2, c3 = st.columns(3)
            precision = c1.selectbox("Precision", ["auto", "fp32", "bf16", "fp16"], key=k + "precision",
                                     help=DOCS["precision"])
            packing = c2.selectbox("Packing", ["auto", "off", "on"], key=k + "packing", help=DOCS["packing"])
            seed = c3.number_input("Seed", 0, 2**31 - 1, base.seed, key=k + "seed", help=DOCS["seed"])
            c1, c2, c3 = st.columns(3)
            max_train = c1.number_input("Examples to sample (0 = all)", 0, 10_000_000,
                                        base.max_train_examples, key=k + "maxtrain", help=DOCS["max_train_examples"])
            max_val = c2.number_input("Validation examples to sample (0 = all)", 0, 10_000_000,
                                      base.max_validation_examples, key=k + "maxval",
                                      help=DOCS["max_validation_examples"])
            grad_ckpt = c3.checkbox("Gradient checkpointing", base.gradient_checkpointing, key=k + "gc",
                                    help=DOCS["gradient_checkpointing"])
            include_derived = st.checkbox("Include examples that came from eval items", False, key="include_derived",
                                          help=DOCS["include_eval_derived"])
        name = st.text_input("Run name (optional)", key="run_name")

        values = dict(dataset_version_id=version.id if version else 0, **dpo_values,
                      base_model=base_model or EMBEDDED, method=method,
                      lora_r=int(lora_r), lora_alpha=int(lora_alpha) or None, lora_dropout=float(lora_dropout),
                      target_modules=target_modules, learning_rate=float(learning_rate), num_epochs=float(num_epochs),
                      max_steps=int(max_steps), per_device_batch_size=int(batch), grad_accum=int(grad_accum),
                      max_length=max_length, warmup_ratio=float(warmup), weight_decay=float(weight_decay),
                      lr_scheduler=scheduler, eval_steps=int(eval_steps), save_steps=int(save_steps),
                      gradient_checkpointing=bool(grad_ckpt), packing=packing, precision=precision,
                      seed=int(seed), target=target, nodes=nodes, procs_per_node=int(procs), preset=preset,
                      max_train_examples=int(max_train),
                      max_validation_examples=int(max_val), include_eval_derived=bool(include_derived),
                      exclude_example_ids=st.session_state.get(f"exclude-{version.id}", []) if version else [],
                      exclude_pair_ids=st.session_state.get(f"exclude-pairs-{dpo_values.get('preference_version_id')}",
                                                            []))
        cfg = run_action(TrainConfig, **values)
        leak_panel(cfg)

    with right:
        st.subheader("Memory estimate per device")
        est, reason = _estimate(cfg.to_json()) if cfg is not None else (None, None)
        if est:
            st.metric("Estimated peak", f"{est['peak_mb'] / 1024:.2f} GiB",
                      help="The sum of the parts below, for one process (each GPU holds one; CPU processes share "
                           "the machine's memory); checked against the free memory before the run starts.")
            shared = f" x {cfg.procs_per_node} processes" if cfg.procs_per_node > 1 and hw.kind != "cuda" else ""
            st.caption(f"{estimate_sum_text(est)}{shared} at length {est['max_length']}; "
                       f"{est['available_mb'] / 1024:.1f} GiB free")
        elif reason:
            st.warning(reason)

    with left:
        if st.button("Train", type="primary", disabled=cfg is None or bool(reason), shortcut="ctrl+enter",
                     help="Starts a background run; it keeps going if you close this tab."):
            with db() as s, st.spinner("Checking the settings and queuing the run..."):
                job = run_action(launch, s, user, project.id, cfg, name)
            if job is not None:
                follow(job.id)
                flash(f"Run {job.id} {'started' if job.status == JobStatus.running.value else 'queued'}.")
                st.session_state["fold_form"] = True
                st.rerun()  # the next run draws the live panel on top, with this run, and folds the form away

if not live_first:
    st.divider()
    live_section(heading=True)

