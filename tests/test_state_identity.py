"""Which state a record belongs to: one invoice id per address, journals stamped with their lineage."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from invoicesync.errors import StateError
from invoicesync.models import dumps_json
from invoicesync.state import InvoiceRecord, State, StateStore, duplicate_ids, fold_journal, new_state

T0 = "2025-07-25T18:54:43+00:00"


def _record(invoice_id: int) -> InvoiceRecord:
    body = {"client": 33973, "entity": 54, "invoice_date": "2025-07-01", "lines": [{"rate": Decimal("50")}]}
    return InvoiceRecord(id=invoice_id, digest="sha256:aaa", body=body, created_at=T0, updated_at=T0)


def _created(address: str, invoice_id: Any, **extra: Any) -> dict[str, Any]:
    return {"op": "created", "address": address, "id": invoice_id, "digest": "sha256:aaa",
            "body": {"client": 33973}, "time": T0, **extra}


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state", "sandbox")


def _write_state(store: StateStore, state: State) -> None:
    store.directory.mkdir(parents=True, exist_ok=True)
    store.path.write_text(dumps_json(state.model_dump(), pretty=True))


def _shared_state() -> State:
    state = new_state("sandbox")
    state.invoices["acme-2025-07"] = _record(145055)
    state.invoices["acme-july"] = _record(145055)
    state.invoices["beta"] = _record(145060)
    return state


# --- one invoice id, one address ------------------------------------------------------------------


def test_state_holding_one_id_under_two_addresses_is_refused_saying_how_to_fix_it(store: StateStore) -> None:
    _write_state(store, _shared_state())
    with pytest.raises(StateError) as info:
        store.load()
    message = str(info.value)
    assert "sandbox.json" in message
    assert 'invoice 145055 under 2 addresses, "acme-2025-07" and "acme-july"' in message
    assert "`invoicesync state rm ADDRESS`" in message and "`invoicesync state rm acme-july`" in message


def test_state_surgery_loads_it_and_repairs_it(store: StateStore) -> None:
    _write_state(store, _shared_state())
    surgery = StateStore(store.directory, "sandbox", allow_duplicate_ids=True)
    state = surgery.load()
    assert duplicate_ids(state) == {145055: ["acme-2025-07", "acme-july"]}
    invoices = {a: r for a, r in state.invoices.items() if a != "acme-july"}  # what `state rm acme-july` does
    surgery.save(state.model_copy(update={"invoices": invoices}))
    assert sorted(store.load().invoices) == ["acme-2025-07", "beta"]


def test_journal_giving_a_held_id_to_another_address_is_refused_naming_its_line(store: StateStore) -> None:
    state = new_state("sandbox")
    state.invoices["acme-2025-07"] = _record(145055)
    with store.open_journal(lineage=state.lineage) as journal:
        journal.append_sync(_created("beta", 145060))
        journal.append_sync(_created("acme-july", 145055))
    with pytest.raises(StateError) as info:
        fold_journal(state, store.read_journal())
    message = str(info.value)
    assert "sandbox.journal, line 2 (created 'acme-july')" in message
    assert 'records invoice 145055 for "acme-july", but the state already holds it as "acme-2025-07"' in message
    assert "invoicesync state rm" in message
    folded, _ = fold_journal(state, store.read_journal(), allow_duplicate_ids=True)
    assert duplicate_ids(folded) == {145055: ["acme-2025-07", "acme-july"]}


def test_fold_leaves_a_duplicate_the_state_already_had_to_the_loader() -> None:
    state = _shared_state()
    folded, _ = fold_journal(state, [_created("gamma", 145070)])
    assert duplicate_ids(folded) == {145055: ["acme-2025-07", "acme-july"]}


def test_an_id_moving_between_addresses_within_the_journal_is_no_duplicate() -> None:
    state = new_state("sandbox")
    state.invoices["old"] = _record(145055)
    records = [{"op": "removed", "address": "old", "id": 145055, "time": T0}, _created("new", 145055)]
    folded, _ = fold_journal(state, records)
    assert list(folded.invoices) == ["new"]


# --- journal lineage ------------------------------------------------------------------------------


def test_journal_stamps_the_lineage_on_every_record(store: StateStore) -> None:
    with store.open_journal(lineage="lin-a") as journal:
        journal.append_sync({"op": "intent", "address": "a", "digest": "d"})
        journal.append_sync(_created("a", 1))
    assert [r["lineage"] for r in store.read_journal()] == ["lin-a", "lin-a"]


def test_journal_of_another_state_is_refused_by_the_fold(store: StateStore) -> None:
    state = new_state("sandbox", lineage="lin-here")
    with store.open_journal(lineage="lin-elsewhere") as journal:
        journal.append_sync(_created("a", 1))
    with pytest.raises(StateError) as info:
        fold_journal(state, store.read_journal())
    message = str(info.value)
    assert "sandbox.journal belongs to another state" in message
    assert "lineage lin-elsewhere, this state's is lin-here" in message
    assert "copied from another workspace" in message and "Move" in message and "away" in message


def test_records_of_older_versions_without_a_lineage_are_folded(store: StateStore) -> None:
    with store.open_journal() as journal:
        journal.append_sync(_created("a", 1))
    folded, _ = fold_journal(new_state("sandbox", lineage="lin-here"), store.read_journal())
    assert folded.invoices["a"].id == 1


def test_appending_to_a_journal_of_another_state_is_refused(store: StateStore) -> None:
    with store.open_journal(lineage="lin-elsewhere") as journal:
        journal.append_sync(_created("a", 1))
    with pytest.raises(StateError, match="belongs to another state"):
        store.open_journal(lineage="lin-here")
    with store.open_journal(lineage="lin-elsewhere") as journal:  # its own state may go on appending
        journal.append_sync(_created("b", 2))


# --- a created record without a usable id ---------------------------------------------------------


def _write_lines(store: StateStore, *records: dict[str, Any]) -> None:
    """A journal as a hand edit or another program left it: the typed writer never writes a bad record."""
    store.journal_path.parent.mkdir(parents=True, exist_ok=True)
    store.journal_path.write_text("".join(dumps_json(r) + "\n" for r in records))


@pytest.mark.parametrize("bad", ["145055", 145055.0, True, None, {"id": 1}])
def test_created_record_whose_id_is_not_an_integer_names_its_journal_line(store: StateStore, bad: Any) -> None:
    _write_lines(store, {"op": "intent", "address": "a", "digest": "sha256:aaa"}, _created("a", bad))
    with pytest.raises(StateError, match=r"sandbox\.journal, line 2 \(created 'a'\) is not valid: id: .*integer"):
        fold_journal(new_state("sandbox"), store.read_journal())


@pytest.mark.parametrize("bad", ["145055", None])
def test_the_writer_never_writes_a_record_whose_id_is_not_an_integer(store: StateStore, bad: Any) -> None:
    with store.open_journal() as journal, pytest.raises(ValueError, match="id: Input should be a valid integer"):
        journal.append_sync(_created("a", bad))
    assert store.read_journal() == []


def test_created_record_without_an_id_names_its_journal_line(store: StateStore) -> None:
    record = _created("a", 1)
    del record["id"]
    _write_lines(store, record)
    with pytest.raises(StateError, match=r"sandbox\.journal, line 1 \(created 'a'\) is not valid: missing id"):
        fold_journal(new_state("sandbox"), store.read_journal())
