"""The sandbox's data file, fixtures and concurrent creates."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from invoicesync.models import dumps_json, loads_json
from invoicesync.sandbox import FixtureError, Sandbox, SandboxDataError, store
from invoicesync.sandbox.fixtures import load_fixtures
from tests.sandbox_helpers import API, AUTH, invoice_body, seed_request


async def _post(sandbox: Sandbox, path: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient(transport=sandbox.transport(), base_url="http://sb", headers=AUTH) as client:
        return await client.post(path, content=dumps_json(body))


def post(sandbox: Sandbox, path: str, body: object) -> httpx.Response:
    return asyncio.run(_post(sandbox, path, body))


def test_invoices_survive_a_new_sandbox_on_the_same_data_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sandbox.sandbox.json"
    first = Sandbox(data_file=path)
    created = loads_json(post(first, API, invoice_body(lines=[{"quantity": 3, "rate": Decimal("0.1")}])).text)
    payment = {"account_id": 2553, "account_name": "AR", "amount": Decimal("0.1"), "payment_date": "2025-07-02"}
    assert post(first, f"{API}{created['id']}/pay/", {"empty_transactions": [payment]}).status_code == 200
    second = Sandbox(data_file=path)
    assert second.invoices() == first.invoices()
    (invoice,) = second.invoices()
    assert invoice["total_amount"] == Decimal("0.3") and isinstance(invoice["amount_due"], Decimal)
    assert invoice["amount_due"] == Decimal("0.2") and invoice["payment_status"] == "partial"
    next_one = loads_json(post(second, API, invoice_body()).text)
    assert next_one["id"] == created["id"] + 1  # the id sequences were kept too


def test_data_file_keeps_money_as_exact_decimal_numbers(tmp_path: Path) -> None:
    path = tmp_path / "sb.json"
    sandbox = Sandbox(data_file=path)
    post(sandbox, API, invoice_body(lines=[{"quantity": 3, "rate": Decimal("0.1")}]))
    sandbox.reset()  # folds everything into the snapshot
    post(sandbox, API, invoice_body(lines=[{"quantity": 3, "rate": Decimal("0.1")}]))
    changes = (tmp_path / "sb.json.changes").read_text()
    assert '"total_amount":0.3' in changes and "0.30000000000000004" not in changes
    (entry,) = [loads_json(line) for line in changes.splitlines()]
    assert entry["invoices"]["145055"]["total_amount"] == Decimal("0.3")
    assert loads_json(path.read_text())["invoices"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sb.json", "sb.json.changes"]  # no temporary file left


def test_changes_fold_into_the_snapshot_once_they_outgrow_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_MIN_COMPACT_BYTES", 0)
    path = tmp_path / "sb.json"
    sandbox = Sandbox(data_file=path)
    for n in range(6):
        post(sandbox, API, invoice_body(invoice_number=f"N-{n}"))
    assert len(loads_json(path.read_text())["invoices"]) >= 3  # compacted at least once
    assert Sandbox(data_file=path).invoices() == sandbox.invoices()


def test_a_change_torn_by_a_crash_is_dropped_on_load(tmp_path: Path) -> None:
    path = tmp_path / "sb.json"
    sandbox = Sandbox(data_file=path)
    post(sandbox, API, invoice_body())
    with (tmp_path / "sb.json.changes").open("a") as changes:
        changes.write('{"invoices": {"145056": {"id"')
    assert [inv["id"] for inv in Sandbox(data_file=path).invoices()] == [145055]


def test_reset_is_written_to_the_data_file(tmp_path: Path) -> None:
    path = tmp_path / "sb.json"
    sandbox = Sandbox(data_file=path)
    post(sandbox, API, invoice_body())
    sandbox.reset()
    assert Sandbox(data_file=path).invoices() == []


def test_idempotency_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sb.json"

    async def create(sandbox: Sandbox) -> httpx.Response:
        async with httpx.AsyncClient(transport=sandbox.transport(), base_url="http://sb", headers=AUTH) as client:
            return await client.post(API, content=dumps_json(invoice_body()), headers={"Idempotency-Key": "k"})

    first = asyncio.run(create(Sandbox(data_file=path)))
    second = asyncio.run(create(Sandbox(data_file=path)))
    assert second.json() == first.json() and len(Sandbox(data_file=path).invoices()) == 1


def test_unreadable_data_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "sb.json"
    path.write_text("{not json")
    with pytest.raises(SandboxDataError, match="sb.json: not a sandbox data file"):
        Sandbox(data_file=path)
    path.write_text('{"format_version": 99}')
    with pytest.raises(SandboxDataError, match="format version 1"):
        Sandbox(data_file=path)


def test_default_fixtures_hold_the_seed_objects() -> None:
    fixtures = load_fixtures()
    seed = seed_request()
    entity = fixtures.get("entities", 54)
    assert entity is not None
    assert (entity["name"], entity["currency"], entity["invoice_message"]) == (
        seed["entity_name"], seed["entity_currency"], seed["entity_invoice_message"]
    )  # fmt: skip
    assert fixtures.get("clients", 33973)["name"] == "Client A"  # type: ignore[index]
    assert fixtures.get("products", 2545)["name"] == "Product A"  # type: ignore[index]
    assert fixtures.get("contracts", 12954) == {"id": 12954, "name": "Campfire", "client": 33973}
    assert fixtures.get("accounts", 2553)["name"] == "1100 - Accounts Receivable"  # type: ignore[index]
    assert {33974, 33975, 33976} <= set(fixtures.objects["clients"]) and fixtures.exists("entities", 55)


def test_fixture_file_replaces_the_built_in_set(tmp_path: Path) -> None:
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps({
        "entities": [{"id": 1, "name": "Solo", "currency": "GBP", "invoice_message": None}],
        "clients": [{"id": 7, "name": "Only Client"}],
        "products": [],
    }))  # fmt: skip
    sandbox = Sandbox(fixtures_file=path)
    response = post(sandbox, API, invoice_body(entity=1, client=7, lines=[{"amount": 5}]))
    assert response.status_code == 201, response.text
    assert (response.json()["currency"], response.json()["client_name"]) == ("GBP", "Only Client")
    assert post(sandbox, API, invoice_body(entity=1, client=33973)).json() == {
        "client": ['Invalid pk "33973" - object does not exist.'],
        "lines": [{"product": ['Invalid pk "2545" - object does not exist.']}],
    }


def test_bad_fixture_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "fixtures.json"
    path.write_text('{"clients": [{"name": "no id"}]}')
    with pytest.raises(FixtureError, match=r"fixtures.json: clients\[0\].id: expected an integer id"):
        Sandbox(fixtures_file=path)
    with pytest.raises(FixtureError, match="cannot read fixture file"):
        Sandbox(fixtures_file=tmp_path / "missing.json")


def test_concurrent_creates_get_distinct_sequential_ids() -> None:
    sandbox = Sandbox()

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=sandbox.transport(), base_url="http://sb", headers=AUTH) as client:
            responses = await asyncio.gather(*(client.post(API, content=dumps_json(invoice_body())) for _ in range(200)))
        return [r.json()["id"] for r in responses]

    ids = asyncio.run(main())
    assert sorted(ids) == list(range(145055, 145055 + 200))
