"""Where a sent-back draft came from, in words: every stored origin key has its words, prompts count from 1."""
from core.curate.origins import START_WORDS, caught_words, describe
from core.evaluate.failures import RULES
from core.evaluate.review import SEND_BACK_STARTS


def test_every_start_and_rule_key_has_words():
    assert set(SEND_BACK_STARTS) | {"base", "run"} <= set(START_WORDS)
    assert all(caught_words(rule) != rule for rule in RULES)
    assert caught_words("low_score: helpfulness 2 <= 2.5") == "mean helpfulness score 2, at or below 2.5"


def test_a_send_back_from_compare_in_words():
    line = describe("review_feedback", {"eval_set": "billing", "eval_set_id": 3, "prompt_id": 41, "position": 4,
                                        "reviewer": "rita", "start": "empty", "comment": "too vague"}, blind=True)
    assert line == ("Sent back from a blind review on the Compare page: eval set billing, prompt 5, by reviewer "
                    "rita; the draft started from an empty answer (write it).")
    assert describe("manual", {}, blind=True) == ""
