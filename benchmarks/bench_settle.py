"""The cost of the settle window: apply with 5% of creates answered 504 by a gateway, beside the same apply without.

`invoicesync sandbox` runs in its own process with 50 ms injected latency, ignoring Idempotency-Key
(as the real API may); in front of it, the loopback gateway of `tests/gateway.py` (a thread of this
script, which is otherwise idle while the CLI runs). Two runs of `apply --parallelism 16` of 400
creates, each into an emptied sandbox and a fresh workspace with the same `settle`, interleaved
`--repeat` times (default 2; the fastest of each kind are compared):

1. clean: the gateway passes every request through.
2. uncertain: 5% of creates are answered `504 Gateway Timeout` after 1 s, and reach the sandbox
   (commit) 1.2-2.5 s after they were sent; the settle window is 3 s.

Printed: both wall times, their ratio, the difference and how much of it is beyond one settle window
(other creates go on while a window is open, so the uncertain run should cost about one window
plus a little: the slots the 504'd creates held while the gateway kept them waiting), and, per run, duplicates and missing invoices counted in the sandbox (both must be
0: a tool that sends a 504'd create again before its window has passed makes duplicates here).

Run: `.venv/bin/python benchmarks/bench_settle.py [--count 400] [--settle 3]`. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import run_cli, sandbox_process, write_workspace  # noqa: E402
from tests.gateway import Gateway  # noqa: E402

KEY = "bench-key"


@dataclass
class Run:
    name: str
    wall: float
    execution: float | None
    returncode: int
    succeeded: int
    gateway: dict[str, Any]
    invoices: int
    duplicates: int
    missing: int


def upstream_invoices(url: str) -> list[dict[str, Any]]:
    """Every invoice in the sandbox, read directly (not through the gateway)."""
    found: list[dict[str, Any]] = []
    with httpx.Client(headers={"Authorization": f"Token {KEY}"}, timeout=30) as http:
        next_url: str | None = f"{url}/coa/api/v1/invoice/?entity=54&limit=1000"
        while next_url:
            page = http.get(next_url).raise_for_status().json()
            found.extend(page["results"])
            next_url = page.get("next")
    return found


def apply_through_gateway(name: str, tmp: Path, upstream: str, args: argparse.Namespace, slow_rate: float) -> Run:
    httpx.post(f"{upstream}/_sandbox/reset", timeout=30).raise_for_status()
    root = tmp / name
    gateway = Gateway(upstream, gateway_timeout=args.gateway_timeout, commit_min=args.commit_min,
                      commit_max=args.commit_max, slow_rate=slow_rate, seed=args.seed)
    with gateway as url:
        write_workspace(root, args.count, base_url=url)
        with (root / "invoicesync.toml").open("a") as config:
            config.write(f"timeout = 10\nsettle = {args.settle}\n")  # [environments.bench] is the last table
        timed = run_cli(root, "apply", "--auto-approve", "--refresh=false", "--parallelism", str(args.parallelism),
                        "--json", env={"CAMPFIRE_API_KEY": KEY})
        gateway.wait_for_commits()  # what the sandbox ends up holding, late commits included
        stats = gateway.stats()
    execution: float | None = None
    succeeded = 0
    try:
        result = json.loads(timed.stdout)
        execution = float(result["elapsed_seconds"])
        succeeded = sum(1 for o in result["outcomes"] if o["ok"])
    except (ValueError, KeyError, TypeError):
        pass
    if timed.returncode != 0:
        print(f"  ({name}: apply exited {timed.returncode}: {timed.stderr.strip()[-500:]})")
    live = [i for i in upstream_invoices(upstream) if i.get("status") != "voided"]
    by_number = Counter(i["invoice_number"] for i in live)
    expected = [f"SUB-{i:06d}" for i in range(args.count)]
    duplicates = sum(by_number[n] - 1 for n in expected if by_number[n] > 1)
    missing = sum(1 for n in expected if by_number[n] == 0)
    return Run(name, timed.seconds, execution, timed.returncode, succeeded, stats, len(live), duplicates, missing)


def describe(run: Run, count: int) -> str:
    execution = f"execution {run.execution:.2f} s, " if run.execution is not None else ""
    return (f"{run.name}: {execution}whole command {run.wall:.2f} s; {run.succeeded}/{count} creates ok; "
            f"gateway 504s {run.gateway['gateway_timeouts']}, late commits {run.gateway['commits_landed']} "
            f"(latest {run.gateway['max_commit_delay']:.2f} s after arrival); sandbox holds {run.invoices} invoices: "
            f"duplicates {run.duplicates}, missing {run.missing}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--uncertain-rate", type=float, default=0.05)
    parser.add_argument("--gateway-timeout", type=float, default=1.0)
    parser.add_argument("--commit-min", type=float, default=1.2)
    parser.add_argument("--commit-max", type=float, default=2.5)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each kind, interleaved; the fastest are compared")
    args = parser.parse_args()

    print(f"apply --parallelism {args.parallelism} of {args.count} creates at {args.latency_ms:g} ms latency, settle "
          f"{args.settle:g} s; uncertain run: {args.uncertain_rate:.0%} of creates 504 after {args.gateway_timeout:g} s, "
          f"committed {args.commit_min:g}-{args.commit_max:g} s after they reach the gateway")
    runs: dict[str, list[Run]] = {"clean": [], "uncertain": []}
    with tempfile.TemporaryDirectory() as tmp, \
            sandbox_process("--latency-ms", str(args.latency_ms), "--ignore-idempotency", token=KEY) as upstream:
        # Interleaved, so that a noisy neighbour slows both kinds alike; the best of each is compared.
        for n in range(args.repeat):
            for name, rate in (("clean", 0.0), ("uncertain", args.uncertain_rate)):
                run = apply_through_gateway(f"{name}-{n + 1}", Path(tmp), upstream, args, slow_rate=rate)
                print(describe(run, args.count))
                runs[name].append(run)
    clean = min(runs["clean"], key=lambda r: r.wall)
    uncertain = min(runs["uncertain"], key=lambda r: r.wall)

    extra = uncertain.wall - clean.wall
    print(f"cost of the settle window (fastest of {args.repeat} each): whole command {uncertain.wall:.2f} s vs {clean.wall:.2f} s "
          f"(x{uncertain.wall / clean.wall:.2f}), {extra:+.2f} s, of which one settle window is {args.settle:g} s "
          f"and {extra - args.settle:+.2f} s is beyond it")
    # Slots held while the gateway makes a 504'd create wait for its answer: a cost of the faults, not of the window.
    held = uncertain.gateway["gateway_timeouts"] * args.gateway_timeout / args.parallelism
    print(f"  the {uncertain.gateway['gateway_timeouts']} creates that waited {args.gateway_timeout:g} s for their 504 held "
          f"worker slots for about {held:.2f} s of the run ({uncertain.gateway['gateway_timeouts']} x {args.gateway_timeout:g} s "
          f"/ {args.parallelism}); beyond the window and that: {extra - args.settle - held:+.2f} s")
    if clean.execution is not None and uncertain.execution is not None:
        print(f"  execution only: {uncertain.execution:.2f} s vs {clean.execution:.2f} s "
              f"(x{uncertain.execution / clean.execution:.2f}), {uncertain.execution - clean.execution:+.2f} s")
    every = runs["clean"] + runs["uncertain"]
    print(f"duplicates: {sum(r.duplicates for r in runs['clean'])} clean, {sum(r.duplicates for r in runs['uncertain'])} "
          f"uncertain; missing: {sum(r.missing for r in runs['clean'])} clean, {sum(r.missing for r in runs['uncertain'])} "
          f"uncertain, over {len(every)} runs (all must be 0)")


if __name__ == "__main__":
    main()
