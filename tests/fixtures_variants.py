"""A project ready for +prompt and +rag systems (issue 24): a small FAQ as its document, a team prompt, top k.
Plain names shared by tests/test_variants*.py (not a pytest plugin: nothing here is a fixture)."""
from __future__ import annotations

FAQ = """# Refunds
Overpayments are refunded within 10 working days to the card you used.

# Outages
Report a power cut by calling 105. Gas emergencies: 0800 111 999, day and night.
"""
TEAM_PROMPT = "You answer for Brightwater Energy. Never guess a phone number."
QUESTION = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "How long does my refund take?"}]


def ready(session, project, users, team_prompt: str = TEAM_PROMPT, top_k: int = 1):
    """``project`` with the FAQ as its document, ``team_prompt`` and ``top_k`` passages per question."""
    from core.curate.documents import add_document
    from core.evaluate.augment import set_team_prompt

    add_document(session, users["engineer"], project, "faq.md", FAQ.encode())
    return set_team_prompt(session, users["engineer"], project, team_prompt=team_prompt, rag_top_k=top_k)
