"""Automatic checks: each kind, facts to check, import/export round trip, pass rates with intervals, Results and CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import bootstrap

from core.errors import InvalidInput, PermissionDenied
from core.evaluate import checkstore, evalsets
from core.evaluate.checks import Check, checks_from_row, clean_facts, fact_checks, pass_rates, run_checks
from core.evaluate.results import report_markdown, results
from storage.models import Job, JobStatus, Output

ANSWER = ("Sorry you're without power. 1. Check brightwater-energy.example/powercut for the live map. "
          "2. Not listed? Call 0800 555 0105, free and 24/7.")


# ---------------------------------------------------------------- each kind


@pytest.mark.parametrize("check, passes", [
    ({"kind": "contains", "values": ["0800 555 0105"]}, True),
    ({"kind": "contains", "values": ["0800  555 0105".upper()]}, True),  # spacing and case do not matter
    ({"kind": "contains", "values": ["0800 555 0100", "0800 555 0105"], "match": "any"}, True),
    ({"kind": "contains", "values": ["0800 555 0100", "0800 555 0105"], "match": "all"}, False),
    ({"kind": "contains", "values": ["brightwater-energy.example/power"]}, False),  # whole terms only
    ({"kind": "contains", "values": ["555 01"]}, False),
    ({"kind": "not_contains", "values": ["0800 555 0100", "0800 555 0199"]}, True),
    ({"kind": "not_contains", "values": ["24/7"]}, False),
    ({"kind": "regex", "pattern": r"0800 555 01\d\d"}, True),
    ({"kind": "regex", "pattern": r"^Sorry"}, True),
    ({"kind": "regex", "pattern": r"(?i)^SORRY you"}, True),
    ({"kind": "regex", "pattern": r"^Call"}, False),
    ({"kind": "length", "max": 30}, True),
    ({"kind": "length", "min": 30}, False),
    ({"kind": "length", "min": 10, "max": 200, "unit": "chars"}, True),
    ({"kind": "length", "max": 50, "unit": "chars"}, False),
])
def test_each_kind_of_check(check, passes):
    assert Check.from_dict(check).passes(ANSWER) is passes
    assert run_checks([check], ANSWER) == [passes]


def test_a_fact_is_not_found_inside_a_longer_one():
    check = Check(kind="contains", values=["brightwater-energy.example/moving"])
    assert not check.passes("Register at brightwater-energy.example/moving-in today.")
    assert check.passes("Tell us at brightwater-energy.example/moving.")


@pytest.mark.parametrize("bad, words", [
    ({"kind": "similar", "values": ["a"]}, "Unknown check kind"),
    ({"kind": "contains", "values": []}, "at least one term"),
    ({"kind": "contains", "values": ["a"], "match": "most"}, "match must be"),
    ({"kind": "regex", "pattern": "(unclosed"}, "not a valid regular expression"),
    ({"kind": "length"}, "a minimum, a maximum or both"),
    ({"kind": "length", "min": 50, "max": 10}, "above its maximum"),
    ({"kind": "length", "min": 2.5}, "whole number"),
    ({"kind": "length", "max": 10, "unit": "lines"}, "unit must be"),
    ({"kind": "contains", "values": ["a"], "colour": "red"}, "Unknown check setting"),
    ({"values": ["a"]}, "'kind'"),
])
def test_bad_checks_are_refused_with_a_reason(bad, words):
    with pytest.raises(InvalidInput, match=words):
        Check.from_dict(bad)


def test_stored_form_keeps_only_what_the_kind_uses():
    assert Check(kind="length", max=120, values=["ignored"]).to_dict() == {"kind": "length", "max": 120,
                                                                            "unit": "words", "source": "expert"}
    assert Check(kind="contains", values="a | b", match="all", name="both").to_dict() == {
        "kind": "contains", "values": ["a", "b"], "match": "all", "name": "both", "source": "expert"}


# ---------------------------------------------------------------- facts to check


FACTS = [{"name": "power_cut_line", "keywords": ["0800 555 0105"]},
         {"name": "gas_line", "keywords": ["0800 555 0199"], "when": r"\bgas\b"},
         {"name": "moving_page", "keywords": ["brightwater-energy.example/moving"]}]


def test_facts_make_checks_for_prompts_about_them():
    user = [{"role": "user", "content": "The power is off on our street."}]
    made = fact_checks(FACTS, "Call 0800 555 0105 now.", user)
    assert made == [{"kind": "contains", "values": ["0800 555 0105"], "match": "all", "name": "power_cut_line",
                     "source": "fact"}]
    # "when" matches the question even when the reference does not give the fact.
    assert [c["name"] for c in fact_checks(FACTS, "", [{"role": "user", "content": "I smell GAS"}])] == ["gas_line"]
    # A longer address is not the fact.
    assert fact_checks(FACTS, "See brightwater-energy.example/moving-in.", user) == []


def test_bad_facts_are_refused():
    with pytest.raises(InvalidInput, match="appears twice"):
        clean_facts([FACTS[0], FACTS[0]])
    with pytest.raises(InvalidInput, match="at least one keyword"):
        clean_facts([{"name": "empty", "keywords": []}])
    with pytest.raises(InvalidInput, match="needs a name"):
        clean_facts([{"keywords": ["x"]}])
    with pytest.raises(InvalidInput, match="'when' is not a valid"):
        clean_facts([{"name": "x", "keywords": ["x"], "when": "("}])


def test_fact_checks_on_an_eval_set_keep_the_experts_checks(session, project, users):
    eng = users["engineer"]
    lines = "\n".join(json.dumps(r) for r in [
        {"prompt": "Power cut on my road", "reference": "Call 0800 555 0105.", "max_words": 120},
        {"prompt": "How do I move out?", "reference": "Tell us at brightwater-energy.example/moving."},
        {"prompt": "Hello", "reference": "Hi!"}])
    es = evalsets.create_eval_set_from_file(session, eng, project.id, "facts", lines, "p.jsonl")
    with pytest.raises(InvalidInput, match="no facts to check"):
        checkstore.apply_fact_checks(session, eng, es.id)
    checkstore.set_project_facts(session, eng, project.id, FACTS)
    assert checkstore.apply_fact_checks(session, eng, es.id) == {"prompts": 2, "checks": 2}
    assert checkstore.apply_fact_checks(session, eng, es.id) == {"prompts": 2, "checks": 2}  # replaced, not added
    first, second, third = evalsets.eval_prompts(session, es.id)
    assert [c["kind"] for c in first.checks] == ["length", "contains"]
    assert [c["name"] for c in second.checks] == ["moving_page"] and third.checks == []
    with pytest.raises(PermissionDenied):
        checkstore.set_project_facts(session, users["reviewer"], project.id, FACTS)


def test_an_eval_set_from_a_version_gets_fact_checks(session, project, users):
    from core.curate.datasets import freeze_version
    from storage.models import Example

    for i in range(20):
        answer = "Call 0800 555 0105 now." if i % 2 else "Happy to help."
        session.add(Example(project_id=project.id, status="approved",
                            turns=[{"role": "user", "content": f"question {i}"},
                                   {"role": "assistant", "content": answer}]))
    session.commit()
    checkstore.set_project_facts(session, users["engineer"], project.id, FACTS)
    version = freeze_version(session, users["admin"], project, "v1", fractions={"train": 0.5, "validation": 0,
                                                                                "test": 0.5})
    es = evalsets.create_eval_set_from_version(session, users["engineer"], project.id, version.id, "held-out")
    prompts = evalsets.eval_prompts(session, es.id)
    assert prompts and all(bool(p.checks) == ("0800 555 0105" in p.reference) for p in prompts)
    assert any(p.checks for p in prompts) and not all(p.checks for p in prompts)


# ---------------------------------------------------------------- import and export


def test_checks_from_import_fields():
    row = {"must_contain": "0800 555 0105 | 105", "must_contain_all": ["a", "b"], "must_not_contain": "0800 555 0100",
           "regex": r"^\w", "min_words": "5", "max_words": 120, "max_chars": "800",
           "checks": json.dumps([{"kind": "regex", "pattern": "x", "name": "has x"}])}
    kinds = [(c["kind"], c.get("match"), c.get("unit")) for c in checks_from_row(row, "line 1")]
    assert kinds == [("regex", None, None), ("contains", "any", None), ("contains", "all", None),
                     ("not_contains", None, None), ("regex", None, None), ("length", None, "words"),
                     ("length", None, "chars")]
    with pytest.raises(InvalidInput, match="line 3: check 1: .*not a valid regular expression"):
        checks_from_row({"regex": "("}, "line 3")
    with pytest.raises(InvalidInput, match="line 4: 'checks' is not valid JSON"):
        checks_from_row({"checks": "[{oops"}, "line 4")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_prompts_and_checks_round_trip_through_export_and_import(session, project, users, fmt):
    eng = users["engineer"]
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Power cut?"}],
             "reference": "Call 0800 555 0105.", "must_contain": "0800 555 0105", "max_words": 60},
            {"prompt": "Meter, please, with \"quotes\", commas\nand a new line", "reference": "",
             "checks": [{"kind": "regex", "pattern": r"readings?\b", "name": "says readings"},
                        {"kind": "not_contains", "values": ["0800 555 0199"]}]},
            {"prompt": "No checks here", "reference": "Fine."}]
    es = evalsets.create_eval_set_from_file(session, eng, project.id, "original",
                                            "\n".join(json.dumps(r) for r in rows), "p.jsonl")
    text = checkstore.export_prompts(session, eng, es.id, fmt)
    again = evalsets.create_eval_set_from_file(session, eng, project.id, "again", text.encode(), f"p.{fmt}")
    before = [(p.messages, p.reference, p.checks) for p in evalsets.eval_prompts(session, es.id)]
    after = [(p.messages, p.reference, p.checks) for p in evalsets.eval_prompts(session, again.id)]
    assert after == before
    assert [len(c) for _, _, c in before] == [2, 2, 0]


def test_saving_a_bad_check_keeps_the_old_ones(session, project, users):
    eng = users["engineer"]
    es = evalsets.create_eval_set_from_file(session, eng, project.id, "edit",
                                            json.dumps({"prompt": "Hi", "must_contain": "hello"}), "p.jsonl")
    prompt = evalsets.eval_prompts(session, es.id)[0]
    with pytest.raises(InvalidInput, match="check 2"):
        checkstore.set_prompt_checks(session, eng, prompt.id, [{"kind": "length", "max": 10},
                                                               {"kind": "regex", "pattern": "["}])
    session.refresh(prompt)
    assert prompt.checks == [{"kind": "contains", "values": ["hello"], "match": "any", "source": "expert"}]
    checkstore.set_prompt_checks(session, eng, prompt.id, [{"kind": "length", "max": 10}])
    session.refresh(prompt)
    assert prompt.checks == [{"kind": "length", "max": 10, "unit": "words", "source": "expert"}]
    with pytest.raises(PermissionDenied):
        checkstore.set_prompt_checks(session, users["reviewer"], prompt.id, [])


# ---------------------------------------------------------------- pass rates


def _reference_interval(values):
    data = np.asarray(values, dtype=float)
    ci = bootstrap((data,), np.mean, n_resamples=1000, confidence_level=0.95, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    return data.mean(), ci.low, ci.high


def test_pass_rates_on_a_hand_made_table():
    # System A: prompts 1-4 pass, prompt 5 fails one of its two checks, prompt 6 fails -> 4 of 6 prompts.
    # System B: only prompt 1 passes -> 1 of 6.
    rows = []
    for pid, a_passes in [(1, [True]), (2, [True]), (3, [True]), (4, [True]), (5, [True, False]), (6, [False])]:
        for i, ok in enumerate(a_passes):
            rows.append({"system": "A", "prompt_id": pid, "check": f"fact{i}", "passed": ok})
            rows.append({"system": "B", "prompt_id": pid, "check": f"fact{i}", "passed": pid == 1})
    out = pass_rates(rows)
    a, b = sorted(out["by_system"], key=lambda r: r["system"])
    assert (a["passed"], a["prompts"], a["checks_passed"], a["checks"]) == (4, 6, 5, 7)
    assert (b["passed"], b["prompts"], b["checks_passed"], b["checks"]) == (1, 6, 1, 7)
    for row, values in ((a, [1, 1, 1, 1, 0, 0]), (b, [1, 0, 0, 0, 0, 0])):
        mean, lo, hi = _reference_interval(values)
        assert row["pass_rate"] == pytest.approx(mean) and row["lo"] == pytest.approx(lo)
        assert row["hi"] == pytest.approx(hi) and lo < mean < hi
    fact1 = [r for r in out["by_check"] if r["check"] == "fact1"]
    assert [(r["system"], r["passed"], r["prompts"], r["pass_rate"]) for r in fact1] == [("A", 0, 1, 0.0),
                                                                                        ("B", 0, 1, 0.0)]
    fact0_a = next(r for r in out["by_check"] if r["check"] == "fact0" and r["system"] == "A")
    assert (fact0_a["passed"], fact0_a["prompts"]) == (5, 6)
    assert pass_rates([]) == {"by_system": [], "by_check": []}


def _outputs(session, project, eng, texts: dict[str, list[str]]):
    lines = "\n".join(json.dumps({"prompt": f"question {i}", "reference": "Call 0800 555 0105.",
                                  "must_contain": "0800 555 0105"}) for i in range(4))
    es = evalsets.create_eval_set_from_file(session, eng, project.id, "scored", lines, "p.jsonl")
    run = Job(project_id=project.id, kind="train", name="lora-run", status=JobStatus.succeeded.value,
              run_dir="/nonexistent", created_by=eng.id)
    session.add(run)
    session.commit()
    for prompt in evalsets.eval_prompts(session, es.id):
        for system, answers in texts.items():
            session.add(Output(prompt_id=prompt.id, system=system.replace("RUN", str(run.id)),
                               text=answers[prompt.position], decoding={"mode": "greedy"}))
    session.commit()
    return es, run


def test_results_show_pass_rates_and_the_failing_answers(session, project, users):
    eng = users["engineer"]
    es, run = _outputs(session, project, eng, {"base": ["I don't know."] * 4,
                                               "run:RUN": ["Call 0800 555 0105."] * 3 + ["Call 0800 555 0100."]})
    res = results(session, eng, es.id, bootstrap_rounds=10)
    by_system = {r["system"]: r for r in res["checks"]["by_system"]}
    assert (by_system["base"]["passed"], by_system[f"run:{run.id}"]["passed"]) == (0, 3)
    assert by_system[f"run:{run.id}"]["label"] != f"run:{run.id}" and res["checks"]["checked_prompts"] == 4
    failing = [(f["system"], f["position"], f["answer"]) for f in res["checks"]["failures"]]
    assert failing == [("base", i, "I don't know.") for i in range(4)] + [(f"run:{run.id}", 3,
                                                                             "Call 0800 555 0100.")]
    assert "Automatic checks" in report_markdown(res) and "3/4 = 0.75" in report_markdown(res)


@pytest.mark.slow
def test_cli_results_json_includes_the_checks(workspace, session, project, users):
    from tests.helpers import cli

    es, run = _outputs(session, project, users["engineer"], {"base": ["Call 0800 555 0105."] * 4})
    out = cli(workspace, "results", "--eval-set", str(es.id), "--json", "--bootstrap-rounds", "10")
    assert out.returncode == 0, out.stderr
    checks = json.loads(out.stdout)["checks"]
    assert checks["by_system"][0]["pass_rate"] == 1.0 and checks["failures"] == []
