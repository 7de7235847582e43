"""Shared pieces of the benchmark scripts: workspaces on disk, a sandbox subprocess, timing a CLI run."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = """\
defaults:
  entity: 54
  currency: USD
  terms: net_30
invoices:
{% for i in range(start, start + count) %}
  sub-{{ '%06d' % i }}:
    client: {{ [33973, 33974, 33975, 33976][i % 4] }}
    invoice_date: {{ period | add_days(i % 28) }}
    invoice_number: SUB-{{ '%06d' % i }}
    lines:
      - product: 2545
        description: Platform subscription {{ i }}
        quantity: {{ 1 + i % 5 }}
        rate: 49.99
        tax: 2.5
{% endfor %}
"""


def write_workspace(root: Path, count: int, *, base_url: str | None = None, chunk: int = 50_000) -> None:
    """A workspace whose specs are one template rendering `count` invoices (split into files of `chunk`)."""
    (root / "specs").mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    env = f'base_url = "{base_url}"' if base_url else 'endpoint = "sandbox"'
    (root / "invoicesync.toml").write_text(
        f'default_environment = "bench"\n[environments.bench]\n{env}\nvars = {{ period = "2025-07-01" }}\n'
    )
    for n, start in enumerate(range(0, count, chunk)):
        body = TEMPLATE.replace("range(start, start + count)", f"range({start}, {min(count, start + chunk)})")
        (root / "specs" / f"subs-{n:02d}.yaml.j2").write_text(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(argv: Callable[[int], list[str]], what: str) -> Iterator[str]:
    """The server ``argv(port)`` starts, in its own process (fair on 2 cores) on a free loopback port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(argv(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening" not in line.lower():
            raise RuntimeError(f"{what} did not start: {line}{proc.stdout.read()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def sandbox_process(*args: str, token: str = "bench-key") -> contextlib.AbstractContextManager[str]:
    """`invoicesync sandbox` in its own process; yields its base URL."""
    return _serving(lambda port: [sys.executable, "-m", "invoicesync", "sandbox", "--port", str(port), "--token", token,
                                  *args], "sandbox")


def fake_process(latency_ms: float) -> contextlib.AbstractContextManager[str]:
    """`benchmarks/fake_campfire.py` in its own process: a server doing almost no work; yields its base URL."""
    script = Path(__file__).with_name("fake_campfire.py")
    return _serving(lambda port: [sys.executable, str(script), str(port), str(latency_ms)], "fake")


@dataclass
class Timed:
    seconds: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


_WRAPPER = (
    "import resource, sys\n"
    "from invoicesync.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "print(f'@@maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n"
    "raise SystemExit(code)\n"
)


_BYTECODE_DIR: str | None = None
_WARM_UP = (
    "import compileall, os, invoicesync\n"
    "compileall.compile_dir(os.path.dirname(invoicesync.__file__), quiet=1)\n"
    "import invoicesync.cli, invoicesync.apply, invoicesync.refresh, invoicesync.recovery, invoicesync.client\n"
    "import deepdiff, rich.console, rich.progress, rich.text\n"
)


def bytecode_env() -> dict[str, str]:
    """Environment variables that give the CLI compiled bytecode, as an installed invoicesync has it.

    pip compiles a package's bytecode when it installs it; this checkout is installed in editable
    mode and its environment may set PYTHONDONTWRITEBYTECODE, so that every CLI process would
    compile the whole package from source first (0.1-0.2 s here). The bytecode goes to a temporary
    folder (PYTHONPYCACHEPREFIX), compiled once per benchmark run; the checkout is left as it is.
    """
    global _BYTECODE_DIR
    if _BYTECODE_DIR is None:
        folder = tempfile.mkdtemp(prefix="invoicesync-bench-bytecode-")
        atexit.register(shutil.rmtree, folder, True)
        env = {**os.environ, "PYTHONPYCACHEPREFIX": folder, "PYTHONDONTWRITEBYTECODE": ""}
        subprocess.run([sys.executable, "-c", _WARM_UP], env=env, check=True)
        _BYTECODE_DIR = folder
    return {"PYTHONPYCACHEPREFIX": _BYTECODE_DIR, "PYTHONDONTWRITEBYTECODE": ""}


def run_cli(root: Path, *args: str, env: dict[str, str] | None = None, bytecode: bool = False) -> Timed:
    """Run the CLI in a fresh process: wall time (process start included) and that process's peak RSS.

    ``bytecode`` runs it with its bytecode compiled, as installed (see ``bytecode_env``).
    """
    extra = bytecode_env() if bytecode else {}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, "-C", str(root), *args],
        capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1", **extra, **(env or {})},
    )
    seconds = time.perf_counter() - started
    rss_kb = 0
    stderr_lines = []
    for line in proc.stderr.splitlines():
        if line.startswith("@@maxrss "):
            rss_kb = int(line.split()[1])
        else:
            stderr_lines.append(line)
    return Timed(seconds, rss_kb / 1024, proc.returncode, proc.stdout, "\n".join(stderr_lines))


def lineage() -> str:
    return str(uuid.uuid4())
