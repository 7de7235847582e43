"""How long make_plan takes: 10,000 desired invoices against a state holding 5,000 of them, unchanged.

Run: ``python benchmarks/bench_make_plan.py [--desired N] [--applied M] [--changed K] [--refreshed]``.
Prints the best of a few runs; 5,000 unchanged invoices should cost almost nothing (digest compare
only), so the run is dominated by the creates. ``--changed`` edits K of the applied invoices (each
costs a field diff); ``--refreshed`` passes a remote copy of every applied invoice (drift check).
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invoicesync.errors import SourceLocation  # noqa: E402
from invoicesync.models import (  # noqa: E402
    DesiredInvoice,
    InvoiceBody,
    body_digest,
    dumps_json,
    loads_json,
    to_wire,
    with_source,
)
from invoicesync.plan import counts, make_plan  # noqa: E402
from invoicesync.state import InvoiceRecord, State  # noqa: E402

LINEAGE = "0f1c2d3e-0000-4000-8000-00000000b0b0"


def desired(i: int, rate: str = "50") -> DesiredInvoice:
    body = InvoiceBody.model_validate(
        {
            "entity": 54,
            "client": 33973 + i % 50,
            "invoice_date": "2025-07-01",
            "due_date": "2025-07-31",
            "invoice_number": f"INV-{i:06d}",
            "currency": "USD",
            "terms": "net_30",
            "lines": [
                {"product": 2545, "description": f"Subscription {i}", "quantity": "1", "rate": rate, "amount": rate, "tax": "5"},
                {"product": 2546, "description": "Support hours", "quantity": "3", "rate": "0.1", "amount": "0.3"},
            ],
        }
    )
    wire = to_wire(body)
    return DesiredInvoice(f"inv-{i:06d}", body, wire, body_digest(wire), SourceLocation("specs/bench.yaml", i + 1))


def build(n_desired: int, n_applied: int, n_changed: int) -> tuple[list[DesiredInvoice], State]:
    specs = [desired(i) for i in range(n_desired)]
    state = State(lineage=LINEAGE, environment="bench")
    for spec in specs[:n_applied]:
        body = loads_json(dumps_json(with_source(spec.wire, LINEAGE, spec.address)))
        state.invoices[spec.address] = InvoiceRecord(
            id=100000 + len(state.invoices),
            digest=body_digest(body),
            body=body,
            created_at="2025-07-25T18:54:43+00:00",
            updated_at="2025-07-25T18:54:43+00:00",
        )
    for i in range(n_changed):
        specs[i] = desired(i, rate="60")
    return specs, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--desired", type=int, default=10_000)
    parser.add_argument("--applied", type=int, default=5_000)
    parser.add_argument("--changed", type=int, default=0)
    parser.add_argument("--refreshed", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    specs, state = build(args.desired, args.applied, args.changed)
    live: dict[str, Any] | None = None
    if args.refreshed:
        live = {}
        for address, record in state.invoices.items():
            invoice = loads_json(dumps_json(record.body))
            invoice.update(id=record.id, status="open", total_amount=Decimal("55.30"), amount_paid=Decimal(0))
            live[address] = invoice

    best = float("inf")
    plan = None
    for _ in range(args.repeat):
        start = time.perf_counter()
        plan = make_plan(specs, state, live, refreshed=args.refreshed)
        best = min(best, time.perf_counter() - start)
    assert plan is not None
    summary = ", ".join(f"{k} {v}" for k, v in counts(plan).items())
    print(
        f"make_plan: {args.desired} desired, {args.applied} in state, {args.changed} changed,"
        f" refreshed={args.refreshed}: best of {args.repeat} = {best * 1000:.0f} ms ({summary})"
    )


if __name__ == "__main__":
    main()
