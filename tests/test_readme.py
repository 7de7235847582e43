"""The README stays true: its quick start, and the JSON plan keys it documents."""

from __future__ import annotations

import re
from pathlib import Path

from invoicesync.plan import make_plan, plan_to_dict
from tests.invoices import desired, new_state

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _json_section() -> str:
    start = README.index("## The JSON plan")
    return README[start : README.index("\n## ", start + 1)]


def test_readme_quick_start_is_exactly_the_demo_and_the_test_command() -> None:
    quick = README[README.index("## Quick start") : README.index("\n## ", README.index("## Quick start") + 1)]
    commands = [ln.strip() for block in re.findall(r"```[a-z]*\n(.*?)```", quick, re.S) for ln in block.splitlines() if ln.strip()]
    assert commands == ["make demo", "make test"]


def test_readme_documents_every_key_of_the_json_plan() -> None:
    state = new_state((desired("acme-2025-06", due_date="2025-07-30"), 145054))
    doc = plan_to_dict(make_plan([desired("acme-2025-06"), desired("acme-2025-07")], state, refreshed=True))
    section = _json_section()
    keys = set(doc) | set(doc["summary"]) | {k for t in doc["totals"] for k in t} | {k for m in doc["managed"] for k in m}
    for change in doc["changes"]:
        keys |= set(change)
        for f in change["field_changes"]:
            keys |= set(f)
    missing = sorted(k for k in keys if f"`{k}`" not in section)
    assert missing == []
