"""Apply and refresh performance against `invoicesync sandbox` over loopback with 50 ms injected latency.

1. Reference, same run: a plain sequential loop of httpx posts (one create at a time).
2. `apply --parallelism 16` of 2,000 creates into an empty state, `--repeat` times (the sandbox
   reset before each): the rate of the WHOLE command (process start, imports, loading the 2,000
   specs, planning, executing, the final state write, the result), as a fraction of the ideal
   16 / 0.05 s = 320/s (issue 12's target: >= 90%) and of 16 x the measured sequential rate; the
   rate of the execution alone beside it. The median and the best of the repeats are printed.
3. Recording cost vs state size: 2,000 creates applied into an empty state (-> 2k) and into a state
   that already holds 18,000 records (-> 20k); the per-create rate must not drop.
4. `refresh --parallelism 16` of 2,000 invoices (target <= 8 s).

The CLI runs with its bytecode compiled, as pip installs it (see `common.bytecode_env`).
Run: `.venv/bin/python benchmarks/bench_apply.py [--count 2000] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fake_process, run_cli, sandbox_process, write_workspace  # noqa: E402
from invoicesync.models import dumps_json  # noqa: E402
from invoicesync.state import InvoiceRecord, StateStore, new_state  # noqa: E402

KEY = "bench-key"
BODY = {
    "entity": 54, "client": 33973, "invoice_date": "2025-07-01", "due_date": "2025-07-31",
    "lines": [{"product": 2545, "description": "x", "quantity": 1, "rate": 50, "tax": 5}],
}


def sequential_rate(url: str, n: int) -> float:
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {KEY}", "Content-Type": "application/json"}) as http:
        started = time.perf_counter()
        for i in range(n):
            r = http.post("/coa/api/v1/invoice/", content=dumps_json({**BODY, "invoice_number": f"SEQ-{i}"}))
            r.raise_for_status()
        return n / (time.perf_counter() - started)


def apply_rate(root: Path, count: int, parallelism: int, *extra: str) -> tuple[float, float, float]:
    """(creates/s during execution, execution seconds, whole-command seconds)."""
    env = {"CAMPFIRE_API_KEY": KEY}
    timed = run_cli(root, "apply", "--auto-approve", "--refresh=false", "--parallelism", str(parallelism), "--json",
                    *extra, env=env, bytecode=True)
    if timed.returncode != 0:
        raise SystemExit(f"apply failed: {timed.stderr[-3000:]}")
    result = json.loads(timed.stdout)
    elapsed = float(result["elapsed_seconds"])
    ok = sum(1 for o in result["outcomes"] if o["ok"])
    assert ok == count, f"{ok} of {count} creates succeeded"
    return count / elapsed, elapsed, timed.seconds


def padded_state(root: Path, extra: int) -> None:
    store = StateStore(root / "state", "bench")
    state = new_state("bench")
    stamp = "2025-07-25T18:54:43+00:00"
    for i in range(extra):
        body = {**BODY, "invoice_number": f"OLD-{i}", "source": "invoicesync", "source_id": f"{state.lineage}/old-{i}"}
        state.invoices[f"old-{i:06d}"] = InvoiceRecord(id=900_000 + i, digest=f"sha256:{i:064x}", body=body,
                                                        created_at=stamp, updated_at=stamp)
    store.save(state)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--padding", type=int, default=18000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server", choices=("sandbox", "fake"), default="sandbox",
                        help="fake: benchmarks/fake_campfire.py, a server doing almost no work (the apply rounds only)")
    args = parser.parse_args()
    ideal = args.parallelism / (args.latency_ms / 1000)
    if args.server == "fake":
        with tempfile.TemporaryDirectory() as tmp, fake_process(args.latency_ms) as url:
            seq = sequential_rate(url, 60)
            reference = seq * args.parallelism
            print(f"against a minimal fake: sequential httpx posts {seq:.1f} creates/s (x{args.parallelism} = "
                  f"{reference:.0f}/s); ideal {ideal:.0f}/s")
            for n in range(args.repeat):
                root = Path(tmp) / f"fake-{n}"
                write_workspace(root, args.count, base_url=url)
                rate, elapsed, wall = apply_rate(root, args.count, args.parallelism)
                print(f"apply {args.count} creates: whole command {wall:.2f} s = {args.count / wall:.0f} creates/s "
                      f"({args.count / wall / ideal:.0%} of ideal, {args.count / wall / reference:.0%} of 16x sequential); "
                      f"execution alone {rate / ideal:.0%} of ideal; fixed costs {wall - elapsed:.2f} s")
        return

    with tempfile.TemporaryDirectory() as tmp, sandbox_process("--latency-ms", str(args.latency_ms), token=KEY) as url:
        seq = sequential_rate(url, 60)
        reference = seq * args.parallelism
        print(f"reference: sequential httpx posts {seq:.1f} creates/s (x{args.parallelism} = {reference:.0f}/s); "
              f"ideal {args.parallelism} / {args.latency_ms / 1000:g} s = {ideal:.0f}/s")

        whole: list[float] = []
        small, rate = Path(tmp) / "small", 0.0
        for n in range(args.repeat):
            httpx.post(f"{url}/_sandbox/reset", timeout=30).raise_for_status()
            small = Path(tmp) / f"small-{n}"
            write_workspace(small, args.count, base_url=url)
            rate, elapsed, wall = apply_rate(small, args.count, args.parallelism)
            whole.append(args.count / wall)
            print(f"apply {args.count} creates into an empty state: whole command {wall:.2f} s = {args.count / wall:.0f} "
                  f"creates/s ({args.count / wall / ideal:.0%} of ideal, {args.count / wall / reference:.0%} of 16x "
                  f"sequential); execution alone {elapsed:.2f} s = {rate:.0f}/s ({rate / ideal:.0%} of ideal, "
                  f"{rate / reference:.0%} of 16x sequential); fixed costs {wall - elapsed:.2f} s")
        best, median = max(whole), statistics.median(whole)
        print(f"whole command over {args.repeat} runs: median {median / ideal:.0%} of ideal ({median / reference:.0%} of "
              f"16x sequential), best {best / ideal:.0%} ({best / reference:.0%}); issue 12 target >= 90% of ideal")

        started = time.perf_counter()
        timed = run_cli(small, "refresh", "--parallelism", str(args.parallelism), env={"CAMPFIRE_API_KEY": KEY},
                        bytecode=True)
        if timed.returncode != 0:
            raise SystemExit(f"refresh failed: {timed.stderr[-3000:]}")
        print(f"refresh {args.count} invoices at --parallelism {args.parallelism}: {time.perf_counter() - started:.2f} s "
              f"(target <= 8 s)")

        big = Path(tmp) / "big"
        write_workspace(big, args.count, base_url=url)
        (big / "specs" / "subs-00.yaml.j2").write_text((big / "specs" / "subs-00.yaml.j2").read_text().replace("SUB-", "BIG-"))
        padded_state(big, args.padding)
        # The padding records are not in the specs: target the new addresses only, so they stay untouched.
        rate_big, elapsed_big, wall_big = apply_rate(big, args.count, args.parallelism, "--target", "sub-*")
        print(f"apply {args.count} creates into a state of {args.padding} (-> {args.padding + args.count}): "
              f"{rate_big:.0f} creates/s ({rate_big / rate:.0%} of the last empty-state rate); execution "
              f"{elapsed_big:.2f} s, whole command {wall_big:.2f} s")


if __name__ == "__main__":
    main()
