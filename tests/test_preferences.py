"""Preference versions: majority and disagreement from votes, the preference import format (good and bad rows),
freezing, roles, and the DPO launch checks."""
from __future__ import annotations

import io
import json

import pytest

from core.curate.preference_versions import (import_preference_file, list_preference_versions, preference_records,
                                     read_preference_file)
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.evaluate import review
from core.evaluate.pairs_from_votes import freeze_from_votes, majority, vote_pairs
from core.train.config import TrainConfig
from storage.models import Job, JobStatus
from tests.helpers import full_scores, make_outputs


@pytest.mark.parametrize("votes, chosen, disagreement, even, none", [
    (["run:1", "run:1"], "run:1", False, False, False),
    (["run:1", "base", "run:1"], "run:1", True, False, False),  # disagreement resolved by majority
    (["run:1", "base"], None, True, True, False),  # an even split gives no pair
    (["run:1", "tie", "both_bad"], "run:1", False, False, False),  # ties and both-bad count for neither side
    (["tie", "both_bad"], None, False, False, True),
])
def test_majority(votes, chosen, disagreement, even, none):
    m = majority(votes)
    assert (m["chosen"], m["disagreement"], m["even_split"], m["no_preference"]) == (chosen, disagreement, even, none)


def _vote(session, es, reviewers, prefer):
    """Each reviewer votes on every item; ``prefer(reviewer index, prompt position)`` -> "run", "base" or a tie."""
    from core.evaluate.evalsets import eval_prompts

    position = {p.id: p.position for p in eval_prompts(session, es.id)}
    for i, rev in enumerate(reviewers):
        while (item := review.next_item(session, rev, es.id)) is not None:
            run_side = "A" if item._system_a.startswith("run") else "B"
            want = prefer(i, position[item.prompt_id])
            pref = {"run": run_side, "base": "B" if run_side == "A" else "A"}.get(want, want)
            review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(3, 3),
                                preference=pref)


def test_votes_become_pairs_with_disagreement_counted(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, k=3)
    table = {0: ["run", "run", "run"], 1: ["run", "base", "run"], 2: ["tie", "both_bad", "tie"],
             3: ["run", "base", "tie"]}
    _vote(session, es, reviewers, lambda i, pos: table[pos][i])
    built = vote_pairs(session, users["engineer"], es.id)
    s = built["summary"]
    assert (s["items_voted"], s["pairs"], s["disagreements"], s["even_split"], s["ties_or_both_bad"]) == (4, 2, 2, 1, 1)
    assert all(p["chosen"][0]["content"] == "Call us on 0800 000." for p in built["pairs"])  # the run's answers
    assert all(p["rejected"][0]["content"].startswith("I am not sure") for p in built["pairs"])
    assert {p["eval_set_id"] for p in built["pairs"]} == {es.id}

    version = freeze_from_votes(session, users["engineer"], project.id, "votes v1", eval_set_id=es.id)
    assert version.n_pairs == 2 and version.sources[0]["disagreements"] == 2
    listed = list_preference_versions(session, users["engineer"], project.id)
    assert listed[0]["name"] == "votes v1" and listed[0]["pairs"] == 2
    with pytest.raises(InvalidInput, match="already exists"):
        freeze_from_votes(session, users["engineer"], project.id, "votes v1", eval_set_id=es.id)
    with pytest.raises(PermissionDenied):
        freeze_from_votes(session, users["reviewer"], project.id, "by a reviewer", eval_set_id=es.id)


def test_nothing_to_freeze_says_why(session, project, users, reviewers):
    es, _ = make_outputs(session, project, users["engineer"], n_prompts=2, k=1)
    _vote(session, es, reviewers[:1], lambda i, pos: "tie")
    with pytest.raises(InvalidInput, match="No preference pairs to freeze"):
        freeze_from_votes(session, users["engineer"], project.id, "empty", eval_set_id=es.id)


GOOD_JSONL = "\n".join(json.dumps(r) for r in [
    {"prompt": "Why is my bill high?", "chosen": "Your tariff changed in May.", "rejected": "No idea."},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Meter?"}],
     "chosen": [{"role": "assistant", "content": "Under the stairs."}],
     "rejected": [{"role": "assistant", "content": "Somewhere."}]},
])


def test_import_text_and_conversational_rows(session, project, users):
    version = import_preference_file(session, users["engineer"], project.id, "file v1", GOOD_JSONL.encode(),
                                     "prefs.jsonl")
    records = preference_records(session, version.id)
    assert records[0] == {"prompt": [{"role": "user", "content": "Why is my bill high?"}],
                          "chosen": [{"role": "assistant", "content": "Your tariff changed in May."}],
                          "rejected": [{"role": "assistant", "content": "No idea."}]}
    assert records[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert version.sources == [{"kind": "file", "file": "prefs.jsonl", "pairs": 2, "rows": 2, "rejected_rows": 0,
                                "errors": []}]


def test_import_parquet(session, project, users):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(ln) for ln in GOOD_JSONL.splitlines()][:1] * 3
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    version = import_preference_file(session, users["engineer"], project.id, "pq", buf.getvalue(), "p.parquet")
    assert version.n_pairs == 3


@pytest.mark.parametrize("row, message", [
    ({"prompt": "Hi", "chosen": "Hello"}, "prefs.jsonl line 2: missing 'rejected'."),
    ({"prompt": "Hi", "chosen": "Same", "rejected": "Same"}, "line 2: chosen and rejected are the same answer"),
    ({"prompt": "Hi", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"},
     "line 2: 'chosen' must be one non-empty assistant message"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "x",
      "rejected": "y"}, "'prompt' ends with an assistant message"),
    ({"prompt": 7, "chosen": "x", "rejected": "y"}, "'prompt' must be a text or a non-empty list of messages"),
])
def test_bad_rows_are_named_in_one_line(row, message):
    data = GOOD_JSONL.splitlines()[0] + "\n" + json.dumps(row) + "\n"
    with pytest.raises(InvalidInput) as err:
        read_preference_file(data.encode(), "prefs.jsonl")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_rows_can_be_skipped_and_are_counted(session, project, users):
    data = GOOD_JSONL + "\n{not json\n" + json.dumps({"prompt": "x"}) + "\n"
    version = import_preference_file(session, users["engineer"], project.id, "skip", data.encode(), "p.jsonl",
                                     skip_bad=True)
    assert version.n_pairs == 2
    assert version.sources[0]["rejected_rows"] == 2
    assert version.sources[0]["errors"][0].startswith("line 3: malformed JSON")
    with pytest.raises(InvalidInput, match="no usable preference pair"):
        read_preference_file(b'{"prompt": "x"}\n', "p.jsonl", skip_bad=True)
    with pytest.raises(InvalidInput, match="must be .jsonl or .parquet"):
        read_preference_file(b"a,b\n", "p.csv")
    assert list_preference_versions(session, users["engineer"], project.id)[0]["name"] == "skip"


def _run(session, project, user, *, method="lora", status=JobStatus.succeeded.value, base="tiny", run_dir=""):
    job = Job(project_id=project.id, kind="train", name="sft", status=status, run_dir=run_dir, created_by=user.id,
              config={"method": method, "base_model": base})
    session.add(job)
    session.commit()
    return job


def test_dpo_launch_checks(session, project, users, tmp_path):
    from core.train.runs import launch

    eng = users["engineer"]
    prefs = import_preference_file(session, eng, project.id, "p", GOOD_JSONL.encode(), "p.jsonl")
    cfg = dict(base_model="tiny", method="dpo", preference_version_id=prefs.id)
    with pytest.raises(NotFound, match="Preference version 999 does not exist"):
        launch(session, eng, project.id, TrainConfig(**{**cfg, "preference_version_id": 999}))
    (tmp_path / "adapter_config.json").write_text("{}")
    cases = [(_run(session, project, eng, status=JobStatus.failed.value, run_dir=str(tmp_path)),
              "failed; DPO continues only a succeeded run"),
             (_run(session, project, eng, method="full", run_dir=str(tmp_path)), "is a full run"),
             (_run(session, project, eng, base="other", run_dir=str(tmp_path)), "same base model"),
             (_run(session, project, eng, run_dir=str(tmp_path / "gone")), "has no saved adapter")]
    for job, words in cases:
        with pytest.raises(InvalidInput, match=words):
            launch(session, eng, project.id, TrainConfig(**cfg, init_from_run=job.id))
    with pytest.raises(NotFound, match="not a training run of this project"):
        launch(session, eng, project.id, TrainConfig(**cfg, init_from_run=12345))


@pytest.mark.slow
def test_cli_prefs_import_list_freeze_and_dpo_launch_errors(workspace, session, project, users, reviewers,
                                                            tmp_path):
    from tests.helpers import cli

    good = tmp_path / "prefs.jsonl"
    good.write_text(GOOD_JSONL + "\n", encoding="utf-8")
    out = cli(workspace, "prefs", "import", str(good), "--name", "from file", "--user", "engineer1", "--json")
    assert out.returncode == 0, out.stderr
    version = json.loads(out.stdout)
    assert version["pairs"] == 2 and version["sources"] == "file prefs.jsonl: 2 pairs"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD_JSONL + '\n{"prompt": "x", "chosen": "y"}\n', encoding="utf-8")
    out = cli(workspace, "prefs", "import", str(bad), "--user", "engineer1")
    assert out.returncode == 1 and out.stderr.strip() == "error: bad.jsonl line 3: missing 'rejected'."
    out = cli(workspace, "prefs", "import", str(good), "--user", "reviewer1")
    assert out.returncode == 1 and out.stderr.startswith("error: ")

    es, _ = make_outputs(session, project, users["engineer"], n_prompts=2, k=1)
    _vote(session, es, reviewers[:1], lambda i, pos: "run")
    out = cli(workspace, "prefs", "freeze", "--eval-set", str(es.id), "--file", str(good), "--user", "engineer1",
              "--json")
    assert out.returncode == 0, out.stderr
    both = json.loads(out.stdout)
    assert both["pairs"] == 4 and "2 pairs from 2 voted items" in both["sources"]
    assert "file prefs.jsonl: 2 pairs" in both["sources"]
    listed = cli(workspace, "prefs", "list", "--user", "engineer1", "--json")
    assert [v["name"] for v in json.loads(listed.stdout)] == [both["name"], "from file"]

    out = cli(workspace, "train", "--method", "dpo", "--user", "engineer1")
    assert out.returncode == 1 and "--method dpo needs --prefs" in out.stderr
    out = cli(workspace, "train", "--method", "dpo", "--prefs", str(version["id"]), "--from-run", "4242",
              "--user", "engineer1")
    assert out.returncode == 1 and out.stderr == "error: Run 4242 does not exist.\n"


def test_pairs_repeating_another_eval_sets_prompt_refuse_a_dpo_launch_until_excluded(session, project, users,
                                                                                     reviewers):
    """No leakage for DPO: pairs voted on eval set A may be measured on A (the before/after, marked on Results),
    but a pair whose prompt is also a prompt of eval set B would make B's comparison unfair."""
    from sqlmodel import select

    from core.evaluate.evalsets import create_eval_set_from_file, eval_prompts
    from core.evaluate.pairs_from_votes import runs_trained_on_votes
    from core.train.runs import check_leaks, launch, training_leaks

    eng = users["engineer"]
    es, _ = make_outputs(session, project, eng, n_prompts=3, k=1)
    _vote(session, es, reviewers[:1], lambda i, pos: "run")
    prefs = freeze_from_votes(session, eng, project.id, "votes", eval_set_id=es.id)
    cfg = TrainConfig(base_model="tiny", method="dpo", preference_version_id=prefs.id)
    assert prefs.n_pairs == 3 and check_leaks(session, cfg)["leaks"] == []  # A itself does not count

    asked_again = eval_prompts(session, es.id)[1].messages[-1]["content"]
    other = create_eval_set_from_file(session, eng, project.id, "held out",
                                      json.dumps({"prompt": "  " + asked_again.upper()}) + "\n", "held.jsonl")
    jobs_before = len(session.exec(select(Job)).all())
    with pytest.raises(InvalidInput, match=r"1 training pair\(s\) repeat an eval prompt.*exclude_pair_ids"):
        launch(session, eng, project.id, cfg)
    assert len(session.exec(select(Job)).all()) == jobs_before  # nothing queued
    leaks = training_leaks(session, cfg)["leaks"]
    assert [(x["eval_set_id"], x["kind"]) for x in leaks] == [(other.id, "exact")]
    fixed = cfg.with_overrides(exclude_pair_ids=[leaks[0]["key"]])
    report = check_leaks(session, fixed)
    assert report["leaks"] == [] and [x["key"] for x in report["excluded"]] == fixed.exclude_pair_ids
    kept = preference_records(session, prefs.id, fixed.exclude_pair_ids)
    assert len(kept) == 2 and all(r["prompt"][-1]["content"] != asked_again for r in kept)

    dpo_run = Job(project_id=project.id, kind="train", name="dpo", status=JobStatus.succeeded.value,
                  run_dir="/nonexistent/dpo", config={"method": "dpo", "preference_version_id": prefs.id})
    session.add(dpo_run)
    session.commit()
    assert runs_trained_on_votes(session, es.id) == [dpo_run.id]  # Results marks it on A...
    assert runs_trained_on_votes(session, other.id) == []  # ...and not on B
