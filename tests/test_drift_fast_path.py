"""drift_of's quick check agrees with the full comparison: it may only ever say "unchanged" where the full one does."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from invoicesync.plan import diff

APPLIED: dict[str, Any] = {
    "entity": 54, "client": 33973, "invoice_date": "2025-07-01", "due_date": "2025-07-31", "terms": "net_30",
    "tags": [3, 4], "auto_send_invoice": True,
    "lines": [{"product": 2545, "description": "Platform", "quantity": Decimal(1), "rate": Decimal(50), "tax": Decimal(5)},
              {"product": 2546, "description": "Support", "quantity": Decimal(2), "rate": Decimal("12.5")}],
}

LIVE_VARIANTS: list[tuple[str, Any]] = [
    ("as applied", None),
    ("money with trailing zeros", ("lines", 0, "rate", Decimal("50.00"))),
    ("money as a string", ("lines", 0, "rate", "50.00")),
    ("rate changed", ("lines", 1, "rate", Decimal("13"))),
    ("due date changed", ("due_date", None, None, "2025-08-15")),
    ("client as a string id", ("client", None, None, "33973")),
    ("bool as 1", ("auto_send_invoice", None, None, 1)),
    ("tags reordered", ("tags", None, None, [4, 3])),
    ("a line more", ("lines", None, None, "add")),
    ("a line less", ("lines", None, None, "drop")),
    ("server fields added", ("lines", 0, "id", 991)),
    ("description null", ("lines", 1, "description", None)),
]


def live_of(change: Any) -> dict[str, Any]:
    live: dict[str, Any] = {**APPLIED, "lines": [dict(line) for line in APPLIED["lines"]], "id": 7,
                            "total_amount": Decimal("80"), "status": "open"}
    if change is None:
        return live
    key, index, field, value = change
    if key == "lines" and value == "add":
        live["lines"].append({"product": 1, "rate": Decimal(1)})
    elif key == "lines" and value == "drop":
        live["lines"].pop()
    elif index is not None:
        live[key][index][field] = value
    else:
        live[key] = value
    return live


@pytest.mark.parametrize(("name", "change"), LIVE_VARIANTS, ids=[n for n, _ in LIVE_VARIANTS])
def test_the_quick_check_never_hides_drift_the_full_comparison_sees(
    name: str, change: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = live_of(change)
    quick, _ = diff.drift_of(APPLIED, live)
    monkeypatch.setattr(diff, "_unchanged", lambda *a: False)
    full, _ = diff.drift_of(APPLIED, live)
    assert quick == full
    if name in ("as applied", "money with trailing zeros", "server fields added"):
        assert full == {}


def test_combined_changes_agree_too(monkeypatch: pytest.MonkeyPatch) -> None:
    for a, b in itertools.combinations([c for _, c in LIVE_VARIANTS if c is not None and c[3] not in ("add", "drop")], 2):
        live = live_of(a)
        key, index, field, value = b
        if index is not None:
            live[key][index][field] = value
        else:
            live[key] = value
        quick, _ = diff.drift_of(APPLIED, live)
        with monkeypatch.context() as m:
            m.setattr(diff, "_unchanged", lambda *args: False)
            full, _ = diff.drift_of(APPLIED, live)
        assert quick == full, (a, b)
