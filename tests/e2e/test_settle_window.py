"""The settle window, end to end: the real CLI against the sandbox behind a gateway that answers every
create ``504 Gateway Timeout`` while the sandbox commits it later (``tests/gateway.py``), the sandbox
ignoring Idempotency-Key as the real API may.

A create answered 504 may still land: the look-up the tool makes at once finds nothing, the invoice
appears a moment later. The tool must not send it again before ``settle`` seconds have passed since
that send and a second look-up has found nothing (DESIGN.md, "The settle window"), in a run and in
the recovery after a SIGKILL. The gateway's commits land 0.6-2.4 s after a create reaches it, after
its 504 (0.3 s) and after the tool's first look-up; ``settle`` is 3 s, above the worst of them.

``test_control_without_a_window_the_gateway_makes_duplicates`` is a control: with ``settle = 0`` the
same gateway does turn creates into duplicates, which shows the other tests can fail.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import SandboxServer, Workspace
from tests.e2e.specs import load
from tests.gateway import Gateway

GATEWAY_TIMEOUT = 0.3
COMMIT_MIN, COMMIT_MAX = 0.6, 2.4
SETTLE = 3.0
INVOICES = 10

CONFIG = """\
[tool.invoicesync]
default_environment = "e2e"

[tool.invoicesync.environments.e2e]
base_url = "{url}"
timeout = 1  # the gateway answers within GATEWAY_TIMEOUT; the read timeout is not what is tested here
settle = {settle}
"""


@pytest.fixture
def gateway(sandbox_server: SandboxServer) -> Iterator[Gateway]:
    proxy = Gateway(sandbox_server.url, gateway_timeout=GATEWAY_TIMEOUT, commit_min=COMMIT_MIN, commit_max=COMMIT_MAX,
                    slow_rate=1.0, seed=7)
    with proxy:
        yield proxy


def _use_gateway(workspace: Workspace, gateway: Gateway, *, settle: float, invoices: int = INVOICES) -> None:
    workspace.write("pyproject.toml", CONFIG.format(url=gateway.url, settle=settle))
    workspace.write("specs/settle.yaml", load(invoices, month=10, number_prefix="SETTLE"))
    # Quick resends: a tool that sends a create again soon after its look-up is caught at once.
    workspace.env["INVOICESYNC_RETRY_BASE"] = "0.01"


def _live_counts(sandbox_server: SandboxServer) -> tuple[list[dict[str, Any]], Counter[str], Counter[str]]:
    live = [i for i in sandbox_server.invoices() if i.get("status") != "voided" and not i.get("is_deleted")]
    return live, Counter(i["source_id"] for i in live), Counter(i["invoice_number"] for i in live)


def _assert_each_address_exactly_once(workspace: Workspace, sandbox_server: SandboxServer, gateway: Gateway,
                                      n: int = INVOICES) -> None:
    gateway.wait_for_commits()  # the final upstream state: every create the gateway gave up on has landed
    live, by_source, by_number = _live_counts(sandbox_server)
    state = workspace.state()
    assert state, "no state was written"
    expected = [f"inv-{i:03d}" for i in range(n)]
    wrong = {
        address: (by_source[f"{state['lineage']}/{address}"], by_number[f"SETTLE-{i:03d}"])
        for i, address in enumerate(expected)
        if (by_source[f"{state['lineage']}/{address}"], by_number[f"SETTLE-{i:03d}"]) != (1, 1)
    }
    assert not wrong, f"(by source_id, by invoice number) counts != (1, 1): {wrong}; gateway {gateway.stats()}"
    assert len(live) == n
    assert sorted(state["invoices"]) == expected
    for address, record in state["invoices"].items():
        source_id = f"{state['lineage']}/{address}"
        assert [i["id"] for i in live if i["source_id"] == source_id] == [record["id"]], address


def test_every_504_create_exists_once_after_apply(workspace: Workspace, sandbox_server: SandboxServer,
                                                   gateway: Gateway) -> None:
    _use_gateway(workspace, gateway, settle=SETTLE)

    applied = workspace.run("apply", "--auto-approve", "--parallelism", "4")

    assert "Traceback" not in applied.output
    _assert_each_address_exactly_once(workspace, sandbox_server, gateway)
    assert applied.exit_code == 0, applied.output
    assert gateway.stats()["gateway_timeouts"] == INVOICES  # each create sent once, each answered 504
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


def test_other_creates_go_on_while_windows_are_open(workspace: Workspace, sandbox_server: SandboxServer,
                                                    gateway: Gateway) -> None:
    # 12 creates, 4 at a time, each answered 504 and waiting out its window: about one window in all
    # when the waits overlap, three when each holds its slot.
    _use_gateway(workspace, gateway, settle=SETTLE, invoices=12)

    started = time.monotonic()
    applied = workspace.run("apply", "--auto-approve", "--parallelism", "4")
    elapsed = time.monotonic() - started

    _assert_each_address_exactly_once(workspace, sandbox_server, gateway, n=12)
    assert applied.exit_code == 0, applied.output
    assert elapsed < 2 * SETTLE + 1, f"apply took {elapsed:.1f} s: the settle windows did not overlap"


@pytest.mark.parametrize("kill_after_creates", [4, 6], ids=["first-creates-in-flight", "first-windows-open"])
def test_recovery_after_sigkill_waits_for_creates_in_flight(workspace: Workspace, sandbox_server: SandboxServer,
                                                            gateway: Gateway, kill_after_creates: int) -> None:
    """Killed with creates in flight: after 4 creates (4 at a time: all in flight, no 504 yet), or after 6
    (the first ones answered 504 and looked up, their windows open, the next ones in flight)."""
    _use_gateway(workspace, gateway, settle=SETTLE)
    journal = workspace.root / "state" / "e2e.journal"

    proc = workspace.spawn("apply", "--auto-approve", "--parallelism", "4")
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.exists() and gateway.stats()["creates"] >= kill_after_creates:
            break
        time.sleep(0.002)
    assert proc.poll() is None, f"apply ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert journal.exists()
    assert gateway.stats()["commits_pending"] > 0, "nothing was left in flight at the kill"

    applied = workspace.run("apply", "--auto-approve", "--parallelism", "4")

    assert "Traceback" not in applied.output
    _assert_each_address_exactly_once(workspace, sandbox_server, gateway)
    assert applied.exit_code == 0, applied.output
    assert not journal.exists()
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


def test_control_without_a_window_the_gateway_makes_duplicates(workspace: Workspace, sandbox_server: SandboxServer,
                                                               gateway: Gateway) -> None:
    """CONTROL, expected to find duplicates: with ``settle = 0`` a create answered 504 is sent again
    after its look-up finds nothing, before the first send has landed, so the gateway really can
    turn one create into several invoices. It passes before and after the settle window lands.
    """
    _use_gateway(workspace, gateway, settle=0)

    workspace.run("apply", "--auto-approve", "--parallelism", "4")
    gateway.wait_for_commits()

    _, by_source, _ = _live_counts(sandbox_server)
    duplicated = {source_id: n for source_id, n in by_source.items() if n > 1}
    assert duplicated, f"the gateway made no duplicates without a settle window: {gateway.stats()}"
    assert gateway.stats()["commits_landed"] > INVOICES
