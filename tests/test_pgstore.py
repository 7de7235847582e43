"""Tests of invoicesync.state.postgres: team state, history, journal and lock on a real PostgreSQL server.

The server is started by the test session (tests/pg.py); each test works in a schema of its own.
No mocks: every behaviour here is what the server does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

from invoicesync.errors import LockError, StateError
from invoicesync.state import State, fold_journal, new_state
from invoicesync.state.postgres import SCHEMA_VERSION, PgJournal, PostgresStore, _key
from tests.invoices import T0
from tests.invoices import record as _record
from tests.invoices import recorded_body as _body
from tests.pg import PgServer, pg_schema, pg_server  # noqa: F401  (fixtures)

ENV = "production"


def _state_with(*addresses: str, environment: str = ENV, lineage: str | None = None) -> State:
    state = new_state(environment, lineage=lineage)
    for i, address in enumerate(addresses):
        state.invoices[address] = _record(145055 + i)
    return state


@pytest.fixture
def dsn(pg_server: PgServer) -> str:
    return pg_server.dsn()


@pytest.fixture
def make_store(dsn: str, pg_schema: str) -> Iterator[Any]:
    """Build stores on this test's schema (closed afterwards); keywords override the defaults."""
    stores: list[PostgresStore] = []

    def make(**overrides: Any) -> PostgresStore:
        options: dict[str, Any] = {"schema": pg_schema, "environment": ENV}
        options.update(overrides)
        store = PostgresStore(options.pop("dsn", dsn), **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: Any) -> PostgresStore:
    store: PostgresStore = make_store()
    return store


# --- tables ----------------------------------------------------------------------------------------


def test_first_use_creates_the_tables_and_records_the_schema_version(store: PostgresStore, pg_server: PgServer, pg_schema: str) -> None:
    assert not store.exists()
    with pg_server.admin() as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (pg_schema,))}
        versions = [r[0] for r in conn.execute(sql.SQL("SELECT version FROM {}.schema_version").format(sql.Identifier(pg_schema)))]
    assert tables == {"schema_version", "states", "journal", "locks"}
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_runners_racing_to_create_the_tables_all_succeed(make_store: Any) -> None:
    stores = [make_store() for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    problems: list[BaseException] = []

    def first_use(store: PostgresStore) -> None:
        barrier.wait()
        try:
            store.has_journal()
        except BaseException as exc:  # collected for the assertion below
            problems.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []


def test_tables_of_a_newer_invoicesync_are_refused(store: PostgresStore, make_store: Any, pg_server: PgServer, pg_schema: str) -> None:
    store.exists()
    with pg_server.admin() as conn:
        conn.execute(sql.SQL("INSERT INTO {}.schema_version (version) VALUES (99)").format(sql.Identifier(pg_schema)))
    with pytest.raises(StateError, match="made by a newer invoicesync .schema version 99"):
        make_store().load()


# --- state -----------------------------------------------------------------------------------------


def test_load_without_a_state_gives_a_fresh_state(store: PostgresStore) -> None:
    state = store.load()
    assert not store.exists()
    assert (state.serial, state.environment, state.invoices) == (0, ENV, {})
    assert store.pull() is None


def test_round_trip_keeps_money_exact(store: PostgresStore, make_store: Any) -> None:
    saved = store.save(_state_with("acme-2025-07"), command="apply")
    loaded = make_store().load()
    assert saved.serial == 1
    assert loaded == saved
    line = loaded.invoices["acme-2025-07"].body["lines"][0]
    assert (str(line["rate"]), str(line["tax"])) == ("50.10", "5.005")
    remote = loaded.invoices["acme-2025-07"].remote
    assert remote is not None and (str(remote.total_amount), str(remote.amount_due)) == ("55.105", "0.10")


def test_save_is_compare_and_swap_on_the_serial(store: PostgresStore, make_store: Any) -> None:
    first = store.save(new_state(ENV), command="apply")
    other = make_store()
    theirs, ours = other.load(), store.load()
    other.save(_state_with("acme-2025-07", lineage=theirs.lineage).model_copy(update={"serial": theirs.serial}), command="apply")
    with pytest.raises(StateError) as caught:
        store.save(ours, command="state rm")
    message = str(caught.value)
    assert "has moved on (serial 2 was written by apply on " + socket.gethostname() in message
    assert "this state was read at serial 1" in message and "run the command again" in message
    assert store.load().serial == 2 and "acme-2025-07" in store.load().invoices  # nothing overwritten
    assert first.serial == 1


def test_save_refuses_a_state_of_another_lineage(store: PostgresStore) -> None:
    store.save(new_state(ENV))
    stranger = new_state(ENV).model_copy(update={"serial": 1})
    with pytest.raises(StateError, match="holds another state .lineage .*refusing to overwrite it"):
        store.save(stranger)


def test_save_refuses_a_state_of_another_environment(store: PostgresStore) -> None:
    with pytest.raises(StateError, match='environment "staging"'):
        store.save(new_state("staging"))
    assert not store.exists()


def test_concurrent_writers_from_one_serial_leave_exactly_one_winner(store: PostgresStore, make_store: Any) -> None:
    base = store.save(new_state(ENV))
    writers = [make_store() for _ in range(5)]
    barrier = threading.Barrier(len(writers))
    outcomes: list[str] = []

    def write(writer: PostgresStore, n: int) -> None:
        barrier.wait()
        try:
            writer.save(_state_with(f"inv-{n}", lineage=base.lineage).model_copy(update={"serial": base.serial}))
            outcomes.append("saved")
        except StateError:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 4 + ["saved"]
    assert store.load().serial == base.serial + 1


def test_history_keeps_every_serial_with_who_wrote_it(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/invoices")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    state = store.save(new_state(ENV), command="apply")
    state = store.save(_state_with("a", "b", lineage=state.lineage).model_copy(update={"serial": state.serial}), command="apply")
    for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("CI_JOB_URL", "https://gitlab.example/acme/invoices/-/jobs/7")
    store.save(state.model_copy(update={"retired": [1]}), command="state rm")

    history = store.history()
    assert [h.serial for h in history] == [3, 2, 1]
    assert [h.command for h in history] == ["state rm", "apply", "apply"]
    assert [h.run_url for h in history] == [
        "https://gitlab.example/acme/invoices/-/jobs/7",
        "https://github.com/acme/invoices/actions/runs/4242",
        "https://github.com/acme/invoices/actions/runs/4242",
    ]
    assert [dict(h.counts) for h in history] == [
        {"invoices": 2, "retired": 1}, {"invoices": 2, "retired": 0}, {"invoices": 0, "retired": 0},
    ]
    assert {h.host for h in history} == {socket.gethostname()}
    assert all(h.user and h.time.endswith("+00:00") for h in history)
    assert set(history[0].to_dict()) == {"serial", "time", "command", "host", "user", "run_url", "counts"}


def test_saves_under_a_lock_record_the_command_holding_it(store: PostgresStore) -> None:
    with store.lock("apply"):
        state = store.save(new_state(ENV))
        state = store.save(state)
    store.save(state)  # no lock held: nothing to say
    with store.lock("import"):
        store.save(store.load(), command="state push")  # an explicit command wins
    assert [(h.serial, h.command) for h in store.history()] == [(4, "state push"), (3, ""), (2, "apply"), (1, "apply")]
    assert store.history()[0].to_dict()["counts"] == {"invoices": 0, "retired": 0}


def test_discard_removes_the_state_and_its_history(store: PostgresStore) -> None:
    store.save(new_state(ENV))
    store.discard()
    assert not store.exists() and store.history() == []


def test_two_schemas_in_one_database_are_independent(make_store: Any, pg_server: PgServer) -> None:
    here = make_store()
    there = make_store(schema=f"{here.schema}_other")
    try:
        saved = here.save(_state_with("acme-2025-07"))
        assert not there.exists() and there.pull() is None
        with here.lock("apply"):
            with there.lock("apply"):  # another schema: another lock
                assert there.lock_is_held()
        pulled = here.pull()
        assert pulled is not None
        there.push(pulled)  # a pull from one schema pushed to another gives the same state
        assert there.load() == saved
    finally:
        with pg_server.admin() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(there.schema)))


def test_environments_in_one_schema_are_independent(make_store: Any) -> None:
    production, staging = make_store(), make_store(environment="staging")
    production.save(_state_with("a"))
    assert not staging.exists()
    with production.lock("apply"), staging.lock("apply"):
        pass


# --- pull and push ---------------------------------------------------------------------------------


def test_push_into_an_empty_schema_keeps_lineage_and_serial(store: PostgresStore) -> None:
    from_files = _state_with("acme-2025-07").model_copy(update={"serial": 12})
    pushed = store.push(from_files)
    assert (pushed.lineage, pushed.serial) == (from_files.lineage, 12)
    assert store.load() == from_files
    assert store.history()[0].command == "state push"


def test_push_refuses_another_lineage_unless_forced(store: PostgresStore) -> None:
    current = store.save(_state_with("a"))
    stranger = _state_with("b").model_copy(update={"serial": 40})
    with pytest.raises(StateError, match="holds another state .*Push with --force"):
        store.push(stranger)
    assert store.load() == current
    store.push(stranger, force=True)
    assert store.load() == stranger
    assert [h.command for h in store.history()] == ["state push --force", ""]


def test_push_refuses_a_serial_that_is_not_higher_unless_forced(store: PostgresStore) -> None:
    current = store.save(store.save(_state_with("a")))  # serial 2
    for serial in (1, 2):
        with pytest.raises(StateError, match=f"is at serial 2 .*the one pushed is at serial {serial}, and only a higher serial"):
            store.push(current.model_copy(update={"serial": serial}))
    store.push(current.model_copy(update={"serial": 3}))
    older = current.model_copy(update={"serial": 1, "invoices": {}})
    store.push(older, force=True)
    assert store.load() == older
    assert [h.serial for h in store.history()] == [1, 3, 2, 1]
    # a run that loaded before the forced push cannot overwrite it
    with pytest.raises(StateError, match="has changed"):
        store.save(current.model_copy(update={"serial": 3}))


def test_push_refuses_a_state_of_another_environment(store: PostgresStore) -> None:
    with pytest.raises(StateError, match='environment "staging"'):
        store.push(new_state("staging"), force=True)


# --- journal ---------------------------------------------------------------------------------------


def _intent(address: str, n: int = 0) -> dict[str, Any]:
    return {"op": "intent", "address": address, "digest": f"sha256:{n}", "body": _body(rate="0.10"), "time": T0}


def test_journal_records_come_back_in_order_with_exact_money(store: PostgresStore, make_store: Any) -> None:
    assert not store.has_journal() and store.read_journal() == [] and store.journal_last_write() is None
    state = store.save(new_state(ENV))

    async def run() -> PgJournal:
        async with store.open_journal(lineage=state.lineage) as journal:
            journal.append_sync(_intent("a", 1))
            await asyncio.gather(*(journal.append(_intent(f"b{i}", i)) for i in range(5)))
            await journal.append({"op": "created", "address": "a", "id": 7, "digest": "sha256:1", "body": _body(rate="0.10"), "time": T0})
        return journal

    before = time.time()
    journal = asyncio.run(run())
    assert journal.closed and journal.appends == 7
    records = make_store().read_journal()
    assert [r["address"] for r in records] == ["a", "b0", "b1", "b2", "b3", "b4", "a"]
    assert all(r["lineage"] == state.lineage for r in records)
    assert str(records[0]["body"]["lines"][0]["rate"]) == "0.10"
    assert [r.line for r in records] == sorted(r.line for r in records)  # type: ignore[attr-defined]
    last = store.journal_last_write()
    assert last is not None and before - 5 < last < time.time() + 5
    folded, unresolved = fold_journal(state, records)
    assert folded.invoices["a"].id == 7 and [u.address for u in unresolved] == ["b0", "b1", "b2", "b3", "b4"]
    store.remove_journal()
    assert not store.has_journal() and store.read_journal() == []


def test_journal_refuses_an_unknown_op_and_a_foreign_lineage(store: PostgresStore) -> None:
    with store.open_journal(lineage="ours") as journal:
        with pytest.raises(ValueError, match="unknown journal record op 'launch'"):
            journal.append_sync({"op": "launch", "address": "a"})
        journal.append_sync(_intent("a"))
    with pytest.raises(StateError, match="belongs to another state: its records .row [0-9]+. carry lineage ours, this state.s is theirs"):
        store.open_journal(lineage="theirs")
    with pytest.raises(StateError, match="is closed"):
        journal.append_sync(_intent("b"))


def test_each_append_is_committed_before_it_returns(store: PostgresStore, make_store: Any) -> None:
    observer = make_store()
    seen: list[bool] = []

    async def run() -> None:
        async with store.open_journal() as journal:

            async def one(i: int) -> None:
                await journal.append(_intent(f"x{i}", i))
                addresses = {r["address"] for r in await asyncio.to_thread(observer.read_journal)}
                seen.append(f"x{i}" in addresses)

            await asyncio.gather(*(one(i) for i in range(20)))

    asyncio.run(run())
    assert seen == [True] * 20


async def _bench_group_commit(store: PostgresStore, *, appends: int, workers: int) -> dict[str, Any]:
    """``appends`` intents from ``workers`` concurrent tasks, each awaiting its append before the next
    (as apply's workers do before sending a create): how many commits they took."""
    started = time.perf_counter()
    async with store.open_journal(lineage="bench") as journal:

        async def worker(w: int) -> None:
            for i in range(w, appends, workers):
                await journal.append(_intent(f"inv-{i}", i))

        await asyncio.gather(*(worker(w) for w in range(workers)))
    seconds = time.perf_counter() - started
    return {"appends": journal.appends, "commits": journal.commits, "workers": workers, "seconds": round(seconds, 3)}


def test_concurrent_appends_share_commits(store: PostgresStore, capsys: pytest.CaptureFixture[str]) -> None:
    figures = []
    for workers in (2000, 16):
        store.remove_journal()
        figures.append(asyncio.run(_bench_group_commit(store, appends=2000, workers=workers)))
        assert len(store.read_journal()) == 2000
    with capsys.disabled():
        for f in figures:
            print(f"\ngroup commit: {f['appends']} appends from {f['workers']} concurrent tasks took {f['commits']} commits in {f['seconds']} s")
    assert all(f["appends"] == 2000 for f in figures)
    assert figures[0]["commits"] <= 10  # all at once: a handful of transactions
    assert figures[1]["commits"] <= 2000 // 4  # 16 workers: far fewer commits than appends


# --- lock ------------------------------------------------------------------------------------------


def test_a_second_run_is_refused_naming_the_holder(store: PostgresStore, make_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_JOB_URL", "https://gitlab.example/acme/invoices/-/jobs/7")
    other = make_store()
    assert not other.lock_is_held() and other.read_lock_info() is None
    with store.lock("apply --auto-approve"):
        assert other.lock_is_held()
        info = other.read_lock_info()
        assert info is not None
        assert (info.command, info.host, info.pid) == ("apply --auto-approve", socket.gethostname(), os.getpid())
        assert info.run_url == "https://gitlab.example/acme/invoices/-/jobs/7" and info.time
        with pytest.raises(LockError) as caught:
            with other.lock("plan"):
                pass
        message = str(caught.value)
        assert f"is locked by apply --auto-approve (pid {os.getpid()} on {socket.gethostname()}" in message
        assert "run https://gitlab.example/acme/invoices/-/jobs/7" in message
        assert "--lock-timeout SECONDS" in message and "invoicesync force-unlock" in message
    assert not other.lock_is_held() and other.read_lock_info() is None


def test_lock_timeout_waits_for_the_holder(store: PostgresStore, make_store: Any) -> None:
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.lock("apply"):
            taken.set()
            release.wait(10)
            time.sleep(0.5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        taken.wait(10)
        other = make_store()
        started = time.monotonic()
        with pytest.raises(LockError, match=r"locked by apply .* after waiting 0\.3 s"):
            with other.lock("plan", timeout=0.3):
                pass
        assert time.monotonic() - started >= 0.3
        release.set()
        started = time.monotonic()
        with other.lock("plan", timeout=10):
            waited = time.monotonic() - started
            assert other.read_lock_info().command == "plan"  # type: ignore[union-attr]
        assert 0.3 < waited < 5
    finally:
        release.set()
        holder.join()


_HOLDER = """
import os, sys, time
from invoicesync.state.postgres import PostgresStore
store = PostgresStore(os.environ["INVOICESYNC_PG_DSN"], schema=sys.argv[1], environment=sys.argv[2])
with store.lock("apply (killed holder)"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_sigkilled_holders_lock_is_taken_by_the_next_run_within_seconds(store: PostgresStore, dsn: str, pg_schema: str) -> None:
    store.exists()  # the tables, so the child only takes the lock
    env = {**os.environ, "INVOICESYNC_PG_DSN": dsn}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, pg_schema, ENV], stdout=subprocess.PIPE, env=env, text=True, cwd=os.getcwd()
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=rf"locked by apply \(killed holder\) \(pid {child.pid} on "):
            with store.lock("apply"):
                pass
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        started = time.monotonic()
        with store.lock("apply", timeout=30):
            taken_after = time.monotonic() - started
            assert store.read_lock_info().pid == os.getpid()  # type: ignore[union-attr]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert taken_after < 5


def test_a_blocked_run_waits_briefly_for_the_holders_row(store: PostgresStore, pg_server: PgServer, pg_schema: str) -> None:
    store.exists()
    key = _key("lock", pg_schema, ENV)
    with pg_server.admin() as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", key)  # locked, but its row not written yet
        # a row left by an earlier holder, whose session is gone, must not be taken for this one's
        holder.execute(
            sql.SQL("INSERT INTO {}.locks (environment, command, host, pid, backend_pid) VALUES (%s, 'stale', 'old', 1, 1)").format(sql.Identifier(pg_schema)),
            (ENV,),
        )
        started = time.monotonic()
        with pytest.raises(LockError, match=r"locked by another run \(server session \d+, which has not said who it is\)"):
            with store.lock("plan"):
                pass
        assert 1.5 < time.monotonic() - started < 5  # waited the 2 s for the row

        def write_row() -> None:
            time.sleep(0.5)
            holder.execute(
                sql.SQL("UPDATE {}.locks SET command = 'apply', host = 'runner-7', pid = 4242, backend_pid = pg_backend_pid()").format(sql.Identifier(pg_schema))
            )

        writer = threading.Thread(target=write_row)
        writer.start()
        try:
            with pytest.raises(LockError, match=r"locked by apply \(pid 4242 on runner-7"):
                with store.lock("plan"):
                    pass
        finally:
            writer.join()


def test_force_unlock_ends_a_live_holders_session(store: PostgresStore, make_store: Any) -> None:
    admin = make_store()
    with store.lock("apply"):
        assert admin.read_lock_info().command == "apply"  # type: ignore[union-attr]
        info = admin.force_unlock()
        assert info is not None and info.command == "apply" and info.pid == os.getpid()
        assert not admin.lock_is_held() and admin.read_lock_info() is None
        with admin.lock("plan"):
            assert admin.read_lock_info().command == "plan"  # type: ignore[union-attr]
    # the holder's block ended without an error although its session was gone
    assert admin.force_unlock() is None


def test_a_role_that_may_not_end_others_sessions_is_told_so(store: PostgresStore, pg_server: PgServer, pg_schema: str) -> None:
    store.exists()
    schema = sql.Identifier(pg_schema)
    with pg_server.admin() as conn:  # a runtime role: uses the tables, may create nothing
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO reader").format(schema))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO reader").format(schema))
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO reader").format(schema))
    reader = PostgresStore(pg_server.dsn(user="reader"), schema=pg_schema, environment=ENV)
    try:
        reader.save(new_state(ENV), command="apply")  # tables that exist need no CREATE privilege
        with store.lock("apply"):
            with pytest.raises(StateError, match=r"cannot end the session holding the lock .*pg_terminate_backend\(\d+\)"):
                reader.force_unlock()
            assert reader.lock_is_held() and reader.read_lock_info().command == "apply"  # type: ignore[union-attr]
    finally:
        reader.close()


def test_sessions_outlive_a_server_idle_timeout(store: PostgresStore, pg_server: PgServer) -> None:
    with pg_server.admin() as conn:
        conn.execute("ALTER ROLE invoicesync IN DATABASE invoicesync SET idle_session_timeout = '200ms'")
    try:
        store.exists()
        with store.lock("apply"), store.open_journal() as journal:
            time.sleep(0.6)  # every session of the run idle for three timeouts
            journal.append_sync(_intent("a"))
            assert store.lock_is_held() and len(store.read_journal()) == 1
    finally:
        with pg_server.admin() as conn:
            conn.execute("ALTER ROLE invoicesync IN DATABASE invoicesync RESET idle_session_timeout")


def test_the_lock_session_sets_keepalives(store: PostgresStore, pg_server: PgServer) -> None:
    with store.lock("apply"):
        with pg_server.admin() as conn:
            pid = conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            ).fetchone()
            assert pid is not None
        info = store.read_lock_info()
        assert info is not None and info.backend_pid == pid[0]
    # keepalives are per session: read them back on a session that made the same settings
    conn2 = store._lock_connection()  # noqa: SLF001 (the exact session settings the lock uses)
    try:
        settings = dict(conn2.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('tcp_keepalives_idle', 'tcp_keepalives_interval',"
            " 'tcp_keepalives_count', 'client_connection_check_interval', 'idle_session_timeout')"
        ).fetchall())
    finally:
        conn2.close()
    assert (settings["tcp_keepalives_idle"], settings["tcp_keepalives_interval"], settings["tcp_keepalives_count"]) == ("10", "5", "6")
    # both exist from PostgreSQL 14 on
    assert settings.get("client_connection_check_interval", "10000") == "10000"
    assert settings.get("idle_session_timeout", "0") == "0"


# --- bad connection strings ------------------------------------------------------------------------


def _texts(exc: BaseException) -> str:
    """str and repr of an exception and of every exception chained to it."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unreachable", "Connection refused"),
        ("wrong password", "password authentication failed"),
        ("missing database", 'database "nosuchdb" does not exist'),
        ("missing privileges", "permission denied"),
    ],
)
def test_a_bad_connection_gives_a_clear_error_without_the_password(pg_server: PgServer, pg_schema: str, case: str, expected: str) -> None:
    password = pg_server.password
    if case == "unreachable":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens there once closed
        dsn, database = pg_server.dsn(port=port), "invoicesync"
    elif case == "wrong password":
        password = "Wr0ng-but-secret-pw-" + pg_server.password[:6]
        dsn, database = pg_server.dsn(password=password), "invoicesync"
    elif case == "missing database":
        dsn, database = pg_server.dsn(database="nosuchdb"), "nosuchdb"
    else:
        password = pg_server.reader_password
        dsn, database = pg_server.dsn(user="reader"), "invoicesync"
    store = PostgresStore(dsn, schema=pg_schema, environment=ENV)
    try:
        with pytest.raises(StateError) as caught:
            store.load()
    finally:
        store.close()
    text = _texts(caught.value)
    assert expected in str(caught.value)
    assert "127.0.0.1" in str(caught.value) and database in str(caught.value)
    assert password not in text and dsn not in text
    assert password not in store.display and password not in repr(store)


def test_the_journal_and_lock_report_connection_errors_the_same_way(pg_server: PgServer, pg_schema: str) -> None:
    dsn = pg_server.dsn(password="another-Secret-9")
    store = PostgresStore(dsn, schema=pg_schema, environment=ENV, dsn_env="TEAM_PG")
    for action in (store.open_journal, lambda: store.lock("apply").__enter__(), store.history, store.force_unlock):
        with pytest.raises(StateError) as caught:
            action()
        assert "TEAM_PG" in str(caught.value) and "another-Secret-9" not in _texts(caught.value)


def test_an_unparseable_connection_string_is_not_echoed(pg_schema: str) -> None:
    store = PostgresStore("host=db password=hunter2-secret bogus", schema=pg_schema, environment=ENV)
    with pytest.raises(StateError, match="INVOICESYNC_PG_DSN cannot be parsed") as caught:
        store.exists()
    assert "hunter2" not in _texts(caught.value)
    with pytest.raises(StateError, match="INVOICESYNC_PG_DSN is empty"):
        PostgresStore("", schema=pg_schema, environment=ENV).exists()


def test_a_password_that_is_also_a_name_in_the_message_is_scrubbed(pg_server: PgServer, pg_schema: str) -> None:
    password = pg_server.password
    dsn = f"postgresql://invoicesync:{password}@127.0.0.1:{pg_server.port}/{password}"  # the server echoes the database
    store = PostgresStore(dsn, schema=pg_schema, environment=ENV)
    with pytest.raises(StateError, match='database "\\*\\*\\*" does not exist') as caught:
        store.exists()
    assert password not in _texts(caught.value) and password not in store.display


def test_display_names_server_schema_and_environment(pg_server: PgServer, pg_schema: str) -> None:
    store = PostgresStore(pg_server.dsn(), schema=pg_schema, environment=ENV)
    assert store.display == f"postgresql://127.0.0.1:{pg_server.port}/invoicesync (schema {pg_schema}, environment {ENV})"
