"""The demo dataset generator: ``python -m tools.demogen`` rewrites core/curate/data/demo_utility.jsonl.

See build.py for how examples are made and checked, engine.py for how one example is written, and intents*.py
for what customers ask. The fact sheet (core/curate/data/demo_fact_sheet.md) is the only source of facts.
"""
