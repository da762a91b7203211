"""Eval sets, blind assignment, scoring, send-back, results and exports on real SQLite (no model needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sqlmodel import select

from core.evaluate import evalsets, generate, results as res_mod, review
from core.errors import InvalidInput, NotFound, PermissionDenied
from storage.models import Example, Score
from tests.helpers import full_scores, make_outputs, score_all

# ---------------------------------------------------------------- eval sets


def test_eval_set_from_file_jsonl_and_csv(session, project, users):
    eng = users["engineer"]
    jsonl = "\n".join([json.dumps({"prompt": "Hi", "reference": "Hello!"}),
                       json.dumps({"prompt": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Meter?"}]})])
    es = evalsets.create_eval_set_from_file(session, eng, project.id, "upload", jsonl.encode(), "p.jsonl")
    prompts = evalsets.eval_prompts(session, es.id)
    assert [p.messages for p in prompts] == [[{"role": "user", "content": "Hi"}],
                                             [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Meter?"}]]
    assert [p.reference for p in prompts] == ["Hello!", ""]
    csv_text = "prompt,reference\nWhere is my bill?,In the app.\nThanks,\n"
    es2 = evalsets.create_eval_set_from_file(session, eng, project.id, "csv", csv_text.encode(), "p.csv")
    assert [(p.messages[-1]["content"], p.reference) for p in evalsets.eval_prompts(session, es2.id)] == [
        ("Where is my bill?", "In the app."), ("Thanks", "")]
    rows = evalsets.list_eval_sets(session, eng, project.id)
    assert [(r["name"], r["prompts"], r["references"]) for r in rows] == [("upload", 2, 1), ("csv", 2, 1)]


def test_bad_prompt_files_are_refused_and_nothing_saved(session, project, users):
    eng = users["engineer"]
    with pytest.raises(InvalidInput, match="line 2"):
        evalsets.create_eval_set_from_file(session, eng, project.id, "bad", '{"prompt": "a"}\n{oops', "p.jsonl")
    with pytest.raises(InvalidInput, match="'prompt' column"):
        evalsets.create_eval_set_from_file(session, eng, project.id, "bad", "question\nhi\n", "p.csv")
    with pytest.raises(InvalidInput, match=".jsonl or .csv"):
        evalsets.create_eval_set_from_file(session, eng, project.id, "bad", "hi", "p.txt")
    assert evalsets.list_eval_sets(session, eng, project.id) == []


def test_eval_set_from_version_test_split(session, project, users):
    from core.curate.datasets import freeze_version

    for i in range(30):
        session.add(Example(project_id=project.id, system="Be kind.", status="approved",
                            turns=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]))
    session.commit()
    version = freeze_version(session, users["admin"], project, "v1", fractions={"train": 0.5, "validation": 0.2,
                                                                                "test": 0.3})
    es = evalsets.create_eval_set_from_version(session, users["engineer"], project.id, version.id, "from v1")
    prompts = evalsets.eval_prompts(session, es.id)
    assert len(prompts) == version.n_test > 0
    for p in prompts:
        assert p.messages[0] == {"role": "system", "content": "Be kind."}
        assert p.reference == "a" + p.messages[-1]["content"][1:]
    with pytest.raises(PermissionDenied):
        evalsets.create_eval_set_from_version(session, users["reviewer"], project.id, version.id, "nope")


# ---------------------------------------------------------------- blind assignment


def test_position_randomisation_is_balanced_and_stable():
    pair = review.pair_key("base", "run:12")
    firsts = [review.orientation(1234, prompt_id, pair, reviewer_id=7)[0] == "base" for prompt_id in range(1, 1001)]
    share = sum(firsts) / len(firsts)
    assert 0.45 <= share <= 0.55, share
    # Per reviewer too: the same items are oriented differently for another reviewer, and reloads are stable.
    other = [review.orientation(1234, prompt_id, pair, reviewer_id=8)[0] == "base" for prompt_id in range(1, 1001)]
    assert 0.35 < np.mean(np.array(firsts) != np.array(other)) < 0.65
    assert firsts == [review.orientation(1234, p, pair, 7)[0] == "base" for p in range(1, 1001)]


def test_next_item_is_stable_and_shows_a_and_b_only(session, project, users):
    es, systems = make_outputs(session, project, users["engineer"])
    rev = users["reviewer"]
    first, again = review.next_item(session, rev, es.id), review.next_item(session, rev, es.id)
    assert (first.prompt_id, first.pair, first.text_a, first.text_b) == (again.prompt_id, again.pair, again.text_a,
                                                                         again.text_b)
    assert {first.text_a, first.text_b} == {"Call us on 0800 000.", f"I am not sure about {first.prompt_id}."}
    assert first.total_items == 4 and first.existing is None
    assert "base" not in first.token and "run" not in first.token


def test_second_submit_edits_the_same_row(session, project, users):
    es, _ = make_outputs(session, project, users["engineer"])
    rev = users["reviewer"]
    item = review.next_item(session, rev, es.id)
    review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(2, 4), preference="B",
                    comment="first")
    review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(5, 1), preference="A",
                    comment="changed my mind")
    rows = session.exec(select(Score).where(Score.reviewer_id == rev.id)).all()
    assert len(rows) == 1
    assert rows[0].preference == "A" and rows[0].comment == "changed my mind"
    assert rows[0].scores["accuracy"] == {"A": 5, "B": 1}
    assert rows[0].system_a == item._system_a
    revisit = review.get_item(session, rev, es.id, item.prompt_id, item.pair)
    assert revisit.existing["preference"] == "A" and revisit.text_a == item.text_a


def test_bad_scores_are_refused(session, project, users):
    es, _ = make_outputs(session, project, users["engineer"])
    rev = users["reviewer"]
    item = review.next_item(session, rev, es.id)
    with pytest.raises(InvalidInput, match="between 1 and 5"):
        review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(6, 1), preference="A")
    with pytest.raises(InvalidInput, match="Give tone"):
        review.submit_score(session, rev, es.id, item.prompt_id, item.pair,
                        scores={"accuracy": {"A": 1, "B": 2}}, preference="A")
    with pytest.raises(InvalidInput, match="preference"):
        review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(3, 3), preference="C")
    with pytest.raises(NotFound):
        review.submit_score(session, rev, es.id, item.prompt_id, "base|run:999", scores=full_scores(3, 3),
                        preference="A")
    assert session.exec(select(Score)).all() == []


def test_each_item_gets_k_reviewers_before_any_gets_k_plus_one(session, project, users, reviewers):
    es, _ = make_outputs(session, project, users["engineer"], n_prompts=3, runs=2, k=2)  # 3 prompts x 3 pairs
    n_items = len(review.review_items(session, es.id))
    assert n_items == 9
    counts: dict = {}
    for turn in range(3 * n_items):
        rev = reviewers[turn % 3]
        item = review.next_item(session, rev, es.id)
        if item is None:
            continue
        key = (item.prompt_id, item.pair)
        if counts.get(key, 0) >= 2:  # about to give an item a 3rd reviewer: all must have 2 already
            assert all(counts.get(it, 0) >= 2 for it in review.review_items(session, es.id))
        review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(3, 4), preference="B")
        counts[key] = counts.get(key, 0) + 1
        assert max(counts.values()) - min(counts.get(it, 0) for it in review.review_items(session, es.id)) <= 1
    assert all(v == 3 for v in counts.values())  # everyone scored everything once, no duplicates
    assert review.next_item(session, reviewers[0], es.id) is None
    progress = review.review_progress(session, users["engineer"], es.id)
    assert progress["complete"] == 9 and progress["scores"] == 27


def test_send_back_creates_a_draft_example_with_the_comment(session, project, users):
    es, _ = make_outputs(session, project, users["engineer"], references=False)
    rev = users["reviewer"]
    item = review.next_item(session, rev, es.id)
    preferred = "A" if item.text_a.startswith("Call") else "B"
    review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(3, 3), preference=preferred)
    ex = review.send_back_to_annotation(session, rev, es.id, item.prompt_id, item.pair, comment="Give the number first",
                                        start=preferred)
    assert ex.status == "draft" and ex.source == "review_feedback"
    assert ex.note == "Give the number first"
    assert ex.turns[0]["content"] == item.messages[-1]["content"]
    assert ex.turns[-1] == {"role": "assistant", "content": "Call us on 0800 000."}  # the answer chosen to start from
    with pytest.raises(PermissionDenied):
        review.send_back_to_annotation(session, users["annotator"], es.id, item.prompt_id, item.pair, comment="x")


def test_role_refusals(session, project, users):
    es, _ = make_outputs(session, project, users["engineer"])
    ann, rev = users["annotator"], users["reviewer"]
    with pytest.raises(PermissionDenied):
        review.next_item(session, ann, es.id)
    item = review.next_item(session, rev, es.id)
    with pytest.raises(PermissionDenied):
        review.submit_score(session, ann, es.id, item.prompt_id, item.pair, scores=full_scores(3, 3), preference="A")
    for fn in (lambda u: evalsets.create_eval_set_from_file(session, u, project.id, "x", '{"prompt": "a"}', "a.jsonl"),
               lambda u: generate.launch_generation(session, u, es.id, ["base"]),
               lambda u: res_mod.results(session, u, es.id),
               lambda u: res_mod.export_dpo(session, u, es.id),
               lambda u: res_mod.scores_csv(session, u, es.id)):
        for who in (ann, rev):
            with pytest.raises(PermissionDenied):
                fn(who)
    assert session.exec(select(Score)).all() == []


# ---------------------------------------------------------------- results and exports


def test_results_agreement_equals_krippendorff_on_the_same_data(session, project, users, reviewers):
    import krippendorff

    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1)
    score_all(session, es, reviewers[:2], prefer_run=False, vary=lambda r, p: (r + p) % 2)
    res = res_mod.results(session, users["engineer"], es.id, bootstrap_rounds=20)
    # Rebuild the reliability matrix by hand: raters x units (prompt, system), accuracy scores.
    rows = session.exec(select(Score).order_by(Score.id)).all()
    raters = sorted({r.reviewer_id for r in rows})
    units = sorted({(r.prompt_id, s) for r in rows for s in (r.system_a, r.system_b)})
    matrix = np.full((len(raters), len(units)), np.nan)
    for r in rows:
        for side, s in (("A", r.system_a), ("B", r.system_b)):
            matrix[raters.index(r.reviewer_id), units.index((r.prompt_id, s))] = r.scores["accuracy"][side]
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal", value_domain=range(1, 6))
    got = next(a for a in res["agreement"] if a["criterion"] == "accuracy")
    assert got["alpha"] == pytest.approx(expected)
    pref = next(a for a in res["agreement"] if a["criterion"] == "preference")
    assert pref["alpha"] is not None and 0 <= pref["percent_agreement"] <= 1

    means = {(m["system"], m["criterion"]): m for m in res["means"]}
    run = systems[1]
    assert means[(run, "accuracy")]["mean"] > means[("base", "accuracy")]["mean"]
    assert means[(run, "accuracy")]["lo"] <= means[(run, "accuracy")]["mean"] <= means[(run, "accuracy")]["hi"]
    assert res["leaderboard"][0]["system"] == run
    assert res["leaderboard"][0]["label"].endswith("secret-lora-0")
    (wtl,) = res["win_tie_loss"]
    assert wtl["n"] == 8
    metrics = {m["system"]: m for m in res["metrics"]}
    assert metrics[run]["exact_match"] == 1.0 and metrics["base"]["exact_match"] == 0.0
    assert metrics["base"]["perplexity"] == 12.5


def test_exports_dpo_csv_and_report(session, project, users, reviewers, tmp_path):
    from datasets import load_from_disk

    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1)
    with pytest.raises(InvalidInput, match="No preference pairs"):
        res_mod.export_dpo(session, users["engineer"], es.id, tmp_path / "none")
    score_all(session, es, reviewers[:2])
    out = res_mod.export_dpo(session, users["engineer"], es.id, tmp_path / "dpo")
    ds = load_from_disk(out["dataset"])
    assert set(ds.column_names) == {"prompt", "chosen", "rejected"}
    assert len(ds) == 4 == out["pairs"]
    row = ds[0]
    assert row["prompt"][-1]["role"] == "user"
    assert row["chosen"] == [{"role": "assistant", "content": "Call us on 0800 000."}]
    assert row["rejected"][0]["content"].startswith("I am not sure")
    lines = [json.loads(x) for x in open(out["jsonl"], encoding="utf-8")]
    assert lines == ds.to_list()

    csv_text = res_mod.scores_csv(session, users["engineer"], es.id)
    header = csv_text.splitlines()[0].split(",")
    assert {"prompt_id", "reviewer", "system_a", "system_b", "preference", "accuracy_a", "tone_b"} <= set(header)
    assert len(csv_text.strip().splitlines()) == 1 + 8

    report = res_mod.comparison_report(session, users["engineer"], es.id, bootstrap_rounds=20)
    assert report.startswith("# Comparison report")
    assert "Leaderboard" in report and "secret-lora-0" in report and "Krippendorff" in report


@pytest.mark.slow
def test_cli_evalsets_results_and_export(workspace, session, project, users, reviewers, tmp_path):
    from tests.helpers import cli

    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,reference\nWhere is my bill?,In the app.\n", encoding="utf-8")
    made = cli(workspace, "evalsets", "--create", "cli set", "--from-file", str(prompts), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["prompts"] == 1
    denied = cli(workspace, "generate", "--eval-set", "cli set", "--systems", "base", "--user", "reviewer1")
    assert denied.returncode == 1 and "may not run evaluations" in denied.stderr

    es, systems = make_outputs(session, project, users["engineer"], n_prompts=3, runs=1)
    score_all(session, es, reviewers[:2])
    res = cli(workspace, "results", "--eval-set", str(es.id), "--json", "--bootstrap-rounds", "20")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["leaderboard"][0]["system"] == systems[1] and data["n_scores"] == 6
    text = cli(workspace, "results", "--eval-set", str(es.id), "--bootstrap-rounds", "20")
    assert text.stdout.startswith("# Comparison report")
    out = cli(workspace, "export-dpo", "--eval-set", str(es.id), "--out", str(tmp_path / "dpo"), "--scores-csv",
              str(tmp_path / "scores.csv"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pairs"] == 3 and (tmp_path / "scores.csv").exists()
