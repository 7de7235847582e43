"""The sandbox's rate limit: one token bucket for every Campfire request, refusing as DRF throttles do.

Most tests step a fake clock, in process, so that refill is exact; a few run the real clock over
loopback, asserting only bounds that time cannot break.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import pytest

from invoicesync.models import dumps_json
from invoicesync.sandbox import FaultSettings, FaultSettingsError, Sandbox
from tests.sandbox_helpers import API, AUTH, Api, data, invoice_body


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InProcess:
    """Requests to a sandbox through its in-process transport, one at a time."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def __call__(self, method: str, path: str = API, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.sandbox.transport(), base_url="http://sb") as client:
                content = None if body is None else dumps_json(body)
                return await client.request(method, path, content=content, headers={**AUTH, **(headers or {})})

        return asyncio.run(send())

    def statuses(self, n: int, method: str = "GET", path: str = API) -> list[int]:
        return [self(method, path).status_code for _ in range(n)]


def limited(rate: float, burst: int, **faults: Any) -> tuple[InProcess, FakeClock]:
    clock = FakeClock()
    sandbox = Sandbox(faults=FaultSettings(rate_limit=rate, burst=burst, **faults), clock=clock)
    return InProcess(sandbox), clock


def test_the_burst_is_served_then_the_next_request_is_throttled_as_drf_does() -> None:
    call, _ = limited(rate=0.5, burst=3)
    assert call.statuses(3) == [200, 200, 200]
    response = call("GET")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"  # one token takes 1 / 0.5 s
    assert response.headers["content-type"] == "application/json"
    assert data(response) == {"detail": "Request was throttled. Expected available in 2 seconds."}


def test_retry_after_is_the_wait_rounded_up_to_whole_seconds() -> None:
    call, clock = limited(rate=0.4, burst=1)  # a token every 2.5 s
    assert call("GET").status_code == 200
    first = call("GET")
    assert first.headers["retry-after"] == "3"  # ceil(2.5), where rounding would say 2
    assert data(first)["detail"] == "Request was throttled. Expected available in 3 seconds."
    clock.advance(1.75)  # 0.7 of a token: 0.75 s to go
    second = call("GET")
    assert second.headers["retry-after"] == "1"
    assert data(second)["detail"] == "Request was throttled. Expected available in 1 second."


@pytest.mark.parametrize("rate", [60, 7, 1, 0.3])
def test_waiting_retry_after_always_finds_a_token(rate: float) -> None:
    call, clock = limited(rate=rate, burst=2)
    for _ in range(5):
        while (response := call("GET")).status_code == 200:
            pass
        wait = int(response.headers["retry-after"])
        assert 1 <= wait <= math.ceil(1 / rate)
        clock.advance(wait)
        assert call("GET").status_code == 200


def test_the_bucket_refills_at_the_rate_and_holds_at_most_the_burst() -> None:
    call, clock = limited(rate=4, burst=3)
    assert call.statuses(4) == [200, 200, 200, 429]
    clock.advance(0.5)  # two tokens
    assert call.statuses(3) == [200, 200, 429]
    clock.advance(0.125)  # half a token
    assert call.statuses(1) == [429]
    clock.advance(0.125)
    assert call.statuses(2) == [200, 429]
    clock.advance(60)  # 240 tokens' worth of time, but the bucket holds 3
    assert call.statuses(4) == [200, 200, 200, 429]


def test_refused_requests_spend_no_token() -> None:
    call, clock = limited(rate=1, burst=1)
    assert call.statuses(1) == [200]
    for _ in range(9):
        clock.advance(0.1)
        assert call.statuses(1) == [429]
    clock.advance(0.1)  # one second since the last admitted request
    assert call.statuses(2) == [200, 429]


def test_one_bucket_is_shared_by_every_campfire_request_whatever_its_method_path_or_token() -> None:
    call, _ = limited(rate=0.1, burst=5)
    assert call("POST", API, invoice_body()).status_code == 201
    assert call("GET", "/coa/api/entity").status_code == 200
    assert call("GET", f"{API}999999/").status_code == 404
    assert call("GET", "/coa/api/nowhere").status_code == 404
    assert call("GET", headers={"Authorization": "Token wrong"}).status_code == 401
    assert call("GET").status_code == 429
    assert call("GET", "/coa/api/entity").status_code == 429


def test_a_throttled_create_commits_nothing_and_leaves_its_idempotency_key_unused() -> None:
    call, clock = limited(rate=1, burst=1)
    assert call("POST", API, invoice_body(invoice_number="FIRST")).status_code == 201
    key = {"Idempotency-Key": "create-second"}
    refused = call("POST", API, invoice_body(invoice_number="SECOND"), headers=key)
    assert refused.status_code == 429
    assert [inv["invoice_number"] for inv in call.sandbox.invoices()] == ["FIRST"]
    clock.advance(int(refused.headers["retry-after"]))
    retried = call("POST", API, invoice_body(invoice_number="SECOND"), headers=key)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert [inv["invoice_number"] for inv in call.sandbox.invoices()] == ["FIRST", "SECOND"]


def test_control_paths_are_never_throttled_and_take_no_token() -> None:
    call, _ = limited(rate=0.001, burst=2)
    for _ in range(10):
        assert call("GET", "/_sandbox/stats").status_code == 200
        assert call("GET", "/_sandbox/faults").status_code == 200
        assert call("POST", "/_sandbox/faults", {"latency_ms": 0}).status_code == 200
    assert call.statuses(3) == [200, 200, 429]
    for _ in range(10):
        assert call("GET", "/_sandbox/stats").status_code == 200
        assert call("POST", "/_sandbox/faults", {"fail_rate": 0}).status_code == 200


def test_stats_count_rate_limited_requests_among_the_429s() -> None:
    call, _ = limited(rate=0.01, burst=2)
    call("POST", API, invoice_body())
    call("GET")
    call("POST", API, invoice_body())
    call("POST", API, invoice_body())
    call("GET")
    stats = call("GET", "/_sandbox/stats").json()
    assert stats["requests"] == 5 and stats["creates"] == 1
    assert stats["rate_limited"] == 3 and stats["throttled"] == 0
    assert stats["rate_limited_by_method"] == {"POST": 2, "GET": 1}
    assert stats["by_method"] == {"POST": 3, "GET": 2}
    assert stats["by_status"] == {"201": 1, "200": 1, "429": 3}


def test_an_admitted_request_may_still_draw_a_throttle_which_is_counted_apart() -> None:
    call, _ = limited(rate=0.01, burst=1, throttle_rate=1, retry_after=5)
    drawn = call("GET")
    assert drawn.status_code == 429 and drawn.headers["retry-after"] == "5"
    limit = call("GET")
    assert limit.status_code == 429 and limit.headers["retry-after"] == "100"
    stats = call.sandbox.stats()
    assert (stats["throttled"], stats["rate_limited"], stats["by_status"]) == (1, 1, {"429": 2})


def test_reset_zeroes_the_counters_and_fills_the_bucket() -> None:
    call, _ = limited(rate=0.01, burst=2)
    assert call.statuses(3) == [200, 200, 429]
    assert call("POST", "/_sandbox/reset").status_code == 200
    assert call.sandbox.stats()["rate_limited"] == 0
    assert call.statuses(3) == [200, 200, 429]


def test_control_api_sets_and_reads_the_rate_limit() -> None:
    call = InProcess(Sandbox(clock=FakeClock()))
    assert "rate_limit" not in call("GET", "/_sandbox/faults").json()  # no limit: the settings read as before
    assert call.statuses(20) == [200] * 20
    response = call("POST", "/_sandbox/faults", {"rate_limit": 60, "burst": 6})
    assert response.status_code == 200
    assert response.json() == {
        "latency_ms": 0.0, "fail_rate": 0.0, "throttle_rate": 0.0, "drop_rate": 0.0, "seed": None, "retry_after": 1.0,
        "rate_limit": 60.0, "burst": 6,
    }  # fmt: skip
    assert call("GET", "/_sandbox/faults").json() == response.json()
    assert call.sandbox.faults == FaultSettings(rate_limit=60, burst=6)
    assert call.statuses(7) == [200] * 6 + [429]
    call("POST", "/_sandbox/faults", {"rate_limit": None})
    assert call.sandbox.faults.rate_limit is None and call("GET", "/_sandbox/faults").json()["burst"] == 6
    assert call.statuses(10) == [200] * 10
    call("POST", "/_sandbox/faults", {"rate_limit": 0, "burst": 1})
    assert call.sandbox.faults == FaultSettings() and "burst" not in call("GET", "/_sandbox/faults").json()


def test_changing_other_settings_keeps_the_bucket_and_changing_the_limit_fills_it() -> None:
    call, _ = limited(rate=0.01, burst=2)
    assert call.statuses(3) == [200, 200, 429]
    call("POST", "/_sandbox/faults", {"latency_ms": 1, "seed": 3})
    assert call.statuses(1) == [429]
    call("POST", "/_sandbox/faults", {"burst": 3})
    assert call.statuses(4) == [200, 200, 200, 429]
    call.sandbox.set_faults(FaultSettings(rate_limit=0.02, burst=3))
    assert call.statuses(4) == [200, 200, 200, 429]


@pytest.mark.parametrize(
    "bad",
    [
        {"rate_limit": -1},
        {"rate_limit": float("nan")},
        {"rate_limit": float("inf")},
        {"rate_limit": True},
        {"burst": 0},
        {"burst": -3},
        {"burst": 1.5},
        {"burst": True},
        {"rate_limit": 10, "burst": 0},
    ],
)
def test_rate_limit_settings_out_of_range_are_refused_with_a_readable_error(bad: dict[str, Any]) -> None:
    with pytest.raises(FaultSettingsError, match="must be"):
        FaultSettings(**bad)


def test_zero_and_none_both_mean_no_limit() -> None:
    assert FaultSettings(rate_limit=0) == FaultSettings(rate_limit=None) == FaultSettings()
    assert FaultSettings(rate_limit=60).rate_limit == 60.0


def test_control_api_refuses_bad_rate_limit_settings_and_keeps_the_old_ones() -> None:
    call, _ = limited(rate=5, burst=2)
    before = call.sandbox.faults

    def post(text: str) -> httpx.Response:
        return _post_raw(call.sandbox, text)

    assert post('{"burst": 2.5}').json() == {"burst": ["A valid integer is required."]}
    assert post('{"burst": "6"}').json() == {"burst": ["A valid integer is required."]}
    assert post('{"burst": 1E+99999999}').json() == {"burst": ["A valid integer is required."]}
    assert post('{"rate_limit": "fast"}').json() == {"rate_limit": ["A valid number is required."]}
    refused = post('{"rate_limit": -60}')
    assert refused.status_code == 400 and "rate_limit must be" in refused.json()["non_field_errors"][0]
    refused = post('{"burst": 0}')
    assert refused.status_code == 400 and "burst must be" in refused.json()["non_field_errors"][0]
    assert call.sandbox.faults == before
    assert post('{"burst": 4.0}').json()["burst"] == 4  # a whole number written with a fraction is a whole number


def _post_raw(sandbox: Sandbox, text: str) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=sandbox.transport(), base_url="http://sb") as client:
            return await client.post("/_sandbox/faults", content=text)

    return asyncio.run(send())


# --- over loopback, on the real clock --------------------------------------------------------------


def test_over_loopback_the_admitted_count_stays_within_burst_plus_rate_times_time(api: Api, sb: Sandbox) -> None:
    rate, burst = 20.0, 5
    sb.set_faults(FaultSettings(rate_limit=rate, burst=burst))
    statuses: list[int] = []
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < 0.5 or len(statuses) < 30:
        statuses.append(api.request("GET", API).status_code)
    elapsed = time.monotonic() - started
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert statuses[:burst] == [200] * burst
    assert burst + 1 <= admitted <= burst + rate * elapsed + 1  # never more than the bucket allows
    assert sb.stats()["rate_limited"] == statuses.count(429) > 0


def test_over_loopback_a_throttled_answer_skips_the_latency(api: Api, sb: Sandbox) -> None:
    sb.set_faults(FaultSettings(rate_limit=0.01, burst=1, latency_ms=500))
    started = time.monotonic()
    assert api.request("GET", API).status_code == 200
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    refused = api.request("POST", API, invoice_body())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "100"
    assert time.monotonic() - started < 0.4
    assert sb.invoices() == [] and sb.stats()["delayed"] == 1


def test_over_loopback_the_control_api_switches_the_limit_on_and_off(url: str, sb: Sandbox) -> None:
    with httpx.Client(base_url=url) as control:
        assert control.post("/_sandbox/faults", json={"rate_limit": 0.01, "burst": 2}).status_code == 200
        assert [control.get(API, headers=AUTH).status_code for _ in range(3)] == [200, 200, 429]
        assert control.get("/_sandbox/stats").json()["rate_limited"] == 1
        assert control.post("/_sandbox/faults", json={"rate_limit": None}).status_code == 200
        assert control.get(API, headers=AUTH).status_code == 200
