"""Plan performance: `invoicesync plan` over N invoices rendered by one template, against a state
holding half of them (unchanged), for N = 1k, 10k, 100k.

Target (issue 3): N = 10,000 with 5,000 in state in at most 2 s wall time and 300 MB peak memory.
Wall time includes starting Python; the same-run reference is `invoicesync --version`, the cost of
merely starting the CLI. Run: `.venv/bin/python benchmarks/bench_plan.py [--sizes 1000,10000,100000]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import run_cli, write_workspace  # noqa: E402
from invoicesync.config import load_settings  # noqa: E402
from invoicesync.models import body_digest, with_source  # noqa: E402
from invoicesync.specs import load_specs  # noqa: E402
from invoicesync.state import InvoiceRecord, StateStore, new_state  # noqa: E402


def seed_state(root: Path, fraction: float = 0.5) -> int:
    """Record the first `fraction` of the workspace's invoices in its state, as if applied."""
    settings = load_settings(root)
    specs = load_specs(settings)
    state = new_state(settings.environment.name)
    keep = specs.invoices[: int(len(specs.invoices) * fraction)]
    stamp = "2025-07-25T18:54:43+00:00"
    for n, d in enumerate(keep):
        body = with_source(d.wire, state.lineage, d.address)
        state.invoices[d.address] = InvoiceRecord(
            id=200_000 + n, digest=body_digest(body), body=body, created_at=stamp, updated_at=stamp
        )
    StateStore(settings.state_dir, settings.environment.name).save(state)
    return len(keep)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        ref_root = Path(tmp) / "ref"
        ref_root.mkdir()
        reference = min(run_cli(ref_root, "--version").seconds for _ in range(args.repeat))
        print(f"reference: `invoicesync --version` {reference:.3f} s (process start + imports)")
        print(f"{'invoices':>9} {'in state':>9} {'plan s':>8} {'per 1k s':>9} {'peak MB':>8} {'x ref':>6}")
        for n in sizes:
            root = Path(tmp) / f"ws{n}"
            started = time.perf_counter()
            write_workspace(root, n)
            in_state = seed_state(root)
            setup = time.perf_counter() - started
            runs = [run_cli(root, "plan", "--refresh=false", "--no-color") for _ in range(args.repeat)]
            for r in runs:
                if r.returncode != 0:
                    raise SystemExit(f"plan failed: {r.stderr[-2000:]}")
            best = min(runs, key=lambda r: r.seconds)
            peak = max(r.max_rss_mb for r in runs)
            summary = next((ln for ln in best.stdout.splitlines() if ln.startswith("Plan:")), "")
            print(f"{n:>9} {in_state:>9} {best.seconds:>8.3f} {best.seconds / n * 1000:>9.3f} {peak:>8.1f} "
                  f"{best.seconds / reference:>6.1f}   (setup {setup:.1f} s; {summary[:60]})")


if __name__ == "__main__":
    main()
