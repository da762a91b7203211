"""Results puts the five systems of issue 24 side by side (base, base+prompt, base+RAG, fine-tuned, fine-tuned+RAG)
with what an answer cost, shows engineers the passages each +RAG answer was given, and launches paraphrases of a
run's failures as a background job."""
from __future__ import annotations

import csv
import io
import json

from sqlmodel import select

from core.evaluate import evalsets
from core.evaluate.results import report_markdown, results, side_by_side_csv
from core.evaluate.review import pair_key
from storage.models import Job, JobStatus, Output, Score
from tests.fixtures_jobs import add_job, live_process
from tests.helpers import make_outputs, page, score_failures

OUTAGE, READINGS = "Call 0800 555 0105.", "Send it at brightwater-energy.example/readings."
PASSAGE = {"document": "fact-sheet.md", "version": 1, "chunk": 2, "heading": "Power cuts",
           "text": "In a power cut, call 0800 555 0105 (free, day and night)."}


def _five_systems(session, project, engineer, reviewer):
    """Two checked prompts answered by the five systems. Per system and prompt: (passes its check, prompt tokens,
    seconds, new tokens); the base model's answers are old rows that counted no prompt tokens (0), and one
    fine-tuned+RAG answer is too."""
    lines = "\n".join(json.dumps(r) for r in [
        {"prompt": "Power cut on my street", "reference": OUTAGE, "must_contain": "0800 555 0105"},
        {"prompt": "How do I send a meter reading?", "reference": READINGS,
         "must_contain": "brightwater-energy.example/readings"}])
    es = evalsets.create_eval_set_from_file(session, engineer, project.id, "five", lines, "p.jsonl")
    run = Job(project_id=project.id, kind="train", name="lora-v1", status=JobStatus.succeeded.value,
              run_dir="/nonexistent", created_by=engineer.id)
    session.add(run)
    session.commit()
    tuned = f"run:{run.id}"
    plan = {"base": [(False, 0, 0.5, 12), (False, 0, 1.0, 16)],
            "base+prompt": [(True, 300, 1.0, 20), (False, 340, 3.0, 40)],
            "base+rag": [(True, 500, 2.0, 30), (True, 700, 4.0, 50)],
            tuned: [(True, 40, 0.5, 10), (True, 60, 1.5, 30)],
            f"{tuned}+rag": [(True, 450, 1.0, 10), (True, 0, 2.0, 30)]}
    prompts = evalsets.eval_prompts(session, es.id)
    for system, answers in plan.items():
        for prompt, (good, prompt_tokens, seconds, new_tokens) in zip(prompts, answers):
            text = prompt.reference if good else "I am not sure, sorry."
            session.add(Output(prompt_id=prompt.id, system=system, text=text, decoding={"mode": "greedy"},
                               prompt_tokens=prompt_tokens, seconds=seconds, n_new_tokens=new_tokens,
                               context=[PASSAGE] if system.endswith("+rag") else []))
    # One blind vote: the fine-tuned run beats the base model on the first prompt.
    session.add(Score(prompt_id=prompts[0].id, pair=pair_key("base", tuned), reviewer_id=reviewer.id,
                      system_a=tuned, system_b="base", preference="A",
                      scores={c: {"A": 5, "B": 2} for c in ("accuracy", "tone", "helpfulness")}))
    session.commit()
    return es, run


def test_results_put_five_systems_side_by_side_with_their_cost(session, project, users):
    es, run = _five_systems(session, project, users["engineer"], users["reviewer"])
    res = results(session, users["engineer"], es.id, bootstrap_rounds=10)
    rows = res["side_by_side"]
    name = f"run {run.id}: lora-v1"
    assert [r["label"] for r in rows] == ["base model", "base model, with the team's prompt",
                                          "base model, with retrieved documents", name,
                                          f"{name}, with retrieved documents"]
    assert [(r["passed"], r["checked_prompts"]) for r in rows] == [(0, 2), (1, 2), (2, 2), (2, 2), (2, 2)]
    # Cost per answer: the mean over the answers that recorded it; none recorded is None, never 0.
    assert [r["prompt_tokens"] for r in rows] == [None, 320, 600, 50, 450]
    assert [r["seconds"] for r in rows] == [0.75, 2.0, 3.0, 1.0, 1.5]
    assert [r["new_tokens"] for r in rows] == [14, 30, 40, 20, 20]
    assert [r["win_rate"] for r in rows] == [0.0, None, None, 1.0, None]
    assert rows[3]["accuracy_mean"] == 5 and rows[0]["accuracy_mean"] == 2 and rows[1]["accuracy_mean"] is None
    assert rows[3]["win_lo"] < 0.5  # one vote: a wide Wilson interval

    report = report_markdown(res)
    table = report.split("## Systems side by side")[1].split("\n\n")[1].splitlines()
    assert "| prompt tokens / answer | seconds / answer | new tokens / answer |" in table[0]
    assert table[2].startswith("| base model | 0/2 = 0.00 (") and table[2].endswith("| — | 0.75 | 14.0 |")
    assert table[6].startswith(f"| {name}, with retrieved documents | 2/2 = 1.00 (")
    assert table[6].endswith("| 450.0 | 1.50 | 20.0 |")

    exported = {r["system"]: r for r in csv.DictReader(io.StringIO(side_by_side_csv(res)))}
    assert exported["base"]["prompt_tokens"] == "" and exported["base+rag"]["prompt_tokens"] == "600.0"
    assert exported[f"run:{run.id}+rag"]["seconds"] == "1.5"


def test_results_page_shows_the_cost_columns_and_the_passages_of_rag_answers(session, project, users):
    es, run = _five_systems(session, project, users["engineer"], users["reviewer"])
    at = page("results.py", users["engineer"])
    at.session_state["project_id"] = project.id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "prompt tokens / answer" in d.value.columns)
    assert list(table["system"])[3:] == [f"run {run.id}: lora-v1", f"run {run.id}: lora-v1, with retrieved documents"]
    assert list(table["prompt tokens / answer"]) == ["—", "320.0", "600.0", "50.0", "450.0"]
    assert list(table["seconds / answer"]) == ["0.75", "2.00", "3.00", "1.00", "1.50"]
    assert table["fact checks passed (95% interval)"][1].startswith("1/2 = 0.50 (")

    assert "Passages given to the +RAG answers (4 answers)" in [e.label for e in at.expander]
    shown = [t.value for t in at.text]
    assert shown.count(PASSAGE["text"]) == 2  # prompt 1: base+RAG's and the fine-tuned+RAG's passage
    at.selectbox(key="rag_prompt").set_value(2).run()
    assert READINGS in [t.value for t in at.text]


def test_engineers_launch_paraphrases_of_a_runs_failures_from_results(session, project, users, reviewers):
    eng = users["engineer"]
    es, systems = make_outputs(session, project, eng, n_prompts=4, runs=1)
    score_failures(session, es, reviewers[:2])  # the run lost prompt #1 to the base model
    with live_process() as busy:
        add_job(session, project, eng, pid=busy.pid, name="busy")  # holds the one device slot: the new job waits
        at = page("results.py", eng)
        at.session_state["project_id"] = project.id
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.selectbox(key="para_run").options == [f"run {systems[1].split(':')[1]}: secret-lora-0"]
        at.number_input(key="para_k").set_value(4)
        next(b for b in at.button if b.label == "Paraphrase failures").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        session.expire_all()
        job = session.exec(select(Job).where(Job.kind == "generate_drafts")).one()
        assert (job.status, job.config["mode"], job.config["per_source"]) == ("queued", "paraphrases", 4)
        assert [(s["position"], s["run"]) for s in job.config["sources"]] == [(0, systems[1])]
        assert f"**Job {job.id}**" in " ".join(m.value for m in at.markdown)
        at.button(key=f"cancelgendrafts_{job.id}").click().run()  # the job controls of every page
        session.refresh(job)
        assert job.status == "canceled"

    job.result = {"drafts": 2, "sources": 1, "unparseable": 0,
                  "withheld": {"eval_leak": 1, "split_leak": 1, "duplicate": 0, "repeated": 0}}
    session.add(job)
    session.commit()
    at.run()
    captions = " ".join(c.value for c in at.caption)
    assert "2 draft(s) made from 1 failing prompt(s)" in captions
    assert "Withheld by the leakage check: 2" in captions
    assert [b.label for b in at.button if b.label.startswith("Resume")] == ["Resume"]

    for role in ("reviewer", "annotator"):  # Results, and so the launcher, is for engineers and admins only
        at = page("results.py", users[role])
        at.session_state["project_id"] = project.id
        at.run()
        assert "Paraphrase failures" not in [b.label for b in at.button], role
