"""Spec texts the end-to-end modules share: one small invoice, a second one, and a load of many."""

from __future__ import annotations

#: One invoice, ``inv-a`` (number A-1); ``{extra}`` takes more YAML after it (a lifecycle, a second invoice).
ONE = """\
invoices:
  inv-a:
    entity: 54
    client: 33973
    invoice_date: 2025-07-01
    terms: net_30
    invoice_number: A-1
    lines:
      - {product: 2545, description: Seat, quantity: 1, rate: 40}
{extra}"""

#: A second invoice, ``inv-b`` (number B-1), to put after ``ONE``.
SECOND = """\
  inv-b:
    entity: 54
    client: 33974
    invoice_date: 2025-07-01
    terms: net_30
    invoice_number: B-1
    lines:
      - {product: 2546, description: Support, quantity: 1, rate: 25}
"""


def load(n: int, *, month: int = 9, number_prefix: str | None = None) -> str:
    """``n`` invoices ``inv-000``... of entity 54 and client 33974, dated in ``month`` of 2025.

    With ``number_prefix``, each carries an invoice number (``PREFIX-000``...); without, Campfire assigns them.
    """
    lines = ["defaults:", "  entity: 54", "  client: 33974", "  terms: net_15", "invoices:"]
    for i in range(n):
        lines += [f"  inv-{i:03d}:", f"    invoice_date: 2025-{month:02d}-{1 + i % 28:02d}"]
        if number_prefix:
            lines.append(f"    invoice_number: {number_prefix}-{i:03d}")
        lines += [
            "    lines:",
            "      - product: 2546",
            f"        description: Support, seat {i}",
            f"        quantity: {1 + i % 4}",
            "        rate: 12.5",
        ]
    return "\n".join(lines) + "\n"


#: One invoice in a file with defaults. Tests that check line numbers refer to this text; keep them in step.
ACME = """\
defaults:
  entity: 54
  client: 33973
  currency: USD
  terms: net_30
invoices:
  acme-2025-07:
    invoice_date: 2025-07-01
    invoice_number: ACME-2025-07
    lines:
      - product: 2545
        description: Platform subscription
        quantity: 1
        rate: 50
"""
