"""Judges in the database: the registry (admins; the key's variable name only), "check" against a dead endpoint,
the judge's own figures from stored verdicts (both-orders rule, position bias, unparseable answers counted), its
agreement with the reviewers equal to scikit-learn and scipy on the same items, the trust bar, and failure routing
that takes a trusted judge and refuses an untrusted one."""
from __future__ import annotations

import json
import math

import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score
from sqlmodel import select

from core.errors import Conflict, InvalidInput, PermissionDenied
from core.evaluate.failures import send_failures
from core.evaluate.judges import JudgeError, add_judge, check_judge, list_judges, remove_judge, set_trust_bar
from core.evaluate.judgeresults import NOT_TRUSTED, judge_results
from core.evaluate.judging import launch_judging
from core.evaluate.review import scores_of
from storage.models import Example
from tests.fixtures_judges import add_test_judge as _judge
from tests.helpers import cli, make_outputs


def test_only_admins_register_judges_and_the_key_is_never_stored(session, users, monkeypatch):
    with pytest.raises(PermissionDenied):
        add_judge(session, users["engineer"], "j", "http://127.0.0.1:9/v1")
    with pytest.raises(InvalidInput, match="NAME of the environment variable"):
        add_judge(session, users["admin"], "j", "http://127.0.0.1:9/v1", "m", "sk-secret key")
    with pytest.raises(InvalidInput, match="http://"):
        add_judge(session, users["admin"], "j", "127.0.0.1:9")
    judge = _judge(session, users)
    assert (judge.min_kappa, judge.min_items, judge.api_key_env) == (0.6, 30, "JUDGE_KEY_T")
    with pytest.raises(Conflict):
        _judge(session, users)
    assert [j.name for j in list_judges(session, users["engineer"])] == ["local judge"]
    # The check says what is wrong: first the missing key, then the endpoint that does not answer.
    monkeypatch.delenv("JUDGE_KEY_T", raising=False)
    with pytest.raises(JudgeError, match="JUDGE_KEY_T .* is not set"):
        check_judge(session, users["engineer"], judge.id)
    monkeypatch.setenv("JUDGE_KEY_T", "sk-test")
    with pytest.raises(JudgeError, match="did not answer"):
        check_judge(session, users["engineer"], "local judge")
    with pytest.raises(InvalidInput, match="between -1 and 1"):
        set_trust_bar(session, users["admin"], judge.id, min_kappa=2, min_items=5)
    assert remove_judge(session, users["admin"], "local judge") == {"removed": "local judge", "verdicts_removed": 0}


def test_the_judges_figures_follow_the_both_orders_rule(session, users, judged):
    es, judge, base, run, _ = judged
    res = judge_results(session, users["engineer"], es.id, judge.id, rounds=50)
    c = res["counts"]
    assert (c["pairwise_items"], c["items_with_verdict"], c["flipped"]) == (6, 5, 1)
    assert c["position_bias"] == pytest.approx(1 / 5) and c["favoured_first_shown"] == 1
    assert (c["unparseable_pairwise"], c["unparseable_rubric"], c["unparseable"]) == (1, 1, 2)
    assert len(res["unparseable"]) == 2
    wtl = res["win_tie_loss"][0]
    assert (wtl["a_wins"], wtl["b_wins"], wtl["ties"]) == (0, 4, 1)  # base | run: run wins 4, the flip is a tie
    assert [r["system"] for r in res["leaderboard"]] == [run, base]
    assert {(m["system"], m["criterion"], m["n"]) for m in res["means"]} == {(base, "accuracy", 5),
                                                                             (run, "accuracy", 6)}


def test_agreement_with_reviewers_equals_scikit_learn_and_scipy(session, users, judged):
    es, judge, base, run, prompt_ids = judged
    res = judge_results(session, users["engineer"], es.id, judge.id, rounds=50)
    # The reviewers' side, rebuilt here from the score rows: majority winner per prompt, mean accuracy per answer.
    votes, acc = {}, {}
    for s in scores_of(session, es.id):
        winner = {"A": s.system_a, "B": s.system_b}.get(s.preference, "tie")
        votes.setdefault(s.prompt_id, []).append(winner)
        for side, system in (("A", s.system_a), ("B", s.system_b)):
            acc.setdefault((s.prompt_id, system), []).append(s.scores["accuracy"][side])
    majority = {}
    for pid, vs in votes.items():
        ranked = sorted({v: vs.count(v) for v in vs}.items(), key=lambda kv: -kv[1])
        majority[pid] = "tie" if len(ranked) > 1 and ranked[0][1] == ranked[1][1] else ranked[0][0]
    judge_winner = {pid: run if i < 4 else "tie" for i, pid in enumerate(prompt_ids) if i < 5}
    keys = sorted(judge_winner)
    pref = next(r for r in res["agreement"] if r["criterion"] == "preference")
    human, judged_ = [majority[k] for k in keys], [judge_winner[k] for k in keys]
    assert pref["n"] == 5
    expected_kappa = cohen_kappa_score(human, judged_)
    assert (pref["kappa"]["value"] is None and math.isnan(expected_kappa)) or \
        pref["kappa"]["value"] == pytest.approx(expected_kappa, abs=1e-12)
    assert pref["percent"]["value"] == pytest.approx(sum(h == j for h, j in zip(human, judged_)) / 5)

    grades = {(pid, system): grade for i, pid in enumerate(prompt_ids)
              for system, grade in ((base, 1 + i % 3), (run, 5 - i % 2)) if (i, system) != (5, base)}
    keys = sorted(grades)
    means = [sum(acc[k]) / len(acc[k]) for k in keys]
    row = next(r for r in res["agreement"] if r["criterion"] == "accuracy")
    assert row["n"] == 11
    assert row["kappa"]["value"] == pytest.approx(
        cohen_kappa_score([math.floor(m + 0.5) for m in means], [grades[k] for k in keys]), abs=1e-12)
    assert row["spearman"]["value"] == pytest.approx(spearmanr(means, [grades[k] for k in keys]).statistic,
                                                     abs=1e-12)
    assert row["kappa"]["lo"] <= row["kappa"]["value"] <= row["kappa"]["hi"]
    assert res["disagreements"] and {"prompt", "reviewers", "judge", "judge_answer"} <= set(res["disagreements"][0])
    assert res["trust"]["label"] == NOT_TRUSTED and "kappa below the bar" in res["trust"]["reason"]


def test_failures_go_by_a_trusted_judge_only(session, users, judged):
    es, judge, base, run, prompt_ids = judged
    with pytest.raises(InvalidInput, match="not yet trusted"):
        send_failures(session, users["engineer"], es.id, run, rule="low_score", criterion="accuracy", threshold=4,
                      judge_id=judge.id)
    set_trust_bar(session, users["admin"], judge.id, min_kappa=-1, min_items=4)  # the admin lowers the bar
    out = send_failures(session, users["engineer"], es.id, run, rule="low_score", criterion="accuracy",
                        threshold=4, judge_id=judge.id)
    # The run's judged accuracy is 5 on even prompts and 4 on odd ones: three prompts at or below 4.
    assert out["caught"] == out["sent"] == 3
    origins = [e.origin for e in session.exec(select(Example).where(Example.id.in_(out["example_ids"])))]
    assert all(o["judge"] == "local judge" and "judge local judge graded accuracy 4" in o["caught"][0]
               for o in origins)
    again = send_failures(session, users["engineer"], es.id, run, rule="low_score", criterion="accuracy",
                          threshold=4, judge_id=judge.id)
    assert (again["sent"], again["already_sent"]) == (0, 3)


def test_a_judge_job_needs_something_to_judge(session, users, project):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=2, runs=1)
    judge = _judge(session, users)
    with pytest.raises(InvalidInput, match="Not a criterion"):
        launch_judging(session, users["engineer"], es.id, judge.id, criteria=["speed"])
    with pytest.raises(InvalidInput, match="No outputs of run:999"):
        launch_judging(session, users["engineer"], es.id, judge.id, systems=["base", "run:999"])
    with pytest.raises(InvalidInput, match="Nothing to judge"):
        launch_judging(session, users["engineer"], es.id, judge.id, modes=["pairwise"], systems=["base"])
    with pytest.raises(PermissionDenied):
        launch_judging(session, users["reviewer"], es.id, judge.id)


@pytest.mark.slow
def test_the_command_line_registers_checks_and_removes_judges(workspace, users):
    added = cli(workspace, "judges", "add", "cli judge", "http://127.0.0.1:9/v1", "--model", "m",
                "--api-key-env", "CLI_JUDGE_KEY", "--min-items", "10", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["api_key_env"] == "CLI_JUDGE_KEY"
    listed = json.loads(cli(workspace, "judges", "list", "--json").stdout)
    assert [(j["name"], j["min_items"], j["verdicts"]) for j in listed] == [("cli judge", 10, 0)]
    checked = cli(workspace, "judges", "check", "cli judge", env={"CLI_JUDGE_KEY": "sk-x"})
    assert checked.returncode == 1 and "did not answer" in checked.stderr
    refused = cli(workspace, "judges", "add", "x", "http://h/v1", "--user", users["engineer"].username)
    assert refused.returncode == 1 and "manage projects" in refused.stderr
    assert cli(workspace, "judges", "remove", "cli judge").returncode == 0
    assert json.loads(cli(workspace, "judges", "list", "--json").stdout) == []
