"""Tests of invoicesync.state: the state file, its lock, the journal and folding it, on real files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import invoicesync
from invoicesync.errors import LockError, StateError
from invoicesync.models import Lifecycle, RemoteSnapshot, dumps_json, loads_json
from invoicesync.state import (
    FORMAT_VERSION,
    Journal,
    LifecycleRecord,
    State,
    StateStore,
    fold_journal,
    new_state,
)
from invoicesync.state.journal import Intent, parse_record
from invoicesync.state.lock import LockInfo, os_user
from tests.invoices import T0
from tests.invoices import record as _record
from tests.invoices import recorded_body as _body

T1 = "2025-07-26T09:00:00+00:00"
T2 = "2025-07-27T09:00:00+00:00"




@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state", "sandbox")


def _saved_state(store: StateStore) -> State:
    state = new_state("sandbox")
    state.invoices["acme-2025-07"] = _record()
    return store.save(state)


# --- state file ------------------------------------------------------------------------------------


def test_load_without_a_file_gives_a_fresh_state(store: StateStore) -> None:
    state = store.load()
    assert not store.exists()
    assert state.serial == 0
    assert state.environment == "sandbox"
    assert state.invoices == {}
    assert state.format_version == FORMAT_VERSION
    assert store.load().lineage != state.lineage  # fresh uuid4 each time, until saved


def test_new_state_keeps_a_given_lineage() -> None:
    assert new_state("prod", lineage="abc").lineage == "abc"


def test_round_trip_keeps_money_exact(store: StateStore) -> None:
    saved = _saved_state(store)
    loaded = StateStore(store.directory, "sandbox").load()
    assert loaded == saved
    record = loaded.invoices["acme-2025-07"]
    assert record.body["lines"][0]["rate"] == Decimal("50.10")
    assert str(record.body["lines"][0]["tax"]) == "5.005"
    assert record.remote is not None and str(record.remote.total_amount) == "55.105"
    text = store.path.read_text()
    assert '"rate": 50.10' in text and '"total_amount": 55.105' in text


def test_state_file_is_pretty_and_sorted(store: StateStore) -> None:
    _saved_state(store)
    text = store.path.read_text()
    assert text == dumps_json(loads_json(text), pretty=True)
    assert text.startswith('{\n  "endpoint": null,\n  "environment": "sandbox",\n  "format_version": 1,\n  "invoices": {')


def test_serial_grows_and_lineage_stays(store: StateStore) -> None:
    first = store.save(new_state("sandbox"))
    second = store.save(first)
    assert (first.serial, second.serial) == (1, 2)
    assert second.lineage == first.lineage
    assert store.load().serial == 2


def test_save_returns_a_copy_and_leaves_its_argument_alone(store: StateStore) -> None:
    state = new_state("sandbox")
    saved = store.save(state)
    assert state.serial == 0 and saved.serial == 1


def test_previous_version_is_kept_as_backup(store: StateStore) -> None:
    first = _saved_state(store)
    second = first.model_copy(update={"invoices": {}})
    store.save(second)
    backup = json.loads(store.backup_path.read_text())
    assert backup["serial"] == 1 and "acme-2025-07" in backup["invoices"]
    assert json.loads(store.path.read_text())["serial"] == 2


def test_save_creates_the_directory(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "deep" / "state", "prod")
    store.save(new_state("prod"))
    assert store.path == tmp_path / "deep" / "state" / "prod.json"
    assert store.exists()


def test_failed_write_leaves_the_old_file_intact(store: StateStore) -> None:
    _saved_state(store)
    before = store.path.read_bytes()
    (store.directory / "sandbox.json.tmp").mkdir()  # the temporary file cannot be written
    with pytest.raises(StateError, match="is unchanged"):
        store.save(store.load())
    assert store.path.read_bytes() == before


def test_unserialisable_value_leaves_the_old_file_intact(store: StateStore) -> None:
    saved = _saved_state(store)
    before = store.path.read_bytes()
    saved.invoices["acme-2025-07"].body["bad"] = object()
    with pytest.raises(StateError, match="JSON cannot express"):
        store.save(saved)
    assert store.path.read_bytes() == before
    assert not (store.directory / "sandbox.json.tmp").exists()


def test_corrupt_file_is_an_error_naming_line_and_backup(store: StateStore) -> None:
    saved = _saved_state(store)
    store.save(saved)
    store.path.write_text('{\n  "environment": "sandbox",\n  "serial": ,\n}\n')
    before = store.path.read_bytes()
    with pytest.raises(StateError) as info:
        store.load()
    message = str(info.value)
    assert "sandbox.json is not valid JSON (line 3, column" in message
    assert "the previous version is in" in message and "sandbox.json.backup" in message
    assert store.path.read_bytes() == before


def test_newer_format_version_is_refused(store: StateStore) -> None:
    store.directory.mkdir()
    store.path.write_text(json.dumps({"format_version": 99, "lineage": "x", "environment": "sandbox", "future": 1}))
    with pytest.raises(StateError, match="written by a newer invoicesync"):
        store.load()


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        '{"format_version": 1, "environment": "sandbox"}',
        '{"format_version": 1, "lineage": "x", "environment": "sandbox", "invoices": {"a": {"id": "nope"}}}',
        '{"format_version": 1, "lineage": "x", "environment": "sandbox", "surprise": true}',
        b"\xff\xfe\x00",
    ],
)
def test_wrong_shape_is_refused_and_left_untouched(store: StateStore, content: str | bytes) -> None:
    store.directory.mkdir()
    data = content.encode() if isinstance(content, str) else content
    store.path.write_bytes(data)
    with pytest.raises(StateError, match="sandbox.json"):
        store.load()
    with pytest.raises(StateError):
        store.save(new_state("sandbox"))  # never overwrite a file that could not be read
    assert store.path.read_bytes() == data


def test_state_of_another_environment_is_refused(tmp_path: Path) -> None:
    StateStore(tmp_path, "prod").save(new_state("prod"))
    (tmp_path / "prod.json").rename(tmp_path / "sandbox.json")
    with pytest.raises(StateError, match='environment "prod", not "sandbox"'):
        StateStore(tmp_path, "sandbox").load()
    with pytest.raises(StateError, match="cannot save the state of environment"):
        StateStore(tmp_path, "sandbox").save(new_state("prod"))


def test_missing_state_next_to_a_backup_is_an_error(store: StateStore) -> None:
    store.save(store.save(new_state("sandbox")))
    store.path.unlink()
    with pytest.raises(StateError, match="is missing but its backup"):
        store.load()


def test_save_refuses_to_overwrite_another_lineage(store: StateStore) -> None:
    _saved_state(store)
    before = store.path.read_bytes()
    with pytest.raises(StateError, match="another state"):
        StateStore(store.directory, "sandbox").save(new_state("sandbox"))
    assert store.path.read_bytes() == before


def test_save_refuses_a_state_older_than_the_file(store: StateStore) -> None:
    loaded = _saved_state(store)
    other = StateStore(store.directory, "sandbox")
    other.save(other.load())  # another writer moves the file on to serial 2
    with pytest.raises(StateError, match="has moved on"):
        store.save(loaded)
    assert store.load().serial == 2


# --- lock ------------------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from pathlib import Path
from invoicesync.state import StateStore
store = StateStore(Path(sys.argv[1]), "sandbox")
with store.lock("apply"):
    print("locked", flush=True)
    hold = float(sys.argv[2])
    if hold < 0:
        sys.stdin.readline()
    else:
        time.sleep(hold)
"""


def _hold_lock(store: StateStore, seconds: float = -1) -> subprocess.Popen[str]:
    """A separate process holding the lock: until its stdin closes (seconds < 0), or for ``seconds``."""
    env = dict(os.environ, PYTHONPATH=str(Path(invoicesync.__file__).resolve().parent.parent))
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store.directory), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def test_lock_held_by_another_process_fails_at_once_naming_it(store: StateStore) -> None:
    proc = _hold_lock(store)
    try:
        started = time.monotonic()
        with pytest.raises(LockError) as info, store.lock("plan"):
            pass
        assert time.monotonic() - started < 1
        message = str(info.value)
        assert message.startswith(
            f'state "sandbox" is locked by apply (pid {proc.pid} on {socket.gethostname()}, user {os_user()}) since ')
        assert "--lock-timeout SECONDS" in message and "`invoicesync force-unlock`" in message
        assert "after waiting" not in message
        held = store.read_lock_info()
        assert held is not None and held.time is not None
        assert held == LockInfo(command="apply", host=socket.gethostname(), pid=proc.pid, user=os_user(), time=held.time)
    finally:
        _finish(proc)


def test_two_stores_in_one_process_exclude_each_other(store: StateStore) -> None:
    other = StateStore(store.directory, "sandbox")
    with store.lock("apply"):
        with pytest.raises(LockError, match=f"pid {os.getpid()}"), other.lock("plan"):
            pass
        with pytest.raises(LockError), store.lock("plan"):
            pass
    with other.lock("plan"):
        assert other.read_lock_info().command == "plan"  # type: ignore[union-attr]


def test_lock_waits_and_acquires_when_released(store: StateStore) -> None:
    proc = _hold_lock(store, seconds=0.4)
    try:
        started = time.monotonic()
        with store.lock("plan", timeout=10):
            waited = time.monotonic() - started
            assert store.read_lock_info().pid == os.getpid()  # type: ignore[union-attr]
        assert 0.1 < waited < 5
    finally:
        _finish(proc)


def test_lock_timeout_expires_with_the_holder_named(store: StateStore) -> None:
    proc = _hold_lock(store)
    try:
        started = time.monotonic()
        with pytest.raises(LockError, match=r"locked by apply .* after waiting 0.3 s;"), store.lock("plan", timeout=0.3):
            pass
        assert 0.3 <= time.monotonic() - started < 2
    finally:
        _finish(proc)


def test_lock_is_released_when_the_holder_is_killed(store: StateStore) -> None:
    proc = _hold_lock(store)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert store.read_lock_info() is not None  # the stale message is left, the OS lock is not
    with store.lock("apply"):
        assert store.read_lock_info().pid == os.getpid()  # type: ignore[union-attr]


def test_release_clears_the_holder_but_keeps_the_file(store: StateStore) -> None:
    with store.lock("apply"):
        pass
    assert store.lock_path.exists()
    assert store.read_lock_info() is None


def test_lock_error_propagates_exceptions_and_releases(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.lock("apply"):
        raise RuntimeError("boom")
    with store.lock("plan"):
        pass


def test_force_unlock_removes_the_lock_and_says_who_held_it(store: StateStore) -> None:
    proc = _hold_lock(store)
    try:
        info = store.force_unlock()
        assert info is not None and info.pid == proc.pid and info.command == "apply"
        assert not store.lock_path.exists()
        with store.lock("plan"):  # a new lock file, no longer excluded by the old holder
            pass
    finally:
        _finish(proc)
    assert store.force_unlock() is None


def test_unreadable_lock_content_is_reported_raw(store: StateStore) -> None:
    store.directory.mkdir()
    store.lock_path.write_text("garbage")
    info = store.read_lock_info()
    assert info == LockInfo(raw="garbage")
    assert info.describe() == "another run (its lock file says 'garbage')"


def test_lock_info_round_trips_and_describes_its_holder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_JOB_URL", "https://gitlab.example/acme/invoices/-/jobs/7")
    me = LockInfo.current("apply")
    assert (me.command, me.pid, me.host, me.user) == ("apply", os.getpid(), socket.gethostname(), os_user())
    assert me.run_url == "https://gitlab.example/acme/invoices/-/jobs/7" and me.time and me.time.endswith("+00:00")
    assert LockInfo.from_mapping(json.loads(json.dumps(me.to_dict()))) == me
    info = LockInfo(command="apply", host="runner-7", pid=4242, user="ci", time="2025-07-25T18:54:43+00:00",
                    run_url="https://ci.example/runs/9")
    assert info.describe() == (
        "apply (pid 4242 on runner-7, user ci) since 2025-07-25T18:54:43+00:00, run https://ci.example/runs/9"
    )
    assert LockInfo(command="plan", pid=1, host="h").describe() == "plan (pid 1 on h)"
    assert LockInfo().describe() == "another run" and not LockInfo().known
    assert LockInfo.from_mapping({"pid": "12", "command": 3, "host": None, "extra": 1}) == LockInfo(command="3", pid=12)


# --- journal ---------------------------------------------------------------------------------------


def _intent(address: str = "acme-2025-07", digest: str = "sha256:aaa", time_: str = T0) -> dict[str, Any]:
    return {
        "op": "intent",
        "address": address,
        "digest": digest,
        "idempotency_key": f"key-{address}-{digest}",
        "time": time_,
        "lookup": {"entity": 54, "client": 33973, "invoice_date": "2025-07-01", "invoice_number": "ACME-2025-07",
                   "source_id": f"lin/{address}"},
        "body": _body(),
        "lifecycle": {"prevent_destroy": False, "on_remove": "void"},
        "replaces": None,
    }


def _created(address: str = "acme-2025-07", invoice_id: int = 145055, digest: str = "sha256:aaa",
             time_: str = T0) -> dict[str, Any]:
    return {
        "op": "created",
        "address": address,
        "id": invoice_id,
        "digest": digest,
        "body": _body(),
        "lifecycle": {"prevent_destroy": True, "on_remove": "delete"},
        "remote": {"status": "open", "total_amount": Decimal("55.105")},
        "time": time_,
    }


def test_read_journal_without_a_file_is_empty(store: StateStore) -> None:
    assert store.read_journal() == []
    assert not store.has_journal()


def test_journal_records_round_trip_with_exact_money(store: StateStore) -> None:
    with store.open_journal() as journal:
        journal.append_sync(_intent())
        journal.append_sync(_created())
        assert journal.fsyncs == 2 and journal.appends == 2
    assert store.has_journal()
    records = store.read_journal()
    assert records == [_intent(), _created()]
    assert str(records[0]["body"]["lines"][0]["tax"]) == "5.005"
    assert store.journal_path.read_text().count("\n") == 2


def test_journal_accepts_models_and_dataclasses(store: StateStore) -> None:
    record = _created()
    record["remote"] = RemoteSnapshot(status="paid", amount_due=Decimal("0.00"))
    record["lifecycle"] = Lifecycle(prevent_destroy=True)
    with store.open_journal() as journal:
        journal.append_sync(record)
    [read] = store.read_journal()
    assert read["remote"]["status"] == "paid" and str(read["remote"]["amount_due"]) == "0.00"
    assert read["lifecycle"] == {"prevent_destroy": True, "on_remove": "void"}


def test_journal_rejects_unknown_ops_and_unserialisable_records(store: StateStore) -> None:
    with store.open_journal() as journal:
        with pytest.raises(ValueError, match="unknown journal record op"):
            journal.append_sync({"op": "moved", "address": "a"})
        with pytest.raises(StateError, match="cannot write a created record for 'acme-2025-07'"):
            journal.append_sync({**_created(), "body": {"x": object()}})
    assert store.read_journal() == []


def test_appends_after_reopening_continue_the_journal(store: StateStore) -> None:
    with store.open_journal() as journal:
        journal.append_sync(_intent())
    with store.open_journal() as journal:
        journal.append_sync(_created())
    assert [r["op"] for r in store.read_journal()] == ["intent", "created"]


def test_torn_last_line_is_ignored_and_cut_before_appending(store: StateStore) -> None:
    with store.open_journal() as journal:
        journal.append_sync(_intent())
    with store.journal_path.open("ab") as fh:
        fh.write(b'{"op":"created","address":"acme-2025-07","id":14')  # a crash mid-write
    assert [r["op"] for r in store.read_journal()] == ["intent"]
    with store.open_journal() as journal:
        journal.append_sync(_created())
    assert [r["op"] for r in store.read_journal()] == ["intent", "created"]


def test_zeroed_tail_after_a_crash_is_ignored(store: StateStore) -> None:
    with store.open_journal() as journal:
        journal.append_sync(_intent())
    with store.journal_path.open("ab") as fh:
        fh.write(b"\x00" * 40 + b"\n")
    assert [r["op"] for r in store.read_journal()] == ["intent"]


def test_complete_last_record_without_newline_is_kept(store: StateStore) -> None:
    store.directory.mkdir()
    store.journal_path.write_text('{"op":"removed","address":"a","id":1,"time":"t"}')
    assert store.read_journal() == [{"op": "removed", "address": "a", "id": 1, "time": "t"}]
    with store.open_journal() as journal:
        journal.append_sync({"op": "removed", "address": "b", "id": 2, "time": "t"})
    assert [r["address"] for r in store.read_journal()] == ["a", "b"]


def test_damaged_middle_line_is_an_error_naming_it(store: StateStore) -> None:
    store.directory.mkdir()
    store.journal_path.write_text('{"op":"intent","address":"a","digest":"d"}\n{"op": oops\n{"op":"removed","address":"a"}\n')
    with pytest.raises(StateError, match=r"sandbox.journal, line 2, is damaged"):
        store.read_journal()
    with pytest.raises(StateError, match="line 2"):
        store.open_journal()


def test_line_that_is_not_a_record_is_an_error(store: StateStore) -> None:
    store.directory.mkdir()
    store.journal_path.write_text('[1, 2]\n{"op":"removed","address":"a"}\n')
    with pytest.raises(StateError, match="line 1, is not a journal record"):
        store.read_journal()


def test_concurrent_appends_all_land_sharing_fsyncs(store: StateStore) -> None:
    async def run() -> Journal:
        journal = store.open_journal()
        await asyncio.gather(*(journal.append(_intent(f"inv-{i}")) for i in range(200)))
        await journal.aclose()
        return journal

    journal = asyncio.run(run())
    records = store.read_journal()
    assert [r["address"] for r in records] == [f"inv-{i}" for i in range(200)]
    assert journal.appends == 200
    assert 1 <= journal.fsyncs < 20


def test_appends_in_waves_batch_what_arrives_during_an_fsync(store: StateStore) -> None:
    async def run() -> Journal:
        journal = store.open_journal()

        async def worker(n: int) -> None:
            for i in range(10):
                await journal.append(_intent(f"w{n}-{i}"))
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(n) for n in range(16)))
        await journal.aclose()
        return journal

    journal = asyncio.run(run())
    assert len(store.read_journal()) == 160
    assert journal.fsyncs < 160


def test_sync_and_async_appends_mix(store: StateStore) -> None:
    async def run() -> None:
        journal = store.open_journal()

        def appender() -> None:
            for i in range(20):
                journal.append_sync(_intent(f"s{i}"))

        thread = threading.Thread(target=appender)
        thread.start()
        await asyncio.gather(*(journal.append(_intent(f"a{i}")) for i in range(20)))
        thread.join()
        await journal.aclose()

    asyncio.run(run())
    assert len(store.read_journal()) == 40


def test_append_after_close_is_an_error(store: StateStore) -> None:
    journal = store.open_journal()
    journal.close()
    journal.close()
    assert journal.closed
    with pytest.raises(StateError, match="closed"):
        journal.append_sync(_intent())
    with pytest.raises(StateError, match="closed"):
        asyncio.run(journal.append(_intent()))


def test_remove_journal(store: StateStore) -> None:
    with store.open_journal() as journal:
        journal.append_sync(_intent())
    store.remove_journal()
    assert not store.has_journal()
    store.remove_journal()  # nothing left: fine


# --- folding ---------------------------------------------------------------------------------------


def test_created_adds_the_invoice_and_resolves_its_intent() -> None:
    state = new_state("sandbox")
    folded, pending = fold_journal(state, [_intent(), _created(time_=T1)])
    assert pending == []
    record = folded.invoices["acme-2025-07"]
    assert record.id == 145055 and record.digest == "sha256:aaa"
    assert record.created_at == record.updated_at == T1
    assert record.lifecycle == LifecycleRecord(prevent_destroy=True, on_remove="delete")
    assert record.remote is not None and record.remote.total_amount == Decimal("55.105")
    assert folded.serial == state.serial and folded.lineage == state.lineage
    assert state.invoices == {}  # pure


def test_updated_replaces_the_body_and_keeps_created_at() -> None:
    state = new_state("sandbox")
    state.invoices["acme-2025-07"] = _record()
    body = _body(rate="60")
    folded, pending = fold_journal(
        state,
        [{"op": "updated", "address": "acme-2025-07", "id": 145055, "digest": "sha256:bbb", "body": body,
          "lifecycle": {"prevent_destroy": True, "on_remove": "forget"}, "remote": None, "time": T1}],
    )
    record = folded.invoices["acme-2025-07"]
    assert (record.digest, record.body, record.remote) == ("sha256:bbb", body, None)
    assert record.lifecycle.on_remove == "forget"
    assert (record.created_at, record.updated_at) == (T0, T1)
    assert pending == []
    assert state.invoices["acme-2025-07"].digest == "sha256:aaa"  # pure


def test_updated_with_only_a_remote_keeps_the_rest() -> None:
    state = new_state("sandbox")
    state.invoices["acme-2025-07"] = _record()
    folded, _ = fold_journal(
        state, [{"op": "updated", "address": "acme-2025-07", "id": 145055, "remote": {"status": "paid"}, "time": T1}]
    )
    record = folded.invoices["acme-2025-07"]
    assert record.remote == RemoteSnapshot(status="paid")
    assert record.body == _body() and record.digest == "sha256:aaa"


def test_removed_drops_the_invoice() -> None:
    state = new_state("sandbox")
    state.invoices["acme-2025-07"] = _record()
    state.invoices["other"] = _record(2)
    folded, _ = fold_journal(state, [{"op": "removed", "address": "acme-2025-07", "id": 145055, "time": T1}])
    assert list(folded.invoices) == ["other"]
    assert "acme-2025-07" in state.invoices


def test_removing_a_replaced_invoice_keeps_its_successor() -> None:
    state = new_state("sandbox")
    state.invoices["acme-2025-07"] = _record(145055)
    intent = {**_intent(digest="sha256:new"), "replaces": 145055}
    records = [
        intent,
        _created(invoice_id=200000, digest="sha256:new", time_=T1),
        {"op": "removed", "address": "acme-2025-07", "id": 145055, "time": T2},
    ]
    folded, pending = fold_journal(state, records)
    assert folded.invoices["acme-2025-07"].id == 200000
    assert pending == []


def test_abandoned_resolves_the_intent_without_adding_anything() -> None:
    records = [_intent(), {"op": "abandoned", "address": "acme-2025-07", "digest": "sha256:aaa", "time": T1,
                           "reason": "400 lines[0].product: Invalid pk"}]
    folded, pending = fold_journal(new_state("sandbox"), records)
    assert folded.invoices == {} and pending == []


def test_unresolved_intents_are_returned_in_journal_order() -> None:
    records = [
        _intent("b"),
        _intent("a"),
        _created("a"),
        _intent("c"),
        _intent("d", digest="sha256:ddd"),
        _created("d", 145056, digest="sha256:other"),  # a different body: not the outcome of that intent
    ]
    folded, pending = fold_journal(new_state("sandbox"), records)
    assert all(isinstance(p, Intent) for p in pending)
    assert [(p.address, p.digest) for p in pending if isinstance(p, Intent)] == [
        ("b", "sha256:aaa"), ("c", "sha256:aaa"), ("d", "sha256:ddd")]
    assert isinstance(pending[0], Intent) and pending[0].lookup is not None
    assert pending[0].lookup["source_id"] == "lin/b"
    assert sorted(folded.invoices) == ["a", "d"]


def test_one_outcome_resolves_a_retried_intent() -> None:
    folded, pending = fold_journal(new_state("sandbox"), [_intent(), _intent(time_=T1), _created(time_=T2)])
    assert pending == []


def test_folding_is_idempotent() -> None:
    state = new_state("sandbox")
    state.invoices["old"] = _record(1)
    state.invoices["gone"] = _record(2)
    records = [
        _intent("new"),
        _created("new", 3, time_=T1),
        {"op": "updated", "address": "old", "id": 1, "digest": "sha256:bbb", "body": {"x": 1}, "time": T1},
        {"op": "removed", "address": "gone", "id": 2, "time": T1},
        _intent("lost"),
    ]
    once, pending_once = fold_journal(state, records)
    twice, pending_twice = fold_journal(once, records)
    assert twice == once
    assert pending_twice == pending_once == [parse_record(_intent("lost"))]


def test_folded_state_survives_a_save_and_load(store: StateStore) -> None:
    with store.open_journal() as journal:
        journal.append_sync(_intent())
        journal.append_sync(_created())
    folded, _ = fold_journal(store.load(), store.read_journal())
    saved = store.save(folded)
    assert store.load() == saved


def test_unknown_op_in_a_record_is_an_error() -> None:
    with pytest.raises(StateError, match=r"journal record 2 \(moved 'a'\) is not valid: unknown op"):
        fold_journal(new_state("sandbox"), [_intent("a"), {"op": "moved", "address": "a"}])


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"op": "created", "address": "a", "id": 1, "time": T0}, "missing digest, body"),
        ({**_created(), "id": "not a number"}, "id: Input should be a valid integer"),
        ({"op": "intent", "address": 7, "digest": "d"}, "address is not a string"),
    ],
)
def test_invalid_records_are_errors_naming_them(record: dict[str, Any], problem: str) -> None:
    with pytest.raises(StateError, match=f"journal record 1 .* is not valid: {problem}"):
        fold_journal(new_state("sandbox"), [record])
