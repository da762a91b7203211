"""Results, Datasets and Import pages say what the data says: a complete win/tie/loss legend in a fixed order,
numeric histogram bins, per-version stats, an import report coloured by its outcome with who imported,
download buttons that match the selection and stay after a download."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage.models import Example
from tests.helpers import make_outputs, score_all

ROOT = Path(__file__).resolve().parents[1]


def _page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _encodings(spec: dict) -> list[dict]:
    layers = spec.get("layer") or [spec]
    return [layer.get("encoding", {}) for layer in layers]


@pytest.fixture
def scored(session, project, users, reviewers):  # noqa: F811
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1)
    score_all(session, es, reviewers[:2])
    return es


def test_win_tie_loss_legend_lists_four_outcomes_in_a_fixed_order_and_full_pair_labels(session, users, scored):
    at = _page("results.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    wtl = next(enc for spec in _specs(at) for enc in _encodings(spec) if enc.get("x", {}).get("stack") == "normalize")
    assert wtl["color"]["scale"]["domain"] == ["first wins", "tie", "both bad", "second wins"]
    assert wtl["color"]["legend"]["labelLimit"] == 0 and wtl["color"]["legend"]["orient"] == "bottom"
    assert wtl["order"]["field"] == "order"  # stacked in outcome order, not alphabetically
    assert wtl["y"]["axis"]["labelLimit"] == 0  # "run 1: secret-lora-0 vs base model" is not cut short


def test_results_charts_have_no_fixed_width_facets(session, users, scored):
    at = _page("results.py", users["engineer"]).run()
    specs = _specs(at)
    assert len(specs) >= 4 and not any("facet" in spec for spec in specs)  # facets have a fixed width per column


def test_dpo_download_stays_after_a_download(session, users, scored):
    at = _page("results.py", users["engineer"]).run()
    next(b for b in at.button if b.label == "Export DPO pairs").click().run()
    assert "Download dpo.jsonl" in [d.proto.label for d in at.get("download_button")]
    at.run()  # a click on a download button reruns the page
    assert "Download dpo.jsonl" in [d.proto.label for d in at.get("download_button")]


def _examples(session, project, user, n: int, tag: str, status: str = "approved") -> list[Example]:
    rows = [Example(project_id=project.id, status=status, tags=[tag], updated_by=user.id, token_count=tokens,
                    turns=[{"role": "user", "content": f"{tag} q{i}"}, {"role": "assistant", "content": "a"}])
            for i, tokens in zip(range(n), (9, 81, 288, 12, 150, 33, 70, 5))]
    session.add_all(rows)
    session.commit()
    return rows


def _select(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label == label)


def test_datasets_stats_of_a_version_cover_that_version_only(session, project, users):
    from core.curate.datasets import freeze_version

    _examples(session, project, users["annotator"], 4, "billing")
    version = freeze_version(session, users["admin"], project, "v1")
    _examples(session, project, users["engineer"], 3, "outage", status="draft")
    at = _page("dataset_versions.py", users["engineer"]).run()
    _select(at, "For").set_value(version.id).run()
    assert not at.exception, [e.value for e in at.exception]
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    values = [c.get("datasets") or {} for c in charts]
    shown = [json.dumps(v) for v in values] + [c.proto.datasets.__str__() for c in at.get("vega_lite_chart")]
    text = "\n".join(shown)
    assert "billing" in text and "outage" not in text and "engineer1" not in text and "draft" not in text


def test_token_length_histogram_bins_are_numeric(session, project, users):
    _examples(session, project, users["annotator"], 8, "billing")
    at = _page("dataset_versions.py", users["engineer"]).run()
    hist = [enc for c in at.get("vega_lite_chart") for enc in _encodings(json.loads(c.proto.spec))
            if enc.get("x", {}).get("title") == "tokens"]
    assert hist and hist[0]["x"]["type"] == "quantitative" and hist[0]["x"]["bin"] == "binned"  # by value, not text

    from core.curate.datasets import token_histogram

    bins = token_histogram([9, 81, 288, 12, 150, 33, 70, 5], max_bins=6)
    assert [b["start"] for b in bins] == sorted(b["start"] for b in bins)
    assert sum(b["examples"] for b in bins) == 8


def test_stale_export_download_disappears_when_the_format_changes(session, project, users):
    _examples(session, project, users["annotator"], 3, "billing")
    at = _page("dataset_versions.py", users["engineer"]).run()
    _select(at, "What").set_value(("status", "approved")).run()
    next(b for b in at.button if b.label == "Prepare export").click().run()
    assert len(at.get("download_button")) == 1
    _select(at, "Format").set_value("csv").run()
    assert not at.get("download_button")
    assert any("prepare the export again" in c.value for c in at.caption)


def _import(at: AppTest, path: Path) -> AppTest:
    at.radio[0].set_value("A path on the server (big files, dataset folders)").run()
    at.text_input[0].input(str(path)).run()
    return next(b for b in at.button if b.label == "Import").click().run()


def test_import_report_is_not_green_when_records_were_rejected_or_nothing_came_in(session, project, users,
                                                                                    workspace):
    tmp_path = workspace / "imports"  # import by path: engineers+, inside the import roots
    good = {"instruction": "How do I read my meter?", "output": "Press A."}
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(good) + "\n" + json.dumps({"instruction": "broken", "output": ""}) + "\n")
    at = _import(_page("import_data.py", users["engineer"]).run(), mixed)
    assert not at.success and any("1 rejected" in w.value for w in at.warning)

    at = _import(_page("import_data.py", users["engineer"]).run(), mixed)  # again: all duplicates or rejected
    assert not at.success and any("Imported 0 of 2" in e.value for e in at.error)

    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps({"instruction": "Can I pay monthly?", "output": "Yes."}) + "\n")
    at = _import(_page("import_data.py", users["engineer"]).run(), clean)
    assert any("Imported 1 of 1" in s.value for s in at.success) and not at.warning

    history = at.dataframe[-1].value
    assert list(history["who"]) == ["engineer1"] * 3 and list(history["file"]) == ["clean.jsonl", "mixed.jsonl",
                                                                                   "mixed.jsonl"]
