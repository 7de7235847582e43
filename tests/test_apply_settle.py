"""execute_plan in process against the sandbox, behind a gateway that loses answers: the settle window and taken ids.

The gateway is an httpx transport in front of the sandbox's own: it answers a create 504 at once
and lets it commit a moment later, or answers 503 without forwarding it at all. Everything else
reaches the real sandbox unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from invoicesync.apply import execute_plan
from invoicesync.client import INVOICES_PATH, CampfireClient
from invoicesync.plan import ApplyResult, make_plan
from invoicesync.sandbox import DEFAULT_TOKEN, Sandbox
from invoicesync.state import State, StateStore, new_state
from tests.invoices import desired


class _Gateway(httpx.AsyncBaseTransport):
    """Answers the creates whose number (1-based) is in ``late`` with 504 and commits them ``commit_after`` s later;
    answers those in ``refused`` with 503 without forwarding them."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, late: set[int] = frozenset(),  # type: ignore[assignment]
                 refused: set[int] = frozenset(), commit_after: float = 0.3) -> None:  # type: ignore[assignment]
        self.inner = inner
        self.late = late
        self.refused = refused
        self.commit_after = commit_after
        self.creates = 0
        self.commits: list[asyncio.Task[None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == INVOICES_PATH:
            self.creates += 1
            if self.creates in self.refused:
                return httpx.Response(503, text="<html><title>503 Service Unavailable</title></html>")
            if self.creates in self.late:
                body = await request.aread()
                later = httpx.Request(request.method, request.url, headers=request.headers, content=body)
                self.commits.append(asyncio.ensure_future(self._commit(later)))
                return httpx.Response(504, text="<html><title>504 Gateway Time-out</title></html>")
        return await self.inner.handle_async_request(request)

    async def _commit(self, request: httpx.Request) -> None:
        await asyncio.sleep(self.commit_after)
        response = await self.inner.handle_async_request(request)
        await response.aread()


def _apply(tmp_path: Path, specs: list[Any], gateway: dict[str, Any], *, settle: float,
           parallelism: int = 4, finished: list[str] | None = None) -> tuple[Sandbox, State, ApplyResult, list[str], float]:
    sandbox = Sandbox(honour_idempotency=False)  # as the real API may ignore Idempotency-Key
    waits: list[str] = []
    finished = [] if finished is None else finished

    async def run() -> tuple[State, ApplyResult, float]:
        transport = _Gateway(sandbox.transport(), **gateway)
        async with CampfireClient("http://sandbox", DEFAULT_TOKEN, transport=transport, backoff_base=0.001) as client:
            store = StateStore(tmp_path / "state", "dev")
            state = new_state("dev")
            plan = make_plan(specs, state, {}, refreshed=True)
            started = time.monotonic()
            saved, result = await execute_plan(plan, store=store, state=state, client=client, parallelism=parallelism,
                                               settle=settle, on_wait=lambda address, _deadline: waits.append(address),
                                               on_outcome=lambda outcome: finished.append(outcome.address))
            elapsed = time.monotonic() - started
            await asyncio.gather(*transport.commits)
        return saved, result, elapsed

    saved, result, elapsed = asyncio.run(run())
    assert sorted(finished) == sorted(o.address for o in result.outcomes)
    return sandbox, saved, result, waits, elapsed


def _per_source_id(sandbox: Sandbox) -> Counter[str]:
    return Counter(str(invoice["source_id"]) for invoice in sandbox.invoices())


def test_a_create_answered_504_before_it_commits_is_waited_for_not_sent_again(tmp_path: Path) -> None:
    specs = [desired(f"inv-{i}") for i in range(4)]
    sandbox, state, result, waits, elapsed = _apply(tmp_path, specs, {"late": {1, 2, 3, 4}}, settle=0.6)
    assert not result.failed
    assert sorted(waits) == [f"inv-{i}" for i in range(4)]
    assert set(_per_source_id(sandbox).values()) == {1} and len(sandbox.invoices()) == 4
    assert {state.invoices[s.address].id for s in specs} == {int(i["id"]) for i in sandbox.invoices()}
    assert all(o.message == "found after a lost response" for o in result.outcomes)
    assert elapsed >= 0.6


def test_without_a_window_the_same_gateway_makes_duplicates(tmp_path: Path) -> None:
    """The control: with settle 0 the create is sent again at once, and the late commit makes a second invoice."""
    sandbox, _state, _result, _waits, _elapsed = _apply(tmp_path, [desired("inv-0")], {"late": {1}}, settle=0)
    assert _per_source_id(sandbox).most_common(1)[0][1] == 2


def test_other_changes_go_on_while_a_create_settles(tmp_path: Path) -> None:
    specs = [desired(f"inv-{i}") for i in range(6)]
    finished: list[str] = []
    sandbox, _state, result, waits, elapsed = _apply(tmp_path, specs, {"late": {1}}, settle=1.0, parallelism=1,
                                                     finished=finished)
    assert not result.failed and len(sandbox.invoices()) == 6
    assert waits == ["inv-0"]
    # With one worker, the five others were carried out during inv-0's window: it finished last.
    assert finished == [f"inv-{i}" for i in range(1, 6)] + ["inv-0"]
    assert elapsed < 2.0


def test_a_create_never_found_after_its_window_is_sent_again_once(tmp_path: Path) -> None:
    sandbox, state, result, waits, _elapsed = _apply(tmp_path, [desired("inv-0")], {"refused": {1}}, settle=0.3)
    assert not result.failed
    assert waits == ["inv-0"]
    assert len(sandbox.invoices()) == 1 and state.invoices["inv-0"].id == int(sandbox.invoices()[0]["id"])


def test_a_look_up_never_takes_an_invoice_this_run_recorded_for_another_address(tmp_path: Path) -> None:
    # Two bodies that a look-up cannot tell apart; the second create fails without committing, and
    # its look-up sees only the first one's invoice, which it must not take.
    specs = [desired("a", source_id="shared"), desired("b", source_id="shared")]
    sandbox, state, result, _waits, _elapsed = _apply(tmp_path, specs, {"refused": {2}}, settle=0.2, parallelism=1)
    assert not result.failed
    assert len(sandbox.invoices()) == 2
    assert state.invoices["a"].id != state.invoices["b"].id
