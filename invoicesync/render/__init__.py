"""Rendering: plans, apply results and the state's contents as terminal text, markdown or JSON.

    plan.py      how a reviewer reads a plan (text, pull-request markdown, JSON) and money as text
    results.py   apply's outcomes and summary, ``show``'s table and JSON

Decides nothing: every decision is already in the ``Plan``/``ApplyResult``/``State`` it is given.
Returns strings; printing them is the CLI's job. Colour comes from rich, written to a ``StringIO``;
with ``color=False`` the text holds no escape codes.
"""

from __future__ import annotations

from invoicesync.render.plan import PlanFormat, ResultFormat, render_money, render_plan
from invoicesync.render.results import render_apply_result, render_outcome, render_show

__all__ = [
    "PlanFormat",
    "ResultFormat",
    "render_apply_result",
    "render_money",
    "render_outcome",
    "render_plan",
    "render_show",
]
