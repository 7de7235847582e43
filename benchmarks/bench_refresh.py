"""Refresh speed (issue 12): `plan --detailed-exitcode` over N managed invoices at 50 ms latency.

For each size (default 2,000 and 20,000), against a fresh sandbox in its own process:

1. Set-up at zero latency: `apply --auto-approve --refresh=false --parallelism 4` of N specs from one
   template (at zero latency the run is CPU-bound and 4 beats 16 on 2 cores: 2,000 creates in ~4.5 s
   vs ~8.5 s), then a check that the state's ids are exactly the sandbox's invoices (listed in pages
   of 1,000). Then `POST /_sandbox/faults {"latency_ms": 50}`.
2. Reference, same run: 16 threads (one httpx.Client each) GETting every managed id. At sizes above
   `--reference-sample` only an evenly spaced sample of ids is read and the time is extrapolated to N
   (the reference's time is linear in N by construction); the output says so.
3. Floors for context: `invoicesync --version` (process start) and `plan --refresh=false
   --detailed-exitcode` (start-up, specs, state, planning: everything but reading Campfire).
4. `plan --detailed-exitcode --parallelism 16`, timed as a whole process: it must exit 0 (nothing
   changed); reported as a ratio to the reference (target <= 0.25), with the requests it made
   (from `/_sandbox/stats`, and split by path: GETs by id vs list pages).
5. At the smallest size: one managed invoice is deleted behind the tool's back (DELETE on the sandbox);
   `plan --detailed-exitcode` must exit 2 and name that address.

Linear growth: the plan's time per 1,000 invoices at the largest size over that at the smallest
(target <= GROWTH_LIMIT; also shown net of the `--refresh=false` floor).
`--parallelism 16` is given to the plan so that it may use as many connections as the reference.
The CLI runs with its bytecode compiled, as an installed invoicesync has it (`common.bytecode_env`).

The sandbox is `invoicesync sandbox` in its own process; `/_sandbox/stats` counts the list pages it
served (`lists`) and the invoices it read by id (`reads`).

Run: `.venv/bin/python benchmarks/bench_refresh.py [--count 2000 20000] [--latency-ms 50] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Timed, run_cli, sandbox_process, write_workspace  # noqa: E402

KEY = "bench-key"
API = "/coa/api/v1/invoice/"
TARGET_RATIO = 0.25
GROWTH_LIMIT = 1.2  # "grows linearly": the largest size's time per 1,000 invoices at most this times the smallest's

@dataclass
class Requests:
    """What the sandbox saw during one command: Campfire requests by method, invoice requests by path."""

    total: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    by_path: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        paths = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_path.items())) or "none"
        return f"{self.total} requests ({paths})"


class Sandbox:
    """The control side of the sandbox: faults, counters, and Campfire calls made behind the tool's back."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Token {KEY}"}, timeout=120)

    def close(self) -> None:
        self.http.close()

    def set_latency(self, ms: float) -> None:
        r = self.http.post("/_sandbox/faults", json={"latency_ms": ms})
        r.raise_for_status()

    def counters(self) -> dict[str, Any]:
        stats = self.http.get("/_sandbox/stats")
        stats.raise_for_status()
        result: dict[str, Any] = stats.json()
        return result

    def listed_ids(self) -> list[int]:
        """Every invoice id, by listing in pages of 1,000 (call at zero latency)."""
        ids: list[int] = []
        offset = 0
        while True:
            r = self.http.get(API, params={"limit": 1000, "offset": offset, "sort": "id"})
            r.raise_for_status()
            page = r.json()
            ids.extend(int(item["id"]) for item in page["results"])
            offset += len(page["results"])
            if not page["next"] or not page["results"]:
                return ids

    def delete(self, invoice_id: int) -> None:
        r = self.http.delete(f"{API}{invoice_id}/")
        r.raise_for_status()

    @contextmanager
    def measure(self) -> Iterator[Requests]:
        """Counts the requests made inside the block (the block's own process must be the only client)."""
        out = Requests()
        stats0 = self.counters()
        yield out
        stats1 = self.counters()
        out.total = int(stats1["requests"]) - int(stats0["requests"])
        methods = set(stats0["by_method"]) | set(stats1["by_method"])
        out.by_method = {m: int(stats1["by_method"].get(m, 0)) - int(stats0["by_method"].get(m, 0)) for m in sorted(methods)}
        out.by_method = {m: n for m, n in out.by_method.items() if n}
        by_path = {"GET list": stats1["lists"] - stats0["lists"], "GET by id": stats1["reads"] - stats0["reads"]}
        out.by_path = {k: n for k, n in by_path.items() if n}


def reference_get_all(url: str, ids: Sequence[int], threads: int) -> float:
    """Seconds for `threads` threads, one httpx.Client each, to GET every id once."""
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def client() -> httpx.Client:
        c: httpx.Client | None = getattr(local, "client", None)
        if c is None:
            c = httpx.Client(base_url=url, headers={"Authorization": f"Token {KEY}"}, timeout=60)
            local.client = c
            with lock:
                clients.append(c)
        return c

    def get(invoice_id: int) -> None:
        r = client().get(f"{API}{invoice_id}/")
        r.raise_for_status()

    try:
        with ThreadPoolExecutor(threads) as pool:
            # Warm the pool's threads and their connections outside the timing.
            list(pool.map(lambda _: client().get("/coa/api/entity").raise_for_status(), range(threads * 2)))
            started = time.perf_counter()
            list(pool.map(get, ids))
            return time.perf_counter() - started
    finally:
        for c in clients:
            c.close()


def cli(root: Path, *args: str) -> Timed:
    return run_cli(root, *args, env={"CAMPFIRE_API_KEY": KEY}, bytecode=True)  # as installed: compiled bytecode


def managed_ids(root: Path) -> dict[str, int]:
    """address -> id, from `invoicesync state pull`."""
    timed = cli(root, "state", "pull")
    if timed.returncode != 0:
        raise SystemExit(f"state pull failed: {timed.stderr[-3000:]}")
    doc = json.loads(timed.stdout)
    return {address: int(record["id"]) for address, record in doc["invoices"].items()}


@dataclass
class SizeResult:
    count: int
    setup_apply_seconds: float
    version_seconds: float
    floor_seconds: float
    reference_seconds: float
    reference_sampled: int
    plan_seconds: float
    plan_exit: int
    plan_requests: Requests
    ratio: float
    deleted_address: str | None = None
    deleted_exit: int | None = None
    deleted_seen: bool | None = None
    deleted_seconds: float | None = None
    deleted_requests: Requests | None = None

    @property
    def per_1000(self) -> float:
        return self.plan_seconds / (self.count / 1000)

    @property
    def net_per_1000(self) -> float:
        return max(0.0, self.plan_seconds - self.floor_seconds) / (self.count / 1000)


def say(text: str, quiet: bool) -> None:
    """A progress line: on stdout, or on stderr when stdout is kept for --json."""
    print(text, file=sys.stderr if quiet else sys.stdout, flush=True)


def run_size(count: int, args: argparse.Namespace, *, check_deleted: bool, quiet: bool) -> SizeResult:
    with tempfile.TemporaryDirectory() as tmp, sandbox_process(token=KEY) as url:
        sandbox = Sandbox(url)
        try:
            root = Path(tmp) / "ws"
            write_workspace(root, count, base_url=url)

            # 1. The managed invoices, created at zero latency, and a check that state and sandbox agree.
            started = time.perf_counter()
            timed = cli(root, "apply", "--auto-approve", "--refresh=false", "--parallelism", str(args.setup_parallelism), "--json")
            setup = time.perf_counter() - started
            if timed.returncode != 0:
                raise SystemExit(f"set-up apply of {count} failed: {timed.stderr[-3000:]}")
            ids = managed_ids(root)
            listed = sandbox.listed_ids()
            if len(ids) != count or sorted(ids.values()) != sorted(listed):
                raise SystemExit(f"set-up: the state holds {len(ids)} records, the sandbox {len(listed)} invoices, "
                                 f"and they differ ({len(set(ids.values()) ^ set(listed))} ids on one side only)")
            say(f"[{count}] set-up: apply of {count} creates at zero latency in {setup:.1f} s; state and sandbox agree", quiet)
            sandbox.set_latency(args.latency_ms)

            # 2. Reference: 16 threads GETting every id (or a sample, extrapolated).
            all_ids = sorted(ids.values())
            sample = all_ids
            if args.reference_sample and count > args.reference_sample:
                step = count / args.reference_sample
                sample = [all_ids[int(i * step)] for i in range(args.reference_sample)]
            ref_measured = reference_get_all(url, sample, args.threads)
            reference = ref_measured * count / len(sample)
            extrapolated = "" if len(sample) == count else (
                f" (extrapolated from {len(sample)} GETs in {ref_measured:.2f} s)")
            say(f"[{count}] reference: {args.threads} threads GET every id: {reference:.2f} s{extrapolated}", quiet)

            # 3. Floors.
            version = cli(root, "--version")
            with sandbox.measure() as floor_requests:
                floor = cli(root, "plan", "--refresh=false", "--detailed-exitcode")
            if floor.returncode != 0:
                raise SystemExit(f"plan --refresh=false exited {floor.returncode}: {floor.stdout[-2000:]}{floor.stderr[-2000:]}")
            say(f"[{count}] floors: --version {version.seconds:.2f} s; plan --refresh=false {floor.seconds:.2f} s "
                f"({floor_requests.describe()})", quiet)

            # 4. The plan with nothing changed.
            with sandbox.measure() as plan_requests:
                plan = cli(root, "plan", "--detailed-exitcode", "--parallelism", str(args.parallelism))
            if plan.returncode not in (0, 2):
                raise SystemExit(f"plan failed ({plan.returncode}): {plan.stderr[-3000:]}")
            ratio = plan.seconds / reference
            say(f"[{count}] plan --detailed-exitcode: {plan.seconds:.2f} s, exit {plan.returncode} (want 0), "
                f"{ratio:.2f}x the reference (target <= {TARGET_RATIO}); {plan_requests.describe()}", quiet)
            if plan.returncode != 0:
                say(plan.stdout[-2000:], quiet)

            result = SizeResult(
                count=count, setup_apply_seconds=setup, version_seconds=version.seconds, floor_seconds=floor.seconds,
                reference_seconds=reference, reference_sampled=len(sample), plan_seconds=plan.seconds,
                plan_exit=plan.returncode, plan_requests=plan_requests, ratio=ratio,
            )

            # 5. An invoice deleted behind the tool's back.
            if check_deleted:
                address = sorted(ids)[count // 2]
                sandbox.delete(ids[address])
                with sandbox.measure() as deleted_requests:
                    seen = cli(root, "plan", "--detailed-exitcode", "--parallelism", str(args.parallelism))
                mentioned = address in seen.stdout
                result.deleted_address = address
                result.deleted_exit = seen.returncode
                result.deleted_seen = seen.returncode == 2 and mentioned
                result.deleted_seconds = seen.seconds
                result.deleted_requests = deleted_requests
                lines = [line.strip() for line in seen.stdout.splitlines() if address in line]
                say(f"[{count}] deleted {address} (id {ids[address]}) behind the tool's back: plan exit {seen.returncode} "
                    f"(want 2), {'names' if mentioned else 'does NOT name'} it"
                    + (f": {lines[0]!r}" if lines else "") + f"; {seen.seconds:.2f} s, {deleted_requests.describe()}", quiet)
                if not result.deleted_seen:
                    say(seen.stdout[-2000:] + seen.stderr[-2000:], quiet)
            return result
        finally:
            sandbox.close()


def summary(results: list[SizeResult], args: argparse.Namespace) -> list[str]:
    out = [
        "",
        f"Refresh at {args.latency_ms:g} ms latency: `plan --detailed-exitcode --parallelism {args.parallelism}` (whole process) "
        f"vs {args.threads} threads GETting every id",
        "",
        f"{'invoices':>9} {'reference':>10} {'plan':>8} {'ratio':>6} {'target':>7} {'exit':>5} {'s/1000':>7} {'net s/1k':>8} "
        f"{'floor':>6} {'--version':>9}  requests made by the plan",
    ]
    for r in results:
        ref = f"{r.reference_seconds:.2f}" + ("*" if r.reference_sampled != r.count else "")
        verdict = "ok" if r.ratio <= TARGET_RATIO and r.plan_exit == 0 else "FAIL"
        out.append(
            f"{r.count:>9,} {ref:>10} {r.plan_seconds:>8.2f} {r.ratio:>6.2f} {'<=' + str(TARGET_RATIO):>7} {r.plan_exit:>5} "
            f"{r.per_1000:>7.3f} {r.net_per_1000:>8.3f} {r.floor_seconds:>6.2f} {r.version_seconds:>9.2f}  "
            f"{r.plan_requests.describe()}  [{verdict}]"
        )
    if any(r.reference_sampled != r.count for r in results):
        sampled = next(r for r in results if r.reference_sampled != r.count)
        out.append(f"  * reference timed on {sampled.reference_sampled:,} evenly spaced ids and extrapolated to the full count "
                   f"(--reference-sample 0 times every id)")
    out.append("  floor = `plan --refresh=false --detailed-exitcode` (everything but reading Campfire); "
               "net s/1k = (plan - floor) per 1,000 invoices")
    for r in results:
        if r.deleted_address is not None:
            out.append(f"Deleted behind the tool's back at {r.count:,}: {r.deleted_address}: plan exit {r.deleted_exit} "
                       f"(want 2, address named): {'PASS' if r.deleted_seen else 'FAIL'}")
    if len(results) >= 2:
        small, big = results[0], results[-1]
        growth = big.per_1000 / small.per_1000
        net = big.net_per_1000 / small.net_per_1000 if small.net_per_1000 else float("nan")
        out.append(f"Growth {small.count:,} -> {big.count:,}: {small.per_1000:.3f} -> {big.per_1000:.3f} s per 1,000 invoices, "
                   f"ratio {growth:.2f} (net of floor {net:.2f}); linear (target <= {GROWTH_LIMIT}): "
                   f"{'PASS' if growth <= GROWTH_LIMIT else 'FAIL'}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, nargs="+", default=[2000, 20000], help="sizes (default: 2000 20000)")
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--threads", type=int, default=16, help="reference GET threads")
    parser.add_argument("--parallelism", type=int, default=16, help="--parallelism of the timed plans")
    parser.add_argument("--setup-parallelism", type=int, default=4, help="--parallelism of the set-up apply (zero latency)")
    parser.add_argument("--reference-sample", type=int, default=5000,
                        help="above this many invoices, time the reference on this many ids and extrapolate (0: all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = parser.parse_args(argv)

    sizes = sorted(set(args.count))
    results = [run_size(n, args, check_deleted=(i == 0), quiet=args.json) for i, n in enumerate(sizes)]
    if args.json:
        print(json.dumps({
            "latency_ms": args.latency_ms, "threads": args.threads, "parallelism": args.parallelism,
            "target_ratio": TARGET_RATIO, "growth_limit": GROWTH_LIMIT,
            "sizes": [{**asdict(r), "per_1000": r.per_1000, "net_per_1000": r.net_per_1000} for r in results],
        }, indent=2))
    else:
        print("\n".join(summary(results, args)))


if __name__ == "__main__":
    main()
