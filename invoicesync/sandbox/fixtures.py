"""The sandbox's fixtures: the Campfire objects an invoice refers to but the sandbox never creates.

Owns the fixture file format and its loading. A fixture file is JSON::

    {
      "customer": 1,                                   # the Campfire tenant id on payments
      "entities":  [{"id": 54, "name": "Top Level", "currency": "USD", "invoice_message": "..."}],
      "clients":   [{"id": 33973, "name": "Client A", "email": null, "invoice_message": null,
                     "use_stripe_auto_bill": false}],
      "products":  [{"id": 2545, "name": "Product A", "is_taxable": false}],
      "contracts": [{"id": 12954, "name": "Campfire", "client": 33973}],
      "accounts":  [{"id": 2553, "name": "1100 - Accounts Receivable"}],
      "departments": [...], "tags": [...], "tax_rates": [...], ...   # optional, {"id", "name"}
    }

Every list is optional except that an id must be an integer. Any other relational id an invoice
may carry (a department, a Stripe connection, ...) must be listed under the kind named in
``RELATED_KINDS`` or the sandbox answers ``Invalid pk "N" - object does not exist.``, as Campfire
does for an id that is not in the tenant. The built-in set (``default_fixtures.json``) holds the
seed page's objects plus a few more for demos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from invoicesync.errors import InvoiceSyncError
from invoicesync.models import loads_json

#: Invoice (and line) id fields -> the fixture list their ids must be found in.
RELATED_KINDS: dict[str, str] = {
    "entity": "entities",
    "client": "clients",
    "contract": "contracts",
    "product": "products",
    "product_bundle": "product_bundles",
    "department": "departments",
    "tags": "tags",
    "revenue_transactions": "revenue_transactions",
    "migrated_journal_id": "journal_entries",
    "bad_debt_journal_entry": "journal_entries",
    "entity_transfer_journal_entry": "journal_entries",
    "avalara_connection": "avalara_connections",
    "sphere_connection": "sphere_connections",
    "anrok_connection": "anrok_connections",
    "tax_rate": "tax_rates",
    "stripe_connection": "stripe_connections",
    "source_file": "files",
}


class FixtureError(InvoiceSyncError):
    """The fixture file cannot be read or is not in the expected shape."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Fixtures:
    """The objects the sandbox knows, by kind and id (``objects["clients"][33973]``)."""

    objects: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    customer: int = 1

    def get(self, kind: str, pk: int) -> dict[str, Any] | None:
        """The fixture object of ``kind`` with id ``pk``, or None."""
        return self.objects.get(kind, {}).get(pk)

    def exists(self, kind: str, pk: int) -> bool:
        """Whether ``kind`` has an object with id ``pk``."""
        return pk in self.objects.get(kind, {})


def default_fixtures_text() -> str:
    """The built-in fixture file's JSON text."""
    return resources.files(__package__).joinpath("default_fixtures.json").read_text(encoding="utf-8")


def load_fixtures(path: Path | None = None) -> Fixtures:
    """Read a fixture file, or the built-in set when ``path`` is None."""
    if path is None:
        return parse_fixtures(default_fixtures_text(), "default_fixtures.json")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FixtureError(str(path), f"cannot read fixture file: {exc.strerror or exc}") from exc
    return parse_fixtures(text, str(path))


def parse_fixtures(text: str, where: str) -> Fixtures:
    """Parse fixture JSON text; ``where`` names it in errors."""
    try:
        raw = loads_json(text)
    except ValueError as exc:
        raise FixtureError(where, f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise FixtureError(where, "expected a JSON object with lists of entities, clients, products, ...")
    objects: dict[str, dict[int, dict[str, Any]]] = {}
    customer = raw.get("customer", 1)
    if not isinstance(customer, int) or isinstance(customer, bool):
        raise FixtureError(where, "customer: expected an integer tenant id")
    for kind, items in raw.items():
        if kind == "customer":
            continue
        if not isinstance(items, list):
            raise FixtureError(where, f"{kind}: expected a list of objects")
        by_id: dict[int, dict[str, Any]] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise FixtureError(where, f"{kind}[{i}]: expected an object")
            pk = item.get("id")
            if not isinstance(pk, int) or isinstance(pk, bool):
                raise FixtureError(where, f"{kind}[{i}].id: expected an integer id")
            by_id[pk] = item
        objects[kind] = by_id
    return Fixtures(objects=objects, customer=customer)
