"""The sandbox's fault injection and control API, seen by a real httpx client over loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from invoicesync.models import dumps_json
from invoicesync.sandbox import FaultSettings, Sandbox
from tests.sandbox_helpers import API, AUTH, Api, data, invoice_body


def test_latency_delays_campfire_requests_but_not_the_control_api(api: Api, sb: Sandbox) -> None:
    sb.set_faults(FaultSettings(latency_ms=150))
    started = time.perf_counter()
    assert api.request("GET", API).status_code == 200
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    assert api.request("GET", "/_sandbox/stats").status_code == 200
    assert time.perf_counter() - started < 0.15
    assert sb.stats()["delayed"] == 1


def test_fail_rate_answers_500_before_committing(api: Api, sb: Sandbox) -> None:
    sb.set_faults(FaultSettings(fail_rate=1))
    response = api.request("POST", API, invoice_body())
    assert response.status_code == 500 and "Server Error (500)" in response.text
    assert sb.invoices() == [] and sb.stats()["failed"] == 1


def test_throttle_answers_429_with_retry_after(api: Api, sb: Sandbox) -> None:
    sb.set_faults(FaultSettings(throttle_rate=1, retry_after=3))
    response = api.request("POST", API, invoice_body())
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert data(response) == {"detail": "Request was throttled. Expected available in 3 seconds."}
    sb.set_faults(FaultSettings(throttle_rate=1))
    response = api.request("GET", API)
    assert response.headers["retry-after"] == "1"
    assert data(response) == {"detail": "Request was throttled. Expected available in 1 second."}
    sb.set_faults(FaultSettings(throttle_rate=1, retry_after=0))
    assert api.request("GET", API).headers["retry-after"] == "0"
    assert sb.invoices() == [] and sb.stats()["throttled"] == 3


def test_dropped_response_raises_remote_protocol_error_but_the_invoice_was_committed(api: Api, sb: Sandbox) -> None:
    sb.set_faults(FaultSettings(drop_rate=1))
    with pytest.raises(httpx.RemoteProtocolError):
        api.request("POST", API, invoice_body(invoice_number="DROPPED"))
    sb.set_faults(FaultSettings())
    assert [inv["invoice_number"] for inv in sb.invoices()] == ["DROPPED"]
    assert sb.stats()["dropped"] == 1


def test_dropped_delete_still_deletes(api: Api, sb: Sandbox) -> None:
    created = api.create(invoice_body())
    sb.set_faults(FaultSettings(drop_rate=1))
    with pytest.raises(httpx.RemoteProtocolError):
        api.request("DELETE", f"{API}{created['id']}/")
    assert sb.invoices() == []


def test_retrying_a_dropped_create_with_its_idempotency_key_replays_the_result(api: Api, sb: Sandbox) -> None:
    sb.set_faults(FaultSettings(drop_rate=1))
    with pytest.raises(httpx.RemoteProtocolError):
        api.request("POST", API, invoice_body(), headers={"Idempotency-Key": "retry-me"})
    sb.set_faults(FaultSettings())
    response = api.request("POST", API, invoice_body(), headers={"Idempotency-Key": "retry-me"})
    assert response.status_code == 201 and response.headers["idempotent-replayed"] == "true"
    assert [inv["id"] for inv in sb.invoices()] == [data(response)["id"]]


def test_in_process_transport_turns_a_drop_into_remote_protocol_error() -> None:
    sandbox = Sandbox(faults=FaultSettings(drop_rate=1))

    async def main() -> None:
        async with httpx.AsyncClient(transport=sandbox.transport(), base_url="http://sb", headers=AUTH) as client:
            await client.post(API, content=dumps_json(invoice_body()))

    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(main())
    assert len(sandbox.invoices()) == 1


def test_seeded_faults_repeat_exactly(api: Api, sb: Sandbox) -> None:
    def statuses() -> list[int]:
        sb.set_faults(FaultSettings(fail_rate=0.3, throttle_rate=0.3, seed=42, retry_after=0))
        return [api.request("GET", API).status_code for _ in range(30)]

    first = statuses()
    assert first == statuses()
    assert {200, 429, 500} <= set(first)


def test_control_api_changes_faults_while_running_without_auth(url: str, sb: Sandbox) -> None:
    with httpx.Client(base_url=url) as control:
        response = control.post("/_sandbox/faults", json={"throttle_rate": 1, "retry_after": 0})
        assert response.status_code == 200
        assert response.json() == {
            "latency_ms": 0.0, "fail_rate": 0.0, "throttle_rate": 1.0, "drop_rate": 0.0, "seed": None, "retry_after": 0.0
        }  # fmt: skip
        assert sb.faults == FaultSettings(throttle_rate=1, retry_after=0)
        assert control.get(API, headers=AUTH).status_code == 429
        control.post("/_sandbox/faults", json={"throttle_rate": 0, "latency_ms": 5})
        assert control.get("/_sandbox/faults").json()["latency_ms"] == 5
        assert control.get(API, headers=AUTH).status_code == 200


def test_control_api_refuses_bad_settings(url: str, sb: Sandbox) -> None:
    with httpx.Client(base_url=url) as control:
        assert control.post("/_sandbox/faults", json={"fail_rate": 2}).status_code == 400
        assert control.post("/_sandbox/faults", json={"fail_rate": "x", "nope": 1}).json() == {
            "nope": ["Unknown fault setting."],
            "fail_rate": ["A valid number is required."],
        }
        assert sb.faults == FaultSettings()


def test_reset_forgets_invoices_but_keeps_fixtures(url: str, api: Api, sb: Sandbox) -> None:
    api.create(invoice_body())
    assert httpx.post(url + "/_sandbox/reset").status_code == 200
    assert sb.invoices() == []
    assert api.create(invoice_body())["id"] == 145055  # fixtures still resolve, ids restart


def test_stats_count_requests_methods_statuses_and_faults(url: str, api: Api, sb: Sandbox) -> None:
    api.create(invoice_body())
    api.request("GET", API)
    sb.set_faults(FaultSettings(throttle_rate=1, retry_after=0))
    api.request("GET", API)
    stats = httpx.get(url + "/_sandbox/stats").json()
    assert stats["requests"] == 3 and stats["creates"] == 1 and stats["throttled"] == 1
    assert stats["by_method"] == {"POST": 1, "GET": 2}
    assert stats["by_status"] == {"201": 1, "200": 1, "429": 1}
    assert stats["invoices"] == 1


def test_serve_reports_its_url_and_stops_cleanly_on_ctrl_c(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import sys
        from invoicesync.sandbox import Sandbox
        from invoicesync.sandbox.server import serve
        serve(Sandbox(), port=0, on_ready=lambda url: print(url, flush=True))
        print("stopped", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + API, headers=AUTH).json()["count"] == 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.strip() == "stopped"
    assert "Traceback" not in err


def test_fault_settings_out_of_range_are_refused_with_a_readable_error() -> None:
    from invoicesync.errors import InvoiceSyncError

    for bad in ({"fail_rate": 1.5}, {"drop_rate": -0.1}, {"latency_ms": -1}, {"retry_after": -1}):
        with pytest.raises(InvoiceSyncError, match="must"):
            FaultSettings(**bad)  # type: ignore[arg-type]
