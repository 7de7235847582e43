"""Apply under a rate limit: 600 creates against a 60/s token bucket (burst 6) at 20 ms latency, --parallelism 16.

`invoicesync sandbox` runs in its own process; its rate limit is set through `POST /_sandbox/faults`
(`{"rate_limit": 60, "burst": 6}`), which works whether or not the CLI has `--rate-limit`. Every
run starts from `POST /_sandbox/reset`: no invoices, zeroed stats, a full bucket. In the same run,
against the same sandbox:

1. Reference: a plain httpx client sending the creates at exactly the limit (one every 1/60 s, 16
   in flight at most, no catch-up after a stall), retrying a 429 after its `Retry-After`.
2. Reference: a plain AIMD client that is not told the limit (16 workers sharing one rate, from
   half the limit: doubling each second until the first 429, which halves it; then +5/s per second
   of successes and x0.85 on a 429, at most one cut every 0.5 s; a throttled create is sent again
   after its `Retry-After`).
3. `invoicesync apply --auto-approve --parallelism 16 --json` of 600 creates (one template).

Printed for each: creates/s as a fraction of the limit (and of the paced reference), the fraction of
create attempts (POSTs) answered 429 by the rate limit, from `/_sandbox/stats`; for the apply, its
exit code and the invoices per address listed from the sandbox. Targets (issue 12): >= 90% of the
limit, <= 5% of create attempts 429, exit 0, exactly one invoice per address. Figures are printed,
never asserted.

Run: `.venv/bin/python benchmarks/bench_throttle.py [--count 600] [--rate 60] [--burst 6]`. A run
of the apply is cut off after `--apply-timeout` seconds (default 60) so that a collapsing client
cannot hang the suite; what it created by then is still counted. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import sandbox_process, write_workspace  # noqa: E402
from invoicesync.models import dumps_json  # noqa: E402

KEY = "bench-key"
API = "/coa/api/v1/invoice/"
HEADERS = {"Authorization": f"Token {KEY}", "Content-Type": "application/json"}
BODY = {
    "entity": 54, "client": 33973, "invoice_date": "2025-07-01", "due_date": "2025-07-31",
    "lines": [{"product": 2545, "description": "x", "quantity": 1, "rate": 50, "tax": 5}],
}


@dataclass
class Run:
    name: str
    created: int
    seconds: float
    posts: int
    posts_429: int
    extra: str = ""

    def rate(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0

    def throttled(self) -> float:
        return self.posts_429 / self.posts if self.posts else 0.0


def reset(url: str, rate: float, burst: int, latency_ms: float) -> None:
    """An empty sandbox with zeroed stats and a full bucket, limited to `rate`/s."""
    faults = {"rate_limit": rate, "burst": burst, "latency_ms": latency_ms}
    httpx.post(f"{url}/_sandbox/faults", json=faults, timeout=10).raise_for_status()
    httpx.post(f"{url}/_sandbox/reset", timeout=10).raise_for_status()


def post_counts(url: str) -> tuple[int, int]:
    """(POST requests, POSTs refused by the rate limit) since the last reset."""
    stats = httpx.get(f"{url}/_sandbox/stats", timeout=10).raise_for_status().json()
    return int(stats["by_method"].get("POST", 0)), int(stats["rate_limited_by_method"].get("POST", 0))


def invoices(url: str) -> list[dict[str, Any]]:
    """Every invoice in the sandbox (listed in pages of 1,000)."""
    found: list[dict[str, Any]] = []
    with httpx.Client(headers=HEADERS, timeout=30) as http:
        next_url: str | None = f"{url}{API}?entity=54&limit=1000"
        while next_url:
            page = http.get(next_url).raise_for_status().json()
            found.extend(page["results"])
            next_url = page.get("next")
    return found


async def _create(http: httpx.AsyncClient, number: str, on_429: Callable[[], None], before: Callable[[], Awaitable[None]]) -> None:
    """One create, sent again after `Retry-After` (plus a little jitter) for as long as it is throttled."""
    while True:
        await before()
        response = await http.post(API, content=dumps_json({**BODY, "invoice_number": number}))
        if response.status_code != 429:
            response.raise_for_status()
            return
        on_429()
        await asyncio.sleep(float(response.headers.get("retry-after", "1")) * (1 + random.random() * 0.2))


async def paced(url: str, count: int, rate: float, parallelism: int) -> float:
    """Creates sent one every 1/`rate` s, `parallelism` in flight at most; returns seconds."""
    slots = asyncio.Semaphore(parallelism)
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=parallelism, max_keepalive_connections=parallelism)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30, limits=limits) as http:
        started = loop.time()

        async def one(i: int) -> None:
            async with slots:
                await _create(http, f"PACED-{i:06d}", lambda: None, _nothing)

        tasks = []
        at = started
        for i in range(count):
            # Never two sends closer than 1/rate: after a stall of this loop, no catch-up burst.
            at = max(at, loop.time())
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            tasks.append(asyncio.create_task(one(i)))
            at += 1 / rate
        await asyncio.gather(*tasks)
        return loop.time() - started


async def _nothing() -> None:
    return None


class Aimd:
    """One shared send rate: additive increase per success, multiplicative decrease on a 429."""

    def __init__(self, start: float, increase: float = 5.0, factor: float = 0.85, cooldown: float = 0.5) -> None:
        self.rate = start
        self.increase = increase  # requests/s gained per second spent at the current rate
        self.factor = factor
        self.cooldown = cooldown
        self.next_at = 0.0
        self.last_cut = -1e9
        self.lowest = self.highest = start

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self.next_at)
        self.next_at = at + 1 / self.rate
        if at > now:
            await asyncio.sleep(at - now)

    def success(self) -> None:
        # Slow start (one more request/s per success, doubling each second) until the first 429, then additive.
        self.rate += 1.0 if self.last_cut < 0 else self.increase / self.rate
        self.highest = max(self.highest, self.rate)

    def throttled(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self.last_cut >= self.cooldown:
            # The first 429 ends the slow start, which has overshot by up to twice: halve.
            self.rate = max(1.0, self.rate * (0.5 if self.last_cut < 0 else self.factor))
            self.last_cut = now
            self.lowest = min(self.lowest, self.rate)


async def aimd(url: str, count: int, parallelism: int, start_rate: float) -> tuple[float, Aimd]:
    """`parallelism` workers sharing one AIMD rate; returns seconds and the pacer."""
    pacer = Aimd(start_rate)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=parallelism, max_keepalive_connections=parallelism)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30, limits=limits) as http:
        started = loop.time()

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                await _create(http, f"AIMD-{i:06d}", pacer.throttled, pacer.turn)
                pacer.success()

        await asyncio.gather(*(worker() for _ in range(parallelism)))
        return loop.time() - started, pacer


def apply_run(url: str, tmp: Path, count: int, parallelism: int, timeout: float) -> tuple[Run, int]:
    """The CLI's apply of `count` creates, in a process of its own; returns the run and its exit code (-1: cut off)."""
    root = tmp / "apply"
    write_workspace(root, count, base_url=url)
    command = [sys.executable, "-m", "invoicesync", "-C", str(root),
               "apply", "--auto-approve", "--parallelism", str(parallelism), "--json"]
    env = {**os.environ, "NO_COLOR": "1", "CAMPFIRE_API_KEY": KEY}
    started = time.perf_counter()
    try:
        # On a timeout, subprocess.run kills this child (and only it) before raising.
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        wall = time.perf_counter() - started
        return Run("apply", len(invoices(url)), wall, *post_counts(url), extra=f"cut off after {timeout:g} s"), -1
    wall = time.perf_counter() - started
    seconds, note = wall, f"whole command {wall:.2f} s = {count / wall:.1f} creates/s"
    try:
        result = json.loads(proc.stdout)
        seconds = float(result["elapsed_seconds"])
        ok = sum(1 for o in result["outcomes"] if o["ok"])
        note = f"execution (elapsed_seconds) {seconds:.2f} s, {note}, {ok}/{count} outcomes ok"
    except (ValueError, KeyError, TypeError):
        note += f", no JSON result: {proc.stderr.strip()[-300:]}"
    return Run("apply", len(invoices(url)), seconds, *post_counts(url), extra=note), proc.returncode


def describe(run: Run, limit: float, reference: Run | None) -> str:
    versus = f", {run.rate() / reference.rate():.0%} of the paced reference" if reference and run is not reference else ""
    extra = f"; {run.extra}" if run.extra else ""
    return (f"{run.name}: {run.created} created in {run.seconds:.2f} s = {run.rate():.1f} creates/s "
            f"({run.rate() / limit:.0%} of the limit{versus}); {run.posts_429} of {run.posts} create attempts "
            f"answered 429 ({run.throttled():.1%}){extra}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--rate", type=float, default=60)
    parser.add_argument("--burst", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--apply-timeout", type=float, default=60)
    parser.add_argument("--no-aimd", action="store_true", help="skip the AIMD reference")
    args = parser.parse_args()

    print(f"{args.count} creates against a {args.rate:g}/s token bucket (burst {args.burst}) at {args.latency_ms:g} ms "
          f"latency, --parallelism {args.parallelism}; targets: >= 90% of the limit, <= 5% of create attempts 429, "
          f"exit 0, one invoice per address")
    with tempfile.TemporaryDirectory() as tmp, sandbox_process("--latency-ms", str(args.latency_ms), token=KEY) as url:
        reset(url, args.rate, args.burst, args.latency_ms)
        seconds = asyncio.run(paced(url, args.count, args.rate, args.parallelism))
        reference = Run("reference, paced at the limit", len(invoices(url)), seconds, *post_counts(url))
        print(describe(reference, args.rate, None))

        if not args.no_aimd:
            reset(url, args.rate, args.burst, args.latency_ms)
            seconds, pacer = asyncio.run(aimd(url, args.count, args.parallelism, start_rate=args.rate / 2))
            adaptive = Run("reference, AIMD", len(invoices(url)), seconds, *post_counts(url),
                           extra=f"its rate ranged {pacer.lowest:.0f}-{pacer.highest:.0f}/s")
            print(describe(adaptive, args.rate, reference))

        reset(url, args.rate, args.burst, args.latency_ms)
        run, code = apply_run(url, Path(tmp), args.count, args.parallelism, args.apply_timeout)
        print(describe(run, args.rate, reference))
        numbers = Counter(inv["invoice_number"] for inv in invoices(url))
        expected = [f"SUB-{i:06d}" for i in range(args.count)]
        duplicates = sum(numbers[n] - 1 for n in expected if numbers[n] > 1)
        missing = sum(1 for n in expected if numbers[n] == 0)
        stray = sum(c for n, c in numbers.items() if not n.startswith("SUB-"))
        print(f"apply exit code {code}; invoices per address: {duplicates} duplicates, {missing} missing, {stray} others")
        met = [
            ("rate >= 90% of the limit", run.rate() >= 0.9 * args.rate),
            ("<= 5% of create attempts 429", run.throttled() <= 0.05),
            ("exit 0", code == 0),
            ("exactly one invoice per address", duplicates == 0 and missing == 0),
        ]
        print("targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in met))


if __name__ == "__main__":
    main()
