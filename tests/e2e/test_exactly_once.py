"""Exactly-once creation under faults: 5xx, 429 and commit-then-drop all on, the sandbox ignoring
Idempotency-Key (as the real API may), and the CLI killed with SIGKILL at random moments.

Each seed: kill `apply` mid-flight a few times, then run it again until `plan --detailed-exitcode`
exits 0; every address must then exist on the server exactly once, with its id in the state.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.conftest import SandboxServer, Workspace
from tests.e2e.specs import load

SEEDS = list(range(1, 21))
INVOICES = 24
TOTALS: Counter[str] = Counter()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_every_invoice_exists_exactly_once_after_faults_and_kills(seed: int, workspace: Workspace, sandbox_server: SandboxServer) -> None:
    rng = random.Random(seed)
    workspace.write("specs/load.yaml", load(INVOICES))
    sandbox_server.set_faults(latency_ms=10, fail_rate=0.15, throttle_rate=0.1, drop_rate=0.15, seed=seed, retry_after=0)
    workspace.env["INVOICESYNC_RETRY_BASE"] = "0.01"
    journal = workspace.root / "state" / "e2e.journal"

    kills = 0
    for _ in range(3):
        proc = workspace.spawn("apply", "--auto-approve", "--parallelism", "4")
        # Kill while creates are in flight: once the journal exists, at a random moment.
        deadline = time.monotonic() + 10
        while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.15))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()

    runs = 0
    while True:
        runs += 1
        assert runs <= 10, "did not converge"
        applied = workspace.run("apply", "--auto-approve", "--parallelism", "4")
        assert "Traceback" not in applied.output
        if applied.exit_code == 0 and workspace.run("plan", "--detailed-exitcode").exit_code == 0:
            break

    live = [i for i in sandbox_server.invoices() if i.get("status") != "voided"]
    by_source = Counter(i["source_id"] for i in live)
    state = workspace.state()
    assert sorted(state["invoices"]) == [f"inv-{i:03d}" for i in range(INVOICES)]
    for address, record in state["invoices"].items():
        source_id = f"{state['lineage']}/{address}"
        assert by_source[source_id] == 1, f"{address} exists {by_source[source_id]} times"
        assert [i["id"] for i in live if i["source_id"] == source_id] == [record["id"]]
    assert len(live) == INVOICES

    stats: dict[str, Any] = sandbox_server.sandbox.stats()
    TOTALS["seeds"] += 1
    TOTALS["kills"] += kills
    TOTALS["converging_runs"] += runs
    TOTALS["invoices"] += INVOICES
    for key in ("requests", "failed", "throttled", "dropped"):
        TOTALS[key] += int(stats.get(key, 0) or 0)
