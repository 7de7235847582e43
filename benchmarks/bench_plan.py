"""Plan performance: `invoicesync plan` over N invoices rendered by one template, against a state
holding half of them (unchanged), as a ratio to PyYAML's C loader parsing the same rendered text.

Issue 12: for N = 10,000 the whole `plan --refresh=false` command (process start, imports, rendering,
parsing and validating every spec, reading the state, planning, printing) takes at most 1.5x the
"C-loader floor": what `yaml.load(text, Loader=yaml.CSafeLoader)` alone takes, in a process of its
own with the interpreter's defaults, to parse the same rendered text. The stretch figure is 1.0x.
Each round measures the floor and then the plan (the machine's load drifts between rounds); the
ratio reported is the median of the rounds' ratios, with the best plan over the best floor beside it.
Issue 3's absolute target is kept beside it: N = 10,000 in at most 2 s and 300 MB.

The CLI runs with its bytecode compiled, as pip installs it (see `common.bytecode_env`); the
start-up alone (`invoicesync --version`) is printed for reference.
Run: `.venv/bin/python benchmarks/bench_plan.py [--sizes 1000,10000] [--repeat 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import run_cli, write_workspace  # noqa: E402
from invoicesync.config import load_settings  # noqa: E402
from invoicesync.models import body_digest, with_source  # noqa: E402
from invoicesync.specs import load_specs, spec_template_env  # noqa: E402
from invoicesync.specs.loader import _Loader  # noqa: E402
from invoicesync.specs.template import _render  # noqa: E402
from invoicesync.state import InvoiceRecord, StateStore, new_state  # noqa: E402

# A fresh interpreter parsing the file with the C loader, timing the parse alone (not the start-up
# nor the read), with the interpreter's defaults (the garbage collector on) as anyone calls it.
_FLOOR = (
    "import sys, time, yaml\n"
    "text = open(sys.argv[1], encoding='utf-8').read()\n"
    "started = time.perf_counter()\n"
    "yaml.load(text, Loader=yaml.CSafeLoader)\n"
    "print(time.perf_counter() - started)\n"
)


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


def rendered_text(root: Path) -> Path:
    """The workspace's template rendered as plan renders it, written beside it for the floor to parse."""
    settings = load_settings(root)
    (template,) = sorted(settings.specs_dir.glob("*.j2"))
    variables = _Loader(settings)._variables((), ())
    out = root / "rendered.yaml"
    out.write_text(_render(spec_template_env(), template.read_text(), template.name, variables), encoding="utf-8")
    return out


def floor_seconds(path: Path) -> float:
    done = subprocess.run([sys.executable, "-c", _FLOOR, str(path)], capture_output=True, text=True, check=True)
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        ref_root = Path(tmp) / "ref"
        ref_root.mkdir()
        startup = min(run_cli(ref_root, "--version", bytecode=True).seconds for _ in range(args.repeat))
        print(f"start-up: `invoicesync --version` {startup:.3f} s (process start + imports)")
        print(f"{'invoices':>9} {'in state':>9} {'plan s':>7} {'floor s':>8} {'plan/floor':>10} {'best/best':>9} "
              f"{'peak MB':>8}   (floor: CSafeLoader parsing the same rendered text, same rounds)")
        for n in sizes:
            root = Path(tmp) / f"ws{n}"
            write_workspace(root, n)
            in_state = seed_state(root)
            text = rendered_text(root)
            floors: list[float] = []
            runs = []
            for _ in range(args.repeat):
                floors.append(floor_seconds(text))
                run = run_cli(root, "plan", "--refresh=false", "--no-color", bytecode=True)
                if run.returncode != 0:
                    raise SystemExit(f"plan failed: {run.stderr[-2000:]}")
                runs.append(run)
            ratios = [r.seconds / f for r, f in zip(runs, floors)]
            best = min(runs, key=lambda r: r.seconds)
            peak = max(r.max_rss_mb for r in runs)
            summary = next((ln for ln in best.stdout.splitlines() if ln.startswith("Plan:")), "")
            print(f"{n:>9} {in_state:>9} {best.seconds:>7.3f} {min(floors):>8.3f} {statistics.median(ratios):>9.2f}x "
                  f"{best.seconds / min(floors):>8.2f}x {peak:>8.1f}   ({summary[:58]})")
            print(f"{'':>9} rounds (plan s / floor s): "
                  + ", ".join(f"{r.seconds:.2f}/{f:.2f}" for r, f in zip(runs, floors)))
        print("issue 12 target at 10,000: plan/floor <= 1.5x (stretch 1.0x); issue 3: <= 2 s and 300 MB")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
