"""Team state on PostgreSQL end to end: the real CLI, the sandbox over loopback, a real PostgreSQL server.

CI runners share no disk: every run here starts from a fresh copy of the workspace (specs and
config, no ``state/`` folder), as a runner checks out the repository. With the state in PostgreSQL,
a runner lost mid-apply (SIGKILL) costs nothing: the next runner, anywhere, recovers its journal.
The same scenario on local files makes duplicates, which shows the test can fail.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import API_KEY, CONFIG, SandboxServer, Workspace
from tests.e2e.specs import load
from tests.gateway import Gateway
from tests.pg import PgServer, pg_schema, pg_server  # noqa: F401  (fixtures)

ENV = "e2e"
BACKEND = """
[tool.invoicesync.backend]
type = "postgres"
schema = "{schema}"
"""


@dataclass
class Team:
    """A workspace as it is in git (specs and config, never state/), and fresh runner checkouts of it."""

    origin: Path
    env: dict[str, str]
    capsys: Any
    pg: PgServer
    schema: str
    runs: int = 0

    def checkout(self) -> Workspace:
        """A fresh runner: a new copy of the workspace, with no state/ folder."""
        self.runs += 1
        root = self.origin.parent / f"runner-{self.runs:02d}"
        shutil.copytree(self.origin, root, ignore=shutil.ignore_patterns("state"))
        return Workspace(root, env=dict(self.env), capsys=self.capsys)

    def write(self, relpath: str, text: str) -> None:
        path = self.origin / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def use_schema(self, schema: str) -> None:
        config = self.origin / "pyproject.toml"
        config.write_text(re.sub(r'schema = "[^"]*"', f'schema = "{schema}"', config.read_text()))

    def query(self, text: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows from the schema's tables ([] when they do not exist yet), as the superuser."""
        with self.pg.admin() as conn:
            try:
                return conn.execute(sql.SQL(text).format(schema=sql.Identifier(self.schema)), args).fetchall()
            except psycopg.errors.UndefinedTable:
                return []

    def schema_exists(self, name: str | None = None) -> bool:
        with self.pg.admin() as conn:
            row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name or self.schema,)).fetchone()
        return row is not None


def _team(tmp_path: Path, url: str, capsys: Any, pg: PgServer, schema: str, *, postgres: bool = True) -> Team:
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "specs").mkdir()
    (origin / "pyproject.toml").write_text(CONFIG.format(url=url) + (BACKEND.format(schema=schema) if postgres else ""))
    env = {"CAMPFIRE_API_KEY": API_KEY, "INVOICESYNC_PG_DSN": pg.dsn(), "NO_COLOR": "1"}
    return Team(origin, env, capsys, pg, schema)


@pytest.fixture
def team(tmp_path: Path, sandbox_server: SandboxServer, capsys: Any, pg_server: PgServer, pg_schema: str) -> Team:
    return _team(tmp_path, sandbox_server.url, capsys, pg_server, pg_schema)


@pytest.fixture
def files_team(tmp_path: Path, sandbox_server: SandboxServer, capsys: Any, pg_server: PgServer, pg_schema: str) -> Team:
    return _team(tmp_path, sandbox_server.url, capsys, pg_server, pg_schema, postgres=False)


def _live_by_address(server: SandboxServer) -> Counter[str]:
    """How many live (not voided) invoices each address has in Campfire, whatever lineage made them."""
    live = [i for i in server.invoices() if i.get("status") != "voided"]
    return Counter(str(i["source_id"]).rpartition("/")[2] for i in live)


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def _wait_for(condition: Callable[[], bool], timeout: float, proc: subprocess.Popen[str] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


# --- runner loss: exactly once across runners that share nothing ------------------------------------------

INVOICES = 60


def _kill_three_runners(team: Team, server: SandboxServer, rng: random.Random, carry: Callable[[Workspace, Workspace | None], None]) -> int:
    """Fresh runners, each SIGKILLed mid-apply once creates are landing, until three were; returns how many were killed.

    On a loaded machine a runner can finish before the kill lands: another one is started then (at most six).
    """
    kills = 0
    previous: Workspace | None = None
    for _ in range(6):
        if kills == 3:
            break
        runner = team.checkout()
        carry(runner, previous)
        before = len(server.invoices())
        proc = runner.spawn("apply", "--auto-approve", "--parallelism", "4")
        # Once a create has landed (so a lost journal means a lost invoice), at a random moment after.
        _wait_for(lambda: len(server.invoices()) > before, 20, proc)
        time.sleep(rng.uniform(0, 0.1))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
        previous = None  # a killed runner never gets to hand anything on
    return kills


def _converge(team: Team, carry: Callable[[Workspace, Workspace | None], None]) -> Workspace:
    """Fresh runners apply until a fresh runner's `plan --detailed-exitcode` says there is nothing to do."""
    previous: Workspace | None = None
    for _ in range(8):
        runner = team.checkout()
        carry(runner, previous)
        applied = runner.run("apply", "--auto-approve", "--parallelism", "4")
        assert "Traceback" not in applied.output
        previous = runner
        checker = team.checkout()
        carry(checker, previous)
        if checker.run("plan", "--detailed-exitcode").exit_code == 0:
            return checker
    raise AssertionError("did not converge")


def _nothing_carried(runner: Workspace, previous: Workspace | None) -> None:
    """PostgreSQL: runners hand nothing to each other; the database is the only thing they share."""


def _state_committed_to_git(runner: Workspace, previous: Workspace | None) -> None:
    """Local files: the state file a finished runner committed back to git; never a dead runner's journal."""
    if previous is not None and (previous.root / "state" / f"{ENV}.json").exists():
        (runner.root / "state").mkdir(exist_ok=True)
        shutil.copy2(previous.root / "state" / f"{ENV}.json", runner.root / "state" / f"{ENV}.json")


def _faults(server: SandboxServer, seed: int, workspace_env: dict[str, str]) -> None:
    server.set_faults(latency_ms=10, fail_rate=0.15, throttle_rate=0.1, drop_rate=0.15, seed=seed, retry_after=0)
    workspace_env["INVOICESYNC_RETRY_BASE"] = "0.01"


@pytest.mark.parametrize("seed", [1, 2])
def test_runners_lost_mid_apply_leave_no_duplicates_with_postgres_state(seed: int, team: Team, sandbox_server: SandboxServer) -> None:
    team.write("specs/load.yaml", load(INVOICES))
    _faults(sandbox_server, seed, team.env)

    kills = _kill_three_runners(team, sandbox_server, random.Random(seed), _nothing_carried)
    assert kills == 3
    last = _converge(team, _nothing_carried)

    per_address = _live_by_address(sandbox_server)
    duplicates = {a: n for a, n in per_address.items() if n > 1}
    missing = [f"inv-{i:03d}" for i in range(INVOICES) if per_address[f"inv-{i:03d}"] == 0]
    assert duplicates == {} and missing == []
    state = json.loads(_ok(last.run("state", "pull")).stdout)
    assert sorted(state["invoices"]) == [f"inv-{i:03d}" for i in range(INVOICES)]
    live_ids = {i["id"] for i in sandbox_server.invoices() if i.get("status") != "voided"}
    assert {r["id"] for r in state["invoices"].values()} == live_ids
    assert team.query("SELECT count(*) FROM {schema}.journal") == [(0,)]  # every journal was folded
    stats = sandbox_server.sandbox.stats()
    assert stats["failed"] and stats["throttled"] and stats["dropped"]  # the faults did happen


def test_the_same_lost_runners_with_local_files_make_duplicates(files_team: Team, sandbox_server: SandboxServer) -> None:
    # The control: the state file committed to git by finished runs, the dead runs' journals lost with them.
    team = files_team
    team.write("specs/load.yaml", load(INVOICES))
    _faults(sandbox_server, 1, team.env)

    assert _kill_three_runners(team, sandbox_server, random.Random(1), _state_committed_to_git) == 3
    _converge(team, _state_committed_to_git)

    per_address = _live_by_address(sandbox_server)
    assert all(per_address[f"inv-{i:03d}"] >= 1 for i in range(INVOICES))
    duplicates = sum(n - 1 for n in per_address.values())
    print(f"local files, 3 lost runners: {duplicates} duplicate invoices over {INVOICES} addresses")  # shown with -s
    assert duplicates > 0, "local files on lost runners should have made duplicates"


def test_a_fresh_runner_waits_out_the_settle_window_of_a_lost_runners_creates(team: Team, sandbox_server: SandboxServer) -> None:
    # A gateway answers every create 504 and the sandbox commits it 0.6-2.4 s later (tests/gateway.py):
    # the runner is killed with creates in flight, and the next runner, elsewhere, must wait out their
    # settle window (3 s) from the journal rows' times before it may conclude that one never landed.
    gateway = Gateway(sandbox_server.url, gateway_timeout=0.3, commit_min=0.6, commit_max=2.4, slow_rate=1.0, seed=7)
    with gateway:
        config = team.origin / "pyproject.toml"
        text = re.sub(r'base_url = "[^"]*"', f'base_url = "{gateway.url}"', config.read_text())
        config.write_text(re.sub(r"settle = [0-9.]+", "settle = 3", text))
        team.write("specs/settle.yaml", load(10, month=10, number_prefix="SETTLE"))
        team.env["INVOICESYNC_RETRY_BASE"] = "0.01"

        proc = team.checkout().spawn("apply", "--auto-approve", "--parallelism", "4")
        assert _wait_for(lambda: gateway.stats()["creates"] >= 4, 20, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert gateway.stats()["commits_pending"] > 0, "nothing was left in flight at the kill"

        last = team.checkout()
        applied = last.run("apply", "--auto-approve", "--parallelism", "4")
        assert applied.exit_code == 0, applied.output
        assert "to settle" in applied.stderr  # the recovery waited for the lost runner's creates
        gateway.wait_for_commits()

    per_address = _live_by_address(sandbox_server)
    assert sorted(per_address.items()) == [(f"inv-{i:03d}", 1) for i in range(10)]
    state = json.loads(_ok(team.checkout().run("state", "pull")).stdout)
    live_ids = {i["id"] for i in sandbox_server.invoices() if i.get("status") != "voided"}
    assert {r["id"] for r in state["invoices"].values()} == live_ids and len(state["invoices"]) == 10


# --- races ---------------------------------------------------------------------------------------------------------


def test_two_runners_at_once_one_applies_and_the_other_is_refused_naming_it(team: Team, sandbox_server: SandboxServer) -> None:
    team.write("specs/load.yaml", load(30))
    sandbox_server.set_faults(latency_ms=100)
    first, second = team.checkout(), team.checkout()
    procs = [w.spawn("apply", "--auto-approve", "--parallelism", "2") for w in (first, second)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]

    codes = sorted(r[2] for r in results)
    assert codes == [0, 1], results
    winner, loser = (0, 1) if results[0][2] == 0 else (1, 0)
    message = results[loser][1]
    assert f"is locked by apply (pid {procs[winner].pid} on {socket.gethostname()}" in message
    assert "--lock-timeout" in message and "Traceback" not in message
    assert max(_live_by_address(sandbox_server).values()) == 1 and len(sandbox_server.invoices()) == 30


def test_two_runners_at_once_the_second_waits_for_the_lock_and_finds_nothing_to_do(team: Team, sandbox_server: SandboxServer) -> None:
    team.write("specs/load.yaml", load(30))
    sandbox_server.set_faults(latency_ms=50)
    procs = [w.spawn("apply", "--auto-approve", "--lock-timeout", "60") for w in (team.checkout(), team.checkout())]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]

    assert [r[2] for r in results] == [0, 0], results
    assert sorted("No changes" in r[0] for r in results) == [False, True]
    assert max(_live_by_address(sandbox_server).values()) == 1 and len(sandbox_server.invoices()) == 30


def test_a_sigkilled_holders_lock_is_taken_by_the_next_runner_within_30_s(team: Team, sandbox_server: SandboxServer) -> None:
    team.write("specs/load.yaml", load(30))
    sandbox_server.set_faults(latency_ms=200)
    holder = team.checkout().spawn("apply", "--auto-approve", "--parallelism", "2")
    assert _wait_for(lambda: bool(team.query("SELECT pid FROM {schema}.locks")) and len(sandbox_server.invoices()) > 0, 30, holder)
    assert team.query("SELECT pid FROM {schema}.locks") == [(holder.pid,)]
    holder.send_signal(signal.SIGKILL)
    holder.communicate()

    sandbox_server.set_faults(latency_ms=0)
    started = time.monotonic()
    nxt = team.checkout().run_process("apply", "--auto-approve", "--lock-timeout", "30")
    assert nxt.exit_code == 0, nxt.output
    assert time.monotonic() - started < 30
    assert "Recovered the journal of an interrupted run" in nxt.stderr
    assert max(_live_by_address(sandbox_server).values()) == 1 and len(sandbox_server.invoices()) == 30
    assert team.query("SELECT pid FROM {schema}.locks") == []


def test_force_unlock_says_whose_lock_it_is_and_ends_that_session(team: Team, pg_server: PgServer) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\nfrom invoicesync.state.postgres import PostgresStore\n"
            f"store = PostgresStore({pg_server.dsn()!r}, schema={team.schema!r}, environment={ENV!r})\n"
            "with store.lock('apply'):\n    print('locked', flush=True)\n    time.sleep(60)\n"
        )],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    team.write("specs/a.yaml", load(1))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        runner = team.checkout()
        result = _ok(runner.run("force-unlock"))
        assert f"held by apply (pid {holder.pid} on {socket.gethostname()}" in result.stderr
        assert f"Ended the session of apply (pid {holder.pid}" in result.stdout
        assert team.query("SELECT pid FROM {schema}.locks") == []
        assert _ok(runner.run("plan", "--refresh=false")).exit_code == 0  # the lock is free
        assert "There was no lock." in _ok(runner.run("force-unlock")).stdout
    finally:
        holder.kill()
        holder.communicate()


# --- history, pull and push -------------------------------------------------------------------------------------


def test_state_history_lists_every_serial_with_its_command_and_who(team: Team, sandbox_server: SandboxServer) -> None:
    team.write("specs/a.yaml", load(3))
    _ok(team.checkout().run("apply", "--auto-approve"))
    runner = team.checkout()
    _ok(runner.run("state", "rm", "inv-002"))
    _ok(runner.run("apply", "--auto-approve"))  # inv-002 is created again

    history = json.loads(_ok(team.checkout().run("state", "history", "--json")).stdout)
    assert [h["serial"] for h in history] == [4, 3, 2, 1]
    assert [h["command"] for h in history] == ["apply", "state rm", "apply", "apply"]
    assert [h["counts"]["invoices"] for h in history] == [3, 2, 3, 0]
    assert all(set(h) == {"serial", "time", "command", "host", "user", "run_url", "counts"} for h in history)
    assert {h["host"] for h in history} == {socket.gethostname()}

    text = _ok(team.checkout().run("state", "history")).stdout.splitlines()
    assert text[0].split() == ["SERIAL", "TIME", "COMMAND", "WHO", "INVOICES", "RETIRED"]
    assert [line.split()[0] for line in text[1:]] == ["4", "3", "2", "1"]
    assert text[2].split()[2:4] == ["state", "rm"]


def test_pull_from_one_schema_and_push_into_another_gives_a_plan_without_changes(team: Team, tmp_path: Path) -> None:
    team.write("specs/a.yaml", load(4))
    _ok(team.checkout().run("apply", "--auto-approve"))
    pulled = _ok(team.checkout().run("state", "pull")).stdout
    saved = tmp_path / "pulled.json"
    saved.write_text(pulled)
    state = json.loads(pulled)

    other_schema = team.schema + "_b"
    team.use_schema(other_schema)
    try:
        runner = team.checkout()
        assert runner.run("state", "pull").exit_code == 1
        pushed = _ok(runner.run("state", "push", str(saved)))
        assert f"Pushed serial {state['serial']} (lineage {state['lineage']}, 4 invoices)" in pushed.stdout
        assert _ok(team.checkout().run("plan", "--detailed-exitcode")).exit_code == 0
        assert json.loads(_ok(team.checkout().run("state", "pull")).stdout) == state  # lineage and serial kept
        again = team.checkout().run("state", "push", str(saved))  # the same serial again
        assert again.exit_code == 1 and f"is at serial {state['serial']}" in again.stderr and "--force" in again.stderr
    finally:
        with team.pg.admin() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other_schema)))


def test_a_push_of_another_lineage_is_refused_unless_forced(team: Team, tmp_path: Path) -> None:
    team.write("specs/a.yaml", load(2))
    _ok(team.checkout().run("apply", "--auto-approve"))
    current = json.loads(_ok(team.checkout().run("state", "pull")).stdout)
    foreign = {**current, "lineage": "00000000-0000-4000-8000-000000000000", "serial": current["serial"] + 5}
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(foreign))

    refused = team.checkout().run("state", "push", str(path))
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"holds another state (lineage {current['lineage']}" in refused.stderr and "--force" in refused.stderr
    assert json.loads(_ok(team.checkout().run("state", "pull")).stdout) == current  # unchanged

    _ok(team.checkout().run("state", "push", "--force", str(path)))
    history = json.loads(_ok(team.checkout().run("state", "history", "--json")).stdout)
    assert history[0]["command"] == "state push --force" and history[1]["serial"] == current["serial"]


def test_moving_from_files_to_postgres_is_one_state_push(files_team: Team, sandbox_server: SandboxServer) -> None:
    team = files_team
    team.write("specs/a.yaml", load(5))
    laptop = Workspace(team.origin, env=dict(team.env), capsys=team.capsys)  # one person's workspace, state in files
    _ok(laptop.run("apply", "--auto-approve"))
    local = laptop.state()
    history = laptop.run("state", "history")
    assert history.exit_code == 1 and "keeps no history" in history.stderr and ".backup" in history.stderr

    config = team.origin / "pyproject.toml"
    config.write_text(config.read_text() + BACKEND.format(schema=team.schema))
    pushed = _ok(laptop.run("state", "push", f"state/{ENV}.json"))
    assert f"Pushed serial {local['serial']}" in pushed.stdout and f"(schema {team.schema})" in pushed.stdout

    runner = team.checkout()  # a CI runner: no state/ folder, the config says PostgreSQL
    assert _ok(runner.run("plan", "--detailed-exitcode")).exit_code == 0
    assert json.loads(_ok(runner.run("state", "pull")).stdout)["lineage"] == local["lineage"]
    assert len(sandbox_server.invoices()) == 5


def test_pull_and_push_work_on_local_files_too(files_team: Team, tmp_path: Path) -> None:
    team = files_team
    team.write("specs/a.yaml", load(2))
    ws = Workspace(team.origin, env=dict(team.env), capsys=team.capsys)
    none_yet = ws.run("state", "pull")
    assert none_yet.exit_code == 1 and "no state yet" in none_yet.stderr
    _ok(ws.run("apply", "--auto-approve"))
    pulled = json.loads(_ok(ws.run("state", "pull")).stdout)
    assert pulled == ws.state()
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**pulled, "serial": pulled["serial"] + 1}))
    _ok(ws.run("state", "push", str(newer)))
    assert ws.state()["serial"] == pulled["serial"] + 1
    assert json.loads((ws.root / "state" / f"{ENV}.json.backup").read_text())["serial"] == pulled["serial"]
    refused = ws.run("state", "push", str(newer))
    assert refused.exit_code == 1 and "only a higher serial replaces it" in refused.stderr


def test_environments_lists_each_with_endpoint_backend_and_serial(team: Team, sandbox_server: SandboxServer) -> None:
    config = team.origin / "pyproject.toml"
    config.write_text(config.read_text() + '\n[tool.invoicesync.environments.demo]\nendpoint = "sandbox"\n'
                      '[tool.invoicesync.environments.demo.backend]\ntype = "local"\n')
    team.write("specs/a.yaml", load(2))
    runner = team.checkout()
    _ok(runner.run("apply", "--auto-approve"))
    listed = {e["name"]: e for e in json.loads(_ok(runner.run("environments", "--json")).stdout)}
    assert listed[ENV]["endpoint"] == sandbox_server.url and listed[ENV]["serial"] == 2 and listed[ENV]["chosen"]
    assert listed[ENV]["backend"] == f"postgresql://127.0.0.1:{team.pg.port}/invoicesync (schema {team.schema})"
    assert listed["demo"] == {"name": "demo", "endpoint": "sandbox", "backend": "local files in state/", "serial": None,
                              "problem": None, "chosen": False}
    text = _ok(runner.run("environments")).stdout
    assert team.pg.password not in text and re.search(rf"^\*\s+{ENV}\s+{re.escape(sandbox_server.url)}\s", text, re.M)


# --- bad input ------------------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bad_dsns(pg_server: PgServer) -> Iterator[dict[str, tuple[str, str]]]:
    """name -> (connection string, what the message must say)."""
    yield {
        "unreachable": (pg_server.dsn(port=_closed_port()), "Connection refused"),
        "wrong password": (pg_server.dsn(password="not-the-password-9f2"), "password authentication failed"),
        "missing privileges": (pg_server.dsn(user="reader"), "needs CREATE on database invoicesync"),
    }


@pytest.mark.parametrize("case", ["unreachable", "wrong password", "missing privileges"])
@pytest.mark.parametrize("command", [("apply", "--auto-approve"), ("plan",), ("state", "history")])
def test_a_database_that_cannot_be_used_is_a_clear_error_and_nothing_is_written(
    case: str, command: tuple[str, ...], team: Team, sandbox_server: SandboxServer, bad_dsns: dict[str, tuple[str, str]],
) -> None:
    dsn, expected = bad_dsns[case]
    team.write("specs/a.yaml", load(3))
    runner = team.checkout()
    runner.env["INVOICESYNC_PG_DSN"] = dsn
    result = runner.run(*command)

    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.stderr.startswith("Error: ")
    assert "127.0.0.1" in result.stderr and "invoicesync" in result.stderr and expected in result.stderr
    for secret in (team.pg.password, team.pg.reader_password, "not-the-password-9f2", dsn):
        assert secret not in result.output
    assert sandbox_server.invoices() == []  # nothing created in Campfire
    assert not team.schema_exists()  # nothing half-written in the database
    assert not (runner.root / "state" / f"{ENV}.json").exists()


def test_an_unset_connection_string_variable_is_named(team: Team, sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    team.write("specs/a.yaml", load(1))
    runner = team.checkout()
    del runner.env["INVOICESYNC_PG_DSN"]
    monkeypatch.delenv("INVOICESYNC_PG_DSN", raising=False)
    result = runner.run("apply", "--auto-approve")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("Error: INVOICESYNC_PG_DSN is not set: the state of environment \"e2e\" is kept in PostgreSQL")
    assert sandbox_server.invoices() == []
