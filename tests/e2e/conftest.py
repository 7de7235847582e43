"""End-to-end fixtures: a real sandbox over loopback HTTP and a workspace driven through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from invoicesync.cli import main
from invoicesync.models import loads_json
from invoicesync.sandbox import DEFAULT_TOKEN, FaultSettings, Sandbox
from invoicesync.sandbox.server import BackgroundServer

API_KEY = "e2e-secret-key-7f3a"


@dataclass
class RunResult:
    """What one CLI run did."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class SandboxServer:
    """A sandbox served over loopback, with its own HTTP API for changing invoices behind the tool's back."""

    sandbox: Sandbox
    url: str

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {API_KEY}"}, timeout=10)

    def invoices(self) -> list[dict[str, Any]]:
        return self.sandbox.invoices()

    def set_faults(self, **kw: Any) -> None:
        self.sandbox.set_faults(FaultSettings(**kw))

    def request(self, method: str, path: str, json_body: Any = None) -> httpx.Response:
        from invoicesync.models import dumps_json

        with self.http() as http:
            content = None if json_body is None else dumps_json(json_body)
            headers = {"Content-Type": "application/json"} if content is not None else {}
            return http.request(method, path, content=content, headers=headers)


@pytest.fixture
def sandbox_server() -> Iterator[SandboxServer]:
    sandbox = Sandbox(tokens=(API_KEY, DEFAULT_TOKEN), honour_idempotency=False)
    with BackgroundServer(sandbox, host="127.0.0.1", port=0) as url:
        yield SandboxServer(sandbox, url)


@dataclass
class Workspace:
    """A workspace folder on disk, run through the real CLI against the sandbox over HTTP."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    capsys: Any = None

    def write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def remove(self, relpath: str) -> None:
        (self.root / relpath).unlink()

    def run(self, *args: str) -> RunResult:
        """Run `invoicesync -C ROOT ARGS` in process (cli.main), with this workspace's environment."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            if self.capsys is not None:
                self.capsys.readouterr()
            code = main(["-C", str(self.root), *args])
            out, err = self.capsys.readouterr() if self.capsys is not None else ("", "")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return RunResult(code, out, err)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start `python -m invoicesync -C ROOT ARGS` as a separate process (for kill tests)."""
        env = {**os.environ, **self.env, "NO_COLOR": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "invoicesync", "-C", str(self.root), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )

    def run_process(self, *args: str, timeout: float = 120) -> RunResult:
        proc = self.spawn(*args)
        out, err = proc.communicate(timeout=timeout)
        return RunResult(proc.returncode, out, err)

    def state(self, environment: str = "e2e") -> Mapping[str, Any]:
        path = self.root / "state" / f"{environment}.json"
        return loads_json(path.read_text()) if path.exists() else {}


CONFIG = """\
[tool.invoicesync]
default_environment = "e2e"

[tool.invoicesync.environments.e2e]
base_url = "{url}"
timeout = 1  # loopback answers in milliseconds
settle = 0.5  # the sandbox commits before it answers: a create killed in flight lands within milliseconds
"""


SANDBOX_CONFIG = """\
default_environment = "dev"

[environments.dev]
endpoint = "sandbox"
"""

#: The two commands that read specs without a server: each spec error must fail both the same way.
OFFLINE_COMMANDS = (("validate",), ("plan", "--refresh=false"))


@pytest.fixture
def offline(tmp_path: Path, capsys: Any) -> Workspace:
    """A workspace on the in-process sandbox endpoint: nothing here talks to a network."""
    ws = Workspace(tmp_path / "ws", env={"INVOICESYNC_RETRY_BASE": "0.01"}, capsys=capsys)
    ws.root.mkdir()
    ws.write("invoicesync.toml", SANDBOX_CONFIG)
    (ws.root / "specs").mkdir()
    return ws


def assert_spec_error(ws: Workspace, *expected: str, args: tuple[str, ...] = ()) -> list[RunResult]:
    """`validate` and an offline `plan` both fail cleanly with every fragment in stderr; state/ stays empty."""
    results = []
    for command in OFFLINE_COMMANDS:
        result = ws.run(*command, *args)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and "internal error" not in result.output
        assert result.stderr.startswith("Error: "), result.stderr
        for fragment in expected:
            assert fragment in result.stderr, f"{fragment!r} missing from:\n{result.stderr}"
        assert not (ws.root / "state").exists() or not any((ws.root / "state").iterdir()), f"{command} wrote to state/"
        results.append(result)
    return results


@pytest.fixture
def workspace(tmp_path: Path, sandbox_server: SandboxServer, capsys: Any) -> Workspace:
    ws = Workspace(tmp_path / "ws", env={"CAMPFIRE_API_KEY": API_KEY}, capsys=capsys)
    ws.root.mkdir()
    ws.write("pyproject.toml", CONFIG.format(url=sandbox_server.url))
    (ws.root / "specs").mkdir()
    return ws


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the exactly-once fault totals (seeds, kills, injected faults, invoices checked)."""
    from tests.e2e.test_exactly_once import TOTALS

    if TOTALS:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(TOTALS.items()))
        terminalreporter.write_line(f"exactly-once fault runs: {parts}; duplicates 0, lost 0")
