"""Results reads as a person expects: human column headers, "—" for a missing value instead of "None", prompts
numbered from 1 as on Generate, chart rows tall enough for their labels, and each axis under one title (Vega-Lite
joins the titles of layered fields: "pass rate, lo")."""
from __future__ import annotations

import json

from core.evaluate import evalsets
from core.evaluate.results import results, score_table
from tests.helpers import make_outputs, page, score_all


def _failing_setup(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=3, runs=1)
    for p in evalsets.eval_prompts(session, es.id):  # the base model's "I am not sure" fails it
        p.checks = [{"kind": "contains", "values": ["0800"], "match": "any"}]
        session.add(p)
    session.commit()
    score_all(session, es, reviewers[:2])
    return es


def _titles(spec: dict, channel: str) -> set[str]:
    """The axis titles a layered chart's layers give one channel (Vega-Lite shows them joined by commas)."""
    out = set()
    for layer in spec.get("layer", [spec]):
        enc = {**spec.get("encoding", {}), **layer.get("encoding", {})}
        if channel in enc and enc[channel].get("type") == "quantitative":
            out.add(enc[channel].get("title", enc[channel].get("field")))
    return out


def test_prompts_are_numbered_from_one(session, project, users, reviewers):
    es = _failing_setup(session, project, users, reviewers)
    failures = results(session, users["engineer"], es.id, bootstrap_rounds=10)["checks"]["failures"]
    positions = {p.id: p.position for p in evalsets.eval_prompts(session, es.id)}
    assert sorted(f["prompt_number"] for f in failures) == [1, 2, 3]
    assert all(f["prompt_number"] == positions[f["prompt_id"]] + 1 for f in failures)
    rows = score_table(session, users["engineer"], es.id)
    assert all(r["prompt_number"] == positions[r["prompt_id"]] + 1 for r in rows)
    assert "prompt_position" not in rows[0]


def test_results_tables_and_charts_read_as_a_person_expects(session, project, users, reviewers):
    _failing_setup(session, project, users, reviewers)
    at = page("results.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    frames = [(d.value, d.proto) for d in at.dataframe]
    assert len(frames) >= 6
    for frame, proto in frames:
        snake = [c for c in frame.columns if "_" in str(c)]
        assert not snake, f"snake_case headers {snake} in {list(frame.columns)}"
        assert proto.placeholder == "—", f"missing values would show as None in {list(frame.columns)}"
    failing = next(f for f, _ in frames if "answer" in f.columns)
    assert sorted(failing["prompt #"]) == [1, 2, 3]

    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) >= 4
    for spec in specs:
        for channel in ("x", "y"):
            assert len(_titles(spec, channel)) <= 1, f"{channel} axis titled {sorted(_titles(spec, channel))}"
        y = {**spec.get("encoding", {}), **spec.get("layer", [{}])[0].get("encoding", {})}.get("y", {})
        if y.get("type") == "nominal":  # one row per system or pair: each row tall enough for its label
            assert spec.get("height", {}).get("step", 0) >= 30, spec.get("height")
